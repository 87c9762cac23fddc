/* The trainer: gradients against PyTorch autograd (fixtures from
 * tools/reference/make_grad_fixtures.py), finite-difference checks of the smooth kernels,
 * fast kernels against their plain references, AdamW against PyTorch's formula, and the
 * determinism of a training step.
 *
 * Tolerances. The fixtures are drawn so that no membrane lies within 2e-6 of a threshold, so
 * qkf produces the same spikes as PyTorch and the gradients differ only by float32 rounding
 * (different summation orders in BLAS and BatchNorm): observed max |g - g_ref| between 4e-8 and
 * 5e-7 of |g_ref|_2 over all parameters (dvs, whose 4 pooled convs see event counts, is the
 * largest). We allow 2e-5 * |g_ref|_2 per element: 40x margin, while any wrong
 * formula (a missing surrogate factor, an undetached reset, a wrong BN term) gives errors of
 * 1e-2 or more of the norm. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <zlib.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/dataset.h"
#include "../io/io.h"
#include "../kernels/backward.h"
#include "../kernels/base.h"
#include "util.h"
#include "../kernels/kernels.h"
#include "../sim/dense.h"
#include "../sim/train.h"
#include "../tools/app/trainer.h"

#define GRAD_TOL 2e-5   /* times the reference gradient norm, see above */
#define LOSS_TOL 1e-5   /* relative: the loss is one sum of B log-softmax terms */
#define BN_TOL 1e-5     /* relative to max |running stat| of the tensor */

TestSuite(train, .timeout = 60);

/* ---- gradients against PyTorch ------------------------------------------------------------ */

