/* qkf sim: run a checkpoint with the event-driven engine (default) or the dense engine and report
 * the sparsity and the work: per layer, per attention head and per time step, the events in,
 * spikes out, accumulates performed, multiply-accumulates, and energy, beside the paper's
 * firing-rate estimate (spec section 7.3). A table on the terminal; JSON or CSV with --report
 * (written to a temporary file and renamed, so a failed run leaves nothing behind). */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/dataset.h"
#include "../io/h5_part.h"
#include "../io/io.h"
#include "../io/map_json.h"
#include "../io/trace.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense.h"
#include "../sim/dense_int.h"
#include "../sim/dist.h"
#include "app/dist_dataset.h"
#include "../sim/sched.h"
#include "../sim/cost.h"
#include "../sim/neurobench.h"
#include "../sim/stats.h"
#include "cli.h"

static void help(void)
{
    printf(
        "usage: qkf sim --weights W.h5 (--input X.h5 | --data NAME [--limit N])\n"
        "               [--mode event|dense] [--report FILE.json|FILE.csv] [--threads N]\n"
        "               [--batch N] [--e-ac 0.9] [--e-mac 4.6] [--tb-compat] [--quiet]\n"
        "               [--conv ALGO] [--hw PROFILE] [--neurobench]\n"
        "\n"
        "Runs the model on every sample of dataset 'input' of X.h5 (float32 [B,C,H,W] images, or\n"
        "[B,T,C,H,W] event-count frames for dvs models; read --batch samples at a time,\n"
        "any number of them in memory bounded by the batch), or on the test split of an image\n"
        "dataset (--data NAME, read and normalised as qkf eval does; the accuracy is printed),\n"
        "and reports per layer, per attention head and per time step (averaged per sample):\n"
        "  in events    event entries delivered to the layer (an entry may carry a count > 1)\n"
        "  in spikes    spikes those entries carry\n"
        "  out spikes   spikes emitted (LIF layers), events kept (masks), spikes summed (adds)\n"
        "  rate         out spikes / (neurons x T)\n"
        "  ACs          accumulates performed: one per arriving spike and target neuron\n"
        "  MACs         multiply-accumulates: the encoding conv on a real-valued image (once per\n"
        "               sample: the image is the same at every step) and the readout head\n"
        "  est SOP/MAC  the paper's estimate, SOP = fr x T x FLOPs of the layer (spec 7.3)\n"
        "  energy       ACs x e_ac + MACs x e_mac, beside the estimate's\n"
        "With --mode dense the dense engine runs instead, and MACs counts every multiply-add it\n"
        "performs (what a GPU or CPU does).\n"
        "\n"
        "  --mode event|dense   engine (default event)\n"
        "  --report FILE        also write every counter, per layer, head and step (.json, .csv)\n"
        "  --limit N            with --data: the first N test samples (default: all)\n"
        "  --threads N          OpenMP (and BLAS) threads (default: all cores)\n"
        "  --batch N            samples per forward pass (default 8)\n"
        "  --e-ac, --e-mac      energy per accumulate and multiply-accumulate in pJ (45 nm:\n"
        "                       0.9 and 4.6, Horowitz 2014)\n"
        "  --tb-compat          the official SSA proj_lif quirk (membrane over the T*B axis)\n"
        "  --quiet              no table (with --report)\n"
        "  --hw PROFILE         also map the model onto a chip (as qkf map does) and price every\n"
        "                       step from the event engine's spikes as SANA-FE's simple model\n"
        "                       does: per layer, per step and in total the energy split (synapse,\n"
        "                       dendrite, soma, network), the latency per step and per inference,\n"
        "                       the busiest core; the report gains \"hw\" (docs/report.md).\n"
        "                       PROFILE: a bundled chip (qkf hw list) or a profile file\n"
        "  --neurobench         also NeuroBench's metrics, as NeuroBench defines them (conv and\n"
        "                       linear layers only): ActivationSparsity, SynapticOperations\n"
        "                       (Effective_MACs, Effective_ACs, Dense), MembraneUpdates,\n"
        "                       Footprint, ConnectionSparsity; the report gains \"neurobench\".\n"
        "                       The membranes come from a dense-engine run of the same samples\n"
        "                       beside the event engine's (on with --hw)\n");
    fputs(qkf_conv_help, stdout);
    fputs(qkf_trace_help, stdout);
    printf("chip arithmetic (docs/hardware.md): the integer event engine on the profile's\n"
           "arithmetic (W.h5: a float checkpoint, quantised on load, or a qkf quantize output);\n"
           "the same counters, then per LIF layer how many spikes differ from the float model's\n"
           "(the float event engine on the same samples; not for a quantised checkpoint, which\n"
           "holds no float model). Not with --mode dense or under mpirun. --trace records the\n"
           "integer spikes and membranes (membrane units; docs/traces.md) from the dense integer\n"
           "engine run beside the event engine (their spikes are equal bit for bit).\n");
    fputs(qkf_hw_help, stdout);
    printf("  --calib N        quantise with scales calibrated on the first N samples of the run\n"
           "                   (float checkpoints; default: the profile's headroom)\n");
}

/* ---- formatting ----------------------------------------------------------------------------- */

/* A number in 7 characters with an SI suffix: 987, 12.3k, 1.37G. */
static const char *si(double v, char *buf)
{
    static const char *suf[] = {"", "k", "M", "G", "T", "P"};
    int k = 0;
    double a = fabs(v);
    while (a >= 999.5 && k < 5)
        a /= 1000.0, v /= 1000.0, k++;
    if (k == 0 && v == floor(v))
        snprintf(buf, 16, "%.0f", v);
    else
        snprintf(buf, 16, a >= 99.95 ? "%.0f%s" : a >= 9.995 ? "%.1f%s" : "%.2f%s", v, suf[k]);
    return buf;
}

typedef struct {
    double e_ac, e_mac;
    const char *engine, *weights, *input;
    int threads, tb;
    const qkf_cost *hw; /* --hw: the chip's costs (sim/cost.h), or NULL */
    const qkf_nb *nb;   /* --neurobench (sim/neurobench.h), or NULL */
} report_info;

static double spikes_in(const qkf_work *w)
{
    return (double)(w->in_spikes[0] + w->in_spikes[1] + w->in_spikes[2]);
}

static double est_energy(const qkf_stats *s, int node, const qkf_work *w, int64_t samples,
                         const report_info *ri)
{
    return ri->e_ac * qkf_stats_est_sops(s, node, w) +
           ri->e_mac * qkf_stats_est_macs(s, node, samples);
}

