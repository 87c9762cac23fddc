/* Training kernels: training-mode BatchNorm and MaxPool, and the backward of every layer of
 * QKFormer (convolution, BatchNorm, MaxPool, LIF through time, Q-K attention, SSA, readout,
 * softmax cross-entropy). Shapes and conventions are in backward.h.
 *
 * Determinism: every parallel loop writes disjoint memory and every reduction runs inside one
 * iteration in a fixed order, so results do not depend on the number of threads except through
 * OpenBLAS's sgemm (fixed for a given thread count). Loops over channels or planes are
 * scheduled dynamically: the results do not depend on which thread runs an iteration, and on a
 * shared machine a preempted thread then holds up one iteration, not a static share. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backward.h"
#include "base.h"
#include "kernels.h"
#include "lif_internal.h"
#include "spike_train.h"
#include "surrogate.h"

/* ---- convolution --------------------------------------------------------------------------- */

static void conv_dims(int h, int w, int k, int stride, int pad, int *ho, int *wo)
{
    *ho = (h + 2 * pad - k) / stride + 1;
    *wo = (w + 2 * pad - k) / stride + 1;
}

/* Frames per im2col chunk: as many as cap floats of column buffer hold (one frame must fit),
 * at most F. */
static int col_chunk(int64_t cap, int64_t per_frame, int F)
{
    QKF_ASSERT(cap >= per_frame);
    int64_t chunk = cap / per_frame;
    return chunk > F ? F : (int)chunk;
}

/* din[ci][f0+f][iy][ix] += col[(ci*k*k + kk)][f][oy][ox]; parallel over ci (disjoint). */
static void col2im_add(float *din, const float *col, int F, int f0, int nf, int cin, int h, int w,
                       int k, int stride, int pad, int ho, int wo)
{
    int64_t plane = (int64_t)h * w, oplane = (int64_t)ho * wo;
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cin; ci++)
        for (int kk = 0; kk < k * k; kk++) {
            int ky = kk / k, kx = kk % k;
            const float *src = col + ((int64_t)ci * k * k + kk) * nf * oplane;
            for (int f = 0; f < nf; f++) {
                float *dst = din + ((int64_t)ci * F + f0 + f) * plane;
                const float *s = src + f * oplane;
                for (int oy = 0; oy < ho; oy++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    float *drow = dst + (int64_t)iy * w;
                    const float *srow = s + (int64_t)oy * wo;
                    if (stride == 1) {
                        int lo = pad - kx > 0 ? pad - kx : 0;
                        int hi = w + pad - kx < wo ? w + pad - kx : wo;
                        for (int ox = lo; ox < hi; ox++)
                            drow[ox - pad + kx] += srow[ox];
                        continue;
                    }
                    for (int ox = 0; ox < wo; ox++) {
                        int ix = ox * stride - pad + kx;
                        if (ix >= 0 && ix < w)
                            drow[ix] += srow[ox];
                    }
                }
            }
        }
}

