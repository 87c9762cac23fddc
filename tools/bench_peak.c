/* The accumulate ceiling of qkf bench event's "of peak" columns (bench.h). Apart from
 * bench_event.c: io/events.h and kernels/spike.h both name a type qkf_events. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../kernels/spike.h"
#include "bench.h"

/* The accumulate ceiling of the kernel path in use, measured: every thread runs the engine's row
 * kernel (qkf_spike_gather_rows: rows in pairs, 128-wide blocks, the path's register blocking)
 * over weights that stay in L1 (32 rows of 128 floats, 16 KB), 64 rows of 32 events a call, for
 * about 0.3 s of each thread's CPU time (time spent running: robust on a shared machine, where
 * a wall clock would also count the time other processes hold the core); the sum over threads
 * of float adds per second. The same code the engine runs, at
 * its best (no cache misses, no list building, long lists), on whatever CPU and path: the "of
 * peak" columns say how close the engine comes to it. Measured once per path. */
static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double qkf_bench_add_peak(long threads)
{
    static double peaks[QKF_ISA_COUNT];
    qkf_isa isa = qkf_isa_current();
    if (peaks[isa] > 0.0)
        return peaks[isa];
    enum { CIN = 32, W = 128, ROWS = 64, EV = 32 };
    double total = 0.0;
#pragma omp parallel num_threads((int)threads) reduction(+ : total)
    {
        float *w = qkf_malloc(CIN * W * sizeof(float));
        float *out = qkf_malloc(ROWS * W * sizeof(float));
        uint16_t ch[EV];
        qkf_spike_row rows[ROWS];
        for (int i = 0; i < CIN * W; i++)
            w[i] = 1e-7f * (float)(i % 97);
        memset(out, 0, ROWS * W * sizeof(float));
        for (int i = 0; i < EV; i++)
            ch[i] = (uint16_t)(i % CIN);
        for (int r = 0; r < ROWS; r++) /* accumulating in place */
            rows[r] = (qkf_spike_row){out + r * W, out + r * W, {ch, NULL, EV, 0}, 0};
        long calls = 0;
        double t0 = thread_cpu_now(), t = 0.0;
        do {
            for (int k = 0; k < 64; k++)
                qkf_spike_gather_rows(rows, ROWS, 0, w, W, W);
            calls += 64;
            t = thread_cpu_now() - t0;
        } while (t < 0.3);
        float sink = 0.0f;
        for (int j = 0; j < ROWS * W; j++)
            sink += out[j];
        if (sink < 0.0f) /* never: keeps the sums alive */
            printf("%g\n", (double)sink);
        qkf_free(w);
        qkf_free(out);
        total += (double)calls * ROWS * EV * W / t;
    }
    peaks[isa] = total;
    return total;
}
