/* The per-ISA paths of the event kernels (kernels/isa.h has the convention). Each public kernel
 * of spike.h, spike_node.h and spike_train.c switches on qkf_isa_current() to one of these:
 * qkf__<kernel>_avx512 (kernels/<file>_avx512.c), qkf__<kernel>_avx2 (<file>_avx2.c), both only
 * on x86-64, or its portable path in the plain .c file. Every path performs the same float
 * operations in the same order per output as the _ref twin, so all agree bit for bit. Private
 * to kernels/: not installed API. */
#ifndef QKF_ISA_INTERNAL_H
#define QKF_ISA_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "isa.h"
#include "spike.h"

/* The spikes delivered by some segments (sum of counts; every path returns it). */
static inline int64_t qkf__spikes_of(const qkf_spike_seg *seg, int nseg)
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

#if defined(__x86_64__)
#define QKF__SPIKE_PATHS(X)                                                                      \
    int64_t qkf__spike_gather_##X(float *out, const float *init, const float *w, int32_t stride, \
                                  const qkf_spike_seg *seg, int nseg, int width);                \
    int64_t qkf__spike_gather_rows_##X(const qkf_spike_row *rows, int nrow, int64_t off,         \
                                       const float *w, int32_t stride, int width);               \
    int qkf__spike_lif_row_##X(uint16_t *ch, float *v, const float *x, int C, float vth);        \
    int qkf__spike_attn_row_##X(uint16_t *ch, const float *cnt, int C);                          \
    int qkf__spike_merge_pack_##X(uint16_t *ch, uint16_t *cnt, int *ones, uint16_t *acc, int C); \
    void qkf__spike_lif_seq_##X(uint16_t *const *mask, const float *const *x, int R, int C,      \
                                float vth, float *v);                                            \
    int qkf__spike_mask_emit_##X(uint16_t *ch, const uint16_t *mask, int C);                     \
    int qkf__spike_count_below_##X(const uint16_t *ch, int n, int c);                            \
    void qkf__spike_head_ends_##X(int *end, const uint16_t *ch, int n, int d, int heads);        \
    int qkf__scan_row_##X(int32_t *pos, uint8_t *val, const uint8_t *row, int n, int32_t base);  \
    void qkf__tile16_##X(float *dst, int64_t ldd, const float *src, int64_t lds);
QKF__SPIKE_PATHS(avx512)
QKF__SPIKE_PATHS(avx2)
#undef QKF__SPIKE_PATHS

/* The dispatch of a kernel whose portable path follows: returns the x86 path's result when the
 * path in use is AVX-512 or AVX2, else falls through. */
#define QKF__PICK(name, args)                                                                    \
    switch (qkf_isa_current()) {                                                                 \
    case QKF_ISA_AVX512:                                                                         \
        return qkf__##name##_avx512 args;                                                        \
    case QKF_ISA_AVX2:                                                                           \
        return qkf__##name##_avx2 args;                                                          \
    default:                                                                                     \
        break;                                                                                   \
    }
#define QKF__PICK_VOID(name, args)                                                               \
    switch (qkf_isa_current()) {                                                                 \
    case QKF_ISA_AVX512:                                                                         \
        qkf__##name##_avx512 args;                                                               \
        return;                                                                                  \
    case QKF_ISA_AVX2:                                                                           \
        qkf__##name##_avx2 args;                                                                 \
        return;                                                                                  \
    default:                                                                                     \
        break;                                                                                   \
    }
#else
#define QKF__PICK(name, args)
#define QKF__PICK_VOID(name, args)
#endif

/* ---- the portable path's vectors (GCC / Clang vector extensions: SSE2 on x86-64, NEON on
 * aarch64; 4 floats, the width every such target has) ---------------------------------------- */
typedef float qkf__v4f __attribute__((vector_size(16)));
typedef int32_t qkf__v4i __attribute__((vector_size(16)));
typedef uint16_t qkf__v8u16 __attribute__((vector_size(16)));
typedef uint8_t qkf__v8u8 __attribute__((vector_size(8)));

static inline qkf__v4f qkf__ld4(const float *p)
{
    qkf__v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void qkf__st4(float *p, qkf__v4f v)
{
    memcpy(p, &v, sizeof v);
}

/* The 4-bit mask (bit l: lane l) of a comparison result (lanes -1 or 0). */
static inline unsigned qkf__bits4(qkf__v4i s)
{
    qkf__v4i b = s & (qkf__v4i){1, 2, 4, 8};
    return (unsigned)(b[0] | b[1] | b[2] | b[3]);
}

/* The 8- and 16-bit masks of 2 or 4 comparison results (vector q gives bits 4q .. 4q + 3):
 * the lanes' bits are combined in vector registers and folded twice, instead of extracting
 * every lane (what qkf__bits4 compiles to on SSE2). */
static inline unsigned qkf__fold4(qkf__v4i b)
{
    b |= __builtin_shufflevector(b, b, 2, 3, 0, 1);
    b |= __builtin_shufflevector(b, b, 1, 0, 3, 2);
    return (unsigned)b[0];
}

static inline unsigned qkf__bits8(qkf__v4i s0, qkf__v4i s1)
{
    return qkf__fold4((s0 & (qkf__v4i){1, 2, 4, 8}) | (s1 & (qkf__v4i){16, 32, 64, 128}));
}

static inline unsigned qkf__bits16(qkf__v4i s0, qkf__v4i s1, qkf__v4i s2, qkf__v4i s3)
{
    return qkf__fold4((s0 & (qkf__v4i){1, 2, 4, 8}) | (s1 & (qkf__v4i){16, 32, 64, 128}) |
                      (s2 & (qkf__v4i){256, 512, 1024, 2048}) |
                      (s3 & (qkf__v4i){4096, 8192, 16384, 32768}));
}

/* The set bits of a byte. Baseline x86-64 has no popcnt instruction, where __builtin_popcount
 * is a library call: then a few shifts and masks. */
static inline int qkf__pop8(unsigned b)
{
#if defined(__x86_64__) && !defined(__POPCNT__)
    b = b - (b >> 1 & 0x55u);
    b = (b & 0x33u) + (b >> 2 & 0x33u);
    return (int)((b + (b >> 4)) & 0x0Fu);
#else
    return __builtin_popcount(b);
#endif
}

#endif
