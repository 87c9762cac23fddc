/* qkf infer --hw PROFILE (or a quantised checkpoint): the integer model (qkf_app_qmodel) run by the
 * dense integer engine (sim/dense_int.h) or, with --mode event, the integer event engine
 * (sim/sched.h, integer mode), over dataset 'input' of X.h5 read a batch at a time. Both write the
 * same Y.h5 (logits, logits_int, predictions, spike counts and rates) and either records a trace in
 * membrane units (--trace; docs/traces.md). --cross-check (event mode) runs the dense integer
 * engine beside the event one: every spike and integer logit must be equal (integers are exact),
 * else the first difference is reported and the command fails. */
#include <stdio.h>
#include <string.h>

#include "../io/h5_part.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense_int.h"
#include "../sim/sched.h"
#include "app/quantize.h"
#include "cli.h"

void qkf_print_rates(const qkf_graph *g, const int64_t *count, int64_t samples); /* infer */

/* Dataset 'input' of input opened for reading a batch at a time (*in; qkf_h5_rows_close it),
 * checked against the checkpoint's own size and T; *B its samples, *per the values per sample.
 * 0, or -1 with one line naming the file and the key. */
static int int_input(const char *input, const qkf_qmodel *q, qkf_h5_rows **in, int64_t *B,
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

/* Y.h5, written as the batches come: logits, logits_int, predictions (argmax of the integer
 * logits), then spike_count/<layer>, firing_rate/<layer> and the attributes engine, hw,
 * qkf_version, weights; via .tmp + rename. The first 16 predictions are kept for the summary. */
typedef struct {
    qkf_h5out *o;
    int K;
    int64_t B;
    int64_t pred[16], logit_int[16];
    float logit[16];
} int_out;

static int out_open(int_out *w, const char *output, int64_t B, int K)
{
    memset(w, 0, sizeof *w);
    w->K = K, w->B = B;
    if (!(w->o = qkf_h5out_open(output)))
        return -1;
    int64_t ls[2] = {B, K};
    return qkf_h5out_f32_create(w->o, "logits", 2, ls) ||
                   qkf_h5out_i64_create(w->o, "logits_int", 2, ls) ||
                   qkf_h5out_i64_create(w->o, "predictions", 1, &B)
               ? -1
               : 0;
}

static int out_rows(int_out *w, int64_t b0, int n, const float *logits, const int64_t *li)
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

/* Writes the counts and attributes and commits (w->o is then gone); prints the summary. */
static int out_close(int_out *w, const char *output, const char *weights, const qkf_qmodel *q,
                     const qkf_graph *g, const char *engine, const char *label,
                     const int64_t *counts, double dt, int quiet)
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
            return -1;
        snprintf(name, sizeof name, "firing_rate/%s", ln);
        if (qkf_h5out_f64(o, name, 0, NULL, &rate))
            return -1;
    }
    if (qkf_h5out_attr_str(o, NULL, "engine", engine) ||
        qkf_h5out_attr_str(o, NULL, "hw", q->hw_name) ||
        qkf_h5out_attr_str(o, NULL, "qkf_version", QKF_VERSION) ||
        qkf_h5out_attr_str(o, NULL, "weights", weights))
        return -1;
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
}

/* The cross-check's tally over the batches: the first difference, in causal order within the
 * batch where the engines first part. */
typedef struct {
    int64_t spikes, mism, lmism, b0;
    qkf_xcheck first;
} xcheck_sum;

static int xcheck_batch(xcheck_sum *x, const qkf_sched *e, qkf_dense_int *d, const float *in,
                        int n, int K, int64_t b0, float *dl, int64_t *dli, const int64_t *li)
{
    qkf_xcheck r;
    if (qkf_dense_int_forward(d, in, n, dl, dli, NULL) || qkf_sched_compare_int(e, d, n, &r))
        return -1;
    if (r.mismatches && !x->mism)
        x->first = r, x->b0 = b0;
    x->mism += r.mismatches, x->spikes += r.spikes;
    for (int i = 0; i < n * K; i++)
        x->lmism += dli[i] != li[i];
    return 0;
}

static int xcheck_verdict(const xcheck_sum *x, const qkf_graph *g, int quiet)
{
    if (x->mism || x->lmism) {
        if (x->first.layer >= 0)
            return qkf_set_error("cross-check: the integer engines differ: %lld spikes and %lld "
                                 "integer logits; first at step %d, layer %s, sample %lld, neuron "
                                 "%lld (dense %d)",
                                 (long long)x->mism, (long long)x->lmism, x->first.t,
                                 g->ops[g->lif_ops[x->first.layer]].name,
                                 (long long)(x->b0 + x->first.b), (long long)x->first.neuron,
                                 x->first.dense_spike);
        return qkf_set_error("cross-check: the integer engines differ in %lld integer logits",
                             (long long)x->lmism);
    }
    if (!quiet)
        printf("cross-check: engines agree (every spike of %lld and every integer logit, "
               "integer event vs dense integer engine)\n",
               (long long)x->spikes);
    return 0;
}

