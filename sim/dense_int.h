/* The dense integer engine: runs a quantised model (models/quant.h) over all T steps for a batch,
 * every neuron every step, exactly in the profile's integer arithmetic. It is the reference the
 * integer event engine must match bit for bit (spikes and integer logits). Results do not depend
 * on the thread count (integer sums: each output is computed by one thread, and wrapping sums
 * do not depend on their order anyway).
 *
 * Layout as in the float dense engine: every tensor [C][F][N], F = T*B frames (f = t*B + b; a
 * static tensor holds B frames), here as int32 (currents S, counts, spikes 0/1). */
#ifndef QKF_DENSE_INT_H
#define QKF_DENSE_INT_H

#include <stdint.h>

#include "../models/quant.h"
#include "../models/sink.h"
#include "dense.h"

typedef struct qkf_dense_int qkf_dense_int;

/* Convolutions are exact integer sums computed by BLAS (sgemm while every partial sum stays
 * below 2^24, dgemm below 2^53: exact in any order) then shifted and wrapped to int32, or with
 * this flag by the plain integer GEMM (the reference twin; same bits). */
enum { QKF_DENSE_INT_PLAIN = 1 };
/* The official SSA proj_lif quirk (tb_compat, sim/dense.h): the engine walks q's configuration
 * with tb_compat, and those LIFs keep one membrane per neuron stepped over all T*B frames in the
 * order f = t*B + b (docs/hardware.md). */
enum { QKF_DENSE_INT_TB_COMPAT = 2 };

/* Plans every buffer for batches of up to max_batch (forward allocates nothing). The engine keeps
 * every tensor of the last forward (qkf_dense_int_tensor). */
qkf_dense_int *qkf_dense_int_create(const qkf_qmodel *q, int max_batch, int flags);
void qkf_dense_int_free(qkf_dense_int *e);
const qkf_graph *qkf_dense_int_graph(const qkf_dense_int *e);

/* input: as qkf_dense_forward ([B][C][H][W] normalised images, or [B][T][C][H][W] event-count
 * frames). logits [B][classes] (optional): logit_int * head_scale; logits_int [B][classes]
 * (optional): the exact integers; spike_count [n_lif] (optional) incremented. */
int qkf_dense_int_forward(qkf_dense_int *e, const float *input, int B, float *logits,
                          int64_t *logits_int, int64_t *spike_count);

/* After a forward: tensor t of the graph, [C][F][N] int32 (F = B for static tensors). */
const int32_t *qkf_dense_int_tensor(const qkf_dense_int *e, int tensor);
/* LIF layer l's spikes of the last forward as bytes [T][B][n], n = c*N + token (the per-sample
 * neuron index of traces and fixtures). out holds T*B*C*N bytes. */
void qkf_dense_int_lif_spikes(const qkf_dense_int *e, int lif_index, uint8_t *out);

/* Hands every forward's LIF layers that sink wants to sink->put_layer from now on (models/sink.h;
 * a trace: qkf_trace_sink), in the engine's [C][F][N] layout as floats in the integer form's
 * units: v and h are the membrane after reset and before the spike decision (membrane units: V
 * and H of docs/hardware.md, real value V * delta[c]), input the amount the step adds to the
 * membrane, A << current_shift + bias[c] (membrane units; the float model's x / 2 is
 * input * delta; [C][B][N] when the layer's input is static), spikes 0/1. float32 holds every
 * integer up to 2^24 exactly: all of a membrane of <= 25 bits. NULL removes the sink. */
int qkf_dense_int_set_sink(qkf_dense_int *e, const qkf_lif_sink *sink);

/* Spikes of LIF layer l that differ between this engine's last forward and a float engine's
 * spikes s_float in the float engine's layout ([C][T*B][N], qkf_dense_tensor of a KEEP_ALL
 * forward on the same input and batch). Returns the count; *total (optional) gets C*T*B*N. */
int64_t qkf_dense_int_flips(const qkf_dense_int *e, int lif_index, const float *s_float,
                            int64_t *total);

/* Runs the float model m on n samples (input layout of qkf_dense_forward, batches of up to
 * `batch`) and fills o's calibration statistics: per conv LIF and channel the largest |x| and
 * |h|, and the largest |pixel| of static images. Free them with qkf_quant_calib_free. */
int qkf_quant_calibrate(const qkf_model *m, const float *x, int n, int batch, qkf_quant_opts *o);
void qkf_quant_calib_free(qkf_quant_opts *o, const qkf_model *m);

#endif
