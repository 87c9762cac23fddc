/* Dense integer engine (dense_int.h): the integer form of docs/hardware.md, op by op over whole
 * int32 [C][F][N] tensors.
 *
 * Convolutions are integer GEMMs: im2col (k x k or strided) into int32 columns, then blocks of 4
 * output channels x 256 positions accumulated in uint32 registers (two's-complement wrap is the
 * contract, and unsigned arithmetic keeps it defined C), a loop gcc vectorises. Every output
 * element is summed by one thread in a fixed order, so the thread count never changes a bit
 * (integer sums are exact anyway). Every tensor keeps its own buffer (the engine is the
 * reference: the last forward's tensors stay readable). */
#include "dense_int.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../kernels/base.h"

struct qkf_dense_int {
    const qkf_qmodel *q;
    const qkf_graph *g;
    qkf_graph gtb; /* QKF_DENSE_INT_TB_COMPAT: q's configuration walked with tb_compat */
    int tb;
    int max_batch, B;
    int32_t **t;        /* per tensor */
    int32_t *col;       /* im2col scratch */
    int64_t col_cap;    /* int32s */
    int32_t *prepool;   /* S before MaxPool */
    int32_t *vmem;      /* LIF membranes, [threads][N] */
    int64_t vmem_per;   /* per thread */
    int64_t *feat;      /* [B][C] */
    int plain;          /* QKF_DENSE_INT_PLAIN: integer GEMMs only */
    float **wf;         /* per conv op: weight mantissas as floats [cout][K] */
    int *mmax;          /* per conv op: largest |mantissa| */
    void *fcol;         /* im2col / input scratch, floats or doubles (fcol_cap elements) */
    int64_t fcol_cap;
    void *fout;         /* GEMM output, floats or doubles [cout][F*P] */
    double *wd;         /* double weights of the layer being run */
    const qkf_lif_sink *sink; /* qkf_dense_int_set_sink */
    float *rec[4];            /* the sink's v, h, input, spikes of one layer [C][F][N] */
};

static int64_t frames(const qkf_graph *g, int t, int B)
{
    return g->tensors[t].static_t ? B : (int64_t)g->cfg.T * B;
}

static int64_t tensor_len(const qkf_graph *g, int t, int B)
{
    const qkf_tensor *x = &g->tensors[t];
    return (int64_t)x->c * frames(g, t, B) * x->h * x->w;
}

const qkf_graph *qkf_dense_int_graph(const qkf_dense_int *e) { return e->g; }

