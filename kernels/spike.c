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

/* Events with a count c other than 1 need fmaf(c, x, a): c * x + a with one rounding. With a
 * hardware FMA (aarch64, x86-64 with -mfma: __FP_FAST_FMAF) that is the instruction, lane by
 * lane (the compiler makes one vector FMA of it). Without one (baseline x86-64, where fmaf is a
 * library call), a power-of-two count (2 and 4: most counts above 1) multiplies in float, which
 * is exact unless the product overflows, so a + c * x then rounds once; any other count is
 * computed in double: c * x is exact there (16 + 24 bits), s = a + c * x is rounded once to
 * double, then to float. Rounding twice gives fmaf's float unless s lies exactly on a float
 * rounding midpoint: the exact sum rounds to the float f between its two neighbouring
 * midpoints m1 < m2, which are doubles (25 bits), and rounding to double is monotone, so
 * m1 <= s <= m2, and s rounds to f too unless it is m1 or m2 (an exact sum equal to a midpoint
 * is s itself, and rounds alike). Results below 2^-96 in magnitude are exact in double (a sum
 * of multiples of 2^-149 with at most 53 bits), so only normal midpoints matter: the 29 bits of
 * s below float precision reading 1000...0, and the overflow threshold 2^128 - 2^103 is one of
 * them. Lanes whose s has that pattern, and blocks whose outputs end up infinite or NaN (an
 * overflowing power-of-two product, or an infinite or NaN operand, whose NaN bits the
 * reference decides), are redone by the reference (pass): both are rare, the first about once
 * in 2^29 sums of real data. -DQKF_EMULATE_FMA takes this path even where the target has an FMA
 * (tools/cross/aarch64.sh checks it on NEON so). */
#if defined(__FP_FAST_FMAF) && !defined(QKF_EMULATE_FMA)
#define HW_FMA 1
#else
#define HW_FMA 0
#endif

#define PINLINE static inline __attribute__((always_inline))

#if HW_FMA
/* fmaf on 4 lanes, written on arrays: GCC's SLP vectoriser makes one vector FMA of it (x86 FMA,
 * NEON fmla), which it does not for the lanes of a vector. */
PINLINE qkf__v4f fma4(float c, qkf__v4f x, qkf__v4f a)
{
    float xs[4], as[4];
    memcpy(xs, &x, sizeof xs);
    memcpy(as, &a, sizeof as);
    as[0] = fmaf(c, xs[0], as[0]);
    as[1] = fmaf(c, xs[1], as[1]);
    as[2] = fmaf(c, xs[2], as[2]);
    as[3] = fmaf(c, xs[3], as[3]);
    memcpy(&a, as, sizeof as);
    return a;
}
#else
typedef double qkf__v2d __attribute__((vector_size(16)));
typedef int64_t qkf__v2l __attribute__((vector_size(16)));
typedef float qkf__v2f __attribute__((vector_size(8)));

/* a + c * x for 2 lanes in double, rounded once (c * x is exact); *inexact: lanes where that
 * rounding lost something (TwoSum's error, Knuth: s + e == a + c * x exactly). */
PINLINE qkf__v2d sum2(qkf__v2d c, qkf__v2f x, qkf__v2f a, qkf__v2l *inexact)
{
    qkf__v2d p = c * __builtin_convertvector(x, qkf__v2d), ad = __builtin_convertvector(a, qkf__v2d);
    qkf__v2d s = ad + p, bv = s - ad;
    qkf__v2d e = (ad - (s - bv)) + (p - bv);
    *inexact = e != 0.0;
    return s;
}

/* fmaf(c, x, a) on the 4-float vectors a[0, nb) (in memory) for a count c that is not a power of
 * two, through double; returns whether some lane's double sum was inexact and landed on a float
 * midpoint (its float may then be off by one ulp: the caller redoes the block). A function of
 * its own: odd counts are rare, and its registers would push the tail loop's accumulators out
 * of theirs. */
