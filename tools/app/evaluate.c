/* Evaluation (tools/app/evaluate.h) and the helpers every application shares under mpirun
 * (tools/app/app_internal.h): whether a dataset fits a model, agreeing on failures and on the
 * job, and which rank holds which samples. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../../io/io.h"
#include "../../kernels/base.h"
#include "../../sim/dense.h"
#include "../../sim/dense_int.h"
#include "../../sim/dist.h"
#include "../../sim/sched.h"
#include "app_internal.h"
#include "dist_dataset.h"

void qkf__logf(qkf_log_fn log, void *ctx, const char *fmt, ...)
{
    if (!log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log(ctx, line);
}

int qkf__dataset_fits(const qkf_dataset *d, const qkf_config *c)
{
    if (qkf_config_is_frames(c) != (d->t > 0))
        return qkf_set_error(d->t > 0 ? "%s: event frames fit only a dvs128 or cifar10dvs model, "
                                        "not %s (--model dvs128)"
                                      : "%s: a %s model takes event frames; image datasets do "
                                        "not fit it (qkf events emulate --out X.h5 makes frames)",
                             d->source, qkf_variant_name(c->variant));
    if (d->t > 0 && d->t != c->T)
        return qkf_set_error("%s: %d frames per sample but the model has T = %d (--T)", d->source,
                             d->t, c->T);
    if (d->c != c->in_channels || d->h != c->img_size || d->w != c->img_size)
        return qkf_set_error("%s: images are %d x %d x %d but the model takes %d x %d x %d "
                             "(--in-channels, --img-size)",
                             d->source, d->c, d->h, d->w, c->in_channels, c->img_size,
                             c->img_size);
    for (int64_t i = 0; d->labels && i < d->n; i++) /* a probe holds no labels yet */
        if (d->labels[i] >= c->num_classes)
            return qkf_set_error("%s: sample %lld has label %d but the model has %d classes",
                                 d->source, (long long)(d->index ? d->index[i] : i),
                                 d->labels[i], c->num_classes);
    return 0;
}

int qkf__dist_failed(int local_failed)
{
    int bad;
    if (qkf_dist_all_ok(local_failed != 1, &bad))
        return local_failed ? QKF_APP_QUIET : 0;
    if (qkf_dist_rank() != bad)
        return QKF_APP_QUIET;
    if (qkf_dist_size() > 1) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        qkf_set_error("rank %d: %s", bad, msg);
    }
    return QKF_APP_HERE;
}

int qkf__check_agree(const qkf_model *m, const void *extra, size_t n_extra)
{
    const qkf_config *c = &m->cfg;
    int64_t f[] = {c->variant,   c->img_size, c->in_channels, c->num_classes,
                   c->embed_dims, c->num_heads, (int64_t)(c->mlp_ratio * 1000.0f),
                   c->depths,    c->T,        c->qk_attn,     m->n_norm};
    uint64_t h = qkf_dist_hash(QKF_DIST_HASH_INIT, f, sizeof f);
    h = qkf_dist_hash(h, m->params.data, (size_t)m->params.total * sizeof(float));
    h = qkf_dist_hash(h, m->input_mean, sizeof m->input_mean);
    h = qkf_dist_hash(h, m->input_std, sizeof m->input_std);
    if (extra)
        h = qkf_dist_hash(h, extra, n_extra);
    int bad;
    if (qkf_dist_agree(h, &bad))
        return bad < 0 ? -1
                       : qkf_set_error("rank %d: its configuration, checkpoint or options differ "
                                       "from rank 0's (the same files and options on every node)",
                                       bad);
    return 0;
}

/* Under mpirun, rank 0 prints how many of the `used` samples of the split each rank holds in
 * memory (one line per rank, to stderr; nothing when quiet or on one rank). Collective. */
int qkf__report_held(const char *what, const qkf_dataset *d, int64_t used, int quiet,
                     qkf_log_fn log, void *ctx)
{
    int nr = qkf_dist_size();
    if (nr == 1)
        return 0;
    int64_t *all = qkf_calloc((size_t)nr * 2, sizeof(int64_t));
    if (qkf_dist_gather_i64(d->n, all) || qkf_dist_gather_i64(qkf_dataset_bytes(d), all + nr)) {
        qkf_free(all);
        return QKF_APP_RANK0;
    }
    if (qkf_dist_rank() == 0 && !quiet)
        for (int r = 0; r < nr; r++)
            qkf__logf(log, ctx, "rank %d holds %lld of %lld %s samples (%.2f MB)\n", r,
                      (long long)all[r], (long long)used, what, (double)all[nr + r] / 1e6);
    qkf_free(all);
    return 0;
}

