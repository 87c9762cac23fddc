/* qkf info, qkf init: model configuration, parameter counts, fresh checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "cli.h"

static void print_config(const qkf_config *c)
{
    printf("variant: %s\n", qkf_variant_name(c->variant));
    printf("input: %d x %d x %d%s, T = %d\n", c->in_channels, c->img_size, c->img_size,
           qkf_config_is_frames(c) ? " frames" : " image (repeated over T)", c->T);
    printf("classes: %d\n", c->num_classes);
    printf("embed_dims: %d, num_heads: %d, mlp_ratio: %g, depths: %d, qk_attn: %s\n",
           c->embed_dims, c->num_heads, (double)c->mlp_ratio, c->depths,
           c->qk_attn == QKF_QK_TOKEN ? "token (QKTA)" : "channel (QKCA)");
}

static void print_params(const qkf_config *cfg, const qkf_params *ps)
{
    qkf_graph g;
    if (qkf_graph_walk(cfg, 0, &g) == 0) {
        int h1, h2, h3 = 0;
        qkf_config_token_grid(cfg, 1, &h1);
        qkf_config_token_grid(cfg, 2, &h2);
        int stages = qkf_config_is_frames(cfg) ? 2 : 3;
        if (stages == 3)
            qkf_config_token_grid(cfg, 3, &h3);
        printf("tokens per stage: %d x %d", h1, h1);
        printf(", %d x %d", h2, h2);
        if (stages == 3)
            printf(", %d x %d", h3, h3);
        printf("\nLIF layers: %d\n", g.n_lif);
        qkf_graph_free(&g);
    }
    printf("\n%-16s %14s\n", "module", "parameters");
    char cur[QKF_MAX_NAME] = "";
    int64_t sum = 0;
    for (int i = 0; i <= ps->n; i++) {
        char top[QKF_MAX_NAME] = "";
        if (i < ps->n) {
            const char *name = ps->p[i].name;
            size_t n = strcspn(name, ".");
            memcpy(top, name, n);
            top[n] = 0;
        }
        if (i == ps->n || strcmp(top, cur) != 0) {
            if (cur[0])
                printf("%-16s %14lld\n", cur, (long long)sum);
            strcpy(cur, top);
            sum = 0;
        }
        if (i < ps->n && !ps->p[i].is_buffer)
            sum += ps->p[i].numel;
    }
    printf("parameters: %lld\n", (long long)ps->n_train);
}

/* Bits of a two's-complement register holding every value of magnitude up to m. */
static int bits_for(int64_t m)
{
    int b = 1;
    while (b < 63 && m > ((int64_t)1 << (b - 1)) - 1)
        b++;
    return b;
}

/* "lo" or "lo..hi" of n int32 values (n >= 1). */
static void range_i32(char *buf, size_t cap, const int32_t *v, int64_t n)
{
    int32_t lo = v[0], hi = v[0];
    for (int64_t i = 1; i < n; i++)
        lo = v[i] < lo ? v[i] : lo, hi = v[i] > hi ? v[i] : hi;
    snprintf(buf, cap, lo == hi ? "%ld" : "%ld..%ld", (long)lo, (long)hi);
}

/* The integer model of a quantised checkpoint as a chip engineer reads it: the arithmetic, then
 * per layer (a conv with the LIF it feeds, an attention neuron, the head) the weight bits used
 * of the profile's and their exponents (a weight is mantissa << exponent), the bias bits used and
 * the largest |bias| in membrane units, the thresholds in membrane units and the real value of
 * one membrane unit (delta). */
