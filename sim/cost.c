/* The chip cost model (sim/cost.h): per sample and step, every spike of every unit is delivered
 * to the cores of its consumers through qkf_map_targets (the same targets the mapping uses), so
 * the synapse look-ups of a unit are exactly the accumulates the event engine performed for it
 * (the mask, an AND neuron on a chip, looks up its k and attention synapses instead); the counts
 * of the current (sample, step) gather in cur[core], give the step's latency, and are folded into
 * the per-core and per-step totals. Single-threaded and in a fixed order: deterministic. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "cost.h"

const char *const qkf_act_names[QKF_ACT_COUNT] = {
    "neuron_accesses", "neuron_updates", "spikes_out", "synapse_lookups",
    "dendrite_updates", "messages_out", "messages_in", "hops_north",
    "hops_east",       "hops_south",    "hops_west"};

static int has_bias(qkf_unit_kind k)
{
    return k == QKF_UNIT_CONV || k == QKF_UNIT_ENCODE;
}

static double hop_e(const qkf_hw_profile *hw, int dir)
{
    if (hw->e_hop[dir] != 0)
        return hw->e_hop[dir];
    return dir % 2 ? hw->e_hop_ew : hw->e_hop_ns;
}

static double hop_t(const qkf_hw_profile *hw, int dir)
{
    if (hw->t_hop[dir] != 0)
        return hw->t_hop[dir];
    return dir % 2 ? hw->t_hop_ew : hw->t_hop_ns;
}

void qkf_cost_energy(const qkf_hw_profile *hw, const qkf_cost_counts *n, double e[QKF_E_COUNT])
{
    const qkf_hw_core_cost *k = &hw->cost;
    const int64_t *a = n->n;
    e[QKF_E_SYNAPSE] = (double)a[QKF_ACT_LOOKUP] * k->e_process_spike;
    e[QKF_E_DENDRITE] = (double)a[QKF_ACT_DENDRITE] * k->e_dendrite_update;
    e[QKF_E_SOMA] = (double)a[QKF_ACT_ACCESS] * k->e_access_neuron +
                    (double)a[QKF_ACT_UPDATE] * k->e_update_neuron +
                    (double)a[QKF_ACT_SPIKE] * k->e_spike_out;
    e[QKF_E_NETWORK] = (double)a[QKF_ACT_MSG_IN] * k->e_message_in +
                       (double)a[QKF_ACT_MSG_OUT] * k->e_message_out;
    for (int d = 0; d < 4; d++)
        e[QKF_E_NETWORK] += (double)a[QKF_ACT_HOP_N + d] * hop_e(hw, d);
    e[QKF_E_TOTAL] = e[QKF_E_SYNAPSE] + e[QKF_E_DENDRITE] + e[QKF_E_SOMA] + e[QKF_E_NETWORK];
}

void qkf_cost_core_time(const qkf_hw_profile *hw, const qkf_cost_counts *n, double *gen,
                        double *proc)
{
    const qkf_hw_core_cost *k = &hw->cost;
    const int64_t *a = n->n;
    *gen = (double)a[QKF_ACT_ACCESS] * k->t_access_neuron +
           (double)a[QKF_ACT_UPDATE] * k->t_update_neuron +
           (double)a[QKF_ACT_SPIKE] * k->t_spike_out +
           (double)a[QKF_ACT_MSG_OUT] * k->t_message_out;
    *proc = (double)a[QKF_ACT_MSG_IN] * k->t_message_in +
            (double)a[QKF_ACT_LOOKUP] * k->t_process_spike +
            (double)a[QKF_ACT_DENDRITE] * k->t_dendrite_update;
}

static void add_counts(qkf_cost_counts *d, const qkf_cost_counts *s)
{
    for (int i = 0; i < QKF_ACT_COUNT; i++)
        d->n[i] += s->n[i];
}

/* ---- set-up --------------------------------------------------------------------------------- */

/* Window size of pooled position (py, px) over the pre-pool grid ho x wo (MaxPool 3/2/1). */
static int window(const qkf_map_unit *u, int q)
{
    int py = q / u->gw, px = q % u->gw, n = 0;
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
            int y = 2 * py + dy, x = 2 * px + dx;
            n += y >= 0 && y < u->ho && x >= 0 && x < u->wo;
        }
    return n;
}

/* Pre-pool positions homed at token q (as models/map.c: (oy / 2, ox / 2)). */
static int n_homes(const qkf_map_unit *u, int q)
{
    if (!u->pool)
        return 1;
    int py = q / u->gw, px = q % u->gw, n = 0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++)
            n += 2 * py + dy < u->ho && 2 * px + dx < u->wo;
    return n;
}

