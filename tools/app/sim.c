/* The simulation application (tools/app/sim.h): qkf sim's run, over an input file or a dataset's
 * test split streamed a batch at a time, in the float engines or the integer event engine, and
 * its report files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../io/dataset.h"
#include "../../io/h5_part.h"
#include "../../io/io.h"
#include "../../io/map_json.h"
#include "../../io/trace.h"
#include "../../kernels/base.h"
#include "../../models/map.h"
#include "../../models/quant.h"
#include "../../sim/dense.h"
#include "../../sim/dense_int.h"
#include "../../sim/dist.h"
#include "../../sim/sched.h"
#include "app_internal.h"
#include "dist_dataset.h"
#include "quantize.h"
#include "sim.h"

/* ---- the report files -------------------------------------------------------------------------
 */

double qkf_sim_est_energy(const qkf_stats *s, int node, const qkf_work *w, int64_t samples,
                          double e_ac, double e_mac)
{
    return e_ac * qkf_stats_est_sops(s, node, w) + e_mac * qkf_stats_est_macs(s, node, samples);
}

static void json_work(FILE *f, const qkf_stats *s, int node, const qkf_work *w, int64_t neurons,
                      double samples, int with_macs, const qkf_sim_report_info *ri)
{
    fprintf(f,
            "\"in_events\": %lld, \"in_spikes\": [%lld, %lld, %lld], \"out_spikes\": %lld, "
            "\"acs\": %lld, \"macs\": %lld, \"est_sops\": %.6g",
            (long long)w->in_events, (long long)w->in_spikes[0], (long long)w->in_spikes[1],
            (long long)w->in_spikes[2], (long long)w->out_spikes, (long long)w->acs,
            (long long)w->macs, qkf_stats_est_sops(s, node, w));
    if (neurons > 0)
        fprintf(f, ", \"firing_rate\": %.6g", (double)w->out_spikes / ((double)neurons * samples));
    fprintf(f, ", \"energy_pj\": %.6g", qkf_energy_pj(w, ri->e_ac, ri->e_mac));
    if (with_macs)
        fprintf(f, ", \"est_macs\": %.6g, \"est_energy_pj\": %.6g",
                qkf_stats_est_macs(s, node, s->samples), qkf_sim_est_energy(s, node, w, s->samples, ri->e_ac, ri->e_mac));
}

