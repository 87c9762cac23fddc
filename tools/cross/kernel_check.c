/* A standalone check of the event kernels (kernels/spike.c, kernels/spike_node.c) against their
 * _ref twins on every kernel path this CPU runs, bit for bit: the Criterion tests' kernel cases
 * without Criterion, HDF5, OpenBLAS or OpenMP, so that it builds with a bare cross compiler and
 * runs under qemu-user (tools/cross/aarch64.sh). Prints one line per path and exits non-zero on
 * the first difference. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/base.h"
#include "../../kernels/isa.h"
#include "../../kernels/spike.h"
#include "../../kernels/spike_node.h"

static int failures;

#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "kernel_check %s: ", qkf_isa_name(qkf_isa_current()));             \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fprintf(stderr, "\n");                                                               \
            failures++;                                                                          \
            return;                                                                              \
        }                                                                                        \
    } while (0)

static void gather(qkf_rng *r)
{
    enum { CIN = 40, KK = 9, MAXW = 300 };
    static float w[CIN * KK * MAXW], init[MAXW], a[MAXW], b[MAXW];
    static uint16_t ch[KK][CIN], cnt[KK][CIN];
    for (int i = 0; i < CIN * KK * MAXW; i++)
        w[i] = qkf_rng_normal(r);
    for (int i = 0; i < MAXW; i++)
        init[i] = qkf_rng_normal(r);
    for (int width = 1; width <= MAXW; width += (width < 40 ? 1 : 13)) {
        qkf_spike_seg seg[KK];
        int ns = (int)(qkf_rng_u64(r) % (KK + 1)), counts = width % 2;
        for (int s = 0; s < ns; s++) {
            int n = 0;
            for (int c = 0; c < CIN; c++)
                if (qkf_rng_uniform(r) < 0.3f)
                    ch[s][n] = (uint16_t)c, cnt[s][n++] = (uint16_t)(1 + qkf_rng_u64(r) % 3);
            seg[s] = (qkf_spike_seg){ch[s], counts ? cnt[s] : NULL, n, s * width};
        }
        const float *in = width % 3 ? init : NULL;
        int64_t ra = qkf_spike_gather(a, in, w, KK * width, seg, ns, width);
        int64_t rb = qkf_spike_gather_ref(b, in, w, KK * width, seg, ns, width);
        CHECK(ra == rb && !memcmp(a, b, (size_t)width * sizeof(float)), "gather width %d", width);
    }
}

static void gather_rows(qkf_rng *r)
{
    enum { CIN = 50, ROWS = 9, W = 136 };
    static float w[CIN * W], a[ROWS * W], b[ROWS * W];
    static uint16_t ch[ROWS][CIN], cnt[ROWS][CIN];
    for (int i = 0; i < CIN * W; i++)
        w[i] = qkf_rng_normal(r);
    const int widths[] = {16, 32, 40, 64, 96, 128, 8, 24, 136, 4};
    for (int wi = 0; wi < (int)(sizeof widths / sizeof *widths); wi++)
        for (int mode = 0; mode < 4; mode++) {
            int width = widths[wi], counts = mode % 2, nrow = 1 + (int)(qkf_rng_u64(r) % ROWS);
            qkf_spike_row ra[ROWS], rb[ROWS];
            for (int k = 0; k < nrow; k++) {
                int n = 0, n1;
                uint16_t many[CIN];
                for (int c = 0; c < CIN; c++) {
                    many[c] = qkf_rng_uniform(r) < 0.4f
                                  ? (uint16_t)(qkf_rng_uniform(r) < 0.6f ? 1 : 2 + qkf_rng_u64(r) % 3)
                                  : 0;
                    if (many[c] == 1)
                        ch[k][n] = (uint16_t)c, cnt[k][n++] = 1;
                }
                n1 = n;
                for (int c = 0; c < CIN; c++)
                    if (many[c] > 1)
                        ch[k][n] = (uint16_t)c, cnt[k][n++] = many[c];
                for (int j = 0; j < width; j++)
                    a[k * W + j] = b[k * W + j] = (float)(k + j) * 0.25f;
                qkf_spike_seg sg = {ch[k], counts ? cnt[k] : NULL, n, 0};
                ra[k] = (qkf_spike_row){a + k * W, mode / 2 ? a + k * W : NULL, sg, n1};
                rb[k] = (qkf_spike_row){b + k * W, mode / 2 ? b + k * W : NULL, sg, n1};
            }
            int64_t sa = qkf_spike_gather_rows(ra, nrow, 0, w, width, width);
            int64_t sb = qkf_spike_gather_rows_ref(rb, nrow, 0, w, width, width);
            CHECK(sa == sb, "gather_rows width %d mode %d: spikes", width, mode);
            for (int k = 0; k < nrow; k++)
                CHECK(!memcmp(a + k * W, b + k * W, (size_t)width * sizeof(float)),
                      "gather_rows width %d mode %d row %d", width, mode, k);
        }
}

/* Counted events round once (fmaf) where a sum rounded to double, then to float, would not
 * (tests/test_event.c gather_counts_round_once_reference has the construction): a + c * x with
 * c * x half a float ulp of a times 1 +- 2^-30 or 2^-32; and power-of-two counts whose float
 * product overflows while the fmaf does not. Against fmaf itself, and against the reference. */
