/* Event kernels: register-blocked row accumulation, LIF rows that emit events, the attention
 * OR-neuron and residual merges. Layouts are described in spike.h.
 *
 * Every fast kernel has a plain _ref twin that the tests compare against. The fast and reference
 * versions perform the same float operations in the same order, so they agree bit for bit: a
 * vector lane only changes which outputs are computed together, never the order of the adds
 * into one output. */
#include "spike.h"

#include <math.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static int64_t spikes_of(const qkf_spike_seg *seg, int nseg)
{
    int64_t rows = 0;
    for (int s = 0; s < nseg; s++) {
        if (!seg[s].cnt) {
            rows += seg[s].n;
            continue;
        }
        for (int i = 0; i < seg[s].n; i++)
            rows += seg[s].cnt[i];
    }
    return rows;
}

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
    return spikes_of(seg, nseg);
}

#if defined(__AVX512F__)

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

int64_t qkf_spike_gather(float *out, const float *init, const float *w, int32_t stride,
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
    return spikes_of(seg, nseg);
}

#else /* portable: blocks of 64 outputs in a local array the compiler keeps in vector registers */

int64_t qkf_spike_gather(float *out, const float *init, const float *w, int32_t stride,
                         const qkf_spike_seg *seg, int nseg, int width)
{
    for (int j0 = 0; j0 < width; j0 += 64) {
        int nb = width - j0 < 64 ? width - j0 : 64;
        float acc[64];
        for (int j = 0; j < nb; j++)
            acc[j] = init ? init[j0 + j] : 0.0f;
        for (int s = 0; s < nseg; s++)
            for (int i = 0; i < seg[s].n; i++) {
                const float *p = w + seg[s].base + (int32_t)seg[s].ch[i] * stride + j0;
                if (seg[s].cnt) {
                    float c = (float)seg[s].cnt[i];
                    for (int j = 0; j < nb; j++)
                        acc[j] = fmaf(c, p[j], acc[j]);
                } else {
                    for (int j = 0; j < nb; j++)
                        acc[j] += p[j];
                }
            }
        for (int j = 0; j < nb; j++)
            out[j0 + j] = acc[j];
    }
    return spikes_of(seg, nseg);
}

#endif

int64_t qkf_spike_gather_rows_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const float *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++)
        spikes += qkf_spike_gather_ref(rows[r].out + off, rows[r].init ? rows[r].init + off : NULL,
                                       w, stride, &rows[r].seg, 1, width);
    return spikes;
}

#if defined(__AVX512F__)

/* Event i of a list into accumulators acc: its row times its count (one fused multiply-add), or
 * its row (a plain add) when the list has no counts. */
#define EV_ADD(acc, ws, ch, cn, i, sum)                                                          \
    do {                                                                                         \
        const float *p_ = (ws) + (int32_t)(ch)[i] * stride;                                      \
        if (counts) {                                                                            \
            int c1_ = (cn)[i];                                                                   \
            __m512 c_ = _mm512_set1_ps((float)c1_);                                              \
            sum += c1_;                                                                          \
            _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)                                                         \
                acc[k] = _mm512_fmadd_ps(c_, _mm512_loadu_ps(p_ + 16 * k), acc[k]);              \
        } else {                                                                                 \
            _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)                                                         \
                acc[k] = _mm512_add_ps(acc[k], _mm512_loadu_ps(p_ + 16 * k));                    \
        }                                                                                        \
    } while (0)

/* Two rows of nb vectors (a constant after inlining), their event lists walked side by side
 * while both have events (twice the independent accumulators of one row, to hide the add
 * latency), then each row's tail. A row's adds stay in its list order. */
static inline __attribute__((always_inline)) int64_t pair_block(const qkf_spike_row *x,
                                                                const qkf_spike_row *y,
                                                                int64_t off, const float *w,
                                                                int32_t stride, int nb, int counts)
{
    int64_t s0 = 0, s1 = 0;
    static const float zeros[128];
    const float *i0 = x->init ? x->init + off : zeros, *i1 = y->init ? y->init + off : zeros;
    float *o0 = x->out + off, *o1 = y->out + off;
    const uint16_t *c0 = x->seg.ch, *n0c = x->seg.cnt, *c1 = y->seg.ch, *n1c = y->seg.cnt;
    const float *w0 = w + x->seg.base, *w1 = w + y->seg.base;
    int n0 = x->seg.n, n1 = y->seg.n, m = n0 < n1 ? n0 : n1, i = 0;
    __m512 a[8], b[8];
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)
    {
        a[k] = _mm512_loadu_ps(i0 + 16 * k);
        b[k] = _mm512_loadu_ps(i1 + 16 * k);
    }
    for (; i < m; i++) {
        EV_ADD(a, w0, c0, n0c, i, s0);
        EV_ADD(b, w1, c1, n1c, i, s1);
    }
    for (int j = i; j < n0; j++)
        EV_ADD(a, w0, c0, n0c, j, s0);
    for (int j = i; j < n1; j++)
        EV_ADD(b, w1, c1, n1c, j, s1);
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)
    {
        _mm512_storeu_ps(o0 + 16 * k, a[k]);
        _mm512_storeu_ps(o1 + 16 * k, b[k]);
    }
    return counts ? s0 + s1 : (int64_t)n0 + n1;
}
#undef EV_ADD

/* Every pair of rows[0..nrow) (nrow even) with one nb and count mode: the dispatch happens once
 * per call, the pair loop is tight. */
