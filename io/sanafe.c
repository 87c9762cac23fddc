/* SANA-FE export of a mapped model driven by recorded spikes (io/sanafe.h). The formats are
 * SANA-FE v2's (snn/README.md, arch/README.md and src/yaml_snn.cpp, src/yaml_arch.cpp of
 * SLAM-Lab/SANA-FE): a group's neurons `- id: [attr: value]`, edges `- G.i -> H.j: [attrs]`,
 * mappings `- G.i: {core: TILE.CORE, soma: UNIT}`; tiles numbered x * height + y
 * (src/arch.cpp). SANA-FE's `input` soma keeps ONE spike train per unit (src/models.cpp,
 * InputModel), hence one unit per neuron slot of a core, as its arch/loihi.yaml does. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/base.h"
#include "map_json.h"
#include "sanafe.h"

static const char *const files[] = {"arch.yaml", "snn.yaml", "qkf.json"};
enum { N_FILES = 3 };

/* ---- the directory ---------------------------------------------------------------------------- */

/* Removes an earlier export in dir (only our files; anything else there: refused). 0: dir is
 * gone or never existed. */
static int clear_export(const char *dir, const char *what)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return errno == ENOENT ? 0 : qkf_set_error("%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return qkf_set_error("%s: exists and is no directory (%s)", dir, what);
    DIR *d = opendir(dir);
    if (!d)
        return qkf_set_error("%s: %s", dir, strerror(errno));
    struct dirent *e;
    int foreign = 0;
    while ((e = readdir(d)) && !foreign) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        foreign = 1;
        for (int i = 0; i < N_FILES; i++)
            foreign &= strcmp(e->d_name, files[i]) != 0;
    }
    closedir(d);
    if (foreign)
        return qkf_set_error("%s: holds files other than an export's (arch.yaml, snn.yaml, "
                             "qkf.json): not replaced (%s)",
                             dir, what);
    char p[4200];
    for (int i = 0; i < N_FILES; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            return qkf_set_error("%s: %s", p, strerror(errno));
    }
    if (rmdir(dir) != 0)
        return qkf_set_error("%s: %s", dir, strerror(errno));
    return 0;
}

static FILE *open_in(const char *tmp, const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    if (!f)
        qkf_set_error("%s: cannot create (%s)", path, strerror(errno));
    return f;
}

static int close_file(FILE *f, const char *path)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return qkf_set_error("%s: write failed (%s)", path, strerror(errno ? errno : EIO));
    return 0;
}

/* ---- where each neuron sits --------------------------------------------------------------------- */

typedef struct {
    const qkf_map *m;
    int **slot;  /* [unit][neuron]: its soma unit on its core */
    int *next;   /* [phys]: slots given so far */
    int u;
} place_ctx;

static void place_range(int64_t a, int64_t b, void *arg)
{
    place_ctx *p = arg;
    int ph = p->m->core[qkf_map_core_of(p->m, p->u, a)].phys;
    for (int64_t x = a; x < b; x++)
        p->slot[p->u][x] = p->next[ph]++;
}

/* ---- the synapses ------------------------------------------------------------------------------- */

typedef void (*edge_fn)(int64_t target, double w, int has_w, void *arg);

/* Every synapse neuron x of input slot `slot` of unit v looks up, one call per synapse (a pooled
 * neuron reached through two taps: two synapses), as qkf_map_targets counts them. W: the conv
 * weights [cout][cin][k][k] (conv units). */
