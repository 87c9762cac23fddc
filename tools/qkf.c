/* qkf: the command-line front end. Each subcommand parses its options, calls the library, and
 * reports errors as one line "qkf CMD: message" with a non-zero exit. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "../io/hw_profile.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../sim/dense.h"
#include "../sim/dist.h"
#include "app/evaluate.h"
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
            "  map      map a model onto a chip's cores: does it fit, which limit binds\n"
            "  bench    measure inference speed (dense engine vs the PyTorch reference)\n"
            "  train    train a model (surrogate gradients, AdamW) on a dataset\n"
            "  eval     accuracy of a checkpoint on a dataset's test split\n"
            "  serve    the event engine as a live device on a TCP port (libuv)\n"
            "  client   replay an event file to qkf serve; --bench N for events/s and latency\n"
            "  report   statistics of a trace (rates, silent/saturated neurons, masks, membranes)\n"
            "  events   event-camera files: info, frames for infer, DVS emulator, convert, bench\n"
            "  grad     one training-mode forward + backward; loss and gradients to HDF5\n"
            "  hw       chip profiles: list the bundled ones, show one (arithmetic, mesh, costs)\n"
            "  quantize turn a float checkpoint into a chip's integer model (infer/eval --hw)\n"
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

int qkf_cli_app_fail(const char *cmd, int rc)
{
    if (rc == QKF_APP_HERE)
        return qkf_cli_fail(cmd);
    if (rc == QKF_APP_QUIET)
        return 1;
    return qkf_cli_fail_rank0(cmd);
}

int qkf_arg_hw(qkf_args *a, qkf_hw_profile *hw)
{
    const char *v;
    int r = qkf_arg(a, "--hw", &v);
    if (r <= 0)
        return r;
    return qkf_hw_load(v, hw) ? -1 : 1;
}

const char *const qkf_hw_help =
    "  --hw PROFILE     the chip: a bundled profile (qkf hw list: loihi, speck,\n"
    "                   truenorth, ideal-45nm, wide16) or a profile file (FILE.yaml, SANA-FE\n"
    "                   architecture format + qkf keys; qkf hw show checks one)\n";

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
    if (!strcmp(cmd, "map"))
        return cmd_map(argc - 1, argv + 1);
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
    if (!strcmp(cmd, "hw"))
        return cmd_hw(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize"))
        return cmd_quantize(argc - 1, argv + 1);
    fprintf(stderr, "qkf: unknown command '%s' (qkf --help lists them)\n", cmd);
    return 2;
}
