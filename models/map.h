/* Mapping QKFormer onto a chip's cores (qkf map, and the cost model of sim/cost.c).
 *
 * Units. The model is cut into units, each a set of neurons that one kind of core computes:
 * every conv with its BatchNorm, pool and LIF (named after the LIF, "stage1.0.tssa.q_lif"), the
 * Q-K attention neuron (QK_SUM + attn_lif, named "...tssa.attn_lif"), the Q-K mask as AND
 * neurons ("...tssa.mask"), SSA's K^T V table ("...ssa.kv") and its attention LIF
 * ("...ssa.attn_lif"), and the readout's feature counters ("head"). Residual sums are no unit:
 * a sum's consumers receive the spikes of both summands (docs/hardware.md, "Mapping and costs").
 * A unit's neurons are indexed per sample as c*N + token (the official flattening), with C and
 * N as below.
 *
 * Blocks and cores. A unit is tiled into blocks of tq consecutive tokens x cc consecutive
 * channels, each as large as every limit of the profile allows (neurons per core, input axons
 * per core, synaptic memory per core as the chip stores the weights), chosen to use the fewest
 * blocks. Block (r, g) holds tokens [r*tq, (r+1)*tq) of channels [g*cc, (g+1)*cc) and is
 * m->core[first_core + r*groups + g]. Blocks go onto physical cores in unit order, a core
 * taking the next block while the sums stay within its limits (small layers share a core;
 * Speck: one layer per core); cores are placed on the mesh tile after tile along a serpentine
 * path (so consecutive units sit side by side), cores_per_tile to a tile, chip after chip along
 * x. Deterministic: nothing but the graph and the profile decides. */
#ifndef QKF_MAP_H
#define QKF_MAP_H

#include <stdint.h>

#include "hw.h"
#include "qkformer.h"

typedef enum {
    QKF_UNIT_ENCODE = 0, /* conv on a real-valued image (+ pool + LIF): its MACs run once */
    QKF_UNIT_CONV,       /* conv on spikes (+ pool + LIF) */
    QKF_UNIT_QK_ATTN,    /* Q-K attention neuron: QKTA [heads][N], QKCA [C][1] */
    QKF_UNIT_MASK,       /* Q-K mask: AND of k and the attention neuron, [C][N] */
    QKF_UNIT_KV,         /* SSA's K^T V table, [heads*d][d] (c = head*d + row, token = column) */
    QKF_UNIT_SSA_LIF,    /* SSA's attention LIF on q x kv, [C][N] */
    QKF_UNIT_READOUT,    /* readout feature counters [C][1]; the linear head's MACs once */
    QKF_UNIT_KIND_COUNT
} qkf_unit_kind;

const char *qkf_unit_kind_name(qkf_unit_kind k);

#define QKF_MAP_MAX_IN 4

/* Where a unit's inputs come from: a tensor's spikes reach it from these source units (a
 * residual sum expanded into its summands; -1: the model's input, from outside the mesh). */
typedef struct {
    int n;
    int src[32];
} qkf_map_sources;

typedef struct {
    char name[QKF_MAX_NAME];
    qkf_unit_kind kind;
    int op;        /* the graph op: conv, qk_sum, mask, ssa or readout */
    int lif_index; /* the LIF layer whose spikes it emits, or -1 (kv, readout, mask) */
    int C, N;      /* neurons per sample C * N, index c*N + token */
    int gh, gw;    /* token grid (N = gh * gw; 1 x 1 for kv's columns, counters) */
    int64_t neurons;
    /* conv geometry (encode / conv): input grid and channels, kernel, pre-pool output grid */
    int cin, k, stride, pad, pool, ih, iw, ho, wo;
    int heads, d; /* attention units */
    /* inputs: in[0..n_in) are the source sets of its input tensors, in the op's order
     * (conv: x; qk_attn: q; mask: attn, k; kv: k, v; ssa_lif: q; readout: x) */
    int n_in;
    qkf_map_sources in[QKF_MAP_MAX_IN];
    /* the tiling */
    int tq, cc;         /* tokens and channels per block */
    int runs, groups;   /* ceil(N / tq), ceil(C / cc) */
    int first_core, n_cores; /* its blocks: m->core[first_core .. first_core + n_cores) */
    int n_phys;              /* the physical cores they sit on */
    const char *limit; /* the limit that stops a block from growing ("whole layer" if none) */
    int64_t cap;       /* neurons per block allowed by the cores' fan-out (0: no cap) */
    int64_t max_axons, max_syn_bytes; /* the largest block's input axons and synaptic bytes */
    int stat_node;     /* qkf_stats node whose accumulates this unit performs (or part) */
    int spike_node;    /* qkf_stats node whose out_spikes are this unit's spikes, or -1 */
} qkf_map_unit;

