/* The training driver: the surrogate-gradient trainer behind qkf train and qkf.train, as a
 * library call. AdamW with a cosine schedule and warmup, label smoothing, mixup, clipping,
 * background data loading, per-epoch evaluation (tools/app/evaluate.h), resumable atomic
 * checkpoints, metrics files, traces of chosen updates, and data-parallel training under
 * mpirun (sim/dist.h, tools/app/dist_dataset.h; docs/mpi.md).
 *
 * Options are set by name exactly as the command line and config files give them
 * (qkf_trainer_parse_opt, qkf_trainer_set, qkf_trainer_read_config), so every way in accepts the
 * same names and reports the same messages. Precedence, as qkf train applies it: defaults
 * (qkf_trainer_opts_init) < the options saved in a resumed checkpoint
 * (qkf_trainer_resume_options) < a config file < single options.
 *
 * Progress goes to a callback (qkf_trainer_event), never to a stream: a step event after every
 * update, an epoch event after every epoch, and log lines; each carries the text qkf train
 * prints, so the command prints exactly what it printed before. */
#ifndef QKF_TRAINER_H
#define QKF_TRAINER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "../../models/hw.h"
#include "../../models/qkformer.h"
#include "../../sim/train.h"
#include "opts.h"

/* --trace-steps: update numbers (1-based) whose forward is recorded, "N", "A-B", comma lists. */
typedef struct {
    int n;
    int64_t lo[64], hi[64];
} qkf_trainer_steps;
int qkf_trainer_parse_steps(const char *spec, qkf_trainer_steps *st);

typedef struct {
    qkf_config cfg;
    int cfg_given; /* a model option was given (checked against a resumed checkpoint) */
    const char *data, *out, *resume, *init, *metrics;
    long epochs, max_steps, batch, save_every, log_every, eval_batch, threads, crop_pad;
    int64_t limit_train, limit_test;
    double warmup_epochs, smoothing, mixup;
    long mixup_off_epoch;
    qkf_optim_cfg opt;
    uint64_t seed;
    int flip, tb, quiet, no_eval, eval_event, sync_bn;
    double bucket_mb; /* gradient all-reduce buckets (MB); 0: one all-reduce after the backward */
    /* --hw NAME|FILE.yaml: quantisation-aware fine-tuning on that chip profile's integer
     * arithmetic (sim/train.h qkf_train_set_hw); NULL: float training */
    const char *hw;
    /* --bits-min SPEC: the quantiser's per-layer weight-bit floor under --hw (models/quant.h
     * qkf_quant_opts.bits_min), recorded in the checkpoints (dataset quant/bits_min) */
    const char *bits_min;
    /* --distill T.h5: knowledge distillation from that float model's logits (sim/train.h
     * qkf_kd_loss) with --distill-weight (alpha, default 0.5) and --distill-temp (T, default 2) */
    const char *distill;
    double distill_weight, distill_temp;
    /* --val N: the last N training samples are held out (never trained on); the model is
     * evaluated on them (the integer model under --hw) at every --save-every and epoch end, and
     * the best is written to <out>.best.h5 (val_best: its accuracy and step, kept by --resume) */
    int64_t val;
    double val_best;
    int64_t val_best_step;
    /* Set by the run itself (not options): the loaded profile's name and arithmetic, which
     * its checkpoints record (optim/hw, optim/hw_arith) for --resume to check. */
    const char *hw_name;
    qkf_hw_arith hw_arith;
    /* Not options of a config file: */
    qkf_trace_opts trace;          /* --trace, --record, ...: trace training-mode forwards */
    qkf_trainer_steps trace_steps; /* of these updates (default 1) */
    int argc;                      /* the command line, recorded in a trace's provenance */
    char **argv;
    int tty; /* progress: a line rewritten with '\r' after every step (a terminal) */
    /* Set asynchronously (a SIGINT handler) to stop at the next step: the run saves and
     * returns 130. NULL: none. */
    volatile sig_atomic_t *interrupt;
    char data_buf[512];  /* holds the dataset name read from a resumed checkpoint */
    char str_buf[8192];  /* holds the string values of config files and qkf_trainer_set */
    size_t str_used;
} qkf_trainer_opts;

/* The defaults: a small QKFormer for 28x28 grey images on fashion-mnist, 3 epochs. */
void qkf_trainer_opts_init(qkf_trainer_opts *o);
/* Consumes one option at a->argv[a->i] ("--epochs 3", "--epochs=3", "--flip"): 1, 0 (not a
 * training option), -1 (bad value; message recorded). */
int qkf_trainer_parse_opt(qkf_args *a, qkf_trainer_opts *o);
/* One option by name without dashes ("epochs", "3"; value NULL for a flag such as "flip"). The
 * strings must outlive the run. */
int qkf_trainer_set(qkf_trainer_opts *o, const char *name, const char *value);
/* A config file: one option per line, "name value" or "name = value", '#' comments. */
int qkf_trainer_read_config(const char *path, qkf_trainer_opts *o);
/* A copy of s kept in o (config values outlive the line they were read from); NULL when full. */
const char *qkf__trainer_keep(qkf_trainer_opts *o, const char *s);
/* The options a training checkpoint was written with (what --resume restores first). */
int qkf_trainer_resume_options(const char *path, qkf_trainer_opts *o);

enum {
    QKF_TRAINER_LOG = 0, /* a line of text for stderr */
    QKF_TRAINER_STEP,    /* after every update */
    QKF_TRAINER_EPOCH,   /* after every epoch (and its evaluation) */
    QKF_TRAINER_OUT,     /* a line of text for stdout */
};
typedef struct {
    int kind;
    const char *text; /* what qkf train prints for it (stderr; OUT: stdout), or NULL */
    int64_t epoch;    /* 1-based */
    int64_t step;     /* updates done */
    int64_t total_steps, steps_per_epoch;
    double loss, acc;     /* STEP: this step's; EPOCH: the epoch's mean */
    double test_acc;      /* EPOCH: -1 without evaluation */
    double lr, grad_norm; /* STEP */
    double img_per_s, seconds;
} qkf_trainer_event;
/* A non-zero return stops the run after the current step, as Ctrl-C does (it saves and the
 * run returns 130). */
typedef int (*qkf_trainer_cb)(void *ctx, const qkf_trainer_event *ev);

/* The split of n training samples under --limit-train `limit` (0: all) and --val `val`: the run
 * trains on samples [0, *train_n) and validates on [*val_lo, n) (*val_lo = n when val = 0),
 * disjoint by construction. -1 with one line when val leaves fewer than `batch` samples to train
 * on or is not below n. */
int qkf_trainer_split(int64_t n, int64_t limit, int64_t val, int64_t batch, int64_t *train_n,
                      int64_t *val_lo);
/* <out> without its .h5 (if any) + ".best.h5" into buf. */
void qkf_trainer_best_path(const char *out, char *buf, size_t cap);

/* Runs the training job o describes (collective under mpirun). Returns 0, 130 when stopped
 * early (saved, resumable), or a QKF_APP_* failure (tools/app/evaluate.h). */
int qkf_trainer_run(qkf_trainer_opts *o, qkf_trainer_cb cb, void *ctx);

#endif
