/* The training engine: a training-mode forward (BatchNorm with batch statistics, running
 * statistics updated) over the same qkf_graph the dense engine runs, keeping what the backward
 * needs, and the backward pass (surrogate-gradient BPTT) into one flat gradient buffer parallel
 * to params.data (same offsets; BatchNorm running statistics get no gradient). */
#ifndef QKF_TRAIN_H
#define QKF_TRAIN_H

#include <stdint.h>

#include "../models/qkformer.h"
#include "../models/quant.h"
#include "../models/sink.h"

enum {
    QKF_TRAIN_TB_COMPAT = 1, /* official SSA proj_lif over the T*B axis */
    /* The data gradient of 3x3 stride-1 convolutions runs as Winograd F(4x4, 3x3) by default
     * (kernels/winograd.h: half the time of im2col + sgemm, ~1e-5 relative rounding); the
     * flags select F(2x2, 3x3) (~1e-6) or im2col + sgemm instead. */
    QKF_TRAIN_WINO2 = 2,
    QKF_TRAIN_DIRECT = 4,
};

typedef struct qkf_train qkf_train;

/* Plans every buffer for batches of up to max_batch samples (nothing is allocated later).
 * m->params is read and, by qkf_train_forward, its running statistics are updated. */
qkf_train *qkf_train_create(qkf_model *m, int max_batch, int flags);
void qkf_train_free(qkf_train *e);
const qkf_graph *qkf_train_graph(const qkf_train *e);
/* Hands the LIF layers tr wants (v, h, input, spikes of training-mode forwards) to tr->put_layer
 * (models/sink.h; a trace: qkf_trace_sink) from the next forward on; NULL stops recording. The trace's scratch is allocated on the first call. */
void qkf_train_set_trace(qkf_train *e, const qkf_lif_sink *tr);
/* Turns on per-op timing (qkf bench train under QKF_PROFILE); returns [5][n_ops]: seconds of
 * forward and backward per graph op, and for convolutions over spikes the summed fraction of
 * nonzero input values, the number of forwards and the seconds of the weight gradient. */
double *qkf_train_profile(qkf_train *e);
/* Floats of activations and scratch the engine holds (for reports). */
int64_t qkf_train_bytes(const qkf_train *e);

/* The flat gradient buffer (params.total floats, same offsets as params.data). */
float *qkf_train_grads(qkf_train *e);
void qkf_train_zero_grad(qkf_train *e);

/* Training-mode forward. input as qkf_dense_forward ([B][C][H][W] images or [B][T][C][H][W]
 * frames); logits [B][classes] (the engine's own buffer, valid until the next forward).
 * update_running: 0 leaves the BatchNorm running statistics untouched. */
int qkf_train_forward(qkf_train *e, const float *input, int B, int update_running,
                      const float **logits);
/* Backward of the last forward from dlogits [B][classes]; gradients accumulate into the flat
 * buffer. */
int qkf_train_backward(qkf_train *e, const float *dlogits);

/* One step's loss and gradient: forward, soft-target cross-entropy (target [B][classes]),
 * backward. Returns 0; *loss receives the mean loss and, if correct is not NULL, *correct the
 * number of samples whose arg-max logit equals the arg-max target. */
int qkf_train_loss_backward(qkf_train *e, const float *input, int B, const float *target,
                            double *loss, int *correct);

/* Knowledge distillation (Hinton et al. 2015) from a teacher's logits tz [B][classes]:
 *   loss = mean over b of (1 - alpha) CE(softmax(z), target) + alpha T^2 KL(softmax(tz / T) ||
 *          softmax(z / T))
 * with the student's logits z. dlogits [B][classes] receives w * dloss/dz (w: the loss weight);
 * returns the mean loss; correct (optional) as qkf_train_loss_backward counts it (arg-max of
 * target). 0 <= alpha <= 1, T > 0. A kernel without state, for qkf_train_loss_backward_kd and
 * its tests. */
double qkf_kd_loss(float *dlogits, const float *z, const float *target, const float *tz, int B,
                   int K, float alpha, float T, float w, int *correct);
/* qkf_train_loss_backward with that loss: forward, qkf_kd_loss, backward. */
int qkf_train_loss_backward_kd(qkf_train *e, const float *input, int B, const float *target,
                               const float *teacher_logits, float alpha, float T, double *loss,
                               int *correct);

/* ---- quantisation-aware training (qkf train --hw) ----------------------------------------- */