int qkf_cost_init(qkf_cost *c, const qkf_map *m, int T)
{
    memset(c, 0, sizeof *c);
    c->map = m, c->T = T;
    int nc = m->n_cores > 0 ? m->n_cores : 1, nu = m->n_units;
    c->core = qkf_calloc((size_t)nc, sizeof *c->core);
    c->cur = qkf_calloc((size_t)nc, sizeof *c->cur);
    c->step = qkf_calloc((size_t)T, sizeof *c->step);
    int np = m->n_phys > 0 ? m->n_phys : 1;
    c->busy_s = qkf_calloc((size_t)np, sizeof(double));
    c->gen = qkf_calloc((size_t)np, sizeof(double));
    c->proc = qkf_calloc((size_t)np, sizeof(double));
    c->lat_s = qkf_calloc((size_t)T, sizeof(double));
    c->net_s = qkf_calloc((size_t)T, sizeof(double));
    c->sync_s = qkf_calloc((size_t)T, sizeof(double));
    c->tc = qkf_malloc((size_t)nc * sizeof(int));
    c->tl = qkf_malloc((size_t)nc * sizeof(int64_t));
    c->dest = qkf_malloc((size_t)nc * sizeof(int));
    c->stamp = qkf_calloc((size_t)np, sizeof(int));
    c->once_first = qkf_calloc((size_t)nc, sizeof(int64_t));
    c->once_last = qkf_calloc((size_t)nc, sizeof(int64_t));
    c->dend = qkf_calloc((size_t)nc, sizeof(int64_t));
    c->touched = qkf_calloc((size_t)nu, sizeof(uint8_t *));
    c->mask = qkf_calloc((size_t)nu, sizeof(uint8_t *));
    c->cons_v = qkf_calloc((size_t)nu + 1, sizeof(int *));
    c->cons_slot = qkf_calloc((size_t)nu + 1, sizeof(int *));
    c->n_cons = qkf_calloc((size_t)nu + 1, sizeof(int));
    c->kv_dest_off = qkf_calloc((size_t)nc + 1, sizeof(int));
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        if (!has_bias(un->kind))
            c->touched[u] = qkf_calloc((size_t)un->neurons, 1);
        if (un->kind == QKF_UNIT_MASK) {
            if (un->in[0].n != 1 || un->in[1].n != 1 || un->in[0].src[0] < 0 ||
                un->in[1].src[0] < 0 || m->unit[un->in[1].src[0]].lif_index < 0) {
                qkf_cost_free(c);
                return qkf_set_error("%s: the mask's inputs are not one attention and one k "
                                     "layer",
                                     un->name);
            }
            c->mask[u] = qkf_calloc((size_t)un->neurons, 1);
        }
    }
    /* consumers of each source (slot 1 of an SSA attention LIF is the kv table, no spikes) */
    for (int s = -1; s < nu; s++) {
        int k = s < 0 ? nu : s, n = 0;
        c->cons_v[k] = qkf_malloc((size_t)(4 * nu + 1) * sizeof(int));
        c->cons_slot[k] = qkf_malloc((size_t)(4 * nu + 1) * sizeof(int));
        for (int v = 0; v < nu; v++)
            for (int sl = 0; sl < m->unit[v].n_in; sl++) {
                if (m->unit[v].kind == QKF_UNIT_SSA_LIF && sl == 1)
                    continue;
                if (qkf_map_feeds(m, s, v, sl))
                    c->cons_v[k][n] = v, c->cons_slot[k][n++] = sl;
            }
        c->n_cons[k] = n;
    }
    /* per-core constants: encoding MACs (step 0), head MACs (last step), pooled windows */
    int classes = m->g->cfg.num_classes;
    for (int i = 0; i < m->n_cores; i++) {
        const qkf_map_core *co = &m->core[i];
        const qkf_map_unit *u = &m->unit[co->unit];
        int q0 = co->run * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
        int c0 = co->group * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
        for (int q = q0; q < q1; q++) {
            if (u->kind == QKF_UNIT_ENCODE) /* every tap, padding included (stats macs_once) */
                c->once_first[i] += (int64_t)n_homes(u, q) * u->cin * u->k * u->k * (c1 - c0);
            if (u->pool)
                c->dend[i] += (int64_t)window(u, q) * (c1 - c0);
        }
        if (u->kind == QKF_UNIT_READOUT)
            c->once_last[i] = (int64_t)(c1 - c0) * classes;
    }
    /* kv tables: each kv core sends its rows' heads to the SSA attention cores of those heads */
    int cap = 0, *buf = NULL, nb = 0;
    for (int i = 0; i < m->n_cores; i++) {
        c->kv_dest_off[i] = nb;
        const qkf_map_core *co = &m->core[i];
        const qkf_map_unit *u = &m->unit[co->unit];
        if (u->kind != QKF_UNIT_KV)
            continue;
        int a = co->unit + 1; /* the SSA attention LIF follows its kv unit */
        const qkf_map_unit *au = &m->unit[a];
        int c0 = co->group * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
        int h0 = c0 / u->d, h1 = (c1 - 1) / u->d; /* heads of its rows */
        for (int j = au->first_core; j < au->first_core + au->n_cores; j++) {
            const qkf_map_core *dj = &m->core[j];
            int a0 = dj->group * au->cc, a1 = a0 + au->cc < au->C ? a0 + au->cc : au->C;
            if (a1 - 1 < h0 * u->d || a0 >= (h1 + 1) * u->d)
                continue;
            if (nb == cap) {
                cap = cap ? 2 * cap : 256;
                int *nbuf = qkf_malloc((size_t)cap * sizeof(int));
                if (nb)
                    memcpy(nbuf, buf, (size_t)nb * sizeof(int));
                qkf_free(buf);
                buf = nbuf;
            }
            buf[nb++] = j;
        }
    }
    c->kv_dest_off[m->n_cores] = nb;
    c->kv_dest = buf;
    return 0;
}