qkf_dense_int *qkf_dense_int_create(const qkf_qmodel *q, int max_batch, int flags)
{
    if (max_batch < 1)
        max_batch = 1;
    qkf_dense_int *e = qkf_calloc(1, sizeof *e);
    e->q = q;
    e->g = &q->g;
    e->max_batch = max_batch;
    if (flags & QKF_DENSE_INT_TB_COMPAT) {
        if (qkf_graph_walk(&q->cfg, 1, &e->gtb)) {
            qkf_free(e);
            return NULL;
        }
        e->tb = 1;
        e->g = &e->gtb;
        if (e->gtb.n_ops != q->g.n_ops || e->gtb.n_tensors != q->g.n_tensors) {
            qkf_set_error("dense integer engine: the tb_compat graph (%d ops) is not the integer "
                          "model's (%d ops)",
                          e->gtb.n_ops, q->g.n_ops);
            qkf_graph_free(&e->gtb);
            qkf_free(e);
            return NULL;
        }
    }
    const qkf_graph *g = e->g;
    e->t = qkf_calloc((size_t)g->n_tensors, sizeof(int32_t *));
    for (int i = 0; i < g->n_tensors; i++)
        e->t[i] = qkf_malloc((size_t)(tensor_len(g, i, max_batch) + 1) * sizeof(int32_t));
    int64_t col_frame = 1, col_total = 1, pre = 1, vm = 1;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t F = frames(g, op->in0, max_batch);
        if (op->kind == QKF_OP_CONV) {
            int ho = (x->h - 1) / op->stride + 1, wo = (x->w - 1) / op->stride + 1;
            int64_t c = (int64_t)op->cin * op->k * op->k * ho * wo;
            col_frame = c > col_frame ? c : col_frame;
            col_total = c * F > col_total ? c * F : col_total;
            if (op->pool) {
                int64_t p = (int64_t)op->cout * F * ho * wo;
                pre = p > pre ? p : pre;
            }
        } else if (op->kind == QKF_OP_LIF) {
            int64_t n = (int64_t)x->h * x->w;
            vm = n > vm ? n : vm;
        }
    }
    const int64_t budget = 4 << 20; /* 16 MB of columns, at least one frame */
    e->col_cap = col_total < budget ? col_total : budget;
    if (e->col_cap < col_frame)
        e->col_cap = col_frame;
    e->col = qkf_malloc((size_t)e->col_cap * sizeof(int32_t));
    e->prepool = qkf_malloc((size_t)pre * sizeof(int32_t));
    e->vmem_per = (vm + 15) / 16 * 16;
    e->vmem = qkf_malloc((size_t)(e->vmem_per * omp_get_max_threads()) * sizeof(int32_t));
    e->feat = qkf_malloc((size_t)max_batch * g->cfg.embed_dims * sizeof(int64_t) + 64);
    /* BLAS path: mantissas as floats; im2col columns (or the whole input of a 1x1 conv) and the
     * GEMM output as floats or doubles */
    e->plain = (flags & QKF_DENSE_INT_PLAIN) != 0;
    e->wf = qkf_calloc((size_t)g->n_ops, sizeof(float *));
    e->mmax = qkf_calloc((size_t)g->n_ops, sizeof(int));
    int64_t wmax = 1, omax = 1, xmax = 1;
    for (int i = 0; i < g->n_ops && !e->plain; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind != QKF_OP_CONV)
            continue;
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t K = (int64_t)op->cin * op->k * op->k, n = K * op->cout;
        e->wf[i] = qkf_malloc((size_t)n * sizeof(float));
        for (int64_t j = 0; j < n; j++) {
            int m = q->ops[i].w_mant[j];
            e->wf[i][j] = (float)m;
            m = m < 0 ? -m : m;
            e->mmax[i] = m > e->mmax[i] ? m : e->mmax[i];
        }
        int64_t F = frames(g, op->in0, max_batch);
        int ho = (x->h - 1) / op->stride + 1, wo = (x->w - 1) / op->stride + 1;
        wmax = n > wmax ? n : wmax;
        omax = (int64_t)op->cout * F * ho * wo > omax ? (int64_t)op->cout * F * ho * wo : omax;
        if (op->k == 1 && op->stride == 1)
            xmax = tensor_len(g, op->in0, max_batch) > xmax ? tensor_len(g, op->in0, max_batch)
                                                            : xmax;
    }
    if (!e->plain) {
        e->fcol_cap = e->col_cap > xmax ? e->col_cap : xmax;
        e->fcol = qkf_malloc((size_t)e->fcol_cap * sizeof(double));
        e->fout = qkf_malloc((size_t)omax * sizeof(double));
        e->wd = qkf_malloc((size_t)wmax * sizeof(double));
    }
    return e;
}

void qkf_dense_int_free(qkf_dense_int *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->g->n_tensors; i++)
        qkf_free(e->t[i]);
    qkf_free(e->t);
    qkf_free(e->col);
    qkf_free(e->prepool);
    qkf_free(e->vmem);
    qkf_free(e->feat);
    for (int i = 0; i < e->g->n_ops; i++)
        qkf_free(e->wf[i]);
    qkf_free(e->wf);
    qkf_free(e->mmax);
    qkf_free(e->fcol);
    qkf_free(e->fout);
    qkf_free(e->wd);
    if (e->tb)
        qkf_graph_free(&e->gtb);
    for (int k = 0; k < 4; k++)
        qkf_free(e->rec[k]);
    qkf_free(e);
}

int qkf_dense_int_set_sink(qkf_dense_int *e, const qkf_lif_sink *sink)
{
    const qkf_graph *g = e->g;
    if (sink && (g->n_lif != sink->n_lif || g->cfg.T != sink->T))
        return qkf_set_error("%s: made for %d LIF layers and T = %d, the model has %d and T = %d",
                             sink->name, sink->n_lif, sink->T, g->n_lif, g->cfg.T);
    e->sink = sink;
    if (sink && !e->rec[0]) {
        int64_t n = 1;
        for (int l = 0; l < g->n_lif; l++) {
            int64_t k = tensor_len(g, g->ops[g->lif_ops[l]].out, e->max_batch);
            n = k > n ? k : n;
        }
        for (int k = 0; k < 4; k++)
            e->rec[k] = qkf_malloc((size_t)n * sizeof(float));
    }
    return 0;
}

const int32_t *qkf_dense_int_tensor(const qkf_dense_int *e, int tensor)
{
    if (tensor < 0 || tensor >= e->g->n_tensors)
        return NULL;
    return e->t[tensor];
}

/* ---- kernels ------------------------------------------------------------------------------- */

