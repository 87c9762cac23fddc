/* AVX2 path of qkf_peak_adds (peak.h): 8 ymm accumulators (16 registers), one 256-bit load and
 * add each. */
#include <immintrin.h>

#include "peak_internal.h"

#define STEP8(ADD, LOAD)                                                                         \
    for (long r = 0; r < reps; r++)                                                              \
        for (int i = 0; i + 8 * L <= n; i += 8 * L) {                                            \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] =                           \
                ADD(a[k], LOAD(p + i + k * L));                                                  \
        }

double qkf__peak_pass_avx2(const void *buf, int bytes, long reps, int int16)
{
    if (int16) {
        enum { L = 16 };
        const short *p = buf;
        int n = bytes / 2;
        __m256i a[8];
        for (int k = 0; k < 8; k++)
            a[k] = _mm256_setzero_si256();
#define LD(q) _mm256_loadu_si256((const __m256i *)(const void *)(q))
        STEP8(_mm256_add_epi16, LD)
#undef LD
        __m256i s = a[0];
        for (int k = 1; k < 8; k++)
            s = _mm256_add_epi16(s, a[k]);
        return (double)(short)_mm256_extract_epi16(s, 0);
    }
    enum { L = 8 };
    const float *p = buf;
    int n = bytes / 4;
    __m256 a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm256_setzero_ps();
    STEP8(_mm256_add_ps, _mm256_loadu_ps)
    __m256 s = a[0];
    for (int k = 1; k < 8; k++)
        s = _mm256_add_ps(s, a[k]);
    return (double)_mm256_cvtss_f32(s);
}
