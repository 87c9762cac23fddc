/* Traces: membrane potentials, synaptic inputs and spikes of chosen LIF layers, streamed into an
 * HDF5 file in the NIR data layout (NIRGraphData, neuromorphs/NIR) while a simulation runs.
 *
 *   /                                  __type__ = "NIRGraphData" + provenance attributes
 *   /nodes/<layer>/                    __type__ = "NIRNodeData", vth, lif_index, n_neurons, shape
 *   /nodes/<layer>/observables/v|h|input/
 *                                      __type__ = "TimeGriddedData", dt, t_start, first_sample;
 *                                      data float32 [n_samples, n_steps, n_neurons]
 *   /nodes/<layer>/observables/spikes/ __type__ = "EventData", n_neurons, t_max, first_sample;
 *                                      idx int32, time float32 [n_samples, n_events]
 *                                      (padding -1 and +inf)
 *   .../observables/<obs>/neurons      int64 [n]: the recorded neurons, when a subset
 *
 * <layer> is the official module path ("stage1.0.tssa.q_lif"); a neuron is the per-sample
 * flattened index c*N + token of that layer's output. docs/traces.md has the details.
 *
 * Engines. A trace knows no engine: it hands out a LIF sink (models/sink.h, qkf_trace_sink) that
 * the caller gives to an engine (qkf_dense_set_sink, qkf_sched_set_trace, qkf_train_set_trace).
 *
 * Streaming. Producers (the sink's put_layer from the dense engines, or put from the event engine)
 * copy the selected values into a fixed ring buffer of --trace-buffer bytes, allocated once; when
 * it is full they wait (nothing is dropped, nothing grows). One writer thread owns the HDF5 file:
 * it creates it, appends each block to chunked, gzip-compressed, extendable datasets, and flushes
 * in single-writer/multiple-reader (SWMR) mode, so h5py can read the file while the run continues
 * (h5py.File(path, "r", swmr=True)) and a killed run leaves every flushed block readable. Because
 * the file is meant to be read while it grows, it is written in place, not as a temporary file
 * renamed at the end (the rule for every other output of qkf); qkf_trace_abort deletes it.
 *
 * Threads. Every HDF5 call of a trace is made on its writer thread. Callers may use HDF5 on their
 * own thread meanwhile only with a thread-safe HDF5 build (Debian's is: H5_HAVE_THREADSAFE). */
#ifndef QKF_IO_TRACE_H
#define QKF_IO_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "../models/qkformer.h"
#include "../models/quant.h"
#include "../models/sink.h"

/* Observables: QKF_TRACE_V, _H, _INPUT, _SPIKES (models/sink.h). */

#define QKF_TRACE_BUFFER_MB 64 /* default --trace-buffer */

typedef struct {
    int64_t lo, hi; /* inclusive */
} qkf_trace_range;

/* One --record argument: LAYERS:OBS[,OBS...][:KEY=VALUE]... (see qkf_trace_parse_record). */
typedef struct {
    char *text;   /* as given, for messages */
    char *layers; /* glob over module paths */
    unsigned obs; /* bit set of 1u << QKF_TRACE_* */
    int n_neuron_ranges;
    qkf_trace_range *neuron_ranges; /* none: every neuron (unless random_k) */
    int64_t random_k;               /* > 0: a random subset of this size */
    uint64_t seed;                  /* of the subset; has_seed 0: the spec's seed */
    int has_seed;
    int64_t t_lo, t_hi; /* steps, inclusive; t_hi -1: the last step */
    int every;          /* every k-th step from t_lo */
    int64_t s_lo, s_hi; /* samples, inclusive; s_hi -1: no end */
} qkf_trace_record;

typedef struct {
    int n_records;
    qkf_trace_record *records; /* none: spikes of every layer */
    size_t buffer_bytes;       /* ring buffer between the simulation and the writer */
    uint64_t seed;             /* the run's seed: provenance, default seed of random subsets */
    int force;                 /* overwrite an existing file */
    int no_compress;           /* store membranes uncompressed (faster, ~1.3x larger files) */
    int writer_delay_us;       /* tests: the writer sleeps this long per block (a slow disk) */
    /* An integer engine's trace (qkf_dense_int_set_sink): v, h and input are in membrane units
     * of this integer model, which must outlive the trace; its nodes get the attributes units
     * ("membrane"), delta (float64 [C], the real value of a unit) and threshold (int64 [C]), the
     * root hw_name and units. NULL: a float engine's trace. */
    const qkf_qmodel *qmodel;
} qkf_trace_spec;