/* im2col of frames f0 .. f0+nf-1 of in [cin][F][h][w] into col [cin*k*k][nf*ho*wo]. */
static void im2col_i32(int32_t *col, const int32_t *in, int64_t F, int64_t f0, int nf, int cin,
                       int h, int w, int k, int stride, int pad, int ho, int wo)
{
    int64_t P = (int64_t)ho * wo, ncol = nf * P;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < cin * k * k; r++) {
        int ci = r / (k * k), ky = r / k % k, kx = r % k;
        int32_t *dst = col + (int64_t)r * ncol;
        for (int f = 0; f < nf; f++) {
            const int32_t *src = in + ((int64_t)ci * F + f0 + f) * h * w;
            int32_t *d = dst + f * P;
            for (int oy = 0; oy < ho; oy++) {
                int iy = oy * stride + ky - pad;
                int32_t *drow = d + (int64_t)oy * wo;
                if (iy < 0 || iy >= h) {
                    memset(drow, 0, (size_t)wo * sizeof(int32_t));
                    continue;
                }
                const int32_t *srow = src + (int64_t)iy * w;
                for (int ox = 0; ox < wo; ox++) {
                    int ix = ox * stride + kx - pad;
                    drow[ox] = (ix >= 0 && ix < w) ? srow[ix] : 0;
                }
            }
        }
    }
}

#define JT 256
/* out[co][j] (row stride ldo) = sum_kk W[co][kk] * x[kk][j] (row stride ldx), j < n, mod 2^32. */
static void gemm_i32(int32_t *out, int64_t ldo, const int32_t *W, int K, const int32_t *x,
                     int64_t ldx, int64_t n, int cout)
{
    int nb = (cout + 3) / 4;
    int64_t nt = (n + JT - 1) / JT;
#pragma omp parallel for collapse(2) schedule(static)
    for (int cb = 0; cb < nb; cb++)
        for (int64_t jt = 0; jt < nt; jt++) {
            uint32_t acc[4][JT];
            memset(acc, 0, sizeof acc);
            int64_t j0 = jt * JT;
            int len = (int)(n - j0 < JT ? n - j0 : JT);
            int co0 = cb * 4, nco = cout - co0 < 4 ? cout - co0 : 4;
            uint32_t w[4] = {0, 0, 0, 0};
            for (int kk = 0; kk < K; kk++) {
                for (int r = 0; r < 4; r++)
                    w[r] = r < nco ? (uint32_t)W[(int64_t)(co0 + r) * K + kk] : 0u;
                if (!(w[0] | w[1] | w[2] | w[3]))
                    continue;
                const int32_t *xr = x + (int64_t)kk * ldx + j0;
                uint32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
                uint32_t *a0 = acc[0], *a1 = acc[1], *a2 = acc[2], *a3 = acc[3];
                for (int j = 0; j < len; j++) {
                    uint32_t v = (uint32_t)xr[j];
                    a0[j] += w0 * v;
                    a1[j] += w1 * v;
                    a2[j] += w2 * v;
                    a3[j] += w3 * v;
                }
            }
            for (int r = 0; r < nco; r++) {
                int32_t *o = out + (int64_t)(co0 + r) * ldo + j0;
                for (int j = 0; j < len; j++)
                    o[j] = (int32_t)acc[r][j];
            }
        }
}

/* The BLAS path: the integer sum is computed exactly in floating point (every product and
 * partial sum an integer below 2^24 in float, 2^53 in double, so any summation order gives the
 * same exact value), then shifted by the channel's exponent and wrapped to int32:
 * (sum mant * x) << e mod 2^32 = sum (mant << e) * x mod 2^32, the contract. */