static void write_json(FILE *f, const qkf_stats *s, const qkf_sim_report_info *ri)
{
    double S = (double)s->samples;
    fprintf(f, "{\n  \"engine\": ");
    qkf_json_str(f, ri->engine);
    fprintf(f, ",\n  \"weights\": ");
    qkf_json_str(f, ri->weights);
    fprintf(f, ",\n  \"input\": ");
    qkf_json_str(f, ri->input);
    fprintf(
        f,
        ",\n  \"qkf_version\": \"%s\",\n  \"samples\": %lld,\n  \"T\": %d,\n  \"threads\": %d,\n"
        "  \"tb_compat\": %d,\n  \"seconds\": %.6g,\n  \"e_ac_pj\": %.6g,\n  \"e_mac_pj\": %.6g,\n",
        QKF_VERSION, (long long)s->samples, s->T, ri->threads, ri->tb, s->seconds, ri->e_ac,
        ri->e_mac);
    qkf_work all = qkf_stats_step_total(s, -1);
    double est = 0, est_e = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        qkf_work w = qkf_stats_node_total(s, i, -1);
        est += qkf_stats_est_sops(s, i, &w);
        est_e += qkf_sim_est_energy(s, i, &w, s->samples, ri->e_ac, ri->e_mac);
    }
    fprintf(f,
            "  \"totals\": {\"in_events\": %lld, \"out_spikes\": %lld, \"acs\": %lld, \"macs\": "
            "%lld, \"est_sops\": %.6g, \"energy_pj\": %.6g, \"est_energy_pj\": %.6g},\n",
            (long long)all.in_events, (long long)all.out_spikes, (long long)all.acs,
            (long long)all.macs, est, qkf_energy_pj(&all, ri->e_ac, ri->e_mac), est_e);
    fprintf(f, "  \"steps\": [");
    for (int t = 0; t < s->T; t++) {
        qkf_work w = qkf_stats_step_total(s, t);
        fprintf(f,
                "%s\n    {\"t\": %d, \"in_events\": %lld, \"out_spikes\": %lld, \"acs\": %lld, "
                "\"macs\": %lld, \"energy_pj\": %.6g}",
                t ? "," : "", t, (long long)w.in_events, (long long)w.out_spikes, (long long)w.acs,
                (long long)w.macs, qkf_energy_pj(&w, ri->e_ac, ri->e_mac));
    }
    fprintf(f, "\n  ],\n  \"nodes\": [");
    for (int i = 0; i < s->n_nodes; i++) {
        const qkf_node_info *nd = &s->node[i];
        qkf_work w = qkf_stats_node_total(s, i, -1);
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        qkf_json_str(f, nd->name);
        fprintf(f,
                ", \"kind\": \"%s\", \"neurons\": %lld, \"heads\": %d, \"flops\": %lld, "
                "\"seconds\": %.6g,\n     ",
                qkf_node_kind_name(nd->kind), (long long)nd->neurons, nd->heads,
                (long long)nd->flops, s->node_seconds ? s->node_seconds[i] : 0.0);
        json_work(f, s, i, &w, nd->neurons, (double)s->T * S, 1, ri);
        fprintf(f, ",\n     \"steps\": [");
        for (int t = 0; t < s->T; t++) {
            const qkf_work *wt = &s->w[(int64_t)i * s->T + t];
            fprintf(f, "%s{\"t\": %d, ", t ? ", " : "", t);
            json_work(f, s, i, wt, nd->neurons, S, 0, ri);
            fprintf(f, "}");
        }
        fprintf(f, "]");
        if (nd->heads > 0) {
            fprintf(f, ",\n     \"head_work\": [");
            for (int h = 0; h < nd->heads; h++) {
                qkf_work wh = qkf_stats_node_total(s, i, h);
                fprintf(f, "%s\n       {\"head\": %d, ", h ? "," : "", h);
                json_work(f, s, i, &wh, nd->neurons / nd->heads, (double)s->T * S, 0, ri);
                fprintf(f, ", \"steps\": [");
                for (int t = 0; t < s->T; t++) {
                    const qkf_work *wt = &s->wh[((int64_t)i * s->heads_max + h) * s->T + t];
                    fprintf(f, "%s{\"t\": %d, ", t ? ", " : "", t);
                    json_work(f, s, i, wt, nd->neurons / nd->heads, S, 0, ri);
                    fprintf(f, "}");
                }
                fprintf(f, "]}");
            }
            fprintf(f, "]");
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]");
    if (ri->hw) {
        fprintf(f, ",\n  \"hw\": ");
        qkf_cost_write_json(f, ri->hw);
    }
    if (ri->nb) {
        fprintf(f, ",\n  \"neurobench\": ");
        qkf_nb_write_json(f, ri->nb);
    }
    fprintf(f, "\n}\n");
}

static void csv_row(FILE *f, const qkf_stats *s, int node, int head, int t, const qkf_work *w,
                    const qkf_sim_report_info *ri)
{
    const qkf_node_info *nd = &s->node[node];
    int64_t neurons = head >= 0 && nd->heads ? nd->neurons / nd->heads : nd->neurons;
    double steps = t < 0 ? (double)s->T : 1.0;
    char hs[16] = "all", ts[16] = "all", rate[32] = "";
    if (head >= 0)
        snprintf(hs, sizeof hs, "%d", head);
    if (t >= 0)
        snprintf(ts, sizeof ts, "%d", t);
    if (neurons > 0)
        snprintf(rate, sizeof rate, "%.6g",
                 (double)w->out_spikes / ((double)neurons * steps * (double)s->samples));
    double est_macs = head < 0 && t < 0 ? qkf_stats_est_macs(s, node, s->samples) : 0.0;
    fprintf(f, "%s,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%s,%lld,%lld,%.6g,%.6g,%.6g,%.6g\n", nd->name,
            qkf_node_kind_name(nd->kind), hs, ts, (long long)s->samples, (long long)neurons,
            (long long)w->in_events,
            (long long)(w->in_spikes[0] + w->in_spikes[1] + w->in_spikes[2]),
            (long long)w->out_spikes, rate, (long long)w->acs, (long long)w->macs,
            qkf_stats_est_sops(s, node, w), est_macs, qkf_energy_pj(w, ri->e_ac, ri->e_mac),
            ri->e_ac * qkf_stats_est_sops(s, node, w) + ri->e_mac * est_macs);
}

static void write_csv(FILE *f, const qkf_stats *s, const qkf_sim_report_info *ri)
{
    fprintf(f, "node,kind,head,t,samples,neurons,in_events,in_spikes,out_spikes,firing_rate,acs,"
               "macs,est_sops,est_macs,energy_pj,est_energy_pj\n");
    for (int i = 0; i < s->n_nodes; i++) {
        qkf_work w = qkf_stats_node_total(s, i, -1);
        csv_row(f, s, i, -1, -1, &w, ri);
        for (int t = 0; t < s->T; t++)
            csv_row(f, s, i, -1, t, &s->w[(int64_t)i * s->T + t], ri);
        for (int h = 0; h < s->node[i].heads; h++) {
            qkf_work wh = qkf_stats_node_total(s, i, h);
            csv_row(f, s, i, h, -1, &wh, ri);
            for (int t = 0; t < s->T; t++)
                csv_row(f, s, i, h, t, &s->wh[((int64_t)i * s->heads_max + h) * s->T + t], ri);
        }
    }
}

