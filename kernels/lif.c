/* Multi-step LIF neuron (SpikingJelly MultiStepLIFNode: tau = 2, decay_input, v_reset = 0). */
#include <stddef.h>

#include "kernels.h"

#define TILE 256 /* tokens whose membranes live on the stack while stepping through time */

int64_t qkf_lif_forward(float *s, const float *x, int C, int T, int B, int N, int x_static,
                        float vth, int tb_compat, float *v_rec, float *h_rec)
{
    return qkf_bn_lif_forward(s, x, C, T, B, N, x_static, vth, tb_compat, NULL, NULL, NULL, v_rec,
                              h_rec);
}

/* The LIF of qkf_bn_lif_forward writing float spikes (s) or bytes (s8; s NULL). */
static int64_t bn_lif(float *s, uint8_t *s8, const float *x, int C, int T, int B, int N,
                      int x_static, float vth, int tb_compat, const float *bias,
                      const float *alpha, const float *shift, float *v_rec, float *h_rec)
{
    int64_t F = (int64_t)T * B, total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int c = 0; c < C; c++) {
        int64_t xF = x_static ? B : F;
        const float *xc = x + (int64_t)c * xF * N;
        float *sc = s ? s + (int64_t)c * F * N : NULL;
        uint8_t *sc8 = s8 ? s8 + (int64_t)c * F * N : NULL;
        int nb = tb_compat ? 1 : B; /* independent membranes per (c, n) */
        const int fused = alpha != NULL;
        const float bc = bias ? bias[c] : 0.0f, ac = fused ? alpha[c] : 1.0f,
                    sc_ = fused ? shift[c] : 0.0f;
        for (int b = 0; b < nb; b++)
            for (int n0 = 0; n0 < N; n0 += TILE) {
                int nn = N - n0 < TILE ? N - n0 : TILE;
                float v[TILE] = {0};
                int steps = tb_compat ? (int)F : T;
                for (int t = 0; t < steps; t++) {
                    /* frame of this step: (t, b) per sample; f = t directly on the T*B axis */
                    int64_t f = tb_compat ? t : (int64_t)t * B + b;
                    int64_t fx = x_static ? (tb_compat ? f % B : b) : f;
                    const float *xt = xc + fx * N + n0;
                    float sbuf[TILE];
                    float *st = sc ? sc + f * N + n0 : sbuf;
                    int64_t off = ((int64_t)c * F + f) * N + n0;
                    float xin[TILE];
                    if (fused) {
                        /* (raw + b) * a + s, rounded step by step as qkf_bias_bn_forward does */
                        if (bias)
                            for (int i = 0; i < nn; i++) {
                                float tmp = xt[i] + bc;
                                tmp = tmp * ac;
                                xin[i] = tmp + sc_;
                            }
                        else
                            for (int i = 0; i < nn; i++) {
                                float tmp = xt[i] * ac;
                                xin[i] = tmp + sc_;
                            }
                        xt = xin;
                    }
                    for (int i = 0; i < nn; i++) {
                        float h = v[i] + (xt[i] - v[i]) / 2.0f;
                        float spike = h >= vth ? 1.0f : 0.0f;
                        st[i] = spike;
                        v[i] = h * (1.0f - spike);
                        total += (int64_t)spike;
                        if (h_rec)
                            h_rec[off + i] = h;
                        if (v_rec)
                            v_rec[off + i] = v[i];
                    }
                    if (sc8)
                        for (int i = 0; i < nn; i++)
                            sc8[f * N + n0 + i] = (uint8_t)st[i];
                }
            }
    }
    return total;
}

int64_t qkf_bn_lif_forward(float *s, const float *x, int C, int T, int B, int N, int x_static,
                           float vth, int tb_compat, const float *bias, const float *alpha,
                           const float *shift, float *v_rec, float *h_rec)
{
    return bn_lif(s, NULL, x, C, T, B, N, x_static, vth, tb_compat, bias, alpha, shift, v_rec,
                  h_rec);
}

int64_t qkf_bn_lif_forward_u8(uint8_t *s, const float *x, int C, int T, int B, int N,
                              int x_static, float vth, int tb_compat, const float *bias,
                              const float *alpha, const float *shift, float *v_rec, float *h_rec)
{
    return bn_lif(NULL, s, x, C, T, B, N, x_static, vth, tb_compat, bias, alpha, shift, v_rec,
                  h_rec);
}
