/* Simulation statistics: the node table shared by both engines, the dense engine's tally, the
 * paper's firing-rate estimate, and BatchNorm calibration to target firing rates.
 *
 * Layout: w[node][t] and wh[node][head][t] hold qkf_work counters summed over every sample
 * run since the last reset. A node's name is its module path; a conv node is named after the
 * conv without "_conv" ("stage1.0.tssa.q" is q_conv + q_bn + q_lif). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/base.h"
#include "../kernels/kernels.h"
#include "stats.h"

static const char *kind_names[QKF_NODE_KIND_COUNT] = {"encode", "conv", "qk_sum", "attn_lif",
                                                      "mask",   "ssa",  "add",    "readout"};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == QKF_NODE_KIND_COUNT, "kind names");

const char *qkf_node_kind_name(qkf_node_kind k)
{
    return (unsigned)k < QKF_NODE_KIND_COUNT ? kind_names[k] : "?";
}

static int producer(const qkf_graph *g, int tensor)
{
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].out == tensor)
            return i;
    return -1;
}

/* A LIF op that directly follows the conv producing its input is part of the conv's node. */
static int fused_lif(const qkf_graph *g, int i)
{
    return i > 0 && g->ops[i].kind == QKF_OP_LIF && g->ops[i - 1].kind == QKF_OP_CONV &&
           g->ops[i - 1].out == g->ops[i].in0;
}

int qkf_stats_init(qkf_stats *s, const qkf_graph *g)
{
    memset(s, 0, sizeof *s);
    s->T = g->cfg.T;
    s->node = qkf_calloc((size_t)g->n_ops, sizeof *s->node);
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (fused_lif(g, i))
            continue;
        qkf_node_info *nd = &s->node[s->n_nodes];
        nd->op = i;
        nd->lif_op = nd->lif_index = -1;
        snprintf(nd->name, sizeof nd->name, "%s", op->name);
        const qkf_tensor *x = op->in0 >= 0 ? &g->tensors[op->in0] : NULL;
        const qkf_tensor *y = &g->tensors[op->out];
        int64_t N = x ? (int64_t)x->h * x->w : 1;
        switch (op->kind) {
        case QKF_OP_CONV: {
            if (i + 1 >= g->n_ops || !fused_lif(g, i + 1)) {
                qkf_stats_free(s);
                return qkf_set_error("graph: conv '%s' is not followed by its LIF", op->name);
            }
            nd->kind = x->static_t ? QKF_NODE_ENCODE : QKF_NODE_CONV;
            nd->lif_op = i + 1;
            size_t n = strlen(nd->name);
            if (n > 5 && strcmp(nd->name + n - 5, "_conv") == 0)
                nd->name[n - 5] = 0;
            int ho = (x->h + 2 * op->pad - op->k) / op->stride + 1;
            int wo = (x->w + 2 * op->pad - op->k) / op->stride + 1;
            nd->flops = (int64_t)op->cin * op->k * op->k * op->cout * ho * wo;
            nd->est_per_spike = (double)nd->flops / ((double)op->cin * (double)N);
            if (nd->kind == QKF_NODE_ENCODE)
                nd->macs_once = nd->flops;
            break;
        }
        case QKF_OP_LIF: { /* an attention neuron: its input is a QK count or the SSA output */
            nd->kind = QKF_NODE_ATTN;
            nd->lif_op = i;
            int p = producer(g, op->in0);
            nd->heads = p >= 0 ? g->ops[p].heads : 0;
            if (nd->heads > 0)
                nd->head_dim = y->c / nd->heads > 0 ? y->c / nd->heads : 1;
            break;
        }
        case QKF_OP_QK_SUM:
            nd->kind = QKF_NODE_QK_SUM;
            nd->heads = op->heads, nd->head_dim = x->c / op->heads;
            nd->flops = (int64_t)x->c * N;
            nd->est_per_spike = 1.0;
            break;
        case QKF_OP_QK_MASK: {
            const qkf_tensor *k = &g->tensors[op->in1];
            nd->kind = QKF_NODE_MASK;
            nd->heads = op->heads, nd->head_dim = k->c / op->heads;
            nd->flops = (int64_t)k->c * k->h * k->w;
            break;
        }
        case QKF_OP_SSA:
            nd->kind = QKF_NODE_SSA;
            nd->heads = op->heads, nd->head_dim = x->c / op->heads;
            nd->flops = 2 * (int64_t)op->heads * N * nd->head_dim * nd->head_dim;
            break;
        case QKF_OP_ADD:
            nd->kind = QKF_NODE_ADD;
            nd->flops = (int64_t)y->c * y->h * y->w;
            break;
        case QKF_OP_READOUT:
            nd->kind = QKF_NODE_READOUT;
            nd->flops = (int64_t)x->c * N;
            nd->est_per_spike = 1.0;
            nd->macs_once = (int64_t)x->c * g->cfg.num_classes;
            break;
        }
        if (nd->lif_op >= 0) {
            nd->lif_index = g->ops[nd->lif_op].lif_index;
            nd->neurons = qkf_graph_lif_neurons(g, nd->lif_index);
        }
        if (nd->heads > s->heads_max)
            s->heads_max = nd->heads;
        s->n_nodes++;
    }
    if (s->heads_max < 1)
        s->heads_max = 1;
    s->w = qkf_calloc((size_t)s->n_nodes * s->T, sizeof *s->w);
    s->wh = qkf_calloc((size_t)s->n_nodes * s->heads_max * s->T, sizeof *s->wh);
    s->node_seconds = qkf_calloc((size_t)s->n_nodes, sizeof(double));
    return 0;
}

