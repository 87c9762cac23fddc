/* The AVX2 (+FMA) path of the neuron kernels (spike_node.h; dispatch in spike_node.c, convention
 * in isa.h). Compiled with AVX2 flags whatever the build's -march, and only called after a
 * run-time check that the CPU has them. The same float operations in the same order as the _ref
 * twins; event lists are left-packed through the table of lut_internal.h. */
#include "avx2_internal.h"
#include "isa_internal.h"
#include "spike_node.h"

/* Eight vectors of 8 channels at a time (64 channels, as on the AVX-512 path: independent
 * chains hide each step's latency), membranes in registers for all R steps; from zero membranes
 * the first step is h = x * 0.5 (the AVX-512 path explains why that is the same spike). */
void qkf__spike_lif_seq_avx2(uint16_t *const *mask, const float *const *x, int R, int C,
                             float vth, float *v)
{
    const __m256 half = _mm256_set1_ps(0.5f), th = _mm256_set1_ps(vth);
    int c0 = 0;
    for (; c0 + 64 <= C; c0 += 64) {
        __m256 a[8];
        int r = 0;
        if (v) {
            for (int k = 0; k < 8; k++)
                a[k] = _mm256_loadu_ps(v + c0 + 8 * k);
        } else if (R > 0) {
            const float *xr = x[0] + c0;
            uint16_t *m = mask[0] + c0 / 16;
            unsigned b[8];
            for (int k = 0; k < 8; k++) {
                __m256 h = _mm256_mul_ps(_mm256_loadu_ps(xr + 8 * k), half);
                __m256 s = _mm256_cmp_ps(h, th, _CMP_GE_OQ);
                a[k] = _mm256_andnot_ps(s, h);
                b[k] = (unsigned)_mm256_movemask_ps(s);
            }
            for (int k = 0; k < 4; k++)
                m[k] = (uint16_t)(b[2 * k] | b[2 * k + 1] << 8);
            r = 1;
        }
        for (; r < R; r++) {
            const float *xr = x[r] + c0;
            uint16_t *m = mask[r] + c0 / 16;
            unsigned b[8];
            for (int k = 0; k < 8; k++) {
                __m256 xv = _mm256_loadu_ps(xr + 8 * k);
                __m256 h = _mm256_add_ps(a[k], _mm256_mul_ps(_mm256_sub_ps(xv, a[k]), half));
                __m256 s = _mm256_cmp_ps(h, th, _CMP_GE_OQ);
                a[k] = _mm256_andnot_ps(s, h);
                b[k] = (unsigned)_mm256_movemask_ps(s);
            }
            for (int k = 0; k < 4; k++)
                m[k] = (uint16_t)(b[2 * k] | b[2 * k + 1] << 8);
        }
        if (v)
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(v + c0 + 8 * k, a[k]);
    }
    for (; c0 < C; c0 += 16) { /* 16 channels (one mask word) at a time, lanes past C masked */
        __m256i l0 = lanes_of(C - c0), l1 = lanes_of(C - c0 - 8);
        __m256 a0 = v ? _mm256_maskload_ps(v + c0, l0) : _mm256_setzero_ps();
        __m256 a1 = v ? _mm256_maskload_ps(v + c0 + 8, l1) : _mm256_setzero_ps();
        for (int r = 0; r < R; r++) {
            __m256 x0 = _mm256_maskload_ps(x[r] + c0, l0), x1 = _mm256_maskload_ps(x[r] + c0 + 8, l1);
            __m256 h0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_sub_ps(x0, a0), half));
            __m256 h1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_sub_ps(x1, a1), half));
            __m256 s0 = _mm256_and_ps(_mm256_cmp_ps(h0, th, _CMP_GE_OQ), _mm256_castsi256_ps(l0));
            __m256 s1 = _mm256_and_ps(_mm256_cmp_ps(h1, th, _CMP_GE_OQ), _mm256_castsi256_ps(l1));
            a0 = _mm256_andnot_ps(s0, h0);
            a1 = _mm256_andnot_ps(s1, h1);
            mask[r][c0 / 16] = (uint16_t)((unsigned)_mm256_movemask_ps(s0) |
                                          (unsigned)_mm256_movemask_ps(s1) << 8);
        }
        if (v) {
            _mm256_maskstore_ps(v + c0, l0, a0);
            _mm256_maskstore_ps(v + c0 + 8, l1, a1);
        }
    }
}

int qkf__spike_mask_emit_avx2(uint16_t *ch, const uint16_t *mask, int C)
{
    /* whole words: each non-zero byte stores 8 packed lanes, in this row's own slots
     * [n, 16 k + 8 j + 8) with n <= 16 k + 8 j; the last partial word bit by bit */
    int n = 0, k = 0, words = (C + 15) / 16;
    for (; k < C / 16; k++) {
        unsigned m = mask[k];
        if (!m)
            continue;
        unsigned lo = m & 0xFFu, hi = m >> 8;
        _mm_storeu_si128((__m128i *)(ch + n), pack8(lo, 16 * k));
        n += __builtin_popcount(lo);
        _mm_storeu_si128((__m128i *)(ch + n), pack8(hi, 16 * k + 8));
        n += __builtin_popcount(hi);
    }
    for (; k < words; k++)
        for (unsigned m = mask[k]; m; m &= m - 1)
            ch[n++] = (uint16_t)(16 * k + __builtin_ctz(m));
    return n;
}

/* Unsigned 16-bit a < b for every lane (AVX2 compares signed: flip the sign bits first). */
static inline __m256i lt_epu16(__m256i a, __m256i b)
{
    const __m256i sign = _mm256_set1_epi16((short)0x8000);
    return _mm256_cmpgt_epi16(_mm256_xor_si256(b, sign), _mm256_xor_si256(a, sign));
}

int qkf__spike_count_below_avx2(const uint16_t *ch, int n, int c)
{
    const __m256i cv = _mm256_set1_epi16((short)c);
    int k = 0, i = 0;
    for (; i + 16 <= n; i += 16)
        k += __builtin_popcount(mask16(lt_epu16(_mm256_loadu_si256((const __m256i *)(ch + i)), cv)));
    for (; i < n; i++)
        k += ch[i] < c;
    return k;
}

void qkf__spike_head_ends_avx2(int *end, const uint16_t *ch, int n, int d, int heads)
{
    if (n <= 8) { /* a short list (low rates): one walk, a few branches */
        for (int h = 0, i = 0; h < heads; h++) {
            while (i < n && ch[i] < (h + 1) * d)
                i++;
            end[h] = i;
        }
        return;
    }
    for (int h = 0; h < heads; h++)
        end[h] = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(ch + i));
        for (int h = 0; h < heads; h++)
            end[h] += __builtin_popcount(
                mask16(lt_epu16(v, _mm256_set1_epi16((short)((h + 1) * d)))));
    }
    for (; i < n; i++)
        for (int h = 0; h < heads; h++)
            end[h] += ch[i] < (h + 1) * d;
}
