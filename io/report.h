/* Reading traces (io/trace.h) back: per-layer statistics for `qkf report`, and whole datasets.
 *
 * Files are opened read-only, in single-writer/multiple-reader mode when a plain open is refused,
 * so a trace that is still being written, or was left by a killed run, can be read too (what it
 * holds is every block flushed so far; unwritten grid rows read as NaN and are counted as
 * missing). Statistics are computed one sample at a time: memory is bounded by one sample of one
 * layer, whatever the file size. */
#ifndef QKF_IO_REPORT_H
#define QKF_IO_REPORT_H

#include <stdint.h>

#include "../models/qkformer.h"

/* Membrane histogram bins, in units of the threshold: value / vth in
 * (-inf,0) [0,.25) [.25,.5) [.5,.75) [.75,.9) [.9,1) [1,1.5) [1.5,2) [2,inf). */
#define QKF_REPORT_BINS 9
extern const double qkf_report_bin_edges[QKF_REPORT_BINS + 1];

typedef struct {
    char name[QKF_MAX_NAME]; /* module path */
    int lif_index;
    double vth;
    int64_t n_neurons; /* of the layer, per sample */
    unsigned obs;      /* recorded observables, bit set of 1u << QKF_TRACE_* */
    int is_qk_mask;    /* a QKFormer attention LIF (tssa.attn_lif: QKTA token / QKCA channel) */
    /* spikes */
    int64_t spike_samples, spike_steps, spike_neurons; /* recorded */
    int64_t spikes, silent, saturated; /* silent: no spike at any recorded step of any sample;
                                          saturated: a spike at every one */
    double rate;
    /* membrane: "h" when recorded (the value compared with vth), else "v" */
    char membrane[8];
    int64_t hist[QKF_REPORT_BINS];
    int64_t values, missing; /* counted, and NaN (rows not written) */
    double mean_rel;         /* mean of value / vth */
} qkf_report_layer;

typedef struct {
    char *version, *engine, *config, *checkpoint, *sha256, *command;
    uint64_t seed;
    int64_t T;
    int n_layers;
    qkf_report_layer *layers; /* in graph order */
} qkf_report;

/* Reads every node of the trace at path and computes its statistics. */
int qkf_report_load(const char *path, qkf_report *r);
void qkf_report_free(qkf_report *r);

/* Reads a whole dataset of a trace (any numeric type), e.g.
 * "nodes/stage1.0.tssa.q_lif/observables/v/data". *data is qkf_malloc'ed; rank <= 3. */
int qkf_report_read_f32(const char *path, const char *name, float **data, int *ndim,
                        int64_t shape[3]);
int qkf_report_read_i64(const char *path, const char *name, int64_t **data, int *ndim,
                        int64_t shape[3]);

#endif
