/* Each optimised dense kernel against a plain loop written straight from its definition. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../kernels/base.h"
#include "../kernels/backward.h"
#include "../kernels/kernels.h"
#include "../kernels/winograd.h"

static float *rand_buf(qkf_rng *r, int64_t n, int spikes)
{
    float *x = qkf_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = spikes ? (float)(qkf_rng_uniform(r) < 0.3f) : qkf_rng_normal(r);
    return x;
}

/* Direct convolution: out[co][f][oy][ox] = sum w[co][ci][ky][kx] in[ci][f][iy][ix]. */
static void conv_naive(float *out, const float *in, const float *w, int F, int cin, int h, int wd,
                       int cout, int k, int s, int p)
{
    int ho = (h + 2 * p - k) / s + 1, wo = (wd + 2 * p - k) / s + 1;
    for (int co = 0; co < cout; co++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double acc = 0;
                    for (int ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s - p + ky, ix = ox * s - p + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= wd)
                                    continue;
                                acc += (double)w[((co * cin + ci) * k + ky) * k + kx] *
                                       (double)in[((int64_t)ci * F + f) * h * wd + iy * wd + ix];
                            }
                    out[(((int64_t)co * F + f) * ho + oy) * wo + ox] = (float)acc;
                }
}

Test(kernels, conv_matches_direct_convolution)
{
    qkf_rng r;
    qkf_rng_seed(&r, 11);
    struct {
        int F, cin, h, cout, k, s, p;
        int64_t cap; /* im2col scratch: small values force several frame chunks */
    } cases[] = {
        {3, 5, 9, 7, 3, 1, 1, 1 << 20}, {5, 4, 8, 6, 3, 1, 1, 4 * 9 * 64 * 2},
        {4, 6, 8, 5, 1, 1, 0, 0},       {3, 6, 8, 5, 1, 2, 0, 1 << 20},
        {2, 3, 16, 4, 1, 4, 0, 1 << 20}, {2, 3, 7, 4, 3, 1, 1, 1 << 20},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int F = cases[c].F, cin = cases[c].cin, h = cases[c].h, cout = cases[c].cout,
            k = cases[c].k, s = cases[c].s, p = cases[c].p;
        int ho = (h + 2 * p - k) / s + 1;
        float *in = rand_buf(&r, (int64_t)cin * F * h * h, 0);
        float *w = rand_buf(&r, (int64_t)cout * cin * k * k, 0);
        float *a = qkf_calloc((size_t)cout * F * ho * ho, sizeof(float));
        float *b = qkf_calloc((size_t)cout * F * ho * ho, sizeof(float));
        int64_t cap = cases[c].cap ? cases[c].cap : 1;
        int64_t need = qkf_conv_col_floats(cin, h, h, k, s, p);
        if (cap < need)
            cap = need;
        float *col = qkf_malloc((size_t)cap * sizeof(float));
        qkf_conv_forward(a, in, w, F, cin, h, h, cout, k, s, p, col, cap);
        conv_naive(b, in, w, F, cin, h, h, cout, k, s, p);
        for (int64_t i = 0; i < (int64_t)cout * F * ho * ho; i++)
            cr_assert_float_eq(a[i], b[i], 1e-4f, "case %zu element %lld: %g vs %g", c,
                               (long long)i, (double)a[i], (double)b[i]);
        qkf_free(in), qkf_free(w), qkf_free(a), qkf_free(b), qkf_free(col);
    }
}

/* Winograd F(2x2) and F(4x4) against direct convolution in double: image sizes that are and are
 * not multiples of the tile, one and several frames per pass, real and spike inputs. The bound
 * is relative to the sum of |w| |x| of each output (the scale of its rounding error): 1e-6 for
 * F(2x2), 8e-6 for F(4x4), whose transforms amplify rounding (direct convolution: ~1e-7). */
