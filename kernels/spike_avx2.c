/* The AVX2 (+FMA) path of the event kernels (spike.h; dispatch in spike.c, convention in isa.h).
 * Compiled with AVX2/FMA/BMI flags whatever the build's -march, and only called after a run-time
 * check that the CPU has them. The same float operations in the same order per output as the
 * _ref twins; only the register blocking differs from the AVX-512 path: 16 ymm registers hold
 * at most 12 accumulators of 8 outputs for one row, or 2 x 6 for a pair of rows. AVX2 has no
 * compress instruction: event lists are built with the left-pack table of lut_internal.h (an 8-lane
 * comparison mask -> the indices of its set lanes). */
#include <string.h>

#include "spike.h"
#include "isa_internal.h"
#include "avx2_internal.h"

/* ---- row accumulation ------------------------------------------------------------------- */

/* nb vectors of 8 outputs (nb <= 12, a constant after inlining) accumulated over every segment
 * with the accumulators held in registers. w is already offset to the block's first column. */
static inline __attribute__((always_inline)) void gather_block(float *out, const float *init,
                                                               const float *w, int32_t stride,
                                                               const qkf_spike_seg *seg, int nseg,
                                                               int nb)
{
    __m256 a[12];
    for (int k = 0; k < nb; k++)
        a[k] = init ? _mm256_loadu_ps(init + 8 * k) : _mm256_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        const uint16_t *ch = seg[s].ch, *cnt = seg[s].cnt;
        const float *ws = w + seg[s].base;
        int n = seg[s].n;
        if (!cnt) {
            for (int i = 0; i < n; i++) {
                const float *p = ws + (int32_t)ch[i] * stride;
                for (int k = 0; k < nb; k++)
                    a[k] = _mm256_add_ps(a[k], _mm256_loadu_ps(p + 8 * k));
            }
        } else {
            for (int i = 0; i < n; i++) {
                const float *p = ws + (int32_t)ch[i] * stride;
                __m256 c = _mm256_set1_ps((float)cnt[i]);
                for (int k = 0; k < nb; k++)
                    a[k] = _mm256_fmadd_ps(c, _mm256_loadu_ps(p + 8 * k), a[k]);
            }
        }
    }
    for (int k = 0; k < nb; k++)
        _mm256_storeu_ps(out + 8 * k, a[k]);
}

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
    default: break;
    }
    /* clang-format on */
}

/* The last width % 8 outputs, under a lane mask (masked-off lanes read nothing). */
static void gather_tail(float *out, const float *init, const float *w, int32_t stride,
                        const qkf_spike_seg *seg, int nseg, int rem)
{
    __m256i m = lanes_of(rem);
    __m256 a = init ? _mm256_maskload_ps(init, m) : _mm256_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        const float *ws = w + seg[s].base;
        for (int i = 0; i < seg[s].n; i++) {
            __m256 r = _mm256_maskload_ps(ws + (int32_t)seg[s].ch[i] * stride, m);
            a = seg[s].cnt ? _mm256_fmadd_ps(_mm256_set1_ps((float)seg[s].cnt[i]), r, a)
                           : _mm256_add_ps(a, r);
        }
    }
    _mm256_maskstore_ps(out, m, a);
}

int64_t qkf__spike_gather_avx2(float *out, const float *init, const float *w, int32_t stride,
                               const qkf_spike_seg *seg, int nseg, int width)
{
    /* passes of at most 12 vectors (96 outputs), split evenly: 384 = 4 x 12, 128 = 8 + 8 */
    int full = width / 8, passes = (full + 11) / 12, j = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (full - j / 8) / (passes - p);
        gather_nb(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, nb);
        j += 8 * nb;
    }
    if (j < width)
        gather_tail(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, width - j);
    return qkf__spikes_of(seg, nseg);
}

