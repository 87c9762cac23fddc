/* AVX-512 path of the integer event kernels (kernels/spike_int.h), compiled with AVX-512 flags
 * (CMake) and called only after the run-time check of kernels/isa.h.
 *
 * The int16 gather keeps 32 lanes per register: a weight row of 64 channels is two 512-bit loads
 * and two adds, where the float gather needs four of each (the load ports bound the gathers, so
 * this is the integer engine's advantage). The LIF steps 16 int32 lanes. */
#include <immintrin.h>
#include <string.h>

#include "spike_int_internal.h"

/* ---- gathers: the template, once per element type ---------------------------------------- */

#define IG(name) name##_i16
#define IG_T int16_t
#define IG_V __m512i
#define IG_M __mmask32
#define IG_L 32
#define IG_ADD(a, b) _mm512_add_epi16(a, b)
#define IG_MUL(a, b) _mm512_mullo_epi16(a, b)
#define IG_SET1(c) _mm512_set1_epi16((short)(c))
#define IG_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define IG_STORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define IG_MASKED 1
#define IG_LOADM(m, p) _mm512_maskz_loadu_epi16(m, (const void *)(p))
#define IG_STOREM(p, m, v) _mm512_mask_storeu_epi16((void *)(p), m, v)
#define IG_TAIL(n) ((n) >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n)) - 1u))
#define IG_ZERO _mm512_setzero_si512()
#define IG_NBMAX 8
#define IG_PORTABLE qkf__spike_gather_rows_i16_portable
#include "spike_int_gather_internal.h"
#undef IG
#undef IG_T
#undef IG_M
#undef IG_L
#undef IG_ADD
#undef IG_MUL
#undef IG_SET1
#undef IG_LOADM
#undef IG_STOREM
#undef IG_TAIL
#undef IG_PORTABLE

#define IG(name) name##_i32
#define IG_T int32_t
#define IG_M __mmask16
#define IG_L 16
#define IG_ADD(a, b) _mm512_add_epi32(a, b)
#define IG_MUL(a, b) _mm512_mullo_epi32(a, b)
#define IG_SET1(c) _mm512_set1_epi32((int)(c))
#define IG_LOADM(m, p) _mm512_maskz_loadu_epi32(m, (const void *)(p))
#define IG_STOREM(p, m, v) _mm512_mask_storeu_epi32((void *)(p), m, v)
#define IG_TAIL(n) ((n) >= 16 ? (__mmask16)0xFFFFu : (__mmask16)((1u << (n)) - 1u))
#define IG_PORTABLE qkf__spike_gather_rows_i32_portable
#include "spike_int_gather_internal.h"
#undef IG
#undef IG_T
#undef IG_M
#undef IG_L
#undef IG_ADD
#undef IG_MUL
#undef IG_SET1
#undef IG_LOADM
#undef IG_STOREM
#undef IG_TAIL
#undef IG_PORTABLE

/* The mantissa gather: int16 lanes as the int16 gather; at a row's end each vector of 32 sums is
 * widened to two vectors of 16 int32, shifted per column and added to the int32 init. */
static inline __attribute__((always_inline)) void wstore_m16(int32_t *o, const int32_t *i,
                                                             __m512i v, const int32_t *s, int k,
                                                             int nb, __mmask32 tm)
{
    __mmask32 m = k == nb - 1 ? tm : (__mmask32)0xFFFFFFFFu;
    __mmask16 ml = (__mmask16)m, mh = (__mmask16)(m >> 16);
    __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(v));
    __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(v, 1));
    lo = _mm512_sllv_epi32(lo, _mm512_maskz_loadu_epi32(ml, s + 32 * k));
    hi = _mm512_sllv_epi32(hi, _mm512_maskz_loadu_epi32(mh, s + 32 * k + 16));
    if (i) {
        lo = _mm512_add_epi32(lo, _mm512_maskz_loadu_epi32(ml, i + 32 * k));
        hi = _mm512_add_epi32(hi, _mm512_maskz_loadu_epi32(mh, i + 32 * k + 16));
    }
    _mm512_mask_storeu_epi32(o + 32 * k, ml, lo);
    _mm512_mask_storeu_epi32(o + 32 * k + 16, mh, hi);
}

