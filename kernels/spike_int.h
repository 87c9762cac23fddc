/* Integer event kernels of the event engine's integer mode (sim/sched.c on a chip profile, the
 * integer form of docs/hardware.md): the row gathers with int16 or int32 accumulators, the
 * integer LIF neuron row, max pooling on integer currents.
 *
 * Events and row descriptors are those of the float kernels (kernels/spike.h): qkf_spike_events
 * lists, qkf_spike_seg segments and qkf_spike_row rows. In the integer gathers a row's out and init are
 * the addresses of rows of int16_t (int32_t) elements that the engine keeps in its float-sized
 * buffers: element j of the row is ((int16_t *)out)[off + j]. Weights are laid out as for the
 * float gathers: one event reads one contiguous row w[base + ch * stride ...].
 *
 * Integer sums are exact: a sum wraps modulo 2^16 (int16 lanes) or 2^32 (int32 lanes), and
 * addition modulo 2^n does not depend on the order of its terms. So a fast path may add in any
 * order, and every path agrees with its _ref twin bit for bit. An event with a count c adds its
 * weight row times c (a wrapping multiply, exact modulo 2^n as well).
 *
 * Which width. The int16 gather gives the low 16 bits of the int32 sum (mod 2^16 of the sum is
 * the sum of the terms mod 2^16): exact for a profile whose current register wraps at <= 16 bits,
 * whatever the weights' magnitudes (only their low 16 bits enter). It needs no pooling: max does
 * not commute with the wrap, so pooling convolutions accumulate in int32 and pool before the
 * current register's reduction (docs/hardware.md). */
#ifndef QKF_SPIKE_INT_H
#define QKF_SPIKE_INT_H

#include <stdint.h>

#include "spike.h"

/* Row accumulation with wrapping int16 (int32) accumulators: for each r < nrow,
 *   out[j] = init[j] + sum over events i of cnt[i] * w[base + ch[i]*stride + j]   (mod 2^16 / 2^32)
 * for j < width, with out = (int16_t *)rows[r].out + off, init likewise (NULL: from 0; may equal
 * out). Rows must not overlap one another's outputs. rows[r].n1 (the leading events with a count of
 * 1) lets a fast path skip their multiplies (0 always holds). Returns the spikes delivered (sum of
 * counts): the synaptic operations are that times width. Any width >= 1. */
int64_t qkf_spike_gather_rows_i16(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const int16_t *w, int32_t stride, int width);
int64_t qkf_spike_gather_rows_i16_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const int16_t *w, int32_t stride, int width);
int64_t qkf_spike_gather_rows_i32(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const int32_t *w, int32_t stride, int width);
int64_t qkf_spike_gather_rows_i32_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const int32_t *w, int32_t stride, int width);

/* The mantissa gather: integer weights W = m << shift[j] (an int16 mantissa m, a shift per output
 * column) summed into int32 rows. For each r < nrow and j < width,
 *   out[j] = init[j] + ((sum over events i of cnt[i] * m[base + ch[i]*stride + j]) << shift[j])
 * modulo 2^32, which is init[j] + the sum of cnt[i] * W (the shift distributes over the sum
 * modulo 2^32): the int32 gather's result on W, exactly, so it serves convolutions that pool
 * (max needs the exact int32 sums). out and init are int32 rows as in the int32 gather (init NULL:
 * from 0; may equal out); m has |m| <= wmax (1..32767); shift[j] in 0..31, shift pointing at the
 * width's column 0. The fast paths add the mantissas in int16 lanes (twice the lanes per vector
 * and half the bytes of the int32 weights) and widen at the row's end: a row's mantissa sum
 * stays within int16 when the sum of its counts times wmax is at most 32767; rows beyond that
 * are summed in int32. Returns the spikes delivered. */
int64_t qkf_spike_gather_rows_m16(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const int16_t *w, int32_t stride, int width,
                                  const int32_t *shift, int wmax);
int64_t qkf_spike_gather_rows_m16_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const int16_t *w, int32_t stride, int width,
                                      const int32_t *shift, int wmax);