void qkf_cost_free(qkf_cost *c)
{
    const qkf_map *m = c->map;
    if (m) {
        for (int u = 0; u < m->n_units; u++) {
            if (c->touched)
                qkf_free(c->touched[u]);
            if (c->mask)
                qkf_free(c->mask[u]);
        }
        for (int u = 0; u <= m->n_units; u++) {
            if (c->cons_v)
                qkf_free(c->cons_v[u]);
            if (c->cons_slot)
                qkf_free(c->cons_slot[u]);
        }
    }
    qkf_free(c->core), qkf_free(c->cur), qkf_free(c->step), qkf_free(c->busy_s);
    qkf_free(c->gen), qkf_free(c->proc);
    qkf_free(c->lat_s), qkf_free(c->net_s), qkf_free(c->sync_s);
    qkf_free(c->tc), qkf_free(c->tl), qkf_free(c->dest), qkf_free(c->stamp);
    qkf_free(c->once_first), qkf_free(c->once_last), qkf_free(c->dend);
    qkf_free(c->touched), qkf_free(c->mask);
    qkf_free(c->cons_v), qkf_free(c->cons_slot), qkf_free(c->n_cons);
    qkf_free(c->kv_dest), qkf_free(c->kv_dest_off);
    qkf_free(c->det_s), qkf_free(c->blk_s), qkf_free(c->n_blk);
    qkf_free(c->px), qkf_free(c->py), qkf_free(c->pslot);
    qkf_free(c->local_s), qkf_free(c->dlk), qkf_free(c->dpos), qkf_free(c->rec);
    qkf_free(c->rec_off), qkf_free(c->rec_cur), qkf_free(c->rec_sorted), qkf_free(c->seq);
    qkf_free(c->seq_off);
    qkf_noc_free(&c->noc_ws);
    memset(c, 0, sizeof *c);
}

/* ---- the detailed latency model (sim/noc.h) ------------------------------------------------- */

/* A message of the current step from a mesh core: msgs copies of a spike of neuron x of block
 * blk (x = INT64_MAX: sent after the block's neurons, an SSA table) to physical core dst,
 * carrying `lookups` synapse look-ups there. */
struct qkf_cost_rec {
    int blk, dst;
    int64_t x, copies, lookups;
};

void qkf_cost_detailed(qkf_cost *c)
{
    const qkf_map *m = c->map;
    const qkf_hw_profile *hw = &m->hw;
    int np = m->n_phys > 0 ? m->n_phys : 1, nc = m->n_cores > 0 ? m->n_cores : 1;
    c->detailed = 1;
    c->det_s = qkf_calloc((size_t)c->T, sizeof(double));
    c->blk_s = qkf_calloc((size_t)c->T, sizeof(double));
    c->n_blk = qkf_calloc((size_t)c->T, sizeof(int64_t));
    c->px = qkf_calloc((size_t)np, sizeof(int));
    c->py = qkf_calloc((size_t)np, sizeof(int));
    c->pslot = qkf_calloc((size_t)np, sizeof(int));
    c->local_s = qkf_calloc((size_t)np, sizeof(double));
    c->dlk = qkf_calloc((size_t)nc, sizeof(int64_t));
    c->dpos = qkf_calloc((size_t)np, sizeof(int));
    c->rec_off = qkf_calloc((size_t)nc + 1, sizeof(int64_t));
    c->rec_cur = qkf_calloc((size_t)nc + 1, sizeof(int64_t));
    c->seq_off = qkf_calloc((size_t)np + 1, sizeof(int64_t));
    int w = 1, h = 1;
    for (int i = 0; i < m->n_cores; i++) {
        const qkf_map_core *co = &m->core[i];
        c->px[co->phys] = co->x, c->py[co->phys] = co->y, c->pslot[co->phys] = co->slot;
        w = co->x + 1 > w ? co->x + 1 : w;
        h = co->y + 1 > h ? co->y + 1 : h;
    }
    qkf_noc *n = &c->noc;
    n->n_cores = m->n_phys, n->x = c->px, n->y = c->py, n->slot = c->pslot;
    n->width = w, n->height = h;
    n->cores_per_tile = hw->cores_per_tile > 0 ? hw->cores_per_tile : 1;
    for (int d = 0; d < 4; d++)
        n->t_hop[d] = hop_t(hw, d);
    n->buffer = hw->link_buffer_size > 0 ? hw->link_buffer_size : 1;
}

static void *grow(void *p, int64_t *cap, int64_t need, size_t size)
{
    if (need <= *cap)
        return p;
    int64_t nc = *cap ? *cap : 1024;
    while (nc < need)
        nc *= 2;
    void *q = qkf_malloc((size_t)nc * size);
    if (*cap)
        memcpy(q, p, (size_t)*cap * size);
    qkf_free(p);
    *cap = nc;
    return q;
}

static void record(qkf_cost *c, int blk, int dst, int64_t x, int64_t copies, int64_t lookups)
{
    c->rec = grow(c->rec, &c->cap_rec, c->n_rec + 1, sizeof *c->rec);
    c->rec[c->n_rec++] = (struct qkf_cost_rec){blk, dst, x, copies, lookups};
}

/* ---- counting ------------------------------------------------------------------------------- */

typedef struct {
    double net; /* the longest route of the step (seconds) */
} step_state;

/* One message (msgs copies) from core src (-1: from outside the mesh) to core dst, sent for
 * neuron x of src, carrying `lookups` look-ups (the detailed model's timing). */