void qkf_conv_backward(float *din, float *dweight, const float *dout, const float *in,
                       const float *weight, int F, int cin, int h, int w, int cout, int k,
                       int stride, int pad, float *col, int64_t col_cap)
{
    int ho, wo;
    conv_dims(h, w, k, stride, pad, &ho, &wo);
    int64_t oplane = (int64_t)ho * wo, K = (int64_t)cin * k * k;
    if (k == 1 && stride == 1 && pad == 0) {
        int n = (int)((int64_t)F * oplane);
        /* dW[cout][cin] += dout[cout][n] in[cin][n]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cout, cin, n, 1.0f, dout, n, in, n,
                    1.0f, dweight, cin);
    } else {
        int chunk = col_chunk(col_cap, K * oplane, F);
        int ld = (int)((int64_t)F * oplane);
        for (int f0 = 0; f0 < F; f0 += chunk) {
            int nf = F - f0 < chunk ? F - f0 : chunk;
            int n = (int)(nf * oplane);
            qkf_im2col(col, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cout, (int)K, n, 1.0f,
                        dout + f0 * oplane, ld, col, n, 1.0f, dweight, (int)K);
        }
    }
    if (din)
        qkf_conv_backward_input(din, dout, weight, F, cin, h, w, cout, k, stride, pad, col,
                                col_cap);
}

void qkf_conv_backward_input(float *din, const float *dout, const float *weight, int F, int cin,
                             int h, int w, int cout, int k, int stride, int pad, float *col,
                             int64_t col_cap)
{
    int ho, wo;
    conv_dims(h, w, k, stride, pad, &ho, &wo);
    int64_t oplane = (int64_t)ho * wo, K = (int64_t)cin * k * k;
    if (k == 1 && stride == 1 && pad == 0) {
        int n = (int)((int64_t)F * oplane);
        /* din[cin][n] += W^T dout */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cin, n, cout, 1.0f, weight, cin,
                    dout, n, 1.0f, din, n);
        return;
    }
    int chunk = col_chunk(col_cap, K * oplane, F);
    int ld = (int)((int64_t)F * oplane);
    for (int f0 = 0; f0 < F; f0 += chunk) {
        int nf = F - f0 < chunk ? F - f0 : chunk;
        int n = (int)(nf * oplane);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, n, cout, 1.0f, weight,
                    (int)K, dout + f0 * oplane, ld, 0.0f, col, n);
        col2im_add(din, col, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
    }
}

void qkf_conv_backward_input_t(float *din, const float *doutt, const float *weight, int F,
                               int cin, int h, int w, int cout, int k, int stride, int pad,
                               int overwrite, float *col, int64_t col_cap)
{
    int ho, wo;
    conv_dims(h, w, k, stride, pad, &ho, &wo);
    int64_t oplane = (int64_t)ho * wo, K = (int64_t)cin * k * k;
    /* Dynamically scheduled pieces, each one single-threaded sgemm (OpenBLAS's OpenMP build
     * runs serially inside a parallel region) on disjoint outputs: on a shared machine a
     * preempted thread delays only its current piece, not a static half of the product. Every
     * output element sums over cout in the same order whatever the split, so the bits do not
     * depend on the thread count. */
    if (k == 1 && stride == 1 && pad == 0) {
        int64_t n = (int64_t)F * oplane;
        const int64_t blk = 1024;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t j0 = 0; j0 < n; j0 += blk) {
            int nb = (int)(n - j0 < blk ? n - j0 : blk);
            /* din[cin][j0 ..] += W^T doutt[j0 ..]^T */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, cin, nb, cout, 1.0f, weight, cin,
                        doutt + j0 * cout, cout, overwrite ? 0.0f : 1.0f, din + j0, (int)n);
        }
        return;
    }
    int nth = omp_get_max_threads();
    int chunk = col_chunk(col_cap / nth, K * oplane, F), spread = F / (4 * nth);
    chunk = spread >= 1 && chunk > spread ? spread : chunk;
    int nchunk = (F + chunk - 1) / chunk;
#pragma omp parallel
    {
        float *mine = col + (int64_t)omp_get_thread_num() * (col_cap / nth);
#pragma omp for schedule(dynamic, 1)
        for (int ci = 0; ci < nchunk; ci++) {
            int f0 = ci * chunk, nf = F - f0 < chunk ? F - f0 : chunk;
            int n = (int)(nf * oplane);
            if (overwrite) /* this chunk's frames of din */
                for (int c = 0; c < cin; c++)
                    memset(din + ((int64_t)c * F + f0) * h * w, 0,
                           (size_t)nf * h * w * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)K, n, cout, 1.0f, weight,
                        (int)K, doutt + f0 * oplane * cout, cout, 0.0f, mine, n);
            col2im_add(din, mine, F, f0, nf, cin, h, w, k, stride, pad, ho, wo); /* serial */
        }
    }
}

