/* Training engine: training-mode forward and surrogate-gradient backward over a qkf_graph.
 *
 * Memory, planned once at creation:
 *   - every tensor of the forward keeps its own buffer until the backward has run (the backward
 *     reads convolution inputs, spikes, attention inputs), except the currents of a LIF layer
 *     fed by a convolution: the LIF computes them from the convolution's pre-BatchNorm output z
 *     as it steps (after a MaxPool they pass through one shared buffer), and its backward
 *     recomputes currents and membranes the same way, bit for bit, so neither is stored;
 *   - spikes (LIF and Q-K mask outputs) and residual sums of spikes are small integers and are
 *     kept as bytes (kernels/spike_train.h); the convolutions that read them run their forward
 *     and weight-gradient products over the events only;
 *   - the other LIF layers (attention neurons) record h in place of their input, which has no
 *     other reader;
 *   - per convolution: z (the BN backward needs x-hat), the batch mean and 1/std per channel,
 *     and the MaxPool argmax;
 *   - gradient buffers come from a pool planned over the reverse op order: a tensor's gradient
 *     lives from its last reader's backward to its producer's backward;
 *   - one flat gradient buffer parallel to params.data.
 * Nothing is allocated in forward or backward.
 *
 * A convolution over spikes, backward: the BatchNorm backward gives dz token-major
 * ([F*N][cout]: the event weight gradient reads one row per event), or channel-major plus a
 * token-major copy for 3x3 stride-1 layers, whose data gradient runs as Winograd F(4x4, 3x3);
 * other data gradients are sgemm over the token-major dz. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/backward.h"
#include "../kernels/base.h"
#include "../kernels/kernels.h"
#include "../kernels/spike_train.h"
#include "../kernels/surrogate.h"
#include "../kernels/winograd.h"
#include "../models/quant.h"
#include "../models/sink.h"
#include "dense.h"
#include "dense_int.h"
#include "train.h"

typedef struct {
    float *z;             /* conv output before BN: [cout][F][hc*wc] */
    float *mean, *invstd; /* [cout] */
    int32_t *arg;         /* MaxPool argmax [cout][F][ho*wo] */
} conv_cache;

struct qkf_train {
    const qkf_lif_sink *trace; /* recording the next forwards (qkf_train_set_trace) */
    float *tr_v, *tr_h, *tr_s, *tr_x; /* [largest LIF tensor]: a recorded layer's membranes,
                                       * spikes, currents */
    qkf_model *m;
    qkf_graph g;
    int max_batch, flags, threads;
    int B; /* batch of the last forward, 0 before the first */
    float **act;     /* per tensor: float values (NULL for byte tensors) */
    uint8_t **sp;    /* per tensor: spikes / residual counts as bytes (NULL for float tensors) */
    int *act_shared; /* per tensor: act is the shared current buffer (not kept) */
    float **lif_h;   /* per LIF layer: its own buffer, the input's buffer, or NULL (recomputed) */
    int *h_private;  /* per LIF layer: lif_h was allocated separately */
    int *recompute;  /* per LIF layer: currents and h are recomputed in the backward */
    float *ybuf;     /* shared currents of pooled conv-fed LIF layers (the others compute them
                      * from the conv's z as they go, kernels/spike_train.h) */
    float *lif_scratch; /* qkf_lif_backward_bn_u8 */
    conv_cache *cc;  /* per op */
    int *last_reader;
    int n_gbuf;
    float **gbuf;
    int *grad_buf; /* tensor -> gradient buffer, -1 when the tensor needs no gradient */
    float *grads;
    float *col, *pre, *dpre, *ssa_scratch, *feat, *logits, *probs, *dlogits;
    float *dzt; /* a spike convolution's output gradient, token-major [F*N][cout] */
    int wino_m;    /* Winograd F(m x m, 3x3) for 3x3 data gradients (4, 2; 0: im2col + sgemm) */
    float *wino_U; /* transposed-weight transform of the convolution at hand */
    int64_t col_cap, bytes;
    float loss_weight;                  /* dloss of the cross-entropy backward */
    int (*bn_sum)(double *, int64_t);   /* synchronised BatchNorm (NULL: per process) */
    double *bn_red;                     /* its reduction buffer, 3 * max channels + 2 */
    int (*grad_hook)(void *, int);      /* after each op's backward (qkf_train_set_grad_hook) */
    void *grad_hook_ctx;
    double *bn_sums; /* [2][max channels]: BatchNorm backward reductions from the LIF backward */
    int bn_sums_op;  /* the convolution they belong to, -1: none */
    double *prof; /* qkf_train_profile: [5][n_ops] forward s, backward s, input density, calls,
                   * weight-gradient s */
    /* quantisation-aware training (qkf_train_set_hw): the forward is the dense integer engine
     * on the model quantised afresh every step; 0 / NULL otherwise */
    int qat;
    qkf_hw_arith qat_arith;
    char qat_name[QKF_HW_NAME];
    qkf_quant_opts qat_opts;
    qkf_qmodel qm;          /* the last forward's integer model (qm.ops NULL: none) */
    qkf_dense_int *di;      /* its engine, holding every tensor of the last forward */
    float *qat_w, *qat_dw;  /* [largest conv weight]: integer weights in real units, gradient */
    double *qat_gb;         /* [max cout]: gradient of a conv's folded bias (from its LIF) */
    float *qat_head;        /* [classes][C]: the head's integer weights in real units */
};

static int64_t tensor_frames(const qkf_graph *g, int t, int B)
{
    return g->tensors[t].static_t ? B : (int64_t)g->cfg.T * B;
}

/* Values of tensor t (floats or bytes). */
static int64_t tensor_floats(const qkf_graph *g, int t, int B)
{
    const qkf_tensor *x = &g->tensors[t];
    return (int64_t)x->c * tensor_frames(g, t, B) * x->h * x->w;
}

static void *alloc(qkf_train *e, int64_t n, size_t size)
{
    e->bytes += n * (int64_t)size;
    return qkf_calloc((size_t)(n > 0 ? n : 1), size);
}

/* Size of a convolution's output before pooling. */
static void conv_out_hw(const qkf_graph *g, const qkf_op *op, int *hc, int *wc)
{
    const qkf_tensor *x = &g->tensors[op->in0];
    *hc = (x->h - 1) / op->stride + 1;
    *wc = (x->w - 1) / op->stride + 1;
}

static void plan_grads(qkf_train *e)
{
    qkf_graph *g = &e->g;
    int nt = g->n_tensors, B = e->max_batch;
    int64_t *cap = qkf_calloc((size_t)nt + 1, sizeof(int64_t));
    int *busy = qkf_calloc((size_t)nt + 1, sizeof(int));
    e->grad_buf = qkf_malloc((size_t)nt * sizeof(int));
    for (int t = 0; t < nt; t++)
        e->grad_buf[t] = -1;
    for (int i = g->n_ops - 1; i >= 0; i--) {
        const qkf_op *op = &g->ops[i];
        int ins[3] = {op->in0, op->in1, op->in2};
        for (int j = 0; j < 3; j++) {
            int t = ins[j];
            if (t < 0 || t == g->input || e->grad_buf[t] >= 0 || e->last_reader[t] != i)
                continue;
            int64_t need = tensor_floats(g, t, B);
            int best = -1;
            for (int bi = 0; bi < e->n_gbuf; bi++)
                if (!busy[bi] && cap[bi] >= need && (best < 0 || cap[bi] < cap[best]))
                    best = bi;
            if (best < 0)
                for (int bi = 0; bi < e->n_gbuf; bi++)
                    if (!busy[bi] && (best < 0 || cap[bi] > cap[best]))
                        best = bi;
            if (best < 0)
                best = e->n_gbuf++;
            if (cap[best] < need)
                cap[best] = need;
            busy[best] = 1;
            e->grad_buf[t] = best;
        }
        if (op->kind != QKF_OP_READOUT && e->grad_buf[op->out] >= 0)
            busy[e->grad_buf[op->out]] = 0;
    }
    e->gbuf = qkf_malloc((size_t)(e->n_gbuf + 1) * sizeof(float *));
    for (int bi = 0; bi < e->n_gbuf; bi++)
        e->gbuf[bi] = alloc(e, cap[bi], sizeof(float));
    qkf_free(cap);
    qkf_free(busy);
}

