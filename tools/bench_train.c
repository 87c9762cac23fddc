/* qkf bench train: training throughput (forward, BPTT backward, AdamW step) and peak resident
 * memory of the training engine, beside the PyTorch reference (tools/reference/
 * bench_torch_train.py) run right after it in the same command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../sim/dense.h"
#include "../sim/train.h"
#include "bench.h"
#include "cli.h"

int qkf_bench_train(int argc, char **argv);

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* kB on Linux */
}

/* QKF_PROFILE: per-op forward and backward milliseconds per step, and the input density of
 * every convolution. */
static void print_profile(const qkf_graph *g, const double *prof, int steps)
{
    double tf = 0.0, tb = 0.0, kinds[2][8] = {{0}};
    static const char *kname[] = {"conv", "lif", "add", "qk_sum", "qk_mask", "ssa", "readout"};
    printf("%-36s %9s %9s %8s %9s\n", "op", "fwd ms", "bwd ms", "density", "dW ms");
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        double f = 1e3 * prof[i] / steps, b = 1e3 * prof[g->n_ops + i] / steps;
        tf += f;
        tb += b;
        if ((int)op->kind < 7) {
            kinds[0][op->kind] += f;
            kinds[1][op->kind] += b;
        }
        if (prof[3 * g->n_ops + i] > 0)
            printf("%-36s %9.1f %9.1f %8.3f %9.1f\n", op->name, f, b,
                   prof[2 * g->n_ops + i] / prof[3 * g->n_ops + i],
                   1e3 * prof[4 * g->n_ops + i] / steps);
        else
            printf("%-36s %9.1f %9.1f\n", op->name, f, b);
    }
    for (int k = 0; k < 7; k++)
        printf("total %-30s %9.1f %9.1f\n", kname[k], kinds[0][k], kinds[1][k]);
    printf("%-36s %9.1f %9.1f\n", "total", tf, tb);
}

