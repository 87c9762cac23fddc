/* The integer row gather (kernels/spike_int.h) for one vector ISA and element type, written once
 * and instantiated by spike_int_avx512.c and spike_int_avx2.c: each defines the macros below and
 * includes this file (no include guard: once per element type). Everything here is static.
 *
 *   IG(name)        the instance's name for a helper
 *   IG_T            element type (int16_t, int32_t)
 *   IG_V, IG_L      vector type and its lanes
 *   IG_ADD(a, b), IG_MUL(a, b)   wrapping add, low half of the product
 *   IG_SET1(c)      broadcast of a count
 *   IG_LOAD(p), IG_STORE(p, v)   unaligned
 *   IG_MASKED       1: IG_LOADM(m, p) / IG_STOREM(p, m, v) with a lane mask of type IG_M and
 *                   IG_TAIL(n), the mask of the first n lanes, handle a last partial vector;
 *                   0: widths must be multiples of IG_L (others go to the portable path)
 *   IG_NBMAX        the most vectors a row keeps in registers (a pass); wider rows take passes
 *   IG_PORTABLE     the portable function for what this path does not handle
 *   IG_WIDEN        1: the mantissa gather (qkf_spike_gather_rows_m16): IG_T is int16_t, the
 *                   accumulators start from zero, and the row's end widens them to int32, shifts
 *                   each column by its shift and adds the int32 init: IG_WSTORE(o, i, acc, s, k,
 *                   nb, tm) stores vector k's columns (o, i int32 rows, s the shifts, all at
 *                   the pass's column 0). A row whose mantissa sum could leave int16 (the sum of
 *                   its counts times wmax above 32767) goes to qkf__spike_gather_row_m16_wide.
 *                   0 (or undefined): out and init have the weights' type IG_T
 *
 * Two rows walk their event lists side by side (twice the independent accumulator chains of one
 * row), the channels (and counts) of four events read with one 64-bit load; events with a count of
 * 1 (a row's first n1 with counts, every event of a binary list) are plain adds, the others add
 * their row times the count. The integer sums are exact in any order (spike_int.h). */

#ifndef IG_WIDEN
#define IG_WIDEN 0
#endif
#if IG_WIDEN
#define IG_OT int32_t
#else
#define IG_OT IG_T
#endif

#ifndef IG_LOAD4_DEFINED
#define IG_LOAD4_DEFINED
static inline uint64_t ig_load4(const uint16_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}
static inline uint64_t ig_sum4(uint64_t x)
{
    uint64_t y = (x & 0x0000FFFF0000FFFFull) + (x >> 16 & 0x0000FFFF0000FFFFull);
    return (y & 0xFFFFFFFFull) + (y >> 32);
}
/* Whether a row's mantissa sum stays within int16 whatever the signs: the sum of its counts times
 * wmax is at most 32767 (each product then fits as well). */
static inline int ig_fits(const qkf_spike_row *x, int wmax)
{
    int64_t n = x->seg.n;
    if (n * wmax > 32767)
        return 0;
    if (!x->seg.cnt)
        return 1;
    int64_t s = 0;
    for (int i = x->n1; i < x->seg.n; i++)
        s += x->seg.cnt[i];
    return (s + x->n1) * wmax <= 32767;
}
#endif

/* The weight row at p into acc (nb vectors, the last one under the mask tm when IG_MASKED). */
#if IG_MASKED
#define IG_LD(p, k, nb, tm) ((k) == (nb) - 1 && !full ? IG_LOADM(tm, p) : IG_LOAD(p))
#else
#define IG_LD(p, k, nb, tm) IG_LOAD(p)
#endif
#define IG_ROW_ADD(acc, p)                                                                       \
    do {                                                                                         \
        const IG_T *p_ = (p);                                                                    \
        _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++) acc[k] =                            \
            IG_ADD(acc[k], IG_LD(p_ + IG_L * k, k, nb, tm));                                     \
    } while (0)
#define IG_ROW_MUL(acc, p, c)                                                                    \
    do {                                                                                         \
        const IG_T *p_ = (p);                                                                    \
        IG_V c_ = IG_SET1(c);                                                                    \
        _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++) acc[k] =                            \
            IG_ADD(acc[k], IG_MUL(c_, IG_LD(p_ + IG_L * k, k, nb, tm)));                         \
    } while (0)
