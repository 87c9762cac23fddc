/* The integer form (models/quant.h): our quantiser against the PyTorch integer reference's
 * integers, and the dense integer engine against its spikes and integer logits, bit for bit
 * (tests/fixtures/MODEL_int_PROFILE.h5, made by tools/reference/make_int_fixtures.py). Integers
 * are exact: no tolerance anywhere. Also: thread-count independence, the quantised checkpoint's
 * round trip and its one-line errors, refusals of unrepresentable layers. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense_int.h"
#include "util.h"

typedef struct {
    qkf_model m;
    qkf_qmodel q;
    qkf_hw_arith a;
    float *x;
    int B;
    char path[512];
} fixture;

/* bits_min: the fixture made with the quantiser's --bits-min spec (MODEL_int_PROFILE_bitsM.h5),
 * or NULL. */
static void load_fixture_bits(fixture *fx, const char *model, const char *prof,
                              const char *bits_min)
{
    char wpath[512];
    memset(fx, 0, sizeof *fx);
    qkf_h5_quiet();
    snprintf(wpath, sizeof wpath, "%s/%s.weights.h5", QKF_FIXTURE_DIR, model);
    snprintf(fx->path, sizeof fx->path, "%s/%s_int_%s%s%s.h5", QKF_FIXTURE_DIR, model, prof,
             bits_min ? "_bits" : "", bits_min ? bits_min : "");
    cr_assert_eq(qkf_ckpt_load(wpath, &fx->m), 0, "%s", qkf_last_error());
    int64_t *av, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(fx->path, "arith", &av, &nd, sh), 0, "%s", qkf_last_error());
    cr_assert_eq(sh[0], 21);
    fixture_arith(av, &fx->a);
    qkf_free(av);
    cr_assert_eq(qkf_h5_read_f32(fx->path, "input", &fx->x, &nd, sh), 0, "%s", qkf_last_error());
    fx->B = (int)sh[0];
    fixture_norm(fx->path, &fx->m);
    qkf_quant_opts o;
    memset(&o, 0, sizeof o);
    o.bits_min = bits_min;
    cr_assert_eq(qkf_quantize(&fx->m, &fx->a, "fixture", &o, &fx->q), 0, "%s", qkf_last_error());
}

static void load_fixture(fixture *fx, const char *model, const char *prof)
{
    load_fixture_bits(fx, model, prof, NULL);
}

static void free_fixture(fixture *fx)
{
    qkf_qmodel_free(&fx->q);
    qkf_model_free(&fx->m);
    qkf_free(fx->x);
}

/* Compares n ints of ours (read through get) with dataset q/<key> of the fixture. */
static void cmp_ints(const char *path, const char *key, int64_t n, const void *ours, int bytes)
{
    char name[256];
    snprintf(name, sizeof name, "q/%s", key);
    int64_t *ref, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(path, name, &ref, &nd, sh), 0, "%s", qkf_last_error());
    int64_t rn = 1;
    for (int i = 0; i < nd; i++)
        rn *= sh[i];
    cr_assert_eq(rn, n, "%s: %lld values in the reference, %lld ours", key, (long long)rn,
                 (long long)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = bytes == 1   ? ((const int8_t *)ours)[i]
                    : bytes == 2 ? ((const int16_t *)ours)[i]
                    : bytes == 4 ? ((const int32_t *)ours)[i]
                                 : ((const int64_t *)ours)[i];
        cr_assert_eq(v, ref[i], "%s: %s[%lld] = %lld, the reference has %lld", path, key,
                     (long long)i, (long long)v, (long long)ref[i]);
    }
    qkf_free(ref);
}

static void check_quant_ints(const fixture *fx)
{
    const qkf_graph *g = &fx->q.g;
    char key[256];
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_qop *qo = &fx->q.ops[i];
        if (op->kind == QKF_OP_CONV) {
            int64_t n = (int64_t)op->cout * op->cin * op->k * op->k;
            snprintf(key, sizeof key, "%s.weight", op->name);
            cmp_ints(fx->path, key, n, qo->w_mant, 2);
            snprintf(key, sizeof key, "%s.weight_exp", op->name);
            cmp_ints(fx->path, key, op->cout, qo->w_exp, 1);
            snprintf(key, sizeof key, "%s.bias", op->name);
            cmp_ints(fx->path, key, op->cout, qo->bias_mant, 4);
            snprintf(key, sizeof key, "%s.bias_exp", op->name);
            cmp_ints(fx->path, key, op->cout, qo->bias_exp, 1);
        } else if (op->kind == QKF_OP_LIF) {
            snprintf(key, sizeof key, "%s.threshold", op->name);
            cmp_ints(fx->path, key, g->tensors[op->out].c, qo->theta, 4);
        } else if (op->kind == QKF_OP_READOUT) {
            int64_t K = g->cfg.num_classes, C = g->tensors[op->in0].c;
            cmp_ints(fx->path, "head.weight", K * C, qo->head_mant, 2);
            cmp_ints(fx->path, "head.bias", K, qo->head_b, 8);
        }
    }
    int32_t im = fx->q.in_max;
    cmp_ints(fx->path, "in_max", 1, &im, 4);
}

