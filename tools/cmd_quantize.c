/* qkf quantize, and qkf eval --hw: a float checkpoint quantised for a chip profile
 * (models/quant.h) or a quantised checkpoint, evaluated by either integer engine
 * (tools/app/evaluate.h). qkf infer --hw is tools/cmd_infer_int.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/dataset.h"
#include "../io/hw_profile.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense.h"
#include "../sim/dense_int.h"
#include "app/evaluate.h"
#include "app/quantize.h"
#include "cli.h"

void qkf_print_rates(const qkf_graph *g, const int64_t *count, int64_t samples); /* infer */

const char *const qkf_quant_help =
    "  --calib N        calibrate on the first N training images of --data: each layer's\n"
    "                   membrane unit from the largest input and membrane the float model\n"
    "                   reaches there (x 1.25), the input scale from the largest pixel\n"
    "                   (default 0: a headroom of --headroom thresholds)\n"
    "  --headroom H     without calibration, registers hold +-H thresholds (default 16)\n"
    "  --clip-bias      a bias beyond the bias register saturates (counted in the report)\n"
    "                   instead of coarsening its layer's membrane unit until it fits\n"
    "  --bits-min SPEC  between the two: a layer's unit is never coarser than what leaves\n"
    "                   its weights M bits; biases beyond the register saturate. SPEC is M\n"
    "                   (every conv) or a comma list of M and LAYER=M (later items win;\n"
    "                   M = 0: off for that layer; 2 <= M <= the profile's weight bits)\n";

int qkf_arg_quant(qkf_args *a, long *calib, qkf_quant_opts *o)
{
    const char *v;
    int r;
    if ((r = qkf_arg_int(a, "--calib", 1, 100000, calib)) ||
        (r = qkf_arg_flag(a, "--clip-bias", &o->clip_bias)))
        return r;
    if ((r = qkf_arg(a, "--bits-min", &v)) != 0) {
        if (r < 0)
            return -1;
        if (!*v)
            return qkf_set_error("option --bits-min: empty (M or LAYER=M,...)");
        o->bits_min = v;
        return 1;
    }
    if ((r = qkf_arg(a, "--headroom", &v)) != 0)
        return r < 0 || qkf_parse_float("--headroom", v, 1.0, 1e6, &o->headroom) ? -1 : 1;
    return 0;
}

/* Per-layer table of what the quantiser chose. */
static void print_report(const qkf_qmodel *q)
{
    const qkf_graph *g = &q->g;
    const qkf_hw_arith *a = &q->arith;
    printf("%-34s %6s %5s %7s %10s %10s %12s\n", "layer", "scale", "bits", "exp", "err max",
           "err rms", "threshold");
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_qop *qo = &q->ops[i];
        if (op->kind == QKF_OP_CONV) {
            int elo = 127, ehi = -128;
            for (int c = 0; c < op->cout; c++) {
                elo = qo->w_exp[c] < elo ? qo->w_exp[c] : elo;
                ehi = qo->w_exp[c] > ehi ? qo->w_exp[c] : ehi;
            }
            const qkf_qop *ql = &q->ops[i + 1];
            int32_t tlo = INT32_MAX, thi = 0;
            for (int c = 0; c < op->cout; c++) {
                tlo = ql->theta[c] < tlo ? ql->theta[c] : tlo;
                thi = ql->theta[c] > thi ? ql->theta[c] : thi;
            }
            char ex[16], th[24];
            snprintf(ex, sizeof ex, elo == ehi ? "%d" : "%d..%d", elo, ehi);
            snprintf(th, sizeof th, tlo == thi ? "%ld" : "%ld..%ld", (long)tlo, (long)thi);
            printf("%-34s %6s %2d/%-2d %7s %9.3f%% %9.3f%% %12s\n", op->name,
                   a->per_channel ? "chan" : "layer", qo->bits_used, a->weight_bits, ex,
                   100.0 * qo->err_max, 100.0 * qo->err_rms, th);
        } else if (op->kind == QKF_OP_READOUT)
            printf("%-34s %6s %2d/%-2d %7d %9.3f%% %9.3f%% %12s\n", "head", "layer", qo->bits_used,
                   a->weight_bits, qo->head_exp, 100.0 * qo->err_max, 100.0 * qo->err_rms, "-");
        if (op->kind == QKF_OP_CONV && qo->clipped)
            printf("  %d biases of %s saturated (--clip-bias / --bits-min)\n", qo->clipped,
                   op->name);
    }
    if (q->in_max)
        printf("input: %d-bit pixels, X = round(x / %.6g), |X| <= %d\n", a->input_bits,
               q->in_scale, (int)q->in_max);
    printf("weight error: |integer weight - folded float weight|, relative to the layer's "
           "largest |weight|\n");
}