static void gather_hard(qkf_rng *r)
{
    enum { W = 67 };
    static const unsigned cs[] = {1025, 32767, 641, 65535};
    static const double xs[] = {1047553, 32769, 6700417, 65537};
    static const int sh[] = {54, 54, 56, 56};
    static float w[W], init[W], a[W], b[W];
    int hard = 0;
    for (int t = 0; t < 40; t++) {
        int ci = t % 4, special = t % 10 == 9;
        unsigned c = cs[ci];
        for (int j = 0; j < W; j++) {
            int e = (int)(qkf_rng_u64(r) % 41) - 20;
            float sg = qkf_rng_u64(r) % 2 ? -1.0f : 1.0f;
            init[j] = sg * ldexpf(1.0f + (float)(qkf_rng_u64(r) % (1u << 23)) / 8388608.0f, e);
            w[j] = sg * ldexpf((float)xs[ci], e - sh[ci]);
            if (qkf_rng_u64(r) % 4 == 0)
                w[j] = -w[j];
            hard += (float)((double)init[j] + (double)c * (double)w[j]) !=
                    fmaf((float)c, w[j], init[j]);
        }
        if (special) {
            c = t % 20 == 9 ? 2 : 4;
            for (int j = 0; j < W; j++) {
                init[j] = j % 2 ? 1.0f : -FLT_MAX;
                w[j] = j % 2 ? 3.0f : ldexpf(1.5f, 127) / (float)(c / 2);
            }
        }
        uint16_t ch = 0, cn = (uint16_t)c;
        qkf_spike_seg seg = {&ch, &cn, 1, 0};
        qkf_spike_gather(a, init, w, W, &seg, 1, W);
        qkf_spike_gather_ref(b, init, w, W, &seg, 1, W);
        for (int j = 0; j < W; j++)
            CHECK(!memcmp(&a[j], &b[j], sizeof a[j]) && a[j] == fmaf((float)c, w[j], init[j]),
                  "gather count %u: %a + %u * %a = %a, fmaf %a", c, (double)init[j], c,
                  (double)w[j], (double)a[j], (double)b[j]);
    }
    CHECK(hard > 200, "gather_hard: only %d hard cases", hard);
}