int qkf_bench_train(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "bench train"};
    const char *weights = NULL, *variant = "cifar10", *conv = "winograd4", *v;
    long batch = 32, steps = 3, threads = 2;
    int torch = 0, r;
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            printf("usage: qkf bench train [--weights W.h5 | --variant NAME] [--batch 32] "
                   "[--steps 3] [--threads 2] [--conv winograd4|winograd2|direct] [--torch]\n\n"
                   "Times training steps (forward, BPTT backward, AdamW) of the model (default "
                   "the cifar10 preset,\nHST-4-384 T=4) on random data after one warm-up step, "
                   "and reports images/s and the\nprocess's peak resident memory; --torch then "
                   "runs the PyTorch reference the same way. --conv: the 3x3 data gradients\n"
                   "(default Winograd F(4x4,3x3)). QKF_PROFILE=1: per-op times.\n");
            return 0;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--variant", &variant)) ||
            (r = qkf_arg(&a, "--conv", &conv))) {
            if (r < 0)
                return qkf_cli_fail("bench train");
            continue;
        }
        long *dst = NULL;
        const char *name = NULL;
        if ((r = qkf_arg(&a, "--batch", &v)) != 0)
            dst = &batch, name = "--batch";
        else if ((r = qkf_arg(&a, "--steps", &v)) != 0)
            dst = &steps, name = "--steps";
        else if ((r = qkf_arg(&a, "--threads", &v)) != 0)
            dst = &threads, name = "--threads";
        if (dst) {
            if (r < 0 || qkf_parse_int(name, v, 1, 4096, dst))
                return qkf_cli_fail("bench train");
            continue;
        }
        if (qkf_flag(&a, "--torch")) {
            torch = 1;
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf bench train --help)", argv[a.i]);
        return qkf_cli_fail("bench train");
    }
    qkf_set_threads((int)threads);
    qkf_model m;
    memset(&m, 0, sizeof m);
    if (weights ? qkf_ckpt_load(weights, &m)
                : (qkf_config_preset(variant, &m.cfg) || qkf_params_build(&m.cfg, &m.params)))
        return qkf_cli_fail("bench train");
    if (!weights)
        qkf_params_init(&m.cfg, &m.params, 1);
    int B = (int)batch, K = m.cfg.num_classes, flags;
    if (!strcmp(conv, "winograd4"))
        flags = 0;
    else if (!strcmp(conv, "winograd2"))
        flags = QKF_TRAIN_WINO2;
    else if (!strcmp(conv, "direct"))
        flags = QKF_TRAIN_DIRECT;
    else {
        qkf_model_free(&m);
        qkf_set_error("--conv: '%s' is not winograd4, winograd2 or direct", conv);
        return qkf_cli_fail("bench train");
    }
    qkf_train *e = qkf_train_create(&m, B, flags);
    if (!e) {
        qkf_model_free(&m);
        return qkf_cli_fail("bench train");
    }
    qkf_optim opt;
    qkf_optim_cfg oc;
    qkf_optim_defaults(&oc);
    qkf_optim_init(&opt, &m.params, &oc);
    int S = m.cfg.img_size, C = m.cfg.in_channels;
    int64_t per = (int64_t)C * S * S * (qkf_config_is_frames(&m.cfg) ? m.cfg.T : 1);
    float *x = qkf_malloc((size_t)(per * B) * sizeof(float));
    float *target = qkf_calloc((size_t)B * K, sizeof(float));
    qkf_rng rng;
    qkf_rng_seed(&rng, 1);
    for (int64_t i = 0; i < per * B; i++)
        x[i] = qkf_config_is_frames(&m.cfg) ? (float)(qkf_rng_uniform(&rng) < 0.3f)
                                            : qkf_rng_normal(&rng);
    for (int b = 0; b < B; b++)
        target[(int64_t)b * K + (int)(qkf_rng_u64(&rng) % (uint64_t)K)] = 1.0f;
    printf("model: %s, img %d, T %d, batch %d, threads %ld, 3x3 data gradient %s; training "
           "engine %.0f MB; kernel path %s\n",
           weights ? weights : variant, S, m.cfg.T, B, threads, conv,
           (double)qkf_train_bytes(e) / 1e6, qkf_bench_isa_desc());
    fflush(stdout);
    double *prof = getenv("QKF_PROFILE") ? qkf_train_profile(e) : NULL;
    double best = 1e30, total = 0.0, cpu = 0.0;
    int rc = 0;
    for (long i = 0; i <= steps; i++) {
        double t0 = qkf_now(), c0 = cpu_seconds(), loss;
        qkf_train_zero_grad(e);
        if (qkf_train_loss_backward(e, x, B, target, &loss, NULL)) {
            rc = qkf_cli_fail("bench train");
            break;
        }
        qkf_optim_step(&opt, &m.params, qkf_train_grads(e));
        double dt = qkf_now() - t0;
        if (i) { /* the first step warms up */
            total += dt;
            cpu += cpu_seconds() - c0;
            best = dt < best ? dt : best;
        } else if (prof) {
            memset(prof, 0, (size_t)5 * qkf_train_graph(e)->n_ops * sizeof(double));
        }
    }
    if (prof && !rc)
        print_profile(qkf_train_graph(e), prof, (int)steps);
    if (!rc) {
        printf("qkf train batch=%d images_per_s=%.2f peak_rss_mb=%.0f mean_ms=%.1f best_ms=%.1f "
               "steps=%ld cpu_s_per_step=%.2f\n",
               B, (double)B * (double)steps / total, peak_rss_mb(), 1e3 * total / (double)steps,
               1e3 * best, steps, cpu / (double)steps);
        fflush(stdout);
    }
    double ours = rc ? 0.0 : (double)B * (double)steps / total, our_mem = peak_rss_mb();
    qkf_free(x);
    qkf_free(target);
    qkf_optim_free(&opt);
    qkf_train_free(e);
    qkf_model_free(&m);
    if (rc || !torch)
        return rc;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s/tools/reference/bench_torch_train.py --threads %ld --batch %d "
             "--steps %ld%s%s",
             QKF_SOURCE_DIR, threads, B, steps, weights ? " --weights " : " --preset ",
             weights ? weights : variant);
    printf("running: %s\n", cmd);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f) {
        qkf_set_error("cannot run %s", cmd);
        return qkf_cli_fail("bench train");
    }
    char line[512];
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        int b;
        double ips, mem;
        if (sscanf(line, "torch train batch=%d images_per_s=%lf peak_rss_mb=%lf", &b, &ips,
                   &mem) == 3 &&
            ips > 0 && mem > 0)
            printf("ratio: throughput qkf/torch=%.2f, peak memory qkf/torch=%.2f\n", ours / ips,
                   our_mem / mem);
    }
    if (pclose(f) != 0)
        printf("note: the PyTorch reference did not finish cleanly\n");
    return 0;
}
