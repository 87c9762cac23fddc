/* NeuroBench's workload and static metrics (NeuroBench/neurobench; shared/spec/hardware.md 6),
 * computed as NeuroBench defines them from a dense-engine forward with every tensor and
 * membrane kept (QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH):
 *
 *   ActivationSparsity  (sum numel - sum nonzero) / sum numel of every spiking layer's output,
 *                       over all LIF layers, steps and samples
 *   SynapticOperations  per sample, conv and linear layers only (attention products, pooling,
 *                       normalisation ignored): Effective_MACs / Effective_ACs = the layer re-run
 *                       with its non-zero inputs and its weights set to 1 and no bias, outputs
 *                       summed, i.e. the (non-zero input, non-zero weight) pairs; a call counts
 *                       as AC when all its inputs are in {-1, 0, 1}, else MAC. Dense = every
 *                       input and weight set to 1 (padding stays 0). The encoding conv runs on
 *                       T copies of the image, as the official model (and NeuroBench) runs it.
 *   MembraneUpdates     per sample: all membranes at the first step, then those whose value
 *                       changed from the step before
 *   Footprint           bytes of parameters and buffers as PyTorch holds them (float32, and
 *                       one int64 num_batches_tracked per BatchNorm)
 *   ConnectionSparsity  zero weights / weights of the conv and linear layers */
#ifndef QKF_NEUROBENCH_H
#define QKF_NEUROBENCH_H

#include <stdint.h>
#include <stdio.h>

#include "../models/qkformer.h"
#include "../models/quant.h"
#include "dense.h"
#include "dense_int.h"

typedef struct {
    char name[QKF_MAX_NAME];
    int op;             /* graph op: conv, or the readout (its linear head) */
    int64_t eff_acs, eff_macs, dense; /* summed over samples */
    int64_t *nz;        /* conv: [cin][k*k] output channels with a non-zero weight; head: [C] */
    int64_t dense_per_frame;
} qkf_nb_layer;

typedef struct {
    const qkf_model *m;  /* the float model, or NULL */
    const qkf_qmodel *q; /* the integer model (qkf_nb_init_int), or NULL */
    const qkf_graph *g;
    int n_layers;
    qkf_nb_layer *layer;
    int64_t samples;
    int64_t act_numel, act_nonzero;
    int64_t mem_updates;
    int64_t footprint, weights, zero_weights;
} qkf_nb;

/* g: the dense engine's graph (the model's parameters are read for the weights). */
int qkf_nb_init(qkf_nb *nb, const qkf_model *m, const qkf_graph *g);
void qkf_nb_free(qkf_nb *nb);

/* The same metrics for an integer model (qkf sim --hw with an integer profile), from the dense
 * integer engine's tensors, which are the integer event engine's bit for bit:
 *   ActivationSparsity, SynapticOperations: as above, on the integer inputs (spike counts; the
 *                       encoding conv's quantised pixels) and the integer weights (a zero
 *                       mantissa is a zero weight)
 *   MembraneUpdates     the integer membranes replayed from each LIF's integer input with
 *                       qkf_q_lif_step (the replay's spikes must be the engine's: checked)
 *   Footprint           the integer model's parameters at the profile's bit widths, in bytes
 *                       (rounded up once): weight mantissas (weight_bits), weight exponents (the
 *                       bits of the exponent range; one per channel or per layer), biases
 *                       (bias_bits + the bits of 0..bias_exp_max), thresholds
 *                       (threshold_bits), the head's int64 biases
 *   ConnectionSparsity  zero integer weights / weights of the conv and linear layers */
int qkf_nb_init_int(qkf_nb *nb, const qkf_qmodel *q);
/* Adds one dense integer forward of B samples. */
int qkf_nb_add_int(qkf_nb *nb, const qkf_dense_int *d, int B);
/* Adds one dense forward of B samples (KEEP_ALL | RECORD_VH). */
int qkf_nb_add(qkf_nb *nb, const qkf_dense *d, int B);
void qkf_nb_print(const qkf_nb *nb);
/* The report's "neurobench" value (an object, no trailing newline). */
void qkf_nb_write_json(FILE *f, const qkf_nb *nb);

#endif