static void message(qkf_cost *c, int src, int dst, int64_t msgs, step_state *st, int64_t x,
                    int64_t lookups)
{
    const qkf_map *m = c->map;
    c->cur[dst].n[QKF_ACT_MSG_IN] += msgs;
    if (c->detailed) {
        const qkf_hw_core_cost *k = &m->hw.cost;
        if (src < 0) /* from outside the mesh: the destination's own work */
            c->local_s[m->core[dst].phys] +=
                (double)msgs * k->t_message_in + (double)lookups * k->t_process_spike;
        else
            record(c, src, m->core[dst].phys, x, msgs, lookups);
    }
    if (src < 0)
        return;
    qkf_cost_counts *o = &c->cur[src];
    o->n[QKF_ACT_MSG_OUT] += msgs;
    int dx = m->core[dst].x - m->core[src].x, dy = m->core[dst].y - m->core[src].y;
    int ex = dx > 0 ? QKF_HW_EAST : QKF_HW_WEST, ey = dy > 0 ? QKF_HW_SOUTH : QKF_HW_NORTH;
    int ax = abs(dx), ay = abs(dy);
    o->n[QKF_ACT_HOP_N + ex] += (int64_t)ax * msgs;
    o->n[QKF_ACT_HOP_N + ey] += (int64_t)ay * msgs;
    double t = ax * hop_t(&m->hw, ex) + ay * hop_t(&m->hw, ey);
    if (t > st->net)
        st->net = t;
}

/* A spike (count) of neuron x of source s (nu: the model input) from core src. */
static void deliver(qkf_cost *c, int s, int64_t x, int64_t count, int src, step_state *st)
{
    const qkf_map *m = c->map;
    if (++c->n_stamp == INT_MAX) {
        memset(c->stamp, 0, (size_t)m->n_phys * sizeof(int));
        c->n_stamp = 1;
    }
    int nd = 0;
    for (int k = 0; k < c->n_cons[s]; k++) {
        int v = c->cons_v[s][k];
        int nt = qkf_map_targets(m, v, c->cons_slot[s][k], x, c->tc, c->tl, c->touched[v]);
        for (int i = 0; i < nt; i++) {
            c->cur[c->tc[i]].n[QKF_ACT_LOOKUP] += c->tl[i] * count;
            int ph = m->core[c->tc[i]].phys; /* one message per destination core */
            if (c->stamp[ph] != c->n_stamp) {
                c->stamp[ph] = c->n_stamp;
                if (c->detailed)
                    c->dpos[ph] = nd, c->dlk[nd] = 0;
                c->dest[nd++] = c->tc[i];
            }
            if (c->detailed)
                c->dlk[c->dpos[ph]] += c->tl[i] * count;
        }
    }
    /* a binary-spike chip sends a count of n as n messages (docs/hardware.md) */
    int64_t msgs = m->hw.arith.is_float || m->hw.arith.graded_bits > 0 ? 1 : count;
    for (int i = 0; i < nd; i++)
        message(c, src, c->dest[i], msgs, st, x, c->detailed ? c->dlk[i] : 0);
}

static const uint8_t *unit_spikes(const qkf_cost *c, const uint8_t *const *spikes, int u, int t,
                                  int b, int B)
{
    const qkf_map_unit *un = &c->map->unit[u];
    if (un->kind == QKF_UNIT_MASK)
        return c->mask[u];
    if (un->lif_index < 0)
        return NULL;
    return spikes[un->lif_index] + ((int64_t)t * B + b) * un->neurons;
}

/* The step's messages in each physical core's order (its blocks in turn, each block's neurons
 * in index order: a neuron's soma work, then its messages), priced by the detailed model. Runs
 * before the step's touched neurons are cleared (they are the updated ones). */