static __attribute__((noinline)) int fma_odd(qkf__v4f *a, const float *p, unsigned c, int nb)
{
    const qkf__v2d cd = {(double)c, (double)c};
    const qkf__v4i below = {0x1FFFFFFF, 0x1FFFFFFF, 0x1FFFFFFF, 0x1FFFFFFF};
    const qkf__v4i half = {0x10000000, 0x10000000, 0x10000000, 0x10000000};
    qkf__v4i bad = {0, 0, 0, 0};
    for (int k = 0; k < nb; k++) {
        qkf__v4f x = qkf__ld4(p + 4 * k);
        qkf__v2l ilo, ihi;
        qkf__v2d lo = sum2(cd, __builtin_shufflevector(x, x, 0, 1),
                           __builtin_shufflevector(a[k], a[k], 0, 1), &ilo);
        qkf__v2d hi = sum2(cd, __builtin_shufflevector(x, x, 2, 3),
                           __builtin_shufflevector(a[k], a[k], 2, 3), &ihi);
        /* the low 32 bits of each double (its 29 bits below float precision, and 3 more) */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        qkf__v4i low = __builtin_shufflevector((qkf__v4i)lo, (qkf__v4i)hi, 1, 3, 5, 7);
#else
        qkf__v4i low = __builtin_shufflevector((qkf__v4i)lo, (qkf__v4i)hi, 0, 2, 4, 6);
#endif
        bad |= ((low & below) == half) &
               __builtin_shufflevector((qkf__v4i)ilo, (qkf__v4i)ihi, 0, 2, 4, 6);
        qkf__v2f fl = __builtin_convertvector(lo, qkf__v2f);
        qkf__v2f fh = __builtin_convertvector(hi, qkf__v2f);
        a[k] = __builtin_shufflevector(fl, fh, 0, 1, 2, 3);
    }
    return (bad[0] | bad[1] | bad[2] | bad[3]) != 0;
}
#endif

/* 4 weights at p, aligned to 16 bytes when al (SSE2 then adds them straight from memory, with
 * no register for the load: 16 accumulators fit its 16 registers). */
PINLINE qkf__v4f pld(const float *p, int al)
{
    if (al) {
        const float *q = __builtin_assume_aligned(p, 16);
        return qkf__ld4(q);
    }
    return qkf__ld4(p);
}

/* Events of counts >= 1 (the tail of a list with counts, after its leading count-1 events) into
 * nb accumulators (nb <= 8: room for the temporaries). Returns whether the block must be redone
 * by the reference (a midpoint or a non-finite output, without a hardware FMA; never with
 * one). */
PINLINE int ptail(qkf__v4f *a, const float *ws, const uint16_t *ch, const uint16_t *cnt, int n,
                  int32_t stride, int nb)
{
#if HW_FMA
    for (int i = 0; i < n; i++) {
        const float *p = ws + (int32_t)ch[i] * stride;
        float c = (float)cnt[i]; /* fmaf(1, x, a) == a + x: no case for counts of 1 */
        for (int k = 0; k < nb; k++)
            a[k] = fma4(c, qkf__ld4(p + 4 * k), a[k]);
    }
    return 0;
#else
    int redo = 0;
    for (int i = 0; i < n; i++) {
        const float *p = ws + (int32_t)ch[i] * stride;
        unsigned c = cnt[i];
        if (c == 1) {
            for (int k = 0; k < nb; k++)
                a[k] += qkf__ld4(p + 4 * k);
        } else if (!(c & (c - 1))) {
            const float cf = (float)c;
            const qkf__v4f cv = {cf, cf, cf, cf};
            for (int k = 0; k < nb; k++)
                a[k] += cv * qkf__ld4(p + 4 * k);
        } else {
            qkf__v4f t[8];
            for (int k = 0; k < nb; k++)
                t[k] = a[k];
            redo |= fma_odd(t, p, c, nb);
            for (int k = 0; k < nb; k++)
                a[k] = t[k];
        }
    }
    const qkf__v4i expo = {0x7F800000, 0x7F800000, 0x7F800000, 0x7F800000};
    qkf__v4i inf = {0, 0, 0, 0};
    for (int k = 0; k < nb; k++)
        inf |= ((qkf__v4i)a[k] & expo) == expo;
    return redo | ((inf[0] | inf[1] | inf[2] | inf[3]) != 0);
#endif
}

/* ptail on the accumulators acc[0, nb) in memory (nb <= 8 a constant after inlining). */
PINLINE int ptail_mem(qkf__v4f *acc, const float *ws, const uint16_t *ch, const uint16_t *cnt,
                      int n, int32_t stride, int nb)
{
    qkf__v4f a[8];
    for (int k = 0; k < nb; k++)
        a[k] = acc[k];
    int redo = ptail(a, ws, ch, cnt, n, stride, nb);
    for (int k = 0; k < nb; k++)
        acc[k] = a[k];
    return redo;
}

/* ptail on nb <= 16 accumulators held in memory, 8 (or fewer) at a time: a function of its
 * own, so that its registers do not push the plain loop's accumulators out of theirs. */
