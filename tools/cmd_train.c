/* qkf grad, qkf train and qkf eval: the training side of the command line.
 *
 *   grad   one training-mode forward + backward of the mean cross-entropy on an HDF5 batch,
 *          gradients written under their official state_dict keys (checked against PyTorch);
 *   train  the surrogate-gradient trainer: AdamW, cosine schedule with warmup, label smoothing,
 *          mixup, clipping, background data loading, resumable atomic checkpoints;
 *   eval   accuracy of a checkpoint on a dataset's test split. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/io.h"
#include "../kernels/backward.h"
#include "../kernels/base.h"
#include "../sim/dense.h"
#include "../sim/dist.h"
#include "../sim/train.h"
#include "app/evaluate.h"
#include "app/trainer.h"
#include "cli.h"

/* ---- qkf grad ------------------------------------------------------------------------------- */

static void grad_help(void)
{
    printf("usage: qkf grad --weights W.h5 --input X.h5 --output G.h5 [--tb-compat]\n"
           "                [--threads N] [--quiet]\n"
           "\n"
           "One training-mode step without the update: BatchNorm normalises with the batch\n"
           "statistics (and updates the running statistics, momentum 0.1), the LIF layers use\n"
           "the sigmoid surrogate gradient (alpha 4) with the detached hard reset. Reads\n"
           "'input' ([B,C,H,W] images or [B,T,C,H,W] frames) and 'labels' (integers [B]) from\n"
           "X.h5; writes to G.h5 (atomically):\n"
           "  loss               float32 scalar, mean cross-entropy over the batch\n"
           "  grad/<key>         float32, d loss / d parameter, official shape, for every\n"
           "                     trainable parameter\n"
           "  bn_after/<key>     float32, running_mean / running_var after the forward\n"
           "\n"
           "  --tb-compat    the official SSA proj_lif quirk (membrane over the T*B axis)\n"
           "  --threads N    OpenMP and BLAS threads (default: all cores)\n");
}

/* Reads input and labels of a batch file and checks them against the model. */
static int read_batch(const char *path, const qkf_model *m, float **x, int64_t **labels,
                      int64_t *B)
{
    int ndim, ldim;
    int64_t shape[5], lshape[5];
    if (qkf_h5_read_f32(path, "input", x, &ndim, shape))
        return -1;
    int frames = qkf_config_is_frames(&m->cfg);
    int want = frames ? 5 : 4;
    if (ndim != want)
        return qkf_set_error("%s: dataset 'input' has %d dimensions but a %s model takes %s",
                             path, ndim, qkf_variant_name(m->cfg.variant),
                             frames ? "frames [B,T,C,H,W]" : "images [B,C,H,W]");
    int64_t C = shape[frames ? 2 : 1], H = shape[frames ? 3 : 2], W = shape[frames ? 4 : 3];
    if (C != m->cfg.in_channels || H != m->cfg.img_size || W != m->cfg.img_size ||
        (frames && shape[1] != m->cfg.T))
        return qkf_set_error("%s: dataset 'input' does not fit the model (%d channels of "
                             "%d x %d%s)",
                             path, m->cfg.in_channels, m->cfg.img_size, m->cfg.img_size,
                             frames ? ", T frames" : "");
    if (qkf_h5_read_i64(path, "labels", labels, &ldim, lshape))
        return -1;
    if (ldim != 1 || lshape[0] != shape[0])
        return qkf_set_error("%s: dataset 'labels' must be [B] with B = %lld", path,
                             (long long)shape[0]);
    for (int64_t b = 0; b < shape[0]; b++)
        if ((*labels)[b] < 0 || (*labels)[b] >= m->cfg.num_classes)
            return qkf_set_error("%s: labels[%lld] = %lld is outside 0..%d", path, (long long)b,
                                 (long long)(*labels)[b], m->cfg.num_classes - 1);
    *B = shape[0];
    if (*B < 1)
        return qkf_set_error("%s: dataset 'input' holds no samples", path);
    return 0;
}

