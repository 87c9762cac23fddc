/* Byte-spike training kernels (kernels/spike_train.h) against their plain or float references:
 * the event-driven convolution forward and weight gradient against the direct loops (sparse and
 * dense paths, binary spikes and counts, channel counts that are not multiples of 16, strides),
 * their independence of the thread count, and the byte LIF / Q-K / SSA / readout kernels
 * against the float kernels the dense engine uses. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../kernels/backward.h"
#include "../kernels/base.h"
#include "util.h"
#include "../kernels/kernels.h"
#include "../kernels/spike_train.h"

TestSuite(train_sparse, .timeout = 60);

static void fill(float *x, int64_t n, qkf_rng *r, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * (2.0f * qkf_rng_uniform(r) - 1.0f);
}

/* Spikes at the given density; maxcount > 1: residual-style counts 1..maxcount. */
static void fill_spikes(uint8_t *s, float *sf, int64_t n, qkf_rng *r, float density, int maxcount)
{
    for (int64_t i = 0; i < n; i++) {
        uint8_t v = 0;
        if (qkf_rng_uniform(r) < density)
            v = (uint8_t)(1 + (maxcount > 1 ? qkf_rng_u64(r) % (uint64_t)maxcount : 0));
        s[i] = v;
        sf[i] = (float)v;
    }
}

/* forward and weight gradient of one shape, with the given thresholds, against the direct
 * loops; returns the outputs for the thread-count comparison. */
static void spikeconv_case(int F, int cin, int h, int cout, int k, int stride, float density,
                           int maxcount, double thr)
{
    int pad = k / 2, ho = (h + 2 * pad - k) / stride + 1;
    int64_t nin = (int64_t)cin * F * h * h, nout = (int64_t)cout * F * ho * ho,
            nw = (int64_t)cout * cin * k * k;
    qkf_rng r;
    qkf_rng_seed(&r, 11);
    uint8_t *s = qkf_malloc(nin);
    float *sf = qkf_malloc(nin * 4), *w = qkf_malloc(nw * 4), *dz = qkf_malloc(nout * 4);
    float *y = qkf_malloc(nout * 4), *y_ref = qkf_malloc(nout * 4), *y1 = qkf_malloc(nout * 4);
    float *dw = qkf_malloc(nw * 4), *dw_ref = qkf_malloc(nw * 4), *dw1 = qkf_malloc(nw * 4);
    float *dx_ref = qkf_calloc(nin, 4), *dzt = qkf_malloc(nout * 4);
    fill_spikes(s, sf, nin, &r, density, maxcount);
    fill(w, nw, &r, 0.5f);
    fill(dz, nout, &r, 1.0f);
    qkf_transpose_f32(dzt, dz, cout, (int)(nout / cout)); /* token-major, as the engine passes it */
    fill(dw, nw, &r, 1.0f); /* the gradient accumulates: start from the same nonzero values */
    memcpy(dw_ref, dw, nw * 4);
    memcpy(dw1, dw, nw * 4);
    int64_t cap = qkf_spikeconv_work_floats(F, cin, h, h, cout, k, stride, pad, 4);
    float *work = qkf_malloc(cap * 4);
    qkf_spikeconv_set_threshold(thr, thr);
    int64_t nnz = qkf_spikeconv_forward(y, s, w, F, cin, h, h, cout, k, stride, pad, work, cap);
    qkf_spikeconv_backward_weight(dw, dzt, s, F, cin, h, h, cout, k, stride, pad, work, cap);
    int64_t expect = 0;
    for (int64_t i = 0; i < nin; i++)
        expect += s[i] != 0;
    cr_expect_eq(nnz, expect);
    qkf_conv_forward_ref(y_ref, sf, w, F, cin, h, h, cout, k, stride, pad);
    qkf_conv_backward_ref(dx_ref, dw_ref, dz, sf, w, F, cin, h, h, cout, k, stride, pad);
    int64_t wi;
    /* float sums of at most cin*k*k terms of size <= 0.5 * maxcount in another order */
    double e = max_abs_err(y, y_ref, nout, &wi);
    cr_expect_lt(e, 1e-4, "forward F%d cin%d h%d cout%d k%d s%d thr %g: err %g at %lld", F, cin,
                 h, cout, k, stride, thr, e, (long long)wi);
    /* F*ho*wo terms of size <= maxcount (the existing conv test's bound) */
    e = max_abs_err(dw, dw_ref, nw, &wi);
    cr_expect_lt(e, 1e-3, "dweight F%d cin%d h%d cout%d k%d s%d thr %g: err %g at %lld", F, cin,
                 h, cout, k, stride, thr, e, (long long)wi);
    /* one thread: the same bits (every output sums in a data-defined order) */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    qkf_spikeconv_forward(y1, s, w, F, cin, h, h, cout, k, stride, pad, work, cap);
    if (thr > 1.0) /* the dense path sums in sgemm's order, which depends on threads */
        qkf_spikeconv_backward_weight(dw1, dzt, s, F, cin, h, h, cout, k, stride, pad, work, cap);
    omp_set_num_threads(threads);
    if (thr > 1.0) {
        cr_expect(memcmp(y, y1, nout * 4) == 0, "forward depends on the thread count");
        cr_expect(memcmp(dw, dw1, nw * 4) == 0, "dweight depends on the thread count");
    }
    qkf_spikeconv_set_threshold(0.4, 0.4);
    qkf_free(s), qkf_free(sf), qkf_free(w), qkf_free(dz), qkf_free(y), qkf_free(y_ref);
    qkf_free(y1), qkf_free(dw), qkf_free(dw_ref), qkf_free(dw1), qkf_free(dx_ref), qkf_free(dzt);
    qkf_free(work);
}