#define IG(name) name##_m16
#define IG_T int16_t
#define IG_M __mmask32
#define IG_L 32
#define IG_ADD(a, b) _mm512_add_epi16(a, b)
#define IG_MUL(a, b) _mm512_mullo_epi16(a, b)
#define IG_SET1(c) _mm512_set1_epi16((short)(c))
#define IG_LOADM(m, p) _mm512_maskz_loadu_epi16(m, (const void *)(p))
#define IG_STOREM(p, m, v) _mm512_mask_storeu_epi16((void *)(p), m, v)
#define IG_TAIL(n) ((n) >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n)) - 1u))
#define IG_WIDEN 1
#define IG_WSTORE(o, i, v, s, k, nb, tm) wstore_m16(o, i, v, s, k, nb, tm)
#define IG_PORTABLE qkf__spike_gather_rows_m16_portable
#include "spike_int_gather_internal.h"

int64_t qkf__spike_gather_rows_i16_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                          const int16_t *w, int32_t stride, int width)
{
    return gather_rows_i16(rows, nrow, off, w, stride, width, NULL, 0);
}

int64_t qkf__spike_gather_rows_i32_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                          const int32_t *w, int32_t stride, int width)
{
    return gather_rows_i32(rows, nrow, off, w, stride, width, NULL, 0);
}

int64_t qkf__spike_gather_rows_m16_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                          const int16_t *w, int32_t stride, int width,
                                          const int32_t *shift, int wmax)
{
    return gather_rows_m16(rows, nrow, off, w, stride, width, shift, wmax);
}

/* ---- the integer LIF ------------------------------------------------------------------------ */

/* The constants of a narrow layer's step, in vectors. */
typedef struct {
    __m512i cur_max, ncur_max, mem_max, nmem_max, keep, dlo, ge;
    __m128i cur_sh, mem_sh, cshift, dshift, dbits;
    int dmul;
} lifk;

static lifk lif_consts(const qkf_ilif *p, const qkf__ilif_k *k)
{
    lifk q;
    q.cur_max = _mm512_set1_epi32(k->cur_max), q.ncur_max = _mm512_set1_epi32(-k->cur_max);
    q.mem_max = _mm512_set1_epi32(k->mem_max), q.nmem_max = _mm512_set1_epi32(-k->mem_max);
    q.keep = _mm512_set1_epi32(p->decay_keep), q.dlo = _mm512_set1_epi32(k->dlo);
    q.ge = _mm512_set1_epi32(p->threshold_ge ? 1 : 0);
    q.cur_sh = _mm_cvtsi32_si128(k->cur_sh), q.mem_sh = _mm_cvtsi32_si128(k->mem_sh);
    q.cshift = _mm_cvtsi32_si128(p->current_shift), q.dshift = _mm_cvtsi32_si128(k->dshift);
    q.dbits = _mm_cvtsi32_si128(p->decay_bits);
    q.dmul = k->dmul;
    return q;
}

/* x << sh then >> sh (arithmetic): the wrap to 32 - sh bits (sh 0: unchanged). */
static inline __m512i sext(__m512i x, __m128i sh)
{
    return _mm512_sra_epi32(_mm512_sll_epi32(x, sh), sh);
}

static inline __m512i clamp(__m512i x, __m512i lo, __m512i hi)
{
    return _mm512_min_epi32(_mm512_max_epi32(x, lo), hi);
}

/* One step of 16 lanes (qkf__ilif_step32f, lane by lane): sums s, membranes *u, bias b, the
 * threshold for the comparison thc (theta - ge: h > thc) and for the reset th; returns the spike
 * mask. f: qkf__ilif_flags (a constant after inlining: the reductions that are identities, and
 * the reset that is not taken, are left out). */
static inline __attribute__((always_inline)) __mmask16 step16(const lifk *q, __m512i s, __m512i *u,
                                                              __m512i b, __m512i thc, __m512i th,
                                                              const int f)
{
    __m512i a = s;
    if (f & QKF__LF_CS)
        a = sext(a, q->cur_sh);
    if (f & QKF__LF_CC)
        a = clamp(a, q->ncur_max, q->cur_max);
    __m512i v = *u, av = _mm512_abs_epi32(v), d;
    if (q->dmul)
        d = _mm512_add_epi32(
            _mm512_mullo_epi32(_mm512_srl_epi32(av, q->dbits), q->keep),
            _mm512_srl_epi32(_mm512_mullo_epi32(_mm512_and_si512(av, q->dlo), q->keep), q->dbits));
    else
        d = _mm512_srl_epi32(av, q->dshift);
    d = _mm512_mask_sub_epi32(d, _mm512_movepi32_mask(v), _mm512_setzero_si512(), d);
    __m512i h = _mm512_add_epi32(_mm512_add_epi32(d, _mm512_sll_epi32(a, q->cshift)), b);
    if (f & QKF__LF_MS)
        h = sext(h, q->mem_sh);
    if (f & QKF__LF_MC)
        h = clamp(h, q->nmem_max, q->mem_max);
    __mmask16 sp = _mm512_cmpgt_epi32_mask(h, thc);
    if (f & QKF__LF_RS) {
        __m512i r = _mm512_sub_epi32(h, th);
        if (f & QKF__LF_MS)
            r = sext(r, q->mem_sh);
        if (f & QKF__LF_MC)
            r = clamp(r, q->nmem_max, q->mem_max);
        *u = _mm512_mask_mov_epi32(h, sp, r);
    } else {
        *u = _mm512_maskz_mov_epi32((__mmask16)~sp, h);
    }
    return sp;
}