int cmd_grad(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "grad"};
    const char *weights = NULL, *input = NULL, *output = NULL;
    long threads = 0;
    int tb = 0, quiet = 0, r;
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            grad_help();
            return 0;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--input", &input)) ||
            (r = qkf_arg(&a, "--output", &output)) ||
            (r = qkf_arg_int(&a, "--threads", 1, 1024, &threads)) ||
            (r = qkf_arg_flag(&a, "--tb-compat", &tb)) ||
            (r = qkf_arg_flag(&a, "--quiet", &quiet))) {
            if (r < 0)
                return qkf_cli_fail("grad");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf grad --help)", argv[a.i]);
        return qkf_cli_fail("grad");
    }
    if (!weights || !input || !output) {
        qkf_set_error("--weights, --input and --output are required");
        return qkf_cli_fail("grad");
    }
    if (threads)
        qkf_set_threads((int)threads);

    int rc = 1;
    qkf_model m;
    memset(&m, 0, sizeof m);
    float *x = NULL, *target = NULL;
    int64_t *labels = NULL, B = 0;
    int32_t *lab32 = NULL;
    qkf_train *e = NULL;
    qkf_h5out *o = NULL;
    if (qkf_ckpt_load(weights, &m) || read_batch(input, &m, &x, &labels, &B))
        goto done;
    e = qkf_train_create(&m, (int)B, tb ? QKF_TRAIN_TB_COMPAT : 0);
    if (!e)
        goto done;
    int K = m.cfg.num_classes;
    target = qkf_malloc((size_t)(B * K) * sizeof(float));
    lab32 = qkf_malloc((size_t)B * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        lab32[b] = (int32_t)labels[b];
    qkf_xent_targets(target, lab32, (int)B, K, 0.0f);
    qkf_train_zero_grad(e);
    double loss = 0.0;
    if (qkf_train_loss_backward(e, x, (int)B, target, &loss, NULL))
        goto done;
    const float *grads = qkf_train_grads(e);
    o = qkf_h5out_open(output);
    if (!o)
        goto done;
    float lossf = (float)loss;
    if (qkf_h5out_f32(o, "loss", 0, NULL, &lossf))
        goto done;
    const qkf_params *ps = &m.params;
    double gn = 0.0;
    for (int k = 0; k < ps->n; k++) {
        const qkf_param *p = &ps->p[k];
        const float *src = p->is_buffer ? ps->data + p->offset : grads + p->offset;
        if (qkf_ckpt_write_param(o, p->is_buffer ? "bn_after/" : "grad/", p, src))
            goto done;
        if (!p->is_buffer)
            for (int64_t i = 0; i < p->numel; i++)
                gn += (double)src[i] * (double)src[i];
    }
    if (qkf_h5out_attr_str(o, NULL, "qkf_version", QKF_VERSION) ||
        qkf_h5out_attr_str(o, NULL, "weights", weights) ||
        qkf_h5out_attr_i64(o, NULL, "tb_compat", tb))
        goto done;
    int crc = qkf_h5out_commit(o);
    o = NULL;
    if (crc)
        goto done;
    if (!quiet)
        printf("loss %.6f, gradient norm %.6g over %lld parameters; wrote %s\n", loss, sqrt(gn),
               (long long)ps->n_train, output);
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("grad");
    if (o)
        qkf_h5out_abort(o);
    qkf_train_free(e);
    qkf_free(x);
    qkf_free(labels);
    qkf_free(lab32);
    qkf_free(target);
    qkf_model_free(&m);
    return rc;
}

/* ---- qkf eval -------------------------------------------------------------------------------- */

static void eval_help(void)
{
    printf("usage: qkf eval --weights W.h5 --data NAME [--mode dense|event] [--limit N]\n"
           "                [--batch N] [--threads N] [--tb-compat] [--conv ALGO]\n"
           "\n"
           "Classifies the test split of dataset NAME (fashion-mnist, mnist, cifar10:DIR,\n"
           "cifar100:DIR, h5:FILE.h5; see qkf train --help) with the checkpoint, normalising\n"
           "pixels with its input_mean / input_std, and prints 'accuracy: X' (a fraction).\n"
           "  --mode M    dense (every neuron, GEMMs) or event (the event-driven scheduler)\n"
           "  --limit N   only the first N test images\n");
    fputs(qkf_conv_help, stdout);
    printf("chip arithmetic (docs/hardware.md): the dense integer engine (--mode event: the\n"
           "integer event engine, the same predictions); with a float checkpoint the float\n"
           "model's accuracy is printed beside the integer one (both with --tb-compat when\n"
           "given). W.h5 may be a qkf quantize output.\n");
    fputs(qkf_hw_help, stdout);
    fputs(qkf_quant_help, stdout);
    printf("  --flips          per LIF layer, spikes of the integer model that differ from the\n"
           "                   float model's on the same images (a float checkpoint; dense)\n");
}

