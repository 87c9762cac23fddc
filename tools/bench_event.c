/* qkf bench event: the event-driven engine against the dense engine, in one run, on a model
 * whose BatchNorms are calibrated to realistic firing rates (sim/stats.c qkf_stats_calibrate):
 * event vs dense time at batch 1 and 8 with a median ~10% rate, and a curve of event time
 * against the average firing rate (1, 5, 10, 20, 40% by default), with the achieved
 * accumulates per second. Default model: the cifar10 preset (HST-4-384, T = 4). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../io/hw_profile.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../models/quant.h"
#include "../sim/dense.h"
#include "../sim/dense_int.h"
#include "../sim/sched.h"
#include "../sim/stats.h"
#include "cli.h"
#include "bench.h"

int qkf_bench_event(int argc, char **argv);

static void help(void)
{
    printf(
        "usage: qkf bench event [--variant NAME | --weights W.h5] [--batch 1,8]\n"
        "                       [--rates 0.01,0.05,0.1,0.2,0.4] [--rate 0.1] [--threads N]\n"
        "                       [--seconds S] [--seed N] [--no-dense] [--torch [--python PY]]\n"
        "                       [--isa avx512,avx2,portable] [--no-curve]\n"
        "\n"
        "Calibrates every BatchNorm so its LIF fires at about --rate (per channel spread), then\n"
        "times the dense and the event engine on the same input at each batch size, and the\n"
        "event engine at batch 1 for each rate of --rates. Dense and event alternate in 5 rounds\n"
        "of S/5 seconds each (default S = 2), so that a drift of the machine's speed reaches\n"
        "both; each engine's median round is reported, the ratio is the median of the rounds'\n"
        "ratios. Reports time per sample, the ratio, the measured firing rates, and\n"
        "accumulates per second (event) against the accumulate ceiling of the kernel path in\n"
        "use (measured at start-up: the engine's own row kernel on weights that stay in L1, on\n"
        "every thread, per second of CPU time; QKF_ISA=avx512|avx2|portable forces a path).\n"
        "--no-dense skips the dense\n"
        "engine (for profiling the event engine; QKF_PROFILE=1 prints the time of every node).\n"
        "--isa times the event engine on each listed kernel path (kernels/isa.h) in the same\n"
        "alternating rounds (dense, then event on every path, per round): one row per path,\n"
        "each with its own accumulate ceiling; the dense engine's code does not change with the\n"
        "path. The firing-rate curve runs on the first path. --no-curve skips the curve.\n"
        "The dense engine's sgemm is OpenBLAS's, picked by CPU at load time whatever the path:\n"
        "OPENBLAS_CORETYPE=Haswell (AVX2) or Nehalem (SSE) times it as on that class of CPU\n"
        "(the header names the kernels in use).\n"
        "--torch also times the PyTorch reference (tools/reference/bench_torch.py, dense: its\n"
        "time does not depend on firing rates) at the same batch sizes, in the same run, and\n"
        "prints event / PyTorch speed ratios. The firing-rate curve sets each rate's event time\n"
        "against the batch-1 dense (x dense) and PyTorch (x torch) times. A note warns when\n"
        "other processes keep the cores busy at the start (wall times are then unreliable).\n"
        "\n"
        "--hw PROFILE: the integer event engine on the chip's arithmetic beside the float event\n"
        "engine instead: the calibrated model quantised for the profile (its scales calibrated\n"
        "on the same sample, models/quant.h), both engines timed in alternating rounds at each\n"
        "batch size (and on each --isa path); reports each one's time per sample, the speed\n"
        "ratio (float / integer, the median of the rounds' ratios), both firing rates\n"
        "(quantisation moves some spikes), which sums run in int16 lanes, and each engine's\n"
        "accumulates per CPU second against its own row kernel's ceiling (float, int16). The\n"
        "rate curve is skipped. QKF_BENCH_ONLY=float|int times one of the two engines alone\n"
        "(the other's columns read 0), for profiling it (perf record).\n");
    fputs(qkf_hw_help, stdout);
}

/* CPU seconds of the whole process (all threads): on a shared machine, time spent running
 * rather than waiting for a core. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Mean wall seconds per forward of B samples over at least `seconds` (and 3 runs); *cpu gets
 * the mean CPU seconds. The first round of a batch warms the engine up first. */
