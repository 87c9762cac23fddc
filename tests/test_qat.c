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