qkf_train *qkf_train_create(qkf_model *m, int max_batch, int flags)
{
    if (max_batch < 1)
        max_batch = 1;
    qkf_train *e = qkf_calloc(1, sizeof *e);
    e->m = m;
    e->max_batch = max_batch;
    e->flags = flags;
    e->threads = omp_get_max_threads();
    e->loss_weight = 1.0f;
    e->bn_sums_op = -1;
    if (qkf_graph_build(&m->cfg, &m->params, (flags & QKF_TRAIN_TB_COMPAT) != 0, &e->g)) {
        qkf_free(e);
        return NULL;
    }
    qkf_graph *g = &e->g;
    int nt = g->n_tensors, B = max_batch, T = g->cfg.T;
    int *readers = qkf_calloc((size_t)nt, sizeof(int));
    e->last_reader = qkf_malloc((size_t)nt * sizeof(int));
    for (int t = 0; t < nt; t++)
        e->last_reader[t] = -1;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        int ins[3] = {op->in0, op->in1, op->in2};
        for (int j = 0; j < 3; j++)
            if (ins[j] >= 0) {
                readers[ins[j]]++;
                e->last_reader[ins[j]] = i;
            }
    }
    e->act = qkf_calloc((size_t)nt, sizeof(float *));
    e->act_shared = qkf_calloc((size_t)nt, sizeof(int));
    e->lif_h = qkf_calloc((size_t)g->n_lif + 1, sizeof(float *));
    e->h_private = qkf_calloc((size_t)g->n_lif + 1, sizeof(int));
    e->recompute = qkf_calloc((size_t)g->n_lif + 1, sizeof(int));
    /* LIF layers whose only input is the convolution just before them: recomputed. Their
     * currents are never stored (computed from z on the fly), except after a MaxPool, where
     * they pass through the shared ybuf in the forward. */
    int64_t ymax = 0;
    for (int l = 0; l < g->n_lif; l++) {
        int i = g->lif_ops[l];
        const qkf_op *op = &g->ops[i];
        if (i > 0 && g->ops[i - 1].kind == QKF_OP_CONV && g->ops[i - 1].out == op->in0 &&
            readers[op->in0] == 1) {
            e->recompute[l] = 1;
            e->act_shared[op->in0] = 1;
            int64_t y = g->ops[i - 1].pool ? tensor_floats(g, op->in0, B) : 0;
            ymax = y > ymax ? y : ymax;
        }
    }
    e->ybuf = alloc(e, ymax, sizeof(float));
    e->lif_scratch = alloc(e, qkf_lif_backward_bn_scratch_floats(T, B, 1, e->threads),
                           sizeof(float));
    /* byte tensors: LIF spikes, Q-K masks of spikes, sums of byte tensors */
    e->sp = qkf_calloc((size_t)nt, sizeof(uint8_t *));
    uint8_t *is_byte = qkf_calloc((size_t)nt, 1);
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind == QKF_OP_LIF || op->kind == QKF_OP_QK_MASK ||
            (op->kind == QKF_OP_ADD && is_byte[op->in0] && is_byte[op->in1]))
            is_byte[op->out] = 1;
    }
    for (int t = 0; t < nt; t++) {
        if (is_byte[t])
            e->sp[t] = alloc(e, tensor_floats(g, t, B), 1);
        else if (!e->act_shared[t])
            e->act[t] = alloc(e, tensor_floats(g, t, B), sizeof(float));
    }
    qkf_free(is_byte);
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_op *op = &g->ops[g->lif_ops[l]];
        if (e->recompute[l]) {
            const qkf_op *cv = &g->ops[g->lif_ops[l] - 1];
            e->act[op->in0] = cv->pool ? e->ybuf : NULL;
        } else if (!g->tensors[op->in0].static_t && readers[op->in0] == 1 &&
                   op->in0 != g->input && e->act[op->in0]) {
            e->lif_h[l] = e->act[op->in0];
        } else {
            e->lif_h[l] = alloc(e, tensor_floats(g, op->out, B), sizeof(float));
            e->h_private[l] = 1;
        }
    }
    qkf_free(readers);

    e->cc = qkf_calloc((size_t)g->n_ops, sizeof(conv_cache));
    int64_t col_frame = 0, col_total = 0, zmax = 0, premax = 0, dpremax = 0, ssa = 0, work = 0;
    int64_t umax = 0;
    e->wino_m = flags & QKF_TRAIN_DIRECT ? 0 : flags & QKF_TRAIN_WINO2 ? 2 : 4;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0 >= 0 ? op->in0 : 0];
        int64_t F = x->static_t ? B : (int64_t)T * B;
        if (op->kind == QKF_OP_CONV) {
            int hc, wc;
            conv_out_hw(g, op, &hc, &wc);
            int64_t zn = (int64_t)op->cout * F * hc * wc;
            conv_cache *c = &e->cc[i];
            c->z = alloc(e, zn, sizeof(float));
            c->mean = alloc(e, op->cout, sizeof(float));
            c->invstd = alloc(e, op->cout, sizeof(float));
            if (op->pool) {
                c->arg = alloc(e, tensor_floats(g, op->out, B), sizeof(int32_t));
                premax = zn > premax ? zn : premax;
            }
            if (op->pool || !e->sp[op->in0]) /* the backward's dpre: pooled or float input */
                dpremax = zn > dpremax ? zn : dpremax;
            if (e->sp[op->in0] && e->wino_m && qkf_wino_ok(e->wino_m, op->k, op->stride, op->pad)) {
                int64_t u = qkf_wino_weight_floats(e->wino_m, op->cin, op->cout);
                int64_t sc = qkf_wino_scratch_floats(e->wino_m, op->cout, op->cin, x->h, x->w);
                umax = u > umax ? u : umax;
                work = sc > work ? sc : work;
            }
            zmax = zn > zmax ? zn : zmax;
            if (!(op->k == 1 && op->stride == 1)) {
                int64_t cf = qkf_conv_col_floats(op->cin, x->h, x->w, op->k, op->stride, op->pad);
                col_frame = cf > col_frame ? cf : col_frame;
                col_total = cf * F > col_total ? cf * F : col_total;
            }
            if (e->sp[op->in0]) {
                int64_t wf = qkf_spikeconv_work_floats((int)F, op->cin, x->h, x->w, op->cout,
                                                       op->k, op->stride, op->pad, e->threads);
                work = wf > work ? wf : work;
            }
        } else if (op->kind == QKF_OP_SSA) {
            int64_t s1 = qkf_ssa_u8_scratch_floats(x->c, op->heads, x->h * x->w, e->threads);
            ssa = s1 > ssa ? s1 : ssa;
        }
    }
    const int64_t col_budget = 8 << 20; /* 32 MB of im2col: large GEMMs, bounded scratch */
    e->col_cap = col_total < col_budget ? col_total : col_budget;
    if (e->col_cap < col_frame * e->threads) /* one frame per thread at least */
        e->col_cap = col_frame * e->threads;
    if (e->col_cap < work) /* the spike convolutions' scratch shares the im2col buffer */
        e->col_cap = work;
    e->col = alloc(e, e->col_cap, sizeof(float));
    e->pre = alloc(e, premax, sizeof(float));
    e->dpre = alloc(e, dpremax, sizeof(float));
    e->dzt = alloc(e, zmax, sizeof(float));
    e->wino_U = alloc(e, umax, sizeof(float));
    e->ssa_scratch = alloc(e, ssa, sizeof(float));
    int K = g->cfg.num_classes;
    e->feat = alloc(e, (int64_t)B * g->cfg.embed_dims, sizeof(float));
    e->logits = alloc(e, (int64_t)B * K, sizeof(float));
    e->probs = alloc(e, (int64_t)B * K, sizeof(float));
    e->dlogits = alloc(e, (int64_t)B * K, sizeof(float));
    e->grads = alloc(e, m->params.total, sizeof(float));
    int cmax = 1;
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].kind == QKF_OP_CONV && g->ops[i].cout > cmax)
            cmax = g->ops[i].cout;
    e->bn_red = alloc(e, 3 * (int64_t)cmax + 2, sizeof(double));
    e->bn_sums = alloc(e, 2 * (int64_t)cmax, sizeof(double));
    plan_grads(e);
    return e;
}

