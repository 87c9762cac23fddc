/* afl++ harness for the event readers (io/events*.c); not part of the CMake build (see
 * tools/fuzz/README.md for the build and run commands).
 *
 * Each input is decoded as every format (auto included) under three sets of options (defaults;
 * backwards drop with the CIFAR10-DVS orientation; a 200x150 sensor with the AEDAT 2.0 DAVIS
 * layout), each time from an
 * exact-size copy so a sanitizer sees any overread. The readers' contract is checked, and a
 * breach aborts (afl records it as a crash):
 *   - on error: nothing to free, one printable line starting with the file name, naming a byte
 *     offset within the input;
 *   - on success: every event inside the sensor, polarity 0 or 1, timestamps non-negative and
 *     non-decreasing, no more events than records; frames (both split rules, at the sensor size
 *     and scaled) accept the events and count each one once; the timed stream delivers each one
 *     once, in order; the events survive a round trip through qev and through their own format.
 *
 * Without arguments (afl's persistent mode, when built with afl-clang-fast) inputs come from
 * afl's shared memory; with arguments each is a file to run once (triage, replaying a queue). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/events.h"
#include "kernels/base.h"
#include "fuzz_util.h"

static void breach(const char *what, const char *name, qkf_evformat f, int variant)
{
    fprintf(stderr, "fuzz_events: contract broken (%s; format %s, variant %d, name %s): %s\n",
            what, qkf_evformat_name(f), variant, name, qkf_last_error());
    abort();
}

/* The message names the file first, fits one line and names a byte offset <= len. */
static void check_error(const qkf_events *e, const char *name, size_t len, qkf_evformat f, int v)
{
    const char *msg = qkf_last_error();
    if (e->ev || e->n)
        breach("events left after an error", name, f, v);
    if (strncmp(msg, name, strlen(name)) != 0 || msg[strlen(name)] != ':')
        breach("message does not start with the file name", name, f, v);
    for (const char *m = msg; *m; m++)
        if ((unsigned char)*m < 0x20 || *m == 0x7F)
            breach("message is not one printable line", name, f, v);
    const char *b = strstr(msg, ": byte ");
    if (!b)
        breach("message names no byte offset", name, f, v);
    unsigned long long off = strtoull(b + 7, NULL, 10);
    if (off > len)
        breach("byte offset past the end of the input", name, f, v);
}

static int same(const qkf_events *a, const qkf_events *b)
{
    if (a->n != b->n)
        return 0;
    for (int64_t i = 0; i < a->n; i++)
        if (a->ev[i].t != b->ev[i].t || a->ev[i].x != b->ev[i].x || a->ev[i].y != b->ev[i].y ||
            a->ev[i].p != b->ev[i].p)
            return 0;
    return 1;
}

/* Frames of every event: each counted once, whatever the split and the output size. */
static void check_frames(const qkf_events *e, int oh, int ow, const char *name, qkf_evformat f,
                         int v)
{
    enum { T = 3 };
    size_t plane = 2 * (size_t)oh * (size_t)ow;
    float *out = malloc(T * plane * sizeof *out);
    for (int split = QKF_SPLIT_NUMBER; split <= QKF_SPLIT_TIME; split++) {
        if (qkf_events_frames(e, 0, e->n, T, (qkf_split)split, oh, ow, out))
            breach("frames refused decoded events", name, f, v);
        double sum = 0;
        for (size_t i = 0; i < T * plane; i++)
            sum += (double)out[i];
        if (sum != (double)e->n)
            breach("frames do not count every event once", name, f, v);
    }
    free(out);
}

/* The timed stream in about five windows: every event once, in order, in its window. */
static void check_stream(const qkf_events *e, const char *name, qkf_evformat f, int v)
{
    if (!e->n)
        return;
    int64_t t0 = e->ev[0].t, window = (e->ev[e->n - 1].t - t0) / 5 + 1;
    qkf_event_stream s;
    qkf_event_stream_init(&s, e->ev, e->n, t0, window);
    int64_t first, count, tw, next = 0, windows = 0;
    while (qkf_event_stream_next(&s, &first, &count, &tw)) {
        if (first != next || count < 0 || ++windows > 6)
            breach("stream windows out of order", name, f, v);
        for (int64_t i = first; i < first + count; i++)
            if (e->ev[i].t < tw || e->ev[i].t >= tw + window)
                breach("stream event outside its window", name, f, v);
        next = first + count;
    }
    if (next != e->n)
        breach("stream did not deliver every event", name, f, v);
}

