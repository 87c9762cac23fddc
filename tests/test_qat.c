/* Quantisation-aware training (sim/train.h qkf_train_set_hw, qkf train --hw): the forward is the
 * chip's integer arithmetic, spike for spike and logit for logit the dense integer engine's on
 * the model quantised from the current float weights (before and after an update); the
 * straight-through backward against finite differences (the head, after every spike) and against
 * the float training engine where no rounding is active; the command line's refusals and the
 * --resume check of the recorded profile. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../io/io.h"
#include "../kernels/backward.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense_int.h"
#include "../sim/train.h"
#include "../tools/app/trainer.h"
#include "util.h"

typedef struct {
    qkf_model m;
    qkf_hw_arith a;
    float *x, *target;
    int B, K;
} fixture;

static void load_fixture(fixture *fx, const char *model, const char *prof)
{
    char wpath[512], ipath[512];
    memset(fx, 0, sizeof *fx);
    qkf_h5_quiet();
    qkf_set_threads(2);
    snprintf(wpath, sizeof wpath, "%s/%s.weights.h5", QKF_FIXTURE_DIR, model);
    snprintf(ipath, sizeof ipath, "%s/%s_int_%s.h5", QKF_FIXTURE_DIR, model, prof);
    cr_assert_eq(qkf_ckpt_load(wpath, &fx->m), 0, "%s", qkf_last_error());
    int64_t *av, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(ipath, "arith", &av, &nd, sh), 0, "%s", qkf_last_error());
    fixture_arith(av, &fx->a);
    qkf_free(av);
    cr_assert_eq(qkf_h5_read_f32(ipath, "input", &fx->x, &nd, sh), 0, "%s", qkf_last_error());
    fx->B = (int)sh[0];
    fx->K = fx->m.cfg.num_classes;
    int32_t lab[16];
    for (int b = 0; b < fx->B; b++)
        lab[b] = (b * 3 + 1) % fx->K;
    fx->target = qkf_malloc((size_t)fx->B * fx->K * sizeof(float));
    qkf_xent_targets(fx->target, lab, fx->B, fx->K, 0.1f);
}

static void free_fixture(fixture *fx)
{
    qkf_model_free(&fx->m);
    qkf_free(fx->x);
    qkf_free(fx->target);
}

/* The QAT engine's last forward against the dense integer engine (its plain integer GEMMs, not
 * the BLAS path the QAT forward runs) on qkf_quantize of the model as it is now: every spike of
 * every LIF layer and every logit equal. */
static void check_forward(fixture *fx, qkf_train *e, const float *logits)
{
    qkf_qmodel q;
    cr_assert_eq(qkf_quantize(&fx->m, &fx->a, "fixture", NULL, &q), 0, "%s", qkf_last_error());
    qkf_dense_int *d = qkf_dense_int_create(&q, fx->B, QKF_DENSE_INT_PLAIN);
    float *lf = qkf_malloc((size_t)fx->B * fx->K * sizeof(float));
    cr_assert_eq(qkf_dense_int_forward(d, fx->x, fx->B, lf, NULL, NULL), 0, "%s",
                 qkf_last_error());
    for (int j = 0; j < fx->B * fx->K; j++)
        cr_assert_eq(logits[j], lf[j], "logit %d: QAT %g, dense integer %g", j, (double)logits[j],
                     (double)lf[j]);
    const qkf_graph *g = qkf_train_graph(e);
    int64_t spikes = 0;
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_op *op = &g->ops[g->lif_ops[l]];
        const qkf_tensor *t = &g->tensors[op->out];
        int64_t n = (int64_t)t->c * g->cfg.T * fx->B * t->h * t->w;
        const uint8_t *s = qkf_train_spikes(e, op->out);
        const int32_t *r = qkf_dense_int_tensor(d, op->out);
        cr_assert_not_null(s);
        for (int64_t j = 0; j < n; j++) {
            cr_assert_eq((int32_t)s[j], r[j], "%s: spike %lld: QAT %d, dense integer %d",
                         op->name, (long long)j, s[j], r[j]);
            spikes += r[j];
        }
    }
    cr_assert_gt(spikes, 0);
    qkf_free(lf);
    qkf_dense_int_free(d);
    qkf_qmodel_free(&q);
}

/* Forward = the dense integer engine on the current weights, before and after AdamW updates
 * that move the integer weights. */