/* Writes the report to path.tmp.<pid>, then renames it over path. */
int qkf_sim_write_report(const char *path, int json, const qkf_stats *s,
                         const qkf_sim_report_info *ri)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return qkf_set_error("%s: cannot create the report (%s)", path, strerror(errno));
    if (json)
        write_json(f, s, ri);
    else
        write_csv(f, s, ri);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return qkf_set_error("%s: cannot write the report (%s)", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return qkf_set_error("%s: cannot rename the report into place (%s)", path, strerror(err));
    }
    return 0;
}


/* ---- the samples: an input file's rows or a dataset's test split, a batch at a time ---------- */

typedef struct {
    /* --input */
    qkf_h5_rows *in;
    float *x;
    /* --data */
    const char *name;
    float mx;
    qkf_dataset_stream *ds;
    qkf_dataset block; /* the samples of the current batch */
    qkf_dataset view;  /* the block as the loader reads it (qkf__block_loader) */
    qkf_loader *ld;    /* normalises the block */
    int num_classes, n_norm;
    float mean[4], std[4];
    int64_t per;       /* values per sample */
} sim_source;

static void source_close(sim_source *s)
{
    if (s->ld)
        qkf_loader_stop(s->ld);
    qkf_dataset_free(&s->block);
    qkf_dataset_stream_close(s->ds);
    qkf_h5_rows_close(s->in);
    qkf_free(s->x);
    memset(s, 0, sizeof *s);
}

/* Checks dataset 'input' of path against the model (as qkf infer does) from its shape: the
 * samples are read a batch at a time by the run (*B samples of s->per values each). */
static int open_input(const char *path, qkf_model *m, sim_source *s, int64_t *B)
{
    int ndim;
    int64_t shape[5];
    if (!(s->in = qkf_h5_rows_open(path, "input", &ndim, shape)))
        return -1;
    int frames = qkf_config_is_frames(&m->cfg);
    if (ndim != (frames ? 5 : 4))
        return qkf_set_error("%s: dataset 'input' has %d dimensions but a %s model takes %s", path,
                             ndim, qkf_variant_name(m->cfg.variant),
                             frames ? "frames [B,T,C,H,W]" : "images [B,C,H,W]");
    int64_t C = shape[frames ? 2 : 1], H = shape[frames ? 3 : 2], W = shape[frames ? 4 : 3];
    if (C != m->cfg.in_channels || H != W)
        return qkf_set_error("%s: dataset 'input' has %lld channels of %lld x %lld; the model "
                             "takes %d channels of a square image",
                             path, (long long)C, (long long)H, (long long)W, m->cfg.in_channels);
    if (shape[0] < 1)
        return qkf_set_error("%s: dataset 'input' holds no samples", path);
    if (H != m->cfg.img_size) {
        qkf_config c2 = m->cfg;
        c2.img_size = (int)H;
        if (qkf_config_validate(&c2))
            return qkf_set_error("%s: input size %lld does not fit the model (%s)", path,
                                 (long long)H, qkf_last_error());
        m->cfg.img_size = (int)H;
    }
    if (frames) {
        if (shape[1] < 1 || shape[1] > 1024)
            return qkf_set_error("%s: dataset 'input' has %lld time steps (1..1024)", path,
                                 (long long)shape[1]);
        m->cfg.T = (int)shape[1];
    }
    *B = shape[0];
    s->per = frames ? (int64_t)m->cfg.T * C * H * W : C * H * W;
    if (*B < qkf_dist_size())
        return qkf_set_error("%s: %lld samples for %d ranks (use fewer ranks)", path,
                             (long long)*B, qkf_dist_size());
    return 0;
}

/* The test split of image dataset NAME, checked against the model (as qkf eval does) from its
 * probe; *B: the samples to run (the first `limit`). Collective under mpirun (the largest value
 * of HDF5 images is agreed over the ranks); a return of -2 means another rank failed. The
 * samples are read by the run, a batch at a time (source_open_data). */
