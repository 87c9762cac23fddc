/* Event kernels: register-blocked row accumulation, LIF rows that emit events, the attention
 * OR-neuron and residual merges. Layouts are described in spike.h.
 *
 * Every fast kernel has a plain _ref twin that the tests compare against, and three paths picked
 * at run time (kernels/isa.h): AVX-512 (spike_avx512.c), AVX2 (spike_avx2.c) and the portable
 * path below, fixed-width loops on 4-float vectors (GCC / Clang vector extensions) that compile
 * to SSE2 on baseline x86-64 and NEON on aarch64. All of them perform the same float operations
 * in the same order as the reference, so they agree bit for bit: a vector lane only changes
 * which outputs are computed together, never the order of the adds into one output. */
#include "spike.h"

#include <math.h>
#include <string.h>

#include "isa.h"
#include "isa_internal.h"
#include "lut_internal.h"

int64_t qkf_spike_gather_ref(float *out, const float *init, const float *w, int32_t stride,
                             const qkf_spike_seg *seg, int nseg, int width)
{
    for (int j = 0; j < width; j++) {
        float acc = init ? init[j] : 0.0f;
        for (int s = 0; s < nseg; s++)
            for (int i = 0; i < seg[s].n; i++) {
                float x = w[seg[s].base + (int32_t)seg[s].ch[i] * stride + j];
                acc = seg[s].cnt ? fmaf((float)seg[s].cnt[i], x, acc) : acc + x;
            }
        out[j] = acc;
    }
    return qkf__spikes_of(seg, nseg);
}

/* ---- portable path -------------------------------------------------------------------------- */

/* c * x + a with one rounding (fmaf) for a count c < 2^16, on 4 lanes. With a hardware FMA
 * (aarch64, x86-64 with -mfma: __FP_FAST_FMAF) that is the instruction, lane by lane (the
 * compiler makes one vector FMA of it). Without one (baseline x86-64, where fmaf is a library
 * call) it is computed in two vectors of 2 doubles: c * x is exact (16 + 24 bits), the sum
 * a + c * x is rounded to double with its rounding error recovered exactly (TwoSum), and an
 * inexact sum is then rounded to odd (its last bit set by moving one ulp toward the error):
 * rounding a double rounded to odd to the nearest float is the correctly rounded result, as
 * double has more than 24 + 2 bits (Boldo and Melquiond, "Emulation of FMA and correctly
 * rounded sums: proved algorithms using rounding to odd", IEEE TC 2008). So the same float as
 * fmaf for finite operands, branch-free in SSE2 (and NEON) double and 64-bit integer lanes. An
 * infinite or NaN operand makes the result non-finite, as fmaf's is (gather_portable redoes
 * such outputs with the reference). -DQKF_EMULATE_FMA uses the emulation even where the target
 * has an FMA (tools/cross/aarch64.sh checks it on NEON so). */
#if defined(__FP_FAST_FMAF) && !defined(QKF_EMULATE_FMA)
#define HW_FMA 1
#else
#define HW_FMA 0
#endif
#if HW_FMA
static inline qkf__v4f fma4_count(float c, qkf__v4f x, qkf__v4f a)
{
    for (int l = 0; l < 4; l++)
        a[l] = fmaf(c, x[l], a[l]);
    return a;
}
#else
typedef double qkf__v2d __attribute__((vector_size(16)));
typedef int64_t qkf__v2l __attribute__((vector_size(16)));
typedef uint64_t qkf__v2ul __attribute__((vector_size(16)));
typedef float qkf__v2f __attribute__((vector_size(8)));

/* p + a (p = c * x exact), rounded to double, then to odd where inexact. */
static inline qkf__v2d sum_odd2(qkf__v2d p, qkf__v2d a)
{
    qkf__v2d s = p + a, bv = s - p;
    qkf__v2d e = (a - bv) + (p - (s - bv)); /* p + a == s + e exactly */
    qkf__v2l u = (qkf__v2l)s;
    qkf__v2l inexact = (e > 0.0) | (e < 0.0); /* ordered: no step for an infinite s (e NaN) */
    qkf__v2l even = (u & 1) - 1;             /* -1 where the last bit is 0 */
    qkf__v2l away = (qkf__v2l)(((qkf__v2ul)(u ^ (qkf__v2l)e)) >> 63); /* 1: e, s differ in sign */
    u += (1 - 2 * away) & inexact & even;    /* s != 0 here: a + p == 0 is exact */
    return (qkf__v2d)u;
}

