/* The AVX-512 path of the neuron kernels (spike_node.h; dispatch in spike_node.c, convention in
 * isa.h). Compiled with AVX-512 F/BW/VL/DQ/CD/VBMI2 flags whatever the build's -march, and only
 * called after a run-time check that the CPU has them. */
#include <immintrin.h>

#include "isa_internal.h"
#include "spike_node.h"

/* Four vectors of 16 channels at a time: the steps of one neuron depend on each other (the
 * membrane carries over), so the chains of four vectors run side by side to hide the latency
 * of each step's subtract, multiply, add and compare. The membranes stay in registers for all R
 * steps; (x - v) * 0.5 equals (x - v) / 2 exactly (both are the correctly rounded half), and
 * the hard reset keeps h where silent and +0 where it spiked (h * 0 with h >= vth > 0). From
 * zero membranes the first step is h = x * 0.5: the reference's 0 + (x - 0) / 2 is the same
 * number (x - 0 is x; 0 + y is y, except that -0 becomes +0), so the same spike (vth > 0), and
 * a zero of the other sign in the membrane changes no later sum that is not zero itself; the
 * final membranes, where that sign could show, are dropped. It saves the two adds of the
 * step, and the adds (with the compare) are what the FP add pipes are busy with. */
void qkf__spike_lif_seq_avx512(uint16_t *const *mask, const float *const *x, int R, int C,
                              float vth, float *v)
{
    const __m512 half = _mm512_set1_ps(0.5f), th = _mm512_set1_ps(vth);
    int c0 = 0;
    for (; c0 + 64 <= C; c0 += 64) {
        __m512 a[4];
        int r = 0;
        if (v) {
            for (int k = 0; k < 4; k++)
                a[k] = _mm512_loadu_ps(v + c0 + 16 * k);
        } else if (R > 0) { /* from zero: h = x * 0.5 (below) */
            const float *xr = x[0] + c0;
            uint16_t *m = mask[0] + c0 / 16;
            for (int k = 0; k < 4; k++) {
                __m512 h = _mm512_mul_ps(_mm512_loadu_ps(xr + 16 * k), half);
                __mmask16 s = _mm512_cmp_ps_mask(h, th, _CMP_GE_OQ);
                a[k] = _mm512_maskz_mov_ps((__mmask16)~s, h);
                m[k] = (uint16_t)s;
            }
            r = 1;
        }
        for (; r < R; r++) {
            const float *xr = x[r] + c0;
            uint16_t *m = mask[r] + c0 / 16;
            for (int k = 0; k < 4; k++) {
                __m512 xv = _mm512_loadu_ps(xr + 16 * k);
                __m512 h = _mm512_add_ps(a[k], _mm512_mul_ps(_mm512_sub_ps(xv, a[k]), half));
                __mmask16 s = _mm512_cmp_ps_mask(h, th, _CMP_GE_OQ);
                a[k] = _mm512_maskz_mov_ps((__mmask16)~s, h);
                m[k] = (uint16_t)s;
            }
        }
        if (v)
            for (int k = 0; k < 4; k++)
                _mm512_storeu_ps(v + c0 + 16 * k, a[k]);
    }
    for (; c0 < C; c0 += 16) {
        int rem = C - c0;
        __mmask16 lanes = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __m512 a = v ? _mm512_maskz_loadu_ps(lanes, v + c0) : _mm512_setzero_ps();
        for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(lanes, x[r] + c0);
            __m512 h = _mm512_add_ps(a, _mm512_mul_ps(_mm512_sub_ps(xv, a), half));
            __mmask16 s = _mm512_mask_cmp_ps_mask(lanes, h, th, _CMP_GE_OQ);
            a = _mm512_maskz_mov_ps((__mmask16)~s, h);
            mask[r][c0 / 16] = (uint16_t)s;
        }
        if (v)
            _mm512_mask_storeu_ps(v + c0, lanes, a);
    }
}

int qkf__spike_mask_emit_avx512(uint16_t *ch, const uint16_t *mask, int C)
{
    int n = 0, k = 0, words = (C + 15) / 16;
    /* 32 channels a step, compressed as 16-bit lanes (half the steps of compressing 32-bit lane
     * indices and no narrowing; steps without spikes are skipped, as most are at low rates). The
     * 32 lanes are stored whole (one plain store, no test): lanes past the spikes land in this
     * row's own slots [n, 16 k + 32) with n <= 16 k, and are ignored. */
    const __m512i iota = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                          17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                          1, 0);
    for (; k + 2 <= C / 16; k += 2) {
        __mmask32 s = (__mmask32)(mask[k] | (uint32_t)mask[k + 1] << 16);
        if (!s)
            continue;
        __m512i idx = _mm512_maskz_compress_epi16(
            s, _mm512_add_epi16(iota, _mm512_set1_epi16((short)(16 * k))));
        _mm512_storeu_si512(ch + n, idx);
        n += __builtin_popcount((unsigned)s);
    }
    for (; k < words; k++)
        for (unsigned m = mask[k]; m; m &= m - 1)
            ch[n++] = (uint16_t)(16 * k + __builtin_ctz(m));
    return n;
}

/* The lists are short (a few dozen events): compare 32 channels at a time with every bound and
 * count, instead of a binary search's unpredictable branches. Lanes past n are masked off. */
int qkf__spike_count_below_avx512(const uint16_t *ch, int n, int c)
{
    const __m512i cv = _mm512_set1_epi16((short)c);
    int k = 0;
    for (int i = 0; i < n; i += 32) {
        __mmask32 lanes = n - i >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n - i)) - 1u);
        __m512i v = _mm512_maskz_loadu_epi16(lanes, ch + i);
        k += __builtin_popcount((unsigned)_mm512_mask_cmplt_epu16_mask(lanes, v, cv));
    }
    return k;
}

void qkf__spike_head_ends_avx512(int *end, const uint16_t *ch, int n, int d, int heads)
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
    for (int i = 0; i < n; i += 32) {
        __mmask32 lanes = n - i >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n - i)) - 1u);
        __m512i v = _mm512_maskz_loadu_epi16(lanes, ch + i);
        for (int h = 0; h < heads; h++) {
            __m512i b = _mm512_set1_epi16((short)((h + 1) * d));
            end[h] += __builtin_popcount((unsigned)_mm512_mask_cmplt_epu16_mask(lanes, v, b));
        }
    }
}
