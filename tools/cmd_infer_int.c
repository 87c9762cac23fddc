/* qkf infer --hw PROFILE --mode event: the integer event engine (sim/sched.h, integer mode) on the
 * chip's arithmetic, writing what qkf infer --hw writes with the dense integer engine (logits,
 * logits_int, predictions, spike counts and rates), and with --cross-check the dense integer
 * engine beside it: every spike and integer logit must be equal (integers are exact), else the
 * first difference is reported and the command fails. */
#include <stdio.h>
#include <string.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense_int.h"
#include "../sim/sched.h"
#include "cli.h"


int qkf_cli_infer_hw_event(const char *weights, const qkf_hw_profile *hw, long calib,
                           const char *data, const qkf_quant_opts *base, const char *input,
                           const char *output, int batch, int xcheck, int tb, int quiet)
{
    qkf_model fm;
    qkf_qmodel q;
    float *x = NULL, *logits = NULL, *dl = NULL;
    int64_t *li = NULL, *dli = NULL, *counts = NULL, *pred = NULL;
    qkf_sched *e = NULL;
    qkf_dense_int *d = NULL;
    int rc = 1, ndim;
    int64_t shape[5], mism = 0, lmism = 0, spikes = 0;
    qkf_xcheck first;
    memset(&first, 0, sizeof first);
    first.layer = -1;
    int64_t first_b0 = 0;
    if (qkf_cli_qmodel(weights, hw, calib, data, base, &fm, &q))
        return qkf_cli_fail("infer");
    if (qkf_h5_read_f32(input, "input", &x, &ndim, shape))
        goto done;
    int frames = qkf_config_is_frames(&q.cfg);
    if (ndim != (frames ? 5 : 4) || shape[frames ? 2 : 1] != q.cfg.in_channels ||
        shape[ndim - 1] != q.cfg.img_size || shape[ndim - 2] != q.cfg.img_size ||
        (frames && shape[1] != q.cfg.T) || shape[0] < 1) {
        qkf_set_error("%s: dataset 'input' does not fit the model (%s %d x %d x %d%s; --hw runs "
                      "the checkpoint's own size and T)",
                      input, frames ? "frames [B,T,C,H,W]:" : "images [B,C,H,W]:",
                      q.cfg.in_channels, q.cfg.img_size, q.cfg.img_size,
                      frames ? ", T frames" : "");
        goto done;
    }
    int64_t B = shape[0];
    int nb = (int)(B < batch ? B : batch), K = q.cfg.num_classes;
    if (!(e = qkf_sched_create_int(&q, nb, (xcheck ? QKF_SCHED_RECORD : 0) |
                                               (tb ? QKF_SCHED_TB_COMPAT : 0))))
        goto done;
    if (xcheck && !(d = qkf_dense_int_create(&q, nb, tb ? QKF_DENSE_INT_TB_COMPAT : 0)))
        goto done;
    const qkf_graph *g = qkf_sched_graph(e);
    logits = qkf_malloc((size_t)(B * K) * sizeof(float));
    li = qkf_malloc((size_t)(B * K) * sizeof(int64_t));
    dl = qkf_malloc((size_t)nb * K * sizeof(float));
    dli = qkf_malloc((size_t)nb * K * sizeof(int64_t));
    counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    pred = qkf_malloc((size_t)B * sizeof(int64_t));
    int64_t per = 1;
    for (int i = 1; i < ndim; i++)
        per *= shape[i];
    double t0 = qkf_now(), tx = 0.0;
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (qkf_sched_forward(e, x + b0 * per, n, logits + b0 * K, counts))
            goto done;
        memcpy(li + b0 * K, qkf_sched_logits_int(e), (size_t)n * K * sizeof(int64_t));
        if (d) {
            double t1 = qkf_now();
            qkf_xcheck r;
            if (qkf_dense_int_forward(d, x + b0 * per, n, dl, dli, NULL) ||
                qkf_sched_compare_int(e, d, n, &r))
                goto done;
            tx += qkf_now() - t1;
            if (r.mismatches && !mism)
                first = r, first_b0 = b0;
            mism += r.mismatches, spikes += r.spikes;
            for (int i = 0; i < n * K; i++)
                lmism += dli[i] != li[b0 * K + i];
        }
    }
    double dt = qkf_now() - t0 - tx;
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
    if (qkf_cli_infer_int_write(output, weights, &q, g, "event-int", "integer event engine", B,
                                logits, li, counts, pred, dt, quiet))
        goto done;
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("infer");
    qkf_sched_free(e);
    qkf_dense_int_free(d);
    qkf_free(x);
    qkf_free(logits);
    qkf_free(li);
    qkf_free(dl);
    qkf_free(dli);
    qkf_free(counts);
    qkf_free(pred);
    qkf_qmodel_free(&q);
    qkf_model_free(&fm);
    return rc;
}
