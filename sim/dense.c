/* Dense engine: executes the graph op by op over whole [C][F][N] tensors.
 *
 * Memory is planned once at creation: each tensor gets a buffer from a pool, reused as soon as
 * the tensor's last reader has run (unless KEEP_ALL), so a forward pass allocates nothing. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "../kernels/kernels.h"
#include "../kernels/spike_train.h"
#include "../kernels/winograd.h"
#include "dense.h"

struct qkf_dense {
    const qkf_model *m;
    qkf_graph g;
    int max_batch, flags;
    int n_buf;
    float **buf;      /* pool */
    int *tensor_buf;  /* tensor -> buffer index */
    float **lif_v, **lif_h;
    float *col, *prepool, *ssa_scratch, *feat;
    int64_t col_cap;
    int B; /* batch of the last forward */
    double *op_time; /* seconds per op, accumulated, when profiling */
    /* Eval BatchNorm folded per conv op (alpha, shift: [cout] each, NULL for other ops). Convs
     * without a MaxPool leave the raw GEMM output and their LIF applies bias + BN on the fly. */
    float **bn_alpha, **bn_shift;
    int *fuse; /* op index -> 1 if this CONV's BN is applied by the following LIF */
    /* Winograd F(m x m, 3 x 3): tile size (0: every conv through im2col) and, per conv op that
     * runs through it, the transformed weights (NULL for the others) */
    int wino_m;
    float **wino_U;
    /* Compact spikes (without KEEP_ALL): the outputs of LIF, ADD and QK_MASK ops (spikes and
     * small residual counts) are bytes; convolutions read a float copy in xf (made once per
     * tensor and forward), every other op has a byte kernel. */
    uint8_t *is_u8; /* per tensor */
    float *xf;
    int xf_tensor; /* the tensor xf holds in this forward, -1: none */
    float *hook_s; /* float spikes for the LIF hook */
    /* LIF observer (qkf_dense_set_lif_hook): what it wants per LIF layer, and scratch for the
     * membranes (when RECORD_VH is off) and for x behind a fused BN */
    qkf_dense_lif_hook hook;
    void *hook_ctx;
    uint8_t *hook_want;
    float *hook_v, *hook_h, *hook_x;
};

int qkf_dense_conv_flags(const char *name, int *flags)
{
    if (strcmp(name, "winograd4") == 0)
        *flags = QKF_DENSE_WINO4;
    else if (strcmp(name, "winograd2") == 0)
        *flags = QKF_DENSE_WINO2;
    else if (strcmp(name, "direct") == 0)
        *flags = QKF_DENSE_DIRECT_CONV;
    else
        return qkf_set_error("convolution '%s' is not one of winograd4, winograd2, direct", name);
    return 0;
}