Test(kernels, winograd_matches_direct_convolution)
{
    qkf_rng r;
    qkf_rng_seed(&r, 12);
    struct {
        int F, cin, h, w, cout, spikes;
        int64_t cap; /* 0: one frame per pass */
    } cases[] = {
        {3, 5, 8, 8, 7, 0, 1 << 22}, {2, 4, 9, 7, 3, 0, 1 << 22}, {5, 16, 16, 16, 24, 1, 0},
        {4, 8, 7, 7, 8, 1, 1 << 22}, {1, 3, 1, 1, 2, 0, 1 << 22}, {6, 32, 8, 8, 16, 1, 1 << 16},
    };
    for (int m = 2; m <= 4; m += 2)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int F = cases[c].F, cin = cases[c].cin, h = cases[c].h, wd = cases[c].w,
                cout = cases[c].cout;
            float *in = rand_buf(&r, (int64_t)cin * F * h * wd, cases[c].spikes);
            float *w = rand_buf(&r, (int64_t)cout * cin * 9, 0);
            float *absw = qkf_malloc((size_t)cout * cin * 9 * sizeof(float));
            float *absx = qkf_malloc((size_t)cin * F * h * wd * sizeof(float));
            for (int64_t i = 0; i < (int64_t)cout * cin * 9; i++)
                absw[i] = fabsf(w[i]);
            for (int64_t i = 0; i < (int64_t)cin * F * h * wd; i++)
                absx[i] = fabsf(in[i]);
            int64_t n = (int64_t)cout * F * h * wd;
            float *a = qkf_calloc((size_t)n, sizeof(float));
            float *b = qkf_calloc((size_t)n, sizeof(float));
            float *scale = qkf_calloc((size_t)n, sizeof(float));
            float *U = qkf_malloc((size_t)qkf_wino_weight_floats(m, cout, cin) * sizeof(float));
            int64_t need = qkf_wino_scratch_floats(m, cin, cout, h, wd);
            int64_t cap = cases[c].cap > need ? cases[c].cap : need;
            float *scr = qkf_malloc((size_t)cap * sizeof(float));
            cr_assert(qkf_wino_ok(m, 3, 1, 1) && !qkf_wino_ok(m, 3, 2, 1) && !qkf_wino_ok(m, 1, 1, 0));
            qkf_wino_weights(m, U, w, cout, cin);
            qkf_wino_conv_forward(m, a, in, U, F, cin, h, wd, cout, scr, cap);
            conv_naive(b, in, w, F, cin, h, wd, cout, 3, 1, 1);
            conv_naive(scale, absx, absw, F, cin, h, wd, cout, 3, 1, 1);
            for (int64_t i = 0; i < n; i++)
                cr_assert(fabsf(a[i] - b[i]) <= (m == 2 ? 1e-6f : 8e-6f) * (scale[i] + 1.0f),
                          "F(%dx%d) case %zu element %lld: %.9g vs %.9g (scale %g)", m, m, c,
                          (long long)i, (double)a[i], (double)b[i], (double)scale[i]);
            qkf_free(in), qkf_free(w), qkf_free(absw), qkf_free(absx), qkf_free(a), qkf_free(b);
            qkf_free(scale), qkf_free(U), qkf_free(scr);
        }
}

/* F(2x2) on power-of-two weights and spike inputs: every value exact, so bit-identical to the
 * im2col GEMM path (what keeps the event engine's bit-exact tests valid). */
Test(kernels, winograd2_exact_on_power_of_two_weights)
{
    qkf_rng r;
    qkf_rng_seed(&r, 13);
    int F = 4, cin = 24, h = 8, wd = 8, cout = 16;
    float *in = rand_buf(&r, (int64_t)cin * F * h * wd, 1);
    float *w = qkf_malloc((size_t)cout * cin * 9 * sizeof(float));
    for (int64_t i = 0; i < (int64_t)cout * cin * 9; i++) {
        int e = (int)(qkf_rng_uniform(&r) * 6.0f) - 6;
        w[i] = (qkf_rng_uniform(&r) < 0.5f ? -1.0f : 1.0f) * ldexpf(1.0f, e);
    }
    int64_t n = (int64_t)cout * F * h * wd;
    float *a = qkf_calloc((size_t)n, sizeof(float)), *b = qkf_calloc((size_t)n, sizeof(float));
    float *U = qkf_malloc((size_t)qkf_wino_weight_floats(2, cout, cin) * sizeof(float));
    int64_t cap = qkf_wino_scratch_floats(2, cin, cout, h, wd) * F;
    int64_t ccap = qkf_conv_col_floats(cin, h, wd, 3, 1, 1) * F;
    float *scr = qkf_malloc((size_t)cap * sizeof(float));
    float *col = qkf_malloc((size_t)ccap * sizeof(float));
    qkf_wino_weights(2, U, w, cout, cin);
    qkf_wino_conv_forward(2, a, in, U, F, cin, h, wd, cout, scr, cap);
    qkf_conv_forward(b, in, w, F, cin, h, wd, cout, 3, 1, 1, col, ccap);
    cr_assert(memcmp(a, b, (size_t)n * sizeof(float)) == 0, "F(2x2) not bit-identical");
    qkf_free(in), qkf_free(w), qkf_free(a), qkf_free(b), qkf_free(U), qkf_free(scr), qkf_free(col);
}

