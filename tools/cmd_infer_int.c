/* qkf infer --hw PROFILE --mode event: the integer event engine (sim/sched.h, integer mode) on the
 * chip's arithmetic, writing what qkf infer --hw writes with the dense integer engine (logits,
 * logits_int, predictions, spike counts and rates), and with --cross-check the dense integer
 * engine beside it: every spike and integer logit must be equal (integers are exact), else the
 * first difference is reported and the command fails. */
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


int qkf_cli_infer_hw_event(const char *weights, const qkf_hw_profile *hw, long calib,
                           const char *data, const qkf_quant_opts *base, const char *input,
                           const char *output, int batch, int xcheck, int tb, int quiet)
{
    qkf_model fm;
    qkf_qmodel q;
    float *x = NULL, *logits = NULL, *dl = NULL;
    int64_t *li = NULL, *dli = NULL, *counts = NULL;
    qkf_sched *e = NULL;
    qkf_dense_int *d = NULL;
    qkf_h5_rows *in = NULL;
    qkf_int_out w;
    memset(&w, 0, sizeof w);
    int rc = 1;
    int64_t B, per, mism = 0, lmism = 0, spikes = 0;
    qkf_xcheck first;
    memset(&first, 0, sizeof first);
    first.layer = -1;
    int64_t first_b0 = 0;
    if (qkf_app_qmodel(weights, hw, calib, data, base, &fm, &q))
        return qkf_cli_fail("infer");
    if (qkf_cli_int_input(input, &q, &in, &B, &per)) /* a batch at a time, below */
        goto done;
    int nb = (int)(B < batch ? B : batch), K = q.cfg.num_classes;
    if (!(e = qkf_sched_create_int(&q, nb, (xcheck ? QKF_SCHED_RECORD : 0) |
                                               (tb ? QKF_SCHED_TB_COMPAT : 0))))
        goto done;
    if (xcheck && !(d = qkf_dense_int_create(&q, nb, tb ? QKF_DENSE_INT_TB_COMPAT : 0)))
        goto done;
    const qkf_graph *g = qkf_sched_graph(e);
    x = qkf_malloc((size_t)(nb * per) * sizeof(float));
    logits = qkf_malloc((size_t)nb * K * sizeof(float));
    li = qkf_malloc((size_t)nb * K * sizeof(int64_t));
    dl = qkf_malloc((size_t)nb * K * sizeof(float));
    dli = qkf_malloc((size_t)nb * K * sizeof(int64_t));
    counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    if (qkf_cli_int_out_open(&w, output, B, K))
        goto done;
    double dt = 0.0;
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (qkf_h5_rows_read_f32(in, b0, n, x))
            goto done;
        double t0 = qkf_now();
        if (qkf_sched_forward(e, x, n, logits, counts))
            goto done;
        memcpy(li, qkf_sched_logits_int(e), (size_t)n * K * sizeof(int64_t));
        dt += qkf_now() - t0;
        if (qkf_cli_int_out_rows(&w, b0, n, logits, li))
            goto done;
        if (d) {
            qkf_xcheck r;
            if (qkf_dense_int_forward(d, x, n, dl, dli, NULL) ||
                qkf_sched_compare_int(e, d, n, &r))
                goto done;
            if (r.mismatches && !mism)
                first = r, first_b0 = b0;
            mism += r.mismatches, spikes += r.spikes;
            for (int i = 0; i < n * K; i++)
                lmism += dli[i] != li[i];
        }
    }
    if (d) {
        if (mism || lmism) {
            if (first.layer >= 0)
                qkf_set_error("cross-check: the integer engines differ: %lld spikes and %lld integer "
                              "logits; first at step %d, layer %s, sample %lld, neuron %lld (dense "
                              "%d)",
                              (long long)mism, (long long)lmism, first.t,
                              g->ops[g->lif_ops[first.layer]].name,
                              (long long)(first_b0 + first.b), (long long)first.neuron,
                              first.dense_spike);
            else
                qkf_set_error("cross-check: the integer engines differ in %lld integer logits",
                              (long long)lmism);
            goto done;
        }
        if (!quiet)
            printf("cross-check: engines agree (every spike of %lld and every integer logit, "
                   "integer event vs dense integer engine)\n",
                   (long long)spikes);
    }
    if (qkf_cli_int_out_close(&w, output, weights, &q, g, "event-int", "integer event engine",
                              counts, dt, quiet))
        goto done;
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("infer");
    qkf_cli_int_out_abort(&w);
    qkf_h5_rows_close(in);
    qkf_sched_free(e);
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
