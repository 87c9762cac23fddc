/* Partial reads of HDF5 datasets: the shape without the data, and selected rows (indices along
 * the first dimension) without the rest, so that a rank under mpirun reads only its share of a
 * dataset file. Errors name the file and the dataset, as the whole-dataset readers of io.h do. */
#ifndef QKF_H5_PART_H
#define QKF_H5_PART_H

#include <stdint.h>

/* The rank (1..5) and dimensions of dataset `name` of path, reading no data. A missing dataset,
 * a group, or a dataset of non-numeric values is an error. */
int qkf_h5_shape(const char *path, const char *name, int *ndim, int64_t shape[5]);
/* Rows index[0..k) of dataset `name` (ascending, each below the first dimension), converted to
 * float32, into out [k][row elements]. Runs of consecutive rows are read as one hyperslab, up to
 * 64 runs per read. A non-finite value is an error naming its flat index in the whole dataset. */
int qkf_h5_read_rows_f32(const char *path, const char *name, const int64_t *index, int64_t k,
                         float *out);
/* The same for integers, converted to int64. */
int qkf_h5_read_rows_i64(const char *path, const char *name, const int64_t *index, int64_t k,
                         int64_t *out);

#endif
