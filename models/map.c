/* Mapping QKFormer onto a chip's cores: the units of the model (models/map.h), the tiling of each
 * unit into blocks that fit a core, the placement of cores on the mesh, the targets of a spike
 * (shared with the cost model, sim/cost.c), and the M.json / table output of qkf map.
 *
 * How a chip stores a unit's synapses (docs/hardware.md, "Mapping and costs"): a chip with one
 * layer per core (Speck) keeps a conv's kernel once per core, c * 2^(ceil log2 (k*k) + ceil log2
 * f) entries, and its neurons in f * 2^(ceil log2 h + ceil log2 w) entries; any other chip
 * keeps every synapse of every neuron it holds (Loihi, TrueNorth: no weight sharing), one weight
 * of ceil(weight_bits / 8) bytes (4 for a float machine). Input axons of a block: the distinct
 * source neurons whose spikes reach it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/base.h"
#include "map.h"

static const char *unit_names[QKF_UNIT_KIND_COUNT] = {"encode", "conv",    "qk_attn", "mask",
                                                      "kv",     "ssa_lif", "readout"};
_Static_assert(sizeof unit_names / sizeof unit_names[0] == QKF_UNIT_KIND_COUNT, "unit names");

const char *qkf_unit_kind_name(qkf_unit_kind k)
{
    return (unsigned)k < QKF_UNIT_KIND_COUNT ? unit_names[k] : "?";
}

/* ---- units from the graph ------------------------------------------------------------------- */

static int producer(const qkf_graph *g, int tensor)
{
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].out == tensor)
            return i;
    return -1;
}

static int consumer_lif(const qkf_graph *g, int tensor)
{
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].kind == QKF_OP_LIF && g->ops[i].in0 == tensor)
            return i;
    return -1;
}

/* Stats node of each op (qkf_stats_init: ops in order, a conv's LIF fused into the conv). */
static void stat_nodes(const qkf_graph *g, int *node_of)
{
    int n = 0;
    for (int i = 0; i < g->n_ops; i++) {
        int fused = i > 0 && g->ops[i].kind == QKF_OP_LIF && g->ops[i - 1].kind == QKF_OP_CONV &&
                    g->ops[i - 1].out == g->ops[i].in0;
        node_of[i] = fused ? node_of[i - 1] : n++;
    }
}

/* The source units of tensor t: -1 for the model input; sums expanded into their summands. */
static int sources(const qkf_graph *g, const int *unit_of_op, int t, qkf_map_sources *s)
{
    if (t == g->input) {
        s->src[s->n++] = -1;
        return 0;
    }
    int p = producer(g, t);
    if (p < 0)
        return qkf_set_error("graph: tensor %d has no producer", t);
    if (g->ops[p].kind == QKF_OP_ADD)
        return sources(g, unit_of_op, g->ops[p].in0, s) || sources(g, unit_of_op, g->ops[p].in1, s);
    if (unit_of_op[p] < 0)
        return qkf_set_error("graph: '%s' feeds a unit but is none", g->ops[p].name);
    if (s->n == (int)(sizeof s->src / sizeof s->src[0]))
        return qkf_set_error("graph: a sum of more than 32 spike streams");
    for (int i = 0; i < s->n; i++)
        if (s->src[i] == unit_of_op[p])
            return 0;
    s->src[s->n++] = unit_of_op[p];
    return 0;
}

static int build_units(qkf_map *m)
{
    const qkf_graph *g = m->g;
    int *node_of = qkf_malloc((size_t)g->n_ops * sizeof(int));
    int *unit_of_op = qkf_malloc((size_t)g->n_ops * sizeof(int)); /* op whose output is spikes */
    stat_nodes(g, node_of);
    for (int i = 0; i < g->n_ops; i++)
        unit_of_op[i] = -1;
    m->unit = qkf_calloc((size_t)2 * g->n_ops + 1, sizeof *m->unit);
    int rc = 0;
    for (int i = 0; i < g->n_ops && !rc; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = op->in0 >= 0 ? &g->tensors[op->in0] : NULL;
        qkf_map_unit *u = &m->unit[m->n_units];
        u->lif_index = -1, u->spike_node = -1, u->op = i, u->stat_node = node_of[i];
        if (op->kind == QKF_OP_CONV) {
            const qkf_op *lif = &g->ops[i + 1];
            const qkf_tensor *y = &g->tensors[lif->out];
            u->kind = x->static_t ? QKF_UNIT_ENCODE : QKF_UNIT_CONV;
            snprintf(u->name, sizeof u->name, "%s", lif->name);
            u->lif_index = lif->lif_index;
            u->C = y->c, u->gh = y->h, u->gw = y->w;
            u->cin = op->cin, u->k = op->k, u->stride = op->stride, u->pad = op->pad;
            u->pool = op->pool, u->ih = x->h, u->iw = x->w;
            u->ho = (x->h + 2 * op->pad - op->k) / op->stride + 1;
            u->wo = (x->w + 2 * op->pad - op->k) / op->stride + 1;
            u->spike_node = node_of[i];
            u->n_in = 1;
            rc = sources(g, unit_of_op, op->in0, &u->in[0]);
            unit_of_op[i + 1] = m->n_units;
            i++; /* the LIF is part of the unit */
        } else if (op->kind == QKF_OP_QK_SUM) {
            int l = consumer_lif(g, op->out);
            if (l < 0) {
                rc = qkf_set_error("graph: '%s' feeds no attention neuron", op->name);
                break;
            }
            const qkf_tensor *y = &g->tensors[g->ops[l].out];
            u->kind = QKF_UNIT_QK_ATTN;
            snprintf(u->name, sizeof u->name, "%s", g->ops[l].name);
            u->lif_index = g->ops[l].lif_index;
            u->C = y->c, u->gh = y->h, u->gw = y->w;
            u->heads = op->heads, u->d = x->c / op->heads;
            u->ih = x->h, u->iw = x->w, u->cin = x->c;
            u->spike_node = node_of[l];
            u->n_in = 1;
            rc = sources(g, unit_of_op, op->in0, &u->in[0]);
            unit_of_op[l] = m->n_units;
        } else if (op->kind == QKF_OP_QK_MASK) {
            const qkf_tensor *k = &g->tensors[op->in1];
            u->kind = QKF_UNIT_MASK;
            snprintf(u->name, sizeof u->name, "%s", op->name);
            u->C = k->c, u->gh = k->h, u->gw = k->w;
            u->heads = op->heads, u->d = k->c / op->heads;
            u->ih = k->h, u->iw = k->w, u->cin = k->c;
            u->spike_node = node_of[i];
            u->n_in = 2;
            rc = sources(g, unit_of_op, op->in0, &u->in[0]) ||
                 sources(g, unit_of_op, op->in1, &u->in[1]);
            unit_of_op[i] = m->n_units;
        } else if (op->kind == QKF_OP_SSA) {
            int l = consumer_lif(g, op->out);
            if (l < 0) {
                rc = qkf_set_error("graph: '%s' feeds no attention LIF", op->name);
                break;
            }
            u->kind = QKF_UNIT_KV;
            snprintf(u->name, sizeof u->name, "%s", op->name);
            size_t n = strlen(u->name);
            if (n > 4 && strcmp(u->name + n - 4, ".qkv") == 0)
                snprintf(u->name + n - 4, sizeof u->name - (n - 4), ".kv");
            u->heads = op->heads, u->d = x->c / op->heads;
            u->C = x->c, u->gh = 1, u->gw = u->d;
            u->ih = x->h, u->iw = x->w, u->cin = x->c;
            u->n_in = 2;
            rc = sources(g, unit_of_op, op->in1, &u->in[0]) ||
                 sources(g, unit_of_op, op->in2, &u->in[1]);
            u->N = u->gh * u->gw;
            u->neurons = (int64_t)u->C * u->N;
            m->neurons += u->neurons;
            int kv = m->n_units++;
            qkf_map_unit *a = &m->unit[m->n_units];
            const qkf_tensor *y = &g->tensors[g->ops[l].out];
            a->kind = QKF_UNIT_SSA_LIF;
            snprintf(a->name, sizeof a->name, "%s", g->ops[l].name);
            a->op = i, a->stat_node = node_of[i], a->spike_node = node_of[l];
            a->lif_index = g->ops[l].lif_index;
            a->C = y->c, a->gh = y->h, a->gw = y->w;
            a->heads = op->heads, a->d = u->d;
            a->ih = x->h, a->iw = x->w, a->cin = x->c;
            a->n_in = 2;
            rc = rc || sources(g, unit_of_op, op->in0, &a->in[0]);
            a->in[1].n = 1, a->in[1].src[0] = kv; /* the table */
            unit_of_op[l] = m->n_units;
            u = a;
        } else if (op->kind == QKF_OP_READOUT) {
            u->kind = QKF_UNIT_READOUT;
            snprintf(u->name, sizeof u->name, "head");
            u->C = x->c, u->gh = 1, u->gw = 1;
            u->ih = x->h, u->iw = x->w, u->cin = x->c;
            u->n_in = 1;
            rc = sources(g, unit_of_op, op->in0, &u->in[0]);
        } else {
            continue; /* LIF (attention ones are inside their unit), residual sums */
        }
        u->N = u->gh * u->gw;
        u->neurons = (int64_t)u->C * u->N;
        m->neurons += u->neurons;
        m->n_units++;
    }
    qkf_free(node_of);
    qkf_free(unit_of_op);
    return rc;
}