/* This rank's contiguous shard of the first `limit` samples of d (0: all), as a view into d
 * (nothing copied; not to be freed). Fails when there are fewer samples than ranks. A subset
 * (qkf_dist_dataset_shard under mpirun) is this rank's shard already. */
static int shard_view(const qkf_dataset *d, int64_t limit, qkf_dataset *v)
{
    if (d->index) {
        *v = *d;
        v->index = NULL, v->total = v->n;
        return 0;
    }
    int64_t n = limit > 0 && limit < d->n ? limit : d->n, lo, hi;
    if (n < qkf_dist_size())
        return qkf_set_error("%s: %lld samples for %d ranks (use fewer ranks)", d->source,
                             (long long)n, qkf_dist_size());
    qkf_dist_shard(n, &lo, &hi);
    *v = *d;
    int64_t per = (int64_t)d->c * d->h * d->w * (d->t > 0 ? d->t : 1);
    v->pixels = d->pixels + lo * per;
    v->labels = d->labels + lo;
    v->n = hi - lo;
    return 0;
}

/* Accuracy of m (eval mode; the dense engine, or the event engine when event is set) on the
 * first `limit` samples of d (0: all). Under mpirun each rank classifies its contiguous shard and
 * the correct counts are summed exactly (collective: every rank calls it). */
int qkf_evaluate(const qkf_model *m, const qkf_dataset *dall, int64_t limit, int batch, int tb,
                 int event, int conv, double *acc, int64_t *count)
{
    qkf_dataset view;
    if (shard_view(dall, limit, &view))
        return -1;
    const qkf_dataset *d = &view;
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = d, lc.batch = batch, lc.limit = 0, lc.n_norm = m->n_norm;
    memcpy(lc.mean, m->input_mean, sizeof lc.mean);
    memcpy(lc.std, m->input_std, sizeof lc.std);
    qkf_dense *e = NULL;
    qkf_sched *ev = NULL;
    if (event)
        ev = qkf_sched_create(m, batch, tb ? QKF_SCHED_TB_COMPAT : 0);
    else
        e = qkf_dense_create(m, batch, (tb ? QKF_DENSE_TB_COMPAT : 0) | conv);
    if (!e && !ev)
        return -1;
    int K = m->cfg.num_classes;
    float *logits = qkf_malloc((size_t)batch * K * sizeof(float));
    qkf_loader *l = qkf_loader_start(&lc, 0, 0);
    const float *x;
    const int32_t *lab;
    int B, rc = 0;
    int64_t n = 0, ok = 0;
    while (qkf_loader_next(l, &x, &lab, &B)) {
        rc = ev ? qkf_sched_forward(ev, x, B, logits, NULL)
                : qkf_dense_forward(e, x, B, logits, NULL);
        if (rc)
            break;
        for (int b = 0; b < B; b++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                best = logits[b * K + k] > logits[b * K + best] ? k : best;
            ok += best == lab[b];
        }
        n += B;
    }
    qkf_loader_stop(l);
    qkf_free(logits);
    qkf_dense_free(e);
    qkf_sched_free(ev);
    int bad;
    if (!qkf_dist_all_ok(rc == 0, &bad))
        return rc ? rc : qkf_set_error("evaluation failed on rank %d", bad);
    int64_t tot[2] = {ok, n};
    if (qkf_dist_sum_i64(tot, 2))
        return -1;
    *acc = tot[1] ? (double)tot[0] / (double)tot[1] : 0.0;
    *count = tot[1];
    return 0;
}

int64_t qkf_stream_block(const qkf_dataset *meta, int batch)
{
    int64_t per = (int64_t)meta->c * meta->h * meta->w * (meta->t > 0 ? meta->t : 1);
    int64_t nb = ((int64_t)1 << 20) / ((per > 0 ? per : 1) * (batch > 0 ? batch : 1));
    return (nb < 1 ? 1 : nb) * (batch > 0 ? batch : 1);
}

qkf_loader *qkf__block_loader(const qkf_dataset *blk, qkf_dataset *view, int batch, int n_norm,
                              const float *mean, const float *std, int num_classes)
{
    for (int64_t i = 0; i < blk->n; i++)
        if (blk->labels[i] >= num_classes) {
            qkf_set_error("%s: sample %lld has label %d but the model has %d classes",
                          blk->source, (long long)blk->index[i], blk->labels[i], num_classes);
            return NULL;
        }
    *view = *blk; /* the block as a whole dataset of its own: batches from its start */
    view->index = NULL, view->total = view->n;
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = view, lc.batch = batch, lc.n_norm = n_norm;
    memcpy(lc.mean, mean, sizeof lc.mean);
    memcpy(lc.std, std, sizeof lc.std);
    return qkf_loader_start(&lc, 0, 0);
}

