/* The ISA paths of the integer event kernels (kernels/spike_int.h), called through the dispatch
 * switches of kernels/spike_int.c only after a run-time check (kernels/isa.h), and the scalar
 * arithmetic every path shares. */
#ifndef QKF_SPIKE_INT_INTERNAL_H
#define QKF_SPIKE_INT_INTERNAL_H

#include <stdint.h>

#include "spike_int.h"

int64_t qkf__spike_gather_rows_i16_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                          const int16_t *w, int32_t stride, int width);
int64_t qkf__spike_gather_rows_i32_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                          const int32_t *w, int32_t stride, int width);
int64_t qkf__spike_gather_rows_m16_avx512(const qkf_spike_row *rows, int nrow, int64_t off,
                                          const int16_t *w, int32_t stride, int width,
                                          const int32_t *shift, int wmax);
void qkf__spike_ilif_seq_avx512(uint16_t *const *mask, const void *const *x, int x16, int R,
                                int C, const qkf_ilif *p, int32_t *v);
void qkf__spike_max_i32_avx512(int32_t *out, const int32_t *const *src, int n, int C);

int64_t qkf__spike_gather_rows_i16_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                        const int16_t *w, int32_t stride, int width);
int64_t qkf__spike_gather_rows_i32_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                        const int32_t *w, int32_t stride, int width);
int64_t qkf__spike_gather_rows_m16_avx2(const qkf_spike_row *rows, int nrow, int64_t off,
                                        const int16_t *w, int32_t stride, int width,
                                        const int32_t *shift, int wmax);
void qkf__spike_ilif_seq_avx2(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                              const qkf_ilif *p, int32_t *v);
void qkf__spike_max_i32_avx2(int32_t *out, const int32_t *const *src, int n, int C);

/* The reference's generic paths, which the ISA paths fall back to (widths they do not handle,
 * layers that are not narrow). */
int64_t qkf__spike_gather_rows_i16_portable(const qkf_spike_row *rows, int nrow, int64_t off,
                                            const int16_t *w, int32_t stride, int width);
int64_t qkf__spike_gather_rows_i32_portable(const qkf_spike_row *rows, int nrow, int64_t off,
                                            const int32_t *w, int32_t stride, int width);
int64_t qkf__spike_gather_rows_m16_portable(const qkf_spike_row *rows, int nrow, int64_t off,
                                            const int16_t *w, int32_t stride, int width,
                                            const int32_t *shift, int wmax);
/* The mantissa gather of one row whose sum may leave int16, in int32 (every path): columns
 * [0, width) at off. Returns its spikes. */
int64_t qkf__spike_gather_row_m16_wide(const qkf_spike_row *x, int64_t off, const int16_t *w,
                                       int32_t stride, int width, const int32_t *shift);
void qkf__spike_ilif_seq_wide(uint16_t *const *mask, const void *const *x, int x16, int R, int C,
                              const qkf_ilif *p, int32_t *v);

/* The sum of counts of a row's events (the spikes it delivers). */
static inline int64_t qkf__row_spikes(const qkf_spike_row *r)
{
    if (!r->seg.cnt)
        return r->seg.n;
    int64_t s = 0;
    for (int i = 0; i < r->seg.n; i++)
        s += r->seg.cnt[i];
    return s;
}

/* Constants of a narrow layer's int32 step (qkf_spike_ilif_prepare), shared by every path: the
 * shifts of the two reductions, the decay as a shift when decay_keep is a power of two. */
typedef struct {
    int cur_sh;    /* wrap: 32 - current_bits (0: none); saturate: 0 and cur_max applies */
    int32_t cur_max; /* saturate: 2^(current_bits - 1) - 1 (INT32_MAX: none) */
    int mem_sh;
    int32_t mem_max;
    int dshift;    /* decay_keep == 2^k: the decay is |V| >> dshift (dshift = decay_bits - k) */
    int dmul;      /* otherwise: hi * keep + ((lo * keep) >> decay_bits) */
    int32_t dlo;   /* 2^decay_bits - 1 */
} qkf__ilif_k;

static inline qkf__ilif_k qkf__ilif_consts(const qkf_ilif *p)
{
    qkf__ilif_k k;
    k.cur_sh = p->current_wrap && p->current_bits < 32 ? 32 - p->current_bits : 0;
    k.cur_max = !p->current_wrap && p->current_bits < 32
                    ? (int32_t)(((int64_t)1 << (p->current_bits - 1)) - 1)
                    : INT32_MAX;
    k.mem_sh = p->membrane_wrap && p->membrane_bits < 32 ? 32 - p->membrane_bits : 0;
    k.mem_max = !p->membrane_wrap && p->membrane_bits < 32
                    ? (int32_t)(((int64_t)1 << (p->membrane_bits - 1)) - 1)
                    : INT32_MAX;
    k.dmul = 1, k.dshift = 0;
    for (int b = 0; b <= p->decay_bits; b++)
        if (p->decay_keep == (int32_t)1 << b)
            k.dmul = 0, k.dshift = p->decay_bits - b;
    k.dlo = (int32_t)((1u << p->decay_bits) - 1u);
    return k;
}

/* Which reductions a narrow layer's step needs (the others are identities, and every path keeps
 * a copy of its step per combination, the flags then constants): the current's wrap (CS; an int16
 * sum, x16, is sign-extended from 16 bits, so a wrap to >= 16 bits keeps it) and saturation (CC),
 * the membrane's wrap (MS) and saturation (MC) unless p->hfree says they never bind, and the
 * subtracting reset (RS). */
