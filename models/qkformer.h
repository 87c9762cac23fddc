/* The QKFormer model: configuration, parameters under their official PyTorch state_dict names,
 * and the model graph, a list of operations that both engines (sim/dense.c, sim/sched.c) run.
 *
 * Tensor layout. Every activation is a float tensor in "CFN" order: [C][F][N], where F = T*B
 * frames ordered time-major (f = t*B + b, as PyTorch's x.flatten(0,1) of [T,B,...]) and N = H*W
 * tokens (row-major y*W + x). Channel-major across frames makes each 1x1 convolution a single
 * GEMM W[Cout][Cin] x X[Cin][F*N]. Per-sample neuron index (used for spikes, traces and
 * fixtures) is c*N + n, the official per-sample flattening of [C,H,W] / [C,N]. A tensor whose
 * `static_t` flag is set holds only B frames that stand for every time step (a static image
 * repeated over T: the encoding convolution runs once, not T times). */
#ifndef QKF_QKFORMER_H
#define QKF_QKFORMER_H

#include <stdint.h>

typedef enum {
    QKF_VARIANT_CIFAR = 0,
    QKF_VARIANT_IMAGENET,
    QKF_VARIANT_DVS128,
    QKF_VARIANT_CIFAR10DVS,
} qkf_variant;

typedef enum {
    QKF_QK_TOKEN = 0, /* QKTA, the official default */
    QKF_QK_CHANNEL,   /* QKCA (paper section 3.2; not in the official code) */
} qkf_qk_kind;

typedef struct {
    qkf_variant variant;
    int img_size;    /* square input, H = W */
    int in_channels; /* 3 for images, 2 for DVS polarity frames */
    int num_classes;
    int embed_dims; /* channels of the last stage, as the official constructors take it */
    int num_heads;  /* heads in every attention (official cifar: 8, dvs: 16) */
    float mlp_ratio;
    int depths; /* as in the official constructors: cifar 4 ({1,1,depths-2}), imagenet 10
                   ({1,2,depths-3}), dvs ignored ({1,1}) */
    int T;
    qkf_qk_kind qk_attn;
} qkf_config;

/* Presets: cifar10, cifar100, imagenet-10-384, imagenet-10-512, imagenet-10-768,
 * dvs128-gesture, cifar10-dvs, and the bare variant names cifar, imagenet, dvs128, cifar10dvs. */
int qkf_config_preset(const char *name, qkf_config *cfg);
const char *qkf_config_preset_list(void); /* "cifar10, cifar100, ..." for error messages */
const char *qkf_variant_name(qkf_variant v);
int qkf_variant_parse(const char *s, qkf_variant *v);
/* Bounds of qkf_config_validate and qkf_params_build (sizes, checked in 64-bit arithmetic). */
#define QKF_MAX_EMBED 65536
#define QKF_MAX_DEPTHS 1024
#define QKF_MAX_LAYER_VALUES ((int64_t)1 << 31) /* one layer, one sample, one step */
#define QKF_MAX_PARAMS ((int64_t)1 << 31)       /* floats of a model (8 GiB) */
/* Checks every field and that the input size fits the architecture. */
int qkf_config_validate(const qkf_config *cfg);
int qkf_config_is_frames(const qkf_config *cfg); /* DVS variants take [B,T,C,H,W] frames */
int qkf_config_token_grid(const qkf_config *cfg, int stage, int *h); /* stage 1..3 -> side */

/* ---- parameters ---------------------------------------------------------------------- */

#define QKF_MAX_NAME 96

typedef struct {
    char name[QKF_MAX_NAME]; /* official state_dict key, e.g. "stage1.0.tssa.q_conv.weight" */
    int ndim;
    int shape[4];
    int64_t numel;
    int64_t offset; /* into qkf_params.data */
    int decay;      /* 1 for tensors of two or more dimensions (AdamW weight decay) */
    int is_buffer;  /* BatchNorm running statistics: not trained */
} qkf_param;

typedef struct {
    int n;
    qkf_param *p;
    int64_t total;    /* floats in data, buffers included */
    int64_t n_train;  /* trainable parameters (what "parameters: N" counts) */
    float *data;      /* one flat buffer, in the order of p */
} qkf_params;