static void check_fixture(const char *name, int flags)
{
    char wpath[512], gpath[512];
    snprintf(wpath, sizeof wpath, "%s/grad_%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(gpath, sizeof gpath, "%s/grad_%s.h5", QKF_FIXTURE_DIR, name);
    qkf_h5_quiet();
    qkf_model m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(qkf_ckpt_load(wpath, &m), 0, "%s", qkf_last_error());
    float *x, *loss_ref;
    int64_t *labels;
    int nd;
    int64_t sh[5], ls[5];
    cr_assert_eq(qkf_h5_read_f32(gpath, "input", &x, &nd, sh), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5_read_i64(gpath, "labels", &labels, &nd, ls), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5_read_f32(gpath, "loss", &loss_ref, &nd, ls), 0, "%s", qkf_last_error());
    int B = (int)sh[0], K = m.cfg.num_classes;
    qkf_train *e = qkf_train_create(&m, B, flags);
    cr_assert_not_null(e, "%s", qkf_last_error());
    float *target = qkf_malloc((size_t)B * K * sizeof(float));
    int32_t lab[64];
    for (int b = 0; b < B; b++)
        lab[b] = (int32_t)labels[b];
    qkf_xent_targets(target, lab, B, K, 0.0f);
    qkf_train_zero_grad(e);
    double loss;
    cr_assert_eq(qkf_train_loss_backward(e, x, B, target, &loss, NULL), 0, "%s",
                 qkf_last_error());
    cr_expect(fabs(loss - (double)loss_ref[0]) <= LOSS_TOL * fabs((double)loss_ref[0]),
              "%s: loss %.7f vs reference %.7f", name, loss, (double)loss_ref[0]);

    /* reference gradient norm */
    const qkf_params *ps = &m.params;
    float **ref = qkf_calloc((size_t)ps->n, sizeof(float *));
    double gn = 0.0;
    for (int k = 0; k < ps->n; k++) {
        const qkf_param *p = &ps->p[k];
        char key[QKF_MAX_NAME + 16];
        int64_t s[5];
        snprintf(key, sizeof key, "%s/%s", p->is_buffer ? "bn_after" : "grad", p->name);
        cr_assert_eq(qkf_h5_read_f32(gpath, key, &ref[k], &nd, s), 0, "%s", qkf_last_error());
        if (!p->is_buffer)
            for (int64_t i = 0; i < p->numel; i++)
                gn += (double)ref[k][i] * (double)ref[k][i];
    }
    gn = sqrt(gn);
    const float *grads = qkf_train_grads(e);
    double worst_all = 0.0;
    for (int k = 0; k < ps->n; k++) {
        const qkf_param *p = &ps->p[k];
        int64_t wi;
        if (p->is_buffer) {
            double err = max_abs_err(ps->data + p->offset, ref[k], p->numel, &wi), mx = 0.0;
            for (int64_t i = 0; i < p->numel; i++)
                mx = fmax(mx, fabs((double)ref[k][i]));
            cr_expect(err <= BN_TOL * mx, "%s: %s after the step: error %g at %lld (%g vs %g)",
                      name, p->name, err, (long long)wi, (double)ps->data[p->offset + wi],
                      (double)ref[k][wi]);
        } else {
            double err = max_abs_err(grads + p->offset, ref[k], p->numel, &wi);
            worst_all = fmax(worst_all, err);
            cr_expect(err <= GRAD_TOL * gn, "%s: grad %s: error %g at %lld (%g vs %g), norm %g",
                      name, p->name, err, (long long)wi, (double)grads[p->offset + wi],
                      (double)ref[k][wi], gn);
        }
        qkf_free(ref[k]);
    }
    cr_log_info("%s: loss %.6f, max grad error %.3g of the norm %.4g", name, loss,
                worst_all / gn, gn);
    qkf_free(ref);
    qkf_free(target);
    qkf_free(x);
    qkf_free(labels);
    qkf_free(loss_ref);
    qkf_train_free(e);
    qkf_model_free(&m);
}

Test(train, grad_cifar) { check_fixture("cifar", 0); }
Test(train, grad_cifar_qkca) { check_fixture("cifar_qkca", 0); }
Test(train, grad_cifar_tb_compat) { check_fixture("cifar_tb", QKF_TRAIN_TB_COMPAT); }
Test(train, grad_imagenet) { check_fixture("imagenet", 0); }
Test(train, grad_dvs) { check_fixture("dvs", 0); }
Test(train, grad_cifar10dvs) { check_fixture("cifar10dvs", 0); }
/* the other data gradients of 3x3 convolutions: Winograd F(2x2) and im2col + sgemm */
Test(train, grad_cifar_wino2) { check_fixture("cifar", QKF_TRAIN_WINO2); }
Test(train, grad_dvs_direct) { check_fixture("dvs", QKF_TRAIN_DIRECT); }

/* The command writes what the engine computes, under the official keys. */
Test(train, grad_command)
{
    char out[64], cmd[1024];
    snprintf(out, sizeof out, "/tmp/qkf-test-grad-%ld.h5", (long)getpid());
    snprintf(cmd, sizeof cmd,
             "%s grad --weights %s/grad_dvs.weights.h5 --input %s/grad_dvs.h5 --output %s "
             "--quiet",
             QKF_BINARY, QKF_FIXTURE_DIR, QKF_FIXTURE_DIR, out);
    cr_assert_eq(system(cmd), 0);
    float *a, *b;
    int nd;
    int64_t s[5];
    char ref[512];
    snprintf(ref, sizeof ref, "%s/grad_dvs.h5", QKF_FIXTURE_DIR);
    cr_assert_eq(qkf_h5_read_f32(out, "grad/stage2.0.ssa.q_conv.weight", &a, &nd, s), 0, "%s",
                 qkf_last_error());
    cr_expect_eq(nd, 3);
    int64_t n = s[0] * s[1] * s[2], wi;
    cr_assert_eq(qkf_h5_read_f32(ref, "grad/stage2.0.ssa.q_conv.weight", &b, &nd, s), 0);
    cr_expect_lt(max_abs_err(a, b, n, &wi), 1e-4);
    qkf_free(a);
    qkf_free(b);
    cr_expect_eq(qkf_h5_read_f32(out, "bn_after/patch_embed1.proj_bn.running_var", &a, &nd, s),
                 0);
    qkf_free(a);
    unlink(out);
    /* a batch that does not fit the model: one line, non-zero exit, no output file */
    snprintf(cmd, sizeof cmd,
             "%s grad --weights %s/grad_cifar.weights.h5 --input %s/grad_dvs.h5 --output %s "
             "2>/dev/null",
             QKF_BINARY, QKF_FIXTURE_DIR, QKF_FIXTURE_DIR, out);
    cr_expect_neq(system(cmd), 0);
    cr_expect_neq(access(out, F_OK), 0);
}

/* ---- kernels ------------------------------------------------------------------------------ */

static void fill(float *x, int64_t n, qkf_rng *r, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * (2.0f * qkf_rng_uniform(r) - 1.0f);
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

/* Fast conv forward/backward against the direct loops, and the weight gradient against central
 * differences of L = <R, conv(x)> (linear in W, so the difference is exact up to rounding). */
static void conv_case(int F, int cin, int h, int cout, int k, int stride)
{
    int pad = k / 2, ho = (h + 2 * pad - k) / stride + 1;
    int64_t nin = (int64_t)cin * F * h * h, nout = (int64_t)cout * F * ho * ho,
            nw = (int64_t)cout * cin * k * k;
    qkf_rng r;
    qkf_rng_seed(&r, 7);
    float *x = qkf_malloc(nin * 4), *w = qkf_malloc(nw * 4), *R = qkf_malloc(nout * 4);
    float *y = qkf_malloc(nout * 4), *y2 = qkf_malloc(nout * 4);
    float *dx = qkf_calloc(nin, 4), *dw = qkf_calloc(nw, 4), *dx2 = qkf_calloc(nin, 4),
          *dw2 = qkf_calloc(nw, 4);
    fill(x, nin, &r, 1.0f);
    fill(w, nw, &r, 0.5f);
    fill(R, nout, &r, 1.0f);
    int64_t colcap = qkf_conv_col_floats(cin, h, h, k, stride, pad) * 2;
    float *col = qkf_malloc(colcap * 4);
    qkf_conv_forward(y, x, w, F, cin, h, h, cout, k, stride, pad, col, colcap);
    qkf_conv_forward_ref(y2, x, w, F, cin, h, h, cout, k, stride, pad);
    int64_t wi;
    cr_expect_lt(max_abs_err(y, y2, nout, &wi), 1e-4, "conv forward k%d s%d", k, stride);
    qkf_conv_backward(dx, dw, R, x, w, F, cin, h, h, cout, k, stride, pad, col, colcap);
    qkf_conv_backward_ref(dx2, dw2, R, x, w, F, cin, h, h, cout, k, stride, pad);
    /* same sums in different orders: float rounding of ~F*h*h terms of size 1 */
    cr_expect_lt(max_abs_err(dx, dx2, nin, &wi), 1e-4, "conv din k%d s%d", k, stride);
    cr_expect_lt(max_abs_err(dw, dw2, nw, &wi), 1e-3, "conv dweight k%d s%d", k, stride);
    for (int t = 0; t < 5; t++) {
        int64_t i = (int64_t)(qkf_rng_u64(&r) % (uint64_t)nw);
        float keep = w[i], eps = 0.05f;
        w[i] = keep + eps;
        qkf_conv_forward_ref(y2, x, w, F, cin, h, h, cout, k, stride, pad);
        double lp = dot(R, y2, nout);
        w[i] = keep - eps;
        qkf_conv_forward_ref(y2, x, w, F, cin, h, h, cout, k, stride, pad);
        double lm = dot(R, y2, nout);
        w[i] = keep;
        double fd = (lp - lm) / (2.0 * (double)eps);
        cr_expect(fabs(fd - (double)dw[i]) <= 1e-3 * (1.0 + fabs(fd)), "conv FD dW[%lld]: %g vs %g",
                  (long long)i, fd, (double)dw[i]);
    }
    qkf_free(x), qkf_free(w), qkf_free(R), qkf_free(y), qkf_free(y2), qkf_free(dx);
    qkf_free(dw), qkf_free(dx2), qkf_free(dw2), qkf_free(col);
}

Test(train, conv_backward)
{
    conv_case(3, 4, 6, 5, 3, 1);
    conv_case(2, 4, 8, 6, 1, 2);
    conv_case(2, 3, 8, 4, 1, 4);
    conv_case(4, 6, 5, 3, 1, 1);
}

/* BatchNorm: the batch statistics, the running-statistics update and the backward (central
 * differences of L = <R, BN(x)> + 0.5 |BN(x)|^2, nonlinear in x, gamma, beta, computed in
 * double from float outputs; eps 1e-2 on inputs of size 1 gives a truncation error ~1e-4). */
Test(train, batchnorm)
{
    enum { C = 3, M = 40 };
    qkf_rng r;
    qkf_rng_seed(&r, 11);
    float x[C * M], y[C * M], R[C * M], dy[C * M], dx[C * M], bias[C], gamma[C], beta[C];
    float mean[C], invstd[C], rm[C] = {0.5f, 0.0f, -1.0f}, rv[C] = {1.0f, 2.0f, 0.5f};
    fill(x, C * M, &r, 2.0f);
    fill(R, C * M, &r, 1.0f);
    fill(bias, C, &r, 1.0f);
    fill(gamma, C, &r, 1.0f);
    fill(beta, C, &r, 1.0f);
    qkf_bn_train_forward(y, mean, invstd, x, C, M, bias, gamma, beta, rm, rv, M * 4);
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int i = 0; i < M; i++)
            s += (double)x[c * M + i] + (double)bias[c];
        double mu = s / M;
        for (int i = 0; i < M; i++) {
            double d = (double)x[c * M + i] + (double)bias[c] - mu;
            ss += d * d;
        }
        cr_expect_float_eq(mean[c] + bias[c], (float)mu, 1e-5); /* mean of x, without the bias */
        cr_expect_float_eq(invstd[c], (float)(1.0 / sqrt(ss / M + 1e-5)), 1e-4);
        /* running var uses the unbiased estimate over n_count = 4M values */
        double rv_want = (c == 0 ? 1.0 : c == 1 ? 2.0 : 0.5) * 0.9 + 0.1 * (ss / M) * (4.0 * M) /
                                                                     (4.0 * M - 1.0);
        cr_expect_float_eq(rv[c], (float)rv_want, 1e-5);
    }
    for (int i = 0; i < C * M; i++)
        dy[i] = R[i] + y[i];
    float dgamma[C] = {0}, dbeta[C] = {0}, dbias[C] = {0};
    qkf_bn_train_backward(dx, dgamma, dbeta, dbias, dy, x, mean, invstd, gamma, C, M);
    for (int c = 0; c < C; c++)
        cr_expect(fabsf(dbias[c]) < 1e-4f, "BN cancels the conv bias: %g", (double)dbias[c]);
#define LOSS()                                                                                     \
    (qkf_bn_train_forward(y, mean, invstd, x, C, M, bias, gamma, beta, NULL, NULL, M),            \
     dot(R, y, C * M) + 0.5 * dot(y, y, C * M))
    const double eps = 1e-2;
    float *vars[3] = {x, gamma, beta};
    const float *grads[3] = {dx, dgamma, dbeta};
    int sizes[3] = {C * M, C, C};
    for (int v = 0; v < 3; v++)
        for (int t = 0; t < 6; t++) {
            int i = (int)(qkf_rng_u64(&r) % (uint64_t)sizes[v]);
            float keep = vars[v][i];
            vars[v][i] = keep + (float)eps;
            double lp = LOSS();
            vars[v][i] = keep - (float)eps;
            double lm = LOSS();
            vars[v][i] = keep;
            double fd = (lp - lm) / (2 * eps);
            cr_expect(fabs(fd - (double)grads[v][i]) <= 2e-3 * (1.0 + fabs(fd)),
                      "BN FD var %d [%d]: %g vs %g", v, i, fd, (double)grads[v][i]);
        }
#undef LOSS
}