void qkf_stats_free(qkf_stats *s)
{
    qkf_free(s->node);
    qkf_free(s->w);
    qkf_free(s->wh);
    qkf_free(s->node_seconds);
    memset(s, 0, sizeof *s);
}

void qkf_stats_reset(qkf_stats *s)
{
    memset(s->w, 0, (size_t)s->n_nodes * s->T * sizeof *s->w);
    memset(s->wh, 0, (size_t)s->n_nodes * s->heads_max * s->T * sizeof *s->wh);
    memset(s->node_seconds, 0, (size_t)s->n_nodes * sizeof(double));
    s->samples = s->batches = 0;
    s->seconds = 0.0;
}

static void work_add(qkf_work *a, const qkf_work *b)
{
    a->in_events += b->in_events;
    for (int k = 0; k < 3; k++)
        a->in_spikes[k] += b->in_spikes[k];
    a->out_spikes += b->out_spikes;
    a->acs += b->acs;
    a->macs += b->macs;
}

qkf_work qkf_stats_node_total(const qkf_stats *s, int node, int head)
{
    qkf_work r;
    memset(&r, 0, sizeof r);
    for (int t = 0; t < s->T; t++)
        work_add(&r, head < 0 ? &s->w[(int64_t)node * s->T + t]
                              : &s->wh[((int64_t)node * s->heads_max + head) * s->T + t]);
    return r;
}

qkf_work qkf_stats_step_total(const qkf_stats *s, int t)
{
    qkf_work r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < s->n_nodes; i++)
        for (int u = 0; u < s->T; u++)
            if (t < 0 || u == t)
                work_add(&r, &s->w[(int64_t)i * s->T + u]);
    return r;
}

double qkf_stats_est_sops(const qkf_stats *s, int node, const qkf_work *w)
{
    const qkf_node_info *nd = &s->node[node];
    switch (nd->kind) {
    case QKF_NODE_CONV:
    case QKF_NODE_QK_SUM:
    case QKF_NODE_READOUT:
        return (double)w->in_spikes[0] * nd->est_per_spike;
    case QKF_NODE_SSA:
        return (double)(w->in_spikes[0] + w->in_spikes[1]) * nd->head_dim;
    default:
        return 0.0;
    }
}

double qkf_stats_est_macs(const qkf_stats *s, int node, int64_t samples)
{
    return (double)s->node[node].macs_once * (double)samples;
}

/* ---- the dense engine's tally --------------------------------------------------------------- */

/* Adds the events (non-zero entries) and spikes (sum) of step t of tensor x ([C][F][N]) to w,
 * and per head (channel c belongs to head c / (C / heads)) to wh[head] when heads > 0. */
static void tally_tensor(const qkf_graph *g, const float *x, int tensor, int B, int t, int slot,
                         int out, qkf_work *w, qkf_stats *s, int node, int heads)
{
    const qkf_tensor *tx = &g->tensors[tensor];
    int64_t N = (int64_t)tx->h * tx->w, F = tx->static_t ? B : (int64_t)g->cfg.T * B;
    int per_head = heads > 0 ? (tx->c / heads > 0 ? tx->c / heads : 1) : 1;
    for (int c = 0; c < tx->c; c++) {
        int64_t ev = 0, sp = 0;
        for (int b = 0; b < B; b++) {
            int64_t f = tx->static_t ? b : (int64_t)t * B + b;
            const float *row = x + ((int64_t)c * F + f) * N;
            for (int64_t n = 0; n < N; n++)
                if (row[n] != 0.0f)
                    ev++, sp += (int64_t)row[n];
        }
        qkf_work *wh = heads > 0 ? qkf_stats_head(s, node, c / per_head, t) : NULL;
        if (out) {
            w->out_spikes += sp;
            if (wh)
                wh->out_spikes += sp;
        } else {
            w->in_events += ev, w->in_spikes[slot] += sp;
            if (wh)
                wh->in_events += ev, wh->in_spikes[slot] += sp;
        }
    }
}

