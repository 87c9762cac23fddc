/* Shared foundations: error reporting, checked allocation, small utilities.
 *
 * Errors: library functions return 0 on success and -1 on failure, after recording one line of
 * text with qkf_set_error(). The caller (usually the CLI) prints qkf_last_error() and exits
 * non-zero. The message is thread-local so worker threads cannot clobber each other. */
#ifndef QKF_BASE_H
#define QKF_BASE_H

#include <stddef.h>
#include <stdint.h>

#define QKF_VERSION "0.1.0"

#if defined(__GNUC__)
#define QKF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define QKF_PRINTF(a, b)
#endif

/* Records the error message (printf-style) and returns -1, so `return qkf_set_error(...)` works. */
int qkf_set_error(const char *fmt, ...) QKF_PRINTF(1, 2);
const char *qkf_last_error(void);
void qkf_clear_error(void);

/* Programming errors (a scratch buffer planned too small, a shape mismatch inside a kernel):
 * prints "qkf: FILE:LINE: assertion failed: COND" and aborts. Never compiled out. */
#define QKF_ASSERT(cond) ((cond) ? (void)0 : qkf_assert_fail(__FILE__, __LINE__, #cond))
_Noreturn void qkf_assert_fail(const char *file, int line, const char *cond);

/* Allocation that aborts with a message on failure: out of memory is not a recoverable input
 * error here. Memory is 64-byte aligned (AVX-512 rows). */
void *qkf_malloc(size_t n);
void *qkf_calloc(size_t n, size_t size);
void qkf_free(void *p);

/* Monotonic wall clock in seconds. */
double qkf_now(void);
/* Sleeps ms milliseconds. */
void qkf_sleep_ms(int ms);

/* Deterministic random numbers (xoshiro128+ style), identical on every machine. */
typedef struct {
    uint64_t s[2];
} qkf_rng;
void qkf_rng_seed(qkf_rng *r, uint64_t seed);
uint64_t qkf_rng_u64(qkf_rng *r);
float qkf_rng_uniform(qkf_rng *r); /* [0, 1) */
float qkf_rng_normal(qkf_rng *r);  /* N(0, 1) */

#endif
