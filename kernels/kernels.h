/* Dense compute kernels. Every activation is [C][F][N] (see models/qkformer.h): channel-major,
 * frames f = t*B + b, tokens n = y*W + x. Kernels are pure functions of their arguments; they
 * never allocate (scratch is passed in), and parallelise with OpenMP over channels or frames. */
#ifndef QKF_KERNELS_H
#define QKF_KERNELS_H

#include <stdint.h>

/* Input layout: B images [B][C][N] -> [C][B][N] (static_t: one frame per sample, the same at
 * every step), or B frame sequences [B][T][C][N] -> [C][T*B][N] (f = t*B + b). */
void qkf_input_to_cfn(float *dst, const float *input, int C, int64_t N, int T, int B,
                      int static_t);

/* Convolution k x k (k = 1 or 3), stride s, zero padding p, no bias:
 *   in [cin][F][h][w], weight [cout][cin][k][k] (the PyTorch layout), out [cout][F][ho][wo].
 * 3x3 and strided convolutions go through im2col into `col` (col_cap floats), in chunks of
 * frames; each chunk is one sgemm. A 1x1 stride-1 convolution is one sgemm over all frames. */
void qkf_conv_forward(float *out, const float *in, const float *weight, int F, int cin, int h,
                      int w, int cout, int k, int stride, int pad, float *col, int64_t col_cap);
/* im2col for frames f0 .. f0+nf-1 of in [cin][F][h][w] into col [cin*k*k][nf][ho*wo] (zero
 * padding): the GEMM operand of a k x k convolution, shared by the forward and the backward. */
void qkf_im2col(float *col, const float *in, int F, int f0, int nf, int cin, int h, int w, int k,
                int stride, int pad, int ho, int wo);
/* qkf_im2col of a byte tensor (spikes, residual counts), converted to floats exactly. */
void qkf_im2col_u8(float *col, const uint8_t *in, int F, int f0, int nf, int cin, int h, int w,
                   int k, int stride, int pad, int ho, int wo);
/* Floats of scratch that lets qkf_conv_forward process at least one frame per sgemm. */
int64_t qkf_conv_col_floats(int cin, int h, int w, int k, int stride, int pad);

/* Conv bias and eval-mode BatchNorm, in place, exactly as PyTorch's CPU kernel computes it:
 *   alpha = gamma * (1 / sqrt(var + 1e-5)), beta' = beta - mean * alpha, x = (x + b) * alpha + beta'
 * x is [C][M] with M = F*N; bias may be NULL. */
void qkf_bias_bn_forward(float *x, int C, int64_t M, const float *bias, const float *gamma,
                         const float *beta, const float *mean, const float *var);
/* The same folded into per-channel scale and shift (used by fused kernels and the event engine). */
void qkf_bn_fold(int C, const float *gamma, const float *beta, const float *mean,
                 const float *var, float *alpha, float *shift);

/* MaxPool2d(kernel 3, stride 2, padding 1), -inf padding: in [P][h][w] -> out [P][ho][wo],
 * P = C*F planes, ho = (h - 1) / 2 + 1. */
void qkf_maxpool3s2_forward(float *out, const float *in, int64_t P, int h, int w);

/* Multi-step LIF (tau = 2, decay_input, hard reset to 0, spike when h >= vth), per sample:
 *   h[t] = v[t-1] + (x[t] - v[t-1]) / 2;  s[t] = h[t] >= vth;  v[t] = h[t] * (1 - s[t])
 * x [C][F][N] (or [C][B][N] when x_static: the same input at every step), s [C][F][N].
 * tb_compat: one membrane per (c, n) integrated over all F = T*B frames in order (the official
 * SSA proj_lif quirk). v_rec / h_rec (optional, [C][F][N]) receive the membrane after reset and
 * before the spike decision. Returns the number of spikes. */
int64_t qkf_lif_forward(float *s, const float *x, int C, int T, int B, int N, int x_static,
                        float vth, int tb_compat, float *v_rec, float *h_rec);

/* The same LIF with the preceding conv bias and eval BatchNorm fused into its input read: the
 * input is the raw convolution output and x[t] = (raw + bias[c]) * alpha[c] + shift[c], computed
 * exactly as qkf_bias_bn_forward does, so spikes are identical and one pass over the currents is
 * saved. bias may be NULL; x_rec (optional, [C][F][N] or [C][B][N] when static) receives x. */
int64_t qkf_bn_lif_forward(float *s, const float *raw, int C, int T, int B, int N, int x_static,
                           float vth, int tb_compat, const float *bias, const float *alpha,
                           const float *shift, float *v_rec, float *h_rec);
/* The same with the spikes written as bytes (0/1) [C][F][N]: the dense engine's compact spike
 * tensors. */
int64_t qkf_bn_lif_forward_u8(uint8_t *s, const float *x, int C, int T, int B, int N,
                              int x_static, float vth, int tb_compat, const float *bias,
                              const float *alpha, const float *shift, float *v_rec, float *h_rec);

/* QKTA: cnt [heads][F][N] = sum of q over each head's channels; QKCA: cnt [C][F][1] = sum of q
 * over the tokens of each channel. q [C][F][N]. */
void qkf_qk_token_sum(float *cnt, const float *q, int C, int heads, int F, int N);
void qkf_qk_channel_sum(float *cnt, const float *q, int C, int F, int N);
/* out = attn * k with attn broadcast over the head's channels (token) or the tokens (channel). */
void qkf_qk_token_mask(float *out, const float *attn, const float *k, int C, int heads, int F,
                       int N);
void qkf_qk_channel_mask(float *out, const float *attn, const float *k, int C, int F, int N);

/* SSA: per frame and head (channels h*d .. h*d+d-1), kv = k^T v ([d][d]), out = (q kv) * 0.125.
 * q, k, v, out [C][F][N]. scratch: heads * d * d floats per thread (2 threads max here: pass
 * qkf_ssa_scratch_floats()). */
int64_t qkf_ssa_scratch_floats(int C, int heads, int threads);
void qkf_ssa_forward(float *out, const float *q, const float *k, const float *v, int C, int heads,
                     int F, int N, float *scratch);

/* Readout: feat[b][c] = mean_t( mean_n x[c][t*B+b][n] ), logits = feat W^T + bias.
 * feat is scratch [B][C]. */
void qkf_readout_forward(float *logits, float *feat, const float *x, const float *w,
                         const float *bias, int C, int T, int B, int N, int classes);
/* Its linear head alone: logits [B][classes] = feat [B][C] . w[classes][C]^T + bias (shared
 * by the float and byte readouts, so both sum in the same order). */
void qkf_readout_head(float *logits, const float *feat, const float *w, const float *bias, int C,
                      int B, int classes);

#endif
