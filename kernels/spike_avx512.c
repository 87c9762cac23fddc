/* The AVX-512 path of the event kernels (spike.h; dispatch in spike.c, convention in isa.h).
 * Compiled with AVX-512 F/BW/VL/DQ/CD/VBMI2 flags whatever the build's -march, and only called
 * after a run-time check that the CPU has them. */
#include <immintrin.h>
#include <string.h>

#include "spike.h"
#include "isa_internal.h"


/* nb vectors of 16 outputs (nb <= 16, a constant after inlining) accumulated over every
 * segment with the accumulators held in registers. w is already offset to the block's first
 * column. */
static inline __attribute__((always_inline)) void gather_block(float *out, const float *init,
                                                               const float *w, int32_t stride,
                                                               const qkf_spike_seg *seg, int nseg,
                                                               int nb)
{
    __m512 a[16];
    for (int k = 0; k < nb; k++)
        a[k] = init ? _mm512_loadu_ps(init + 16 * k) : _mm512_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        const uint16_t *ch = seg[s].ch, *cnt = seg[s].cnt;
        const float *ws = w + seg[s].base;
        int n = seg[s].n;
        if (!cnt) {
            for (int i = 0; i < n; i++) {
                const float *p = ws + (int32_t)ch[i] * stride;
                for (int k = 0; k < nb; k++)
                    a[k] = _mm512_add_ps(a[k], _mm512_loadu_ps(p + 16 * k));
            }
        } else {
            for (int i = 0; i < n; i++) {
                const float *p = ws + (int32_t)ch[i] * stride;
                __m512 c = _mm512_set1_ps((float)cnt[i]);
                for (int k = 0; k < nb; k++)
                    a[k] = _mm512_fmadd_ps(c, _mm512_loadu_ps(p + 16 * k), a[k]);
            }
        }
    }
    for (int k = 0; k < nb; k++)
        _mm512_storeu_ps(out + 16 * k, a[k]);
}

/* gather_block with a run-time nb, dispatched to constant-nb copies. */
static void gather_nb(float *out, const float *init, const float *w, int32_t stride,
                      const qkf_spike_seg *seg, int nseg, int nb)
{
    /* clang-format off */
    switch (nb) {
    case 1: gather_block(out, init, w, stride, seg, nseg, 1); break;
    case 2: gather_block(out, init, w, stride, seg, nseg, 2); break;
    case 3: gather_block(out, init, w, stride, seg, nseg, 3); break;
    case 4: gather_block(out, init, w, stride, seg, nseg, 4); break;
    case 5: gather_block(out, init, w, stride, seg, nseg, 5); break;
    case 6: gather_block(out, init, w, stride, seg, nseg, 6); break;
    case 7: gather_block(out, init, w, stride, seg, nseg, 7); break;
    case 8: gather_block(out, init, w, stride, seg, nseg, 8); break;
    case 9: gather_block(out, init, w, stride, seg, nseg, 9); break;
    case 10: gather_block(out, init, w, stride, seg, nseg, 10); break;
    case 11: gather_block(out, init, w, stride, seg, nseg, 11); break;
    case 12: gather_block(out, init, w, stride, seg, nseg, 12); break;
    case 13: gather_block(out, init, w, stride, seg, nseg, 13); break;
    case 14: gather_block(out, init, w, stride, seg, nseg, 14); break;
    case 15: gather_block(out, init, w, stride, seg, nseg, 15); break;
    case 16: gather_block(out, init, w, stride, seg, nseg, 16); break;
    default: break;
    }
    /* clang-format on */
}

/* The last width % 16 outputs, under a lane mask. */
static void gather_tail(float *out, const float *init, const float *w, int32_t stride,
                        const qkf_spike_seg *seg, int nseg, int rem)
{
    __mmask16 m = (__mmask16)((1u << rem) - 1u);
    __m512 a = init ? _mm512_maskz_loadu_ps(m, init) : _mm512_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        const float *ws = w + seg[s].base;
        for (int i = 0; i < seg[s].n; i++) {
            __m512 r = _mm512_maskz_loadu_ps(m, ws + (int32_t)seg[s].ch[i] * stride);
            a = seg[s].cnt ? _mm512_fmadd_ps(_mm512_set1_ps((float)seg[s].cnt[i]), r, a)
                           : _mm512_add_ps(a, r);
        }
    }
    _mm512_mask_storeu_ps(out, m, a);
}

