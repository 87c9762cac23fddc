/* qkf sim: run a checkpoint with the event-driven engine (default) or the dense engine and report
 * the sparsity and the work: per layer, per attention head and per time step, the events in,
 * spikes out, accumulates performed, multiply-accumulates, and energy, beside the paper's
 * firing-rate estimate (spec section 7.3). A table on the terminal; JSON or CSV with --report
 * (written to a temporary file and renamed, so a failed run leaves nothing behind). This file
 * parses the options, runs the simulation application (tools/app/sim.h) and prints. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/io.h"
#include "../io/trace.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/cost.h"
#include "../sim/dist.h"
#include "../sim/neurobench.h"
#include "../sim/stats.h"
#include "app/sim.h"
#include "cli.h"

static void help(void)
{
    printf(
        "usage: qkf sim --weights W.h5 (--input X.h5 | --data NAME [--limit N])\n"
        "               [--mode event|dense] [--report FILE.json|FILE.csv] [--threads N]\n"
        "               [--batch N] [--e-ac 0.9] [--e-mac 4.6] [--tb-compat] [--quiet]\n"
        "               [--conv ALGO] [--hw PROFILE [--latency simple|detailed]] [--neurobench]\n"
        "\n"
        "Runs the model on every sample of dataset 'input' of X.h5 (float32 [B,C,H,W] images, or\n"
        "[B,T,C,H,W] event-count frames for dvs models; read --batch samples at a time,\n"
        "any number of them in memory bounded by the batch), or on the test split of an image\n"
        "dataset (--data NAME, read a batch at a time and normalised as qkf eval does; the\n"
        "accuracy is printed),\n"
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
        "  --latency detailed   with --hw: also SANA-FE's detailed latency model (each core's\n"
        "                       messages in order through the mesh, link contention, one message\n"
        "                       at a time per receiving core) beside the simple one; the report\n"
        "                       gains hw.latency_detailed_s (default: simple only)\n"
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
           "holds no float model), and NeuroBench's metrics of the integer model (its inputs,\n"
           "weight mantissas, integer membranes from the dense integer engine beside it, the\n"
           "footprint at the profile's bit widths). Not with --mode dense or under mpirun.\n"
           "--trace records the integer event engine's spikes and membranes (membrane units;\n"
           "docs/traces.md; the dense integer engine records the same values bit for bit).\n");
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

static double spikes_in(const qkf_work *w)
{
    return (double)(w->in_spikes[0] + w->in_spikes[1] + w->in_spikes[2]);
}

static void print_table(const qkf_stats *s, const qkf_sim_report_info *ri)
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
               est = qkf_sim_est_energy(s, i, &w, s->samples, ri->e_ac, ri->e_mac);
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

/* ---- the command ---------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static void print_flips(const qkf_graph *g, const qkf_sim_flips *fr)
{
    int64_t tf = 0, ti = 0, td = 0, tn = 0;
    printf("\nspikes against the float model (the float event engine on the same samples):\n");
    printf("%-34s %12s %12s %12s %9s\n", "layer", "float", "integer", "differ", "of n x T");
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_sim_flips *r = &fr[l];
        printf("%-34s %12lld %12lld %12lld %8.3f%%\n", g->ops[g->lif_ops[l]].name,
               (long long)r->fs, (long long)r->is, (long long)r->diff,
               r->n ? 100.0 * (double)r->diff / (double)r->n : 0.0);
        tf += r->fs, ti += r->is, td += r->diff, tn += r->n;
    }
    printf("%-34s %12lld %12lld %12lld %8.3f%%\n", "all", (long long)tf, (long long)ti,
           (long long)td, tn ? 100.0 * (double)td / (double)tn : 0.0);
}

/* The table, then whatever the run adds: the chip's costs, spikes against the float model
 * (integer runs), NeuroBench's metrics, the accuracy, the report written. */