/* ---- what a block needs ------------------------------------------------------------------- */

enum { LIM_NONE = 0, LIM_NEURONS, LIM_AXONS, LIM_MEMORY, LIM_FANOUT, LIM_DESTS };
static const char *lim_name[] = {"whole layer",
                                 "neurons per core",
                                 "fan-in (axons per core)",
                                 "synaptic memory per core",
                                 "fan-out (axons out per core)",
                                 "destinations (cores a core sends to)"};

static int ceil_log2(int64_t v)
{
    int b = 0;
    while (((int64_t)1 << b) < v)
        b++;
    return b;
}

static int64_t weight_bytes(const qkf_hw_profile *hw)
{
    if (hw->arith.is_float)
        return 4;
    int b = hw->arith.weight_bits > 0 ? hw->arith.weight_bits : 8;
    return (b + 7) / 8;
}

/* Home token of pre-pool output position (oy, ox): the pooled neuron at (oy/2, ox/2), whose
 * window holds it (docs: pooled convs). */
static inline int home(const qkf_map_unit *u, int oy, int ox)
{
    return u->pool ? (oy / 2) * u->gw + ox / 2 : oy * u->gw + ox;
}

int qkf_map_conv_taps(const qkf_map_unit *u, int p, int *hm, int *kk)
{
    QKF_ASSERT(u->k * u->k <= QKF_MAP_TAPS);
    int iy = p / u->iw, ix = p % u->iw, n = 0;
    for (int ky = 0; ky < u->k; ky++) {
        int ty = iy + u->pad - ky;
        if (ty < 0 || ty % u->stride || ty / u->stride >= u->ho)
            continue;
        for (int kx = 0; kx < u->k; kx++) {
            int tx = ix + u->pad - kx;
            if (tx < 0 || tx % u->stride || tx / u->stride >= u->wo)
                continue;
            hm[n] = home(u, ty / u->stride, tx / u->stride);
            if (kk)
                kk[n] = ky * u->k + kx;
            n++;
        }
    }
    return n;
}

/* Pre-pool positions homed at token q of a conv unit: up to 4. */
static int homes(const qkf_map_unit *u, int q, int *oy, int *ox)
{
    int py = q / u->gw, px = q % u->gw, n = 0;
    if (!u->pool) {
        oy[0] = py, ox[0] = px;
        return 1;
    }
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int y = 2 * py + dy, x = 2 * px + dx;
            if (y < u->ho && x < u->wo)
                oy[n] = y, ox[n] = x, n++;
        }
    return n;
}

/* Synapses per channel of conv token q (valid taps of its homes x cin), and, with stamp, marks
 * its input positions (returns the newly marked ones in *fresh). */
static int64_t conv_token(const qkf_map_unit *u, int q, int *stamp, int mark, int64_t *fresh)
{
    int oy[4], ox[4], nh = homes(u, q, oy, ox);
    int64_t syn = 0;
    for (int h = 0; h < nh; h++)
        for (int ky = 0; ky < u->k; ky++)
            for (int kx = 0; kx < u->k; kx++) {
                int iy = oy[h] * u->stride - u->pad + ky, ix = ox[h] * u->stride - u->pad + kx;
                if (iy < 0 || iy >= u->ih || ix < 0 || ix >= u->iw)
                    continue;
                syn += u->cin;
                if (stamp && stamp[iy * u->iw + ix] != mark)
                    stamp[iy * u->iw + ix] = mark, (*fresh)++;
            }
    return syn;
}

static int heads_span(int c0, int c1, int d)
{
    return c1 > c0 ? (c1 - 1) / d - c0 / d + 1 : 0;
}

typedef struct {
    int64_t neurons, axons, bytes;
} need;

/* What block (tokens [q0, q1), channels [c0, c1)) of unit u needs. conv_axons/conv_syn: for
 * conv units, the run's input positions and synapses per channel (precomputed per run). */
static need block_need(const qkf_map *m, const qkf_map_unit *u, int q0, int q1, int c0, int c1,
                       int64_t conv_pos, int64_t conv_syn)
{
    const qkf_hw_profile *hw = &m->hw;
    int64_t wb = weight_bytes(hw), tq = q1 - q0, cc = c1 - c0;
    int hs = u->d > 0 ? heads_span(c0, c1, u->d) : 0;
    int64_t src_n = (int64_t)u->ih * u->iw; /* tokens of the input tensor */
    need r = {tq * cc, 0, 0};
    switch (u->kind) {
    case QKF_UNIT_ENCODE:
    case QKF_UNIT_CONV:
        r.axons = conv_pos * u->cin;
        r.bytes = cc * conv_syn * wb;
        break;
    case QKF_UNIT_QK_ATTN:
        if (u->N == 1) /* QKCA: channel c counts its q spikes over every token */
            r.axons = cc * src_n;
        else
            r.axons = cc * tq * u->d;
        r.bytes = r.axons * wb;
        break;
    case QKF_UNIT_MASK: /* k (c, token), and the attention neuron (QKTA: per head and token;
                           QKCA: per channel) */
        r.axons = cc * tq + (m->unit[u->in[0].src[0]].N == 1 ? cc : hs * tq);
        r.bytes = 2 * cc * tq * wb;
        break;
    case QKF_UNIT_KV: /* rows c = head*d + i fed by k channel c, columns j by v of the head */
        r.axons = cc * src_n + hs * tq * src_n;
        r.bytes = cc * tq * wb;
        break;
    case QKF_UNIT_SSA_LIF:
        r.axons = hs * tq * u->d;
        r.bytes = hs * (int64_t)u->d * u->d * wb; /* the heads' kv tables as weights */
        break;
    case QKF_UNIT_READOUT:
        r.axons = cc * src_n;
        r.bytes = cc * (src_n + m->g->cfg.num_classes) * wb;
        break;
    default:
        break;
    }
    if (hw->max_layers_per_core == 1) { /* Speck: power-of-two memories per layer */
        if (u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE)
            r.bytes = (int64_t)u->cin << (ceil_log2((int64_t)u->k * u->k) + ceil_log2(u->C));
        int fy = u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE ? u->ho : u->gh;
        int fx = u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE ? u->wo : u->gw;
        r.neurons = (int64_t)cc << (ceil_log2(fy) + ceil_log2(fx));
    }
    return r;
}

