/* The public C API (include/qkf/qkf.h) over the library: a network is a loaded model with engines
 * prepared on demand; a result holds one run's outputs; a training job is the trainer's options
 * (tools/app/trainer.h). Internal calls fail with -1 and a message (qkf_set_error); here each
 * failure becomes the QKF_E* code of where it happened. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/qkf/qkf.h"
#include "../../io/dataset.h"
#include "../../io/hw_profile.h"
#include "../../io/io.h"
#include "../../io/trace.h"
#include "../../kernels/base.h"
#include "../../models/quant.h"
#include "../../sim/dense.h"
#include "../../sim/dense_int.h"
#include "../../sim/sched.h"
#include "../../sim/stats.h"
#include "app_internal.h"
#include "evaluate.h"
#include "opts.h"
#include "quantize.h"
#include "trainer.h"

const char *qkf_strerror(int code)
{
    switch (code) {
    case QKF_OK:
        return "ok";
#define QKF_X_(name, value, text)                                                                 \
    case QKF_##name:                                                                               \
        return text;
        QKF_ERRORS(QKF_X_)
#undef QKF_X_
    }
    return "unknown error";
}

const char *qkf_error_message(void) { return qkf_last_error(); }

const char *qkf_version_string(void) { return QKF_VERSION; }

/* ---- networks -------------------------------------------------------------------------------- */

struct qkf_net {
    qkf_model m;   /* as loaded (an integer network: the configuration and normalisation only) */
    qkf_model run; /* what the engines run: m's parameters, the input's size and T */
    qkf_graph g;   /* m's graph: layer names and neurons */
    char *path;    /* the checkpoint it came from (names it in errors), or NULL */
    int64_t n_params;
    /* the prepared engine and what it was prepared for */
    qkf_dense *dense;
    qkf_sched *sched;
    int mode, batch, flags, stats;
    /* The integer model: an integer network's own (is_quant), or on a float network the last
     * profile run's (kept while the profile's name and arithmetic stay the same). */
    int is_quant, has_q;
    qkf_qmodel q;
    qkf_dense_int *dint; /* its prepared engine (or sint), and for what */
    qkf_sched *sint;
    int imode, ibatch, iflags;
};

static void drop_int_engines(qkf_net_t *n)
{
    qkf_dense_int_free(n->dint);
    qkf_sched_free(n->sint);
    n->dint = NULL, n->sint = NULL;
}

static void drop_qmodel(qkf_net_t *n)
{
    drop_int_engines(n);
    if (n->has_q)
        qkf_qmodel_free(&n->q);
    memset(&n->q, 0, sizeof n->q);
    n->has_q = 0;
}

/* An integer network around q (taken over): m holds its configuration and normalisation. */
static int net_from_qmodel(qkf_net_t *n, qkf_qmodel *q)
{
    n->q = *q;
    memset(q, 0, sizeof *q);
    n->is_quant = n->has_q = 1;
    n->m.cfg = n->q.cfg;
    n->m.n_norm = n->q.n_norm;
    memcpy(n->m.input_mean, n->q.input_mean, sizeof n->m.input_mean);
    memcpy(n->m.input_std, n->q.input_std, sizeof n->m.input_std);
    qkf_params ps;
    memset(&ps, 0, sizeof ps);
    if (qkf_params_build(&n->m.cfg, &ps))
        return -1;
    n->n_params = ps.n_train;
    qkf_params_free(&ps);
    if (qkf_graph_walk(&n->m.cfg, 0, &n->g))
        return -1;
    n->run = n->m;
    return 0;
}

static char *dup_str(const char *s)
{
    size_t len = strlen(s) + 1;
    char *d = qkf_malloc(len);
    memcpy(d, s, len);
    return d;
}

int qkf_net_load(const char *path, qkf_net_t **out)
{
    *out = NULL;
    if (!path)
        return qkf_set_error("no checkpoint path"), QKF_EINVAL;
    qkf_net_t *n = qkf_calloc(1, sizeof *n);
    qkf_h5_quiet();
    int isq = qkf_qckpt_is_quant(path);
    if (isq == 1) {
        qkf_qmodel q;
        memset(&q, 0, sizeof q);
        if (qkf_qckpt_load(path, &q) || net_from_qmodel(n, &q)) {
            qkf_net_free(n);
            return QKF_EFILE;
        }
        n->path = dup_str(path);
        *out = n;
        return QKF_OK;
    }
    if (isq < 0 || qkf_ckpt_load(path, &n->m)) {
        qkf_free(n);
        return QKF_EFILE;
    }
    if (qkf_graph_build(&n->m.cfg, &n->m.params, 0, &n->g)) {
        qkf_model_free(&n->m);
        qkf_free(n);
        return QKF_EFILE;
    }
    n->run = n->m;
    n->n_params = n->m.params.n_train;
    n->path = dup_str(path);
    *out = n;
    return QKF_OK;
}