void qkf_train_set_trace(qkf_train *e, const qkf_lif_sink *tr)
{
    if (tr && !e->tr_v) {
        const qkf_graph *g = &e->g;
        int64_t mx = 1;
        for (int l = 0; l < g->n_lif; l++) {
            int64_t n = tensor_floats(g, g->ops[g->lif_ops[l]].out, e->max_batch);
            mx = n > mx ? n : mx;
        }
        e->tr_v = qkf_malloc((size_t)mx * sizeof(float));
        e->tr_h = qkf_malloc((size_t)mx * sizeof(float));
        e->tr_s = qkf_malloc((size_t)mx * sizeof(float));
        e->tr_x = qkf_malloc((size_t)mx * sizeof(float));
    }
    e->trace = tr;
}

void qkf_train_free(qkf_train *e)
{
    if (e) {
        qkf_dense_int_free(e->di);
        qkf_qmodel_free(&e->qm);
        qkf_free(e->qat_w);
        qkf_free(e->qat_dw);
        qkf_free(e->qat_gb);
        qkf_free(e->qat_head);
        qkf_free(e->tr_v);
        qkf_free(e->tr_h);
        qkf_free(e->tr_s);
        qkf_free(e->tr_x);
    }
    if (!e)
        return;
    qkf_graph *g = &e->g;
    for (int t = 0; t < g->n_tensors; t++) {
        if (!e->act_shared[t])
            qkf_free(e->act[t]);
        qkf_free(e->sp[t]);
    }
    qkf_free(e->sp);
    qkf_free(e->ybuf);
    qkf_free(e->lif_scratch);
    qkf_free(e->act_shared);
    qkf_free(e->recompute);
    for (int l = 0; l < g->n_lif; l++)
        if (e->h_private[l])
            qkf_free(e->lif_h[l]);
    for (int i = 0; i < g->n_ops; i++) {
        qkf_free(e->cc[i].z);
        qkf_free(e->cc[i].mean);
        qkf_free(e->cc[i].invstd);
        qkf_free(e->cc[i].arg);
    }
    for (int bi = 0; bi < e->n_gbuf; bi++)
        qkf_free(e->gbuf[bi]);
    qkf_free(e->act);
    qkf_free(e->lif_h);
    qkf_free(e->h_private);
    qkf_free(e->cc);
    qkf_free(e->last_reader);
    qkf_free(e->gbuf);
    qkf_free(e->grad_buf);
    qkf_free(e->grads);
    qkf_free(e->col);
    qkf_free(e->pre);
    qkf_free(e->dpre);
    qkf_free(e->dzt);
    qkf_free(e->wino_U);
    qkf_free(e->ssa_scratch);
    qkf_free(e->feat);
    qkf_free(e->logits);
    qkf_free(e->probs);
    qkf_free(e->dlogits);
    qkf_free(e->bn_red);
    qkf_free(e->bn_sums);
    qkf_free(e->prof);
    qkf_graph_free(&e->g);
    qkf_free(e);
}

const qkf_graph *qkf_train_graph(const qkf_train *e) { return &e->g; }

double *qkf_train_profile(qkf_train *e)
{
    if (!e->prof)
        e->prof = qkf_calloc((size_t)5 * e->g.n_ops, sizeof(double));
    return e->prof;
}

int64_t qkf_train_bytes(const qkf_train *e) { return e->bytes; }
float *qkf_train_grads(qkf_train *e) { return e->grads; }

void qkf_train_zero_grad(qkf_train *e)
{
    memset(e->grads, 0, (size_t)e->m->params.total * sizeof(float));
}

void qkf_train_set_loss_weight(qkf_train *e, float w) { e->loss_weight = w; }
void qkf_train_set_bn_sync(qkf_train *e, int (*sum)(double *buf, int64_t n)) { e->bn_sum = sum; }

/* Synchronised BatchNorm forward (qkf_bn_train_forward over the union of every rank's batch):
 * the global count and per-channel sums give the mean, then the squared deviations from that
 * (float) mean give the biased variance; the running statistics take the unbiased one over the
 * global n_count. Two collectives. */
static int sync_bn_forward(qkf_train *e, float *y, float *mean, float *invstd, const float *x,
                           int C, int64_t M, const float *bias, const float *gamma,
                           const float *beta, float *run_mean, float *run_var, int64_t n_count)
{
    double *red = e->bn_red, *mu = e->bn_red + C + 2;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * M;
        double s = 0.0;
        for (int64_t i = 0; i < M; i++)
            s += (double)xc[i];
        red[c] = s;
    }
    red[C] = (double)M;
    red[C + 1] = (double)n_count;
    if (e->bn_sum(red, C + 2))
        return -1;
    double Mg = red[C], ng = red[C + 1];
    for (int c = 0; c < C; c++) {
        mu[c] = red[c] / Mg;
        mean[c] = (float)mu[c];
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * M;
        float m = mean[c];
        double s = 0.0;
        for (int64_t i = 0; i < M; i++) {
            float d = xc[i] - m;
            s += (double)d * (double)d;
        }
        red[c] = s;
    }
    if (e->bn_sum(red, C))
        return -1;
    for (int c = 0; c < C; c++) {
        double var = red[c] / Mg;
        invstd[c] = (float)(1.0 / sqrt(var + (double)QKF_BN_EPS));
        if (run_mean) {
            double b = bias ? (double)bias[c] : 0.0;
            double unb = ng > 1.0 ? var * ng / (ng - 1.0) : var;
            run_mean[c] = (1.0f - QKF_BN_MOMENTUM) * run_mean[c] +
                          QKF_BN_MOMENTUM * (float)(mu[c] + b);
            run_var[c] = (1.0f - QKF_BN_MOMENTUM) * run_var[c] + QKF_BN_MOMENTUM * (float)unb;
        }
    }
    if (y)
        qkf_bn_train_apply(y, x, mean, invstd, gamma, beta, C, M);
    return 0;
}

/* Synchronised BatchNorm backward: the per-channel sums of dy and dy * x-hat over every rank
 * (one collective) give dx as over the global batch; gamma, beta and bias gradients receive this
 * rank's share. */
static int sync_bn_backward(qkf_train *e, float *dx, float *dgamma, float *dbeta, float *dbias,
                            const float *dy, const float *x, const float *mean,
                            const float *invstd, const float *gamma, int C, int64_t M)
{
    double *red = e->bn_red;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * M, *dyc = dy + (int64_t)c * M;
        float m = mean[c], is = invstd[c];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < M; i++) {
            s1 += (double)dyc[i];
            s2 += (double)(dyc[i] * ((xc[i] - m) * is));
        }
        red[c] = s1;
        red[C + c] = s2;
        dgamma[c] += (float)s2;
        dbeta[c] += (float)s1;
    }
    red[2 * C] = (double)M;
    if (e->bn_sum(red, 2 * C + 1))
        return -1;
    double Mg = red[2 * C];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (int64_t)c * M, *dyc = dy + (int64_t)c * M;
        float *dxc = dx + (int64_t)c * M;
        float m = mean[c], is = invstd[c];
        float k1 = (float)(red[c] / Mg), k2 = (float)(red[C + c] / Mg);
        float a = gamma[c] * is;
        for (int64_t i = 0; i < M; i++) {
            float xh = (xc[i] - m) * is;
            dxc[i] = (dyc[i] - k1 - xh * k2) * a;
        }
        if (dbias) {
            double s = 0.0;
            for (int64_t i = 0; i < M; i++)
                s += (double)dxc[i];
            dbias[c] += (float)s;
        }
    }
    return 0;
}

const float *qkf_train_tensor(const qkf_train *e, int tensor)
{
    if (tensor < 0 || tensor >= e->g.n_tensors || e->act_shared[tensor])
        return NULL;
    return e->act[tensor];
}

const uint8_t *qkf_train_spikes(const qkf_train *e, int tensor)
{
    if (tensor < 0 || tensor >= e->g.n_tensors)
        return NULL;
    return e->sp[tensor];
}

static int check_threads(const qkf_train *e)
{
    if (omp_get_max_threads() > e->threads)
        return qkf_set_error("training engine planned for %d threads, now %d (set the thread "
                             "count before creating it)",
                             e->threads, omp_get_max_threads());
    return 0;
}

static int qat_forward(qkf_train *e, const float *input, int B, const float **logits);
static int qat_backward(qkf_train *e, const float *dlogits);