/* Readout and cross-entropy with label smoothing, against central differences. */
Test(train, readout_xent)
{
    enum { C = 5, T = 2, B = 3, N = 4, K = 4 };
    qkf_rng r;
    qkf_rng_seed(&r, 13);
    float x[C * T * B * N], w[K * C], bias[K], feat[B * C], logits[B * K], probs[B * K];
    float target[B * K], dlog[B * K], dx[C * T * B * N] = {0}, dw[K * C] = {0}, db[K] = {0};
    int32_t lab[B] = {1, 3, 0};
    fill(x, C * T * B * N, &r, 2.0f);
    fill(w, K * C, &r, 1.0f);
    fill(bias, K, &r, 0.5f);
    qkf_xent_targets(target, lab, B, K, 0.1f);
#define LOSS()                                                                                     \
    (qkf_readout_forward(logits, feat, x, w, bias, C, T, B, N, K),                                 \
     qkf_xent_forward(probs, logits, target, B, K))
    LOSS();
    qkf_xent_backward(dlog, probs, target, B, K, 1.0f);
    qkf_readout_backward(dx, dw, db, dlog, feat, w, C, T, B, N, K);
    float *vars[3] = {x, w, bias};
    const float *grads[3] = {dx, dw, db};
    int sizes[3] = {C * T * B * N, K * C, K};
    const double eps = 1e-2;
    for (int v = 0; v < 3; v++)
        for (int t = 0; t < 8; t++) {
            int i = (int)(qkf_rng_u64(&r) % (uint64_t)sizes[v]);
            float keep = vars[v][i];
            vars[v][i] = keep + (float)eps;
            double lp = LOSS();
            vars[v][i] = keep - (float)eps;
            double lm = LOSS();
            vars[v][i] = keep;
            double fd = (lp - lm) / (2 * eps);
            cr_expect(fabs(fd - (double)grads[v][i]) <= 1e-4 + 1e-3 * fabs(fd),
                      "readout/xent FD var %d [%d]: %g vs %g", v, i, fd, (double)grads[v][i]);
        }
#undef LOSS
    /* label smoothing: timm's (1-eps) * nll + eps * mean(-log p) */
    qkf_readout_forward(logits, feat, x, w, bias, C, T, B, N, K);
    double want = 0.0;
    for (int b = 0; b < B; b++) {
        double mx = -1e30, se = 0.0, sl = 0.0;
        for (int j = 0; j < K; j++)
            mx = fmax(mx, (double)logits[b * K + j]);
        for (int j = 0; j < K; j++)
            se += exp((double)logits[b * K + j] - mx);
        for (int j = 0; j < K; j++)
            sl += -((double)logits[b * K + j] - mx - log(se));
        want += 0.9 * -((double)logits[b * K + lab[b]] - mx - log(se)) + 0.1 * sl / K;
    }
    cr_expect(fabs(qkf_xent_forward(probs, logits, target, B, K) - want / B) < 1e-6);
}