int qkf_net_save(const qkf_net_t *n, const char *path)
{
    if (!n || !path)
        return qkf_set_error("qkf_net_save: no network or path"), QKF_EINVAL;
    if (n->is_quant)
        return qkf_qckpt_save(path, &n->q) ? QKF_EFILE : QKF_OK;
    return qkf_ckpt_save(path, &n->m) ? QKF_EFILE : QKF_OK;
}

static void drop_engines(qkf_net_t *n)
{
    qkf_dense_free(n->dense);
    qkf_sched_free(n->sched);
    n->dense = NULL, n->sched = NULL;
}

void qkf_net_free(qkf_net_t *n)
{
    if (!n)
        return;
    drop_engines(n);
    drop_qmodel(n);
    qkf_graph_free(&n->g);
    qkf_model_free(&n->m);
    qkf_free(n->path);
    qkf_free(n);
}

void qkf_net_config(const qkf_net_t *n, qkf_net_config_t *c)
{
    const qkf_config *m = &n->m.cfg;
    c->variant = qkf_variant_name(m->variant);
    c->img_size = m->img_size, c->in_channels = m->in_channels, c->num_classes = m->num_classes;
    c->embed_dims = m->embed_dims, c->num_heads = m->num_heads, c->mlp_ratio = m->mlp_ratio;
    c->depths = m->depths, c->T = m->T;
    c->qk_attn = m->qk_attn == QKF_QK_CHANNEL ? "channel" : "token";
}

int64_t qkf_net_num_parameters(const qkf_net_t *n) { return n->n_params; }

int qkf_net_num_layers(const qkf_net_t *n) { return n->g.n_lif; }

const char *qkf_net_layer_name(const qkf_net_t *n, int l)
{
    return l >= 0 && l < n->g.n_lif ? n->g.ops[n->g.lif_ops[l]].name : NULL;
}

int64_t qkf_net_layer_neurons(const qkf_net_t *n, int l)
{
    return l >= 0 && l < n->g.n_lif ? qkf_graph_lif_neurons(&n->g, l) : 0;
}

/* ---- chip profiles and integer networks ------------------------------------------------------ */

struct qkf_profile {
    qkf_hw_profile p;
};

int qkf_profile_count(void) { return qkf_hw_count(); }
const char *qkf_profile_bundled(int i) { return i >= 0 ? qkf_hw_name(i) : NULL; }

int qkf_profile_load(const char *name_or_path, qkf_profile_t **out)
{
    *out = NULL;
    if (!name_or_path)
        return qkf_set_error("qkf_profile_load: no profile name or path"), QKF_EINVAL;
    qkf_profile_t *p = qkf_calloc(1, sizeof *p);
    if (qkf_hw_load(name_or_path, &p->p)) {
        qkf_free(p);
        return QKF_EFILE;
    }
    *out = p;
    return QKF_OK;
}

void qkf_profile_free(qkf_profile_t *p) { qkf_free(p); }
const char *qkf_profile_name(const qkf_profile_t *p) { return p->p.name; }
const char *qkf_profile_description(const qkf_profile_t *p) { return p->p.description; }
const char *qkf_profile_path(const qkf_profile_t *p) { return p->p.path; }

const char *qkf_profile_cost_basis(const qkf_profile_t *p)
{
    static const char *const bases[] = {"as_given",    "calibrated",  "estimate",
                                        "partial",     "unpublished", "hypothetical"};
    unsigned b = (unsigned)p->p.cost_basis;
    return b < sizeof bases / sizeof *bases ? bases[b] : "as_given";
}