int qkf_train_forward(qkf_train *e, const float *input, int B, int update_running,
                      const float **logits)
{
    if (B < 1 || B > e->max_batch)
        return qkf_set_error("batch %d outside 1..%d", B, e->max_batch);
    if (check_threads(e))
        return -1;
    if (e->qat)
        return qat_forward(e, input, B, logits);
    const qkf_graph *g = &e->g;
    const qkf_config *cfg = &g->cfg;
    float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    int T = cfg->T;
    e->B = B;
    const qkf_tensor *xin = &g->tensors[g->input];
    qkf_input_to_cfn(e->act[g->input], input, xin->c, (int64_t)xin->h * xin->w, T, B,
                     xin->static_t);
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0];
        const qkf_tensor *y = &g->tensors[op->out];
        int64_t F = x->static_t ? B : (int64_t)T * B;
        int N = x->h * x->w;
        double t_op = e->prof ? qkf_now() : 0.0;
        switch (op->kind) {
        case QKF_OP_CONV: {
            int hc, wc;
            conv_out_hw(g, op, &hc, &wc);
            conv_cache *c = &e->cc[i];
            int64_t M = F * hc * wc;
            if (e->sp[op->in0]) {
                int64_t nnz = qkf_spikeconv_forward(c->z, e->sp[op->in0], P + pp[op->p_w].offset,
                                                    (int)F, op->cin, x->h, x->w, op->cout, op->k,
                                                    op->stride, op->pad, e->col, e->col_cap);
                if (e->prof) {
                    e->prof[2 * g->n_ops + i] += (double)nnz / (double)((int64_t)x->c * F * N);
                    e->prof[3 * g->n_ops + i] += 1.0;
                }
            } else
                qkf_conv_forward(c->z, e->act[op->in0], P + pp[op->p_w].offset, (int)F, op->cin,
                                 x->h, x->w, op->cout, op->k, op->stride, op->pad, e->col,
                                 e->col_cap);
            /* NULL: statistics only, the LIF computes its currents from z */
            float *bn_out = op->pool ? e->pre : e->act[op->out];
            int64_t n_count = (x->static_t ? (int64_t)T * B : F) * hc * wc;
            if (e->bn_sum) {
                if (sync_bn_forward(e, bn_out, c->mean, c->invstd, c->z, op->cout, M,
                                    op->p_b >= 0 ? P + pp[op->p_b].offset : NULL,
                                    P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                                    update_running ? P + pp[op->p_bn_mean].offset : NULL,
                                    update_running ? P + pp[op->p_bn_var].offset : NULL, n_count))
                    return -1;
            } else
                qkf_bn_train_forward(bn_out, c->mean, c->invstd, c->z, op->cout, M,
                                     op->p_b >= 0 ? P + pp[op->p_b].offset : NULL,
                                     P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                                     update_running ? P + pp[op->p_bn_mean].offset : NULL,
                                     update_running ? P + pp[op->p_bn_var].offset : NULL,
                                     n_count);
            if (op->pool)
                qkf_maxpool3s2_train_forward(e->act[op->out], c->arg, e->pre,
                                             (int64_t)op->cout * F, hc, wc);
            break;
        }
        case QKF_OP_LIF: {
            int l = op->lif_index, rec = e->trace && e->trace->wants(e->trace->ctx, l);
            float *h = e->recompute[l] ? (rec ? e->tr_h : NULL) : e->lif_h[l];
            const float *cur = e->act[op->in0];
            if (!cur) { /* a convolution's un-pooled output: currents from z */
                const qkf_op *cv = &g->ops[i - 1];
                const conv_cache *c = &e->cc[i - 1];
                const float *gm = P + pp[cv->p_bn_w].offset, *bt = P + pp[cv->p_bn_b].offset;
                if (rec) { /* the trace wants them: once, by the same formula */
                    qkf_bn_train_apply(e->tr_x, c->z, c->mean, c->invstd, gm, bt, cv->cout,
                                       F * N);
                    cur = e->tr_x;
                } else
                    qkf_lif_forward_bn_u8(e->sp[op->out], c->z, c->mean, c->invstd, gm, bt, x->c,
                                          T, B, N, x->static_t, op->vth, op->tb_compat, h);
            }
            if (cur)
                qkf_lif_forward_u8(e->sp[op->out], cur, x->c, T, B, N, x->static_t, op->vth,
                                   op->tb_compat, rec ? e->tr_v : NULL, h);
            if (rec) {
                qkf_u8_to_float(e->tr_s, e->sp[op->out], tensor_floats(g, op->out, B));
                qkf_lif_data d = {l, T, B, x->c, N, x->static_t, e->tr_s,
                                        e->tr_v, h, cur};
                if (e->trace->put_layer(e->trace->ctx, &d))
                    return -1;
            }
            break;
        }
        case QKF_OP_ADD: {
            int64_t n = (int64_t)y->c * T * B * N;
            if (e->sp[op->out]) {
                qkf_add_u8(e->sp[op->out], e->sp[op->in0], e->sp[op->in1], n);
                break;
            }
            const float *a = e->act[op->in0], *b2 = e->act[op->in1];
            float *o = e->act[op->out];
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < n; j++)
                o[j] = a[j] + b2[j];
            break;
        }
        case QKF_OP_QK_SUM:
            if (op->qk == QKF_QK_TOKEN)
                qkf_qk_token_sum_u8(e->act[op->out], e->sp[op->in0], x->c, op->heads, (int)F, N);
            else
                qkf_qk_channel_sum_u8(e->act[op->out], e->sp[op->in0], x->c, (int)F, N);
            break;
        case QKF_OP_QK_MASK: {
            const qkf_tensor *k = &g->tensors[op->in1];
            int Nk = k->h * k->w;
            if (op->qk == QKF_QK_TOKEN)
                qkf_qk_token_mask_u8(e->sp[op->out], e->sp[op->in0], e->sp[op->in1], k->c,
                                     op->heads, (int)F, Nk);
            else
                qkf_qk_channel_mask_u8(e->sp[op->out], e->sp[op->in0], e->sp[op->in1], k->c,
                                       (int)F, Nk);
            break;
        }
        case QKF_OP_SSA:
            qkf_ssa_forward_u8(e->act[op->out], e->sp[op->in0], e->sp[op->in1], e->sp[op->in2],
                               x->c, op->heads, (int)F, N, e->ssa_scratch);
            break;
        case QKF_OP_READOUT:
            qkf_readout_forward_u8(e->logits, e->feat, e->sp[op->in0],
                                   P + pp[op->p_head_w].offset, P + pp[op->p_head_b].offset, x->c,
                                   T, B, N, cfg->num_classes);
            break;
        }
        if (e->prof)
            e->prof[i] += qkf_now() - t_op;
    }
    if (logits)
        *logits = e->logits;
    return 0;
}

static float *G(qkf_train *e, int t)
{
    return e->grad_buf[t] >= 0 ? e->gbuf[e->grad_buf[t]] : NULL;
}

/* The backward of the ops on spikes that the float and the quantisation-aware backward share:
 * residual sums, the QK attention sum and mask, SSA (gin: the gradient of in0, F frames of N
 * tokens). */
static void spike_op_backward(qkf_train *e, const qkf_graph *g, const qkf_op *op, float *gin,
                              int64_t F, int N)
{
    const qkf_tensor *x = &g->tensors[op->in0];
    int B = e->B;
    switch (op->kind) {
    case QKF_OP_ADD: {
        int64_t n = tensor_floats(g, op->out, B);
        const float *go = G(e, op->out);
        float *g0 = G(e, op->in0), *g1 = G(e, op->in1);
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < n; j++) {
            g0[j] += go[j];
            g1[j] += go[j];
        }
        break;
    }
    case QKF_OP_QK_SUM:
        if (op->qk == QKF_QK_TOKEN)
            qkf_qk_token_sum_backward(gin, G(e, op->out), x->c, op->heads, (int)F, N);
        else
            qkf_qk_channel_sum_backward(gin, G(e, op->out), x->c, (int)F, N);
        break;
    case QKF_OP_QK_MASK: {
        const qkf_tensor *k = &g->tensors[op->in1];
        int Nk = k->h * k->w;
        if (op->qk == QKF_QK_TOKEN)
            qkf_qk_token_mask_backward_u8(gin, G(e, op->in1), G(e, op->out), e->sp[op->in0],
                                          e->sp[op->in1], k->c, op->heads, (int)F, Nk);
        else
            qkf_qk_channel_mask_backward_u8(gin, G(e, op->in1), G(e, op->out), e->sp[op->in0],
                                            e->sp[op->in1], k->c, (int)F, Nk);
        break;
    }
    case QKF_OP_SSA:
        qkf_ssa_backward_u8(gin, G(e, op->in1), G(e, op->in2), G(e, op->out), e->sp[op->in0],
                            e->sp[op->in1], e->sp[op->in2], x->c, op->heads, (int)F, N,
                            e->ssa_scratch);
        break;
    default: break;
    }
}