static inline qkf__v4f fma4_count(float c, qkf__v4f x, qkf__v4f a)
{
    const qkf__v2d cd = {(double)c, (double)c};
    qkf__v2f xl = __builtin_shufflevector(x, x, 0, 1), xh = __builtin_shufflevector(x, x, 2, 3);
    qkf__v2f al = __builtin_shufflevector(a, a, 0, 1), ah = __builtin_shufflevector(a, a, 2, 3);
    qkf__v2d lo = sum_odd2(cd * __builtin_convertvector(xl, qkf__v2d),
                           __builtin_convertvector(al, qkf__v2d));
    qkf__v2d hi = sum_odd2(cd * __builtin_convertvector(xh, qkf__v2d),
                           __builtin_convertvector(ah, qkf__v2d));
    qkf__v2f fl = __builtin_convertvector(lo, qkf__v2f), fh = __builtin_convertvector(hi, qkf__v2f);
    return __builtin_shufflevector(fl, fh, 0, 1, 2, 3);
}
#endif

/* A weight row into accumulators: a plain add for a count of 1 (fmaf(1, x, a) and a + x round
 * alike), else fma4_count per vector. Without a hardware FMA, a power-of-two count (2 and 4 are
 * most of the counts above 1) multiplies in float instead: c * x is then exact unless it
 * overflows, so a + c * x rounds once, as fmaf; an overflow leaves the output infinite or NaN,
 * which gather_portable catches. Counts other than 1 are rare (residual sums list them after
 * their single events). */
static inline __attribute__((always_inline)) void prow(qkf__v4f *a, const float *p, unsigned c,
                                                      int nb)
{
    if (c == 1) {
        for (int k = 0; k < nb; k++)
            a[k] += qkf__ld4(p + 4 * k);
        return;
    }
    float cf = (float)c;
#if !HW_FMA
    if (!(c & (c - 1))) {
        const qkf__v4f cv = {cf, cf, cf, cf};
        for (int k = 0; k < nb; k++)
            a[k] += cv * qkf__ld4(p + 4 * k);
        return;
    }
#endif
    for (int k = 0; k < nb; k++)
        a[k] = fma4_count(cf, qkf__ld4(p + 4 * k), a[k]);
}

/* Events of counts > 1 (the tail of a list with counts) into nb accumulators held in memory:
 * a function of its own, so that its registers (the emulation needs many) do not push the
 * accumulators of pblock's plain loop out of theirs. */
static inline __attribute__((always_inline)) void pcounted(qkf__v4f *acc, const float *ws,
                                                          const uint16_t *ch, const uint16_t *cnt,
                                                          int n, int32_t stride, int nb)
{
    qkf__v4f a[8];
    for (int k = 0; k < nb; k++)
        a[k] = acc[k];
    for (int i = 0; i < n; i++)
        prow(a, ws + (int32_t)ch[i] * stride, cnt[i], nb);
    for (int k = 0; k < nb; k++)
        acc[k] = a[k];
}

static __attribute__((noinline)) void pcounted_nb(qkf__v4f *acc, const float *ws,
                                                  const uint16_t *ch, const uint16_t *cnt, int n,
                                                  int32_t stride, int nb)
{
    /* clang-format off */
    switch (nb) {
    case 1: pcounted(acc, ws, ch, cnt, n, stride, 1); break;
    case 2: pcounted(acc, ws, ch, cnt, n, stride, 2); break;
    case 3: pcounted(acc, ws, ch, cnt, n, stride, 3); break;
    case 4: pcounted(acc, ws, ch, cnt, n, stride, 4); break;
    case 5: pcounted(acc, ws, ch, cnt, n, stride, 5); break;
    case 6: pcounted(acc, ws, ch, cnt, n, stride, 6); break;
    case 7: pcounted(acc, ws, ch, cnt, n, stride, 7); break;
    case 8: pcounted(acc, ws, ch, cnt, n, stride, 8); break;
    default: break;
    }
    /* clang-format on */
}

/* nb vectors of 4 outputs (nb <= 8: 8 independent accumulators hide the add latency and fit
 * the 16 registers of SSE2) over every segment. */