/* The numbers of a profile by name: an int or double field of qkf_hw_profile. */
typedef struct {
    const char *name;
    size_t off;
    int is_int64, is_double;
} profile_field;
#define PF_I(name, f) {name, offsetof(qkf_hw_profile, f), 0, 0}
#define PF_L(name, f) {name, offsetof(qkf_hw_profile, f), 1, 0}
#define PF_D(name, f) {name, offsetof(qkf_hw_profile, f), 0, 1}
static const profile_field profile_fields[] = {
    PF_I("arith.is_float", arith.is_float),
    PF_I("arith.weight_bits", arith.weight_bits),
    PF_I("arith.weight_exp_min", arith.weight_exp_min),
    PF_I("arith.weight_exp_max", arith.weight_exp_max),
    PF_I("arith.per_channel", arith.per_channel),
    PF_I("arith.current_bits", arith.current_bits),
    PF_I("arith.current_wrap", arith.current_wrap),
    PF_I("arith.current_shift", arith.current_shift),
    PF_I("arith.membrane_bits", arith.membrane_bits),
    PF_I("arith.membrane_wrap", arith.membrane_wrap),
    PF_I("arith.decay_bits", arith.decay_bits),
    PF_I("arith.threshold_bits", arith.threshold_bits),
    PF_I("arith.threshold_shift", arith.threshold_shift),
    PF_I("arith.threshold_ge", arith.threshold_ge),
    PF_I("arith.reset_subtract", arith.reset_subtract),
    PF_I("arith.bias_bits", arith.bias_bits),
    PF_I("arith.bias_exp_max", arith.bias_exp_max),
    PF_I("arith.graded_bits", arith.graded_bits),
    PF_I("arith.input_bits", arith.input_bits),
    PF_I("arith.leak", arith.leak),
    PF_I("arith.weight_codebook", arith.weight_codebook),
    PF_I("mesh.width", mesh_width),
    PF_I("mesh.height", mesh_height),
    PF_I("mesh.tiles", n_tiles),
    PF_I("mesh.cores_per_tile", cores_per_tile),
    PF_L("mesh.cores", n_cores),
    PF_I("mesh.link_buffer_size", link_buffer_size),
    PF_L("core.max_neurons", max_neurons),
    PF_L("core.synapse_bytes", synapse_bytes),
    PF_L("core.max_fan_in", max_fan_in),
    PF_L("core.max_fan_out", max_fan_out),
    PF_I("core.max_layers", max_layers_per_core),
    PF_I("core.max_destinations", max_destinations),
    PF_D("cost.e_message_in", cost.e_message_in),
    PF_D("cost.t_message_in", cost.t_message_in),
    PF_D("cost.e_process_spike", cost.e_process_spike),
    PF_D("cost.t_process_spike", cost.t_process_spike),
    PF_D("cost.e_dendrite_update", cost.e_dendrite_update),
    PF_D("cost.t_dendrite_update", cost.t_dendrite_update),
    PF_D("cost.e_access_neuron", cost.e_access_neuron),
    PF_D("cost.t_access_neuron", cost.t_access_neuron),
    PF_D("cost.e_update_neuron", cost.e_update_neuron),
    PF_D("cost.t_update_neuron", cost.t_update_neuron),
    PF_D("cost.e_spike_out", cost.e_spike_out),
    PF_D("cost.t_spike_out", cost.t_spike_out),
    PF_D("cost.e_message_out", cost.e_message_out),
    PF_D("cost.t_message_out", cost.t_message_out),
    PF_D("hop.e_north", e_hop[QKF_HW_NORTH]),
    PF_D("hop.t_north", t_hop[QKF_HW_NORTH]),
    PF_D("hop.e_east", e_hop[QKF_HW_EAST]),
    PF_D("hop.t_east", t_hop[QKF_HW_EAST]),
    PF_D("hop.e_south", e_hop[QKF_HW_SOUTH]),
    PF_D("hop.t_south", t_hop[QKF_HW_SOUTH]),
    PF_D("hop.e_west", e_hop[QKF_HW_WEST]),
    PF_D("hop.t_west", t_hop[QKF_HW_WEST]),
    PF_D("energy.e_ac_j", e_ac),
    PF_D("energy.e_mac_j", e_mac),
};

int qkf_profile_num_fields(const qkf_profile_t *p)
{
    (void)p;
    return (int)(sizeof profile_fields / sizeof *profile_fields);
}

const char *qkf_profile_field(const qkf_profile_t *p, int i, double *value)
{
    if (i < 0 || i >= qkf_profile_num_fields(p))
        return NULL;
    const profile_field *f = &profile_fields[i];
    const char *base = (const char *)&p->p + f->off;
    if (f->is_double)
        memcpy(value, base, sizeof(double));
    else if (f->is_int64) {
        int64_t v;
        memcpy(&v, base, sizeof v);
        *value = (double)v;
    } else {
        int v;
        memcpy(&v, base, sizeof v);
        *value = v;
    }
    return f->name;
}

int qkf_net_is_quantized(const qkf_net_t *n) { return n->is_quant; }
const char *qkf_net_profile_name(const qkf_net_t *n) { return n->is_quant ? n->q.hw_name : NULL; }

void qkf_quant_opts_init(qkf_quant_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->data = "fashion-mnist";
    o->headroom = 16.0;
}

