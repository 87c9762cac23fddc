/* Integer event kernels: the references, the portable paths (fixed-width blocks that GCC and
 * Clang vectorise for SSE2 and NEON) and the dispatch to the AVX-512 and AVX2 paths
 * (spike_int_avx512.c, spike_int_avx2.c) through kernels/isa.h. Layouts and the arithmetic are
 * described in spike_int.h. */
#include "spike_int.h"

#include <string.h>

#include "isa.h"
#include "spike_int_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#define QKF_X86 1 /* CMake compiles the *_avx512.c / *_avx2.c files */
#endif

/* ---- gathers -------------------------------------------------------------------------------- */

int64_t qkf_spike_gather_rows_i16_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const int16_t *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++) {
        const qkf_spike_row *x = &rows[r];
        int16_t *out = (int16_t *)(void *)x->out + off;
        const int16_t *init = x->init ? (const int16_t *)(const void *)x->init + off : NULL;
        for (int j = 0; j < width; j++) {
            uint16_t acc = init ? (uint16_t)init[j] : 0u; /* unsigned: wraps modulo 2^16 */
            for (int i = 0; i < x->seg.n; i++) {
                uint16_t wv = (uint16_t)w[x->seg.base + (int32_t)x->seg.ch[i] * stride + j];
                uint16_t c = x->seg.cnt ? x->seg.cnt[i] : 1u;
                acc = (uint16_t)(acc + (uint16_t)((uint32_t)wv * c));
            }
            out[j] = (int16_t)acc;
        }
        spikes += qkf__row_spikes(x);
    }
    return spikes;
}

int64_t qkf_spike_gather_rows_i32_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const int32_t *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++) {
        const qkf_spike_row *x = &rows[r];
        int32_t *out = (int32_t *)(void *)x->out + off;
        const int32_t *init = x->init ? (const int32_t *)(const void *)x->init + off : NULL;
        for (int j = 0; j < width; j++) {
            uint32_t acc = init ? (uint32_t)init[j] : 0u; /* unsigned: wraps modulo 2^32 */
            for (int i = 0; i < x->seg.n; i++) {
                uint32_t wv = (uint32_t)w[x->seg.base + (int32_t)x->seg.ch[i] * stride + j];
                uint32_t c = x->seg.cnt ? x->seg.cnt[i] : 1u;
                acc += wv * c;
            }
            out[j] = (int32_t)acc;
        }
        spikes += qkf__row_spikes(x);
    }
    return spikes;
}

#define PBLK32 64 /* the wide mantissa row's block */

/* Portable: fixed passes of 16-byte GCC vectors (SSE2 / NEON registers) held in registers while a
 * row walks its list: up to 8 vectors a pass (8 int16 or 4 int32 lanes each; 16 registers), the
 * vectors of a row split into passes of 8, 4, 2 and 1, the columns beyond the last whole vector
 * one by one. Unsigned lanes: wrapping, as the sums are defined. */
typedef uint16_t pv16 __attribute__((vector_size(16)));
typedef uint32_t pv32 __attribute__((vector_size(16)));

#define PG_PASS(NAME, V, E, NV)                                                                  \
    static inline __attribute__((always_inline)) void NAME(V *acc, const E *wb, int32_t stride,  \
                                                           const uint16_t *ch,                   \
                                                           const uint16_t *cnt, int n1, int n)   \
    {                                                                                            \
        enum { L = 16 / sizeof(E) };                                                             \
        int i = 0;                                                                               \
        for (; i < n1; i++) {                                                                    \
            const E *p = wb + (int32_t)ch[i] * stride;                                           \
            for (int k = 0; k < NV; k++) {                                                       \
                V w;                                                                             \
                memcpy(&w, p + L * k, sizeof w);                                                 \
                acc[k] += w;                                                                     \
            }                                                                                    \
        }                                                                                        \
        for (; i < n; i++) {                                                                     \
            const E *p = wb + (int32_t)ch[i] * stride;                                           \
            V c = (V){0} + (E)cnt[i];                                                            \
            for (int k = 0; k < NV; k++) {                                                       \
                V w;                                                                             \
                memcpy(&w, p + L * k, sizeof w);                                                 \
                acc[k] += w * c;                                                                 \
            }                                                                                    \
        }                                                                                        \
    }