static void print_log(void *ctx, const char *line)
{
    (void)ctx;
    fputs(line, stderr);
}

static int eval_run(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "eval"};
    qkf_evaluate_opts eo;
    qkf_evaluate_opts_init(&eo);
    const char *weights = NULL, *data = eo.data, *mode = "dense";
    long threads = 0, limit = 0, batch = eo.batch;
    int tb = 0, conv = 0, r;
    qkf_hw_profile hw; /* --hw: the dense integer engine (tools/cmd_quantize.c) */
    int have_hw = 0, flips = 0;
    long calib = 0;
    qkf_quant_opts qo;
    memset(&qo, 0, sizeof qo);
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            eval_help();
            return 0;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) {
            if (r < 0)
                return qkf_cli_fail_rank0("eval");
            have_hw = 1;
            continue;
        }
        if ((r = qkf_arg_quant(&a, &calib, &qo)) || (r = qkf_arg_flag(&a, "--flips", &flips))) {
            if (r < 0)
                return qkf_cli_fail_rank0("eval");
            continue;
        }
        if ((r = qkf_arg_conv(&a, &conv)) || (r = qkf_arg(&a, "--weights", &weights)) ||
            (r = qkf_arg(&a, "--data", &data)) || (r = qkf_arg(&a, "--mode", &mode)) ||
            (r = qkf_arg_int(&a, "--threads", 1, 1024, &threads)) ||
            (r = qkf_arg_int(&a, "--limit", 1, 1L << 40, &limit)) ||
            (r = qkf_arg_int(&a, "--batch", 1, 65536, &batch)) ||
            (r = qkf_arg_flag(&a, "--tb-compat", &tb))) {
            if (r < 0)
                return qkf_cli_fail_rank0("eval");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf eval --help)", argv[a.i]);
        return qkf_cli_fail_rank0("eval");
    }
    if (!weights) {
        qkf_set_error("--weights is required");
        return qkf_cli_fail_rank0("eval");
    }
    if (strcmp(mode, "dense") != 0 && strcmp(mode, "event") != 0) {
        qkf_set_error("option --mode: '%s' is not an engine (dense or event)", mode);
        return qkf_cli_fail_rank0("eval");
    }
    if (threads)
        qkf_set_threads((int)threads);
    if (have_hw || qkf_qckpt_is_quant(weights) == 1) {
        if (qkf_dist_size() > 1) {
            qkf_set_error("--hw (or a quantised checkpoint) runs the integer engines in one "
                          "process: not under mpirun");
            return qkf_cli_fail_rank0("eval");
        }
        return qkf_cli_eval_hw(weights, have_hw ? &hw : NULL, calib, data, &qo, limit,
                               (int)batch, !strcmp(mode, "event"), tb, flips);
    }
    eo.weights = weights, eo.data = data, eo.event = !strcmp(mode, "event"), eo.conv = conv;
    eo.tb = tb, eo.limit = limit, eo.batch = (int)batch;
    qkf_evaluate_result res;
    int rc = qkf_evaluate_run(&eo, print_log, NULL, &res);
    if (rc)
        return qkf_cli_app_fail("eval", rc);
    if (qkf_dist_rank() == 0) {
        fprintf(stderr, "%lld test images of %s, %s engine, %d rank%s, %.1f s\n",
                (long long)res.count, res.source, mode, qkf_dist_size(),
                qkf_dist_size() > 1 ? "s" : "", res.seconds);
        printf("accuracy: %.4f\n", res.accuracy);
    }
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    if (qkf_dist_init())
        return qkf_cli_fail("eval");
    int rc = eval_run(argc, argv);
    qkf_dist_finalize();
    return rc;
}

/* ---- qkf train ------------------------------------------------------------------------------- */

