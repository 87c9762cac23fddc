/* Shared by the afl++ harnesses of tools/fuzz (not part of the CMake build; see README.md). */
#ifndef QKF_FUZZ_UTIL_H
#define QKF_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole of the file at path in a malloc'd buffer of *len bytes, or NULL after a message that
 * names the harness (tool) and the file. */
static uint8_t *fuzz_read_file(const char *tool, const char *path, size_t *len)
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

#endif
