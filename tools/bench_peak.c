/* The accumulate ceiling of qkf bench event's "of peak" columns (bench.h). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../kernels/spike.h"
#include "../kernels/spike_int.h"
#include "bench.h"

/* The accumulate ceiling of the kernel path in use, measured: every thread runs the engine's row
 * kernel (qkf_spike_gather_rows: rows in pairs, 128-wide blocks, the path's register blocking;
 * for the integer engine qkf_spike_gather_rows_i16, 256-wide)
 * over weights that stay in L1 (32 rows of 128 floats or 256 int16, 16 KB), 64 rows of 32 events
 * a call, for about 0.3 s of each thread's CPU time (time spent running: robust on a shared
 * machine, where a wall clock would also count the time other processes hold the core); the sum
 * over threads of adds per second. The same code the engine runs, at
 * its best (no cache misses, no list building, long lists), on whatever CPU and path: the "of
 * peak" columns say how close the engine comes to it. Measured once per path. */
static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The ceiling of one kind of row kernel: float (qkf_spike_gather_rows, 128-wide rows) or int16
 * (qkf_spike_gather_rows_i16, the integer engine's int16 sums, 256-wide rows: the same 16 KB of
 * weights and the same vectors per row on AVX-512). */
static double row_peak(long threads, int int16)
{
    static double peaks[2][QKF_ISA_COUNT];
    qkf_isa isa = qkf_isa_current();
    if (peaks[int16][isa] > 0.0)
        return peaks[int16][isa];
    enum { CIN = 32, ROWS = 64, EV = 32 };
    const int W = int16 ? 256 : 128;
    double total = 0.0;
#pragma omp parallel num_threads((int)threads) reduction(+ : total)
    {
        size_t esz = int16 ? sizeof(int16_t) : sizeof(float);
        void *w = qkf_malloc((size_t)CIN * W * esz);
        void *out = qkf_malloc((size_t)ROWS * W * esz);
        uint16_t ch[EV];
        qkf_spike_row rows[ROWS];
        for (int i = 0; i < CIN * W; i++) {
            if (int16)
                ((int16_t *)w)[i] = (int16_t)(i % 97);
            else
                ((float *)w)[i] = 1e-7f * (float)(i % 97);
        }
        memset(out, 0, (size_t)ROWS * W * esz);
        for (int i = 0; i < EV; i++)
            ch[i] = (uint16_t)(i % CIN);
        for (int r = 0; r < ROWS; r++) { /* accumulating in place */
            float *o = (float *)(void *)((char *)out + (size_t)r * W * esz);
            rows[r] = (qkf_spike_row){o, o, {ch, NULL, EV, 0}, 0};
        }
        long calls = 0;
        double t0 = thread_cpu_now(), t = 0.0;
        do {
            for (int k = 0; k < 64; k++) {
                if (int16)
                    qkf_spike_gather_rows_i16(rows, ROWS, 0, w, W, W);
                else
                    qkf_spike_gather_rows(rows, ROWS, 0, w, W, W);
            }
            calls += 64;
            t = thread_cpu_now() - t0;
        } while (t < 0.3);
        double sink = 0.0;
        for (int j = 0; j < ROWS * W; j++)
            sink += int16 ? (double)((int16_t *)out)[j] : (double)((float *)out)[j];
        if (sink == 1e300) /* never: keeps the sums alive */
            printf("%g\n", sink);
        qkf_free(w);
        qkf_free(out);
        total += (double)calls * ROWS * EV * W / t;
    }
    peaks[int16][isa] = total;
    return total;
}

double qkf_bench_add_peak(long threads)
{
    return row_peak(threads, 0);
}

double qkf_bench_add_peak_int16(long threads)
{
    return row_peak(threads, 1);
}