int qkf_stream_split(const char *name, int train, const qkf_dataset *meta, float mx, int64_t lo,
                     int64_t hi, int64_t block, int batch, int n_norm, const float *mean, const float *std,
                     int num_classes, qkf_batch_fn fn, void *ctx)
{
    qkf_dataset_stream *rd = qkf_dataset_stream_open(name, train, lo, hi, mx);
    if (!rd)
        return -1;
    if (block <= 0)
        block = qkf_stream_block(meta, batch);
    else if (block % batch)
        block += batch - block % batch;
    int64_t got;
    int rc = 0;
    qkf_dataset blk;
    memset(&blk, 0, sizeof blk);
    while (rc == 0 && (got = qkf_dataset_stream_next(rd, block, &blk)) != 0) {
        if (got < 0) {
            rc = -1;
            break;
        }
        qkf_dataset v;
        qkf_loader *l = qkf__block_loader(&blk, &v, batch, n_norm, mean, std, num_classes);
        const float *x;
        const int32_t *lab;
        int B;
        if (!l)
            rc = -1;
        while (l && rc == 0 && qkf_loader_next(l, &x, &lab, &B))
            rc = fn(ctx, x, lab, B);
        qkf_loader_stop(l);
        qkf_dataset_free(&blk);
    }
    qkf_dataset_stream_close(rd);
    return rc;
}

typedef struct {
    qkf_dense *e;
    qkf_sched *ev;
    float *logits;
    int K;
    int64_t ok, n;
} eval_ctx;

static int eval_batch(void *p, const float *x, const int32_t *lab, int B)
{
    eval_ctx *c = p;
    if (c->ev ? qkf_sched_forward(c->ev, x, B, c->logits, NULL)
              : qkf_dense_forward(c->e, x, B, c->logits, NULL))
        return -1;
    for (int b = 0; b < B; b++) {
        int best = 0;
        for (int k = 1; k < c->K; k++)
            best = c->logits[b * c->K + k] > c->logits[b * c->K + best] ? k : best;
        c->ok += best == lab[b];
    }
    c->n += B;
    return 0;
}

/* Under mpirun, rank 0 says how many samples each rank streams and how much it holds at a time
 * (one line per rank; nothing on one rank). Collective. */
static int report_stream(const qkf_dataset *meta, int64_t held, int64_t used, int64_t bytes,
                         qkf_log_fn log, void *ctx)
{
    int nr = qkf_dist_size();
    if (nr == 1)
        return 0;
    int64_t *all = qkf_calloc((size_t)nr * 2, sizeof(int64_t));
    if (qkf_dist_gather_i64(held, all) || qkf_dist_gather_i64(bytes, all + nr)) {
        qkf_free(all);
        return QKF_APP_RANK0;
    }
    if (qkf_dist_rank() == 0)
        for (int r = 0; r < nr; r++)
            qkf__logf(log, ctx, "rank %d holds %lld of %lld test samples (streamed from %s, "
                      "%.2f MB at a time)\n",
                      r, (long long)all[r], (long long)used, meta->source,
                      (double)all[nr + r] / 1e6);
    qkf_free(all);
    return 0;
}

void qkf_evaluate_opts_init(qkf_evaluate_opts *o)
{
    memset(o, 0, sizeof *o);
    o->data = "fashion-mnist";
    o->batch = 100;
}