/* The data gradient through Winograd (transposed, rotated weights, accumulating) against the
 * plain backward reference. */
Test(kernels, winograd_data_gradient_matches_reference)
{
    qkf_rng r;
    qkf_rng_seed(&r, 14);
    int F = 3, cin = 12, cout = 20, h = 9, wd = 6;
    float *in = rand_buf(&r, (int64_t)cin * F * h * wd, 1);
    float *w = rand_buf(&r, (int64_t)cout * cin * 9, 0);
    float *dout = rand_buf(&r, (int64_t)cout * F * h * wd, 0);
    int64_t nin = (int64_t)cin * F * h * wd;
    float *a = rand_buf(&r, nin, 0), *b = qkf_malloc((size_t)nin * sizeof(float));
    memcpy(b, a, (size_t)nin * sizeof(float)); /* both accumulate onto the same values */
    float *dw = qkf_calloc((size_t)cout * cin * 9, sizeof(float));
    float *scale = qkf_calloc((size_t)nin, sizeof(float));
    float *absw = qkf_malloc((size_t)cout * cin * 9 * sizeof(float));
    float *absd = qkf_malloc((size_t)cout * F * h * wd * sizeof(float));
    for (int m = 2; m <= 4; m += 2) {
        float *U = qkf_malloc((size_t)qkf_wino_weight_floats(m, cin, cout) * sizeof(float));
        int64_t cap = qkf_wino_scratch_floats(m, cout, cin, h, wd) * F;
        float *scr = qkf_malloc((size_t)cap * sizeof(float));
        float *am = qkf_malloc((size_t)nin * sizeof(float));
        memcpy(am, a, (size_t)nin * sizeof(float));
        qkf_wino_weights_transposed(m, U, w, cout, cin);
        qkf_wino_conv_accumulate(m, am, dout, U, F, cout, h, wd, cin, scr, cap);
        if (m == 2) {
            qkf_conv_backward_ref(b, dw, dout, in, w, F, cin, h, wd, cout, 3, 1, 1);
            /* the scale of each sum: sum |w| |dout| */
            for (int64_t i = 0; i < (int64_t)cout * cin * 9; i++)
                absw[i] = fabsf(w[i]);
            for (int64_t i = 0; i < (int64_t)cout * F * h * wd; i++)
                absd[i] = fabsf(dout[i]);
            qkf_conv_backward_ref(scale, dw, absd, in, absw, F, cin, h, wd, cout, 3, 1, 1);
        }
        for (int64_t i = 0; i < nin; i++)
            cr_assert(fabsf(am[i] - b[i]) <= (m == 2 ? 1e-6f : 8e-6f) * (scale[i] + 1.0f),
                      "F(%dx%d) din[%lld]: %.9g vs %.9g", m, m, (long long)i, (double)am[i],
                      (double)b[i]);
        qkf_free(U), qkf_free(scr), qkf_free(am);
    }
    qkf_free(in), qkf_free(w), qkf_free(dout), qkf_free(a), qkf_free(b), qkf_free(dw);
    qkf_free(scale), qkf_free(absw), qkf_free(absd);
}