void qkf_set_threads(int n)
{
    if (n < 1)
        n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

static int64_t tensor_floats(const qkf_graph *g, int t, int B)
{
    const qkf_tensor *x = &g->tensors[t];
    int64_t F = x->static_t ? B : (int64_t)g->cfg.T * B;
    return (int64_t)x->c * F * x->h * x->w;
}

qkf_dense *qkf_dense_create(const qkf_model *m, int max_batch, int flags)
{
    if (max_batch < 1)
        max_batch = 1;
    if (!(flags & (QKF_DENSE_DIRECT_CONV | QKF_DENSE_WINO2 | QKF_DENSE_WINO4)) &&
        getenv("QKF_CONV")) {
        int cf;
        if (qkf_dense_conv_flags(getenv("QKF_CONV"), &cf))
            return NULL;
        flags |= cf;
    }
    qkf_dense *e = qkf_calloc(1, sizeof *e);
    e->m = m;
    e->max_batch = max_batch;
    e->flags = flags;
    if (qkf_graph_build(&m->cfg, &m->params, (flags & QKF_DENSE_TB_COMPAT) != 0, &e->g)) {
        qkf_free(e);
        return NULL;
    }
    qkf_graph *g = &e->g;
    int nt = g->n_tensors;
    e->is_u8 = qkf_calloc((size_t)nt + 1, 1);
    if (!(flags & QKF_DENSE_KEEP_ALL)) {
        int ok = 1;
        for (int i = 0; i < g->n_ops; i++) {
            const qkf_op *op = &g->ops[i];
            if (op->kind == QKF_OP_LIF || op->kind == QKF_OP_ADD || op->kind == QKF_OP_QK_MASK)
                e->is_u8[op->out] = 1;
        }
        /* every reader of a byte tensor must have a byte kernel (and LIF inputs are currents) */
        for (int i = 0; i < g->n_ops; i++) {
            const qkf_op *op = &g->ops[i];
            int ins[3] = {op->in0, op->in1, op->in2};
            for (int j = 0; j < 3; j++)
                if (ins[j] >= 0 && e->is_u8[ins[j]] && op->kind == QKF_OP_LIF)
                    ok = 0;
            if ((op->kind == QKF_OP_ADD && !(e->is_u8[op->in0] && e->is_u8[op->in1])) ||
                (op->kind == QKF_OP_QK_MASK && !(e->is_u8[op->in0] && e->is_u8[op->in1])) ||
                (op->kind == QKF_OP_SSA &&
                 !(e->is_u8[op->in0] && e->is_u8[op->in1] && e->is_u8[op->in2])) ||
                ((op->kind == QKF_OP_QK_SUM || op->kind == QKF_OP_READOUT) &&
                 !e->is_u8[op->in0]))
                ok = 0;
        }
        if (!ok)
            memset(e->is_u8, 0, (size_t)nt);
    }
    /* last reader of each tensor */
    int *last = qkf_malloc((size_t)nt * sizeof(int));
    for (int t = 0; t < nt; t++)
        last[t] = -1;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        int ins[3] = {op->in0, op->in1, op->in2};
        for (int j = 0; j < 3; j++)
            if (ins[j] >= 0)
                last[ins[j]] = i;
    }
    e->tensor_buf = qkf_malloc((size_t)nt * sizeof(int));
    int64_t *cap = qkf_malloc((size_t)(nt + 1) * sizeof(int64_t));
    int *busy = qkf_malloc((size_t)(nt + 1) * sizeof(int));
    int keep = (flags & QKF_DENSE_KEEP_ALL) != 0;
    /* assign: input first, then each op's output; free inputs after their last reader */
    for (int step = -1; step < g->n_ops; step++) {
        int t = step < 0 ? g->input : g->ops[step].out;
        int64_t need = tensor_floats(g, t, max_batch);
        if (e->is_u8[t])
            need = (need + 3) / 4; /* bytes, in float-sized pool buffers */
        int best = -1;
        if (!keep)
            for (int bi = 0; bi < e->n_buf; bi++)
                if (!busy[bi] && cap[bi] >= need && (best < 0 || cap[bi] < cap[best]))
                    best = bi;
        if (best < 0 && !keep) /* grow the largest free buffer rather than add one */
            for (int bi = 0; bi < e->n_buf; bi++)
                if (!busy[bi] && (best < 0 || cap[bi] > cap[best]))
                    best = bi;
        if (best < 0) {
            best = e->n_buf++;
            cap[best] = 0;
        }
        if (cap[best] < need)
            cap[best] = need;
        busy[best] = 1;
        e->tensor_buf[t] = best;
        if (step >= 0 && !keep) {
            const qkf_op *op = &g->ops[step];
            int ins[3] = {op->in0, op->in1, op->in2};
            for (int j = 0; j < 3; j++)
                if (ins[j] >= 0 && last[ins[j]] == step)
                    busy[e->tensor_buf[ins[j]]] = 0;
        }
    }
    e->buf = qkf_malloc((size_t)e->n_buf * sizeof(float *));
    for (int bi = 0; bi < e->n_buf; bi++)
        e->buf[bi] = qkf_malloc((size_t)cap[bi] * sizeof(float));
    qkf_free(cap);
    qkf_free(busy);
    qkf_free(last);

    /* scratch: im2col, pre-pool currents, SSA, readout features */
    int64_t col_frame = 0, col_total = 0, prepool = 0, ssa = 0, xf = 0;
    int T = g->cfg.T;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0 >= 0 ? op->in0 : 0];
        int64_t F = x->static_t ? max_batch : (int64_t)T * max_batch;
        if (op->kind == QKF_OP_CONV) {
            if (!(op->k == 1 && op->stride == 1)) {
                int64_t c = qkf_conv_col_floats(op->cin, x->h, x->w, op->k, op->stride, op->pad);
                col_frame = c > col_frame ? c : col_frame;
                col_total = c * F > col_total ? c * F : col_total;
            }
            if (op->pool) {
                int64_t p = (int64_t)op->cout * F * x->h * x->w;
                prepool = p > prepool ? p : prepool;
            }
            if (e->is_u8[op->in0]) {
                int64_t n = tensor_floats(g, op->in0, max_batch);
                xf = n > xf ? n : xf;
            }
        } else if (op->kind == QKF_OP_SSA) {
            int64_t s = e->is_u8[op->in0]
                            ? qkf_ssa_u8_scratch_floats(x->c, op->heads, x->h * x->w,
                                                        omp_get_max_threads())
                            : qkf_ssa_scratch_floats(x->c, op->heads, omp_get_max_threads());
            ssa = s > ssa ? s : ssa;
        }
    }
    const int64_t col_budget = 8 << 20; /* 32 MB: large GEMMs without huge im2col buffers */
    e->col_cap = col_total < col_budget ? col_total : col_budget;
    if (e->col_cap < col_frame)
        e->col_cap = col_frame;
    /* Winograd for the 3x3 stride-1 convolutions with enough channels to pay for the
     * transforms: their cost grows with cin + cout per tile, the GEMMs' with cin * cout; on this
     * machine F(4x4) beats im2col from about cin * cout / (cin + cout) >= 20 (32 -> 64 channels:
     * 1.3x, 16 -> 32: 0.8x, 384 -> 384: 2.5x, one thread). Its V and M share the im2col
     * scratch. */
    e->wino_m = (flags & QKF_DENSE_DIRECT_CONV) ? 0 : (flags & QKF_DENSE_WINO2) ? 2 : 4;
    e->wino_U = qkf_calloc((size_t)g->n_ops, sizeof(float *));
    for (int i = 0; i < g->n_ops && e->wino_m; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0 >= 0 ? op->in0 : 0];
        if (op->kind != QKF_OP_CONV || !qkf_wino_ok(e->wino_m, op->k, op->stride, op->pad) ||
            (double)op->cin * op->cout < 20.0 * (op->cin + op->cout))
            continue;
        e->wino_U[i] = qkf_malloc(
            (size_t)qkf_wino_weight_floats(e->wino_m, op->cout, op->cin) * sizeof(float));
        qkf_wino_weights(e->wino_m, e->wino_U[i], m->params.data + m->params.p[op->p_w].offset,
                         op->cout, op->cin);
        int64_t F = x->static_t ? max_batch : (int64_t)T * max_batch;
        int64_t c = qkf_wino_scratch_floats(e->wino_m, op->cin, op->cout, x->h, x->w);
        int64_t want = c * F < col_budget ? c * F : col_budget;
        if (want < c)
            want = c;
        if (e->col_cap < want)
            e->col_cap = want;
    }
    e->col = qkf_malloc((size_t)(e->col_cap + 1) * sizeof(float));
    e->prepool = qkf_malloc((size_t)(prepool + 1) * sizeof(float));
    e->xf = xf ? qkf_malloc((size_t)xf * sizeof(float)) : NULL;
    e->ssa_scratch = qkf_malloc((size_t)(ssa + 1) * sizeof(float));
    e->feat = qkf_malloc((size_t)max_batch * g->cfg.embed_dims * sizeof(float));
    e->bn_alpha = qkf_calloc((size_t)g->n_ops, sizeof(float *));
    e->bn_shift = qkf_calloc((size_t)g->n_ops, sizeof(float *));
    e->fuse = qkf_calloc((size_t)g->n_ops, sizeof(int));
    const float *P = m->params.data;
    const qkf_param *pp = m->params.p;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind != QKF_OP_CONV)
            continue;
        e->bn_alpha[i] = qkf_malloc((size_t)op->cout * sizeof(float));
        e->bn_shift[i] = qkf_malloc((size_t)op->cout * sizeof(float));
        qkf_bn_fold(op->cout, P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                    P + pp[op->p_bn_mean].offset, P + pp[op->p_bn_var].offset, e->bn_alpha[i],
                    e->bn_shift[i]);
        /* the graph always puts a conv's LIF right after it; KEEP_ALL keeps currents post-BN */
        e->fuse[i] = !op->pool && !(flags & QKF_DENSE_KEEP_ALL) && i + 1 < g->n_ops &&
                     g->ops[i + 1].kind == QKF_OP_LIF && g->ops[i + 1].in0 == op->out;
    }
    if (flags & QKF_DENSE_RECORD_VH) {
        e->lif_v = qkf_calloc((size_t)g->n_lif, sizeof(float *));
        e->lif_h = qkf_calloc((size_t)g->n_lif, sizeof(float *));
        for (int l = 0; l < g->n_lif; l++) {
            int64_t n = tensor_floats(g, g->ops[g->lif_ops[l]].out, max_batch);
            e->lif_v[l] = qkf_malloc((size_t)n * sizeof(float));
            e->lif_h[l] = qkf_malloc((size_t)n * sizeof(float));
        }
    }
    return e;
}