/* A block of a unit's neurons (m->core[i]) and the physical core that holds it (phys): small
 * blocks share a core while its limits allow (next fit in unit order; one layer per core on
 * Speck). Block i of unit u is i - first_core = run * groups + group. */
typedef struct {
    int unit;
    int run, group; /* the block */
    int phys;       /* the physical core */
    int64_t axons, bytes; /* the block's input axons and synaptic bytes */
    int64_t fan_out, dests; /* its physical core's output axons and destination cores (computed
                               when the profile limits them) */
    int chip, tile, slot; /* tile within the chip, core within the tile */
    int x, y;             /* global tile coordinates (chip c spans x in [c*width, (c+1)*width)) */
    int64_t neurons;
} qkf_map_core;

typedef struct {
    qkf_hw_profile hw;
    const qkf_graph *g;
    int n_units;
    qkf_map_unit *unit;
    int n_cores;        /* blocks */
    qkf_map_core *core; /* [n_cores] */
    int n_phys;         /* physical cores in use */
    int chips, tiles;
    int64_t neurons; /* all units */
    int sync_tiles;  /* tiles in use (the sync table's key) */
    double sync_s;   /* the sync latency per step that applies */
} qkf_map;

/* Maps graph g onto profile hw (copied). g must outlive the map. On a model that does not fit,
 * returns -1 with the error "layer NAME: LIMIT: needs X, the core (chip) has Y (Z over)". */
int qkf_map_build(qkf_map *m, const qkf_graph *g, const qkf_hw_profile *hw);
void qkf_map_free(qkf_map *m);

/* The core of neuron x (per-sample index) of unit u. */
static inline int qkf_map_core_of(const qkf_map *m, int u, int64_t x)
{
    const qkf_map_unit *un = &m->unit[u];
    int c = (int)(x / un->N), q = (int)(x % un->N);
    return un->first_core + (q / un->tq) * un->groups + c / un->cc;
}

/* The per-sample neuron ranges of core i: calls f(first, end, arg) for each contiguous range of
 * c*N + token it holds, ascending. Returns how many. */
int qkf_map_core_ranges(const qkf_map *m, int i, void (*f)(int64_t, int64_t, void *), void *arg);

/* The kernel taps of conv unit u that input position p (row-major in its ih x iw grid) reaches,
 * in the order (ky, kx): for each tap whose output lands inside the ho x wo grid, the token that
 * holds that pre-pool output (with a pool: the pooled neuron whose window holds it) in hm[i] and
 * ky * k + kx in kk[i] (kk may be NULL). Returns how many (at most k * k <= QKF_MAP_TAPS). */
#define QKF_MAP_TAPS 64
int qkf_map_conv_taps(const qkf_map_unit *u, int p, int *hm, int *kk);

/* The destinations of one spike: in consumer unit v, through its input slot, the targets of
 * source neuron x (per-sample index c*N + token in that input's tensor). Writes the distinct
 * cores holding targets and the synapse look-ups on each (per spike; SSA's kv table takes its
 * look-ups per co-active pair instead, so 0 here), returns how many (at most m->unit[v].n_cores).
 * touched (optional, [neurons of v]): set to 1 for every target neuron. */
int qkf_map_targets(const qkf_map *m, int v, int slot, int64_t x, int *cores, int64_t *lookups,
                    uint8_t *touched);
/* Units that receive input slot `slot` of unit v from unit s (-1: the model input). */
int qkf_map_feeds(const qkf_map *m, int s, int v, int slot);

/* Prints the per-layer table and the totals. */
void qkf_map_print(const qkf_map *m);

#endif