static void detailed_step(qkf_cost *c, const uint8_t *const *spikes, int B, int b, int t)
{
    const qkf_map *m = c->map;
    const qkf_hw_core_cost *k = &m->hw.cost;
    int nc = m->n_cores, np = m->n_phys;
    /* the records by sending block, each block's in neuron order (they were made in it) */
    memset(c->rec_off, 0, (size_t)(nc + 1) * sizeof(int64_t));
    for (int64_t r = 0; r < c->n_rec; r++)
        c->rec_off[c->rec[r].blk + 1]++;
    for (int i = 0; i < nc; i++)
        c->rec_off[i + 1] += c->rec_off[i];
    memcpy(c->rec_cur, c->rec_off, (size_t)(nc + 1) * sizeof(int64_t));
    c->rec_sorted = grow(c->rec_sorted, &c->cap_sorted, c->n_rec + 1, sizeof *c->rec_sorted);
    for (int64_t r = 0; r < c->n_rec; r++)
        c->rec_sorted[c->rec_cur[c->rec[r].blk]++] = c->rec[r];
    int64_t ns = 0, want = 0;
    for (int64_t r = 0; r < c->n_rec; r++)
        want += c->rec[r].copies;
    c->seq = grow(c->seq, &c->cap_seq, want + np + 1, sizeof *c->seq);
    int blk = 0;
    for (int p = 0; p < np; p++) {
        c->seq_off[p] = ns;
        double acc = 0; /* soma work since the core's last message */
        for (; blk < nc && m->core[blk].phys == p; blk++) {
            const qkf_map_core *co = &m->core[blk];
            const qkf_map_unit *u = &m->unit[co->unit];
            int64_t once = (t == 0 ? c->once_first[blk] : 0) +
                           (t == c->T - 1 ? c->once_last[blk] : 0);
            c->local_s[p] += (double)c->dend[blk] * k->t_dendrite_update +
                             (double)once * k->t_process_spike;
            const uint8_t *sp = unit_spikes(c, spikes, co->unit, t, b, B);
            const uint8_t *tch = has_bias(u->kind) ? NULL : c->touched[co->unit];
            int64_t r = c->rec_off[blk], r1 = c->rec_off[blk + 1];
            int q0 = co->run * u->tq, q1 = q0 + u->tq < u->N ? q0 + u->tq : u->N;
            int c0 = co->group * u->cc, c1 = c0 + u->cc < u->C ? c0 + u->cc : u->C;
            for (int ch = c0; ch < c1; ch++)
                for (int q = q0; q < q1; q++) {
                    int64_t x = (int64_t)ch * u->N + q;
                    acc += k->t_access_neuron + (!tch || tch[x] ? k->t_update_neuron : 0) +
                           (sp && sp[x] ? k->t_spike_out : 0);
                    for (; r < r1 && c->rec_sorted[r].x <= x; r++) {
                        const struct qkf_cost_rec *e = &c->rec_sorted[r];
                        for (int64_t j = 0; j < e->copies; j++) {
                            c->seq[ns++] = (qkf_noc_msg){
                                e->dst, acc + k->t_message_out,
                                k->t_message_in +
                                    (double)(e->lookups / e->copies) * k->t_process_spike};
                            acc = 0;
                        }
                    }
                }
            for (; r < r1; r++) { /* sent after the block's neurons (SSA tables) */
                const struct qkf_cost_rec *e = &c->rec_sorted[r];
                for (int64_t j = 0; j < e->copies; j++) {
                    c->seq[ns++] = (qkf_noc_msg){
                        e->dst, acc + k->t_message_out,
                        k->t_message_in + (double)(e->lookups / e->copies) * k->t_process_spike};
                    acc = 0;
                }
            }
        }
        if (acc > 0) /* the soma work after the last message */
            c->seq[ns++] = (qkf_noc_msg){-1, acc, 0};
    }
    c->seq_off[np] = ns;
    double blocked = 0;
    int64_t nblk = 0;
    double lat = np > 0 ? qkf_noc_schedule(&c->noc, c->seq, c->seq_off, c->local_s, &c->noc_ws,
                                           &blocked, &nblk)
                        : 0;
    c->det_s[t] += lat + m->sync_s;
    c->blk_s[t] += blocked;
    c->n_blk[t] += nblk;
    c->n_rec = 0;
    memset(c->local_s, 0, (size_t)(np > 0 ? np : 1) * sizeof(double));
}

