/* Training kernels over byte spike tensors (layout and contracts in spike_train.h). */
#include "spike_train.h"

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
#include "spike.h"

#include "isa.h"
#include "isa_internal.h"

/* Event gathers run at ~50 G adds/s against sgemm's ~100 G multiply-adds/s (PERF-NOTES.md), so
 * the sparse products win up to roughly 40% density; the residual streams that feed the stage
 * embeddings are the densest inputs (~30%). */
static double thr_forward = 0.4, thr_weight = 0.4;

void qkf_spikeconv_set_threshold(double forward, double weight)
{
    thr_forward = forward;
    thr_weight = weight;
}

/* dz rows of one weight-gradient chunk: 128 K floats (512 KB) stay in a core's L2. */
#define CHUNK_FLOATS (128 * 1024)

static void out_dims(int h, int w, int k, int stride, int pad, int *ho, int *wo)
{
    *ho = (h + 2 * pad - k) / stride + 1;
    *wo = (w + 2 * pad - k) / stride + 1;
}

static int64_t count_nonzero(const uint8_t *x, int64_t n)
{
    int64_t k = 0;
#pragma omp parallel for schedule(static) reduction(+ : k)
    for (int64_t i0 = 0; i0 < n; i0 += 4096) {
        int64_t e = i0 + 4096 < n ? i0 + 4096 : n, s = 0;
        for (int64_t i = i0; i < e; i++)
            s += x[i] != 0;
        k += s;
    }
    return k;
}

/* Positions (base + i) and values of the nonzero bytes of row[0..n), ascending; returns how
 * many. Per ISA (isa.h): the portable path skips 8 zero bytes with one 64-bit test. */
static int scan_row(int32_t *pos, uint8_t *val, const uint8_t *row, int n, int32_t base)
{
    QKF__PICK(scan_row, (pos, val, row, n, base))
    int k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, row + i, sizeof x);
        if (!x)
            continue;
        for (int j = 0; j < 8; j++)
            if (row[i + j]) {
                pos[k] = base + i + j;
                val[k++] = row[i + j];
            }
    }
    for (; i < n; i++)
        if (row[i]) {
            pos[k] = base + i;
            val[k++] = row[i];
        }
    return k;
}

/* A full 16 x 16 tile in registers on the x86 paths; 0 where the portable path has none (the
 * caller goes through its local buffer). */
static int tile16(float *dst, int64_t ldd, const float *src, int64_t lds)
{
#if defined(__x86_64__)
    switch (qkf_isa_current()) {
    case QKF_ISA_AVX512:
        qkf__tile16_avx512(dst, ldd, src, lds);
        return 1;
    case QKF_ISA_AVX2:
        qkf__tile16_avx2(dst, ldd, src, lds);
        return 1;
    default:
        break;
    }
#else
    (void)dst, (void)ldd, (void)src, (void)lds;
#endif
    return 0;
}

/* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols, in 16 x 16 tiles (in registers
 * where the tile is full, else through a local buffer). */
static void transpose(float *dst, int64_t ldd, const float *src, int64_t lds, int rows, int cols)
{
    float tile[16][16];
    for (int r0 = 0; r0 < rows; r0 += 16) {
        int nr = rows - r0 < 16 ? rows - r0 : 16;
        for (int c0 = 0; c0 < cols; c0 += 16) {
            int nc = cols - c0 < 16 ? cols - c0 : 16;
            if (nr == 16 && nc == 16 &&
                tile16(dst + (int64_t)c0 * ldd + r0, ldd, src + (int64_t)r0 * lds + c0, lds))
                continue;
            for (int r = 0; r < nr; r++)
                memcpy(tile[r], src + (int64_t)(r0 + r) * lds + c0, (size_t)nc * sizeof(float));
            for (int c = 0; c < nc; c++) {
                float *d = dst + (int64_t)(c0 + c) * ldd + r0;
                for (int r = 0; r < nr; r++)
                    d[r] = tile[r][c];
            }
        }
    }
}

void qkf_transpose_tile(float *dst, int64_t ldd, const float *src, int64_t lds, int rows,
                        int cols)
{
    transpose(dst, ldd, src, lds, rows, cols);
}

void qkf_transpose_f32(float *dst, const float *src, int64_t rows, int cols)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < rows; r0 += 256) {
        int nr = rows - r0 < 256 ? (int)(rows - r0) : 256;
        transpose(dst + r0, rows, src + r0 * cols, cols, nr, cols);
    }
}