static double time_dense(qkf_dense *d, const float *x, int B, float *logits, double seconds,
                         double *cpu, int first)
{
    if (first)
        qkf_dense_forward(d, x, B, logits, NULL); /* warm-up */
    int it = 0;
    double t0 = qkf_now(), c0 = cpu_now();
    while (qkf_now() - t0 < seconds || it < 3) {
        qkf_dense_forward(d, x, B, logits, NULL);
        it++;
    }
    *cpu = (cpu_now() - c0) / it;
    return (qkf_now() - t0) / it;
}

/* As time_dense; the statistics (rates, profile) count the timed forwards of every round. */
static double time_event(qkf_sched *e, const float *x, int B, float *logits, double seconds,
                         double *cpu, int first)
{
    if (first) {
        qkf_sched_forward(e, x, B, logits, NULL); /* warm-up */
        qkf_stats_reset(qkf_sched_stats(e));
    }
    int it = 0;
    double t0 = qkf_now(), c0 = cpu_now();
    while (qkf_now() - t0 < seconds || it < 3) {
        qkf_sched_forward(e, x, B, logits, NULL);
        it++;
    }
    *cpu = (cpu_now() - c0) / it;
    return (qkf_now() - t0) / it;
}

/* Dense and event are timed in ROUNDS alternating rounds (dense, event, dense, ...) of
 * seconds / ROUNDS each, and each is reported as its median round, the speedup as the median
 * of the rounds' ratios: a change in the machine's speed during the run (another process, the
 * clock, memory placement; one moved the dense engine by 19% within an hour here) then reaches
 * both engines alike instead of whichever ran at the time. */
#define ROUNDS 5

/* Idle and total jiffies of all CPUs (/proc/stat); 0 where there is none. */
static int cpu_jiffies(double *idle, double *total)
{
    double v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    int n = fscanf(f, "cpu %lf %lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 5)
        return 0;
    *idle = v[3] + v[4], *total = 0;
    for (int i = 0; i < n; i++)
        *total += v[i];
    return 1;
}

/* How many cores other processes keep busy, sampled over 0.3 s before the run starts (-1 where
 * /proc/stat is missing). */
static double cores_busy(void)
{
    double i0, t0, i1, t1;
    if (!cpu_jiffies(&i0, &t0))
        return -1.0;
    struct timespec ts = {0, 300000000L};
    nanosleep(&ts, NULL);
    if (!cpu_jiffies(&i1, &t1) || t1 <= t0)
        return -1.0;
    return (1.0 - (i1 - i0) / (t1 - t0)) * (double)sysconf(_SC_NPROCESSORS_ONLN);
}

/* QKF_PROFILE=1: where the event time goes, per node (wall seconds of the timed runs, so
 * informative only), with the node's accumulates and input events per sample. */
static void profile(const qkf_stats *s)
{
    double tot = 0;
    for (int i = 0; i < s->n_nodes; i++)
        tot += s->node_seconds[i];
    if (tot <= 0 || s->samples <= 0)
        return;
    printf("  %-34s %-8s %9s %6s %12s %12s %8s\n", "node", "kind", "ms/smp", "share", "events/smp",
           "acc/smp", "G acc/s");
    for (int i = 0; i < s->n_nodes; i++) {
        qkf_work w = qkf_stats_node_total(s, i, -1);
        double ms = 1e3 * s->node_seconds[i] / (double)s->samples;
        double acc = (double)w.acs / (double)s->samples;
        printf("  %-34s %-8s %9.3f %5.1f%% %12.0f %12.4g %8.1f\n", s->node[i].name,
               qkf_node_kind_name(s->node[i].kind), ms, 100 * s->node_seconds[i] / tot,
               (double)w.in_events / (double)s->samples, acc, ms > 0 ? acc / ms * 1e-6 : 0.0);
    }
}

/* Average firing rate over all LIF neurons and the median of the layers' rates. */
static void rates(const qkf_stats *s, double *avg, double *median)
{
    double sp = 0, ne = 0, r[1024];
    int n = 0;
    for (int i = 0; i < s->n_nodes && n < 1024; i++) {
        if (s->node[i].neurons <= 0)
            continue;
        qkf_work w = qkf_stats_node_total(s, i, -1);
        double den = (double)s->node[i].neurons * s->T * (double)s->samples;
        sp += (double)w.out_spikes, ne += den;
        r[n++] = (double)w.out_spikes / den;
    }
    for (int i = 1; i < n; i++) /* insertion sort: a few dozen layers */
        for (int j = i; j > 0 && r[j - 1] > r[j]; j--) {
            double t = r[j];
            r[j] = r[j - 1], r[j - 1] = t;
        }
    *avg = ne > 0 ? sp / ne : 0.0;
    *median = n ? (n % 2 ? r[n / 2] : 0.5 * (r[n / 2 - 1] + r[n / 2])) : 0.0;
}

static int parse_list(const char *s, double *v, int cap, double lo, double hi, const char *opt)
{
    int n = 0;
    const char *p = s;
    while (*p && n < cap) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || !(x >= lo && x <= hi))
            return qkf_set_error("option %s: '%s' is not a list of numbers in [%g, %g]", opt, s, lo,
                                 hi);
        v[n++] = x;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return qkf_set_error("option %s: '%s' is not a comma-separated list", opt, s);
    }
    if (n == 0)
        return qkf_set_error("option %s: empty list", opt);
    return n;
}