/* The weight row of channel ch: a byte offset, ch times the row pitch in bytes sb (one 64-bit
 * multiply, no sign extension or scaled add per event). */
#define IG_AT(w, ch) ((const IG_T *)(const void *)((const char *)(w) + (ch) * sb))
#define IG_EV4(acc, w, x, xc, j)                                                                 \
    do {                                                                                         \
        size_t ch_ = (size_t)((x) >> (16 * (j)) & 0xFFFFu);                                      \
        if (mul)                                                                                 \
            IG_ROW_MUL(acc, IG_AT(w, ch_), (int)((xc) >> (16 * (j)) & 0xFFFFu));                 \
        else                                                                                     \
            IG_ROW_ADD(acc, IG_AT(w, ch_));                                                      \
    } while (0)
#define IG_EV1(acc, w, ch, cn, i)                                                                \
    do {                                                                                         \
        if (mul)                                                                                 \
            IG_ROW_MUL(acc, IG_AT(w, (size_t)(ch)[i]), (int)(cn)[i]);                            \
        else                                                                                     \
            IG_ROW_ADD(acc, IG_AT(w, (size_t)(ch)[i]));                                          \
    } while (0)

static inline __attribute__((always_inline)) uint64_t
IG(run2)(IG_V *a, IG_V *b, const IG_T *wa, const IG_T *wb, const uint16_t *ca, const uint16_t *cna,
         const uint16_t *cb, const uint16_t *cnb, int n, int32_t stride, int nb, IG_M tm, int mul,
         int full)
{
    (void)tm, (void)full;
    const size_t sb = (size_t)stride * sizeof(IG_T);
    uint64_t sum = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t xa = ig_load4(ca + i), xb = ig_load4(cb + i);
        uint64_t ka = mul ? ig_load4(cna + i) : 0, kb = mul ? ig_load4(cnb + i) : 0;
        sum += mul ? ig_sum4(ka) + ig_sum4(kb) : 0;
        IG_EV4(a, wa, xa, ka, 0);
        IG_EV4(b, wb, xb, kb, 0);
        IG_EV4(a, wa, xa, ka, 1);
        IG_EV4(b, wb, xb, kb, 1);
        IG_EV4(a, wa, xa, ka, 2);
        IG_EV4(b, wb, xb, kb, 2);
        IG_EV4(a, wa, xa, ka, 3);
        IG_EV4(b, wb, xb, kb, 3);
    }
    for (; i < n; i++) {
        IG_EV1(a, wa, ca, cna, i);
        IG_EV1(b, wb, cb, cnb, i);
        sum += mul ? (uint64_t)cna[i] + cnb[i] : 0;
    }
    return sum;
}

static inline __attribute__((always_inline)) uint64_t IG(run1)(IG_V *a, const IG_T *w,
                                                               const uint16_t *c,
                                                               const uint16_t *cn, int n,
                                                               int32_t stride, int nb, IG_M tm,
                                                               int mul, int full)
{
    (void)tm, (void)full;
    const size_t sb = (size_t)stride * sizeof(IG_T);
    uint64_t sum = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t x = ig_load4(c + i), xc = mul ? ig_load4(cn + i) : 0;
        sum += mul ? ig_sum4(xc) : 0;
        IG_EV4(a, w, x, xc, 0);
        IG_EV4(a, w, x, xc, 1);
        IG_EV4(a, w, x, xc, 2);
        IG_EV4(a, w, x, xc, 3);
    }
    for (; i < n; i++) {
        IG_EV1(a, w, c, cn, i);
        sum += mul ? cn[i] : 0;
    }
    return sum;
}

/* Accumulators of a row from its init (or zero), and back to its output. The mantissa gather
 * (IG_WIDEN) starts from zero and widens into the int32 row at the end. */
static inline __attribute__((always_inline)) void IG(load_acc)(IG_V *a, const IG_OT *init, int nb,
                                                               IG_M tm, int full)
{
    (void)tm, (void)full;
#if IG_WIDEN
    (void)init;
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++) a[k] = IG_ZERO;
#else
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++) a[k] =
        init ? IG_LD(init + IG_L * k, k, nb, tm) : IG_ZERO;
