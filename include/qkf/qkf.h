/* qkf: the public C API of the QKFormer simulator and trainer.
 *
 * A small surface for programs (and the Python module `qkf`, python/): load and save
 * checkpoints, run a batch in the dense or the event-driven engine, read logits, spike counts,
 * firing rates and work statistics, record traces, evaluate on a dataset, train from a config,
 * and run on a neuromorphic chip's integer arithmetic: chip profiles, quantised checkpoints,
 * quantising a float model for a profile (docs/hardware.md). Link with `pkg-config --cflags --libs qkf`; docs/api.c is a complete example.
 *
 * Conventions.
 *  - Every handle is created by a qkf_*_new / _load / run call that returns it through an out
 *    parameter, is owned by the caller, and is freed with its _free (NULL is accepted).
 *  - Fallible calls return 0 (QKF_OK) or a negative QKF_E* code; qkf_error_message() then holds
 *    one line saying what is wrong (the same line the qkf command prints), kept per thread until
 *    the thread's next failing call. Nothing here prints or exits.
 *  - A handle is used by one thread at a time; different handles may be used from different
 *    threads at once. The only process-wide setting is the thread count (qkf_set_threads).
 *  - Arrays handed in are read in place (no copies); arrays handed out belong to their handle
 *    and stay valid until it is freed.
 *
 * Tensor conventions are the official QKFormer's: inputs float32 [B][C][H][W] (images) or
 * [B][T][C][H][W] (event frames of dvs128 / cifar10dvs models), logits [B][num_classes], LIF
 * layers named by their official module path ("stage1.0.tssa.q_lif"). */
#ifndef QKF_QKF_H
#define QKF_QKF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QKF_API_VERSION 2 /* 2: chip profiles, quantised networks */

/* Error codes: X(name, value, text). */
#define QKF_ERRORS(X)                                                                              \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(EFILE, -2, "file error")                                                                     \
    X(ERUN, -3, "run failed")                                                                      \
    X(ESTOPPED, -4, "stopped by the callback")

enum {
    QKF_OK = 0,
#define QKF_X_(name, value, text) QKF_##name = value,
    QKF_ERRORS(QKF_X_)
#undef QKF_X_
};

/* The text of an error code ("invalid argument"); "unknown error" for anything else. */
const char *qkf_strerror(int code);
/* The message of this thread's last failing call. */
const char *qkf_error_message(void);
/* The library's version, "0.1.0". */
const char *qkf_version_string(void);
/* OpenMP and BLAS threads for every later call (default: all cores). Results do not depend on
 * it. */
void qkf_set_threads(int n);

/* ---- networks ------------------------------------------------------------------------------ */

/* A QKFormer with its weights, ready to run. */
typedef struct qkf_net qkf_net_t;

typedef struct {
    const char *variant; /* "cifar", "imagenet", "dvs128", "cifar10dvs" */
    int img_size, in_channels, num_classes, embed_dims, num_heads;
    float mlp_ratio;
    int depths, T;
    const char *qk_attn; /* "token" (QKTA, official) or "channel" (QKCA) */
} qkf_net_config_t;

/* Loads a checkpoint written by qkf (qkf init, qkf train, tools/reference/convert_pth.py), or a
 * quantised checkpoint (qkf quantize, qkf_net_quantize): an integer network, which runs on its
 * profile's arithmetic (the integer engines) and nothing else. */
int qkf_net_load(const char *path, qkf_net_t **net);
/* Writes the weights, configuration and input normalisation as a checkpoint (atomically: a
 * temporary file renamed into place); an integer network as the quantised checkpoint qkf
 * quantize writes. */
int qkf_net_save(const qkf_net_t *net, const char *path);
void qkf_net_free(qkf_net_t *net);

void qkf_net_config(const qkf_net_t *net, qkf_net_config_t *cfg);
/* Trainable parameters, as `qkf info` counts them. */
int64_t qkf_net_num_parameters(const qkf_net_t *net);
/* LIF layers in graph order: official module paths and neurons per sample. */
int qkf_net_num_layers(const qkf_net_t *net);
const char *qkf_net_layer_name(const qkf_net_t *net, int layer);
int64_t qkf_net_layer_neurons(const qkf_net_t *net, int layer);

/* ---- chip profiles and integer networks ------------------------------------------------------ */

/* A chip profile (docs/hardware.md, "Profiles"): a chip's arithmetic, cores and costs, from
 * SANA-FE's architecture YAML plus qkf's keys. */
typedef struct qkf_profile qkf_profile_t;

/* The profiles bundled into the library ("loihi", "speck", ...), as qkf hw list shows them:
 * their number, and the i-th one's name (NULL past the end). */
int qkf_profile_count(void);
const char *qkf_profile_bundled(int i);
/* Loads a bundled profile by name, or a profile file (a name containing '/' or ending in
 * .yaml / .yml). A bad file: QKF_EFILE, the message naming file, line and key. */