#define IM2COL_T(T_, name)                                                                       \
    static void name(T_ *col, const int32_t *in, int64_t F, int64_t f0, int nf, int cin, int h,  \
                     int w, int k, int stride, int pad, int ho, int wo)                          \
    {                                                                                            \
        int64_t P = (int64_t)ho * wo, ncol = nf * P;                                             \
        _Pragma("omp parallel for schedule(static)") for (int r = 0; r < cin * k * k; r++)       \
        {                                                                                        \
            int ci = r / (k * k), ky = r / k % k, kx = r % k;                                    \
            for (int f = 0; f < nf; f++) {                                                       \
                const int32_t *src = in + ((int64_t)ci * F + f0 + f) * h * w;                    \
                T_ *d = col + (int64_t)r * ncol + f * P;                                         \
                for (int oy = 0; oy < ho; oy++) {                                                \
                    int iy = oy * stride + ky - pad;                                             \
                    for (int ox = 0; ox < wo; ox++) {                                            \
                        int ix = ox * stride + kx - pad;                                         \
                        d[oy * wo + ox] = (iy >= 0 && iy < h && ix >= 0 && ix < w)               \
                                              ? (T_)src[(int64_t)iy * w + ix]                    \
                                              : (T_)0;                                           \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }
IM2COL_T(float, im2col_f32)
IM2COL_T(double, im2col_f64)

static int conv_blas(qkf_dense_int *e, int op_i, int32_t *out, const int32_t *in, int64_t F,
                     int cin, int h, int w, int cout, int k, int stride, int pad)
{
    const qkf_qop *qo = &e->q->ops[op_i];
    int ho = (h - 1) / stride + 1, wo = (w - 1) / stride + 1;
    int64_t P = (int64_t)ho * wo, K = (int64_t)cin * k * k, nin = (int64_t)cin * F * h * w;
    int32_t xm = 0;
    for (int64_t j = 0; j < nin; j++) {
        int32_t v = in[j] < 0 ? -in[j] : in[j];
        xm = v > xm ? v : xm;
    }
    double bound = (double)e->mmax[op_i] * (double)xm * (double)K;
    if (bound >= 9007199254740992.0) /* 2^53: not exact in doubles, use integer GEMMs */
        return 1;
    int dbl = bound >= 16777216.0; /* 2^24 */
    if (dbl)
        for (int64_t j = 0; j < K * cout; j++)
            e->wd[j] = (double)e->wf[op_i][j];
    int64_t chunk = (k == 1 && stride == 1) ? F : e->fcol_cap / (K * P);
    if (chunk < 1)
        chunk = 1;
    for (int64_t f0 = 0; f0 < F; f0 += chunk) {
        int nf = (int)(F - f0 < chunk ? F - f0 : chunk);
        int64_t n = nf * P;
        if (k == 1 && stride == 1) {
            if (dbl) {
                double *c = e->fcol;
#pragma omp parallel for schedule(static)
                for (int64_t j = 0; j < nin; j++)
                    c[j] = (double)in[j];
            } else {
                float *c = e->fcol;
#pragma omp parallel for schedule(static)
                for (int64_t j = 0; j < nin; j++)
                    c[j] = (float)in[j];
            }
        } else if (dbl)
            im2col_f64(e->fcol, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
        else
            im2col_f32(e->fcol, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
        if (dbl)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)n, (int)K, 1.0,
                        e->wd, (int)K, e->fcol, (int)n, 0.0, (double *)e->fout + f0 * P,
                        (int)(F * P));
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)n, (int)K, 1.0f,
                        e->wf[op_i], (int)K, e->fcol, (int)n, 0.0f, (float *)e->fout + f0 * P,
                        (int)(F * P));
    }
    int64_t FP = F * P;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < cout; co++) {
        int sh = qo->w_exp[co];
        int32_t *o = out + co * FP;
        if (dbl) {
            const double *src = (const double *)e->fout + co * FP;
            for (int64_t j = 0; j < FP; j++)
                o[j] = (int32_t)((uint32_t)(int64_t)src[j] << sh);
        } else {
            const float *src = (const float *)e->fout + co * FP;
            for (int64_t j = 0; j < FP; j++)
                o[j] = (int32_t)((uint32_t)(int32_t)src[j] << sh);
        }
    }
    return 0;
}

static void conv_i32(qkf_dense_int *e, int32_t *out, const int32_t *in, const int32_t *W, int64_t F,
                     int cin, int h, int w, int cout, int k, int stride, int pad)
{
    int ho = (h - 1) / stride + 1, wo = (w - 1) / stride + 1;
    int64_t P = (int64_t)ho * wo;
    int K = cin * k * k;
    if (k == 1 && stride == 1) {
        gemm_i32(out, F * P, W, K, in, F * P, F * P, cout);
        return;
    }
    int64_t chunk = e->col_cap / ((int64_t)K * P);
    if (chunk < 1)
        chunk = 1;
    for (int64_t f0 = 0; f0 < F; f0 += chunk) {
        int nf = (int)(F - f0 < chunk ? F - f0 : chunk);
        im2col_i32(e->col, in, F, f0, nf, cin, h, w, k, stride, pad, ho, wo);
        gemm_i32(out + f0 * P, F * P, W, K, e->col, nf * P, nf * P, cout);
    }
}

static void maxpool_i32(int32_t *out, const int32_t *in, int64_t planes, int h, int w)
{
    int ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const int32_t *src = in + p * h * w;
        int32_t *dst = out + p * ho * wo;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                int32_t m = INT32_MIN;
                for (int iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++)
                    for (int ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++)
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w && src[iy * w + ix] > m)
                            m = src[iy * w + ix];
                dst[oy * wo + ox] = m;
            }
    }
}

/* The integer LIF's arithmetic (models/quant.h), hoisted out of the row loop. */
typedef struct {
    int cs, ms, cwrap, mwrap, ge, rsub, iaf;
    int64_t chi, mhi, mul, wgt;
} lif_arith;

/* One step of a row of N neurons: x the inputs, v the membranes, o the spikes; returns the
 * spikes. xr, rh, rv (traces): where to write the input added, H and V, or NULL. Always inlined,
 * so the calls without traces (NULL constants) keep the branch-free loop that vectorises. */
