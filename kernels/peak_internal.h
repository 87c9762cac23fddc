/* ISA paths of qkf_peak_adds (peak.h): one pass of reps walks over the buffer of `bytes`, adding
 * every vector into register accumulators; returns a lane of their sum (keeps them alive). */
#ifndef QKF_PEAK_INTERNAL_H
#define QKF_PEAK_INTERNAL_H

double qkf__peak_pass_avx512(const void *buf, int bytes, long reps, int int16);
double qkf__peak_pass_avx2(const void *buf, int bytes, long reps, int int16);

#endif