/* Tensors that carry spikes or counts (events), as opposed to currents. */
static int is_event_tensor(const qkf_graph *g, int tensor)
{
    if (tensor == g->input)
        return !g->tensors[tensor].static_t;
    int p = producer(g, tensor);
    if (p < 0)
        return 0;
    qkf_op_kind k = g->ops[p].kind;
    return k == QKF_OP_LIF || k == QKF_OP_ADD || k == QKF_OP_QK_MASK;
}

int qkf_stats_add_dense(qkf_stats *s, const qkf_dense *d, int B)
{
    const qkf_graph *g = qkf_dense_graph(d);
    for (int i = 0; i < s->n_nodes; i++) {
        const qkf_node_info *nd = &s->node[i];
        const qkf_op *op = &g->ops[nd->op];
        int ins[3] = {op->in0, op->in1, op->in2};
        for (int t = 0; t < s->T; t++) {
            qkf_work *w = qkf_stats_at(s, i, t);
            if (nd->kind != QKF_NODE_ATTN)
                for (int k = 0; k < 3; k++)
                    if (ins[k] >= 0 && is_event_tensor(g, ins[k])) {
                        const float *x = qkf_dense_tensor(d, ins[k]);
                        if (!x)
                            return qkf_set_error("dense tally needs an engine that keeps tensors");
                        tally_tensor(g, x, ins[k], B, t, k, 0, w, s, i, nd->heads);
                    }
            if (nd->lif_op >= 0) {
                int out = g->ops[nd->lif_op].out;
                const float *x = qkf_dense_tensor(d, out);
                if (!x)
                    return qkf_set_error("dense tally needs an engine that keeps tensors");
                tally_tensor(g, x, out, B, t, 0, 1, w, s, i, nd->heads);
            } else if (nd->kind == QKF_NODE_MASK || nd->kind == QKF_NODE_ADD) {
                tally_tensor(g, qkf_dense_tensor(d, op->out), op->out, B, t, 0, 1, w, s, i,
                             nd->heads);
            }
            /* every multiply-accumulate of the dense computation */
            int64_t macs = nd->kind == QKF_NODE_ENCODE ? (t == 0 ? nd->flops : 0) : nd->flops;
            if (nd->kind == QKF_NODE_READOUT && t == s->T - 1)
                macs += nd->macs_once;
            w->macs += macs * B;
            if (nd->heads > 0)
                for (int h = 0; h < nd->heads; h++)
                    qkf_stats_head(s, i, h, t)->macs += macs * B / nd->heads;
        }
    }
    s->samples += B;
    s->batches++;
    return 0;
}

/* ---- calibration ------------------------------------------------------------------------------
 */

/* A BatchNorm variance whose folded inverse standard deviation, 1 / sqrtf(var + 1e-5f) as
 * qkf_bn_fold computes it, is exactly `invstd` (a power of two). */
static int exact_var(float invstd, float *var)
{
    float target = 1.0f / (invstd * invstd);
    float v = target - 1e-5f;
    for (int k = 0; k < 64; k++) {
        float g = 1.0f, b = 0.0f, m = 0.0f, a, sh;
        qkf_bn_fold(1, &g, &b, &m, &v, &a, &sh);
        if (a == invstd) {
            *var = v;
            return 0;
        }
        v = a > invstd ? nextafterf(v, 2.0f * target) : nextafterf(v, 0.0f);
    }
    return qkf_set_error("calibrate: no float32 variance gives 1/sqrt(var + eps) = %g exactly",
                         (double)invstd);
}

/* Firing rate of a LIF (threshold vth) driven by alpha * x + shift, where x [F][N] holds the
 * raw currents of one channel: F = T*B frames time-major, or B frames repeated (static). */
static double lif_rate(const float *x, int T, int B, int64_t N, int x_static, double alpha,
                       double shift, double vth)
{
    int64_t spikes = 0;
    for (int b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++) {
            double v = 0.0;
            for (int t = 0; t < T; t++) {
                int64_t f = x_static ? b : (int64_t)t * B + b;
                double h = v + (alpha * (double)x[f * N + n] + shift - v) / 2.0;
                int s = h >= vth;
                spikes += s;
                v = s ? 0.0 : h;
            }
        }
    return (double)spikes / ((double)T * B * (double)N);
}