static int probe_data(const char *name, qkf_model *m, int64_t limit, sim_source *s, int64_t *B,
                      char *source, size_t cap)
{
    qkf_dataset meta;
    int rc = qkf_dist_dataset_probe(name, 0, &meta, &s->mx);
    if (rc)
        return rc;
    snprintf(source, cap, "%s", meta.source);
    const qkf_dataset *d = &meta;
    if (qkf_config_is_frames(&m->cfg) != (d->t > 0))
        return qkf_set_error(d->t > 0 ? "%s: event frames fit only a dvs128 or cifar10dvs model, "
                                        "not %s"
                                      : "%s: a %s model takes event frames; image datasets do "
                                        "not fit it (qkf events emulate --out X.h5 makes frames)",
                             d->source, qkf_variant_name(m->cfg.variant));
    if (d->t > 0 && d->t != m->cfg.T)
        return qkf_set_error("%s: %d frames per sample but the model has T = %d", d->source,
                             d->t, m->cfg.T);
    if (d->c != m->cfg.in_channels || d->h != d->w)
        return qkf_set_error("%s: images are %d x %d x %d but the model takes %d channels of a "
                             "square image",
                             d->source, d->c, d->h, d->w, m->cfg.in_channels);
    if (d->h != m->cfg.img_size) { /* no position embedding: any size the strides allow */
        qkf_config c2 = m->cfg;
        c2.img_size = d->h;
        if (qkf_config_validate(&c2))
            return qkf_set_error("%s: image size %d does not fit the model (%s)", d->source, d->h,
                                 qkf_last_error());
        m->cfg.img_size = d->h;
    }
    *B = limit > 0 && limit < d->total ? limit : d->total;
    if (*B < 1)
        return qkf_set_error("%s: the test split holds no samples", d->source);
    if (*B < qkf_dist_size())
        return qkf_set_error("%s: %lld samples for %d ranks (use fewer ranks)", d->source,
                             (long long)*B, qkf_dist_size());
    s->name = name;
    s->per = (int64_t)d->c * d->h * d->w * (d->t > 0 ? d->t : 1);
    s->num_classes = m->cfg.num_classes, s->n_norm = m->n_norm;
    memcpy(s->mean, m->input_mean, sizeof s->mean);
    memcpy(s->std, m->input_std, sizeof s->std);
    return 0;
}

/* Samples [lo, hi) of the split, read from here on a batch at a time. */
static int source_open_data(sim_source *s, int64_t lo, int64_t hi)
{
    return (s->ds = qkf_dataset_stream_open(s->name, 0, lo, hi, s->mx)) ? 0 : -1;
}

/* Bytes a batch of nb samples holds while it is read. */
static int64_t source_bytes(const sim_source *s, int64_t nb)
{
    return s->in ? nb * s->per * (int64_t)sizeof(float)
                 : nb * (s->per + (int64_t)sizeof(int32_t) + (int64_t)sizeof(int64_t));
}

/* The batch of samples [row, row + n) of the source (row: from the first sample of the input
 * file; a dataset is read in order): x normalised as the model's inputs, labels for a dataset
 * (NULL for an input file). */
static int source_next(sim_source *s, int64_t row, int n, const float **x, const int32_t **labels)
{
    if (s->in) {
        if (!s->x)
            return qkf_set_error("internal: no input buffer");
        *labels = NULL, *x = s->x;
        return qkf_h5_rows_read_f32(s->in, row, n, s->x);
    }
    if (s->ld)
        qkf_loader_stop(s->ld);
    s->ld = NULL;
    if (qkf_dataset_stream_next(s->ds, n, &s->block) != n ||
        !(s->ld = qkf__block_loader(&s->block, &s->view, n, s->n_norm, s->mean, s->std,
                                    s->num_classes)))
        return -1;
    int got = 0;
    if (!qkf_loader_next(s->ld, x, labels, &got) || got != n)
        return qkf_set_error("%s: the loader gave %d of %d samples", s->block.source, got, n);
    return 0;
}

/* ---- the run --------------------------------------------------------------------------------- */

struct qkf_sim_state {
    qkf_model m, fm;  /* the float model; integer runs: fm (when a float checkpoint) */
    qkf_qmodel q;     /* integer runs */
    sim_source src;
    qkf_sched *e, *f; /* the event engine (integer runs: integer), f: the float event engine */
    qkf_dense *d, *dn; /* the dense engine; dn: NeuroBench's beside the event engine */
    qkf_dense_int *dni; /* integer runs: NeuroBench's tensors and membranes (sim/neurobench.h) */
    qkf_stats ds;     /* the dense engine's counters */
    float *logits, *lf, *nlogits;
    qkf_trace *tr;
    qkf_trace_spec ts;
    qkf_map map;
    qkf_cost cost;
    const uint8_t **hsp;
    qkf_nb nb;
    qkf_sim_flips *fr;
};