Test(train_sparse, spikeconv_sparse)
{
    omp_set_num_threads(2);
    /* always sparse (threshold above 1), on every kernel path (the gathers and byte scans) */
    FOR_EACH_ISA(p)
    {
    spikeconv_case(3, 5, 6, 20, 3, 1, 0.2f, 1, 2.0);  /* 3x3, cout tail of 4 */
    spikeconv_case(2, 7, 8, 40, 1, 1, 0.3f, 3, 2.0);  /* 1x1 with counts */
    spikeconv_case(2, 6, 8, 200, 1, 2, 0.2f, 1, 2.0); /* strided shortcut, 200 = 12.5 vectors */
    spikeconv_case(2, 3, 9, 16, 1, 4, 0.5f, 2, 2.0);  /* stride 4, odd side */
    spikeconv_case(4, 9, 7, 33, 3, 1, 0.05f, 2, 2.0); /* very sparse, counts */
    spikeconv_case(2, 4, 5, 24, 3, 1, 0.0f, 1, 2.0);  /* no events at all */
    }
}

Test(train_sparse, spikeconv_dense_fallback)
{
    omp_set_num_threads(2);
    /* always dense (negative threshold): im2col from bytes + sgemm */
    spikeconv_case(3, 5, 6, 20, 3, 1, 0.2f, 1, -1.0);
    spikeconv_case(2, 7, 8, 40, 1, 1, 0.3f, 3, -1.0);
    spikeconv_case(2, 6, 8, 24, 1, 2, 0.6f, 1, -1.0);
}

/* LIF with byte spikes: the same spikes, membranes and gradients as the float kernels, bit for
 * bit (the same float operations). */
