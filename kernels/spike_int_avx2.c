/* AVX2 path of the integer event kernels (kernels/spike_int.h), compiled with AVX2 flags (CMake)
 * and called only after the run-time check of kernels/isa.h. 16 int16 or 8 int32 lanes per
 * register; 16 registers, so a row keeps at most four vectors per pass (two rows side by side). */
#include <immintrin.h>
#include <string.h>

#include "spike_int_internal.h"

#define IG(name) name##_i16
#define IG_T int16_t
#define IG_V __m256i
#define IG_M int
#define IG_L 16
#define IG_ADD(a, b) _mm256_add_epi16(a, b)
#define IG_MUL(a, b) _mm256_mullo_epi16(a, b)
#define IG_SET1(c) _mm256_set1_epi16((short)(c))
#define IG_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define IG_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define IG_MASKED 0
#define IG_ZERO _mm256_setzero_si256()
#define IG_NBMAX 4
#define IG_PORTABLE qkf__spike_gather_rows_i16_portable
#include "spike_int_gather_internal.h"
#undef IG
#undef IG_T
#undef IG_L
#undef IG_ADD
#undef IG_MUL
#undef IG_SET1
#undef IG_PORTABLE

#define IG(name) name##_i32
#define IG_T int32_t
#define IG_L 8
#define IG_ADD(a, b) _mm256_add_epi32(a, b)
#define IG_MUL(a, b) _mm256_mullo_epi32(a, b)
#define IG_SET1(c) _mm256_set1_epi32((int)(c))
#define IG_PORTABLE qkf__spike_gather_rows_i32_portable
#include "spike_int_gather_internal.h"
#undef IG
#undef IG_T
#undef IG_L
#undef IG_ADD
#undef IG_MUL
#undef IG_SET1
#undef IG_PORTABLE

/* The mantissa gather: int16 lanes as the int16 gather; at a row's end each vector of 16 sums is
 * widened to two vectors of 8 int32, shifted per column and added to the int32 init. */
static inline __attribute__((always_inline)) void wstore_m16(int32_t *o, const int32_t *i,
                                                             __m256i v, const int32_t *s, int k)
{
    __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v));
    __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(v, 1));
    lo = _mm256_sllv_epi32(lo, _mm256_loadu_si256((const __m256i *)(const void *)(s + 16 * k)));
    hi = _mm256_sllv_epi32(hi,
                           _mm256_loadu_si256((const __m256i *)(const void *)(s + 16 * k + 8)));
    if (i) {
        lo = _mm256_add_epi32(lo,
                              _mm256_loadu_si256((const __m256i *)(const void *)(i + 16 * k)));
        hi = _mm256_add_epi32(
            hi, _mm256_loadu_si256((const __m256i *)(const void *)(i + 16 * k + 8)));
    }
    _mm256_storeu_si256((__m256i *)(void *)(o + 16 * k), lo);
    _mm256_storeu_si256((__m256i *)(void *)(o + 16 * k + 8), hi);
}

#define IG(name) name##_m16
#define IG_T int16_t
#define IG_L 16
#define IG_ADD(a, b) _mm256_add_epi16(a, b)
#define IG_MUL(a, b) _mm256_mullo_epi16(a, b)
#define IG_SET1(c) _mm256_set1_epi16((short)(c))
#define IG_WIDEN 1
#define IG_WSTORE(o, i, v, s, k, nb, tm) wstore_m16(o, i, v, s, k)
#define IG_PORTABLE qkf__spike_gather_rows_m16_portable
#include "spike_int_gather_internal.h"

int64_t qkf__spike_gather_rows_i16_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                        const int16_t *w, int32_t stride, int width)
{
    return gather_rows_i16(rows, nrow, off, w, stride, width, NULL, 0);
}

int64_t qkf__spike_gather_rows_i32_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                        const int32_t *w, int32_t stride, int width)
{
    return gather_rows_i32(rows, nrow, off, w, stride, width, NULL, 0);
}