int qkf_net_quantize(const qkf_net_t *n, const qkf_profile_t *hw, const qkf_quant_opts_t *o,
                     qkf_net_t **out)
{
    *out = NULL;
    qkf_quant_opts_t dflt;
    if (!o) {
        qkf_quant_opts_init(&dflt);
        o = &dflt;
    }
    if (!n || !hw)
        return qkf_set_error("qkf_net_quantize: no network or profile"), QKF_EINVAL;
    if (n->is_quant)
        return qkf_set_error("%s: already quantised (for '%s'): quantise the float checkpoint",
                             n->path ? n->path : "network", n->q.hw_name),
               QKF_EINVAL;
    if (o->calib < 0 || o->calib > 100000)
        return qkf_set_error("calib %ld is not in 0..100000", o->calib), QKF_EINVAL;
    if (!(o->headroom >= 1.0 && o->headroom <= 1e6))
        return qkf_set_error("headroom %g is not in 1..1e6", o->headroom), QKF_EINVAL;
    qkf_quant_opts base;
    memset(&base, 0, sizeof base);
    base.headroom = o->headroom, base.clip_bias = o->clip_bias;
    qkf_qmodel q;
    if (qkf_app_quantize(&n->m, n->path, &hw->p, o->calib, o->data, &base, &q))
        return QKF_EINVAL;
    qkf_net_t *r = qkf_calloc(1, sizeof *r);
    if (net_from_qmodel(r, &q)) {
        qkf_net_free(r);
        return QKF_ERUN;
    }
    r->n_params = n->n_params;
    *out = r;
    return QKF_OK;
}

/* ---- runs ------------------------------------------------------------------------------------ */

void qkf_run_opts_init(qkf_run_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->mode = QKF_MODE_DENSE;
    o->batch = 32;
    o->e_ac = 0.9, o->e_mac = 4.6;
    o->trace_buffer_mb = QKF_TRACE_BUFFER_MB;
    o->hw = NULL, o->profile = NULL;
}

struct qkf_result {
    int64_t B;
    int K, n_lif, T;
    float *logits;
    int64_t *logits_int; /* integer runs */
    int64_t *counts, *neurons;
    double seconds;
    int has_stats;
    double e_ac, e_mac;
    qkf_stats st; /* node table and work (copied from the engine's) */
};

void qkf_result_free(qkf_result_t *r)
{
    if (!r)
        return;
    qkf_free(r->logits);
    qkf_free(r->logits_int);
    qkf_free(r->counts);
    qkf_free(r->neurons);
    if (r->has_stats)
        qkf_stats_free(&r->st);
    qkf_free(r);
}

/* Checks x's shape against the model and sets the run model's input size and T. */
static int fit_input(qkf_net_t *n, const int64_t *shape, int ndim, int64_t *B)
{
    const qkf_config *c = &n->m.cfg;
    int frames = qkf_config_is_frames(c), want = frames ? 5 : 4;
    if (ndim != want)
        return qkf_set_error("input has %d dimensions but a %s model takes %s", ndim,
                             qkf_variant_name(c->variant),
                             frames ? "frames [B,T,C,H,W]" : "images [B,C,H,W]");
    int64_t C = shape[frames ? 2 : 1], H = shape[frames ? 3 : 2], W = shape[frames ? 4 : 3];
    if (C != c->in_channels || H != W)
        return qkf_set_error("input has %lld channels of %lld x %lld; the model takes %d "
                             "channels of a square image",
                             (long long)C, (long long)H, (long long)W, c->in_channels);
    if (shape[0] < 1)
        return qkf_set_error("input holds no samples");
    qkf_config c2 = *c;
    c2.img_size = (int)H;
    if (frames)
        c2.T = (int)shape[1];
    if (H != c->img_size && qkf_config_validate(&c2)) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        return qkf_set_error("input size %lld does not fit the model (%s)", (long long)H, msg);
    }
    if (c2.img_size != n->run.cfg.img_size || c2.T != n->run.cfg.T)
        drop_engines(n);
    n->run.cfg = c2;
    *B = shape[0];
    return 0;
}

/* The engine for these options, reused when they are the same as last time. */
static int prepare(qkf_net_t *n, const qkf_run_opts_t *o, int nb)
{
    int flags = 0;
    if (o->conv && qkf_dense_conv_flags(o->conv, &flags))
        return -1;
    int stats = o->mode == QKF_MODE_DENSE && o->stats;
    if (o->mode == QKF_MODE_DENSE)
        flags |= (o->tb_compat ? QKF_DENSE_TB_COMPAT : 0) | (stats ? QKF_DENSE_KEEP_ALL : 0);
    else
        flags = o->tb_compat ? QKF_SCHED_TB_COMPAT : 0;
    if ((n->dense || n->sched) &&
        (n->mode != o->mode || n->batch < nb || n->flags != flags || n->stats != stats))
        drop_engines(n);
    if (!n->dense && !n->sched) {
        if (o->mode == QKF_MODE_DENSE)
            n->dense = qkf_dense_create(&n->run, nb, flags);
        else
            n->sched = qkf_sched_create(&n->run, nb, flags);
        if (!n->dense && !n->sched)
            return -1;
        n->mode = o->mode, n->batch = nb, n->flags = flags, n->stats = stats;
    }
    return 0;
}

