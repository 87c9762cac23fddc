/* The event-driven engine: a discrete-time scheduler that runs the model graph the way a
 * neuromorphic chip would. For each time step and sample, the graph's nodes (ops in topological
 * order, each conv fused with its LIF) consume the spike events delivered to them, integrate
 * them into their neurons' currents, step their LIF neurons, and emit events to their
 * consumers. Synaptic work is done only where an event arrives; every counter of it lands in a
 * qkf_stats table (sim/stats.h). (It runs node after node, each over all steps: the graph is
 * feed-forward across nodes, so this computes the same while reusing each node's weights.)
 *
 * It produces the same spikes as the dense engine (sim/dense.c): exactly where every sum is exact
 * (small powers of two), otherwise up to rare flips of a value within float rounding of a
 * threshold, since BatchNorm is folded into the weights and sums run in event order. Results do
 * not depend on the thread count. */
#ifndef QKF_SCHED_H
#define QKF_SCHED_H

#include <stdint.h>

#include "../models/qkformer.h"
#include "../models/quant.h"
#include "dense.h"
#include "dense_int.h"
#include "stats.h"

enum {
    QKF_SCHED_TB_COMPAT = 4, /* official SSA proj_lif over the T*B axis (as QKF_DENSE_TB_COMPAT) */
    QKF_SCHED_RECORD = 8,    /* keep every LIF layer's spikes of the last forward */
};

typedef struct qkf_sched qkf_sched;

/* Prepares nodes for batches of up to max_batch samples: folds BatchNorm into the weights,
 * re-lays them for events, and allocates every buffer (nothing is allocated per step or event).
 * The model must outlive the engine. NULL on error (message recorded). */
qkf_sched *qkf_sched_create(const qkf_model *m, int max_batch, int flags);
/* The integer mode: the same scheduler, nodes, tiling and threads on an integer model
 * (models/quant.h, the integer form of docs/hardware.md), only the arithmetic changes: integer
 * weights laid out as the float slabs, int16 sums where the profile's current register wraps at
 * <= 16 bits (no pooling) and int32 otherwise, the integer LIF, max pooling on int32 sums, the
 * integer readout. Integer sums are exact, so it agrees with the dense integer engine
 * (sim/dense_int.h) bit for bit on every spike and logit, at any thread count. Work is done only
 * where events are, as in float mode. The model must outlive the engine. Traces
 * (qkf_sched_set_trace) hold the integer form's values in membrane units, equal to the dense
 * integer engine's (qkf_dense_int_set_sink). NULL on error (message recorded). */
qkf_sched *qkf_sched_create_int(const qkf_qmodel *q, int max_batch, int flags);
int qkf_sched_is_int(const qkf_sched *e);
/* Integer mode: the exact integer logits [B][classes] of the last forward (its float logits are
 * these times the head's scale, as the dense integer engine reports them); NULL in float mode. */
const int64_t *qkf_sched_logits_int(const qkf_sched *e);

/* Hands every forward from now on to sink (models/sink.h; a trace: qkf_trace_sink): v, h, input
 * and spikes of the layers it wants, through sink->put, with the values this engine computes (its
 * currents come from folded BatchNorm, so v, h and input agree with the dense engine's to
 * rounding; spikes exactly). In integer mode: V, H and the input added, (A << current_shift) +
 * bias, in membrane units as floats, equal to the dense integer engine's bit for bit (traced rows
 * step through the reference arithmetic, qkf_spike_ilif_step). sink must stay valid while the
 * engine runs forwards. */
int qkf_sched_set_trace(qkf_sched *e, const qkf_lif_sink *sink);
void qkf_sched_free(qkf_sched *e);
const qkf_graph *qkf_sched_graph(const qkf_sched *e);

/* Runs B samples over T steps. input: B images [B][C][H][W] (static variants) or frames
 * [B][T][C][H][W] (dvs variants; frame values are event counts: non-negative integers).
 * logits [B][classes]; spike_count (optional) [n_lif] is incremented. Work is added to the
 * engine's statistics. Fails (nothing changed) on a frame value that is not an event count.
 * Runs its own OpenMP team (omp_get_max_threads() threads): call it from serial code, not from
 * inside a parallel region, and not on one engine from two threads at once. */
