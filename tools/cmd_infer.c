/* qkf infer: run a checkpoint on an HDF5 input; write logits, spike counts and firing rates. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/h5_part.h"
#include "../io/io.h"
#include "../io/trace.h"
#include "../kernels/base.h"
#include "../sim/dense.h"
#include "../sim/sched.h"
#include "cli.h"

static void help(void)
{
    printf("usage: qkf infer --weights W.h5 --input X.h5 --output Y.h5 [--mode dense|event]\n"
           "                 [--cross-check] [--threads N] [--batch N] [--tb-compat] [--quiet]\n"
           "                 [--conv winograd4|winograd2|direct]\n"
           "\n"
           "Reads dataset 'input' from X.h5: float32 [B,C,H,W] images (cifar, imagenet) or\n"
           "[B,T,C,H,W] frames (dvs128, cifar10dvs), --batch samples at a time (an input of any\n"
           "number of samples runs in memory bounded by the batch; one whose file cannot hold\n"
           "what its shape says is refused); other datasets are ignored. The input size may\n"
           "differ from the checkpoint's img_size if the architecture allows it (no position\n"
           "embedding), e.g. imagenet models at 288 or 384. Writes to Y.h5 (atomically):\n"
           "  logits                float32 [B,classes]\n"
           "  predictions           int64 [B]\n"
           "  spike_count/<layer>   int64, spikes over T, batch and neurons, per LIF layer\n"
           "  firing_rate/<layer>   float64, spike_count / (T * B * neurons)\n"
           "Layers are named by their official module path (stage1.0.tssa.q_lif, ...).\n"
           "\n"
           "  --mode dense     the dense engine (every neuron, GEMM convolutions; default)\n"
           "  --mode event     the event-driven engine (work only where spikes arrive; frames of\n"
           "                   dvs models must hold event counts); same datasets\n"
           "  --cross-check    run both engines; report the first (step, layer, sample, neuron)\n"
           "                   where their spikes differ, or \"engines agree\"; outputs come\n"
           "                   from --mode. Fails if a difference is not a rounding flip at a\n"
           "                   threshold (default batch 4: both engines keep every tensor)\n"
           "  --threads N      OpenMP and BLAS threads (default: all cores)\n"
           "  --batch N        samples per forward pass (default 32)\n"
           "  --tb-compat      the official SSA proj_lif quirk: its membrane runs over the T*B\n"
           "                   axis, leaking across the samples of a batch (as the published\n"
           "                   checkpoints were evaluated); the batch is --batch\n");
    fputs(qkf_conv_help, stdout);
    fputs(qkf_trace_help, stdout);
    printf("chip arithmetic (docs/hardware.md): the dense integer engine, bit-exact integers;\n"
           "Y.h5 gains logits_int (int64 [B,classes]); W.h5 may be a qkf quantize output.\n"
           "With --mode event the integer event engine runs instead (same datasets); with\n"
           "--cross-check also the dense integer engine, and every spike and integer logit must\n"
           "be equal (integers are exact: no flip budget), else the first difference is named\n"
           "and the command fails. --tb-compat runs the T*B membrane in either engine. --trace\n"
           "(either engine; the same values) records v, h and input in membrane units (node\n"
           "attributes delta: the real value of a unit, threshold; docs/traces.md)\n");
    fputs(qkf_hw_help, stdout);
    fputs(qkf_quant_help, stdout);
    printf("  --data NAME      dataset of --calib (default fashion-mnist)\n");
}

/* Prints a firing-rate table: layer, neurons per sample, spikes, rate, and a bar. */
void qkf_print_rates(const qkf_graph *g, const int64_t *count, int64_t samples);
void qkf_print_rates(const qkf_graph *g, const int64_t *count, int64_t samples)
{
    printf("\n%-34s %10s %12s %9s\n", "layer", "neurons", "spikes", "rate");
    int64_t tot_n = 0, tot_s = 0;
    for (int l = 0; l < g->n_lif; l++) {
        int64_t n = qkf_graph_lif_neurons(g, l);
        double rate = (double)count[l] / ((double)n * g->cfg.T * (double)samples);
        char bar[21];
        int k = (int)(rate * 20.0 + 0.5);
        k = k > 20 ? 20 : k;
        memset(bar, '#', (size_t)k);
        bar[k] = 0;
        printf("%-34s %10lld %12lld %8.2f%% %s\n", g->ops[g->lif_ops[l]].name, (long long)n,
               (long long)count[l], 100.0 * rate, bar);
        tot_n += n, tot_s += count[l];
    }
    printf("%-34s %10lld %12lld %8.2f%%\n", "all", (long long)tot_n, (long long)tot_s,
           100.0 * (double)tot_s / ((double)tot_n * g->cfg.T * (double)samples));
}