/* Runs the dense integer engine (flags: 0 or QKF_DENSE_INT_PLAIN) on the fixture input; compares
 * every LIF layer's spikes and the integer logits. */
static void check_engine(fixture *fx, const qkf_qmodel *q, int threads, int flags)
{
    qkf_set_threads(threads);
    qkf_dense_int *e = qkf_dense_int_create(q, fx->B, flags);
    cr_assert_not_null(e, "%s", qkf_last_error());
    const qkf_graph *g = qkf_dense_int_graph(e);
    int K = g->cfg.num_classes, T = g->cfg.T;
    int64_t *li = qkf_malloc((size_t)fx->B * K * sizeof(int64_t));
    float *lf = qkf_malloc((size_t)fx->B * K * sizeof(float));
    cr_assert_eq(qkf_dense_int_forward(e, fx->x, fx->B, lf, li, NULL), 0, "%s", qkf_last_error());
    int64_t *ref, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(fx->path, "logits_int", &ref, &nd, sh), 0);
    for (int i = 0; i < fx->B * K; i++)
        cr_assert_eq(li[i], ref[i], "%s: logit_int %d = %lld, the reference %lld (%d threads)",
                     fx->path, i, (long long)li[i], (long long)ref[i], threads);
    qkf_free(ref);
    for (int l = 0; l < g->n_lif; l++) {
        const char *name = g->ops[g->lif_ops[l]].name;
        char key[256];
        snprintf(key, sizeof key, "spikes/%s", name);
        int64_t *rs;
        cr_assert_eq(qkf_h5_read_i64(fx->path, key, &rs, &nd, sh), 0, "%s", qkf_last_error());
        int64_t n = qkf_graph_lif_neurons(g, l), total = (int64_t)T * fx->B * n;
        cr_assert_eq(sh[0] * sh[1] * sh[2], total, "%s: shape", key);
        uint8_t *ours = qkf_malloc((size_t)total);
        qkf_dense_int_lif_spikes(e, l, ours);
        for (int64_t j = 0; j < total; j++)
            if (ours[j] != rs[j])
                cr_assert_fail("%s: %s differs at [t %lld, b %lld, n %lld]: %d vs reference %lld "
                               "(%d threads)",
                               fx->path, name, (long long)(j / (fx->B * n)),
                               (long long)(j / n % fx->B), (long long)(j % n), ours[j],
                               (long long)rs[j], threads);
        qkf_free(ours);
        qkf_free(rs);
    }
    qkf_free(li);
    qkf_free(lf);
    qkf_dense_int_free(e);
}

static void run(const char *model, const char *prof)
{
    fixture fx;
    load_fixture(&fx, model, prof);
    check_quant_ints(&fx);
    check_engine(&fx, &fx.q, 2, 0);                   /* BLAS convolutions */
    check_engine(&fx, &fx.q, 1, QKF_DENSE_INT_PLAIN); /* the plain integer GEMM */
    free_fixture(&fx);
}

Test(quant, cifar_loihi) { run("cifar_small", "loihi"); }
Test(quant, cifar_speck) { run("cifar_small", "speck"); }
Test(quant, cifar_gt_saturate) { run("cifar_small", "gtsat"); }
Test(quant, cifar_qkca_loihi) { run("cifar_qkca", "loihi"); }
Test(quant, imagenet_loihi) { run("imagenet_small", "loihi"); }
Test(quant, imagenet_wide16) { run("imagenet_small", "wide16"); }
Test(quant, dvs128_loihi) { run("dvs128_small", "loihi"); }
Test(quant, dvs128_speck) { run("dvs128_small", "speck"); }
Test(quant, cifar10dvs_loihi) { run("cifar10dvs_small", "loihi"); }
Test(quant, cifar10dvs_gt_saturate) { run("cifar10dvs_small", "gtsat"); }
Test(quant, dvs128_wrap) { run("dvs128_small", "wrap"); }

