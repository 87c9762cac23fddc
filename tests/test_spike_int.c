/* The integer event kernels (kernels/spike_int.c) against their references, bit for bit, on every
 * kernel path this CPU and build can run (kernels/isa.h: each test loops over qkf_isa_set):
 * the int16 and int32 row gathers (wrapping sums, counts, rows in pairs and alone, widths around
 * every vector and pass boundary), the integer LIF (narrow and wide layers, wrap and saturate,
 * both comparators, both resets, inputs on the threshold), integer max pooling. */
#include <criterion/criterion.h>

#include <string.h>

#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../kernels/spike_int.h"

static void restore_isa(void)
{
    qkf_isa_set(qkf_isa_active());
}

TestSuite(spike_int, .timeout = 120);

/* Every path this machine runs, then back to the default. */
#define FOR_EACH_ISA(isa)                                                                        \
    for (int isa = 0; isa < QKF_ISA_COUNT; isa++)                                                \
        if (qkf_isa_supported((qkf_isa)isa) && qkf_isa_set((qkf_isa)isa) == 0)

static uint32_t rnd(qkf_rng *r)
{
    return (uint32_t)qkf_rng_u64(r);
}

/* Random event lists over cin channels for nrow rows (ascending channels, density d; with counts
 * the single events first, as the engine lists them), into ch/cnt at C slots per row. */
static void make_rows(qkf_rng *r, qkf_spike_row *rows, int nrow, uint16_t *ch, uint16_t *cnt,
                      int cin, float d, int counts, int n1_zero)
{
    for (int i = 0; i < nrow; i++) {
        uint16_t *c = ch + (int64_t)i * cin, *k = cnt + (int64_t)i * cin;
        int n = 0;
        for (int x = 0; x < cin; x++)
            if (qkf_rng_uniform(r) < d)
                c[n++] = (uint16_t)x;
        int n1 = 0;
        if (counts) { /* a random prefix of ones, then counts >= 2 (some large: wraps) */
            n1 = n ? (int)(rnd(r) % (unsigned)(n + 1)) : 0;
            for (int x = 0; x < n; x++)
                k[x] = x < n1 ? 1 : (uint16_t)(rnd(r) % 8 == 0 ? 60000 + rnd(r) % 5000
                                                                : 2 + rnd(r) % 4);
        }
        rows[i].seg.ch = c;
        rows[i].seg.cnt = counts ? k : NULL;
        rows[i].seg.n = n;
        rows[i].seg.base = 0;
        rows[i].n1 = n1_zero ? 0 : n1;
    }
}