int qkf_train_backward(qkf_train *e, const float *dlogits)
{
    if (e->B < 1)
        return qkf_set_error("backward without a forward");
    if (check_threads(e))
        return -1;
    if (e->qat)
        return qat_backward(e, dlogits);
    const qkf_graph *g = &e->g;
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    float *dP = e->grads;
    int T = g->cfg.T, B = e->B;
    for (int i = g->n_ops - 1; i >= 0; i--) {
        const qkf_op *op = &g->ops[i];
        int ins[3] = {op->in0, op->in1, op->in2};
        /* a recomputed LIF overwrites its input's gradient (its only reader); so does the data
         * gradient of a spike convolution that is the first to write its input's gradient */
        int overwrite = (op->kind == QKF_OP_LIF && e->recompute[op->lif_index] &&
                         !g->tensors[op->in0].static_t) ||
                        (op->kind == QKF_OP_CONV && e->sp[op->in0]);
        for (int j = 0; j < 3; j++) /* first touch of an input's gradient: zero it */
            if (ins[j] >= 0 && ins[j] != g->input && e->last_reader[ins[j]] == i && !overwrite)
                memset(G(e, ins[j]), 0, (size_t)tensor_floats(g, ins[j], B) * sizeof(float));
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t F = x->static_t ? B : (int64_t)T * B;
        int N = x->h * x->w;
        float *gin = op->in0 == g->input ? NULL : G(e, op->in0);
        double t_op = e->prof ? qkf_now() : 0.0;
        switch (op->kind) {
        case QKF_OP_CONV: {
            int hc, wc;
            conv_out_hw(g, op, &hc, &wc);
            const conv_cache *c = &e->cc[i];
            int64_t M = F * hc * wc;
            const float *dy = G(e, op->out);
            if (op->pool) {
                qkf_maxpool3s2_backward(e->dpre, dy, c->arg, (int64_t)op->cout * F, hc, wc);
                dy = e->dpre;
            }
            const float *W = P + pp[op->p_w].offset;
            float *dW = dP + pp[op->p_w].offset, *dgamma = dP + pp[op->p_bn_w].offset,
                  *dbeta = dP + pp[op->p_bn_b].offset,
                  *dbias = op->p_b >= 0 ? dP + pp[op->p_b].offset : NULL;
            const float *gamma = P + pp[op->p_bn_w].offset;
            if (e->sp[op->in0]) {
                /* spike input: the BatchNorm backward writes dz token-major, which the event
                 * weight gradient reads row by row and the input gradient's sgemm transposes;
                 * 3x3 layers take the data gradient from Winograd instead, which wants dz
                 * channel-major as well (in place: dy is dpre after a MaxPool, else the
                 * output's gradient, which has no other reader) */
                int wino = gin && e->wino_m && qkf_wino_ok(e->wino_m, op->k, op->stride, op->pad);
                float *d = op->pool ? e->dpre : G(e, op->out);
                if (e->bn_sum) {
                    if (sync_bn_backward(e, d, dgamma, dbeta, dbias, dy, c->z, c->mean,
                                         c->invstd, gamma, op->cout, M))
                        return -1;
                    qkf_transpose_f32(e->dzt, d, op->cout, (int)M);
                } else /* with Winograd, both layouts in one pass */
                    qkf_bn_train_backward_t(
                        e->dzt, dgamma, dbeta, dbias, dy, c->z, c->mean, c->invstd, gamma, op->cout,
                        M, e->bn_sums_op == i ? e->bn_sums : NULL, wino ? d : NULL);
                double t_w = e->prof ? qkf_now() : 0.0;
                qkf_spikeconv_backward_weight(dW, e->dzt, e->sp[op->in0], (int)F, op->cin, x->h,
                                              x->w, op->cout, op->k, op->stride, op->pad, e->col,
                                              e->col_cap);
                if (e->prof)
                    e->prof[4 * g->n_ops + i] += qkf_now() - t_w;
                if (wino) {
                    qkf_wino_weights_transposed(e->wino_m, e->wino_U, W, op->cout, op->cin);
                    if (e->last_reader[op->in0] == i) /* first to write gin */
                        qkf_wino_conv_forward(e->wino_m, gin, d, e->wino_U, (int)F, op->cout, x->h,
                                              x->w, op->cin, e->col, e->col_cap);
                    else
                        qkf_wino_conv_accumulate(e->wino_m, gin, d, e->wino_U, (int)F, op->cout,
                                                 x->h, x->w, op->cin, e->col, e->col_cap);
                } else if (gin)
                    qkf_conv_backward_input_t(gin, e->dzt, W, (int)F, op->cin, x->h, x->w,
                                              op->cout, op->k, op->stride, op->pad,
                                              e->last_reader[op->in0] == i, e->col, e->col_cap);
                break;
            }
            if (e->bn_sum) {
                if (sync_bn_backward(e, e->dpre, dgamma, dbeta, dbias, dy, c->z, c->mean,
                                     c->invstd, gamma, op->cout, M))
                    return -1;
            } else
                qkf_bn_train_backward(e->dpre, dgamma, dbeta, dbias, dy, c->z, c->mean,
                                      c->invstd, gamma, op->cout, M);
            qkf_conv_backward(gin, dW, e->dpre, e->act[op->in0], W, (int)F, op->cin, x->h, x->w,
                              op->cout, op->k, op->stride, op->pad, e->col, e->col_cap);
            break;
        }
        case QKF_OP_LIF:
            if (e->recompute[op->lif_index]) {
                /* the currents again from the conv's z (BatchNorm, MaxPool), then h, then
                 * BPTT, in one pass */
                const qkf_op *cv = &g->ops[i - 1];
                const conv_cache *c = &e->cc[i - 1];
                int hc, wc;
                conv_out_hw(g, cv, &hc, &wc);
                /* the reductions of the convolution's BatchNorm backward come along */
                int sums = e->sp[cv->in0] && !cv->pool && !e->bn_sum;
                e->bn_sums_op = sums ? i - 1 : -1;
                qkf_lif_backward_bn_u8(gin, G(e, op->out), e->sp[op->out], c->z,
                                       cv->pool ? c->arg : NULL, hc * wc, c->mean, c->invstd,
                                       P + pp[cv->p_bn_w].offset, P + pp[cv->p_bn_b].offset,
                                       x->c, T, B, N, x->static_t, op->vth, op->tb_compat,
                                       QKF_SURROGATE_ALPHA, overwrite,
                                       sums ? e->bn_sums : NULL, e->lif_scratch);
                break;
            }
            qkf_lif_backward_u8(gin, G(e, op->out), e->lif_h[op->lif_index], e->sp[op->out],
                                x->c, T, B, N, x->static_t, op->vth, op->tb_compat,
                                QKF_SURROGATE_ALPHA);
            break;
        case QKF_OP_ADD:
        case QKF_OP_QK_SUM:
        case QKF_OP_QK_MASK:
        case QKF_OP_SSA:
            spike_op_backward(e, g, op, gin, F, N);
            break;
        case QKF_OP_READOUT:
            qkf_readout_backward(gin, dP + pp[op->p_head_w].offset, dP + pp[op->p_head_b].offset,
                                 dlogits, e->feat, P + pp[op->p_head_w].offset, x->c, T, B, N,
                                 g->cfg.num_classes);
            break;
        }
        if (e->prof)
            e->prof[g->n_ops + i] += qkf_now() - t_op;
        if (e->grad_hook && e->grad_hook(e->grad_hook_ctx, i))
            return -1;
    }
    return 0;
}

int qkf_train_loss_backward(qkf_train *e, const float *input, int B, const float *target,
                            double *loss, int *correct)
{
    const float *logits;
    if (qkf_train_forward(e, input, B, 1, &logits))
        return -1;
    int K = e->g.cfg.num_classes;
    *loss = qkf_xent_forward(e->probs, logits, target, B, K);
    if (correct) {
        int n = 0;
        for (int b = 0; b < B; b++) {
            const float *z = logits + (int64_t)b * K, *tg = target + (int64_t)b * K;
            int bz = 0, bt = 0;
            for (int j = 1; j < K; j++) {
                bz = z[j] > z[bz] ? j : bz;
                bt = tg[j] > tg[bt] ? j : bt;
            }
            n += bz == bt;
        }
        *correct = n;
    }
    qkf_xent_backward(e->dlogits, e->probs, target, B, K, e->loss_weight);
    return qkf_train_backward(e, e->dlogits);
}