/* Which limit a need breaks (LIM_NONE if none); *over the amount and *have the limit. */
static int broken(const qkf_hw_profile *hw, need n, int64_t *needv, int64_t *have)
{
    if (hw->max_neurons > 0 && n.neurons > hw->max_neurons) {
        *needv = n.neurons, *have = hw->max_neurons;
        return LIM_NEURONS;
    }
    if (hw->max_fan_in > 0 && n.axons > hw->max_fan_in) {
        *needv = n.axons, *have = hw->max_fan_in;
        return LIM_AXONS;
    }
    if (hw->synapse_bytes > 0 && n.bytes > hw->synapse_bytes) {
        *needv = n.bytes, *have = hw->synapse_bytes;
        return LIM_MEMORY;
    }
    return LIM_NONE;
}

/* Per-run input positions and synapses per channel of a conv unit for runs of tq tokens. */
static void conv_runs(const qkf_map_unit *u, int tq, int *stamp, int64_t *pos, int64_t *syn)
{
    int runs = (u->N + tq - 1) / tq;
    for (int r = 0; r < runs; r++) {
        int mark = r + 1;
        int64_t fresh = 0, s = 0;
        for (int q = r * tq; q < (r + 1) * tq && q < u->N; q++)
            s += conv_token(u, q, stamp, mark, &fresh);
        pos[r] = fresh, syn[r] = s;
    }
}

/* Checks tiling (tq, cc) of unit u: the worst block's broken limit (LIM_NONE: fits); fills the
 * largest block's axons and bytes. */
static int check_tiling(const qkf_map *m, const qkf_map_unit *u, int tq, int cc, const int64_t *pos,
                        const int64_t *syn, int64_t *needv, int64_t *have, need *worst)
{
    int runs = (u->N + tq - 1) / tq, groups = (u->C + cc - 1) / cc;
    need w = {0, 0, 0};
    int conv = u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE;
    for (int r = 0; r < runs; r++) {
        int q0 = r * tq, q1 = q0 + tq < u->N ? q0 + tq : u->N;
        /* channel groups differ only in where they start (heads spanned) and the last one's
         * width: every group is checked unless the unit has no heads */
        int gmax = u->d > 0 ? groups : 1;
        for (int g = 0; g < gmax; g++) {
            int c0 = g * cc, c1 = c0 + cc < u->C ? c0 + cc : u->C;
            need n = block_need(m, u, q0, q1, c0, c1, conv ? pos[r] : 0, conv ? syn[r] : 0);
            w.neurons = n.neurons > w.neurons ? n.neurons : w.neurons;
            w.axons = n.axons > w.axons ? n.axons : w.axons;
            w.bytes = n.bytes > w.bytes ? n.bytes : w.bytes;
        }
    }
    *worst = w;
    return broken(&m->hw, w, needv, have);
}

static int tile_unit(qkf_map *m, qkf_map_unit *u)
{
    const qkf_hw_profile *hw = &m->hw;
    int conv = u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE;
    int *stamp = conv ? qkf_calloc((size_t)u->ih * u->iw, sizeof(int)) : NULL;
    int64_t *pos = qkf_malloc((size_t)(u->N + 1) * sizeof(int64_t));
    int64_t *syn = qkf_malloc((size_t)(u->N + 1) * sizeof(int64_t));
    /* candidate token runs: 1..gw tokens of a row, then whole rows; one layer per core: all */
    int ncand = 0, *cand = qkf_malloc((size_t)(u->gw + u->gh + 1) * sizeof(int));
    if (hw->max_layers_per_core == 1)
        cand[ncand++] = u->N;
    else {
        for (int t = 1; t <= u->gw; t++)
            cand[ncand++] = t;
        for (int r = 2; r <= u->gh; r++)
            cand[ncand++] = r * u->gw;
    }
    int best_tq = 0, best_cc = 0;
    int64_t best_cores = 0, needv = 0, have = 0;
    int first_lim = LIM_NONE;
    int64_t first_need = 0, first_have = 0;
    need wn;
    for (int ci = ncand - 1; ci >= 0; ci--) { /* larger runs first: ties keep the larger */
        int tq = cand[ci];
        int cc = hw->max_layers_per_core == 1 ? u->C : u->C;
        if (hw->max_neurons > 0 && hw->max_layers_per_core != 1) {
            int64_t lim = hw->max_neurons / tq;
            cc = lim < cc ? (int)lim : cc;
        }
        if (u->cap > 0) { /* a fan-out cap from an earlier round (qkf_map_build) */
            int64_t lim = u->cap / tq;
            cc = lim < cc ? (int)lim : cc;
        }
        /* the run's inputs, unless no block of tq tokens can hold a channel (then the run is
         * skipped below and nothing reads them) */
        if (conv && (cc >= 1 || tq == 1 || hw->max_layers_per_core == 1)) {
            memset(stamp, 0, (size_t)u->ih * u->iw * sizeof(int));
            conv_runs(u, tq, stamp, pos, syn);
        }
        int lim = LIM_NONE;
        for (; cc >= 1; cc--) {
            lim = check_tiling(m, u, tq, cc, pos, syn, &needv, &have, &wn);
            if (lim == LIM_NONE || hw->max_layers_per_core == 1)
                break;
        }
        if (cc < 1 || lim != LIM_NONE) {
            if (tq == 1 || hw->max_layers_per_core == 1) { /* the smallest block fails */
                first_lim = lim, first_need = needv, first_have = have;
                if (cc < 1) /* one neuron: recheck to name the limit */
                    first_lim = check_tiling(m, u, tq, 1, pos, syn, &first_need, &first_have, &wn);
            }
            continue;
        }
        int64_t cores = (int64_t)((u->N + tq - 1) / tq) * ((u->C + cc - 1) / cc);
        if (!best_tq || cores < best_cores) {
            best_tq = tq, best_cc = cc, best_cores = cores;
            u->max_axons = wn.axons, u->max_syn_bytes = wn.bytes;
        }
    }
    int rc = 0;
    if (!best_tq) {
        if (first_lim == LIM_NONE)
            first_lim = LIM_NEURONS, first_need = u->neurons, first_have = hw->max_neurons;
        rc = qkf_set_error("layer %s: %s: %s %lld, a core has %lld (%lld over)", u->name,
                           lim_name[first_lim],
                           hw->max_layers_per_core == 1 ? "the layer (one core) needs"
                                                        : "one neuron needs",
                           (long long)first_need, (long long)first_have,
                           (long long)(first_need - first_have));
    } else {
        u->tq = best_tq, u->cc = best_cc;
        u->runs = (u->N + best_tq - 1) / best_tq, u->groups = (u->C + best_cc - 1) / best_cc;
        u->n_cores = u->runs * u->groups;
        /* the binding limit: what breaks when the block grows by a channel or to the next run */
        if (best_tq >= u->N && best_cc >= u->C)
            u->limit = lim_name[LIM_NONE];
        else {
            int l = LIM_NEURONS;
            if (best_cc < u->C) {
                if (conv) {
                    memset(stamp, 0, (size_t)u->ih * u->iw * sizeof(int));
                    conv_runs(u, best_tq, stamp, pos, syn);
                }
                l = check_tiling(m, u, best_tq, best_cc + 1, pos, syn, &needv, &have, &wn);
            } else {
                int next = 0;
                for (int ci = 0; ci < ncand; ci++)
                    if (cand[ci] > best_tq) {
                        next = cand[ci];
                        break;
                    }
                if (next) {
                    if (conv) {
                        memset(stamp, 0, (size_t)u->ih * u->iw * sizeof(int));
                        conv_runs(u, next, stamp, pos, syn);
                    }
                    l = check_tiling(m, u, next, best_cc, pos, syn, &needv, &have, &wn);
                }
            }
            if (u->cap > 0 && ((int64_t)best_tq * (best_cc + 1) > u->cap || best_cc >= u->C))
                l = LIM_FANOUT; /* the cap stops it first */
            u->limit = lim_name[l == LIM_NONE ? LIM_NEURONS : l];
        }
    }
    qkf_free(stamp);
    qkf_free(pos);
    qkf_free(syn);
    qkf_free(cand);
    return rc;
}

