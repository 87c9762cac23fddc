/* Helpers the applications of tools/app/ share (not installed). */
#ifndef QKF_APP_INTERNAL_H
#define QKF_APP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../../io/dataset.h"
#include "../../models/qkformer.h"
#include "evaluate.h"

/* Formats one line and hands it to log (nothing when log is NULL). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void qkf__logf(qkf_log_fn log, void *ctx, const char *fmt, ...);

/* A string a checkpoint stores one character a value (dataset key of path) into buf: 1, 0 when
 * the file has no such dataset, -1 with one line naming the file and key ("... is not <what>")
 * when it is not one value of 1 to cap-1 characters in [lo, 0x7e]. */
int qkf__h5_chars(const char *path, const char *key, int lo, const char *what, char *buf,
                  size_t cap);

/* Checks that a dataset fits the model: frames or images, channels, square size, labels. */
int qkf__dataset_fits(const qkf_dataset *d, const qkf_config *c);

/* Under mpirun: agrees whether every rank got this far. local_failed: 0 ok, 1 failed here (the
 * message is in qkf_last_error()), 2 failed because another rank did (a dist dataset call
 * returned -2: nothing to say). Returns 0 when every rank is fine; otherwise QKF_APP_HERE on the
 * lowest failing rank (its message prefixed "rank N: " under mpirun, so a shared error is one
 * line) and QKF_APP_QUIET on the others. */
int qkf__dist_failed(int local_failed);

/* Start-up check under mpirun: every rank must hold the same model configuration, weights and
 * normalisation (and `extra` bytes: the run's options), hashed and compared with rank 0's. */
int qkf__check_agree(const qkf_model *m, const void *extra, size_t n_extra);

/* Under mpirun, rank 0 logs how many of the `used` samples of the split each rank holds in
 * memory (one line per rank; nothing when quiet or on one rank). Collective. 0 or
 * QKF_APP_RANK0. */
int qkf__report_held(const char *what, const qkf_dataset *d, int64_t used, int quiet,
                     qkf_log_fn log, void *ctx);

/* A loader over blk, a block of a streamed split (qkf_dataset_stream_next), as a dataset of its
 * own: batch samples at a time from the block's start, normalised with n_norm / mean / std.
 * *view (which must outlive the loader) is set to the block without its index. Checks the
 * block's labels against num_classes first: NULL with one line naming the sample then. */
qkf_loader *qkf__block_loader(const qkf_dataset *blk, qkf_dataset *view, int batch, int n_norm,
                              const float *mean, const float *std, int num_classes);

#endif