Test(train_sparse, lif_u8)
{
    int C = 5, T = 3, B = 2, N = 300; /* N > the 256-token tile */
    for (int mode = 0; mode < 3; mode++) {
        int x_static = mode == 1, tb = mode == 2;
        int64_t F = (int64_t)T * B, n = (int64_t)C * F * N, nx = x_static ? (int64_t)C * B * N : n;
        qkf_rng r;
        qkf_rng_seed(&r, 3 + mode);
        float *x = qkf_malloc(nx * 4), *s = qkf_malloc(n * 4), *h = qkf_malloc(n * 4);
        float *h8 = qkf_malloc(n * 4), *hr = qkf_malloc(n * 4), *ds = qkf_malloc(n * 4);
        float *dx = qkf_calloc(nx, 4), *dx8 = qkf_calloc(nx, 4), *sf = qkf_malloc(n * 4);
        uint8_t *s8 = qkf_malloc(n);
        fill(x, nx, &r, 2.0f);
        fill(ds, n, &r, 1.0f);
        int64_t k1 = qkf_lif_forward(s, x, C, T, B, N, x_static, 1.0f, tb, NULL, h);
        int64_t k2 = qkf_lif_forward_u8(s8, x, C, T, B, N, x_static, 1.0f, tb, NULL, h8);
        cr_expect_eq(k1, k2);
        qkf_u8_to_float(sf, s8, n);
        cr_expect(memcmp(s, sf, n * 4) == 0, "spikes differ (mode %d)", mode);
        cr_expect(memcmp(h, h8, n * 4) == 0, "membranes differ (mode %d)", mode);
        qkf_lif_recompute_h_u8(hr, x, s8, C, T, B, N, x_static, tb);
        cr_expect(memcmp(h, hr, n * 4) == 0, "recomputed membranes differ (mode %d)", mode);
        qkf_lif_backward(dx, ds, h, s, C, T, B, N, x_static, 1.0f, tb, QKF_SURROGATE_ALPHA);
        qkf_lif_backward_u8(dx8, ds, h, s8, C, T, B, N, x_static, 1.0f, tb, QKF_SURROGATE_ALPHA);
        cr_expect(memcmp(dx, dx8, nx * 4) == 0, "gradients differ (mode %d)", mode);
        qkf_free(x), qkf_free(s), qkf_free(h), qkf_free(h8), qkf_free(hr), qkf_free(ds);
        qkf_free(dx), qkf_free(dx8), qkf_free(sf), qkf_free(s8);
    }
}

/* Q-K attention, SSA and readout on bytes against the float kernels. The forwards sum exact
 * small integers, so they agree exactly; the SSA backward reorders float sums. */