static __attribute__((noinline)) int ptail_nb(qkf__v4f *acc, const float *ws, const uint16_t *ch,
                                              const uint16_t *cnt, int n, int32_t stride, int nb)
{
    int redo = 0;
    for (int j = 0; j < nb; j += 8) {
        /* clang-format off */
        switch (nb - j) {
        case 1: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 1); break;
        case 2: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 2); break;
        case 3: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 3); break;
        case 4: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 4); break;
        case 5: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 5); break;
        case 6: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 6); break;
        case 7: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 7); break;
        default: redo |= ptail_mem(acc + j, ws + 4 * j, ch, cnt, n, stride, 8); break;
        }
        /* clang-format on */
    }
    return redo;
}

/* Columns [0, 4 nb) (nb <= 16; w, init and out already offset to them) of one output over every
 * segment, the accumulators in registers. A segment's leading events of count 1 run as plain
 * adds (n1: at least that many of the first segment's events have a count of 1, the engine's
 * promise; the loop checks on from there), the rest in ptail_nb. al: every row start
 * w + base + ch * stride is 16-byte aligned. */
PINLINE void ppass(float *out, const float *init, const float *w, int32_t stride,
                   const qkf_spike_seg *seg, int nseg, int n1, int nb, int al)
{
    qkf__v4f a[16];
    for (int k = 0; k < nb; k++)
        a[k] = init ? qkf__ld4(init + 4 * k) : (qkf__v4f){0, 0, 0, 0};
    int redo = 0;
    for (int s = 0; s < nseg; s++, n1 = 0) {
        const uint16_t *ch = seg[s].ch, *cnt = seg[s].cnt;
        const float *ws = w + seg[s].base;
        int n = seg[s].n, m = n;
        if (cnt)
            for (m = n1 < n ? n1 : n; m < n && cnt[m] == 1;)
                m++;
        for (int i = 0; i < m; i++) {
            const float *p = ws + (int32_t)ch[i] * stride;
            for (int k = 0; k < nb; k++)
                a[k] += pld(p + 4 * k, al);
        }
        if (m < n) {
            qkf__v4f t[16];
            for (int k = 0; k < nb; k++)
                t[k] = a[k];
            redo |= ptail_nb(t, ws, ch + m, cnt + m, n - m, stride, nb);
            for (int k = 0; k < nb; k++)
                a[k] = t[k];
        }
    }
    if (redo) { /* nothing is stored yet: init is intact even where it is out */
        qkf_spike_gather_ref(out, init, w, stride, seg, nseg, 4 * nb);
        return;
    }
    for (int k = 0; k < nb; k++)
        qkf__st4(out + 4 * k, a[k]);
}

/* Columns [4 j, 4 j + 4 nb) of rows[0, nrow) (nb a constant after inlining). */
PINLINE void prows(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,
                   int32_t stride, int j, int nb, int al)
{
    for (int r = 0; r < nrow; r++)
        ppass(rows[r].out + off + 4 * j, rows[r].init ? rows[r].init + off + 4 * j : NULL,
              w + 4 * j, stride, &rows[r].seg, 1, rows[r].seg.cnt ? rows[r].n1 : 0, nb, al);
}

/* Constant-nb copies of ppass (several segments, one output: qkf_spike_gather) and prows (rows
 * of one segment each: qkf_spike_gather_rows), for aligned rows or not, dispatched once per
 * pass. */
#define PASS_FNS(NB)                                                                             \
    static void pseg##NB(float *out, const float *init, const float *w, int32_t stride,          \
                         const qkf_spike_seg *seg, int nseg, int al)                             \
    {                                                                                            \
        if (al)                                                                                  \
            ppass(out, init, w, stride, seg, nseg, 0, NB, 1);                                    \
        else                                                                                     \
            ppass(out, init, w, stride, seg, nseg, 0, NB, 0);                                    \
    }                                                                                            \
    static void prows##NB(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,      \
                          int32_t stride, int j, int al)                                         \
    {                                                                                            \
        if (al)                                                                                  \
            prows(rows, nrow, off, w, stride, j, NB, 1);                                         \
        else                                                                                     \
            prows(rows, nrow, off, w, stride, j, NB, 0);                                         \
    }
PASS_FNS(1) PASS_FNS(2) PASS_FNS(3) PASS_FNS(4) PASS_FNS(5) PASS_FNS(6) PASS_FNS(7) PASS_FNS(8)
PASS_FNS(9) PASS_FNS(10) PASS_FNS(11) PASS_FNS(12) PASS_FNS(13) PASS_FNS(14) PASS_FNS(15)
PASS_FNS(16)
#undef PASS_FNS

typedef void (*pseg_fn)(float *, const float *, const float *, int32_t, const qkf_spike_seg *, int,
                        int);