/* --bits-min 7 on speck (one 8-bit scale per layer for weights and biases): the reference's
 * integers bit for bit, biases saturated at the register's +-127 where the unit was capped, and
 * every capped layer's weights on at least 7 bits; an empty spec quantises as none, and "0" too. */
Test(quant, cifar_speck_bits_min)
{
    fixture fx;
    load_fixture_bits(&fx, "cifar_small", "speck", "7");
    check_quant_ints(&fx);
    check_engine(&fx, &fx.q, 2, 0);
    check_engine(&fx, &fx.q, 1, QKF_DENSE_INT_PLAIN);
    int clipped = 0, capped = 0;
    for (int i = 0; i < fx.q.g.n_ops; i++) {
        const qkf_op *op = &fx.q.g.ops[i];
        const qkf_qop *qo = &fx.q.ops[i];
        if (op->kind != QKF_OP_CONV || !qo->clipped)
            continue;
        clipped += qo->clipped;
        capped++;
        int sat = 0;
        for (int c = 0; c < op->cout; c++)
            sat += qo->bias_mant[c] == 127 || qo->bias_mant[c] == -127;
        /* (a bias may also round to +-127 exactly) */
        cr_assert_geq(sat, qo->clipped, "%s: %d biases at +-127, %d counted as saturated", op->name,
                      sat, qo->clipped);
        /* the first conv's unit is held by the membrane's headroom as well (5 bits here) */
        if (strcmp(op->name, "patch_embed1.proj_conv"))
            cr_assert_geq(qo->bits_used, 7, "%s: %d weight bits", op->name, qo->bits_used);
    }
    cr_assert_gt(capped, 10, "only %d layers saturate a bias under --bits-min 7", capped);
    cr_assert_gt(clipped, 100);
    /* off: "", "0" and NULL give the same integers */
    const char *off[2] = {"", "0"};
    qkf_quant_opts o;
    memset(&o, 0, sizeof o);
    qkf_qmodel q0, q1;
    cr_assert_eq(qkf_quantize(&fx.m, &fx.a, "x", &o, &q0), 0, "%s", qkf_last_error());
    for (int k = 0; k < 2; k++) {
        o.bits_min = off[k];
        cr_assert_eq(qkf_quantize(&fx.m, &fx.a, "x", &o, &q1), 0, "%s", qkf_last_error());
        for (int i = 0; i < q0.g.n_ops; i++)
            if (q0.g.ops[i].kind == QKF_OP_CONV) {
                const qkf_op *op = &q0.g.ops[i];
                cr_assert_eq(q1.ops[i].clipped, 0);
                cr_assert_eq(memcmp(q0.ops[i].bias, q1.ops[i].bias, (size_t)op->cout * 4), 0);
                cr_assert_eq(memcmp(q0.ops[i].w, q1.ops[i].w,
                                    (size_t)op->cout * op->cin * op->k * op->k * 4),
                             0);
            }
        qkf_qmodel_free(&q1);
    }
    qkf_qmodel_free(&q0);
    /* a per-layer item overrides the default: only the first conv capped */
    o.bits_min = "0,patch_embed2.proj3_conv=8";
    cr_assert_eq(qkf_quantize(&fx.m, &fx.a, "x", &o, &q1), 0, "%s", qkf_last_error());
    for (int i = 0; i < q1.g.n_ops; i++)
        if (q1.g.ops[i].kind == QKF_OP_CONV) {
            int is = !strcmp(q1.g.ops[i].name, "patch_embed2.proj3_conv");
            cr_assert(is ? q1.ops[i].clipped > 0 && q1.ops[i].bits_used == 8
                         : q1.ops[i].clipped == 0,
                      "%s: %d clipped, %d bits", q1.g.ops[i].name, q1.ops[i].clipped,
                      q1.ops[i].bits_used);
        }
    qkf_qmodel_free(&q1);
    /* bad specs: one line naming the item */
    const char *bad[][2] = {{"1", "'1': M must be 0 (off) or 2..8"},
                            {"9", "'9': M must be"},
                            {"x", "'x': M must be"},
                            {"stage9.conv=7", "'stage9.conv=7': no convolution"},
                            {"7,patch_embed1.proj_conv=", "'patch_embed1.proj_conv=': M must"}};
    for (int k = 0; k < 5; k++) {
        o.bits_min = bad[k][0];
        cr_assert_eq(qkf_quantize(&fx.m, &fx.a, "x", &o, &q1), -1, "%s", bad[k][0]);
        cr_assert(strstr(qkf_last_error(), bad[k][1]), "%s", qkf_last_error());
    }
    free_fixture(&fx);
}