void qkf_conv_forward_ref(float *out, const float *in, const float *weight, int F, int cin, int h,
                          int w, int cout, int k, int stride, int pad)
{
    int ho, wo;
    conv_dims(h, w, k, stride, pad, &ho, &wo);
    for (int co = 0; co < cout; co++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double s = 0.0;
                    for (int ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                s += (double)in[(((int64_t)ci * F + f) * h + iy) * w + ix] *
                                     (double)weight[(((int64_t)co * cin + ci) * k + ky) * k + kx];
                            }
                    out[(((int64_t)co * F + f) * ho + oy) * wo + ox] = (float)s;
                }
}

void qkf_conv_backward_ref(float *din, float *dweight, const float *dout, const float *in,
                           const float *weight, int F, int cin, int h, int w, int cout, int k,
                           int stride, int pad)
{
    int ho, wo;
    conv_dims(h, w, k, stride, pad, &ho, &wo);
    for (int co = 0; co < cout; co++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    float g = dout[(((int64_t)co * F + f) * ho + oy) * wo + ox];
                    for (int ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                int64_t ii = (((int64_t)ci * F + f) * h + iy) * w + ix;
                                int64_t wi = (((int64_t)co * cin + ci) * k + ky) * k + kx;
                                dweight[wi] += g * in[ii];
                                if (din)
                                    din[ii] += g * weight[wi];
                            }
                }
}

/* ---- BatchNorm ------------------------------------------------------------------------------ */

/* Sums over n floats: 16 float lanes within blocks of 1024 values (vectorisable), blocks added
 * in double. Fixed order, so deterministic; error ~1e-7 relative. */
#define LANES 16
#define BLOCK 1024

static double sum_f(const float *x, int64_t n)
{
    double total = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {
        int64_t b1 = b0 + BLOCK < n ? b0 + BLOCK : n;
        float acc[LANES] = {0};
        int64_t i = b0;
        for (; i + LANES <= b1; i += LANES)
            for (int l = 0; l < LANES; l++)
                acc[l] += x[i + l];
        float t = 0.0f;
        for (; i < b1; i++)
            t += x[i];
        for (int l = 0; l < LANES; l++)
            t += acc[l];
        total += (double)t;
    }
    return total;
}

/* sum (x - m)^2 */
static double sum_sq_dev(const float *x, int64_t n, float m)
{
    double total = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {
        int64_t b1 = b0 + BLOCK < n ? b0 + BLOCK : n;
        float acc[LANES] = {0};
        int64_t i = b0;
        for (; i + LANES <= b1; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float d = x[i + l] - m;
                acc[l] += d * d;
            }
        float t = 0.0f;
        for (; i < b1; i++) {
            float d = x[i] - m;
            t += d * d;
        }
        for (int l = 0; l < LANES; l++)
            t += acc[l];
        total += (double)t;
    }
    return total;
}

/* sum dy and sum dy * (x - m) * is */
void qkf_bn_sum_dy_dyx(const float *dy, const float *x, int64_t n, float m, float is,
                       double *sdy, double *sdyx)
{
    double t1 = 0.0, t2 = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {
        int64_t b1 = b0 + BLOCK < n ? b0 + BLOCK : n;
        float a1[LANES] = {0}, a2[LANES] = {0};
        int64_t i = b0;
        for (; i + LANES <= b1; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float g = dy[i + l];
                a1[l] += g;
                a2[l] += g * ((x[i + l] - m) * is);
            }
        float u1 = 0.0f, u2 = 0.0f;
        for (; i < b1; i++) {
            u1 += dy[i];
            u2 += dy[i] * ((x[i] - m) * is);
        }
        for (int l = 0; l < LANES; l++)
            u1 += a1[l], u2 += a2[l];
        t1 += (double)u1;
        t2 += (double)u2;
    }
    *sdy = t1;
    *sdyx = t2;
}

