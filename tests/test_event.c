/* The event-driven engine (sim/sched.c) and its kernels (kernels/spike.c).
 *
 * Agreement with the dense engine. Both engines see the same model and input. Where every sum
 * is exact (weights, inputs and folded BatchNorm on a dyadic grid: the power-of-two models
 * below), the spikes and logits must be identical bit for bit. Elsewhere the event engine sums
 * BatchNorm-folded weights in event order, so a current can differ from the dense one in its
 * last bit, and a neuron whose membrane sits within rounding of its threshold can flip. The
 * check walks the simulation in causal order (time step, then layer): everything before the
 * first differing (step, layer) must be identical, and every difference there must be a neuron
 * whose dense pre-spike membrane h lies within 1e-5 of threshold, at most max(1, spikes / 1e5)
 * of them (the flip budget). After a flip the network is no longer driven by the same input,
 * so later layers are not compared (a flip cascades through a small network).
 *
 * Models: the reference fixtures (tests/fixtures, when present) and freshly initialised small
 * models of every variant whose BatchNorms are calibrated (qkf_stats_calibrate) so that layers
 * fire at 5-40%. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../kernels/kernels.h"
#include "../kernels/spike.h"
#include "../sim/dense.h"
#include "../sim/sched.h"
#include "../sim/stats.h"
#include "util.h"

#define NEAR_EPS 1e-5 /* |h - vth| below this: summation order may decide the spike */

/* One thread by default: the dense engine and calibration do not depend on it, and on a busy
 * 2-core machine OpenMP and OpenBLAS threads waiting on each other cost more than they gain. The
 * event engine runs with EVENT_THREADS (and the thread test compares 1 with 2). */
#define EVENT_THREADS 2

static void setup(void)
{
    qkf_h5_quiet();
    qkf_set_threads(1);
}

TestSuite(event, .init = setup, .timeout = 120);

/* ---- models ------------------------------------------------------------------------------- */

/* Small configurations of each variant (as the fixtures use). */
static void small_cfg(const char *name, qkf_config *c)
{
    if (!strcmp(name, "cifar") || !strcmp(name, "cifar_qkca")) {
        cr_assert_eq(qkf_config_preset("cifar10", c), 0);
        c->img_size = 16, c->embed_dims = 96, c->T = 4;
        if (!strcmp(name, "cifar_qkca"))
            c->qk_attn = QKF_QK_CHANNEL;
    } else if (!strcmp(name, "cifar_wide")) {
        /* the cifar10 widths on an 8x8 input: patch_embed3.proj4 (5.3 MB of weights) and the
         * stage-3 MLP (2.4 MB) exceed the engine's 1 MB slab, so they run in channel blocks */
        cr_assert_eq(qkf_config_preset("cifar10", c), 0);
        c->img_size = 8, c->T = 2;
    } else if (!strcmp(name, "imagenet")) {
        cr_assert_eq(qkf_config_preset("imagenet", c), 0);
        c->img_size = 32, c->embed_dims = 96, c->depths = 5, c->T = 2, c->num_classes = 10;
    } else if (!strcmp(name, "dvs128")) {
        cr_assert_eq(qkf_config_preset("dvs128", c), 0);
        c->img_size = 32, c->embed_dims = 64, c->T = 4;
    } else {
        cr_assert_eq(qkf_config_preset("cifar10dvs", c), 0);
        c->img_size = 32, c->embed_dims = 64, c->T = 3;
    }
    cr_assert_eq(qkf_config_validate(c), 0, "%s", qkf_last_error());
}

static int64_t input_floats(const qkf_config *c, int B)
{
    int64_t per = (int64_t)c->in_channels * c->img_size * c->img_size;
    return per * B * (qkf_config_is_frames(c) ? c->T : 1);
}

/* Images ~ N(0,1) (pow2: on a 1/8 grid within +-4); frames: event counts 0..3. */
static float *make_input(const qkf_config *c, int B, uint64_t seed, int pow2)
{
    int64_t n = input_floats(c, B);
    float *x = qkf_malloc((size_t)n * sizeof(float));
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        if (qkf_config_is_frames(c)) {
            float u = qkf_rng_uniform(&r);
            x[i] = u < 0.6f ? 0.0f : u < 0.85f ? 1.0f : u < 0.95f ? 2.0f : 3.0f;
        } else {
            float z = qkf_rng_normal(&r);
            x[i] = pow2 ? fminf(fmaxf(roundf(z * 8.0f) / 8.0f, -4.0f), 4.0f) : z;
        }
    }
    return x;
}

/* Conv weights +-2^e (e near log2(1/sqrt(fan_in)), a quarter of them 0) and conv biases on a
 * 2^-8 grid: with inputs on a 1/8 grid and BatchNorm folded to powers of two, every sum in the
 * model is exact in float32, whatever its order. */
static void dyadic_weights(qkf_model *m, uint64_t seed)
{
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    for (int i = 0; i < m->params.n; i++) {
        const qkf_param *p = &m->params.p[i];
        float *d = m->params.data + p->offset;
        if (strstr(p->name, "_conv.weight")) {
            int e0 = (int)lround(-0.5 * log2((double)(p->numel / p->shape[0])));
            for (int64_t j = 0; j < p->numel; j++) {
                uint64_t u = qkf_rng_u64(&r);
                d[j] =
                    (u & 3) == 0 ? 0.0f : ldexpf((u & 4) ? 1.0f : -1.0f, e0 - (int)((u >> 3) % 3));
            }
        } else if (strstr(p->name, "_conv.bias")) {
            for (int64_t j = 0; j < p->numel; j++)
                d[j] = ldexpf((float)((int)(qkf_rng_u64(&r) % 17) - 8), -8);
        }
    }
}

/* Layers are realistic: the mean firing rate of the conv layers lies in 5-40%. */
static void check_rates(const qkf_model *m, const float *x, int B, const char *what)
{
    qkf_sched *e = qkf_sched_create(m, B, 0);
    cr_assert_not_null(e, "%s", qkf_last_error());
    float *logits = qkf_malloc((size_t)B * m->cfg.num_classes * sizeof(float));
    cr_assert_eq(qkf_sched_forward(e, x, B, logits, NULL), 0, "%s", qkf_last_error());
    qkf_stats *s = qkf_sched_stats(e);
    double sp = 0, ne = 0;
    for (int i = 0; i < s->n_nodes; i++)
        if (s->node[i].kind == QKF_NODE_CONV || s->node[i].kind == QKF_NODE_ENCODE) {
            qkf_work w = qkf_stats_node_total(s, i, -1);
            sp += (double)w.out_spikes;
            ne += (double)s->node[i].neurons * s->T * B;
        }
    cr_log_info("%s: conv layers fire at %.1f%%", what, 100 * sp / ne);
    cr_expect(sp / ne >= 0.05 && sp / ne <= 0.40, "%s: conv layers fire at %.1f%%", what,
              100 * sp / ne);
    qkf_free(logits);
    qkf_sched_free(e);
}

/* A freshly initialised small model with BatchNorms calibrated to fire at ~15% (per-channel
 * spread), or its power-of-two form. */
