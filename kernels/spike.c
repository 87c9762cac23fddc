/* Event kernels: register-blocked row accumulation, LIF rows that emit events, the attention
 * OR-neuron and residual merges. Layouts are described in spike.h.
 *
 * Every fast kernel has a plain _ref twin that the tests compare against. The fast and reference
 * versions perform the same float operations in the same order, so they agree bit for bit: a
 * vector lane only changes which outputs are computed together, never the order of the adds
 * into one output. */
#include "spike.h"

#include <math.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static int64_t spikes_of(const qkf_spike_seg *seg, int nseg)
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

int64_t qkf_spike_gather_ref(float *out, const float *init, const float *w, int32_t stride,
                             const qkf_spike_seg *seg, int nseg, int width)
{
    for (int j = 0; j < width; j++) {
        float acc = init ? init[j] : 0.0f;
        for (int s = 0; s < nseg; s++)
            for (int i = 0; i < seg[s].n; i++) {
                float x = w[seg[s].base + (int32_t)seg[s].ch[i] * stride + j];
                acc = seg[s].cnt ? fmaf((float)seg[s].cnt[i], x, acc) : acc + x;
            }
        out[j] = acc;
    }
    return spikes_of(seg, nseg);
}

#if defined(__AVX512F__)

/* nb vectors of 16 outputs (nb <= 16, a constant after inlining) accumulated over every
 * segment with the accumulators held in registers. w is already offset to the block's first
 * column. */
static inline __attribute__((always_inline)) void gather_block(float *out, const float *init,
                                                               const float *w, int32_t stride,
                                                               const qkf_spike_seg *seg, int nseg,
                                                               int nb)
{
    __m512 a[16];
    for (int k = 0; k < nb; k++)
        a[k] = init ? _mm512_loadu_ps(init + 16 * k) : _mm512_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        const uint16_t *ch = seg[s].ch, *cnt = seg[s].cnt;
        const float *ws = w + seg[s].base;
        int n = seg[s].n;
        if (!cnt) {
            for (int i = 0; i < n; i++) {
                const float *p = ws + (int32_t)ch[i] * stride;
                for (int k = 0; k < nb; k++)
                    a[k] = _mm512_add_ps(a[k], _mm512_loadu_ps(p + 16 * k));
            }
        } else {
            for (int i = 0; i < n; i++) {
                const float *p = ws + (int32_t)ch[i] * stride;
                __m512 c = _mm512_set1_ps((float)cnt[i]);
                for (int k = 0; k < nb; k++)
                    a[k] = _mm512_fmadd_ps(c, _mm512_loadu_ps(p + 16 * k), a[k]);
            }
        }
    }
    for (int k = 0; k < nb; k++)
        _mm512_storeu_ps(out + 16 * k, a[k]);
}

/* gather_block with a run-time nb, dispatched to constant-nb copies. */
static void gather_nb(float *out, const float *init, const float *w, int32_t stride,
                      const qkf_spike_seg *seg, int nseg, int nb)
{
    /* clang-format off */
    switch (nb) {
    case 1: gather_block(out, init, w, stride, seg, nseg, 1); break;
    case 2: gather_block(out, init, w, stride, seg, nseg, 2); break;
    case 3: gather_block(out, init, w, stride, seg, nseg, 3); break;
    case 4: gather_block(out, init, w, stride, seg, nseg, 4); break;
    case 5: gather_block(out, init, w, stride, seg, nseg, 5); break;
    case 6: gather_block(out, init, w, stride, seg, nseg, 6); break;
    case 7: gather_block(out, init, w, stride, seg, nseg, 7); break;
    case 8: gather_block(out, init, w, stride, seg, nseg, 8); break;
    case 9: gather_block(out, init, w, stride, seg, nseg, 9); break;
    case 10: gather_block(out, init, w, stride, seg, nseg, 10); break;
    case 11: gather_block(out, init, w, stride, seg, nseg, 11); break;
    case 12: gather_block(out, init, w, stride, seg, nseg, 12); break;
    case 13: gather_block(out, init, w, stride, seg, nseg, 13); break;
    case 14: gather_block(out, init, w, stride, seg, nseg, 14); break;
    case 15: gather_block(out, init, w, stride, seg, nseg, 15); break;
    case 16: gather_block(out, init, w, stride, seg, nseg, 16); break;
    default: break;
    }
    /* clang-format on */
}

/* The last width % 16 outputs, under a lane mask. */
static void gather_tail(float *out, const float *init, const float *w, int32_t stride,
                        const qkf_spike_seg *seg, int nseg, int rem)
{
    __mmask16 m = (__mmask16)((1u << rem) - 1u);
    __m512 a = init ? _mm512_maskz_loadu_ps(m, init) : _mm512_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        const float *ws = w + seg[s].base;
        for (int i = 0; i < seg[s].n; i++) {
            __m512 r = _mm512_maskz_loadu_ps(m, ws + (int32_t)seg[s].ch[i] * stride);
            a = seg[s].cnt ? _mm512_fmadd_ps(_mm512_set1_ps((float)seg[s].cnt[i]), r, a)
                           : _mm512_add_ps(a, r);
        }
    }
    _mm512_mask_storeu_ps(out, m, a);
}

