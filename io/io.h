/* HDF5 input and output: checkpoints (one float32 dataset per official state_dict key, config as
 * root attributes), input files (dataset "input"), and result files written atomically.
 *
 * Every writer creates "<path>.tmp.<pid>" and renames it over <path> only after a successful
 * close, so a failed or interrupted run never leaves a partial file behind. All HDF5 calls are
 * made from the calling thread (serial HDF5 is not thread-safe). Errors are one line naming the
 * file and the key, recorded with qkf_set_error(). */
#ifndef QKF_IO_H
#define QKF_IO_H

#include <stdint.h>

#include "../models/qkformer.h"

#define QKF_CKPT_FORMAT 1 /* root attribute "qkf_format" */

/* Loads a checkpoint: reads the config attributes (variant, img_size, in_channels, num_classes,
 * embed_dims, num_heads, mlp_ratio, depths, T, optional qk_attn; unknown attributes ignored),
 * builds the parameter table, and reads every key, checking its shape. A missing, extra or
 * mis-shaped key is an error naming the key (and both shapes). num_batches_tracked is ignored. */
int qkf_ckpt_load(const char *path, qkf_model *m);
/* Writes m atomically (temporary file, then rename). */
int qkf_ckpt_save(const char *path, const qkf_model *m);

/* Reads dataset `name` (float32 after conversion; any numeric type is accepted) of rank 1..5.
 * *data is qkf_malloc'ed; shape receives the dimensions. Checks for NaN/Inf and names the
 * element's flat index. */
int qkf_h5_read_f32(const char *path, const char *name, float **data, int *ndim, int64_t shape[5]);
/* Reads an integer dataset as int64. */
int qkf_h5_read_i64(const char *path, const char *name, int64_t **data, int *ndim,
                    int64_t shape[5]);
/* 1 if the file has dataset `name`, 0 if not, -1 if the file cannot be opened as HDF5. */
int qkf_h5_has(const char *path, const char *name);

/* An output file under construction. Dataset names may contain '/', creating groups
 * ("spike_count/stage1.0.tssa.q_lif"). */
typedef struct qkf_h5out qkf_h5out;
qkf_h5out *qkf_h5out_open(const char *path);
int qkf_h5out_f32(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const float *data);
int qkf_h5out_f64(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const double *data);
int qkf_h5out_i64(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const int64_t *data);
int qkf_h5out_u8(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                 const uint8_t *data);
/* Signed integers stored as int8/16/32/64 (bytes 1, 2, 4, 8); values must fit the type. */
int qkf_h5out_int(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const int64_t *data, int bytes);

/* Datasets written a block of rows at a time (outputs of any number of samples, in memory
 * bounded by one block): _create makes `name` with its whole shape (rank >= 1), _rows writes
 * rows [r0, r0 + n) of it, every element of each row. */
int qkf_h5out_f32_create(qkf_h5out *o, const char *name, int ndim, const int64_t *shape);
int qkf_h5out_i64_create(qkf_h5out *o, const char *name, int ndim, const int64_t *shape);
int qkf_h5out_f32_rows(qkf_h5out *o, const char *name, int64_t r0, int64_t n, const float *data);
int qkf_h5out_i64_rows(qkf_h5out *o, const char *name, int64_t r0, int64_t n,
                       const int64_t *data);
/* Root attributes (obj = NULL or "/") or attributes of an existing group/dataset. */
int qkf_h5out_attr_str(qkf_h5out *o, const char *obj, const char *key, const char *val);
int qkf_h5out_attr_i64(qkf_h5out *o, const char *obj, const char *key, int64_t val);
int qkf_h5out_attr_f64(qkf_h5out *o, const char *obj, const char *key, double val);
/* A one-dimensional float64 array attribute of n values (n >= 1). */
int qkf_h5out_attr_f64v(qkf_h5out *o, const char *obj, const char *key, int n, const double *vals);
/* The checkpoint part of qkf_ckpt_save into an open writer: validates m, writes the config
 * attributes, the normalisation and every parameter (callers such as the trainer add their own
 * groups before committing). path is for error messages. */
int qkf_ckpt_write(qkf_h5out *o, const char *path, const qkf_model *m);
/* Writes data as dataset "<prefix><p->name>" of p's official shape (prefix "" for the weights
 * themselves, "grad/", "optim/m/", ... for tensors beside them; at most 15 characters). */
int qkf_ckpt_write_param(qkf_h5out *o, const char *prefix, const qkf_param *p, const float *data);
/* Closes and renames into place. Frees o in every case. */
int qkf_h5out_commit(qkf_h5out *o);
/* Closes and deletes the temporary file. Frees o. */
void qkf_h5out_abort(qkf_h5out *o);

/* Silences HDF5's own error stack printing (we report one line instead). */
void qkf_h5_quiet(void);

#endif
