/* The LIF walk through time shared by the trainer's kernels: backward.c (float spikes) and
 * spike_train.c (byte spikes, and the BatchNorm-fed variants). Layout as qkf_lif_forward:
 * s, h, ds are [C][F][N] with F = T*B frames, x and dx are [C][F][N], or [C][B][N] for a static
 * input. A channel is walked as sequences (one per batch row; with tb_compat one sequence of all
 * F frames, the official SSA proj_lif quirk) of up to QKF__LIF_TILE tokens whose state stays on
 * the stack through time.
 *
 * Static inline, spikes as floats or bytes by a u8 flag that is a constant after inlining: the
 * float and byte kernels then compute the same function bit for bit, each at full speed. */
#ifndef QKF_LIF_INTERNAL_H
#define QKF_LIF_INTERNAL_H

#include <stdint.h>

#include "surrogate.h"

#define QKF__LIF_TILE 256 /* tokens whose state lives on the stack while stepping through time */

#define QKF__INLINE static inline __attribute__((always_inline))

typedef struct {
    int64_t F, xF; /* frames of s, h, ds; frames of x, dx (B when static) */
    int nb, steps; /* sequences per channel, steps per sequence */
    int B, x_static, tb_compat;
} qkf__lif_walk;

QKF__INLINE qkf__lif_walk qkf__lif_walk_make(int T, int B, int x_static, int tb_compat)
{
    int64_t F = (int64_t)T * B;
    qkf__lif_walk w = {.F = F,
                       .xF = x_static ? B : F,
                       .nb = tb_compat ? 1 : B,
                       .steps = tb_compat ? (int)F : T,
                       .B = B,
                       .x_static = x_static,
                       .tb_compat = tb_compat};
    return w;
}

/* The frame that step t of sequence b writes in s, h, ds. */
QKF__INLINE int64_t qkf__lif_frame(const qkf__lif_walk *w, int t, int b)
{
    return w->tb_compat ? t : (int64_t)t * w->B + b;
}

/* The frame of x (and dx) that frame f of sequence b reads. */
QKF__INLINE int64_t qkf__lif_xframe(const qkf__lif_walk *w, int64_t f, int b)
{
    return w->x_static ? (w->tb_compat ? f % w->B : b) : f;
}

/* Spike i of s, floats or bytes (0/1). */
QKF__INLINE float qkf__lif_spike(const void *s, int u8, int64_t i)
{
    return u8 ? (float)((const uint8_t *)s)[i] : ((const float *)s)[i];
}

/* One step of nn tokens, the membranes before reset again from the recorded spikes s[off ..]:
 * h = v + (x - v)/2, v = h * (1 - s). */
QKF__INLINE void qkf__lif_h_row(float *h, float *v, const float *x, const void *s, int u8,
                                int64_t off, int nn)
{
    for (int i = 0; i < nn; i++) {
        float hv = v[i] + (x[i] - v[i]) / 2.0f;
        h[i] = hv;
        v[i] = hv * (1.0f - qkf__lif_spike(s, u8, off + i));
    }
}

/* One BPTT step of nn tokens, ds and s read at [off ..]: g = ds * surrogate(h - vth) + gh/2 *
 * (1 - s) (the reset detached, so only the leak carries gradient back), gh = g, dx += g/2, or
 * dx = g/2 with overwrite. */
QKF__INLINE void qkf__lif_bptt_row(float *dx, float *gh, const float *ds, const float *h,
                                   const void *s, int u8, int64_t off, int nn, float vth,
                                   float alpha, int overwrite)
{
    if (overwrite)
        for (int i = 0; i < nn; i++) {
            float st = qkf__lif_spike(s, u8, off + i);
            float g = ds[off + i] * qkf_surrogate(h[i] - vth, alpha) + gh[i] * 0.5f * (1.0f - st);
            gh[i] = g;
            dx[i] = g * 0.5f;
        }
    else
        for (int i = 0; i < nn; i++) {
            float st = qkf__lif_spike(s, u8, off + i);
            float g = ds[off + i] * qkf_surrogate(h[i] - vth, alpha) + gh[i] * 0.5f * (1.0f - st);
            gh[i] = g;
            dx[i] += g * 0.5f;
        }
}

/* qkf_lif_recompute_h for channel c. */
QKF__INLINE void qkf__lif_recompute_h_channel(float *h, const float *x, const void *s, int u8,
                                              int c, qkf__lif_walk w, int N)
{
    const float *xc = x + (int64_t)c * w.xF * N;
    for (int b = 0; b < w.nb; b++)
        for (int n0 = 0; n0 < N; n0 += QKF__LIF_TILE) {
            int nn = N - n0 < QKF__LIF_TILE ? N - n0 : QKF__LIF_TILE;
            float v[QKF__LIF_TILE] = {0};
            for (int t = 0; t < w.steps; t++) {
                int64_t f = qkf__lif_frame(&w, t, b), off = ((int64_t)c * w.F + f) * N + n0;
                qkf__lif_h_row(h + off, v, xc + qkf__lif_xframe(&w, f, b) * N + n0, s, u8, off, nn);
            }
        }
}

/* qkf_lif_backward for channel c (dx accumulates). */
QKF__INLINE void qkf__lif_backward_channel(float *dx, const float *ds, const float *h,
                                           const void *s, int u8, int c, qkf__lif_walk w, int N,
                                           float vth, float alpha)
{
    float *dxc = dx + (int64_t)c * w.xF * N;
    for (int b = 0; b < w.nb; b++)
        for (int n0 = 0; n0 < N; n0 += QKF__LIF_TILE) {
            int nn = N - n0 < QKF__LIF_TILE ? N - n0 : QKF__LIF_TILE;
            float gh[QKF__LIF_TILE] = {0}; /* gradient reaching h[t+1] */
            for (int t = w.steps - 1; t >= 0; t--) {
                int64_t f = qkf__lif_frame(&w, t, b), off = ((int64_t)c * w.F + f) * N + n0;
                qkf__lif_bptt_row(dxc + qkf__lif_xframe(&w, f, b) * N + n0, gh, ds, h + off, s, u8,
                                  off, nn, vth, alpha, 0);
            }
        }
}

#endif