/* tb_compat (the official SSA proj_lif over the T*B axis) at B = 2: the reference's spikes and
 * logits at 1-3 threads, both GEMM paths; and the per-sample engine differs from them (so the
 * fixture exercises the shared membrane). */
Test(quant, cifar_tb_loihi)
{
    fixture fx;
    load_fixture(&fx, "cifar_tb", "loihi");
    cr_assert_eq(fx.B, 2);
    check_quant_ints(&fx);
    for (int th = 1; th <= 3; th++)
        check_engine(&fx, &fx.q, th, QKF_DENSE_INT_TB_COMPAT);
    check_engine(&fx, &fx.q, 2, QKF_DENSE_INT_TB_COMPAT | QKF_DENSE_INT_PLAIN);
    qkf_dense_int *e = qkf_dense_int_create(&fx.q, fx.B, 0);
    cr_assert_eq(qkf_dense_int_forward(e, fx.x, fx.B, NULL, NULL, NULL), 0);
    const qkf_graph *g = qkf_dense_int_graph(e);
    int64_t differ = 0;
    for (int l = 0; l < g->n_lif; l++) {
        char key[256];
        snprintf(key, sizeof key, "spikes/%s", g->ops[g->lif_ops[l]].name);
        int64_t *rs, sh[5];
        int nd;
        cr_assert_eq(qkf_h5_read_i64(fx.path, key, &rs, &nd, sh), 0, "%s", qkf_last_error());
        int64_t total = sh[0] * sh[1] * sh[2];
        uint8_t *ours = qkf_malloc((size_t)total);
        qkf_dense_int_lif_spikes(e, l, ours);
        for (int64_t j = 0; j < total; j++)
            differ += ours[j] != rs[j];
        qkf_free(ours);
        qkf_free(rs);
    }
    cr_assert_gt(differ, 0, "per-sample membranes give the tb_compat spikes: the test is vacuous");
    qkf_dense_int_free(e);
    free_fixture(&fx);
}

/* Every tensor of a forward and the integer logits are the same at 1, 2 and 3 threads. */
static void threads_case(const char *model, const char *prof)
{
    fixture fx;
    load_fixture(&fx, model, prof);
    const qkf_graph *g = &fx.q.g;
    int32_t **first = qkf_calloc((size_t)g->n_tensors, sizeof(int32_t *));
    int64_t *len = qkf_calloc((size_t)g->n_tensors, sizeof(int64_t));
    int K = g->cfg.num_classes;
    int64_t *li = qkf_malloc((size_t)fx.B * K * sizeof(int64_t));
    int64_t *li1 = qkf_malloc((size_t)fx.B * K * sizeof(int64_t));
    for (int th = 1; th <= 3; th++) {
        qkf_set_threads(th);
        qkf_dense_int *e = qkf_dense_int_create(&fx.q, fx.B, 0);
        cr_assert_eq(qkf_dense_int_forward(e, fx.x, fx.B, NULL, li, NULL), 0);
        for (int t = 0; t < g->n_tensors; t++) {
            const qkf_tensor *tt = &g->tensors[t];
            if (t == g->ops[g->n_ops - 1].out)
                continue; /* the readout's logits go to li, compared below */
            int64_t n = (int64_t)tt->c * tt->h * tt->w * (tt->static_t ? fx.B : g->cfg.T * fx.B);
            const int32_t *d = qkf_dense_int_tensor(e, t);
            if (th == 1) {
                first[t] = qkf_malloc((size_t)n * sizeof(int32_t));
                memcpy(first[t], d, (size_t)n * sizeof(int32_t));
                len[t] = n;
            } else
                cr_assert(memcmp(first[t], d, (size_t)n * sizeof(int32_t)) == 0,
                          "%s: tensor %s differs at %d threads", model, tt->name, th);
        }
        if (th == 1)
            memcpy(li1, li, (size_t)fx.B * K * sizeof(int64_t));
        else
            cr_assert(memcmp(li1, li, (size_t)fx.B * K * sizeof(int64_t)) == 0,
                      "%s: logits differ at %d threads", model, th);
        qkf_dense_int_free(e);
    }
    for (int t = 0; t < g->n_tensors; t++)
        qkf_free(first[t]);
    qkf_free(first);
    qkf_free(len);
    qkf_free(li);
    qkf_free(li1);
    free_fixture(&fx);
    qkf_set_threads(2);
}

Test(quant, threads_cifar) { threads_case("cifar_small", "loihi"); }
Test(quant, threads_dvs) { threads_case("cifar10dvs_small", "gtsat"); }