/* Softmax of z / T into p (double), returning log of the partition function of z / T. */
static double softmax_t(double *p, const float *z, int K, double T)
{
    double mx = (double)z[0] / T;
    for (int k = 1; k < K; k++)
        mx = (double)z[k] / T > mx ? (double)z[k] / T : mx;
    double s = 0.0;
    for (int k = 0; k < K; k++)
        s += (p[k] = exp((double)z[k] / T - mx));
    for (int k = 0; k < K; k++)
        p[k] /= s;
    return mx + log(s);
}

double qkf_kd_loss(float *dlogits, const float *z, const float *target, const float *tz, int B,
                   int K, float alpha, float T, float w, int *correct)
{
    QKF_ASSERT(K <= 1024 && B >= 1 && alpha >= 0.0f && alpha <= 1.0f && T > 0.0f);
    double p1[1024], ps[1024], pt[1024];
    const double a = (double)alpha, t = (double)T;
    double total = 0.0;
    int n = 0;
    for (int b = 0; b < B; b++) {
        const float *zb = z + (int64_t)b * K, *yb = target + (int64_t)b * K;
        const float *tb = tz + (int64_t)b * K;
        double l1 = softmax_t(p1, zb, K, 1.0), ls = softmax_t(ps, zb, K, t);
        double lt = softmax_t(pt, tb, K, t);
        double ce = 0.0, kl = 0.0;
        for (int k = 0; k < K; k++) {
            ce -= (double)yb[k] * ((double)zb[k] - l1);
            if (pt[k] > 0.0) /* pt log(pt / ps), in logits: (tz - lt) - (z - ls) over T */
                kl += pt[k] * (((double)tb[k] / t - lt) - ((double)zb[k] / t - ls));
        }
        total += (1.0 - a) * ce + a * t * t * kl;
        for (int k = 0; k < K; k++)
            dlogits[(int64_t)b * K + k] =
                (float)((double)w *
                        ((1.0 - a) * (p1[k] - (double)yb[k]) + a * t * (ps[k] - pt[k])) /
                        (double)B);
        int bz = 0, by = 0;
        for (int k = 1; k < K; k++) {
            bz = zb[k] > zb[bz] ? k : bz;
            by = yb[k] > yb[by] ? k : by;
        }
        n += bz == by;
    }
    if (correct)
        *correct = n;
    return total / (double)B;
}

int qkf_train_loss_backward_kd(qkf_train *e, const float *input, int B, const float *target,
                               const float *teacher_logits, float alpha, float T, double *loss,
                               int *correct)
{
    const float *logits;
    if (qkf_train_forward(e, input, B, 1, &logits))
        return -1;
    *loss = qkf_kd_loss(e->dlogits, logits, target, teacher_logits, B, e->g.cfg.num_classes, alpha,
                        T, e->loss_weight, correct);
    return qkf_train_backward(e, e->dlogits);
}

/* ---- optimiser ------------------------------------------------------------------------------ */

void qkf_optim_defaults(qkf_optim_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->lr = 1e-3f;
    c->min_lr = 1e-5f;
    c->warmup_lr = 1e-5f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.06f;
}

void qkf_optim_init(qkf_optim *o, const qkf_params *ps, const qkf_optim_cfg *c)
{
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    o->n = ps->total;
    o->m = qkf_calloc((size_t)ps->total, sizeof(float));
    o->v = qkf_calloc((size_t)ps->total, sizeof(float));
}

void qkf_optim_free(qkf_optim *o)
{
    qkf_free(o->m);
    qkf_free(o->v);
    memset(o, 0, sizeof *o);
}

float qkf_optim_lr(const qkf_optim_cfg *c, int64_t step)
{
    if (step < c->warmup_steps)
        return c->warmup_lr +
               (c->lr - c->warmup_lr) * (float)((double)step / (double)c->warmup_steps);
    int64_t span = c->total_steps - c->warmup_steps;
    if (span <= 0)
        return c->lr;
    double p = (double)(step - c->warmup_steps) / (double)span;
    if (p > 1.0)
        p = 1.0;
    return c->min_lr + (c->lr - c->min_lr) * (float)(0.5 * (1.0 + cos(3.14159265358979323846 * p)));
}

double qkf_optim_step(qkf_optim *o, qkf_params *ps, float *grads)
{
    double ss = 0.0;
    for (int k = 0; k < ps->n; k++) {
        const qkf_param *p = &ps->p[k];
        if (p->is_buffer)
            continue;
        const float *g = grads + p->offset;
        for (int64_t i = 0; i < p->numel; i++)
            ss += (double)g[i] * (double)g[i];
    }
    double norm = sqrt(ss);
    if (o->cfg.clip > 0.0f && norm > (double)o->cfg.clip) {
        float s = (float)((double)o->cfg.clip / (norm + 1e-6));
        for (int64_t i = 0; i < ps->total; i++)
            grads[i] *= s;
    }
    float lr = qkf_optim_lr(&o->cfg, o->step);
    o->step++;
    for (int k = 0; k < ps->n; k++) {
        const qkf_param *p = &ps->p[k];
        if (p->is_buffer)
            continue;
        qkf_adamw_update(ps->data + p->offset, grads + p->offset, o->m + p->offset,
                         o->v + p->offset, p->numel, lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps,
                         p->decay ? o->cfg.weight_decay : 0.0f, o->step);
    }
    return norm;
}

void qkf_train_set_grad_hook(qkf_train *e, int (*fn)(void *ctx, int op), void *ctx)
{
    e->grad_hook = fn;
    e->grad_hook_ctx = ctx;
}

/* ---- quantisation-aware training (qkf train --hw) ------------------------------------------
 *
 * The forward IS the chip's arithmetic: the float master weights are quantised by the quantiser
 * (qkf_quantize: BatchNorm folded with its running statistics, so it is frozen during the
 * fine-tuning) and the dense integer engine runs the batch; its logits are the loss's. The
 * backward is the float model's surrogate-gradient BPTT evaluated on the integer forward, with a
 * straight-through estimator for every rounding, in real units (an integer value times its
 * unit delta):
 *   - conv: y = sum w_q x, w_q = W_int * delta_c * 2^current_shift (the integer weight's real
 *     value), x the integer input (spike counts, or the quantised pixels X); dL/dw_q and dL/dx
 *     from the conv backward kernels;
 *   - the fold: w_q ~ wr = W * alpha_c * s / 2, b_q ~ br = (b alpha_c + beta - mean alpha_c)/2
 *     (alpha_c = gamma / sqrt(running_var + eps)), so dL/dW = dL/dw_q * alpha_c * s / 2 and so on
 *     for gamma, beta and the conv bias: identity through the rounding, zero for a weight or
 *     bias the quantiser clamped;
 *   - LIF: h_t = H_t * delta (H the integer membrane), spike surrogate sg'(h_t - vth) (the
 *     spike is exactly H * delta >= vth: the quantiser's threshold compensation), decay 1/2
 *     (trunc(V/2) straight through) or 1 for an integrate-and-fire chip, detached reset as the
 *     float model; zero gradient through a current or membrane register that saturated or
 *     wrapped at that step;
 *   - attention neurons: h = v/2 + x/2 exactly as the float model (x the count or 0.125 q k^T v);
 *   - Q-K sums and masks, SSA, residual sums: the float kernels on the integer spikes;
 *   - head: logits = W_q feat + b_q with W_q the head's integer weights in real units. */

#define QAT_TMAX 64
#define QAT_TILE 64

