/* Shared by the qkf bench commands (tools/bench.c, bench_event.c). */
#ifndef QKF_BENCH_H
#define QKF_BENCH_H

/* Runs the PyTorch inference reference (tools/reference/bench_torch.py with python py, the
 * given threads, batches "1,32" and, if not NULL, the weights file), echoing its output, and
 * calls on_result for every "torch batch=..." line it prints. Returns -1 (error set) if it
 * cannot be started; a reference that exits badly gets a note, not an error. */
typedef void (*qkf_torch_result_fn)(void *ctx, int batch, double images_per_s, double median_ms,
                                    double min_ms);
int qkf_bench_torch(const char *py, long threads, const char *batches, const char *weights,
                    qkf_torch_result_fn on_result, void *ctx);

/* The median of v[0..n) (n >= 1), which it sorts in place (ascending: v[0] is the fastest of a
 * set of times). */
double qkf_bench_median(double *v, int n);

/* The kernel path in use (kernels/isa.h), for --version and every bench header: "avx2 (forced
 * by QKF_ISA; this CPU: avx512, avx2, portable)" or "avx512 (the best of avx512, avx2,
 * portable)". A static buffer. */
const char *qkf_bench_isa_desc(void);

/* The accumulate ceiling of the kernel path in use, in float adds per second over `threads`
 * threads (bench/bench_peak.c): measured once, on the engine's own row kernel. */
double qkf_bench_add_peak(long threads);
/* The same for the integer engine's int16 row kernel (qkf_spike_gather_rows_i16): int16 adds per
 * second. */
double qkf_bench_add_peak_int16(long threads);

#endif