Test(kernels, maxpool_matches_definition)
{
    qkf_rng r;
    qkf_rng_seed(&r, 3);
    int P = 6, sizes[] = {8, 7, 1, 2};
    for (int si = 0; si < 4; si++) {
        int h = sizes[si], ho = (h - 1) / 2 + 1;
        float *in = rand_buf(&r, (int64_t)P * h * h, 0), *out = qkf_malloc((size_t)P * ho * ho * 4);
        qkf_maxpool3s2_forward(out, in, P, h, h);
        for (int p = 0; p < P; p++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < ho; ox++) {
                    float m = -INFINITY;
                    for (int iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++)
                        for (int ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++)
                            if (iy >= 0 && iy < h && ix >= 0 && ix < h)
                                m = fmaxf(m, in[(p * h + iy) * h + ix]);
                    cr_assert_eq(out[(p * ho + oy) * ho + ox], m);
                }
        qkf_free(in), qkf_free(out);
    }
}

Test(kernels, bn_matches_pytorch_formula)
{
    qkf_rng r;
    qkf_rng_seed(&r, 5);
    int C = 4, M = 50;
    float *x = rand_buf(&r, C * M, 0), *y = qkf_malloc((size_t)C * M * 4);
    float g[4] = {1.5f, -0.5f, 2.0f, 0.25f}, b[4] = {0.1f, 0.2f, -0.3f, 0.0f},
          mu[4] = {0.3f, -1.0f, 0.0f, 2.0f}, var[4] = {1.0f, 0.25f, 4.0f, 1e-6f},
          bias[4] = {0.5f, 0.0f, -0.25f, 1.0f};
    memcpy(y, x, (size_t)C * M * 4);
    qkf_bias_bn_forward(y, C, M, bias, g, b, mu, var);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < M; i++) {
            double ref = ((double)x[c * M + i] + (double)bias[c] - (double)mu[c]) /
                             sqrt((double)var[c] + 1e-5) * (double)g[c] + (double)b[c];
            cr_assert(fabs((double)y[c * M + i] - ref) < 1e-4 * (1 + fabs(ref)), "%g vs %g",
                      (double)y[c * M + i], ref);
        }
    qkf_free(x), qkf_free(y);
}

Test(kernels, lif_matches_equations_and_tb_axis)
{
    /* one neuron, hand-computed: x = 2.5, 0.2, 1.8, 1.8 -> h = 1.25 (spike), 0.1, 0.95, 1.375 */
    float x[4] = {2.5f, 0.2f, 1.8f, 1.8f}, s[4], v[4], h[4];
    int64_t n = qkf_lif_forward(s, x, 1, 4, 1, 1, 0, 1.0f, 0, v, h);
    cr_expect_eq(n, 2);
    float hs[4] = {1.25f, 0.1f, 0.95f, 1.375f}, ss[4] = {1, 0, 0, 1}, vs[4] = {0, 0.1f, 0.95f, 0};
    for (int t = 0; t < 4; t++) {
        cr_expect_float_eq(h[t], hs[t], 1e-6f, "t=%d", t);
        cr_expect_eq(s[t], ss[t], "t=%d", t);
        cr_expect_float_eq(v[t], vs[t], 1e-6f, "t=%d", t);
    }
    /* tb_compat: T=2, B=2 integrates frames (0,0),(0,1),(1,0),(1,1) in one membrane */
    float y[4] = {1.5f, 1.5f, 0.0f, 0.0f}, s2[4];
    qkf_lif_forward(s2, y, 1, 2, 2, 1, 0, 1.0f, 1, NULL, NULL);
    /* h = 0.75, then 0.75 + (1.5-0.75)/2 = 1.125 (spike), then 0, 0 */
    cr_expect(s2[0] == 0 && s2[1] == 1 && s2[2] == 0 && s2[3] == 0);
    qkf_lif_forward(s2, y, 1, 2, 2, 1, 0, 1.0f, 0, NULL, NULL);
    /* per sample: b=0 sees 1.5, 0 -> no spike; b=1 the same */
    cr_expect(s2[0] == 0 && s2[1] == 0 && s2[2] == 0 && s2[3] == 0);
}