void qkf_sim_result_free(qkf_sim_result *r)
{
    qkf_sim_state *s = r->state;
    if (s) {
        source_close(&s->src);
        qkf_trace_abort(s->tr); /* before the engine it is attached to */
        qkf_trace_spec_free(&s->ts);
        if (s->cost.map)
            qkf_cost_free(&s->cost);
        if (s->map.unit)
            qkf_map_free(&s->map);
        qkf_free(s->hsp);
        if (s->nb.layer)
            qkf_nb_free(&s->nb);
        qkf_dense_free(s->dn);
        qkf_dense_int_free(s->dni);
        qkf_sched_free(s->e);
        qkf_sched_free(s->f);
        qkf_dense_free(s->d);
        if (s->ds.node)
            qkf_stats_free(&s->ds);
        qkf_free(s->logits);
        qkf_free(s->lf);
        qkf_free(s->nlogits);
        qkf_free(s->fr);
        qkf_qmodel_free(&s->q);
        qkf_model_free(&s->fm);
        qkf_model_free(&s->m);
        qkf_free(s);
    }
    memset(r, 0, sizeof *r);
}

/* This rank failed (local: 1) or not: every rank agrees; the failing ranks report (their message
 * naming the rank under mpirun), the others stay quiet. */
static int fail_here_or_quiet(int local)
{
    if (qkf_dist_all_ok(!local, NULL))
        return 0;
    if (!local)
        return QKF_APP_QUIET;
    return QKF_APP_HERE;
}

/* A failure of this rank alone (no agreement): HERE, its message naming the rank under mpirun. */
static int here(void) { return QKF_APP_HERE; }

static void name_rank(int rc)
{
    if (rc == QKF_APP_HERE && qkf_dist_size() > 1) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        qkf_set_error("rank %d: %s", qkf_dist_rank(), msg);
    }
}

/* The per-batch work after the engine's forward: the chip's costs of the spikes, NeuroBench. */
static int price(qkf_sim_state *s, const qkf_config *c, const float *xb, int n)
{
    if (!s->hsp)
        return 0;
    const qkf_graph *g = qkf_sched_graph(s->e);
    for (int l = 0; l < g->n_lif; l++)
        s->hsp[l] = qkf_sched_spikes(s->e, l);
    return qkf_cost_add(&s->cost, s->hsp, qkf_config_is_frames(c) ? xb : NULL, n);
}

static void count_correct(const float *logits, const int32_t *labels, int n, int K, int64_t *ok)
{
    for (int b = 0; labels && b < n; b++) {
        int best = 0;
        for (int k = 1; k < K; k++)
            best = logits[b * K + k] > logits[b * K + best] ? k : best;
        *ok += best == labels[b];
    }
}

/* Closes the run's trace, if any (its last blocks written): 0 or -1. */
static int close_trace(qkf_sim_state *s)
{
    if (!s->tr)
        return 0;
    int rc = qkf_trace_close(s->tr);
    s->tr = NULL;
    return rc;
}

/* qkf sim --hw (an integer profile) or a quantised checkpoint: the integer event engine, one
 * process. */