/* ---- placement ------------------------------------------------------------------------------ */

/* ---- one layer per core: which of the chip's cores holds which layer ------------------------ */

/* Chip core k's entry in hw->group (cores of a tile: the entries' counts in file order). */
static const qkf_hw_core_group *core_group(const qkf_hw_profile *hw, int k, int *first, int *last)
{
    int cpt = hw->cores_per_tile > 0 ? hw->cores_per_tile : 1, s = k % cpt, at = 0;
    for (int g = 0; g < hw->n_groups; g++) {
        if (s < at + hw->group[g].count) {
            *first = k - s + at, *last = k - s + at + hw->group[g].count - 1;
            return &hw->group[g];
        }
        at += hw->group[g].count;
    }
    *first = *last = k;
    return NULL; /* no entries (a profile built in code): the profile's scalar limits */
}

/* The first limit of core entry gr (or the profile's) that need n breaks (LIM_NONE: fits). */
static int core_broken(const qkf_hw_profile *hw, const qkf_hw_core_group *gr, need n,
                       int64_t *nv, int64_t *hv)
{
    int64_t lim[3] = {gr ? gr->max_neurons : hw->max_neurons,
                      gr ? gr->max_fan_in : hw->max_fan_in,
                      gr ? gr->synapse_bytes : hw->synapse_bytes};
    int64_t v[3] = {n.neurons, n.axons, n.bytes};
    int which[3] = {LIM_NEURONS, LIM_AXONS, LIM_MEMORY};
    for (int i = 0; i < 3; i++)
        if (lim[i] > 0 && v[i] > lim[i]) {
            *nv = v[i], *hv = lim[i];
            return which[i];
        }
    return LIM_NONE;
}

/* Kuhn's augmenting path for layer p over cores in ascending order (deterministic): a free core
 * that holds it first, else one whose layer can move. */
static int match_try(int p, const uint8_t *fit, int K, int *owner, uint8_t *vis)
{
    for (int k = 0; k < K; k++)
        if (fit[(int64_t)p * K + k] && !vis[k] && owner[k] < 0) {
            vis[k] = 1;
            owner[k] = p;
            return 1;
        }
    for (int k = 0; k < K; k++)
        if (fit[(int64_t)p * K + k] && !vis[k]) {
            vis[k] = 1;
            if (owner[k] < 0 || match_try(owner[k], fit, K, owner, vis)) {
                owner[k] = p;
                return 1;
            }
        }
    return 0;
}

/* Assigns each of the L layers (physical cores 0..L-1, need[p] as the chip stores it) a core
 * of the chip whose own memories hold it: a bipartite matching (as sinabs assigns DYNAP-CNN
 * layers to cores). at[p]: the chip core of layer p. */
static int match_cores(qkf_map *m, const need *nd, int L, int K, int *at)
{
    const qkf_hw_profile *hw = &m->hw;
    uint8_t *fit = qkf_calloc((size_t)L * K + 1, 1), *vis = qkf_calloc((size_t)K + 1, 1);
    int *owner = qkf_malloc((size_t)(K + 1) * sizeof(int)), rc = 0;
    const char **name = qkf_calloc((size_t)L + 1, sizeof(char *));
    for (int i = 0; i < m->n_cores; i++)
        name[m->core[i].phys] = m->unit[m->core[i].unit].name;
    for (int k = 0; k < K; k++)
        owner[k] = -1;
    for (int p = 0; p < L && !rc; p++) {
        int any = 0;
        for (int k = 0; k < K; k++) {
            int f, l;
            int64_t nv, hv;
            fit[(int64_t)p * K + k] = core_broken(hw, core_group(hw, k, &f, &l), nd[p], &nv, &hv) ==
                                      LIM_NONE;
            any |= fit[(int64_t)p * K + k];
        }
        char msg[512];
        int len = 0;
        if (!any) { /* each kind of core, the first limit it breaks */
            for (int k = 0; k < K && len < (int)sizeof msg - 1;) {
                int f, l;
                int64_t nv = 0, hv = 0;
                int lim = core_broken(hw, core_group(hw, k, &f, &l), nd[p], &nv, &hv);
                char rng[32];
                if (l > f)
                    snprintf(rng, sizeof rng, "cores %d-%d", f, l);
                else
                    snprintf(rng, sizeof rng, "core %d", f);
                len += snprintf(msg + len, sizeof msg - (size_t)len,
                                "%s%s: %s needs %lld, has %lld (%lld over)", len ? "; " : "", rng,
                                lim_name[lim], (long long)nv, (long long)hv, (long long)(nv - hv));
                k = l + 1;
            }
            rc = qkf_set_error("layer %s: fits no core of the chip: %s", name[p], msg);
            break;
        }
        memset(vis, 0, (size_t)K);
        if (match_try(p, fit, K, owner, vis))
            continue;
        /* the cores it could take are held by layers that fit no other free core */
        int nv = 0;
        len = 0;
        for (int k = 0; k < K; k++)
            if (vis[k]) {
                nv++;
                len += snprintf(msg + len, sizeof msg - (size_t)len, "%s%d (%s)", len ? ", " : "",
                                k, name[owner[k]] ? name[owner[k]] : "?");
                if (len >= (int)sizeof msg - 1)
                    break;
            }
        rc = qkf_set_error("layer %s: cores: it fits only cores that other layers need, by "
                           "their memories: cores %s; %d layers for %d cores (1 over)",
                           name[p], msg, nv + 1, nv);
    }
    for (int k = 0; k < K && !rc; k++)
        if (owner[k] >= 0)
            at[owner[k]] = k;
    qkf_free(fit), qkf_free(vis), qkf_free(owner), qkf_free(name);
    return rc;
}

/* Blocks onto physical cores (next fit, in unit order: a core takes the next block while the
 * sum of their neurons, input axons and synaptic bytes stays within the core's limits and, on a
 * chip with one layer per core, never a second layer), then cores onto the mesh. */