int qkf_evaluate_run(const qkf_evaluate_opts *o, qkf_log_fn log, void *ctx,
                     qkf_evaluate_result *r)
{
    qkf_model m;
    qkf_dataset meta;
    memset(&m, 0, sizeof m);
    memset(&meta, 0, sizeof meta);
    memset(r, 0, sizeof *r);
    double t0 = qkf_now();
    int rc;
    eval_ctx ec;
    memset(&ec, 0, sizeof ec);
    if (!o->weights) {
        rc = qkf_set_error("--weights is required");
        goto done;
    }
    if ((rc = qkf__dist_failed(qkf_ckpt_load(o->weights, &m) != 0)))
        goto done;
    /* the split's size and shape, and its largest value (HDF5 images: each rank scans its share) */
    float mx = 255.0f;
    int drc = qkf_dist_dataset_probe(o->data, 0, &meta, &mx);
    if ((rc = qkf__dist_failed(drc == -2 ? 2 : drc || qkf__dataset_fits(&meta, &m.cfg))))
        goto done;
    if (qkf__check_agree(&m, NULL, 0)) {
        rc = QKF_APP_RANK0;
        goto done;
    }
    int64_t used = o->limit > 0 && o->limit < meta.total ? o->limit : meta.total, lo, hi;
    if (used < qkf_dist_size()) { /* the same on every rank */
        rc = QKF_APP_RANK0;
        qkf_set_error("%s: %lld samples for %d ranks (use fewer ranks)", meta.source,
                      (long long)used, qkf_dist_size());
        goto done;
    }
    qkf_dist_shard(used, &lo, &hi);
    int64_t per = (int64_t)meta.c * meta.h * meta.w * (meta.t > 0 ? meta.t : 1);
    int64_t block = qkf_stream_block(&meta, o->batch);
    if (block > hi - lo)
        block = hi - lo;
    if ((rc = report_stream(&meta, hi - lo, used, block * (per + 4), log, ctx)))
        goto done;
    /* each rank classifies its contiguous shard, a block at a time; the counts are summed */
    if (o->event)
        ec.ev = qkf_sched_create(&m, o->batch, o->tb ? QKF_SCHED_TB_COMPAT : 0);
    else
        ec.e = qkf_dense_create(&m, o->batch, (o->tb ? QKF_DENSE_TB_COMPAT : 0) | o->conv);
    int lrc = !ec.e && !ec.ev;
    ec.K = m.cfg.num_classes;
    ec.logits = qkf_malloc((size_t)o->batch * ec.K * sizeof(float));
    if (!lrc)
        lrc = qkf_stream_split(o->data, 0, &meta, mx, lo, hi, 0, o->batch, m.n_norm, m.input_mean,
                               m.input_std, ec.K, eval_batch, &ec) != 0;
    if ((rc = qkf__dist_failed(lrc)))
        goto done;
    int64_t tot[2] = {ec.ok, ec.n};
    if (qkf_dist_sum_i64(tot, 2)) {
        rc = QKF_APP_RANK0;
        goto done;
    }
    r->accuracy = tot[1] ? (double)tot[0] / (double)tot[1] : 0.0;
    r->count = tot[1];
    snprintf(r->source, sizeof r->source, "%s", meta.source);
    r->seconds = qkf_now() - t0;
done:
    qkf_free(ec.logits);
    qkf_dense_free(ec.e);
    qkf_sched_free(ec.ev);
    qkf_model_free(&m);
    return rc;
}

/* ---- on a chip's integer arithmetic ------------------------------------------------------------ */

void qkf_evaluate_int_result_free(qkf_evaluate_int_result *r)
{
    qkf_free(r->flips);
    qkf_free(r->total);
    memset(r, 0, sizeof *r);
}

/* One batch of qkf_evaluate_int (a qkf_stream_split callback). */
typedef struct {
    qkf_dense_int *e; /* the dense integer engine, or */
    qkf_sched *ev;    /* the integer event engine */
    qkf_dense *fe;
    const qkf_graph *g;
    float *lf, *lq;
    int64_t *li;
    int K;
    qkf_evaluate_int_result *r;
} eval_int_ctx;

/* Spikes of LIF layer l of the event engine's last forward (QKF_SCHED_RECORD, [T][B][c*N + n])
 * that differ from the float dense engine's s_float ([C][T*B][N]); *total: the neuron-steps. */
static int64_t event_flips(const qkf_sched *ev, const qkf_graph *g, int l, int B,
                           const float *s_float, int64_t *total)
{
    const qkf_tensor *y = &g->tensors[g->ops[g->lif_ops[l]].out];
    int T = g->cfg.T;
    int64_t N = (int64_t)y->h * y->w, n = y->c * N, d = 0;
    const uint8_t *s = qkf_sched_spikes(ev, l);
    for (int f = 0; f < T * B; f++) /* f = t * B + b in both layouts */
        for (int64_t j = 0; j < n; j++)
            d += s[f * n + j] != (s_float[((j / N) * T * B + f) * N + j % N] != 0.0f);
    *total = n * T * B;
    return d;
}