int64_t qkf__spike_gather_rows_m16_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                        const int16_t *w, int32_t stride, int width,
                                        const int32_t *shift, int wmax)
{
    return gather_rows_m16(rows, nrow, off, w, stride, width, shift, wmax);
}

/* ---- the integer LIF ------------------------------------------------------------------------ */

typedef struct {
    __m256i cur_max, ncur_max, mem_max, nmem_max, keep, dlo, ge;
    __m128i cur_sh, mem_sh, cshift, dshift, dbits;
    int dmul;
} lifk;

static lifk lif_consts(const qkf_ilif *p, const qkf__ilif_k *k)
{
    lifk q;
    q.cur_max = _mm256_set1_epi32(k->cur_max), q.ncur_max = _mm256_set1_epi32(-k->cur_max);
    q.mem_max = _mm256_set1_epi32(k->mem_max), q.nmem_max = _mm256_set1_epi32(-k->mem_max);
    q.keep = _mm256_set1_epi32(p->decay_keep), q.dlo = _mm256_set1_epi32(k->dlo);
    q.ge = _mm256_set1_epi32(p->threshold_ge ? 1 : 0);
    q.cur_sh = _mm_cvtsi32_si128(k->cur_sh), q.mem_sh = _mm_cvtsi32_si128(k->mem_sh);
    q.cshift = _mm_cvtsi32_si128(p->current_shift), q.dshift = _mm_cvtsi32_si128(k->dshift);
    q.dbits = _mm_cvtsi32_si128(p->decay_bits);
    q.dmul = k->dmul;
    return q;
}

static inline __m256i sext(__m256i x, __m128i sh)
{
    return _mm256_sra_epi32(_mm256_sll_epi32(x, sh), sh);
}

static inline __m256i clamp(__m256i x, __m256i lo, __m256i hi)
{
    return _mm256_min_epi32(_mm256_max_epi32(x, lo), hi);
}

/* One step of 8 lanes (qkf__ilif_step32f lane by lane; f: qkf__ilif_flags, a constant after
 * inlining, as on the AVX-512 path); thc = theta - ge (h > thc); returns the 8 spike bits. */
static inline __attribute__((always_inline)) unsigned step8(const lifk *q, __m256i s, __m256i *u,
                                                            __m256i b, __m256i thc, __m256i th,
                                                            const int f)
{
    __m256i a = s;
    if (f & QKF__LF_CS)
        a = sext(a, q->cur_sh);
    if (f & QKF__LF_CC)
        a = clamp(a, q->ncur_max, q->cur_max);
    __m256i v = *u, av = _mm256_abs_epi32(v), d;
    if (q->dmul)
        d = _mm256_add_epi32(
            _mm256_mullo_epi32(_mm256_srl_epi32(av, q->dbits), q->keep),
            _mm256_srl_epi32(_mm256_mullo_epi32(_mm256_and_si256(av, q->dlo), q->keep), q->dbits));
    else
        d = _mm256_srl_epi32(av, q->dshift);
    d = _mm256_sign_epi32(d, v); /* -d where v < 0 (d is 0 where v is) */
    __m256i h = _mm256_add_epi32(_mm256_add_epi32(d, _mm256_sll_epi32(a, q->cshift)), b);
    if (f & QKF__LF_MS)
        h = sext(h, q->mem_sh);
    if (f & QKF__LF_MC)
        h = clamp(h, q->nmem_max, q->mem_max);
    __m256i sp = _mm256_cmpgt_epi32(h, thc);
    if (f & QKF__LF_RS) {
        __m256i r = _mm256_sub_epi32(h, th);
        if (f & QKF__LF_MS)
            r = sext(r, q->mem_sh);
        if (f & QKF__LF_MC)
            r = clamp(r, q->nmem_max, q->mem_max);
        *u = _mm256_blendv_epi8(h, r, sp);
    } else {
        *u = _mm256_andnot_si256(sp, h);
    }
    return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(sp));
}