static inline __m512i load_sums(const void *x, int x16, int c, __mmask16 lanes)
{
    if (x16)
        return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(lanes, (const int16_t *)x + c));
    return _mm512_maskz_loadu_epi32(lanes, (const int32_t *)x + c);
}

static inline __attribute__((always_inline)) void
ilif_seq(uint16_t *const *mask, const void *const *x, const int x16, int R, int C,
         const qkf_ilif *p, int32_t *v, const lifk *qp, const int f)
{
    lifk q = *qp;
    int c0 = 0;
    /* four vectors of 16 channels side by side: a neuron's steps depend on each other, so four
     * independent chains hide the latency; the membranes stay in registers for all R steps */
    for (; c0 + 64 <= C; c0 += 64) {
        __m512i u[4], b[4], th[4], thc[4];
        for (int k = 0; k < 4; k++) {
            u[k] = v ? _mm512_loadu_si512(v + c0 + 16 * k) : _mm512_setzero_si512();
            b[k] = _mm512_loadu_si512(p->bias + c0 + 16 * k);
            th[k] = _mm512_loadu_si512(p->theta + c0 + 16 * k);
            thc[k] = _mm512_sub_epi32(th[k], q.ge);
        }
        for (int r = 0; r < R; r++) {
            uint16_t *m = mask[r] + c0 / 16;
            for (int k = 0; k < 4; k++)
                m[k] = (uint16_t)step16(&q, load_sums(x[r], x16, c0 + 16 * k, 0xFFFF), &u[k],
                                        b[k], thc[k], th[k], f);
        }
        if (v)
            for (int k = 0; k < 4; k++)
                _mm512_storeu_si512(v + c0 + 16 * k, u[k]);
    }
    for (; c0 < C; c0 += 16) {
        int rem = C - c0;
        __mmask16 lanes = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __m512i u = v ? _mm512_maskz_loadu_epi32(lanes, v + c0) : _mm512_setzero_si512();
        __m512i b = _mm512_maskz_loadu_epi32(lanes, p->bias + c0);
        __m512i th = _mm512_maskz_loadu_epi32(lanes, p->theta + c0);
        __m512i thc = _mm512_sub_epi32(th, q.ge);
        for (int r = 0; r < R; r++)
            mask[r][c0 / 16] = (uint16_t)(
                step16(&q, load_sums(x[r], x16, c0, lanes), &u, b, thc, th, f) & lanes);
        if (v)
            _mm512_mask_storeu_epi32(v + c0, lanes, u);
    }
}

/* A copy of the sequence per input width and combination of flags: the layers of one model use
 * one or two of them (Loihi: int16 sums with no reduction at all; pooled int32 sums with the
 * current's wrap). */
#define ILIF_CALL(X16, F) ilif_seq(mask, x, X16, R, C, p, v, &q, F)

void qkf__spike_ilif_seq_avx512(uint16_t *const *mask, const void *const *x, int x16, int R,
                                int C, const qkf_ilif *p, int32_t *v)
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

void qkf__spike_max_i32_avx512(int32_t *out, const int32_t *const *src, int n, int C)
{
    for (int c = 0; c < C; c += 16) {
        int rem = C - c;
        __mmask16 lanes = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __m512i m = _mm512_maskz_loadu_epi32(lanes, src[0] + c);
        for (int k = 1; k < n; k++)
            m = _mm512_max_epi32(m, _mm512_maskz_loadu_epi32(lanes, src[k] + c));
        _mm512_mask_storeu_epi32(out + c, lanes, m);
    }
}