__attribute__((always_inline)) static inline int64_t
lif_row(const lif_arith *k, const int32_t *x, int32_t *v, int32_t *o, int N, int64_t bc, int64_t th,
        float *xr, float *rh, float *rv)
{
    int64_t cnt = 0;
    for (int n = 0; n < N; n++) {
        int64_t P = k->wgt * (int64_t)x[n];
        int64_t A = k->cwrap ? (int64_t)((uint64_t)P << k->cs) >> k->cs
                             : (P > k->chi ? k->chi : P < -k->chi ? -k->chi : P);
        int64_t V = v[n];
        if (xr)
            xr[n] = (float)(A * k->mul + bc);
        int64_t h = (k->iaf ? V : V / 2) + A * k->mul + bc;
        h = k->mwrap ? (int64_t)((uint64_t)h << k->ms) >> k->ms
                     : (h > k->mhi ? k->mhi : h < -k->mhi ? -k->mhi : h);
        int sp = k->ge ? h >= th : h > th;
        int64_t r = h - th;
        r = k->mwrap ? (int64_t)((uint64_t)r << k->ms) >> k->ms
                     : (r > k->mhi ? k->mhi : r < -k->mhi ? -k->mhi : r);
        v[n] = (int32_t)(sp ? (k->rsub ? r : 0) : h);
        if (rh) {
            rh[n] = (float)h;
            rv[n] = (float)v[n];
        }
        o[n] = sp;
        cnt += sp;
    }
    return cnt;
}

/* LIF over T: in [C][F or B][N] -> spikes [C][T*B][N]; returns the spike count. The step is
 * qkf_q_lif_step written branch-free over a row of N neurons (register reductions by shifts and
 * clamps, mode tests hoisted by the compiler), so it vectorises; the fixtures pin it to the
 * reference, and qkf_q_lif_step stays the plain statement of it. tb (tb_compat): one membrane per
 * neuron over all T*B frames, f = t*B + b in order (the frames are the same, only the membrane is
 * not reset between samples). rv, rh, rx (traces, or NULL): V, H [C][T*B][N] and the input added
 * ([C][B][N] when in_static). */
static int64_t lif_i32(qkf_dense_int *e, int32_t *s, const int32_t *in, int C, int T, int B, int N,
                       int in_static, const int32_t *bias, const int32_t *theta, int32_t in_weight,
                       int tb, float *rv, float *rh, float *rx)
{
    const qkf_hw_arith *a = &e->q->arith;
    lif_arith k;
    k.cs = a->current_bits >= 64 ? 0 : 64 - a->current_bits;
    k.ms = a->membrane_bits >= 64 ? 0 : 64 - a->membrane_bits;
    k.chi = k.cs ? ((int64_t)1 << (a->current_bits - 1)) - 1 : INT64_MAX;
    k.mhi = k.ms ? ((int64_t)1 << (a->membrane_bits - 1)) - 1 : INT64_MAX;
    k.cwrap = a->current_wrap, k.mwrap = a->membrane_wrap, k.ge = a->threshold_ge;
    k.rsub = a->reset_subtract, k.iaf = a->leak == QKF_HW_LEAK_NONE;
    k.mul = (int64_t)1 << a->current_shift;
    k.wgt = in_weight ? in_weight : 1;
    const int trace = rv || rh || rx;
    int64_t count = 0;
    int64_t Fin = in_static ? B : (int64_t)T * B, Fout = (int64_t)T * B;
#pragma omp parallel for schedule(static) reduction(+ : count)
    for (int c = 0; c < C; c++) {
        int32_t *v = e->vmem + omp_get_thread_num() * e->vmem_per;
        const int64_t bc = bias ? bias[c] : 0, th = theta[c];
        for (int b0 = 0; b0 < (tb ? 1 : B); b0++) {
            memset(v, 0, (size_t)N * sizeof(int32_t));
            for (int f = 0; f < (tb ? T * B : T); f++) {
                int t = tb ? f / B : f, b = tb ? f % B : b0;
                int64_t xo = ((int64_t)c * Fin + (in_static ? b : (int64_t)t * B + b)) * N;
                int64_t oo = ((int64_t)c * Fout + (int64_t)t * B + b) * N;
                if (!trace) {
                    count += lif_row(&k, in + xo, v, s + oo, N, bc, th, NULL, NULL, NULL);
                    continue;
                }
                /* the input of a static layer is the same at every step: its frame b once */
                float *xr = rx && (!in_static || t == 0) ? rx + xo : NULL;
                count += lif_row(&k, in + xo, v, s + oo, N, bc, th, xr, rh ? rh + oo : NULL,
                                 rh ? rv + oo : NULL);
            }
        }
    }
    return count;
}

