/* The sigmoid surrogate gradient of the spike function (SpikingJelly, spec section 1), shared
 * by the float and byte LIF backward kernels so that both compute the same function bit for
 * bit. Static inline: called in the vectorised inner loops. */
#ifndef QKF_SURROGATE_H
#define QKF_SURROGATE_H

#include <stdint.h>
#include <string.h>

/* exp(x) for x in [-87, 87] with plain float arithmetic (so loops vectorise without
 * -ffast-math): x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 Taylor polynomial (error
 * < 2e-7 relative), 2^n through the exponent bits. */
static inline float qkf_exp_poly(float x)
{
    x = x < -87.0f ? -87.0f : x > 87.0f ? 87.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693145751953125f; /* ln2 split in two for an exact first product */
    r = r - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t bits = (ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float qkf_surrogate(float x, float alpha)
{
    float sg = 1.0f / (1.0f + qkf_exp_poly(-alpha * x));
    return alpha * sg * (1.0f - sg);
}

#endif