static void train_help(void)
{
    printf(
        "usage: qkf train [--config FILE] [options]\n"
        "\n"
        "Trains QKFormer with surrogate gradients (sigmoid alpha 4, detached reset), BatchNorm\n"
        "in training mode and AdamW, on images from a dataset, evaluating on its test split\n"
        "after every epoch. The default is a small model for Fashion-MNIST.\n"
        "\n"
        "model (default: cifar variant, img 28, 1 channel, 10 classes, embed 64, 4 heads,\n"
        "mlp 4, depths 3, T 2):\n"
        "  --model PRESET       start from a preset (qkf --help lists them)\n"
        "  --img-size --in-channels --num-classes --embed-dims --num-heads --mlp-ratio\n"
        "  --depths --T --qk-attn token|channel      override single fields\n"
        "  --init W.h5          start from these weights (and their configuration)\n"
        "  --tb-compat          the official SSA proj_lif quirk (membrane over T*B)\n"
        "data:\n"
        "  --data NAME          fashion-mnist (default), mnist, NAME:DIR for idx files,\n"
        "                       cifar10:DIR, cifar100:DIR (binary batches), h5:TRAIN.h5[,TEST.h5]\n"
        "                       (datasets images [n,C,H,W] and labels [n])\n"
        "  --crop-pad N         random crop with N pixels of zero padding (default 2; 0: off)\n"
        "  --flip               random horizontal flips (default off)\n"
        "  --limit-train N, --limit-test N           use only the first N images\n"
        "  --val N              hold out the last N training images (never trained on):\n"
        "                       the model (the integer model under --hw) is evaluated on\n"
        "                       them at every --save-every and epoch end, and the best is\n"
        "                       written to OUT.best.h5 (attributes train_val_acc, _step);\n"
        "                       select checkpoints on this, never on the test split\n"
        "optimisation (AdamW and cosine schedule as the official CIFAR recipe, spec section 6;\n"
        "defaults sized for Fashion-MNIST on a few cores):\n"
        "  --epochs N (3)  --batch N (32)  --lr X (1.5e-3)  --min-lr X (1e-5)\n"
        "  --warmup-epochs X (0.2)  --warmup-lr X (1e-5)  --weight-decay X (0.06)\n"
        "  --smoothing X (0.1)  --mixup ALPHA (0: off)  --mixup-off-epoch N\n"
        "  --clip X (0: off)   --seed N (42)\n"
        "  --distill T.h5       knowledge distillation from the float model T.h5 (same inputs\n"
        "                       and classes): loss = (1 - A) CE(z, targets) + A T^2\n"
        "                       KL(softmax(t / T) || softmax(z / T)), t the teacher's logits\n"
        "                       on the same augmented batch\n"
        "  --distill-weight A (0.5, 0..1)  --distill-temp T (2, 0.05..100)\n"
        "  --max-steps N        stop (and save) after update N; the schedule still spans\n"
        "                       --epochs, so --resume continues the same run\n"
        "output:\n"
        "  --out W.h5           checkpoint, written atomically every --save-every steps (0:\n"
        "                       at epoch ends only), at the end and on Ctrl-C; it holds the\n"
        "                       weights, the normalisation, the optimiser moments and the step\n"
        "  --resume W.h5        continue a run exactly where its checkpoint left it (its\n"
        "                       options are restored; options given again override them)\n"
        "  --metrics FILE       a line per --log-every steps (default 50) and per epoch;\n"
        "                       .csv for CSV, anything else JSON lines\n"
        "  --eval-mode M        engine of the per-epoch evaluation: event (default, faster)\n"
        "                       or dense\n"
        "  --threads N  --eval-batch N (200)  --no-eval  --quiet\n"
        "quantisation-aware fine-tuning (docs/hardware.md; one process):\n");
    fputs(qkf_hw_help, stdout);
    printf(
        "                   the forward runs the chip's integer arithmetic: every step the\n"
        "                   float weights are quantised as qkf quantize does (BatchNorm folded\n"
        "                   with its running statistics, which stay frozen) and the dense\n"
        "                   integer engine runs the batch; the backward is the surrogate\n"
        "                   gradient through a straight-through estimator (identity inside a\n"
        "                   register's range, zero where clamped). The checkpoint stays float\n"
        "                   (qkf quantize / qkf eval --hw take it); epochs evaluate the integer\n"
        "                   model. Start from trained weights with --init W.h5 and a low --lr;\n"
        "                   --resume needs the same --hw again.\n"
        "  --bits-min SPEC  the quantiser's weight-bit floor per layer (qkf quantize --help):\n"
        "                   M or LAYER=M,...; a layer's unit leaves its weights at least M\n"
        "                   bits, biases beyond the register saturate. Recorded in the\n"
        "                   checkpoint (quant/bits_min), which qkf quantize/eval/infer --hw\n"
        "                   then apply unless given another --bits-min\n"
        "traces (command line only; one process):\n"
        "  --trace T.h5 --record SPEC ... as in qkf infer --help, of training-mode forwards\n"
        "  --trace-steps LIST   updates to record, 1-based: N, A-B, comma lists (default 1)\n"
        "distributed (mpirun -np N qkf train ..., an MPI build; docs/mpi.md):\n"
        "  --batch is the global batch: each rank trains on a contiguous slice of the batch\n"
        "  the single-process run would see, the gradients are summed over the ranks, every\n"
        "  rank applies the same update; rank 0 prints and writes the checkpoint and metrics\n"
        "  --sync-bn            BatchNorm with the statistics of the global batch (default:\n"
        "                       each rank's own slice, as the official recipe)\n"
        "  --bucket-mb X        gradient all-reduce in buckets of X MB (default 4), each\n"
        "                       started as soon as the backward has finished its parameters,\n"
        "                       overlapping communication with the rest of the backward; 0:\n"
        "                       one all-reduce of the whole gradient after the backward\n"
        "\n"
        "A config file holds the same options, one per line, as 'name value', 'name = value'\n"
        "or 'name: value' (without the dashes; the name ends at the first '=' or ':', the\n"
        "value is one word kept whole: 'data h5:train.h5,test.h5'); '#' starts a comment.\n"
        "Command-line options override it.\n");
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* The trainer's progress, printed as qkf train always printed it. */
static int print_event(void *ctx, const qkf_trainer_event *ev)
{
    (void)ctx;
    if (ev->text)
        fputs(ev->text, ev->kind == QKF_TRAINER_OUT ? stdout : stderr);
    return 0;
}

static int train_run(int argc, char **argv);

int cmd_train(int argc, char **argv)
{
    if (qkf_dist_init())
        return qkf_cli_fail("train");
    int rc = train_run(argc, argv);
    qkf_dist_finalize();
    return rc;
}

static int train_run(int argc, char **argv)
{
    static qkf_trainer_opts o;
    qkf_trainer_opts_init(&o);
    o.argc = argc, o.argv = argv, o.tty = isatty(2), o.interrupt = &interrupted;
    qkf_args a = {argc, argv, 1, "train"};
    /* precedence: defaults < the resumed checkpoint's options < config file < command line */
    for (a.i = 1; a.i < argc; a.i++)
        if (!strcmp(argv[a.i], "--resume") || !strncmp(argv[a.i], "--resume=", 9)) {
            const char *path;
            if (qkf_arg(&a, "--resume", &path) < 0 || qkf_trainer_resume_options(path, &o))
                return qkf_cli_fail_rank0("train");
        }
    for (a.i = 1; a.i < argc; a.i++)
        if (!strcmp(argv[a.i], "--config") || !strncmp(argv[a.i], "--config=", 9)) {
            const char *path;
            if (qkf_arg(&a, "--config", &path) < 0 || qkf_trainer_read_config(path, &o))
                return qkf_cli_fail_rank0("train");
        }
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            train_help();
            return 0;
        }
        const char *dummy, *trace_steps;
        int r = qkf_arg(&a, "--config", &dummy);
        if (r == 0)
            r = qkf_arg_trace(&a, &o.trace);
        if (r == 0 && (r = qkf_arg(&a, "--trace-steps", &trace_steps)) > 0 &&
            qkf_trainer_parse_steps(trace_steps, &o.trace_steps))
            r = -1;
        if (r == 0)
            r = qkf_trainer_parse_opt(&a, &o);
        if (r < 0)
            return qkf_cli_fail_rank0("train");
        if (r == 0) {
            qkf_set_error("unexpected argument '%s' (qkf train --help)", argv[a.i]);
            return qkf_cli_fail_rank0("train");
        }
    }
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    interrupted = 0;
    int rc = qkf_trainer_run(&o, print_event, NULL);
    sigaction(SIGINT, &old_sa, NULL);
    return rc < 0 ? qkf_cli_app_fail("train", rc) : rc;
}