static void forward_case(const char *model, const char *prof)
{
    fixture fx;
    load_fixture(&fx, model, prof);
    qkf_train *e = qkf_train_create(&fx.m, fx.B, 0);
    cr_assert_not_null(e, "%s", qkf_last_error());
    cr_assert_eq(qkf_train_set_hw(e, &fx.a, "fixture", NULL), 0, "%s", qkf_last_error());
    qkf_optim_cfg oc;
    qkf_optim_defaults(&oc);
    oc.lr = 3e-3f, oc.warmup_steps = 0, oc.total_steps = 0;
    qkf_optim opt;
    qkf_optim_init(&opt, &fx.m.params, &oc);
    qkf_qmodel q0;
    cr_assert_eq(qkf_quantize(&fx.m, &fx.a, "fixture", NULL, &q0), 0, "%s", qkf_last_error());
    for (int it = 0; it < 3; it++) {
        double loss;
        qkf_train_zero_grad(e);
        cr_assert_eq(qkf_train_loss_backward(e, fx.x, fx.B, fx.target, &loss, NULL), 0, "%s",
                     qkf_last_error());
        cr_assert(isfinite(loss));
        const float *logits;
        cr_assert_eq(qkf_train_forward(e, fx.x, fx.B, 0, &logits), 0, "%s", qkf_last_error());
        check_forward(&fx, e, logits);
        const qkf_qmodel *qm = qkf_train_qmodel(e);
        cr_assert_not_null(qm);
        cr_assert_str_eq(qm->hw_name, "fixture");
        qkf_optim_step(&opt, &fx.m.params, qkf_train_grads(e));
    }
    /* the updates moved integer weights (so the comparisons above saw different models) */
    qkf_qmodel q1;
    cr_assert_eq(qkf_quantize(&fx.m, &fx.a, "fixture", NULL, &q1), 0, "%s", qkf_last_error());
    int64_t moved = 0;
    for (int i = 0; i < q0.g.n_ops; i++)
        if (q0.g.ops[i].kind == QKF_OP_CONV) {
            const qkf_op *op = &q0.g.ops[i];
            int64_t n = (int64_t)op->cout * op->cin * op->k * op->k;
            for (int64_t j = 0; j < n; j++)
                moved += q0.ops[i].w[j] != q1.ops[i].w[j];
        }
    cr_assert_gt(moved, 0);
    qkf_qmodel_free(&q0);
    qkf_qmodel_free(&q1);
    qkf_optim_free(&opt);
    qkf_train_free(e);
    free_fixture(&fx);
}

Test(qat, forward_is_dense_int_loihi, .timeout = 120) { forward_case("cifar_small", "loihi"); }
Test(qat, forward_is_dense_int_speck, .timeout = 120) { forward_case("cifar_small", "speck"); }
Test(qat, forward_is_dense_int_qkca, .timeout = 120) { forward_case("cifar_qkca", "loihi"); }
Test(qat, forward_is_dense_int_frames, .timeout = 120) { forward_case("dvs128_small", "speck"); }

/* The straight-through head: the loss as a function of the head's float weights and bias moves
 * only the readout (every spike stays), so central differences with steps far above the
 * 16-bit grid match the analytic gradient. */
Test(qat, head_finite_differences, .timeout = 120)
{
    fixture fx;
    load_fixture(&fx, "imagenet_small", "wide16");
    qkf_train *e = qkf_train_create(&fx.m, fx.B, 0);
    cr_assert_eq(qkf_train_set_hw(e, &fx.a, "wide16", NULL), 0, "%s", qkf_last_error());
    double loss;
    qkf_train_zero_grad(e);
    cr_assert_eq(qkf_train_loss_backward(e, fx.x, fx.B, fx.target, &loss, NULL), 0);
    const qkf_params *ps = &fx.m.params;
    float *grad = qkf_malloc((size_t)ps->total * sizeof(float));
    memcpy(grad, qkf_train_grads(e), (size_t)ps->total * sizeof(float));
    const char *names[2] = {"head.weight", "head.bias"};
    int checked = 0;
    for (int pi = 0; pi < 2; pi++) {
        const qkf_param *p = NULL;
        for (int k = 0; k < ps->n; k++)
            if (!strcmp(ps->p[k].name, names[pi]))
                p = &ps->p[k];
        cr_assert_not_null(p, "%s", names[pi]);
        float *w = ps->data + p->offset;
        float wmax = 0.0f;
        for (int64_t j = 0; j < p->numel; j++)
            wmax = fabsf(w[j]) > wmax ? fabsf(w[j]) : wmax;
        for (int64_t j = 1; j < p->numel; j += p->numel / 7 + 1) {
            if (fabsf(w[j]) > 0.9f * wmax) /* the largest weight sets the head's scale */
                continue;
            float w0 = w[j], h = 2e-3f * wmax;
            double lp, lm;
            w[j] = w0 + h;
            cr_assert_eq(qkf_train_loss_backward(e, fx.x, fx.B, fx.target, &lp, NULL), 0);
            w[j] = w0 - h;
            cr_assert_eq(qkf_train_loss_backward(e, fx.x, fx.B, fx.target, &lm, NULL), 0);
            w[j] = w0;
            double fd = (lp - lm) / (2.0 * (double)h), an = (double)grad[p->offset + j];
            cr_assert(fabs(fd - an) <= 0.02 * fabs(an) + 2e-4, "%s[%lld]: analytic %g, finite "
                      "differences %g",
                      names[pi], (long long)j, an, fd);
            checked++;
        }
    }
    cr_assert_geq(checked, 8);
    qkf_free(grad);
    qkf_train_free(e);
    free_fixture(&fx);
}