static void print_integer(const qkf_qmodel *q)
{
    const qkf_hw_arith *a = &q->arith;
    const qkf_graph *g = &q->g;
    printf("\narithmetic: weights %d bits %s, exponents %d..%d; current %d bits %s, << %d; "
           "membrane %d bits %s; bias %d bits; leak %s; spike when h %s threshold, reset %s\n",
           a->weight_bits, a->per_channel ? "per channel" : "per layer", a->weight_exp_min,
           a->weight_exp_max, a->current_bits, a->current_wrap ? "wrapping" : "saturating",
           a->current_shift, a->membrane_bits, a->membrane_wrap ? "wrapping" : "saturating",
           a->bias_bits,
           a->leak == QKF_HW_LEAK_NONE ? "none (integrate and fire)"
           : a->leak == QKF_HW_LEAK_LINEAR ? "linear"
                                           : "V / 2 (tau 2)",
           a->threshold_ge ? ">=" : ">", a->reset_subtract ? "by subtraction" : "to zero");
    if (q->in_max)
        printf("input: %d-bit pixels, X = round(x / %.6g), |X| <= %d\n", a->input_bits,
               q->in_scale, (int)q->in_max);
    else
        printf("input: event counts as they are\n");
    printf("\n%-34s %7s %7s %6s %11s %9s %17s %21s\n", "integer layer", "w bits", "w exp",
           "b bits", "max |bias|", "b exp", "threshold", "delta (one unit)");
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_qop *qo = &q->ops[i];
        char we[24], bb[24], be[24], th[32], de[48];
        if (op->kind == QKF_OP_READOUT) {
            int64_t n = (int64_t)g->cfg.num_classes * g->tensors[op->in0].c, mm = 0;
            for (int64_t j = 0; j < n; j++)
                mm = abs(qo->head_mant[j]) > mm ? abs(qo->head_mant[j]) : mm;
            snprintf(we, sizeof we, "%d/%d", bits_for(mm), a->weight_bits);
            printf("%-34s %7s %7d %6s %11s %9s %17s %21s\n", "head", we, qo->head_exp, "-", "-",
                   "-", "-", "-");
            printf("%-34s logit = logit_int * %.6g\n", "", qo->head_scale);
            continue;
        }
        if (op->kind != QKF_OP_LIF)
            continue;
        const qkf_op *cv = qo->conv >= 0 ? &g->ops[qo->conv] : NULL;
        const qkf_qop *qc = qo->conv >= 0 ? &q->ops[qo->conv] : NULL;
        int C = g->tensors[op->out].c;
        range_i32(th, sizeof th, qo->theta, C);
        double dlo = qo->delta[0], dhi = qo->delta[0];
        for (int c = 1; c < C; c++)
            dlo = qo->delta[c] < dlo ? qo->delta[c] : dlo,
            dhi = qo->delta[c] > dhi ? qo->delta[c] : dhi;
        snprintf(de, sizeof de, dlo == dhi ? "%.4g" : "%.4g..%.4g", dlo, dhi);
        if (!cv) { /* an attention neuron: P = in_weight * count, no weights or bias */
            snprintf(we, sizeof we, "x%ld", (long)qo->in_weight);
            printf("%-34s %7s %7s %6s %11s %9s %17s %21s\n", op->name, we, "-", "-", "-", "-", th,
                   de);
            continue;
        }
        int64_t n = (int64_t)cv->cout * cv->cin * cv->k * cv->k, mm = 0, bm = 0, bmax = 0;
        for (int64_t j = 0; j < n; j++)
            mm = abs(qc->w_mant[j]) > mm ? abs(qc->w_mant[j]) : mm;
        int elo = qc->w_exp[0], ehi = qc->w_exp[0], blo = qc->bias_exp[0], bhi = qc->bias_exp[0];
        for (int c = 0; c < cv->cout; c++) {
            elo = qc->w_exp[c] < elo ? qc->w_exp[c] : elo;
            ehi = qc->w_exp[c] > ehi ? qc->w_exp[c] : ehi;
            blo = qc->bias_exp[c] < blo ? qc->bias_exp[c] : blo;
            bhi = qc->bias_exp[c] > bhi ? qc->bias_exp[c] : bhi;
            int64_t m = qc->bias_mant[c] < 0 ? -(int64_t)qc->bias_mant[c] : qc->bias_mant[c];
            int64_t v = qc->bias[c] < 0 ? -(int64_t)qc->bias[c] : qc->bias[c];
            bm = m > bm ? m : bm;
            bmax = v > bmax ? v : bmax;
        }
        char w2[24];
        snprintf(w2, sizeof w2, "%d/%d", bits_for(mm), a->weight_bits);
        snprintf(we, sizeof we, elo == ehi ? "%d" : "%d..%d", elo, ehi);
        snprintf(bb, sizeof bb, "%d/%d", bits_for(bm), a->bias_bits);
        snprintf(be, sizeof be, blo == bhi ? "%d" : "%d..%d", blo, bhi);
        printf("%-34s %7s %7s %6s %11lld %9s %17s %21s\n", cv->name, w2, we, bb, (long long)bmax,
               be, th, de);
    }
    printf("(w bits, b bits: used / the profile's; a conv row holds its LIF's threshold and unit; "
           "x1: an attention neuron's input weight)\n");
}