static inline void bn_apply_channel(float *y, const float *x, int64_t M, float m, float is,
                                    float gamma, float beta)
{
    float a = gamma * is;
    for (int64_t i = 0; i < M; i++)
        y[i] = (x[i] - m) * a + beta;
}

void qkf_bn_train_apply(float *y, const float *x, const float *mean, const float *invstd,
                        const float *gamma, const float *beta, int C, int64_t M)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        bn_apply_channel(y + (int64_t)c * M, x + (int64_t)c * M, M, mean[c], invstd[c], gamma[c],
                         beta[c]);
}

void qkf_bn_train_forward(float *y, float *mean, float *invstd, const float *x, int C, int64_t M,
                          const float *bias, const float *gamma, const float *beta,
                          float *run_mean, float *run_var, int64_t n_count)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * M;
        float *yc = y ? y + (int64_t)c * M : NULL;
        double b = bias ? (double)bias[c] : 0.0;
        double mu = sum_f(xc, M) / (double)M; /* mean of x; the mean of x + bias is mu + b */
        float m = (float)mu;
        double var = sum_sq_dev(xc, M, m) / (double)M;
        float is = (float)(1.0 / sqrt(var + (double)QKF_BN_EPS));
        mean[c] = m;
        invstd[c] = is;
        if (y)
            bn_apply_channel(yc, xc, M, m, is, gamma[c], beta[c]);
        if (run_mean) {
            double unb = n_count > 1 ? var * (double)n_count / (double)(n_count - 1) : var;
            run_mean[c] = (1.0f - QKF_BN_MOMENTUM) * run_mean[c] +
                          QKF_BN_MOMENTUM * (float)(mu + b);
            run_var[c] = (1.0f - QKF_BN_MOMENTUM) * run_var[c] + QKF_BN_MOMENTUM * (float)unb;
        }
    }
}

void qkf_bn_train_backward(float *dx, float *dgamma, float *dbeta, float *dbias, const float *dy,
                           const float *x, const float *mean, const float *invstd,
                           const float *gamma, int C, int64_t M)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * M, *dyc = dy + (int64_t)c * M;
        float *dxc = dx + (int64_t)c * M;
        float m = mean[c], is = invstd[c];
        double sdy, sdyx;
        qkf_bn_sum_dy_dyx(dyc, xc, M, m, is, &sdy, &sdyx);
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        float k1 = (float)(sdy / (double)M), k2 = (float)(sdyx / (double)M);
        float a = gamma[c] * is;
        for (int64_t i = 0; i < M; i++) {
            float xh = (xc[i] - m) * is;
            dxc[i] = (dyc[i] - k1 - xh * k2) * a;
        }
        if (dbias)
            dbias[c] += (float)sum_f(dxc, M);
    }
}