/* Saved and loaded, the quantised model is the same integers and runs to the same logits. */
Test(quant, qckpt_round_trip)
{
    fixture fx;
    load_fixture(&fx, "imagenet_small", "wide16");
    char path[256];
    snprintf(path, sizeof path, "/tmp/qkf_test_qckpt_%d.h5", (int)getpid());
    cr_assert_eq(qkf_qckpt_save(path, &fx.q), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_qckpt_is_quant(path), 1);
    qkf_qmodel q2;
    cr_assert_eq(qkf_qckpt_load(path, &q2), 0, "%s", qkf_last_error());
    cr_assert_eq(memcmp(&q2.arith, &fx.q.arith, sizeof q2.arith), 0);
    cr_assert_eq(q2.in_scale, fx.q.in_scale);
    cr_assert_str_eq(q2.hw_name, "fixture");
    check_engine(&fx, &q2, 2, 0);
    /* an out-of-range mantissa is refused with one line naming the key */
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(fid >= 0);
    hid_t did = H5Dopen2(fid, "stage1.0.tssa.k_conv.weight", H5P_DEFAULT);
    cr_assert(did >= 0);
    hid_t sid = H5Dget_space(did);
    hssize_t n = H5Sget_simple_extent_npoints(sid);
    int16_t *w = qkf_malloc((size_t)n * sizeof(int16_t));
    cr_assert(H5Dread(did, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0);
    w[3] = -32768; /* beyond +-(2^15 - 1) */
    cr_assert(H5Dwrite(did, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0);
    qkf_free(w);
    H5Sclose(sid);
    H5Dclose(did);
    H5Fclose(fid);
    qkf_qmodel q3;
    cr_assert_eq(qkf_qckpt_load(path, &q3), -1);
    cr_assert(strstr(qkf_last_error(), "stage1.0.tssa.k_conv.weight") &&
                  strstr(qkf_last_error(), "flat index 3"),
              "%s", qkf_last_error());
    cr_assert_null(strchr(qkf_last_error(), '\n'));
    /* a float checkpoint is not a quantised one */
    char wpath[512];
    snprintf(wpath, sizeof wpath, "%s/imagenet_small.weights.h5", QKF_FIXTURE_DIR);
    cr_assert_eq(qkf_qckpt_is_quant(wpath), 0);
    cr_assert_eq(qkf_qckpt_load(wpath, &q3), -1);
    cr_assert(strstr(qkf_last_error(), "not a quantised checkpoint"), "%s", qkf_last_error());
    qkf_qmodel_free(&q2);
    unlink(path);
    free_fixture(&fx);
}

/* A layer the arithmetic cannot hold is refused, naming it; a profile without a unit for
 * QKFormer's leak is refused. */
Test(quant, refusals)
{
    fixture fx;
    load_fixture(&fx, "cifar_small", "loihi");
    qkf_hw_arith a = fx.a;
    qkf_qmodel q;
    /* weights far beyond what 3-bit mantissas with no exponent reach under a 2-bit threshold */
    a.weight_bits = 3, a.weight_exp_min = a.weight_exp_max = 0, a.threshold_bits = 1;
    a.threshold_shift = 0, a.current_shift = 0, a.per_channel = 0;
    for (int64_t i = 0; i < fx.m.params.p[0].numel; i++)
        fx.m.params.data[fx.m.params.p[0].offset + i] *= 1000.0f;
    cr_assert_eq(qkf_quantize(&fx.m, &a, "x", NULL, &q), -1);
    cr_assert(strstr(qkf_last_error(), "patch_embed1.proj_conv: cannot be represented"), "%s",
              qkf_last_error());
    a = fx.a;
    a.leak = QKF_HW_LEAK_LINEAR;
    cr_assert_eq(qkf_quantize(&fx.m, &a, "x", NULL, &q), -1);
    cr_assert(strstr(qkf_last_error(), "leak"), "%s", qkf_last_error());
    a = fx.a;
    a.membrane_bits = 40;
    cr_assert_eq(qkf_quantize(&fx.m, &a, "x", NULL, &q), -1);
    cr_assert(strstr(qkf_last_error(), "membrane_bits"), "%s", qkf_last_error());
    free_fixture(&fx);
}

/* The primitives: wrap and saturation at the register edges. */
Test(quant, reduce)
{
    cr_assert_eq(qkf_q_reduce(32767, 16, 1), 32767);
    cr_assert_eq(qkf_q_reduce(32768, 16, 1), -32768);
    cr_assert_eq(qkf_q_reduce(-32769, 16, 1), 32767);
    cr_assert_eq(qkf_q_reduce(40000, 16, 0), 32767);
    cr_assert_eq(qkf_q_reduce(-40000, 16, 0), -32767);
    cr_assert_eq(qkf_q_reduce((int64_t)1 << 40, 64, 0), (int64_t)1 << 40);
    qkf_hw_arith a = {0};
    a.current_bits = 16, a.current_wrap = 1, a.membrane_bits = 24, a.threshold_ge = 0;
    int32_t v = 0;
    /* '>' comparator: H = 10 does not fire at theta 10, 11 does; hard reset */
    cr_assert_eq(qkf_q_lif_step(&v, 10, 0, 10, &a), 0);
    cr_assert_eq(v, 10);
    cr_assert_eq(qkf_q_lif_step(&v, 6, 0, 10, &a), 1); /* 5 + 6 = 11 > 10 */
    cr_assert_eq(v, 0);
    v = -7; /* decay truncates toward zero: -7 -> -3 */
    cr_assert_eq(qkf_q_lif_step(&v, 0, 0, 10, &a), 0);
    cr_assert_eq(v, -3);
}

/* ---- the command line ------------------------------------------------------------------------- */

static char cdir[256];
static void cli_setup(void)
{
    tmpdir_make(cdir, sizeof cdir, "quant");
    qkf_h5_quiet();
}
static void cli_teardown(void) { tmpdir_remove(cdir); }

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *b = qkf_calloc(1 << 16, 1);
    size_t n = fread(b, 1, (1 << 16) - 1, f);
    b[n] = 0;
    fclose(f);
    return b;
}

/* --tb-compat and --trace on the integer engines: qkf infer --hw loihi --tb-compat (dense, traced
 * in membrane units; event with --cross-check) gives the tb_compat fixture's integer logits; the
 * trace's spikes are the fixture's, every h is an integer that fires exactly when h > theta[c]
 * (loihi's '>'), v is 0 after a spike and h otherwise, and the nodes carry delta and threshold. */
Test(quant_cli, trace_tb_int, .init = cli_setup, .fini = cli_teardown, .timeout = 120)
{
    fixture fx;
    load_fixture(&fx, "cifar_tb", "loihi");
    const char *w = QKF_FIXTURE_DIR "/cifar_tb.weights.h5";
    cr_assert_eq(run_cmd("%s infer --weights %s --hw loihi --tb-compat --input %s --output "
                         "%s/y.h5 --trace %s/t.h5 --record '*:all' --quiet",
                         QKF_BINARY, w, fx.path, cdir, cdir),
                 0);
    cr_assert_eq(run_cmd("%s infer --weights %s --hw loihi --tb-compat --mode event "
                         "--cross-check --input %s --output %s/ye.h5 >%s/o.txt",
                         QKF_BINARY, w, fx.path, cdir, cdir),
                 0);
    char *o = slurp(tmpdir_path(cdir, "o.txt"));
    cr_assert(strstr(o, "engines agree"), "%s", o);
    qkf_free(o);
    int64_t *ref, *got, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(fx.path, "logits_int", &ref, &nd, sh), 0);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(qkf_h5_read_i64(tmpdir_path(cdir, k ? "ye.h5" : "y.h5"), "logits_int", &got,
                                     &nd, sh),
                     0, "%s", qkf_last_error());
        for (int64_t i = 0; i < sh[0] * sh[1]; i++)
            cr_assert_eq(got[i], ref[i], "logit_int %lld (%s)", (long long)i, k ? "event" : "dense");
        qkf_free(got);
    }
    qkf_free(ref);
    const qkf_graph *g = &fx.q.g;
    const char *tp = tmpdir_path(cdir, "t.h5");
    int T = g->cfg.T, B = fx.B;
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_op *op = &g->ops[g->lif_ops[l]];
        const qkf_tensor *y = &g->tensors[op->out];
        int64_t n = qkf_graph_lif_neurons(g, l), N = (int64_t)y->h * y->w;
        char key[512];
        float *h, *v, *tm;
        int64_t *rs, *idx, sh2[5];
        snprintf(key, sizeof key, "nodes/%s/observables/h/data", op->name);
        cr_assert_eq(qkf_h5_read_f32(tp, key, &h, &nd, sh), 0, "%s", qkf_last_error());
        cr_assert(sh[0] == B && sh[1] == T && sh[2] == n, "%s: shape", key);
        snprintf(key, sizeof key, "nodes/%s/observables/v/data", op->name);
        cr_assert_eq(qkf_h5_read_f32(tp, key, &v, &nd, sh), 0, "%s", qkf_last_error());
        snprintf(key, sizeof key, "nodes/%s/observables/spikes/idx", op->name);
        cr_assert_eq(qkf_h5_read_i64(tp, key, &idx, &nd, sh), 0, "%s", qkf_last_error());
        snprintf(key, sizeof key, "nodes/%s/observables/spikes/time", op->name);
        tm = qkf_malloc((size_t)(sh[0] * sh[1]) * sizeof(float)); /* padding +inf: raw read */
        hid_t tf = H5Fopen(tp, H5F_ACC_RDONLY, H5P_DEFAULT), td = H5Dopen2(tf, key, H5P_DEFAULT);
        cr_assert(td >= 0 && H5Dread(td, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, tm) >= 0);
        H5Dclose(td);
        H5Fclose(tf);
        snprintf(key, sizeof key, "spikes/%s", op->name);
        cr_assert_eq(qkf_h5_read_i64(fx.path, key, &rs, &nd, sh2), 0, "%s", qkf_last_error());
        uint8_t *ts = qkf_calloc((size_t)(T * B * n), 1); /* [T][B][n] from the events */
        for (int b = 0; b < B; b++)
            for (int64_t k = 0; k < sh[1]; k++)
                if (idx[b * sh[1] + k] >= 0)
                    ts[((int64_t)tm[b * sh[1] + k] * B + b) * n + idx[b * sh[1] + k]] = 1;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int64_t j = 0; j < n; j++) {
                    int64_t f = ((int64_t)t * B + b) * n + j, r = ((int64_t)b * T + t) * n + j;
                    int32_t th = fx.q.ops[g->lif_ops[l]].theta[j / N];
                    cr_assert_eq(ts[f], rs[f], "%s: trace spike [t %d, b %d, n %lld]", op->name,
                                 t, b, (long long)j);
                    cr_assert_eq(h[r], floorf(h[r]), "%s: h not an integer", op->name);
                    cr_assert_eq(ts[f], h[r] > (float)th, "%s: h %g, theta %d, spike %d", op->name,
                                 (double)h[r], th, ts[f]);
                    cr_assert_eq(v[r], ts[f] ? 0.0f : h[r], "%s: v", op->name);
                }
        snprintf(key, sizeof key, "nodes/%s", op->name);
        hid_t fid = H5Fopen(tp, H5F_ACC_RDONLY, H5P_DEFAULT);
        cr_assert(H5Aexists_by_name(fid, key, "delta", H5P_DEFAULT) > 0 &&
                      H5Aexists_by_name(fid, key, "threshold", H5P_DEFAULT) > 0,
                  "%s: no delta / threshold attribute", key);
        H5Fclose(fid);
        qkf_free(ts);
        qkf_free(h);
        qkf_free(v);
        qkf_free(tm);
        qkf_free(idx);
        qkf_free(rs);
    }
    free_fixture(&fx);
}