static void print_table(const qkf_stats *s, const report_info *ri)
{
    double S = (double)s->samples;
    char b[8][16];
    printf("\n%s engine: %lld samples x T = %d, %.3f s (%.1f ms per sample)%s\n", ri->engine,
           (long long)s->samples, s->T, s->seconds, 1e3 * s->seconds / S,
           ri->tb ? ", tb_compat" : "");
    printf("per sample; energy in nJ at %.2f pJ/AC and %.2f pJ/MAC; est = firing-rate formula "
           "(spec 7.3)\n\n",
           ri->e_ac, ri->e_mac);
    printf("%-32s %-8s %7s %7s %7s %7s %7s %7s %7s %7s %9s %9s\n", "layer", "kind", "in ev",
           "in sp", "out sp", "rate", "ACs", "MACs", "est SOP", "est MAC", "energy", "est E");
    double tot_e = 0, tot_est = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        const qkf_node_info *nd = &s->node[i];
        qkf_work w = qkf_stats_node_total(s, i, -1);
        double e = qkf_energy_pj(&w, ri->e_ac, ri->e_mac),
               est = est_energy(s, i, &w, s->samples, ri);
        tot_e += e, tot_est += est;
        char rate[16] = "";
        if (nd->neurons > 0)
            snprintf(rate, sizeof rate, "%.2f%%",
                     100.0 * (double)w.out_spikes / ((double)nd->neurons * s->T * S));
        printf("%-32s %-8s %7s %7s %7s %7s %7s %7s %7s %7s %9.2f %9.2f\n", nd->name,
               qkf_node_kind_name(nd->kind), si((double)w.in_events / S, b[0]),
               si(spikes_in(&w) / S, b[1]), si((double)w.out_spikes / S, b[2]), rate,
               si((double)w.acs / S, b[3]), si((double)w.macs / S, b[4]),
               si(qkf_stats_est_sops(s, i, &w) / S, b[5]),
               si(qkf_stats_est_macs(s, i, s->samples) / S, b[7]), e / S * 1e-3, est / S * 1e-3);
        if (nd->heads > 0) { /* one line: the head's main figure */
            int acs = nd->kind == QKF_NODE_QK_SUM || nd->kind == QKF_NODE_SSA;
            printf("  %-30s", acs ? "per head: ACs" : "per head: out spikes");
            for (int h = 0; h < nd->heads; h++) {
                qkf_work wh = qkf_stats_node_total(s, i, h);
                printf(" %s", si((acs ? (double)wh.acs : (double)wh.out_spikes) / S, b[6]));
            }
            printf("\n");
        }
    }
    /* per step: events delivered and spikes carried over all nodes; LIF spikes emitted */
    printf("\n%-6s %9s %9s %9s %9s %9s %11s\n", "step", "in ev", "in sp", "LIF sp", "ACs", "MACs",
           "energy nJ");
    for (int t = 0; t < s->T; t++) {
        qkf_work w = qkf_stats_step_total(s, t);
        int64_t lif = 0;
        for (int i = 0; i < s->n_nodes; i++)
            if (s->node[i].neurons > 0)
                lif += s->w[(int64_t)i * s->T + t].out_spikes;
        printf("t=%-4d %9s %9s %9s %9s %9s %11.2f\n", t, si((double)w.in_events / S, b[0]),
               si(spikes_in(&w) / S, b[1]), si((double)lif / S, b[2]), si((double)w.acs / S, b[3]),
               si((double)w.macs / S, b[4]), qkf_energy_pj(&w, ri->e_ac, ri->e_mac) / S * 1e-3);
    }
    qkf_work all = qkf_stats_step_total(s, -1);
    int64_t lif_n = 0, lif_s = 0;
    for (int i = 0; i < s->n_nodes; i++)
        if (s->node[i].neurons > 0) {
            lif_n += s->node[i].neurons;
            lif_s += qkf_stats_node_total(s, i, -1).out_spikes;
        }
    printf("%-6s %9s %9s %9s %9s %9s %11.2f\n", "all", si((double)all.in_events / S, b[0]),
           si(spikes_in(&all) / S, b[1]), si((double)lif_s / S, b[2]),
           si((double)all.acs / S, b[3]), si((double)all.macs / S, b[4]), tot_e / S * 1e-3);
    printf("\nfiring rate of all LIF neurons: %.2f%% (%s neurons x T = %d)\n",
           100.0 * (double)lif_s / ((double)lif_n * s->T * S), si((double)lif_n, b[0]), s->T);
    printf("energy per sample: %.4f uJ measured (%s ACs x %.2f pJ + %s MACs x %.2f pJ)\n",
           tot_e / S * 1e-6, si((double)all.acs / S, b[1]), ri->e_ac,
           si((double)all.macs / S, b[2]), ri->e_mac);
    printf("                   %.4f uJ by the firing-rate formula (measured / estimate = %.3f)\n",
           tot_est / S * 1e-6, tot_est > 0 ? tot_e / tot_est : 0.0);
}

/* ---- JSON and CSV -----------------------------------------------------------------------------
 */

static void json_work(FILE *f, const qkf_stats *s, int node, const qkf_work *w, int64_t neurons,
                      double samples, int with_macs, const report_info *ri)
{
    fprintf(f,
            "\"in_events\": %lld, \"in_spikes\": [%lld, %lld, %lld], \"out_spikes\": %lld, "
            "\"acs\": %lld, \"macs\": %lld, \"est_sops\": %.6g",
            (long long)w->in_events, (long long)w->in_spikes[0], (long long)w->in_spikes[1],
            (long long)w->in_spikes[2], (long long)w->out_spikes, (long long)w->acs,
            (long long)w->macs, qkf_stats_est_sops(s, node, w));
    if (neurons > 0)
        fprintf(f, ", \"firing_rate\": %.6g", (double)w->out_spikes / ((double)neurons * samples));
    fprintf(f, ", \"energy_pj\": %.6g", qkf_energy_pj(w, ri->e_ac, ri->e_mac));
    if (with_macs)
        fprintf(f, ", \"est_macs\": %.6g, \"est_energy_pj\": %.6g",
                qkf_stats_est_macs(s, node, s->samples), est_energy(s, node, w, s->samples, ri));
}