static int eval_int_batch(void *p, const float *x, const int32_t *lab, int B)
{
    eval_int_ctx *c = p;
    qkf_evaluate_int_result *r = c->r;
    int K = c->K;
    double t1 = qkf_now();
    if (c->ev) {
        if (qkf_sched_forward(c->ev, x, B, c->lq, NULL))
            return -1;
        memcpy(c->li, qkf_sched_logits_int(c->ev), (size_t)B * K * sizeof(int64_t));
    } else if (qkf_dense_int_forward(c->e, x, B, c->lq, c->li, NULL))
        return -1;
    double t2 = qkf_now();
    r->seconds_int += t2 - t1;
    if (c->fe && qkf_dense_forward(c->fe, x, B, c->lf, NULL))
        return -1;
    r->seconds_float += qkf_now() - t2;
    for (int b = 0; b < B; b++) { /* the chip's class: the largest integer logit */
        int bq = 0, bf = 0;
        for (int k = 1; k < K; k++) {
            bq = c->li[b * K + k] > c->li[b * K + bq] ? k : bq;
            if (c->fe)
                bf = c->lf[b * K + k] > c->lf[b * K + bf] ? k : bf;
        }
        r->correct += bq == lab[b];
        if (c->fe) {
            r->correct_float += bf == lab[b];
            r->agree += bf == bq;
        }
    }
    if (r->flips)
        for (int li = 0; li < c->g->n_lif; li++) {
            int64_t t;
            const float *sf = qkf_dense_tensor(c->fe, c->g->ops[c->g->lif_ops[li]].out);
            r->flips[li] += c->ev ? event_flips(c->ev, c->g, li, B, sf, &t)
                                  : qkf_dense_int_flips(c->e, li, sf, &t);
            r->total[li] += t;
        }
    r->count += B;
    return 0;
}

int qkf_evaluate_int(const qkf_qmodel *q, const qkf_model *fm, const char *data, int64_t limit,
                     int batch, int event, int tb, int flips, qkf_evaluate_int_result *r)
{
    memset(r, 0, sizeof *r);
    int have_float = fm && fm->params.data != NULL;
    if (flips && !have_float)
        return qkf_set_error("--flips compares with the float model: give the float checkpoint");
    qkf_dataset d; /* the test split's probe: its size and shape; the samples are streamed */
    memset(&d, 0, sizeof d);
    float mx = 255.0f;
    if (qkf_dataset_probe(data, 0, &d))
        return -1;
    snprintf(r->source, sizeof r->source, "%s", d.source);
    const qkf_config *c = &q->cfg;
    int rc = -1;
    eval_int_ctx ec;
    memset(&ec, 0, sizeof ec);
    if ((d.t > 0) != qkf_config_is_frames(c) || d.c != c->in_channels || d.h != c->img_size ||
        d.w != c->img_size || (d.t > 0 && d.t != c->T)) {
        qkf_set_error("%s: samples are %d x %d x %d%s, the model takes %d x %d x %d", d.source,
                      d.c, d.h, d.w, d.t > 0 ? " frames" : "", c->in_channels, c->img_size,
                      c->img_size);
        goto done;
    }
    if (qkf_dataset_max(data, 0, 0, d.total, &mx))
        goto done;
    ec.K = c->num_classes, ec.r = r;
    if (event ? !(ec.ev = qkf_sched_create_int(q, batch, (flips ? QKF_SCHED_RECORD : 0) |
                                                            (tb ? QKF_SCHED_TB_COMPAT : 0)))
              : !(ec.e = qkf_dense_int_create(q, batch, tb ? QKF_DENSE_INT_TB_COMPAT : 0)))
        goto done;
    if (have_float && !(ec.fe = qkf_dense_create(fm, batch, (flips ? QKF_DENSE_KEEP_ALL : 0) |
                                                                (tb ? QKF_DENSE_TB_COMPAT : 0))))
        goto done;
    ec.g = event ? qkf_sched_graph(ec.ev) : qkf_dense_int_graph(ec.e);
    ec.lf = qkf_malloc((size_t)batch * ec.K * sizeof(float));
    ec.lq = qkf_malloc((size_t)batch * ec.K * sizeof(float));
    ec.li = qkf_malloc((size_t)batch * ec.K * sizeof(int64_t));
    r->has_float = have_float;
    if (flips) {
        r->n_lif = q->g.n_lif;
        r->flips = qkf_calloc((size_t)q->g.n_lif, sizeof(int64_t));
        r->total = qkf_calloc((size_t)q->g.n_lif, sizeof(int64_t));
    }
    int64_t hi = limit > 0 && limit < d.total ? limit : d.total;
    if (qkf_stream_split(data, 0, &d, mx, 0, hi, 0, batch, q->n_norm, q->input_mean,
                         q->input_std, ec.K, eval_int_batch, &ec))
        goto done;
    rc = 0;
done:
    qkf_dense_int_free(ec.e);
    qkf_sched_free(ec.ev);
    qkf_dense_free(ec.fe);
    qkf_free(ec.lf);
    qkf_free(ec.lq);
    qkf_free(ec.li);
    qkf_dataset_free(&d);
    return rc;
}