static void quantize_help(void)
{
    printf("usage: qkf quantize --weights W.h5 --hw PROFILE --out Q.h5 [--calib N --data NAME]\n"
           "                    [--headroom H] [--clip-bias | --bits-min SPEC] [--quiet]\n"
           "\n"
           "Turns a float checkpoint into the chip's integer model (docs/hardware.md, "
           "\"Quantisation\"):\n"
           "BatchNorm folded into the weights, the LIF's input 1/2 folded in, weight mantissas\n"
           "and exponents, biases, thresholds compensated for the chip's comparator, per layer\n"
           "or per channel as the profile allows. Prints per layer the weight bits used, the\n"
           "exponents, the weight error and the thresholds, and writes Q.h5 (atomically):\n"
           "integer datasets under each layer's official name (<conv>.weight int8/int16\n"
           "mantissas, .weight_exp, .bias, .bias_exp; <lif>.threshold, <lif>.delta; head.*),\n"
           "the scales and the profile as attributes. qkf infer/eval --hw take Q.h5 directly.\n"
           "A layer the profile cannot represent is refused with one line naming it.\n"
           "\n");
    fputs(qkf_hw_help, stdout);
    fputs(qkf_quant_help, stdout);
    printf("  --data NAME      dataset of --calib (default fashion-mnist; qkf train --help)\n"
           "  --quiet          no table\n");
}

int cmd_quantize(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "quantize"};
    const char *weights = NULL, *out = NULL, *data = "fashion-mnist";
    qkf_hw_profile hw;
    int have_hw = 0, quiet = 0, r;
    long calib = 0;
    qkf_quant_opts qo;
    memset(&qo, 0, sizeof qo);
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            quantize_help();
            return 0;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) {
            if (r < 0)
                return qkf_cli_fail("quantize");
            have_hw = 1;
            continue;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--out", &out)) ||
            (r = qkf_arg(&a, "--data", &data)) || (r = qkf_arg_quant(&a, &calib, &qo)) ||
            (r = qkf_arg_flag(&a, "--quiet", &quiet))) {
            if (r < 0)
                return qkf_cli_fail("quantize");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf quantize --help)", argv[a.i]);
        return qkf_cli_fail("quantize");
    }
    if (!weights || !have_hw || !out) {
        qkf_set_error("--weights, --hw and --out are required");
        return qkf_cli_fail("quantize");
    }
    qkf_model fm;
    qkf_qmodel q;
    if (qkf_qckpt_is_quant(weights) == 1) {
        qkf_set_error("%s: already a quantised checkpoint", weights);
        return qkf_cli_fail("quantize");
    }
    if (qkf_app_qmodel(weights, &hw, calib, data, &qo, &fm, &q))
        return qkf_cli_fail("quantize");
    if (!quiet) {
        printf("%s for %s%s\n", weights, hw.name,
               calib ? " (calibrated)" : "");
        print_report(&q);
    }
    int rc = qkf_qckpt_save(out, &q);
    if (!rc && !quiet)
        printf("wrote %s\n", out);
    qkf_qmodel_free(&q);
    qkf_model_free(&fm);
    return rc ? qkf_cli_fail("quantize") : 0;
}

/* ---- qkf eval --hw ----------------------------------------------------------------------------- */

int qkf_cli_eval_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                    const qkf_quant_opts *base, long limit, int batch, int event, int tb,
                    int flips)
{
    qkf_model fm;
    qkf_qmodel q;
    qkf_evaluate_int_result r;
    memset(&r, 0, sizeof r);
    int rc = 1;
    double t0 = qkf_now();
    if (qkf_app_qmodel(weights, hw, calib, data, base, &fm, &q))
        return qkf_cli_fail("eval");
    if (flips && !fm.params.data) {
        qkf_set_error("%s: --flips compares with the float model: give the float checkpoint",
                      weights);
        goto done;
    }
    if (qkf_evaluate_int(&q, &fm, data, limit, batch, event, tb, flips, &r))
        goto done;
    const qkf_graph *g = &q.g;
    int64_t n = r.count;
    double aq = n ? (double)r.correct / (double)n : 0.0,
           af = n ? (double)r.correct_float / (double)n : 0.0;
    fprintf(stderr, "%lld test images of %s, %s integer engine (%s%s) %.1f s%s, %.1f s in all\n",
            (long long)n, r.source, event ? "event" : "dense", q.hw_name, tb ? ", tb_compat" : "",
            r.seconds_int, r.has_float ? " and float engine" : "", qkf_now() - t0);
    if (flips) {
        int64_t fsum = 0, tsum = 0;
        printf("%-34s %12s %14s %9s\n", "layer", "flips", "neuron-steps", "flipped");
        for (int li = 0; li < g->n_lif; li++) {
            printf("%-34s %12lld %14lld %8.4f%%\n", g->ops[g->lif_ops[li]].name,
                   (long long)r.flips[li], (long long)r.total[li],
                   r.total[li] ? 100.0 * (double)r.flips[li] / (double)r.total[li] : 0.0);
            fsum += r.flips[li], tsum += r.total[li];
        }
        printf("%-34s %12lld %14lld %8.4f%%\n", "all", (long long)fsum, (long long)tsum,
               tsum ? 100.0 * (double)fsum / (double)tsum : 0.0);
    }
    if (r.has_float) {
        printf("accuracy: %.4f (integer, %s)\n", aq, q.hw_name);
        printf("float accuracy: %.4f (difference %+.2f points; same class on %.2f%% of images)\n",
               af, 100.0 * (aq - af), n ? 100.0 * (double)r.agree / (double)n : 0.0);
    } else
        printf("accuracy: %.4f (integer, %s; a quantised checkpoint: no float model to compare)\n",
               aq, q.hw_name);
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("eval");
    qkf_evaluate_int_result_free(&r);
    qkf_qmodel_free(&q);
    qkf_model_free(&fm);
    return rc;
}
