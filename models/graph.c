/* The QKFormer graph: one walk over the official module structure of each variant produces the
 * op list that both engines run; the parameter table (params.c) is derived from the same ops,
 * so names, shapes and execution can never disagree.
 *
 * Structure (spec sections 4-5):
 *   cifar:    patch_embed1 (init, 2 convs + 1x1 shortcut) -> stage1 {1 QK} -> patch_embed2 ->
 *             stage2 {1 QK} -> patch_embed3 -> stage3 {depths-2 SSA} -> head
 *   imagenet: patch_embed1 (3 convs, 2 pools) -> stage1 {1 QK} -> patch_embed2 -> stage2 {2 QK}
 *             -> patch_embed3 -> stage3 {depths-3 SSA} -> head
 *   dvs:      patch_embed1 (4 convs, 3 pools) -> stage1 {1 QK} -> patch_embed2 -> stage2 {1 SSA}
 *             -> head */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/base.h"
#include "qkformer.h"

typedef struct {
    qkf_graph *g;
    int cap_ops, cap_t;
    int tb_compat;
} builder;

static int new_tensor(builder *b, int c, int h, int w, int static_t, int is_spike)
{
    qkf_graph *g = b->g;
    if (g->n_tensors == b->cap_t) {
        b->cap_t = b->cap_t ? 2 * b->cap_t : 64;
        qkf_tensor *nt = qkf_malloc((size_t)b->cap_t * sizeof *nt);
        if (g->n_tensors)
            memcpy(nt, g->tensors, (size_t)g->n_tensors * sizeof *nt);
        qkf_free(g->tensors);
        g->tensors = nt;
    }
    qkf_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    t->c = c, t->h = h, t->w = w, t->static_t = static_t, t->is_spike = is_spike;
    return g->n_tensors++;
}

static qkf_op *new_op(builder *b, qkf_op_kind kind, const char *fmt, ...) QKF_PRINTF(3, 4);
static qkf_op *new_op(builder *b, qkf_op_kind kind, const char *fmt, ...)
{
    qkf_graph *g = b->g;
    if (g->n_ops == b->cap_ops) {
        b->cap_ops = b->cap_ops ? 2 * b->cap_ops : 64;
        qkf_op *no = qkf_malloc((size_t)b->cap_ops * sizeof *no);
        if (g->n_ops)
            memcpy(no, g->ops, (size_t)g->n_ops * sizeof *no);
        qkf_free(g->ops);
        g->ops = no;
    }
    qkf_op *op = &g->ops[g->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->in0 = op->in1 = op->in2 = op->out = -1;
    op->p_w = op->p_b = op->p_bn_w = op->p_bn_b = op->p_bn_mean = op->p_bn_var = -1;
    op->p_head_w = op->p_head_b = -1;
    op->lif_index = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->name, sizeof op->name, fmt, ap);
    va_end(ap);
    return op;
}

/* LIF over tensor x; returns the spike tensor. */
static int lif(builder *b, int x, float vth, int tb_compat, const char *name)
{
    qkf_tensor *tx = &b->g->tensors[x];
    int out = new_tensor(b, tx->c, tx->h, tx->w, 0, 1);
    qkf_op *op = new_op(b, QKF_OP_LIF, "%s", name);
    op->in0 = x, op->out = out, op->vth = vth, op->tb_compat = tb_compat;
    op->lif_index = b->g->n_lif++;
    return out;
}

typedef struct {
    int k, stride, pool, bias, conv1d, tb_compat;
    float vth;
} conv_opts;

/* conv -> BN (-> MaxPool) -> LIF, named prefix_conv / prefix_bn / prefix_lif. */
static int conv_lif(builder *b, int x, const char *prefix, int cout, conv_opts o)
{
    qkf_tensor tx = b->g->tensors[x];
    int ho = (tx.h - 1) / o.stride + 1, wo = (tx.w - 1) / o.stride + 1;
    if (o.pool)
        ho = (ho + 1) / 2, wo = (wo + 1) / 2; /* MaxPool 3/2/1: floor((H-1)/2)+1 */
    int cur = new_tensor(b, cout, ho, wo, tx.static_t, 0);
    qkf_op *op = new_op(b, QKF_OP_CONV, "%s_conv", prefix);
    snprintf(op->bn_name, sizeof op->bn_name, "%s_bn", prefix);
    op->in0 = x, op->out = cur;
    op->cin = tx.c, op->cout = cout, op->k = o.k, op->stride = o.stride;
    op->pad = o.k / 2, op->pool = o.pool, op->conv1d = o.conv1d, op->has_bias = o.bias;
    char name[QKF_MAX_NAME];
    snprintf(name, sizeof name, "%s_lif", prefix);
    return lif(b, cur, o.vth > 0 ? o.vth : 1.0f, o.tb_compat, name);
}