/* The integer model for a run with profile hw (NULL: none given), as qkf infer --hw makes it: an
 * integer network's own (hw, if given, must have its arithmetic), or the float network quantised
 * for hw with the defaults (kept for later runs on the same profile). */
static int use_qmodel(qkf_net_t *n, const qkf_hw_profile *hw)
{
    const char *label = n->path ? n->path : "network";
    if (n->is_quant) {
        if (hw && memcmp(&hw->arith, &n->q.arith, sizeof n->q.arith) != 0)
            return qkf_set_error("%s: quantised for '%s', whose arithmetic differs from profile "
                                 "%s (quantise the float checkpoint again)",
                                 label, n->q.hw_name, hw->name),
                   QKF_EINVAL;
        return 0;
    }
    if (hw->arith.is_float)
        return qkf_set_error("profile %s is the float machine: run without a profile", hw->name),
               QKF_EINVAL;
    if (n->has_q && !strcmp(n->q.hw_name, hw->name) &&
        !memcmp(&hw->arith, &n->q.arith, sizeof n->q.arith))
        return 0;
    drop_qmodel(n);
    if (qkf_app_quantize(&n->m, label, hw, 0, NULL, NULL, &n->q))
        return QKF_EINVAL;
    n->has_q = 1;
    return 0;
}

/* The integer model of a run or evaluation with o's profile (o->profile, else o->hw loaded). */
static int use_profile(qkf_net_t *n, const qkf_run_opts_t *o)
{
    qkf_hw_profile *loaded = NULL;
    const qkf_hw_profile *hw = o->profile ? &o->profile->p : NULL;
    if (!hw && o->hw) {
        loaded = qkf_calloc(1, sizeof *loaded);
        if (qkf_hw_load(o->hw, loaded)) {
            qkf_free(loaded);
            return QKF_EFILE;
        }
        hw = loaded;
    }
    int rc = use_qmodel(n, hw);
    qkf_free(loaded);
    return rc;
}

/* A run on the integer model: the dense integer engine or the integer event engine, as qkf infer
 * --hw runs them (the same logits, integer logits and spike counts). */
static int run_int(qkf_net_t *n, const float *x, const int64_t *shape, int ndim,
                   const qkf_run_opts_t *o, qkf_result_t **out)
{
    const qkf_qmodel *q = &n->q;
    const qkf_config *c = &q->cfg;
    int frames = qkf_config_is_frames(c);
    if (ndim != (frames ? 5 : 4) || shape[frames ? 2 : 1] != c->in_channels ||
        shape[ndim - 1] != c->img_size || shape[ndim - 2] != c->img_size ||
        (frames && shape[1] != c->T) || shape[0] < 1)
        return qkf_set_error("input does not fit the integer model (%s %d x %d x %d%s; a chip "
                             "runs the checkpoint's own size and T)",
                             frames ? "frames [B,T,C,H,W]:" : "images [B,C,H,W]:",
                             c->in_channels, c->img_size, c->img_size,
                             frames ? ", T frames" : ""),
               QKF_EINVAL;
    if (o->trace)
        return qkf_set_error("traces record the float engines: run without a profile to trace"),
               QKF_EINVAL;
    if (o->conv)
        return qkf_set_error("conv chooses the float dense engine's convolutions: not with a "
                             "profile (the integer engines sum exactly)"),
               QKF_EINVAL;
    if (o->mode == QKF_MODE_DENSE && o->stats)
        return qkf_set_error("the dense integer engine counts no work: statistics of a run with "
                             "a profile come from the integer event engine (QKF_MODE_EVENT)"),
               QKF_EINVAL;
    if (o->mode == QKF_MODE_DENSE && o->tb_compat)
        return qkf_set_error("tb_compat with a profile runs in the integer event engine only "
                             "(the dense integer engine has per-sample LIFs)"),
               QKF_EINVAL;
    int64_t B = shape[0];
    int nb = (int)(B < o->batch ? B : o->batch), K = c->num_classes;
    int flags = o->mode == QKF_MODE_EVENT && o->tb_compat ? QKF_SCHED_TB_COMPAT : 0;
    if ((n->dint || n->sint) && (n->imode != o->mode || n->ibatch < nb || n->iflags != flags))
        drop_int_engines(n);
    if (!n->dint && !n->sint) {
        if (o->mode == QKF_MODE_DENSE)
            n->dint = qkf_dense_int_create(q, nb, 0);
        else
            n->sint = qkf_sched_create_int(q, nb, flags);
        if (!n->dint && !n->sint)
            return QKF_EINVAL;
        n->imode = o->mode, n->ibatch = nb, n->iflags = flags;
    }
    const qkf_graph *g = n->sint ? qkf_sched_graph(n->sint) : &q->g;
    qkf_result_t *r = qkf_calloc(1, sizeof *r);
    r->B = B, r->K = K, r->n_lif = g->n_lif, r->T = c->T;
    r->e_ac = o->e_ac, r->e_mac = o->e_mac;
    r->logits = qkf_malloc((size_t)(B * K) * sizeof(float));
    r->logits_int = qkf_malloc((size_t)(B * K) * sizeof(int64_t));
    r->counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    r->neurons = qkf_malloc((size_t)g->n_lif * sizeof(int64_t));
    for (int l = 0; l < g->n_lif; l++)
        r->neurons[l] = qkf_graph_lif_neurons(g, l);
    if (n->sint)
        qkf_stats_reset(qkf_sched_stats(n->sint));
    int64_t per = 1;
    for (int i = 1; i < ndim; i++)
        per *= shape[i];
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int k = (int)(B - b0 < nb ? B - b0 : nb);
        double t0 = qkf_now();
        if (n->sint) {
            if (qkf_sched_forward(n->sint, x + b0 * per, k, r->logits + b0 * K, r->counts))
                goto fail;
            memcpy(r->logits_int + b0 * K, qkf_sched_logits_int(n->sint),
                   (size_t)k * K * sizeof(int64_t));
        } else if (qkf_dense_int_forward(n->dint, x + b0 * per, k, r->logits + b0 * K,
                                         r->logits_int + b0 * K, r->counts))
            goto fail;
        r->seconds += qkf_now() - t0;
    }
    if (n->sint) { /* a copy of the engine's table and counters */
        const qkf_stats *st = qkf_sched_stats(n->sint);
        if (qkf_stats_init(&r->st, g))
            goto fail;
        r->has_stats = 1;
        memcpy(r->st.w, st->w, (size_t)st->n_nodes * st->T * sizeof(qkf_work));
        r->st.samples = st->samples, r->st.batches = st->batches;
        r->st.seconds = r->seconds;
    }
    *out = r;
    return QKF_OK;