static int place(qkf_map *m)
{
    const qkf_hw_profile *hw = &m->hw;
    int W = hw->mesh_width > 0 ? hw->mesh_width : 1, H = hw->mesh_height > 0 ? hw->mesh_height : 1;
    int cpt = hw->cores_per_tile > 0 ? hw->cores_per_tile : 1;
    int64_t per_chip = (int64_t)W * H * cpt, total = 0;
    for (int i = 0; i < m->n_units; i++) {
        m->unit[i].first_core = (int)total;
        total += m->unit[i].n_cores;
        if (total > (1 << 30))
            return qkf_set_error("layer %s: cores: more than 2^30 cores", m->unit[i].name);
    }
    m->n_cores = (int)total;
    m->core = qkf_calloc((size_t)(total > 0 ? total : 1), sizeof *m->core);
    int phys = -1, layers = 0, prev_unit = -1, capped = 0;
    need used = {0, 0, 0};
    /* one layer per core: each layer's needs, for the chip's cores' own limits */
    need *lneed = hw->max_layers_per_core == 1 ? qkf_calloc((size_t)total + 1, sizeof(need)) : NULL;
    for (int i = 0; i < m->n_units; i++) {
        qkf_map_unit *u = &m->unit[i];
        int conv = u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE;
        int *stamp = conv ? qkf_calloc((size_t)u->ih * u->iw, sizeof(int)) : NULL;
        int64_t *pos = qkf_calloc((size_t)u->runs + 1, sizeof(int64_t));
        int64_t *syn = qkf_calloc((size_t)u->runs + 1, sizeof(int64_t));
        if (conv)
            conv_runs(u, u->tq, stamp, pos, syn);
        int first_phys = -1;
        for (int r = 0; r < u->runs; r++)
            for (int gi = 0; gi < u->groups; gi++) {
                int id = u->first_core + r * u->groups + gi;
                qkf_map_core *c = &m->core[id];
                int q0 = r * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
                int c0 = gi * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
                c->unit = i, c->run = r, c->group = gi;
                c->neurons = (int64_t)(q1 - q0) * (c1 - c0);
                need n = block_need(m, u, q0, q1, c0, c1, pos[r], syn[r]);
                c->axons = n.axons, c->bytes = n.bytes;
                need sum = {used.neurons + n.neurons, used.axons + n.axons, used.bytes + n.bytes};
                int64_t nv, hv;
                int new_layer = i != prev_unit;
                /* a block of a fan-out-capped unit keeps its core to itself */
                int fits = phys >= 0 && !u->cap && !capped &&
                           broken(hw, sum, &nv, &hv) == LIM_NONE &&
                           !(new_layer && hw->max_layers_per_core > 0 &&
                             layers + 1 > hw->max_layers_per_core);
                if (!fits) {
                    phys++, layers = 0, used = n, prev_unit = -1;
                    new_layer = 1;
                    capped = u->cap > 0;
                } else
                    used = sum;
                if (new_layer)
                    layers++;
                prev_unit = i;
                c->phys = phys;
                if (lneed) /* one block per layer there (tq = N, cc = C) */
                    lneed[phys] = n;
                if (first_phys < 0)
                    first_phys = phys;
            }
        u->n_phys = phys - first_phys + 1;
        qkf_free(stamp);
        qkf_free(pos);
        qkf_free(syn);
    }
    m->n_phys = phys + 1;
    /* one layer per core (Speck): a single chip, so the model must fit it */
    if (hw->max_layers_per_core == 1 && m->n_phys > per_chip)
        for (int i = 0; i < m->n_cores; i++)
            if (m->core[i].phys >= per_chip) {
                qkf_free(lneed);
                return qkf_set_error("layer %s: cores: the model needs %d cores, the chip has "
                                     "%lld (%lld over)",
                                     m->unit[m->core[i].unit].name, m->n_phys,
                                     (long long)per_chip, (long long)(m->n_phys - per_chip));
            }
    /* ... and each layer on a core whose own memories hold it (Speck's differ: 16-64 K) */
    int *at = NULL;
    if (lneed) {
        at = qkf_malloc((size_t)(m->n_phys + 1) * sizeof(int));
        int mrc = match_cores(m, lneed, m->n_phys, (int)per_chip, at);
        qkf_free(lneed);
        if (mrc) {
            qkf_free(at);
            return -1;
        }
    }
    for (int id = 0; id < m->n_cores; id++) {
        qkf_map_core *c = &m->core[id];
        int pos = at ? at[c->phys] : c->phys; /* the chip's core it sits on */
        int tile = pos / cpt;
        c->slot = pos % cpt;
        c->chip = (int)(tile / ((int64_t)W * H));
        c->tile = (int)(tile % ((int64_t)W * H));
        int y = c->tile / W, x = c->tile % W;
        if (y % 2) /* serpentine: consecutive tiles are neighbours */
            x = W - 1 - x;
        c->x = c->chip * W + x, c->y = y;
    }
    qkf_free(at);
    m->tiles = m->n_phys > 0 ? (m->n_phys + cpt - 1) / cpt : 0;
    m->chips = (int)((m->tiles + (int64_t)W * H - 1) / ((int64_t)W * H));
    m->sync_tiles = m->tiles;
    m->sync_s = 0;
    for (int i = 0; i < hw->n_sync && i < 16; i++) /* the largest key <= tiles in use */
        if (i == 0 || hw->sync_tiles[i] <= m->tiles)
            m->sync_s = hw->sync_s[i];
    return 0;
}

/* ---- targets -------------------------------------------------------------------------------- */

int qkf_map_feeds(const qkf_map *m, int s, int v, int slot)
{
    const qkf_map_sources *in = &m->unit[v].in[slot];
    for (int i = 0; i < in->n; i++)
        if (in->src[i] == s)
            return 1;
    return 0;
}

/* Adds look-ups to core id in the list (distinct cores). */
static inline int add_core(int *cores, int64_t *lk, int n, int id, int64_t l)
{
    for (int i = n - 1; i >= 0; i--)
        if (cores[i] == id) {
            lk[i] += l;
            return n;
        }
    cores[n] = id, lk[n] = l;
    return n + 1;
}

/* Channel range [c0, c1) of token q in unit u: the cores of its run and the overlapping groups. */
static int add_range(const qkf_map_unit *u, int q, int c0, int c1, int64_t per, int *cores,
                     int64_t *lk, int n)
{
    int r = q / u->tq;
    for (int g = c0 / u->cc; g <= (c1 - 1) / u->cc && g < u->groups; g++) {
        int a = g * u->cc > c0 ? g * u->cc : c0, b = (g + 1) * u->cc < c1 ? (g + 1) * u->cc : c1;
        n = add_core(cores, lk, n, u->first_core + r * u->groups + g, (int64_t)(b - a) * per);
    }
    return n;
}