static void one_step(qkf_cost *c, const uint8_t *const *spikes, const float *frames, int B, int b,
                     int t)
{
    const qkf_map *m = c->map;
    const qkf_hw_profile *hw = &m->hw;
    int nu = m->n_units;
    step_state st = {0};
    /* the masks' spikes: k where the attention neuron fired */
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        if (un->kind != QKF_UNIT_MASK)
            continue;
        const uint8_t *sa = unit_spikes(c, spikes, un->in[0].src[0], t, b, B);
        const uint8_t *sk = unit_spikes(c, spikes, un->in[1].src[0], t, b, B);
        int qkca = m->unit[un->in[0].src[0]].N == 1;
        for (int ch = 0; ch < un->C; ch++)
            for (int n = 0; n < un->N; n++) {
                int64_t x = (int64_t)ch * un->N + n;
                c->mask[u][x] = sk[x] && sa[qkca ? ch : (int64_t)(ch / un->d) * un->N + n];
            }
    }
    /* the model input: dvs frames' event counts arrive from outside the mesh */
    if (frames) {
        const qkf_tensor *in = &m->g->tensors[m->g->input];
        int64_t n = (int64_t)in->c * in->h * in->w;
        const float *f = frames + ((int64_t)b * c->T + t) * n;
        for (int64_t x = 0; x < n; x++)
            if (f[x] != 0.0f)
                deliver(c, nu, x, (int64_t)f[x], -1, &st);
    }
    /* every unit's spikes to its consumers */
    for (int u = 0; u < nu; u++) {
        const uint8_t *sp = unit_spikes(c, spikes, u, t, b, B);
        if (!sp)
            continue;
        const qkf_map_unit *un = &m->unit[u];
        for (int64_t x = 0; x < un->neurons; x++)
            if (sp[x]) {
                int core = qkf_map_core_of(m, u, x);
                c->cur[core].n[QKF_ACT_SPIKE]++;
                deliver(c, u, x, 1, core, &st);
            }
    }
    /* SSA: k and v spikes meet in the kv table (one look-up per co-active pair of a token and
     * head), which then goes to the attention cores of its heads */
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        if (un->kind != QKF_UNIT_KV)
            continue;
        const uint8_t *sk = unit_spikes(c, spikes, un->in[0].src[0], t, b, B);
        const uint8_t *sv = unit_spikes(c, spikes, un->in[1].src[0], t, b, B);
        int Nt = un->ih * un->iw, d = un->d;
        for (int n = 0; n < Nt; n++)
            for (int h = 0; h < un->heads; h++)
                for (int i = h * d; i < (h + 1) * d; i++) {
                    if (!sk[(int64_t)i * Nt + n])
                        continue;
                    for (int j = 0; j < d; j++)
                        if (sv[(int64_t)(h * d + j) * Nt + n]) {
                            int64_t x = (int64_t)i * d + j;
                            int core = qkf_map_core_of(m, u, x);
                            c->cur[core].n[QKF_ACT_LOOKUP]++;
                            c->touched[u][x] = 1;
                            if (c->detailed)
                                c->local_s[m->core[core].phys] += hw->cost.t_process_spike;
                        }
                }
        for (int i = un->first_core; i < un->first_core + un->n_cores; i++)
            for (int k = c->kv_dest_off[i]; k < c->kv_dest_off[i + 1]; k++)
                message(c, i, c->kv_dest[k], 1, &st, INT64_MAX, 0);
    }
    if (c->detailed)
        detailed_step(c, spikes, B, b, t);
    /* per core: accesses, updates, dendrites, the once-per-inference MACs; then the latency */
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        if (!c->touched[u])
            continue;
        for (int64_t x = 0; x < un->neurons; x++)
            if (c->touched[u][x]) {
                c->cur[qkf_map_core_of(m, u, x)].n[QKF_ACT_UPDATE]++;
                c->touched[u][x] = 0;
            }
    }
    for (int i = 0; i < m->n_cores; i++) {
        qkf_cost_counts *k = &c->cur[i];
        const qkf_map_core *co = &m->core[i];
        k->n[QKF_ACT_ACCESS] += co->neurons;
        if (has_bias(m->unit[co->unit].kind))
            k->n[QKF_ACT_UPDATE] += co->neurons;
        k->n[QKF_ACT_DENDRITE] += c->dend[i];
        if (t == 0)
            k->n[QKF_ACT_LOOKUP] += c->once_first[i];
        if (t == c->T - 1)
            k->n[QKF_ACT_LOOKUP] += c->once_last[i];
        double gen, proc; /* the blocks of a physical core run one after the other */
        qkf_cost_core_time(hw, k, &gen, &proc);
        c->gen[co->phys] += gen, c->proc[co->phys] += proc;
        add_counts(&c->core[i], k);
        add_counts(&c->step[t], k);
        memset(k, 0, sizeof *k);
    }
    double gen_max = 0, proc_max = 0;
    for (int p = 0; p < m->n_phys; p++) {
        gen_max = c->gen[p] > gen_max ? c->gen[p] : gen_max;
        proc_max = c->proc[p] > proc_max ? c->proc[p] : proc_max;
        /* its units overlap, as in the latency */
        c->busy_s[p] += c->gen[p] > c->proc[p] ? c->gen[p] : c->proc[p];
        c->gen[p] = c->proc[p] = 0;
    }
    double lat = (gen_max > proc_max ? gen_max : proc_max) + st.net + m->sync_s;
    c->lat_s[t] += lat;
    c->net_s[t] += st.net;
    c->sync_s[t] += m->sync_s;
}

int qkf_cost_add(qkf_cost *c, const uint8_t *const *spikes, const float *frames, int B)
{
    for (int l = 0; l < c->map->g->n_lif; l++)
        if (!spikes[l])
            return qkf_set_error("cost: LIF layer %d has no recorded spikes (QKF_SCHED_RECORD)",
                                 l);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < c->T; t++)
            one_step(c, spikes, frames, B, b, t);
    c->samples += B;
    return 0;
}

qkf_cost_counts qkf_cost_total(const qkf_cost *c)
{
    qkf_cost_counts s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < c->map->n_cores; i++)
        add_counts(&s, &c->core[i]);
    return s;
}

qkf_cost_counts qkf_cost_unit(const qkf_cost *c, int u)
{
    qkf_cost_counts s;
    memset(&s, 0, sizeof s);
    const qkf_map_unit *un = &c->map->unit[u];
    for (int i = un->first_core; i < un->first_core + un->n_cores; i++)
        add_counts(&s, &c->core[i]);
    return s;
}

/* ---- output --------------------------------------------------------------------------------- */

static int busiest(const qkf_cost *c)
{
    int best = 0;
    for (int i = 1; i < c->map->n_phys; i++)
        if (c->busy_s[i] > c->busy_s[best])
            best = i;
    return best;
}

static double total_latency(const qkf_cost *c)
{
    double s = 0;
    for (int t = 0; t < c->T; t++)
        s += c->lat_s[t];
    return c->samples ? s / (double)c->samples : 0;
}