/* SSA is bilinear in q, k, v: central differences on real-valued inputs. */
Test(train, ssa_backward)
{
    enum { C = 6, H = 2, F = 3, N = 5 };
    int64_t n = (int64_t)C * F * N;
    qkf_rng r;
    qkf_rng_seed(&r, 17);
    float q[C * F * N], k[C * F * N], v[C * F * N], R[C * F * N], y[C * F * N];
    float dq[C * F * N] = {0}, dk[C * F * N] = {0}, dv[C * F * N] = {0};
    float sf[4096], sb[4096];
    fill(q, n, &r, 1.0f);
    fill(k, n, &r, 1.0f);
    fill(v, n, &r, 1.0f);
    fill(R, n, &r, 1.0f);
    cr_assert_leq(qkf_ssa_backward_scratch_floats(C, H, omp_get_max_threads()), 4096);
    qkf_ssa_backward(dq, dk, dv, R, q, k, v, C, H, F, N, sb);
    float *vars[3] = {q, k, v};
    const float *grads[3] = {dq, dk, dv};
    for (int a = 0; a < 3; a++)
        for (int t = 0; t < 8; t++) {
            int i = (int)(qkf_rng_u64(&r) % (uint64_t)n);
            float keep = vars[a][i];
            vars[a][i] = keep + 0.05f;
            qkf_ssa_forward(y, q, k, v, C, H, F, N, sf);
            double lp = dot(R, y, n);
            vars[a][i] = keep - 0.05f;
            qkf_ssa_forward(y, q, k, v, C, H, F, N, sf);
            double lm = dot(R, y, n);
            vars[a][i] = keep;
            double fd = (lp - lm) / 0.1;
            cr_expect(fabs(fd - (double)grads[a][i]) <= 1e-4 + 1e-3 * fabs(fd),
                      "SSA FD input %d [%d]: %g vs %g", a, i, fd, (double)grads[a][i]);
        }
}

/* MaxPool: the gradient goes to the first maximum in scan order. */
Test(train, maxpool_backward)
{
    float in[16] = {1, 5, 2, 0, 3, 5, 1, 1, 0, 0, 9, 9, 4, 4, 4, 4}; /* 4x4 */
    float out[4], g[4] = {1, 2, 3, 4}, din[16];
    int32_t arg[4];
    qkf_maxpool3s2_train_forward(out, arg, in, 1, 4, 4);
    float ref[4];
    qkf_maxpool3s2_forward(ref, in, 1, 4, 4);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(out[i], ref[i]);
    cr_expect_eq(arg[0], 1);  /* window rows 0-1, cols 0-1: 5 at (0,1) before (1,1) */
    cr_expect_eq(arg[3], 10); /* rows 1-3, cols 1-3: 9 at (2,2) before (2,3) */
    qkf_maxpool3s2_backward(din, g, arg, 1, 4, 4);
    float s = 0;
    for (int i = 0; i < 16; i++)
        s += din[i];
    cr_expect_float_eq(s, 10.0f, 1e-6);
    cr_expect_float_eq(din[10], 4.0f + 3.0f * (arg[2] == 10) + 2.0f * (arg[1] == 10), 1e-6);
}