/* A comma-separated list of kernel paths, each supported here and listed once. */
static int parse_paths(const char *s, qkf_isa *paths)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[32];
        if (len == 0 || len >= sizeof name || n == QKF_ISA_COUNT)
            return qkf_set_error("option --isa: '%s' is not a list of kernel paths (avx512, avx2, "
                                 "portable)",
                                 s);
        memcpy(name, p, len);
        name[len] = 0;
        qkf_isa isa;
        if (qkf_isa_parse(name, &isa) < 0)
            return qkf_set_error("option --isa: '%s' is not a kernel path (avx512, avx2, portable)",
                                 name);
        if (!qkf_isa_supported(isa))
            return qkf_set_error("option --isa: this CPU or build cannot run the %s path", name);
        for (int i = 0; i < n; i++)
            if (paths[i] == isa)
                return qkf_set_error("option --isa: %s listed twice", name);
        paths[n++] = isa;
        if (!e)
            return n;
        p = e + 1;
    }
}

static float *make_input(const qkf_config *c, int B, uint64_t seed)
{
    int frames = qkf_config_is_frames(c);
    int64_t per = (int64_t)c->in_channels * c->img_size * c->img_size * (frames ? c->T : 1);
    float *x = qkf_malloc((size_t)(per * B) * sizeof(float));
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    for (int64_t i = 0; i < per * B; i++) {
        if (frames) { /* event counts, mostly 0 */
            float u = qkf_rng_uniform(&r);
            x[i] = u < 0.7f ? 0.0f : u < 0.9f ? 1.0f : u < 0.97f ? 2.0f : 3.0f;
        } else {
            x[i] = qkf_rng_normal(&r);
        }
    }
    return x;
}

typedef struct {
    const double *bl;
    int nb;
    const double *event_ms;
    double torch1_ms; /* PyTorch's ms per sample at batch 1, if it ran */
} event_vs_torch;

static void event_torch_ratio(void *ctx, int b, double ips, double med_ms, double min_ms)
{
    event_vs_torch *e = ctx;
    (void)med_ms, (void)min_ms;
    if (b == 1)
        e->torch1_ms = 1e3 / ips;
    for (int i = 0; i < e->nb; i++)
        if ((int)e->bl[i] == b && e->event_ms[i] > 0)
            printf("ratio batch=%d event/torch=%.2f (PyTorch median %.2f ms per sample, event "
                   "%.2f)\n",
                   b, 1e3 / ips / e->event_ms[i], 1e3 / ips, e->event_ms[i]);
}

/* As time_event for the integer engine is the same call; the float and the integer event
 * engines on the same calibrated model and input, alternating rounds (each round: float, then
 * integer, on every kernel path of paths). */
