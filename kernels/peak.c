/* Vector add throughput (peak.h): the portable loop and the dispatch to the ISA paths. */
#include "peak.h"

#include <stdint.h>
#include <string.h>

#include "base.h"
#include "isa.h"
#include "peak_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#define QKF_X86 1
#endif

/* 8 accumulators of 16-byte GCC vectors (SSE2 / NEON registers), the buffer walked 8 vectors at a
 * time: the adds of one pass are independent. */
typedef float f4 __attribute__((vector_size(16)));
typedef int16_t s8 __attribute__((vector_size(16)));

static double pass_portable(const void *buf, int n16, long reps, int int16)
{
    if (int16) {
        const s8 *b = buf;
        s8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        for (long r = 0; r < reps; r++)
            for (int i = 0; i + 8 <= n16; i += 8) {
                a0 += b[i], a1 += b[i + 1], a2 += b[i + 2], a3 += b[i + 3];
                a4 += b[i + 4], a5 += b[i + 5], a6 += b[i + 6], a7 += b[i + 7];
            }
        s8 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
        return (double)s[0];
    }
    const f4 *b = buf;
    f4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (long r = 0; r < reps; r++)
        for (int i = 0; i + 8 <= n16; i += 8) {
            a0 += b[i], a1 += b[i + 1], a2 += b[i + 2], a3 += b[i + 3];
            a4 += b[i + 4], a5 += b[i + 5], a6 += b[i + 6], a7 += b[i + 7];
        }
    f4 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    return (double)s[0];
}

double qkf_peak_adds(int int16, double seconds)
{
    enum { BYTES = 16384 };
    void *buf = qkf_malloc(BYTES);
    float *f = buf;
    for (int i = 0; i < BYTES / 4; i++)
        f[i] = 1e-7f * (float)(i % 97);
    if (int16)
        memset(buf, 1, BYTES);
    long reps = 0, step = 256;
    double t0 = qkf_now(), t = 0.0, sink = 0.0;
    qkf_isa isa = qkf_isa_current();
    do {
        switch (isa) {
#ifdef QKF_X86
        case QKF_ISA_AVX512:
            sink += qkf__peak_pass_avx512(buf, BYTES, step, int16);
            break;
        case QKF_ISA_AVX2:
            sink += qkf__peak_pass_avx2(buf, BYTES, step, int16);
            break;
#endif
        default:
            sink += pass_portable(buf, BYTES / 16, step, int16);
        }
        reps += step;
        t = qkf_now() - t0;
    } while (t < seconds);
    qkf_free(buf);
    if (sink == 1e300) /* never: keeps the sums alive */
        t += 1.0;
    return (double)reps * (BYTES / (int16 ? 2 : 4)) / t;
}