static int run_int(const qkf_sim_opts *o, qkf_log_fn log, void *ctx, qkf_sim_result *r)
{
    qkf_sim_state *s = r->state;
    const qkf_hw_profile *hw = o->hw;
    int64_t B = 0;
    if (qkf_app_qmodel(o->weights, hw, 0, NULL, NULL, &s->fm, &s->q))
        return here();
    int have_float = s->fm.params.data != NULL;
    /* the inputs are checked against the integer model's configuration (its graph is fixed) */
    qkf_model view;
    memset(&view, 0, sizeof view);
    view.cfg = s->q.cfg;
    view.n_norm = s->q.n_norm;
    memcpy(view.input_mean, s->q.input_mean, sizeof view.input_mean);
    memcpy(view.input_std, s->q.input_std, sizeof view.input_std);
    if (o->input ? open_input(o->input, &view, &s->src, &B)
                 : probe_data(o->data, &view, o->limit, &s->src, &B, r->source,
                              sizeof r->source))
        return here();
    if (view.cfg.img_size != s->q.cfg.img_size || view.cfg.T != s->q.cfg.T) {
        qkf_set_error("%s: the integer model runs its checkpoint's geometry (%d x %d, T = %d) "
                      "only",
                      o->input ? o->input : o->data, s->q.cfg.img_size, s->q.cfg.img_size,
                      s->q.cfg.T);
        return here();
    }
    if (o->calib > 0 && have_float) { /* re-quantise with scales calibrated on the run's samples */
        qkf_quant_opts qo;
        memset(&qo, 0, sizeof qo);
        int64_t nc = o->calib < B ? o->calib : B;
        if (!o->input) {
            qkf_set_error("--calib with --hw takes the samples of --input X.h5");
            return here();
        }
        float *cx = qkf_malloc((size_t)(nc * s->src.per) * sizeof(float)); /* the first nc */
        qkf_qmodel_free(&s->q);
        memset(&s->q, 0, sizeof s->q);
        int qrc = qkf_h5_rows_read_f32(s->src.in, 0, nc, cx) ||
                  qkf_quant_calibrate(&s->fm, cx, (int)nc, 8, &qo) ||
                  qkf_quantize(&s->fm, &hw->arith, hw->name, &qo, &s->q);
        qkf_quant_calib_free(&qo, &s->fm);
        qkf_free(cx);
        if (qrc)
            return here();
    } else if (o->calib > 0) {
        qkf_set_error("%s: already quantised (--calib applies to float checkpoints)", o->weights);
        return here();
    }
    if (o->data && source_open_data(&s->src, 0, B))
        return here();
    int nb = (int)(B < o->batch ? B : o->batch);
    if (o->input)
        s->src.x = qkf_malloc((size_t)(nb * s->src.per) * sizeof(float));
    s->e = qkf_sched_create_int(&s->q, nb, (have_float || hw ? QKF_SCHED_RECORD : 0) |
                                               (o->tb ? QKF_SCHED_TB_COMPAT : 0));
    if (!s->e)
        return here();
    if (have_float &&
        !(s->f = qkf_sched_create(&s->fm, nb,
                                  QKF_SCHED_RECORD | (o->tb ? QKF_SCHED_TB_COMPAT : 0))))
        return here();
    const qkf_graph *g = qkf_sched_graph(s->e);
    int K = s->q.cfg.num_classes, T = s->q.cfg.T;
    if (hw) { /* mapped before the run; a model the chip cannot hold still runs its arithmetic */
        if (qkf_map_build(&s->map, g, hw)) {
            qkf__logf(log, ctx, "qkf sim: %s: not priced, the integer arithmetic still runs (%s)\n",
                      hw->name, qkf_last_error());
            qkf_clear_error();
            if (s->map.unit)
                qkf_map_free(&s->map);
            memset(&s->map, 0, sizeof s->map);
        } else {
            if (qkf_cost_init(&s->cost, &s->map, T))
                return here();
            if (o->latency_detailed)
                qkf_cost_detailed(&s->cost);
            s->hsp = qkf_calloc((size_t)g->n_lif, sizeof *s->hsp);
        }
    }
    /* the dense integer engine beside the event engine, for NeuroBench's tensors and membranes
     * (its spikes equal the event engine's bit for bit, tested) */
    if (hw && o->neurobench) {
        if (!(s->dni = qkf_dense_int_create(&s->q, nb, o->tb ? QKF_DENSE_INT_TB_COMPAT : 0)) ||
            qkf_nb_init_int(&s->nb, &s->q))
            return here();
    }
    if (o->trace && o->trace->path) { /* the event engine's own, in membrane units */
        s->ts.qmodel = &s->q;
        if (!(s->tr = qkf_trace_opts_open(o->trace, &s->ts, g, o->weights, "event-int", o->argc,
                                          o->argv)) ||
            qkf_sched_set_trace(s->e, qkf_trace_sink(s->tr)))
            return here();
    }
    s->logits = qkf_malloc((size_t)nb * K * sizeof(float));
    s->lf = qkf_malloc((size_t)nb * K * sizeof(float));
    s->fr = qkf_calloc((size_t)g->n_lif, sizeof *s->fr);
    double busy = 0;
    for (int64_t b0 = 0; b0 < B;) {
        const float *xb;
        const int32_t *labels;
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        if (source_next(&s->src, b0, n, &xb, &labels))
            return here();
        double t1 = qkf_now();
        if (qkf_sched_forward(s->e, xb, n, s->logits, NULL))
            return here();
        busy += qkf_now() - t1;
        if (price(s, &s->q.cfg, xb, n))
            return here();
        if (s->dni && (qkf_dense_int_forward(s->dni, xb, n, NULL, NULL, NULL) ||
                       (s->nb.layer && qkf_nb_add_int(&s->nb, s->dni, n))))
            return here();
        if (s->f) {
            if (qkf_sched_forward(s->f, xb, n, s->lf, NULL))
                return here();
            for (int l = 0; l < g->n_lif; l++) {
                int64_t m = qkf_graph_lif_neurons(g, l) * T * n;
                const uint8_t *a = qkf_sched_spikes(s->f, l), *bq = qkf_sched_spikes(s->e, l);
                qkf_sim_flips *fr = &s->fr[l];
                for (int64_t i = 0; i < m; i++) {
                    fr->fs += a[i], fr->is += bq[i];
                    fr->diff += a[i] != bq[i];
                }
                fr->n += m;
            }
        }
        count_correct(s->logits, labels, n, K, &r->correct);
        b0 += n;
    }
    if (close_trace(s))
        return here();
    qkf_stats *st = qkf_sched_stats(s->e);
    st->seconds = busy;
    r->integer = 1;
    snprintf(r->engine, sizeof r->engine, "event-int (%s)",
             s->q.hw_name[0] ? s->q.hw_name : "integer");
    r->hw_name = s->q.hw_name;
    r->st = st, r->g = g;
    r->cost = s->hsp ? &s->cost : NULL;
    r->nb = s->nb.layer ? &s->nb : NULL;
    r->flips = s->f ? s->fr : NULL;
    r->has_labels = o->data != NULL;
    return 0;
}