int qkf_sched_forward(qkf_sched *e, const float *input, int B, float *logits, int64_t *spike_count);

/* The statistics accumulated since creation or the last reset. */
qkf_stats *qkf_sched_stats(qkf_sched *e);

/* With QKF_SCHED_RECORD: LIF layer l's spikes of the last forward, uint8 [T][B][n] with
 * n = c*N + token (the official per-sample flattening, as in the reference fixtures). */
const uint8_t *qkf_sched_spikes(const qkf_sched *e, int lif_index);

/* Cross-check against the dense engine after both ran the same B samples (dense with
 * QKF_DENSE_KEEP_ALL, event with QKF_SCHED_RECORD). Neurons are compared in causal order (time
 * step, then layer in graph order, sample, neuron), so the first difference is where the two runs
 * part; with QKF_DENSE_RECORD_VH the dense pre-spike membrane there is reported too: within ~1e-5
 * of the threshold, float summation order decided the spike. */
typedef struct {
    int64_t spikes;     /* spikes of the dense engine, all layers */
    int64_t mismatches; /* neurons and steps where the engines differ */
    int layer;          /* first difference: LIF layer index, or -1 */
    int t, b;
    int64_t neuron;  /* per-sample index c*N + token */
    int dense_spike; /* the dense engine's spike there */
    int has_h;       /* h below is known */
    float h, vth;    /* the dense membrane before the spike decision, and the threshold */
} qkf_xcheck;
int qkf_sched_compare(const qkf_sched *e, const qkf_dense *d, int B, qkf_xcheck *r);
/* The same against the dense integer engine, for an engine in integer mode (both ran the same B
 * samples; the event engine with QKF_SCHED_RECORD): every spike of every layer, the first
 * difference in causal order (has_h = 0). */
int qkf_sched_compare_int(const qkf_sched *e, const qkf_dense_int *d, int B, qkf_xcheck *r);

/* ---- sessions: one time step at a time ---------------------------------------------------
 *
 * A session is one sample's running state (membranes, per-step buffers, a readout accumulator)
 * stepped one time window at a time, for streams whose length is not known in advance (a live
 * event camera: qkf serve). It shares the engine's graph and folded weights read-only: the
 * engine must outlive its sessions, and any number of sessions may step at the same time on
 * different threads (one session on one thread at a time). A step runs the same code, in the
 * same order, as one time step of qkf_sched_forward, and nothing is allocated after creation:
 * stepping frames x[b][0..T) one by one gives forward's spikes and, after T steps, its logits
 * bit for bit. */
typedef struct qkf_sched_session qkf_sched_session;

/* A fresh session (membranes at rest) of engine e, allocating its state. threads: OpenMP
 * threads of each step; 1 steps on the calling thread alone, with no parallel region (a server
 * running many sessions on a thread pool). NULL on error (message recorded). */
qkf_sched_session *qkf_sched_session_new(const qkf_sched *e, int threads);
void qkf_sched_session_free(qkf_sched_session *s);
/* Back to rest: membranes and the readout accumulator cleared, steps = 0. */
void qkf_sched_session_reset(qkf_sched_session *s);
/* Advances one LIF time step through every node. frame: [C][H][W], the event counts of this
 * step (dvs variants: non-negative integers <= 65535) or, for static variants, the image the
 * encoding sees at this step. spike_count (optional) [n_lif] receives each LIF layer's spikes
 * of this step (overwritten). Fails on a frame value that is not an event count, with nothing
 * changed. Work is added to the session's statistics. */
int qkf_sched_session_step(qkf_sched_session *s, const float *frame, int64_t *spike_count);
/* Class scores [num_classes]: the linear head on the readout's time mean over the steps since
 * the last reset (as qkf_sched_forward's logits over T steps; no step yet: the head's bias). */
void qkf_sched_session_scores(qkf_sched_session *s, float *scores);
int64_t qkf_sched_session_steps(const qkf_sched_session *s); /* since creation or reset */
/* Bytes the session allocated (its state; the shared weights are not counted). */
int64_t qkf_sched_session_bytes(const qkf_sched_session *s);
/* Work of every step since creation, in one step slot (T = 1; batches counts steps, samples
 * the resets that were followed by a step). */
qkf_stats *qkf_sched_session_stats(qkf_sched_session *s);

#endif