#endif
}

static inline __attribute__((always_inline)) void
IG(store_acc)(IG_OT *out, const IG_OT *init, const IG_V *a, const int32_t *sh, int nb, IG_M tm,
              int full)
{
    (void)tm, (void)init, (void)sh, (void)full;
    _Pragma("GCC unroll 8") for (int k = 0; k < nb; k++)
    {
#if IG_WIDEN
        IG_WSTORE(out, init, a[k], sh, k, nb, tm);
#else
#if IG_MASKED
        if (k == nb - 1 && !full)
            IG_STOREM(out + IG_L * k, tm, a[k]);
        else
#endif
            IG_STORE(out + IG_L * k, a[k]);
#endif
    }
}

/* Two rows of nb vectors (a constant after inlining), columns [col, col + nb * IG_L) of the rows
 * (the last vector under tm): a binary list in one phase, a list with counts in two (its single
 * events, then the others). Returns the spikes delivered. */
static inline __attribute__((always_inline)) int64_t
IG(pair)(const qkf_spike_row *x, const qkf_spike_row *y, int64_t off, const IG_T *w,
         int32_t stride, int nb, IG_M tm, int counts, const int32_t *sh, int full)
{
    const IG_OT *i0 = x->init ? (const IG_OT *)(const void *)x->init + off : NULL;
    const IG_OT *i1 = y->init ? (const IG_OT *)(const void *)y->init + off : NULL;
    IG_OT *o0 = (IG_OT *)(void *)x->out + off, *o1 = (IG_OT *)(void *)y->out + off;
    const uint16_t *c0 = x->seg.ch, *k0 = x->seg.cnt, *c1 = y->seg.ch, *k1 = y->seg.cnt;
    const IG_T *w0 = w + x->seg.base, *w1 = w + y->seg.base;
    int n0 = x->seg.n, n1 = y->seg.n;
    IG_V a[IG_NBMAX], b[IG_NBMAX];
    IG(load_acc)(a, i0, nb, tm, full);
    IG(load_acc)(b, i1, nb, tm, full);
    int64_t spikes;
    if (!counts) {
        int m = n0 < n1 ? n0 : n1;
        IG(run2)(a, b, w0, w1, c0, NULL, c1, NULL, m, stride, nb, tm, 0, full);
        IG(run1)(a, w0, c0 + m, NULL, n0 - m, stride, nb, tm, 0, full);
        IG(run1)(b, w1, c1 + m, NULL, n1 - m, stride, nb, tm, 0, full);
        spikes = (int64_t)n0 + n1;
    } else {
        int p0 = x->n1, p1 = y->n1, m = p0 < p1 ? p0 : p1;
        IG(run2)(a, b, w0, w1, c0, NULL, c1, NULL, m, stride, nb, tm, 0, full);
        IG(run1)(a, w0, c0 + m, NULL, p0 - m, stride, nb, tm, 0, full);
        IG(run1)(b, w1, c1 + m, NULL, p1 - m, stride, nb, tm, 0, full);
        int f0 = n0 - p0, f1 = n1 - p1, f = f0 < f1 ? f0 : f1;
        uint64_t sum = (uint64_t)p0 + (uint64_t)p1;
        sum +=
            IG(run2)(a, b, w0, w1, c0 + p0, k0 + p0, c1 + p1, k1 + p1, f, stride, nb, tm, 1, full);
        sum += IG(run1)(a, w0, c0 + p0 + f, k0 + p0 + f, f0 - f, stride, nb, tm, 1, full);
        sum += IG(run1)(b, w1, c1 + p1 + f, k1 + p1 + f, f1 - f, stride, nb, tm, 1, full);
        spikes = (int64_t)sum;
    }
    IG(store_acc)(o0, i0, a, sh, nb, tm, full);
    IG(store_acc)(o1, i1, b, sh, nb, tm, full);
    return spikes;
}