int qkf_stats_calibrate(qkf_model *m, const float *input, int B, double rate, double spread,
                        int pow2, uint64_t seed)
{
    qkf_dense *d = qkf_dense_create(m, B, QKF_DENSE_KEEP_ALL);
    if (!d)
        return -1;
    const qkf_graph *g = qkf_dense_graph(d);
    float *P = m->params.data;
    const qkf_param *pp = m->params.p;
    float *logits = qkf_malloc((size_t)B * g->cfg.num_classes * sizeof(float));
    float var_one, var_pow2[3];
    const float invstds[3] = {0.5f, 1.0f, 2.0f};
    int rc = exact_var(1.0f, &var_one);
    for (int k = 0; k < 3 && !rc; k++)
        rc = exact_var(invstds[k], &var_pow2[k]);
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    int T = g->cfg.T;
    for (int i = 0; i < g->n_ops && !rc; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind != QKF_OP_CONV)
            continue;
        float *gam = P + pp[op->p_bn_w].offset, *bet = P + pp[op->p_bn_b].offset;
        float *mea = P + pp[op->p_bn_mean].offset, *var = P + pp[op->p_bn_var].offset;
        for (int c = 0; c < op->cout; c++) /* identity: the kept tensor is the raw conv output */
            gam[c] = 1.0f, bet[c] = 0.0f, mea[c] = 0.0f, var[c] = var_one;
        if ((rc = qkf_dense_forward(d, input, B, logits, NULL)) != 0)
            break;
        const qkf_tensor *y = &g->tensors[op->out];
        const float *x = qkf_dense_tensor(d, op->out);
        int64_t N = (int64_t)y->h * y->w, F = y->static_t ? B : (int64_t)T * B;
        float vth = g->ops[i + 1].vth;
        for (int c = 0; c < op->cout; c++) {
            const float *xc = x + (int64_t)c * F * N;
            double s1 = 0.0, s2 = 0.0;
            for (int64_t j = 0; j < F * N; j++)
                s1 += (double)xc[j], s2 += (double)xc[j] * (double)xc[j];
            double mean = s1 / (double)(F * N);
            double sd = sqrt(fmax(s2 / (double)(F * N) - mean * mean, 1e-6));
            /* log-normal around rate, its mean (not its median) at rate: a layer fires at
             * about `rate` on average, however wide the spread */
            double target = rate * exp(spread * (double)qkf_rng_normal(&r) - 0.5 * spread * spread);
            target = fmin(fmax(target, 0.002), 0.6);
            double gain = 0.5 + (double)qkf_rng_uniform(&r); /* a random spread of slopes */
            double alpha = gain / sd;
            if (pow2) {
                alpha = ldexp(1.0, (int)lround(log2(alpha)));
                mean = ldexp(round(ldexp(mean, 6)), -6);
            }
            /* The rate is a non-decreasing step function of the shift: bisect to a bracket of
             * width 1/64 only and take a random point inside. Bisecting to convergence would
             * land on a step, i.e. put some neuron exactly on its threshold, where any change
             * of summation order flips it. */
            double lo = -64.0, hi = 64.0;
            while (hi - lo > 1.0 / 64.0) {
                double mid = 0.5 * (lo + hi);
                if (lif_rate(xc, T, B, N, y->static_t, alpha, mid, vth) < target)
                    lo = mid;
                else
                    hi = mid;
            }
            double shift = lo + (0.25 + 0.5 * (double)qkf_rng_uniform(&r)) * (hi - lo);
            if (pow2)
                shift = ldexp(round(ldexp(shift, 6)), -6);
            /* BN: alpha = gamma / sqrt(var + eps), shift = beta - mean * alpha */
            if (pow2) {
                int k = (int)(qkf_rng_u64(&r) % 3);
                var[c] = var_pow2[k];
                gam[c] = (float)(alpha / (double)invstds[k]);
            } else {
                var[c] = (float)fmax(sd * sd - 1e-5, 1e-4);
                gam[c] = (float)(alpha * sqrt((double)var[c] + 1e-5));
            }
            mea[c] = (float)mean;
            bet[c] = (float)(shift + mean * alpha);
            if (pow2) { /* the folded values must be exactly what we meant */
                float a, sh;
                qkf_bn_fold(1, &gam[c], &bet[c], &mea[c], &var[c], &a, &sh);
                if ((double)a != alpha || (double)sh != shift) {
                    rc = qkf_set_error("calibrate: %s channel %d folds to %g, %g instead of the "
                                       "powers of two %g, %g",
                                       op->bn_name, c, (double)a, (double)sh, alpha, shift);
                    break;
                }
            }
        }
    }
    qkf_free(logits);
    qkf_dense_free(d);
    return rc;
}
