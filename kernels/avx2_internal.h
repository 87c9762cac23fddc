/* Helpers of the AVX2 paths (files *_avx2.c only: static inline, compiled with their flags). */
#ifndef QKF_AVX2_INTERNAL_H
#define QKF_AVX2_INTERNAL_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "lut_internal.h"

/* Lane mask of the first rem lanes (all for rem >= 8, none for rem <= 0), for maskload /
 * maskstore. */
static inline __m256i lanes_of(int rem)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The channels c0 + (set lanes of the 8-bit mask m), as 8 16-bit lanes (left-packed; lanes past
 * popcount(m) hold c0). */
static inline __m128i pack8(unsigned m, int c0)
{
    __m128i idx = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)qkf__lut8[m & 0xFFu]));
    return _mm_add_epi16(idx, _mm_set1_epi16((short)c0));
}

/* Stores the first n lanes of v at p exactly (nothing past them). */
static inline void store_n(uint16_t *p, __m128i v, int n)
{
    uint16_t tmp[8];
    _mm_storeu_si128((__m128i *)tmp, v);
    memcpy(p, tmp, (size_t)n * sizeof *p);
}

/* The 16-bit mask (bit i: lane i) of a 16 x 16-bit lane comparison result. */
static inline unsigned mask16(__m256i cmp)
{
    return (unsigned)_mm_movemask_epi8(
        _mm_packs_epi16(_mm256_castsi256_si128(cmp), _mm256_extracti128_si256(cmp, 1)));
}

#endif