/* One row alone (the last of an odd count, or rows that disagree on counts). */
static inline __attribute__((always_inline)) int64_t IG(one)(const qkf_spike_row *x, int64_t off,
                                                             const IG_T *w, int32_t stride, int nb,
                                                             IG_M tm, const int32_t *sh, int full)
{
    const IG_OT *i0 = x->init ? (const IG_OT *)(const void *)x->init + off : NULL;
    IG_OT *o0 = (IG_OT *)(void *)x->out + off;
    const uint16_t *c0 = x->seg.ch, *k0 = x->seg.cnt;
    const IG_T *w0 = w + x->seg.base;
    int n0 = x->seg.n, p0 = k0 ? x->n1 : n0;
    IG_V a[IG_NBMAX];
    IG(load_acc)(a, i0, nb, tm, full);
    uint64_t sum = (uint64_t)p0;
    IG(run1)(a, w0, c0, NULL, p0, stride, nb, tm, 0, full);
    if (k0)
        sum += IG(run1)(a, w0, c0 + p0, k0 + p0, n0 - p0, stride, nb, tm, 1, full);
    IG(store_acc)(o0, i0, a, sh, nb, tm, full);
    return (int64_t)sum;
}

/* Every row of rows[0..nrow) with one nb: pairs when they agree on counts (the engine's always
 * do), a last odd row alone. The mantissa gather (IG_WIDEN) pairs the rows whose sums fit int16
 * and sends the others (columns [0, cols) of the pass) to the wide row. */
#if IG_WIDEN
#define IG_ROWS_FN(NB, FULL, NAME)                                                                 \
    static int64_t IG(NAME)(const qkf_spike_row *rows, int nrow, int64_t off, const IG_T *w,       \
                            int32_t stride, IG_M tm, const int32_t *sh, int wmax, int cols)        \
    {                                                                                              \
        int64_t spikes = 0;                                                                        \
        int r = 0;                                                                                 \
        while (r < nrow) {                                                                         \
            const qkf_spike_row *x = &rows[r];                                                     \
            if (!ig_fits(x, wmax)) {                                                               \
                spikes += qkf__spike_gather_row_m16_wide(x, off, w, stride, cols, sh);             \
                r++;                                                                               \
                continue;                                                                          \
            }                                                                                      \
            const qkf_spike_row *y = r + 1 < nrow ? &rows[r + 1] : NULL;                           \
            if (y && (y->seg.cnt != NULL) == (x->seg.cnt != NULL) && ig_fits(y, wmax)) {           \
                spikes += x->seg.cnt ? IG(pair)(x, y, off, w, stride, NB, tm, 1, sh, FULL)         \
                                     : IG(pair)(x, y, off, w, stride, NB, tm, 0, sh, FULL);        \
                r += 2;                                                                            \
            } else {                                                                               \
                spikes += IG(one)(x, off, w, stride, NB, tm, sh, FULL);                            \
                r++;                                                                               \
            }                                                                                      \
        }                                                                                          \
        return spikes;                                                                             \
    }
#else
#define IG_ROWS_FN(NB, FULL, NAME)                                                                 \
    static int64_t IG(NAME)(const qkf_spike_row *rows, int nrow, int64_t off, const IG_T *w,       \
                            int32_t stride, IG_M tm, const int32_t *sh, int wmax, int cols)        \
    {                                                                                              \
        (void)wmax, (void)cols;                                                                    \
        int64_t spikes = 0;                                                                        \
        int counts = nrow > 0 && rows[0].seg.cnt != NULL, same = 1;                                \
        for (int r = 1; r < nrow; r++)                                                             \
            same &= (rows[r].seg.cnt != NULL) == counts;                                           \
        int paired = same ? nrow & ~1 : 0;                                                         \
        if (counts)                                                                                \
            for (int r = 0; r < paired; r += 2)                                                    \
                spikes += IG(pair)(&rows[r], &rows[r + 1], off, w, stride, NB, tm, 1, sh, FULL);   \
        else                                                                                       \
            for (int r = 0; r < paired; r += 2)                                                    \
                spikes += IG(pair)(&rows[r], &rows[r + 1], off, w, stride, NB, tm, 0, sh, FULL);   \
        for (int r = paired; r < nrow; r++)                                                        \
            spikes += IG(one)(&rows[r], off, w, stride, NB, tm, sh, FULL);                         \
        return spikes;                                                                             \
    }