static void make_model(qkf_model *m, const char *name, int B, uint64_t seed, int pow2, float **x)
{
    memset(m, 0, sizeof *m);
    small_cfg(name, &m->cfg);
    cr_assert_eq(qkf_params_build(&m->cfg, &m->params), 0, "%s", qkf_last_error());
    qkf_params_init(&m->cfg, &m->params, seed);
    if (pow2)
        dyadic_weights(m, seed + 1);
    *x = make_input(&m->cfg, B, seed + 2, pow2);
    cr_assert_eq(qkf_stats_calibrate(m, *x, B, 0.15, 0.6, pow2, seed + 3), 0, "%s",
                 qkf_last_error());
    /* the head: O(1/sqrt(C)) weights so logits are O(1) */
    int hw = qkf_params_find(&m->params, "head.weight");
    cr_assert_geq(hw, 0);
    qkf_rng r;
    qkf_rng_seed(&r, seed + 4);
    float *w = m->params.data + m->params.p[hw].offset;
    for (int64_t j = 0; j < m->params.p[hw].numel; j++)
        w[j] = qkf_rng_normal(&r) / sqrtf((float)m->params.p[hw].shape[1]);
}

/* ---- agreement --------------------------------------------------------------------------- */

typedef struct {
    int64_t spikes;     /* dense spikes, all layers */
    int64_t mismatches; /* all differences, cascades included */
    int64_t flips;      /* differences at the first differing (step, layer) */
    int64_t far;        /* of those, neurons not within NEAR_EPS of threshold */
    int first_t, first_layer;
    int logits_equal;
    double logit_err;
} agreement;

/* Runs both engines on B samples of x and compares spikes in causal order. */
static void agree(const qkf_model *m, const float *x, int B, int tb, agreement *a)
{
    memset(a, 0, sizeof *a);
    a->first_t = a->first_layer = -1;
    /* dense F(2x2) Winograd: exact wherever direct convolution is, so power-of-two models must
     * agree bit for bit (the default F(4x4) rounds its 1/6 and 1/24 weight factors) */
    qkf_dense *d = qkf_dense_create(m, B,
                                    QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH | QKF_DENSE_WINO2 |
                                        (tb ? QKF_DENSE_TB_COMPAT : 0));
    qkf_sched *e = qkf_sched_create(m, B, QKF_SCHED_RECORD | (tb ? QKF_SCHED_TB_COMPAT : 0));
    cr_assert(d && e, "%s", qkf_last_error());
    int K = m->cfg.num_classes, T = m->cfg.T;
    float *ld = qkf_malloc((size_t)B * K * sizeof(float));
    float *le = qkf_malloc((size_t)B * K * sizeof(float));
    cr_assert_eq(qkf_dense_forward(d, x, B, ld, NULL), 0, "%s", qkf_last_error());
    qkf_set_threads(EVENT_THREADS);
    cr_assert_eq(qkf_sched_forward(e, x, B, le, NULL), 0, "%s", qkf_last_error());
    qkf_set_threads(1);
    const qkf_graph *g = qkf_sched_graph(e);
    for (int t = 0; t < T; t++)
        for (int l = 0; l < g->n_lif; l++) {
            const qkf_op *op = &g->ops[g->lif_ops[l]];
            const qkf_tensor *y = &g->tensors[op->out];
            int64_t N = (int64_t)y->h * y->w, nper = y->c * N, F = (int64_t)T * B;
            const float *ds = qkf_dense_tensor(d, op->out), *h = qkf_dense_lif_h(d, l);
            const uint8_t *es = qkf_sched_spikes(e, l);
            cr_assert(ds && h && es);
            int64_t here = 0, far = 0;
            for (int b = 0; b < B; b++)
                for (int64_t c = 0; c < y->c; c++)
                    for (int64_t n = 0; n < N; n++) {
                        int64_t di = (c * F + (int64_t)t * B + b) * N + n;
                        int s = ds[di] != 0.0f;
                        a->spikes += s;
                        if (s == es[((int64_t)t * B + b) * nper + c * N + n])
                            continue;
                        here++;
                        if (fabs((double)h[di] - (double)op->vth) > NEAR_EPS)
                            far++;
                    }
            if (here && a->first_t < 0) {
                a->first_t = t, a->first_layer = l;
                a->flips = here, a->far = far;
                cr_log_info("first difference: t=%d %s, %lld flips (%lld not near threshold)", t,
                            op->name, (long long)here, (long long)far);
            }
            a->mismatches += here;
        }
    a->logits_equal = memcmp(ld, le, (size_t)B * K * sizeof(float)) == 0;
    for (int i = 0; i < B * K; i++)
        a->logit_err = fmax(a->logit_err, fabs((double)ld[i] - (double)le[i]));
    qkf_free(ld);
    qkf_free(le);
    qkf_sched_free(e);
    qkf_dense_free(d);
}

static void expect_within_budget(const agreement *a, const char *what)
{
    int64_t budget = a->spikes / 100000 > 1 ? a->spikes / 100000 : 1;
    cr_log_info("%s: %lld spikes, %lld differ in all (first at t=%d layer %d: %lld flips)", what,
                (long long)a->spikes, (long long)a->mismatches, a->first_t, a->first_layer,
                (long long)a->flips);
    cr_expect_eq(a->far, 0, "%s: %lld neurons differ away from threshold", what, (long long)a->far);
    cr_expect_leq(a->flips, budget, "%s: %lld flips (budget %lld)", what, (long long)a->flips,
                  (long long)budget);
    if (a->mismatches == 0)
        cr_expect(a->logits_equal, "%s: same spikes but logits differ by %g", what, a->logit_err);
    cr_expect_gt(a->spikes, 1000, "%s: the comparison is vacuous", what);
}

static void expect_exact(const agreement *a, const char *what)
{
    cr_expect_eq(a->mismatches, 0, "%s: %lld spikes differ (first at t=%d layer %d)", what,
                 (long long)a->mismatches, a->first_t, a->first_layer);
    cr_expect(a->logits_equal, "%s: logits differ by %g", what, a->logit_err);
    cr_expect_gt(a->spikes, 1000, "%s: the comparison is vacuous", what);
}

/* ---- kernels ------------------------------------------------------------------------------- */

/* Spec section 1: with threshold 0.5 and integer input counts, the attention LIF fires iff the
 * count is >= 1, whatever its history. The general LIF kernel must agree with the OR neuron. */
Test(event, attention_neuron_is_an_or)
{
    enum { C = 64, T = 16, N = 37 };
    float *x = qkf_malloc((size_t)C * T * N * sizeof(float));
    float *s = qkf_malloc((size_t)C * T * N * sizeof(float));
    float *row = qkf_malloc((size_t)C * sizeof(float));
    uint16_t ch[C];
    qkf_rng r;
    qkf_rng_seed(&r, 42);
    int64_t fired = 0;
    for (int trial = 0; trial < 20; trial++) {
        int maxc = 1 + trial % 9; /* counts 0..maxc, mostly 0 */
        for (int64_t i = 0; i < (int64_t)C * T * N; i++)
            x[i] = qkf_rng_uniform(&r) < 0.6f ? 0.0f : (float)(1 + qkf_rng_u64(&r) % maxc);
        qkf_lif_forward(s, x, C, T, 1, N, 0, 0.5f, 0, NULL, NULL); /* x [C][T][N] */
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) {
                for (int c = 0; c < C; c++)
                    row[c] = x[((int64_t)c * T + t) * N + n];
                FOR_EACH_ISA(p)
                {
                int k = qkf_spike_attn_row(ch, row, C), j = 0;
                for (int c = 0; c < C; c++) {
                    int want = s[((int64_t)c * T + t) * N + n] != 0.0f;
                    int got = j < k && ch[j] == c;
                    j += got;
                    cr_assert_eq(got, want, "%s: trial %d t=%d n=%d c=%d count %g", ISA_NAME(p),
                                 trial, t, n, c, (double)row[c]);
                    cr_assert_eq(want, row[c] >= 1.0f);
                    fired += want;
                }
                }
            }
    }
    cr_expect_gt(fired, 1000);
    qkf_free(x);
    qkf_free(s);
    qkf_free(row);
}