static void write_json(FILE *f, const qkf_stats *s, const report_info *ri)
{
    double S = (double)s->samples;
    fprintf(f, "{\n  \"engine\": ");
    qkf_json_str(f, ri->engine);
    fprintf(f, ",\n  \"weights\": ");
    qkf_json_str(f, ri->weights);
    fprintf(f, ",\n  \"input\": ");
    qkf_json_str(f, ri->input);
    fprintf(
        f,
        ",\n  \"qkf_version\": \"%s\",\n  \"samples\": %lld,\n  \"T\": %d,\n  \"threads\": %d,\n"
        "  \"tb_compat\": %d,\n  \"seconds\": %.6g,\n  \"e_ac_pj\": %.6g,\n  \"e_mac_pj\": %.6g,\n",
        QKF_VERSION, (long long)s->samples, s->T, ri->threads, ri->tb, s->seconds, ri->e_ac,
        ri->e_mac);
    qkf_work all = qkf_stats_step_total(s, -1);
    double est = 0, est_e = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        qkf_work w = qkf_stats_node_total(s, i, -1);
        est += qkf_stats_est_sops(s, i, &w);
        est_e += est_energy(s, i, &w, s->samples, ri);
    }
    fprintf(f,
            "  \"totals\": {\"in_events\": %lld, \"out_spikes\": %lld, \"acs\": %lld, \"macs\": "
            "%lld, \"est_sops\": %.6g, \"energy_pj\": %.6g, \"est_energy_pj\": %.6g},\n",
            (long long)all.in_events, (long long)all.out_spikes, (long long)all.acs,
            (long long)all.macs, est, qkf_energy_pj(&all, ri->e_ac, ri->e_mac), est_e);
    fprintf(f, "  \"steps\": [");
    for (int t = 0; t < s->T; t++) {
        qkf_work w = qkf_stats_step_total(s, t);
        fprintf(f,
                "%s\n    {\"t\": %d, \"in_events\": %lld, \"out_spikes\": %lld, \"acs\": %lld, "
                "\"macs\": %lld, \"energy_pj\": %.6g}",
                t ? "," : "", t, (long long)w.in_events, (long long)w.out_spikes, (long long)w.acs,
                (long long)w.macs, qkf_energy_pj(&w, ri->e_ac, ri->e_mac));
    }
    fprintf(f, "\n  ],\n  \"nodes\": [");
    for (int i = 0; i < s->n_nodes; i++) {
        const qkf_node_info *nd = &s->node[i];
        qkf_work w = qkf_stats_node_total(s, i, -1);
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        qkf_json_str(f, nd->name);
        fprintf(f,
                ", \"kind\": \"%s\", \"neurons\": %lld, \"heads\": %d, \"flops\": %lld, "
                "\"seconds\": %.6g,\n     ",
                qkf_node_kind_name(nd->kind), (long long)nd->neurons, nd->heads,
                (long long)nd->flops, s->node_seconds ? s->node_seconds[i] : 0.0);
        json_work(f, s, i, &w, nd->neurons, (double)s->T * S, 1, ri);
        fprintf(f, ",\n     \"steps\": [");
        for (int t = 0; t < s->T; t++) {
            const qkf_work *wt = &s->w[(int64_t)i * s->T + t];
            fprintf(f, "%s{\"t\": %d, ", t ? ", " : "", t);
            json_work(f, s, i, wt, nd->neurons, S, 0, ri);
            fprintf(f, "}");
        }
        fprintf(f, "]");
        if (nd->heads > 0) {
            fprintf(f, ",\n     \"head_work\": [");
            for (int h = 0; h < nd->heads; h++) {
                qkf_work wh = qkf_stats_node_total(s, i, h);
                fprintf(f, "%s\n       {\"head\": %d, ", h ? "," : "", h);
                json_work(f, s, i, &wh, nd->neurons / nd->heads, (double)s->T * S, 0, ri);
                fprintf(f, ", \"steps\": [");
                for (int t = 0; t < s->T; t++) {
                    const qkf_work *wt = &s->wh[((int64_t)i * s->heads_max + h) * s->T + t];
                    fprintf(f, "%s{\"t\": %d, ", t ? ", " : "", t);
                    json_work(f, s, i, wt, nd->neurons / nd->heads, S, 0, ri);
                    fprintf(f, "}");
                }
                fprintf(f, "]}");
            }
            fprintf(f, "]");
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]");
    if (ri->hw) {
        fprintf(f, ",\n  \"hw\": ");
        qkf_cost_write_json(f, ri->hw);
    }
    if (ri->nb) {
        fprintf(f, ",\n  \"neurobench\": ");
        qkf_nb_write_json(f, ri->nb);
    }
    fprintf(f, "\n}\n");
}

static void csv_row(FILE *f, const qkf_stats *s, int node, int head, int t, const qkf_work *w,
                    const report_info *ri)
{
    const qkf_node_info *nd = &s->node[node];
    int64_t neurons = head >= 0 && nd->heads ? nd->neurons / nd->heads : nd->neurons;
    double steps = t < 0 ? (double)s->T : 1.0;
    char hs[16] = "all", ts[16] = "all", rate[32] = "";
    if (head >= 0)
        snprintf(hs, sizeof hs, "%d", head);
    if (t >= 0)
        snprintf(ts, sizeof ts, "%d", t);
    if (neurons > 0)
        snprintf(rate, sizeof rate, "%.6g",
                 (double)w->out_spikes / ((double)neurons * steps * (double)s->samples));
    double est_macs = head < 0 && t < 0 ? qkf_stats_est_macs(s, node, s->samples) : 0.0;
    fprintf(f, "%s,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%s,%lld,%lld,%.6g,%.6g,%.6g,%.6g\n", nd->name,
            qkf_node_kind_name(nd->kind), hs, ts, (long long)s->samples, (long long)neurons,
            (long long)w->in_events,
            (long long)(w->in_spikes[0] + w->in_spikes[1] + w->in_spikes[2]),
            (long long)w->out_spikes, rate, (long long)w->acs, (long long)w->macs,
            qkf_stats_est_sops(s, node, w), est_macs, qkf_energy_pj(w, ri->e_ac, ri->e_mac),
            ri->e_ac * qkf_stats_est_sops(s, node, w) + ri->e_mac * est_macs);
}