#define PAIRS_FN(NB, COUNTS, NAME)                                                               \
    static int64_t NAME(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,        \
                        int32_t stride)                                                          \
    {                                                                                            \
        int64_t spikes = 0;                                                                      \
        for (int r = 0; r < nrow; r += 2)                                                        \
            spikes += pair_block(&rows[r], &rows[r + 1], off, w, stride, NB, COUNTS);            \
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

int64_t qkf_spike_gather_rows(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,
                              int32_t stride, int width)
{
    int64_t spikes = 0;
    int nb = width / 16;
    if (width % 16 || nb < 1 || nb > 8) {
        for (int r = 0; r < nrow; r++)
            spikes += qkf_spike_gather(rows[r].out + off, rows[r].init ? rows[r].init + off : NULL,
                                       w, stride, &rows[r].seg, 1, width);
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
        spikes += spikes_of(&rows[r].seg, 1);
    }
    return spikes;
}

#else

int64_t qkf_spike_gather_rows(const qkf_spike_row *rows, int nrow, int64_t off, const float *w,
                              int32_t stride, int width)
{
    return qkf_spike_gather_rows_ref(rows, nrow, off, w, stride, width);
}

#endif

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

#if defined(__AVX512F__)

/* Writes c0 + (index of every set bit of s), ascending; returns how many. */
static inline int emit(uint16_t *ch, __mmask16 s, int c0)
{
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    /* compress the lane indices, narrow them to 16 bits, store exactly popcount of them (a
     * masked store: the next token's slots may belong to another thread) */
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int n = __builtin_popcount((unsigned)s);
    if (n) {
        __m512i idx = _mm512_maskz_compress_epi32(s, _mm512_add_epi32(iota, _mm512_set1_epi32(c0)));
        _mm256_mask_storeu_epi16(ch, (__mmask16)((1u << n) - 1u), _mm512_cvtepi32_epi16(idx));
    }
    return n;
#else
    int n = 0;
    for (unsigned m = s; m; m &= m - 1)
        ch[n++] = (uint16_t)(c0 + __builtin_ctz(m));
    return n;
#endif
}

int qkf_spike_lif_row(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    /* (x - v) * 0.5 equals (x - v) / 2 exactly: both are the correctly rounded half. */
    const __m512 half = _mm512_set1_ps(0.5f), th = _mm512_set1_ps(vth);
    int k = 0, c0 = 0;
#if defined(__AVX512BW__) && defined(__AVX512VL__)
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
#endif
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

#else

int qkf_spike_lif_row(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    return qkf_spike_lif_row_ref(ch, v, x, C, vth);
}

#endif

int qkf_spike_attn_row_ref(uint16_t *ch, const float *cnt, int C)
{
    int k = 0;
    for (int c = 0; c < C; c++)
        if (cnt[c] >= 1.0f)
            ch[k++] = (uint16_t)c;
    return k;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) &&                   \
    defined(__AVX512VBMI2__)
int qkf_spike_attn_row(uint16_t *ch, const float *cnt, int C)
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
#else
int qkf_spike_attn_row(uint16_t *ch, const float *cnt, int C)
{
    return qkf_spike_attn_row_ref(ch, cnt, C);
}
#endif

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

int qkf_spike_merge_dense(uint16_t *ch, uint16_t *cnt, uint16_t *acc, int C, const uint16_t *ch0,
                          const uint16_t *cnt0, int n0, const uint16_t *ch1, const uint16_t *cnt1,
                          int n1)
{
    for (int i = 0; i < n0; i++)
        acc[ch0[i]] = (uint16_t)(acc[ch0[i]] + (cnt0 ? cnt0[i] : 1));
    for (int i = 0; i < n1; i++)
        acc[ch1[i]] = (uint16_t)(acc[ch1[i]] + (cnt1 ? cnt1[i] : 1));
    int k = 0, c0 = 0;
#if defined(__AVX512BW__) && defined(__AVX512VBMI2__)
    /* 32 channels a step: compress the channels and counts that are non-zero, clear the row.
     * Full steps store all 32 lanes (they land in the row's own slots [k, c0 + 32), k <= c0) */
    const __m512i iota = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                          17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                          1, 0);
    for (; c0 < C; c0 += 32) {
        int rem = C - c0;
        __mmask32 lanes = rem >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << rem) - 1u);
        __m512i v = _mm512_maskz_loadu_epi16(lanes, acc + c0);
        __mmask32 nz = _mm512_mask_test_epi16_mask(lanes, v, v);
        if (!nz)
            continue;
        __m512i ids = _mm512_maskz_compress_epi16(nz, _mm512_add_epi16(iota, _mm512_set1_epi16((short)c0)));
        __m512i cs = _mm512_maskz_compress_epi16(nz, v);
        int n = __builtin_popcount((unsigned)nz);
        if (rem >= 32) {
            _mm512_storeu_si512(ch + k, ids);
            _mm512_storeu_si512(cnt + k, cs);
        } else {
            __mmask32 out = (__mmask32)((1u << n) - 1u);
            _mm512_mask_storeu_epi16(ch + k, out, ids);
            _mm512_mask_storeu_epi16(cnt + k, out, cs);
        }
        _mm512_mask_storeu_epi16(acc + c0, lanes, _mm512_setzero_si512());
        k += n;
    }
#endif
    for (; c0 < C; c0++)
        if (acc[c0]) {
            ch[k] = (uint16_t)c0, cnt[k++] = acc[c0];
            acc[c0] = 0;
        }
    return k;
}