/* The fast gather equals its reference bit for bit (same adds in the same order), for widths
 * that exercise every block size and the masked tail, with and without counts. */
Test(event, gather_matches_reference)
{
    enum { CIN = 40, KK = 9, MAXW = 300 };
    float *w = qkf_malloc((size_t)CIN * KK * MAXW * sizeof(float));
    float *init = qkf_malloc(MAXW * sizeof(float));
    float *a = qkf_malloc(MAXW * sizeof(float)), *b = qkf_malloc(MAXW * sizeof(float));
    qkf_rng r;
    qkf_rng_seed(&r, 7);
    for (int i = 0; i < CIN * KK * MAXW; i++)
        w[i] = qkf_rng_normal(&r);
    for (int i = 0; i < MAXW; i++)
        init[i] = qkf_rng_normal(&r);
    uint16_t ch[KK][CIN], cnt[KK][CIN];
    FOR_EACH_ISA(p)
    for (int width = 1; width <= MAXW; width += (width < 40 ? 1 : 13)) {
        int32_t stride = KK * width;
        qkf_spike_seg seg[KK];
        int ns = (int)(qkf_rng_u64(&r) % (KK + 1));
        int counts = width % 2;
        for (int s = 0; s < ns; s++) {
            int n = 0;
            for (int c = 0; c < CIN; c++)
                if (qkf_rng_uniform(&r) < 0.3f)
                    ch[s][n] = (uint16_t)c, cnt[s][n++] = (uint16_t)(1 + qkf_rng_u64(&r) % 3);
            seg[s] = (qkf_spike_seg){ch[s], counts ? cnt[s] : NULL, n, s * width};
        }
        const float *in = width % 3 ? init : NULL;
        int64_t ra = qkf_spike_gather(a, in, w, stride, seg, ns, width);
        int64_t rb = qkf_spike_gather_ref(b, in, w, stride, seg, ns, width);
        cr_assert_eq(ra, rb, "%s: width %d: rows %lld vs %lld", ISA_NAME(p), width, (long long)ra,
                     (long long)rb);
        cr_assert_eq(memcmp(a, b, (size_t)width * sizeof(float)), 0, "%s: width %d differs",
                     ISA_NAME(p), width);
    }
    qkf_free(w);
    qkf_free(init);
    qkf_free(a);
    qkf_free(b);
}

/* The many-row gather (rows walked in pairs) equals its reference bit for bit: every fast
 * width (16..128), widths that fall back to row by row, odd row counts, lists of unequal and zero
 * length, with and without counts (single events first, announced or not), weight rows one block
 * wide or wider, from an init row, from zero, and in place. */
Test(event, gather_rows_matches_reference)
{
    enum { CIN = 50, ROWS = 9, MAXW = 136 };
    float *w = qkf_malloc((size_t)CIN * MAXW * sizeof(float));
    float *ibuf = qkf_malloc((MAXW + 8) * sizeof(float)), *init = ibuf + 8;
    float *abuf = qkf_malloc((size_t)(ROWS * MAXW + 8) * sizeof(float)), *a = abuf + 8;
    float *bbuf = qkf_malloc((size_t)(ROWS * MAXW + 8) * sizeof(float)), *b = bbuf + 8;
    qkf_rng r;
    qkf_rng_seed(&r, 11);
    for (int i = 0; i < CIN * MAXW; i++)
        w[i] = qkf_rng_normal(&r);
    for (int i = 0; i < MAXW; i++)
        init[i] = qkf_rng_normal(&r);
    uint16_t ch[ROWS][CIN], cnt[ROWS][CIN];
    const int widths[] = {16, 32, 48, 64, 80, 96, 112, 128, 8, 24, 136, 40, 4};
    FOR_EACH_ISA(p)
    for (int wi = 0; wi < (int)(sizeof widths / sizeof *widths); wi++)
        for (int mode = 0; mode < 6; mode++) {
            int width = widths[wi], counts = mode % 2, nrow = 1 + (int)(qkf_rng_u64(&r) % ROWS);
            qkf_spike_row ra[ROWS], rb[ROWS];
            for (int k = 0; k < nrow; k++) {
                float density = k == 1 ? 0.0f : 0.1f + 0.8f * qkf_rng_uniform(&r);
                uint16_t many[CIN];
                int n = 0, n1 = 0;
                for (int c = 0; c < CIN; c++) /* counts: the events of count 1 first (qkf_spike_events) */
                    if (qkf_rng_uniform(&r) < density) {
                        /* counts of 2..4, or DVS-size ones (sums of four overflow 16 bits) */
                        many[c] = (uint16_t)(qkf_rng_uniform(&r) < 0.6f ? 1
                                             : k % 2 ? 16000 + qkf_rng_u64(&r) % 49536
                                                     : 2 + qkf_rng_u64(&r) % 3);
                        if (many[c] == 1)
                            ch[k][n] = (uint16_t)c, cnt[k][n++] = 1;
                    } else
                        many[c] = 0;
                n1 = n;
                for (int c = 0; c < CIN; c++)
                    if (many[c] > 1)
                        ch[k][n] = (uint16_t)c, cnt[k][n++] = many[c];
                float *oa = a + (int64_t)k * MAXW, *ob = b + (int64_t)k * MAXW;
                for (int j = 0; j < width; j++) /* in place (mode 4, 5) starts from these */
                    oa[j] = ob[j] = (float)(k + j) * 0.25f;
                const float *ia = mode / 2 == 0 ? init : mode / 2 == 1 ? NULL : oa;
                const float *ib = mode / 2 == 0 ? init : mode / 2 == 1 ? NULL : ob;
                /* n1 is a promise the fast path may use; 0 always holds */
                qkf_spike_seg sg = {ch[k], counts ? cnt[k] : NULL, n, 0};
                ra[k] = (qkf_spike_row){oa, ia, sg, k % 3 == 2 ? 0 : n1};
                rb[k] = (qkf_spike_row){ob, ib, sg, k % 3 == 2 ? 0 : n1};
            }
            /* rows laid out from 8 floats before their first column: off selects it */
            for (int k = 0; k < nrow; k++) {
                ra[k].out -= 8, rb[k].out -= 8;
                if (ra[k].init)
                    ra[k].init -= 8, rb[k].init -= 8;
            }
            /* weight rows exactly one block wide (the engine's), or wider */
            int32_t stride = mode < 3 || width + 16 > MAXW ? width : width + 16;
            int64_t sa = qkf_spike_gather_rows(ra, nrow, 8, w, stride, width);
            int64_t sb = qkf_spike_gather_rows_ref(rb, nrow, 8, w, stride, width);
            cr_assert_eq(sa, sb, "%s: width %d mode %d: spikes %lld vs %lld", ISA_NAME(p), width,
                         mode, (long long)sa, (long long)sb);
            for (int k = 0; k < nrow; k++)
                cr_assert_eq(memcmp(a + (int64_t)k * MAXW, b + (int64_t)k * MAXW,
                                    (size_t)width * sizeof(float)),
                             0, "%s: width %d mode %d row %d differs", ISA_NAME(p), width, mode, k);
        }
    qkf_free(w);
    qkf_free(ibuf);
    qkf_free(abuf);
    qkf_free(bbuf);
}

/* Counted events round once (fmaf), also where a product rounded to double and then to float
 * would not: a + c * x built to lie within 2^-30 of a half float ulp from a (c * x = half an ulp
 * times 1 +- 2^-30 or 2^-32: 1025 x 1047553, 32767 x 32769, 641 x 6700417, 65535 x 65537, each
 * times 2^(e - 54..56)), at random exponents and signs, so that the sum in double lands on a
 * float midpoint (the portable path without a hardware FMA emulates fmaf in double: kernels/
 * spike.c). Also power-of-two counts whose float product overflows while the fmaf does not, and
 * infinite weights. Every path against the reference (fmaf) bit for bit (or both NaN), through
 * the gather and, in place, the row gather. */
