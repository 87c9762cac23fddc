/* The event engine's neuron kernels (kernels/spike_node.c) against their references: LIF
 * sequences into spike masks, and the event lists of masks. Part of the event suite
 * (tests/test_event.c declares it). */
#include <criterion/criterion.h>

#include <string.h>

#include "../kernels/base.h"
#include "../kernels/kernels.h"
#include "../kernels/spike.h"
#include "../kernels/spike_node.h"
#include "util.h"

/* The LIF sequence equals its reference bit for bit (masks and, when kept, membranes), and the
 * spikes of qkf_spike_lif_row stepped row by row, for channel counts around every vector
 * boundary, from zero and from given membranes, with inputs that land exactly on the threshold,
 * zeros of both signs, and rows that share one input. */
Test(event, lif_seq_matches_reference)
{
    enum { MAXC = 200, R = 7 };
    float x[R][MAXC], v0[MAXC], va[MAXC], vb[MAXC], vr[MAXC];
    uint16_t ma[R][(MAXC + 15) / 16], mb[R][(MAXC + 15) / 16], ch[MAXC], ce[MAXC];
    qkf_rng r;
    qkf_rng_seed(&r, 21);
    const int Cs[] = {1, 15, 16, 17, 48, 63, 64, 65, 96, 127, 128, 129, 192, 200};
    FOR_EACH_ISA(p)
    for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++)
        for (int mode = 0; mode < 4; mode++) {
            int C = Cs[ci], nr = 1 + (int)(qkf_rng_u64(&r) % R), from_zero = mode % 2;
            float vth = mode / 2 ? 0.5f : 1.0f;
            for (int k = 0; k < nr; k++)
                for (int c = 0; c < C; c++) {
                    float u = qkf_rng_uniform(&r);
                    x[k][c] = u < 0.1f   ? 2.0f * vth /* h exactly vth from zero */
                              : u < 0.15f ? -0.0f
                              : u < 0.2f  ? 0.0f
                                          : 2.0f * qkf_rng_normal(&r) + 0.5f;
                }
            for (int c = 0; c < C; c++)
                v0[c] = from_zero ? 0.0f : qkf_rng_uniform(&r) * vth;
            const float *xp[R];
            uint16_t *pa[R], *pb[R];
            for (int k = 0; k < nr; k++) {
                xp[k] = k == 3 ? x[1] : x[k]; /* a bias row shared by several steps */
                pa[k] = ma[k], pb[k] = mb[k];
                memset(ma[k], 0xAB, sizeof ma[k]);
                memset(mb[k], 0xCD, sizeof mb[k]);
            }
            memcpy(va, v0, sizeof va);
            memcpy(vb, v0, sizeof vb);
            memcpy(vr, v0, sizeof vr);
            qkf_spike_lif_seq(pa, xp, nr, C, vth, from_zero ? NULL : va);
            qkf_spike_lif_seq_ref(pb, xp, nr, C, vth, from_zero ? NULL : vb);
            int words = (C + 15) / 16;
            for (int k = 0; k < nr; k++) {
                cr_assert_eq(memcmp(ma[k], mb[k], (size_t)words * sizeof(uint16_t)), 0,
                             "%s: C %d mode %d step %d: masks differ", ISA_NAME(p), C, mode, k);
                if (C % 16)
                    cr_assert_eq(mb[k][words - 1] >> (C % 16), 0, "bits past C are set");
                /* the row kernel from the same membranes: the same spikes */
                int n = qkf_spike_lif_row_ref(ch, vr, xp[k], C, vth);
                int m = qkf_spike_mask_emit_ref(ce, mb[k], C);
                cr_assert_eq(m, n, "C %d mode %d step %d: %d spikes, lif_row %d", C, mode, k, m,
                             n);
                cr_assert_eq(memcmp(ce, ch, (size_t)n * sizeof(uint16_t)), 0);
            }
            if (!from_zero) {
                cr_assert_eq(memcmp(va, vb, (size_t)C * sizeof(float)), 0, "%s: C %d membranes",
                             ISA_NAME(p), C);
                cr_assert_eq(memcmp(vb, vr, (size_t)C * sizeof(float)), 0, "C %d vs lif_row", C);
            }
        }
}

/* The fast mask emitter equals its reference for channel counts around every 16- and 32-lane
 * boundary and densities from empty to full, and writes only its row's C slots. */