typedef void (*prows_fn)(const qkf_spike_row *, int, int64_t, const float *, int32_t, int, int);
static const pseg_fn pseg_fns[17] = {NULL,   pseg1,  pseg2,  pseg3,  pseg4,  pseg5,
                                     pseg6,  pseg7,  pseg8,  pseg9,  pseg10, pseg11,
                                     pseg12, pseg13, pseg14, pseg15, pseg16};
static const prows_fn prows_fns[17] = {NULL,    prows1,  prows2,  prows3,  prows4,  prows5,
                                       prows6,  prows7,  prows8,  prows9,  prows10, prows11,
                                       prows12, prows13, prows14, prows15, prows16};

/* Whether weight rows at w + base + ch * stride start 16-byte aligned (given every base % 4 == 0).
 * Unaligned rows take passes of at most 8 vectors where the target needs a register for each
 * load (SSE2 without AVX: pld); 16 otherwise. */
#if defined(__SSE2__) && !defined(__AVX__)
#define PMAX_UNALIGNED 8
#else
#define PMAX_UNALIGNED 16
#endif
static int aligned16(const float *w, int32_t stride)
{
    return (uintptr_t)w % 16 == 0 && stride % 4 == 0;
}

static int64_t gather_portable(float *out, const float *init, const float *w, int32_t stride,
                               const qkf_spike_seg *seg, int nseg, int width)
{
    /* passes of at most 16 vectors (64 outputs), split evenly: 96 = 12 + 12 */
    int al = aligned16(w, stride);
    for (int s = 0; s < nseg; s++)
        al &= seg[s].base % 4 == 0;
    int full = width / 4, pmax = al ? 16 : PMAX_UNALIGNED, passes = (full + pmax - 1) / pmax;
    int j = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (full - j) / (passes - p);
        pseg_fns[nb](out + 4 * j, init ? init + 4 * j : NULL, w + 4 * j, stride, seg, nseg, al);
        j += nb;
    }
    if (4 * j < width) /* the last width % 4 */
        qkf_spike_gather_ref(out + 4 * j, init ? init + 4 * j : NULL, w + 4 * j, stride, seg,
                             nseg, width - 4 * j);
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
    /* portable: each pass of columns over every row (the slab's columns stay in cache), the
     * leading events of count 1 (n1) as plain adds */
    if (nrow <= 0)
        return 0;
    int al = aligned16(w, stride);
    for (int r = 0; r < nrow; r++)
        al &= rows[r].seg.base % 4 == 0;
    int full = width / 4, pmax = al ? 16 : PMAX_UNALIGNED, passes = (full + pmax - 1) / pmax;
    int j = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (full - j) / (passes - p);
        prows_fns[nb](rows, nrow, off, w, stride, j, al);
        j += nb;
    }
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++) {
        if (4 * j < width)
            qkf_spike_gather_ref(rows[r].out + off + 4 * j,
                                 rows[r].init ? rows[r].init + off + 4 * j : NULL, w + 4 * j,
                                 stride, &rows[r].seg, 1, width - 4 * j);
        spikes += qkf__spikes_of(&rows[r].seg, 1);
    }
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
    int n = qkf__pop8(m);
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
        qkf__v4i s[2];
        for (int q = 0; q < 2; q++) {
            qkf__v4f xv = qkf__ld4(x + c0 + 4 * q), vv = qkf__ld4(v + c0 + 4 * q);
            qkf__v4f h = vv + (xv - vv) * half;
            s[q] = h >= th;
            qkf__st4(v + c0 + 4 * q, (qkf__v4f)((qkf__v4i)h & ~s[q]));
        }
        unsigned m = qkf__bits8(s[0], s[1]);
        emit8(ch + k, m, c0);
        k += qkf__pop8(m);
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
        unsigned m = qkf__bits8(qkf__ld4(cnt + c0) >= one, qkf__ld4(cnt + c0 + 4) >= one);
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

/* The OR of the 8 lanes of b, folded in the vector register (not lane by lane). */
static inline unsigned fold8(qkf__v8u16 b)
{
    b |= __builtin_shufflevector(b, b, 4, 5, 6, 7, 0, 1, 2, 3);
    b |= __builtin_shufflevector(b, b, 2, 3, 0, 1, 6, 7, 4, 5);
    b |= __builtin_shufflevector(b, b, 1, 0, 3, 2, 5, 4, 7, 6);
    return b[0];
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
        unsigned m = fold8((qkf__v8u16)(v == one) & bit);
        if (c0 + 8 <= C) {
            emit8(ch + k, m, c0);
            memcpy(cnt + k, &one, sizeof one);
            k += qkf__pop8(m);
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
        unsigned m = fold8((qkf__v8u16)(v > one) & bit);
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