/* Under mpirun, rank 0 logs how many samples each rank holds (collective). */
static int report_held(int64_t n, int64_t bytes, int quiet, qkf_log_fn log, void *ctx)
{
    int nr = qkf_dist_size();
    if (nr == 1)
        return 0;
    int64_t *all = qkf_calloc((size_t)nr * 2, sizeof(int64_t));
    int rc = qkf_dist_gather_i64(n, all) || qkf_dist_gather_i64(bytes, all + nr) ? -1 : 0;
    int64_t total = 0; /* the shards partition the samples */
    for (int i = 0; i < nr; i++)
        total += all[i];
    if (rc == 0 && qkf_dist_rank() == 0 && !quiet)
        for (int i = 0; i < nr; i++)
            qkf__logf(log, ctx, "rank %d holds %lld of %lld samples (%.2f MB)\n", i,
                      (long long)all[i], (long long)total, (double)all[nr + i] / 1e6);
    qkf_free(all);
    return rc;
}

/* The float engines, sharded under mpirun. */
static int run_float(const qkf_sim_opts *o, qkf_log_fn log, void *ctx, qkf_sim_result *r)
{
    qkf_sim_state *s = r->state;
    int event = o->event, nbench = o->neurobench;
    const char *mode = event ? "event" : "dense";
    int64_t B = 0;
    int rc;
    /* under mpirun each rank reads only its contiguous shard of the samples; the checkpoint is
     * agreed on first, because probing a dataset involves collectives */
    int shard = qkf_dist_size() > 1, other = 0;
    int lfail = qkf_ckpt_load(o->weights, &s->m) != 0;
    if (shard && (rc = fail_here_or_quiet(lfail)))
        return rc;
    if (!lfail) {
        int drc = o->input ? open_input(o->input, &s->m, &s->src, &B)
                           : probe_data(o->data, &s->m, o->limit, &s->src, &B, r->source,
                                        sizeof r->source);
        other = drc == -2, lfail = drc != 0;
    }
    if (!qkf_dist_all_ok(!lfail || other, NULL))
        return !lfail || other ? QKF_APP_QUIET : QKF_APP_HERE;
    /* this rank's contiguous shard [lo, hi) of the B samples, read a batch at a time */
    int64_t lo = 0, hi = B;
    qkf_dist_shard(B, &lo, &hi);
    B = hi - lo;
    int nb = (int)(B < o->batch ? B : o->batch);
    if (report_held(B, source_bytes(&s->src, nb), o->quiet, log, ctx))
        return here();
    /* (agreed: a rank that cannot open its shard must not leave the others waiting) */
    if ((rc = fail_here_or_quiet(o->data && source_open_data(&s->src, lo, hi))))
        return rc;
    if (o->input)
        s->src.x = qkf_malloc((size_t)(nb * s->src.per) * sizeof(float));
    const qkf_hw_profile *hw = o->hw;
    if (event) {
        s->e = qkf_sched_create(&s->m, nb,
                                (o->tb ? QKF_SCHED_TB_COMPAT : 0) | (hw ? QKF_SCHED_RECORD : 0));
        if (!s->e)
            return here();
        r->st = qkf_sched_stats(s->e);
        if (hw) { /* the chip: mapped before the run, so a model that does not fit stops it */
            const qkf_graph *g = qkf_sched_graph(s->e);
            if (qkf_map_build(&s->map, g, hw) || qkf_cost_init(&s->cost, &s->map, s->m.cfg.T))
                return here();
            if (o->latency_detailed)
                qkf_cost_detailed(&s->cost);
            s->hsp = qkf_calloc((size_t)g->n_lif, sizeof *s->hsp);
        }
    } else {
        s->d = qkf_dense_create(&s->m, nb,
                                QKF_DENSE_KEEP_ALL | (o->tb ? QKF_DENSE_TB_COMPAT : 0) | o->conv |
                                    (nbench ? QKF_DENSE_RECORD_VH : 0));
        if (!s->d || qkf_stats_init(&s->ds, qkf_dense_graph(s->d)))
            return here();
        r->st = &s->ds;
    }
    if (nbench) {
        if (event && !(s->dn = qkf_dense_create(&s->m, nb,
                                                QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH |
                                                    (o->tb ? QKF_DENSE_TB_COMPAT : 0) | o->conv)))
            return here();
        if (qkf_nb_init(&s->nb, &s->m, qkf_dense_graph(event ? s->dn : s->d)))
            return here();
    }
    const qkf_graph *g = event ? qkf_sched_graph(s->e) : qkf_dense_graph(s->d);
    if (o->trace && o->trace->path) {
        if (!(s->tr = qkf_trace_opts_open(o->trace, &s->ts, g, o->weights, mode, o->argc,
                                          o->argv)))
            return here();
        if (event ? qkf_sched_set_trace(s->e, qkf_trace_sink(s->tr))
                  : qkf_dense_set_sink(s->d, qkf_trace_sink(s->tr)))
            return here();
    }
    int K = s->m.cfg.num_classes;
    s->logits = qkf_malloc((size_t)nb * K * sizeof(float));
    if (s->dn)
        s->nlogits = qkf_malloc((size_t)nb * K * sizeof(float));
    /* start-up agreement: the same weights on every rank (mpirun over nodes) */
    uint64_t h = qkf_dist_hash(QKF_DIST_HASH_INIT, s->m.params.data,
                               (size_t)s->m.params.total * sizeof(float));
    int bad_rank;
    if (qkf_dist_agree(h, &bad_rank)) {
        if (bad_rank >= 0)
            qkf_set_error("rank %d: its checkpoint differs from rank 0's (the same --weights file "
                          "on every node)",
                          bad_rank);
        return QKF_APP_RANK0;
    }
    double busy = 0;
    int failed = 0;
    for (int64_t b0 = 0; b0 < B;) {
        const float *xb;
        const int32_t *labels;
        int n = (int)(B - b0 < nb ? B - b0 : nb);
        double t1;
        if ((failed = source_next(&s->src, lo + b0, n, &xb, &labels) != 0))
            break;
        t1 = qkf_now();
        if ((failed = (event ? qkf_sched_forward(s->e, xb, n, s->logits, NULL)
                             : qkf_dense_forward(s->d, xb, n, s->logits, NULL)) != 0))
            break;
        busy += qkf_now() - t1;
        if ((failed = price(s, &s->m.cfg, xb, n) != 0))
            break;
        if (nbench && ((event && qkf_dense_forward(s->dn, xb, n, s->nlogits, NULL)) ||
                       qkf_nb_add(&s->nb, event ? s->dn : s->d, n))) {
            failed = 1;
            break;
        }
        if (!event && qkf_stats_add_dense(&s->ds, s->d, n)) {
            failed = 1;
            break;
        }
        count_correct(s->logits, labels, n, K, &r->correct);
        b0 += n;
    }
    if (close_trace(s))
        return here();
    if ((rc = fail_here_or_quiet(failed))) /* the failing rank names itself */
        return rc;
    qkf_stats *st = event ? qkf_sched_stats(s->e) : &s->ds;
    st->seconds = busy;
    /* every rank's counters summed exactly (int64), then rank 0 alone reports */
    if (qkf_dist_stats_sum(st) || qkf_dist_sum_i64(&r->correct, 1))
        return here();
    snprintf(r->engine, sizeof r->engine, "%s", mode);
    r->g = g;
    r->cost = s->hsp ? &s->cost : NULL;
    r->nb = nbench ? &s->nb : NULL;
    r->has_labels = o->data != NULL;
    return 0;
}

int qkf_sim_run(const qkf_sim_opts *o, qkf_log_fn log, void *ctx, qkf_sim_result *r)
{
    memset(r, 0, sizeof *r);
    r->state = qkf_calloc(1, sizeof *r->state);
    qkf_trace_spec_init(&r->state->ts);
    if (!o->weights || (!o->input == !o->data) || o->batch < 1) {
        qkf_set_error("qkf_sim_run: a checkpoint, --input or --data, and a batch are needed");
        return QKF_APP_RANK0;
    }
    int isq = qkf_qckpt_is_quant(o->weights);
    int rc = (o->hw && !o->hw->arith.is_float) || isq == 1 ? run_int(o, log, ctx, r)
                                                           : run_float(o, log, ctx, r);
    name_rank(rc);
    return rc;
}