static int bench_int(qkf_model *m, const qkf_hw_profile *hw, const float *x, const double *bl,
                     int nb, double seconds, long threads, float *logits, const qkf_isa *paths,
                     int npath)
{
    qkf_quant_opts o;
    memset(&o, 0, sizeof o);
    qkf_qmodel q;
    double t0 = qkf_now();
    if (qkf_quant_calibrate(m, x, 1, 1, &o))
        return -1;
    int rc = qkf_quantize(m, &hw->arith, hw->name, &o, &q);
    qkf_quant_calib_free(&o, m);
    if (rc)
        return -1;
    const qkf_hw_arith *a = &hw->arith;
    printf("quantised for %s (%d-bit weights, %d-bit %s current, %d-bit membrane): %.1f s\n"
           "sums: %s\n\n",
           hw->name, a->weight_bits, a->current_bits, a->current_wrap ? "wrapping" : "saturating",
           a->membrane_bits, qkf_now() - t0,
           a->current_wrap && a->current_bits <= 16
               ? "int16 lanes (the current register wraps at <= 16 bits); convs that pool add "
                 "int16 weight mantissas into int32 sums (the mantissa gather)"
               : "int16 weight mantissas into int32 sums where the weights allow (the mantissa "
                 "gather), else int32 lanes");
    for (int p = 0; p < npath; p++) {
        qkf_isa_set(paths[p]);
        printf("accumulate ceilings (measured: the %s path's row kernels on L1-resident weights, "
               "%ld threads, per CPU second): %.1f G float adds/s, %.1f G int16 adds/s\n",
               qkf_isa_name(paths[p]), threads, qkf_bench_add_peak(threads) * 1e-9,
               qkf_bench_add_peak_int16(threads) * 1e-9);
    }
    qkf_isa_set(paths[0]);
    printf("\nwall time per sample, the median of %d alternating rounds of the float and the "
           "integer event\nengine (speedup: float / integer, the median of the rounds' ratios; "
           "cpu: CPU time of all threads;\nfloat acc, int acc: G accumulates per CPU second and "
           "their share of the float or int16 ceiling above per CPU second)\n",
           ROUNDS);
    printf("%6s %9s %9s %8s %9s %9s %8s %10s %10s %10s %10s %9s\n", "batch", "float ms", "int ms",
           "speedup", "float cpu", "int cpu", "cpu x", "float rate", "int rate", "float acc",
           "int acc", "path");
    for (int i = 0; i < nb; i++) {
        int B = (int)bl[i];
        qkf_sched *f = qkf_sched_create(m, B, 0);
        qkf_sched *e = f ? qkf_sched_create_int(&q, B, 0) : NULL;
        if (!e) {
            qkf_sched_free(f);
            qkf_qmodel_free(&q);
            return -1;
        }
        double fr[QKF_ISA_COUNT][ROUNDS], er[QKF_ISA_COUNT][ROUNDS], xr[QKF_ISA_COUNT][ROUNDS];
        double cf[QKF_ISA_COUNT] = {0}, ce[QKF_ISA_COUNT] = {0}, c;
        /* QKF_BENCH_ONLY=float|int times one engine alone (for profiling: perf record; the
         * other's columns then read 0) */
        const char *only = getenv("QKF_BENCH_ONLY");
        double sf = only && !strcmp(only, "int") ? 0 : seconds / ROUNDS;
        double se = only && !strcmp(only, "float") ? 0 : seconds / ROUNDS;
        for (int k = 0; k < ROUNDS; k++)
            for (int p = 0; p < npath; p++) {
                qkf_isa_set(paths[p]);
                int first = k == 0 && p == 0;
                c = 0;
                fr[p][k] = sf > 0 ? time_event(f, x, B, logits, sf, &c, first) / B : 0;
                cf[p] += c / B / ROUNDS;
                c = 0;
                er[p][k] = se > 0 ? time_event(e, x, B, logits, se, &c, first) / B : 0;
                ce[p] += c / B / ROUNDS;
                xr[p][k] = fr[p][k] / er[p][k];
            }
        double fa, ea, med;
        qkf_stats *fs = qkf_sched_stats(f), *es = qkf_sched_stats(e);
        rates(fs, &fa, &med);
        rates(es, &ea, &med);
        double facc = (double)qkf_stats_step_total(fs, -1).acs / (double)fs->samples;
        double eacc = (double)qkf_stats_step_total(es, -1).acs / (double)es->samples;
        for (int p = 0; p < npath; p++) {
            qkf_isa_set(paths[p]);
            double fg = facc / cf[p], eg = eacc / ce[p];
            char fx[32], ex[32];
            /* per CPU second against the ceiling per CPU second (its sum over the threads,
             * each measured per second of its own CPU time, divided by the threads) */
            snprintf(fx, sizeof fx, "%.1f %.0f%%", fg * 1e-9,
                     100 * fg * (double)threads / qkf_bench_add_peak(threads));
            snprintf(ex, sizeof ex, "%.1f %.0f%%", eg * 1e-9,
                     100 * eg * (double)threads / qkf_bench_add_peak_int16(threads));
            printf("%6d %9.2f %9.2f %7.2fx %9.2f %9.2f %7.2fx %9.2f%% %9.2f%% %10s %10s %9s\n",
                   B, 1e3 * qkf_bench_median(fr[p], ROUNDS), 1e3 * qkf_bench_median(er[p], ROUNDS),
                   qkf_bench_median(xr[p], ROUNDS), 1e3 * cf[p], 1e3 * ce[p], cf[p] / ce[p],
                   100 * fa, 100 * ea, fx, ex, qkf_isa_name(paths[p]));
        }
        qkf_isa_set(paths[0]);
        if (getenv("QKF_PROFILE")) {
            printf("float:\n");
            profile(fs);
            printf("integer:\n");
            profile(es);
        }
        qkf_sched_free(f);
        qkf_sched_free(e);
    }
    qkf_qmodel_free(&q);
    return 0;
}