Test(spike_int, gathers_match_reference_on_every_path, .fini = restore_isa)
{
    enum { CIN = 70, MAXW = 300, NROW = 7, PITCH = 320 };
    static int16_t w16[CIN * MAXW + 64];
    static int32_t w32[CIN * MAXW + 64];
    static int32_t outa[NROW][PITCH], outb[NROW][PITCH], init[NROW][PITCH];
    static uint16_t ch[NROW * CIN], cnt[NROW * CIN];
    qkf_spike_row ra[NROW], rb[NROW];
    qkf_rng r;
    qkf_rng_seed(&r, 5);
    for (int i = 0; i < CIN * MAXW + 64; i++) {
        w16[i] = (int16_t)rnd(&r);
        w32[i] = (int32_t)rnd(&r);
    }
    /* every whole number of vectors 1..8 of 32 int16 or 16 int32 lanes (the paths' whole-width
     * copies), and widths around them (the masked last vector, passes) */
    const int widths[] = {1,   7,   12,  15,  16,  17,  31,  32,  33,  48,  64,  65,  80, 96,
                          100, 112, 128, 129, 160, 192, 224, 255, 256, 257, 300};
    int runs = 0;
    FOR_EACH_ISA(isa)
    {
        for (int wi = 0; wi < (int)(sizeof widths / sizeof *widths); wi++)
            for (int mode = 0; mode < 8; mode++) {
                int width = widths[wi], counts = mode & 1, with_init = mode >> 1 & 1,
                    n1z = mode >> 2 & 1;
                int nrow = 1 + (int)(rnd(&r) % NROW);
                float d = (mode % 3 == 0) ? 0.02f : 0.3f;
                int64_t off = (int64_t)(rnd(&r) % 8); /* the row's column offset */
                make_rows(&r, ra, nrow, ch, cnt, CIN, d, counts, n1z);
                int32_t stride = width;
                for (int elem = 0; elem < 2; elem++) {
                    for (int i = 0; i < nrow; i++) {
                        for (int j = 0; j < PITCH; j++)
                            init[i][j] = (int32_t)rnd(&r);
                        memset(outa[i], 0x5A, sizeof outa[i]);
                        memset(outb[i], 0x5A, sizeof outb[i]);
                        ra[i].out = (float *)(void *)outa[i];
                        ra[i].init = with_init ? (const float *)(const void *)init[i] : NULL;
                        rb[i] = ra[i];
                        rb[i].out = (float *)(void *)outb[i];
                    }
                    if (with_init && nrow > 1) /* a row accumulating in place */
                        ra[1].init = ra[1].out, rb[1].init = rb[1].out,
                        memcpy(outa[1], init[1], sizeof outa[1]),
                        memcpy(outb[1], init[1], sizeof outb[1]);
                    int64_t sa, sb;
                    if (elem == 0) {
                        sa = qkf_spike_gather_rows_i16(ra, nrow, off, w16, stride, width);
                        sb = qkf_spike_gather_rows_i16_ref(rb, nrow, off, w16, stride, width);
                    } else {
                        sa = qkf_spike_gather_rows_i32(ra, nrow, off, w32, stride, width);
                        sb = qkf_spike_gather_rows_i32_ref(rb, nrow, off, w32, stride, width);
                    }
                    cr_assert_eq(sa, sb, "%s width %d mode %d: spikes %lld vs %lld",
                                 qkf_isa_name((qkf_isa)isa), width, mode, (long long)sa,
                                 (long long)sb);
                    for (int i = 0; i < nrow; i++)
                        cr_assert_eq(memcmp(outa[i], outb[i], sizeof outa[i]), 0,
                                     "%s int%d width %d mode %d row %d differs (or wrote outside "
                                     "its columns)",
                                     qkf_isa_name((qkf_isa)isa), elem ? 32 : 16, width, mode, i);
                }
            }
        runs++;
    }
    cr_assert_geq(runs, 1);
}

/* The int16 gather is the low 16 bits of the int32 gather on the same weights (the fast path's
 * premise, spike_int.h). */
Test(spike_int, int16_sum_is_int32_sum_mod_2_16, .fini = restore_isa)
{
    enum { CIN = 50, W = 64 };
    static int16_t w16[CIN * W];
    static int32_t w32[CIN * W];
    int16_t o16[2][W];
    int32_t o32[2][W];
    uint16_t ch[2 * CIN], cnt[2 * CIN];
    qkf_spike_row r16[2], r32[2];
    qkf_rng r;
    qkf_rng_seed(&r, 9);
    for (int i = 0; i < CIN * W; i++) {
        w32[i] = (int32_t)(rnd(&r) % 200001) - 100000; /* beyond int16 */
        w16[i] = (int16_t)(uint16_t)(uint32_t)w32[i];
    }
    FOR_EACH_ISA(isa)
    {
        make_rows(&r, r16, 2, ch, cnt, CIN, 0.4f, 1, 0);
        for (int i = 0; i < 2; i++) {
            r32[i] = r16[i];
            r16[i].out = (float *)(void *)o16[i], r16[i].init = NULL;
            r32[i].out = (float *)(void *)o32[i], r32[i].init = NULL;
        }
        qkf_spike_gather_rows_i16(r16, 2, 0, w16, W, W);
        qkf_spike_gather_rows_i32(r32, 2, 0, w32, W, W);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < W; j++)
                cr_assert_eq(o16[i][j], (int16_t)(uint16_t)(uint32_t)o32[i][j], "%s row %d col %d",
                             qkf_isa_name((qkf_isa)isa), i, j);
    }
}

/* The mantissa gather against its reference on every path: mantissas within +-wmax for wmax from
 * 1 to 32767 (rows whose sums fit int16 and rows that do not: long lists, large counts), a shift
 * per column, counts, init, in place, widths around every vector and pass boundary. */
