/* The LIF sink: how an engine hands LIF layer tensors to an observer (a trace, io/trace.h; a
 * program's own recorder) without knowing what it is. It sits below both the engines (sim/) and
 * the file writers (io/), so neither includes the other: an engine calls the three functions, a
 * trace fills them in (qkf_trace_sink), and the caller connects the two (qkf_dense_set_sink,
 * qkf_sched_set_trace, qkf_train_set_trace).
 *
 * Observables are numbered as the trace numbers them: v (membrane after reset), h (membrane
 * before the spike decision), input (synaptic current after BatchNorm), spikes. A neuron is the
 * per-sample flattened index c*N + token of the layer's output. */
#ifndef QKF_SINK_H
#define QKF_SINK_H

#include <stdint.h>

/* Observables: bit o of a `wants` set is 1u << o. */
enum { QKF_TRACE_V = 0, QKF_TRACE_H, QKF_TRACE_INPUT, QKF_TRACE_SPIKES, QKF_TRACE_NOBS };

/* One LIF layer's tensors of a whole batch, in the engines' [C][F][N] layout (F = T*B,
 * f = t*B + b): spikes s, membrane v after reset, membrane h before the spike decision, and the
 * synaptic input x after BatchNorm ([C][B][N] when x_static: one frame per sample that stands for
 * every step). Pointers the sink did not ask for may be NULL; all are valid during the call
 * only. */
typedef struct {
    int lif_index, T, B, C, N, x_static;
    const float *s, *v, *h, *x;
} qkf_lif_data;

typedef struct qkf_lif_sink {
    void *ctx;        /* the observer's own state, passed to every call */
    const char *name; /* for messages (a trace: its path) */
    int n_lif, T;     /* the model the sink was made for; engines refuse another */
    /* What the sink records of LIF layer l: a set of 1u << QKF_TRACE_* (0: nothing, and the
     * engine may skip gathering that layer). */
    unsigned (*wants)(void *ctx, int lif_index);
    /* One (layer, sample, step), for engines that step neurons one time step at a time: v, h,
     * x, s are [n] values in per-sample neuron order (NULL where not wanted). sample counts from
     * 0 over the run; each (layer, sample) comes in increasing t. Called from several threads at
     * once. A non-zero return stops the engine, which fails. */
    int (*put)(void *ctx, int lif_index, int64_t sample, int t, const float *v, const float *h,
               const float *x, const float *s, int64_t n);
    /* One layer of a whole batch (dense and training engines); samples are numbered on from the
     * previous call for that layer. A non-zero return stops the forward, which returns it. */
    int (*put_layer)(void *ctx, const qkf_lif_data *d);
} qkf_lif_sink;

#endif