int qkf_profile_load(const char *name_or_path, qkf_profile_t **profile);
void qkf_profile_free(qkf_profile_t *profile);
/* Its name, description, file ("" when bundled), and where its cost figures come from
 * ("as_given", "calibrated", "estimate", "partial", "unpublished", "hypothetical"). */
const char *qkf_profile_name(const qkf_profile_t *profile);
const char *qkf_profile_description(const qkf_profile_t *profile);
const char *qkf_profile_path(const qkf_profile_t *profile);
const char *qkf_profile_cost_basis(const qkf_profile_t *profile);
/* Every number of the profile as (name, value) pairs, i in 0 .. qkf_profile_num_fields - 1:
 * "arith.<field>" (the integer arithmetic: weight_bits, membrane_bits, ..., is_float), "mesh.*",
 * "core.*" (limits per core; 0: unlimited), "cost.*" (per-activity energies in J and latencies
 * in s of the units qkf's neurons use), "hop.*", "energy.e_ac_j" / "energy.e_mac_j". Returns
 * the name (NULL past the end) and stores the value. */
int qkf_profile_num_fields(const qkf_profile_t *profile);
const char *qkf_profile_field(const qkf_profile_t *profile, int i, double *value);

/* 1 if net is an integer network (a quantised checkpoint, or qkf_net_quantize's result). */
int qkf_net_is_quantized(const qkf_net_t *net);
/* The profile an integer network was quantised for ("loihi"), or NULL for a float network. */
const char *qkf_net_profile_name(const qkf_net_t *net);

/* How qkf_net_quantize quantises, as qkf quantize's options. */
typedef struct {
    long calib;        /* calibrate on the first `calib` training samples of `data` (0: no) */
    const char *data;  /* dataset of calib (names as qkf eval --data; default fashion-mnist) */
    double headroom;   /* without calibration, registers hold +-headroom thresholds (16) */
    int clip_bias;     /* a bias beyond its register saturates instead of widening the unit */
} qkf_quant_opts_t;
void qkf_quant_opts_init(qkf_quant_opts_t *o);

/* Quantises a float network for a profile (NULL opts: the defaults), as qkf quantize does: *out
 * is a new integer network (the same bits as qkf quantize's Q.h5; qkf_net_save writes it). A
 * profile that is the float machine, an integer network, or a layer the chip cannot hold:
 * QKF_EINVAL with one line naming it. */
int qkf_net_quantize(const qkf_net_t *net, const qkf_profile_t *profile,
                     const qkf_quant_opts_t *opts, qkf_net_t **out);

/* ---- running a batch ----------------------------------------------------------------------- */

enum { QKF_MODE_DENSE = 0, QKF_MODE_EVENT = 1 };

typedef struct {
    int mode;       /* QKF_MODE_DENSE (every neuron, GEMMs) or QKF_MODE_EVENT (event-driven) */
    int batch;      /* samples per forward pass (default 32) */
    int tb_compat;  /* the official SSA proj_lif quirk (membrane over the T*B axis) */
    const char *conv; /* dense 3x3 convolutions: "winograd4" (default), "winograd2", "direct" */
    int stats;      /* dense mode: tally work statistics too (keeps every tensor: slower);
                       the event engine always counts its work */
    double e_ac, e_mac; /* energy per accumulate / multiply-accumulate, pJ (0.9 / 4.6) */
    /* Traces, as qkf infer --trace records them (docs/traces.md): */
    const char *trace;          /* file to create; NULL: no trace */
    const char *const *record;  /* n_record specs "LAYERS:OBS[:KEY=VALUE...]" (none: spikes) */
    int n_record;
    int trace_force;            /* overwrite an existing trace file */
    int trace_raw;              /* store membranes uncompressed */
    long trace_buffer_mb;       /* memory between the run and the trace writer (default 64) */
    /* Chip profiles (docs/hardware.md; API version 2). With a profile, or on an integer
     * network, the run is the chip's integer arithmetic as qkf infer --hw runs it: mode DENSE
     * the dense integer engine, EVENT the integer event engine (same spikes and logits, the
     * event engine's statistics). A float network is quantised for the profile with the
     * defaults on the first run (qkf_net_quantize for calibration) and kept for later runs;
     * an integer network takes no profile or one of its own arithmetic. The input must have
     * the checkpoint's own size and T; trace, conv and (DENSE) stats are refused; tb_compat
     * only in EVENT mode. */
    const char *hw;                /* profile: a bundled name or a YAML file; NULL: none */
    const qkf_profile_t *profile;  /* or a loaded profile (used instead of hw) */
} qkf_run_opts_t;

/* Defaults: dense mode, batch 32, no trace. */
void qkf_run_opts_init(qkf_run_opts_t *o);

/* The outputs of one qkf_net_run. */
typedef struct qkf_result qkf_result_t;

/* Runs B samples of x (float32, [B][C][H][W] for image models, [B][T][C][H][W] for event-frame
 * models; H = W may differ from img_size where the architecture allows, T may differ from the
 * model's for frames) in batches of o->batch, and returns the result. The engine is prepared on
 * the first run with given options and reused while they stay the same. */
