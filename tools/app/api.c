/* The public C API (include/qkf/qkf.h) over the library: a network is a loaded model with engines
 * prepared on demand; a result holds one run's outputs; a training job is the trainer's options
 * (tools/app/trainer.h). Internal calls fail with -1 and a message (qkf_set_error); here each
 * failure becomes the QKF_E* code of where it happened. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/qkf/qkf.h"
#include "../../io/dataset.h"
#include "../../io/io.h"
#include "../../io/trace.h"
#include "../../kernels/base.h"
#include "../../sim/dense.h"
#include "../../sim/sched.h"
#include "../../sim/stats.h"
#include "app_internal.h"
#include "evaluate.h"
#include "opts.h"
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
    qkf_model m;   /* as loaded */
    qkf_model run; /* what the engines run: m's parameters, the input's size and T */
    qkf_graph g;   /* m's graph: layer names and neurons */
    /* the prepared engine and what it was prepared for */
    qkf_dense *dense;
    qkf_sched *sched;
    int mode, batch, flags, stats;
};

int qkf_net_load(const char *path, qkf_net_t **out)
{
    *out = NULL;
    if (!path)
        return qkf_set_error("no checkpoint path"), QKF_EINVAL;
    qkf_net_t *n = qkf_calloc(1, sizeof *n);
    qkf_h5_quiet();
    if (qkf_ckpt_load(path, &n->m)) {
        qkf_free(n);
        return QKF_EFILE;
    }
    if (qkf_graph_build(&n->m.cfg, &n->m.params, 0, &n->g)) {
        qkf_model_free(&n->m);
        qkf_free(n);
        return QKF_EFILE;
    }
    n->run = n->m;
    *out = n;
    return QKF_OK;
}

int qkf_net_save(const qkf_net_t *n, const char *path)
{
    if (!n || !path)
        return qkf_set_error("qkf_net_save: no network or path"), QKF_EINVAL;
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
    qkf_graph_free(&n->g);
    qkf_model_free(&n->m);
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

int64_t qkf_net_num_parameters(const qkf_net_t *n) { return n->m.params.n_train; }

int qkf_net_num_layers(const qkf_net_t *n) { return n->g.n_lif; }

const char *qkf_net_layer_name(const qkf_net_t *n, int l)
{
    return l >= 0 && l < n->g.n_lif ? n->g.ops[n->g.lif_ops[l]].name : NULL;
}

int64_t qkf_net_layer_neurons(const qkf_net_t *n, int l)
{
    return l >= 0 && l < n->g.n_lif ? qkf_graph_lif_neurons(&n->g, l) : 0;
}

/* ---- runs ------------------------------------------------------------------------------------ */

void qkf_run_opts_init(qkf_run_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->mode = QKF_MODE_DENSE;
    o->batch = 32;
    o->e_ac = 0.9, o->e_mac = 4.6;
    o->trace_buffer_mb = QKF_TRACE_BUFFER_MB;
}

struct qkf_result {
    int64_t B;
    int K, n_lif, T;
    float *logits;
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
