/* qkf report: statistics of a trace file (written with --trace): per-layer firing rates, silent
 * and saturated neurons, QKFormer attention-mask densities, and how membranes sit relative to the
 * threshold. Works on a trace that is still being written or was left by a killed run. */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "../io/report.h"
#include "../io/trace.h"
#include "../kernels/base.h"
#include "cli.h"

static void help(void)
{
    printf(
        "usage: qkf report TRACE.h5 [--layers GLOB]\n"
        "\n"
        "Reads a trace written by qkf infer/sim --trace (the NIR data layout, docs/traces.md)\n"
        "and prints, per recorded LIF layer:\n"
        "  firing rates      spikes / (samples x steps x neurons recorded); silent neurons never\n"
        "                    fire, saturated ones fire at every recorded step of every sample\n"
        "  attention masks   density of the QKFormer attention LIFs (tssa.attn_lif): the share\n"
        "                    of (head, token) pairs (QKTA) or channels (QKCA) let through\n"
        "  membranes         distribution of h / vth (the membrane compared with the threshold;\n"
        "                    v if h was not recorded) in bins; values >= 1 fire\n"
        "\n"
        "  --layers GLOB     only layers whose module path matches (e.g. 'stage1.*')\n");
}

static void bar(double frac, int width)
{
    int k = (int)(frac * width + 0.5);
    k = k < 0 ? 0 : k > width ? width : k;
    for (int i = 0; i < k; i++)
        putchar('#');
}

/* Declared in cli.h once the command is registered; repeated so this file stands alone. */
int cmd_report(int argc, char **argv);
int cmd_report(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "report"};
    const char *path = NULL, *glob = "*";
    int r;
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if ((r = qkf_arg(&a, "--layers", &glob)) != 0) {
            if (r < 0)
                return qkf_cli_fail("report");
            continue;
        }
        if (qkf_arg_positional(&a, &path))
            return qkf_cli_fail("report");
    }
    if (!path) {
        qkf_set_error("which trace? (qkf report TRACE.h5)");
        return qkf_cli_fail("report");
    }
    qkf_report rep;
    if (qkf_report_load(path, &rep))
        return qkf_cli_fail("report");
    const char *qk = strstr(rep.config, "\"qk_attn\": \"channel\"") ? "QKCA channel" : "QKTA token";
    printf("trace %s\n", path);
    printf("  qkf %s, %s engine, seed %llu, T = %lld\n", rep.version, rep.engine,
           (unsigned long long)rep.seed, (long long)rep.T);
    printf("  model      %s\n", rep.config);
    if (rep.checkpoint[0])
        printf("  checkpoint %s (sha256 %s)\n", rep.checkpoint, rep.sha256);
    printf("  command    %s\n", rep.command);

    int shown = 0, any_spikes = 0, any_mask = 0, any_mem = 0;
    for (int i = 0; i < rep.n_layers; i++) {
        const qkf_report_layer *L = &rep.layers[i];
        if (fnmatch(glob, L->name, 0) != 0)
            continue;
        shown++;
        any_spikes |= (L->obs & (1u << QKF_TRACE_SPIKES)) != 0;
        any_mask |= L->is_qk_mask && (L->obs & (1u << QKF_TRACE_SPIKES));
        any_mem |= L->membrane[0] != 0;
    }
    if (!shown) {
        qkf_set_error("%s: no recorded layer matches '%s'", path, glob);
        qkf_report_free(&rep);
        return qkf_cli_fail("report");
    }
    if (any_spikes) {
        printf("\nfiring rates (spikes / samples x steps x recorded neurons)\n");
        printf("%-34s %7s %5s %8s %8s %8s %9s\n", "layer", "samples", "steps", "neurons", "rate",
               "silent", "saturated");
        int64_t tot_s = 0;
        double tot_d = 0;
        for (int i = 0; i < rep.n_layers; i++) {
            const qkf_report_layer *L = &rep.layers[i];
            if (fnmatch(glob, L->name, 0) != 0 || !(L->obs & (1u << QKF_TRACE_SPIKES)))
                continue;
            printf("%-34s %7lld %5lld %8lld %7.2f%% %8lld %9lld ", L->name,
                   (long long)L->spike_samples, (long long)L->spike_steps,
                   (long long)L->spike_neurons, 100.0 * L->rate, (long long)L->silent,
                   (long long)L->saturated);
            bar(L->rate, 20);
            putchar('\n');
            tot_s += L->spikes;
            tot_d += (double)L->spike_samples * (double)L->spike_steps * (double)L->spike_neurons;
        }
        printf("%-34s %7s %5s %8s %7.2f%%\n", "all", "", "", "",
               tot_d > 0 ? 100.0 * (double)tot_s / tot_d : 0.0);
    }
    if (any_mask) {
        printf("\nattention masks (%s masks: share let through)\n", qk);
        printf("%-34s %8s %8s %9s\n", "layer", "density", "never", "always");
        for (int i = 0; i < rep.n_layers; i++) {
            const qkf_report_layer *L = &rep.layers[i];
            if (fnmatch(glob, L->name, 0) != 0 || !L->is_qk_mask ||
                !(L->obs & (1u << QKF_TRACE_SPIKES)))
                continue;
            printf("%-34s %7.2f%% %8lld %9lld ", L->name, 100.0 * L->rate, (long long)L->silent,
                   (long long)L->saturated);
            bar(L->rate, 20);
            putchar('\n');
        }
    }
    if (any_mem) {
        printf("\nmembrane relative to threshold (share of values per bin of value / vth; >= 1 "
               "fires)\n");
        printf("%-34s %2s %6s %6s %6s %6s %6s %6s | %6s %6s %6s %7s\n", "layer", "", "<0", "0-.25",
               ".25-.5", ".5-.75", ".75-.9", ".9-1", "1-1.5", "1.5-2", ">=2", "mean");
        for (int i = 0; i < rep.n_layers; i++) {
            const qkf_report_layer *L = &rep.layers[i];
            if (fnmatch(glob, L->name, 0) != 0 || !L->membrane[0])
                continue;
            printf("%-34s %2s", L->name, L->membrane);
            for (int k = 0; k < QKF_REPORT_BINS; k++) {
                double f = L->values ? (double)L->hist[k] / (double)L->values : 0.0;
                printf(" %5.1f%%%s", 100.0 * f, k == 5 ? " |" : "");
            }
            printf(" %7.3f", L->mean_rel);
            if (L->missing)
                printf("  (%lld values not written)", (long long)L->missing);
            putchar('\n');
        }
    }
    qkf_report_free(&rep);
    return 0;
}
