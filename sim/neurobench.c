/* NeuroBench metrics (sim/neurobench.h) from the dense engine's kept tensors: every count is an
 * exact integer; only the final ratios are floating point. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "neurobench.h"

/* NeuroBench's dense synaptic operations of a conv per frame: every output position sums its
 * valid taps x cin, for every output channel. */
static int64_t dense_per_frame(const qkf_graph *g, const qkf_op *op)
{
    const qkf_tensor *x = &g->tensors[op->in0];
    int ho = (x->h + 2 * op->pad - op->k) / op->stride + 1;
    int wo = (x->w + 2 * op->pad - op->k) / op->stride + 1;
    int64_t taps = 0;
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
            for (int ky = 0; ky < op->k; ky++)
                for (int kx = 0; kx < op->k; kx++) {
                    int iy = oy * op->stride - op->pad + ky;
                    int ix = ox * op->stride - op->pad + kx;
                    taps += iy >= 0 && iy < x->h && ix >= 0 && ix < x->w;
                }
    return taps * op->cin * op->cout;
}

int qkf_nb_init(qkf_nb *nb, const qkf_model *m, const qkf_graph *g)
{
    memset(nb, 0, sizeof *nb);
    nb->m = m, nb->g = g;
    nb->layer = qkf_calloc((size_t)g->n_ops, sizeof *nb->layer);
    const float *P = m->params.data;
    int n_bn = 0;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind != QKF_OP_CONV && op->kind != QKF_OP_READOUT)
            continue;
        qkf_nb_layer *l = &nb->layer[nb->n_layers++];
        l->op = i;
        if (op->kind == QKF_OP_CONV) {
            n_bn++;
            snprintf(l->name, sizeof l->name, "%s", op->name);
            const qkf_param *w = &m->params.p[op->p_w];
            const float *W = P + w->offset;
            int kk = op->k * op->k;
            l->nz = qkf_calloc((size_t)op->cin * kk, sizeof(int64_t));
            for (int co = 0; co < op->cout; co++)
                for (int ci = 0; ci < op->cin; ci++)
                    for (int t = 0; t < kk; t++) {
                        int zero = W[((int64_t)co * op->cin + ci) * kk + t] == 0.0f;
                        l->nz[ci * kk + t] += !zero;
                        nb->zero_weights += zero;
                    }
            nb->weights += w->numel;
            l->dense_per_frame = dense_per_frame(g, op);
        } else {
            snprintf(l->name, sizeof l->name, "head");
            const qkf_param *w = &m->params.p[op->p_head_w];
            const float *W = P + w->offset;
            int K = w->shape[0], C = w->shape[1];
            l->nz = qkf_calloc((size_t)C, sizeof(int64_t));
            for (int k = 0; k < K; k++)
                for (int c = 0; c < C; c++) {
                    int zero = W[(int64_t)k * C + c] == 0.0f;
                    l->nz[c] += !zero;
                    nb->zero_weights += zero;
                }
            nb->weights += w->numel;
            l->dense_per_frame = (int64_t)K * C;
        }
    }
    nb->footprint = m->params.total * (int64_t)sizeof(float) + 8 * (int64_t)n_bn;
    return 0;
}

void qkf_nb_free(qkf_nb *nb)
{
    for (int i = 0; nb->layer && i < nb->n_layers; i++)
        qkf_free(nb->layer[i].nz);
    qkf_free(nb->layer);
    memset(nb, 0, sizeof *nb);
}

/* Effective operations of conv op over frame f of input x ([cin][F][N]). */
static int64_t conv_effective(const qkf_op *op, const qkf_tensor *xt, const float *x, int64_t F,
                              int64_t f, const int64_t *nz, int *graded)
{
    int N = xt->h * xt->w, kk = op->k * op->k;
    int ho = (xt->h + 2 * op->pad - op->k) / op->stride + 1;
    int wo = (xt->w + 2 * op->pad - op->k) / op->stride + 1;
    int64_t n = 0;
    for (int ci = 0; ci < op->cin; ci++) {
        const float *row = x + ((int64_t)ci * F + f) * N;
        for (int p = 0; p < N; p++) {
            float v = row[p];
            if (v == 0.0f)
                continue;
            if (v != 1.0f && v != -1.0f)
                *graded = 1;
            int iy = p / xt->w, ix = p % xt->w;
            for (int ky = 0; ky < op->k; ky++) {
                int ty = iy + op->pad - ky;
                if (ty < 0 || ty % op->stride || ty / op->stride >= ho)
                    continue;
                for (int kx = 0; kx < op->k; kx++) {
                    int tx = ix + op->pad - kx;
                    if (tx < 0 || tx % op->stride || tx / op->stride >= wo)
                        continue;
                    n += nz[ci * kk + ky * op->k + kx];
                }
            }
        }
    }
    return n;
}

