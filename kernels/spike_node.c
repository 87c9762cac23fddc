/* Neuron kernels of the event engine's nodes: a LIF row stepped through a sequence of inputs,
 * and the event lists of spike masks. Layouts are described in spike_node.h.
 *
 * Every fast kernel has a plain _ref twin that the tests compare against, and three paths picked
 * at run time (isa.h): AVX-512 (spike_node_avx512.c), AVX2 (spike_node_avx2.c) and the portable
 * path below (4-float vectors that compile to SSE2 or NEON). All perform the same float
 * operations in the same order, so they agree bit for bit. */
#include "spike_node.h"

#include <string.h>

#include "isa.h"
#include "isa_internal.h"
#include "lut_internal.h"

void qkf_spike_lif_seq_ref(uint16_t *const *mask, const float *const *x, int R, int C, float vth,
                           float *v)
{
    for (int c = 0; c < C; c++) {
        float u = v ? v[c] : 0.0f;
        for (int r = 0; r < R; r++) {
            float h = u + (x[r][c] - u) / 2.0f;
            float spike = h >= vth ? 1.0f : 0.0f;
            u = h * (1.0f - spike);
            if (c % 16 == 0)
                mask[r][c / 16] = 0;
            if (spike != 0.0f)
                mask[r][c / 16] = (uint16_t)(mask[r][c / 16] | 1u << (c % 16));
        }
        if (v)
            v[c] = u;
    }
}

int qkf_spike_mask_emit_ref(uint16_t *ch, const uint16_t *mask, int C)
{
    int n = 0;
    for (int c = 0; c < C; c++)
        if (mask[c / 16] >> (c % 16) & 1u)
            ch[n++] = (uint16_t)c;
    return n;
}

int qkf_spike_count_below_ref(const uint16_t *ch, int n, int c)
{
    int k = 0;
    while (k < n && ch[k] < c)
        k++;
    return k;
}

void qkf_spike_head_ends_ref(int *end, const uint16_t *ch, int n, int d, int heads)
{
    for (int h = 0; h < heads; h++)
        end[h] = qkf_spike_count_below_ref(ch, n, (h + 1) * d);
}

/* Portable: 16 channels (one mask word, four vectors) at a time with the membranes in registers
 * for all R steps; the lanes past C of the last word are padded with zeros (h = 0 < vth) and
 * masked out of the word. */
static void lif_seq_portable(uint16_t *const *mask, const float *const *x, int R, int C,
                             float vth, float *v)
{
    const qkf__v4f half = {0.5f, 0.5f, 0.5f, 0.5f}, th = {vth, vth, vth, vth};
    for (int c0 = 0; c0 < C; c0 += 16) {
        int nc = C - c0 < 16 ? C - c0 : 16;
        float buf[16] = {0};
        qkf__v4f a[4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
        if (v) {
            memcpy(buf, v + c0, (size_t)nc * sizeof(float));
            for (int k = 0; k < 4; k++)
                a[k] = qkf__ld4(buf + 4 * k);
        }
        unsigned keep = nc == 16 ? 0xFFFFu : (1u << nc) - 1u;
        for (int r = 0; r < R; r++) {
            const float *xr = x[r] + c0;
            if (nc < 16) {
                memcpy(buf, xr, (size_t)nc * sizeof(float));
                xr = buf;
            }
            qkf__v4i s[4];
            for (int k = 0; k < 4; k++) {
                qkf__v4f h = a[k] + (qkf__ld4(xr + 4 * k) - a[k]) * half;
                s[k] = h >= th;
                a[k] = (qkf__v4f)((qkf__v4i)h & ~s[k]);
            }
            mask[r][c0 / 16] = (uint16_t)(qkf__bits16(s[0], s[1], s[2], s[3]) & keep);
            if (nc < 16)
                memset(buf, 0, sizeof buf);
        }
        if (v) {
            for (int k = 0; k < 4; k++)
                qkf__st4(buf + 4 * k, a[k]);
            memcpy(v + c0, buf, (size_t)nc * sizeof(float));
        }
    }
}

void qkf_spike_lif_seq(uint16_t *const *mask, const float *const *x, int R, int C, float vth,
                       float *v)
{
    QKF__PICK_VOID(spike_lif_seq, (mask, x, R, C, vth, v))
    lif_seq_portable(mask, x, R, C, vth, v);
}

int qkf_spike_mask_emit(uint16_t *ch, const uint16_t *mask, int C)
{
    QKF__PICK(spike_mask_emit, (ch, mask, C))
    /* whole words: each non-zero byte stores 8 left-packed lanes (in this row's own slots
     * [n, 16 k + 8 j + 8), n <= 16 k + 8 j); the last partial word bit by bit */
    int n = 0, k = 0, words = (C + 15) / 16;
    for (; k < C / 16; k++) {
        unsigned m = mask[k];
        if (!m)
            continue;
        for (int j = 0; j < 2; j++) {
            unsigned b = m >> (8 * j) & 0xFFu;
            qkf__v8u8 l;
            memcpy(&l, &qkf__lut8[b], sizeof l);
            qkf__v8u16 idx = __builtin_convertvector(l, qkf__v8u16) + (uint16_t)(16 * k + 8 * j);
            memcpy(ch + n, &idx, sizeof idx);
            n += qkf__pop8(b);
        }
    }
    for (; k < words; k++)
        for (unsigned m = mask[k]; m; m &= m - 1)
            ch[n++] = (uint16_t)(16 * k + __builtin_ctz(m));
    return n;
}

/* Portable: a count over the whole list, no early exit (fixed-width loops the compiler
 * vectorises; the lists are short). */
int qkf_spike_count_below(const uint16_t *ch, int n, int c)
{
    QKF__PICK(spike_count_below, (ch, n, c))
    int k = 0;
    for (int i = 0; i < n; i++)
        k += ch[i] < c;
    return k;
}

void qkf_spike_head_ends(int *end, const uint16_t *ch, int n, int d, int heads)
{
    QKF__PICK_VOID(spike_head_ends, (end, ch, n, d, heads))
    if (n <= 8) {
        for (int h = 0, i = 0; h < heads; h++) {
            while (i < n && ch[i] < (h + 1) * d)
                i++;
            end[h] = i;
        }
        return;
    }
    for (int h = 0; h < heads; h++) {
        int b = (h + 1) * d, k = 0;
        for (int i = 0; i < n; i++)
            k += ch[i] < b;
        end[h] = k;
    }
}