Test(spike_int, mantissa_gather_matches_reference_on_every_path, .fini = restore_isa)
{
    enum { CIN = 70, MAXW = 300, NROW = 7, PITCH = 320 };
    static int16_t wm[CIN * MAXW + 64];
    static int32_t outa[NROW][PITCH], outb[NROW][PITCH], init[NROW][PITCH], sh[PITCH];
    static uint16_t ch[NROW * CIN], cnt[NROW * CIN];
    qkf_spike_row ra[NROW], rb[NROW];
    qkf_rng r;
    qkf_rng_seed(&r, 15);
    const int widths[] = {1,   7,   15,  16,  17,  31,  32,  33,  48,  64,  65,  96, 100,
                          128, 129, 160, 192, 224, 255, 256, 257, 300};
    const int wmaxes[] = {1, 127, 1000, 32767};
    int runs = 0;
    FOR_EACH_ISA(isa)
    {
        for (int wi = 0; wi < (int)(sizeof widths / sizeof *widths); wi++)
            for (int mode = 0; mode < 16; mode++) {
                int width = widths[wi], counts = mode & 1, with_init = mode >> 1 & 1,
                    n1z = mode >> 2 & 1, uniform = mode >> 3 & 1;
                int wmax = wmaxes[rnd(&r) % 4];
                for (int i = 0; i < CIN * MAXW + 64; i++) /* some at +-wmax exactly */
                    wm[i] = (int16_t)(rnd(&r) % 8 == 0 ? (rnd(&r) % 2 ? wmax : -wmax)
                                                       : (int)(rnd(&r) % (2u * wmax + 1)) - wmax);
                int s0 = (int)(rnd(&r) % 32);
                for (int j = 0; j < PITCH; j++)
                    sh[j] = uniform ? s0 : (int32_t)(rnd(&r) % 32);
                int nrow = 1 + (int)(rnd(&r) % NROW);
                float d = (mode % 3 == 0) ? 0.05f : mode % 3 == 1 ? 0.3f : 0.9f;
                int64_t off = (int64_t)(rnd(&r) % 8);
                make_rows(&r, ra, nrow, ch, cnt, CIN, d, counts, n1z);
                for (int i = 0; i < nrow; i++) {
                    for (int j = 0; j < PITCH; j++)
                        init[i][j] = (int32_t)rnd(&r);
                    memset(outa[i], 0x5A, sizeof outa[i]);
                    memset(outb[i], 0x5A, sizeof outb[i]);
                    ra[i].out = (float *)(void *)outa[i];
                    ra[i].init = with_init ? (const float *)(const void *)init[i] : NULL;
                    rb[i] = ra[i];
                    rb[i].out = (float *)(void *)outb[i];
                }
                if (with_init && nrow > 1) /* a row accumulating in place */
                    ra[1].init = ra[1].out, rb[1].init = rb[1].out,
                    memcpy(outa[1], init[1], sizeof outa[1]),
                    memcpy(outb[1], init[1], sizeof outb[1]);
                int64_t sa = qkf_spike_gather_rows_m16(ra, nrow, off, wm, width, width, sh, wmax);
                int64_t sb =
                    qkf_spike_gather_rows_m16_ref(rb, nrow, off, wm, width, width, sh, wmax);
                cr_assert_eq(sa, sb, "%s width %d mode %d wmax %d: spikes %lld vs %lld",
                             qkf_isa_name((qkf_isa)isa), width, mode, wmax, (long long)sa,
                             (long long)sb);
                for (int i = 0; i < nrow; i++)
                    cr_assert_eq(memcmp(outa[i], outb[i], sizeof outa[i]), 0,
                                 "%s width %d mode %d wmax %d row %d differs (or wrote outside "
                                 "its columns)",
                                 qkf_isa_name((qkf_isa)isa), width, mode, wmax, i);
            }
        runs++;
    }
    cr_assert_geq(runs, 1);
}

/* The mantissa gather on m with shifts s is the int32 gather on W = m << s (the engine's premise
 * for convolutions that pool), including sums far beyond int16. */
