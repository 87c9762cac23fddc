/* Neuron kernels of the event engine's nodes (sim/sched.c), beside the accumulation kernels of
 * kernels/spike.h: a LIF neuron row stepped through a sequence of inputs with its membranes in
 * registers, spike masks, and the event lists of spike masks.
 *
 * A spike mask is one 16-bit word per 16 channels: bit i of word k is channel 16 * k + i; a row
 * of C channels has (C + 15) / 16 words, and the bits past C are 0. Masks let a node compute
 * the spikes of a row in pieces (a block of channels at a time, in any order) and write the
 * row's event list once, in ascending channel order. */
#ifndef QKF_SPIKE_NODE_H
#define QKF_SPIKE_NODE_H

#include <stdint.h>

/* One LIF neuron row of C channels stepped through R inputs in order (the formula of
 * qkf_spike_lif_row: h = v + (x - v) / 2; s = h >= vth; v = h * (1 - s)): step r reads x[r] [C]
 * and writes its spikes to the mask mask[r] [(C + 15) / 16]. v [C]: the membranes before step 0,
 * replaced by those after step R - 1; NULL: the membranes start at zero and the final ones are
 * dropped (a forward's convolution: nothing but the spikes leaves the kernel). The same float
 * operations in the same order as R calls of qkf_spike_lif_row, so the same spikes and
 * membranes bit for bit. */
void qkf_spike_lif_seq(uint16_t *const *mask, const float *const *x, int R, int C, float vth,
                       float *v);
void qkf_spike_lif_seq_ref(uint16_t *const *mask, const float *const *x, int R, int C, float vth,
                           float *v);

/* The event list of a spike mask of C channels: the channels whose bit is set, ascending, into
 * ch, which has C slots (slots past the returned count may be overwritten: the fast path stores
 * whole vectors of indices). Returns the number of spikes. */
int qkf_spike_mask_emit(uint16_t *ch, const uint16_t *mask, int C);
int qkf_spike_mask_emit_ref(uint16_t *ch, const uint16_t *mask, int C);

/* Where the heads of an ascending channel list begin and end, for attention nodes (head h
 * holds channels [h * d, (h + 1) * d)): qkf_spike_count_below returns how many of ch[0..n) are
 * below c (the index of the first channel >= c); qkf_spike_head_ends writes end[h] = how many are
 * below (h + 1) * d for h < heads, so head h's events are ch[end[h - 1] .. end[h]) (from 0 for
 * h = 0). */
int qkf_spike_count_below(const uint16_t *ch, int n, int c);
int qkf_spike_count_below_ref(const uint16_t *ch, int n, int c);
void qkf_spike_head_ends(int *end, const uint16_t *ch, int n, int d, int heads);
void qkf_spike_head_ends_ref(int *end, const uint16_t *ch, int n, int d, int heads);

#endif