void qkf_dense_free(qkf_dense *e)
{
    if (!e)
        return;
    for (int bi = 0; bi < e->n_buf; bi++)
        qkf_free(e->buf[bi]);
    if (e->lif_v)
        for (int l = 0; l < e->g.n_lif; l++) {
            qkf_free(e->lif_v[l]);
            qkf_free(e->lif_h[l]);
        }
    qkf_free(e->lif_v);
    qkf_free(e->lif_h);
    qkf_free(e->buf);
    qkf_free(e->tensor_buf);
    qkf_free(e->col);
    qkf_free(e->prepool);
    qkf_free(e->xf);
    qkf_free(e->is_u8);
    qkf_free(e->ssa_scratch);
    qkf_free(e->feat);
    qkf_free(e->op_time);
    for (int i = 0; i < e->g.n_ops; i++) {
        qkf_free(e->bn_alpha[i]);
        qkf_free(e->bn_shift[i]);
        if (e->wino_U)
            qkf_free(e->wino_U[i]);
    }
    qkf_free(e->wino_U);
    qkf_free(e->bn_alpha);
    qkf_free(e->bn_shift);
    qkf_free(e->fuse);
    qkf_dense_set_lif_hook(e, NULL, NULL, NULL);
    qkf_graph_free(&e->g);
    qkf_free(e);
}