/* Where no rounding is active, the straight-through backward is the float model's: the float
 * training engine's BatchNorm normalises with the batch statistics, so the QAT model gets those
 * as its running statistics (recovered from one momentum update of zeroed statistics); with
 * 16-bit weights per channel and 32-bit registers every spike of the two forwards is the same,
 * and the gradients that depend only on what lies after the last convolution (its BatchNorm's
 * gamma and beta, the head) agree. (Further up the float gradient carries the batch-statistics
 * terms of every BatchNorm backward, which a frozen BatchNorm does not have.) */
#define MODEL "dvs128_small"
Test(qat, matches_float_without_rounding, .timeout = 120)
{
    fixture fx;
    /* frames (event counts: no input rounding) and the wide16 arithmetic (16-bit weights per
     * channel, 32-bit registers) */
    load_fixture(&fx, MODEL, "speck");
    {
        int64_t *av, sh[5];
        int nd;
        cr_assert_eq(qkf_h5_read_i64(QKF_FIXTURE_DIR "/imagenet_small_int_wide16.h5", "arith", &av,
                                     &nd, sh),
                     0);
        fixture_arith(av, &fx.a);
        qkf_free(av);
    }
    qkf_model mf; /* the float engine's copy */
    cr_assert_eq(qkf_ckpt_load(QKF_FIXTURE_DIR "/" MODEL ".weights.h5", &mf), 0);
    qkf_params *ps = &fx.m.params, *pf = &mf.params;
    for (int k = 0; k < pf->n; k++) { /* zero the running statistics of the probe */
        const char *nm = pf->p[k].name;
        size_t L = strlen(nm);
        if (L > 13 && (!strcmp(nm + L - 13, ".running_mean") || !strcmp(nm + L - 12, ".running_var")))
            memset(pf->data + pf->p[k].offset, 0, (size_t)pf->p[k].numel * sizeof(float));
    }
    qkf_train *ef = qkf_train_create(&mf, fx.B, 0);
    cr_assert_not_null(ef);
    cr_assert_eq(qkf_train_forward(ef, fx.x, fx.B, 1, NULL), 0, "%s", qkf_last_error());
    const qkf_graph *g = qkf_train_graph(ef);
    float *P = ps->data, *PF = pf->data;
    int last = -1;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind != QKF_OP_CONV)
            continue;
        last = i;
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t hc = (x->h - 1) / op->stride + 1, wc = (x->w - 1) / op->stride + 1;
        double n = (double)g->cfg.T * fx.B * hc * wc;
        for (int c = 0; c < op->cout; c++) { /* mean + bias and the biased variance */
            int64_t om = pf->p[op->p_bn_mean].offset + c, ov = pf->p[op->p_bn_var].offset + c;
            P[om] = PF[om] / QKF_BN_MOMENTUM;
            P[ov] = (float)((double)PF[ov] / (double)QKF_BN_MOMENTUM * (n - 1.0) / n);
            PF[om] = P[om], PF[ov] = P[ov];
        }
    }
    double lf, lq;
    qkf_train_zero_grad(ef);
    cr_assert_eq(qkf_train_loss_backward(ef, fx.x, fx.B, fx.target, &lf, NULL), 0);
    qkf_train *eq = qkf_train_create(&fx.m, fx.B, 0);
    cr_assert_eq(qkf_train_set_hw(eq, &fx.a, "wide16", NULL), 0, "%s", qkf_last_error());
    qkf_train_zero_grad(eq);
    cr_assert_eq(qkf_train_loss_backward(eq, fx.x, fx.B, fx.target, &lq, NULL), 0);
    int64_t spikes = 0, flips = 0;
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_op *op = &g->ops[g->lif_ops[l]];
        const qkf_tensor *t = &g->tensors[op->out];
        int64_t n = (int64_t)t->c * g->cfg.T * fx.B * t->h * t->w;
        const uint8_t *a = qkf_train_spikes(ef, op->out), *b = qkf_train_spikes(eq, op->out);
        for (int64_t j = 0; j < n; j++) {
            flips += a[j] != b[j];
            spikes += a[j];
        }
    }
    /* 16-bit rounding flips the few spikes whose membrane lies within ~1e-4 of the threshold,
     * and the network amplifies them layer by layer (1 of 8192 in the third layer, ~7% in the
     * last): the forwards are close, not equal, so the gradients are compared as vectors */
    cr_assert_gt(spikes, 0);
    cr_assert(flips < spikes / 10, "%lld of %lld spikes flipped", (long long)flips,
              (long long)spikes);
    cr_assert(fabs(lf - lq) < 0.03 * fabs(lf), "loss: float %g, integer %g", lf, lq);
    const qkf_op *cv = &g->ops[last], *rd = &g->ops[g->n_ops - 1];
    cr_assert_eq(rd->kind, QKF_OP_READOUT);
    const int idx[4] = {cv->p_bn_w, cv->p_bn_b, rd->p_head_w, rd->p_head_b};
    const float *gf = qkf_train_grads(ef), *gq = qkf_train_grads(eq);
    for (int k = 0; k < 4; k++) {
        const qkf_param *p = &ps->p[idx[k]];
        double mx = 0.0;
        for (int64_t j = 0; j < p->numel; j++)
            mx = fabs((double)gf[p->offset + j]) > mx ? fabs((double)gf[p->offset + j]) : mx;
        cr_assert_gt(mx, 0.0, "%s: no gradient", p->name);
        double ff = 0.0, qq = 0.0, fq = 0.0;
        for (int64_t j = 0; j < p->numel; j++) {
            double u = (double)gf[p->offset + j], v = (double)gq[p->offset + j];
            ff += u * u, qq += v * v, fq += u * v;
        }
        double cosine = fq / sqrt(ff * qq), ratio = sqrt(qq / ff);
        cr_assert(cosine > 0.95 && ratio > 0.85 && ratio < 1.15,
                  "%s: the straight-through gradient against the float one: cosine %.4f, norm "
                  "ratio %.4f",
                  p->name, cosine, ratio);
    }
    qkf_train_free(ef);
    qkf_train_free(eq);
    qkf_model_free(&mf);
    free_fixture(&fx);
}

