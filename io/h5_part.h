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

/* A numeric dataset held open to be read a block of consecutive rows at a time (qkf infer and
 * qkf sim stream their input so): the file stays open and its chunk cache (32 MiB) serves the
 * rows of a chunk to every block that needs them. _open checks the dataset (numbers, rank 1..5,
 * storage that can hold the shape) and gives its shape; NULL on error. _read_f32 reads rows
 * [r0, r0 + n) converted to float32; a non-finite value is an error naming its flat index. */
typedef struct qkf_h5_rows qkf_h5_rows;
qkf_h5_rows *qkf_h5_rows_open(const char *path, const char *name, int *ndim, int64_t shape[5]);
int qkf_h5_rows_read_f32(qkf_h5_rows *r, int64_t r0, int64_t n, float *out);
void qkf_h5_rows_close(qkf_h5_rows *r);

#endif