int64_t qkf__spike_gather_avx512(float *out, const float *init, const float *w, int32_t stride,
                                 const qkf_spike_seg *seg, int nseg, int width)
{
    /* passes of at most 16 vectors (256 outputs), split evenly: 384 = 12 + 12 */
    int full = width / 16, passes = (full + 15) / 16, j = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (full - j / 16) / (passes - p);
        gather_nb(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, nb);
        j += 16 * nb;
    }
    if (j < width)
        gather_tail(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, width - j);
    return qkf__spikes_of(seg, nseg);
}

/* Four 16-bit entries of a list with one 64-bit load (channels or counts): the scalar loads
 * of the indices would otherwise take a load slot for every event, beside the nb vector loads of
 * its weight row, and the load ports are what bounds this loop. */
static inline uint64_t load4(const uint16_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* The sum of the four 16-bit lanes of x (counts up to 65535 each): pairs into two 32-bit
 * lanes, then those. */
static inline uint64_t sum4(uint64_t x)
{
    uint64_t y = (x & 0x0000FFFF0000FFFFull) + (x >> 16 & 0x0000FFFF0000FFFFull);
    return (y & 0xFFFFFFFFull) + (y >> 32);
}

/* Weight row p into accumulators acc: times count c (one fused multiply-add), or a plain add
 * (counts of 1: fmaf(1, x, a) and a + x round alike, so the two are the same float operation). */
#define ROW_ADD(acc, p)                                                                          \
    do {                                                                                         \
        const float *p_ = (p);                                                                   \
        _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)                                     \
            acc[k] = _mm512_add_ps(acc[k], _mm512_loadu_ps(p_ + 16 * k));                        \
    } while (0)
#define ROW_FMA(acc, p, c)                                                                       \
    do {                                                                                         \
        const float *p_ = (p);                                                                   \
        __m512 c_ = _mm512_set1_ps((float)(c));                                                  \
        _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)                                     \
            acc[k] = _mm512_fmadd_ps(c_, _mm512_loadu_ps(p_ + 16 * k), acc[k]);                  \
    } while (0)
/* Event j (0..3) of a group of four read with load4: channels x, counts xc. */
#define EV4(acc, w, x, xc, j)                                                                    \
    do {                                                                                         \
        int32_t ch_ = (int32_t)((x) >> (16 * (j)) & 0xFFFFu);                                    \
        if (fma)                                                                                 \
            ROW_FMA(acc, (w) + ch_ * stride, (xc) >> (16 * (j)) & 0xFFFFu);                      \
        else                                                                                     \
            ROW_ADD(acc, (w) + ch_ * stride);                                                    \
    } while (0)
#define EV1(acc, w, ch, cn, i)                                                                   \
    do {                                                                                         \
        if (fma)                                                                                 \
            ROW_FMA(acc, (w) + (int32_t)(ch)[i] * stride, (cn)[i]);                              \
        else                                                                                     \
            ROW_ADD(acc, (w) + (int32_t)(ch)[i] * stride);                                       \
    } while (0)

/* Events [0, n) of two lists (channels ca / cb, counts na / nb_ when fma) into two sets of
 * accumulators, side by side (twice the independent accumulators of one row, to hide the add
 * latency), four events of each at a time. Returns the counts added (fma) or 0. */
static inline __attribute__((always_inline)) uint64_t run2(__m512 *a, __m512 *b, const float *wa,
                                                          const float *wb, const uint16_t *ca,
                                                          const uint16_t *cna, const uint16_t *cb,
                                                          const uint16_t *cnb, int n,
                                                          int32_t stride, int nb, int fma)
{
    uint64_t sum = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t xa = load4(ca + i), xb = load4(cb + i);
        uint64_t ka = fma ? load4(cna + i) : 0, kb = fma ? load4(cnb + i) : 0;
        sum += fma ? sum4(ka) + sum4(kb) : 0;
        EV4(a, wa, xa, ka, 0);
        EV4(b, wb, xb, kb, 0);
        EV4(a, wa, xa, ka, 1);
        EV4(b, wb, xb, kb, 1);
        EV4(a, wa, xa, ka, 2);
        EV4(b, wb, xb, kb, 2);
        EV4(a, wa, xa, ka, 3);
        EV4(b, wb, xb, kb, 3);
    }
    for (; i < n; i++) {
        EV1(a, wa, ca, cna, i);
        EV1(b, wb, cb, cnb, i);
        sum += fma ? (uint64_t)cna[i] + cnb[i] : 0;
    }
    return sum;
}