int64_t qkf_spikeconv_work_floats(int F, int cin, int h, int w, int cout, int k, int stride,
                                  int pad, int threads)
{
    int ho, wo;
    out_dims(h, w, k, stride, pad, &ho, &wo);
    int64_t N = (int64_t)h * w, No = (int64_t)ho * wo, kk2 = (int64_t)k * k;
    int64_t wt = (int64_t)cin * kk2 * cout;
    /* forward: weights [cin][kk][cout]; per thread: zt [No][cout], len [N], ch + cnt [N][cin]
     * (uint16), one scanned row (pos int32 + val byte) */
    int64_t fwd = wt + threads * (No * cout + N + N * cin + 2 * N + 16);
    /* weight gradient: dWt, the dz chunk, per thread: scanned rows of the chunk (pos + val), tap
     * list (idx + cnt uint16), one partial row */
    int64_t nf = CHUNK_FLOATS / (No * cout);
    nf = nf < 1 ? 1 : nf > F ? F : nf;
    if (nf * No > 65535)
        nf = No > 65535 ? 1 : 65535 / No;
    int64_t bwd = wt + threads * (nf * N * 3 + cout + 16) + 2 * (cin + 1) + 2;
    int64_t dense = (int64_t)cin * kk2 * No; /* one frame of im2col */
    int64_t m = fwd > bwd ? fwd : bwd;
    return m > dense ? m : dense;
}

/* ---- forward --------------------------------------------------------------------------------- */

static void dense_forward(float *out, const uint8_t *in, const float *weight, int F, int cin,
                          int h, int w, int cout, int k, int stride, int pad, float *col,
                          int64_t col_cap)
{
    int ho, wo;
    out_dims(h, w, k, stride, pad, &ho, &wo);
    int64_t No = (int64_t)ho * wo, K = (int64_t)cin * k * k;
    QKF_ASSERT(col_cap >= K * No);
    int chunk = (int)(col_cap / (K * No));
    chunk = chunk > F ? F : chunk;
    for (int f0 = 0; f0 < F; f0 += chunk) {
        int nf = F - f0 < chunk ? F - f0 : chunk;
        qkf_im2col_u8(col, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)(nf * No), (int)K, 1.0f,
                    weight, (int)K, col, (int)(nf * No), 0.0f, out + f0 * No, (int)(F * No));
    }
}

int64_t qkf_spikeconv_forward(float *out, const uint8_t *in, const float *weight, int F, int cin,
                              int h, int w, int cout, int k, int stride, int pad, float *work,
                              int64_t work_cap)
{
    int ho, wo;
    out_dims(h, w, k, stride, pad, &ho, &wo);
    const int N = h * w, No = ho * wo, kk2 = k * k;
    int64_t total = (int64_t)cin * F * N, nnz = count_nonzero(in, total);
    if ((double)nnz > thr_forward * (double)total) {
        dense_forward(out, in, weight, F, cin, h, w, cout, k, stride, pad, work, work_cap);
        return nnz;
    }
    int threads = omp_get_max_threads();
    QKF_ASSERT(work_cap >= qkf_spikeconv_work_floats(F, cin, h, w, cout, k, stride, pad, threads));
    int64_t wt_n = (int64_t)cin * kk2 * cout;
    int64_t per_thread = (int64_t)No * cout + N + (int64_t)N * cin + 2 * N + 16;
    float *wt = work;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < cin; c++)
        for (int t = 0; t < kk2; t++)
            for (int co = 0; co < cout; co++)
                wt[((int64_t)c * kk2 + t) * cout + co] = weight[((int64_t)co * cin + c) * kk2 + t];
#pragma omp parallel
    {
        float *zt = work + wt_n + (int64_t)omp_get_thread_num() * per_thread;
        int32_t *len = (int32_t *)(zt + (int64_t)No * cout);
        int32_t *pos = len + N;
        uint16_t *ch = (uint16_t *)(pos + N);
        uint16_t *cnt = ch + (int64_t)N * cin;
        uint8_t *val = (uint8_t *)(cnt + (int64_t)N * cin);
        /* frames are independent and each output sums in a fixed order: any schedule gives the
         * same bits */
#pragma omp for schedule(dynamic, 1)
        for (int f = 0; f < F; f++) {
            memset(len, 0, (size_t)N * sizeof(int32_t));
            int counts = 0;
            for (int c = 0; c < cin; c++) {
                int m = scan_row(pos, val, in + ((int64_t)c * F + f) * N, N, 0);
                for (int i = 0; i < m; i++) {
                    int64_t p = pos[i];
                    int l = len[p]++;
                    ch[p * cin + l] = (uint16_t)c;
                    cnt[p * cin + l] = val[i];
                    counts |= val[i] > 1;
                }
            }
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    qkf_spike_seg seg[9];
                    int nseg = 0;
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * stride - pad + ky;
                        if (iy < 0 || iy >= h)
                            continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * stride - pad + kx;
                            if (ix < 0 || ix >= w)
                                continue;
                            int64_t p = (int64_t)iy * w + ix;
                            if (!len[p])
                                continue;
                            seg[nseg].ch = ch + p * cin;
                            seg[nseg].cnt = counts ? cnt + p * cin : NULL;
                            seg[nseg].n = len[p];
                            seg[nseg].base = (ky * k + kx) * cout;
                            nseg++;
                        }
                    }
                    qkf_spike_gather(zt + ((int64_t)oy * wo + ox) * cout, NULL, wt, kk2 * cout,
                                     seg, nseg, cout);
                }
            /* token-major [No][cout] -> out[co][f][o] */
            transpose(out + (int64_t)f * No, (int64_t)F * No, zt, cout, No, cout);
        }
    }
    return nnz;
}