/* Four 16-bit list entries with one 64-bit load (as on the AVX-512 path). */
static inline uint64_t load4(const uint16_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

#define ROW_ADD(acc, p)                                                                          \
    do {                                                                                         \
        const float *p_ = (p);                                                                   \
        _Pragma("GCC unroll 6") for (int k = 0; k < nb; k++)                                     \
            acc[k] = _mm256_add_ps(acc[k], _mm256_loadu_ps(p_ + 8 * k));                         \
    } while (0)
#define ROW_FMA(acc, p, c)                                                                       \
    do {                                                                                         \
        const float *p_ = (p);                                                                   \
        __m256 c_ = _mm256_set1_ps((float)(c));                                                  \
        _Pragma("GCC unroll 6") for (int k = 0; k < nb; k++)                                     \
            acc[k] = _mm256_fmadd_ps(c_, _mm256_loadu_ps(p_ + 8 * k), acc[k]);                   \
    } while (0)
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

/* Events [0, n) of two lists into two sets of accumulators, side by side, four at a time. */
static inline __attribute__((always_inline)) void run2(__m256 *a, __m256 *b, const float *wa,
                                                      const float *wb, const uint16_t *ca,
                                                      const uint16_t *cna, const uint16_t *cb,
                                                      const uint16_t *cnb, int n, int32_t stride,
                                                      int nb, int fma)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t xa = load4(ca + i), xb = load4(cb + i);
        uint64_t ka = fma ? load4(cna + i) : 0, kb = fma ? load4(cnb + i) : 0;
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
    }
}

static inline __attribute__((always_inline)) void run1(__m256 *a, const float *w,
                                                      const uint16_t *c, const uint16_t *cn, int n,
                                                      int32_t stride, int nb, int fma)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t x = load4(c + i), xc = fma ? load4(cn + i) : 0;
        EV4(a, w, x, xc, 0);
        EV4(a, w, x, xc, 1);
        EV4(a, w, x, xc, 2);
        EV4(a, w, x, xc, 3);
    }
    for (; i < n; i++)
        EV1(a, w, c, cn, i);
}
#undef EV1
#undef EV4
#undef ROW_FMA
#undef ROW_ADD

/* Columns [col, col + 8 nb) of two rows (nb <= 6 a constant after inlining: 12 accumulators).
 * Lists with counts run in two phases as on the AVX-512 path: the leading row.n1 events of count
 * 1 as plain adds, then the rest with one fused multiply-add each. */
static inline __attribute__((always_inline)) void pair_block(const qkf_spike_row *x,
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
    __m256 a[6], b[6];
    _Pragma("GCC unroll 6") for (int k = 0; k < nb; k++)
    {
        a[k] = _mm256_loadu_ps(i0 + 8 * k);
        b[k] = _mm256_loadu_ps(i1 + 8 * k);
    }
    if (!counts) {
        int m = n0 < n1 ? n0 : n1;
        run2(a, b, w0, w1, c0, NULL, c1, NULL, m, stride, nb, 0);
        run1(a, w0, c0 + m, NULL, n0 - m, stride, nb, 0);
        run1(b, w1, c1 + m, NULL, n1 - m, stride, nb, 0);
    } else {
        int p0 = x->n1, p1 = y->n1, m = p0 < p1 ? p0 : p1;
        run2(a, b, w0, w1, c0, NULL, c1, NULL, m, stride, nb, 0);
        run1(a, w0, c0 + m, NULL, p0 - m, stride, nb, 0);
        run1(b, w1, c1 + m, NULL, p1 - m, stride, nb, 0);
        int f0 = n0 - p0, f1 = n1 - p1, f = f0 < f1 ? f0 : f1;
        run2(a, b, w0, w1, c0 + p0, k0 + p0, c1 + p1, k1 + p1, f, stride, nb, 1);
        run1(a, w0, c0 + p0 + f, k0 + p0 + f, f0 - f, stride, nb, 1);
        run1(b, w1, c1 + p1 + f, k1 + p1 + f, f1 - f, stride, nb, 1);
    }
    _Pragma("GCC unroll 6") for (int k = 0; k < nb; k++)
    {
        _mm256_storeu_ps(o0 + 8 * k, a[k]);
        _mm256_storeu_ps(o1 + 8 * k, b[k]);
    }
}

/* Every pair of rows[0..nrow) (nrow even), columns [col, col + 8 NB). */
#define PAIRS_FN(NB, COUNTS, NAME)                                                               \
    static void NAME(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,           \
                     int32_t stride)                                                             \
    {                                                                                            \
        for (int r = 0; r < nrow; r += 2)                                                        \
            pair_block(&rows[r], &rows[r + 1], off, w, stride, NB, COUNTS);                      \
    }