int qkf_map_targets(const qkf_map *m, int v, int slot, int64_t x, int *cores, int64_t *lk,
                    uint8_t *touched)
{
    const qkf_map_unit *u = &m->unit[v];
    int n = 0, d = u->d;
    int64_t src_n = (int64_t)u->ih * u->iw;
    int ci = (int)(x / src_n), p = (int)(x % src_n);
    switch (u->kind) {
    case QKF_UNIT_ENCODE: /* pixels are no spikes: the encoding's MACs run once (sim/cost.c) */
        return 0;
    case QKF_UNIT_CONV: {
        int runs[QKF_MAP_TAPS], nr = 0, hm[QKF_MAP_TAPS], nt = qkf_map_conv_taps(u, p, hm, NULL);
        int64_t cnt[QKF_MAP_TAPS];
        for (int i = 0; i < nt; i++)
            nr = add_core(runs, cnt, nr, hm[i] / u->tq, 1);
        for (int i = 0; i < nr; i++)
            for (int g = 0; g < u->groups; g++) {
                int c0 = g * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
                cores[n] = u->first_core + runs[i] * u->groups + g;
                lk[n++] = cnt[i] * (c1 - c0);
            }
        return n;
    }
    case QKF_UNIT_QK_ATTN:
        if (u->N == 1) { /* QKCA: channel ci */
            if (touched)
                touched[ci] = 1;
            return add_range(u, 0, ci, ci + 1, 1, cores, lk, 0);
        }
        if (touched)
            touched[(int64_t)(ci / d) * u->N + p] = 1;
        return add_range(u, p, ci / d, ci / d + 1, 1, cores, lk, 0);
    case QKF_UNIT_MASK:
        if (slot == 1) { /* k (ci, p) -> mask (ci, p) */
            if (touched)
                touched[(int64_t)ci * u->N + p] = 1;
            return add_range(u, p, ci, ci + 1, 1, cores, lk, 0);
        }
        if (src_n == u->N && m->unit[u->in[0].src[0]].N != 1) { /* QKTA attn (h, p) */
            int h = ci; /* the attention tensor is [heads][N] */
            if (touched)
                for (int c = h * d; c < (h + 1) * d; c++)
                    touched[(int64_t)c * u->N + p] = 1;
            return add_range(u, p, h * d, (h + 1) * d, 1, cores, lk, 0);
        }
        /* QKCA: attention (c, 0) gates channel c at every token */
        {
            int c = (int)x;
            for (int r = 0; r < u->runs; r++) {
                int q0 = r * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
                n = add_range(u, q0, c, c + 1, q1 - q0, cores, lk, n);
            }
            if (touched)
                for (int q = 0; q < u->N; q++)
                    touched[(int64_t)c * u->N + q] = 1;
            return n;
        }
    case QKF_UNIT_KV:
        if (slot == 0) { /* k channel ci: row ci, every column */
            for (int r = 0; r < u->runs; r++)
                n = add_range(u, r * u->tq, ci, ci + 1, 0, cores, lk, n);
            return n;
        }
        /* v channel ci: column ci % d of the rows of head ci / d */
        return add_range(u, ci % d, ci / d * d, ci / d * d + d, 0, cores, lk, 0);
    case QKF_UNIT_SSA_LIF: {
        int h = ci / d;
        if (touched)
            for (int c = h * d; c < (h + 1) * d; c++)
                touched[(int64_t)c * u->N + p] = 1;
        return add_range(u, p, h * d, (h + 1) * d, 1, cores, lk, 0);
    }
    case QKF_UNIT_READOUT:
        if (touched)
            touched[ci] = 1;
        return add_range(u, 0, ci, ci + 1, 1, cores, lk, 0);
    default:
        return 0;
    }
}

/* Fan-out of every physical core: its output axons (for each of its neurons, the distinct cores
 * holding that neuron's targets) and its destination cores (distinct over its neurons; an SSA
 * table core's attention cores count too), checked against max_fan_out and max_destinations. */
typedef struct {
    int phys, lim;
    int64_t need, have;
} fan_fail;

/* Phys cores [a, b] (blocks are placed in order, each on the same core as the block before or
 * the next one, so a run of consecutive blocks sits on an interval of cores). */
typedef struct {
    int a, b;
} ival;

static int ival_cmp(const void *x, const void *y)
{
    const ival *p = x, *q = y;
    return p->a != q->a ? (p->a > q->a) - (p->a < q->a) : (p->b > q->b) - (p->b < q->b);
}

/* Sorts n intervals (few: by insertion, else qsort; nothing when already in order) and merges
 * overlapping ones in place; returns how many remain, *cores the cores they cover. */
static int ival_merge(ival *v, int n, int64_t *cores, int few)
{
    int sorted = 1;
    for (int i = 1; i < n && sorted; i++)
        sorted = ival_cmp(&v[i - 1], &v[i]) <= 0;
    if (!sorted && !few)
        qsort(v, (size_t)n, sizeof *v, ival_cmp);
    else if (!sorted)
        for (int i = 1; i < n; i++) /* insertion sort: a token's intervals, nearly in order */
            for (int j = i; j > 0 && ival_cmp(&v[j - 1], &v[j]) > 0; j--) {
                ival t = v[j];
                v[j] = v[j - 1], v[j - 1] = t;
            }
    int k = 0;
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (k && v[i].a <= v[k - 1].b) {
            if (v[i].b > v[k - 1].b)
                v[k - 1].b = v[i].b;
        } else
            v[k++] = v[i];
    }
    for (int i = 0; i < k; i++)
        sum += v[i].b - v[i].a + 1;
    *cores = sum;
    return k;
}

/* A growing list of intervals (a core's destinations); one that overlaps or touches the last
 * is merged into it (the union is the same). */
typedef struct {
    ival *v;
    int n, cap;
} ival_list;

static void ival_push(ival_list *l, int a, int b)
{
    ival *t = l->n ? &l->v[l->n - 1] : NULL;
    if (t && a <= t->b + 1 && b >= t->a - 1) {
        t->a = a < t->a ? a : t->a;
        t->b = b > t->b ? b : t->b;
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        ival *nv = qkf_malloc((size_t)l->cap * sizeof *nv);
        if (l->n)
            memcpy(nv, l->v, (size_t)l->n * sizeof *nv);
        qkf_free(l->v);
        l->v = nv;
    }
    l->v[l->n++] = (ival){a, b};
}

/* Runs of conv unit u holding the targets of input position p (as qkf_map_targets). */
static int conv_target_runs(const qkf_map_unit *u, int p, int *runs)
{
    int hm[QKF_MAP_TAPS], nt = qkf_map_conv_taps(u, p, hm, NULL), nr = 0;
    for (int j = 0; j < nt; j++) {
        int r = hm[j] / u->tq, seen = 0;
        for (int i = 0; i < nr; i++)
            seen |= runs[i] == r;
        if (!seen)
            runs[nr++] = r;
    }
    return nr;
}

/* The conv consumers' targets of every token of a unit (they do not depend on the channel):
 * per token q, its intervals per consumer (rv, rk: the consumer's index in the unit's list)
 * in [roff[q], roff[q + 1]), their union (mv) in [moff[q], moff[q + 1]) of ntok[q] cores. */
typedef struct {
    int unit, rcap, kcap, mcap, ncap, lcap, runcap;
    int *roff, *rk, *moff;
    ival *rv, *mv;
    int64_t *ntok;
    /* per run of the unit's tiling: the intervals of its tokens, each consumer's overlapping
     * ones merged, in [loff[r], loff[r + 1]) of lv; sum[r] = the sum of its tokens' ntok */
    int *loff;
    ival *lv;
    int64_t *sum;
} tok_tab;

static void tok_grow(void **p, int n, int *cap, size_t size)
{
    if (n < *cap)
        return;
    int nc = *cap ? 2 * *cap : 1024;
    while (nc <= n)
        nc *= 2;
    void *q = qkf_malloc((size_t)nc * size);
    if (*cap)
        memcpy(q, *p, (size_t)*cap * size);
    qkf_free(*p);
    *p = q, *cap = nc;
}

