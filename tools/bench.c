/* qkf bench: inference throughput of the dense engine, side by side with the PyTorch reference
 * (tools/reference/bench_torch.py) in the same run, so the ratio is measured under the same
 * machine load. Results go to stdout as a table; BENCHMARKS.md records them with the command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../sim/dense.h"
#include "cli.h"
#include "bench.h"

static void help(void)
{
    printf("usage: qkf bench [--weights W.h5 | --variant NAME] [--batch 1,32] [--threads N]\n"
           "                 [--conv winograd4,direct] [--seconds S] [--torch] [--python PY]\n"
           "       qkf bench event --help    event engine vs dense, and the firing-rate curve\n"
           "       qkf bench train --help    training throughput and memory vs PyTorch\n"
           "\n"
           "Measures dense inference images/s at each batch size (default: the cifar10 preset,\n"
           "HST-4-384 T=4, batches 1 and 32). With --torch, runs the PyTorch reference\n"
           "(tools/reference/bench_torch.py, same weights) in the same run and prints ratios.\n"
           "--conv lists the dense engine's convolution algorithms to time, one after the\n"
           "other (winograd4: Winograd F(4x4,3x3), the default; winograd2: F(2x2,3x3);\n"
           "direct: im2col + sgemm); the first is the one compared with PyTorch.\n");
}

/* Multiply-adds of one image through the dense engine's convolutions and head (the encoding
 * conv of a static image counted once, as the engine runs it). */
static double dense_gflop(const qkf_model *m)
{
    qkf_graph g;
    if (qkf_graph_build(&m->cfg, &m->params, 0, &g))
        return 0.0;
    double macs = 0.0;
    for (int i = 0; i < g.n_ops; i++) {
        const qkf_op *op = &g.ops[i];
        if (op->kind != QKF_OP_CONV)
            continue;
        const qkf_tensor *x = &g.tensors[op->in0];
        int ho = (x->h - 1) / op->stride + 1, wo = (x->w - 1) / op->stride + 1;
        macs += (double)op->cout * op->cin * op->k * op->k * ho * wo * (x->static_t ? 1 : m->cfg.T);
    }
    qkf_graph_free(&g);
    return 2.0 * macs / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double qkf_bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Images/s of the median forward (returned) and of the fastest (*best_ips): on a shared
 * machine the fastest run is the least disturbed one, the median the typical one. */
static double run_dense(qkf_model *m, int B, int conv, double seconds, double *best_ips)
{
    qkf_dense *e = qkf_dense_create(m, B, conv);
    if (!e)
        return -1.0;
    int S = m->cfg.img_size, C = m->cfg.in_channels;
    int64_t per = (int64_t)C * S * S * (qkf_config_is_frames(&m->cfg) ? m->cfg.T : 1);
    double *prof = getenv("QKF_PROFILE") ? qkf_dense_profile(e) : NULL;
    float *x = qkf_malloc((size_t)(per * B) * sizeof(float));
    float *logits = qkf_malloc((size_t)B * m->cfg.num_classes * sizeof(float));
    enum { MAX_RUNS = 4096 };
    double *times = qkf_malloc(MAX_RUNS * sizeof(double));
    qkf_rng r;
    qkf_rng_seed(&r, 7);
    for (int64_t i = 0; i < per * B; i++)
        x[i] = qkf_rng_normal(&r);
    qkf_dense_forward(e, x, B, logits, NULL); /* warm-up */
    int iters = 0;
    double t0 = qkf_now();
    while ((qkf_now() - t0 < seconds || iters < 3) && iters < MAX_RUNS) {
        double t1 = qkf_now();
        qkf_dense_forward(e, x, B, logits, NULL);
        times[iters++] = qkf_now() - t1;
    }
    double median = qkf_bench_median(times, iters); /* sorts: times[0] is the fastest */
    *best_ips = (double)B / times[0];
    if (prof) {
        const qkf_graph *g = qkf_dense_graph(e);
        double kind[8] = {0};
        for (int i = 0; i < g->n_ops; i++) {
            kind[g->ops[i].kind] += prof[i];
            if (g->ops[i].kind == QKF_OP_CONV)
                printf("  %-36s %8.2f ms/img\n", g->ops[i].name, 1e3 * prof[i] / (iters + 1) / B);
        }
        const char *kn[] = {"conv", "lif", "add", "qk_sum", "qk_mask", "ssa", "readout"};
        for (int k = 0; k < 7; k++)
            printf("  total %-10s %8.2f ms/img\n", kn[k], 1e3 * kind[k] / (iters + 1) / B);
    }
    qkf_free(x);
    qkf_free(logits);
    qkf_free(times);
    qkf_dense_free(e);
    return (double)B / median;
}

int qkf_bench_torch(const char *py, long threads, const char *batches, const char *weights,
                    qkf_torch_result_fn on_result, void *ctx)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s/tools/reference/bench_torch.py --threads %ld --batch %s%s%s",
             py, QKF_SOURCE_DIR, threads, batches, weights ? " --weights " : "",
             weights ? weights : "");
    printf("running: %s\n", cmd);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f)
        return qkf_set_error("cannot run %s", cmd);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        int b;
        double ips, med_ms, min_ms;
        if (sscanf(line, "torch batch=%d images_per_s=%lf median_ms=%lf min_ms=%lf", &b, &ips,
                   &med_ms, &min_ms) == 4 &&
            ips > 0 && min_ms > 0)
            on_result(ctx, b, ips, med_ms, min_ms);
    }
    if (pclose(f) != 0)
        printf("note: the PyTorch reference did not finish cleanly\n");
    return 0;
}