/* One batch of conv layer l: its effective operations on input x ([cin][F][N] of B samples; MACs
 * when any input is graded, else ACs) and its dense operations. */
static void conv_add(qkf_nb_layer *l, const qkf_op *op, const qkf_tensor *xt, const float *x,
                     int T, int B)
{
    int64_t F = xt->static_t ? B : (int64_t)T * B, eff = 0;
    int graded = 0;
    for (int64_t f = 0; f < F; f++)
        eff += conv_effective(op, xt, x, F, f, l->nz, &graded);
    int64_t rep = xt->static_t ? T : 1; /* the image runs through the conv T times */
    eff *= rep;
    if (graded)
        l->eff_macs += eff;
    else
        l->eff_acs += eff;
    l->dense += l->dense_per_frame * F * rep;
}

int qkf_nb_add(qkf_nb *nb, const qkf_dense *d, int B)
{
    const qkf_graph *g = nb->g;
    int T = g->cfg.T;
    for (int i = 0; i < nb->n_layers; i++) {
        qkf_nb_layer *l = &nb->layer[i];
        const qkf_op *op = &g->ops[l->op];
        const qkf_tensor *xt = &g->tensors[op->in0];
        const float *x = qkf_dense_tensor(d, op->in0);
        if (!x)
            return qkf_set_error("neurobench: the dense engine kept no tensors (KEEP_ALL)");
        int N = xt->h * xt->w;
        if (op->kind == QKF_OP_CONV) {
            conv_add(l, op, xt, x, T, B);
        } else { /* the head on the token and time mean: real values, MACs */
            for (int b = 0; b < B; b++)
                for (int c = 0; c < xt->c; c++) {
                    double s = 0;
                    for (int t = 0; t < T; t++)
                        for (int p = 0; p < N; p++)
                            s += (double)x[((int64_t)c * T * B + (int64_t)t * B + b) * N + p];
                    if (s != 0)
                        l->eff_macs += l->nz[c];
                }
            l->dense += l->dense_per_frame * B;
        }
    }
    for (int li = 0; li < g->n_lif; li++) {
        const qkf_op *op = &g->ops[g->lif_ops[li]];
        const qkf_tensor *st = &g->tensors[op->out];
        const float *s = qkf_dense_tensor(d, op->out), *v = qkf_dense_lif_v(d, li);
        if (!s || !v)
            return qkf_set_error("neurobench: the dense engine kept no membranes (RECORD_VH)");
        int64_t N = (int64_t)st->h * st->w, C = st->c, F = (int64_t)T * B;
        for (int64_t c = 0; c < C; c++)
            for (int64_t f = 0; f < F; f++) {
                const float *sr = s + (c * F + f) * N, *vr = v + (c * F + f) * N;
                const float *vp = f >= B ? v + (c * F + f - B) * N : NULL; /* step t - 1 */
                for (int64_t p = 0; p < N; p++) {
                    nb->act_nonzero += sr[p] != 0.0f;
                    nb->mem_updates += !vp || vr[p] != vp[p];
                }
            }
        nb->act_numel += C * F * N;
    }
    nb->samples += B;
    return 0;
}

static int bits_for(int64_t values) /* bits to tell `values` values apart */
{
    int b = 0;
    while (((int64_t)1 << b) < values)
        b++;
    return b;
}