static void ssa_i32(int32_t *out, const int32_t *q, const int32_t *k, const int32_t *v, int C,
                    int heads, int64_t F, int N)
{
    int d = C / heads;
#pragma omp parallel for collapse(2) schedule(static)
    for (int hd = 0; hd < heads; hd++)
        for (int64_t f = 0; f < F; f++) {
            int32_t kv[64 * 64]; /* head dims up to 64 (ImageNet 768 / 12) */
            int32_t *kvp = kv;
            QKF_ASSERT(d <= 64);
            for (int i = 0; i < d; i++) {
                const int32_t *ki = k + (((int64_t)hd * d + i) * F + f) * N;
                for (int j = 0; j < d; j++) {
                    const int32_t *vj = v + (((int64_t)hd * d + j) * F + f) * N;
                    uint32_t acc = 0;
                    for (int n = 0; n < N; n++)
                        acc += (uint32_t)ki[n] * (uint32_t)vj[n];
                    kvp[i * d + j] = (int32_t)acc;
                }
            }
            for (int j = 0; j < d; j++) {
                int32_t *o = out + (((int64_t)hd * d + j) * F + f) * N;
                for (int n = 0; n < N; n++)
                    o[n] = 0;
                for (int i = 0; i < d; i++) {
                    uint32_t kvij = (uint32_t)kvp[i * d + j];
                    if (!kvij)
                        continue;
                    const int32_t *qi = q + (((int64_t)hd * d + i) * F + f) * N;
                    for (int n = 0; n < N; n++)
                        o[n] = (int32_t)((uint32_t)o[n] + (uint32_t)qi[n] * kvij);
                }
            }
        }
}

