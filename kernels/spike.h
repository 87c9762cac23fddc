/* Event kernels of the event-driven engine (sim/sched.c): spike events in, synaptic work only
 * where an event arrives, LIF neurons stepped row by row.
 *
 * Events of one tensor at one time step are grouped by token ("padded CSR"): token n owns the
 * slots [n*C, n*C + C) of `ch` and `cnt`, of which the first len[n] are used, channels in
 * ascending order. A slot holds a channel index and, for tensors that carry counts (residual
 * sums, DVS frames), how many spikes arrived together (>= 1). Binary spike tensors (LIF outputs)
 * have cnt == NULL: every count is 1. Tensors with counts list a token's events with a count of
 * 1 first (len1[n] of them, channels ascending), then the others (ascending): the first part
 * needs no multiply, and most events of a residual sum carry one spike. Because every token has its own slots, any thread can
 * write any token's events without a prefix sum, and a consumer reads one contiguous list.
 *
 * Weights are laid out so that one event reads one contiguous row: 1x1 convolution
 * [Cin][Cout], 3x3 [Cin][ky][kx][Cout]; currents are token-major [N][Cout]. */
#ifndef QKF_SPIKE_H
#define QKF_SPIKE_H

#include <stdint.h>

typedef struct {
    int N, C;      /* tokens, channels (slots per token) */
    int32_t *len;  /* [N] events of each token */
    uint16_t *ch;  /* [N][C] channel of each event, ascending within a token */
    uint16_t *cnt; /* [N][C] spikes carried by each event (>= 1), or NULL: all 1 */
    int32_t *len1; /* [N] with cnt: the leading events of each token whose count is 1 */
} qkf_spike_events;

/* A run of events whose weight rows are w[base + ch[i] * stride ...]: the events of one input
 * token seen through one kernel position (3x3: base = (ky*3 + kx) * Cout, stride = 9 * Cout). */
typedef struct {
    const uint16_t *ch;  /* channels */
    const uint16_t *cnt; /* counts, or NULL: all 1 */
    int n;
    int32_t base;
} qkf_spike_seg;

/* Row accumulation, the inner loop of every event-driven convolution:
 *   out[j] = init[j] + sum over segments s, events i of cnt[i] x w[base_s + ch[i]*stride + j]
 * for j < width, in segment order then list order. An event with a count adds its row times the
 * count with one fused multiply-add (exact product, one rounding); a count of 1 is a plain add.
 * The order of the adds into one output depends only on the lists, never on threads or vector
 * width. init NULL: start from 0. Returns the spikes delivered (sum of counts): the synaptic
 * operations are that times width. The fast paths keep up to 16 AVX-512 accumulators (256
 * outputs), 12 AVX2 ones (96) or 16 of 4 floats (64, portable; 8 on SSE2 for weight rows not
 * 16-byte aligned) in registers per pass over the lists (PERF-NOTES.md). */
int64_t qkf_spike_gather(float *out, const float *init, const float *w, int32_t stride,
                         const qkf_spike_seg *seg, int nseg, int width);
int64_t qkf_spike_gather_ref(float *out, const float *init, const float *w, int32_t stride,
                             const qkf_spike_seg *seg, int nseg, int width);

/* One output row of qkf_spike_gather_rows: a single segment of events and where its sum goes. */
typedef struct {
    float *out;
    const float *init; /* NULL: start from 0; may equal out (accumulate in place) */
    qkf_spike_seg seg;
    int n1; /* with counts: events [0, n1) carry a count of 1 (a promise that lets the fast path
               add them without a multiply; 0 always holds) */
} qkf_spike_row;

/* Many rows against the same weights, the inner loop of a convolution that visits one kernel
 * position for a tile of output tokens: for each r < nrow, with out = rows[r].out + off and
 * init = rows[r].init + off (off selects a block of columns of rows laid out once),
 *   out[j] = init[j] + sum over events i of cnt[i] x w[base + ch[i]*stride + j]
 * for j < width: exactly qkf_spike_gather(out, init, w, stride, &seg, 1, width) row by row (the
 * same adds in the same order, so bit for bit). The fast path interleaves the event lists of 2 to
 * 8 rows, so that enough independent accumulators are in flight to hide the add latency while
 * the weights they read (a slab of the convolution, sized by the caller to stay in L1) are
 * shared; it needs width % 16 == 0 and width <= 128, other widths go row by row. Rows must not
 * overlap one another's outputs. Returns the spikes delivered (sum of counts). */
int64_t qkf_spike_gather_rows(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,
                              int32_t stride, int width);
int64_t qkf_spike_gather_rows_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const float *w, int32_t stride, int width);

/* One LIF step for a row of C neurons (the formula of qkf_lif_forward):
 *   h = v + (x - v) / 2;  s = h >= vth;  v = h * (1 - s)
 * v [C] is updated in place; the channels that spiked are written to ch (ascending) and
 * counted in the return value. ch has C slots: slots past the returned count may be overwritten
 * (the fast path stores whole vectors of indices). */
int qkf_spike_lif_row(uint16_t *ch, float *v, const float *x, int C, float vth);
int qkf_spike_lif_row_ref(uint16_t *ch, float *v, const float *x, int C, float vth);

/* The QKTA / QKCA attention neuron on integer counts (tau 2, vth 0.5, hard reset): it fires iff
 * the count is >= 1, whatever its membrane (spec section 1: after a silent step v < 0.5, so
 * h = v/2 + q/2 >= 0.5 exactly when q >= 1). No membrane is kept. cnt [C] holds integer counts;
 * writes the channels that fire and returns how many (and nothing past them). */
int qkf_spike_attn_row(uint16_t *ch, const float *cnt, int C);
int qkf_spike_attn_row_ref(uint16_t *ch, const float *cnt, int C);

/* Residual addition of two event lists of one token (both channel-ascending): the union, with
 * counts added where both have the channel. cnt0 / cnt1 NULL: counts of 1. Writes ch, cnt and
 * returns the number of events (<= n0 + n1). */
int qkf_spike_merge(uint16_t *ch, uint16_t *cnt, const uint16_t *ch0, const uint16_t *cnt0, int n0,
                    const uint16_t *ch1, const uint16_t *cnt1, int n1);

/* qkf_spike_merge for lists of channels < C, through a dense count row: the counts of both lists
 * are added into acc (C counts, rounded up to a multiple of 32, all zero on entry and again on
 * return), which is then compressed to the channels with a non-zero count: those with a count of
 * 1 first (*ones of them), then the others, each part in ascending channel order (the layout of
 * qkf_spike_events). The events of qkf_spike_merge, reordered so; its cost is the events plus
 * C / 16 vector steps instead of a compare per event. ch and cnt have C slots. Returns the events
 * written. The _ref twin is the plain loop over the row. */
int qkf_spike_merge_dense(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C,
                          const uint16_t *ch0, const uint16_t *cnt0, int n0, const uint16_t *ch1,
                          const uint16_t *cnt1, int n1);
int qkf_spike_merge_dense_ref(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C,
                              const uint16_t *ch0, const uint16_t *cnt0, int n0,
                              const uint16_t *ch1, const uint16_t *cnt1, int n1);

#endif