static void rows_and_lists(qkf_rng *r)
{
    enum { MAXC = 200, R = 5 };
    static float x[R][MAXC], va[MAXC], vb[MAXC], cntf[MAXC];
    static uint16_t ca[MAXC + 8], cb[MAXC + 8], ma[R][MAXC / 16 + 1], mb[R][MAXC / 16 + 1];
    static uint16_t acc[(MAXC + 31) / 32 * 32], l0[MAXC], n0[MAXC], l1[MAXC], n1[MAXC];
    static uint16_t mch[MAXC], mcn[MAXC], rch[MAXC], rcn[MAXC];
    const int Cs[] = {1, 5, 8, 9, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 100, 128, 129, 200};
    for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++) {
        int C = Cs[ci];
        for (int k = 0; k < R; k++)
            for (int c = 0; c < C; c++)
                x[k][c] = qkf_rng_uniform(r) < 0.1f ? 2.0f : 2.0f * qkf_rng_normal(r) + 0.5f;
        for (int c = 0; c < C; c++)
            va[c] = vb[c] = qkf_rng_uniform(r);
        /* LIF rows */
        for (int k = 0; k < R; k++) {
            int na = qkf_spike_lif_row(ca, va, x[k], C, 1.0f);
            int nb = qkf_spike_lif_row_ref(cb, vb, x[k], C, 1.0f);
            CHECK(na == nb && !memcmp(ca, cb, (size_t)na * 2) && !memcmp(va, vb, (size_t)C * 4),
                  "lif_row C %d step %d", C, k);
        }
        /* LIF sequences into masks, and their event lists */
        const float *xp[R];
        uint16_t *pa[R], *pb[R];
        for (int k = 0; k < R; k++)
            xp[k] = x[k], pa[k] = ma[k], pb[k] = mb[k];
        for (int from_zero = 0; from_zero < 2; from_zero++) {
            qkf_spike_lif_seq(pa, xp, R, C, 1.0f, from_zero ? NULL : va);
            qkf_spike_lif_seq_ref(pb, xp, R, C, 1.0f, from_zero ? NULL : vb);
            for (int k = 0; k < R; k++) {
                CHECK(!memcmp(ma[k], mb[k], (size_t)(C + 15) / 16 * 2), "lif_seq C %d", C);
                int na = qkf_spike_mask_emit(ca, ma[k], C), nb = qkf_spike_mask_emit_ref(cb, mb[k], C);
                CHECK(na == nb && !memcmp(ca, cb, (size_t)na * 2), "mask_emit C %d", C);
                int c = (int)(qkf_rng_u64(r) % (C + 2)), e1[16], e2[16];
                CHECK(qkf_spike_count_below(ca, na, c) == qkf_spike_count_below_ref(cb, nb, c),
                      "count_below C %d", C);
                int d = 1 + (int)(qkf_rng_u64(r) % 16), heads = (C + d - 1) / d;
                heads = heads > 16 ? 16 : heads;
                qkf_spike_head_ends(e1, ca, na, d, heads);
                qkf_spike_head_ends_ref(e2, cb, nb, d, heads);
                CHECK(!memcmp(e1, e2, (size_t)heads * sizeof(int)), "head_ends C %d", C);
            }
            CHECK(from_zero || !memcmp(va, vb, (size_t)C * 4), "lif_seq membranes C %d", C);
        }
        /* the attention OR neuron: exactly its spikes stored */
        for (int c = 0; c < C; c++)
            cntf[c] = (float)(qkf_rng_u64(r) % 3) * (qkf_rng_uniform(r) < 0.5f ? 1.0f : 0.49f);
        memset(ca, 0x5A, sizeof ca), memset(cb, 0x5A, sizeof cb);
        int na = qkf_spike_attn_row(ca, cntf, C), nb = qkf_spike_attn_row_ref(cb, cntf, C);
        CHECK(na == nb && !memcmp(ca, cb, sizeof ca), "attn_row C %d", C);
        /* residual merge through a count row */
        int k0 = 0, k1 = 0;
        for (int c = 0; c < C; c++) {
            if (qkf_rng_uniform(r) < 0.3f)
                l0[k0] = (uint16_t)c, n0[k0++] = (uint16_t)(1 + qkf_rng_u64(r) % 3);
            if (qkf_rng_uniform(r) < 0.3f)
                l1[k1] = (uint16_t)c, n1[k1++] = (uint16_t)(1 + qkf_rng_u64(r) % 3);
        }
        int oa = -1, ob = -1;
        const uint16_t *c1 = ci % 2 ? n1 : NULL; /* the second list with counts or not */
        int ga = qkf_spike_merge_dense(mch, mcn, &oa, acc, C, l0, n0, k0, l1, c1, k1);
        int gb = qkf_spike_merge_dense_ref(rch, rcn, &ob, acc, C, l0, n0, k0, l1, c1, k1);
        CHECK(ga == gb && oa == ob && !memcmp(mch, rch, (size_t)ga * 2) &&
                  !memcmp(mcn, rcn, (size_t)ga * 2),
              "merge_dense C %d", C);
        for (int c = 0; c < (C + 31) / 32 * 32; c++)
            CHECK(acc[c] == 0, "merge_dense C %d: count row not cleared", C);
    }
}

int main(void)
{
    if (qkf_isa_init() < 0) {
        fprintf(stderr, "kernel_check: %s\n", qkf_last_error());
        return 2;
    }
    int paths = 0;
    for (int p = 0; p < QKF_ISA_COUNT; p++) {
        if (!qkf_isa_supported((qkf_isa)p) || qkf_isa_set((qkf_isa)p) < 0)
            continue;
        int before = failures;
        qkf_rng r;
        qkf_rng_seed(&r, 1234);
        gather(&r);
        gather_rows(&r);
        gather_hard(&r);
        rows_and_lists(&r);
        printf("kernel_check: %s path: %s\n", qkf_isa_name((qkf_isa)p),
               failures == before ? "every kernel equals its reference" : "DIFFERS");
        paths++;
    }
    return failures || paths == 0 ? 1 : 0;
}