const qkf_graph *qkf_dense_graph(const qkf_dense *e) { return &e->g; }

double *qkf_dense_profile(qkf_dense *e)
{
    if (!e->op_time)
        e->op_time = qkf_calloc((size_t)e->g.n_ops, sizeof(double));
    return e->op_time;
}

const float *qkf_dense_tensor(const qkf_dense *e, int tensor)
{
    if (!(e->flags & QKF_DENSE_KEEP_ALL) || tensor < 0 || tensor >= e->g.n_tensors)
        return NULL;
    return e->buf[e->tensor_buf[tensor]];
}

const float *qkf_dense_lif_v(const qkf_dense *e, int l) { return e->lif_v ? e->lif_v[l] : NULL; }
const float *qkf_dense_lif_h(const qkf_dense *e, int l) { return e->lif_h ? e->lif_h[l] : NULL; }

static float *T_(qkf_dense *e, int t) { return e->buf[e->tensor_buf[t]]; }
static uint8_t *U8_(qkf_dense *e, int t) { return (uint8_t *)e->buf[e->tensor_buf[t]]; }

/* A convolution's input as floats: the tensor itself, or its bytes converted into xf (once per
 * tensor and forward: q, k and v convolutions read the same input). */
static const float *conv_input(qkf_dense *e, int t, int B)
{
    if (!e->is_u8[t])
        return T_(e, t);
    if (e->xf_tensor != t) {
        qkf_u8_to_float(e->xf, U8_(e, t), tensor_floats(&e->g, t, B));
        e->xf_tensor = t;
    }
    return e->xf;
}