fail:
    qkf_result_free(r);
    return QKF_ERUN;
}

int qkf_net_run(qkf_net_t *n, const float *x, const int64_t *shape, int ndim,
                const qkf_run_opts_t *opts, qkf_result_t **out)
{
    *out = NULL;
    qkf_run_opts_t dflt;
    if (!opts) {
        qkf_run_opts_init(&dflt);
        opts = &dflt;
    }
    if (!n || !x || !shape)
        return qkf_set_error("qkf_net_run: no network, input or shape"), QKF_EINVAL;
    if (opts->mode != QKF_MODE_DENSE && opts->mode != QKF_MODE_EVENT)
        return qkf_set_error("mode %d is not an engine (QKF_MODE_DENSE or QKF_MODE_EVENT)",
                             opts->mode),
               QKF_EINVAL;
    if (opts->batch < 1 || opts->batch > 65536)
        return qkf_set_error("batch %d is not in 1..65536", opts->batch), QKF_EINVAL;
    if (opts->n_record < 0 || opts->n_record > QKF_MAX_RECORDS || (opts->n_record && !opts->record))
        return qkf_set_error("at most %d record specs", QKF_MAX_RECORDS), QKF_EINVAL;
    if (opts->profile || opts->hw || n->is_quant) { /* the chip's integer arithmetic */
        int rc = use_profile(n, opts);
        return rc ? rc : run_int(n, x, shape, ndim, opts, out);
    }
    int64_t B = 0;
    if (fit_input(n, shape, ndim, &B))
        return QKF_EINVAL;
    int nb = (int)(B < opts->batch ? B : opts->batch);
    if (prepare(n, opts, nb))
        return QKF_EINVAL;
    const qkf_graph *g = n->dense ? qkf_dense_graph(n->dense) : qkf_sched_graph(n->sched);
    const qkf_config *c = &n->run.cfg;
    qkf_result_t *r = qkf_calloc(1, sizeof *r);
    r->B = B, r->K = c->num_classes, r->n_lif = g->n_lif, r->T = c->T;
    r->e_ac = opts->e_ac, r->e_mac = opts->e_mac;
    r->logits = qkf_malloc((size_t)(B * r->K) * sizeof(float));
    r->counts = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    r->neurons = qkf_malloc((size_t)g->n_lif * sizeof(int64_t));
    for (int l = 0; l < g->n_lif; l++)
        r->neurons[l] = qkf_graph_lif_neurons(g, l);
    int rc = QKF_ERUN;
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    qkf_stats ds;
    memset(&ds, 0, sizeof ds);
    int dense_stats = n->dense && n->stats;
    if (dense_stats && qkf_stats_init(&ds, g))
        goto done;
    if (n->sched)
        qkf_stats_reset(qkf_sched_stats(n->sched));
    if (opts->trace) {
        qkf_trace_opts to;
        qkf_trace_opts_init(&to);
        to.path = opts->trace, to.force = opts->trace_force, to.raw = opts->trace_raw;
        to.buffer_mb = opts->trace_buffer_mb > 0 ? opts->trace_buffer_mb : QKF_TRACE_BUFFER_MB;
        for (int i = 0; i < opts->n_record; i++)
            to.records[to.n_records++] = opts->record[i];
        if (!(tr = qkf_trace_opts_open(&to, &ts, g, NULL, n->sched ? "event" : "dense", 0,
                                       NULL))) {
            rc = QKF_EFILE;
            goto done;
        }
        if (n->sched ? qkf_sched_set_trace(n->sched, qkf_trace_sink(tr))
                     : qkf_dense_set_sink(n->dense, qkf_trace_sink(tr)))
            goto done;
    }
    int64_t per = (int64_t)c->in_channels * c->img_size * c->img_size *
                  (qkf_config_is_frames(c) ? c->T : 1);
    for (int64_t b0 = 0; b0 < B; b0 += nb) {
        int k = (int)(B - b0 < nb ? B - b0 : nb);
        double t0 = qkf_now();
        if (n->sched ? qkf_sched_forward(n->sched, x + b0 * per, k, r->logits + b0 * r->K,
                                         r->counts)
                     : qkf_dense_forward(n->dense, x + b0 * per, k, r->logits + b0 * r->K,
                                         r->counts))
            goto done;
        r->seconds += qkf_now() - t0;
        if (dense_stats && qkf_stats_add_dense(&ds, n->dense, k))
            goto done;
    }
    if (tr) {
        if (n->sched)
            qkf_sched_set_trace(n->sched, NULL);
        else
            qkf_dense_set_sink(n->dense, NULL);
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc) {
            rc = QKF_EFILE;
            goto done;
        }
    }
    if (dense_stats) {
        r->st = ds;
        memset(&ds, 0, sizeof ds);
        r->has_stats = 1;
    } else if (n->sched) { /* a copy of the engine's table and counters */
        const qkf_stats *s = qkf_sched_stats(n->sched);
        if (qkf_stats_init(&r->st, g))
            goto done;
        r->has_stats = 1;
        memcpy(r->st.w, s->w, (size_t)s->n_nodes * s->T * sizeof(qkf_work));
        r->st.samples = s->samples, r->st.batches = s->batches;
    }
    r->st.seconds = r->seconds;
    rc = QKF_OK;