int qkf_dense_int_forward(qkf_dense_int *e, const float *input, int B, float *logits,
                          int64_t *logits_int, int64_t *spike_count)
{
    if (B < 1 || B > e->max_batch)
        return qkf_set_error("batch %d outside 1..%d", B, e->max_batch);
    const qkf_qmodel *qm = e->q;
    const qkf_graph *g = e->g;
    int T = g->cfg.T;
    e->B = B;
    /* input: static images [B][C][N] -> X [C][B][N]; frames [B][T][C][N] -> [C][T*B][N] */
    const qkf_tensor *xin = &g->tensors[g->input];
    int Cin = xin->c;
    int64_t Nin = (int64_t)xin->h * xin->w;
    int32_t *X = e->t[g->input];
    for (int c = 0; c < Cin; c++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < (xin->static_t ? 1 : T); t++) {
                const float *src = xin->static_t ? input + ((int64_t)b * Cin + c) * Nin
                                                 : input + (((int64_t)b * T + t) * Cin + c) * Nin;
                int64_t f = xin->static_t ? b : (int64_t)t * B + b;
                int32_t *dst = X + ((int64_t)c * frames(g, g->input, B) + f) * Nin;
                for (int64_t n = 0; n < Nin; n++)
                    dst[n] = qkf_q_input(src[n], qm->in_scale, qm->in_max);
            }
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_qop *qo = &qm->ops[i];
        const qkf_tensor *x = &g->tensors[op->in0];
        int64_t F = frames(g, op->in0, B);
        int N = x->h * x->w;
        int32_t *out = e->t[op->out];
        const int32_t *in = e->t[op->in0];
        switch (op->kind) {
        case QKF_OP_CONV: {
            int ho = (x->h - 1) / op->stride + 1, wo = (x->w - 1) / op->stride + 1;
            int32_t *dst = op->pool ? e->prepool : out;
            if (e->plain || conv_blas(e, i, dst, in, F, op->cin, x->h, x->w, op->cout, op->k,
                                      op->stride, op->pad))
                conv_i32(e, dst, in, qo->w, F, op->cin, x->h, x->w, op->cout, op->k, op->stride,
                         op->pad);
            if (op->pool)
                maxpool_i32(out, dst, (int64_t)op->cout * F, ho, wo);
            break;
        }
        case QKF_OP_LIF: {
            const int32_t *bias = qo->conv >= 0 ? qm->ops[qo->conv].bias : NULL;
            unsigned want = e->sink ? e->sink->wants(e->sink->ctx, op->lif_index) : 0;
            int wv = (want & ((1u << QKF_TRACE_V) | (1u << QKF_TRACE_H))) != 0;
            int wx = (want & (1u << QKF_TRACE_INPUT)) != 0;
            int64_t n = lif_i32(e, out, in, x->c, T, B, N, x->static_t, bias, qo->theta,
                                qo->conv >= 0 ? 0 : qo->in_weight, op->tb_compat,
                                wv ? e->rec[QKF_TRACE_V] : NULL, wv ? e->rec[QKF_TRACE_H] : NULL,
                                wx ? e->rec[QKF_TRACE_INPUT] : NULL);
            if (spike_count)
                spike_count[op->lif_index] += n;
            if (want) {
                int64_t len = tensor_len(g, op->out, B);
                float *sf = e->rec[QKF_TRACE_SPIKES];
                for (int64_t j = 0; j < len; j++)
                    sf[j] = (float)out[j];
                qkf_lif_data d = {.lif_index = op->lif_index, .T = T, .B = B, .C = x->c, .N = N,
                                  .x_static = x->static_t,
                                  .s = sf,
                                  .v = wv ? e->rec[QKF_TRACE_V] : NULL,
                                  .h = wv ? e->rec[QKF_TRACE_H] : NULL,
                                  .x = wx ? e->rec[QKF_TRACE_INPUT] : NULL};
                int rc = e->sink->put_layer(e->sink->ctx, &d);
                if (rc)
                    return rc;
            }
            break;
        }
        case QKF_OP_ADD: {
            int64_t n = tensor_len(g, op->out, B);
            const int32_t *a = e->t[op->in0], *b2 = e->t[op->in1];
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < n; j++)
                out[j] = a[j] + b2[j];
            break;
        }
        case QKF_OP_QK_SUM:
            if (op->qk == QKF_QK_TOKEN) {
                int d = x->c / op->heads;
                int64_t FN = F * N;
#pragma omp parallel for schedule(static)
                for (int hd = 0; hd < op->heads; hd++) {
                    int32_t *o = out + hd * FN;
                    memset(o, 0, (size_t)FN * sizeof(int32_t));
                    for (int j = 0; j < d; j++) {
                        const int32_t *qc = in + ((int64_t)hd * d + j) * FN;
                        for (int64_t k = 0; k < FN; k++)
                            o[k] += qc[k];
                    }
                }
            } else {
#pragma omp parallel for schedule(static)
                for (int c = 0; c < x->c; c++)
                    for (int64_t f = 0; f < F; f++) {
                        const int32_t *qc = in + ((int64_t)c * F + f) * N;
                        int32_t s = 0;
                        for (int n = 0; n < N; n++)
                            s += qc[n];
                        out[(int64_t)c * F + f] = s;
                    }
            }
            break;
        case QKF_OP_QK_MASK: {
            const qkf_tensor *k = &g->tensors[op->in1];
            const int32_t *kk = e->t[op->in1];
            int Nk = k->h * k->w, d = k->c / op->heads;
            int64_t FN = F * Nk;
#pragma omp parallel for schedule(static)
            for (int c = 0; c < k->c; c++) {
                const int32_t *kc = kk + (int64_t)c * FN;
                int32_t *o = out + (int64_t)c * FN;
                if (op->qk == QKF_QK_TOKEN) {
                    const int32_t *a = in + (int64_t)(c / d) * FN;
                    for (int64_t j = 0; j < FN; j++)
                        o[j] = a[j] * kc[j];
                } else
                    for (int64_t f = 0; f < F; f++) {
                        int32_t a = in[(int64_t)c * F + f];
                        for (int n = 0; n < Nk; n++)
                            o[f * Nk + n] = a * kc[f * Nk + n];
                    }
            }
            break;
        }
        case QKF_OP_SSA:
            ssa_i32(out, in, e->t[op->in1], e->t[op->in2], x->c, op->heads, F, N);
            break;
        case QKF_OP_READOUT: {
            int C = x->c, K = g->cfg.num_classes;
            int64_t *feat = e->feat;
            for (int b = 0; b < B; b++)
                for (int c = 0; c < C; c++) {
                    int64_t s = 0;
                    for (int t = 0; t < T; t++) {
                        const int32_t *xr = in + ((int64_t)c * F + (int64_t)t * B + b) * N;
                        for (int n = 0; n < N; n++)
                            s += xr[n];
                    }
                    feat[(int64_t)b * C + c] = s;
                }
            for (int b = 0; b < B; b++)
                for (int k = 0; k < K; k++) {
                    int64_t s = qo->head_b[k];
                    for (int c = 0; c < C; c++)
                        s += (int64_t)qo->head_w[(int64_t)k * C + c] * feat[(int64_t)b * C + c];
                    if (logits_int)
                        logits_int[(int64_t)b * K + k] = s;
                    if (logits)
                        logits[(int64_t)b * K + k] = (float)((double)s * qo->head_scale);
                }
            break;
        }
        }
    }
    return 0;
}

void qkf_dense_int_lif_spikes(const qkf_dense_int *e, int l, uint8_t *out)
{
    const qkf_graph *g = e->g;
    const qkf_tensor *y = &g->tensors[g->ops[g->lif_ops[l]].out];
    int T = g->cfg.T, B = e->B, C = y->c, N = y->h * y->w;
    const int32_t *s = e->t[g->ops[g->lif_ops[l]].out];
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++)
                for (int n = 0; n < N; n++)
                    out[(((int64_t)t * B + b) * C + c) * N + n] =
                        (uint8_t)s[((int64_t)c * T * B + (int64_t)t * B + b) * N + n];
}