typedef struct {
    const int *bs;
    int nbs;
    const double *ours, *ours_best;
} dense_vs_torch;

static void dense_torch_ratio(void *ctx, int b, double ips, double med_ms, double min_ms)
{
    const dense_vs_torch *d = ctx;
    (void)med_ms;
    for (int i = 0; i < d->nbs; i++)
        if (d->bs[i] == b)
            printf("ratio batch=%d qkf/torch=%.2f (medians; fastest runs: %.2f)\n", b,
                   d->ours[i] / ips, d->ours_best[i] / (b / (min_ms / 1e3)));
}

int qkf_bench_event(int argc, char **argv); /* tools/bench_event.c */
int qkf_bench_train(int argc, char **argv); /* tools/bench_train.c */

const char *qkf_bench_isa_desc(void)
{
    static char buf[128];
    char list[64] = "";
    for (int i = QKF_ISA_COUNT - 1; i >= 0; i--)
        if (qkf_isa_supported((qkf_isa)i)) {
            if (*list)
                strcat(list, ", ");
            strcat(list, qkf_isa_name((qkf_isa)i));
        }
    const char *env = getenv("QKF_ISA");
    if (env && *env)
        snprintf(buf, sizeof buf, "%s (forced by QKF_ISA; this CPU: %s)",
                 qkf_isa_name(qkf_isa_current()), list);
    else
        snprintf(buf, sizeof buf, "%s (the best of %s)", qkf_isa_name(qkf_isa_current()), list);
    return buf;
}