int qkf_dense_set_lif_hook(qkf_dense *e, qkf_dense_lif_hook fn, void *ctx, const uint8_t *want)
{
    qkf_free(e->hook_want);
    qkf_free(e->hook_v);
    qkf_free(e->hook_h);
    qkf_free(e->hook_x);
    qkf_free(e->hook_s);
    e->hook_s = NULL;
    e->hook_want = NULL;
    e->hook_v = e->hook_h = e->hook_x = NULL;
    e->hook = NULL;
    e->hook_ctx = NULL;
    if (!fn)
        return 0;
    if (!want)
        return qkf_set_error("qkf_dense_set_lif_hook: no want table");
    const qkf_graph *g = &e->g;
    int64_t vh = 0, x = 0, sn = 0;
    for (int l = 0; l < g->n_lif; l++) {
        int i = g->lif_ops[l];
        int64_t n = tensor_floats(g, g->ops[i].out, e->max_batch);
        if ((want[l] & QKF_DENSE_WANT_S) && e->is_u8[g->ops[i].out] && n > sn)
            sn = n;
        if ((want[l] & (QKF_DENSE_WANT_V | QKF_DENSE_WANT_H)) && n > vh)
            vh = n;
        if ((want[l] & QKF_DENSE_WANT_X) && i > 0 && e->fuse[i - 1]) {
            int64_t nx = tensor_floats(g, g->ops[i].in0, e->max_batch);
            x = nx > x ? nx : x;
        }
    }
    e->hook_want = qkf_malloc((size_t)g->n_lif);
    memcpy(e->hook_want, want, (size_t)g->n_lif);
    if (vh && !e->lif_v) {
        e->hook_v = qkf_malloc((size_t)vh * sizeof(float));
        e->hook_h = qkf_malloc((size_t)vh * sizeof(float));
    }
    if (x)
        e->hook_x = qkf_malloc((size_t)x * sizeof(float));
    if (sn)
        e->hook_s = qkf_malloc((size_t)sn * sizeof(float));
    e->hook = fn;
    e->hook_ctx = ctx;
    return 0;
}

/* qkf_dense_set_sink's hook: the sink receives the layer as the hook does. */
static int sink_hook(void *ctx, const qkf_dense_lif_data *d)
{
    const qkf_lif_sink *sink = ctx;
    return sink->put_layer(sink->ctx, d);
}

int qkf_dense_set_sink(qkf_dense *e, const qkf_lif_sink *sink)
{
    if (!sink)
        return qkf_dense_set_lif_hook(e, NULL, NULL, NULL);
    const qkf_graph *g = &e->g;
    if (g->n_lif != sink->n_lif || g->cfg.T != sink->T)
        return qkf_set_error("%s: the trace was opened for another model (%d LIF layers, T = %d; "
                             "the engine has %d, T = %d)",
                             sink->name, sink->n_lif, sink->T, g->n_lif, g->cfg.T);
    uint8_t *want = qkf_calloc((size_t)g->n_lif, 1);
    static const uint8_t bit[QKF_TRACE_NOBS] = {QKF_DENSE_WANT_V, QKF_DENSE_WANT_H,
                                                QKF_DENSE_WANT_X, QKF_DENSE_WANT_S};
    for (int l = 0; l < g->n_lif; l++) {
        unsigned w = sink->wants(sink->ctx, l);
        for (int o = 0; o < QKF_TRACE_NOBS; o++)
            if (w & (1u << o))
                want[l] |= bit[o];
    }
    int rc = qkf_dense_set_lif_hook(e, sink_hook, (void *)sink, want);
    qkf_free(want);
    return rc;
}

/* Hands LIF op i's tensors to the hook. Behind a fused conv the LIF read raw currents; x is then
 * recomputed with qkf_bias_bn_forward, which rounds exactly as the fused read does. */