static float hard_f(double v)
{
    float f = (float)v;
    cr_assert_eq((double)f, v, "hard case %a is not a float", v);
    return f;
}

Test(event, gather_counts_round_once_reference)
{
    enum { W = 67, TRIALS = 40 }; /* 16 vectors + a tail of 3 */
    static const struct {
        unsigned c;
        double x; /* times 2^(e - sh): c * x = 2^(e-24) (1 +- 2^-30 or 2^-32) */
        int sh;
    } cases[] = {{1025, 1047553, 54}, {32767, 32769, 54}, {641, 6700417, 56}, {65535, 65537, 56}};
    float w[W], init[W], a[W], b[W];
    qkf_rng r;
    qkf_rng_seed(&r, 23);
    int naive_wrong = 0, finite_pow2 = 0;
    FOR_EACH_ISA(p)
    for (int t = 0; t < TRIALS; t++) {
        int ci = t % 4, special = t % 10 == 9;
        unsigned c = cases[ci].c;
        for (int j = 0; j < W; j++) {
            int e = (int)(qkf_rng_u64(&r) % 41) - 20; /* a in [2^e, 2^(e+1)) */
            double sa = qkf_rng_u64(&r) % 2 ? -1.0 : 1.0;
            double av = sa * ldexp(1.0 + (double)(qkf_rng_u64(&r) % (1u << 23)) / 8388608.0, e);
            init[j] = hard_f(av);
            w[j] = hard_f(sa * ldexp(cases[ci].x, e - cases[ci].sh)); /* same sign: a + c x */
            if (qkf_rng_u64(&r) % 4 == 0) /* or toward zero: midpoint below a */
                w[j] = -w[j];
            float naive = (float)((double)init[j] + (double)c * (double)w[j]);
            naive_wrong += naive != fmaf((float)c, w[j], init[j]);
        }
        unsigned cnt = c;
        if (special) { /* power-of-two counts: overflowing products, infinite weights */
            cnt = t % 20 == 9 ? 2 : 4;
            for (int j = 0; j < W; j++) {
                int kind = j % 4;
                init[j] = kind == 3 ? 1.0f : -FLT_MAX;
                w[j] = kind == 0   ? ldexpf(1.5f, 127) / (float)(cnt / 2)
                       : kind == 1 ? ldexpf(1.25f, 126)
                       : kind == 2 ? (j % 8 == 2 ? INFINITY : -INFINITY)
                                   : 3.0f;
            }
        }
        uint16_t ch = 0, cn = (uint16_t)cnt;
        qkf_spike_seg seg = {&ch, &cn, 1, 0};
        qkf_spike_gather(a, init, w, W, &seg, 1, W);
        qkf_spike_gather_ref(b, init, w, W, &seg, 1, W);
        for (int j = 0; j < W; j++) {
            int same = !memcmp(&a[j], &b[j], sizeof a[j]) || (isnan(a[j]) && isnan(b[j]));
            cr_assert(same, "%s: count %u, a %a, x %a: %a, reference (fmaf) %a", ISA_NAME(p), cnt,
                      (double)init[j], (double)w[j], (double)a[j], (double)b[j]);
            finite_pow2 += special && j % 4 == 0 && isfinite(b[j]);
        }
        /* the row gather, in place: the output row starts as the init row */
        float *o = a;
        memcpy(o, init, sizeof init);
        qkf_spike_row row = {o, o, seg, 0};
        qkf_spike_gather_rows(&row, 1, 0, w, W, W);
        for (int j = 0; j < W; j++)
            cr_assert(!memcmp(&a[j], &b[j], sizeof a[j]) || (isnan(a[j]) && isnan(b[j])),
                      "%s: rows, count %u, a %a, x %a: %a, reference (fmaf) %a", ISA_NAME(p), cnt,
                      (double)init[j], (double)w[j], (double)a[j], (double)b[j]);
    }
    /* the cases are hard: rounding the sum in double, then to float, errs in about half */
    cr_expect_gt(naive_wrong, 200, "only %d hard cases", naive_wrong);
    cr_expect_gt(finite_pow2, 10, "only %d finite sums of overflowing products", finite_pow2);
}

/* The LIF row equals its reference and, stepped over time, the dense multi-step kernel. */
Test(event, lif_row_matches_dense_lif)
{
    enum { C = 77, T = 6 };
    FOR_EACH_ISA(p)
    {
    float x[T][C], v1[C] = {0}, v2[C] = {0}, xd[C * T], sd[C * T];
    uint16_t c1[C], c2[C];
    qkf_rng r;
    qkf_rng_seed(&r, 11);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) {
            x[t][c] = 2.0f * qkf_rng_normal(&r) + 0.5f;
            if (c % 11 == 0)
                x[t][c] = 2.0f; /* h lands exactly on the threshold */
            xd[c * T + t] = x[t][c];
        }
    qkf_lif_forward(sd, xd, C, T, 1, 1, 0, 1.0f, 0, NULL, NULL);
    for (int t = 0; t < T; t++) {
        int n1 = qkf_spike_lif_row(c1, v1, x[t], C, 1.0f);
        int n2 = qkf_spike_lif_row_ref(c2, v2, x[t], C, 1.0f);
        cr_assert_eq(n1, n2);
        cr_assert_eq(memcmp(c1, c2, (size_t)n1 * sizeof(uint16_t)), 0);
        cr_assert_eq(memcmp(v1, v2, sizeof v1), 0);
        int j = 0;
        for (int c = 0; c < C; c++) {
            int got = j < n1 && c1[j] == c;
            j += got;
            cr_assert_eq(got, sd[c * T + t] != 0.0f, "%s: t=%d c=%d", ISA_NAME(p), t, c);
        }
    }
    }
}

Test(event, merge_adds_counts)
{
    uint16_t a[] = {1, 4, 5, 9}, ac[] = {1, 2, 1, 1}, b[] = {0, 4, 9, 12}, out[8], oc[8];
    int n = qkf_spike_merge(out, oc, a, ac, 4, b, NULL, 4);
    uint16_t want[] = {0, 1, 4, 5, 9, 12}, wantc[] = {1, 1, 3, 1, 2, 1};
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(out, want, sizeof want), 0);
    cr_assert_eq(memcmp(oc, wantc, sizeof wantc), 0);
    cr_assert_eq(qkf_spike_merge(out, oc, a, NULL, 0, b, NULL, 0), 0);
}

/* The dense-row merge equals the list merge, events with a count of 1 first, for channel counts
 * around every vector boundary, densities from empty to full, with and without counts, and
 * leaves its count row zero. */
