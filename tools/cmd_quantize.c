/* qkf quantize, and the integer (--hw) paths of qkf infer and qkf eval in dense mode: a float
 * checkpoint quantised for a chip profile (models/quant.h) or a quantised checkpoint, run by the
 * dense integer engine (sim/dense_int.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/dataset.h"
#include "../io/h5_part.h"
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

/* ---- qkf infer --hw -------------------------------------------------------------------------- */

int qkf_cli_int_input(const char *input, const qkf_qmodel *q, qkf_h5_rows **in, int64_t *B,
                      int64_t *per)
{
    int ndim;
    int64_t shape[5];
    if (!(*in = qkf_h5_rows_open(input, "input", &ndim, shape)))
        return -1;
    int frames = qkf_config_is_frames(&q->cfg);
    if (ndim != (frames ? 5 : 4) || shape[frames ? 2 : 1] != q->cfg.in_channels ||
        shape[ndim - 1] != q->cfg.img_size || shape[ndim - 2] != q->cfg.img_size ||
        (frames && shape[1] != q->cfg.T) || shape[0] < 1) {
        qkf_set_error("%s: dataset 'input' does not fit the model (%s %d x %d x %d%s; --hw runs "
                      "the checkpoint's own size and T)",
                      input, frames ? "frames [B,T,C,H,W]:" : "images [B,C,H,W]:",
                      q->cfg.in_channels, q->cfg.img_size, q->cfg.img_size,
                      frames ? ", T frames" : "");
        qkf_h5_rows_close(*in);
        *in = NULL;
        return -1;
    }
    *B = shape[0];
    *per = 1;
    for (int i = 1; i < ndim; i++)
        *per *= shape[i];
    return 0;
}

int qkf_cli_int_out_open(qkf_int_out *w, const char *output, int64_t B, int K)
{
    memset(w, 0, sizeof *w);
    w->K = K, w->B = B;
    qkf_h5out *o = qkf_h5out_open(output);
    if (!o)
        return -1;
    w->o = o;
    int64_t ls[2] = {B, K};
    if (qkf_h5out_f32_create(o, "logits", 2, ls) || qkf_h5out_i64_create(o, "logits_int", 2, ls) ||
        qkf_h5out_i64_create(o, "predictions", 1, &B)) {
        qkf_cli_int_out_abort(w);
        return -1;
    }
    return 0;
}

int qkf_cli_int_out_rows(qkf_int_out *w, int64_t b0, int n, const float *logits,
                         const int64_t *li)
{
    int K = w->K;
    int64_t pred[256];
    for (int s = 0; s < n; s += 256) {
        int m = n - s < 256 ? n - s : 256;
        for (int b = 0; b < m; b++) {
            const int64_t *r = li + (int64_t)(s + b) * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                best = r[k] > r[best] ? k : best;
            pred[b] = best;
            int64_t at = b0 + s + b;
            if (at < 16)
                w->pred[at] = best, w->logit[at] = logits[(int64_t)(s + b) * K + best],
                w->logit_int[at] = r[best];
        }
        if (qkf_h5out_i64_rows(w->o, "predictions", b0 + s, m, pred))
            return -1;
    }
    return qkf_h5out_f32_rows(w->o, "logits", b0, n, logits) ||
                   qkf_h5out_i64_rows(w->o, "logits_int", b0, n, li)
               ? -1
               : 0;
}

void qkf_cli_int_out_abort(qkf_int_out *w)
{
    if (w->o)
        qkf_h5out_abort(w->o);
    w->o = NULL;
}