void qkf_bn_train_backward_t(float *dxt, float *dgamma, float *dbeta, float *dbias,
                             const float *dy, const float *x, const float *mean,
                             const float *invstd, const float *gamma, int C, int64_t M,
                             const double *sums, float *dx)
{
    /* blocks of 16 channels: each thread writes 64-byte pieces of the token-major rows */
    int nblk = (C + 15) / 16;
#pragma omp parallel for schedule(dynamic, 1)
    for (int cb = 0; cb < nblk; cb++) {
        int c0 = cb * 16, nc = C - c0 < 16 ? C - c0 : 16;
        float k1[16], k2[16], a[16], m[16], is[16], tile[16][16];
        double ds[16] = {0};
        for (int j = 0; j < nc; j++) {
            int c = c0 + j;
            const float *xc = x + (int64_t)c * M, *dyc = dy + (int64_t)c * M;
            double sdy, sdyx;
            m[j] = mean[c], is[j] = invstd[c];
            if (sums)
                sdy = sums[c], sdyx = sums[C + c];
            else
                qkf_bn_sum_dy_dyx(dyc, xc, M, m[j], is[j], &sdy, &sdyx);
            dgamma[c] += (float)sdyx;
            dbeta[c] += (float)sdy;
            k1[j] = (float)(sdy / (double)M), k2[j] = (float)(sdyx / (double)M);
            a[j] = gamma[c] * is[j];
        }
        for (int64_t p0 = 0; p0 < M; p0 += 16) {
            int np = M - p0 < 16 ? (int)(M - p0) : 16;
            for (int j = 0; j < nc; j++) {
                const float *xc = x + (int64_t)(c0 + j) * M + p0;
                const float *dyc = dy + (int64_t)(c0 + j) * M + p0;
                float t = 0.0f;
                for (int i = 0; i < np; i++) {
                    float xh = (xc[i] - m[j]) * is[j];
                    tile[j][i] = (dyc[i] - k1[j] - xh * k2[j]) * a[j];
                }
                for (int i = 0; i < np; i++)
                    t += tile[j][i];
                ds[j] += (double)t;
                if (dx) /* the tile has been read: safe in place */
                    memcpy(dx + (int64_t)(c0 + j) * M + p0, tile[j], (size_t)np * sizeof(float));
            }
            qkf_transpose_tile(dxt + p0 * C + c0, C, &tile[0][0], 16, nc, np);
        }
        if (dbias)
            for (int j = 0; j < nc; j++)
                dbias[c0 + j] += (float)ds[j];
    }
}

/* ---- MaxPool ------------------------------------------------------------------------------ */

void qkf_maxpool3s2_train_forward(float *out, int32_t *arg, const float *in, int64_t P, int h,
                                  int w)
{
    int ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t p = 0; p < P; p++) {
        const float *src = in + p * h * w;
        float *dst = out + p * ho * wo;
        int32_t *a = arg + p * ho * wo;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float m = -INFINITY;
                int32_t best = -1;
                if (oy > 0 && ox > 0 && 2 * oy + 1 < h && 2 * ox + 1 < w) {
                    /* interior: all 9 taps valid; first maximum in scan order (a NaN wins
                     * and is replaced only by a later NaN). Branch-free selects: the
                     * comparisons are data-dependent and would mispredict. */
                    int base = (2 * oy - 1) * w + 2 * ox - 1;
                    best = base;
                    m = src[base];
                    for (int dy = 0; dy < 3; dy++)
                        for (int dx = 0; dx < 3; dx++) {
                            int j = base + dy * w + dx;
                            float v = src[j];
                            int take = (v > m) | (v != v);
                            m = take ? v : m;
                            best = take ? j : best;
                        }
                    dst[oy * wo + ox] = m;
                    a[oy * wo + ox] = best;
                    continue;
                }
                for (int iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++) {
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++) {
                        if (ix < 0 || ix >= w)
                            continue;
                        float v = src[iy * w + ix];
                        if (v > m || best < 0 || isnan(v)) {
                            m = v;
                            best = iy * w + ix;
                        }
                    }
                }
                dst[oy * wo + ox] = m;
                a[oy * wo + ox] = best;
            }
    }
}

void qkf_maxpool3s2_gather(float *out, const float *in, const int32_t *arg, int64_t P, int h,
                           int w)
{
    int64_t oplane = (int64_t)((h - 1) / 2 + 1) * ((w - 1) / 2 + 1), plane = (int64_t)h * w;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t p = 0; p < P; p++) {
        const float *src = in + p * plane;
        const int32_t *a = arg + p * oplane;
        float *o = out + p * oplane;
        for (int64_t i = 0; i < oplane; i++)
            o[i] = src[a[i]];
    }
}

void qkf_maxpool3s2_backward(float *din, const float *dout, const int32_t *arg, int64_t P, int h,
                             int w)
{
    int64_t oplane = (int64_t)((h - 1) / 2 + 1) * ((w - 1) / 2 + 1), plane = (int64_t)h * w;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t p = 0; p < P; p++) {
        float *d = din + p * plane;
        memset(d, 0, (size_t)plane * sizeof(float));
        const float *g = dout + p * oplane;
        const int32_t *a = arg + p * oplane;
        for (int64_t i = 0; i < oplane; i++)
            d[a[i]] += g[i];
    }
}