static void write_csv(FILE *f, const qkf_stats *s, const report_info *ri)
{
    fprintf(f, "node,kind,head,t,samples,neurons,in_events,in_spikes,out_spikes,firing_rate,acs,"
               "macs,est_sops,est_macs,energy_pj,est_energy_pj\n");
    for (int i = 0; i < s->n_nodes; i++) {
        qkf_work w = qkf_stats_node_total(s, i, -1);
        csv_row(f, s, i, -1, -1, &w, ri);
        for (int t = 0; t < s->T; t++)
            csv_row(f, s, i, -1, t, &s->w[(int64_t)i * s->T + t], ri);
        for (int h = 0; h < s->node[i].heads; h++) {
            qkf_work wh = qkf_stats_node_total(s, i, h);
            csv_row(f, s, i, h, -1, &wh, ri);
            for (int t = 0; t < s->T; t++)
                csv_row(f, s, i, h, t, &s->wh[((int64_t)i * s->heads_max + h) * s->T + t], ri);
        }
    }
}

/* Writes the report to path.tmp.<pid>, then renames it over path. */
static int write_report(const char *path, int json, const qkf_stats *s, const report_info *ri)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return qkf_set_error("%s: cannot create the report (%s)", path, strerror(errno));
    if (json)
        write_json(f, s, ri);
    else
        write_csv(f, s, ri);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return qkf_set_error("%s: cannot write the report (%s)", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return qkf_set_error("%s: cannot rename the report into place (%s)", path, strerror(err));
    }
    return 0;
}

/* ---- the command ---------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* Checks dataset 'input' of path against the model (as qkf infer does) from its shape: the
 * samples are read a batch at a time by the run (*B samples of *per values each). */
static int load_input(const char *path, qkf_model *m, qkf_h5_rows **in, int64_t *B,
                      int64_t *per)
{
    int ndim;
    int64_t shape[5];
    if (!(*in = qkf_h5_rows_open(path, "input", &ndim, shape)))
        return -1;
    int frames = qkf_config_is_frames(&m->cfg);
    if (ndim != (frames ? 5 : 4))
        return qkf_set_error("%s: dataset 'input' has %d dimensions but a %s model takes %s", path,
                             ndim, qkf_variant_name(m->cfg.variant),
                             frames ? "frames [B,T,C,H,W]" : "images [B,C,H,W]");
    int64_t C = shape[frames ? 2 : 1], H = shape[frames ? 3 : 2], W = shape[frames ? 4 : 3];
    if (C != m->cfg.in_channels || H != W)
        return qkf_set_error("%s: dataset 'input' has %lld channels of %lld x %lld; the model "
                             "takes %d channels of a square image",
                             path, (long long)C, (long long)H, (long long)W, m->cfg.in_channels);
    if (shape[0] < 1)
        return qkf_set_error("%s: dataset 'input' holds no samples", path);
    if (H != m->cfg.img_size) {
        qkf_config c2 = m->cfg;
        c2.img_size = (int)H;
        if (qkf_config_validate(&c2))
            return qkf_set_error("%s: input size %lld does not fit the model (%s)", path,
                                 (long long)H, qkf_last_error());
        m->cfg.img_size = (int)H;
    }
    if (frames) {
        if (shape[1] < 1 || shape[1] > 1024)
            return qkf_set_error("%s: dataset 'input' has %lld time steps (1..1024)", path,
                                 (long long)shape[1]);
        m->cfg.T = (int)shape[1];
    }
    *B = shape[0];
    *per = frames ? (int64_t)m->cfg.T * C * H * W : C * H * W;
    if (*B < qkf_dist_size())
        return qkf_set_error("%s: %lld samples for %d ranks (use fewer ranks)", path,
                             (long long)*B, qkf_dist_size());
    return 0;
}

/* Under mpirun, rank 0 prints how many samples each rank holds (collective). */
static int report_held(int64_t n, int64_t bytes, int quiet)
{
    int nr = qkf_dist_size();
    if (nr == 1)
        return 0;
    int64_t *all = qkf_calloc((size_t)nr * 2, sizeof(int64_t));
    int rc = qkf_dist_gather_i64(n, all) || qkf_dist_gather_i64(bytes, all + nr) ? -1 : 0;
    int64_t total = 0; /* the shards partition the samples */
    for (int r = 0; r < nr; r++)
        total += all[r];
    if (rc == 0 && qkf_dist_rank() == 0 && !quiet)
        for (int r = 0; r < nr; r++)
            fprintf(stderr, "rank %d holds %lld of %lld samples (%.2f MB)\n", r, (long long)all[r],
                    (long long)total, (double)all[nr + r] / 1e6);
    qkf_free(all);
    return rc;
}

/* The test split of image dataset NAME, checked against the model (as qkf eval does). Under
 * mpirun (qkf_dist_dataset_shard) d holds this rank's shard alone and *B is its size; a return
 * of -2 means another rank failed. */
static int load_data(const char *name, qkf_model *m, int64_t limit, qkf_dataset *d, int64_t *B)
{
    int rc = qkf_dist_dataset_shard(name, 0, limit, d);
    if (rc)
        return rc;
    if (qkf_config_is_frames(&m->cfg) != (d->t > 0))
        return qkf_set_error(d->t > 0 ? "%s: event frames fit only a dvs128 or cifar10dvs model, "
                                        "not %s"
                                      : "%s: a %s model takes event frames; image datasets do "
                                        "not fit it (qkf events emulate --out X.h5 makes frames)",
                             d->source, qkf_variant_name(m->cfg.variant));
    if (d->t > 0 && d->t != m->cfg.T)
        return qkf_set_error("%s: %d frames per sample but the model has T = %d", d->source,
                             d->t, m->cfg.T);
    if (d->c != m->cfg.in_channels || d->h != d->w)
        return qkf_set_error("%s: images are %d x %d x %d but the model takes %d channels of a "
                             "square image",
                             d->source, d->c, d->h, d->w, m->cfg.in_channels);
    if (d->h != m->cfg.img_size) { /* no position embedding: any size the strides allow */
        qkf_config c2 = m->cfg;
        c2.img_size = d->h;
        if (qkf_config_validate(&c2))
            return qkf_set_error("%s: image size %d does not fit the model (%s)", d->source, d->h,
                                 qkf_last_error());
        m->cfg.img_size = d->h;
    }
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] >= m->cfg.num_classes)
            return qkf_set_error("%s: sample %lld has label %d but the model has %d classes",
                                 d->source, (long long)(d->index ? d->index[i] : i),
                                 d->labels[i], m->cfg.num_classes);
    *B = !d->index && limit > 0 && limit < d->n ? limit : d->n;
    if (*B < 1)
        return qkf_set_error("%s: the test split holds no samples", d->source);
    return 0;
}

/* ---- qkf sim --hw: the integer event engine --------------------------------------------------- */

/* Per LIF layer: spikes of the float and of the integer engine, and the neurons x steps where
 * they differ. */