static void tok_table(const qkf_map *m, tok_tab *tt, int s, const int *cv, int nc)
{
    const qkf_map_unit *u = &m->unit[s];
    tt->unit = s;
    if (u->N + 1 > tt->ncap) {
        qkf_free(tt->roff), qkf_free(tt->moff), qkf_free(tt->ntok);
        tt->ncap = u->N + 1;
        tt->roff = qkf_malloc((size_t)tt->ncap * sizeof(int));
        tt->moff = qkf_malloc((size_t)tt->ncap * sizeof(int));
        tt->ntok = qkf_malloc((size_t)tt->ncap * sizeof(int64_t));
    }
    int nr_all = 0, nm = 0, runs[64];
    for (int q = 0; q < u->N; q++) {
        tt->roff[q] = nr_all, tt->moff[q] = nm;
        for (int k = 0; k < nc; k++) {
            const qkf_map_unit *v = &m->unit[cv[k]];
            if (v->kind != QKF_UNIT_CONV)
                continue;
            int nr = conv_target_runs(v, q, runs);
            tok_grow((void **)&tt->rv, nr_all + nr, &tt->rcap, sizeof(ival));
            tok_grow((void **)&tt->rk, nr_all + nr, &tt->kcap, sizeof(int));
            for (int i = 0; i < nr; i++) {
                int j = v->first_core + runs[i] * v->groups;
                tt->rv[nr_all] = (ival){m->core[j].phys, m->core[j + v->groups - 1].phys};
                tt->rk[nr_all++] = k;
            }
        }
        int n = nr_all - tt->roff[q];
        tok_grow((void **)&tt->mv, nm + n, &tt->mcap, sizeof(ival));
        tt->ntok[q] = 0;
        if (n) {
            memcpy(tt->mv + nm, tt->rv + tt->roff[q], (size_t)n * sizeof(ival));
            nm += ival_merge(tt->mv + nm, n, &tt->ntok[q], 1);
        }
    }
    tt->roff[u->N] = nr_all, tt->moff[u->N] = nm;
    if (u->runs + 1 > tt->runcap) {
        qkf_free(tt->loff), qkf_free(tt->sum);
        tt->runcap = u->runs + 1;
        tt->loff = qkf_malloc((size_t)tt->runcap * sizeof(int));
        tt->sum = qkf_malloc((size_t)tt->runcap * sizeof(int64_t));
    }
    ival *last = qkf_malloc((size_t)(nc + 1) * sizeof(ival));
    int nl = 0;
    for (int r = 0; r < u->runs; r++) {
        int q0 = r * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
        tt->loff[r] = nl, tt->sum[r] = 0;
        for (int k = 0; k < nc; k++)
            last[k] = (ival){-1, -1};
        for (int q = q0; q < q1; q++) {
            tt->sum[r] += tt->ntok[q];
            for (int i = tt->roff[q]; i < tt->roff[q + 1]; i++) {
                /* a consumer's last interval grows while the tokens' overlap it */
                ival t = tt->rv[i], *l = &last[tt->rk[i]];
                if (l->a >= 0 && t.a <= l->b + 1 && t.b >= l->a - 1) {
                    l->a = t.a < l->a ? t.a : l->a;
                    l->b = t.b > l->b ? t.b : l->b;
                } else {
                    if (l->a >= 0) {
                        tok_grow((void **)&tt->lv, nl, &tt->lcap, sizeof(ival));
                        tt->lv[nl++] = *l;
                    }
                    *l = t;
                }
            }
        }
        for (int k = 0; k < nc; k++)
            if (last[k].a >= 0) {
                tok_grow((void **)&tt->lv, nl, &tt->lcap, sizeof(ival));
                tt->lv[nl++] = last[k];
            }
    }
    tt->loff[u->runs] = nl;
    qkf_free(last);
}

/* Returns the number of cores over a limit (ff: the first); shrink: proposes, per unit with a
 * block on such a core, a cap on its neurons per block in proportion (the smallest proposal).
 * Output axons of a neuron: the distinct cores holding its targets. A conv consumer's targets
 * depend on the token alone (every group of the runs its receptive fields reach: an interval of
 * cores per run), so per token they are a union of intervals; other consumers' targets are a
 * few blocks per neuron, counted where they fall outside it. */
static int fan_out(qkf_map *m, fan_fail *ff, int64_t *shrink)
{
    const qkf_hw_profile *hw = &m->hw;
    int np = m->n_phys, nu = m->n_units, rc = 0;
    int *seen = qkf_calloc((size_t)np + 1, sizeof(int));
    int *mark = qkf_calloc((size_t)np + 1, sizeof(int));
    int *pts = qkf_malloc((size_t)(np + 1) * sizeof(int)), npts = 0; /* a core's other targets */
    int *tc = qkf_malloc((size_t)(m->n_cores + 1) * sizeof(int));
    int64_t *tl = qkf_malloc((size_t)(m->n_cores + 1) * sizeof(int64_t));
    /* the consumers (unit, input slot) of each unit, once: cons[off[s] .. off[s + 1]) */
    int *off = qkf_malloc((size_t)(nu + 1) * sizeof(int)), ncons = 0;
    int *cvall = qkf_malloc((size_t)(nu * QKF_MAP_MAX_IN + 1) * nu * sizeof(int));
    int *csall = qkf_malloc((size_t)(nu * QKF_MAP_MAX_IN + 1) * nu * sizeof(int));
    for (int s = 0; s < nu; s++) {
        off[s] = ncons;
        for (int v = 0; v < nu; v++)
            for (int k = 0; k < m->unit[v].n_in; k++)
                if (!(m->unit[v].kind == QKF_UNIT_SSA_LIF && k == 1) && qkf_map_feeds(m, s, v, k))
                    cvall[ncons] = v, csall[ncons++] = k;
    }
    off[nu] = ncons;
    tok_tab tt;
    memset(&tt, 0, sizeof tt);
    tt.unit = -1;
    ival_list dst = {NULL, 0, 0}; /* the core's destinations */

    int stamp = 0;
    for (int b0 = 0; b0 < m->n_cores;) {
        int p = m->core[b0].phys, b1 = b0;
        while (b1 < m->n_cores && m->core[b1].phys == p)
            b1++;
        int64_t axons = 0, dests = 0;
        dst.n = 0, npts = 0;
        for (int b = b0; b < b1; b++) {
            const qkf_map_core *co = &m->core[b];
            const qkf_map_unit *u = &m->unit[co->unit];
            const int *cv = cvall + off[co->unit], *cs = csall + off[co->unit];
            int nc = off[co->unit + 1] - off[co->unit];
            if (u->kind == QKF_UNIT_KV) { /* the table goes to its heads' attention cores: the
                                             blocks of every run whose channels overlap them */
                const qkf_map_unit *a = &m->unit[co->unit + 1];
                int c0 = co->group * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
                int lo = c0 / u->d * u->d, hi = ((c1 - 1) / u->d + 1) * u->d; /* [lo, hi) */
                int g0 = lo / a->cc, g1 = (hi - 1) / a->cc;
                g1 = g1 < a->groups - 1 ? g1 : a->groups - 1;
                for (int r = 0; r < a->runs; r++) {
                    int j = a->first_core + r * a->groups;
                    axons += g1 - g0 + 1;
                    ival_push(&dst, m->core[j + g0].phys, m->core[j + g1].phys);
                }
                continue;
            }
            if (!nc)
                continue;
            int q0 = co->run * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
            int c0 = co->group * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
            int all_conv = 1;
            for (int k = 0; k < nc; k++)
                all_conv &= m->unit[cv[k]].kind == QKF_UNIT_CONV;

            if (tt.unit != co->unit)
                tok_table(m, &tt, co->unit, cv, nc);
            for (int i = tt.loff[co->run]; i < tt.loff[co->run + 1]; i++)
                ival_push(&dst, tt.lv[i].a, tt.lv[i].b);
            if (all_conv) {
                axons += tt.sum[co->run] * (c1 - c0);
                continue;
            }
            for (int q = q0; q < q1; q++) {
                int64_t ntok = tt.ntok[q];
                const ival *tokv = tt.mv + tt.moff[q];
                int nv = tt.moff[q + 1] - tt.moff[q];
                for (int c = c0; c < c1; c++) {
                    int64_t x = (int64_t)c * u->N + q, n = ntok;
                    if (++stamp == 1 << 30) {
                        memset(seen, 0, (size_t)np * sizeof(int));
                        stamp = 1;
                    }
                    for (int k = 0; k < nc; k++) {
                        if (m->unit[cv[k]].kind == QKF_UNIT_CONV)
                            continue;
                        int nt = qkf_map_targets(m, cv[k], cs[k], x, tc, tl, NULL);
                        for (int i = 0; i < nt; i++) {
                            int d = m->core[tc[i]].phys, in = 0;
                            if (seen[d] == stamp)
                                continue;
                            seen[d] = stamp;
                            for (int w = 0; w < nv && !in; w++)
                                in = d >= tokv[w].a && d <= tokv[w].b;
                            n += !in;
                            if (mark[d] != p + 1)
                                mark[d] = p + 1, pts[npts++] = d;
                        }
                    }
                    axons += n;
                }
            }
        }
        /* destinations: the union of the intervals, and the points outside it */
        if (dst.n)
            dst.n = ival_merge(dst.v, dst.n, &dests, 0);
        for (int i = 0; i < npts; i++) {
            int lo = 0, hi = dst.n; /* the first interval ending at or after pts[i] */
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (dst.v[mid].b < pts[i])
                    lo = mid + 1;
                else
                    hi = mid;
            }
            dests += !(lo < dst.n && dst.v[lo].a <= pts[i]);
        }
        fan_fail f = {p, LIM_NONE, 0, 0};
        if (hw->max_fan_out > 0 && axons > hw->max_fan_out)
            f.lim = LIM_FANOUT, f.need = axons, f.have = hw->max_fan_out;
        else if (hw->max_destinations > 0 && dests > hw->max_destinations)
            f.lim = LIM_DESTS, f.need = dests, f.have = hw->max_destinations;
        if (f.lim != LIM_NONE) {
            if (!rc)
                *ff = f;
            rc++;
            for (int b = b0; b < b1; b++) {
                int64_t cap = m->core[b].neurons * f.have / f.need;
                cap = cap < 1 ? 1 : cap;
                int un = m->core[b].unit;
                if (cap < m->core[b].neurons && (!shrink[un] || cap < shrink[un]))
                    shrink[un] = cap;
            }
        }
        for (int b = b0; b < b1; b++)
            m->core[b].fan_out = axons, m->core[b].dests = dests;
        b0 = b1;
    }
    qkf_free(seen), qkf_free(tc), qkf_free(tl), qkf_free(cvall), qkf_free(csall);
    qkf_free(off), qkf_free(dst.v), qkf_free(mark), qkf_free(pts);
    qkf_free(tt.roff), qkf_free(tt.rk), qkf_free(tt.moff), qkf_free(tt.rv), qkf_free(tt.mv);
    qkf_free(tt.ntok), qkf_free(tt.loff), qkf_free(tt.lv), qkf_free(tt.sum);
    return rc;
}