Test(spike_int, mantissa_gather_is_int32_gather, .fini = restore_isa)
{
    enum { CIN = 300, W = 96 };
    static int16_t wm[CIN * W];
    static int32_t w32[CIN * W], o16[2][W], o32[2][W], sh[W];
    static uint16_t ch[2 * CIN], cnt[2 * CIN];
    qkf_spike_row rm[2], r32[2];
    qkf_rng r;
    qkf_rng_seed(&r, 19);
    for (int j = 0; j < W; j++)
        sh[j] = (int32_t)(rnd(&r) % 6);
    for (int i = 0; i < CIN * W; i++) {
        wm[i] = (int16_t)((int)(rnd(&r) % 255) - 127);
        w32[i] = (int32_t)((uint32_t)(int32_t)wm[i] << sh[i % W]);
    }
    FOR_EACH_ISA(isa)
    {
        for (int k = 0; k < 4; k++) {
            make_rows(&r, rm, 2, ch, cnt, CIN, k < 2 ? 0.1f : 0.95f, k & 1, 0);
            for (int i = 0; i < 2; i++) {
                r32[i] = rm[i];
                rm[i].out = (float *)(void *)o16[i], rm[i].init = NULL;
                r32[i].out = (float *)(void *)o32[i], r32[i].init = NULL;
            }
            qkf_spike_gather_rows_m16(rm, 2, 0, wm, W, W, sh, 127);
            qkf_spike_gather_rows_i32(r32, 2, 0, w32, W, W);
            for (int i = 0; i < 2; i++)
                cr_assert_eq(memcmp(o16[i], o32[i], sizeof o16[i]), 0, "%s case %d row %d",
                             qkf_isa_name((qkf_isa)isa), k, i);
        }
    }
}

/* A random integer LIF layer: narrow (Loihi-like, Speck-like) or wide (32-bit registers that
 * need int64), wrap or saturate, either comparator and reset. */
static void random_lif(qkf_rng *r, qkf_ilif *p, int32_t *bias, int32_t *theta, int C, int kind)
{
    memset(p, 0, sizeof *p);
    p->bias = bias, p->theta = theta;
    p->current_bits = kind == 2 ? 32 : 8 + (int)(rnd(r) % 9); /* 8..16 */
    p->current_wrap = (int)(rnd(r) % 2);
    p->current_shift = kind == 2 ? (int)(rnd(r) % 3) : (int)(rnd(r) % 7);
    p->membrane_bits = kind == 2 ? 32 : 16 + (int)(rnd(r) % 9); /* 16..24 */
    p->membrane_wrap = (int)(rnd(r) % 2);
    p->decay_bits = kind == 1 ? 0 : 12;
    p->decay_keep = kind == 1 ? 1 : (rnd(r) % 2 ? 2048 : (int32_t)(rnd(r) % 4097));
    p->threshold_ge = (int)(rnd(r) % 2);
    p->reset_subtract = (int)(rnd(r) % 2);
    int64_t vmax = ((int64_t)1 << (p->membrane_bits - 1)) - 1;
    for (int c = 0; c < C; c++) {
        theta[c] = (int32_t)(1 + rnd(r) % (uint32_t)(vmax / 2));
        bias[c] = (int32_t)(rnd(r) % 2001) - 1000;
    }
    qkf_spike_ilif_prepare(p, C);
}