/* LIF BPTT by hand for one neuron over 3 steps (spec section 1). */
Test(train, lif_backward_by_hand)
{
    float x[3] = {2.4f, 0.2f, 1.8f}, s[3], h[3], ds[3] = {1.0f, 0.5f, -1.0f}, dx[3] = {0};
    qkf_lif_forward(s, x, 1, 3, 1, 1, 0, 1.0f, 0, NULL, h);
    /* h0 = 1.2 fires, v0 = 0; h1 = 0.1, v1 = 0.1; h2 = 0.95 */
    cr_expect_float_eq(h[0], 1.2f, 1e-6);
    cr_expect_float_eq(h[2], 0.95f, 1e-6);
    cr_expect_eq(s[0], 1.0f);
    cr_expect_eq(s[2], 0.0f);
    qkf_lif_backward(dx, ds, h, s, 1, 3, 1, 1, 0, 1.0f, 0, 4.0f);
    double g2 = -1.0 * (double)qkf_surrogate_grad(0.95f - 1.0f, 4.0f);
    double g1 = 0.5 * (double)qkf_surrogate_grad(0.1f - 1.0f, 4.0f) + g2 * 0.5 * (1 - 0);
    double g0 = 1.0 * (double)qkf_surrogate_grad(0.2f, 4.0f) + g1 * 0.5 * (1 - 1); /* reset */
    cr_expect_float_eq(dx[2], (float)(g2 / 2), 1e-6);
    cr_expect_float_eq(dx[1], (float)(g1 / 2), 1e-6);
    cr_expect_float_eq(dx[0], (float)(g0 / 2), 1e-6);
    /* sigmoid surrogate: alpha/4 at 0 */
    cr_expect_float_eq(qkf_surrogate_grad(0.0f, 4.0f), 1.0f, 1e-6);
}

/* AdamW: two steps against the formula of torch.optim.AdamW, in double. */
Test(train, adamw)
{
    float p[3] = {0.5f, -1.0f, 2.0f}, m[3] = {0}, v[3] = {0};
    const float g1[3] = {0.1f, -0.2f, 0.0f}, g2[3] = {-0.3f, 0.1f, 0.05f};
    double P[3] = {0.5, -1.0, 2.0}, Mm[3] = {0}, V[3] = {0};
    const double lr = 1e-2, wd = 0.05, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int step = 1; step <= 2; step++) {
        const float *g = step == 1 ? g1 : g2;
        qkf_adamw_update(p, g, m, v, 3, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd,
                         step);
        for (int i = 0; i < 3; i++) {
            P[i] *= 1 - lr * wd;
            double gi = (double)g[i];
            Mm[i] = b1 * Mm[i] + (1 - b1) * gi;
            V[i] = b2 * V[i] + (1 - b2) * gi * gi;
            double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
            P[i] -= lr / bc1 * Mm[i] / (sqrt(V[i]) / sqrt(bc2) + eps);
        }
    }
    for (int i = 0; i < 3; i++)
        cr_expect_float_eq(p[i], (float)P[i], 2e-6, "p[%d] %g vs %g", i, (double)p[i], P[i]);
}

/* ---- datasets ------------------------------------------------------------------------------ */

static char tdir[64];

static void tmp_setup(void)
{
    qkf_h5_quiet();
    tmpdir_make(tdir, sizeof tdir, "train");
}

static void tmp_teardown(void) { tmpdir_remove(tdir); }

static void put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8), b[3] = (uint8_t)v;
}

/* Writes train/t10k idx files (gzipped images, plain labels) of n 6x6 images into tdir. */
static void write_idx(int n, int bad)
{
    char path[256];
    for (int split = 0; split < 2; split++) {
        const char *pre = split ? "t10k" : "train";
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", tdir, pre);
        gzFile f = gzopen(path, "wb");
        uint8_t hdr[16];
        put_be32(hdr, bad == 1 ? 0x00000804u : 0x00000803u);
        put_be32(hdr + 4, (uint32_t)n), put_be32(hdr + 8, 6), put_be32(hdr + 12, 6);
        gzwrite(f, hdr, 16);
        int npix = bad == 2 ? n * 36 - 5 : n * 36; /* 2: truncated */
        for (int i = 0; i < npix; i++) {
            uint8_t v = (uint8_t)(i * 7 + split);
            gzwrite(f, &v, 1);
        }
        gzclose(f);
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", tdir, pre);
        FILE *lf = fopen(path, "wb");
        put_be32(hdr, 0x00000801u), put_be32(hdr + 4, (uint32_t)n);
        fwrite(hdr, 1, 8, lf);
        for (int i = 0; i < n; i++) {
            uint8_t l = (uint8_t)(bad == 3 && i == 5 ? 12 : i % 10);
            fwrite(&l, 1, 1, lf);
        }
        fclose(lf);
    }
}