/* ---- distillation and the validation split --------------------------------------------------- */

/* qkf_kd_loss's gradient against central differences of its loss (double inside; z moved by
 * h = 1e-2, so the O(h^2) truncation with |third derivative| <~ T^-1 stays below ~1e-4), and its
 * limits: alpha = 0 is the soft-target cross-entropy of kernels/backward.h, a student equal to its
 * teacher under alpha = 1 has zero loss and gradient, the loss weight scales the gradient. */
Test(qat, kd_loss_central_differences)
{
    enum { B = 3, K = 7 };
    float z[B * K], tz[B * K], tg[B * K], d[B * K], d2[B * K], probs[B * K];
    qkf_rng r;
    qkf_rng_seed(&r, 11);
    for (int j = 0; j < B * K; j++) {
        z[j] = 2.0f * (float)qkf_rng_normal(&r);
        tz[j] = 3.0f * (float)qkf_rng_normal(&r);
    }
    int32_t lab[B] = {1, 6, 3};
    qkf_xent_targets(tg, lab, B, K, 0.1f);
    const float alphas[3] = {0.3f, 0.5f, 1.0f}, temps[3] = {1.0f, 2.0f, 4.0f};
    for (int c = 0; c < 3; c++) {
        int correct = -1;
        qkf_kd_loss(d, z, tg, tz, B, K, alphas[c], temps[c], 1.0f, &correct);
        cr_assert(correct >= 0 && correct <= B);
        double worst = 0.0;
        for (int j = 0; j < B * K; j++) {
            float zp[B * K], zm[B * K];
            memcpy(zp, z, sizeof z);
            memcpy(zm, z, sizeof z);
            const float h = 1e-2f;
            zp[j] += h, zm[j] -= h;
            double hp = (double)zp[j] - (double)z[j], hm = (double)z[j] - (double)zm[j];
            double lp = qkf_kd_loss(d2, zp, tg, tz, B, K, alphas[c], temps[c], 1.0f, NULL);
            double lm = qkf_kd_loss(d2, zm, tg, tz, B, K, alphas[c], temps[c], 1.0f, NULL);
            double fd = (lp - lm) / (hp + hm);
            double err = fabs(fd - (double)d[j]);
            worst = err > worst ? err : worst;
            cr_assert_lt(err, 2e-4, "alpha %g T %g: dz[%d] = %g, central difference %g",
                         (double)alphas[c], (double)temps[c], j, (double)d[j], fd);
        }
        cr_assert_gt(worst, 0.0);
    }
    /* alpha 0: the cross-entropy kernel's loss and gradient */
    double l0 = qkf_kd_loss(d, z, tg, tz, B, K, 0.0f, 2.0f, 1.0f, NULL);
    double lx = qkf_xent_forward(probs, z, tg, B, K);
    qkf_xent_backward(d2, probs, tg, B, K, 1.0f);
    cr_assert_lt(fabs(l0 - lx), 1e-5 * fabs(lx), "%g vs %g", l0, lx);
    for (int j = 0; j < B * K; j++)
        cr_assert_lt(fabs((double)d[j] - (double)d2[j]), 1e-6, "%d: %g vs %g", j, (double)d[j],
                     (double)d2[j]);
    /* a student equal to its teacher (alpha 1): nothing to learn */
    double l1 = qkf_kd_loss(d, tz, tg, tz, B, K, 1.0f, 3.0f, 1.0f, NULL);
    cr_assert_lt(fabs(l1), 1e-9);
    for (int j = 0; j < B * K; j++)
        cr_assert_lt(fabs((double)d[j]), 1e-7);
    /* the loss weight (a rank's share under mpirun) scales the gradient */
    qkf_kd_loss(d, z, tg, tz, B, K, 0.5f, 2.0f, 1.0f, NULL);
    qkf_kd_loss(d2, z, tg, tz, B, K, 0.5f, 2.0f, 0.25f, NULL);
    for (int j = 0; j < B * K; j++)
        cr_assert_lt(fabs(0.25 * (double)d[j] - (double)d2[j]), 1e-7);
}

