/* The parameter table: official state_dict names and shapes, derived from the graph walk, in
 * forward order, over one flat float buffer (llm.c style: one allocation, one offset per
 * tensor, which the trainer's optimiser and an all-reduce can treat as a single vector). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/base.h"
#include "qkformer.h"

static void add(qkf_params *ps, int *cap, const char *base, const char *suffix, int ndim,
                const int *shape, int is_buffer)
{
    if (ps->n == *cap) {
        *cap = *cap ? 2 * *cap : 128;
        qkf_param *np = qkf_malloc((size_t)*cap * sizeof *np);
        if (ps->n)
            memcpy(np, ps->p, (size_t)ps->n * sizeof *np);
        qkf_free(ps->p);
        ps->p = np;
    }
    qkf_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    char full[2 * QKF_MAX_NAME];
    snprintf(full, sizeof full, "%s.%s", base, suffix);
    memcpy(p->name, full, sizeof p->name - 1); /* module paths are far shorter than this */
    p->name[sizeof p->name - 1] = 0;
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++)
        p->shape[i] = shape[i], p->numel *= shape[i];
    p->offset = ps->total;
    p->decay = ndim >= 2;
    p->is_buffer = is_buffer;
    ps->total += p->numel;
    if (!is_buffer)
        ps->n_train += p->numel;
}

int qkf_params_build(const qkf_config *cfg, qkf_params *ps)
{
    qkf_graph g;
    memset(ps, 0, sizeof *ps);
    if (qkf_graph_walk(cfg, 0, &g))
        return -1;
    int cap = 0;
    for (int i = 0; i < g.n_ops; i++) {
        const qkf_op *op = &g.ops[i];
        if (op->kind == QKF_OP_CONV) {
            int w4[4] = {op->cout, op->cin, op->k, op->k};
            add(ps, &cap, op->name, "weight", op->conv1d ? 3 : 4, w4, 0);
            if (op->has_bias)
                add(ps, &cap, op->name, "bias", 1, &op->cout, 0);
            add(ps, &cap, op->bn_name, "weight", 1, &op->cout, 0);
            add(ps, &cap, op->bn_name, "bias", 1, &op->cout, 0);
            add(ps, &cap, op->bn_name, "running_mean", 1, &op->cout, 1);
            add(ps, &cap, op->bn_name, "running_var", 1, &op->cout, 1);
        } else if (op->kind == QKF_OP_READOUT) {
            int w[2] = {cfg->num_classes, g.tensors[op->in0].c};
            add(ps, &cap, "head", "weight", 2, w, 0);
            add(ps, &cap, "head", "bias", 1, &cfg->num_classes, 0);
        }
    }
    qkf_graph_free(&g);
    if (ps->total > QKF_MAX_PARAMS) {
        long long total = (long long)ps->total;
        qkf_params_free(ps);
        return qkf_set_error("config: the model would hold %lld parameters (at most 2^31; "
                             "embed_dims %d, depths %d, mlp_ratio %g, num_classes %d)",
                             total, cfg->embed_dims, cfg->depths, (double)cfg->mlp_ratio,
                             cfg->num_classes);
    }
    ps->data = qkf_calloc((size_t)ps->total, sizeof(float));
    return 0;
}

void qkf_params_free(qkf_params *ps)
{
    qkf_free(ps->p);
    qkf_free(ps->data);
    memset(ps, 0, sizeof *ps);
}

int qkf_params_find(const qkf_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0)
            return i;
    return -1;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* PyTorch's defaults: Conv weight kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * the same bound for the conv bias; BatchNorm weight 1, bias 0, running mean 0, var 1; the head
 * trunc_normal(std 0.02) (truncated at +-2 absolute, i.e. effectively untruncated) and bias 0. */
void qkf_params_init(const qkf_config *cfg, qkf_params *ps, uint64_t seed)
{
    (void)cfg;
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    float fan_in = 1.0f;
    for (int i = 0; i < ps->n; i++) {
        qkf_param *p = &ps->p[i];
        float *d = ps->data + p->offset;
        int is_bn = strstr(p->name, "_bn.") != NULL;
        int is_head = strncmp(p->name, "head.", 5) == 0;
        if (is_head && ends_with(p->name, ".weight")) {
            for (int64_t j = 0; j < p->numel; j++) {
                float z;
                do
                    z = 0.02f * qkf_rng_normal(&r);
                while (z < -2.0f || z > 2.0f);
                d[j] = z;
            }
        } else if (is_head || (is_bn && (ends_with(p->name, ".bias") ||
                                         ends_with(p->name, ".running_mean")))) {
            memset(d, 0, (size_t)p->numel * sizeof(float));
        } else if (is_bn) { /* weight, running_var */
            for (int64_t j = 0; j < p->numel; j++)
                d[j] = 1.0f;
        } else if (ends_with(p->name, ".weight")) {
            fan_in = (float)(p->numel / p->shape[0]);
            float bound = 1.0f / sqrtf(fan_in);
            for (int64_t j = 0; j < p->numel; j++)
                d[j] = (2.0f * qkf_rng_uniform(&r) - 1.0f) * bound;
        } else { /* conv bias: same fan_in as the weight just before it */
            float bound = 1.0f / sqrtf(fan_in);
            for (int64_t j = 0; j < p->numel; j++)
                d[j] = (2.0f * qkf_rng_uniform(&r) - 1.0f) * bound;
        }
    }
}

void qkf_model_free(qkf_model *m)
{
    qkf_params_free(&m->params);
    memset(m, 0, sizeof *m);
}