/* ---- weight gradient ------------------------------------------------------------------------- */

static void dense_weight(float *dweight, const float *doutt, const uint8_t *in, int F, int cin,
                         int h, int w, int cout, int k, int stride, int pad, float *col,
                         int64_t col_cap)
{
    int ho, wo;
    out_dims(h, w, k, stride, pad, &ho, &wo);
    int64_t No = (int64_t)ho * wo, K = (int64_t)cin * k * k;
    QKF_ASSERT(col_cap >= K * No);
    int chunk = (int)(col_cap / (K * No));
    chunk = chunk > F ? F : chunk;
    for (int f0 = 0; f0 < F; f0 += chunk) {
        int nf = F - f0 < chunk ? F - f0 : chunk;
        int n = (int)(nf * No);
        qkf_im2col_u8(col, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, cout, (int)K, n, 1.0f,
                    doutt + f0 * No * cout, cout, col, n, 1.0f, dweight, (int)K);
    }
}

void qkf_spikeconv_backward_weight(float *dweight, const float *doutt, const uint8_t *in, int F,
                                   int cin, int h, int w, int cout, int k, int stride, int pad,
                                   float *work, int64_t work_cap)
{
    int ho, wo;
    out_dims(h, w, k, stride, pad, &ho, &wo);
    const int N = h * w, No = ho * wo, kk2 = k * k;
    int64_t total = (int64_t)cin * F * N, nnz = count_nonzero(in, total);
    if ((double)nnz > thr_weight * (double)total || No > 65535) {
        dense_weight(dweight, doutt, in, F, cin, h, w, cout, k, stride, pad, work, work_cap);
        return;
    }
    int threads = omp_get_max_threads();
    QKF_ASSERT(work_cap >= qkf_spikeconv_work_floats(F, cin, h, w, cout, k, stride, pad, threads));
    int nf = CHUNK_FLOATS / (No * cout);
    nf = nf < 1 ? 1 : nf > F ? F : nf;
    if ((int64_t)nf * No > 65535)
        nf = 65535 / No;
    int64_t wt_n = (int64_t)cin * kk2 * cout;
    int64_t per_thread = (int64_t)nf * N * 3 + cout + 16;
    float *dwt = work;
    int64_t cum_off = (wt_n + (int64_t)threads * per_thread + 1) & ~(int64_t)1; /* 8-aligned */
    int64_t *cum = (int64_t *)(work + cum_off); /* [cin + 1] */
    memset(dwt, 0, (size_t)wt_n * sizeof(float));
    /* events per channel, so that each thread gets a contiguous range of channels with about
     * the same number of events */
    cum[0] = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < cin; c++) {
        const uint8_t *row = in + (int64_t)c * F * N;
        int64_t e = 0;
        for (int64_t i = 0; i < (int64_t)F * N; i++)
            e += row[i] != 0;
        cum[c + 1] = e;
    }
    for (int c = 0; c < cin; c++)
        cum[c + 1] += cum[c];
    /* Each thread owns a range of input channels (their rows of dWt) and walks dz in chunks of
     * frames that stay in its L2: no barrier per chunk (barriers cost a time slice each on a
     * loaded machine). The sums do not depend on the thread count or the split. */
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), tid = omp_get_thread_num();
        int c0 = 0, c1 = 0;
        while (c0 < cin && cum[c0] * nth < cum[cin] * tid)
            c0++;
        c1 = c0;
        while (c1 < cin && cum[c1] * nth < cum[cin] * (tid + 1))
            c1++;
        if (tid == nth - 1)
            c1 = cin;
        float *part = work + wt_n + (int64_t)tid * per_thread;
        int32_t *pos = (int32_t *)(part + cout);
        uint16_t *idx = (uint16_t *)(pos + (int64_t)nf * N);
        uint16_t *cnt = idx + (int64_t)nf * N;
        uint8_t *val = (uint8_t *)(cnt + (int64_t)nf * N);
        for (int f0 = 0; f0 < F && c0 < c1; f0 += nf) {
            int nfc = F - f0 < nf ? F - f0 : nf;
            const float *dzt = doutt + (int64_t)f0 * No * cout; /* the chunk's rows */
            for (int c = c0; c < c1; c++) {
                int m = 0;
                for (int fi = 0; fi < nfc; fi++)
                    m += scan_row(pos + m, val + m, in + ((int64_t)c * F + f0 + fi) * N, N,
                                  fi * N);
                if (!m)
                    continue;
                int counts = 0;
                for (int i = 0; i < m; i++)
                    counts |= val[i] > 1;
                if (stride == 1) {
                    /* ho = h, wo = w: a tap's output row is the event's position plus the tap
                     * offset. Events away from the border are valid for every tap: one list of
                     * position - (w + 1) >= 0 serves all taps through the segment base
                     * (off + w + 1) * cout. Border events (flags: bit 0 top row, 1 bottom,
                     * 2 left, 3 right) get a short list per tap. */
                    int shift = k == 1 ? 0 : w + 1, ni = 0, nb = 0;
                    for (int i = 0; i < m; i++) {
                        int p = pos[i] % N, iy = p / w, ix = p % w;
                        int fl = k == 1 ? 0
                                        : (iy == 0) | (iy == h - 1) << 1 | (ix == 0) << 2 |
                                              (ix == w - 1) << 3;
                        if (!fl) {
                            idx[ni] = (uint16_t)(pos[i] - shift);
                            cnt[ni++] = val[i];
                        } else { /* compacted in place: nb <= i */
                            pos[nb] = pos[i];
                            val[nb] = val[i];
                            val[m + nb++] = (uint8_t)fl;
                        }
                    }
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int dy = pad - ky, dx = pad - kx, off = dy * w + dx;
                            uint8_t bad = (uint8_t)((dy < 0) | (dy > 0) << 1 | (dx < 0) << 2 |
                                                    (dx > 0) << 3);
                            int n2 = 0;
                            uint16_t *bidx = idx + ni, *bcnt = cnt + ni;
                            for (int j = 0; j < nb; j++)
                                if (!(val[m + j] & bad)) {
                                    bidx[n2] = (uint16_t)(pos[j] + off);
                                    bcnt[n2++] = val[j];
                                }
                            qkf_spike_seg seg[2] = {
                                {idx, counts ? cnt : NULL, ni, (off + shift) * cout},
                                {bidx, counts ? bcnt : NULL, n2, 0}};
                            if (!ni && !n2)
                                continue;
                            /* the chunk's sum first, then one add into the row */
                            qkf_spike_gather(part, NULL, dzt, cout, ni ? seg : seg + 1,
                                             ni && n2 ? 2 : 1, cout);
                            float *row = dwt + ((int64_t)c * kk2 + ky * k + kx) * cout;
                            for (int co = 0; co < cout; co++)
                                row[co] += part[co];
                        }
                    continue;
                }
                for (int ky = 0; ky < k; ky++) /* strided (1x1 shortcuts) */
                    for (int kx = 0; kx < k; kx++) {
                        int n = 0;
                        for (int i = 0; i < m; i++) {
                            int fi = pos[i] / N, p = pos[i] % N;
                            int ny = p / w + pad - ky, nx = p % w + pad - kx;
                            if (ny < 0 || nx < 0 || ny % stride || nx % stride)
                                continue;
                            int oy = ny / stride, ox = nx / stride;
                            if (oy >= ho || ox >= wo)
                                continue;
                            idx[n] = (uint16_t)(fi * No + oy * wo + ox);
                            cnt[n++] = val[i];
                        }
                        if (!n)
                            continue;
                        qkf_spike_seg seg = {idx, counts ? cnt : NULL, n, 0};
                        /* the chunk's sum first, then one add into the row: shorter float sums */
                        qkf_spike_gather(part, NULL, dzt, cout, &seg, 1, cout);
                        float *row = dwt + ((int64_t)c * kk2 + ky * k + kx) * cout;
                        for (int co = 0; co < cout; co++)
                            row[co] += part[co];
                    }
            }
        }
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int co = 0; co < cout; co++)
        for (int c = 0; c < cin; c++)
            for (int t = 0; t < kk2; t++)
                dweight[((int64_t)co * cin + c) * kk2 + t] +=
                    dwt[((int64_t)c * kk2 + t) * cout + co];
}