Test(event, merge_dense_matches_merge)
{
    enum { MAXC = 200 };
    uint16_t c0[MAXC], n0[MAXC], c1[MAXC], n1[MAXC], ch[MAXC], cn[MAXC], rch[MAXC], rcn[MAXC];
    uint16_t acc[(MAXC + 31) / 32 * 32] = {0}, zero[(MAXC + 31) / 32 * 32] = {0};
    qkf_rng r;
    qkf_rng_seed(&r, 13);
    const int Cs[] = {1, 5, 8, 9, 16, 17, 24, 31, 32, 33, 63, 64, 65, 96, 97, 128, 192, 200};
    FOR_EACH_ISA(p)
    for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++)
        for (int rep = 0; rep < 8; rep++) {
            int C = Cs[ci], k0 = 0, k1 = 0;
            float d0 = (float)(rep % 4) / 3.0f, d1 = qkf_rng_uniform(&r);
            for (int c = 0; c < C; c++) {
                if (qkf_rng_uniform(&r) < d0)
                    c0[k0] = (uint16_t)c, n0[k0++] = (uint16_t)(1 + qkf_rng_u64(&r) % 3);
                if (qkf_rng_uniform(&r) < d1)
                    c1[k1] = (uint16_t)c, n1[k1++] = (uint16_t)(1 + qkf_rng_u64(&r) % 3);
            }
            const uint16_t *cnt0 = rep % 2 ? n0 : NULL, *cnt1 = rep / 2 % 2 ? n1 : NULL;
            uint16_t mch[MAXC], mcn[MAXC];
            int want = qkf_spike_merge(mch, mcn, c0, cnt0, k0, c1, cnt1, k1), want1 = 0, ones = -1;
            for (int pass = 0, k = 0; pass < 2; pass++) /* counts of 1 first, then the others */
                for (int i = 0; i < want; i++)
                    if ((mcn[i] == 1) == (pass == 0)) {
                        rch[k] = mch[i], rcn[k++] = mcn[i];
                        want1 += pass == 0;
                    }
            /* the row's slots past the events may be overwritten: poison them */
            memset(ch, 0xAB, sizeof ch), memset(cn, 0xAB, sizeof cn);
            int got = qkf_spike_merge_dense(ch, cn, &ones, acc, C, c0, cnt0, k0, c1, cnt1, k1);
            const char *pn = ISA_NAME(p);
            cr_assert_eq(got, want, "%s: C %d rep %d: %d events, want %d", pn, C, rep, got, want);
            cr_assert_eq(ones, want1, "%s: C %d rep %d: %d single events, want %d", pn, C, rep,
                         ones, want1);
            cr_assert_eq(memcmp(ch, rch, (size_t)want * sizeof *ch), 0, "%s: C %d rep %d", pn, C,
                         rep);
            cr_assert_eq(memcmp(cn, rcn, (size_t)want * sizeof *cn), 0, "%s: C %d rep %d", pn, C,
                         rep);
            cr_assert_eq(memcmp(acc, zero, sizeof acc), 0,
                         "%s: C %d rep %d: count row not cleared", pn, C, rep);
            /* the plain twin agrees */
            int ones_r = -1;
            uint16_t ch_r[MAXC], cn_r[MAXC];
            int got_r =
                qkf_spike_merge_dense_ref(ch_r, cn_r, &ones_r, acc, C, c0, cnt0, k0, c1, cnt1, k1);
            cr_assert(got_r == want && ones_r == want1 &&
                          !memcmp(ch_r, rch, (size_t)want * sizeof *ch) &&
                          !memcmp(cn_r, rcn, (size_t)want * sizeof *cn) &&
                          !memcmp(acc, zero, sizeof acc),
                      "merge_dense_ref: C %d rep %d", C, rep);
        }
}

/* ---- agreement with the dense engine -----------------------------------------------------------
 */

static int fixture_paths(const char *name, char *w, char *ref, size_t cap)
{
    snprintf(w, cap, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(ref, cap, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    return access(w, R_OK) == 0 && access(ref, R_OK) == 0;
}

static int64_t root_attr_i64(const char *path, const char *key, int64_t dflt)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int64_t v = dflt;
    if (f >= 0 && H5Aexists(f, key) > 0) {
        hid_t a = H5Aopen(f, key, H5P_DEFAULT);
        if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
            v = dflt;
        H5Aclose(a);
    }
    if (f >= 0)
        H5Fclose(f);
    return v;
}

static void fixture(const char *name)
{
    char w[512], ref[512];
    if (!fixture_paths(name, w, ref, sizeof w))
        cr_skip_test("fixture %s not present", name);
    qkf_model m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(qkf_ckpt_load(w, &m), 0, "%s", qkf_last_error());
    float *x;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(ref, "input", &x, &nd, sh), 0, "%s", qkf_last_error());
    if (nd == 5)
        m.cfg.T = (int)sh[1];
    agreement a;
    agree(&m, x, (int)sh[0], (int)root_attr_i64(ref, "tb_compat", 0), &a);
    expect_within_budget(&a, name);
    qkf_free(x);
    qkf_model_free(&m);
}

Test(event, fixture_cifar_small) { fixture("cifar_small"); }
Test(event, fixture_cifar_qkca) { fixture("cifar_qkca"); }
Test(event, fixture_cifar_tb) { fixture("cifar_tb"); }
Test(event, fixture_imagenet_small) { fixture("imagenet_small"); }
Test(event, fixture_dvs128_small) { fixture("dvs128_small"); }
Test(event, fixture_cifar10dvs_small) { fixture("cifar10dvs_small"); }

static void random_model(const char *name, int tb, int B, uint64_t seed)
{
    qkf_model m;
    float *x;
    make_model(&m, name, B, seed, 0, &x);
    check_rates(&m, x, B, name);
    agreement a;
    agree(&m, x, B, tb, &a);
    expect_within_budget(&a, name);
    qkf_free(x);
    qkf_model_free(&m);
}

Test(event, random_cifar) { random_model("cifar", 0, 2, 100); }
Test(event, random_cifar_qkca) { random_model("cifar_qkca", 0, 2, 200); }
Test(event, random_cifar_tb_compat) { random_model("cifar", 1, 3, 300); }
Test(event, random_imagenet) { random_model("imagenet", 0, 2, 400); }
Test(event, random_dvs128) { random_model("dvs128", 0, 2, 500); }
Test(event, random_cifar10dvs) { random_model("cifar10dvs", 0, 2, 600); }
Test(event, random_channel_blocks) { random_model("cifar_wide", 0, 2, 650); }

/* Powers of two: every sum is exact, so the engines agree bit for bit. */
static void pow2_model(const char *name, int tb, int B, uint64_t seed)
{
    qkf_model m;
    float *x;
    make_model(&m, name, B, seed, 1, &x);
    /* the folded BatchNorm really is a power of two, and the shift on the 2^-6 grid */
    int checked = 0;
    for (int i = 0; i < m.params.n; i++) {
        const qkf_param *p = &m.params.p[i];
        size_t n = strlen(p->name);
        if (n < 10 || strcmp(p->name + n - 10, "_bn.weight") != 0)
            continue;
        const float *P = m.params.data;
        char base[QKF_MAX_NAME];
        snprintf(base, sizeof base, "%.*s", (int)(n - 7), p->name);
        char k[QKF_MAX_NAME + 16];
        snprintf(k, sizeof k, "%s.bias", base);
        int ib = qkf_params_find(&m.params, k);
        snprintf(k, sizeof k, "%s.running_mean", base);
        int im = qkf_params_find(&m.params, k);
        snprintf(k, sizeof k, "%s.running_var", base);
        int iv = qkf_params_find(&m.params, k);
        cr_assert(ib >= 0 && im >= 0 && iv >= 0, "%s", base);
        for (int c = 0; c < p->numel; c++) {
            float al, sh;
            qkf_bn_fold(1, P + p->offset + c, P + m.params.p[ib].offset + c,
                        P + m.params.p[im].offset + c, P + m.params.p[iv].offset + c, &al, &sh);
            int ex;
            cr_assert_eq(frexpf(al, &ex), 0.5f, "%s[%d]: alpha %g", base, c, (double)al);
            cr_assert_eq(ldexpf(sh, 6), roundf(ldexpf(sh, 6)), "%s[%d]: shift %g", base, c,
                         (double)sh);
            checked++;
        }
    }
    cr_assert_gt(checked, 100);
    check_rates(&m, x, B, name);
    agreement a;
    agree(&m, x, B, tb, &a);
    expect_exact(&a, name);
    qkf_free(x);
    qkf_model_free(&m);
}