/* Events [0, n) of one list into one set of accumulators. */
static inline __attribute__((always_inline)) uint64_t run1(__m512 *a, const float *w,
                                                          const uint16_t *c, const uint16_t *cn,
                                                          int n, int32_t stride, int nb, int fma)
{
    uint64_t sum = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t x = load4(c + i), xc = fma ? load4(cn + i) : 0;
        sum += fma ? sum4(xc) : 0;
        EV4(a, w, x, xc, 0);
        EV4(a, w, x, xc, 1);
        EV4(a, w, x, xc, 2);
        EV4(a, w, x, xc, 3);
    }
    for (; i < n; i++) {
        EV1(a, w, c, cn, i);
        sum += fma ? cn[i] : 0;
    }
    return sum;
}
#undef EV1
#undef EV4
#undef ROW_FMA
#undef ROW_ADD

/* Two rows of nb vectors (a constant after inlining). A row's adds stay in its list order. Lists
 * with counts run in two phases: the leading events with a count of 1 (row.n1 of them, the
 * engine's residual sums put them first) as plain adds, then the rest with their counts; each
 * phase walks both rows side by side, then the longer row's tail. stride is a constant after
 * inlining when the caller's rows are exactly the block (stride == 16 nb: no multiply). */
static inline __attribute__((always_inline)) int64_t pair_block(const qkf_spike_row *x,
                                                               const qkf_spike_row *y, int64_t off,
                                                               const float *w, int32_t stride,
                                                               int nb, int counts)
{
    static const float zeros[128];
    const float *i0 = x->init ? x->init + off : zeros, *i1 = y->init ? y->init + off : zeros;
    float *o0 = x->out + off, *o1 = y->out + off;
    const uint16_t *c0 = x->seg.ch, *k0 = x->seg.cnt, *c1 = y->seg.ch, *k1 = y->seg.cnt;
    const float *w0 = w + x->seg.base, *w1 = w + y->seg.base;
    int n0 = x->seg.n, n1 = y->seg.n;
    __m512 a[8], b[8];
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)
    {
        a[k] = _mm512_loadu_ps(i0 + 16 * k);
        b[k] = _mm512_loadu_ps(i1 + 16 * k);
    }
    int64_t spikes;
    if (!counts) {
        int m = n0 < n1 ? n0 : n1;
        run2(a, b, w0, w1, c0, NULL, c1, NULL, m, stride, nb, 0);
        run1(a, w0, c0 + m, NULL, n0 - m, stride, nb, 0);
        run1(b, w1, c1 + m, NULL, n1 - m, stride, nb, 0);
        spikes = (int64_t)n0 + n1;
    } else {
        int p0 = x->n1, p1 = y->n1, m = p0 < p1 ? p0 : p1;
        run2(a, b, w0, w1, c0, NULL, c1, NULL, m, stride, nb, 0);
        run1(a, w0, c0 + m, NULL, p0 - m, stride, nb, 0);
        run1(b, w1, c1 + m, NULL, p1 - m, stride, nb, 0);
        int f0 = n0 - p0, f1 = n1 - p1, f = f0 < f1 ? f0 : f1;
        uint64_t sum = (uint64_t)p0 + (uint64_t)p1;
        sum += run2(a, b, w0, w1, c0 + p0, k0 + p0, c1 + p1, k1 + p1, f, stride, nb, 1);
        sum += run1(a, w0, c0 + p0 + f, k0 + p0 + f, f0 - f, stride, nb, 1);
        sum += run1(b, w1, c1 + p1 + f, k1 + p1 + f, f1 - f, stride, nb, 1);
        spikes = (int64_t)sum;
    }
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)
    {
        _mm512_storeu_ps(o0 + 16 * k, a[k]);
        _mm512_storeu_ps(o1 + 16 * k, b[k]);
    }
    return spikes;
}

/* Every pair of rows[0..nrow) (nrow even) with one nb and count mode: the dispatch happens once
 * per call, the pair loop is tight; rows exactly one block wide get a constant stride. */
#define PAIRS_FN(NB, COUNTS, NAME)                                                               \
    static int64_t NAME(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,        \
                        int32_t stride)                                                          \
    {                                                                                            \
        int64_t spikes = 0;                                                                      \
        if (stride == 16 * (NB))                                                                 \
            for (int r = 0; r < nrow; r += 2)                                                    \
                spikes += pair_block(&rows[r], &rows[r + 1], off, w, 16 * (NB), NB, COUNTS);     \
        else                                                                                     \
            for (int r = 0; r < nrow; r += 2)                                                    \
                spikes += pair_block(&rows[r], &rows[r + 1], off, w, stride, NB, COUNTS);        \
        return spikes;                                                                           \
    }