PAIRS_FN(1, 0, pairs1) PAIRS_FN(2, 0, pairs2) PAIRS_FN(3, 0, pairs3) PAIRS_FN(4, 0, pairs4)
PAIRS_FN(5, 0, pairs5) PAIRS_FN(6, 0, pairs6)
PAIRS_FN(1, 1, pairs1c) PAIRS_FN(2, 1, pairs2c) PAIRS_FN(3, 1, pairs3c) PAIRS_FN(4, 1, pairs4c)
PAIRS_FN(5, 1, pairs5c) PAIRS_FN(6, 1, pairs6c)
#undef PAIRS_FN

typedef void (*pairs_fn)(const qkf_spike_row *, int, int64_t, const float *, int32_t);
static const pairs_fn pairs_fns[2][7] = {
    {NULL, pairs1, pairs2, pairs3, pairs4, pairs5, pairs6},
    {NULL, pairs1c, pairs2c, pairs3c, pairs4c, pairs5c, pairs6c},
};

int64_t qkf__spike_gather_rows_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                    const float *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    int nv = width / 8;
    if (width % 8 || nv < 1 || width > 128) {
        for (int r = 0; r < nrow; r++)
            spikes += qkf__spike_gather_avx2(rows[r].out + off,
                                             rows[r].init ? rows[r].init + off : NULL, w, stride,
                                             &rows[r].seg, 1, width);
        return spikes;
    }
    int counts = nrow > 0 && rows[0].seg.cnt != NULL, same = 1;
    for (int r = 1; r < nrow; r++)
        same &= (rows[r].seg.cnt != NULL) == counts;
    int paired = same ? nrow & ~1 : 0;
    if (paired) {
        /* column chunks of at most 6 vectors, split evenly (128 outputs: 6 + 5 + 5); each chunk
         * walks the pairs' lists again, which stay in L1 */
        int chunks = (nv + 5) / 6;
        for (int c = 0, j = 0; c < chunks; c++) {
            int nb = (nv - j) / (chunks - c);
            pairs_fns[counts][nb](rows, paired, off + 8 * j, w + 8 * j, stride);
            j += nb;
        }
        for (int r = 0; r < paired; r++)
            spikes += qkf__spikes_of(&rows[r].seg, 1);
    }
    for (int r = paired; r < nrow; r++)
        spikes += qkf__spike_gather_avx2(rows[r].out + off,
                                         rows[r].init ? rows[r].init + off : NULL, w, stride,
                                         &rows[r].seg, 1, width);
    return spikes;
}

/* ---- event lists -------------------------------------------------------------------------- */

int qkf__spike_lif_row_avx2(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    /* (x - v) * 0.5 equals (x - v) / 2 exactly; hard reset: h where silent, +0 where it spiked
     * (h * 0 with h >= vth > 0). Full groups store all 8 packed lanes: they land in this row's
     * own slots [k, c0 + 8) with k <= c0, and are ignored past the spikes. */
    const __m256 half = _mm256_set1_ps(0.5f), th = _mm256_set1_ps(vth);
    int k = 0, c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) {
        __m256 xv = _mm256_loadu_ps(x + c0), vv = _mm256_loadu_ps(v + c0);
        __m256 h = _mm256_add_ps(vv, _mm256_mul_ps(_mm256_sub_ps(xv, vv), half));
        __m256 s = _mm256_cmp_ps(h, th, _CMP_GE_OQ);
        _mm256_storeu_ps(v + c0, _mm256_andnot_ps(s, h));
        unsigned m = (unsigned)_mm256_movemask_ps(s);
        _mm_storeu_si128((__m128i *)(ch + k), pack8(m, c0));
        k += __builtin_popcount(m);
    }
    if (c0 < C) {
        __m256i lanes = lanes_of(C - c0);
        __m256 xv = _mm256_maskload_ps(x + c0, lanes), vv = _mm256_maskload_ps(v + c0, lanes);
        __m256 h = _mm256_add_ps(vv, _mm256_mul_ps(_mm256_sub_ps(xv, vv), half));
        __m256 s = _mm256_and_ps(_mm256_cmp_ps(h, th, _CMP_GE_OQ), _mm256_castsi256_ps(lanes));
        _mm256_maskstore_ps(v + c0, lanes, _mm256_andnot_ps(s, h));
        unsigned m = (unsigned)_mm256_movemask_ps(s);
        int n = __builtin_popcount(m);
        store_n(ch + k, pack8(m, c0), n);
        k += n;
    }
    return k;
}

