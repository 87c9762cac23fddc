/* Winograd F(m x m, 3 x 3) convolution (m = 2 or 4) for 3x3, stride-1, pad-1 convolutions,
 * the layout and semantics of qkf_conv_forward: in [cin][F][h][w], out [cout][F][h][w], no bias.
 * The weights are transformed once (qkf_wino_weights) and reused for every forward. */
#ifndef QKF_WINOGRAD_H
#define QKF_WINOGRAD_H

#include <stdint.h>

/* 1 if a k x k convolution with this stride and padding can run as F(m x m, 3 x 3). */
int qkf_wino_ok(int m, int k, int stride, int pad);
/* Floats of the transformed weights U [(m+2)^2][cout][cin]. */
int64_t qkf_wino_weight_floats(int m, int cout, int cin);
/* U = G g G^T per (cout, cin), computed in double and rounded once. w: [cout][cin][3][3]. */
void qkf_wino_weights(int m, float *U, const float *w, int cout, int cin);
/* Scratch floats that let qkf_wino_conv_forward process one frame per pass; more frames per
 * pass (bigger GEMMs) when scratch_cap allows. */
int64_t qkf_wino_scratch_floats(int m, int cin, int cout, int h, int w);
void qkf_wino_conv_forward(int m, float *out, const float *in, const float *U, int F, int cin,
                           int h, int w, int cout, float *scratch, int64_t scratch_cap);
/* The same adding into out (out += conv(in)). */
void qkf_wino_conv_accumulate(int m, float *out, const float *in, const float *U, int F, int cin,
                              int h, int w, int cout, float *scratch, int64_t scratch_cap);
/* For the data gradient of a cin -> cout convolution with weights w [cout][cin][3][3]:
 * U (of qkf_wino_weight_floats(m, cin, cout) floats) such that
 *   qkf_wino_conv_accumulate(m, din, dout, U, F, cout, h, w, cin, ...)
 * adds w^T (*) dout to din [cin][F][h][w], as qkf_conv_backward does. */
void qkf_wino_weights_transposed(int m, float *U, const float *w, int cout, int cin);

#endif
