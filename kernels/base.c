/* Errors, allocation, clock and the deterministic RNG shared by every module. */
#define _POSIX_C_SOURCE 200809L
#include "base.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char err_buf[1024];

int qkf_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

const char *qkf_last_error(void) { return err_buf[0] ? err_buf : "unknown error"; }
void qkf_clear_error(void) { err_buf[0] = 0; }

void qkf_assert_fail(const char *file, int line, const char *cond)
{
    fprintf(stderr, "qkf: %s:%d: assertion failed: %s\n", file, line, cond);
    abort();
}

void *qkf_malloc(size_t n)
{
    void *p = NULL;
    if (n == 0)
        n = 64;
    n = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, n) != 0 || !p) {
        fprintf(stderr, "qkf: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}

void *qkf_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        fprintf(stderr, "qkf: allocation size overflow\n");
        abort();
    }
    void *p = qkf_malloc(n * size);
    memset(p, 0, n * size);
    return p;
}

void qkf_free(void *p) { free(p); }

double qkf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qkf_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void qkf_rng_seed(qkf_rng *r, uint64_t seed)
{
    r->s[0] = splitmix64(&seed);
    r->s[1] = splitmix64(&seed);
}

uint64_t qkf_rng_u64(qkf_rng *r)
{
    /* xoroshiro128+ */
    uint64_t s0 = r->s[0], s1 = r->s[1], res = s0 + s1;
    s1 ^= s0;
    r->s[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    r->s[1] = (s1 << 37) | (s1 >> 27);
    return res;
}

float qkf_rng_uniform(qkf_rng *r) { return (float)(qkf_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float qkf_rng_normal(qkf_rng *r)
{
    /* Box-Muller in double for accuracy; one value per call keeps the stream simple. */
    double u1 = ((double)(qkf_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(qkf_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
