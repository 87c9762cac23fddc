/* AVX-512 path of qkf_peak_adds (peak.h): 16 zmm accumulators, one 512-bit load and add each. */
#include <immintrin.h>

#include "peak_internal.h"

#define STEP16(ADD, LOAD)                                                                        \
    for (long r = 0; r < reps; r++)                                                              \
        for (int i = 0; i + 16 * L <= n; i += 16 * L) {                                          \
            _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) a[k] =                         \
                ADD(a[k], LOAD(p + i + k * L));                                                  \
        }

double qkf__peak_pass_avx512(const void *buf, int bytes, long reps, int int16)
{
    if (int16) {
        enum { L = 32 };
        const short *p = buf;
        int n = bytes / 2;
        __m512i a[16];
        for (int k = 0; k < 16; k++)
            a[k] = _mm512_setzero_si512();
#define LD(q) _mm512_loadu_si512((const void *)(q))
        STEP16(_mm512_add_epi16, LD)
#undef LD
        __m512i s = a[0];
        for (int k = 1; k < 16; k++)
            s = _mm512_add_epi16(s, a[k]);
        return (double)(short)_mm_extract_epi16(_mm512_castsi512_si128(s), 0);
    }
    enum { L = 16 };
    const float *p = buf;
    int n = bytes / 4;
    __m512 a[16];
    for (int k = 0; k < 16; k++)
        a[k] = _mm512_setzero_ps();
    STEP16(_mm512_add_ps, _mm512_loadu_ps)
    __m512 s = a[0];
    for (int k = 1; k < 16; k++)
        s = _mm512_add_ps(s, a[k]);
    return (double)_mm512_cvtss_f32(s);
}