int cmd_info(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "info"};
    const char *weights = NULL, *variant = NULL, *v;
    qkf_config cfg;
    int r;
    /* Two passes: the preset first (so overrides apply on top of it wherever they stand). */
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--variant", 9)) {
            a.i = i;
            if (qkf_arg(&a, "--variant", &variant) < 0)
                return qkf_cli_fail("info");
        }
    if (variant && qkf_config_preset(variant, &cfg))
        return qkf_cli_fail("info");
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            printf("usage: qkf info W.h5\n       qkf info --variant NAME [--img-size N] "
                   "[--num-classes N] [--embed-dims N] [--num-heads N] [--mlp-ratio R] "
                   "[--depths N] [--T N] [--in-channels N] [--qk-attn token|channel]\n\n"
                   "Prints the model configuration, parameters per stage and a line "
                   "'parameters: N'.\nA quantised checkpoint (qkf quantize) also shows its "
                   "arithmetic and, per layer, the\nweight and bias bits used, exponents, "
                   "thresholds and membrane unit.\npresets: %s\n",
                   qkf_config_preset_list());
            return 0;
        }
        if ((r = qkf_arg(&a, "--variant", &v)) != 0) {
            if (r < 0)
                return qkf_cli_fail("info");
            continue;
        }
        if (variant && (r = qkf_arg_config(&a, &cfg)) != 0) {
            if (r < 0)
                return qkf_cli_fail("info");
            continue;
        }
        if (argv[a.i][0] == '-' || weights) {
            qkf_set_error("unexpected argument '%s'", argv[a.i]);
            return qkf_cli_fail("info");
        }
        weights = argv[a.i];
    }
    if (!weights && !variant) {
        qkf_set_error("give a checkpoint (qkf info W.h5) or --variant NAME");
        return qkf_cli_fail("info");
    }
    qkf_model m;
    memset(&m, 0, sizeof m);
    int isq = weights ? qkf_qckpt_is_quant(weights) : 0;
    if (isq < 0)
        return qkf_cli_fail("info");
    if (isq) { /* a quantised checkpoint (qkf quantize): its configuration and arithmetic */
        qkf_qmodel q;
        if (qkf_qckpt_load(weights, &q))
            return qkf_cli_fail("info");
        printf("quantised checkpoint: %s\n", weights);
        printf("profile: %s (weights %d bits %s, membrane %d bits, bias %d bits)\n", q.hw_name,
               q.arith.weight_bits, q.arith.per_channel ? "per channel" : "per layer",
               q.arith.membrane_bits, q.arith.bias_bits);
        print_config(&q.cfg);
        int rc = qkf_params_build(&q.cfg, &m.params);
        if (!rc) {
            print_params(&q.cfg, &m.params);
            print_integer(&q);
        }
        qkf_params_free(&m.params);
        qkf_qmodel_free(&q);
        return rc ? qkf_cli_fail("info") : 0;
    }
    if (weights) {
        if (qkf_ckpt_load(weights, &m))
            return qkf_cli_fail("info");
        printf("checkpoint: %s\n", weights);
    } else {
        if (qkf_config_validate(&cfg) || qkf_params_build(&cfg, &m.params))
            return qkf_cli_fail("info");
        m.cfg = cfg;
        printf("preset: %s\n", variant);
    }
    print_config(&m.cfg);
    print_params(&m.cfg, &m.params);
    qkf_model_free(&m);
    return 0;
}

int cmd_init(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "init"};
    const char *variant = NULL, *out = NULL, *v;
    long seed = 0;
    int r;
    qkf_config cfg;
    /* The preset first, so that overrides apply on top of it wherever they stand. */
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--variant", 9)) {
            a.i = i;
            if (qkf_arg(&a, "--variant", &variant) < 0)
                return qkf_cli_fail("init");
        }
    if (variant && qkf_config_preset(variant, &cfg))
        return qkf_cli_fail("init");
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            printf("usage: qkf init --variant NAME --out W.h5 [--seed S] [config overrides as in "
                   "qkf info]\n\nWrites a freshly initialised checkpoint (PyTorch default "
                   "initialisation).\npresets: %s\n",
                   qkf_config_preset_list());
            return 0;
        }
        if ((r = qkf_arg(&a, "--variant", &v)) || (r = qkf_arg(&a, "--out", &out))) {
            if (r < 0)
                return qkf_cli_fail("init");
            continue;
        }
        if ((r = qkf_arg(&a, "--seed", &v)) != 0) {
            if (r < 0 || qkf_parse_int("--seed", v, 0, 0x7fffffffL, &seed))
                return qkf_cli_fail("init");
            continue;
        }
        if (variant && (r = qkf_arg_config(&a, &cfg)) != 0) {
            if (r < 0)
                return qkf_cli_fail("init");
            continue;
        }
        qkf_set_error("unexpected argument '%s'", argv[a.i]);
        return qkf_cli_fail("init");
    }
    if (!variant || !out) {
        qkf_set_error("--variant NAME and --out W.h5 are required (presets: %s)",
                      qkf_config_preset_list());
        return qkf_cli_fail("init");
    }
    qkf_model m;
    memset(&m, 0, sizeof m);
    m.cfg = cfg;
    if (qkf_config_validate(&cfg) || qkf_params_build(&cfg, &m.params))
        return qkf_cli_fail("init");
    qkf_params_init(&cfg, &m.params, (uint64_t)seed);
    if (qkf_ckpt_save(out, &m)) {
        qkf_model_free(&m);
        return qkf_cli_fail("init");
    }
    printf("wrote %s: %s, parameters: %lld\n", out, variant, (long long)m.params.n_train);
    qkf_model_free(&m);
    return 0;
}