void qkf_cost_print(const qkf_cost *c, double ideal_pj)
{
    const qkf_map *m = c->map;
    const qkf_hw_profile *hw = &m->hw;
    double S = c->samples ? (double)c->samples : 1, e[QKF_E_COUNT];
    printf("\n%s: %d cores on %d tiles of %d chip%s; per sample, energy in nJ\n", hw->name,
           m->n_phys, m->tiles, m->chips, m->chips == 1 ? "" : "s");
    printf("%-34s %6s %9s %9s %9s %9s %9s %9s %9s\n", "layer", "cores", "spikes", "lookups",
           "msgs out", "synapse", "soma", "network", "total");
    for (int u = 0; u < m->n_units; u++) {
        qkf_cost_counts k = qkf_cost_unit(c, u);
        qkf_cost_energy(hw, &k, e);
        printf("%-34s %6d %9.4g %9.4g %9.4g %9.3f %9.3f %9.3f %9.3f\n", m->unit[u].name,
               m->unit[u].n_phys, (double)k.n[QKF_ACT_SPIKE] / S, (double)k.n[QKF_ACT_LOOKUP] / S,
               (double)k.n[QKF_ACT_MSG_OUT] / S, e[QKF_E_SYNAPSE] / S * 1e9,
               e[QKF_E_SOMA] / S * 1e9, e[QKF_E_NETWORK] / S * 1e9, e[QKF_E_TOTAL] / S * 1e9);
    }
    printf("\n%-6s %9s %9s %9s %9s %9s %11s %9s %9s%s\n", "step", "spikes", "lookups", "synapse",
           "soma", "network", "latency us", "net us", "sync us",
           c->detailed ? " detailed us   blocked" : "");
    for (int t = 0; t < c->T; t++) {
        qkf_cost_energy(hw, &c->step[t], e);
        printf("t=%-4d %9.4g %9.4g %9.3f %9.3f %9.3f %11.3f %9.3f %9.3f", t,
               (double)c->step[t].n[QKF_ACT_SPIKE] / S, (double)c->step[t].n[QKF_ACT_LOOKUP] / S,
               e[QKF_E_SYNAPSE] / S * 1e9, e[QKF_E_SOMA] / S * 1e9, e[QKF_E_NETWORK] / S * 1e9,
               c->lat_s[t] / S * 1e6, c->net_s[t] / S * 1e6, c->sync_s[t] / S * 1e6);
        if (c->detailed)
            printf(" %12.3f %9.4g", c->det_s[t] / S * 1e6, (double)c->n_blk[t] / S);
        printf("\n");
    }
    qkf_cost_counts all = qkf_cost_total(c);
    qkf_cost_energy(hw, &all, e);
    double lat = total_latency(c);
    printf("\nper inference on %s: %.4f uJ (synapse %.4f, dendrite %.4f, soma %.4f, network "
           "%.4f), %.3f us (%d steps)\n",
           hw->name, e[QKF_E_TOTAL] / S * 1e6, e[QKF_E_SYNAPSE] / S * 1e6,
           e[QKF_E_DENDRITE] / S * 1e6, e[QKF_E_SOMA] / S * 1e6, e[QKF_E_NETWORK] / S * 1e6,
           lat * 1e6, c->T);
    if (c->detailed) {
        double d = 0;
        for (int t = 0; t < c->T; t++)
            d += c->det_s[t];
        printf("latency per inference: %.3f us (simple model), %.3f us (detailed: contention, "
               "each core's messages in order)\n",
               lat * 1e6, d / S * 1e6);
    }
    if (m->n_phys > 0) {
        int bc = busiest(c), blk = 0;
        while (m->core[blk].phys != bc)
            blk++;
        printf("busiest core: %d (%s, tile %d,%d), busy %.3f us per inference = %.1f%% of it\n",
               bc, m->unit[m->core[blk].unit].name, m->core[blk].x, m->core[blk].y,
               c->busy_s[bc] / S * 1e6, lat > 0 ? 100.0 * c->busy_s[bc] / S / lat : 0.0);
    }
    if (ideal_pj > 0)
        printf("ideal-45nm (the engine's ACs and MACs at 0.9 / 4.6 pJ): %.4f uJ per inference\n",
               ideal_pj * 1e-6);
}

static void json_counts(FILE *f, const qkf_cost_counts *k)
{
    for (int i = 0; i < QKF_ACT_COUNT; i++)
        fprintf(f, "%s\"%s\": %lld", i ? ", " : "", qkf_act_names[i], (long long)k->n[i]);
}

static void json_energy(FILE *f, const qkf_hw_profile *hw, const qkf_cost_counts *k, double S)
{
    double e[QKF_E_COUNT];
    qkf_cost_energy(hw, k, e);
    fprintf(f,
            "{\"synapse\": %.9g, \"dendrite\": %.9g, \"soma\": %.9g, \"network\": %.9g, "
            "\"total\": %.9g}",
            e[0] / S, e[1] / S, e[2] / S, e[3] / S, e[4] / S);
}

static void json_name(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++)
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else
            fputc(*s, f);
    fputc('"', f);
}