/* qkf quantize writes the model the library makes; qkf infer runs it (and the float checkpoint
 * with --hw) to the reference's integer logits. */
Test(quant_cli, quantize_then_infer, .init = cli_setup, .fini = cli_teardown, .timeout = 120)
{
    const char *w = QKF_FIXTURE_DIR "/cifar_small.weights.h5";
    const char *in = QKF_FIXTURE_DIR "/cifar_small_int_loihi.h5";
    cr_assert_eq(run_cmd("%s quantize --help >%s/h.txt", QKF_BINARY, cdir), 0);
    char *h = slurp(tmpdir_path(cdir, "h.txt"));
    cr_assert(strstr(h, "--calib") && strstr(h, "--hw"), "%s", h);
    qkf_free(h);
    cr_assert_eq(run_cmd("%s quantize --weights %s --hw loihi --out %s/q.h5 >%s/o.txt 2>&1",
                         QKF_BINARY, w, cdir, cdir),
                 0);
    char *o = slurp(tmpdir_path(cdir, "o.txt"));
    cr_assert(strstr(o, "stage1.0.tssa.q_conv") && strstr(o, "head"), "%s", o);
    qkf_free(o);
    /* the file is the library's quantisation (the reference's integers: quant/cifar_loihi) */
    qkf_qmodel q;
    cr_assert_eq(qkf_qckpt_load(tmpdir_path(cdir, "q.h5"), &q), 0, "%s", qkf_last_error());
    cr_assert_str_eq(q.hw_name, "loihi");
    cr_assert_eq(q.arith.membrane_bits, 24);
    qkf_qmodel_free(&q);
    int64_t *ref, *got, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(in, "logits_int", &ref, &nd, sh), 0);
    int64_t n = sh[0] * sh[1];
    for (int k = 0; k < 2; k++) {
        if (k == 0)
            cr_assert_eq(run_cmd("%s infer --weights %s/q.h5 --input %s --output %s/y.h5 --quiet",
                                 QKF_BINARY, cdir, in, cdir),
                         0);
        else
            cr_assert_eq(run_cmd("%s infer --weights %s --hw loihi --input %s --output %s/y.h5 "
                                 "--quiet",
                                 QKF_BINARY, w, in, cdir),
                         0);
        cr_assert_eq(qkf_h5_read_i64(tmpdir_path(cdir, "y.h5"), "logits_int", &got, &nd, sh), 0,
                     "%s", qkf_last_error());
        for (int64_t i = 0; i < n; i++)
            cr_assert_eq(got[i], ref[i], "logit_int %lld (run %d)", (long long)i, k);
        qkf_free(got);
    }
    qkf_free(ref);
}