/* Builds the table of names and shapes for cfg (in forward order, derived from the graph);
 * allocates data (zeroed). */
int qkf_params_build(const qkf_config *cfg, qkf_params *ps);
void qkf_params_free(qkf_params *ps);
int qkf_params_find(const qkf_params *ps, const char *name); /* index or -1 */
/* PyTorch default initialisation (kaiming-uniform convs, BN 1/0/0/1, trunc-normal head). */
void qkf_params_init(const qkf_config *cfg, qkf_params *ps, uint64_t seed);

/* ---- graph ---------------------------------------------------------------------------- */

typedef enum {
    QKF_OP_CONV,     /* conv k x k (1 or 3), stride, pad + bias + BatchNorm (+ MaxPool 3/2/1) */
    QKF_OP_LIF,      /* multi-step LIF over T: currents -> spikes */
    QKF_OP_ADD,      /* residual: out = in0 + in1 */
    QKF_OP_QK_SUM,   /* QKTA: per (head, token) count of q; QKCA: per channel count over tokens */
    QKF_OP_QK_MASK,  /* out = attn (broadcast) * k */
    QKF_OP_SSA,      /* out = (q (k^T v)) * 0.125 per head */
    QKF_OP_READOUT,  /* token mean, time mean, linear head -> logits */
} qkf_op_kind;

typedef struct {
    int c, h, w;  /* per-frame shape; N = h*w */
    int static_t; /* 1: only B frames, the same for every t (encoding of a static image) */
    int is_spike; /* values are LIF spikes (0/1), or small integer counts */
    const char *name;
} qkf_tensor;

typedef struct {
    qkf_op_kind kind;
    int in0, in1, in2; /* tensor ids, -1 when unused */
    int out;
    char name[QKF_MAX_NAME]; /* module path: "patch_embed1.proj_conv", "stage1.0.tssa.q_lif" */
    /* CONV */
    char bn_name[QKF_MAX_NAME]; /* "patch_embed1.proj_bn" */
    int cin, cout, k, stride, pad, pool;
    int conv1d;   /* official module is Conv1d: weight shape [Cout][Cin][1] */
    int has_bias;
    int p_w, p_b;                           /* conv weight, bias (-1: no bias) */
    int p_bn_w, p_bn_b, p_bn_mean, p_bn_var; /* BatchNorm parameters */
    /* LIF */
    float vth;
    int lif_index; /* 0..n_lif-1 in graph order */
    int tb_compat; /* official SSA proj_lif quirk: time axis T*B (only with --tb-compat) */
    /* QK_SUM / QK_MASK / SSA */
    int heads;
    qkf_qk_kind qk;
    /* READOUT */
    int p_head_w, p_head_b;
} qkf_op;

typedef struct {
    qkf_config cfg;
    int n_ops, n_tensors, n_lif;
    qkf_op *ops;
    qkf_tensor *tensors;
    int input;  /* tensor id of the input ([C][F][N] frames, static_t for images) */
    int *lif_ops; /* op index of each LIF layer, in graph order */
} qkf_graph;

/* Builds ops and tensors only, without parameter indices (used to derive the parameter table). */
int qkf_graph_walk(const qkf_config *cfg, int tb_compat, qkf_graph *g);
/* Builds the op list for cfg (parameter indices refer to ps). tb_compat selects the official
 * T*B time axis for SSA proj_lif. */
int qkf_graph_build(const qkf_config *cfg, const qkf_params *ps, int tb_compat, qkf_graph *g);
void qkf_graph_free(qkf_graph *g);
/* Neurons per sample of a LIF layer's output. */
int64_t qkf_graph_lif_neurons(const qkf_graph *g, int lif_index);

/* ---- a loaded model ---------------------------------------------------------------------- */

typedef struct {
    qkf_config cfg;
    qkf_params params;
    /* Normalisation applied by dataset readers to pixels in [0,1] (absent: mean 0, std 1). */
    int n_norm;
    float input_mean[4], input_std[4];
} qkf_model;

void qkf_model_free(qkf_model *m);

#endif