int qkf_bench_event(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "bench event"};
    const char *weights = NULL, *variant = "cifar10", *batches = "1,8";
    const char *rate_list = "0.01,0.05,0.1,0.2,0.4", *py = "/usr/bin/python3", *v;
    long threads = 2, seed = 1;
    double seconds = 2.0, rate = 0.1;
    int r, no_dense = 0, torch = 0, have_hw = 0, no_curve = 0, npath = 1;
    qkf_hw_profile hw;
    const char *isa_list = NULL;
    qkf_isa paths[QKF_ISA_COUNT] = {qkf_isa_current()};
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if (qkf_flag(&a, "--no-dense")) {
            no_dense = 1;
            continue;
        }
        if (qkf_flag(&a, "--torch")) {
            torch = 1;
            continue;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) {
            if (r < 0)
                return qkf_cli_fail("bench event");
            have_hw = 1;
            continue;
        }
        if (qkf_flag(&a, "--no-curve")) {
            no_curve = 1;
            continue;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--variant", &variant)) ||
            (r = qkf_arg(&a, "--batch", &batches)) || (r = qkf_arg(&a, "--rates", &rate_list)) ||
            (r = qkf_arg(&a, "--python", &py)) || (r = qkf_arg(&a, "--isa", &isa_list))) {
            if (r < 0)
                return qkf_cli_fail("bench event");
            continue;
        }
        if ((r = qkf_arg(&a, "--threads", &v)) != 0) {
            if (r < 0 || qkf_parse_int("--threads", v, 1, 1024, &threads))
                return qkf_cli_fail("bench event");
            continue;
        }
        if ((r = qkf_arg(&a, "--seed", &v)) != 0) {
            if (r < 0 || qkf_parse_int("--seed", v, 0, 1L << 30, &seed))
                return qkf_cli_fail("bench event");
            continue;
        }
        if ((r = qkf_arg(&a, "--seconds", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--seconds", v, 0.01, 3600, &seconds))
                return qkf_cli_fail("bench event");
            continue;
        }
        if ((r = qkf_arg(&a, "--rate", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--rate", v, 0.001, 0.6, &rate))
                return qkf_cli_fail("bench event");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf bench event --help)", argv[a.i]);
        return qkf_cli_fail("bench event");
    }
    double bl[16], rl[16], event_ms[16], dense1_ms = 0.0, torch1_ms = 0.0;
    int nb = parse_list(batches, bl, 16, 1, 4096, "--batch");
    int nr = nb < 0 ? -1 : parse_list(rate_list, rl, 16, 0.001, 0.6, "--rates");
    if (nb < 0 || nr < 0)
        return qkf_cli_fail("bench event");
    if (isa_list && (npath = parse_paths(isa_list, paths)) < 0)
        return qkf_cli_fail("bench event");
    qkf_set_threads((int)threads);

    qkf_model m;
    memset(&m, 0, sizeof m);
    if (weights) {
        if (qkf_ckpt_load(weights, &m))
            return qkf_cli_fail("bench event");
    } else {
        if (qkf_config_preset(variant, &m.cfg) || qkf_params_build(&m.cfg, &m.params))
            return qkf_cli_fail("bench event");
        qkf_params_init(&m.cfg, &m.params, (uint64_t)seed);
    }
    int maxb = 1;
    for (int i = 0; i < nb; i++)
        maxb = (int)bl[i] > maxb ? (int)bl[i] : maxb;
    float *x = make_input(&m.cfg, maxb, (uint64_t)seed + 100);
    float *logits = qkf_malloc((size_t)maxb * m.cfg.num_classes * sizeof(float));
    float *saved = qkf_malloc((size_t)m.params.total * sizeof(float));
    memcpy(saved, m.params.data, (size_t)m.params.total * sizeof(float));
    int rc = 1;

    printf("event vs dense: %s, T = %d, %d threads, BatchNorm calibrated on one sample, kernel "
           "path %s\n",
           weights ? weights : variant, m.cfg.T, (int)threads, qkf_bench_isa_desc());
    /* OpenBLAS picks its sgemm kernels by CPU at load time, whatever the kernel path: the
     * dense engine's BLAS stands for the CPU class OPENBLAS_CORETYPE names (BENCHMARKS.md
     * "Kernel paths per CPU": Haswell for AVX2, Nehalem for SSE-class machines) */
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("dense engine's BLAS: OpenBLAS, %s kernels (%s)\n", openblas_get_corename(),
           core && *core ? "set by OPENBLAS_CORETYPE"
                         : "picked for this CPU; OPENBLAS_CORETYPE sets it");
    double busy = cores_busy();
    if (busy >= 0.2)
        printf("note: other processes kept %.1f cores busy just before the run: wall times are "
               "unreliable\n      (OpenMP threads wait for each other at every node); see the "
               "cpu columns\n",
               busy);
    double t0 = qkf_now();
    if (qkf_stats_calibrate(&m, x, 1, rate, 0.5, 0, (uint64_t)seed))
        goto done;
    printf("calibration to rate %.3f: %.1f s\n", rate, qkf_now() - t0);
    if (have_hw) {
        if (hw.arith.is_float) {
            qkf_set_error("--hw %s: a float machine (the integer engine needs an integer "
                          "arithmetic; run without --hw)",
                          hw.name);
            goto done;
        }
        if (bench_int(&m, &hw, x, bl, nb, seconds, threads, logits, paths, npath))
            goto done;
        rc = 0;
        goto done;
    }
    for (int p = 0; p < npath; p++) {
        qkf_isa_set(paths[p]);
        printf("accumulate ceiling (measured: the %s path's row kernel on L1-resident weights, "
               "%ld threads): %.1f G float adds/s (the 'of peak' base)\n",
               qkf_isa_name(paths[p]), threads, qkf_bench_add_peak(threads) * 1e-9);
    }
    qkf_isa_set(paths[0]);
    printf("\nwall time per sample, the median of %d alternating rounds of dense and event "
           "(speedup:\nthe median of the rounds' ratios; cpu: CPU time of all threads, robust on "
           "a busy machine)\n",
           ROUNDS);
    printf("%6s %9s %9s %8s %9s %9s %8s %9s %9s %9s %8s %9s\n", "batch", "dense ms", "event ms",
           "speedup", "dense cpu", "event cpu", "cpu x", "avg rate", "median", "G acc/s",
           "of peak", "path");
    for (int i = 0; i < nb; i++) {
        int B = (int)bl[i];
        qkf_dense *d = no_dense ? NULL : qkf_dense_create(&m, B, 0);
        qkf_sched *e = d || no_dense ? qkf_sched_create(&m, B, 0) : NULL;
        if (!e) {
            qkf_dense_free(d);
            goto done;
        }
        /* each round: dense, then the event engine on every path */
        double dr[ROUNDS], er[QKF_ISA_COUNT][ROUNDS], xr[QKF_ISA_COUNT][ROUNDS], cd = 0, td = 0, c;
        double ce[QKF_ISA_COUNT] = {0};
        for (int k = 0; k < ROUNDS; k++) {
            if (d) {
                dr[k] = time_dense(d, x, B, logits, seconds / ROUNDS, &c, k == 0) / B;
                cd += c / B / ROUNDS;
            }
            for (int p = 0; p < npath; p++) {
                qkf_isa_set(paths[p]);
                er[p][k] = time_event(e, x, B, logits, seconds / ROUNDS, &c, k == 0) / B;
                ce[p] += c / B / ROUNDS;
                xr[p][k] = d ? dr[k] / er[p][k] : 0.0;
            }
        }
        if (d)
            td = qkf_bench_median(dr, ROUNDS);
        for (int p = 0; p < npath; p++) {
            qkf_isa_set(paths[p]);
            double speedup = qkf_bench_median(xr[p], ROUNDS), te = qkf_bench_median(er[p], ROUNDS);
            if (p == 0) {
                event_ms[i] = te * 1e3;
                if (B == 1 && d)
                    dense1_ms = td * 1e3;
            }
            qkf_stats *s = qkf_sched_stats(e);
            qkf_work tot = qkf_stats_step_total(s, -1);
            double avg, med;
            rates(s, &avg, &med);
            double acs = (double)tot.acs / (double)s->samples / te;
            double peak = qkf_bench_add_peak(threads);
            printf("%6d %9.2f %9.2f %7.2fx %9.2f %9.2f %7.2fx %8.2f%% %8.2f%% %9.1f %7.1f%% %9s\n",
                   B, td * 1e3, te * 1e3, speedup, cd * 1e3, ce[p] * 1e3, cd / ce[p], 100 * avg,
                   100 * med, acs * 1e-9, 100 * acs / peak, qkf_isa_name(paths[p]));
        }
        qkf_isa_set(paths[0]);
        if (getenv("QKF_PROFILE"))
            profile(qkf_sched_stats(e));
        qkf_sched_free(e);
        qkf_dense_free(d);
    }

    if (torch) {
        printf("\n");
        event_vs_torch ctx = {bl, nb, event_ms, 0.0};
        if (qkf_bench_torch(py, threads, batches, NULL, event_torch_ratio, &ctx))
            goto done;
        torch1_ms = ctx.torch1_ms;
    }

    /* the dense engine's (and PyTorch's) time does not depend on firing rates: each rate's
     * event time against the batch-1 times measured above */
    if (!no_curve) {
        printf("\nevent time against firing rate (batch 1%s%s):\n",
               dense1_ms > 0 ? "; x dense: against the dense engine's batch-1 time above" : "",
               torch1_ms > 0 ? "; x torch: against PyTorch's" : "");
        printf("%8s %9s %9s %12s %12s %10s %10s %9s %8s %9s %8s %8s\n", "target", "avg rate", "median",
               "events/smp", "acc/smp", "event ms", "event cpu", "G acc/s", "of peak", "ns/kacc",
               "x dense", "x torch");
    }
    for (int i = 0; i < (no_curve ? 0 : nr); i++) {
        memcpy(m.params.data, saved, (size_t)m.params.total * sizeof(float));
        if (qkf_stats_calibrate(&m, x, 1, rl[i], 0.5, 0, (uint64_t)seed))
            goto done;
        qkf_sched *e = qkf_sched_create(&m, 1, 0);
        if (!e)
            goto done;
        double ce;
        double te = time_event(e, x, 1, logits, seconds, &ce, 1);
        qkf_stats *s = qkf_sched_stats(e);
        qkf_work tot = qkf_stats_step_total(s, -1);
        double avg, med;
        rates(s, &avg, &med);
        double acc = (double)tot.acs / (double)s->samples;
        char xd[16] = "-", xt[16] = "-";
        if (dense1_ms > 0)
            snprintf(xd, sizeof xd, "%.2fx", dense1_ms / (te * 1e3));
        if (torch1_ms > 0)
            snprintf(xt, sizeof xt, "%.2fx", torch1_ms / (te * 1e3));
        printf("%7.1f%% %8.2f%% %8.2f%% %12.0f %12.3g %10.2f %10.2f %9.1f %7.1f%% %9.2f %8s %8s\n",
               100 * rl[i], 100 * avg, 100 * med, (double)tot.in_events / (double)s->samples, acc,
               te * 1e3, ce * 1e3, acc / te * 1e-9, 100 * acc / te / qkf_bench_add_peak(threads),
               te * 1e12 / acc, xd, xt);
        qkf_sched_free(e);
    }
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("bench event");
    qkf_free(x);
    qkf_free(logits);
    qkf_free(saved);
    qkf_model_free(&m);
    return rc;
}