/* Refusals are one line naming the file or key, exit non-zero, leave no output behind. */
Test(quant_cli, errors, .init = cli_setup, .fini = cli_teardown, .timeout = 60)
{
    const char *w = QKF_FIXTURE_DIR "/cifar_small.weights.h5";
    const struct {
        const char *args, *want;
    } cases[] = {
        {"--hw truenorth", "leak"},                /* linear leak: no tau = 2 */
        {"--hw ideal-45nm", "float machine"},      /* nothing to quantise */
        {"--hw nosuchchip", "nosuchchip"},         /* unknown profile */
        {"", "required"},                          /* no --hw */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_cmd("%s quantize --weights %s %s --out %s/q.h5 >%s/o.txt 2>%s/e.txt",
                         QKF_BINARY, w, cases[i].args, cdir, cdir, cdir);
        cr_assert_neq(rc, 0, "%s", cases[i].args);
        char *e = slurp(tmpdir_path(cdir, "e.txt"));
        cr_assert(strstr(e, cases[i].want), "%s: %s", cases[i].args, e);
        cr_assert_eq(strchr(e, '\n'), strrchr(e, '\n'), "%s: more than one line: %s",
                     cases[i].args, e);
        qkf_free(e);
        cr_assert_eq(tmpdir_entries(cdir, NULL, 0), 2, "%s left a file", cases[i].args);
    }
    /* a float checkpoint without --hw cannot run as integers; a quantised one needs no --hw */
    cr_assert_neq(run_cmd("%s quantize --weights %s --hw loihi --out %s/q.h5 --calib 2 --data "
                          "%s/none.h5 >/dev/null 2>%s/e.txt",
                          QKF_BINARY, w, cdir, cdir, cdir),
                  0);
    char *e = slurp(tmpdir_path(cdir, "e.txt"));
    cr_assert(strstr(e, "none.h5"), "%s", e);
    qkf_free(e);
}

