/* qkf map --export-sanafe DIR: a mapped qkf model as SANA-FE's (github SLAM-Lab/SANA-FE, v2.x
 * YAML formats) network and architecture description, driven by the spikes qkf's event engine
 * produced on one sample, so that SANA-FE counts and prices the same activity as sim/cost.c
 * (docs/hardware.md, "Checked against SANA-FE").
 *
 * DIR/arch.yaml: the profile's mesh (chips side by side along x), tiles, cores and costs, with
 * one soma unit per neuron slot of a core ("qkf_forced[k]", SANA-FE's `input` model, which plays
 * a given spike train, priced as the profile's soma). DIR/snn.yaml: one group per qkf unit
 * ("L<u>", neuron ids c*N + token), each neuron with its recorded spike train (`spikes`), every
 * synapse its spikes look up as an edge (weight 0.0 for SANA-FE, whose input model refuses
 * current; the model's weight as `qkf_w`), every neuron mapped to the core qkf placed it on.
 * DIR/qkf.json: the groups, qkf's own counts of the same sample (the report's "hw" object) and
 * "export": what SANA-FE should count on snn.yaml, per step and per physical core.
 *
 * Exported as edges: conv (+ pool) on spikes, the Q-K attention neuron, the Q-K mask, SSA's
 * attention LIF (q -> its head's neurons; the weights are the kv table, which changes every
 * step: `qkf_w` is absent) and the readout counters. Not expressible as SANA-FE synapses: the
 * encoding conv's MACs on pixels, the readout head's MACs, SSA's kv table (a look-up per
 * co-active k, v pair, then one message per attention core); their neurons are exported (they
 * are accessed every step) without those look-ups and messages. Frame (dvs) models are refused:
 * their input events come from outside the mesh. */
#ifndef QKF_SANAFE_H
#define QKF_SANAFE_H

#include <stdint.h>
#include <stdio.h>

#include "../models/map.h"

/* Writes DIR (through DIR.tmp and a rename; an earlier export in DIR is replaced, any other
 * existing DIR refused). spikes[l]: LIF layer l's spikes of ONE sample, uint8 [T][n].
 * params: the model's parameters (the conv weights, as the graph's p_w index them). counts
 * (optional): writes qkf's own counts of that sample as the value of qkf.json's "hw" key (the
 * caller passes sim/cost.h's qkf_cost_write_json; io/ does not use sim/). */
int qkf_sanafe_write(const qkf_map *m, const qkf_params *params, const uint8_t *const *spikes,
                     int T, void (*counts)(FILE *, void *), void *arg, const char *dir);

#endif