done:
    if (tr) {
        if (n->sched)
            qkf_sched_set_trace(n->sched, NULL);
        else
            qkf_dense_set_sink(n->dense, NULL);
        qkf_trace_abort(tr);
    }
    qkf_trace_spec_free(&ts);
    if (ds.node)
        qkf_stats_free(&ds);
    if (rc) {
        qkf_result_free(r);
        return rc;
    }
    *out = r;
    return QKF_OK;
}

int64_t qkf_result_samples(const qkf_result_t *r) { return r->B; }
const float *qkf_result_logits(const qkf_result_t *r) { return r->logits; }
const int64_t *qkf_result_logits_int(const qkf_result_t *r) { return r->logits_int; }
const int64_t *qkf_result_spike_counts(const qkf_result_t *r) { return r->counts; }
double qkf_result_seconds(const qkf_result_t *r) { return r->seconds; }

double qkf_result_firing_rate(const qkf_result_t *r, int l)
{
    if (l < 0 || l >= r->n_lif)
        return 0.0;
    return (double)r->counts[l] / ((double)r->neurons[l] * r->T * (double)r->B);
}

void qkf_result_stats(const qkf_result_t *r, qkf_stats_t *s)
{
    memset(s, 0, sizeof *s);
    if (!r->has_stats)
        return;
    qkf_work w = qkf_stats_step_total(&r->st, -1);
    s->has_stats = 1;
    s->accumulates = w.acs, s->macs = w.macs, s->in_events = w.in_events;
    s->out_spikes = w.out_spikes;
    s->energy_j = qkf_energy_pj(&w, r->e_ac, r->e_mac) * 1e-12;
    s->n_nodes = r->st.n_nodes;
}

int qkf_result_node(const qkf_result_t *r, int i, qkf_node_stats_t *s)
{
    memset(s, 0, sizeof *s);
    if (!r->has_stats || i < 0 || i >= r->st.n_nodes)
        return qkf_set_error("node %d: no such node (%d)", i, r->has_stats ? r->st.n_nodes : 0),
               QKF_EINVAL;
    const qkf_node_info *nd = &r->st.node[i];
    qkf_work w = qkf_stats_node_total(&r->st, i, -1);
    s->name = nd->name, s->kind = qkf_node_kind_name(nd->kind), s->layer = nd->lif_index;
    s->accumulates = w.acs, s->macs = w.macs, s->in_events = w.in_events;
    s->out_spikes = w.out_spikes;
    s->energy_j = qkf_energy_pj(&w, r->e_ac, r->e_mac) * 1e-12;
    return QKF_OK;
}