/* qkf eval --hw: the integer accuracy beside the float one, and the per-layer flip table. */
Test(quant_cli, eval_hw, .init = cli_setup, .fini = cli_teardown, .timeout = 180)
{
    write_quadrant_dataset(tmpdir_path(cdir, "d.h5"), 40, 7);
    cr_assert_eq(run_cmd("%s train --img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 "
                         "--num-heads 2 --mlp-ratio 2 --depths 3 --T 2 --batch 8 --epochs 1 "
                         "--threads 1 --no-eval --quiet --data h5:%s/d.h5 --out %s/w.h5",
                         QKF_BINARY, cdir, cdir),
                 0);
    cr_assert_eq(run_cmd("%s eval --weights %s/w.h5 --data h5:%s/d.h5 --hw wide16 --flips "
                         "--calib 8 --batch 7 >%s/o.txt 2>/dev/null",
                         QKF_BINARY, cdir, cdir, cdir),
                 0);
    char *o = slurp(tmpdir_path(cdir, "o.txt"));
    cr_assert(strstr(o, "accuracy: ") && strstr(o, "float accuracy: ") &&
                  strstr(o, "stage1.0.tssa.attn_lif") && strstr(o, "neuron-steps"),
              "%s", o);
    qkf_free(o);
    /* an unknown engine: a clear refusal (--tb-compat and --mode event: tests/test_cli.c) */
    cr_assert_neq(run_cmd("%s eval --weights %s/w.h5 --data h5:%s/d.h5 --hw loihi --mode quantum "
                          ">/dev/null 2>&1",
                          QKF_BINARY, cdir, cdir),
                  0);
}