static inline __attribute__((always_inline)) void pblock(float *out, const float *init,
                                                        const float *w, int32_t stride,
                                                        const qkf_spike_seg *seg, int nseg, int nb)
{
    qkf__v4f a[8];
    for (int k = 0; k < nb; k++)
        a[k] = init ? qkf__ld4(init + 4 * k) : (qkf__v4f){0, 0, 0, 0};
    for (int s = 0; s < nseg; s++) {
        const uint16_t *ch = seg[s].ch, *cnt = seg[s].cnt;
        const float *ws = w + seg[s].base;
        int n = seg[s].n;
        int i = 0;
        if (!cnt)
            for (; i < n; i++)
                prow(a, ws + (int32_t)ch[i] * stride, 1, nb);
        else {
            /* the leading events of count 1 (most of them, qkf_spike_events) in the plain loop */
            for (; i < n && cnt[i] == 1; i++)
                prow(a, ws + (int32_t)ch[i] * stride, 1, nb);
            if (i < n) {
                qkf__v4f t[8];
                for (int k = 0; k < nb; k++)
                    t[k] = a[k];
                pcounted_nb(t, ws, ch + i, cnt + i, n - i, stride, nb);
                for (int k = 0; k < nb; k++)
                    a[k] = t[k];
            }
        }
    }
#if !HW_FMA
    /* an infinite or NaN output may come from an overflowing power-of-two product (prow) or an
     * infinite operand: the reference redoes this block (from init, still intact when it is
     * out: nothing is stored yet). Finite outputs had finite, exact steps: non-finite values
     * stay non-finite under + and fma. */
    const qkf__v4i expo = {0x7F800000, 0x7F800000, 0x7F800000, 0x7F800000};
    qkf__v4i bad = {0, 0, 0, 0};
    for (int k = 0; k < nb; k++)
        bad |= ((qkf__v4i)a[k] & expo) == expo;
    if (bad[0] | bad[1] | bad[2] | bad[3]) {
        qkf_spike_gather_ref(out, init, w, stride, seg, nseg, 4 * nb);
        return;
    }
#endif
    for (int k = 0; k < nb; k++)
        qkf__st4(out + 4 * k, a[k]);
}

static void pblock_nb(float *out, const float *init, const float *w, int32_t stride,
                      const qkf_spike_seg *seg, int nseg, int nb)
{
    /* clang-format off */
    switch (nb) {
    case 1: pblock(out, init, w, stride, seg, nseg, 1); break;
    case 2: pblock(out, init, w, stride, seg, nseg, 2); break;
    case 3: pblock(out, init, w, stride, seg, nseg, 3); break;
    case 4: pblock(out, init, w, stride, seg, nseg, 4); break;
    case 5: pblock(out, init, w, stride, seg, nseg, 5); break;
    case 6: pblock(out, init, w, stride, seg, nseg, 6); break;
    case 7: pblock(out, init, w, stride, seg, nseg, 7); break;
    case 8: pblock(out, init, w, stride, seg, nseg, 8); break;
    default: break;
    }
    /* clang-format on */
}

static int64_t gather_portable(float *out, const float *init, const float *w, int32_t stride,
                               const qkf_spike_seg *seg, int nseg, int width)
{
    /* passes of at most 8 vectors (32 outputs), split evenly; the last width % 4 one by one */
    int full = width / 4, passes = (full + 7) / 8, j = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (full - j / 4) / (passes - p);
        pblock_nb(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, nb);
        j += 4 * nb;
    }
    if (j < width)
        qkf_spike_gather_ref(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, width - j);
    return qkf__spikes_of(seg, nseg);
}

int64_t qkf_spike_gather(float *out, const float *init, const float *w, int32_t stride,
                         const qkf_spike_seg *seg, int nseg, int width)
{
    QKF__PICK(spike_gather, (out, init, w, stride, seg, nseg, width))
    return gather_portable(out, init, w, stride, seg, nseg, width);
}

int64_t qkf_spike_gather_rows_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const float *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++)
        spikes += qkf_spike_gather_ref(rows[r].out + off, rows[r].init ? rows[r].init + off : NULL,
                                       w, stride, &rows[r].seg, 1, width);
    return spikes;
}

int64_t qkf_spike_gather_rows(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,
                              int32_t stride, int width)
{
    QKF__PICK(spike_gather_rows, (rows, nrow, off, w, stride, width))
    /* portable: row by row (the weight slab stays in cache across the rows) */
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++)
        spikes += gather_portable(rows[r].out + off, rows[r].init ? rows[r].init + off : NULL, w,
                                  stride, &rows[r].seg, 1, width);
    return spikes;
}