void qkf_trace_spec_init(qkf_trace_spec *spec);
void qkf_trace_spec_free(qkf_trace_spec *spec);

/* Parses one --record argument and adds it to spec:
 *   LAYERS:OBS[,OBS...][:neurons=A-B,C,...][:random=K][:seed=S][:steps=A-B][:every=K]
 *          [:samples=A-B]
 * LAYERS is a glob (fnmatch) over LIF module paths ("stage1.*", "*.attn_lif", "*"); OBS are v, h,
 * input, spikes (or "all"). Ranges are inclusive. With g, the layers and neuron ranges are checked
 * now (unknown names give an error listing the valid ones); without, at qkf_trace_open. */
int qkf_trace_parse_record(qkf_trace_spec *spec, const char *arg, const qkf_graph *g);
/* Parses --trace-buffer MB (1 .. 65536). */
int qkf_trace_parse_buffer(qkf_trace_spec *spec, const char *mb);

typedef struct qkf_trace qkf_trace;

/* Creates the trace file at path (refused if it exists, unless spec->force) with every dataset
 * the spec selects, writes the provenance (qkf version, model config as JSON, SHA-256 of
 * weights_path, engine, seed, and the command line: argv[0..argc-1], or with argc 0 the
 * process's own from /proc/self/cmdline) and starts the writer. g must outlive the trace;
 * weights_path may be NULL (no checksum). NULL on error (message recorded). */
qkf_trace *qkf_trace_open(const char *path, const qkf_trace_spec *spec, const qkf_graph *g,
                          const char *weights_path, const char *engine, int argc,
                          char *const *argv);

/* The trace as a LIF sink (models/sink.h) for an engine: qkf_dense_set_sink (every forward,
 * samples numbered in call order from 0), qkf_sched_set_trace, qkf_train_set_trace. It lives as
 * long as tr: remove it from the engine (or free the engine) before running the engine again
 * after qkf_trace_close or qkf_trace_abort. */
const qkf_lif_sink *qkf_trace_sink(qkf_trace *tr);

/* What the trace records of LIF layer l: a bit set of 1u << QKF_TRACE_* (0: nothing; an engine
 * may then skip gathering that layer). */
unsigned qkf_trace_wants(const qkf_trace *tr, int lif_index);

/* Hands one (layer, sample, step) to the trace, for engines that step neurons one time step at a
 * time (the event engine). v, h, x, s: [n] values in per-sample neuron order (c*N + token); a
 * pointer may be NULL when that observable is not recorded. sample counts from 0 over the run;
 * each (layer, sample) must come in increasing t. Thread-safe; blocks while the buffer is full.
 * Returns the writer's error, if it has failed, so the simulation stops. */
int qkf_trace_put(qkf_trace *tr, int lif_index, int64_t sample, int t, const float *v,
                  const float *h, const float *x, const float *s, int64_t n);

/* Hands one LIF layer's tensors of a whole batch to the trace, in the dense engines' [C][F][N]
 * layout (models/sink.h; what the dense and training engines hand to the sink).
 * Samples are numbered on from the previous call for that layer. */
int qkf_trace_put_layer(qkf_trace *tr, const qkf_lif_data *d);

/* Waits until everything handed over so far is written and flushed. */
int qkf_trace_sync(qkf_trace *tr);

/* Finishes the file and frees tr. Returns the first error of the run; a file that failed while
 * writing (full disk, file size limit) is kept: it holds every block flushed before the error. */
int qkf_trace_close(qkf_trace *tr);
/* Stops, deletes the file, frees tr (a run that failed elsewhere). When the writer itself had
 * failed (full disk, file size limit) the file is kept instead, as qkf_trace_close keeps it. */
void qkf_trace_abort(qkf_trace *tr);

typedef struct {
    int64_t blocks;    /* blocks written */
    int64_t bytes;     /* payload bytes handed over */
    int64_t waits;     /* times a producer waited for room */
    size_t capacity;   /* ring buffer bytes */
    size_t max_queued; /* most bytes ever queued */
} qkf_trace_stats;
void qkf_trace_get_stats(qkf_trace *tr, qkf_trace_stats *st);

/* SHA-256 (FIPS 180-4). */
void qkf_sha256(const void *data, size_t n, uint8_t digest[32]);
/* Of a whole file, as 64 lowercase hex digits. */
int qkf_sha256_file(const char *path, char hex[65]);

#endif