int qkf_train_set_hw(qkf_train *e, const qkf_hw_arith *a, const char *name,
                     const qkf_quant_opts *o)
{
    qkf_dense_int_free(e->di);
    e->di = NULL;
    qkf_qmodel_free(&e->qm);
    e->qat = 0;
    if (!a)
        return 0;
    if (a->is_float)
        return qkf_set_error("--hw %s: the float machine (run without --hw)", name ? name : "");
    if (e->flags & QKF_TRAIN_TB_COMPAT)
        return qkf_set_error("--hw trains on the chip's integer form, which has no --tb-compat "
                             "quirk (drop --tb-compat)");
    if (e->g.cfg.T > QAT_TMAX)
        return qkf_set_error("--hw: T = %d time steps, quantisation-aware training takes up to "
                             "%d",
                             e->g.cfg.T, QAT_TMAX);
    e->qat_arith = *a;
    snprintf(e->qat_name, sizeof e->qat_name, "%s", name ? name : "");
    memset(&e->qat_opts, 0, sizeof e->qat_opts);
    if (o) { /* calibration statistics would go stale as the weights move: not taken */
        e->qat_opts.headroom = o->headroom;
        e->qat_opts.clip_bias = o->clip_bias;
        e->qat_opts.bits_min = o->bits_min; /* the caller keeps the string */
    }
    /* the model as it is must be representable (the same refusal as qkf quantize) */
    if (qkf_quantize(e->m, &e->qat_arith, e->qat_name, &e->qat_opts, &e->qm))
        return -1;
    const qkf_graph *g = &e->g;
    if (e->qm.g.n_ops != g->n_ops || e->qm.g.n_tensors != g->n_tensors) {
        qkf_qmodel_free(&e->qm);
        return qkf_set_error("--hw: the integer model's graph differs from the training graph");
    }
    int64_t wmax = 1, cmax = 1, hmax = 1;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind == QKF_OP_CONV) {
            int64_t n = (int64_t)op->cout * op->cin * op->k * op->k;
            wmax = n > wmax ? n : wmax;
            cmax = op->cout > cmax ? op->cout : cmax;
        } else if (op->kind == QKF_OP_READOUT) {
            int64_t n = (int64_t)g->cfg.num_classes * g->tensors[op->in0].c;
            hmax = n > hmax ? n : hmax;
            if (!e->sp[op->in0]) {
                qkf_qmodel_free(&e->qm);
                return qkf_set_error("--hw: the readout reads a float tensor");
            }
        }
    }
    if (!e->qat_w) {
        e->qat_w = alloc(e, wmax, sizeof(float));
        e->qat_dw = alloc(e, wmax, sizeof(float));
        e->qat_gb = alloc(e, cmax, sizeof(double));
        e->qat_head = alloc(e, hmax, sizeof(float));
    }
    e->qat = 1;
    return 0;
}

const qkf_qmodel *qkf_train_qmodel(const qkf_train *e) { return e->qat && e->qm.ops ? &e->qm : NULL; }

static int qat_forward(qkf_train *e, const float *input, int B, const float **logits)
{
    const qkf_graph *g = &e->g;
    int T = g->cfg.T;
    e->B = B;
    qkf_dense_int_free(e->di);
    e->di = NULL;
    qkf_qmodel_free(&e->qm);
    if (qkf_quantize(e->m, &e->qat_arith, e->qat_name, &e->qat_opts, &e->qm))
        return -1;
    e->di = qkf_dense_int_create(&e->qm, e->max_batch, 0);
    if (qkf_dense_int_forward(e->di, input, B, e->logits, NULL, NULL))
        return -1;
    /* the integer tensors the backward kernels read: spikes and counts as bytes, the network
     * input as floats (the quantised pixels X, or frame counts) */
    for (int t = 0; t < g->n_tensors; t++) {
        const int32_t *v = qkf_dense_int_tensor(e->di, t);
        int64_t n = tensor_floats(g, t, B);
        if (e->sp[t]) {
            uint8_t *d = e->sp[t];
            int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
            for (int64_t j = 0; j < n; j++) {
                bad |= v[j] < 0 || v[j] > 255;
                d[j] = (uint8_t)v[j];
            }
            if (bad)
                return qkf_set_error("--hw: a count of tensor %d is beyond a byte", t);
        } else if (t == g->input) {
            float *d = e->act[t];
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < n; j++)
                d[j] = (float)v[j];
        }
    }
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t F = x->static_t ? B : (int64_t)T * B;
        if (op->kind == QKF_OP_CONV && op->pool) {
            /* the MaxPool's argmax, from the integer sums again: mantissas (the channel's
             * exponent scales a whole plane) as floats, exact below 2^24 in any order */
            const qkf_qop *qo = &e->qm.ops[i];
            int64_t nw = (int64_t)op->cout * op->cin * op->k * op->k;
            for (int64_t j = 0; j < nw; j++)
                e->qat_w[j] = (float)qo->w_mant[j];
            int hc, wc;
            conv_out_hw(g, op, &hc, &wc);
            conv_cache *c = &e->cc[i];
            if (e->sp[op->in0])
                qkf_spikeconv_forward(c->z, e->sp[op->in0], e->qat_w, (int)F, op->cin, x->h, x->w,
                                      op->cout, op->k, op->stride, op->pad, e->col, e->col_cap);
            else
                qkf_conv_forward(c->z, e->act[op->in0], e->qat_w, (int)F, op->cin, x->h, x->w,
                                 op->cout, op->k, op->stride, op->pad, e->col, e->col_cap);
            qkf_maxpool3s2_train_forward(e->pre, c->arg, c->z, (int64_t)op->cout * F, hc, wc);
        } else if (op->kind == QKF_OP_READOUT) {
            /* the head's integer weights in real units, and the features the backward reads */
            const qkf_qop *qo = &e->qm.ops[i];
            int K = g->cfg.num_classes, C = x->c;
            double sh = qo->head_scale * (double)T * (double)(x->h * x->w);
            for (int64_t j = 0; j < (int64_t)K * C; j++)
                e->qat_head[j] = (float)((double)qo->head_mant[j] * sh);
            qkf_readout_forward_u8(e->probs, e->feat, e->sp[op->in0], e->qat_head,
                                   P + pp[op->p_head_b].offset, C, T, B, x->h * x->w, K);
        }
    }
    if (logits)
        *logits = e->logits;
    return 0;
}

/* BPTT of an integer LIF layer (op i) in real units; see the top of this section. ds: the
 * gradient of its spikes; dx: of its input tensor (accumulated). A conv-fed layer's folded-bias
 * gradient goes to e->qat_gb. */
static void qat_lif_backward(qkf_train *e, int i, float *dx, const float *ds)
{
    const qkf_graph *g = &e->g;
    const qkf_op *op = &g->ops[i];
    const qkf_qop *qo = &e->qm.ops[i];
    const qkf_hw_arith *a = &e->qm.arith;
    const qkf_tensor *x = &g->tensors[op->in0];
    const int C = x->c, N = x->h * x->w, T = g->cfg.T, B = e->B, xs = x->static_t;
    const int32_t *in = qkf_dense_int_tensor(e->di, op->in0);
    const int32_t *bias = qo->conv >= 0 ? e->qm.ops[qo->conv].bias : NULL;
    const int64_t wgt = qo->conv >= 0 ? 1 : qo->in_weight;
    const int64_t mul = (int64_t)1 << a->current_shift;
    const int iaf = a->leak == QKF_HW_LEAK_NONE, ge = a->threshold_ge, rsub = a->reset_subtract;
    const double lam = iaf ? 1.0 : 0.5;
    /* conv-fed: the input tensor is the conv's output in real units (y = P * delta * 2^shift)
     * and enters h with weight 1; attention neurons: h = v/2 + x/2 as the float model */
    const double dxu = qo->conv >= 0 ? 1.0 : 0.5;
    const float vth = op->vth;
    const int64_t Fin = xs ? B : (int64_t)T * B, Fo = (int64_t)T * B;
    double *gb = qo->conv >= 0 ? e->qat_gb : NULL;
    const float lamf = (float)lam, dxf = (float)dxu;
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        const double dl = qo->delta[c];
        const int64_t th = qo->theta[c], bc = bias ? bias[c] : 0;
        double gbc = 0.0;
        /* a tile of QAT_TILE neurons at a time: the integer membranes again (qkf_q_lif_step),
         * then BPTT over rows the compiler vectorises */
        int64_t V[QAT_TILE];
        float hr[QAT_TMAX][QAT_TILE], km[QAT_TMAX][QAT_TILE], kc[QAT_TMAX][QAT_TILE],
            rs[QAT_TMAX][QAT_TILE], gn[QAT_TILE];
        for (int b = 0; b < B; b++)
            for (int n0 = 0; n0 < N; n0 += QAT_TILE) {
                int nn = N - n0 < QAT_TILE ? N - n0 : QAT_TILE;
                for (int j = 0; j < nn; j++)
                    V[j] = 0;
                for (int t = 0; t < T; t++) {
                    const int32_t *xr =
                        in + ((int64_t)c * Fin + (xs ? b : (int64_t)t * B + b)) * N + n0;
                    for (int j = 0; j < nn; j++) {
                        int64_t Pv = wgt * xr[j];
                        int64_t A = qkf_q_reduce(Pv, a->current_bits, a->current_wrap);
                        int64_t hp = (iaf ? V[j] : V[j] / 2) + A * mul + bc;
                        int64_t h = qkf_q_reduce(hp, a->membrane_bits, a->membrane_wrap);
                        int sp = ge ? h >= th : h > th;
                        kc[t][j] = A == Pv ? dxf : 0.0f;
                        km[t][j] = h == hp ? 1.0f : 0.0f;
                        hr[t][j] = (float)((double)h * dl) - vth;
                        /* how the next step's membrane depends on this one's: decay times
                         * dV/dH (detached reset: 1 - s, or 1 for a subtracting reset) */
                        rs[t][j] = rsub ? lamf : sp ? 0.0f : lamf;
                        V[j] = sp ? (rsub ? qkf_q_reduce(h - th, a->membrane_bits,
                                                         a->membrane_wrap)
                                          : 0)
                                  : h;
                    }
                }
                for (int j = 0; j < nn; j++)
                    gn[j] = 0.0f; /* dL/d(membrane before reduction) at t + 1 */
                for (int t = T - 1; t >= 0; t--) {
                    int64_t fo = ((int64_t)c * Fo + (int64_t)t * B + b) * N + n0;
                    float *d = dx + (xs ? ((int64_t)c * B + b) * N + n0 : fo);
                    const float *dsr = ds + fo;
                    float sum = 0.0f;
                    for (int j = 0; j < nn; j++) {
                        float gg = dsr[j] * qkf_surrogate(hr[t][j], QKF_SURROGATE_ALPHA) +
                                  gn[j] * rs[t][j];
                        gg *= km[t][j];
                        sum += gg;
                        d[j] += gg * kc[t][j];
                        gn[j] = gg;
                    }
                    gbc += (double)sum;
                }
            }
        if (gb)
            gb[c] = gbc;
    }
}