/* ---- LIF ------------------------------------------------------------------------------------- */

#define TILE QKF__LIF_TILE

/* LIF of a convolution-fed layer, its input currents computed on the fly from the
 * convolution's pre-BatchNorm output z (see spike_train.h). x[c][fx][n] as qkf_bn_train_apply
 * computes it: (z - mean) * (gamma * invstd) + beta, z read at arg[n] when pooled. */
static inline void bn_row(float *xin, const float *zp, const int32_t *ap, int nn, float m, float a,
                          float b)
{
    if (ap)
        for (int i = 0; i < nn; i++)
            xin[i] = (zp[ap[i]] - m) * a + b;
    else
        for (int i = 0; i < nn; i++)
            xin[i] = (zp[i] - m) * a + b;
}

/* One forward step of nn tokens, written at [off ..]: h = v + (x - v)/2, s = h >= vth,
 * v = h * (1 - s). Returns the step's spike count. */
static inline int64_t fire_row(uint8_t *s, float *v, const float *x, int64_t off, int nn, float vth,
                               float *v_rec, float *h_rec)
{
    int64_t n = 0;
    for (int i = 0; i < nn; i++) {
        float h = v[i] + (x[i] - v[i]) / 2.0f;
        float spike = h >= vth ? 1.0f : 0.0f;
        s[off + i] = (uint8_t)(h >= vth);
        v[i] = h * (1.0f - spike);
        n += s[off + i];
        if (h_rec)
            h_rec[off + i] = h;
        if (v_rec)
            v_rec[off + i] = v[i];
    }
    return n;
}