Test(event, pow2_exact_cifar) { pow2_model("cifar", 0, 2, 700); }
Test(event, pow2_exact_cifar_qkca) { pow2_model("cifar_qkca", 0, 2, 800); }
Test(event, pow2_exact_cifar_tb_compat) { pow2_model("cifar", 1, 3, 900); }
Test(event, pow2_exact_imagenet) { pow2_model("imagenet", 0, 2, 1000); }
Test(event, pow2_exact_dvs128) { pow2_model("dvs128", 0, 2, 1100); }
Test(event, pow2_exact_channel_blocks) { pow2_model("cifar_wide", 0, 2, 1150); }
/* tb with more samples than a conv tile holds tokens (a tile keeps a position's samples); 70
 * samples of cifar_wide take ~90 s alone under ASan, so this test has more than the suite's 120 */
Test(event, pow2_exact_channel_blocks_tb_large_batch, .timeout = 400)
{
    pow2_model("cifar_wide", 1, 70, 1160);
}

/* ---- determinism ---------------------------------------------------------------------------- */

typedef struct {
    float *logits;
    uint8_t **spikes;
    qkf_stats st;
} run_result;

static void run_event(const qkf_model *m, const float *x, int B, int threads, run_result *r)
{
    qkf_set_threads(threads);
    qkf_sched *e = qkf_sched_create(m, B, QKF_SCHED_RECORD);
    cr_assert_not_null(e, "%s", qkf_last_error());
    const qkf_graph *g = qkf_sched_graph(e);
    r->logits = qkf_malloc((size_t)B * m->cfg.num_classes * sizeof(float));
    cr_assert_eq(qkf_sched_forward(e, x, B, r->logits, NULL), 0);
    r->spikes = qkf_calloc((size_t)g->n_lif, sizeof(uint8_t *));
    for (int l = 0; l < g->n_lif; l++) {
        size_t n = (size_t)(qkf_graph_lif_neurons(g, l) * m->cfg.T * B);
        r->spikes[l] = qkf_malloc(n);
        memcpy(r->spikes[l], qkf_sched_spikes(e, l), n);
    }
    const qkf_stats *s = qkf_sched_stats(e);
    r->st = *s;
    r->st.w = qkf_malloc((size_t)s->n_nodes * s->T * sizeof(qkf_work));
    r->st.wh = qkf_malloc((size_t)s->n_nodes * s->heads_max * s->T * sizeof(qkf_work));
    memcpy(r->st.w, s->w, (size_t)s->n_nodes * s->T * sizeof(qkf_work));
    memcpy(r->st.wh, s->wh, (size_t)s->n_nodes * s->heads_max * s->T * sizeof(qkf_work));
    r->st.node = NULL, r->st.node_seconds = NULL;
    qkf_sched_free(e);
    qkf_set_threads(1);
}

static void free_result(run_result *r, int n_lif)
{
    for (int l = 0; l < n_lif; l++)
        qkf_free(r->spikes[l]);
    qkf_free(r->spikes);
    qkf_free(r->logits);
    qkf_free(r->st.w);
    qkf_free(r->st.wh);
}

static void thread_independence(const char *name, int B, uint64_t seed)
{
    qkf_model m;
    float *x;
    make_model(&m, name, B, seed, 0, &x);
    run_result r1, r2;
    run_event(&m, x, B, 1, &r1);
    qkf_graph g;
    cr_assert_eq(qkf_graph_walk(&m.cfg, 0, &g), 0);
    /* 2 threads, and 3: shares of positions and tiles that do not divide evenly */
    for (int threads = 2; threads <= 3; threads++) {
        run_event(&m, x, B, threads, &r2);
        cr_expect_eq(
            memcmp(r1.logits, r2.logits, (size_t)B * m.cfg.num_classes * sizeof(float)), 0,
            "%s: logits depend on the thread count (%d threads)", name, threads);
        for (int l = 0; l < g.n_lif; l++)
            cr_expect_eq(memcmp(r1.spikes[l], r2.spikes[l],
                                (size_t)(qkf_graph_lif_neurons(&g, l) * m.cfg.T * B)),
                         0, "%s: spikes of %s depend on the thread count", name,
                         g.ops[g.lif_ops[l]].name);
        cr_expect_eq(
            memcmp(r1.st.w, r2.st.w, (size_t)r1.st.n_nodes * r1.st.T * sizeof(qkf_work)), 0,
            "%s: work counters depend on the thread count (%d threads)", name, threads);
        cr_expect_eq(memcmp(r1.st.wh, r2.st.wh,
                            (size_t)r1.st.n_nodes * r1.st.heads_max * r1.st.T * sizeof(qkf_work)),
                     0, "%s: per-head counters depend on the thread count", name);
        free_result(&r2, g.n_lif);
    }
    free_result(&r1, g.n_lif);
    qkf_graph_free(&g);
    qkf_free(x);
    qkf_model_free(&m);
}

Test(event, thread_count_independent_cifar) { thread_independence("cifar", 3, 1200); }
Test(event, thread_count_independent_dvs) { thread_independence("dvs128", 2, 1300); }
Test(event, thread_count_independent_qkca) { thread_independence("cifar_qkca", 2, 1400); }
/* block-major convs with several blocks: one thread lays a tile's rows out once for all its
 * blocks (conv_blocks reuse), two or three threads split the items otherwise */
Test(event, thread_count_independent_channel_blocks)
{
    thread_independence("cifar_wide", 2, 1450);
}

/* ---- statistics ------------------------------------------------------------------------------ */

/* The event engine's spike counts per node, step and head equal the dense engine's tally of the
 * same spikes; its accumulates follow from the events (1x1: spikes x Cout, which is also the
 * paper's estimate); the encoding MACs are the conv's FLOPs once per sample. */