PG_PASS(pass16_8, pv16, uint16_t, 8)
PG_PASS(pass16_4, pv16, uint16_t, 4)
PG_PASS(pass16_2, pv16, uint16_t, 2)
PG_PASS(pass16_1, pv16, uint16_t, 1)
PG_PASS(pass32_8, pv32, uint32_t, 8)
PG_PASS(pass32_4, pv32, uint32_t, 4)
PG_PASS(pass32_2, pv32, uint32_t, 2)
PG_PASS(pass32_1, pv32, uint32_t, 1)

/* One row's columns [j, j + nv * L) in one pass of nv (8, 4, 2 or 1) vectors: the sums of the
 * events into acc (from zero). */
static void pass16(pv16 *acc, int nv, const uint16_t *wb, int32_t stride, const qkf_spike_row *x)
{
    const uint16_t *ch = x->seg.ch, *cnt = x->seg.cnt;
    int n = x->seg.n, n1 = cnt ? x->n1 : n;
    for (int k = 0; k < nv; k++)
        acc[k] = (pv16){0};
    if (nv == 8)
        pass16_8(acc, wb, stride, ch, cnt, n1, n);
    else if (nv == 4)
        pass16_4(acc, wb, stride, ch, cnt, n1, n);
    else if (nv == 2)
        pass16_2(acc, wb, stride, ch, cnt, n1, n);
    else
        pass16_1(acc, wb, stride, ch, cnt, n1, n);
}

static void pass32(pv32 *acc, int nv, const uint32_t *wb, int32_t stride, const qkf_spike_row *x)
{
    const uint16_t *ch = x->seg.ch, *cnt = x->seg.cnt;
    int n = x->seg.n, n1 = cnt ? x->n1 : n;
    for (int k = 0; k < nv; k++)
        acc[k] = (pv32){0};
    if (nv == 8)
        pass32_8(acc, wb, stride, ch, cnt, n1, n);
    else if (nv == 4)
        pass32_4(acc, wb, stride, ch, cnt, n1, n);
    else if (nv == 2)
        pass32_2(acc, wb, stride, ch, cnt, n1, n);
    else
        pass32_1(acc, wb, stride, ch, cnt, n1, n);
}