/* The byte-spike LIF (the dense engine's compact spike tensors) against the float one: the same
 * spikes, counts and membranes, fused BatchNorm or not, static input or not, tb_compat or not. */
Test(kernels, bn_lif_bytes_match_floats)
{
    qkf_rng r;
    qkf_rng_seed(&r, 15);
    int C = 5, T = 3, B = 2, N = 300; /* N > the kernel's token tile */
    int64_t n = (int64_t)C * T * B * N;
    float *x = rand_buf(&r, n, 0), *sf = qkf_malloc((size_t)n * sizeof(float));
    uint8_t *s8 = qkf_malloc((size_t)n);
    float *v1 = qkf_malloc((size_t)n * sizeof(float)), *v2 = qkf_malloc((size_t)n * sizeof(float));
    float bias[5], alpha[5], shift[5];
    for (int c = 0; c < C; c++)
        bias[c] = 0.1f * (float)c, alpha[c] = 1.0f + 0.2f * (float)c, shift[c] = 0.3f;
    for (int mode = 0; mode < 8; mode++) {
        int fused = mode & 1, st = (mode >> 1) & 1, tb = (mode >> 2) & 1;
        int64_t a = qkf_bn_lif_forward(sf, x, C, T, B, N, st, 1.0f, tb, fused ? bias : NULL,
                                       fused ? alpha : NULL, fused ? shift : NULL, v1, NULL);
        int64_t b = qkf_bn_lif_forward_u8(s8, x, C, T, B, N, st, 1.0f, tb, fused ? bias : NULL,
                                          fused ? alpha : NULL, fused ? shift : NULL, v2, NULL);
        cr_expect_eq(a, b, "mode %d: %lld vs %lld spikes", mode, (long long)a, (long long)b);
        cr_expect(a > 0 && a < n, "mode %d: %lld spikes of %lld", mode, (long long)a,
                  (long long)n);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += sf[i] != (float)s8[i] || v1[i] != v2[i];
        cr_expect_eq(bad, 0, "mode %d: %lld values differ", mode, (long long)bad);
    }
    qkf_free(x), qkf_free(sf), qkf_free(s8), qkf_free(v1), qkf_free(v2);
}

Test(kernels, attention_kernels_match_definitions)
{
    qkf_rng r;
    qkf_rng_seed(&r, 9);
    int C = 12, H = 3, F = 3, N = 10, d = C / H;
    float *q = rand_buf(&r, C * F * N, 1), *k = rand_buf(&r, C * F * N, 1),
          *v = rand_buf(&r, C * F * N, 1);
    float *cnt = qkf_malloc((size_t)H * F * N * 4), *out = qkf_malloc((size_t)C * F * N * 4);
    qkf_qk_token_sum(cnt, q, C, H, F, N);
    for (int hd = 0; hd < H; hd++)
        for (int i = 0; i < F * N; i++) {
            float s = 0;
            for (int j = 0; j < d; j++)
                s += q[(hd * d + j) * F * N + i];
            cr_assert_eq(cnt[hd * F * N + i], s);
        }
    float *scratch = qkf_malloc((size_t)qkf_ssa_scratch_floats(C, H, 64) * 4);
    qkf_ssa_forward(out, q, k, v, C, H, F, N, scratch);
    /* Q K^T V * 0.125 computed the other way round: (Q K^T) V */
    for (int f = 0; f < F; f++)
        for (int hd = 0; hd < H; hd++)
            for (int n = 0; n < N; n++)
                for (int j = 0; j < d; j++) {
                    double acc = 0;
                    for (int m = 0; m < N; m++) {
                        double qk = 0;
                        for (int i = 0; i < d; i++)
                            qk += (double)q[((hd * d + i) * F + f) * N + n] *
                                  (double)k[((hd * d + i) * F + f) * N + m];
                        acc += qk * (double)v[((hd * d + j) * F + f) * N + m];
                    }
                    cr_assert_eq(out[((hd * d + j) * F + f) * N + n], (float)(acc * 0.125));
                }
    qkf_free(q), qkf_free(k), qkf_free(v), qkf_free(cnt), qkf_free(out), qkf_free(scratch);
}
