/* Spike-form attention: Q-K token attention (QKTA), Q-K channel attention (QKCA) and
 * Spikformer's SSA. Inputs are spikes (0/1), so every sum here is an exact small integer. */
#include <omp.h>
#include <string.h>

#include "kernels.h"
#include "spike_train.h"

void qkf_qk_token_sum(float *cnt, const float *q, int C, int heads, int F, int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(static)
    for (int hd = 0; hd < heads; hd++) {
        float *o = cnt + hd * FN;
        memcpy(o, q + (int64_t)hd * d * FN, (size_t)FN * sizeof(float));
        for (int j = 1; j < d; j++) {
            const float *qc = q + ((int64_t)hd * d + j) * FN;
            for (int64_t i = 0; i < FN; i++)
                o[i] += qc[i];
        }
    }
}

void qkf_qk_channel_sum(float *cnt, const float *q, int C, int F, int N)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            const float *qc = q + ((int64_t)c * F + f) * N;
            float s = 0.0f;
            for (int n = 0; n < N; n++)
                s += qc[n];
            cnt[(int64_t)c * F + f] = s;
        }
}

void qkf_qk_token_mask(float *out, const float *attn, const float *k, int C, int heads, int F,
                       int N)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *a = attn + (int64_t)(c / d) * FN;
        const float *kc = k + (int64_t)c * FN;
        float *o = out + (int64_t)c * FN;
        for (int64_t i = 0; i < FN; i++)
            o[i] = a[i] * kc[i];
    }
}

void qkf_qk_channel_mask(float *out, const float *attn, const float *k, int C, int F, int N)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            float a = attn[(int64_t)c * F + f];
            const float *kc = k + ((int64_t)c * F + f) * N;
            float *o = out + ((int64_t)c * F + f) * N;
            for (int n = 0; n < N; n++)
                o[n] = a * kc[n];
        }
}

int64_t qkf_ssa_scratch_floats(int C, int heads, int threads)
{
    int d = C / heads;
    return (int64_t)threads * d * (d + 1);
}

void qkf_ssa_forward(float *out, const float *q, const float *k, const float *v, int C, int heads,
                     int F, int N, float *scratch)
{
    int d = C / heads;
    int64_t FN = (int64_t)F * N;
#pragma omp parallel
    {
        float *kv = scratch + (int64_t)omp_get_thread_num() * d * (d + 1);
        float *acc = kv + (int64_t)d * d;
#pragma omp for collapse(2) schedule(static)
        for (int f = 0; f < F; f++)
            for (int hd = 0; hd < heads; hd++) {
                /* kv[i][j] = sum_n k[hd*d+i][f][n] * v[hd*d+j][f][n] */
                for (int i = 0; i < d; i++) {
                    const float *ki = k + ((int64_t)(hd * d + i)) * FN + (int64_t)f * N;
                    for (int j = 0; j < d; j++) {
                        const float *vj = v + ((int64_t)(hd * d + j)) * FN + (int64_t)f * N;
                        float s = 0.0f;
                        for (int n = 0; n < N; n++)
                            s += ki[n] * vj[n];
                        kv[i * d + j] = s;
                    }
                }
                /* out[hd*d+j][f][n] = 0.125 * sum_i q[hd*d+i][f][n] * kv[i][j] */
                for (int n = 0; n < N; n++) {
                    for (int j = 0; j < d; j++)
                        acc[j] = 0.0f;
                    for (int i = 0; i < d; i++) {
                        float qi = q[((int64_t)(hd * d + i)) * FN + (int64_t)f * N + n];
                        if (qi == 0.0f)
                            continue;
                        for (int j = 0; j < d; j++)
                            acc[j] += qi * kv[i * d + j];
                    }
                    for (int j = 0; j < d; j++)
                        out[((int64_t)(hd * d + j)) * FN + (int64_t)f * N + n] = acc[j] * 0.125f;
                }
            }
    }
}

/* The readout's features, feat[b][c] = mean over t of mean over n of x[c][t*B + b][n], x floats
 * or bytes (u8 a constant after inlining): both sum the same floats in the same order. */
static inline __attribute__((always_inline)) void readout_feat(float *feat, const void *x, int u8,
                                                               int C, int T, int B, int N)
{
    int64_t F = (int64_t)T * B;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float st = 0.0f;
            for (int t = 0; t < T; t++) {
                int64_t xc = ((int64_t)c * F + (int64_t)t * B + b) * N;
                float sn = 0.0f;
                for (int n = 0; n < N; n++)
                    sn += u8 ? (float)((const uint8_t *)x)[xc + n] : ((const float *)x)[xc + n];
                st += sn / (float)N;
            }
            feat[(int64_t)b * C + c] = st / (float)T;
        }
}

void qkf_readout_forward(float *logits, float *feat, const float *x, const float *w,
                         const float *bias, int C, int T, int B, int N, int classes)
{
    readout_feat(feat, x, 0, C, T, B, N);
    qkf_readout_head(logits, feat, w, bias, C, B, classes);
}

void qkf_readout_forward_u8(float *logits, float *feat, const uint8_t *x, const float *w,
                            const float *bias, int C, int T, int B, int N, int classes)
{
    readout_feat(feat, x, 1, C, T, B, N);
    qkf_readout_head(logits, feat, w, bias, C, B, classes);
}

void qkf_readout_head(float *logits, const float *feat, const float *w, const float *bias, int C,
                      int B, int classes)
{
    for (int b = 0; b < B; b++)
        for (int j = 0; j < classes; j++) {
            const float *wj = w + (int64_t)j * C;
            const float *fb = feat + (int64_t)b * C;
            float s = 0.0f;
            for (int c = 0; c < C; c++)
                s += fb[c] * wj[c];
            logits[(int64_t)b * classes + j] = s + bias[j];
        }
}