/* The distillation step on the QAT engine: with alpha = 0 it is qkf_train_loss_backward (the
 * same gradient, bit for bit: the same dlogits reach the same backward up to float rounding of the
 * two softmax implementations); with alpha > 0 the gradient moves. */
Test(qat, kd_step_speck, .timeout = 120)
{
    fixture fx;
    load_fixture(&fx, "cifar_small", "speck");
    qkf_train *e = qkf_train_create(&fx.m, fx.B, 0);
    cr_assert_not_null(e, "%s", qkf_last_error());
    cr_assert_eq(qkf_train_set_hw(e, &fx.a, "fixture", NULL), 0, "%s", qkf_last_error());
    int64_t n = fx.m.params.total;
    float *g0 = qkf_malloc((size_t)n * sizeof(float));
    double loss, lk;
    qkf_train_zero_grad(e);
    cr_assert_eq(qkf_train_loss_backward(e, fx.x, fx.B, fx.target, &loss, NULL), 0);
    memcpy(g0, qkf_train_grads(e), (size_t)n * sizeof(float));
    float *tz = qkf_calloc((size_t)fx.B * fx.K, sizeof(float));
    for (int j = 0; j < fx.B * fx.K; j++)
        tz[j] = (float)((j * 7) % 5) - 2.0f;
    qkf_train_zero_grad(e);
    cr_assert_eq(qkf_train_loss_backward_kd(e, fx.x, fx.B, fx.target, tz, 0.0f, 2.0f, &lk, NULL),
                 0);
    cr_assert_lt(fabs(lk - loss), 1e-5 * fabs(loss), "%g vs %g", lk, loss);
    const float *g = qkf_train_grads(e);
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)g[i] - (double)g0[i]) * ((double)g[i] - (double)g0[i]);
        den += (double)g0[i] * (double)g0[i];
    }
    cr_assert_gt(den, 0.0);
    /* 1e-5 relative: two softmax codes (float kernel, double here) feed the same backward */
    cr_assert_lt(sqrt(num / den), 1e-5, "relative gradient difference %g", sqrt(num / den));
    qkf_train_zero_grad(e);
    cr_assert_eq(qkf_train_loss_backward_kd(e, fx.x, fx.B, fx.target, tz, 0.7f, 2.0f, &lk, NULL),
                 0);
    num = 0.0;
    for (int64_t i = 0; i < n; i++)
        num += ((double)g[i] - (double)g0[i]) * ((double)g[i] - (double)g0[i]);
    cr_assert_gt(sqrt(num / den), 0.05, "the teacher did not change the gradient");
    qkf_free(tz);
    qkf_free(g0);
    qkf_train_free(e);
    free_fixture(&fx);
}

/* --val: the training samples [0, t) and the held-out [lo, n) never overlap, whatever the limit;
 * refusals for a split that leaves less than a batch or holds out everything. */
Test(qat, val_split_disjoint)
{
    const int64_t n = 1000;
    const int64_t limits[4] = {0, 100, 900, 5000}, vals[4] = {0, 1, 100, 500};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int64_t t = -1, lo = -1;
            cr_assert_eq(qkf_trainer_split(n, limits[i], vals[j], 32, &t, &lo), 0, "%s",
                         qkf_last_error());
            cr_assert_eq(lo, n - vals[j]);
            cr_assert_leq(t, lo,
                          "limit %lld val %lld: trains on [0, %lld), validates on [%lld, "
                          "%lld)",
                          (long long)limits[i], (long long)vals[j], (long long)t, (long long)lo,
                          (long long)n);
            int64_t want = limits[i] > 0 && limits[i] < n ? limits[i] : n;
            cr_assert_eq(t, want < n - vals[j] ? want : n - vals[j]);
        }
    int64_t t, lo;
    cr_assert_eq(qkf_trainer_split(n, 0, 980, 32, &t, &lo), -1);
    cr_assert(strstr(qkf_last_error(), "leaves 20 training samples"), "%s", qkf_last_error());
    cr_assert_eq(qkf_trainer_split(n, 0, 1000, 32, &t, &lo), -1);
    cr_assert(strstr(qkf_last_error(), "--val 1000"), "%s", qkf_last_error());
    char b[64];
    qkf_trainer_best_path("run/q.h5", b, sizeof b);
    cr_assert_str_eq(b, "run/q.best.h5");
    qkf_trainer_best_path("q", b, sizeof b);
    cr_assert_str_eq(b, "q.best.h5");
}