static void statistics(const char *name, uint64_t seed)
{
    qkf_model m;
    float *x;
    int B = 2;
    make_model(&m, name, B, seed, 1, &x); /* power of two: identical spikes */
    qkf_sched *e = qkf_sched_create(&m, B, 0);
    qkf_dense *d = qkf_dense_create(&m, B, QKF_DENSE_KEEP_ALL | QKF_DENSE_WINO2);
    cr_assert(e && d, "%s", qkf_last_error());
    float *l = qkf_malloc((size_t)B * m.cfg.num_classes * sizeof(float));
    cr_assert_eq(qkf_sched_forward(e, x, B, l, NULL), 0);
    cr_assert_eq(qkf_dense_forward(d, x, B, l, NULL), 0);
    qkf_stats ds;
    cr_assert_eq(qkf_stats_init(&ds, qkf_dense_graph(d)), 0);
    cr_assert_eq(qkf_stats_add_dense(&ds, d, B), 0, "%s", qkf_last_error());
    const qkf_stats *es = qkf_sched_stats(e);
    const qkf_graph *g = qkf_sched_graph(e);
    cr_assert_eq(es->n_nodes, ds.n_nodes);
    int64_t acs = 0;
    for (int i = 0; i < es->n_nodes; i++) {
        const qkf_node_info *nd = &es->node[i];
        for (int t = 0; t < es->T; t++) {
            const qkf_work *a = &es->w[i * es->T + t], *b = &ds.w[i * ds.T + t];
            cr_expect_eq(a->in_events, b->in_events, "%s t=%d in_events", nd->name, t);
            for (int k = 0; k < 3; k++)
                cr_expect_eq(a->in_spikes[k], b->in_spikes[k], "%s t=%d in_spikes[%d]", nd->name, t,
                             k);
            cr_expect_eq(a->out_spikes, b->out_spikes, "%s t=%d out_spikes", nd->name, t);
            for (int h = 0; h < nd->heads; h++) {
                const qkf_work *ah = &es->wh[(i * es->heads_max + h) * es->T + t];
                const qkf_work *bh = &ds.wh[(i * ds.heads_max + h) * ds.T + t];
                cr_expect(ah->in_events == bh->in_events && ah->out_spikes == bh->out_spikes,
                          "%s head %d t=%d: %lld/%lld vs dense %lld/%lld", nd->name, h, t,
                          (long long)ah->in_events, (long long)ah->out_spikes,
                          (long long)bh->in_events, (long long)bh->out_spikes);
            }
        }
        qkf_work w = qkf_stats_node_total(es, i, -1);
        acs += w.acs;
        const qkf_op *op = &g->ops[nd->op];
        if (nd->kind == QKF_NODE_CONV && op->k == 1 && op->stride == 1) {
            cr_expect_eq(w.acs, w.in_spikes[0] * op->cout, "%s", nd->name);
            cr_expect_eq((double)w.acs, qkf_stats_est_sops(es, i, &w), "%s", nd->name);
        }
        if (nd->kind == QKF_NODE_CONV && op->k == 3) /* borders: fewer than the estimate */
            cr_expect_leq((double)w.acs, qkf_stats_est_sops(es, i, &w), "%s", nd->name);
        if (nd->kind == QKF_NODE_ENCODE)
            cr_expect_eq(w.macs, nd->flops * B, "%s", nd->name);
        if (nd->heads > 0) { /* heads add up to the node */
            qkf_work sum = {0, {0, 0, 0}, 0, 0, 0};
            for (int h = 0; h < nd->heads; h++) {
                qkf_work wh = qkf_stats_node_total(es, i, h);
                sum.acs += wh.acs, sum.out_spikes += wh.out_spikes;
            }
            cr_expect_eq(sum.acs, w.acs, "%s: heads' accumulates", nd->name);
            cr_expect_eq(sum.out_spikes, w.out_spikes, "%s: heads' spikes", nd->name);
        }
    }
    cr_expect_gt(acs, 0);
    cr_expect_eq(es->samples, B);
    qkf_stats_free(&ds);
    qkf_free(l);
    qkf_sched_free(e);
    qkf_dense_free(d);
    qkf_free(x);
    qkf_model_free(&m);
}

Test(event, statistics_match_the_dense_tally) { statistics("cifar", 1500); }
Test(event, statistics_match_the_dense_tally_qkca) { statistics("cifar_qkca", 1510); }
Test(event, statistics_match_the_dense_tally_dvs) { statistics("dvs128", 1520); }

/* Frames must hold event counts; the error names the element, and nothing is run. */
Test(event, frames_must_be_event_counts)
{
    qkf_model m;
    memset(&m, 0, sizeof m);
    small_cfg("dvs128", &m.cfg);
    cr_assert_eq(qkf_params_build(&m.cfg, &m.params), 0);
    qkf_params_init(&m.cfg, &m.params, 1);
    float *x = make_input(&m.cfg, 1, 5, 0);
    qkf_sched *e = qkf_sched_create(&m, 1, 0);
    cr_assert_not_null(e);
    float l[16];
    int64_t at = ((int64_t)2 * 2 + 1) * 32 * 32 + 3 * 32 + 4; /* [0, t=2, c=1, y=3, x=4] */
    x[at] = 0.5f;
    cr_expect_eq(qkf_sched_forward(e, x, 1, l, NULL), -1);
    cr_expect(strstr(qkf_last_error(), "[0,2,1,3,4]") != NULL, "%s", qkf_last_error());
    x[at] = -1.0f;
    cr_expect_eq(qkf_sched_forward(e, x, 1, l, NULL), -1);
    cr_expect_eq(qkf_sched_stats(e)->samples, 0);
    x[at] = 2.0f;
    cr_expect_eq(qkf_sched_forward(e, x, 1, l, NULL), 0, "%s", qkf_last_error());
    cr_expect_eq(qkf_sched_forward(e, x, 2, l, NULL), -1); /* batch above max */
    qkf_sched_free(e);
    qkf_free(x);
    qkf_model_free(&m);
}

/* ---- the command line --------------------------------------------------------------------------
 */

static char tmpdir[64];

static void cli_setup(void)
{
    setup();
    tmpdir_make(tmpdir, sizeof tmpdir, "event");
}

static void cli_teardown(void) { tmpdir_remove(tmpdir); }

static const char *tpath(const char *name) { return tmpdir_path(tmpdir, name); }

/* Runs a shell command; returns its exit status and its output (stdout + stderr) in out. */
static int sh(char *out, size_t cap, const char *fmt, ...) QKF_PRINTF(3, 4);
static int sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A small calibrated cifar checkpoint and an input file in tmpdir. */
static void write_model_and_input(void)
{
    qkf_model m;
    float *x;
    make_model(&m, "cifar", 2, 1600, 0, &x);
    cr_assert_eq(qkf_ckpt_save(tpath("w.h5"), &m), 0, "%s", qkf_last_error());
    qkf_h5out *o = qkf_h5out_open(tpath("x.h5"));
    cr_assert_not_null(o);
    int64_t shape[4] = {2, m.cfg.in_channels, m.cfg.img_size, m.cfg.img_size};
    cr_assert_eq(qkf_h5out_f32(o, "input", 4, shape, x), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    qkf_free(x);
    qkf_model_free(&m);
}

TestSuite(event_cli, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

Test(event_cli, sim_reports)
{
    write_model_and_input();
    static char out[1 << 16];
    int rc = sh(out, sizeof out, "%s sim --weights %s --input %s --report %s --threads 2",
                QKF_BINARY, tpath("w.h5"), tpath("x.h5"), tpath("r.json"));
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "stage1.0.tssa.q") && strstr(out, "energy"), "%s", out);
    FILE *f = fopen(tpath("r.json"), "r");
    cr_assert_not_null(f);
    static char js[1 << 20];
    size_t n = fread(js, 1, sizeof js - 1, f);
    js[n] = 0;
    fclose(f);
    cr_expect(js[0] == '{' && strstr(js, "\"nodes\"") && strstr(js, "\"est_sops\""), "%.200s", js);
    rc = sh(out, sizeof out, "%s sim --weights %s --input %s --mode dense --threads 1 --report %s",
            QKF_BINARY, tpath("w.h5"), tpath("x.h5"), tpath("r.csv"));
    cr_assert_eq(rc, 0, "%s", out);
    f = fopen(tpath("r.csv"), "r");
    cr_assert_not_null(f);
    char line[512];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_expect(strncmp(line, "node,", 5) == 0, "%s", line);
    fclose(f);
    cr_expect_eq(tmpdir_entries(tmpdir, NULL, 0), 4, "only the two inputs and two reports");
}

/* qkf bench event on a small checkpoint: the table of alternating rounds, the curve, and a
 * speedup that is a positive number; absurd options are one-line errors. Times are not
 * checked (speed is measured in BENCHMARKS.md, not asserted). */