int qkf_nb_init_int(qkf_nb *nb, const qkf_qmodel *q)
{
    memset(nb, 0, sizeof *nb);
    nb->q = q, nb->g = &q->g;
    const qkf_graph *g = &q->g;
    const qkf_hw_arith *a = &q->arith;
    nb->layer = qkf_calloc((size_t)g->n_ops, sizeof *nb->layer);
    int eb = bits_for((int64_t)a->weight_exp_max - a->weight_exp_min + 1);
    int bb = a->bias_bits + bits_for((int64_t)a->bias_exp_max + 1);
    int64_t bits = 0;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_qop *qo = &q->ops[i];
        if (op->kind == QKF_OP_LIF) {
            bits += (int64_t)g->tensors[op->out].c * a->threshold_bits;
            continue;
        }
        if (op->kind != QKF_OP_CONV && op->kind != QKF_OP_READOUT)
            continue;
        qkf_nb_layer *l = &nb->layer[nb->n_layers++];
        l->op = i;
        if (op->kind == QKF_OP_CONV) {
            snprintf(l->name, sizeof l->name, "%s", op->name);
            int kk = op->k * op->k;
            int64_t n = (int64_t)op->cout * op->cin * kk;
            if (!qo->w_mant)
                return qkf_set_error("neurobench: conv '%s' has no integer weights", op->name);
            l->nz = qkf_calloc((size_t)op->cin * kk, sizeof(int64_t));
            for (int co = 0; co < op->cout; co++)
                for (int ci = 0; ci < op->cin; ci++)
                    for (int t = 0; t < kk; t++) {
                        int zero = qo->w_mant[((int64_t)co * op->cin + ci) * kk + t] == 0;
                        l->nz[ci * kk + t] += !zero;
                        nb->zero_weights += zero;
                    }
            nb->weights += n;
            bits += n * a->weight_bits + (int64_t)(a->per_channel ? op->cout : 1) * eb +
                    (int64_t)op->cout * bb;
            l->dense_per_frame = dense_per_frame(g, op);
        } else {
            snprintf(l->name, sizeof l->name, "head");
            int K = g->cfg.num_classes, C = g->tensors[op->in0].c;
            if (!qo->head_mant)
                return qkf_set_error("neurobench: the head has no integer weights");
            l->nz = qkf_calloc((size_t)C, sizeof(int64_t));
            for (int k = 0; k < K; k++)
                for (int c = 0; c < C; c++) {
                    int zero = qo->head_mant[(int64_t)k * C + c] == 0;
                    l->nz[c] += !zero;
                    nb->zero_weights += zero;
                }
            nb->weights += (int64_t)K * C;
            bits += (int64_t)K * C * a->weight_bits + eb + (int64_t)K * 64;
            l->dense_per_frame = (int64_t)K * C;
        }
    }
    nb->footprint = (bits + 7) / 8;
    return 0;
}

int qkf_nb_add_int(qkf_nb *nb, const qkf_dense_int *d, int B)
{
    const qkf_graph *g = nb->g;
    const qkf_qmodel *q = nb->q;
    int T = g->cfg.T;
    float *xf = NULL; /* a conv's integer input as floats (counts and pixels: exact) */
    int64_t cap = 0;
    int rc = 0;
    for (int i = 0; i < nb->n_layers && !rc; i++) {
        qkf_nb_layer *l = &nb->layer[i];
        const qkf_op *op = &g->ops[l->op];
        const qkf_tensor *xt = &g->tensors[op->in0];
        const int32_t *x = qkf_dense_int_tensor(d, op->in0);
        if (!x) {
            rc = qkf_set_error("neurobench: the integer engine kept no tensor %d", op->in0);
            break;
        }
        int N = xt->h * xt->w;
        int64_t F = xt->static_t ? B : (int64_t)T * B, n = (int64_t)xt->c * F * N;
        if (op->kind == QKF_OP_CONV) {
            if (n > cap) {
                qkf_free(xf);
                xf = qkf_malloc((size_t)n * sizeof(float));
                cap = n;
            }
            for (int64_t j = 0; j < n; j++)
                xf[j] = (float)x[j];
            conv_add(l, op, xt, xf, T, B);
        } else { /* the head on the counts summed over steps and tokens: MACs */
            for (int b = 0; b < B; b++)
                for (int c = 0; c < xt->c; c++) {
                    int64_t s = 0;
                    for (int t = 0; t < T; t++)
                        for (int p = 0; p < N; p++)
                            s += x[((int64_t)c * T * B + (int64_t)t * B + b) * N + p];
                    if (s != 0)
                        l->eff_macs += l->nz[c];
                }
            l->dense += l->dense_per_frame * B;
        }
    }
    qkf_free(xf);
    if (rc)
        return rc;
    /* membranes: each LIF replayed from its integer input (models/quant.h) */
    for (int li = 0; li < g->n_lif; li++) {
        int oi = g->lif_ops[li];
        const qkf_op *op = &g->ops[oi];
        const qkf_qop *qo = &q->ops[oi];
        const qkf_tensor *st = &g->tensors[op->out], *pt = &g->tensors[op->in0];
        const int32_t *s = qkf_dense_int_tensor(d, op->out), *P = qkf_dense_int_tensor(d, op->in0);
        if (!s || !P || !qo->theta)
            return qkf_set_error("neurobench: LIF layer %d has no integer input or spikes", li);
        const int32_t *bias = qo->conv >= 0 ? q->ops[qo->conv].bias : NULL;
        int64_t N = (int64_t)st->h * st->w, C = st->c, F = (int64_t)T * B;
        int64_t PF = pt->static_t ? B : F;
        for (int64_t c = 0; c < C; c++)
            for (int b = 0; b < B; b++)
                for (int64_t p = 0; p < N; p++) {
                    int32_t v = 0;
                    for (int t = 0; t < T; t++) {
                        int64_t f = (int64_t)t * B + b, pf = pt->static_t ? b : f;
                        int64_t in = P[(c * PF + pf) * N + p];
                        if (qo->conv < 0)
                            in *= qo->in_weight;
                        int32_t old = v;
                        int spk = qkf_q_lif_step(&v, in, bias ? bias[c] : 0, qo->theta[c],
                                                 &q->arith);
                        int32_t se = s[(c * F + f) * N + p];
                        if (spk != (se != 0))
                            return qkf_set_error("neurobench: the membrane replay of %s differs "
                                                 "from the engine's spike (channel %lld, step %d)",
                                                 op->name, (long long)c, t);
                        nb->act_nonzero += se != 0;
                        nb->mem_updates += t == 0 || v != old;
                    }
                }
        nb->act_numel += C * F * N;
    }
    nb->samples += B;
    return 0;
}

