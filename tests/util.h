/* Helpers shared by the test files. */
#ifndef QKF_TESTS_UTIL_H
#define QKF_TESTS_UTIL_H

#include <math.h>
#include <stdint.h>

/* max |a - b| over n values and its index (a NaN difference counts as the largest). */
static inline double max_abs_err(const float *a, const float *b, int64_t n, int64_t *worst)
{
    double m = 0.0;
    *worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) {
            m = d;
            *worst = i;
        }
    }
    return m;
}

#endif
