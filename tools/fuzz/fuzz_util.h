/* Shared by the afl++ harnesses of tools/fuzz (not part of the CMake build; see README.md). */
#ifndef QKF_FUZZ_UTIL_H
#define QKF_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole of the file at path in a malloc'd buffer of *len bytes, or NULL after a message that
 * names the harness (tool) and the file. */
static inline uint8_t *fuzz_read_file(const char *tool, const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "%s: %s: cannot open\n", tool, path);
        return NULL;
    }
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    *len = 0;
    for (size_t r; (r = fread(buf + *len, 1, cap - *len, fp)) > 0;) {
        *len += r;
        if (*len == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(fp);
    return buf;
}

typedef void (*fuzz_fn)(const uint8_t *buf, size_t len);

/* one() on the whole of each file (how crashes are replayed); 1 if a file could not be read. */
static inline int fuzz_run_files(const char *tool, char **paths, int n, fuzz_fn one)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        uint8_t *buf = fuzz_read_file(tool, paths[i], &len);
        if (!buf) {
            rc = 1;
            continue;
        }
        one(buf, len);
        free(buf);
    }
    return rc;
}

#ifdef __AFL_FUZZ_TESTCASE_LEN
#include <unistd.h> /* read(), in afl's persistent-mode macros */
__AFL_FUZZ_INIT();

/* afl's persistent mode (afl-clang-fast builds): inputs from shared memory, 10000 a process. */
static inline int fuzz_persistent(fuzz_fn one)
{
    __AFL_INIT();
    const uint8_t *data = __AFL_FUZZ_TESTCASE_BUF;
    while (__AFL_LOOP(10000))
        one(data, (size_t)__AFL_FUZZ_TESTCASE_LEN);
    return 0;
}
#endif

#endif