Test(event_cli, bench_event_reports)
{
    write_model_and_input();
    static char out[1 << 16];
    int rc = sh(out, sizeof out,
                "%s bench event --weights %s --batch 2 --rates 0.2 --seconds 0.05 "
                "--threads 2",
                QKF_BINARY, tpath("w.h5"));
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "median of 5 alternating rounds"), "%s", out);
    cr_expect(strstr(out, "event time against firing rate"), "%s", out);
    cr_expect(strstr(out, "kernel path ") && strstr(out, "accumulate ceiling (measured"), "%s",
              out);
    const char *row = strstr(out, "\n     2 ");
    cr_assert_not_null(row, "no batch-2 row: %s", out);
    double dense_ms, event_ms, speedup;
    cr_assert_eq(sscanf(row, "%*d %lf %lf %lfx", &dense_ms, &event_ms, &speedup), 3, "%s", row);
    cr_expect(dense_ms > 0 && event_ms > 0 && speedup > 0, "%s", row);
    const char *bad[] = {"--seconds 0", "--batch 0", "--rates 0.9", "--threads 0", "--bogus"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = sh(out, sizeof out, "%s bench event --weights %s %s", QKF_BINARY, tpath("w.h5"),
                bad[i]);
        cr_expect_neq(rc, 0, "%s accepted", bad[i]);
        cr_expect(strncmp(out, "qkf bench event: ", 17) == 0 && strchr(out, '\n') &&
                      strchr(out, '\n')[1] == 0,
                  "%s: not one error line: %s", bad[i], out);
    }
}

/* The kernel path: --version names it (the best this CPU runs, or the one QKF_ISA forces); a
 * path QKF_ISA cannot have is one error line and a non-zero exit, before any command runs. */
Test(event_cli, kernel_path_reported_and_forced)
{
    static char out[4096];
    int rc = sh(out, sizeof out, "env -u QKF_ISA %s --version", QKF_BINARY);
    cr_assert_eq(rc, 0, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "kernel path %s (the best", qkf_isa_name(qkf_isa_current()));
    if (!getenv("QKF_ISA") || !*getenv("QKF_ISA"))
        cr_expect(strstr(out, want), "%s", out);
    FOR_EACH_ISA(p)
    {
        rc = sh(out, sizeof out, "QKF_ISA=%s %s --version", ISA_NAME(p), QKF_BINARY);
        snprintf(want, sizeof want, "kernel path %s (forced by QKF_ISA", ISA_NAME(p));
        cr_expect(rc == 0 && strstr(out, want), "%s: %s", ISA_NAME(p), out);
    }
    const char *bad[] = {"avx1024", "AVX2", "sse"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = sh(out, sizeof out, "QKF_ISA=%s %s info --help", bad[i], QKF_BINARY);
        cr_expect_neq(rc, 0, "%s accepted", bad[i]);
        cr_expect(strncmp(out, "qkf: QKF_ISA=", 13) == 0 && strchr(out, '\n') &&
                      strchr(out, '\n')[1] == 0,
                  "%s: not one error line: %s", bad[i], out);
    }
}

Test(event_cli, sim_bad_input_writes_nothing)
{
    write_model_and_input();
    static char out[1 << 16];
    int rc = sh(out, sizeof out, "%s sim --weights %s --input %s --report %s", QKF_BINARY,
                tpath("w.h5"), tpath("missing.h5"), tpath("r.json"));
    cr_expect_neq(rc, 0);
    cr_expect(strstr(out, "missing.h5") != NULL, "%s", out);
    cr_expect(strchr(out, '\n') == out + strlen(out) - 1, "not one line: %s", out);
    rc = sh(out, sizeof out, "%s sim --weights %s --input %s --report %s", QKF_BINARY,
            tpath("w.h5"), tpath("x.h5"), tpath("r.txt"));
    cr_expect_neq(rc, 0);
    cr_expect(strstr(out, "r.txt") != NULL, "%s", out);
    rc = sh(out, sizeof out, "%s sim --weights %s --data cifar10", QKF_BINARY, tpath("w.h5"));
    cr_expect_neq(rc, 0);
    cr_expect(strstr(out, "cifar10") != NULL, "%s", out);
    rc = sh(out, sizeof out, "%s sim --weights %s --data cifar10 --input %s", QKF_BINARY,
            tpath("w.h5"), tpath("x.h5"));
    cr_expect_neq(rc, 0);
    rc = sh(out, sizeof out, "%s sim --weights %s --input %s --mode fast", QKF_BINARY,
            tpath("w.h5"), tpath("x.h5"));
    cr_expect_neq(rc, 0);
    cr_expect_eq(tmpdir_entries(tmpdir, NULL, 0), 2, "nothing written");
}

Test(event_cli, infer_event_mode_and_cross_check)
{
    write_model_and_input();
    static char out[1 << 16];
    int rc =
        sh(out, sizeof out, "%s infer --weights %s --input %s --output %s --mode event --threads 2",
           QKF_BINARY, tpath("w.h5"), tpath("x.h5"), tpath("e.h5"));
    cr_assert_eq(rc, 0, "%s", out);
    rc = sh(out, sizeof out, "%s infer --weights %s --input %s --output %s --threads 1", QKF_BINARY,
            tpath("w.h5"), tpath("x.h5"), tpath("d.h5"));
    cr_assert_eq(rc, 0, "%s", out);
    float *le, *ld;
    int nd;
    int64_t s1[5], s2[5];
    cr_assert_eq(qkf_h5_read_f32(tpath("e.h5"), "logits", &le, &nd, s1), 0);
    cr_assert_eq(qkf_h5_read_f32(tpath("d.h5"), "logits", &ld, &nd, s2), 0);
    cr_expect_eq(s1[0] * s1[1], s2[0] * s2[1]);
    for (int i = 0; i < s1[0] * s1[1]; i++)
        cr_expect(fabsf(le[i] - ld[i]) < 1e-4f, "logit %d: %g vs %g", i, (double)le[i],
                  (double)ld[i]);
    int64_t *ce, *cd;
    cr_assert_eq(qkf_h5_read_i64(tpath("e.h5"), "spike_count/stage1.0.tssa.attn_lif", &ce, &nd, s1),
                 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5_read_i64(tpath("d.h5"), "spike_count/stage1.0.tssa.attn_lif", &cd, &nd, s2),
                 0);
    cr_expect_eq(ce[0], cd[0]);
    rc = sh(out, sizeof out,
            "%s infer --weights %s --input %s --output %s --cross-check --threads 1", QKF_BINARY,
            tpath("w.h5"), tpath("x.h5"), tpath("c.h5"));
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "engines agree") != NULL, "%s", out);
    qkf_free(le);
    qkf_free(ld);
    qkf_free(ce);
    qkf_free(cd);
}

/* --data: the test split of an image dataset (when the Debian fashion-mnist files are there). */
Test(event_cli, sim_on_a_dataset)
{
    if (access("/usr/share/datasets/fashion-mnist", R_OK) != 0)
        cr_skip_test("no /usr/share/datasets/fashion-mnist");
    qkf_model m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(qkf_config_preset("cifar", &m.cfg), 0);
    m.cfg.in_channels = 1, m.cfg.img_size = 28, m.cfg.embed_dims = 32, m.cfg.num_heads = 4;
    m.cfg.T = 2;
    cr_assert_eq(qkf_params_build(&m.cfg, &m.params), 0, "%s", qkf_last_error());
    qkf_params_init(&m.cfg, &m.params, 5);
    cr_assert_eq(qkf_ckpt_save(tpath("fm.h5"), &m), 0, "%s", qkf_last_error());
    qkf_model_free(&m);
    static char out[1 << 16];
    int rc = sh(out, sizeof out, "%s sim --weights %s --data fashion-mnist --limit 8 --report %s",
                QKF_BINARY, tpath("fm.h5"), tpath("fm.csv"));
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "accuracy:") && strstr(out, "of 8 test samples"), "%s", out);
    cr_expect_eq(access(tpath("fm.csv"), R_OK), 0);
}