enum { QKF__LF_CS = 1, QKF__LF_CC = 2, QKF__LF_MS = 4, QKF__LF_MC = 8, QKF__LF_RS = 16 };

static inline int qkf__ilif_flags(const qkf_ilif *p, const qkf__ilif_k *k, int x16)
{
    return (k->cur_sh && !(x16 && k->cur_sh <= 16) ? QKF__LF_CS : 0) |
           (k->cur_max != INT32_MAX ? QKF__LF_CC : 0) |
           (k->mem_sh && !p->hfree ? QKF__LF_MS : 0) |
           (k->mem_max != INT32_MAX && !p->hfree ? QKF__LF_MC : 0) |
           (p->reset_subtract ? QKF__LF_RS : 0);
}

/* x << sh then arithmetic >> sh on int32 (the wrap to 32 - sh bits), without signed overflow. */
static inline int32_t qkf__sext32(int32_t x, int sh)
{
    return (int32_t)((uint32_t)x << sh) >> sh;
}

/* One narrow step of the integer LIF in int32 (valid when p->narrow): the arithmetic the vector
 * paths perform lane by lane. Returns the spike; *u is updated. */
static inline int qkf__ilif_step32(const qkf_ilif *p, const qkf__ilif_k *k, int c, int32_t s,
                                   int32_t *u)
{
    int32_t a = qkf__sext32(s, k->cur_sh);
    a = a > k->cur_max ? k->cur_max : a < -k->cur_max ? -k->cur_max : a;
    int32_t v = *u, av = v < 0 ? -v : v;
    int32_t d = k->dmul ? (av >> p->decay_bits) * p->decay_keep +
                              ((av & k->dlo) * p->decay_keep >> p->decay_bits)
                        : av >> k->dshift;
    d = v < 0 ? -d : d;
    int32_t h = d + (int32_t)((uint32_t)a << p->current_shift) + p->bias[c];
    h = qkf__sext32(h, k->mem_sh);
    h = h > k->mem_max ? k->mem_max : h < -k->mem_max ? -k->mem_max : h;
    int32_t th = p->theta[c];
    int sp = p->threshold_ge ? h >= th : h > th;
    int32_t r = h - th;
    r = qkf__sext32(r, k->mem_sh);
    r = r > k->mem_max ? k->mem_max : r < -k->mem_max ? -k->mem_max : r;
    *u = sp ? (p->reset_subtract ? r : 0) : h;
    return sp;
}

/* The switch every path's integer LIF sequence dispatches through: one call per input width
 * (x16) and combination of qkf__ilif_flags, CALL(X16, F) with both constants, so that each
 * call inlines a copy specialised for them. */
#define QKF__ILIF_CASE(CALL, x16, F)                                                             \
    case F:                                                                                      \
        if (x16)                                                                                 \
            CALL(1, F);                                                                          \
        else                                                                                     \
            CALL(0, F);                                                                          \
        return;
#define QKF__ILIF_CASES8(CALL, x16, B)                                                           \
    QKF__ILIF_CASE(CALL, x16, B + 0)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 1)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 2)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 3)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 4)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 5)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 6)                                                             \
    QKF__ILIF_CASE(CALL, x16, B + 7)
#define QKF__ILIF_SWITCH(flags, x16, CALL)                                                       \
    switch (flags) {                                                                             \
        QKF__ILIF_CASES8(CALL, x16, 0)                                                           \
        QKF__ILIF_CASES8(CALL, x16, 8)                                                           \
        QKF__ILIF_CASES8(CALL, x16, 16)                                                          \
        QKF__ILIF_CASES8(CALL, x16, 24)                                                          \
    }

/* qkf__ilif_step32 with the reductions of flags f only (qkf__ilif_flags; a constant after
 * inlining: the portable path's copies per combination) and the comparison as h > th - ge. */
static inline __attribute__((always_inline)) int
qkf__ilif_step32f(const qkf_ilif *p, const qkf__ilif_k *k, int32_t b, int32_t thc, int32_t th,
                  int32_t s, int32_t *u, const int f)
{
    int32_t a = s;
    if (f & QKF__LF_CS)
        a = qkf__sext32(a, k->cur_sh);
    if (f & QKF__LF_CC)
        a = a > k->cur_max ? k->cur_max : a < -k->cur_max ? -k->cur_max : a;
    int32_t v = *u, av = v < 0 ? -v : v;
    int32_t d = k->dmul ? (av >> p->decay_bits) * p->decay_keep +
                              ((av & k->dlo) * p->decay_keep >> p->decay_bits)
                        : av >> k->dshift;
    d = v < 0 ? -d : d;
    int32_t h = d + (int32_t)((uint32_t)a << p->current_shift) + b;
    if (f & QKF__LF_MS)
        h = qkf__sext32(h, k->mem_sh);
    if (f & QKF__LF_MC)
        h = h > k->mem_max ? k->mem_max : h < -k->mem_max ? -k->mem_max : h;
    int sp = h > thc;
    int32_t r = 0;
    if (f & QKF__LF_RS) {
        r = h - th;
        if (f & QKF__LF_MS)
            r = qkf__sext32(r, k->mem_sh);
        if (f & QKF__LF_MC)
            r = r > k->mem_max ? k->mem_max : r < -k->mem_max ? -k->mem_max : r;
    }
    *u = sp ? r : h;
    return sp;
}

#endif