/* ---- the command line ------------------------------------------------------------------------ */

static char tdir[256];
static void cli_setup(void)
{
    tmpdir_make(tdir, sizeof tdir, "qat");
    qkf_h5_quiet();
}
static void cli_teardown(void) { tmpdir_remove(tdir); }

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *b = qkf_calloc(1 << 16, 1);
    size_t n = fread(b, 1, (1 << 16) - 1, f);
    b[n] = 0;
    fclose(f);
    return b;
}

#define TINY_QAT                                                                                   \
    "--img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 --num-heads 2 --mlp-ratio 2 " \
    "--depths 3 --T 2 --batch 8 --epochs 2 --threads 1 --log-every 1 --eval-batch 16 --quiet"

/* Runs qkf train with args; expects a non-zero exit and one line on stderr containing want, and
 * no new file in the directory (n_files before). */
static void refused(const char *args, const char *want, int n_files)
{
    int rc = run_cmd("%s train %s >%s/o.txt 2>%s/e.txt", QKF_BINARY, args, tdir, tdir);
    cr_assert_neq(rc, 0, "%s", args);
    char *e = slurp(tmpdir_path(tdir, "e.txt"));
    cr_assert(strstr(e, want), "%s: %s", args, e);
    cr_assert_eq(strchr(e, '\n'), strrchr(e, '\n'), "%s: more than one line: %s", args, e);
    qkf_free(e);
    cr_assert_eq(tmpdir_entries(tdir, NULL, 0), n_files + 2, "%s left a file", args);
}