Test(spike_int, lif_matches_reference_on_every_path, .fini = restore_isa)
{
    enum { MAXC = 200, R = 6 };
    static int32_t x32[R][MAXC], v0[MAXC], va[MAXC], vb[MAXC], bias[MAXC], theta[MAXC];
    static int16_t x16[R][MAXC];
    static uint16_t ma[R][(MAXC + 15) / 16], mb[R][(MAXC + 15) / 16];
    qkf_rng r;
    qkf_rng_seed(&r, 13);
    const int Cs[] = {1, 8, 15, 16, 17, 40, 63, 64, 65, 96, 128, 130, 200};
    int narrow_seen = 0, wide_seen = 0, hfree_seen[2] = {0, 0}, hbound_seen = 0;
    FOR_EACH_ISA(isa)
    {
        for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++)
            for (int mode = 0; mode < 12; mode++) {
                int C = Cs[ci], kind = mode % 3, from_zero = mode / 3 % 2, in16 = mode / 6;
                qkf_ilif p;
                random_lif(&r, &p, bias, theta, C, kind);
                narrow_seen |= p.narrow, wide_seen |= !p.narrow;
                if (p.hfree)
                    hfree_seen[p.reset_subtract]++;
                hbound_seen += p.narrow && !p.hfree;
                int nr = 1 + (int)(rnd(&r) % R);
                for (int k = 0; k < nr; k++)
                    for (int c = 0; c < C; c++) {
                        uint32_t u = rnd(&r) % 10;
                        int32_t s = u == 0   ? 0
                                    : u == 1 ? (int32_t)rnd(&r) /* anything: wraps, saturates */
                                             : (int32_t)(rnd(&r) % 4001) - 1500;
                        x32[k][c] = s;
                        x16[k][c] = (int16_t)(uint16_t)(uint32_t)s;
                    }
                /* a membrane exactly on the threshold after the step: bias = theta, no input */
                if (C > 3)
                    x32[0][3] = 0, x16[0][3] = 0;
                for (int c = 0; c < C; c++) {
                    int64_t vm = ((int64_t)1 << (p.membrane_bits - 1)) - 1;
                    v0[c] = from_zero ? 0 : (int32_t)((int64_t)(rnd(&r) % (uint64_t)(2 * vm)) - vm);
                }
                const int32_t *xp32[R];
                const int16_t *xp16[R];
                uint16_t *pa[R], *pb[R];
                for (int k = 0; k < nr; k++) {
                    xp32[k] = x32[k], xp16[k] = x16[k];
                    pa[k] = ma[k], pb[k] = mb[k];
                    memset(ma[k], 0xAB, sizeof ma[k]);
                    memset(mb[k], 0xCD, sizeof mb[k]);
                }
                memcpy(va, v0, sizeof va);
                memcpy(vb, v0, sizeof vb);
                if (in16 && p.current_wrap && p.current_bits <= 16) {
                    qkf_spike_ilif_seq_i16(pa, xp16, nr, C, &p, from_zero ? NULL : va);
                    qkf_spike_ilif_seq_i16_ref(pb, xp16, nr, C, &p, from_zero ? NULL : vb);
                    /* and the int32 reference on the full sums: the same (A uses the low bits) */
                    uint16_t mc[R][(MAXC + 15) / 16], *pc[R];
                    int32_t vc[MAXC];
                    memcpy(vc, v0, sizeof vc);
                    for (int k = 0; k < nr; k++)
                        pc[k] = mc[k];
                    qkf_spike_ilif_seq_i32_ref(pc, xp32, nr, C, &p, from_zero ? NULL : vc);
                    for (int k = 0; k < nr; k++)
                        cr_assert_eq(memcmp(mc[k], mb[k], (size_t)(C + 15) / 16 * 2), 0,
                                     "int16 sums give other spikes than int32 sums");
                } else {
                    qkf_spike_ilif_seq_i32(pa, xp32, nr, C, &p, from_zero ? NULL : va);
                    qkf_spike_ilif_seq_i32_ref(pb, xp32, nr, C, &p, from_zero ? NULL : vb);
                }
                int words = (C + 15) / 16;
                for (int k = 0; k < nr; k++) {
                    cr_assert_eq(memcmp(ma[k], mb[k], (size_t)words * sizeof(uint16_t)), 0,
                                 "%s C %d mode %d narrow %d step %d: masks differ",
                                 qkf_isa_name((qkf_isa)isa), C, mode, p.narrow, k);
                    if (C % 16)
                        cr_assert_eq(mb[k][words - 1] >> (C % 16), 0, "bits past C are set");
                }
                if (!from_zero)
                    cr_assert_eq(memcmp(va, vb, (size_t)C * sizeof(int32_t)), 0,
                                 "%s C %d mode %d: membranes differ", qkf_isa_name((qkf_isa)isa),
                                 C, mode);
            }
    }
    cr_assert(narrow_seen && wide_seen, "both arithmetic widths were exercised");
    cr_assert(hfree_seen[0] && hfree_seen[1] && hbound_seen,
              "narrow layers whose membrane reduction never binds (both resets) and others");
}

