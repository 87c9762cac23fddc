/* The dense engine: runs the model graph over all T steps for a batch, every neuron computed
 * (what PyTorch and SpikingJelly do), with GEMM convolutions. It is the numerical reference of
 * qkf; the event engine (sched.c) must produce the same spikes. */
#ifndef QKF_DENSE_H
#define QKF_DENSE_H

#include <stdint.h>

#include "../models/qkformer.h"
#include "../models/sink.h"

typedef struct qkf_dense qkf_dense;

enum {
    QKF_DENSE_KEEP_ALL = 1,  /* keep every tensor after the forward (tests, traces, cross-check) */
    QKF_DENSE_RECORD_VH = 2, /* also keep each LIF layer's membrane v (after reset) and h */
    QKF_DENSE_TB_COMPAT = 4, /* official SSA proj_lif over the T*B axis */
    /* 3x3 stride-1 convolutions run as Winograd F(4x4, 3x3) unless one of these is set:
     * DIRECT_CONV: im2col + sgemm for every convolution (the plain summation order);
     * WINO2: Winograd F(2x2, 3x3), exact wherever direct convolution is (power-of-two weights) */
    QKF_DENSE_DIRECT_CONV = 8,
    QKF_DENSE_WINO2 = 16,
    QKF_DENSE_WINO4 = 32, /* F(4x4) even when QKF_CONV says otherwise */
};
/* When none of the three is set, the environment variable QKF_CONV (winograd4 | winograd2 |
 * direct) chooses; qkf_dense_create fails on any other value. */
/* winograd4 | winograd2 | direct -> QKF_DENSE_WINO4 | WINO2 | DIRECT_CONV, or an error */
int qkf_dense_conv_flags(const char *name, int *flags);

/* Plans buffers for batches of up to max_batch samples; no allocation happens in forward. */
qkf_dense *qkf_dense_create(const qkf_model *m, int max_batch, int flags);
void qkf_dense_free(qkf_dense *e);
const qkf_graph *qkf_dense_graph(const qkf_dense *e);

/* input: B images [B][C][H][W] (static variants) or frames [B][T][C][H][W] (dvs variants).
 * logits: [B][classes]. spike_count (optional): [n_lif], incremented by this batch's spikes. */
int qkf_dense_forward(qkf_dense *e, const float *input, int B, float *logits,
                      int64_t *spike_count);

/* After a forward with KEEP_ALL: a tensor in [C][F][N] layout (F = B for static tensors),
 * and with RECORD_VH the membrane tensors of LIF layer i (NULL otherwise). */
const float *qkf_dense_tensor(const qkf_dense *e, int tensor);
const float *qkf_dense_lif_v(const qkf_dense *e, int lif_index);
const float *qkf_dense_lif_h(const qkf_dense *e, int lif_index);

/* A per-LIF-layer observer: called right after LIF layer d->lif_index ran, with that layer's
 * tensors (models/sink.h: qkf_lif_data). Only what `want` asked for is set (the rest NULL);
 * pointers are valid during the call only. A non-zero return stops the forward, which returns
 * it. */
enum { QKF_DENSE_WANT_S = 1, QKF_DENSE_WANT_V = 2, QKF_DENSE_WANT_H = 4, QKF_DENSE_WANT_X = 8 };
typedef qkf_lif_data qkf_dense_lif_data;
typedef int (*qkf_dense_lif_hook)(void *ctx, const qkf_dense_lif_data *d);
/* Installs fn for the layers with want[l] != 0 (want: [n_lif] sets of QKF_DENSE_WANT_*, copied),
 * allocating membrane and input scratch for the largest of them now, so forward still allocates
 * nothing. fn = NULL removes the hook and frees the scratch. The engine computes exactly what it
 * computes without a hook (the fused BN + LIF path stays; x is recomputed from the raw currents
 * with the same kernel the unfused path uses). */
int qkf_dense_set_lif_hook(qkf_dense *e, qkf_dense_lif_hook fn, void *ctx, const uint8_t *want);
/* Hands every forward's LIF layers that sink wants to sink->put_layer from now on (a trace:
 * qkf_trace_sink). sink must stay valid until it is removed (NULL) or the engine freed; it must
 * have been made for this model (same LIF layers and T). */
int qkf_dense_set_sink(qkf_dense *e, const qkf_lif_sink *sink);

/* Turns on per-op timing; returns the array of accumulated seconds per graph op. */
double *qkf_dense_profile(qkf_dense *e);

/* Threads for OpenMP kernels and OpenBLAS. Results do not depend on it. */
void qkf_set_threads(int n);

#endif