/* qkf_lif_forward_u8 of x, or with mean given qkf_lif_forward_bn_u8 of z = x. */
static inline __attribute__((always_inline)) int64_t
lif_forward_u8(uint8_t *s, const float *x, const float *mean, const float *invstd,
               const float *gamma, const float *beta, int C, int T, int B, int N, int x_static,
               float vth, int tb_compat, float *v_rec, float *h_rec)
{
    qkf__lif_walk w = qkf__lif_walk_make(T, B, x_static, tb_compat);
    int64_t total = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * w.xF * N;
        float m = 0.0f, a = 0.0f, bt = 0.0f;
        if (mean)
            m = mean[c], a = gamma[c] * invstd[c], bt = beta[c];
        for (int b = 0; b < w.nb; b++)
            for (int n0 = 0; n0 < N; n0 += TILE) {
                int nn = N - n0 < TILE ? N - n0 : TILE;
                float v[TILE] = {0}, xin[TILE];
                for (int t = 0; t < w.steps; t++) {
                    int64_t f = qkf__lif_frame(&w, t, b), off = ((int64_t)c * w.F + f) * N + n0;
                    const float *xt = xc + qkf__lif_xframe(&w, f, b) * N + n0;
                    if (mean) {
                        bn_row(xin, xt, NULL, nn, m, a, bt);
                        xt = xin;
                    }
                    total += fire_row(s, v, xt, off, nn, vth, v_rec, h_rec);
                }
            }
    }
    return total;
}

int64_t qkf_lif_forward_u8(uint8_t *s, const float *x, int C, int T, int B, int N, int x_static,
                           float vth, int tb_compat, float *v_rec, float *h_rec)
{
    return lif_forward_u8(s, x, NULL, NULL, NULL, NULL, C, T, B, N, x_static, vth, tb_compat, v_rec,
                          h_rec);
}

void qkf_lif_recompute_h_u8(float *h, const float *x, const uint8_t *s, int C, int T, int B,
                            int N, int x_static, int tb_compat)
{
    qkf__lif_walk w = qkf__lif_walk_make(T, B, x_static, tb_compat);
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        qkf__lif_recompute_h_channel(h, x, s, 1, c, w, N);
}

void qkf_lif_backward_u8(float *dx, const float *ds, const float *h, const uint8_t *s, int C,
                         int T, int B, int N, int x_static, float vth, int tb_compat, float alpha)
{
    qkf__lif_walk w = qkf__lif_walk_make(T, B, x_static, tb_compat);
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        qkf__lif_backward_channel(dx, ds, h, s, 1, c, w, N, vth, alpha);
}

void qkf_lif_forward_bn_u8(uint8_t *s, const float *z, const float *mean, const float *invstd,
                           const float *gamma, const float *beta, int C, int T, int B, int N,
                           int x_static, float vth, int tb_compat, float *h_rec)
{
    lif_forward_u8(s, z, mean, invstd, gamma, beta, C, T, B, N, x_static, vth, tb_compat, NULL,
                   h_rec);
}

int64_t qkf_lif_backward_bn_scratch_floats(int T, int B, int tb_compat, int threads)
{
    return (int64_t)threads * (tb_compat ? (int64_t)T * B : T) * TILE;
}