/* The step itself on hand-computed cases: QKFormer's tau = 2 LIF as Loihi computes it (12-bit
 * decay, keep 2048: V / 2 truncated toward zero), saturation, wrap, the comparators and resets. */
Test(spike_int, lif_step_by_hand)
{
    int32_t bias[1] = {0}, theta[1] = {100};
    qkf_ilif p = {bias, theta, 16, 1, 6, 24, 0, 12, 2048, 1, 0, 0, 0};
    qkf_spike_ilif_prepare(&p, 1);
    cr_assert(p.narrow);
    int32_t v = -7, h;
    /* decay(-7) = -3 (toward zero), A = 2 -> 2 << 6 = 128; H = 125 >= 100: spike, hard reset */
    cr_assert_eq(qkf_spike_ilif_step(&p, 0, 2, &v, &h), 1);
    cr_assert_eq(h, 125);
    cr_assert_eq(v, 0);
    /* A = 1 -> 64 < 100: no spike, V = 64; then decay 32 + 64 = 96 < 100; then 48 + 64 = 112 */
    cr_assert_eq(qkf_spike_ilif_step(&p, 0, 1, &v, &h), 0);
    cr_assert_eq(v, 64);
    cr_assert_eq(qkf_spike_ilif_step(&p, 0, 1, &v, &h), 0);
    cr_assert_eq(v, 96);
    cr_assert_eq(qkf_spike_ilif_step(&p, 0, 1, &v, &h), 1);
    cr_assert_eq(h, 112);
    /* '>' on the threshold exactly: H = 100 does not fire with threshold_ge = 0 */
    p.threshold_ge = 0, v = 0, bias[0] = 100;
    cr_assert_eq(qkf_spike_ilif_step(&p, 0, 0, &v, &h), 0);
    cr_assert_eq(h, 100);
    /* subtractive reset: H = 50 + 100 + 64 = 214 > 100 -> V = 114 */
    p.reset_subtract = 1, bias[0] = 100, v = 100;
    cr_assert_eq(qkf_spike_ilif_step(&p, 0, 1, &v, &h), 1);
    cr_assert_eq(v, 114);
    /* current saturation to 16 bits: 40000 -> 32767; wrap: 40000 -> 40000 - 65536 */
    p.current_wrap = 0, p.current_shift = 0, bias[0] = 0, theta[0] = 1 << 22, v = 0;
    qkf_spike_ilif_step(&p, 0, 40000, &v, &h);
    cr_assert_eq(h, 32767);
    p.current_wrap = 1, v = 0;
    qkf_spike_ilif_step(&p, 0, 40000, &v, &h);
    cr_assert_eq(h, 40000 - 65536);
    /* membrane saturation to 24 bits */
    p.current_shift = 10, p.membrane_wrap = 0, theta[0] = INT32_MAX, v = 0;
    qkf_spike_ilif_step(&p, 0, 30000, &v, &h);
    cr_assert_eq(h, (1 << 23) - 1);
}

Test(spike_int, max_pool_matches_reference_on_every_path, .fini = restore_isa)
{
    enum { MAXC = 150 };
    static int32_t rows[9][MAXC], a[MAXC + 16], b[MAXC + 16];
    qkf_rng r;
    qkf_rng_seed(&r, 17);
    FOR_EACH_ISA(isa)
    {
        for (int C = 1; C <= MAXC; C += 7)
            for (int n = 1; n <= 9; n += 4) {
                const int32_t *src[9];
                for (int k = 0; k < n; k++) {
                    for (int c = 0; c < C; c++)
                        rows[k][c] = (int32_t)rnd(&r);
                    src[k] = rows[k];
                }
                memset(a, 0x11, sizeof a);
                memset(b, 0x11, sizeof b);
                qkf_spike_max_i32(a, src, n, C);
                qkf_spike_max_i32_ref(b, src, n, C);
                cr_assert_eq(memcmp(a, b, sizeof a), 0, "%s C %d n %d",
                             qkf_isa_name((qkf_isa)isa), C, n);
            }
    }
}