typedef struct {
    int64_t fs, is, diff, n;
} flip_row;

static void print_flips(const qkf_graph *g, const flip_row *fr)
{
    int64_t tf = 0, ti = 0, td = 0, tn = 0;
    printf("\nspikes against the float model (the float event engine on the same samples):\n");
    printf("%-34s %12s %12s %12s %9s\n", "layer", "float", "integer", "differ", "of n x T");
    for (int l = 0; l < g->n_lif; l++) {
        const flip_row *r = &fr[l];
        printf("%-34s %12lld %12lld %12lld %8.3f%%\n", g->ops[g->lif_ops[l]].name,
               (long long)r->fs, (long long)r->is, (long long)r->diff,
               r->n ? 100.0 * (double)r->diff / (double)r->n : 0.0);
        tf += r->fs, ti += r->is, td += r->diff, tn += r->n;
    }
    printf("%-34s %12lld %12lld %12lld %8.3f%%\n", "all", (long long)tf, (long long)ti,
           (long long)td, tn ? 100.0 * (double)td / (double)tn : 0.0);
}

static int sim_int(const char *weights, const qkf_hw_profile *hw, long calib, const char *input,
                   const char *data, int64_t limit, long batch, int tb, const char *report,
                   int json, int quiet, long threads, double e_ac, double e_mac,
                   const qkf_trace_opts *topt, int argc, char **argv)
{
    int rc = 1;
    qkf_model fm, view;
    qkf_qmodel q;
    memset(&q, 0, sizeof q);
    float *x = NULL, *logits = NULL, *lf = NULL;
    qkf_h5_rows *in = NULL; /* --input: read a batch at a time */
    qkf_sched *e = NULL, *f = NULL;
    qkf_dataset dset;
    memset(&dset, 0, sizeof dset);
    qkf_loader *ld = NULL;
    flip_row *fr = NULL;
    int64_t B = 0, per = 0, correct = 0;
    qkf_map hmap; /* --hw: the chip's mapping and the costs of the integer engine's spikes */
    memset(&hmap, 0, sizeof hmap);
    qkf_cost hcost;
    memset(&hcost, 0, sizeof hcost);
    const uint8_t **hsp = NULL;
    qkf_dense_int *di = NULL; /* --trace: the dense integer engine beside, traced */
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    if (qkf_cli_qmodel(weights, hw, 0, NULL, NULL, &fm, &q))
        goto done;
    int have_float = fm.params.data != NULL;
    /* the inputs are checked against the integer model's configuration (its graph is fixed) */
    memset(&view, 0, sizeof view);
    view.cfg = q.cfg;
    view.n_norm = q.n_norm;
    memcpy(view.input_mean, q.input_mean, sizeof view.input_mean);
    memcpy(view.input_std, q.input_std, sizeof view.input_std);
    if (input ? load_input(input, &view, &in, &B, &per)
              : load_data(data, &view, limit, &dset, &B))
        goto done;
    if (view.cfg.img_size != q.cfg.img_size || view.cfg.T != q.cfg.T) {
        qkf_set_error("%s: the integer model runs its checkpoint's geometry (%d x %d, T = %d) "
                      "only",
                      input ? input : data, q.cfg.img_size, q.cfg.img_size, q.cfg.T);
        goto done;
    }
    if (calib > 0 && have_float) { /* re-quantise with scales calibrated on the run's samples */
        qkf_quant_opts o;
        memset(&o, 0, sizeof o);
        int64_t nc = calib < B ? calib : B;
        if (!input) {
            qkf_set_error("--calib with --hw takes the samples of --input X.h5");
            goto done;
        }
        float *cx = qkf_malloc((size_t)(nc * per) * sizeof(float)); /* the first nc samples */
        qkf_qmodel_free(&q);
        memset(&q, 0, sizeof q);
        int qrc = qkf_h5_rows_read_f32(in, 0, nc, cx) ||
                  qkf_quant_calibrate(&fm, cx, (int)nc, 8, &o) ||
                  qkf_quantize(&fm, &hw->arith, hw->name, &o, &q);
        qkf_quant_calib_free(&o, &fm);
        qkf_free(cx);
        if (qrc)
            goto done;
    } else if (calib > 0) {
        qkf_set_error("%s: already quantised (--calib applies to float checkpoints)", weights);
        goto done;
    }
    int nb = (int)(B < batch ? B : batch);
    if (input)
        x = qkf_malloc((size_t)(nb * per) * sizeof(float));
    e = qkf_sched_create_int(&q, nb, (have_float || hw ? QKF_SCHED_RECORD : 0) |
                                         (tb ? QKF_SCHED_TB_COMPAT : 0));
    if (!e)
        goto done;
    if (have_float && !(f = qkf_sched_create(&fm, nb, QKF_SCHED_RECORD | (tb ? QKF_SCHED_TB_COMPAT : 0))))
        goto done;
    const qkf_graph *g = qkf_sched_graph(e);
    int K = q.cfg.num_classes, T = q.cfg.T;
    if (topt->path) { /* the event engine's integer spikes are the dense integer engine's (tested
                       * bit for bit); the dense one hands its membranes to the trace */
        ts.qmodel = &q;
        if (!(di = qkf_dense_int_create(&q, nb, tb ? QKF_DENSE_INT_TB_COMPAT : 0)) ||
            !(tr = qkf_trace_opts_open(topt, &ts, qkf_dense_int_graph(di), weights, "dense-int",
                                       argc, argv)) ||
            qkf_dense_int_set_sink(di, qkf_trace_sink(tr)))
            goto done;
    }
    if (hw) { /* mapped before the run; a model the chip cannot hold still runs its arithmetic */
        if (qkf_map_build(&hmap, g, hw)) {
            fprintf(stderr, "qkf sim: %s: not priced, the integer arithmetic still runs (%s)\n",
                    hw->name, qkf_last_error());
            qkf_clear_error();
            if (hmap.unit)
                qkf_map_free(&hmap);
            memset(&hmap, 0, sizeof hmap);
        } else {
            if (qkf_cost_init(&hcost, &hmap, T))
                goto done;
            hsp = qkf_calloc((size_t)g->n_lif, sizeof *hsp);
        }
    }
    logits = qkf_malloc((size_t)nb * K * sizeof(float));
    lf = qkf_malloc((size_t)nb * K * sizeof(float));
    fr = qkf_calloc((size_t)g->n_lif, sizeof *fr);
    if (data) {
        qkf_loader_cfg lc;
        memset(&lc, 0, sizeof lc);
        lc.d = &dset, lc.batch = nb, lc.limit = 0, lc.n_norm = q.n_norm;
        memcpy(lc.mean, q.input_mean, sizeof lc.mean);
        memcpy(lc.std, q.input_std, sizeof lc.std);
        ld = qkf_loader_start(&lc, 0, 0);
    }
    double busy = 0;
    for (int64_t b0 = 0; b0 < B;) {
        const float *xb = x;
        const int32_t *labels = NULL;
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (ld && !qkf_loader_next(ld, &xb, &labels, &n))
            break;
        if (n > B - b0) /* the loader deals whole batches of the split; --limit ends it */
            n = (int)(B - b0);
        if (in && qkf_h5_rows_read_f32(in, b0, n, x))
            goto done;
        double t1 = qkf_now();
        if (qkf_sched_forward(e, xb, n, logits, NULL))
            goto done;
        busy += qkf_now() - t1;
        if (di && qkf_dense_int_forward(di, xb, n, NULL, NULL, NULL))
            goto done;
        if (hsp) {
            for (int l = 0; l < g->n_lif; l++)
                hsp[l] = qkf_sched_spikes(e, l);
            if (qkf_cost_add(&hcost, hsp, qkf_config_is_frames(&q.cfg) ? xb : NULL, n))
                goto done;
        }
        if (f) {
            if (qkf_sched_forward(f, xb, n, lf, NULL))
                goto done;
            for (int l = 0; l < g->n_lif; l++) {
                int64_t m = qkf_graph_lif_neurons(g, l) * T * n;
                const uint8_t *a = qkf_sched_spikes(f, l), *bq = qkf_sched_spikes(e, l);
                for (int64_t i = 0; i < m; i++) {
                    fr[l].fs += a[i], fr[l].is += bq[i];
                    fr[l].diff += a[i] != bq[i];
                }
                fr[l].n += m;
            }
        }
        for (int b = 0; labels && b < n; b++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                best = logits[b * K + k] > logits[b * K + best] ? k : best;
            correct += best == labels[b];
        }
        b0 += n;
    }
    if (tr) {
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc)
            goto done;
    }
    qkf_stats *st = qkf_sched_stats(e);
    st->seconds = busy;
    char engine[96];
    snprintf(engine, sizeof engine, "event-int (%s)", q.hw_name[0] ? q.hw_name : "integer");
    report_info ri = {e_ac, e_mac, engine, weights, input ? input : data,
                      threads ? (int)threads : omp_get_max_threads(), tb, hsp ? &hcost : NULL,
                      NULL};
    if (report && write_report(report, json, st, &ri))
        goto done;
    if (!quiet) {
        print_table(st, &ri);
        if (hsp) {
            qkf_work all = qkf_stats_step_total(st, -1);
            qkf_cost_print(&hcost, qkf_energy_pj(&all, 0.9, 4.6) / (double)st->samples);
        }
        if (f)
            print_flips(g, fr);
        else
            printf("\n(%s is quantised: no float model to count spike differences against)\n",
                   weights);
        if (data)
            printf("accuracy: %.2f%% of %lld test samples of %s\n",
                   100.0 * (double)correct / (double)st->samples, (long long)st->samples,
                   dset.source);
        if (report)
            printf("\nwrote %s\n", report);
    }
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("sim");
    if (ld)
        qkf_loader_stop(ld);
    qkf_trace_abort(tr);
    qkf_trace_spec_free(&ts);
    qkf_dense_int_free(di);
    qkf_dataset_free(&dset);
    qkf_sched_free(e);
    qkf_sched_free(f);
    qkf_h5_rows_close(in);
    if (hcost.map)
        qkf_cost_free(&hcost);
    if (hmap.unit)
        qkf_map_free(&hmap);
    qkf_free(hsp);
    qkf_free(x);
    qkf_free(logits);
    qkf_free(lf);
    qkf_free(fr);
    qkf_qmodel_free(&q);
    qkf_model_free(&fm);
    return rc;
}