int cmd_bench(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "event") == 0)
        return qkf_bench_event(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "train") == 0)
        return qkf_bench_train(argc - 1, argv + 1);
    qkf_args a = {argc, argv, 1, "bench"};
    const char *weights = NULL, *variant = "cifar10", *batches = "1,32", *py = "/usr/bin/python3", *v;
    const char *convs = "winograd4,direct";
    long threads = 2;
    double seconds = 5.0;
    int torch = 0, r;
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--variant", &variant)) ||
            (r = qkf_arg(&a, "--batch", &batches)) || (r = qkf_arg(&a, "--python", &py)) ||
            (r = qkf_arg(&a, "--conv", &convs))) {
            if (r < 0)
                return qkf_cli_fail("bench");
            continue;
        }
        if ((r = qkf_arg(&a, "--threads", &v)) != 0) {
            if (r < 0 || qkf_parse_int("--threads", v, 1, 1024, &threads))
                return qkf_cli_fail("bench");
            continue;
        }
        if ((r = qkf_arg(&a, "--seconds", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--seconds", v, 0.01, 3600, &seconds))
                return qkf_cli_fail("bench");
            continue;
        }
        if (qkf_flag(&a, "--torch")) {
            torch = 1;
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf bench --help)", argv[a.i]);
        return qkf_cli_fail("bench");
    }
    int bs[16], nbs = 0;
    for (const char *p = batches; *p && nbs < 16;) {
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 1 || b > 4096) {
            qkf_set_error("option --batch: '%s' is not a list of batch sizes like 1,32", batches);
            return qkf_cli_fail("bench");
        }
        bs[nbs++] = (int)b;
        p = *end == ',' ? end + 1 : end;
    }
    int cf[4], ncf = 0;
    char cnames[4][16];
    for (const char *p = convs; *p;) {
        size_t len = strcspn(p, ",");
        if (ncf == 4 || len >= sizeof cnames[0]) {
            qkf_set_error("option --conv: '%s' is not a list like winograd4,direct", convs);
            return qkf_cli_fail("bench");
        }
        memcpy(cnames[ncf], p, len);
        cnames[ncf][len] = 0;
        if (qkf_dense_conv_flags(cnames[ncf], &cf[ncf]))
            return qkf_cli_fail("bench");
        ncf++;
        p += len + (p[len] == ',');
    }
    if (ncf == 0) {
        qkf_set_error("option --conv: empty list");
        return qkf_cli_fail("bench");
    }
    qkf_set_threads((int)threads);
    qkf_model m;
    memset(&m, 0, sizeof m);
    if (weights) {
        if (qkf_ckpt_load(weights, &m))
            return qkf_cli_fail("bench");
    } else {
        if (qkf_config_preset(variant, &m.cfg) || qkf_params_build(&m.cfg, &m.params))
            return qkf_cli_fail("bench");
        qkf_params_init(&m.cfg, &m.params, 1);
    }
    printf("model: %s, img %d, T %d, threads %ld, kernel path %s\n",
           weights ? weights : variant, m.cfg.img_size, m.cfg.T, threads, qkf_bench_isa_desc());
    double ours[16], ours_best[16], gf = dense_gflop(&m);
    printf("dense work: %.2f GFLOP per image (convolutions)\n", gf);
    for (int i = 0; i < nbs; i++)
        for (int c = 0; c < ncf; c++) {
            double best, ips = run_dense(&m, bs[i], cf[c], seconds, &best);
            if (ips < 0) {
                qkf_model_free(&m);
                return qkf_cli_fail("bench");
            }
            if (c == 0)
                ours[i] = ips, ours_best[i] = best;
            /* GFLOP/s of the direct convolution's multiply-adds: Winograd does fewer */
            printf("qkf dense conv=%s batch=%d images_per_s=%.2f best=%.2f (median; %.0f "
                   "direct-equivalent GFLOP/s)%s\n",
                   cnames[c], bs[i], ips, best, ips * gf, c ? "" : " <- compared with PyTorch");
            if (c > 0)
                printf("ratio batch=%d %s/%s=%.2f\n", bs[i], cnames[0], cnames[c], ours[i] / ips);
            fflush(stdout);
        }
    if (torch) {
        dense_vs_torch ctx = {bs, nbs, ours, ours_best};
        if (qkf_bench_torch(py, threads, batches, weights, dense_torch_ratio, &ctx)) {
            qkf_model_free(&m);
            return qkf_cli_fail("bench");
        }
    }
    qkf_model_free(&m);
    return 0;
}