/* ---- evaluation and training ----------------------------------------------------------------- */

int qkf_net_evaluate(qkf_net_t *n, const char *data, int64_t limit, const qkf_run_opts_t *o,
                     double *accuracy, int64_t *count)
{
    qkf_run_opts_t dflt;
    if (!o) {
        qkf_run_opts_init(&dflt);
        dflt.batch = 100;
        o = &dflt;
    }
    if (!n || !data)
        return qkf_set_error("qkf_net_evaluate: no network or dataset"), QKF_EINVAL;
    if (o->profile || o->hw || n->is_quant) { /* as qkf eval --hw: the dense integer engine */
        int rc = use_profile(n, o);
        if (rc)
            return rc;
        qkf_evaluate_int_result r;
        rc = qkf_evaluate_int(&n->q, NULL, data, limit, o->batch, 0, 0, 0, &r) ? QKF_EINVAL
                                                                               : QKF_OK;
        if (!rc) {
            if (accuracy)
                *accuracy = r.count ? (double)r.correct / (double)r.count : 0.0;
            if (count)
                *count = r.count;
        }
        qkf_evaluate_int_result_free(&r);
        return rc;
    }
    int conv = 0;
    if (o->conv && qkf_dense_conv_flags(o->conv, &conv))
        return QKF_EINVAL;
    qkf_dataset d;
    memset(&d, 0, sizeof d);
    if (qkf_dataset_load(data, 0, &d))
        return QKF_EFILE;
    int rc = QKF_OK;
    if (qkf__dataset_fits(&d, &n->m.cfg))
        rc = QKF_EINVAL;
    else if (qkf_evaluate(&n->m, &d, limit, o->batch, o->tb_compat, o->mode == QKF_MODE_EVENT,
                          conv, accuracy, count))
        rc = QKF_ERUN;
    qkf_dataset_free(&d);
    return rc;
}

struct qkf_training {
    qkf_trainer_opts o;
};

int qkf_training_new(qkf_training_t **t)
{
    *t = qkf_calloc(1, sizeof **t);
    qkf_trainer_opts_init(&(*t)->o);
    return QKF_OK;
}

void qkf_training_free(qkf_training_t *t) { qkf_free(t); }

int qkf_training_set(qkf_training_t *t, const char *name, const char *value)
{
    if (!t || !name)
        return qkf_set_error("qkf_training_set: no job or name"), QKF_EINVAL;
    const char *bare = name[0] == '-' && name[1] == '-' ? name + 2 : name;
    if (!strcmp(bare, "resume") && value && qkf_trainer_resume_options(value, &t->o))
        return QKF_EFILE;
    return qkf_trainer_set(&t->o, name, value) ? QKF_EINVAL : QKF_OK;
}

int qkf_training_read_config(qkf_training_t *t, const char *path)
{
    if (!t || !path)
        return qkf_set_error("qkf_training_read_config: no job or path"), QKF_EINVAL;
    return qkf_trainer_read_config(path, &t->o) ? QKF_EINVAL : QKF_OK;
}

typedef struct {
    qkf_train_fn fn;
    void *data;
    int stopped;
} train_cb;

static int forward_event(void *ctx, const qkf_trainer_event *ev)
{
    train_cb *c = ctx;
    qkf_train_event_t e;
    e.kind = ev->kind, e.text = ev->text, e.epoch = ev->epoch, e.step = ev->step;
    e.total_steps = ev->total_steps, e.steps_per_epoch = ev->steps_per_epoch;
    e.loss = ev->loss, e.acc = ev->acc, e.test_acc = ev->test_acc, e.lr = ev->lr;
    e.grad_norm = ev->grad_norm, e.img_per_s = ev->img_per_s, e.seconds = ev->seconds;
    if (c->fn && c->fn(c->data, &e)) {
        c->stopped = 1;
        return 1;
    }
    return 0;
}

int qkf_training_run(qkf_training_t *t, qkf_train_fn fn, void *data)
{
    if (!t)
        return qkf_set_error("qkf_training_run: no job"), QKF_EINVAL;
    train_cb c = {fn, data, 0};
    int rc = qkf_trainer_run(&t->o, forward_event, &c);
    if (rc == 130)
        return c.stopped ? (qkf_set_error("training stopped by the callback (saved; resume "
                                          "from the checkpoint)"),
                            QKF_ESTOPPED)
                         : QKF_OK;
    return rc ? QKF_ERUN : QKF_OK;
}