/* Encodes e in format g and decodes the result with options o: the same events. */
static void check_round_trip(const qkf_events *e, qkf_evformat g, qkf_events_opts o,
                             const char *name, qkf_evformat f, int v)
{
    uint8_t *buf;
    size_t len;
    if (qkf_events_encode(e, g, o.orient, &buf, &len))
        return; /* the format cannot hold these events (a clean refusal) */
    o.format = g;
    o.backwards = QKF_EV_BACKWARDS_FAIL;
    qkf_events d;
    if (qkf_events_decode(buf, len, "<round trip>", &o, &d))
        breach("re-encoded events do not decode", name, f, v);
    if (!same(e, &d))
        breach("re-encoded events decode differently", name, f, v);
    qkf_events_free(&d);
    qkf_free(buf);
}

static void check_events(const qkf_events *e, const qkf_events_opts *o, const char *name,
                         qkf_evformat f, int v)
{
    if (e->n < 0 || e->n > e->cap || e->width < 1 || e->height < 1 ||
        e->n + e->special + e->invalid + e->dropped_backwards + e->aps + e->imu + e->external >
            e->records ||
        memchr(e->camera, 0, sizeof e->camera) == NULL)
        breach("bad counts or sensor", name, f, v);
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *ev = &e->ev[i];
        if (ev->x >= e->width || ev->y >= e->height || ev->p > 1 || ev->t < 0 ||
            (i && ev->t < ev[-1].t))
            breach("decoded event breaks the invariants", name, f, v);
    }
    if ((int64_t)e->width * e->height <= 64 * 64) /* small: keeps each run fast */
        check_frames(e, e->height, e->width, name, f, v);
    check_frames(e, 5, 7, name, f, v);
    check_stream(e, name, f, v);
    qkf_events_opts rt = *o;
    rt.width = e->width, rt.height = e->height;
    rt.layout = QKF_EV_LAYOUT_AUTO; /* our AEDAT 2.0 writer writes DVS128 addresses */
    check_round_trip(e, QKF_EVF_QEV, rt, name, f, v);
    check_round_trip(e, e->format, rt, name, f, v);
}

static void fuzz_one(const uint8_t *data, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1); /* exact size: the sanitizer sees any overread */
    memcpy(buf, data, len);
    for (int f = QKF_EVF_AUTO; f < QKF_EVF_COUNT; f++)
        for (int v = 0; v < 3; v++) {
            qkf_events_opts o;
            memset(&o, 0, sizeof o);
            o.format = (qkf_evformat)f;
            if (v == 1)
                o.backwards = QKF_EV_BACKWARDS_DROP, o.orient = QKF_EV_ORIENT_CIFAR10DVS;
            if (v == 2)
                o.width = 200, o.height = 150, o.layout = QKF_EV_LAYOUT_DAVIS;
            const char *name = v == 0 ? "in.bin" : "<fuzz>"; /* auto: .bin means nmnist */
            qkf_events e;
            memset(&e, 0x5A, sizeof e);
            qkf_clear_error();
            if (qkf_events_decode(buf, len, name, &o, &e)) {
                check_error(&e, name, len, (qkf_evformat)f, v);
                continue;
            }
            check_events(&e, &o, name, (qkf_evformat)f, v);
            qkf_events_free(&e);
        }
    free(buf);
}



int main(int argc, char **argv)
{
    if (argc > 1)
        return fuzz_run_files("fuzz_events", argv + 1, argc - 1, fuzz_one);
#ifdef __AFL_FUZZ_TESTCASE_LEN
    return fuzz_persistent(fuzz_one);
#else
    fprintf(stderr, "usage: fuzz_events FILE... (or under afl-fuzz, built with afl-clang-fast)\n");
    return 2;
#endif
}