PAIRS_FN(1, 0, pairs1) PAIRS_FN(2, 0, pairs2) PAIRS_FN(3, 0, pairs3) PAIRS_FN(4, 0, pairs4)
PAIRS_FN(5, 0, pairs5) PAIRS_FN(6, 0, pairs6) PAIRS_FN(7, 0, pairs7) PAIRS_FN(8, 0, pairs8)
PAIRS_FN(1, 1, pairs1c) PAIRS_FN(2, 1, pairs2c) PAIRS_FN(3, 1, pairs3c) PAIRS_FN(4, 1, pairs4c)
PAIRS_FN(5, 1, pairs5c) PAIRS_FN(6, 1, pairs6c) PAIRS_FN(7, 1, pairs7c) PAIRS_FN(8, 1, pairs8c)
#undef PAIRS_FN

typedef int64_t (*pairs_fn)(const qkf_spike_row *, int, int64_t, const float *, int32_t);
static const pairs_fn pairs_fns[2][9] = {
    {NULL, pairs1, pairs2, pairs3, pairs4, pairs5, pairs6, pairs7, pairs8},
    {NULL, pairs1c, pairs2c, pairs3c, pairs4c, pairs5c, pairs6c, pairs7c, pairs8c},
};

int64_t qkf__spike_gather_rows_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const float *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    int nb = width / 16;
    if (width % 16 || nb < 1 || nb > 8) {
        for (int r = 0; r < nrow; r++)
            spikes += qkf__spike_gather_avx512(rows[r].out + off,
                                               rows[r].init ? rows[r].init + off : NULL, w, stride,
                                               &rows[r].seg, 1, width);
        return spikes;
    }
    /* rows in pairs when they agree on counts (the engine's always do), a last odd row alone */
    int counts = nrow > 0 && rows[0].seg.cnt != NULL, same = 1;
    for (int r = 1; r < nrow; r++)
        same &= (rows[r].seg.cnt != NULL) == counts;
    int paired = same ? nrow & ~1 : 0;
    if (paired)
        spikes += pairs_fns[counts][nb](rows, paired, off, w, stride);
    for (int r = paired; r < nrow; r++) {
        gather_nb(rows[r].out + off, rows[r].init ? rows[r].init + off : NULL, w, stride,
                  &rows[r].seg, 1, nb);
        spikes += qkf__spikes_of(&rows[r].seg, 1);
    }
    return spikes;
}

/* Writes c0 + (index of every set bit of s), ascending; returns how many. */
static inline int emit(uint16_t *ch, __mmask16 s, int c0)
{
    /* compress the lane indices, narrow them to 16 bits, store exactly popcount of them (a
     * masked store: the next token's slots may belong to another thread) */
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int n = __builtin_popcount((unsigned)s);
    if (n) {
        __m512i idx = _mm512_maskz_compress_epi32(s, _mm512_add_epi32(iota, _mm512_set1_epi32(c0)));
        _mm256_mask_storeu_epi16(ch, (__mmask16)((1u << n) - 1u), _mm512_cvtepi32_epi16(idx));
    }
    return n;
}

int qkf__spike_lif_row_avx512(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    /* (x - v) * 0.5 equals (x - v) / 2 exactly: both are the correctly rounded half. */
    const __m512 half = _mm512_set1_ps(0.5f), th = _mm512_set1_ps(vth);
    int k = 0, c0 = 0;
    /* full vectors: the 16 compressed indices are stored whole (one plain store, no test): lanes
     * past the spikes land in this row's own slots [k, c0 + 16) with k <= c0, and are ignored */
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (; c0 + 16 <= C; c0 += 16) {
        __m512 xv = _mm512_loadu_ps(x + c0), vv = _mm512_loadu_ps(v + c0);
        __m512 h = _mm512_add_ps(vv, _mm512_mul_ps(_mm512_sub_ps(xv, vv), half));
        __mmask16 s = _mm512_cmp_ps_mask(h, th, _CMP_GE_OQ);
        _mm512_storeu_ps(v + c0, _mm512_maskz_mov_ps((__mmask16)~s, h));
        __m512i idx = _mm512_maskz_compress_epi32(s, _mm512_add_epi32(iota, _mm512_set1_epi32(c0)));
        _mm256_storeu_si256((__m256i *)(ch + k), _mm512_cvtepi32_epi16(idx));
        k += __builtin_popcount((unsigned)s);
    }
    for (; c0 < C; c0 += 16) {
        int rem = C - c0;
        __mmask16 lanes = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __m512 xv = _mm512_maskz_loadu_ps(lanes, x + c0);
        __m512 vv = _mm512_maskz_loadu_ps(lanes, v + c0);
        __m512 h = _mm512_add_ps(vv, _mm512_mul_ps(_mm512_sub_ps(xv, vv), half));
        __mmask16 s = _mm512_mask_cmp_ps_mask(lanes, h, th, _CMP_GE_OQ);
        /* hard reset: v = h where silent, +0 where it spiked (h * 0 with h >= vth > 0) */
        _mm512_mask_storeu_ps(v + c0, lanes, _mm512_maskz_mov_ps((__mmask16)~s, h));
        k += emit(ch + k, s, c0);
    }
    return k;
}