/* ---- LIF ------------------------------------------------------------------------------------ */

float qkf_surrogate_grad(float x, float alpha) { return qkf_surrogate(x, alpha); }

void qkf_lif_recompute_h(float *h, const float *x, const float *s, int C, int T, int B, int N,
                         int x_static, int tb_compat)
{
    qkf__lif_walk w = qkf__lif_walk_make(T, B, x_static, tb_compat);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        qkf__lif_recompute_h_channel(h, x, s, 0, c, w, N);
}

void qkf_lif_backward(float *dx, const float *ds, const float *h, const float *s, int C, int T,
                      int B, int N, int x_static, float vth, int tb_compat, float alpha)
{
    qkf__lif_walk w = qkf__lif_walk_make(T, B, x_static, tb_compat);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        qkf__lif_backward_channel(dx, ds, h, s, 0, c, w, N, vth, alpha);
}

void qkf_qk_token_sum_backward(float *dq, const float *dcnt, int C, int heads, int F, int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *g = dcnt + (int64_t)(c / d) * FN;
        float *o = dq + (int64_t)c * FN;
        for (int64_t i = 0; i < FN; i++)
            o[i] += g[i];
    }
}

void qkf_qk_channel_sum_backward(float *dq, const float *dcnt, int C, int F, int N)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            float g = dcnt[(int64_t)c * F + f];
            float *o = dq + ((int64_t)c * F + f) * N;
            for (int n = 0; n < N; n++)
                o[n] += g;
        }
}

void qkf_qk_token_mask_backward(float *dattn, float *dk, const float *dout, const float *attn,
                                const float *k, int C, int heads, int F, int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(static)
    for (int hd = 0; hd < heads; hd++) {
        const float *a = attn + (int64_t)hd * FN;
        float *da = dattn + (int64_t)hd * FN;
        for (int j = 0; j < d; j++) {
            int64_t c = (int64_t)hd * d + j;
            const float *g = dout + c * FN, *kc = k + c * FN;
            float *dkc = dk + c * FN;
            for (int64_t i = 0; i < FN; i++) {
                da[i] += g[i] * kc[i];
                dkc[i] += g[i] * a[i];
            }
        }
    }
}

void qkf_qk_channel_mask_backward(float *dattn, float *dk, const float *dout, const float *attn,
                                  const float *k, int C, int F, int N)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            int64_t o = ((int64_t)c * F + f) * N;
            float a = attn[(int64_t)c * F + f], s = 0.0f;
            for (int n = 0; n < N; n++) {
                s += dout[o + n] * k[o + n];
                dk[o + n] += dout[o + n] * a;
            }
            dattn[(int64_t)c * F + f] += s;
        }
}

/* ---- SSA ------------------------------------------------------------------------------------ */

int64_t qkf_ssa_backward_scratch_floats(int C, int heads, int threads)
{
    int d = C / heads;
    return (int64_t)threads * (2 * d * d + d);
}