static int call_lif_hook(qkf_dense *e, int i, int B, const float *v, const float *h)
{
    const qkf_graph *g = &e->g;
    const qkf_op *op = &g->ops[i];
    const qkf_tensor *xt = &g->tensors[op->in0], *yt = &g->tensors[op->out];
    int want = e->hook_want[op->lif_index];
    qkf_dense_lif_data d = {.lif_index = op->lif_index,
                            .T = g->cfg.T,
                            .B = B,
                            .C = yt->c,
                            .N = yt->h * yt->w,
                            .x_static = xt->static_t};
    if (want & QKF_DENSE_WANT_S) {
        d.s = T_(e, op->out);
        if (e->is_u8[op->out]) {
            qkf_u8_to_float(e->hook_s, U8_(e, op->out), tensor_floats(g, op->out, B));
            d.s = e->hook_s;
        }
    }
    if (want & QKF_DENSE_WANT_V)
        d.v = v;
    if (want & QKF_DENSE_WANT_H)
        d.h = h;
    if (want & QKF_DENSE_WANT_X) {
        d.x = T_(e, op->in0);
        if (i > 0 && e->fuse[i - 1]) {
            const qkf_op *cv = &g->ops[i - 1];
            const float *P = e->m->params.data;
            const qkf_param *pp = e->m->params.p;
            int64_t M = tensor_floats(g, op->in0, B) / xt->c;
            memcpy(e->hook_x, d.x, (size_t)(M * xt->c) * sizeof(float));
            qkf_bias_bn_forward(e->hook_x, xt->c, M, cv->p_b >= 0 ? P + pp[cv->p_b].offset : NULL,
                                P + pp[cv->p_bn_w].offset, P + pp[cv->p_bn_b].offset,
                                P + pp[cv->p_bn_mean].offset, P + pp[cv->p_bn_var].offset);
            d.x = e->hook_x;
        }
    }
    return e->hook(e->hook_ctx, &d);
}