Test(train_sparse, attention_u8)
{
    int C = 24, heads = 3, F = 4, N = 37, T = 2, B = 2, K = 5;
    int64_t n = (int64_t)C * F * N, FN = (int64_t)F * N;
    qkf_rng r;
    qkf_rng_seed(&r, 5);
    uint8_t *q8 = qkf_malloc(n), *k8 = qkf_malloc(n), *v8 = qkf_malloc(n), *o8 = qkf_malloc(n);
    float *q = qkf_malloc(n * 4), *k = qkf_malloc(n * 4), *v = qkf_malloc(n * 4);
    float *o = qkf_malloc(n * 4), *of = qkf_malloc(n * 4), *dout = qkf_malloc(n * 4);
    fill_spikes(q8, q, n, &r, 0.3f, 1);
    fill_spikes(k8, k, n, &r, 0.3f, 1);
    fill_spikes(v8, v, n, &r, 0.3f, 1);
    fill(dout, n, &r, 1.0f);
    float *cnt = qkf_malloc(n * 4), *cnt8 = qkf_malloc(n * 4);
    qkf_qk_token_sum(cnt, q, C, heads, F, N);
    qkf_qk_token_sum_u8(cnt8, q8, C, heads, F, N);
    cr_expect(memcmp(cnt, cnt8, heads * FN * 4) == 0, "token sum");
    qkf_qk_channel_sum(cnt, q, C, F, N);
    qkf_qk_channel_sum_u8(cnt8, q8, C, F, N);
    cr_expect(memcmp(cnt, cnt8, (size_t)C * F * 4) == 0, "channel sum");
    /* masks and their backward: attn spikes from the v spikes' first rows */
    qkf_qk_token_mask(o, v, k, C, heads, F, N);
    qkf_qk_token_mask_u8(o8, v8, k8, C, heads, F, N);
    qkf_u8_to_float(of, o8, n);
    cr_expect(memcmp(o, of, n * 4) == 0, "token mask");
    float *da = qkf_calloc(n, 4), *da8 = qkf_calloc(n, 4), *dk = qkf_calloc(n, 4),
          *dk8 = qkf_calloc(n, 4);
    qkf_qk_token_mask_backward(da, dk, dout, v, k, C, heads, F, N);
    qkf_qk_token_mask_backward_u8(da8, dk8, dout, v8, k8, C, heads, F, N);
    cr_expect(memcmp(da, da8, n * 4) == 0 && memcmp(dk, dk8, n * 4) == 0, "token mask backward");
    qkf_qk_channel_mask(o, v, k, C, F, N);
    qkf_qk_channel_mask_u8(o8, v8, k8, C, F, N);
    qkf_u8_to_float(of, o8, n);
    cr_expect(memcmp(o, of, n * 4) == 0, "channel mask");
    memset(da, 0, n * 4), memset(da8, 0, n * 4), memset(dk, 0, n * 4), memset(dk8, 0, n * 4);
    qkf_qk_channel_mask_backward(da, dk, dout, v, k, C, F, N);
    qkf_qk_channel_mask_backward_u8(da8, dk8, dout, v8, k8, C, F, N);
    cr_expect(memcmp(da, da8, n * 4) == 0 && memcmp(dk, dk8, n * 4) == 0,
              "channel mask backward");
    /* SSA */
    int threads = omp_get_max_threads();
    float *s1 = qkf_malloc(qkf_ssa_scratch_floats(C, heads, threads) * 4);
    float *s2 = qkf_malloc(qkf_ssa_backward_scratch_floats(C, heads, threads) * 4);
    float *s8 = qkf_malloc(qkf_ssa_u8_scratch_floats(C, heads, N, threads) * 4);
    qkf_ssa_forward(o, q, k, v, C, heads, F, N, s1);
    qkf_ssa_forward_u8(of, q8, k8, v8, C, heads, F, N, s8);
    cr_expect(memcmp(o, of, n * 4) == 0, "SSA forward");
    float *g[6];
    for (int i = 0; i < 6; i++)
        g[i] = qkf_calloc(n, 4);
    qkf_ssa_backward(g[0], g[1], g[2], dout, q, k, v, C, heads, F, N, s2);
    qkf_ssa_backward_u8(g[3], g[4], g[5], dout, q8, k8, v8, C, heads, F, N, s8);
    int64_t wi;
    for (int i = 0; i < 3; i++) {
        /* sums of <= d*N terms of size 1 in another order */
        double e = max_abs_err(g[i], g[i + 3], n, &wi);
        cr_expect_lt(e, 1e-4, "SSA backward %d: err %g at %lld", i, e, (long long)wi);
    }
    /* readout */
    float *w = qkf_malloc((size_t)K * C * 4), *bias = qkf_malloc(K * 4);
    fill(w, (int64_t)K * C, &r, 1.0f);
    fill(bias, K, &r, 1.0f);
    float lg[2][64], ft[2][64];
    cr_assert_eq(F, T * B);
    qkf_readout_forward(lg[0], ft[0], v, w, bias, C, T, B, N, K);
    qkf_readout_forward_u8(lg[1], ft[1], v8, w, bias, C, T, B, N, K);
    cr_expect(memcmp(lg[0], lg[1], (size_t)B * K * 4) == 0, "readout");
    qkf_free(q8), qkf_free(k8), qkf_free(v8), qkf_free(o8), qkf_free(q), qkf_free(k);
    qkf_free(v), qkf_free(o), qkf_free(of), qkf_free(dout), qkf_free(cnt), qkf_free(cnt8);
    qkf_free(da), qkf_free(da8), qkf_free(dk), qkf_free(dk8), qkf_free(s1), qkf_free(s2);
    qkf_free(s8), qkf_free(w), qkf_free(bias);
    for (int i = 0; i < 6; i++)
        qkf_free(g[i]);
}