int cmd_infer(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "infer"};
    const char *weights = NULL, *input = NULL, *output = NULL, *mode = "dense";
    long threads = 0, batch = 32;
    int conv = 0;
    int tb = 0, quiet = 0, xcheck = 0, batch_given = 0, r;
    qkf_hw_profile hw; /* --hw: the dense integer engine (tools/cmd_quantize.c) */
    int have_hw = 0;
    long calib = 0;
    qkf_quant_opts qo;
    memset(&qo, 0, sizeof qo);
    const char *data = "fashion-mnist";
    qkf_trace_opts topt;
    qkf_trace_opts_init(&topt);
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--input", &input)) ||
            (r = qkf_arg(&a, "--output", &output)) || (r = qkf_arg(&a, "--mode", &mode)) ||
            (r = qkf_arg_int(&a, "--threads", 1, 1024, &threads)) ||
            (r = qkf_arg_conv(&a, &conv)) || (r = qkf_arg_trace(&a, &topt)) ||
            (r = qkf_arg_flag(&a, "--tb-compat", &tb)) ||
            (r = qkf_arg_flag(&a, "--quiet", &quiet)) ||
            (r = qkf_arg_flag(&a, "--cross-check", &xcheck))) {
            if (r < 0)
                return qkf_cli_fail("infer");
            continue;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) {
            if (r < 0)
                return qkf_cli_fail("infer");
            have_hw = 1;
            continue;
        }
        if ((r = qkf_arg(&a, "--data", &data)) || (r = qkf_arg_quant(&a, &calib, &qo))) {
            if (r < 0)
                return qkf_cli_fail("infer");
            continue;
        }
        if ((r = qkf_arg_int(&a, "--batch", 1, 65536, &batch)) != 0) {
            if (r < 0)
                return qkf_cli_fail("infer");
            batch_given = 1;
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf infer --help)", argv[a.i]);
        return qkf_cli_fail("infer");
    }
    if (!weights || !input || !output) {
        qkf_set_error("--weights, --input and --output are required");
        return qkf_cli_fail("infer");
    }
    int event = strcmp(mode, "event") == 0;
    if (!event && strcmp(mode, "dense") != 0) {
        qkf_set_error("option --mode: '%s' is not a known engine (dense or event)", mode);
        return qkf_cli_fail("infer");
    }
    if (xcheck && !batch_given)
        batch = 4;
    if (threads)
        qkf_set_threads((int)threads);
    int isq = qkf_qckpt_is_quant(weights);
    if (have_hw || isq == 1) { /* the integer engines (tools/cmd_infer_int.c) */
        if (xcheck && !event) {
            qkf_set_error("--cross-check compares the integer event engine with the dense "
                          "integer one: it goes with --mode event");
            return qkf_cli_fail("infer");
        }
        return qkf_cli_infer_hw(weights, have_hw ? &hw : NULL, calib, data, &qo, input, output,
                                (int)batch, event, xcheck, tb, quiet, &topt, argc, argv);
    }

    int rc = 1;
    qkf_model m;
    memset(&m, 0, sizeof m);
    float *x = NULL, *logits = NULL, *other = NULL;
    int64_t *counts = NULL, *pred = NULL;
    qkf_h5_rows *in = NULL;
    float first_logit[16];
    int64_t first_pred[16];
    qkf_dense *e = NULL;
    qkf_sched *ev = NULL;
    qkf_xcheck first;
    memset(&first, 0, sizeof first);
    first.layer = -1;
    int64_t xc_spikes = 0, xc_mismatches = 0, first_sample = 0;
    qkf_h5out *o = NULL;
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    int ndim;
    int64_t shape[5];
    if (qkf_ckpt_load(weights, &m))
        goto done;
    if (!(in = qkf_h5_rows_open(input, "input", &ndim, shape))) /* a batch at a time, below */
        goto done;
    int frames = qkf_config_is_frames(&m.cfg);
    int want = frames ? 5 : 4;
    if (ndim != want) {
        qkf_set_error("%s: dataset 'input' has %d dimensions but a %s model takes %s", input, ndim,
                      qkf_variant_name(m.cfg.variant),
                      frames ? "frames [B,T,C,H,W]" : "images [B,C,H,W]");
        goto done;
    }
    int64_t B = shape[0], C = shape[frames ? 2 : 1], H = shape[frames ? 3 : 2],
            W = shape[frames ? 4 : 3];
    if (C != m.cfg.in_channels || H != W) {
        qkf_set_error("%s: dataset 'input' has %lld channels of %lld x %lld; the model takes %d "
                      "channels of a square image",
                      input, (long long)C, (long long)H, (long long)W, m.cfg.in_channels);
        goto done;
    }
    if (B < 1) {
        qkf_set_error("%s: dataset 'input' holds no samples", input);
        goto done;
    }
    if (H != m.cfg.img_size) { /* no position embedding: any size the strides allow */
        qkf_config c2 = m.cfg;
        c2.img_size = (int)H;
        if (qkf_config_validate(&c2)) {
            qkf_set_error("%s: input size %lld does not fit the model (%s)", input, (long long)H,
                          qkf_last_error());
            goto done;
        }
        m.cfg.img_size = (int)H;
    }
    if (frames && shape[1] != m.cfg.T) {
        if (!quiet)
            printf("note: input has T = %lld frames; running the model with T = %lld (checkpoint "
                   "T = %d)\n",
                   (long long)shape[1], (long long)shape[1], m.cfg.T);
        m.cfg.T = (int)shape[1];
    }
    int nb = (int)(B < batch ? B : batch);
    if (!event || xcheck) {
        int fl = (tb ? QKF_DENSE_TB_COMPAT : 0) | conv |
                 (xcheck ? QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH : 0);
        if (!(e = qkf_dense_create(&m, nb, fl)))
            goto done;
    }
    if (event || xcheck) {
        int fl = (tb ? QKF_SCHED_TB_COMPAT : 0) | (xcheck ? QKF_SCHED_RECORD : 0);
        if (!(ev = qkf_sched_create(&m, nb, fl)))
            goto done;
    }
    const qkf_graph *g = e ? qkf_dense_graph(e) : qkf_sched_graph(ev);
    int K = m.cfg.num_classes;
    int64_t per = frames ? (int64_t)m.cfg.T * C * H * W : C * H * W;
    x = qkf_malloc((size_t)(nb * per) * sizeof(float));
    logits = qkf_malloc((size_t)(nb * K) * sizeof(float));
    other = qkf_malloc((size_t)(nb * K) * sizeof(float));
    counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    pred = qkf_malloc((size_t)nb * sizeof(int64_t));
    /* the per-sample outputs are written as the batches come; the file appears on commit */
    o = qkf_h5out_open(output);
    if (!o)
        goto done;
    int64_t ls[2] = {B, K};
    if (qkf_h5out_f32_create(o, "logits", 2, ls) || qkf_h5out_i64_create(o, "predictions", 1, &B))
        goto done;
    if (topt.path) {
        if (!(tr = qkf_trace_opts_open(&topt, &ts, g, weights, mode, argc, argv)))
            goto done;
        if (event ? qkf_sched_set_trace(ev, qkf_trace_sink(tr))
                  : qkf_dense_set_sink(e, qkf_trace_sink(tr)))
            goto done;
    }
    double dt = 0.0;
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (qkf_h5_rows_read_f32(in, b0, n, x))
            goto done;
        /* the engine of --mode writes the outputs; the other one (cross-check) only compares */
        double t0 = qkf_now();
        if (event ? qkf_sched_forward(ev, x, n, logits, counts)
                  : qkf_dense_forward(e, x, n, logits, counts))
            goto done;
        dt += qkf_now() - t0;
        for (int b = 0; b < n; b++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                if (logits[b * K + k] > logits[b * K + best])
                    best = k;
            pred[b] = best;
            if (b0 + b < 16)
                first_pred[b0 + b] = best, first_logit[b0 + b] = logits[b * K + best];
        }
        if (qkf_h5out_f32_rows(o, "logits", b0, n, logits) ||
            qkf_h5out_i64_rows(o, "predictions", b0, n, pred))
            goto done;
        if (!xcheck)
            continue;
        if (event ? qkf_dense_forward(e, x, n, other, NULL)
                  : qkf_sched_forward(ev, x, n, other, NULL))
            goto done;
        qkf_xcheck xc;
        if (qkf_sched_compare(ev, e, n, &xc))
            goto done;
        xc_spikes += xc.spikes;
        if (xc.mismatches && first.layer < 0)
            first = xc, first_sample = b0 + xc.b;
        xc_mismatches += xc.mismatches;
    }
    if (tr) { /* the batches were read and written beside its writer thread (a thread-safe
               * HDF5: h5_part.c) */
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc)
            goto done;
    }
    for (int l = 0; l < g->n_lif; l++) {
        char name[QKF_MAX_NAME + 32];
        const char *ln = g->ops[g->lif_ops[l]].name;
        double rate = (double)counts[l] /
                      ((double)qkf_graph_lif_neurons(g, l) * m.cfg.T * (double)B);
        snprintf(name, sizeof name, "spike_count/%s", ln);
        if (qkf_h5out_i64(o, name, 0, NULL, &counts[l]))
            goto done;
        snprintf(name, sizeof name, "firing_rate/%s", ln);
        if (qkf_h5out_f64(o, name, 0, NULL, &rate))
            goto done;
    }
    if (qkf_h5out_attr_str(o, NULL, "engine", mode) ||
        qkf_h5out_attr_str(o, NULL, "qkf_version", QKF_VERSION) ||
        qkf_h5out_attr_str(o, NULL, "weights", weights) ||
        qkf_h5out_attr_i64(o, NULL, "tb_compat", tb))
        goto done;
    int crc = qkf_h5out_commit(o);
    o = NULL;
    if (crc)
        goto done;
    if (!quiet) {
        printf("%lld samples, %s engine, %.3f s (%.1f samples/s)\n", (long long)B, mode, dt,
               (double)B / dt);
        int show = B < 16 ? (int)B : 16;
        for (int b = 0; b < show; b++)
            printf("sample %d: class %lld (logit %.4f)\n", b, (long long)first_pred[b],
                   (double)first_logit[b]);
        if (B > show)
            printf("... %lld more in %s\n", (long long)(B - show), output);
        qkf_print_rates(g, counts, B);
        printf("\nwrote %s\n", output);
    }
    if (xcheck) {
        if (xc_mismatches == 0) {
            printf("engines agree: %lld spikes\n", (long long)xc_spikes);
        } else {
            const char *ln = g->ops[g->lif_ops[first.layer]].name;
            int near = first.has_h && fabsf(first.h - first.vth) <= 1e-5f;
            printf("engines differ in %lld of %lld spikes; first at layer %s, t=%d, sample %lld, "
                   "neuron %lld (dense %s, h = %.9g, threshold %g)%s\n",
                   (long long)xc_mismatches, (long long)xc_spikes, ln, first.t,
                   (long long)first_sample, (long long)first.neuron,
                   first.dense_spike ? "spikes" : "silent", (double)first.h, (double)first.vth,
                   near ? ": a rounding flip at the threshold, which then propagates" : "");
            if (!near) {
                qkf_set_error("engines differ at layer %s, t=%d, sample %lld, neuron %lld, away "
                              "from the threshold (h = %.9g)",
                              ln, first.t, (long long)first_sample, (long long)first.neuron,
                              (double)first.h);
                goto done;
            }
        }
    }
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("infer");
    if (o)
        qkf_h5out_abort(o);
    qkf_trace_abort(tr); /* before the engine it is attached to; keeps a file the writer failed on */
    qkf_trace_spec_free(&ts);
    qkf_dense_free(e);
    qkf_sched_free(ev);
    qkf_free(x);
    qkf_free(logits);
    qkf_free(other);
    qkf_free(counts);
    qkf_free(pred);
    qkf_h5_rows_close(in);
    qkf_model_free(&m);
    return rc;
}
