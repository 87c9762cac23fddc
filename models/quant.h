/* The integer model: a QKFormer checkpoint in a chip profile's arithmetic (models/hw.h), and the
 * quantiser that makes it from a float model. docs/hardware.md ("The integer form of every
 * operation", "Quantisation") is the specification; both integer engines (sim/dense_int.c, the
 * reference; the integer mode of sim/sched.c) and the PyTorch reference (tools/reference) compute
 * exactly what is written here, bit for bit.
 *
 * Per graph op (qkf_qmodel.ops[i] belongs to graph op i; fields of other kinds are NULL / 0):
 *
 *   QKF_OP_CONV (BatchNorm folded; the LIF's input 1/2 folded in):
 *     w[cout][cin][k][k]   int32 W = w_mant << w_exp[co] (official layout; conv1d: k = 1)
 *     S[co]                = sum over inputs of W * x (int32, two's-complement wrap, so the
 *                            order of summation never matters); x = spike counts, or for the
 *                            encoding conv of a static image the quantised pixels X
 *     P                    = MaxPool 3x3/2/1 of S when op->pool (on the int32 S; padding never
 *                            wins)
 *     bias[co]             int32 = bias_mant << bias_exp, added to the membrane every step
 *   QKF_OP_LIF (one integer LIF per output neuron, state V int32 starting at 0):
 *     input P: the conv's P above (conv >= 0), or for attention neurons (conv = -1)
 *              P = in_weight * count (QK_SUM counts, or SSA's integer q (k^T v) per head)
 *     A      = qkf_q_reduce(P, current_bits, current_wrap)
 *     H      = qkf_q_reduce(decay(V) + (A << current_shift) + bias, membrane_bits,
 *                           membrane_wrap)                       (int64 before the reduction)
 *              decay(V) = trunc(V / 2) (leak DECAY: tau = 2 for any decay_bits >= 1, since
 *              (|V| * 2^(decay_bits-1)) >> decay_bits = |V| >> 1), or V (leak NONE: an IAF
 *              chip such as Speck runs QKFormer without its leak)
 *     spike  = threshold_ge ? H >= theta[c] : H > theta[c]
 *     V      = spike ? (reset_subtract ? qkf_q_reduce(H - theta, membrane) : 0) : H
 *     (qkf_q_lif_step below is this step; tau = 2 is the only decay QKFormer has.)
 *   QKF_OP_READOUT:
 *     F[c]       = sum over t and tokens of the final tensor's counts (int64)
 *     logit_int  = sum_c head_w[k][c] * F[c] + head_b[k]             (int64)
 *     logit      = (float)((double)logit_int * head_scale)           (reported logits)
 *   ADD, QK_SUM, QK_MASK, SSA: exact integer counts, as in the float engines.
 *
 * The encoding conv of a static image reads X = clamp(floor(x / in_scale + 0.5), -in_max,
 * in_max) computed in double from the float pixel x after the dataset normalisation
 * (qkf_q_input); frame inputs (dvs variants) are event counts and are used as they are
 * (in_scale = 1, in_max = 0 meaning "not quantised": X = (int32)x). */
#ifndef QKF_QUANT_H
#define QKF_QUANT_H

#include <math.h>
#include <stdint.h>

#include "hw.h"
#include "qkformer.h"

#define QKF_QUANT_FORMAT 1 /* root attribute "qkf_quant_format" of a quantised checkpoint */

typedef struct {
    /* ---- QKF_OP_CONV ---- */
    int32_t *w;         /* [cout][cin][k][k] = w_mant << w_exp[co] */
    int16_t *w_mant;    /* [cout][cin][k][k], |mant| <= 2^(weight_bits-1) - 1 */
    int8_t *w_exp;      /* [cout] (all equal when the profile is per layer) */
    int32_t *bias;      /* [cout] = bias_mant << bias_exp, membrane units */
    int32_t *bias_mant; /* [cout] */
    int8_t *bias_exp;   /* [cout] */
    /* quantiser report (not needed to run): weight bits used, error of the integer weights
     * against the folded float weights, relative to the layer's largest |w| (max) and rms */
    int bits_used;
    double err_max, err_rms;
    int clipped; /* biases saturated (clip_bias) */
    /* ---- QKF_OP_LIF ---- */
    int conv;          /* op index of the conv feeding this LIF, -1 for attention neurons */
    int32_t in_weight; /* attention neurons: P = in_weight * count (1); 0 for conv LIFs */
    int32_t *theta;    /* [C] threshold in membrane units (compared per threshold_ge) */
    double *delta;     /* [C] real value of one membrane unit (information: scales, checks) */
    /* ---- QKF_OP_READOUT ---- */
    int32_t *head_w;    /* [classes][C] = head_mant << head_exp */
    int16_t *head_mant; /* [classes][C] */
    int head_exp;
    int64_t *head_b;    /* [classes] */
    double head_scale;  /* logit = logit_int * head_scale (= s_h / (T * N)) */
} qkf_qop;

typedef struct {
    qkf_config cfg;
    qkf_graph g;            /* the op list (qkf_graph_walk, per-sample LIFs: no tb_compat) */
    char hw_name[QKF_HW_NAME]; /* profile the model was made for */
    qkf_hw_arith arith;     /* and its arithmetic (what the engines compute with) */
    qkf_qop *ops;           /* [g.n_ops] */
    double in_scale;        /* encoding input: X = floor(x / in_scale + 0.5), clamped */
    int32_t in_max;         /* |X| <= in_max; 0 for frame inputs (counts, not quantised) */
    /* the float model's input normalisation (dataset readers apply it before X is taken) */
    int n_norm;
    float input_mean[4], input_std[4];
} qkf_qmodel;