static void targets(const qkf_map *m, const qkf_map_unit *u, int slot, int64_t x, const float *W,
                    edge_fn f, void *arg)
{
    int d = u->d;
    int64_t src_n = (int64_t)u->ih * u->iw;
    int ci = (int)(x / src_n), p = (int)(x % src_n);
    switch (u->kind) {
    case QKF_UNIT_CONV: {
        int hm[QKF_MAP_TAPS], kk[QKF_MAP_TAPS], nt = qkf_map_conv_taps(u, p, hm, kk);
        int64_t k2 = (int64_t)u->k * u->k;
        for (int i = 0; i < nt; i++)
            for (int co = 0; co < u->C; co++)
                f((int64_t)co * u->N + hm[i],
                  W ? W[((int64_t)co * u->cin + ci) * k2 + kk[i]] : 0.0f, 1, arg);
        return;
    }
    case QKF_UNIT_QK_ATTN:
        f(u->N == 1 ? ci : (int64_t)(ci / d) * u->N + p, 1.0, 1, arg);
        return;
    case QKF_UNIT_MASK:
        if (slot == 1) { /* k (ci, p) */
            f((int64_t)ci * u->N + p, 1.0, 1, arg);
        } else if (src_n == u->N && m->unit[u->in[0].src[0]].N != 1) {
            /* QKTA attention (head, p): its head's d channels */
            for (int c = ci * d; c < (ci + 1) * d; c++)
                f((int64_t)c * u->N + p, 1.0, 1, arg);
        } else { /* QKCA attention (c, 0): channel c at every token */
            for (int q = 0; q < u->N; q++)
                f(x * u->N + q, 1.0, 1, arg);
        }
        return;
    case QKF_UNIT_SSA_LIF: /* q (ci, p) -> its head's d neurons at p, the kv table's row ci */
        for (int c = ci / d * d; c < (ci / d + 1) * d; c++)
            f((int64_t)c * u->N + p, 0.0, 0, arg);
        return;
    case QKF_UNIT_READOUT:
        f(ci, 1.0, 1, arg);
        return;
    default:
        return;
    }
}

typedef struct {
    FILE *f;
    const qkf_map *m;
    int s, v;
    int64_t x, n;
    int64_t gid;    /* the source neuron's index over all units */
    uint8_t *reach; /* bits [neuron][phys]: the cores its spikes go to */
} edge_ctx;

