/* Convolution by im2col + sgemm, bias + BatchNorm, and MaxPool. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

void qkf_input_to_cfn(float *dst, const float *input, int C, int64_t N, int T, int B,
                      int static_t)
{
    if (static_t) {
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                memcpy(dst + ((int64_t)c * B + b) * N, input + ((int64_t)b * C + c) * N,
                       (size_t)N * sizeof(float));
        return;
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                memcpy(dst + ((int64_t)c * T * B + (int64_t)t * B + b) * N,
                       input + (((int64_t)b * T + t) * C + c) * N, (size_t)N * sizeof(float));
}

int64_t qkf_conv_col_floats(int cin, int h, int w, int k, int stride, int pad)
{
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    return (int64_t)cin * k * k * ho * wo;
}

/* One im2col for float and byte inputs (u8 a constant after inlining): in is [cin][F][h][w]
 * of floats, or of bytes (spikes, residual counts) converted exactly on the way. */
static inline __attribute__((always_inline)) void im2col(float *col, const void *in, int u8, int F,
                                                        int f0, int nf, int cin, int h, int w,
                                                        int k, int stride, int pad, int ho, int wo)
{
    int64_t plane = (int64_t)h * w, oplane = (int64_t)ho * wo;
#pragma omp parallel for collapse(2) schedule(static)
    for (int ci = 0; ci < cin; ci++)
        for (int kk = 0; kk < k * k; kk++) {
            int ky = kk / k, kx = kk % k;
            float *dst = col + ((int64_t)ci * k * k + kk) * nf * oplane;
            for (int f = 0; f < nf; f++) {
                int64_t src = ((int64_t)ci * F + f0 + f) * plane;
                const float *sf = u8 ? NULL : (const float *)in + src;
                const uint8_t *sb = u8 ? (const uint8_t *)in + src : NULL;
                float *d = dst + f * oplane;
                for (int oy = 0; oy < ho; oy++) {
                    int iy = oy * stride - pad + ky;
                    float *drow = d + (int64_t)oy * wo;
                    if (iy < 0 || iy >= h) {
                        memset(drow, 0, (size_t)wo * sizeof(float));
                        continue;
                    }
                    int64_t row = (int64_t)iy * w;
                    if (stride == 1) {
                        /* valid ox range: 0 <= ox - pad + kx < w */
                        int lo = pad - kx > 0 ? pad - kx : 0;
                        int hi = w + pad - kx < wo ? w + pad - kx : wo;
                        for (int ox = 0; ox < lo; ox++)
                            drow[ox] = 0.0f;
                        if (hi > lo && !u8)
                            memcpy(drow + lo, sf + row + lo - pad + kx,
                                   (size_t)(hi - lo) * sizeof(float));
                        else
                            for (int ox = lo; ox < hi; ox++)
                                drow[ox] = (float)sb[row + ox - pad + kx];
                        for (int ox = hi > lo ? hi : lo; ox < wo; ox++)
                            drow[ox] = 0.0f;
                    } else {
                        for (int ox = 0; ox < wo; ox++) {
                            int ix = ox * stride - pad + kx;
                            drow[ox] = ix < 0 || ix >= w ? 0.0f
                                       : u8              ? (float)sb[row + ix]
                                                         : sf[row + ix];
                        }
                    }
                }
            }
        }
}

void qkf_im2col(float *col, const float *in, int F, int f0, int nf, int cin, int h, int w, int k,
                int stride, int pad, int ho, int wo)
{
    im2col(col, in, 0, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
}

void qkf_im2col_u8(float *col, const uint8_t *in, int F, int f0, int nf, int cin, int h, int w,
                   int k, int stride, int pad, int ho, int wo)
{
    im2col(col, in, 1, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
}

void qkf_conv_forward(float *out, const float *in, const float *weight, int F, int cin, int h,
                      int w, int cout, int k, int stride, int pad, float *col, int64_t col_cap)
{
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    int64_t oplane = (int64_t)ho * wo, K = (int64_t)cin * k * k;
    if (k == 1 && stride == 1 && pad == 0) {
        /* out[cout][F*N] = W[cout][cin] x in[cin][F*N] */
        int64_t n = (int64_t)F * oplane;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)n, cin, 1.0f, weight,
                    cin, in, (int)n, 0.0f, out, (int)n);
        return;
    }
    int64_t per_frame = K * oplane;
    int chunk = (int)(col_cap / per_frame);
    if (chunk < 1)
        chunk = 1; /* caller guarantees col_cap >= per_frame */
    if (chunk > F)
        chunk = F;
    for (int f0 = 0; f0 < F; f0 += chunk) {
        int nf = F - f0 < chunk ? F - f0 : chunk;
        qkf_im2col(col, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)(nf * oplane), (int)K,
                    1.0f, weight, (int)K, col, (int)(nf * oplane), 0.0f, out + f0 * oplane,
                    (int)(F * oplane));
    }
}

void qkf_bn_fold(int C, const float *gamma, const float *beta, const float *mean,
                 const float *var, float *alpha, float *shift)
{
    for (int c = 0; c < C; c++) {
        float invstd = 1.0f / sqrtf(var[c] + 1e-5f);
        alpha[c] = invstd * gamma[c];
        shift[c] = beta[c] - mean[c] * alpha[c];
    }
}

void qkf_bias_bn_forward(float *x, int C, int64_t M, const float *bias, const float *gamma,
                         const float *beta, const float *mean, const float *var)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float a, s;
        qkf_bn_fold(1, gamma + c, beta + c, mean + c, var + c, &a, &s);
        float b = bias ? bias[c] : 0.0f;
        float *xc = x + (int64_t)c * M;
        if (bias) {
            for (int64_t i = 0; i < M; i++) {
                float t = xc[i] + b;
                t = t * a;
                xc[i] = t + s;
            }
        } else {
            for (int64_t i = 0; i < M; i++) {
                float t = xc[i] * a;
                xc[i] = t + s;
            }
        }
    }
}

void qkf_maxpool3s2_forward(float *out, const float *in, int64_t P, int h, int w)
{
    int ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < P; p++) {
        const float *src = in + p * h * w;
        float *dst = out + p * ho * wo;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float m = -INFINITY;
                for (int dy = -1; dy <= 1; dy++) {
                    int iy = 2 * oy + dy;
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int dx = -1; dx <= 1; dx++) {
                        int ix = 2 * ox + dx;
                        if (ix < 0 || ix >= w)
                            continue;
                        float v = src[iy * w + ix];
                        m = v > m ? v : m;
                    }
                }
                dst[oy * wo + ox] = m;
            }
    }
}