int64_t qkf_dense_int_flips(const qkf_dense_int *e, int l, const float *s_float, int64_t *total)
{
    const qkf_graph *g = e->g;
    const qkf_tensor *y = &g->tensors[g->ops[g->lif_ops[l]].out];
    int64_t n = (int64_t)y->c * g->cfg.T * e->B * y->h * y->w, d = 0;
    const int32_t *s = e->t[g->ops[g->lif_ops[l]].out];
    for (int64_t i = 0; i < n; i++)
        d += (s[i] != 0) != (s_float[i] != 0.0f);
    if (total)
        *total = n;
    return d;
}

/* ---- calibration ------------------------------------------------------------------------- */

typedef struct {
    const qkf_graph *g;
    double **x, **h;
} calib_ctx;

static int calib_hook(void *ctx, const qkf_dense_lif_data *d)
{
    calib_ctx *cc = ctx;
    int op = cc->g->lif_ops[d->lif_index];
    double *mx = cc->x[op], *mh = cc->h[op];
    if (!mx)
        return 0;
    int64_t Fx = d->x_static ? d->B : (int64_t)d->T * d->B, Fh = (int64_t)d->T * d->B;
    for (int c = 0; c < d->C; c++) {
        for (int64_t j = 0; j < Fx * d->N; j++) {
            double v = fabs((double)d->x[(int64_t)c * Fx * d->N + j]);
            mx[c] = v > mx[c] ? v : mx[c];
        }
        for (int64_t j = 0; j < Fh * d->N; j++) {
            double v = fabs((double)d->h[(int64_t)c * Fh * d->N + j]);
            mh[c] = v > mh[c] ? v : mh[c];
        }
    }
    return 0;
}

void qkf_quant_calib_free(qkf_quant_opts *o, const qkf_model *m)
{
    (void)m;
    if (o->calib_x) {
        for (int i = 0; i < o->calib_n; i++) {
            qkf_free(o->calib_x[i]);
            qkf_free(o->calib_h[i]);
        }
    }
    qkf_free(o->calib_x);
    qkf_free(o->calib_h);
    o->calib_x = o->calib_h = NULL;
    o->calib_n = 0;
}

int qkf_quant_calibrate(const qkf_model *m, const float *x, int n, int batch, qkf_quant_opts *o)
{
    if (n < 1)
        return qkf_set_error("calibration needs at least one sample");
    if (batch < 1)
        batch = 1;
    qkf_dense *d = qkf_dense_create(m, batch, 0);
    if (!d)
        return -1;
    const qkf_graph *g = qkf_dense_graph(d);
    uint8_t *want = qkf_calloc((size_t)g->n_lif, 1);
    o->calib_x = qkf_calloc((size_t)g->n_ops, sizeof(double *));
    o->calib_h = qkf_calloc((size_t)g->n_ops, sizeof(double *));
    o->calib_n = g->n_ops;
    for (int l = 0; l < g->n_lif; l++) {
        int i = g->lif_ops[l];
        if (i > 0 && g->ops[i - 1].kind == QKF_OP_CONV && g->ops[i - 1].out == g->ops[i].in0) {
            int C = g->tensors[g->ops[i].out].c;
            o->calib_x[i] = qkf_calloc((size_t)C, sizeof(double));
            o->calib_h[i] = qkf_calloc((size_t)C, sizeof(double));
            want[l] = QKF_DENSE_WANT_X | QKF_DENSE_WANT_H;
        }
    }
    calib_ctx cc = {g, o->calib_x, o->calib_h};
    int rc = qkf_dense_set_lif_hook(d, calib_hook, &cc, want);
    const qkf_tensor *xin = &g->tensors[g->input];
    int64_t per = (int64_t)xin->c * xin->h * xin->w * (xin->static_t ? 1 : g->cfg.T);
    float *logits = qkf_malloc((size_t)batch * m->cfg.num_classes * sizeof(float));
    double in_max = 0.0;
    for (int s = 0; s < n && !rc; s += batch) {
        int B = n - s < batch ? n - s : batch;
        rc = qkf_dense_forward(d, x + s * per, B, logits, NULL);
        for (int64_t j = 0; j < B * per; j++) {
            double v = fabs((double)x[s * per + j]);
            in_max = v > in_max ? v : in_max;
        }
    }
    if (xin->static_t)
        o->calib_in = in_max;
    qkf_free(logits);
    qkf_free(want);
    qkf_dense_free(d);
    if (rc)
        qkf_quant_calib_free(o, m);
    return rc;
}