/* The token-major BatchNorm backward and the input gradient that reads it against the
 * channel-major kernels. */
Test(train_sparse, token_major_backward)
{
    int C = 21, F = 3, h = 5, cin = 6;
    int64_t M = (int64_t)F * h * h, n = (int64_t)C * M, nin = (int64_t)cin * M;
    qkf_rng r;
    qkf_rng_seed(&r, 9);
    float *x = qkf_malloc(n * 4), *dy = qkf_malloc(n * 4), *dx = qkf_malloc(n * 4);
    float *dxt = qkf_malloc(n * 4), *dxt2 = qkf_malloc(n * 4);
    float mean[32], invstd[32], gamma[32], g1[3][32] = {{0}}, g2[3][32] = {{0}}, y[1];
    fill(x, n, &r, 2.0f);
    fill(dy, n, &r, 1.0f);
    fill(gamma, C, &r, 1.0f);
    float *yb = qkf_malloc(n * 4), beta[32] = {0};
    qkf_bn_train_forward(yb, mean, invstd, x, C, M, NULL, gamma, beta, NULL, NULL, M);
    (void)y;
    qkf_bn_train_backward(dx, g1[0], g1[1], g1[2], dy, x, mean, invstd, gamma, C, M);
    float *dxc = qkf_malloc(n * 4);
    memcpy(dxc, dy, n * 4); /* in place: dx over dy */
    qkf_bn_train_backward_t(dxt, g2[0], g2[1], g2[2], dxc, x, mean, invstd, gamma, C, M, NULL,
                            dxc);
    cr_expect(memcmp(dxc, dx, n * 4) == 0, "channel-major dx of the token-major backward");
    qkf_free(dxc);
    qkf_transpose_f32(dxt2, dx, C, (int)M);
    cr_expect(memcmp(dxt, dxt2, n * 4) == 0, "token-major dx differs");
    cr_expect(memcmp(g1[0], g2[0], C * 4) == 0 && memcmp(g1[1], g2[1], C * 4) == 0,
              "dgamma / dbeta differ");
    for (int c = 0; c < C; c++) /* sums of dx, zero up to rounding, in two orders */
        cr_expect_lt(fabs((double)g1[2][c] - (double)g2[2][c]), 1e-4, "dbias %d", c);
    for (int k = 1; k <= 3; k += 2) {
        int64_t nw = (int64_t)C * cin * k * k;
        float *w = qkf_malloc(nw * 4), *din = qkf_calloc(nin, 4), *din2 = qkf_calloc(nin, 4);
        fill(w, nw, &r, 0.5f);
        int64_t cap = qkf_conv_col_floats(cin, h, h, k, 1, k / 2) * F;
        float *col = qkf_malloc(cap * 4);
        qkf_conv_backward_input(din, dx, w, F, cin, h, h, C, k, 1, k / 2, col, cap);
        qkf_conv_backward_input_t(din2, dxt, w, F, cin, h, h, C, k, 1, k / 2, 0, col, cap);
        int64_t wi;
        double e = max_abs_err(din, din2, nin, &wi); /* sgemm with the other operand layout */
        cr_expect_lt(e, 1e-5, "input gradient k%d: err %g at %lld", k, e, (long long)wi);
        for (int64_t i = 0; i < nin; i++) /* overwrite: whatever din held is gone */
            din2[i] = 1e30f;
        qkf_conv_backward_input_t(din2, dxt, w, F, cin, h, h, C, k, 1, k / 2, 1, col, cap);
        e = max_abs_err(din, din2, nin, &wi);
        cr_expect_lt(e, 1e-5, "overwriting input gradient k%d: err %g at %lld", k, e,
                     (long long)wi);
        qkf_free(w), qkf_free(din), qkf_free(din2), qkf_free(col);
    }
    qkf_free(x), qkf_free(dy), qkf_free(dx), qkf_free(dxt), qkf_free(dxt2), qkf_free(yb);
}