static void totals(const qkf_nb *nb, double *acs, double *macs, double *dense)
{
    double S = nb->samples ? (double)nb->samples : 1;
    *acs = *macs = *dense = 0;
    for (int i = 0; i < nb->n_layers; i++) {
        *acs += (double)nb->layer[i].eff_acs;
        *macs += (double)nb->layer[i].eff_macs;
        *dense += (double)nb->layer[i].dense;
    }
    *acs /= S, *macs /= S, *dense /= S;
}

void qkf_nb_print(const qkf_nb *nb)
{
    double acs, macs, dense, S = nb->samples ? (double)nb->samples : 1;
    totals(nb, &acs, &macs, &dense);
    printf("\nNeuroBench (conv and linear layers only; per sample):\n");
    printf("  ActivationSparsity  %.6f\n",
           nb->act_numel ? (double)(nb->act_numel - nb->act_nonzero) / (double)nb->act_numel : 0);
    printf("  SynapticOperations  Effective_MACs %.6g, Effective_ACs %.6g, Dense %.6g\n", macs, acs,
           dense);
    printf("  MembraneUpdates     %.6g\n", (double)nb->mem_updates / S);
    printf("  Footprint           %lld bytes\n", (long long)nb->footprint);
    printf("  ConnectionSparsity  %.6f\n",
           nb->weights ? (double)nb->zero_weights / (double)nb->weights : 0);
}

void qkf_nb_write_json(FILE *f, const qkf_nb *nb)
{
    double acs, macs, dense, S = nb->samples ? (double)nb->samples : 1;
    totals(nb, &acs, &macs, &dense);
    fprintf(f,
            "{\n    \"samples\": %lld,\n    \"ActivationSparsity\": %.9g,\n"
            "    \"SynapticOperations\": {\"Effective_MACs\": %.9g, \"Effective_ACs\": %.9g, "
            "\"Dense\": %.9g},\n    \"MembraneUpdates\": %.9g,\n    \"Footprint\": %lld,\n"
            "    \"ConnectionSparsity\": %.9g,\n",
            (long long)nb->samples,
            nb->act_numel ? (double)(nb->act_numel - nb->act_nonzero) / (double)nb->act_numel : 0,
            macs, acs, dense, (double)nb->mem_updates / S, (long long)nb->footprint,
            nb->weights ? (double)nb->zero_weights / (double)nb->weights : 0);
    fprintf(f,
            "    \"counts\": {\"activations\": %lld, \"nonzero_activations\": %lld, "
            "\"membrane_updates\": %lld, \"weights\": %lld, \"zero_weights\": %lld},\n"
            "    \"layers\": [",
            (long long)nb->act_numel, (long long)nb->act_nonzero, (long long)nb->mem_updates,
            (long long)nb->weights, (long long)nb->zero_weights);
    for (int i = 0; i < nb->n_layers; i++) {
        const qkf_nb_layer *l = &nb->layer[i];
        fprintf(f,
                "%s\n      {\"name\": \"%s\", \"effective_acs\": %lld, \"effective_macs\": %lld, "
                "\"dense\": %lld}",
                i ? "," : "", l->name, (long long)l->eff_acs, (long long)l->eff_macs,
                (long long)l->dense);
    }
    fprintf(f, "\n    ]\n  }");
}