/* ---- build ---------------------------------------------------------------------------------- */

int qkf_map_build(qkf_map *m, const qkf_graph *g, const qkf_hw_profile *hw)
{
    memset(m, 0, sizeof *m);
    m->hw = *hw;
    m->g = g;
    int64_t *tiled = NULL;
    if (build_units(m))
        goto fail;
    /* Fan-out depends on where the consumers sit, so it is checked after placement: a core over
     * it shrinks the blocks of the units it holds (a cap on their neurons per block, in
     * proportion), and the mapping is made again, until it fits or a block of one neuron (or an
     * unsplittable layer) is over. */
    /* a unit's tiling depends on its geometry, the profile and its cap alone: a round re-tiles
     * only the units whose cap changed */
    tiled = qkf_malloc((size_t)(m->n_units + 1) * sizeof(int64_t));
    for (int i = 0; i < m->n_units; i++)
        tiled[i] = -1;
    for (int round = 0;; round++) {
        for (int i = 0; i < m->n_units; i++)
            if (tiled[i] != m->unit[i].cap) {
                if (tile_unit(m, &m->unit[i]))
                    goto fail;
                tiled[i] = m->unit[i].cap;
            }
        if (place(m))
            goto fail;
        fan_fail ff;
        if (!(hw->max_fan_out > 0 || hw->max_destinations > 0))
            break;
        int64_t *shrink = qkf_calloc((size_t)m->n_units, sizeof(int64_t));
        int over = fan_out(m, &ff, shrink), shrunk = 0;
        for (int i = 0; i < m->n_units && hw->max_layers_per_core != 1; i++)
            if (shrink[i] && (!m->unit[i].cap || shrink[i] < m->unit[i].cap))
                m->unit[i].cap = shrink[i], shrunk = 1;
        qkf_free(shrink);
        if (!over)
            break;
        const char *name = m->unit[m->core[0].unit].name;
        for (int b = 0; b < m->n_cores; b++)
            if (m->core[b].phys == ff.phys) {
                name = m->unit[m->core[b].unit].name;
                break;
            }
        if (!shrunk || round == 64) {
            qkf_set_error("layer %s: %s: its core %d needs %lld, a core has %lld (%lld over)",
                          name, lim_name[ff.lim], ff.phys, (long long)ff.need,
                          (long long)ff.have, (long long)(ff.need - ff.have));
            goto fail;
        }
        qkf_free(m->core);
        m->core = NULL;
        m->n_cores = m->n_phys = 0;
    }
    qkf_free(tiled);
    return 0;
fail:
    qkf_free(tiled);
    qkf_map_free(m);
    return -1;
}

void qkf_map_free(qkf_map *m)
{
    qkf_free(m->unit);
    qkf_free(m->core);
    memset(m, 0, sizeof *m);
}

int qkf_map_core_ranges(const qkf_map *m, int i, void (*f)(int64_t, int64_t, void *), void *arg)
{
    const qkf_map_core *c = &m->core[i];
    const qkf_map_unit *u = &m->unit[c->unit];
    int q0 = c->run * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
    int c0 = c->group * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
    if (q0 == 0 && q1 == u->N) { /* whole channels: one range */
        f((int64_t)c0 * u->N, (int64_t)c1 * u->N, arg);
        return 1;
    }
    for (int ch = c0; ch < c1; ch++)
        f((int64_t)ch * u->N + q0, (int64_t)ch * u->N + q1, arg);
    return c1 - c0;
}


void qkf_map_print(const qkf_map *m)
{
    const qkf_hw_profile *hw = &m->hw;
    printf("%-34s %-8s %9s %7s %6s %11s  %s\n", "layer", "kind", "neurons", "cores", "util",
           "block c x t", "binding limit");
    for (int i = 0; i < m->n_units; i++) {
        const qkf_map_unit *u = &m->unit[i];
        char util[16] = "-";
        if (hw->max_neurons > 0)
            snprintf(util, sizeof util, "%.1f%%",
                     100.0 * (double)u->neurons / ((double)u->n_cores * (double)hw->max_neurons));
        /* cores: the physical cores its blocks sit on (small layers share them) */
        char blk[32];
        snprintf(blk, sizeof blk, "%d x %d", u->cc, u->tq);
        printf("%-34s %-8s %9lld %7d %6s %11s  %s\n", u->name, qkf_unit_kind_name(u->kind),
               (long long)u->neurons, u->n_phys, util, blk, u->limit);
    }
    int cpt = hw->cores_per_tile > 0 ? hw->cores_per_tile : 1;
    int64_t per_chip = (int64_t)hw->mesh_width * hw->mesh_height * cpt;
    printf("\n%s: %lld neurons on %d cores (%d tiles) of %d chip%s (%lld cores each)", hw->name,
           (long long)m->neurons, m->n_phys, m->tiles, m->chips, m->chips == 1 ? "" : "s",
           (long long)per_chip);
    if (hw->max_neurons > 0)
        printf(", %.1f%% of their neuron slots",
               100.0 * (double)m->neurons / ((double)m->n_phys * (double)hw->max_neurons));
    printf("\n");
}