Test(event, mask_emit_matches_reference)
{
    enum { MAXC = 300, PAD = 40 };
    uint16_t mask[(MAXC + 15) / 16], a[MAXC + PAD], b[MAXC + PAD];
    qkf_rng r;
    qkf_rng_seed(&r, 23);
    const int Cs[] = {1, 5, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 96, 100, 128, 192, 300};
    FOR_EACH_ISA(p)
    for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++)
        for (int rep = 0; rep < 6; rep++) {
            int C = Cs[ci], words = (C + 15) / 16;
            float density = (float)rep / 5.0f;
            memset(mask, 0, sizeof mask);
            for (int c = 0; c < C; c++)
                if (qkf_rng_uniform(&r) < density)
                    mask[c / 16] = (uint16_t)(mask[c / 16] | 1u << (c % 16));
            if (rep == 2 && words > 2)
                mask[1] = 0; /* a word without spikes among others */
            memset(a, 0x5A, sizeof a);
            memset(b, 0x5A, sizeof b);
            int na = qkf_spike_mask_emit(a, mask, C);
            int nb = qkf_spike_mask_emit_ref(b, mask, C);
            cr_assert_eq(na, nb, "%s: C %d rep %d: %d vs %d", ISA_NAME(p), C, rep, na, nb);
            cr_assert_eq(memcmp(a, b, (size_t)na * sizeof(uint16_t)), 0, "%s: C %d rep %d",
                         ISA_NAME(p), C, rep);
            for (int i = C; i < C + PAD; i++)
                cr_assert_eq(a[i], 0x5A5A, "C %d rep %d: slot %d past the row written", C, rep,
                             i);
        }
}

/* The head bounds equal their references: lists of every length around the 32-lane steps,
 * channels up to 65535, head widths that do and do not divide the channel count. */
Test(event, head_bounds_match_reference)
{
    enum { MAXN = 200 };
    uint16_t ch[MAXN];
    int ea[64], eb[64];
    qkf_rng r;
    qkf_rng_seed(&r, 29);
    const int Cs[] = {8, 96, 192, 384, 1000, 65535};
    FOR_EACH_ISA(p)
    for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++)
        for (int rep = 0; rep < 40; rep++) {
            int C = Cs[ci], d = 1 + (int)(qkf_rng_u64(&r) % 48), heads = (C + d - 1) / d, n = 0;
            heads = heads > 64 ? 64 : heads;
            float density = rep % 5 == 0 ? 0.0f : qkf_rng_uniform(&r);
            for (int c = 0; c < C && n < MAXN; c++)
                if (qkf_rng_uniform(&r) < density * (C > 400 ? 0.02f : 1.0f))
                    ch[n++] = (uint16_t)c;
            if (rep == 7 && n < MAXN)
                ch[n++] = (uint16_t)(C - 1);
            int c = (int)(qkf_rng_u64(&r) % (C + 2));
            cr_assert_eq(qkf_spike_count_below(ch, n, c), qkf_spike_count_below_ref(ch, n, c),
                         "%s: C %d n %d below %d", ISA_NAME(p), C, n, c);
            qkf_spike_head_ends(ea, ch, n, d, heads);
            qkf_spike_head_ends_ref(eb, ch, n, d, heads);
            cr_assert_eq(memcmp(ea, eb, (size_t)heads * sizeof(int)), 0, "%s: C %d n %d d %d",
                         ISA_NAME(p), C, n, d);
        }
}

/* The attention OR neuron equals its reference for row widths around the 16-lane steps, counts
 * just below, at and above 1, and stores nothing past its spikes (the next token's slots). */
Test(event, attn_row_matches_reference)
{
    enum { MAXC = 100, PAD = 20 };
    float cnt[MAXC];
    uint16_t a[MAXC + PAD], b[MAXC + PAD];
    qkf_rng r;
    qkf_rng_seed(&r, 31);
    const int Cs[] = {1, 8, 15, 16, 17, 32, 48, 100};
    const float vals[] = {0.0f, 0.5f, 0.99999994f, 1.0f, 2.0f, 7.0f, -1.0f};
    FOR_EACH_ISA(p)
    for (int ci = 0; ci < (int)(sizeof Cs / sizeof *Cs); ci++)
        for (int rep = 0; rep < 20; rep++) {
            int C = Cs[ci];
            for (int c = 0; c < C; c++)
                cnt[c] = vals[qkf_rng_u64(&r) % (sizeof vals / sizeof *vals)];
            memset(a, 0x5A, sizeof a);
            memset(b, 0x5A, sizeof b);
            int na = qkf_spike_attn_row(a, cnt, C), nb = qkf_spike_attn_row_ref(b, cnt, C);
            cr_assert_eq(na, nb, "%s: C %d: %d vs %d", ISA_NAME(p), C, na, nb);
            cr_assert_eq(memcmp(a, b, sizeof a), 0, "%s: C %d rep %d: rows differ", ISA_NAME(p), C,
                         rep);
        }
}
