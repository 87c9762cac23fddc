/* The AVX2 path of the training kernels' byte scans and transposes (spike_train.c; dispatch
 * there, convention in isa.h). Compiled with AVX2 flags whatever the build's -march, and only
 * called after a run-time check that the CPU has them. */
#include <immintrin.h>

#include "isa_internal.h"

/* Positions (base + i) and values of the nonzero bytes of row[0..n), ascending; returns how
 * many. 32 bytes a test. */
int qkf__scan_row_avx2(int32_t *pos, uint8_t *val, const uint8_t *row, int n, int32_t base)
{
    int k = 0, i = 0;
    const __m256i zero = _mm256_setzero_si256();
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(row + i));
        uint32_t m = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero));
        while (m) {
            int j = __builtin_ctz(m);
            pos[k] = base + i + j;
            val[k++] = row[i + j];
            m &= m - 1;
        }
    }
    for (; i < n; i++)
        if (row[i]) {
            pos[k] = base + i;
            val[k++] = row[i];
        }
    return k;
}

/* An 8 x 8 tile, in registers: dst[c * ldd + r] = src[r * lds + c]. */
static inline void tile8(float *dst, int64_t ldd, const float *src, int64_t lds)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (int i = 0; i < 8; i++)
        _mm256_storeu_ps(dst + i * ldd, t[i]);
}

/* dst[c * ldd + r] = src[r * lds + c] for a full 16 x 16 tile: four 8 x 8 tiles. */
void qkf__tile16_avx2(float *dst, int64_t ldd, const float *src, int64_t lds)
{
    for (int r0 = 0; r0 < 16; r0 += 8)
        for (int c0 = 0; c0 < 16; c0 += 8)
            tile8(dst + c0 * ldd + r0, ldd, src + r0 * lds + c0, lds);
}