void qkf_lif_backward_bn_u8(float *dx, const float *ds, const uint8_t *s, const float *z,
                            const int32_t *arg, int zplane, const float *mean,
                            const float *invstd, const float *gamma, const float *beta, int C,
                            int T, int B, int N, int x_static, float vth, int tb_compat,
                            float alpha, int overwrite, double *bn_sums, float *scratch)
{
    qkf__lif_walk w = qkf__lif_walk_make(T, B, x_static, tb_compat);
    if (arg)
        bn_sums = NULL;
    overwrite = overwrite && !x_static; /* a static input sums over the steps */
#pragma omp parallel
    {
        float *hs = scratch + (int64_t)omp_get_thread_num() * w.steps * TILE;
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < C; c++) {
            float *dxc = dx + (int64_t)c * w.xF * N;
            float m = mean[c], a = gamma[c] * invstd[c], bt = beta[c];
            for (int b = 0; b < w.nb; b++)
                for (int n0 = 0; n0 < N; n0 += TILE) {
                    int nn = N - n0 < TILE ? N - n0 : TILE;
                    float v[TILE] = {0}, xin[TILE], gh[TILE] = {0};
                    /* the membranes again, as qkf_lif_recompute_h_u8 */
                    for (int t = 0; t < w.steps; t++) {
                        int64_t f = qkf__lif_frame(&w, t, b), off = ((int64_t)c * w.F + f) * N + n0;
                        int64_t plane = (int64_t)c * w.xF + qkf__lif_xframe(&w, f, b);
                        if (arg)
                            bn_row(xin, z + plane * zplane, arg + plane * N + n0, nn, m, a, bt);
                        else
                            bn_row(xin, z + plane * N + n0, NULL, nn, m, a, bt);
                        qkf__lif_h_row(hs + (int64_t)t * TILE, v, xin, s, 1, off, nn);
                    }
                    /* then BPTT, as qkf_lif_backward_u8 */
                    for (int t = w.steps - 1; t >= 0; t--) {
                        int64_t f = qkf__lif_frame(&w, t, b), off = ((int64_t)c * w.F + f) * N + n0;
                        qkf__lif_bptt_row(dxc + qkf__lif_xframe(&w, f, b) * N + n0, gh, ds,
                                          hs + (int64_t)t * TILE, s, 1, off, nn, vth, alpha,
                                          overwrite);
                    }
                }
            if (bn_sums) /* the channel's dx is final and still in cache */
                qkf_bn_sum_dy_dyx(dxc, z + (int64_t)c * w.xF * N, w.xF * N, mean[c], invstd[c],
                                  &bn_sums[c], &bn_sums[C + c]);
        }
    }
}

/* ---- residual, Q-K attention ----------------------------------------------------------------- */

void qkf_add_u8(uint8_t *out, const uint8_t *a, const uint8_t *b, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint8_t)(a[i] + b[i]);
}

void qkf_u8_to_float(float *out, const uint8_t *in, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)in[i];
}

void qkf_qk_token_sum_u8(float *cnt, const uint8_t *q, int C, int heads, int F, int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(dynamic, 1)
    for (int hd = 0; hd < heads; hd++) {
        float *o = cnt + hd * FN;
        for (int64_t i0 = 0; i0 < FN; i0 += 1024) {
            int nn = FN - i0 < 1024 ? (int)(FN - i0) : 1024;
            int32_t acc[1024];
            memset(acc, 0, sizeof acc);
            for (int j = 0; j < d; j++) {
                const uint8_t *qc = q + ((int64_t)hd * d + j) * FN + i0;
                for (int i = 0; i < nn; i++)
                    acc[i] += qc[i];
            }
            for (int i = 0; i < nn; i++)
                o[i0 + i] = (float)acc[i];
        }
    }
}

void qkf_qk_channel_sum_u8(float *cnt, const uint8_t *q, int C, int F, int N)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            const uint8_t *qc = q + ((int64_t)c * F + f) * N;
            int32_t s = 0;
            for (int n = 0; n < N; n++)
                s += qc[n];
            cnt[(int64_t)c * F + f] = (float)s;
        }
}

void qkf_qk_token_mask_u8(uint8_t *out, const uint8_t *attn, const uint8_t *k, int C, int heads,
                          int F, int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        const uint8_t *a = attn + (int64_t)(c / d) * FN, *kc = k + (int64_t)c * FN;
        uint8_t *o = out + (int64_t)c * FN;
        for (int64_t i = 0; i < FN; i++)
            o[i] = (uint8_t)(a[i] * kc[i]);
    }
}