/* The channels c0 + (set bits of the 8-bit mask m) into p, 8 slots stored whole (left-packed
 * through the table of lut_internal.h; slots past popcount(m) hold c0). */
static inline void emit8(uint16_t *p, unsigned m, int c0)
{
    qkf__v8u8 b;
    memcpy(&b, &qkf__lut8[m & 0xFFu], sizeof b);
    qkf__v8u16 idx = __builtin_convertvector(b, qkf__v8u16) + (uint16_t)c0;
    memcpy(p, &idx, sizeof idx);
}

/* emit8 storing exactly popcount(m) slots. */
static inline int emit8_n(uint16_t *p, unsigned m, int c0)
{
    uint16_t tmp[8];
    int n = __builtin_popcount(m);
    emit8(tmp, m, c0);
    memcpy(p, tmp, (size_t)n * sizeof *p);
    return n;
}
int qkf_spike_lif_row_ref(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    int k = 0;
    for (int c = 0; c < C; c++) {
        float h = v[c] + (x[c] - v[c]) / 2.0f;
        float spike = h >= vth ? 1.0f : 0.0f;
        v[c] = h * (1.0f - spike);
        if (spike != 0.0f)
            ch[k++] = (uint16_t)c;
    }
    return k;
}

int qkf_spike_lif_row(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    QKF__PICK(spike_lif_row, (ch, v, x, C, vth))
    /* (x - v) * 0.5 equals (x - v) / 2 exactly; hard reset: h where silent, +0 where it spiked
     * (h * 0 with h >= vth > 0). Full groups of 8 store their packed indices whole, in this
     * row's own slots [k, c0 + 8) with k <= c0. */
    const qkf__v4f half = {0.5f, 0.5f, 0.5f, 0.5f}, th = {vth, vth, vth, vth};
    int k = 0, c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) {
        unsigned m = 0;
        for (int q = 0; q < 2; q++) {
            qkf__v4f xv = qkf__ld4(x + c0 + 4 * q), vv = qkf__ld4(v + c0 + 4 * q);
            qkf__v4f h = vv + (xv - vv) * half;
            qkf__v4i s = h >= th;
            qkf__st4(v + c0 + 4 * q, (qkf__v4f)((qkf__v4i)h & ~s));
            m |= qkf__bits4(s) << (4 * q);
        }
        emit8(ch + k, m, c0);
        k += __builtin_popcount(m);
    }
    int n = qkf_spike_lif_row_ref(ch + k, v + c0, x + c0, C - c0, vth); /* the last C % 8 */
    for (int i = 0; i < n; i++)
        ch[k + i] = (uint16_t)(ch[k + i] + c0);
    return k + n;
}

int qkf_spike_attn_row_ref(uint16_t *ch, const float *cnt, int C)
{
    int k = 0;
    for (int c = 0; c < C; c++)
        if (cnt[c] >= 1.0f)
            ch[k++] = (uint16_t)c;
    return k;
}

int qkf_spike_attn_row(uint16_t *ch, const float *cnt, int C)
{
    QKF__PICK(spike_attn_row, (ch, cnt, C))
    const qkf__v4f one = {1.0f, 1.0f, 1.0f, 1.0f};
    int k = 0, c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) {
        unsigned m = qkf__bits4(qkf__ld4(cnt + c0) >= one) |
                     qkf__bits4(qkf__ld4(cnt + c0 + 4) >= one) << 4;
        k += emit8_n(ch + k, m, c0); /* exactly its spikes: rows are short */
    }
    for (; c0 < C; c0++)
        if (cnt[c0] >= 1.0f)
            ch[k++] = (uint16_t)c0;
    return k;
}

int qkf_spike_merge(uint16_t *ch, uint16_t *cnt, const uint16_t *ch0, const uint16_t *cnt0, int n0,
                    const uint16_t *ch1, const uint16_t *cnt1, int n1)
{
    /* branch-free: each step takes the smaller head channel (both when equal), so a random
     * interleaving of the lists costs no mispredictions */
    int i = 0, j = 0, k = 0;
    while (i < n0 && j < n1) {
        unsigned a = ch0[i], b = ch1[j];
        unsigned ca = cnt0 ? cnt0[i] : 1u, cb = cnt1 ? cnt1[j] : 1u;
        int ta = a <= b, tb = b <= a;
        ch[k] = (uint16_t)(ta ? a : b);
        cnt[k] = (uint16_t)((ta ? ca : 0u) + (tb ? cb : 0u));
        k++, i += ta, j += tb;
    }
    for (; i < n0; i++)
        ch[k] = ch0[i], cnt[k++] = cnt0 ? cnt0[i] : 1;
    for (; j < n1; j++)
        ch[k] = ch1[j], cnt[k++] = cnt1 ? cnt1[j] : 1;
    return k;
}