int qkf__spike_attn_row_avx2(uint16_t *ch, const float *cnt, int C)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int k = 0, c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) {
        unsigned m = (unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(cnt + c0), one, _CMP_GE_OQ));
        int n = __builtin_popcount(m);
        store_n(ch + k, pack8(m, c0), n); /* exactly its spikes (rows are short) */
        k += n;
    }
    if (c0 < C) {
        __m256i lanes = lanes_of(C - c0);
        __m256 s = _mm256_and_ps(
            _mm256_cmp_ps(_mm256_maskload_ps(cnt + c0, lanes), one, _CMP_GE_OQ),
            _mm256_castsi256_ps(lanes));
        unsigned m = (unsigned)_mm256_movemask_ps(s);
        int n = __builtin_popcount(m);
        store_n(ch + k, pack8(m, c0), n);
        k += n;
    }
    return k;
}

int qkf__spike_merge_pack_avx2(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C)
{
    /* acc holds C counts rounded up to a multiple of 32, zero past C: whole vectors of 16 are
     * read. Pass 1: the channels with a count of 1 (8 lanes packed at a time; stores of 8 lanes
     * land in the row's own slots [k, c0 + 16) while c0 + 16 <= C, exactly n past that). Pass 2
     * (clearing the row): those with more, their counts packed by a byte shuffle built from the
     * same table; k may run ahead of c0, so stores are whole only while they fit in C. */
    const __m256i one = _mm256_set1_epi16(1);
    const __m128i ones8 = _mm_set1_epi16(1);
    int k = 0;
    for (int c0 = 0; c0 < C; c0 += 16) {
        unsigned m = mask16(_mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)(acc + c0)), one));
        for (int h = 0; h < 2; h++) {
            unsigned mh = m >> (8 * h) & 0xFFu;
            int n = __builtin_popcount(mh), at = c0 + 8 * h;
            if (c0 + 16 <= C) {
                _mm_storeu_si128((__m128i *)(ch + k), pack8(mh, at));
                _mm_storeu_si128((__m128i *)(cnt + k), ones8);
            } else {
                store_n(ch + k, pack8(mh, at), n);
                store_n(cnt + k, ones8, n);
            }
            k += n;
        }
    }
    *ones = k;
    const __m256i zero = _mm256_setzero_si256();
    for (int c0 = 0; c0 < C; c0 += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(acc + c0));
        /* count > 1 (unsigned): the saturating v - 1 is not zero */
        unsigned big = ~mask16(_mm256_cmpeq_epi16(_mm256_subs_epu16(v, one), zero)) & 0xFFFFu;
        _mm256_storeu_si256((__m256i *)(acc + c0), zero);
        if (!big)
            continue;
        for (int h = 0; h < 2; h++) {
            unsigned mh = big >> (8 * h) & 0xFFu;
            if (!mh)
                continue;
            int n = __builtin_popcount(mh);
            __m128i idx = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)qkf__lut8[mh]));
            /* byte shuffle taking 16-bit lane idx[j]: bytes 2 idx, 2 idx + 1 */
            __m128i ctl = _mm_add_epi16(_mm_mullo_epi16(idx, _mm_set1_epi16(0x0202)),
                                        _mm_set1_epi16(0x0100));
            __m128i vals = h ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v);
            __m128i ids = _mm_add_epi16(idx, _mm_set1_epi16((short)(c0 + 8 * h)));
            __m128i cs = _mm_shuffle_epi8(vals, ctl);
            if (k + 8 <= C) {
                _mm_storeu_si128((__m128i *)(ch + k), ids);
                _mm_storeu_si128((__m128i *)(cnt + k), cs);
            } else {
                store_n(ch + k, ids, n);
                store_n(cnt + k, cs, n);
            }
            k += n;
        }
    }
    return k;
}
