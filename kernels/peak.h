/* The machine's vector add throughput, measured on the kernel path in use (kernels/isa.h): the
 * ceiling of the event engines' row accumulation, one load and one add per vector of weights.
 * qkf bench event reports the engines' accumulates against it. */
#ifndef QKF_PEAK_H
#define QKF_PEAK_H

/* Adds per second of the calling thread for about `seconds`: an L1-resident buffer (16 KB) added
 * into independent accumulators held in vector registers (16 on AVX-512, 8 on AVX2 and on the
 * portable path), one load and one add per vector. int16: 16-bit integer lanes (the integer
 * engine's int16 sums: twice the lanes per vector), else float lanes. */
double qkf_peak_adds(int int16, double seconds);

#endif