Test(train, dataset_idx, .init = tmp_setup, .fini = tmp_teardown)
{
    char name[128];
    snprintf(name, sizeof name, "mnist:%s", tdir);
    qkf_dataset d;
    write_idx(20, 0);
    cr_assert_eq(qkf_dataset_load(name, 1, &d), 0, "%s", qkf_last_error());
    cr_expect_eq(d.n, 20);
    cr_expect_eq(d.c, 1);
    cr_expect_eq(d.h, 6);
    cr_expect_eq(d.pixels[37], (uint8_t)(37 * 7));
    cr_expect_eq(d.labels[13], 3);
    qkf_dataset_free(&d);
    cr_assert_eq(qkf_dataset_load(name, 0, &d), 0, "%s", qkf_last_error());
    cr_expect_eq(d.pixels[0], 1);
    qkf_dataset_free(&d);

    write_idx(20, 1);
    cr_expect_eq(qkf_dataset_load(name, 1, &d), -1);
    cr_expect(strstr(qkf_last_error(), "train-images-idx3-ubyte.gz") &&
                  strstr(qkf_last_error(), "magic") && strstr(qkf_last_error(), "byte 0"),
              "%s", qkf_last_error());
    write_idx(20, 2);
    cr_expect_eq(qkf_dataset_load(name, 1, &d), -1);
    cr_expect(strstr(qkf_last_error(), "truncated") && strstr(qkf_last_error(), "byte 731"),
              "%s", qkf_last_error());
    write_idx(20, 3);
    cr_expect_eq(qkf_dataset_load(name, 1, &d), -1);
    cr_expect(strstr(qkf_last_error(), "train-labels-idx1-ubyte") &&
                  strstr(qkf_last_error(), "label 12") && strstr(qkf_last_error(), "byte 13"),
              "%s", qkf_last_error());
    cr_expect_eq(qkf_dataset_load("no-such-dataset", 1, &d), -1);
}

Test(train, dataset_cifar_truncated, .init = tmp_setup, .fini = tmp_teardown)
{
    char path[256], name[128];
    snprintf(path, sizeof path, "%s/test_batch.bin", tdir);
    FILE *f = fopen(path, "wb");
    uint8_t rec[3073] = {0};
    for (int r = 0; r < 3; r++) {
        rec[0] = (uint8_t)(r + 1);
        rec[1] = (uint8_t)r;
        fwrite(rec, 1, sizeof rec, f);
    }
    fclose(f);
    snprintf(name, sizeof name, "cifar10:%s", tdir);
    qkf_dataset d;
    cr_assert_eq(qkf_dataset_load(name, 0, &d), 0, "%s", qkf_last_error());
    cr_expect_eq(d.n, 3);
    cr_expect_eq(d.labels[2], 3);
    cr_expect_eq(d.pixels[3072 * 2], 2); /* first red pixel of record 2 */
    qkf_dataset_free(&d);
    cr_assert_eq(truncate(path, 3073 * 2 + 100), 0);
    cr_expect_eq(qkf_dataset_load(name, 0, &d), -1);
    cr_expect(strstr(qkf_last_error(), "test_batch.bin") && strstr(qkf_last_error(), "6146"),
              "%s", qkf_last_error());
}

/* The loader: batches depend only on (seed, epoch, index), so starting at batch k gives what
 * the k-th batch of a full pass gave; normalisation and the crop's zero padding. */
Test(train, loader_deterministic, .init = tmp_setup, .fini = tmp_teardown)
{
    char name[128];
    snprintf(name, sizeof name, "mnist:%s", tdir);
    write_idx(50, 0);
    qkf_dataset d;
    cr_assert_eq(qkf_dataset_load(name, 1, &d), 0, "%s", qkf_last_error());
    qkf_loader_cfg c;
    memset(&c, 0, sizeof c);
    c.d = &d, c.batch = 8, c.shuffle = 1, c.crop_pad = 2, c.flip = 1, c.drop_last = 1;
    c.seed = 5, c.n_norm = 1, c.mean[0] = 0.5f, c.std[0] = 0.25f;
    cr_expect_eq(qkf_loader_batches(&c), 6);
    float all[6][8 * 36];
    int32_t labs[6][8];
    qkf_loader *l = qkf_loader_start(&c, 3, 0);
    const float *x;
    const int32_t *lab;
    int B, k = 0;
    while (qkf_loader_next(l, &x, &lab, &B)) {
        cr_assert_eq(B, 8);
        memcpy(all[k], x, sizeof all[k]);
        memcpy(labs[k], lab, sizeof labs[k]);
        k++;
    }
    qkf_loader_stop(l);
    cr_expect_eq(k, 6);
    l = qkf_loader_start(&c, 3, 4);
    cr_assert_eq(qkf_loader_next(l, &x, &lab, &B), 1);
    cr_expect_eq(memcmp(x, all[4], sizeof all[4]), 0);
    cr_expect_eq(memcmp(lab, labs[4], sizeof labs[4]), 0);
    qkf_loader_stop(l);
    /* without augmentation: pixel/255 normalised, in order */
    c.shuffle = 0, c.crop_pad = 0, c.flip = 0;
    l = qkf_loader_start(&c, 0, 0);
    cr_assert_eq(qkf_loader_next(l, &x, &lab, &B), 1);
    cr_expect_float_eq(x[37], ((float)(uint8_t)(37 * 7) / 255.0f - 0.5f) / 0.25f, 1e-5);
    cr_expect_eq(lab[3], 3);
    qkf_loader_stop(l);
    qkf_dataset_free(&d);
}

/* ---- qkf train ------------------------------------------------------------------------------ */

#define TINY                                                                                       \
    "--img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 --num-heads 2 --mlp-ratio 2 " \
    "--depths 3 --T 2 --batch 8 --epochs 3 --warmup-epochs 0.5 --mixup 0.4 --clip 1 --threads 1 " \
    "--log-every 1 --eval-batch 16 --quiet"

/* A run stopped after 5 steps and resumed reproduces the uninterrupted run: the same loss at
 * every step and bit-identical final weights. Then eval and the bad-input errors. */