void qkf_qk_channel_mask_u8(uint8_t *out, const uint8_t *attn, const uint8_t *k, int C, int F,
                            int N)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            uint8_t a = attn[(int64_t)c * F + f];
            const uint8_t *kc = k + ((int64_t)c * F + f) * N;
            uint8_t *o = out + ((int64_t)c * F + f) * N;
            for (int n = 0; n < N; n++)
                o[n] = (uint8_t)(a * kc[n]);
        }
}

void qkf_qk_token_mask_backward_u8(float *dattn, float *dk, const float *dout,
                                   const uint8_t *attn, const uint8_t *k, int C, int heads, int F,
                                   int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(dynamic, 1)
    for (int hd = 0; hd < heads; hd++) {
        const uint8_t *a = attn + (int64_t)hd * FN;
        float *da = dattn + (int64_t)hd * FN;
        for (int j = 0; j < d; j++) {
            int64_t c = (int64_t)hd * d + j;
            const float *g = dout + c * FN;
            const uint8_t *kc = k + c * FN;
            float *dkc = dk + c * FN;
            for (int64_t i = 0; i < FN; i++) {
                da[i] += g[i] * (float)kc[i];
                dkc[i] += g[i] * (float)a[i];
            }
        }
    }
}

void qkf_qk_channel_mask_backward_u8(float *dattn, float *dk, const float *dout,
                                     const uint8_t *attn, const uint8_t *k, int C, int F, int N)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            int64_t o = ((int64_t)c * F + f) * N;
            float a = (float)attn[(int64_t)c * F + f], s = 0.0f;
            for (int n = 0; n < N; n++) {
                s += dout[o + n] * (float)k[o + n];
                dk[o + n] += dout[o + n] * a;
            }
            dattn[(int64_t)c * F + f] += s;
        }
}

/* ---- SSA ------------------------------------------------------------------------------------- */

int64_t qkf_ssa_u8_scratch_floats(int C, int heads, int N, int threads)
{
    int64_t d = C / heads;
    return (int64_t)threads * (5 * d * N + 2 * d * d + N + d + 32);
}

/* Rows [d][N] of frame f, head hd of a byte tensor, as floats. */
static void load_rows(float *dst, const uint8_t *x, int64_t FN, int64_t base, int d, int N)
{
    for (int i = 0; i < d; i++) {
        const uint8_t *src = x + base + (int64_t)i * FN;
        for (int n = 0; n < N; n++)
            dst[(int64_t)i * N + n] = (float)src[n];
    }
}

/* [d][N] -> [N][d] */
static void transpose_rows(float *dst, const float *src, int d, int N)
{
    for (int i = 0; i < d; i++)
        for (int n = 0; n < N; n++)
            dst[(int64_t)n * d + i] = src[(int64_t)i * N + n];
}

void qkf_ssa_forward_u8(float *out, const uint8_t *q, const uint8_t *k, const uint8_t *v, int C,
                        int heads, int F, int N, float *scratch)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
    int64_t per = 5 * (int64_t)d * N + 2 * (int64_t)d * d + N + d + 32;
#pragma omp parallel
    {
        float *Q = scratch + (int64_t)omp_get_thread_num() * per;
        float *K = Q + (int64_t)d * N, *V = K + (int64_t)d * N, *Vt = V + (int64_t)d * N;
        float *kv = Vt + (int64_t)d * N, *acc = kv + 2 * (int64_t)d * d;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int f = 0; f < F; f++)
            for (int hd = 0; hd < heads; hd++) {
                int64_t base = (int64_t)hd * d * FN + (int64_t)f * N;
                load_rows(Q, q, FN, base, d, N);
                load_rows(K, k, FN, base, d, N);
                load_rows(V, v, FN, base, d, N);
                transpose_rows(Vt, V, d, N);
                /* kv[i][j] = sum_n K[i][n] V[j][n]: integers, exact in any order */
                for (int i = 0; i < d; i++) {
                    float *r = kv + (int64_t)i * d;
                    for (int j = 0; j < d; j++)
                        r[j] = 0.0f;
                    for (int n = 0; n < N; n++)
                        if (K[(int64_t)i * N + n] != 0.0f) {
                            float a = K[(int64_t)i * N + n];
                            const float *vr = Vt + (int64_t)n * d;
                            for (int j = 0; j < d; j++)
                                r[j] += a * vr[j];
                        }
                }
                /* out[j][n] = 0.125 sum_i Q[i][n] kv[i][j] (exact integers times 0.125) */
                for (int j = 0; j < d; j++) {
                    for (int n = 0; n < N; n++)
                        acc[n] = 0.0f;
                    for (int i = 0; i < d; i++) {
                        float a = kv[(int64_t)i * d + j];
                        if (a == 0.0f)
                            continue;
                        const float *qr = Q + (int64_t)i * N;
                        for (int n = 0; n < N; n++)
                            acc[n] += qr[n] * a;
                    }
                    float *o = out + base + (int64_t)j * FN;
                    for (int n = 0; n < N; n++)
                        o[n] = acc[n] * 0.125f;
                }
            }
    }
}

