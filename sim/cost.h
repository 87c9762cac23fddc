/* What each time step costs on a chip: the activity of every core of a mapping (models/map.h),
 * counted from an event-engine run's exact spikes, priced as SANA-FE's simple model prices it
 * (docs/hardware.md, "Mapping and costs").
 *
 * Per sample, step and core: neuron accesses (every mapped neuron, every step), neuron updates
 * (every neuron of a unit with a bias, the neurons that received input elsewhere), spikes out,
 * synapse look-ups (per incoming spike and target synapse; the encoding conv's MACs at step 0,
 * the readout head's MACs at the last step), dendrite updates (a pooled conv's window reads),
 * messages out (one per destination core of a spike) and in, and hops along the XY route in
 * each direction. Energy = sum of counts x per-activity energy; a step's latency = max(the
 * slowest core's generation (soma + axon out), the slowest core's processing (axon in +
 * synapse + dendrite)) + the longest route's hop latency + the sync. Counts are totals over the
 * samples run; energy and latency are per sample. */
#ifndef QKF_COST_H
#define QKF_COST_H

#include <stdint.h>
#include <stdio.h>

#include "../models/map.h"
#include "noc.h"

typedef enum {
    QKF_ACT_ACCESS = 0, /* neuron_accesses */
    QKF_ACT_UPDATE,     /* neuron_updates */
    QKF_ACT_SPIKE,      /* spikes_out */
    QKF_ACT_LOOKUP,     /* synapse_lookups */
    QKF_ACT_DENDRITE,   /* dendrite_updates */
    QKF_ACT_MSG_OUT,    /* messages_out */
    QKF_ACT_MSG_IN,     /* messages_in */
    QKF_ACT_HOP_N,      /* hops_north (towards y - 1) */
    QKF_ACT_HOP_E,      /* hops_east (towards x + 1) */
    QKF_ACT_HOP_S,
    QKF_ACT_HOP_W,
    QKF_ACT_COUNT
} qkf_act;

extern const char *const qkf_act_names[QKF_ACT_COUNT]; /* the report's keys */

typedef struct {
    int64_t n[QKF_ACT_COUNT];
} qkf_cost_counts;

enum { QKF_E_SYNAPSE = 0, QKF_E_DENDRITE, QKF_E_SOMA, QKF_E_NETWORK, QKF_E_TOTAL, QKF_E_COUNT };

typedef struct {
    const qkf_map *map;
    int T;
    int64_t samples;
    qkf_cost_counts *core;  /* [n_cores] per block, totals over samples and steps */
    qkf_cost_counts *step;  /* [T] totals over samples and cores */
    double *busy_s;         /* [n_phys] max(generation, processing) per step, summed */
    double *gen, *proc;     /* [n_phys] of the current sample and step */
    double *lat_s;          /* [T] step latency summed over samples */
    double *net_s, *sync_s; /* [T] their network and sync parts, summed over samples */
    /* scratch (allocated by init) */
    qkf_cost_counts *cur; /* [n_cores] of the current sample and step */
    int *tc, *stamp;
    int64_t *tl;
    int *dest;
    int n_stamp;
    uint8_t **touched;   /* [n_units]: input-driven units' neurons reached this step */
    uint8_t **mask;      /* [n_units]: a mask unit's spikes this step */
    int64_t *once_first; /* [n_cores] look-ups at step 0 (encoding MACs) */
    int64_t *once_last;  /* [n_cores] look-ups at the last step (readout head MACs) */
    int64_t *dend;       /* [n_cores] dendrite updates per step */
    int *kv_dest;        /* per kv core: SSA attention cores its table goes to */
    int *kv_dest_off;    /* [n_cores + 1] */
    int **cons_v, **cons_slot, *n_cons; /* [n_units + 1] consumers of each source (last: input) */
    /* --latency detailed (qkf_cost_detailed): SANA-FE's contention model beside the simple one */
    int detailed;
    double *det_s, *blk_s; /* [T] step latency (sync included) and blocking delays (summed over
                              the messages), summed over samples */
    int64_t *n_blk;        /* [T] messages blocked, summed over samples */
    qkf_noc noc;
    qkf_noc_ws noc_ws;
    int *px, *py, *pslot;  /* [n_phys] tile and slot of each physical core */
    double *local_s;       /* [n_phys] the current step's work no mesh message brings */
    int64_t *dlk;          /* [n_cores] look-ups per destination of the current spike */
    int *dpos;             /* [n_phys] index of a destination core in dest */
    struct qkf_cost_rec *rec; /* the current step's messages from mesh cores */
    int64_t n_rec, cap_rec;
    int64_t *rec_off, *rec_cur; /* [n_cores + 1] messages per sending block */
    struct qkf_cost_rec *rec_sorted;
    int64_t cap_sorted;
    qkf_noc_msg *seq;      /* per physical core, in send order */
    int64_t cap_seq, *seq_off; /* [n_phys + 1] */
} qkf_cost;

int qkf_cost_init(qkf_cost *c, const qkf_map *m, int T);
void qkf_cost_free(qkf_cost *c);

/* Also prices every step with SANA-FE's detailed latency model (sim/noc.h): messages in each
 * core's neuron order, link contention, each destination taking its messages one at a time. */
void qkf_cost_detailed(qkf_cost *c);

/* Counts B samples of one event-engine forward. spikes[l]: LIF layer l's spikes uint8
 * [T][B][n] (qkf_sched_spikes with QKF_SCHED_RECORD). frames: the input frames [B][T][C][H][W]
 * of a dvs model (event counts), NULL for images. */
int qkf_cost_add(qkf_cost *c, const uint8_t *const *spikes, const float *frames, int B);

/* Energy of counts n in joules by category (synapse, dendrite, soma, network, total). */
void qkf_cost_energy(const qkf_hw_profile *hw, const qkf_cost_counts *n, double e[QKF_E_COUNT]);
/* Generation and processing time of one core's counts (seconds). */
void qkf_cost_core_time(const qkf_hw_profile *hw, const qkf_cost_counts *n, double *gen,
                        double *proc);
/* Sums of counts: all cores; the cores of unit u. */
qkf_cost_counts qkf_cost_total(const qkf_cost *c);
qkf_cost_counts qkf_cost_unit(const qkf_cost *c, int u);

/* The terminal summary (per layer, per step, total; the busiest core). ideal_pj: the float
 * machine's energy per sample from the engine's counts (0: not shown). */
void qkf_cost_print(const qkf_cost *c, double ideal_pj);
/* Writes the value of the report's "hw" key (an object, no trailing newline). */
void qkf_cost_write_json(FILE *f, const qkf_cost *c);

#endif