int qkf_dense_forward(qkf_dense *e, const float *input, int B, float *logits,
                      int64_t *spike_count)
{
    if (B < 1 || B > e->max_batch)
        return qkf_set_error("batch %d outside 1..%d", B, e->max_batch);
    const qkf_graph *g = &e->g;
    const qkf_config *cfg = &g->cfg;
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    int T = cfg->T;
    e->B = B;
    e->xf_tensor = -1;
    const qkf_tensor *xin = &g->tensors[g->input];
    qkf_input_to_cfn(T_(e, g->input), input, xin->c, (int64_t)xin->h * xin->w, T, B,
                     xin->static_t);
    for (int i = 0; i < g->n_ops; i++) {
        double t_op = e->op_time ? qkf_now() : 0.0;
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0];
        const qkf_tensor *y = &g->tensors[op->out];
        int64_t F = x->static_t ? B : (int64_t)T * B;
        int N = x->h * x->w;
        switch (op->kind) {
        case QKF_OP_CONV: {
            int ho = (x->h - 1) / op->stride + 1, wo = (x->w - 1) / op->stride + 1;
            float *dst = op->pool ? e->prepool : T_(e, op->out);
            const float *in = conv_input(e, op->in0, B);
            if (e->wino_U[i])
                qkf_wino_conv_forward(e->wino_m, dst, in, e->wino_U[i], (int)F, op->cin, x->h,
                                      x->w, op->cout, e->col, e->col_cap);
            else
                qkf_conv_forward(dst, in, P + pp[op->p_w].offset, (int)F, op->cin, x->h, x->w,
                                 op->cout, op->k, op->stride, op->pad, e->col, e->col_cap);
            if (e->fuse[i])
                break; /* bias + BN applied by the LIF that follows */
            qkf_bias_bn_forward(dst, op->cout, F * ho * wo,
                                op->p_b >= 0 ? P + pp[op->p_b].offset : NULL,
                                P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                                P + pp[op->p_bn_mean].offset, P + pp[op->p_bn_var].offset);
            if (op->pool)
                qkf_maxpool3s2_forward(T_(e, op->out), dst, (int64_t)op->cout * F, ho, wo);
            break;
        }
        case QKF_OP_LIF: {
            float *v = e->lif_v ? e->lif_v[op->lif_index] : NULL;
            float *h = e->lif_h ? e->lif_h[op->lif_index] : NULL;
            int want = e->hook ? e->hook_want[op->lif_index] : 0;
            if (!v && (want & QKF_DENSE_WANT_V))
                v = e->hook_v;
            if (!h && (want & QKF_DENSE_WANT_H))
                h = e->hook_h;
            int64_t n;
            const qkf_op *cv = i > 0 && e->fuse[i - 1] ? &g->ops[i - 1] : NULL;
            const float *bias = cv && cv->p_b >= 0 ? P + pp[cv->p_b].offset : NULL;
            const float *alpha = cv ? e->bn_alpha[i - 1] : NULL;
            const float *shift = cv ? e->bn_shift[i - 1] : NULL;
            if (e->is_u8[op->out])
                n = qkf_bn_lif_forward_u8(U8_(e, op->out), T_(e, op->in0), x->c, T, B, N,
                                          x->static_t, op->vth, op->tb_compat, bias, alpha,
                                          shift, v, h);
            else
                n = qkf_bn_lif_forward(T_(e, op->out), T_(e, op->in0), x->c, T, B, N,
                                       x->static_t, op->vth, op->tb_compat, bias, alpha, shift,
                                       v, h);
            if (spike_count)
                spike_count[op->lif_index] += n;
            if (want) {
                int rc = call_lif_hook(e, i, B, v, h);
                if (rc)
                    return rc;
            }
            break;
        }
        case QKF_OP_ADD: {
            int64_t n = (int64_t)y->c * T * B * N;
            if (e->is_u8[op->out]) {
                qkf_add_u8(U8_(e, op->out), U8_(e, op->in0), U8_(e, op->in1), n);
                break;
            }
            const float *a = T_(e, op->in0), *b2 = T_(e, op->in1);
            float *o = T_(e, op->out);
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < n; j++)
                o[j] = a[j] + b2[j];
            break;
        }
        case QKF_OP_QK_SUM:
            if (e->is_u8[op->in0]) {
                if (op->qk == QKF_QK_TOKEN)
                    qkf_qk_token_sum_u8(T_(e, op->out), U8_(e, op->in0), x->c, op->heads,
                                        (int)F, N);
                else
                    qkf_qk_channel_sum_u8(T_(e, op->out), U8_(e, op->in0), x->c, (int)F, N);
            } else if (op->qk == QKF_QK_TOKEN)
                qkf_qk_token_sum(T_(e, op->out), T_(e, op->in0), x->c, op->heads, (int)F, N);
            else
                qkf_qk_channel_sum(T_(e, op->out), T_(e, op->in0), x->c, (int)F, N);
            break;
        case QKF_OP_QK_MASK: {
            const qkf_tensor *k = &g->tensors[op->in1];
            int Nk = k->h * k->w;
            if (e->is_u8[op->out]) {
                if (op->qk == QKF_QK_TOKEN)
                    qkf_qk_token_mask_u8(U8_(e, op->out), U8_(e, op->in0), U8_(e, op->in1), k->c,
                                         op->heads, (int)F, Nk);
                else
                    qkf_qk_channel_mask_u8(U8_(e, op->out), U8_(e, op->in0), U8_(e, op->in1),
                                           k->c, (int)F, Nk);
            } else if (op->qk == QKF_QK_TOKEN)
                qkf_qk_token_mask(T_(e, op->out), T_(e, op->in0), T_(e, op->in1), k->c, op->heads,
                                  (int)F, Nk);
            else
                qkf_qk_channel_mask(T_(e, op->out), T_(e, op->in0), T_(e, op->in1), k->c, (int)F,
                                    Nk);
            break;
        }
        case QKF_OP_SSA:
            if (e->is_u8[op->in0]) {
                qkf_ssa_forward_u8(T_(e, op->out), U8_(e, op->in0), U8_(e, op->in1),
                                   U8_(e, op->in2), x->c, op->heads, (int)F, N, e->ssa_scratch);
                break;
            }
            qkf_ssa_forward(T_(e, op->out), T_(e, op->in0), T_(e, op->in1), T_(e, op->in2), x->c,
                            op->heads, (int)F, N, e->ssa_scratch);
            break;
        case QKF_OP_READOUT:
            if (e->is_u8[op->in0]) {
                qkf_readout_forward_u8(logits, e->feat, U8_(e, op->in0),
                                       P + pp[op->p_head_w].offset, P + pp[op->p_head_b].offset,
                                       x->c, T, B, N, cfg->num_classes);
                break;
            }
            qkf_readout_forward(logits, e->feat, T_(e, op->in0), P + pp[op->p_head_w].offset,
                                P + pp[op->p_head_b].offset, x->c, T, B, N, cfg->num_classes);
            break;
        }
        if (e->op_time)
            e->op_time[i] += qkf_now() - t_op;
    }
    return 0;
}
