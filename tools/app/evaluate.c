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
    qkf_dataset d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    memset(r, 0, sizeof *r);
    int64_t limit = o->limit;
    double t0 = qkf_now();
    int rc;
    if (!o->weights) {
        rc = qkf_set_error("--weights is required");
        goto done;
    }
    if ((rc = qkf__dist_failed(qkf_ckpt_load(o->weights, &m) != 0)))
        goto done;
    /* under mpirun each rank reads only its shard of the test split */
    int drc = qkf_dist_dataset_shard(o->data, 0, limit, &d);
    if ((rc = qkf__dist_failed(drc == -2 ? 2 : drc || qkf__dataset_fits(&d, &m.cfg))))
        goto done;
    if (qkf__check_agree(&m, NULL, 0)) {
        rc = QKF_APP_RANK0;
        goto done;
    }
    if ((rc = qkf__report_held("test", &d, limit > 0 && limit < d.total ? limit : d.total, 0,
                               log, ctx)))
        goto done;
    if (qkf_evaluate(&m, &d, limit, o->batch, o->tb, o->event, o->conv, &r->accuracy,
                     &r->count)) {
        rc = QKF_APP_RANK0;
        goto done;
    }
    snprintf(r->source, sizeof r->source, "%s", d.source);
    r->seconds = qkf_now() - t0;
done:
    qkf_dataset_free(&d);
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

int qkf_evaluate_int(const qkf_qmodel *q, const qkf_model *fm, const qkf_dataset *d,
                     int64_t limit, int batch, int flips, qkf_evaluate_int_result *r)
{
    memset(r, 0, sizeof *r);
    int have_float = fm && fm->params.data != NULL;
    if (flips && !have_float)
        return qkf_set_error("--flips compares with the float model: give the float checkpoint");
    const qkf_config *c = &q->cfg;
    if ((d->t > 0) != qkf_config_is_frames(c) || d->c != c->in_channels || d->h != c->img_size ||
        d->w != c->img_size || (d->t > 0 && d->t != c->T))
        return qkf_set_error("%s: samples are %d x %d x %d%s, the model takes %d x %d x %d",
                             d->source, d->c, d->h, d->w, d->t > 0 ? " frames" : "",
                             c->in_channels, c->img_size, c->img_size);
    int K = c->num_classes, rc = -1;
    qkf_dense_int *e = NULL;
    qkf_dense *fe = NULL;
    float *lf = NULL, *lq = NULL;
    if (!(e = qkf_dense_int_create(q, batch, 0)))
        goto done;
    if (have_float && !(fe = qkf_dense_create(fm, batch, flips ? QKF_DENSE_KEEP_ALL : 0)))
        goto done;
    const qkf_graph *g = &q->g;
    lf = qkf_malloc((size_t)batch * K * sizeof(float));
    lq = qkf_malloc((size_t)batch * K * sizeof(float));
    r->has_float = have_float;
    if (flips) {
        r->n_lif = g->n_lif;
        r->flips = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
        r->total = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    }
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = d, lc.batch = batch, lc.limit = limit, lc.n_norm = q->n_norm;
    memcpy(lc.mean, q->input_mean, sizeof lc.mean);
    memcpy(lc.std, q->input_std, sizeof lc.std);
    qkf_loader *l = qkf_loader_start(&lc, 0, 0);
    const float *x;
    const int32_t *lab;
    int B, frc = 0;
    while (qkf_loader_next(l, &x, &lab, &B)) {
        double t1 = qkf_now();
        if ((frc = qkf_dense_int_forward(e, x, B, lq, NULL, NULL)))
            break;
        double t2 = qkf_now();
        r->seconds_int += t2 - t1;
        if (fe && (frc = qkf_dense_forward(fe, x, B, lf, NULL)))
            break;
        r->seconds_float += qkf_now() - t2;
        for (int b = 0; b < B; b++) {
            int bq = 0, bf = 0;
            for (int k = 1; k < K; k++) {
                bq = lq[b * K + k] > lq[b * K + bq] ? k : bq;
                bf = lf[b * K + k] > lf[b * K + bf] ? k : bf;
            }
            r->correct += bq == lab[b];
            if (fe) {
                r->correct_float += bf == lab[b];
                r->agree += bf == bq;
            }
        }
        if (flips)
            for (int li = 0; li < g->n_lif; li++) {
                int64_t t;
                const float *sf = qkf_dense_tensor(fe, g->ops[g->lif_ops[li]].out);
                r->flips[li] += qkf_dense_int_flips(e, li, sf, &t);
                r->total[li] += t;
            }
        r->count += B;
    }
    qkf_loader_stop(l);
    rc = frc ? -1 : 0;
done:
    qkf_dense_int_free(e);
    qkf_dense_free(fe);
    qkf_free(lf);
    qkf_free(lq);
    return rc;
}
