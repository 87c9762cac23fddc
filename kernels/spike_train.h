/* Training kernels over byte spike tensors. The training engine keeps LIF spikes and residual
 * counts as uint8 [C][F][N] (the layout of kernels.h: channel-major, frames f = t*B + b, tokens
 * n = y*W + x), a quarter of the floats' memory, and exploits their sparsity in the convolution
 * products that read them:
 *
 *   - forward  z = W (*) in: each output token gathers the weight rows of the events in its
 *     receptive field (qkf_spike_gather, weights re-laid [cin][k*k][cout]) and the token-major
 *     result is transposed back to [cout][F][N];
 *   - weight gradient dW += dz (*) in^T: dz comes token-major, rows [position][cout] (the
 *     BatchNorm backward writes it so), and every (input channel, kernel tap) row of dW
 *     accumulates the dz rows of the channel's events (again qkf_spike_gather), in chunks of
 *     frames that stay in L2.
 *
 * Above a density threshold both fall back to im2col (from bytes) + sgemm. Every output sums in
 * an order that depends only on the data, never on the thread count, so parallel loops are
 * scheduled dynamically (a thread preempted on a shared machine holds up one iteration).
 *
 * The other kernels are the byte-tensor twins of the float kernels of kernels.h / backward.h,
 * with the same float operations in the same order where a float result is produced. Kernels
 * never allocate: `work` is scratch of the size the _work_floats function returns. */
#ifndef QKF_SPIKE_TRAIN_H
#define QKF_SPIKE_TRAIN_H

#include <stdint.h>

/* ---- convolution with a byte input --------------------------------------------------------- */

/* Scratch floats for qkf_spikeconv_forward and qkf_spikeconv_backward_weight of one shape with
 * up to `threads` OpenMP threads. */
int64_t qkf_spikeconv_work_floats(int F, int cin, int h, int w, int cout, int k, int stride,
                                  int pad, int threads);
/* out [cout][F][ho][wo] (overwritten) = weight [cout][cin][k][k] (*) in [cin][F][h][w] (bytes,
 * integer counts), zero padding, no bias. Returns the number of nonzero input values. */
int64_t qkf_spikeconv_forward(float *out, const uint8_t *in, const float *weight, int F, int cin,
                              int h, int w, int cout, int k, int stride, int pad, float *work,
                              int64_t work_cap);
/* dweight [cout][cin][k][k] += dout (*) in^T, dout given token-major: doutt [F][ho][wo][cout]
 * (qkf_bn_train_backward_t writes it so). */
void qkf_spikeconv_backward_weight(float *dweight, const float *doutt, const uint8_t *in, int F,
                                   int cin, int h, int w, int cout, int k, int stride, int pad,
                                   float *work, int64_t work_cap);
/* Density (nonzero fraction) above which the products go dense; settable for tests and
 * benchmarks (negative: always dense, above 1: always sparse). */
void qkf_spikeconv_set_threshold(double forward, double weight);

/* ---- LIF with byte spikes -------------------------------------------------------------------- */

/* qkf_lif_forward with s [C][F][N] as bytes (0/1). h_rec optional. Returns the spike count. */
int64_t qkf_lif_forward_u8(uint8_t *s, const float *x, int C, int T, int B, int N, int x_static,
                           float vth, int tb_compat, float *v_rec, float *h_rec);
/* qkf_lif_recompute_h and qkf_lif_backward with byte spikes. */
void qkf_lif_recompute_h_u8(float *h, const float *x, const uint8_t *s, int C, int T, int B,
                            int N, int x_static, int tb_compat);
void qkf_lif_backward_u8(float *dx, const float *ds, const float *h, const uint8_t *s, int C,
                         int T, int B, int N, int x_static, float vth, int tb_compat, float alpha);

/* The LIF of a convolution-fed layer without its input currents in memory: x is computed on the
 * fly from the convolution's pre-BatchNorm output z [C][xF][N] and the batch statistics exactly
 * as qkf_bn_train_apply computes it, so spikes and membranes equal qkf_lif_forward_u8's on
 * that x. h_rec optional. */