#endif
/* rowsNB: the last vector under the mask tm; rowsNBf (IG_MASKED only): every vector whole (a
 * width that is a multiple of IG_L, as the engine's are), plain loads that fold into the adds */
IG_ROWS_FN(1, !IG_MASKED, rows1)
IG_ROWS_FN(2, !IG_MASKED, rows2)
IG_ROWS_FN(3, !IG_MASKED, rows3)
IG_ROWS_FN(4, !IG_MASKED, rows4)
#if IG_NBMAX > 4
IG_ROWS_FN(5, !IG_MASKED, rows5)
IG_ROWS_FN(6, !IG_MASKED, rows6)
IG_ROWS_FN(7, !IG_MASKED, rows7)
IG_ROWS_FN(8, !IG_MASKED, rows8)
#endif
#if IG_MASKED
IG_ROWS_FN(1, 1, rows1f)
IG_ROWS_FN(2, 1, rows2f)
IG_ROWS_FN(3, 1, rows3f)
IG_ROWS_FN(4, 1, rows4f)
#if IG_NBMAX > 4
IG_ROWS_FN(5, 1, rows5f)
IG_ROWS_FN(6, 1, rows6f)
IG_ROWS_FN(7, 1, rows7f)
IG_ROWS_FN(8, 1, rows8f)
#endif
#endif
#undef IG_ROWS_FN

/* The rows in passes of at most IG_NBMAX vectors, split evenly (a 96-wide row of int32 under
 * AVX-512 is one pass of 6 vectors; 384 would be 2 of 12 / 2 = 6... of at most IG_NBMAX). sh and
 * wmax: the mantissa gather's shifts (at column 0) and mantissa bound, else NULL and 0. */
static int64_t IG(gather_rows)(const qkf_spike_row *rows, int nrow, int64_t off, const IG_T *w,
                               int32_t stride, int width, const int32_t *sh, int wmax)
{
    typedef int64_t (*fn)(const qkf_spike_row *, int, int64_t, const IG_T *, int32_t, IG_M,
                          const int32_t *, int, int);
#if IG_NBMAX > 4
    static const fn fns[9] = {NULL,      IG(rows1), IG(rows2), IG(rows3), IG(rows4),
                              IG(rows5), IG(rows6), IG(rows7), IG(rows8)};
#if IG_MASKED
    static const fn fnf[9] = {NULL,       IG(rows1f), IG(rows2f), IG(rows3f), IG(rows4f),
                              IG(rows5f), IG(rows6f), IG(rows7f), IG(rows8f)};
#endif
#else
    static const fn fns[5] = {NULL, IG(rows1), IG(rows2), IG(rows3), IG(rows4)};
#if IG_MASKED
    static const fn fnf[5] = {NULL, IG(rows1f), IG(rows2f), IG(rows3f), IG(rows4f)};
#endif
#endif
#if !IG_MASKED
    if (width % IG_L)
#if IG_WIDEN
        return IG_PORTABLE(rows, nrow, off, w, stride, width, sh, wmax);
#else
        return IG_PORTABLE(rows, nrow, off, w, stride, width);
#endif
#endif
    int vecs = (width + IG_L - 1) / IG_L, passes = (vecs + IG_NBMAX - 1) / IG_NBMAX, v0 = 0;
    int64_t spikes = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (vecs - v0) / (passes - p);
        int j0 = v0 * IG_L;
        int cols = width - j0 < nb * IG_L ? width - j0 : nb * IG_L;
#if IG_MASKED
        IG_M tm = IG_TAIL(cols - (nb - 1) * IG_L);
#else
        IG_M tm = 0;
#endif
#if IG_MASKED
        const fn *f = cols == nb * IG_L ? fnf : fns;
#else
        const fn *f = fns;
#endif
        int64_t s = f[nb](rows, nrow, off + j0, w + j0, stride, tm, sh ? sh + j0 : NULL, wmax,
                          cols);
        if (p == 0)
            spikes = s; /* every pass delivers the same spikes */
        v0 += nb;
    }
    return spikes;
}

#undef IG_LD
#undef IG_ROW_ADD
#undef IG_ROW_MUL
#undef IG_EV4
#undef IG_EV1
#undef IG_AT
#undef IG_OT
#undef IG_WIDEN