Test(train, resume_is_exact, .init = tmp_setup, .fini = tmp_teardown, .timeout = 120)
{
    char data[256];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    write_quadrant_dataset(data, 48, 1);
    cr_assert_eq(run_cmd("%s train " TINY " --data h5:%s --out %s/a.h5 --metrics %s/a.jsonl",
                         QKF_BINARY, data, tdir, tdir),
                 0);
    cr_assert_eq(run_cmd("%s train " TINY " --data h5:%s --out %s/b.h5 --metrics %s/b.jsonl "
                         "--max-steps 5",
                         QKF_BINARY, data, tdir, tdir),
                 0);
    /* the options come back from the checkpoint */
    cr_assert_eq(run_cmd("%s train --out %s/b.h5 --metrics %s/b.jsonl --resume %s/b.h5 --threads 1 "
                         "--log-every 1 --eval-batch 16 --quiet",
                         QKF_BINARY, tdir, tdir, tdir),
                 0);
    double la[64], lb[64];
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/a.jsonl", tdir);
    snprintf(pb, sizeof pb, "%s/b.jsonl", tdir);
    int na = read_losses(pa, la, 64), nb = read_losses(pb, lb, 64);
    cr_expect_eq(na, 18); /* 3 epochs of 48/8 steps */
    cr_expect_eq(nb, na);
    for (int i = 0; i < na && i < nb; i++)
        cr_expect_eq(la[i], lb[i], "step %d: loss %.6f uninterrupted, %.6f resumed", i + 1, la[i],
                     lb[i]);
    qkf_model ma, mb;
    snprintf(pa, sizeof pa, "%s/a.h5", tdir);
    snprintf(pb, sizeof pb, "%s/b.h5", tdir);
    cr_assert_eq(qkf_ckpt_load(pa, &ma), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_ckpt_load(pb, &mb), 0, "%s", qkf_last_error());
    cr_expect_eq(memcmp(ma.params.data, mb.params.data, (size_t)ma.params.total * 4), 0);
    cr_expect_eq(ma.n_norm, 1);
    cr_expect(ma.input_std[0] > 0.0f);
    qkf_model_free(&ma);
    qkf_model_free(&mb);
    /* eval prints the accuracy line */
    cr_expect_eq(run_cmd("%s eval --weights %s --data h5:%s --limit 20 2>/dev/null | grep -q "
                         "'^accuracy: [01]\\.[0-9]*$'",
                         QKF_BINARY, pa, data),
                 0);
    cr_expect_eq(run_cmd("%s eval --weights %s --data h5:%s --mode event --limit 20 2>/dev/null | "
                         "grep -q '^accuracy: [01]\\.[0-9]*$'",
                         QKF_BINARY, pa, data),
                 0);
    /* resuming with another model configuration, a dataset that does not fit: one line, exit 1,
     * and the checkpoint untouched */
    cr_expect_eq(run_cmd("%s train --data h5:%s --resume %s --out %s --embed-dims 32 --quiet "
                         "2>/dev/null",
                         QKF_BINARY, data, pb, pb),
                 1);
    cr_expect_eq(
        run_cmd("%s train --data h5:%s --out %s/c.h5 --quiet 2>/dev/null", QKF_BINARY, data, tdir),
        1);
    cr_assert_eq(qkf_ckpt_load(pb, &mb), 0, "%s", qkf_last_error());
    qkf_model_free(&mb);
}

/* Config files: "name value", "name = value", "name: value"; the name ends at the first ':' or
 * '=' and the value is kept whole, so a dataset "h5:FILE" (which has a ':' of its own) can be
 * written in the file. Errors name the file and line. */
static int read_cfg(const char *text, qkf_trainer_opts *o)
{
    char path[128];
    snprintf(path, sizeof path, "%s/run.cfg", tdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    qkf_trainer_opts_init(o);
    return qkf_trainer_read_config(path, o);
}

Test(train, config_file_values, .init = tmp_setup, .fini = tmp_teardown)
{
    qkf_trainer_opts o;
    cr_assert_eq(read_cfg("# a run\n"
                          "data h5:/tmp/a b.h5\n",
                          &o),
                 -1); /* one word of value */
    cr_expect(strstr(qkf_last_error(), "run.cfg:2: expected 'name value'") != NULL, "%s",
              qkf_last_error());
    cr_expect(strstr(qkf_last_error(), "'b.h5'") != NULL, "%s", qkf_last_error());
    const char *forms[] = {"data h5:/tmp/train.h5,/tmp/test.h5\n",
                           "data = h5:/tmp/train.h5,/tmp/test.h5\n",
                           "data=h5:/tmp/train.h5,/tmp/test.h5\n",
                           "data: h5:/tmp/train.h5,/tmp/test.h5 # test split too\n",
                           "  data:h5:/tmp/train.h5,/tmp/test.h5\r\n",
                           "--data h5:/tmp/train.h5,/tmp/test.h5\n"};
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        cr_assert_eq(read_cfg(forms[i], &o), 0, "%s: %s", forms[i], qkf_last_error());
        cr_expect_str_eq(o.data, "h5:/tmp/train.h5,/tmp/test.h5", "%s", forms[i]);
    }
    cr_assert_eq(read_cfg("epochs: 7\nlr = 0.002\nflip\n\n   \nout run.h5\nbatch=4\n", &o), 0,
                 "%s", qkf_last_error());
    cr_expect_eq(o.epochs, 7);
    cr_expect_eq(o.batch, 4);
    cr_expect_eq(o.flip, 1);
    cr_expect_str_eq(o.out, "run.h5");
    /* errors: the line, the option */
    cr_assert_eq(read_cfg("epochs 3\nepochs\n", &o), -1);
    cr_expect(strstr(qkf_last_error(), "run.cfg:2: option --epochs needs a value") != NULL, "%s",
              qkf_last_error());
    cr_assert_eq(read_cfg("flip: yes\n", &o), -1);
    cr_expect(strstr(qkf_last_error(), "run.cfg:1: option 'flip' takes no value") != NULL, "%s",
              qkf_last_error());
    cr_assert_eq(read_cfg("= 3\n", &o), -1);
    cr_expect(strstr(qkf_last_error(), "run.cfg:1: expected 'name value'") != NULL, "%s",
              qkf_last_error());
    cr_assert_eq(read_cfg("epoch 3\n", &o), -1);
    cr_expect(strstr(qkf_last_error(), "run.cfg:1: unknown option 'epoch'") != NULL, "%s",
              qkf_last_error());
}