/* From the next forward on, the forward runs the chip's integer arithmetic a (models/quant.h,
 * docs/hardware.md): every forward quantises the float parameters afresh (qkf_quantize with o's
 * headroom and clip_bias; BatchNorm folded with its running statistics, which stay frozen) and
 * runs the dense integer engine (sim/dense_int.h), whose logits are the loss's; the backward is
 * the surrogate-gradient BPTT on that forward with a straight-through estimator for every
 * rounding (identity inside the registers' range, zero where a weight, bias, current or
 * membrane was clamped or wrapped). The float parameters stay the master copy. a NULL: float
 * training again. -1 for the float machine, --tb-compat, T > 64, or a model
 * the arithmetic cannot represent (the quantiser's one line, naming the layer); QAT is off
 * after a failure. */
int qkf_train_set_hw(qkf_train *e, const qkf_hw_arith *a, const char *name,
                     const qkf_quant_opts *o);
/* The integer model of the last forward under qkf_train_set_hw (NULL otherwise). */
const qkf_qmodel *qkf_train_qmodel(const qkf_train *e);

/* ---- data-parallel hooks (qkf train under mpirun) ----------------------------------------- */

/* Multiplies the loss gradient of qkf_train_loss_backward by w (default 1). Data parallel: a rank
 * holding B_r of a global batch of B sets w = B_r / B, so that the sum of the ranks' gradients is
 * the gradient of the mean loss over the global batch. */
void qkf_train_set_loss_weight(qkf_train *e, float w);
/* Synchronised BatchNorm: sum(buf, n) must sum n doubles in place over every rank (collective,
 * e.g. qkf_dist_sum_f64) and return 0, or -1 on failure. When set, every training-mode
 * BatchNorm sums its per-channel statistics (count, sum, then squared deviations from the global
 * mean) over the ranks and normalises with the global batch statistics, and its backward sums
 * the two per-channel reductions (sum of dy and of dy * x-hat), so the ranks' summed gradients
 * equal one process's over the global batch; the running statistics follow the global mean and
 * unbiased variance. The BatchNorm gradients (gamma, beta, conv bias) accumulated into the flat
 * buffer are this rank's share only, to be summed like every other gradient. NULL (default):
 * per-rank statistics through the ordinary kernels. Do not set it in a single process. */
void qkf_train_set_bn_sync(qkf_train *e, int (*sum)(double *buf, int64_t n));
/* Calls fn(ctx, i) right after the backward of graph op i (ops run in reverse order), when the
 * gradients of op i's parameters are final: a data-parallel trainer starts their all-reduce
 * while the backward goes on. A non-zero return stops the backward, which returns -1. NULL: none. */
void qkf_train_set_grad_hook(qkf_train *e, int (*fn)(void *ctx, int op), void *ctx);

/* ---- optimiser ------------------------------------------------------------------------------ */

/* AdamW with a per-iteration schedule: linear warmup from warmup_lr to lr over warmup_steps,
 * then a half-cycle cosine from lr to min_lr at total_steps. Weight decay applies only to
 * tensors of two or more dimensions (qkf_param.decay), as the official recipes. clip > 0
 * rescales the gradient to at most that global L2 norm. */
typedef struct {
    float lr, min_lr, warmup_lr;
    int64_t warmup_steps, total_steps;
    float beta1, beta2, eps, weight_decay, clip;
} qkf_optim_cfg;

typedef struct {
    qkf_optim_cfg cfg;
    int64_t step; /* updates done */
    float *m, *v; /* moments, params.total floats each (zero for buffers) */
    int64_t n;
} qkf_optim;

void qkf_optim_defaults(qkf_optim_cfg *c);
void qkf_optim_init(qkf_optim *o, const qkf_params *ps, const qkf_optim_cfg *c);
void qkf_optim_free(qkf_optim *o);
/* Learning rate of update number `step` (0-based). */
float qkf_optim_lr(const qkf_optim_cfg *c, int64_t step);
/* Clips (if configured) and applies one update to the trainable parameters; returns the
 * gradient norm before clipping. grads is the flat buffer (scaled in place when clipping). */
double qkf_optim_step(qkf_optim *o, qkf_params *ps, float *grads);

/* After a forward: a kept float tensor ([C][F][N], F = B for static tensors) or NULL (byte
 * tensors, recomputed currents). The input currents of a LIF layer hold that layer's membrane h
 * (before the spike decision) instead: the backward needs h, and nothing else reads the
 * currents. Spikes and residual counts are bytes: qkf_train_spikes, or NULL for float tensors. */
const float *qkf_train_tensor(const qkf_train *e, int tensor);
const uint8_t *qkf_train_spikes(const qkf_train *e, int tensor);

#endif