static int sim_run(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "sim"};
    const char *weights = NULL, *input = NULL, *data = NULL, *mode = NULL, *report = NULL, *v;
    int hwname = 0; /* --hw given: hwp holds the profile */
    qkf_hw_profile hwp;
    long threads = 0, batch = 8, limit = 0;
    double e_ac = 0.9, e_mac = 4.6;
    int tb = 0, quiet = 0, conv = 0, nbench = 0, r, have_hw = 0;
    long calib = 0;
    qkf_hw_profile hw;
    qkf_trace_opts topt;
    qkf_trace_opts_init(&topt);
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) { /* the chip: its arithmetic, mapping and costs */
            if (r < 0)
                return qkf_cli_fail_rank0("sim");
            have_hw = hwname = 1;
            hwp = hw;
            continue;
        }
        if ((r = qkf_arg_int(&a, "--calib", 1, 100000, &calib)) != 0) {
            if (r < 0)
                return qkf_cli_fail_rank0("sim");
            continue;
        }
        if ((r = qkf_arg_trace(&a, &topt)) != 0) {
            if (r < 0)
                return qkf_cli_fail("sim");
            continue;
        }
        if ((r = qkf_arg_conv(&a, &conv)) || (r = qkf_arg(&a, "--weights", &weights)) ||
            (r = qkf_arg(&a, "--input", &input)) || (r = qkf_arg(&a, "--data", &data)) ||
            (r = qkf_arg(&a, "--mode", &mode)) || (r = qkf_arg(&a, "--report", &report)) ||
            (r = qkf_arg_int(&a, "--threads", 1, 1024, &threads)) ||
            (r = qkf_arg_int(&a, "--limit", 1, 1L << 40, &limit)) ||
            (r = qkf_arg_int(&a, "--batch", 1, 65536, &batch)) ||
            (r = qkf_arg_flag(&a, "--tb-compat", &tb)) ||
            (r = qkf_arg_flag(&a, "--quiet", &quiet)) ||
            (r = qkf_arg_flag(&a, "--neurobench", &nbench))) {
            if (r < 0)
                return qkf_cli_fail_rank0("sim");
            continue;
        }
        if ((r = qkf_arg(&a, "--e-ac", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--e-ac", v, 0, 1e9, &e_ac))
                return qkf_cli_fail_rank0("sim");
            continue;
        }
        if ((r = qkf_arg(&a, "--e-mac", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--e-mac", v, 0, 1e9, &e_mac))
                return qkf_cli_fail_rank0("sim");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf sim --help)", argv[a.i]);
        return qkf_cli_fail_rank0("sim");
    }
    /* every option is checked before any work, so a bad one writes nothing */
    if (!weights) {
        qkf_set_error("--weights is required (qkf sim --help)");
        return qkf_cli_fail_rank0("sim");
    }
    if (data && input) {
        qkf_set_error("give --input or --data, not both");
        return qkf_cli_fail_rank0("sim");
    }
    if (!input && !data) {
        qkf_set_error("--input X.h5 (or --data NAME) is required");
        return qkf_cli_fail_rank0("sim");
    }
    if (hwname && mode && strcmp(mode, "event") != 0) {
        qkf_set_error("--hw prices the event engine's spikes: leave out --mode %s", mode);
        return qkf_cli_fail_rank0("sim");
    }
    if (hwname && qkf_dist_size() > 1) {
        qkf_set_error("--hw prices one process's run; run it without mpirun");
        return qkf_cli_fail_rank0("sim");
    }
    if (!mode)
        mode = "event";
    if (hwname)
        nbench = 1;
    if (nbench && qkf_dist_size() > 1) {
        qkf_set_error("--neurobench measures one process's run; run it without mpirun");
        return qkf_cli_fail_rank0("sim");
    }
    int event = strcmp(mode, "event") == 0;
    if (!event && strcmp(mode, "dense") != 0) {
        qkf_set_error("option --mode: '%s' is not an engine (event or dense)", mode);
        return qkf_cli_fail_rank0("sim");
    }
    int json = 0;
    if (report) {
        json = ends_with(report, ".json");
        if (!json && !ends_with(report, ".csv")) {
            qkf_set_error("%s: the report must be .json or .csv", report);
            return qkf_cli_fail_rank0("sim");
        }
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", report);
        char *slash = strrchr(dir, '/');
        if (slash)
            *(slash == dir ? slash + 1 : slash) = 0;
        if (access(slash ? dir : ".", W_OK) != 0) {
            qkf_set_error("%s: cannot write the report there (%s)", report, strerror(errno));
            return qkf_cli_fail_rank0("sim");
        }
    }
    if (topt.path && qkf_dist_size() > 1) {
        qkf_set_error("--trace records one process; run it without mpirun");
        return qkf_cli_fail_rank0("sim");
    }
    if (threads)
        qkf_set_threads((int)threads);
    int isq = qkf_qckpt_is_quant(weights);
    if ((have_hw && !hw.arith.is_float) || isq == 1) {
        if (!event || qkf_dist_size() > 1) {
            qkf_set_error("--hw (or a quantised checkpoint) runs the integer event engine here: no "
                          "--mode dense or mpirun");
            return qkf_cli_fail_rank0("sim");
        }
        return sim_int(weights, have_hw ? &hw : NULL, calib, input, data, limit, batch, tb, report,
                       json, quiet, threads, e_ac, e_mac, &topt, argc, argv);
    }
    if (calib) {
        qkf_set_error("--calib applies with --hw");
        return qkf_cli_fail_rank0("sim");
    }

    int rc = 1;
    qkf_model m;
    memset(&m, 0, sizeof m);
    float *x = NULL, *logits = NULL;
    qkf_h5_rows *in = NULL;
    qkf_sched *e = NULL;
    qkf_dense *d = NULL;
    qkf_stats ds;
    memset(&ds, 0, sizeof ds);
    qkf_stats *st = NULL;
    qkf_dataset dset;
    memset(&dset, 0, sizeof dset);
    qkf_loader *ld = NULL;
    int64_t B = 0, per = 0, correct = 0;
    int silent = 0; /* another rank reports this run's error */
    int shared = 0; /* the error concerns the whole job: no rank prefix */
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    qkf_map hmap;
    memset(&hmap, 0, sizeof hmap);
    qkf_cost hcost;
    memset(&hcost, 0, sizeof hcost);
    const uint8_t **hsp = NULL;
    qkf_nb nbm;
    memset(&nbm, 0, sizeof nbm);
    qkf_dense *dn = NULL; /* NeuroBench's membranes beside the event engine */
    float *nlogits = NULL;
    /* under mpirun each rank reads only its contiguous shard of the samples; the checkpoint is
     * agreed on first, because reading a dataset shard involves collectives */
    int shard = qkf_dist_size() > 1, other = 0;
    int lfail = qkf_ckpt_load(weights, &m) != 0;
    if (shard && !qkf_dist_all_ok(!lfail, NULL)) {
        silent = !lfail;
        goto done;
    }
    if (!lfail) {
        int drc = input ? load_input(input, &m, &in, &B, &per)
                        : load_data(data, &m, limit, &dset, &B);
        other = drc == -2, lfail = drc != 0;
    }
    if (!qkf_dist_all_ok(!lfail || other, NULL)) {
        silent = !lfail || other;
        goto done;
    }
    /* this rank's contiguous shard [lo, hi) of the B samples (a dataset: already read alone under
     * mpirun; an input: read a batch at a time below) */
    int64_t lo = 0, hi = B;
    if (!shard || input)
        qkf_dist_shard(B, &lo, &hi);
    int64_t in_batch = input ? (hi - lo < batch ? hi - lo : batch) : 0;
    if (report_held(input ? hi - lo : B,
                    input ? in_batch * per * (int64_t)sizeof(float) : qkf_dataset_bytes(&dset),
                    quiet))
        goto done;
    qkf_dataset dview = dset;
    dview.index = NULL, dview.total = dview.n;
    if (data) {
        int64_t pp = (int64_t)dset.c * dset.h * dset.w * (dset.t > 0 ? dset.t : 1);
        dview.pixels = dset.pixels + lo * pp, dview.labels = dset.labels + lo, dview.n = hi - lo;
    }
    B = hi - lo;
    if (input) {
        x = qkf_malloc((size_t)(in_batch * per) * sizeof(float));
    }
    int nb = (int)(B < batch ? B : batch);
    if (event) {
        e = qkf_sched_create(&m, nb,
                             (tb ? QKF_SCHED_TB_COMPAT : 0) | (hwname ? QKF_SCHED_RECORD : 0));
        if (!e)
            goto done;
        st = qkf_sched_stats(e);
        if (hwname) { /* the chip: mapped before the run, so a model that does not fit stops it */
            const qkf_graph *g = qkf_sched_graph(e);
            if (qkf_map_build(&hmap, g, &hwp) || qkf_cost_init(&hcost, &hmap, m.cfg.T))
                goto done;
            hsp = qkf_calloc((size_t)g->n_lif, sizeof *hsp);
        }
    } else {
        d = qkf_dense_create(&m, nb,
                             QKF_DENSE_KEEP_ALL | (tb ? QKF_DENSE_TB_COMPAT : 0) | conv |
                                 (nbench ? QKF_DENSE_RECORD_VH : 0));
        if (!d || qkf_stats_init(&ds, qkf_dense_graph(d)))
            goto done;
        st = &ds;
    }
    if (nbench) {
        if (event && !(dn = qkf_dense_create(&m, nb,
                                             QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH |
                                                 (tb ? QKF_DENSE_TB_COMPAT : 0) | conv)))
            goto done;
        if (qkf_nb_init(&nbm, &m, qkf_dense_graph(event ? dn : d)))
            goto done;
    }
    if (topt.path) {
        const qkf_graph *g = event ? qkf_sched_graph(e) : qkf_dense_graph(d);
        if (!(tr = qkf_trace_opts_open(&topt, &ts, g, weights, mode, argc, argv)))
            goto done;
        if (event ? qkf_sched_set_trace(e, qkf_trace_sink(tr))
                  : qkf_dense_set_sink(d, qkf_trace_sink(tr)))
            goto done;
    }
    int K = m.cfg.num_classes;
    logits = qkf_malloc((size_t)nb * K * sizeof(float));
    if (dn)
        nlogits = qkf_malloc((size_t)nb * K * sizeof(float));
    if (data) {
        qkf_loader_cfg lc;
        memset(&lc, 0, sizeof lc);
        lc.d = &dview, lc.batch = nb, lc.limit = 0, lc.n_norm = m.n_norm;
        memcpy(lc.mean, m.input_mean, sizeof lc.mean);
        memcpy(lc.std, m.input_std, sizeof lc.std);
        ld = qkf_loader_start(&lc, 0, 0);
    }
    /* start-up agreement: the same weights on every rank (mpirun over nodes) */
    uint64_t h = qkf_dist_hash(QKF_DIST_HASH_INIT, m.params.data,
                               (size_t)m.params.total * sizeof(float));
    int bad_rank;
    if (qkf_dist_agree(h, &bad_rank)) {
        if (bad_rank >= 0)
            qkf_set_error("rank %d: its checkpoint differs from rank 0's (the same --weights file "
                          "on every node)",
                          bad_rank);
        silent = qkf_dist_rank() != 0;
        shared = 1;
        goto done;
    }
    double busy = 0;
    int failed = 0;
    for (int64_t b0 = 0; b0 < B;) {
        const float *xb = x;
        const int32_t *labels = NULL;
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (ld && !qkf_loader_next(ld, &xb, &labels, &n))
            break;
        if (input) {
            if (qkf_h5_rows_read_f32(in, lo + b0, n, x)) {
                failed = 1;
                break;
            }
        }
        double t1 = qkf_now();
        if (event ? qkf_sched_forward(e, xb, n, logits, NULL)
                  : qkf_dense_forward(d, xb, n, logits, NULL)) {
            failed = 1;
            break;
        }
        busy += qkf_now() - t1;
        if (hsp) {
            for (int l = 0; l < qkf_sched_graph(e)->n_lif; l++)
                hsp[l] = qkf_sched_spikes(e, l);
            if (qkf_cost_add(&hcost, hsp, qkf_config_is_frames(&m.cfg) ? xb : NULL, n)) {
                failed = 1;
                break;
            }
        }
        if (nbench && ((event && qkf_dense_forward(dn, xb, n, nlogits, NULL)) ||
                       qkf_nb_add(&nbm, event ? dn : d, n))) {
            failed = 1;
            break;
        }
        if (!event && qkf_stats_add_dense(&ds, d, n)) {
            failed = 1;
            break;
        }
        for (int b = 0; labels && b < n; b++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                best = logits[b * K + k] > logits[b * K + best] ? k : best;
            correct += best == labels[b];
        }
        b0 += n;
    }
    if (tr) {
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc)
            goto done;
    }
    if (!qkf_dist_all_ok(!failed, NULL)) {
        silent = !failed; /* the failing rank names itself */
        goto done;
    }
    st->seconds = busy;
    /* every rank's counters summed exactly (int64), then rank 0 alone reports */
    if (qkf_dist_stats_sum(st) || qkf_dist_sum_i64(&correct, 1))
        goto done;
    report_info ri = {e_ac, e_mac, mode, weights, input ? input : data, threads ? (int)threads : 0,
                      tb, hsp ? &hcost : NULL, nbench ? &nbm : NULL};
    if (!ri.threads)
        ri.threads = omp_get_max_threads();
    if (qkf_dist_rank() == 0 && report && write_report(report, json, st, &ri))
        goto done;
    if (!quiet && qkf_dist_rank() == 0) {
        print_table(st, &ri);
        if (hsp) {
            qkf_work all = qkf_stats_step_total(st, -1);
            qkf_cost_print(&hcost, qkf_energy_pj(&all, 0.9, 4.6) / (double)st->samples);
        }
        if (nbench)
            qkf_nb_print(&nbm);
        if (data)
            printf("accuracy: %.2f%% of %lld test samples of %s\n",
                   100.0 * (double)correct / (double)st->samples, (long long)st->samples,
                   dset.source);
        if (report)
            printf("\nwrote %s\n", report);
    }
    rc = 0;
done:
    if (rc && !silent)
        qkf_dist_size() > 1 && !shared ? fprintf(stderr, "qkf sim: rank %d: %s\n", qkf_dist_rank(),
                                      qkf_last_error())
                            : qkf_cli_fail("sim");
    if (ld)
        qkf_loader_stop(ld);
    qkf_dataset_free(&dset);
    qkf_trace_abort(tr); /* before the engine it is attached to */
    qkf_trace_spec_free(&ts);
    if (hcost.map)
        qkf_cost_free(&hcost);
    if (hmap.unit)
        qkf_map_free(&hmap);
    qkf_free(hsp);
    if (nbm.layer)
        qkf_nb_free(&nbm);
    qkf_dense_free(dn);
    qkf_free(nlogits);
    qkf_sched_free(e);
    qkf_dense_free(d);
    if (ds.node)
        qkf_stats_free(&ds);
    qkf_free(x);
    qkf_h5_rows_close(in);
    qkf_free(logits);
    qkf_model_free(&m);
    return rc;
}

int cmd_sim(int argc, char **argv)
{
    if (qkf_dist_init())
        return qkf_cli_fail("sim");
    int rc = sim_run(argc, argv);
    qkf_dist_finalize();
    return rc;
}
