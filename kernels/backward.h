/* Training kernels: the training-mode forward of the layers whose forward differs from
 * inference (BatchNorm with batch statistics, MaxPool that records its argmax), the backward of
 * every layer, the softmax cross-entropy and AdamW.
 *
 * Layout as in kernels.h: activations [C][F][N], F = T*B frames, time-major. Each backward
 * takes (gradients out, cached forward values, inputs, weights, shape) in the order of its
 * forward. Parameter gradients always ACCUMULATE (+=) so one zero-grad per step suffices;
 * input gradients accumulate too unless the comment says "overwritten" (private scratch of the
 * training engine). Kernels never allocate. */
#ifndef QKF_BACKWARD_H
#define QKF_BACKWARD_H

#include <stdint.h>

#define QKF_BN_EPS 1e-5f
#define QKF_BN_MOMENTUM 0.1f
#define QKF_SURROGATE_ALPHA 4.0f /* sigmoid surrogate of SpikingJelly (spec section 1) */

/* ---- convolution (im2col + sgemm) ------------------------------------------------------ */

/* Backward of qkf_conv_forward (no bias). dout [cout][F][ho][wo], in [cin][F][h][w],
 * weight [cout][cin][k][k]. dweight += dout (*) in; din += weight^T (*) dout (din may be NULL
 * for the network input). col: scratch of col_cap >= qkf_conv_col_floats(...) floats. */
void qkf_conv_backward(float *din, float *dweight, const float *dout, const float *in,
                       const float *weight, int F, int cin, int h, int w, int cout, int k,
                       int stride, int pad, float *col, int64_t col_cap);
/* The input half of qkf_conv_backward alone: din += weight^T (*) dout. */
void qkf_conv_backward_input(float *din, const float *dout, const float *weight, int F, int cin,
                             int h, int w, int cout, int k, int stride, int pad, float *col,
                             int64_t col_cap);
/* The same with dout token-major: doutt [F][ho][wo][cout] (as qkf_bn_train_backward_t writes
 * it), in dynamically scheduled pieces; col_cap must hold one frame per thread. overwrite:
 * din = instead of din += (din need not be zeroed). */
void qkf_conv_backward_input_t(float *din, const float *doutt, const float *weight, int F,
                               int cin, int h, int w, int cout, int k, int stride, int pad,
                               int overwrite, float *col, int64_t col_cap);
/* Plain single-threaded references (direct loops, no im2col) used by the tests. */
void qkf_conv_forward_ref(float *out, const float *in, const float *weight, int F, int cin, int h,
                          int w, int cout, int k, int stride, int pad);
void qkf_conv_backward_ref(float *din, float *dweight, const float *dout, const float *in,
                           const float *weight, int F, int cin, int h, int w, int cout, int k,
                           int stride, int pad);

/* ---- BatchNorm, training mode ---------------------------------------------------------- */

/* BatchNorm of x + bias with the batch statistics, x the conv output WITHOUT its bias: the
 * bias cancels in the output (it only enters the running mean), so
 *   y = gamma * (x - mean) * invstd + beta,  mean / var: batch mean and biased variance of x
 * per channel over M = F*N values; x, y [C][M] (y may equal x); bias may be NULL. Records
 * mean[C] (of x) and invstd[C] = 1/sqrt(var + eps) for the backward, and updates the running
 * statistics with momentum 0.1: running_mean with mean + bias, running_var with the UNBIASED
 * variance var * n/(n-1), n = n_count (M normally; T*B*N for a static tensor that stands for
 * T identical copies, as PyTorch sees them). run_mean / run_var may be NULL; y NULL: the
 * statistics only (qkf_bn_train_apply, or a consumer that applies them, produces y). */
void qkf_bn_train_forward(float *y, float *mean, float *invstd, const float *x, int C, int64_t M,
                          const float *bias, const float *gamma, const float *beta,
                          float *run_mean, float *run_var, int64_t n_count);
/* The normalisation of qkf_bn_train_forward alone, bit for bit (to recompute y from x in the
 * backward instead of keeping it). */
void qkf_bn_train_apply(float *y, const float *x, const float *mean, const float *invstd,
                        const float *gamma, const float *beta, int C, int64_t M);
/* dx (overwritten; may equal dy) = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)),
 * dgamma += sum(dy * xhat), dbeta += sum(dy), dbias += sum(dx) (zero up to rounding, as in
 * PyTorch; dbias may be NULL). x, mean, invstd as in the forward. */
void qkf_bn_train_backward(float *dx, float *dgamma, float *dbeta, float *dbias, const float *dy,
                           const float *x, const float *mean, const float *invstd,
                           const float *gamma, int C, int64_t M);

/* qkf_bn_train_backward with dx written token-major: dxt [M][C] (M = F*N positions), the layout
 * the spike convolutions' weight gradient and qkf_conv_backward_input_t read. The same dx values;
 * dbias += the double sum of each channel's dx (float sums of 16 positions, in position
 * order). dxt must not alias dy. dx (optional, may equal dy): the same values channel-major. */
void qkf_bn_train_backward_t(float *dxt, float *dgamma, float *dbeta, float *dbias,
                             const float *dy, const float *x, const float *mean,
                             const float *invstd, const float *gamma, int C, int64_t M,
                             const double *sums, float *dx);
/* The two per-channel reductions of the BatchNorm backward over n values of one channel:
 * sdy = sum dy, sdyx = sum dy * ((x - m) * is), in float blocks summed in double. sums of
 * qkf_bn_train_backward_t ([2][C]: sdy then sdyx; NULL: computed there) come from it. */