/* Streaming a split a block at a time (qkf sim --data): every block equals those records of a
 * whole load, for a gzipped idx pair (images gzipped, labels plain), an HDF5 file and its
 * scaling, and the Debian Fashion-MNIST files when installed; a truncated gzip file or a bad
 * label is found whatever range is streamed. */
static void check_stream(const char *name, int64_t lo, int64_t hi, int64_t k, float mx)
{
    qkf_dataset whole, blk;
    memset(&blk, 0, sizeof blk);
    cr_assert_eq(qkf_dataset_load(name, 0, &whole), 0, "%s", qkf_last_error());
    int64_t per = (int64_t)whole.c * whole.h * whole.w * (whole.t > 0 ? whole.t : 1);
    qkf_dataset_stream *s = qkf_dataset_stream_open(name, 0, lo, hi, mx);
    cr_assert_not_null(s, "%s", qkf_last_error());
    for (int64_t pos = lo; pos < hi; pos += k) {
        int64_t n = hi - pos < k ? hi - pos : k;
        cr_assert_eq(qkf_dataset_stream_next(s, n, &blk), n, "%s", qkf_last_error());
        cr_assert_eq(blk.n, n);
        cr_expect_eq(blk.total, whole.n);
        cr_expect_eq(blk.index[0], pos);
        cr_assert_eq(memcmp(blk.pixels, whole.pixels + pos * per, (size_t)(n * per)), 0,
                     "%s: block at %lld", name, (long long)pos);
        cr_assert_eq(memcmp(blk.labels, whole.labels + pos, (size_t)n * sizeof(int32_t)), 0);
    }
    cr_expect_eq(qkf_dataset_stream_next(s, 1, &blk), 0); /* nothing left */
    qkf_dataset_stream_close(s);
    qkf_dataset_free(&blk);
    qkf_dataset_free(&whole);
}

Test(train, dataset_stream, .init = tmp_setup, .fini = tmp_teardown, .timeout = 60)
{
    char name[300];
    snprintf(name, sizeof name, "mnist:%s", tdir);
    write_idx(20, 0);
    check_stream(name, 0, 20, 3, 255.0f);
    check_stream(name, 7, 12, 2, 255.0f);
    check_stream(name, 19, 20, 8, 255.0f);
    qkf_dataset blk;
    memset(&blk, 0, sizeof blk);
    write_idx(20, 2); /* truncated: found on the last block even of a range that stops early */
    qkf_dataset_stream *s = qkf_dataset_stream_open(name, 0, 0, 4, 255.0f);
    cr_assert_not_null(s, "%s", qkf_last_error());
    cr_expect_eq(qkf_dataset_stream_next(s, 2, &blk), 2, "%s", qkf_last_error());
    cr_expect_eq(qkf_dataset_stream_next(s, 2, &blk), -1);
    cr_expect(strstr(qkf_last_error(), "t10k-images-idx3-ubyte.gz") &&
                  strstr(qkf_last_error(), "truncated"),
              "%s", qkf_last_error());
    cr_expect_eq(blk.n, 0);
    qkf_dataset_stream_close(s);
    write_idx(20, 3); /* label 12 of sample 5: its byte in the labels file */
    cr_assert_not_null(s = qkf_dataset_stream_open(name, 1, 4, 8, 255.0f));
    cr_expect_eq(qkf_dataset_stream_next(s, 4, &blk), -1);
    cr_expect(strstr(qkf_last_error(), "label 12") && strstr(qkf_last_error(), "byte 13"), "%s",
              qkf_last_error());
    qkf_dataset_stream_close(s);
    cr_expect_null(qkf_dataset_stream_open(name, 0, 5, 21, 255.0f)); /* beyond the split */

    /* HDF5 images stored as floats in [0, 1]: scaled by 255 as the whole split is */
    char path[256];
    snprintf(path, sizeof path, "%s/s.h5", tdir);
    float img[9 * 16];
    int64_t lab[9], ish[4] = {9, 1, 4, 4}, lsh[1] = {9};
    for (int i = 0; i < 9 * 16; i++)
        img[i] = (float)((i * 37) % 101) / 100.0f;
    for (int i = 0; i < 9; i++)
        lab[i] = i % 3;
    qkf_h5out *o = qkf_h5out_open(path);
    cr_assert_not_null(o);
    cr_assert_eq(qkf_h5out_f32(o, "images", 4, ish, img), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, lsh, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0, "%s", qkf_last_error());
    snprintf(name, sizeof name, "h5:%s", path);
    float mx = 0;
    cr_assert_eq(qkf_dataset_max(name, 0, 0, 9, &mx), 0);
    check_stream(name, 2, 9, 4, mx);

    if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) == 0)
        check_stream("fashion-mnist", 9000, 10000, 96, 255.0f);
}