static void write_edge(int64_t t, double w, int has_w, void *arg)
{
    edge_ctx *e = arg;
    int64_t bit = e->gid * e->m->n_phys + e->m->core[qkf_map_core_of(e->m, e->v, t)].phys;
    e->reach[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    if (has_w)
        fprintf(e->f, "    - L%d.%lld -> L%d.%lld: [weight: 0.0, qkf_w: %.9g]\n", e->s,
                (long long)e->x, e->v, (long long)t, w);
    else
        fprintf(e->f, "    - L%d.%lld -> L%d.%lld: [weight: 0.0]\n", e->s, (long long)e->x, e->v,
                (long long)t);
    e->n++;
}

typedef struct {
    const qkf_map *m;
    int v;
    int64_t *xc; /* [np][stride] of the step */
    int stride, col;
} look_ctx;

static void count_lookup(int64_t t, double w, int has_w, void *arg)
{
    look_ctx *l = arg;
    (void)w, (void)has_w;
    l->xc[(int64_t)l->m->core[qkf_map_core_of(l->m, l->v, t)].phys * l->stride + l->col]++;
}

/* Does unit v take its input slot `slot` as synapses SANA-FE can hold? */
static int slot_exported(const qkf_map_unit *v, int slot)
{
    switch (v->kind) {
    case QKF_UNIT_CONV:
    case QKF_UNIT_QK_ATTN:
    case QKF_UNIT_MASK:
    case QKF_UNIT_READOUT:
        return 1;
    case QKF_UNIT_SSA_LIF:
        return slot == 0;
    default: /* the encoding conv's pixels, the kv table's coincidences */
        return 0;
    }
}

/* ---- the files ---------------------------------------------------------------------------------- */

static void write_arch(FILE *f, const qkf_map *m, int slots)
{
    const qkf_hw_profile *hw = &m->hw;
    const qkf_hw_core_cost *k = &hw->cost;
    int W = m->chips * hw->mesh_width, H = hw->mesh_height;
    fprintf(f,
            "# SANA-FE architecture written by qkf map --export-sanafe from profile '%s': its\n"
            "# mesh (%d chip%s of %d x %d tiles side by side along x), cores and costs. Every\n"
            "# neuron plays the spike train qkf's event engine recorded: a soma unit of model\n"
            "# `input` per neuron slot of a core, priced as the profile's soma.\n",
            hw->name, m->chips, m->chips == 1 ? "" : "s", hw->mesh_width, hw->mesh_height);
    fprintf(f,
            "architecture:\n  name: qkf_%s\n  attributes:\n    topology: mesh\n    width: %d\n"
            "    height: %d\n    link_buffer_size: %d\n",
            hw->name, W, H, hw->link_buffer_size > 0 ? hw->link_buffer_size : 16);
    if (hw->sync_table && hw->n_sync > 0) {
        fprintf(f, "    sync_model: table\n    latency_sync: {");
        for (int i = 0; i < hw->n_sync; i++)
            fprintf(f, "%s%d: %.9g", i ? ", " : " ", hw->sync_tiles[i], hw->sync_s[i]);
        fprintf(f, " }\n");
    } else {
        fprintf(f, "    sync_model: fixed\n    latency_sync: %.9g\n",
                hw->n_sync > 0 ? hw->sync_s[0] : 0.0);
    }
    static const char *const dir[4] = {"north", "east", "south", "west"};
    fprintf(f, "  tile:\n    - name: qkf_tile[0..%d]\n      attributes:\n", W * H - 1);
    for (int d = 0; d < 4; d++) {
        double e = hw->e_hop[d] != 0 ? hw->e_hop[d] : d % 2 ? hw->e_hop_ew : hw->e_hop_ns;
        double t = hw->t_hop[d] != 0 ? hw->t_hop[d] : d % 2 ? hw->t_hop_ew : hw->t_hop_ns;
        fprintf(f, "        energy_%s_hop: %.9g\n        latency_%s_hop: %.9g\n", dir[d], e,
                dir[d], t);
    }
    fprintf(f,
            "      core:\n        - name: qkf_core[0..%d]\n          attributes:\n"
            "            buffer_position: %s\n            buffer_inside_unit: %s\n"
            "            max_neurons_supported: %d\n",
            hw->cores_per_tile - 1, hw->buffer_position[0] ? hw->buffer_position : "soma",
            hw->buffer_inside_unit ? "true" : "false", slots);
    fprintf(f,
            "          axon_in:\n            - name: qkf_in\n              attributes:\n"
            "                energy_message_in: %.9g\n                latency_message_in: %.9g\n",
            k->e_message_in, k->t_message_in);
    fprintf(f,
            "          soma:\n            - name: qkf_forced[0..%d]\n              attributes:\n"
            "                model: input\n"
            "                energy_access_neuron: %.9g\n                latency_access_neuron: %.9g\n"
            "                energy_update_neuron: %.9g\n                latency_update_neuron: %.9g\n"
            "                energy_spike_out: %.9g\n                latency_spike_out: %.9g\n",
            slots - 1, k->e_access_neuron, k->t_access_neuron, k->e_update_neuron,
            k->t_update_neuron, k->e_spike_out, k->t_spike_out);
    fprintf(f,
            "          dendrite:\n            - name: qkf_dendrite\n              attributes:\n"
            "                model: accumulator\n                energy_update: %.9g\n"
            "                latency_update: %.9g\n",
            k->e_dendrite_update, k->t_dendrite_update);
    fprintf(f,
            "          synapse:\n            - name: qkf_synapse\n              attributes:\n"
            "                model: current_based\n                energy_process_spike: %.9g\n"
            "                latency_process_spike: %.9g\n",
            k->e_process_spike, k->t_process_spike);
    fprintf(f,
            "          axon_out:\n            - name: qkf_out\n              attributes:\n"
            "                energy_message_out: %.9g\n                latency_message_out: %.9g\n",
            k->e_message_out, k->t_message_out);
}

/* A unit's spikes of step t (NULL: it emits none: kv table, readout counters). */
static const uint8_t *unit_spikes(const qkf_map *m, const uint8_t *const *spikes, uint8_t **mask,
                                  int u, int t)
{
    const qkf_map_unit *un = &m->unit[u];
    if (un->kind == QKF_UNIT_MASK)
        return mask[u] + (int64_t)t * un->neurons;
    if (un->lif_index < 0)
        return NULL;
    return spikes[un->lif_index] + (int64_t)t * un->neurons;
}

int qkf_sanafe_write(const qkf_map *m, const qkf_params *params, const uint8_t *const *spikes,
                     int T, void (*counts)(FILE *, void *), void *arg, const char *dir)
{
    const qkf_graph *g = m->g;
    int nu = m->n_units, rc = -1;
    if (qkf_config_is_frames(&g->cfg))
        return qkf_set_error("--export-sanafe: a %s model's input events arrive from outside the "
                             "mesh, which SANA-FE's network format has no source for: export an "
                             "image model",
                             qkf_variant_name(g->cfg.variant));
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        if (un->kind == QKF_UNIT_MASK &&
            (un->in[0].n != 1 || un->in[1].n != 1 || un->in[0].src[0] < 0 ||
             un->in[1].src[0] < 0 || m->unit[un->in[1].src[0]].lif_index < 0 ||
             m->unit[un->in[0].src[0]].lif_index < 0))
            return qkf_set_error("%s: the mask's inputs are not one attention and one k layer",
                                 un->name);
        if (un->kind == QKF_UNIT_CONV)
            for (int i = 0; i < un->in[0].n; i++)
                if (un->in[0].src[i] < 0)
                    return qkf_set_error("%s: takes the model's input as spikes, which SANA-FE's "
                                         "network format has no source for",
                                         un->name);
    }
    char tmp[4096], path[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
        return qkf_set_error("%s: path too long", dir);
    if (clear_export(tmp, "a leftover of an earlier export") ||
        clear_export(dir, "an earlier export is replaced, nothing else"))
        return -1;
    if (mkdir(tmp, 0777) != 0)
        return qkf_set_error("%s: cannot create (%s)", tmp, strerror(errno));

    /* soma slots: neurons numbered per physical core in block order */
    place_ctx pc = {m, qkf_calloc((size_t)nu, sizeof(int *)),
                    qkf_calloc((size_t)(m->n_phys > 0 ? m->n_phys : 1), sizeof(int)), 0};
    uint8_t **mask = qkf_calloc((size_t)nu, sizeof(uint8_t *));
    int64_t *n_edges = qkf_calloc((size_t)nu, sizeof(int64_t));
    FILE *f = NULL;
    int np = m->n_phys > 0 ? m->n_phys : 1;
    int64_t *base = qkf_calloc((size_t)nu + 1, sizeof(int64_t)), *xc = NULL, *hops = NULL;
    int *px = NULL, *py = NULL;
    for (int u = 0; u < nu; u++)
        base[u + 1] = base[u] + m->unit[u].neurons;
    edge_ctx ec = {NULL, m, 0, 0, 0, 0, 0, qkf_calloc((size_t)((base[nu] * np + 7) / 8 + 1), 1)};
    for (int u = 0; u < nu; u++)
        pc.slot[u] = qkf_malloc((size_t)m->unit[u].neurons * sizeof(int));
    for (int i = 0; i < m->n_cores; i++) {
        pc.u = m->core[i].unit;
        qkf_map_core_ranges(m, i, place_range, &pc);
    }
    int slots = 1;
    for (int p = 0; p < m->n_phys; p++)
        slots = pc.next[p] > slots ? pc.next[p] : slots;
    /* the masks' spikes: k where the attention neuron fired (as sim/cost.c) */
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        if (un->kind != QKF_UNIT_MASK)
            continue;
        mask[u] = qkf_calloc((size_t)(T * un->neurons), 1);
        int qkca = m->unit[un->in[0].src[0]].N == 1;
        for (int t = 0; t < T; t++) {
            const uint8_t *sa = spikes[m->unit[un->in[0].src[0]].lif_index] +
                                (int64_t)t * m->unit[un->in[0].src[0]].neurons;
            const uint8_t *sk = spikes[m->unit[un->in[1].src[0]].lif_index] +
                                (int64_t)t * m->unit[un->in[1].src[0]].neurons;
            for (int c = 0; c < un->C; c++)
                for (int n = 0; n < un->N; n++) {
                    int64_t x = (int64_t)c * un->N + n;
                    mask[u][(int64_t)t * un->neurons + x] =
                        sk[x] && sa[qkca ? c : (int64_t)(c / un->d) * un->N + n];
                }
        }
    }

    if (!(f = open_in(tmp, "arch.yaml", path, sizeof path)))
        goto out;
    write_arch(f, m, slots);
    if (close_file(f, path))
        goto out_nof;

    if (!(f = open_in(tmp, "snn.yaml", path, sizeof path)))
        goto out;
    fprintf(f,
            "# SANA-FE network written by qkf map --export-sanafe (profile '%s', %d steps): group\n"
            "# L<u> is qkf unit u (qkf.json names them), neuron id c*N + token; each neuron plays\n"
            "# its recorded spikes; an edge is a synapse a spike looks up (weight 0.0: SANA-FE's\n"
            "# input soma refuses current; qkf_w: the model's weight).\n",
            m->hw.name, T);
    for (int u = 0; u < nu; u++)
        fprintf(f, "#   L%d  %s (%s, %lld neurons)\n", u, m->unit[u].name,
                qkf_unit_kind_name(m->unit[u].kind), (long long)m->unit[u].neurons);
    fprintf(f, "network:\n  name: qkf\n  groups:\n");
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        fprintf(f, "    - name: L%d\n      attributes: [log_spikes: false]\n      neurons:\n", u);
        for (int64_t x = 0; x < un->neurons; x++) {
            fprintf(f, "        - %lld: [spikes: [", (long long)x);
            for (int t = 0; t < T; t++) {
                const uint8_t *sp = unit_spikes(m, spikes, mask, u, t);
                fprintf(f, "%s%d", t ? ", " : "", sp && sp[x] ? 1 : 0);
            }
            fprintf(f, "]]\n");
        }
    }
    fprintf(f, "  edges:\n");
    ec.f = f;
    for (int v = 0; v < nu; v++) {
        const qkf_map_unit *vu = &m->unit[v];
        const float *W = NULL;
        if (vu->kind == QKF_UNIT_CONV) {
            const qkf_op *op = &g->ops[vu->op];
            if (op->p_w < 0 || !params || op->p_w >= params->n)
                goto bad_w;
            W = params->data + params->p[op->p_w].offset;
        }
        ec.v = v, ec.n = 0;
        for (int sl = 0; sl < vu->n_in; sl++) {
            if (!slot_exported(vu, sl))
                continue;
            for (int s = 0; s < nu; s++) {
                if (!qkf_map_feeds(m, s, v, sl))
                    continue;
                ec.s = s;
                for (int64_t x = 0; x < m->unit[s].neurons; x++) {
                    ec.x = x, ec.gid = base[s] + x;
                    targets(m, vu, sl, x, W, write_edge, &ec);
                }
            }
        }
        n_edges[v] = ec.n;
    }
    fprintf(f, "mappings:\n");
    for (int u = 0; u < nu; u++)
        for (int64_t x = 0; x < m->unit[u].neurons; x++) {
            const qkf_map_core *co = &m->core[qkf_map_core_of(m, u, x)];
            fprintf(f, "  - L%d.%lld: {core: %d.%d, soma: \"qkf_forced[%d]\"}\n", u, (long long)x,
                    co->x * m->hw.mesh_height + co->y, co->slot, pc.slot[u][x]);
        }
    if (close_file(f, path))
        goto out_nof;

    /* what SANA-FE should count on this network, per step and physical core: every neuron
     * accessed; a neuron of the input soma updated only when it fires; per spike, its edges
     * looked up and one message per destination core, hops along x then y (SANA-FE: east if the
     * destination's x is larger, north if its y is larger) */
    enum { X_ACC, X_UPD, X_SPK, X_LOOK, X_OUT, X_IN, X_N };
    xc = qkf_calloc((size_t)T * np * X_N, sizeof(int64_t));
    hops = qkf_calloc((size_t)T * 4, sizeof(int64_t)); /* north east south west */
    px = qkf_malloc((size_t)np * sizeof(int)), py = qkf_malloc((size_t)np * sizeof(int));
    for (int i = 0; i < m->n_cores; i++)
        px[m->core[i].phys] = m->core[i].x, py[m->core[i].phys] = m->core[i].y;
    for (int t = 0; t < T; t++)
        for (int u = 0; u < nu; u++) {
            const uint8_t *sp = unit_spikes(m, spikes, mask, u, t);
            for (int64_t x = 0; x < m->unit[u].neurons; x++) {
                int src = m->core[qkf_map_core_of(m, u, x)].phys;
                int64_t *k = xc + ((int64_t)t * np + src) * X_N;
                k[X_ACC]++;
                if (!sp || !sp[x])
                    continue;
                k[X_UPD]++, k[X_SPK]++;
                int64_t g0 = (base[u] + x) * np;
                for (int p = 0; p < np; p++) {
                    if (!(ec.reach[(g0 + p) >> 3] >> ((g0 + p) & 7) & 1))
                        continue;
                    k[X_OUT]++;
                    xc[((int64_t)t * np + p) * X_N + X_IN]++;
                    int dx = px[p] - px[src], dy = py[p] - py[src];
                    hops[t * 4 + (dy > 0 ? 0 : 2)] += dy > 0 ? dy : -dy;
                    hops[t * 4 + (dx > 0 ? 1 : 3)] += dx > 0 ? dx : -dx;
                }
            }
        }
    /* look-ups land on the cores of the targets: counted per target core */
    for (int v = 0; v < nu; v++) {
        const qkf_map_unit *vu = &m->unit[v];
        for (int sl = 0; sl < vu->n_in; sl++) {
            if (!slot_exported(vu, sl))
                continue;
            for (int s = 0; s < nu; s++) {
                if (!qkf_map_feeds(m, s, v, sl))
                    continue;
                for (int t = 0; t < T; t++) {
                    const uint8_t *sp = unit_spikes(m, spikes, mask, s, t);
                    for (int64_t x = 0; sp && x < m->unit[s].neurons; x++)
                        if (sp[x]) {
                            look_ctx lc = {m, v, xc + (int64_t)t * np * X_N, X_N, X_LOOK};
                            targets(m, vu, sl, x, NULL, count_lookup, &lc);
                        }
                }
            }
        }
    }

    if (!(f = open_in(tmp, "qkf.json", path, sizeof path)))
        goto out;
    fprintf(f, "{\n  \"steps\": %d,\n  \"groups\": [", T);
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m->unit[u];
        int edges = 0;
        for (int sl = 0; sl < un->n_in; sl++)
            edges |= slot_exported(un, sl);
        fprintf(f, "%s\n    {\"group\": \"L%d\", \"layer\": ", u ? "," : "", u);
        qkf_json_str(f, un->name);
        fprintf(f, ", \"kind\": \"%s\", \"neurons\": %lld, \"edges_in\": %lld, \"inputs\": \"%s\"}",
                qkf_unit_kind_name(un->kind), (long long)un->neurons, (long long)n_edges[u],
                edges ? (un->kind == QKF_UNIT_SSA_LIF ? "q as edges; the kv table's look-ups not"
                                                      : "edges")
                      : (un->kind == QKF_UNIT_ENCODE ? "pixels (MACs at step 0): not exported"
                                                     : "k, v coincidences: not exported"));
    }
    fprintf(f, "\n  ],\n  \"export\": {\"note\": \"what SANA-FE should count on snn.yaml (hops in "
               "SANA-FE's directions: north = towards larger y)\", \"steps\": [");
    for (int t = 0; t < T; t++) {
        int64_t a[X_N] = {0};
        for (int p = 0; p < np; p++)
            for (int j = 0; j < X_N; j++)
                a[j] += xc[((int64_t)t * np + p) * X_N + j];
        fprintf(f,
                "%s\n    {\"t\": %d, \"neuron_accesses\": %lld, \"neuron_updates\": %lld, "
                "\"spikes_out\": %lld, \"synapse_lookups\": %lld, \"messages_out\": %lld, "
                "\"messages_in\": %lld, \"hops_north\": %lld, \"hops_east\": %lld, "
                "\"hops_south\": %lld, \"hops_west\": %lld}",
                t ? "," : "", t, (long long)a[X_ACC], (long long)a[X_UPD], (long long)a[X_SPK],
                (long long)a[X_LOOK], (long long)a[X_OUT], (long long)a[X_IN],
                (long long)hops[t * 4], (long long)hops[t * 4 + 1], (long long)hops[t * 4 + 2],
                (long long)hops[t * 4 + 3]);
    }
    fprintf(f, "\n  ], \"cores\": [");
    for (int p = 0; p < np && m->n_phys > 0; p++) {
        fprintf(f, "%s\n    {\"core\": %d, \"tile\": [%d, %d], \"per_step\": [", p ? "," : "", p,
                px[p], py[p]);
        for (int t = 0; t < T; t++) {
            const int64_t *k = xc + ((int64_t)t * np + p) * X_N;
            fprintf(f, "%s[%lld, %lld, %lld, %lld, %lld, %lld]", t ? ", " : "", (long long)k[0],
                    (long long)k[1], (long long)k[2], (long long)k[3], (long long)k[4],
                    (long long)k[5]);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ], \"core_columns\": [\"neuron_accesses\", \"neuron_updates\", "
               "\"spikes_out\", \"synapse_lookups\", \"messages_out\", \"messages_in\"]}");
    if (counts) {
        fprintf(f, ",\n  \"hw\": ");
        counts(f, arg);
    }
    fprintf(f, "\n}\n");
    if (close_file(f, path))
        goto out_nof;
    if (rename(tmp, dir) != 0) {
        qkf_set_error("%s: cannot rename %s to it (%s)", dir, tmp, strerror(errno));
        goto out_nof;
    }
    rc = 0;
    goto done;
bad_w:
    qkf_set_error("--export-sanafe: a conv layer's weights are missing from the parameters");
out:
    if (f)
        fclose(f);
out_nof:
    clear_export(tmp, "");
done:
    for (int u = 0; u < nu; u++) {
        qkf_free(pc.slot[u]);
        qkf_free(mask[u]);
    }
    qkf_free(pc.slot), qkf_free(pc.next), qkf_free(mask), qkf_free(n_edges);
    qkf_free(base), qkf_free(ec.reach);
    qkf_free(xc), qkf_free(hops), qkf_free(px), qkf_free(py);
    return rc;
}
