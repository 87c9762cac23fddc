/* qkf: the command-line front end. Each subcommand parses its options, calls the library, and
 * reports errors as one line "qkf CMD: message" with a non-zero exit. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/bench.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../sim/dense.h"
#include "../sim/dist.h"
#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "qkf %s - QKFormer spiking transformer: simulate, analyse, train\n"
            "\n"
            "usage: qkf COMMAND [options]   (qkf COMMAND --help for details)\n"
            "\n"
            "commands:\n"
            "  info     model configuration and parameter counts (checkpoint or preset)\n"
            "  init     write a freshly initialised checkpoint\n"
            "  infer    run a checkpoint on an input file; logits, spike counts, firing rates\n"
            "  sim      event-driven simulation: sparsity, synaptic operations and energy report\n"
            "  bench    measure inference speed (dense engine vs the PyTorch reference)\n"
            "  train    train a model (surrogate gradients, AdamW) on a dataset\n"
            "  eval     accuracy of a checkpoint on a dataset's test split\n"
            "  serve    the event engine as a live device on a TCP port (libuv)\n"
            "  client   replay an event file to qkf serve; --bench N for events/s and latency\n"
            "  report   statistics of a trace (rates, silent/saturated neurons, masks, membranes)\n"
            "  events   event-camera files: info, frames for infer, DVS emulator, convert, bench\n"
            "  grad     one training-mode forward + backward; loss and gradients to HDF5\n"
            "\n"
            "presets: %s\n",
            QKF_VERSION, qkf_config_preset_list());
}

int qkf_cli_fail(const char *cmd)
{
    fprintf(stderr, "qkf %s: %s\n", cmd, qkf_last_error());
    return 1;
}

int qkf_cli_fail_rank0(const char *cmd) { return qkf_dist_rank() == 0 ? qkf_cli_fail(cmd) : 1; }

int qkf_arg(qkf_args *a, const char *name, const char **val)
{
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(s, name, n) != 0)
        return 0;
    if (s[n] == '=') {
        *val = s + n + 1;
        return 1;
    }
    if (s[n] != 0)
        return 0;
    if (a->i + 1 >= a->argc) {
        qkf_set_error("option %s needs a value", name);
        return -1;
    }
    *val = a->argv[++a->i];
    return 1;
}

int qkf_flag(qkf_args *a, const char *name) { return strcmp(a->argv[a->i], name) == 0; }

int qkf_arg_flag(qkf_args *a, const char *name, int *out)
{
    if (!qkf_flag(a, name))
        return 0;
    *out = 1;
    return 1;
}

int qkf_arg_positional(qkf_args *a, const char **val)
{
    if (a->argv[a->i][0] == '-' || *val)
        return qkf_set_error("unexpected argument '%s' (qkf %s --help)", a->argv[a->i], a->cmd);
    *val = a->argv[a->i];
    return 0;
}

int qkf_arg_int(qkf_args *a, const char *name, long lo, long hi, long *out)
{
    const char *v;
    int r = qkf_arg(a, name, &v);
    if (r <= 0)
        return r;
    return qkf_parse_int(name, v, lo, hi, out) ? -1 : 1;
}

int qkf_parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return qkf_set_error("option %s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi);
    *out = v;
    return 0;
}

int qkf_arg_conv(qkf_args *a, int *conv)
{
    const char *v;
    int r = qkf_arg(a, "--conv", &v);
    if (r <= 0)
        return r;
    return qkf_dense_conv_flags(v, conv) ? -1 : 1;
}

const char *const qkf_conv_help =
    "  --conv ALGO      the dense engine's 3x3 convolutions: winograd4 (Winograd\n"
    "                   F(4x4,3x3), the fastest; default, or $QKF_CONV), winograd2\n"
    "                   (F(2x2,3x3): exact wherever direct is, e.g. power-of-two\n"
    "                   weights), direct (im2col + sgemm, plain summation order)\n";

int qkf_parse_float(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi))
        return qkf_set_error("option %s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    *out = v;
    return 0;
}

int qkf_arg_config(qkf_args *a, qkf_config *cfg)
{
    static const struct {
        const char *opt;
        size_t off;
        long lo, hi;
    } ints[] = {
        {"--img-size", offsetof(qkf_config, img_size), 1, 4096},
        {"--in-channels", offsetof(qkf_config, in_channels), 1, 64},
        {"--num-classes", offsetof(qkf_config, num_classes), 1, 100000},
        {"--embed-dims", offsetof(qkf_config, embed_dims), 1, 65536},
        {"--num-heads", offsetof(qkf_config, num_heads), 1, 4096},
        {"--depths", offsetof(qkf_config, depths), 1, 1000},
        {"--T", offsetof(qkf_config, T), 1, 1024},
    };
    const char *v;
    int r;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if ((r = qkf_arg(a, ints[i].opt, &v)) != 0) {
            long x = 0;
            if (r < 0 || qkf_parse_int(ints[i].opt, v, ints[i].lo, ints[i].hi, &x))
                return -1;
            *(int *)((char *)cfg + ints[i].off) = (int)x;
            return 1;
        }
    }
    if ((r = qkf_arg(a, "--mlp-ratio", &v)) != 0) {
        double x = 0;
        if (r < 0 || qkf_parse_float("--mlp-ratio", v, 1e-3, 64, &x))
            return -1;
        cfg->mlp_ratio = (float)x;
        return 1;
    }
    if ((r = qkf_arg(a, "--qk-attn", &v)) != 0) {
        if (r < 0)
            return -1;
        if (strcmp(v, "token") == 0)
            cfg->qk_attn = QKF_QK_TOKEN;
        else if (strcmp(v, "channel") == 0)
            cfg->qk_attn = QKF_QK_CHANNEL;
        else
            return qkf_set_error("option --qk-attn: '%s' is not token or channel", v);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    qkf_h5_quiet();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    /* the kernels' CPU path (kernels/isa.h): decided once, a bad QKF_ISA stops here */
    if (qkf_isa_init() < 0) {
        fprintf(stderr, "qkf: %s\n", qkf_last_error());
        return 2;
    }
    if (!strcmp(cmd, "--version")) {
        printf("qkf %s; kernel path %s\n", QKF_VERSION, qkf_bench_isa_desc());
        return 0;
    }
    if (!strcmp(cmd, "info"))
        return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "init"))
        return cmd_init(argc - 1, argv + 1);
    if (!strcmp(cmd, "infer"))
        return cmd_infer(argc - 1, argv + 1);
    if (!strcmp(cmd, "sim"))
        return cmd_sim(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "grad"))
        return cmd_grad(argc - 1, argv + 1);
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "client"))
        return cmd_client(argc - 1, argv + 1);
    if (!strcmp(cmd, "report"))
        return cmd_report(argc - 1, argv + 1);
    if (!strcmp(cmd, "events"))
        return cmd_events(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc - 1, argv + 1);
    fprintf(stderr, "qkf: unknown command '%s' (qkf --help lists them)\n", cmd);
    return 2;
}