/* The portable compression of a filled count row (qkf_spike_merge_dense): pass 1 packs the
 * channels with a count of 1, 8 at a time through the left-pack table (whole stores while they
 * land in the row's own slots [k, c0 + 8), c0 + 8 <= C); pass 2 (clearing the row, 8 counts at a
 * time, skipping empty groups) lists those with more, bit by bit: they are rare. */
static int qkf__spike_merge_pack_portable(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc,
                                          int C)
{
    const qkf__v8u16 one = {1, 1, 1, 1, 1, 1, 1, 1}, zero = {0, 0, 0, 0, 0, 0, 0, 0};
    const qkf__v8u16 bit = {1, 2, 4, 8, 16, 32, 64, 128};
    int k = 0, c0 = 0;
    for (; c0 < C; c0 += 8) {
        qkf__v8u16 v;
        memcpy(&v, acc + c0, sizeof v); /* acc has C rounded up to 32 counts, zero past C */
        qkf__v8u16 b = (qkf__v8u16)(v == one) & bit;
        unsigned m = (unsigned)(b[0] | b[1] | b[2] | b[3] | b[4] | b[5] | b[6] | b[7]);
        if (c0 + 8 <= C) {
            emit8(ch + k, m, c0);
            memcpy(cnt + k, &one, sizeof one);
            k += __builtin_popcount(m);
        } else {
            int n = emit8_n(ch + k, m, c0);
            memcpy(cnt + k, &one, (size_t)n * sizeof *cnt);
            k += n;
        }
    }
    *ones = k;
    for (c0 = 0; c0 < C; c0 += 8) {
        qkf__v8u16 v;
        memcpy(&v, acc + c0, sizeof v);
        qkf__v8u16 b = (qkf__v8u16)(v > one) & bit;
        unsigned m = (unsigned)(b[0] | b[1] | b[2] | b[3] | b[4] | b[5] | b[6] | b[7]);
        for (; m; m &= m - 1) {
            int c = c0 + __builtin_ctz(m);
            ch[k] = (uint16_t)c, cnt[k++] = acc[c];
        }
        memcpy(acc + c0, &zero, sizeof zero);
    }
    return k;
}

int qkf_spike_merge_dense(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C,
                          const uint16_t *ch0, const uint16_t *cnt0, int n0, const uint16_t *ch1,
                          const uint16_t *cnt1, int n1)
{
    /* the row is zero and a list's channels are distinct: the first list is stored, not added */
    if (cnt0)
        for (int i = 0; i < n0; i++)
            acc[ch0[i]] = cnt0[i];
    else
        for (int i = 0; i < n0; i++)
            acc[ch0[i]] = 1;
    if (cnt1)
        for (int i = 0; i < n1; i++)
            acc[ch1[i]] = (uint16_t)(acc[ch1[i]] + cnt1[i]);
    else
        for (int i = 0; i < n1; i++)
            acc[ch1[i]] = (uint16_t)(acc[ch1[i]] + 1);
    QKF__PICK(spike_merge_pack, (ch, cnt, ones, acc, C))
    return qkf__spike_merge_pack_portable(ch, cnt, ones, acc, C);
}

int qkf_spike_merge_dense_ref(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C,
                              const uint16_t *ch0, const uint16_t *cnt0, int n0,
                              const uint16_t *ch1, const uint16_t *cnt1, int n1)
{
    for (int i = 0; i < n0; i++)
        acc[ch0[i]] = (uint16_t)(acc[ch0[i]] + (cnt0 ? cnt0[i] : 1));
    for (int i = 0; i < n1; i++)
        acc[ch1[i]] = (uint16_t)(acc[ch1[i]] + (cnt1 ? cnt1[i] : 1));
    int k = 0;
    for (int c = 0; c < C; c++)
        if (acc[c] == 1)
            ch[k] = (uint16_t)c, cnt[k++] = 1;
    *ones = k;
    for (int c = 0; c < C; c++)
        if (acc[c]) {
            if (acc[c] > 1)
                ch[k] = (uint16_t)c, cnt[k++] = acc[c];
            acc[c] = 0;
        }
    return k;
}
