/* Evaluation: the accuracy of a checkpoint on a dataset's test split, in either engine, under
 * mpirun each rank classifying its own shard (qkf eval; the per-epoch evaluation of the trainer,
 * tools/app/trainer.h; qkf_evaluate_config of the public API).
 *
 * Applications (tools/app/) return 0, or one of three failure codes that say who reports the
 * message in qkf_last_error(): QKF_APP_RANK0 (rank 0 prints it: every rank has the same error),
 * QKF_APP_HERE (this rank prints it: it alone failed; under mpirun the message names the rank),
 * QKF_APP_QUIET (another rank failed and reports it; nothing to print). One process: RANK0 and
 * HERE both mean "print it". Nothing here prints: lines for the user go to a qkf_log_fn. */
#ifndef QKF_EVALUATE_H
#define QKF_EVALUATE_H

#include <stdint.h>

#include "../../io/dataset.h"
#include "../../models/qkformer.h"
#include "../../models/quant.h"

enum { QKF_APP_RANK0 = -1, QKF_APP_HERE = -2, QKF_APP_QUIET = -3 };

/* One line for the user (with its newline), as the command prints it to stderr. */
typedef void (*qkf_log_fn)(void *ctx, const char *line);

/* Accuracy of m (eval mode; the dense engine, or the event engine when event is set, with dense
 * flags conv) on the first `limit` samples of d (0: all), batch samples at a time. Under mpirun
 * each rank classifies its contiguous shard and the correct counts are summed exactly
 * (collective: every rank calls it). Returns 0 or -1. */
int qkf_evaluate(const qkf_model *m, const qkf_dataset *d, int64_t limit, int batch, int tb,
                 int event, int conv, double *acc, int64_t *count);

/* One batch of a streamed split: x [B][...] normalised as the loader does, labels [B]. Returns 0
 * to go on, non-zero to stop the stream with that value. */
typedef int (*qkf_batch_fn)(void *ctx, const float *x, const int32_t *labels, int B);

/* Samples per block when a split is streamed: whole batches, about 1 MB of pixels (at least one
 * batch). Reading a block at a time keeps the batches (and so every result) those of a whole
 * load while memory stays bounded by the block, whatever the split's size. */
int64_t qkf_stream_block(const qkf_dataset *meta, int batch);

/* Streams samples [lo, hi) of split `train` of NAME (meta: its probe; mx: qkf_dataset_max of the
 * split) to fn, batch samples at a time in order (the batches of a whole load starting at lo),
 * reading `block` samples at a time (0: qkf_stream_block; else a multiple of batch),
 * each normalised with mean/std of n_norm channels; a label of num_classes or more is an error
 * naming the sample. Local (no collective). Returns 0, fn's non-zero value, or -1 (a read
 * error, message in qkf_last_error()). */
int qkf_stream_split(const char *name, int train, const qkf_dataset *meta, float mx, int64_t lo,
                     int64_t hi, int64_t block, int batch, int n_norm, const float *mean, const float *std,
                     int num_classes, qkf_batch_fn fn, void *ctx);

typedef struct {
    const char *weights; /* checkpoint (required) */
    const char *data;    /* dataset name (io/dataset.h; default fashion-mnist) */
    int event;           /* 1: the event engine; 0: the dense engine */
    int conv;            /* dense-engine convolution flags (QKF_DENSE_WINO4, ...), 0: default */
    int tb;              /* the official SSA proj_lif quirk (membrane over T*B) */
    int64_t limit;       /* only the first N test samples (0: all) */
    int batch;           /* samples per forward (default 100) */
} qkf_evaluate_opts;

typedef struct {
    double accuracy; /* a fraction */
    int64_t count;   /* samples classified, over all ranks */
    double seconds;  /* from the start of qkf_evaluate_run */
    char source[1024]; /* the dataset as its reader names it */
} qkf_evaluate_result;

void qkf_evaluate_opts_init(qkf_evaluate_opts *o);
/* Loads the checkpoint, checks the test split fits it, and evaluates, streaming the split (under
 * mpirun: this rank's contiguous shard) a block at a time (qkf_stream_split). Collective under mpirun (every rank calls it with the same options). log
 * (optional) receives rank 0's lines about what each rank holds. Returns 0 or QKF_APP_*. */
int qkf_evaluate_run(const qkf_evaluate_opts *o, qkf_log_fn log, void *ctx,
                     qkf_evaluate_result *r);

/* ---- on a chip's integer arithmetic (qkf eval --hw) ------------------------------------------ */

typedef struct {
    int64_t count, correct;      /* samples classified; right by the integer model */
    int has_float;               /* a float model ran beside it: */
    int64_t correct_float, agree; /* right by the float model; the same class from both */
    double seconds_int, seconds_float; /* in the engines' forwards */
    int n_lif;                   /* with flips: per LIF layer, spikes that differ between the */
    int64_t *flips, *total;      /* float and the integer model, and neurons x steps */
    char source[1024];           /* the dataset as its reader names it */
} qkf_evaluate_int_result;

/* Accuracy of the integer model q (the dense integer engine, or with event the integer event
 * engine: the same integer logits; the class is the largest integer logit) on the first `limit`
 * samples (0: all) of the test split of dataset `data`, streamed a block at a time
 * (qkf_stream_split) and run batch samples at a time; tb: the tb_compat graph (the membrane of
 * SSA proj_lif over T*B, so results depend on batch); fm (optional: NULL or a model without
 * parameters) the float model beside it (accuracy, agreement; tb too) and with flips the spikes
 * that differ per layer (needs fm). One process. 0 or -1; free r with
 * qkf_evaluate_int_result_free either way. */
int qkf_evaluate_int(const qkf_qmodel *q, const qkf_model *fm, const char *data, int64_t limit,
                     int batch, int event, int tb, int flips, qkf_evaluate_int_result *r);
void qkf_evaluate_int_result_free(qkf_evaluate_int_result *r);

#endif