int qkf_cli_int_out_close(qkf_int_out *w, const char *output, const char *weights,
                          const qkf_qmodel *q, const qkf_graph *g, const char *engine,
                          const char *label, const int64_t *counts, double dt, int quiet)
{
    qkf_h5out *o = w->o;
    int64_t B = w->B;
    for (int l = 0; l < g->n_lif; l++) {
        char name[QKF_MAX_NAME + 32];
        const char *ln = g->ops[g->lif_ops[l]].name;
        double rate =
            (double)counts[l] / ((double)qkf_graph_lif_neurons(g, l) * q->cfg.T * (double)B);
        snprintf(name, sizeof name, "spike_count/%s", ln);
        if (qkf_h5out_i64(o, name, 0, NULL, &counts[l]))
            goto fail;
        snprintf(name, sizeof name, "firing_rate/%s", ln);
        if (qkf_h5out_f64(o, name, 0, NULL, &rate))
            goto fail;
    }
    if (qkf_h5out_attr_str(o, NULL, "engine", engine) ||
        qkf_h5out_attr_str(o, NULL, "hw", q->hw_name) ||
        qkf_h5out_attr_str(o, NULL, "qkf_version", QKF_VERSION) ||
        qkf_h5out_attr_str(o, NULL, "weights", weights))
        goto fail;
    w->o = NULL;
    if (qkf_h5out_commit(o))
        return -1;
    if (!quiet) {
        printf("%lld samples, %s (%s), %.3f s\n", (long long)B, label, q->hw_name, dt);
        int show = B < 16 ? (int)B : 16;
        for (int b = 0; b < show; b++)
            printf("sample %d: class %lld (logit %.4f, integer %lld)\n", b, (long long)w->pred[b],
                   (double)w->logit[b], (long long)w->logit_int[b]);
        if (B > show)
            printf("... %lld more in %s\n", (long long)(B - show), output);
        qkf_print_rates(g, counts, B);
        printf("\nwrote %s\n", output);
    }
    return 0;
fail:
    qkf_cli_int_out_abort(w);
    return -1;
}

int qkf_cli_infer_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                     const qkf_quant_opts *base, const char *input, const char *output, int batch,
                     int quiet, int tb, const qkf_trace_opts *topt, int argc, char **argv)
{
    qkf_model fm;
    qkf_qmodel q;
    float *x = NULL, *logits = NULL;
    int64_t *li = NULL, *counts = NULL;
    qkf_dense_int *e = NULL;
    qkf_h5_rows *in = NULL;
    qkf_int_out w;
    memset(&w, 0, sizeof w);
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    int rc = 1;
    int64_t B, per;
    if (qkf_app_qmodel(weights, hw, calib, data, base, &fm, &q))
        return qkf_cli_fail("infer");
    if (qkf_cli_int_input(input, &q, &in, &B, &per)) /* a batch at a time, below */
        goto done;
    int nb = (int)(B < batch ? B : batch), K = q.cfg.num_classes;
    if (!(e = qkf_dense_int_create(&q, nb, tb ? QKF_DENSE_INT_TB_COMPAT : 0)))
        goto done;
    const qkf_graph *g = qkf_dense_int_graph(e);
    if (topt && topt->path) {
        ts.qmodel = &q;
        if (!(tr = qkf_trace_opts_open(topt, &ts, g, weights, "dense-int", argc, argv)) ||
            qkf_dense_int_set_sink(e, qkf_trace_sink(tr)))
            goto done;
    }
    x = qkf_malloc((size_t)(nb * per) * sizeof(float));
    logits = qkf_malloc((size_t)nb * K * sizeof(float));
    li = qkf_malloc((size_t)nb * K * sizeof(int64_t));
    counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    if (qkf_cli_int_out_open(&w, output, B, K))
        goto done;
    double dt = 0.0;
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (qkf_h5_rows_read_f32(in, b0, n, x))
            goto done;
        double t0 = qkf_now();
        if (qkf_dense_int_forward(e, x, n, logits, li, counts))
            goto done;
        dt += qkf_now() - t0;
        if (qkf_cli_int_out_rows(&w, b0, n, logits, li))
            goto done;
    }
    if (tr) {
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc)
            goto done;
    }
    if (qkf_cli_int_out_close(&w, output, weights, &q, g, "dense-int", "dense integer engine",
                              counts, dt, quiet))
        goto done;
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("infer");
    qkf_cli_int_out_abort(&w);
    qkf_h5_rows_close(in);
    qkf_trace_abort(tr);
    qkf_trace_spec_free(&ts);
    qkf_dense_int_free(e);
    qkf_free(x);
    qkf_free(logits);
    qkf_free(li);
    qkf_free(counts);
    qkf_qmodel_free(&q);
    qkf_model_free(&fm);
    return rc;
}

/* ---- qkf eval --hw ----------------------------------------------------------------------------- */

int qkf_cli_eval_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                    const qkf_quant_opts *base, long limit, int batch, int flips)
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
    if (qkf_evaluate_int(&q, &fm, data, limit, batch, flips, &r))
        goto done;
    const qkf_graph *g = &q.g;
    int64_t n = r.count;
    double aq = n ? (double)r.correct / (double)n : 0.0,
           af = n ? (double)r.correct_float / (double)n : 0.0;
    fprintf(stderr, "%lld test images of %s, dense integer engine (%s) %.1f s%s, %.1f s in all\n",
            (long long)n, r.source, q.hw_name, r.seconds_int,
            r.has_float ? " and float engine" : "", qkf_now() - t0);
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