void qkf_ssa_backward_u8(float *dq, float *dk, float *dv, const float *dout, const uint8_t *q,
                         const uint8_t *k, const uint8_t *v, int C, int heads, int F, int N,
                         float *scratch)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
    int64_t per = 5 * (int64_t)d * N + 2 * (int64_t)d * d + N + d + 32;
#pragma omp parallel
    {
        float *Q = scratch + (int64_t)omp_get_thread_num() * per;
        float *K = Q + (int64_t)d * N, *V = K + (int64_t)d * N, *Vt = V + (int64_t)d * N;
        float *Gt = Vt + (int64_t)d * N; /* dout rows transposed [N][d] */
        float *kv = Gt + (int64_t)d * N, *dkv = kv + (int64_t)d * d, *acc = dkv + (int64_t)d * d;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int f = 0; f < F; f++)
            for (int hd = 0; hd < heads; hd++) {
                int64_t base = (int64_t)hd * d * FN + (int64_t)f * N;
#define ROW(p, i) ((p) + base + (int64_t)(i) * FN)
                load_rows(Q, q, FN, base, d, N);
                load_rows(K, k, FN, base, d, N);
                load_rows(V, v, FN, base, d, N);
                transpose_rows(Vt, V, d, N);
                for (int j = 0; j < d; j++) {
                    const float *g = ROW(dout, j);
                    for (int n = 0; n < N; n++)
                        Gt[(int64_t)n * d + j] = g[n];
                }
                /* kv[i][j] = sum_n K[i][n] V[j][n]; dkv[i][j] = 0.125 sum_n Q[i][n] dY[j][n] */
                for (int i = 0; i < d; i++) {
                    float *r = kv + (int64_t)i * d, *s = dkv + (int64_t)i * d;
                    for (int j = 0; j < d; j++)
                        r[j] = s[j] = 0.0f;
                    for (int n = 0; n < N; n++) {
                        float a = K[(int64_t)i * N + n], b = Q[(int64_t)i * N + n];
                        if (a != 0.0f) {
                            const float *vr = Vt + (int64_t)n * d;
                            for (int j = 0; j < d; j++)
                                r[j] += a * vr[j];
                        }
                        if (b != 0.0f) {
                            const float *gr = Gt + (int64_t)n * d;
                            for (int j = 0; j < d; j++)
                                s[j] += b * gr[j];
                        }
                    }
                    for (int j = 0; j < d; j++)
                        s[j] *= 0.125f;
                }
                /* dQ[i] += 0.125 sum_j kv[i][j] dY[j];  dK[i] += sum_j dkv[i][j] V[j] */
                for (int i = 0; i < d; i++) {
                    for (int n = 0; n < N; n++)
                        acc[n] = 0.0f;
                    for (int j = 0; j < d; j++) {
                        float a = kv[(int64_t)i * d + j];
                        if (a == 0.0f)
                            continue;
                        const float *g = ROW(dout, j);
                        for (int n = 0; n < N; n++)
                            acc[n] += a * g[n];
                    }
                    float *o = ROW(dq, i);
                    for (int n = 0; n < N; n++)
                        o[n] += 0.125f * acc[n];
                    for (int n = 0; n < N; n++)
                        acc[n] = 0.0f;
                    for (int j = 0; j < d; j++) {
                        float a = dkv[(int64_t)i * d + j];
                        const float *vr = V + (int64_t)j * N;
                        for (int n = 0; n < N; n++)
                            acc[n] += a * vr[n];
                    }
                    o = ROW(dk, i);
                    for (int n = 0; n < N; n++)
                        o[n] += acc[n];
                }
                /* dV[j] += sum_i dkv[i][j] K[i] */
                for (int j = 0; j < d; j++) {
                    for (int n = 0; n < N; n++)
                        acc[n] = 0.0f;
                    for (int i = 0; i < d; i++) {
                        float a = dkv[(int64_t)i * d + j];
                        const float *kr = K + (int64_t)i * N;
                        for (int n = 0; n < N; n++)
                            acc[n] += a * kr[n];
                    }
                    float *o = ROW(dv, j);
                    for (int n = 0; n < N; n++)
                        o[n] += acc[n];
                }
#undef ROW
            }
    }
}