/* The LIF that computes its currents from the convolution's z (and the fused recompute +
 * backward) against BatchNorm apply (+ MaxPool gather) followed by the plain byte LIF kernels:
 * bit for bit. */
Test(train_sparse, lif_from_z)
{
    int C = 4, T = 3, B = 2, hc = 6, wc = 7;
    for (int mode = 0; mode < 4; mode++) {
        int pooled = mode & 1, x_static = mode == 2, tb = mode == 3;
        int ho = (hc - 1) / 2 + 1, wo = (wc - 1) / 2 + 1, N = pooled ? ho * wo : hc * wc;
        int64_t F = (int64_t)T * B, xF = x_static ? B : F, zn = (int64_t)C * xF * hc * wc;
        int64_t n = (int64_t)C * F * N, nx = (int64_t)C * xF * N;
        qkf_rng r;
        qkf_rng_seed(&r, 21 + mode);
        float *z = qkf_malloc(zn * 4), *y = qkf_malloc(zn * 4), *x = qkf_malloc(nx * 4);
        float *h = qkf_malloc(n * 4), *h2 = qkf_malloc(n * 4), *ds = qkf_malloc(n * 4);
        float *dx = qkf_calloc(nx, 4), *dx2 = qkf_calloc(nx, 4), *xp = qkf_malloc(nx * 4);
        int32_t *arg = qkf_malloc(nx * 4);
        uint8_t *s = qkf_malloc(n), *s2 = qkf_malloc(n);
        float mean[4], invstd[4], gamma[4], beta[4];
        fill(z, zn, &r, 2.0f);
        fill(ds, n, &r, 1.0f);
        fill(gamma, C, &r, 1.5f);
        fill(beta, C, &r, 1.0f);
        qkf_bn_train_forward(y, mean, invstd, z, C, zn / C, NULL, gamma, beta, NULL, NULL, zn / C);
        if (pooled)
            qkf_maxpool3s2_train_forward(x, arg, y, (int64_t)C * xF, hc, wc);
        else
            memcpy(x, y, nx * 4);
        qkf_lif_forward_u8(s, x, C, T, B, N, x_static, 1.0f, tb, NULL, h);
        if (!pooled) {
            qkf_lif_forward_bn_u8(s2, z, mean, invstd, gamma, beta, C, T, B, N, x_static, 1.0f,
                                  tb, h2);
            cr_expect(memcmp(s, s2, n) == 0 && memcmp(h, h2, n * 4) == 0,
                      "forward from z differs (mode %d)", mode);
        }
        /* the unfused backward, as the engine ran it before */
        qkf_bn_train_apply(y, z, mean, invstd, gamma, beta, C, zn / C);
        if (pooled)
            qkf_maxpool3s2_gather(xp, y, arg, (int64_t)C * xF, hc, wc);
        else
            memcpy(xp, y, nx * 4);
        qkf_lif_recompute_h_u8(h2, xp, s, C, T, B, N, x_static, tb);
        cr_expect(memcmp(h, h2, n * 4) == 0, "recomputed h differs (mode %d)", mode);
        qkf_lif_backward_u8(dx, ds, h2, s, C, T, B, N, x_static, 1.0f, tb, QKF_SURROGATE_ALPHA);
        float *scratch = qkf_malloc(qkf_lif_backward_bn_scratch_floats(T, B, tb, 8) * 4);
        double sums[8], sums_ref[8];
        qkf_lif_backward_bn_u8(dx2, ds, s, z, pooled ? arg : NULL, hc * wc, mean, invstd, gamma,
                               beta, C, T, B, N, x_static, 1.0f, tb, QKF_SURROGATE_ALPHA, 0,
                               sums, scratch);
        if (!pooled) /* the BatchNorm reductions of dx, as the BatchNorm backward computes them */
            for (int c = 0; c < C; c++) {
                qkf_bn_sum_dy_dyx(dx + (int64_t)c * xF * N, z + (int64_t)c * xF * N, xF * N,
                                  mean[c], invstd[c], &sums_ref[c], &sums_ref[C + c]);
                cr_expect(sums[c] == sums_ref[c] && sums[C + c] == sums_ref[C + c],
                          "BatchNorm sums differ (mode %d, channel %d)", mode, c);
            }
        cr_expect(memcmp(dx, dx2, nx * 4) == 0, "fused backward differs (mode %d)", mode);
        for (int64_t i = 0; i < nx; i++) /* garbage: overwrite mode must not read it */
            dx2[i] = x_static ? 0.0f : 1e30f;
        qkf_lif_backward_bn_u8(dx2, ds, s, z, pooled ? arg : NULL, hc * wc, mean, invstd, gamma,
                               beta, C, T, B, N, x_static, 1.0f, tb, QKF_SURROGATE_ALPHA, 1,
                               NULL, scratch);
        cr_expect(memcmp(dx, dx2, nx * 4) == 0, "overwriting backward differs (mode %d)", mode);
        qkf_free(z), qkf_free(y), qkf_free(x), qkf_free(h), qkf_free(h2), qkf_free(ds);
        qkf_free(dx), qkf_free(dx2), qkf_free(xp), qkf_free(arg), qkf_free(s), qkf_free(s2);
        qkf_free(scratch);
    }
}