static int add(builder *b, int x, int y, const char *name)
{
    qkf_tensor t = b->g->tensors[x];
    int out = new_tensor(b, t.c, t.h, t.w, 0, 0);
    qkf_op *op = new_op(b, QKF_OP_ADD, "%s", name);
    op->in0 = x, op->in1 = y, op->out = out;
    return out;
}

static const conv_opts K3 = {3, 1, 0, 0, 0, 0, 1.0f};
static const conv_opts K3_POOL = {3, 1, 1, 0, 0, 0, 1.0f};

static conv_opts shortcut(int stride)
{
    conv_opts o = {1, stride, 0, 0, 0, 0, 1.0f};
    return o;
}

static int mlp(builder *b, int x, const char *prefix, const char *l1, const char *l2)
{
    const qkf_config *c = &b->g->cfg;
    int dim = b->g->tensors[x].c;
    int hidden = (int)((double)dim * (double)c->mlp_ratio);
    conv_opts o = {1, 1, 0, 1, 0, 0, 1.0f};
    char p1[QKF_MAX_NAME], p2[QKF_MAX_NAME];
    snprintf(p1, sizeof p1, "%s.mlp.%s", prefix, l1);
    snprintf(p2, sizeof p2, "%s.mlp.%s", prefix, l2);
    int h = conv_lif(b, x, p1, hidden, o);
    int y = conv_lif(b, h, p2, dim, o);
    return add(b, x, y, prefix);
}

/* Token_QK_Attention (QKTA) or its channel form (QKCA), then the MLP. */
static int qk_block(builder *b, int x, const char *prefix, const char *l1, const char *l2)
{
    const qkf_config *c = &b->g->cfg;
    qkf_tensor tx = b->g->tensors[x];
    char p[QKF_MAX_NAME];
    conv_opts qk = {1, 1, 0, 0, 1, 0, 1.0f}, proj = {1, 1, 0, 1, 1, 0, 1.0f};
    snprintf(p, sizeof p, "%s.tssa.q", prefix);
    int q = conv_lif(b, x, p, tx.c, qk);
    snprintf(p, sizeof p, "%s.tssa.k", prefix);
    int k = conv_lif(b, x, p, tx.c, qk);
    int cnt = c->qk_attn == QKF_QK_TOKEN ? new_tensor(b, c->num_heads, tx.h, tx.w, 0, 0)
                                         : new_tensor(b, tx.c, 1, 1, 0, 0);
    qkf_op *op = new_op(b, QKF_OP_QK_SUM, "%s.tssa.qk_sum", prefix);
    op->in0 = q, op->out = cnt, op->heads = c->num_heads, op->qk = c->qk_attn;
    snprintf(p, sizeof p, "%s.tssa.attn_lif", prefix);
    int attn = lif(b, cnt, 0.5f, 0, p);
    int m = new_tensor(b, tx.c, tx.h, tx.w, 0, 1);
    op = new_op(b, QKF_OP_QK_MASK, "%s.tssa.mask", prefix);
    op->in0 = attn, op->in1 = k, op->out = m, op->heads = c->num_heads, op->qk = c->qk_attn;
    snprintf(p, sizeof p, "%s.tssa.proj", prefix);
    int y = conv_lif(b, m, p, tx.c, proj);
    snprintf(p, sizeof p, "%s.tssa_add", prefix);
    x = add(b, x, y, p);
    return mlp(b, x, prefix, l1, l2);
}