/* dL/d(float parameters) of conv op i from dL/dw_q (e->qat_dw) and dL/db_q (e->qat_gb), through
 * the fold with the running statistics (straight through the rounding, zero where clamped). */
static void qat_conv_params(qkf_train *e, int i)
{
    const qkf_graph *g = &e->g;
    const qkf_op *op = &g->ops[i];
    const qkf_qop *qo = &e->qm.ops[i], *ql = &e->qm.ops[i + 1];
    const qkf_hw_arith *a = &e->qm.arith;
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    float *dP = e->grads;
    const int64_t per = (int64_t)op->cin * op->k * op->k;
    const float *W = P + pp[op->p_w].offset, *Bc = op->p_b >= 0 ? P + pp[op->p_b].offset : NULL;
    const float *gm = P + pp[op->p_bn_w].offset, *bt = P + pp[op->p_bn_b].offset;
    const float *mu = P + pp[op->p_bn_mean].offset, *var = P + pp[op->p_bn_var].offset;
    float *dW = dP + pp[op->p_w].offset, *dg = dP + pp[op->p_bn_w].offset;
    float *dbt = dP + pp[op->p_bn_b].offset, *db = op->p_b >= 0 ? dP + pp[op->p_b].offset : NULL;
    const double sc = (op->in0 == g->input && e->qm.in_max > 0) ? e->qm.in_scale : 1.0;
    const double mmax = ldexp(1.0, a->weight_bits - 1) - 1.0;
    const double bmax = (ldexp(1.0, a->bias_bits - 1) - 1.0) * ldexp(1.0, a->bias_exp_max);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < op->cout; c++) {
        float al, shf;
        qkf_bn_fold(1, gm + c, bt + c, mu + c, var + c, &al, &shf);
        double invs = 1.0 / sqrt((double)var[c] + 1e-5);
        double wunit = ql->delta[c] * ldexp(1.0, a->current_shift + qo->w_exp[c]);
        double ggam = 0.0;
        for (int64_t j = 0; j < per; j++) {
            float wf = W[c * per + j] * al;
            double wr = ((double)wf * sc) * 0.5;
            if (fabs(wr / wunit) > mmax + 0.5) /* clamped to the mantissa's range */
                continue;
            double gq = (double)e->qat_dw[c * per + j];
            dW[c * per + j] += (float)(gq * (double)al * sc * 0.5);
            ggam += gq * (double)W[c * per + j] * sc * 0.5 * invs;
        }
        float bf = shf;
        if (Bc) {
            float t = Bc[c] * al;
            bf = t + shf;
        }
        double gbq = e->qat_gb[c];
        if (fabs((double)bf * 0.5 / ql->delta[c]) > bmax + 0.5) /* clip_bias saturated it */
            gbq = 0.0;
        dbt[c] += (float)(gbq * 0.5);
        ggam += gbq * 0.5 * ((Bc ? (double)Bc[c] : 0.0) - (double)mu[c]) * invs;
        if (db)
            db[c] += (float)(gbq * 0.5 * (double)al);
        dg[c] += (float)ggam;
    }
}

static int qat_backward(qkf_train *e, const float *dlogits)
{
    if (!e->di)
        return qkf_set_error("backward without a forward");
    const qkf_graph *g = &e->g;
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    float *dP = e->grads;
    const qkf_hw_arith *ar = &e->qm.arith;
    int T = g->cfg.T, B = e->B;
    for (int i = g->n_ops - 1; i >= 0; i--) {
        const qkf_op *op = &g->ops[i];
        int ins[3] = {op->in0, op->in1, op->in2};
        for (int j = 0; j < 3; j++) /* first touch of an input's gradient: zero it */
            if (ins[j] >= 0 && ins[j] != g->input && e->last_reader[ins[j]] == i)
                memset(G(e, ins[j]), 0, (size_t)tensor_floats(g, ins[j], B) * sizeof(float));
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t F = x->static_t ? B : (int64_t)T * B;
        int N = x->h * x->w;
        float *gin = op->in0 == g->input ? NULL : G(e, op->in0);
        switch (op->kind) {
        case QKF_OP_CONV: {
            int hc, wc;
            conv_out_hw(g, op, &hc, &wc);
            const conv_cache *c = &e->cc[i];
            int64_t M = F * hc * wc, nw = (int64_t)op->cout * op->cin * op->k * op->k;
            float *dy = G(e, op->out);
            if (op->pool) {
                qkf_maxpool3s2_backward(e->dpre, dy, c->arg, (int64_t)op->cout * F, hc, wc);
                dy = e->dpre;
            }
            const qkf_qop *qo = &e->qm.ops[i], *ql = &e->qm.ops[i + 1];
            int64_t per = nw / op->cout;
            for (int co = 0; co < op->cout; co++) { /* the integer weights in real units */
                double u = ql->delta[co] * ldexp(1.0, ar->current_shift);
                for (int64_t j = 0; j < per; j++)
                    e->qat_w[co * per + j] = (float)((double)qo->w[co * per + j] * u);
            }
            memset(e->qat_dw, 0, (size_t)nw * sizeof(float));
            if (e->sp[op->in0]) {
                qkf_transpose_f32(e->dzt, dy, op->cout, (int)M);
                qkf_spikeconv_backward_weight(e->qat_dw, e->dzt, e->sp[op->in0], (int)F, op->cin,
                                              x->h, x->w, op->cout, op->k, op->stride, op->pad,
                                              e->col, e->col_cap);
                if (gin)
                    qkf_conv_backward_input_t(gin, e->dzt, e->qat_w, (int)F, op->cin, x->h, x->w,
                                              op->cout, op->k, op->stride, op->pad, 0, e->col,
                                              e->col_cap);
            } else
                qkf_conv_backward(gin, e->qat_dw, dy, e->act[op->in0], e->qat_w, (int)F, op->cin,
                                  x->h, x->w, op->cout, op->k, op->stride, op->pad, e->col,
                                  e->col_cap);
            qat_conv_params(e, i);
            break;
        }
        case QKF_OP_LIF:
            qat_lif_backward(e, i, gin, G(e, op->out));
            break;
        case QKF_OP_ADD:
        case QKF_OP_QK_SUM:
        case QKF_OP_QK_MASK:
        case QKF_OP_SSA:
            spike_op_backward(e, g, op, gin, F, N);
            break;
        case QKF_OP_READOUT:
            qkf_readout_backward(gin, dP + pp[op->p_head_w].offset, dP + pp[op->p_head_b].offset,
                                 dlogits, e->feat, e->qat_head, x->c, T, B, N,
                                 g->cfg.num_classes);
            break;
        }
        (void)P;
        if (e->grad_hook && e->grad_hook(e->grad_hook_ctx, i))
            return -1;
    }
    return 0;
}