static void print_results(const qkf_sim_result *r, const qkf_sim_report_info *ri,
                          const char *weights, const char *report)
{
    const qkf_stats *st = r->st;
    print_table(st, ri);
    if (r->cost) {
        qkf_work all = qkf_stats_step_total(st, -1);
        qkf_cost_print(r->cost, qkf_energy_pj(&all, 0.9, 4.6) / (double)st->samples);
    }
    if (r->integer) {
        if (r->flips)
            print_flips(r->g, r->flips);
        else
            printf("\n(%s is quantised: no float model to count spike differences against)\n",
                   weights);
    }
    if (r->nb)
        qkf_nb_print(r->nb);
    if (r->has_labels)
        printf("accuracy: %.2f%% of %lld test samples of %s\n",
               100.0 * (double)r->correct / (double)st->samples, (long long)st->samples,
               r->source);
    if (report)
        printf("\nwrote %s\n", report);
}

static void print_log(void *ctx, const char *line)
{
    (void)ctx;
    fputs(line, stderr);
}

static int sim_run(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "sim"};
    const char *weights = NULL, *input = NULL, *data = NULL, *mode = NULL, *report = NULL, *v;
    int hwname = 0; /* --hw given: hw holds the profile */
    const char *latency = NULL; /* --latency simple|detailed */
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
            (r = qkf_arg(&a, "--latency", &latency)) ||
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
    if (latency && strcmp(latency, "simple") != 0 && strcmp(latency, "detailed") != 0) {
        qkf_set_error("option --latency: '%s' is not a model (simple or detailed)", latency);
        return qkf_cli_fail_rank0("sim");
    }
    int detailed = latency && strcmp(latency, "detailed") == 0;
    if (detailed && !hwname) {
        qkf_set_error("--latency detailed prices a chip's steps: it needs --hw PROFILE");
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
    qkf_sim_opts so;
    memset(&so, 0, sizeof so);
    so.weights = weights, so.input = input, so.data = data, so.limit = limit;
    so.batch = (int)batch, so.event = event, so.conv = conv, so.tb = tb;
    so.neurobench = nbench, so.hw = have_hw ? &hw : NULL, so.calib = calib;
    so.trace = &topt, so.argc = argc, so.argv = argv, so.quiet = quiet;
    so.latency_detailed = detailed;
    int isq = qkf_qckpt_is_quant(weights);
    if ((have_hw && !hw.arith.is_float) || isq == 1) {
        if (!event || qkf_dist_size() > 1) {
            qkf_set_error("--hw (or a quantised checkpoint) runs the integer event engine here: no "
                          "--mode dense or mpirun");
            return qkf_cli_fail_rank0("sim");
        }
    } else if (calib) {
        qkf_set_error("--calib applies with --hw");
        return qkf_cli_fail_rank0("sim");
    }
    qkf_sim_result res;
    int rc = qkf_sim_run(&so, print_log, NULL, &res);
    if (rc) {
        qkf_sim_result_free(&res);
        return qkf_cli_app_fail("sim", rc);
    }
    qkf_sim_report_info ri = {e_ac,   e_mac, res.engine, weights, input ? input : data,
                              threads ? (int)threads : omp_get_max_threads(), tb, res.cost,
                              res.nb};
    if (qkf_dist_rank() == 0 && report && qkf_sim_write_report(report, json, res.st, &ri)) {
        if (qkf_dist_size() > 1) /* as any rank's own failure */
            fprintf(stderr, "qkf sim: rank 0: %s\n", qkf_last_error());
        else
            qkf_cli_fail("sim");
        qkf_sim_result_free(&res);
        return 1;
    }
    if (!quiet && qkf_dist_rank() == 0)
        print_results(&res, &ri, weights, report);
    qkf_sim_result_free(&res);
    return 0;
}

int cmd_sim(int argc, char **argv)
{
    if (qkf_dist_init())
        return qkf_cli_fail("sim");
    int rc = sim_run(argc, argv);
    qkf_dist_finalize();
    return rc;
}