/* The tiled transpose (16 x 16 register tiles and ragged edges) against the plain loop. */
Test(train_sparse, transpose)
{
    int shapes[][2] = {{16, 16}, {48, 32}, {37, 53}, {5, 200}, {1, 1}};
    FOR_EACH_ISA(p)
    for (int k = 0; k < 5; k++) {
        int64_t rows = shapes[k][0];
        int cols = shapes[k][1];
        float *a = qkf_malloc(rows * cols * 4), *b = qkf_malloc(rows * cols * 4);
        for (int64_t i = 0; i < rows * cols; i++)
            a[i] = (float)i;
        qkf_transpose_f32(b, a, rows, cols);
        int bad = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                bad += b[(int64_t)c * rows + r] != a[r * cols + c];
        cr_expect_eq(bad, 0, "%s: transpose %lld x %d: %d wrong", ISA_NAME(p), (long long)rows,
                     cols, bad);
        qkf_free(a), qkf_free(b);
    }
}

/* MaxPool 3/2/1 with argmax against the plain scan-order loop: ties (small integer values),
 * NaNs, odd and even sides. */
Test(train_sparse, maxpool_argmax)
{
    int sides[][2] = {{32, 32}, {9, 8}, {7, 11}, {2, 3}};
    qkf_rng r;
    qkf_rng_seed(&r, 31);
    for (int k = 0; k < 4; k++) {
        int h = sides[k][0], w = sides[k][1], ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
        int64_t P = 6, n = P * h * w, no = P * ho * wo;
        float *in = qkf_malloc(n * 4), *out = qkf_malloc(no * 4);
        int32_t *arg = qkf_malloc(no * 4);
        for (int64_t i = 0; i < n; i++) {
            in[i] = (float)(qkf_rng_u64(&r) % 4) - 2.0f; /* many ties */
            if (qkf_rng_uniform(&r) < 0.03f)
                in[i] = NAN;
        }
        qkf_maxpool3s2_train_forward(out, arg, in, P, h, w);
        int bad = 0;
        for (int64_t p = 0; p < P; p++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    const float *src = in + p * h * w;
                    float m = -INFINITY;
                    int32_t best = -1;
                    for (int iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++)
                        for (int ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++) {
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                continue;
                            float v = src[iy * w + ix];
                            if (v > m || best < 0 || isnan(v)) {
                                m = v;
                                best = iy * w + ix;
                            }
                        }
                    int64_t o = (p * ho + oy) * wo + ox;
                    bad += arg[o] != best || memcmp(&out[o], &m, 4) != 0;
                }
        cr_expect_eq(bad, 0, "maxpool %dx%d: %d outputs differ", h, w, bad);
        qkf_free(in), qkf_free(out), qkf_free(arg);
    }
}