int qkf__spike_attn_row_avx512(uint16_t *ch, const float *cnt, int C)
{
    /* 16 counts a step: compare, compress the 16-bit channel indices that fire and store exactly
     * that many (a masked store: rows are short, often 8 heads, and the next token's slots may
     * belong to another thread). No branch on the counts, which fire at random. */
    const __m256i iota = _mm256_set_epi16(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 one = _mm512_set1_ps(1.0f);
    int k = 0;
    for (int c0 = 0; c0 < C; c0 += 16) {
        int rem = C - c0;
        __mmask16 lanes = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __mmask16 s =
            _mm512_mask_cmp_ps_mask(lanes, _mm512_maskz_loadu_ps(lanes, cnt + c0), one, _CMP_GE_OQ);
        __m256i idx =
            _mm256_maskz_compress_epi16(s, _mm256_add_epi16(iota, _mm256_set1_epi16((short)c0)));
        int n = __builtin_popcount((unsigned)s);
        _mm256_mask_storeu_epi16(ch + k, (__mmask16)((1u << n) - 1u), idx);
        k += n;
    }
    return k;
}

int qkf__spike_merge_pack_avx512(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C)
{
    int k = 0, c0 = 0;
    /* Two passes over the count row, 32 channels a step: the channels whose count is 1, then
     * (clearing the row) those with more. The first pass stores all 32 lanes of a full step (they
     * land in the row's own slots [k, c0 + 32), k <= c0, and are overwritten or past the end);
     * the second stores exactly its events: its k may run ahead of c0. */
    const __m512i iota = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                          17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                          1, 0);
    const __m512i one = _mm512_set1_epi16(1);
    for (; c0 < C; c0 += 32) {
        int rem = C - c0;
        __mmask32 lanes = rem >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << rem) - 1u);
        __m512i v = _mm512_maskz_loadu_epi16(lanes, acc + c0);
        __mmask32 is1 = _mm512_mask_cmpeq_epi16_mask(lanes, v, one); /* no branch: often 0 */
        __m512i at = _mm512_add_epi16(iota, _mm512_set1_epi16((short)c0));
        __m512i ids = _mm512_maskz_compress_epi16(is1, at);
        int n = __builtin_popcount((unsigned)is1);
        if (rem >= 32) {
            _mm512_storeu_si512(ch + k, ids);
            _mm512_storeu_si512(cnt + k, one);
        } else {
            __mmask32 out = (__mmask32)((1u << n) - 1u);
            _mm512_mask_storeu_epi16(ch + k, out, ids);
            _mm512_mask_storeu_epi16(cnt + k, out, one);
        }
        k += n;
    }
    *ones = k;
    for (c0 = 0; c0 < C; c0 += 32) {
        int rem = C - c0;
        __mmask32 lanes = rem >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << rem) - 1u);
        __m512i v = _mm512_maskz_loadu_epi16(lanes, acc + c0);
        __mmask32 big = _mm512_mask_cmpgt_epu16_mask(lanes, v, one);
        __m512i at = _mm512_add_epi16(iota, _mm512_set1_epi16((short)c0));
        __m512i ids = _mm512_maskz_compress_epi16(big, at);
        __m512i cs = _mm512_maskz_compress_epi16(big, v);
        int n = __builtin_popcount((unsigned)big);
        __mmask32 out = (__mmask32)(n == 32 ? 0xFFFFFFFFu : (1u << n) - 1u);
        _mm512_mask_storeu_epi16(ch + k, out, ids);
        _mm512_mask_storeu_epi16(cnt + k, out, cs);
        k += n;
        _mm512_mask_storeu_epi16(acc + c0, lanes, _mm512_setzero_si512());
    }
    return k;
}
