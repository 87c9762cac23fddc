/* Helpers the event-file suites share (tests/test_events.c, tests/test_events_cameras.c). */
#ifndef QKF_TESTS_EVENTS_UTIL_H
#define QKF_TESTS_EVENTS_UTIL_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/events.h"

/* The whole file at path (malloc'd; *len its size). */
static inline uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Every prefix of the good file at path decodes to a prefix of its events or fails with an error
 * containing cut_err; every single-byte change to one of vals[0..nvals) decodes or fails (with an
 * error containing flip_err, when given). name labels the messages. */
static inline void sweep_cuts_and_flips(const char *name, const char *path, const uint8_t *vals,
                                        size_t nvals, const char *cut_err, const char *flip_err)
{
    size_t len;
    uint8_t *full = slurp(path, &len);
    qkf_events ref, e;
    cr_assert_eq(qkf_events_decode(full, len, path, NULL, &ref), 0);
    for (size_t n = 0; n < len; n++) {
        uint8_t *cut = malloc(n ? n : 1); /* exact size: the sanitizer sees any overread */
        memcpy(cut, full, n);
        if (qkf_events_decode(cut, n, path, NULL, &e) == 0) {
            cr_assert_leq(e.n, ref.n);
            for (int64_t i = 0; i < e.n; i++)
                cr_assert(e.ev[i].t == ref.ev[i].t && e.ev[i].x == ref.ev[i].x &&
                              e.ev[i].y == ref.ev[i].y && e.ev[i].p == ref.ev[i].p,
                          "%s cut at %zu: event %lld differs", name, n, (long long)i);
            qkf_events_free(&e);
        } else {
            cr_assert(strstr(qkf_last_error(), cut_err), "%s", qkf_last_error());
        }
        free(cut);
    }
    for (size_t i = 0; i < len; i++)
        for (size_t v = 0; v < nvals; v++) {
            uint8_t save = full[i];
            full[i] = vals[v];
            if (qkf_events_decode(full, len, path, NULL, &e) == 0)
                qkf_events_free(&e);
            else if (flip_err)
                cr_assert(strstr(qkf_last_error(), flip_err), "%s", qkf_last_error());
            full[i] = save;
        }
    qkf_events_free(&ref);
    free(full);
}

#endif