int64_t qkf_spike_gather(float *out, const float *init, const float *w, int32_t stride,
                         const qkf_spike_seg *seg, int nseg, int width)
{
    /* passes of at most 16 vectors (256 outputs), split evenly: 384 = 12 + 12 */
    int full = width / 16, passes = (full + 15) / 16, j = 0;
    for (int p = 0; p < passes; p++) {
        int nb = (full - j / 16) / (passes - p);
        gather_nb(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, nb);
        j += 16 * nb;
    }
    if (j < width)
        gather_tail(out + j, init ? init + j : NULL, w + j, stride, seg, nseg, width - j);
    return spikes_of(seg, nseg);
}

#else /* portable: blocks of 64 outputs in a local array the compiler keeps in vector registers */

int64_t qkf_spike_gather(float *out, const float *init, const float *w, int32_t stride,
                         const qkf_spike_seg *seg, int nseg, int width)
{
    for (int j0 = 0; j0 < width; j0 += 64) {
        int nb = width - j0 < 64 ? width - j0 : 64;
        float acc[64];
        for (int j = 0; j < nb; j++)
            acc[j] = init ? init[j0 + j] : 0.0f;
        for (int s = 0; s < nseg; s++)
            for (int i = 0; i < seg[s].n; i++) {
                const float *p = w + seg[s].base + (int32_t)seg[s].ch[i] * stride + j0;
                if (seg[s].cnt) {
                    float c = (float)seg[s].cnt[i];
                    for (int j = 0; j < nb; j++)
                        acc[j] = fmaf(c, p[j], acc[j]);
                } else {
                    for (int j = 0; j < nb; j++)
                        acc[j] += p[j];
                }
            }
        for (int j = 0; j < nb; j++)
            out[j0 + j] = acc[j];
    }
    return spikes_of(seg, nseg);
}

#endif

int qkf_spike_lif_row_ref(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    int k = 0;
    for (int c = 0; c < C; c++) {
        float h = v[c] + (x[c] - v[c]) / 2.0f;
        float spike = h >= vth ? 1.0f : 0.0f;
        v[c] = h * (1.0f - spike);
        if (spike != 0.0f)
            ch[k++] = (uint16_t)c;
    }
    return k;
}

#if defined(__AVX512F__)

/* Writes c0 + (index of every set bit of s), ascending; returns how many. */
static inline int emit(uint16_t *ch, __mmask16 s, int c0)
{
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    /* compress the lane indices, narrow them to 16 bits, store exactly popcount of them (a
     * masked store: the next token's slots may belong to another thread) */
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int n = __builtin_popcount((unsigned)s);
    if (n) {
        __m512i idx = _mm512_maskz_compress_epi32(s, _mm512_add_epi32(iota, _mm512_set1_epi32(c0)));
        _mm256_mask_storeu_epi16(ch, (__mmask16)((1u << n) - 1u), _mm512_cvtepi32_epi16(idx));
    }
    return n;
#else
    int n = 0;
    for (unsigned m = s; m; m &= m - 1)
        ch[n++] = (uint16_t)(c0 + __builtin_ctz(m));
    return n;
#endif
}

int qkf_spike_lif_row(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    /* (x - v) * 0.5 equals (x - v) / 2 exactly: both are the correctly rounded half. */
    const __m512 half = _mm512_set1_ps(0.5f), th = _mm512_set1_ps(vth);
    int k = 0;
    for (int c0 = 0; c0 < C; c0 += 16) {
        int rem = C - c0;
        __mmask16 lanes = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __m512 xv = _mm512_maskz_loadu_ps(lanes, x + c0);
        __m512 vv = _mm512_maskz_loadu_ps(lanes, v + c0);
        __m512 h = _mm512_add_ps(vv, _mm512_mul_ps(_mm512_sub_ps(xv, vv), half));
        __mmask16 s = _mm512_mask_cmp_ps_mask(lanes, h, th, _CMP_GE_OQ);
        /* hard reset: v = h where silent, +0 where it spiked (h * 0 with h >= vth > 0) */
        _mm512_mask_storeu_ps(v + c0, lanes, _mm512_maskz_mov_ps((__mmask16)~s, h));
        k += emit(ch + k, s, c0);
    }
    return k;
}

#else

int qkf_spike_lif_row(uint16_t *ch, float *v, const float *x, int C, float vth)
{
    return qkf_spike_lif_row_ref(ch, v, x, C, vth);
}

#endif

int qkf_spike_attn_row(uint16_t *ch, const float *cnt, int C)
{
    int k = 0;
    for (int c = 0; c < C; c++)
        if (cnt[c] >= 1.0f)
            ch[k++] = (uint16_t)c;
    return k;
}

int qkf_spike_merge(uint16_t *ch, uint16_t *cnt, const uint16_t *ch0, const uint16_t *cnt0, int n0,
                    const uint16_t *ch1, const uint16_t *cnt1, int n1)
{
    int i = 0, j = 0, k = 0;
    while (i < n0 && j < n1) {
        if (ch0[i] < ch1[j]) {
            ch[k] = ch0[i], cnt[k++] = cnt0 ? cnt0[i] : 1, i++;
        } else if (ch1[j] < ch0[i]) {
            ch[k] = ch1[j], cnt[k++] = cnt1 ? cnt1[j] : 1, j++;
        } else {
            ch[k] = ch0[i];
            cnt[k++] = (uint16_t)((cnt0 ? cnt0[i] : 1) + (cnt1 ? cnt1[j] : 1));
            i++, j++;
        }
    }
    for (; i < n0; i++)
        ch[k] = ch0[i], cnt[k++] = cnt0 ? cnt0[i] : 1;
    for (; j < n1; j++)
        ch[k] = ch1[j], cnt[k++] = cnt1 ? cnt1[j] : 1;
    return k;
}