/* The vectors of a pass starting at vector v of vecs: 8, 4, 2 or 1. */
static inline int pass_vecs(int left)
{
    return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

/* The sum of one column j of a row (the columns beyond the last whole vector), modulo 2^32. */
static inline uint32_t col_sum(const qkf_spike_row *x, const void *w, int e16, int32_t stride,
                               int j)
{
    uint32_t acc = 0;
    for (int i = 0; i < x->seg.n; i++) {
        int64_t at = x->seg.base + (int64_t)x->seg.ch[i] * stride + j;
        uint32_t wv = e16 ? (uint32_t)(int32_t)((const int16_t *)w)[at] : ((const uint32_t *)w)[at];
        acc += wv * (x->seg.cnt ? x->seg.cnt[i] : 1u);
    }
    return acc;
}

int64_t qkf__spike_gather_rows_i16_portable(const qkf_spike_row *rows, int nrow, int64_t off,
                                            const int16_t *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    int vecs = width / 8;
    for (int r = 0; r < nrow; r++) {
        const qkf_spike_row *x = &rows[r];
        uint16_t *out = (uint16_t *)(void *)x->out + off;
        const uint16_t *init = x->init ? (const uint16_t *)(const void *)x->init + off : NULL;
        const uint16_t *wb = (const uint16_t *)(const void *)w + x->seg.base;
        for (int v = 0; v < vecs;) {
            int nv = pass_vecs(vecs - v);
            pv16 acc[8];
            pass16(acc, nv, wb + 8 * v, stride, x);
            for (int k = 0; k < nv; k++) {
                pv16 a = acc[k];
                if (init) {
                    pv16 i0;
                    memcpy(&i0, init + 8 * (v + k), sizeof i0);
                    a += i0;
                }
                memcpy(out + 8 * (v + k), &a, sizeof a);
            }
            v += nv;
        }
        for (int j = 8 * vecs; j < width; j++)
            out[j] = (uint16_t)((init ? init[j] : 0u) + col_sum(x, w, 1, stride, j));
        spikes += qkf__row_spikes(x);
    }
    return spikes;
}

int64_t qkf__spike_gather_rows_i32_portable(const qkf_spike_row *rows, int nrow, int64_t off,
                                            const int32_t *w, int32_t stride, int width)
{
    int64_t spikes = 0;
    int vecs = width / 4;
    for (int r = 0; r < nrow; r++) {
        const qkf_spike_row *x = &rows[r];
        uint32_t *out = (uint32_t *)(void *)x->out + off;
        const uint32_t *init = x->init ? (const uint32_t *)(const void *)x->init + off : NULL;
        const uint32_t *wb = (const uint32_t *)(const void *)w + x->seg.base;
        for (int v = 0; v < vecs;) {
            int nv = pass_vecs(vecs - v);
            pv32 acc[8];
            pass32(acc, nv, wb + 4 * v, stride, x);
            for (int k = 0; k < nv; k++) {
                pv32 a = acc[k];
                if (init) {
                    pv32 i0;
                    memcpy(&i0, init + 4 * (v + k), sizeof i0);
                    a += i0;
                }
                memcpy(out + 4 * (v + k), &a, sizeof a);
            }
            v += nv;
        }
        for (int j = 4 * vecs; j < width; j++)
            out[j] = (init ? init[j] : 0u) + col_sum(x, w, 0, stride, j);
        spikes += qkf__row_spikes(x);
    }
    return spikes;
}

/* ---- the mantissa gather -------------------------------------------------------------------- */

int64_t qkf_spike_gather_rows_m16_ref(const qkf_spike_row *rows, int nrow, int64_t off,
                                      const int16_t *w, int32_t stride, int width,
                                      const int32_t *shift, int wmax)
{
    (void)wmax;
    int64_t spikes = 0;
    for (int r = 0; r < nrow; r++) {
        const qkf_spike_row *x = &rows[r];
        int32_t *out = (int32_t *)(void *)x->out + off;
        const int32_t *init = x->init ? (const int32_t *)(const void *)x->init + off : NULL;
        for (int j = 0; j < width; j++) {
            uint32_t acc = 0u; /* unsigned: wraps modulo 2^32 */
            for (int i = 0; i < x->seg.n; i++) {
                uint32_t wv = (uint32_t)(int32_t)w[x->seg.base + (int32_t)x->seg.ch[i] * stride + j];
                uint32_t c = x->seg.cnt ? x->seg.cnt[i] : 1u;
                acc += wv * c;
            }
            out[j] = (int32_t)((init ? (uint32_t)init[j] : 0u) + (acc << shift[j]));
        }
        spikes += qkf__row_spikes(x);
    }
    return spikes;
}

int64_t qkf__spike_gather_row_m16_wide(const qkf_spike_row *x, int64_t off, const int16_t *w,
                                       int32_t stride, int width, const int32_t *shift)
{
    int32_t *out = (int32_t *)(void *)x->out + off;
    const int32_t *init = x->init ? (const int32_t *)(const void *)x->init + off : NULL;
    const uint16_t *ch = x->seg.ch, *cnt = x->seg.cnt;
    for (int j0 = 0; j0 < width; j0 += PBLK32) {
        int nb = width - j0 < PBLK32 ? width - j0 : PBLK32;
        uint32_t acc[PBLK32];
        memset(acc, 0, sizeof acc);
        const int16_t *wb = w + x->seg.base + j0;
        for (int i = 0; i < x->seg.n; i++) {
            const int16_t *p = wb + (int32_t)ch[i] * stride;
            uint32_t c = cnt ? cnt[i] : 1u;
            for (int j = 0; j < nb; j++)
                acc[j] += (uint32_t)(int32_t)p[j] * c;
        }
        for (int j = 0; j < nb; j++)
            out[j0 + j] =
                (int32_t)((init ? (uint32_t)init[j0 + j] : 0u) + (acc[j] << shift[j0 + j]));
    }
    return qkf__row_spikes(x);
}

/* Portable: a row whose mantissa sum fits int16 in passes of int16 vectors (as the int16
 * gather), widened, shifted and added to the int32 init at the pass's end; others in int32. */
int64_t qkf__spike_gather_rows_m16_portable(const qkf_spike_row *rows, int nrow, int64_t off,
                                            const int16_t *w, int32_t stride, int width,
                                            const int32_t *shift, int wmax)
{
    int64_t spikes = 0;
    int vecs = width / 8;
    for (int r = 0; r < nrow; r++) {
        const qkf_spike_row *x = &rows[r];
        const uint16_t *cnt = x->seg.cnt;
        int64_t sum = 0; /* the sum of counts: whether the mantissa sum fits int16 */
        for (int i = cnt ? x->n1 : x->seg.n; i < x->seg.n; i++)
            sum += cnt[i];
        sum += cnt ? x->n1 : x->seg.n;
        if (sum * wmax > 32767) {
            spikes += qkf__spike_gather_row_m16_wide(x, off, w, stride, width, shift);
            continue;
        }
        int32_t *out = (int32_t *)(void *)x->out + off;
        const int32_t *init = x->init ? (const int32_t *)(const void *)x->init + off : NULL;
        const uint16_t *wb = (const uint16_t *)(const void *)w + x->seg.base;
        for (int v = 0; v < vecs;) {
            int nv = pass_vecs(vecs - v);
            pv16 acc[8];
            pass16(acc, nv, wb + 8 * v, stride, x);
            int16_t t[64];
            memcpy(t, acc, (size_t)nv * sizeof *acc);
            for (int j = 0, j0 = 8 * v; j < 8 * nv; j++) /* the exact sum, sign-extended */
                out[j0 + j] = (int32_t)((init ? (uint32_t)init[j0 + j] : 0u) +
                                        ((uint32_t)(int32_t)t[j] << shift[j0 + j]));
            v += nv;
        }
        for (int j = 8 * vecs; j < width; j++)
            out[j] = (int32_t)((init ? (uint32_t)init[j] : 0u) +
                               ((uint32_t)(int32_t)(int16_t)(uint16_t)col_sum(x, w, 1, stride, j)
                                << shift[j]));
        spikes += sum;
    }
    return spikes;
}

int64_t qkf_spike_gather_rows_m16(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const int16_t *w, int32_t stride, int width,
                                  const int32_t *shift, int wmax)
{
    switch (qkf_isa_current()) {
#ifdef QKF_X86
    case QKF_ISA_AVX512:
        return qkf__spike_gather_rows_m16_avx512(rows, nrow, off, w, stride, width, shift, wmax);
    case QKF_ISA_AVX2:
        return qkf__spike_gather_rows_m16_avx2(rows, nrow, off, w, stride, width, shift, wmax);
#endif
    default:
        return qkf__spike_gather_rows_m16_portable(rows, nrow, off, w, stride, width, shift, wmax);
    }
}

int64_t qkf_spike_gather_rows_i16(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const int16_t *w, int32_t stride, int width)
{
    switch (qkf_isa_current()) {
#ifdef QKF_X86
    case QKF_ISA_AVX512:
        return qkf__spike_gather_rows_i16_avx512(rows, nrow, off, w, stride, width);
    case QKF_ISA_AVX2:
        return qkf__spike_gather_rows_i16_avx2(rows, nrow, off, w, stride, width);
#endif
    default:
        return qkf__spike_gather_rows_i16_portable(rows, nrow, off, w, stride, width);
    }
}

int64_t qkf_spike_gather_rows_i32(const qkf_spike_row *rows, int nrow, int64_t off,
                                  const int32_t *w, int32_t stride, int width)
{
    switch (qkf_isa_current()) {
#ifdef QKF_X86
    case QKF_ISA_AVX512:
        return qkf__spike_gather_rows_i32_avx512(rows, nrow, off, w, stride, width);
    case QKF_ISA_AVX2:
        return qkf__spike_gather_rows_i32_avx2(rows, nrow, off, w, stride, width);
#endif
    default:
        return qkf__spike_gather_rows_i32_portable(rows, nrow, off, w, stride, width);
    }
}

/* ---- the integer LIF ------------------------------------------------------------------------ */

void qkf_spike_ilif_prepare(qkf_ilif *p, int C)
{
    int64_t bmax = 0, tmax = 0;
    for (int c = 0; c < C; c++) {
        int64_t b = p->bias[c] < 0 ? -(int64_t)p->bias[c] : p->bias[c];
        int64_t t = p->theta[c] < 0 ? -(int64_t)p->theta[c] : p->theta[c];
        bmax = b > bmax ? b : bmax;
        tmax = t > tmax ? t : tmax;
    }
    const int64_t lim = INT32_MAX;
    int ok = p->membrane_bits <= 31 && p->decay_bits <= 15 && p->decay_keep >= 0 &&
             p->decay_keep <= (int32_t)1 << p->decay_bits && p->current_bits <= 31 &&
             p->current_shift <= 31;
    p->hfree = 0;
    if (ok) {
        int64_t vmax = (int64_t)1 << (p->membrane_bits - 1);
        int64_t amax = ((int64_t)1 << (p->current_bits - 1)) << p->current_shift;
        ok = amax <= lim && vmax + amax + bmax <= lim && vmax + tmax <= lim;
        /* |decay(V)| <= (vmax * keep) >> decay_bits; H within +-(2^(bits - 1) - 1) is left
         * unchanged by both the wrap and the saturation, and so is H - theta within it */
        int64_t hmax = ((vmax * p->decay_keep) >> p->decay_bits) + amax + bmax;
        int64_t mlim = vmax - 1;
        p->hfree = ok && hmax <= mlim && (!p->reset_subtract || hmax + tmax <= mlim);
    }
    p->narrow = ok;
}

int qkf_spike_ilif_step(const qkf_ilif *p, int c, int32_t s, int32_t *v, int32_t *h)
{
    int64_t a = qkf_int_reduce(s, p->current_bits, p->current_wrap);
    int64_t u = *v, au = u < 0 ? -u : u;
    int64_t d = (au * p->decay_keep) >> p->decay_bits;
    if (u < 0)
        d = -d;
    int64_t H = qkf_int_reduce(d + a * ((int64_t)1 << p->current_shift) + p->bias[c],
                               p->membrane_bits, p->membrane_wrap);
    int64_t th = p->theta[c];
    int sp = p->threshold_ge ? H >= th : H > th;
    if (h)
        *h = (int32_t)H;
    *v = (int32_t)(sp ? (p->reset_subtract
                             ? qkf_int_reduce(H - th, p->membrane_bits, p->membrane_wrap)
                             : 0)
                      : H);
    return sp;
}

static void ilif_seq_ref(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                         const qkf_ilif *p, int32_t *v)
{
    for (int c = 0; c < C; c++) {
        int32_t u = v ? v[c] : 0;
        for (int r = 0; r < R; r++) {
            int32_t s = x16 ? ((const int16_t *)x[r])[c] : ((const int32_t *)x[r])[c];
            int sp = qkf_spike_ilif_step(p, c, s, &u, NULL);
            if (c % 16 == 0)
                mask[r][c / 16] = 0;
            if (sp)
                mask[r][c / 16] = (uint16_t)(mask[r][c / 16] | 1u << (c % 16));
        }
        if (v)
            v[c] = u;
    }
}

void qkf_spike_ilif_seq_i32_ref(uint16_t *const *mask, const int32_t *const *x, int R, int C,
                                const qkf_ilif *p, int32_t *v)
{
    ilif_seq_ref(mask, (const void *const *)x, 0, R, C, p, v);
}

void qkf_spike_ilif_seq_i16_ref(uint16_t *const *mask, const int16_t *const *x, int R, int C,
                                const qkf_ilif *p, int32_t *v)
{
    ilif_seq_ref(mask, (const void *const *)x, 1, R, C, p, v);
}

/* Layers that are not narrow: the reference's int64 arithmetic, on every path. */
void qkf__spike_ilif_seq_wide(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                              const qkf_ilif *p, int32_t *v)
{
    ilif_seq_ref(mask, x, x16, R, C, p, v);
}

/* Portable narrow path: 16 channels (one mask word) at a time, the membranes in a local array,
 * each step a fixed-width loop of the int32 step (vectorisable), then the mask word; a copy per
 * input width and combination of flags (qkf__ilif_flags), as the vector paths. */
static inline __attribute__((always_inline)) void
ilif_seq_portable_f(uint16_t *const *mask, const void *const *x, const int x16, int R, int C,
                    const qkf_ilif *p, int32_t *v, const qkf__ilif_k *kp, const int f)
{
    qkf__ilif_k k = *kp;
    for (int c0 = 0; c0 < C; c0 += 16) {
        int nl = C - c0 < 16 ? C - c0 : 16;
        int32_t u[16] = {0}, s[16] = {0}, b[16] = {0}, th[16] = {0}, thc[16];
        uint8_t sp[16] = {0};
        if (v)
            memcpy(u, v + c0, (size_t)nl * sizeof *u);
        memcpy(b, p->bias + c0, (size_t)nl * sizeof *b);
        memcpy(th, p->theta + c0, (size_t)nl * sizeof *th);
        for (int j = 0; j < 16; j++) /* h >= th is h > th - 1 (narrow: th - 1 fits) */
            thc[j] = th[j] - (p->threshold_ge ? 1 : 0);
        for (int r = 0; r < R; r++) {
            if (x16)
                for (int j = 0; j < nl; j++)
                    s[j] = ((const int16_t *)x[r])[c0 + j];
            else
                memcpy(s, (const int32_t *)x[r] + c0, (size_t)nl * sizeof *s);
            for (int j = 0; j < 16; j++) /* lanes past nl step zeros and are masked off */
                sp[j] = (uint8_t)qkf__ilif_step32f(p, &k, b[j], thc[j], th[j], s[j], &u[j], f);
            unsigned m = 0;
            for (int j = 0; j < nl; j++)
                m |= (unsigned)sp[j] << j;
            mask[r][c0 / 16] = (uint16_t)m;
        }
        if (v)
            memcpy(v + c0, u, (size_t)nl * sizeof *u);
    }
}

#define ILIF_CALL(X16, F) ilif_seq_portable_f(mask, x, X16, R, C, p, v, &k, F)

static void ilif_seq_portable(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                              const qkf_ilif *p, int32_t *v)
{
    if (!p->narrow) {
        ilif_seq_ref(mask, x, x16, R, C, p, v);
        return;
    }
    qkf__ilif_k k = qkf__ilif_consts(p);
    QKF__ILIF_SWITCH(qkf__ilif_flags(p, &k, x16), x16, ILIF_CALL)
}
#undef ILIF_CALL

static void ilif_seq(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                     const qkf_ilif *p, int32_t *v)
{
    switch (qkf_isa_current()) {
#ifdef QKF_X86
    case QKF_ISA_AVX512:
        qkf__spike_ilif_seq_avx512(mask, x, x16, R, C, p, v);
        return;
    case QKF_ISA_AVX2:
        qkf__spike_ilif_seq_avx2(mask, x, x16, R, C, p, v);
        return;
#endif
    default:
        ilif_seq_portable(mask, x, x16, R, C, p, v);
    }
}

void qkf_spike_ilif_seq_i32(uint16_t *const *mask, const int32_t *const *x, int R, int C,
                            const qkf_ilif *p, int32_t *v)
{
    ilif_seq(mask, (const void *const *)x, 0, R, C, p, v);
}

void qkf_spike_ilif_seq_i16(uint16_t *const *mask, const int16_t *const *x, int R, int C,
                            const qkf_ilif *p, int32_t *v)
{
    ilif_seq(mask, (const void *const *)x, 1, R, C, p, v);
}

/* ---- max pooling ---------------------------------------------------------------------------- */

void qkf_spike_max_i32_ref(int32_t *out, const int32_t *const *src, int n, int C)
{
    for (int c = 0; c < C; c++) {
        int32_t m = src[0][c];
        for (int k = 1; k < n; k++)
            m = src[k][c] > m ? src[k][c] : m;
        out[c] = m;
    }
}

static void max_i32_portable(int32_t *out, const int32_t *const *src, int n, int C)
{
    memcpy(out, src[0], (size_t)C * sizeof *out);
    for (int k = 1; k < n; k++) {
        const int32_t *s = src[k];
        for (int c = 0; c < C; c++)
            out[c] = s[c] > out[c] ? s[c] : out[c];
    }
}

void qkf_spike_max_i32(int32_t *out, const int32_t *const *src, int n, int C)
{
    switch (qkf_isa_current()) {
#ifdef QKF_X86
    case QKF_ISA_AVX512:
        qkf__spike_max_i32_avx512(out, src, n, C);
        return;
    case QKF_ISA_AVX2:
        qkf__spike_max_i32_avx2(out, src, n, C);
        return;
#endif
    default:
        max_i32_portable(out, src, n, C);
    }
}
