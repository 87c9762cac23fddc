/* afl++ harness for the DVS128 Gesture labels reader (qkf_gesture_labels_load); not part of the
 * CMake build (see tools/fuzz/README.md). Each argument is a labels file (afl's @@).
 *
 * The contract checked (a breach aborts, which afl records as a crash): on error nothing to
 * free and one line starting with the file name that names a byte offset at the start of a
 * line of the file; on success classes 0..10, 0 <= start < end, and every segment's index range
 * within a small set of events. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/events.h"
#include "kernels/base.h"
#include "fuzz_util.h"

static void breach(const char *what, const char *path)
{
    fprintf(stderr, "fuzz_labels: contract broken (%s; %s): %s\n", what, path, qkf_last_error());
    abort();
}

static int run_file(const char *path)
{
    size_t len;
    uint8_t *buf = fuzz_read_file("fuzz_labels", path, &len);
    if (!buf)
        return 1;

    qkf_gesture_segment *segs = (qkf_gesture_segment *)1;
    int n = -1;
    qkf_clear_error();
    if (qkf_gesture_labels_load(path, &segs, &n)) {
        const char *msg = qkf_last_error();
        if (segs || n)
            breach("segments left after an error", path);
        if (strncmp(msg, path, strlen(path)) != 0 || msg[strlen(path)] != ':')
            breach("message does not start with the file name", path);
        for (const char *m = msg; *m; m++)
            if (((unsigned char)*m < 0x20 && *m != '\t') || *m == 0x7F)
                breach("message is not one printable line", path);
        const char *b = strstr(msg, "byte ");
        if (!b)
            breach("message names no byte offset", path);
        unsigned long long off = strtoull(b + 5, NULL, 10);
        if (off > len || (off > 0 && buf[off - 1] != '\n'))
            breach("byte offset is not the start of a line of the file", path);
        free(buf);
        return 0;
    }
    qkf_events e;
    qkf_events_init(&e, 128, 128, 16);
    for (int i = 0; i < 16; i++)
        qkf_events_push(&e, (int64_t)i * i * 1000, i, i, i & 1);
    for (int i = 0; i < n; i++) {
        qkf_gesture_segment *s = &segs[i];
        if (s->label < 0 || s->label > 10 || s->t_start < 0 || s->t_end <= s->t_start)
            breach("bad segment", path);
        qkf_events_range(&e, s->t_start, s->t_end, &s->i0, &s->i1);
        if (s->i0 < 0 || s->i1 < s->i0 || s->i1 > e.n)
            breach("bad index range", path);
    }
    qkf_events_free(&e);
    qkf_free(segs);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fuzz_labels FILE... (afl-fuzz ... -- fuzz_labels @@)\n");
        return 2;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++)
        rc |= run_file(argv[i]);
    return rc;
}