void qkf_ssa_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                      const float *k, const float *v, int C, int heads, int F, int N,
                      float *scratch)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel
    {
        float *kv = scratch + (int64_t)omp_get_thread_num() * (2 * d * d + d);
        float *dkv = kv + (int64_t)d * d;
        float *acc = dkv + (int64_t)d * d;
#pragma omp for collapse(2) schedule(static)
        for (int f = 0; f < F; f++)
            for (int hd = 0; hd < heads; hd++) {
                int64_t base = (int64_t)hd * d * FN + (int64_t)f * N;
#define ROW(p, i) ((p) + base + (int64_t)(i) * FN)
                for (int i = 0; i < d; i++)
                    for (int j = 0; j < d; j++) {
                        const float *ki = ROW(k, i), *vj = ROW(v, j);
                        const float *qi = ROW(q, i), *gj = ROW(dout, j);
                        float s = 0.0f, t = 0.0f;
                        for (int n = 0; n < N; n++) {
                            s += ki[n] * vj[n];
                            t += qi[n] * gj[n];
                        }
                        kv[i * d + j] = s;
                        dkv[i * d + j] = 0.125f * t;
                    }
                /* dQt[i][n] += 0.125 sum_j kv[i][j] dYt[j][n];
                 * dKt[i][n] += sum_j dkv[i][j] Vt[j][n];  dVt[i][n] += sum_j dkv[j][i] Kt[j][n] */
                for (int n = 0; n < N; n++) {
                    for (int i = 0; i < d; i++)
                        acc[i] = ROW(dout, i)[n];
                    for (int i = 0; i < d; i++) {
                        float sq = 0.0f, sk = 0.0f, sv = 0.0f;
                        for (int j = 0; j < d; j++) {
                            sq += kv[i * d + j] * acc[j];
                            sk += dkv[i * d + j] * ROW(v, j)[n];
                            sv += dkv[j * d + i] * ROW(k, j)[n];
                        }
                        ROW(dq, i)[n] += 0.125f * sq;
                        ROW(dk, i)[n] += sk;
                        ROW(dv, i)[n] += sv;
                    }
                }
#undef ROW
            }
    }
}

/* ---- readout -------------------------------------------------------------------------------- */

void qkf_readout_backward(float *dx, float *dw, float *dbias, const float *dlogits,
                          const float *feat, const float *w, int C, int T, int B, int N,
                          int classes)
{
    int64_t F = (int64_t)T * B;
    for (int j = 0; j < classes; j++) {
        float sb = 0.0f;
        for (int b = 0; b < B; b++) {
            float g = dlogits[(int64_t)b * classes + j];
            sb += g;
            const float *fb = feat + (int64_t)b * C;
            float *wj = dw + (int64_t)j * C;
            for (int c = 0; c < C; c++)
                wj[c] += g * fb[c];
        }
        dbias[j] += sb;
    }
    float scale = 1.0f / ((float)T * (float)N);
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        for (int b = 0; b < B; b++) {
            float s = 0.0f;
            for (int j = 0; j < classes; j++)
                s += dlogits[(int64_t)b * classes + j] * w[(int64_t)j * C + c];
            s *= scale;
            for (int t = 0; t < T; t++) {
                float *xc = dx + ((int64_t)c * F + (int64_t)t * B + b) * N;
                for (int n = 0; n < N; n++)
                    xc[n] += s;
            }
        }
}

/* ---- loss ------------------------------------------------------------------------------------ */

double qkf_xent_forward(float *probs, const float *logits, const float *target, int B, int K)
{
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (int64_t)b * K;
        float *p = probs + (int64_t)b * K;
        double mx = (double)z[0];
        for (int j = 1; j < K; j++)
            mx = (double)z[j] > mx ? (double)z[j] : mx;
        double se = 0.0;
        for (int j = 0; j < K; j++)
            se += exp((double)z[j] - mx);
        double lse = mx + log(se);
        for (int j = 0; j < K; j++) {
            double lp = (double)z[j] - lse;
            p[j] = (float)exp(lp);
            loss -= (double)target[(int64_t)b * K + j] * lp;
        }
    }
    return loss / (double)B;
}

void qkf_xent_backward(float *dlogits, const float *probs, const float *target, int B, int K,
                       float dloss)
{
    float s = dloss / (float)B;
    for (int64_t i = 0; i < (int64_t)B * K; i++)
        dlogits[i] = (probs[i] - target[i]) * s;
}

void qkf_xent_targets(float *target, const int32_t *labels, int B, int K, float eps)
{
    float off = eps / (float)K, on = 1.0f - eps + off;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < K; j++)
            target[(int64_t)b * K + j] = j == labels[b] ? on : off;
}