Test(qat_cli, train_resume_and_refusals, .init = cli_setup, .fini = cli_teardown, .timeout = 240)
{
    char data[512], args[2048];
    snprintf(data, sizeof data, "%s", tmpdir_path(tdir, "quad.h5"));
    write_quadrant_dataset(data, 48, 7);
    cr_assert_eq(run_cmd("%s train --help >%s/h.txt", QKF_BINARY, tdir), 0);
    char *h = slurp(tmpdir_path(tdir, "h.txt"));
    cr_assert(strstr(h, "--hw PROFILE") && strstr(h, "straight-through"), "%s", h);
    qkf_free(h);
    unlink(tmpdir_path(tdir, "h.txt"));
    /* a float model to fine-tune */
    cr_assert_eq(run_cmd("%s train " TINY_QAT " --data h5:%s --max-steps 3 --out %s/f.h5",
                         QKF_BINARY, data, tdir),
                 0);
    /* quantisation-aware on speck; the epoch evaluates the integer model */
    cr_assert_eq(run_cmd("%s train --init %s/f.h5 --hw speck --data h5:%s --batch 8 --epochs 2 "
                         "--max-steps 6 --threads 1 --log-every 1 --lr 1e-3 --out %s/q.h5 "
                         "--metrics %s/q.jsonl >%s/o.txt 2>&1",
                         QKF_BINARY, tdir, data, tdir, tdir, tdir),
                 0);
    char *o = slurp(tmpdir_path(tdir, "o.txt"));
    cr_assert(strstr(o, "quantisation-aware: --hw speck"), "%s", o);
    qkf_free(o);
    double loss[16];
    cr_assert_eq(read_losses(tmpdir_path(tdir, "q.jsonl"), loss, 16), 6);
    for (int i = 0; i < 6; i++)
        cr_assert(isfinite(loss[i]));
    /* the checkpoint is float (qkf quantize and qkf eval --hw take it) */
    qkf_model m;
    cr_assert_eq(qkf_ckpt_load(tmpdir_path(tdir, "q.h5"), &m), 0, "%s", qkf_last_error());
    qkf_model_free(&m);
    cr_assert_eq(run_cmd("%s eval --weights %s/q.h5 --hw speck --data h5:%s >%s/o.txt 2>&1",
                         QKF_BINARY, tdir, data, tdir),
                 0);
    unlink(tmpdir_path(tdir, "o.txt"));
    int n = tmpdir_entries(tdir, NULL, 0); /* quad.h5, f.h5, q.h5, q.jsonl */
    /* --resume needs the profile it was trained for, and a float run none */
    snprintf(args, sizeof args, "--resume %s/q.h5 --out %s/r.h5 --data h5:%s", tdir, tdir, data);
    refused(args, "resume it with --hw speck", n);
    snprintf(args, sizeof args, "--resume %s/q.h5 --hw loihi --out %s/r.h5 --data h5:%s", tdir,
             tdir, data);
    refused(args, "not --hw loihi", n);
    snprintf(args, sizeof args, "--resume %s/f.h5 --hw speck --out %s/r.h5 --data h5:%s", tdir,
             tdir, data);
    refused(args, "a float training run", n);
    /* profiles without integer arithmetic or without a tau = 2 form; --tb-compat */
    snprintf(args, sizeof args, "--init %s/f.h5 --hw ideal-45nm --out %s/r.h5 --data h5:%s", tdir,
             tdir, data);
    refused(args, "float machine", n);
    snprintf(args, sizeof args, "--init %s/f.h5 --hw truenorth --out %s/r.h5 --data h5:%s", tdir,
             tdir, data);
    refused(args, "leak", n);
    snprintf(args, sizeof args, "--init %s/f.h5 --hw nosuchchip --out %s/r.h5 --data h5:%s", tdir,
             tdir, data);
    refused(args, "nosuchchip", n);
    snprintf(args, sizeof args,
             "--init %s/f.h5 --hw speck --tb-compat --out %s/r.h5 --data h5:%s", tdir, tdir,
             data);
    refused(args, "tb-compat", n);
    /* the same profile resumes */
    cr_assert_eq(run_cmd("%s train --resume %s/q.h5 --hw speck --out %s/q.h5 --max-steps 8 "
                         "--data h5:%s --quiet --log-every 1 --metrics %s/q.jsonl",
                         QKF_BINARY, tdir, tdir, data, tdir),
                 0);
    cr_assert_eq(read_losses(tmpdir_path(tdir, "q.jsonl"), loss, 16), 8);
    unlink(tmpdir_path(tdir, "q.jsonl"));
    unlink(tmpdir_path(tdir, "o.txt"));
    unlink(tmpdir_path(tdir, "e.txt"));
    n = tmpdir_entries(tdir, NULL, 0); /* quad.h5, f.h5, q.h5 */
    /* --bits-min, --distill, --val: refusals of absurd values, one line, no file */
    snprintf(args, sizeof args, "--init %s/f.h5 --bits-min 7 --out %s/r.h5 --data h5:%s", tdir,
             tdir, data);
    refused(args, "needs --hw", n);
    snprintf(args, sizeof args, "--init %s/f.h5 --hw speck --bits-min 1 --out %s/r.h5 --data h5:%s",
             tdir, tdir, data);
    refused(args, "M must be 0 (off) or 2..8", n);
    snprintf(args, sizeof args,
             "--init %s/f.h5 --hw speck --bits-min nosuch=7 --out %s/r.h5 --data h5:%s", tdir, tdir,
             data);
    refused(args, "no convolution of that name", n);
    snprintf(args, sizeof args,
             "--init %s/f.h5 --hw speck --distill %s/f.h5 --distill-weight 1.5 --out %s/r.h5 "
             "--data h5:%s",
             tdir, tdir, tdir, data);
    refused(args, "--distill-weight", n);
    snprintf(args, sizeof args,
             "--init %s/f.h5 --hw speck --distill %s/f.h5 --distill-temp 0 --out %s/r.h5 "
             "--data h5:%s",
             tdir, tdir, tdir, data);
    refused(args, "--distill-temp", n);
    snprintf(args, sizeof args,
             "--init %s/f.h5 --hw speck --distill %s/none.h5 --out %s/r.h5 "
             "--data h5:%s",
             tdir, tdir, tdir, data);
    refused(args, "none.h5", n);
    snprintf(args, sizeof args, "--init %s/f.h5 --hw speck --val 44 --out %s/r.h5 --data h5:%s",
             tdir, tdir, data);
    refused(args, "--val 44 leaves 4 training samples", n);
    snprintf(args, sizeof args, "--init %s/f.h5 --hw speck --val -1 --out %s/r.h5 --data h5:%s",
             tdir, tdir, data);
    refused(args, "--val", n);
    /* all three: the best validated checkpoint is written beside --out and records the spec */
    cr_assert_eq(run_cmd("%s train --init %s/f.h5 --hw speck --bits-min 5 --distill %s/f.h5 "
                         "--distill-weight 0.6 --distill-temp 3 --val 16 --data h5:%s --batch 8 "
                         "--epochs 2 --max-steps 3 --save-every 2 --threads 1 --lr 1e-3 --no-eval "
                         "--out %s/k.h5 >%s/o.txt 2>&1",
                         QKF_BINARY, tdir, tdir, data, tdir, tdir),
                 0);
    o = slurp(tmpdir_path(tdir, "o.txt"));
    cr_assert(strstr(o, "step 2: validation accuracy") && strstr(o, "16 held-out samples") &&
                  strstr(o, "k.best.h5"),
              "%s", o);
    cr_assert(strstr(o, "32 train / "), "--val 16 of 48 leaves 32 to train on: %s", o);
    qkf_free(o);
    cr_assert_eq(qkf_ckpt_load(tmpdir_path(tdir, "k.best.h5"), &m), 0, "%s", qkf_last_error());
    qkf_model_free(&m);
    int64_t *spec, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(tmpdir_path(tdir, "k.best.h5"), "quant/bits_min", &spec, &nd, sh),
                 0, "%s", qkf_last_error());
    cr_assert(nd == 1 && sh[0] == 1 && spec[0] == '5');
    qkf_free(spec);
    /* qkf eval --hw quantises a checkpoint with the spec it was trained with: the same accuracy
     * as --bits-min 5 given, and the report of qkf quantize shows saturated biases */
    cr_assert_eq(run_cmd("%s eval --weights %s/k.h5 --hw speck --data h5:%s >%s/e1.txt 2>&1",
                         QKF_BINARY, tdir, data, tdir),
                 0);
    cr_assert_eq(run_cmd("%s eval --weights %s/k.h5 --hw speck --bits-min 5 --data h5:%s "
                         ">%s/e2.txt 2>&1",
                         QKF_BINARY, tdir, data, tdir),
                 0);
    char *e1 = slurp(tmpdir_path(tdir, "e1.txt")), *e2 = slurp(tmpdir_path(tdir, "e2.txt"));
    cr_assert_str_eq(strstr(e1, "accuracy:"), strstr(e2, "accuracy:"));
    qkf_free(e1);
    qkf_free(e2);
    /* and qkf quantize the same integers as with the spec given (its report, line for line) */
    cr_assert_eq(run_cmd("%s quantize --weights %s/k.h5 --hw speck --out %s/kq.h5 >%s/e1.txt",
                         QKF_BINARY, tdir, tdir, tdir),
                 0);
    cr_assert_eq(run_cmd("%s quantize --weights %s/k.h5 --hw speck --bits-min 5 --out %s/kq.h5 "
                         ">%s/e2.txt",
                         QKF_BINARY, tdir, tdir, tdir),
                 0);
    e1 = slurp(tmpdir_path(tdir, "e1.txt"));
    e2 = slurp(tmpdir_path(tdir, "e2.txt"));
    cr_assert_str_eq(e1, e2);
    qkf_free(e1);
    qkf_free(e2);
    /* --resume restores the spec, the teacher and the split (the run goes on with them) */
    cr_assert_eq(run_cmd("%s train --resume %s/k.h5 --hw speck --max-steps 4 --data h5:%s "
                         "--out %s/k.h5 >%s/o.txt 2>&1",
                         QKF_BINARY, tdir, data, tdir, tdir),
                 0);
    o = slurp(tmpdir_path(tdir, "o.txt"));
    cr_assert(strstr(o, "32 train / "), "%s", o);
    cr_assert(strstr(o, "step 4: validation accuracy"), "%s", o);
    qkf_free(o);
}