/* The integer LIF of a layer (docs/hardware.md, "The integer form of every operation"), per
 * channel c, from the synaptic sum S of a step:
 *   A = reduce(S, current_bits, current_wrap)
 *   H = reduce(decay(V) + A * 2^current_shift + bias[c], membrane_bits, membrane_wrap)
 *   decay(V) = sign(V) * ((|V| * decay_keep) >> decay_bits)      (decay_keep = 2^decay_bits - dv)
 *   spike = threshold_ge ? H >= theta[c] : H > theta[c]
 *   V = spike ? (reset_subtract ? H - theta[c] : 0) : H
 * reduce(x, bits, wrap): wrap, two's complement to bits (the low bits, sign-extended); saturate,
 * clamp to +-(2^(bits - 1) - 1). Every intermediate is computed exactly (in int64 where int32 could
 * overflow; lif_narrow says when int32 is enough). bias and theta point at the layer's channel 0 of
 * the row (a kernel stepping channels c0.. is given bias + c0, theta + c0). */
typedef struct {
    const int32_t *bias;  /* [C] in membrane units */
    const int32_t *theta; /* [C] */
    int current_bits;     /* 1..64 (the sums are int32: above 32 bits nothing is reduced) */
    int current_wrap;
    int current_shift; /* 0..31 */
    int membrane_bits; /* 2..32 */
    int membrane_wrap;
    int decay_bits;     /* 0..30 */
    int32_t decay_keep; /* 0..2^decay_bits */
    int threshold_ge;
    int reset_subtract;
    int narrow; /* set by qkf_spike_ilif_prepare: every value fits int32 (the vector paths) */
    int hfree;  /* set by qkf_spike_ilif_prepare: narrow, and the membrane's reduction of H (and
                   of H - theta on a subtracting reset) is the identity for every input: the
                   bound |decay(V)| + |A| * 2^current_shift + |bias| (+ |theta|) is within the
                   membrane's range (Loihi: 2^22 + 2^21 + 2^19 < 2^23), so the fast paths leave
                   that reduction out (exact: it never changes a value) */
} qkf_ilif;

/* Decides p->narrow for C channels: whether int32 arithmetic is exact for every value the LIF can
 * meet (membranes, the shifted current, the bias and their sum). The fast paths step narrow layers
 * in int32 vector lanes and others with the reference's int64 arithmetic. Also decides p->hfree.
 * Membranes passed to the LIF (v) are values the LIF can meet: within the membrane's range
 * (|V| <= 2^(membrane_bits - 1)), as every reduced H and reset value is. */
void qkf_spike_ilif_prepare(qkf_ilif *p, int C);

/* The integer LIF of one neuron row of C channels stepped through R inputs in order (as
 * qkf_spike_lif_seq, kernels/spike_node.h): step r reads the sums x[r] [C] and writes its spikes to
 * the mask mask[r] [(C + 15) / 16]. v [C]: the membranes before step 0, replaced by those after
 * step R - 1; NULL: from zero, the final ones dropped. The _i16 form reads int16 sums (the int16
 * gather's; valid when the current register wraps at <= 16 bits: A depends only on S's low bits). */
void qkf_spike_ilif_seq_i32(uint16_t *const *mask, const int32_t *const *x, int R, int C,
                            const qkf_ilif *p, int32_t *v);
void qkf_spike_ilif_seq_i32_ref(uint16_t *const *mask, const int32_t *const *x, int R, int C,
                                const qkf_ilif *p, int32_t *v);
void qkf_spike_ilif_seq_i16(uint16_t *const *mask, const int16_t *const *x, int R, int C,
                            const qkf_ilif *p, int32_t *v);
void qkf_spike_ilif_seq_i16_ref(uint16_t *const *mask, const int16_t *const *x, int R, int C,
                                const qkf_ilif *p, int32_t *v);

/* One step of the integer LIF for one neuron and channel c of p (the reference arithmetic, int64):
 * updates *v and returns the spike (0 or 1). H, the membrane before the spike decision, is written
 * to *h when h is not NULL (traces). */
int qkf_spike_ilif_step(const qkf_ilif *p, int c, int32_t s, int32_t *v, int32_t *h);

/* reduce(x, bits, wrap) of the integer form, on an exact value. */
static inline int64_t qkf_int_reduce(int64_t x, int bits, int wrap)
{
    if (bits >= 64)
        return x;
    if (wrap) {
        uint64_t u = (uint64_t)x << (64 - bits);
        return (int64_t)u >> (64 - bits); /* arithmetic shift: GCC, Clang */
    }
    int64_t m = ((int64_t)1 << (bits - 1)) - 1;
    return x > m ? m : x < -m ? -m : x;
}

/* Max pooling of integer currents: out[c] = max over the n rows src[k][c], for c < C (n >= 1). */
void qkf_spike_max_i32(int32_t *out, const int32_t *const *src, int n, int C);
void qkf_spike_max_i32_ref(int32_t *out, const int32_t *const *src, int n, int C);

#endif
