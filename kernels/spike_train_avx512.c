/* The AVX-512 path of the training kernels' byte scans and transposes (spike_train.c; dispatch
 * there, convention in isa.h). Compiled with AVX-512 flags whatever the build's -march, and only
 * called after a run-time check that the CPU has them. */
#include <immintrin.h>

#include "isa_internal.h"

/* Positions (base + i) and values of the nonzero bytes of row[0..n), ascending; returns how
 * many. 64 bytes a test. */
int qkf__scan_row_avx512(int32_t *pos, uint8_t *val, const uint8_t *row, int n, int32_t base)
{
    int k = 0, i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512((const void *)(row + i));
        uint64_t m = _mm512_test_epi8_mask(v, v);
        while (m) {
            int j = __builtin_ctzll(m);
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

/* dst[c * ldd + r] = src[r * lds + c] for a full 16 x 16 tile, in registers. */
void qkf__tile16_avx512(float *dst, int64_t ldd, const float *src, int64_t lds)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
    for (int i = 0; i < 16; i++)
        _mm512_storeu_ps(dst + i * ldd, r[i]);
}