/* A model the arithmetic cannot represent is refused with the quantiser's own line (naming the
 * layer), and the engine stays a float trainer; so are the float machine and --tb-compat. */
Test(qat, refusals, .timeout = 60)
{
    fixture fx;
    load_fixture(&fx, "cifar_small", "loihi");
    qkf_hw_arith a = fx.a;
    a.weight_bits = 2, a.weight_exp_max = 0, a.threshold_bits = 1, a.bias_bits = 2;
    a.bias_exp_max = 0;
    qkf_qmodel q;
    cr_assert_neq(qkf_quantize(&fx.m, &a, "tiny", NULL, &q), 0);
    char want[600];
    snprintf(want, sizeof want, "%s", qkf_last_error());
    cr_assert(strstr(want, "cannot be represented"), "%s", want);
    qkf_train *e = qkf_train_create(&fx.m, fx.B, 0);
    cr_assert_neq(qkf_train_set_hw(e, &a, "tiny", NULL), 0);
    cr_assert_str_eq(qkf_last_error(), want);
    cr_assert_null(qkf_train_qmodel(e));
    qkf_hw_arith fl = {0};
    fl.is_float = 1;
    cr_assert_neq(qkf_train_set_hw(e, &fl, "ideal-45nm", NULL), 0);
    cr_assert(strstr(qkf_last_error(), "float machine"), "%s", qkf_last_error());
    /* float training goes on as before */
    const float *logits;
    cr_assert_eq(qkf_train_forward(e, fx.x, fx.B, 0, &logits), 0, "%s", qkf_last_error());
    cr_assert_null(qkf_train_qmodel(e));
    qkf_train_free(e);
    e = qkf_train_create(&fx.m, fx.B, QKF_TRAIN_TB_COMPAT);
    cr_assert_neq(qkf_train_set_hw(e, &fx.a, "loihi", NULL), 0);
    cr_assert(strstr(qkf_last_error(), "tb-compat"), "%s", qkf_last_error());
    qkf_train_free(e);
    free_fixture(&fx);
}
