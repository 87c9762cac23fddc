/* Work and sparsity statistics of a simulation: per node (layer), per attention head and per
 * time step, the events that arrived, the spikes emitted, the synaptic operations actually
 * performed, and beside them the paper's firing-rate estimate (spec section 7.3).
 *
 * Nodes are the graph's ops with each convolution fused to its LIF (conv -> BN (-> pool) -> LIF
 * is one layer), in graph order. Both engines fill the same table: the event engine counts the
 * work it does; the dense engine's tally (qkf_stats_add_dense) counts every multiply-accumulate
 * of the dense computation. Counts are exact integers, summed over all samples run. */
#ifndef QKF_STATS_H
#define QKF_STATS_H

#include <stdint.h>

#include "../models/qkformer.h"
#include "dense.h"

typedef enum {
    QKF_NODE_ENCODE = 0, /* first conv on a real-valued image (+ its LIF): multiply-accumulates */
    QKF_NODE_CONV,       /* event-driven conv k x k (+ pool) + LIF */
    QKF_NODE_QK_SUM,     /* Q-K attention: q events counted per (head, token) or channel */
    QKF_NODE_ATTN,       /* attention LIF (QK: the OR neuron; SSA: the general LIF, vth 0.5) */
    QKF_NODE_MASK,       /* Q-K attention: k events kept where the attention neuron fired */
    QKF_NODE_SSA,        /* q (k^T v) * 0.125 from co-active events */
    QKF_NODE_ADD,        /* residual sum of two event streams */
    QKF_NODE_READOUT,    /* token and time mean of the event counts, linear head */
    QKF_NODE_KIND_COUNT
} qkf_node_kind;

const char *qkf_node_kind_name(qkf_node_kind k);

/* Work of one node (or one head of it) in one time step, summed over samples. */
typedef struct {
    int64_t in_events;    /* event entries delivered (an entry may carry a count > 1) */
    int64_t in_spikes[3]; /* spikes (sum of counts) arriving on each input: in0, in1, in2 */
    int64_t out_spikes;   /* spikes or events emitted */
    int64_t acs;          /* accumulates performed (event engine: one add per spike and target) */
    int64_t macs;         /* multiply-accumulates (encoding conv, head; dense: every op) */
} qkf_work;

typedef struct {
    char name[QKF_MAX_NAME];
    qkf_node_kind kind;
    int op;               /* graph op index */
    int lif_op;           /* LIF op whose spikes this node emits, or -1 */
    int lif_index;        /* its LIF layer index, or -1 */
    int heads;            /* > 0 for attention nodes: work is also kept per head */
    int head_dim;         /* channels per head */
    int64_t neurons;      /* spiking neurons per sample of lif_op, 0 if none */
    int64_t flops;        /* dense multiply-accumulates per sample and step (spec 7.3 FLOPs^l) */
    int64_t macs_once;    /* multiply-accumulates per sample done once, not per step: the encoding
                             conv (its image is the same at every step), the readout head */
    double est_per_spike; /* conv/readout: estimated synaptic ops per input spike */
} qkf_node_info;

typedef struct {
    int n_nodes, T, heads_max;
    qkf_node_info *node;
    qkf_work *w;  /* [n_nodes][T] */
    qkf_work *wh; /* [n_nodes][heads_max][T] */
    int64_t samples;
    int64_t batches;
    double seconds;       /* wall time of the forward passes, set by the caller */
    double *node_seconds; /* [n_nodes] wall time per node (event engine; informative only: it
                             depends on the machine and the thread count) */
} qkf_stats;

/* Builds the node table of graph g (allocates); work counters start at zero. */
int qkf_stats_init(qkf_stats *s, const qkf_graph *g);
void qkf_stats_free(qkf_stats *s);
void qkf_stats_reset(qkf_stats *s);

static inline qkf_work *qkf_stats_at(qkf_stats *s, int node, int t)
{
    return &s->w[(int64_t)node * s->T + t];
}
static inline qkf_work *qkf_stats_head(qkf_stats *s, int node, int head, int t)
{
    return &s->wh[((int64_t)node * s->heads_max + head) * s->T + t];
}

/* Sum of w over time steps (and heads: head < 0 is the node's own total). */
qkf_work qkf_stats_node_total(const qkf_stats *s, int node, int head);
/* Sum over nodes of step t (t < 0: all steps). */
qkf_work qkf_stats_step_total(const qkf_stats *s, int t);
/* The paper's estimate for node work w (spec 7.3): synaptic operations SOP = fr x T x FLOPs,
 * i.e. input spikes x synaptic fan-out per spike (conv), the q spikes (QK sum), (q + k) spikes
 * x head_dim (SSA: K^T V and Q (K^T V) weighted by their sparse operand), input spikes
 * (readout); 0 for masks, attention neurons and residual adds. */
double qkf_stats_est_sops(const qkf_stats *s, int node, const qkf_work *w);
/* Estimated multiply-accumulates: the encoding conv's FLOPs and the head, per sample. */
double qkf_stats_est_macs(const qkf_stats *s, int node, int64_t samples);

/* Energy in picojoules: measured = e_ac x acs + e_mac x macs. */
static inline double qkf_energy_pj(const qkf_work *w, double e_ac, double e_mac)
{
    return e_ac * (double)w->acs + e_mac * (double)w->macs;
}

/* Tallies one dense forward pass (engine created with QKF_DENSE_KEEP_ALL) of B samples: spikes
 * per node, head and step from the kept tensors, and the dense engine's multiply-accumulates. */
int qkf_stats_add_dense(qkf_stats *s, const qkf_dense *d, int B);

/* Calibration for experiments: sets every BatchNorm of m (in graph order, each layer given the
 * ones before it) so that its LIF fires at about `rate` on average on `input` (B samples), each
 * channel at rate x exp(spread x N(0,1) - spread^2 / 2), a log-normal whose mean is rate,
 * clamped to [0.002, 0.6]. pow2: every folded BN scale is an exact power of two and every shift
 * a multiple of 2^-6 (with dyadic weights, inputs and biases, every sum of the model is then
 * exact in float32). Runs one dense forward per convolution. */
int qkf_stats_calibrate(qkf_model *m, const float *input, int B, double rate, double spread,
                        int pow2, uint64_t seed);

#endif