typedef struct {
    /* Calibration statistics (optional; sim/dense_int.h qkf_quant_calibrate measures them by
     * running the float model on a few samples). Indexed by graph op of each conv's LIF:
     * calib_x[i][c] the largest |x| (the LIF's input after BatchNorm) and calib_h[i][c] the largest
     * |h| of channel c; NULL arrays (or entries) fall back to the headroom. calib_in > 0: the
     * largest |normalised pixel| (sets the input scale of static images). */
    double **calib_x, **calib_h; /* [calib_n] each */
    int calib_n;
    double calib_in;
    /* Without calibration: the membrane and current registers must hold +-headroom * vth
     * (default 16 when 0). */
    double headroom;
    /* 1: the bias register does not bound the membrane unit; a bias beyond it saturates (and is
     * counted in qkf_qop.clipped). Default 0: the unit widens until every bias fits. */
    int clip_bias;
    /* Between the two, per layer: "M" or a comma list of "M" and "LAYER=M" items (a conv's
     * official name; later items win; M = 0: none for that layer). M caps the unit the bias
     * register asks for at the one that leaves the layer's largest weight M bits (2^(M-1) - 1
     * mantissa steps, sign included, as the report's "bits"), 2 <= M <= weight_bits; a bias
     * beyond the register then saturates (counted in qkf_qop.clipped). A layer whose biases fit
     * at that unit is quantised as without it. NULL or "": off (the default). */
    const char *bits_min;
} qkf_quant_opts;

/* Quantises m for arithmetic a (is_float must be 0) into *q (allocates; free with
 * qkf_qmodel_free). hw_name: the profile's name, stored in q (may be NULL). A layer the profile
 * cannot represent (weights beyond the exponent range, a bias beyond its bits, a threshold
 * beyond the membrane) is refused: -1 and one line naming the layer. */
int qkf_quantize(const qkf_model *m, const qkf_hw_arith *a, const char *hw_name,
                 const qkf_quant_opts *o, qkf_qmodel *q);
void qkf_qmodel_free(qkf_qmodel *q);
/* Checks an arithmetic description for what the integer form supports (bits in range, ...). */
int qkf_quant_check_arith(const qkf_hw_arith *a);

/* Quantised checkpoint (HDF5, io/qckpt.c). Layout in docs/hardware.md "Quantisation": integer
 * datasets under the official state_dict names of each layer ("stage1.0.tssa.q_conv.weight":
 * int8/int16 mantissas, "...q_conv.weight_exp": int8 [cout], "...q_conv.bias": int32 mantissas,
 * "...q_conv.bias_exp": int8, "...q_lif.threshold": int32 [C], "...q_lif.delta": float64 [C],
 * "head.weight", "head.bias" int64), the configuration, the scales and the profile (name and
 * every arithmetic field, "hw.<field>") as attributes. Loading validates every name, shape,
 * type and range, with one-line errors naming the file and key. */
int qkf_qckpt_save(const char *path, const qkf_qmodel *q);
int qkf_qckpt_load(const char *path, qkf_qmodel *q);
/* 1 if path is a quantised checkpoint (has attribute qkf_quant_format), 0 if not, -1 if it
 * cannot be read as HDF5. */
int qkf_qckpt_is_quant(const char *path);

/* ---- the integer form's primitives, shared by every engine ------------------------------ */

/* Reduces x to a signed register of `bits` bits: wrap (two's complement) or saturate to
 * +-(2^(bits-1) - 1). bits >= 64 leaves x as it is. */
static inline int64_t qkf_q_reduce(int64_t x, int bits, int wrap)
{
    if (bits >= 64)
        return x;
    if (wrap) {
        uint64_t m = ((uint64_t)1 << bits) - 1, u = (uint64_t)x & m;
        if (u >> (bits - 1))
            u |= ~m;
        return (int64_t)u;
    }
    int64_t hi = ((int64_t)1 << (bits - 1)) - 1;
    return x > hi ? hi : x < -hi ? -hi : x;
}

/* One LIF step of one neuron: P its integer input this step (see the top of this file), *v its
 * membrane. Returns the spike (0/1). */
static inline int qkf_q_lif_step(int32_t *v, int64_t P, int32_t bias, int32_t theta,
                                 const qkf_hw_arith *a)
{
    int64_t A = qkf_q_reduce(P, a->current_bits, a->current_wrap);
    int64_t V = *v;
    /* leak DECAY: tau = 2, trunc(V / 2) (C's / truncates); NONE: integrate-and-fire (Speck) */
    int64_t h = (a->leak == QKF_HW_LEAK_NONE ? V : V / 2) + A * ((int64_t)1 << a->current_shift) +
                bias;
    h = qkf_q_reduce(h, a->membrane_bits, a->membrane_wrap);
    int s = a->threshold_ge ? h >= theta : h > theta;
    if (s)
        h = a->reset_subtract ? qkf_q_reduce(h - theta, a->membrane_bits, a->membrane_wrap) : 0;
    *v = (int32_t)h;
    return s;
}

/* The encoding input of a static image: x (normalised pixel) -> X. */
static inline int32_t qkf_q_input(float x, double in_scale, int32_t in_max)
{
    if (in_max == 0)
        return (int32_t)x;
    double r = floor((double)x / in_scale + 0.5);
    return r > in_max ? in_max : r < -in_max ? -in_max : (int32_t)r;
}

#endif