static inline __m256i load_sums(const void *x, int x16, int c)
{
    if (x16)
        return _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((const int16_t *)x + c)));
    return _mm256_loadu_si256((const __m256i *)(const void *)((const int32_t *)x + c));
}

static inline __attribute__((always_inline)) void
ilif_seq(uint16_t *const *mask, const void *const *x, const int x16, int R, int C,
         const qkf_ilif *p, int32_t *v, const lifk *qp, const int f)
{
    lifk q = *qp;
    int c0 = 0;
    for (; c0 + 16 <= C; c0 += 16) { /* one mask word: two vectors, two chains */
        __m256i u[2], b[2], th[2], thc[2];
        for (int k = 0; k < 2; k++) {
            u[k] = v ? _mm256_loadu_si256((const __m256i *)(const void *)(v + c0 + 8 * k))
                     : _mm256_setzero_si256();
            b[k] = _mm256_loadu_si256((const __m256i *)(const void *)(p->bias + c0 + 8 * k));
            th[k] = _mm256_loadu_si256((const __m256i *)(const void *)(p->theta + c0 + 8 * k));
            thc[k] = _mm256_sub_epi32(th[k], q.ge);
        }
        for (int r = 0; r < R; r++) {
            unsigned lo = step8(&q, load_sums(x[r], x16, c0), &u[0], b[0], thc[0], th[0], f);
            unsigned hi = step8(&q, load_sums(x[r], x16, c0 + 8), &u[1], b[1], thc[1], th[1], f);
            mask[r][c0 / 16] = (uint16_t)(lo | hi << 8);
        }
        if (v)
            for (int k = 0; k < 2; k++)
                _mm256_storeu_si256((__m256i *)(void *)(v + c0 + 8 * k), u[k]);
    }
    if (c0 < C) { /* the last partial word, lane by lane */
        qkf__ilif_k k = qkf__ilif_consts(p);
        int nl = C - c0;
        int32_t u[16];
        for (int j = 0; j < nl; j++)
            u[j] = v ? v[c0 + j] : 0;
        for (int r = 0; r < R; r++) {
            unsigned m = 0;
            for (int j = 0; j < nl; j++) {
                int32_t s = x16 ? ((const int16_t *)x[r])[c0 + j] : ((const int32_t *)x[r])[c0 + j];
                m |= (unsigned)qkf__ilif_step32(p, &k, c0 + j, s, &u[j]) << j;
            }
            mask[r][c0 / 16] = (uint16_t)m;
        }
        if (v)
            memcpy(v + c0, u, (size_t)nl * sizeof *u);
    }
}

/* A copy per input width and combination of flags (as the AVX-512 path). */
#define ILIF_CALL(X16, F) ilif_seq(mask, x, X16, R, C, p, v, &q, F)

void qkf__spike_ilif_seq_avx2(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                              const qkf_ilif *p, int32_t *v)
{
    if (!p->narrow) {
        qkf__spike_ilif_seq_wide(mask, x, x16, R, C, p, v);
        return;
    }
    qkf__ilif_k k = qkf__ilif_consts(p);
    lifk q = lif_consts(p, &k);
    QKF__ILIF_SWITCH(qkf__ilif_flags(p, &k, x16), x16, ILIF_CALL)
}
#undef ILIF_CALL

/* ---- max pooling ---------------------------------------------------------------------------- */

void qkf__spike_max_i32_avx2(int32_t *out, const int32_t *const *src, int n, int C)
{
    int c = 0;
    for (; c + 8 <= C; c += 8) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(const void *)(src[0] + c));
        for (int k = 1; k < n; k++)
            m = _mm256_max_epi32(m, _mm256_loadu_si256((const __m256i *)(const void *)(src[k] + c)));
        _mm256_storeu_si256((__m256i *)(void *)(out + c), m);
    }
    for (; c < C; c++) {
        int32_t m = src[0][c];
        for (int k = 1; k < n; k++)
            m = src[k][c] > m ? src[k][c] : m;
        out[c] = m;
    }
}