/* Spiking_Self_Attention (Spikformer SSA), then the MLP. attr: "ssa" or "attn". */
static int ssa_block(builder *b, int x, const char *prefix, const char *attr, const char *l1,
                     const char *l2)
{
    const qkf_config *c = &b->g->cfg;
    qkf_tensor tx = b->g->tensors[x];
    char p[QKF_MAX_NAME];
    conv_opts qkv = {1, 1, 0, 0, 1, 0, 1.0f}, proj = {1, 1, 0, 1, 1, b->tb_compat, 1.0f};
    snprintf(p, sizeof p, "%s.%s.q", prefix, attr);
    int q = conv_lif(b, x, p, tx.c, qkv);
    snprintf(p, sizeof p, "%s.%s.k", prefix, attr);
    int k = conv_lif(b, x, p, tx.c, qkv);
    snprintf(p, sizeof p, "%s.%s.v", prefix, attr);
    int v = conv_lif(b, x, p, tx.c, qkv);
    int s = new_tensor(b, tx.c, tx.h, tx.w, 0, 0);
    qkf_op *op = new_op(b, QKF_OP_SSA, "%s.%s.qkv", prefix, attr);
    op->in0 = q, op->in1 = k, op->in2 = v, op->out = s, op->heads = c->num_heads;
    snprintf(p, sizeof p, "%s.%s.attn_lif", prefix, attr);
    int a = lif(b, s, 0.5f, 0, p);
    snprintf(p, sizeof p, "%s.%s.proj", prefix, attr);
    int y = conv_lif(b, a, p, tx.c, proj);
    snprintf(p, sizeof p, "%s.%s_add", prefix, attr);
    x = add(b, x, y, p);
    return mlp(b, x, prefix, l1, l2);
}

/* SPEDS stage embedding: e/2 -> e channels, halves the grid. pool_first: ImageNet style. */
static int stage_embed(builder *b, int x, const char *prefix, int e, int pool_first,
                       const char *first)
{
    char p[QKF_MAX_NAME];
    snprintf(p, sizeof p, "%s.%s", prefix, first);
    int a = conv_lif(b, x, p, e, pool_first ? K3_POOL : K3);
    snprintf(p, sizeof p, "%s.proj4", prefix);
    a = conv_lif(b, a, p, e, pool_first ? K3 : K3_POOL);
    snprintf(p, sizeof p, "%s.proj_res", prefix);
    int r = conv_lif(b, x, p, e, shortcut(2));
    return add(b, a, r, prefix);
}

static void readout(builder *b, int x)
{
    qkf_op *op = new_op(b, QKF_OP_READOUT, "head");
    op->in0 = x;
    op->out = new_tensor(b, b->g->cfg.num_classes, 1, 1, 0, 0);
}

static void walk(builder *b)
{
    qkf_graph *g = b->g;
    const qkf_config *c = &g->cfg;
    int D = c->embed_dims, S = c->img_size;
    int x = new_tensor(b, c->in_channels, S, S, !qkf_config_is_frames(c), 0);
    g->input = x;
    char p[QKF_MAX_NAME];
    if (c->variant == QKF_VARIANT_CIFAR) {
        int d1 = D / 4;
        int s0 = conv_lif(b, x, "patch_embed1.proj", d1 / 2, K3);
        int a = conv_lif(b, s0, "patch_embed1.proj1", d1, K3);
        int r = conv_lif(b, s0, "patch_embed1.proj_res", d1, shortcut(1));
        x = add(b, a, r, "patch_embed1");
        x = qk_block(b, x, "stage1.0", "mlp1", "mlp2");
        x = stage_embed(b, x, "patch_embed2", D / 2, 0, "proj3");
        x = qk_block(b, x, "stage2.0", "mlp1", "mlp2");
        x = stage_embed(b, x, "patch_embed3", D, 0, "proj3");
        for (int j = 0; j < c->depths - 2; j++) {
            snprintf(p, sizeof p, "stage3.%d", j);
            x = ssa_block(b, x, p, "ssa", "mlp1", "mlp2");
        }
    } else if (c->variant == QKF_VARIANT_IMAGENET) {
        int d1 = D / 4;
        int s0 = conv_lif(b, x, "patch_embed1.proj", d1 / 2, K3_POOL);
        int a = conv_lif(b, s0, "patch_embed1.proj1", d1, K3_POOL);
        a = conv_lif(b, a, "patch_embed1.proj2", d1, K3);
        int r = conv_lif(b, s0, "patch_embed1.proj_res", d1, shortcut(2));
        x = add(b, a, r, "patch_embed1");
        x = qk_block(b, x, "stage1.0", "fc1", "fc2");
        x = stage_embed(b, x, "patch_embed2", D / 2, 1, "proj3");
        for (int j = 0; j < 2; j++) {
            snprintf(p, sizeof p, "stage2.%d", j);
            x = qk_block(b, x, p, "fc1", "fc2");
        }
        x = stage_embed(b, x, "patch_embed3", D, 1, "proj3");
        for (int j = 0; j < c->depths - 3; j++) {
            snprintf(p, sizeof p, "stage3.%d", j);
            x = ssa_block(b, x, p, "attn", "fc1", "fc2");
        }
    } else { /* dvs128, cifar10dvs */
        int e = D / 2;
        int s = conv_lif(b, x, "patch_embed1.proj", e / 8, K3);
        int s1 = conv_lif(b, s, "patch_embed1.proj1", e / 4, K3_POOL);
        int a = conv_lif(b, s1, "patch_embed1.proj2", e / 2, K3_POOL);
        a = conv_lif(b, a, "patch_embed1.proj3", e, K3_POOL);
        int r = conv_lif(b, s1, "patch_embed1.proj_res", e, shortcut(4));
        x = add(b, a, r, "patch_embed1");
        x = qk_block(b, x, "stage1.0", "mlp1", "mlp2");
        x = stage_embed(b, x, "patch_embed2", D, 0, "proj");
        x = ssa_block(b, x, "stage2.0", "ssa", "mlp1", "mlp2");
    }
    readout(b, x);
}