void qkf_bn_sum_dy_dyx(const float *dy, const float *x, int64_t n, float m, float is,
                       double *sdy, double *sdyx);

/* ---- MaxPool 3/2/1 ------------------------------------------------------------------------ */

/* As qkf_maxpool3s2_forward, also recording arg [P][ho][wo], the in-plane index of the
 * maximum (the first one in scan order on ties, as PyTorch's CPU kernel). */
void qkf_maxpool3s2_train_forward(float *out, int32_t *arg, const float *in, int64_t P, int h,
                                  int w);
/* out [P][ho][wo] = in at the recorded argmax: the pooling again, bit for bit. */
void qkf_maxpool3s2_gather(float *out, const float *in, const int32_t *arg, int64_t P, int h,
                           int w);
/* din [P][h][w] (overwritten) = scatter of dout [P][ho][wo] to the argmax positions. */
void qkf_maxpool3s2_backward(float *din, const float *dout, const int32_t *arg, int64_t P, int h,
                             int w);

/* ---- LIF through time ------------------------------------------------------------------------ */

/* The membrane h [C][F][N] of a LIF forward again, from its input x (layout as in
 * qkf_lif_forward) and its recorded spikes s: h = v + (x - v)/2, v = h * (1 - s), the same
 * float operations as the forward, so h is bit-identical. */
void qkf_lif_recompute_h(float *h, const float *x, const float *s, int C, int T, int B, int N,
                         int x_static, int tb_compat);
/* Surrogate derivative of the Heaviside spike at x = h - vth: alpha*sig(alpha x)*(1-sig), with
 * exp evaluated by a polynomial (2e-7 relative) so the BPTT loop vectorises. */
float qkf_surrogate_grad(float x, float alpha);
/* BPTT of qkf_lif_forward with the detached hard reset (spec section 1):
 *   gh[t] = ds[t] * sg'(h[t] - vth) + gh[t+1] * (1 - 1/tau) * (1 - s[t]),  dx[t] += gh[t] / tau
 * h, s [C][F][N] from the forward (h = h_rec, the membrane before the spike decision);
 * dx [C][F][N], or [C][B][N] when x_static (the gradient of the shared input summed over T).
 * tb_compat: the time axis is all F frames (the official SSA proj_lif quirk). */
void qkf_lif_backward(float *dx, const float *ds, const float *h, const float *s, int C, int T,
                      int B, int N, int x_static, float vth, int tb_compat, float alpha);

/* ---- Q-K attention, SSA, readout ------------------------------------------------------------ */

/* dq [C][F][N] += dcnt broadcast over each head's channels (token) / each channel's tokens. */
void qkf_qk_token_sum_backward(float *dq, const float *dcnt, int C, int heads, int F, int N);
void qkf_qk_channel_sum_backward(float *dq, const float *dcnt, int C, int F, int N);
/* out = attn * k: dattn += sum over the broadcast axis of dout * k; dk += dout * attn. */
void qkf_qk_token_mask_backward(float *dattn, float *dk, const float *dout, const float *attn,
                                const float *k, int C, int heads, int F, int N);
void qkf_qk_channel_mask_backward(float *dattn, float *dk, const float *dout, const float *attn,
                                  const float *k, int C, int F, int N);

/* SSA backward: per frame and head, with Qt, Kt, Vt, dYt the [d][N] channel rows,
 *   kv = Kt Vt^T, dQt += 0.125 kv dYt, dkv = 0.125 Qt dYt^T, dKt += dkv Vt, dVt += dkv^T Kt.
 * scratch: qkf_ssa_backward_scratch_floats(C, heads, threads). */
int64_t qkf_ssa_backward_scratch_floats(int C, int heads, int threads);
void qkf_ssa_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                      const float *k, const float *v, int C, int heads, int F, int N,
                      float *scratch);

/* Backward of qkf_readout_forward: dlogits [B][classes], feat [B][C] (from the forward),
 * w [classes][C]. dx [C][F][N] += dfeat / (T*N); dw += dlogits^T feat; dbias += sum_b dlogits. */
void qkf_readout_backward(float *dx, float *dw, float *dbias, const float *dlogits,
                          const float *feat, const float *w, int C, int T, int B, int N,
                          int classes);

/* ---- loss ------------------------------------------------------------------------------------ */

/* Soft-target cross-entropy averaged over the batch: loss = -1/B sum_b sum_k target[b][k] *
 * log softmax(logits[b])[k]; probs [B][K] receives the softmax. Hard labels, label smoothing
 * (target = (1-eps) onehot + eps/K, timm's LabelSmoothingCrossEntropy) and mixup are all soft
 * targets. Computed in double; returns the loss. */
double qkf_xent_forward(float *probs, const float *logits, const float *target, int B, int K);
/* dlogits (overwritten) = dloss * (probs - target) / B. */
void qkf_xent_backward(float *dlogits, const float *probs, const float *target, int B, int K,
                       float dloss);
/* target [B][K] from labels with smoothing eps (0: one-hot). */
void qkf_xent_targets(float *target, const int32_t *labels, int B, int K, float eps);

/* ---- optimiser ------------------------------------------------------------------------------ */

/* One AdamW step (PyTorch's torch.optim.AdamW, decoupled weight decay) over n values:
 *   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).      step counts from 1. */
void qkf_adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                      float beta1, float beta2, float eps, float wd, int64_t step);

#endif