void qkf_cost_write_json(FILE *f, const qkf_cost *c)
{
    const qkf_map *m = c->map;
    const qkf_hw_profile *hw = &m->hw;
    const qkf_hw_core_cost *k = &hw->cost;
    double S = c->samples ? (double)c->samples : 1;
    fprintf(f, "{\n    \"profile\": ");
    json_name(f, hw->name);
    fprintf(f,
            ",\n    \"chips\": %d, \"tiles\": %d, \"n_cores\": %d, \"blocks\": %d, \"mesh\": [%d, %d], "
            "\"cores_per_tile\": %d, \"samples\": %lld, \"steps\": %d, \"sync_s\": %.9g,\n",
            m->chips, m->tiles, m->n_phys, m->n_cores, hw->mesh_width, hw->mesh_height,
            hw->cores_per_tile,
            (long long)c->samples, c->T, m->sync_s);
    fprintf(f,
            "    \"costs\": {\"e_message_in\": %.9g, \"t_message_in\": %.9g, \"e_process_spike\": "
            "%.9g, \"t_process_spike\": %.9g, \"e_dendrite_update\": %.9g, \"t_dendrite_update\": "
            "%.9g, \"e_access_neuron\": %.9g, \"t_access_neuron\": %.9g, \"e_update_neuron\": "
            "%.9g, \"t_update_neuron\": %.9g, \"e_spike_out\": %.9g, \"t_spike_out\": %.9g, "
            "\"e_message_out\": %.9g, \"t_message_out\": %.9g, \"e_hop\": [%.9g, %.9g, %.9g, "
            "%.9g], \"t_hop\": [%.9g, %.9g, %.9g, %.9g]},\n",
            k->e_message_in, k->t_message_in, k->e_process_spike, k->t_process_spike,
            k->e_dendrite_update, k->t_dendrite_update, k->e_access_neuron, k->t_access_neuron,
            k->e_update_neuron, k->t_update_neuron, k->e_spike_out, k->t_spike_out,
            k->e_message_out, k->t_message_out, hop_e(hw, 0), hop_e(hw, 1), hop_e(hw, 2),
            hop_e(hw, 3), hop_t(hw, 0), hop_t(hw, 1), hop_t(hw, 2), hop_t(hw, 3));
    qkf_cost_counts all = qkf_cost_total(c);
    fprintf(f, "    \"activity\": {");
    json_counts(f, &all);
    fprintf(f, ", \"steps\": %lld},\n    \"energy_j\": ", (long long)c->samples * c->T);
    json_energy(f, hw, &all, S);
    double lat = total_latency(c);
    fprintf(f, ",\n    \"latency_s\": {\"per_step\": [");
    for (int t = 0; t < c->T; t++)
        fprintf(f, "%s%.9g", t ? ", " : "", c->lat_s[t] / S);
    fprintf(f, "], \"network\": [");
    for (int t = 0; t < c->T; t++)
        fprintf(f, "%s%.9g", t ? ", " : "", c->net_s[t] / S);
    fprintf(f, "], \"sync\": [");
    for (int t = 0; t < c->T; t++)
        fprintf(f, "%s%.9g", t ? ", " : "", c->sync_s[t] / S);
    fprintf(f, "], \"total\": %.9g},\n", lat);
    if (c->detailed) { /* SANA-FE's detailed model beside it (sim/noc.h) */
        double d = 0;
        fprintf(f, "    \"latency_detailed_s\": {\"model\": \"detailed\", \"per_step\": [");
        for (int t = 0; t < c->T; t++) {
            fprintf(f, "%s%.9g", t ? ", " : "", c->det_s[t] / S);
            d += c->det_s[t];
        }
        fprintf(f, "], \"blocking\": [");
        for (int t = 0; t < c->T; t++)
            fprintf(f, "%s%.9g", t ? ", " : "", c->blk_s[t] / S);
        fprintf(f, "], \"blocked_messages\": [");
        for (int t = 0; t < c->T; t++)
            fprintf(f, "%s%lld", t ? ", " : "", (long long)c->n_blk[t]);
        fprintf(f, "], \"total\": %.9g},\n", d / S);
    }
    if (m->n_phys > 0) {
        int bc = busiest(c);
        fprintf(f, "    \"busiest_core\": {\"core\": %d, \"busy_s\": %.9g, \"share\": %.6g},\n", bc,
                c->busy_s[bc] / S, lat > 0 ? c->busy_s[bc] / S / lat : 0.0);
    }
    fprintf(f, "    \"steps_detail\": [");
    for (int t = 0; t < c->T; t++) {
        fprintf(f, "%s\n      {\"t\": %d, ", t ? "," : "", t);
        json_counts(f, &c->step[t]);
        fprintf(f, ", \"energy_j\": ");
        json_energy(f, hw, &c->step[t], S);
        fprintf(f, ", \"latency_s\": %.9g", c->lat_s[t] / S);
        if (c->detailed)
            fprintf(f, ", \"latency_detailed_s\": %.9g", c->det_s[t] / S);
        fprintf(f, "}");
    }
    fprintf(f, "\n    ],\n    \"layers\": [");
    for (int u = 0; u < m->n_units; u++) {
        qkf_cost_counts ku = qkf_cost_unit(c, u);
        fprintf(f, "%s\n      {\"name\": ", u ? "," : "");
        json_name(f, m->unit[u].name);
        fprintf(f, ", \"kind\": \"%s\", \"neurons\": %lld, \"cores\": %d, \"limit\": \"%s\", ",
                qkf_unit_kind_name(m->unit[u].kind), (long long)m->unit[u].neurons,
                m->unit[u].n_phys, m->unit[u].limit);
        json_counts(f, &ku);
        fprintf(f, ", \"energy_j\": ");
        json_energy(f, hw, &ku, S);
        fprintf(f, "}");
    }
    fprintf(f, "\n    ],\n    \"cores\": [");
    for (int i = 0; i < m->n_cores; i++) {
        const qkf_map_core *co = &m->core[i];
        double e[QKF_E_COUNT];
        qkf_cost_energy(hw, &c->core[i], e);
        fprintf(f, "%s\n      {\"tile\": [%d, %d], \"core\": %d, \"block\": %d, \"layer\": ",
                i ? "," : "", co->x, co->y, co->phys, i);
        json_name(f, m->unit[co->unit].name);
        fprintf(f, ", \"neurons\": %lld, ", (long long)co->neurons);
        json_counts(f, &c->core[i]);
        fprintf(f, ", \"energy_j\": %.9g, \"core_busy_s\": %.9g}", e[QKF_E_TOTAL] / S,
                c->busy_s[co->phys] / S);
    }
    fprintf(f, "\n    ]\n  }");
}