int qkf_graph_walk(const qkf_config *cfg, int tb_compat, qkf_graph *g)
{
    if (qkf_config_validate(cfg))
        return -1;
    memset(g, 0, sizeof *g);
    g->cfg = *cfg;
    builder b = {g, 0, 0, tb_compat};
    walk(&b);
    g->lif_ops = qkf_malloc((size_t)g->n_lif * sizeof(int));
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].kind == QKF_OP_LIF)
            g->lif_ops[g->ops[i].lif_index] = i;
    for (int i = 0; i < g->n_ops; i++)
        g->tensors[g->ops[i].out].name = g->ops[i].name;
    g->tensors[g->input].name = "input";
    return 0;
}

static int find(const qkf_params *ps, const char *base, const char *suffix, int *idx)
{
    char name[QKF_MAX_NAME * 2];
    snprintf(name, sizeof name, "%s.%s", base, suffix);
    *idx = qkf_params_find(ps, name);
    if (*idx < 0)
        return qkf_set_error("model has no parameter '%s'", name);
    return 0;
}

int qkf_graph_build(const qkf_config *cfg, const qkf_params *ps, int tb_compat, qkf_graph *g)
{
    if (qkf_graph_walk(cfg, tb_compat, g))
        return -1;
    for (int i = 0; i < g->n_ops; i++) {
        qkf_op *op = &g->ops[i];
        int rc = 0;
        if (op->kind == QKF_OP_CONV) {
            rc |= find(ps, op->name, "weight", &op->p_w);
            if (op->has_bias)
                rc |= find(ps, op->name, "bias", &op->p_b);
            rc |= find(ps, op->bn_name, "weight", &op->p_bn_w);
            rc |= find(ps, op->bn_name, "bias", &op->p_bn_b);
            rc |= find(ps, op->bn_name, "running_mean", &op->p_bn_mean);
            rc |= find(ps, op->bn_name, "running_var", &op->p_bn_var);
        } else if (op->kind == QKF_OP_READOUT) {
            rc |= find(ps, "head", "weight", &op->p_head_w);
            rc |= find(ps, "head", "bias", &op->p_head_b);
        }
        if (rc) {
            qkf_graph_free(g);
            return -1;
        }
    }
    return 0;
}

void qkf_graph_free(qkf_graph *g)
{
    qkf_free(g->ops);
    qkf_free(g->tensors);
    qkf_free(g->lif_ops);
    memset(g, 0, sizeof *g);
}

int64_t qkf_graph_lif_neurons(const qkf_graph *g, int lif_index)
{
    const qkf_tensor *t = &g->tensors[g->ops[g->lif_ops[lif_index]].out];
    return (int64_t)t->c * t->h * t->w;
}