int qkf_cli_infer_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                     const qkf_quant_opts *base, const char *input, const char *output, int batch,
                     int event, int xcheck, int tb, int quiet, const qkf_trace_opts *topt,
                     int argc, char **argv)
{
    qkf_model fm;
    qkf_qmodel q;
    float *x = NULL, *logits = NULL, *dl = NULL;
    int64_t *li = NULL, *dli = NULL, *counts = NULL;
    qkf_sched *ev = NULL;    /* event mode */
    qkf_dense_int *d = NULL; /* dense mode, or the cross-check's */
    qkf_h5_rows *in = NULL;
    int_out w;
    memset(&w, 0, sizeof w);
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    xcheck_sum xs;
    memset(&xs, 0, sizeof xs);
    xs.first.layer = -1;
    int rc = 1;
    int64_t B, per;
    if (qkf_app_qmodel(weights, hw, calib, data, base, &fm, &q))
        return qkf_cli_fail("infer");
    if (int_input(input, &q, &in, &B, &per)) /* a batch at a time, below */
        goto done;
    int nb = (int)(B < batch ? B : batch), K = q.cfg.num_classes;
    if (event && !(ev = qkf_sched_create_int(&q, nb, (xcheck ? QKF_SCHED_RECORD : 0) |
                                                         (tb ? QKF_SCHED_TB_COMPAT : 0))))
        goto done;
    if ((!event || xcheck) && !(d = qkf_dense_int_create(&q, nb, tb ? QKF_DENSE_INT_TB_COMPAT : 0)))
        goto done;
    const qkf_graph *g = event ? qkf_sched_graph(ev) : qkf_dense_int_graph(d);
    const char *engine = event ? "event-int" : "dense-int";
    if (topt && topt->path) {
        ts.qmodel = &q;
        if (!(tr = qkf_trace_opts_open(topt, &ts, g, weights, engine, argc, argv)) ||
            (event ? qkf_sched_set_trace(ev, qkf_trace_sink(tr))
                   : qkf_dense_int_set_sink(d, qkf_trace_sink(tr))))
            goto done;
    }
    x = qkf_malloc((size_t)(nb * per) * sizeof(float));
    logits = qkf_malloc((size_t)nb * K * sizeof(float));
    li = qkf_malloc((size_t)nb * K * sizeof(int64_t));
    counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    if (xcheck) {
        dl = qkf_malloc((size_t)nb * K * sizeof(float));
        dli = qkf_malloc((size_t)nb * K * sizeof(int64_t));
    }
    if (out_open(&w, output, B, K))
        goto done;
    double dt = 0.0;
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (qkf_h5_rows_read_f32(in, b0, n, x))
            goto done;
        double t0 = qkf_now();
        if (event) {
            if (qkf_sched_forward(ev, x, n, logits, counts))
                goto done;
            memcpy(li, qkf_sched_logits_int(ev), (size_t)n * K * sizeof(int64_t));
        } else if (qkf_dense_int_forward(d, x, n, logits, li, counts))
            goto done;
        dt += qkf_now() - t0;
        if (out_rows(&w, b0, n, logits, li))
            goto done;
        if (xcheck && xcheck_batch(&xs, ev, d, x, n, K, b0, dl, dli, li))
            goto done;
    }
    if (xcheck && xcheck_verdict(&xs, g, quiet))
        goto done;
    if (tr) { /* closed before the output is written (docs/traces.md) */
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc)
            goto done;
    }
    if (out_close(&w, output, weights, &q, g, engine,
                  event ? "integer event engine" : "dense integer engine", counts, dt, quiet))
        goto done;
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("infer");
    if (w.o)
        qkf_h5out_abort(w.o);
    qkf_h5_rows_close(in);
    qkf_trace_abort(tr); /* before the engine it is attached to */
    qkf_trace_spec_free(&ts);
    qkf_sched_free(ev);
    qkf_dense_int_free(d);
    qkf_free(x);
    qkf_free(logits);
    qkf_free(li);
    qkf_free(dl);
    qkf_free(dli);
    qkf_free(counts);
    qkf_qmodel_free(&q);
    qkf_model_free(&fm);
    return rc;
}