void qkf_lif_forward_bn_u8(uint8_t *s, const float *z, const float *mean, const float *invstd,
                           const float *gamma, const float *beta, int C, int T, int B, int N,
                           int x_static, float vth, int tb_compat, float *h_rec);
/* qkf_lif_recompute_h_u8 + qkf_lif_backward_u8 in one pass, with x from z as above; pooled
 * layers (arg != NULL) read z [C][xF][zplane] at the MaxPool argmax arg [C][xF][N], as
 * qkf_maxpool3s2_gather does. Bit-identical to the unfused kernels; neither x nor h is kept.
 * overwrite (ignored when x_static): dx = instead of dx += (saves zeroing it first).
 * bn_sums (optional, [2][C], un-pooled only): the BatchNorm backward's reductions of dx
 * (qkf_bn_sum_dy_dyx), computed while each channel is in cache.
 * scratch: qkf_lif_backward_bn_scratch_floats(T, B, tb_compat, threads). */
int64_t qkf_lif_backward_bn_scratch_floats(int T, int B, int tb_compat, int threads);
void qkf_lif_backward_bn_u8(float *dx, const float *ds, const uint8_t *s, const float *z,
                            const int32_t *arg, int zplane, const float *mean,
                            const float *invstd, const float *gamma, const float *beta, int C,
                            int T, int B, int N, int x_static, float vth, int tb_compat,
                            float alpha, int overwrite, double *bn_sums, float *scratch);

/* ---- residual, Q-K attention, SSA, readout on byte tensors --------------------------------- */

/* out[i] = a[i] + b[i] (counts; the caller guarantees they stay below 256). */
void qkf_add_u8(uint8_t *out, const uint8_t *a, const uint8_t *b, int64_t n);
/* dst [cols][rows] = src [rows][cols]^T, in parallel over tiles. */
void qkf_transpose_f32(float *dst, const float *src, int64_t rows, int cols);
/* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols, one thread (16 x 16 register
 * tiles). */
void qkf_transpose_tile(float *dst, int64_t ldd, const float *src, int64_t lds, int rows,
                        int cols);
/* out[i] = (float)in[i]. */
void qkf_u8_to_float(float *out, const uint8_t *in, int64_t n);
void qkf_qk_token_sum_u8(float *cnt, const uint8_t *q, int C, int heads, int F, int N);
void qkf_qk_channel_sum_u8(float *cnt, const uint8_t *q, int C, int F, int N);
/* QKTA: attn [heads][F][N]; QKCA: attn [C][F] (one neuron per channel and frame). */
void qkf_qk_token_mask_u8(uint8_t *out, const uint8_t *attn, const uint8_t *k, int C, int heads,
                          int F, int N);
void qkf_qk_channel_mask_u8(uint8_t *out, const uint8_t *attn, const uint8_t *k, int C, int F,
                            int N);
void qkf_qk_token_mask_backward_u8(float *dattn, float *dk, const float *dout,
                                   const uint8_t *attn, const uint8_t *k, int C, int heads, int F,
                                   int N);
void qkf_qk_channel_mask_backward_u8(float *dattn, float *dk, const float *dout,
                                     const uint8_t *attn, const uint8_t *k, int C, int F, int N);

/* SSA (qkf_ssa_forward / qkf_ssa_backward) with byte q, k, v. Per frame and head the operands
 * are copied to contiguous [d][N] floats in scratch, so the products run over contiguous rows.
 * scratch: qkf_ssa_u8_scratch_floats(C, heads, N, threads). */
int64_t qkf_ssa_u8_scratch_floats(int C, int heads, int N, int threads);
void qkf_ssa_forward_u8(float *out, const uint8_t *q, const uint8_t *k, const uint8_t *v, int C,
                        int heads, int F, int N, float *scratch);
void qkf_ssa_backward_u8(float *dq, float *dk, float *dv, const float *dout, const uint8_t *q,
                         const uint8_t *k, const uint8_t *v, int C, int heads, int F, int N,
                         float *scratch);

/* qkf_readout_forward with a byte x (the same float sums: the counts are exact). */
void qkf_readout_forward_u8(float *logits, float *feat, const uint8_t *x, const float *w,
                            const float *bias, int C, int T, int B, int N, int classes);

#endif