int qkf_net_run(qkf_net_t *net, const float *x, const int64_t *shape, int ndim,
                const qkf_run_opts_t *o, qkf_result_t **result);
void qkf_result_free(qkf_result_t *r);

int64_t qkf_result_samples(const qkf_result_t *r);
/* float32 [samples][num_classes]. Integer runs: the integer logits times the head's scale, as
 * qkf infer --hw writes them. */
const float *qkf_result_logits(const qkf_result_t *r);
/* Integer runs: the exact integer logits, int64 [samples][num_classes] (qkf infer --hw's
 * logits_int); NULL for float runs. */
const int64_t *qkf_result_logits_int(const qkf_result_t *r);
/* Spikes of each LIF layer (qkf_net_layer_name order) over all steps, samples and neurons. */
const int64_t *qkf_result_spike_counts(const qkf_result_t *r);
/* spike count / (T * samples * neurons), as qkf infer writes firing_rate/<layer>. */
double qkf_result_firing_rate(const qkf_result_t *r, int layer);
/* Seconds the forward passes took. */
double qkf_result_seconds(const qkf_result_t *r);

/* Work statistics (the event engine's counters; the dense engine's with opts.stats), as qkf sim
 * reports them. has_stats 0: none were collected. */
typedef struct {
    int has_stats;
    int64_t accumulates; /* synaptic accumulates (event engine: one add per spike and target) */
    int64_t macs;        /* multiply-accumulates (encoding conv, head; dense: every op) */
    int64_t in_events, out_spikes;
    double energy_j;     /* accumulates x e_ac + macs x e_mac */
    int n_nodes;         /* per-node detail: qkf_result_node */
} qkf_stats_t;
typedef struct {
    const char *name; /* the node's module path (a conv and its LIF are one node) */
    const char *kind; /* encode, conv, qk_sum, attn_lif, mask, ssa, add, readout */
    int layer;        /* LIF layer whose spikes the node emits, or -1 */
    int64_t accumulates, macs, in_events, out_spikes;
    double energy_j;
} qkf_node_stats_t;
void qkf_result_stats(const qkf_result_t *r, qkf_stats_t *s);
int qkf_result_node(const qkf_result_t *r, int node, qkf_node_stats_t *s);

/* ---- evaluation and training --------------------------------------------------------------- */

/* Accuracy of net on the test split of a dataset (names as qkf eval --data: fashion-mnist,
 * mnist, cifar10:DIR, cifar100:DIR, h5:FILE.h5, ...; pixels normalised with the checkpoint's
 * input_mean / input_std), first `limit` samples (0: all), with o's mode, batch, tb_compat and
 * conv. With a profile (o->hw, o->profile) or on an integer network: as qkf eval --hw, the dense
 * integer engine (whatever o's mode: both integer engines classify alike) with o's batch. */
int qkf_net_evaluate(qkf_net_t *net, const char *data, int64_t limit, const qkf_run_opts_t *o,
                     double *accuracy, int64_t *count);

/* A training job: qkf train's options, set by name. */
typedef struct qkf_training qkf_training_t;

int qkf_training_new(qkf_training_t **t);
void qkf_training_free(qkf_training_t *t);
/* One option by the name qkf train --help lists, without dashes ("epochs", "3"; "lr", "1e-3";
 * "flip", NULL). Setting "resume" first restores the options saved in that checkpoint (later
 * settings override them), as qkf train --resume does. Strings are copied. */
int qkf_training_set(qkf_training_t *t, const char *name, const char *value);
/* A config file as qkf train --config reads it. */
int qkf_training_read_config(qkf_training_t *t, const char *path);

enum { QKF_TRAIN_LOG = 0, QKF_TRAIN_STEP = 1, QKF_TRAIN_EPOCH = 2, QKF_TRAIN_OUT = 3 };
typedef struct {
    int kind;         /* LOG, OUT: a line of text; STEP: after an update; EPOCH: after an epoch */
    const char *text; /* the line qkf train prints for it (OUT: to stdout), or NULL */
    int64_t epoch;    /* 1-based */
    int64_t step;     /* updates done */
    int64_t total_steps, steps_per_epoch;
    double loss, acc;     /* STEP: the update's; EPOCH: the epoch's mean */
    double test_acc;      /* EPOCH: after the epoch's evaluation; -1 without */
    double lr, grad_norm; /* STEP */
    double img_per_s, seconds;
} qkf_train_event_t;
/* Returning non-zero stops training after the current update: the checkpoint is saved (resume
 * it with "resume") and qkf_training_run returns QKF_ESTOPPED. */
typedef int (*qkf_train_fn)(void *data, const qkf_train_event_t *ev);

/* Runs the job (the same trainer as qkf train: checkpoints, metrics, evaluation per epoch). */
int qkf_training_run(qkf_training_t *t, qkf_train_fn fn, void *data);

#ifdef __cplusplus
}
#endif

#endif
