/* Tests for the event readers and writers (io/events*.c), frames, the timed stream, the DVS
 * emulator (io/dvs_emu.c) and the `qkf events` command.
 *
 * The fixtures in tests/fixtures/events/ are written byte by byte by
 * tools/reference/make_event_fixtures.py from known events (independently of the C encoders);
 * NAME.expected.csv lists what a correct reader decodes. A few records are also checked here by
 * hand. Every bad file must fail with one line naming the file and the byte offset; every
 * truncated prefix and every single-byte corruption of a good file must decode or fail cleanly
 * (the sanitizer build catches any out-of-bounds read). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/dvs_emu.h"
#include "io/events.h"
#include "io/io.h"
#include "kernels/base.h"
#include "util.h"
#include "events_util.h"

#define FIX QKF_FIXTURE_DIR "/events/"

static char tmpdir[64];

static void setup(void)
{
    qkf_h5_quiet();
    tmpdir_make(tmpdir, sizeof tmpdir, "events");
}

static void teardown(void) { tmpdir_remove(tmpdir); }

TestSuite(events, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers -------------------------------------------------------------------------------- */

static const char *tpath(const char *name) { return tmpdir_path(tmpdir, name); }

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Compares decoded events with NAME.expected.csv, exactly. */
static void check_expected(const qkf_events *e, const char *csv)
{
    char path[512];
    snprintf(path, sizeof path, FIX "%s", csv);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    char line[256];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert_str_eq(line, "x,y,t,p\n");
    int64_t i = 0;
    long long x, y, t, p;
    while (fscanf(f, "%lld,%lld,%lld,%lld", &x, &y, &t, &p) == 4) {
        cr_assert_lt(i, e->n, "%s: fewer events decoded (%lld) than expected", csv,
                     (long long)e->n);
        const qkf_event *v = &e->ev[i];
        cr_assert(v->x == x && v->y == y && v->t == t && v->p == p,
                  "%s: event %lld is (%d,%d,%lld,%d), expected (%lld,%lld,%lld,%lld)", csv,
                  (long long)i, v->x, v->y, (long long)v->t, v->p, x, y, t, p);
        i++;
    }
    fclose(f);
    cr_assert_eq(i, e->n, "%s: %lld events decoded, %lld expected", csv, (long long)e->n,
                 (long long)i);
}

static void load_ok(const char *name, const qkf_events_opts *o, qkf_events *e)
{
    int rc = qkf_events_load(name, o, e);
    cr_assert_eq(rc, 0, "%s: %s", name, qkf_last_error());
}

/* ---- readers against fixtures --------------------------------------------------------------- */

Test(events, nmnist_fixture)
{
    qkf_events e;
    load_ok(FIX "nmnist.bin", NULL, &e);
    check_expected(&e, "nmnist.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_NMNIST);
    cr_assert(e.width == 34 && e.height == 34, "N-MNIST sensor, got %dx%d", e.width, e.height);
    cr_assert_eq(e.records, 8);
    cr_assert_eq(e.special, 1); /* the overflow marker */
    qkf_events_free(&e);

    load_ok(FIX "ncaltech.bin", NULL, &e);
    check_expected(&e, "ncaltech.expected.csv");
    cr_assert(e.width == 304 && e.height == 240, "ATIS sensor, got %dx%d", e.width, e.height);
    qkf_events_free(&e);
}

/* Records decoded by hand from the published bit layouts. */
Test(events, hand_checked_records)
{
    qkf_events e;
    qkf_events_opts o = {.format = QKF_EVF_NMNIST};
    /* 21 21 ff ff ff: x 33, y 33, bit 7 of 0xff = ON, timestamp 0x7fffff = 8388607 */
    const uint8_t nm[] = {0x05, 0x07, 0x80, 0x00, 0x01, 0x21, 0x21, 0xFF, 0xFF, 0xFF};
    cr_assert_eq(qkf_events_decode(nm, sizeof nm, "nm", &o, &e), 0, "%s", qkf_last_error());
    cr_assert_eq(e.n, 2);
    cr_assert(e.ev[0].x == 5 && e.ev[0].y == 7 && e.ev[0].p == 1 && e.ev[0].t == 1);
    cr_assert(e.ev[1].x == 33 && e.ev[1].y == 33 && e.ev[1].p == 1 && e.ev[1].t == 8388607);
    qkf_events_free(&e);

    /* AEDAT 2.0 address 0x0a15 = 0b1010_0001_0101: bit 0 = 1 (raw OFF), raw x = 0b0001010 = 10,
     * raw y = 0x0a = 10; jAER: x = 127 - 10 = 117, y = 10, polarity 1 - 1 = 0 */
    const char hdr[] = "#!AER-DAT2.0\r\n";
    uint8_t a2[sizeof hdr - 1 + 8] = {0};
    memcpy(a2, hdr, sizeof hdr - 1);
    uint8_t *r = a2 + sizeof hdr - 1;
    r[2] = 0x0A, r[3] = 0x15, r[7] = 42;
    cr_assert_eq(qkf_events_decode(a2, sizeof a2, "a2", NULL, &e), 0, "%s", qkf_last_error());
    cr_assert_eq(e.n, 1);
    cr_assert(e.ev[0].x == 117 && e.ev[0].y == 10 && e.ev[0].p == 0 && e.ev[0].t == 42);
    qkf_events_free(&e);
    o.format = QKF_EVF_AUTO;
    o.orient = QKF_EV_ORIENT_CIFAR10DVS; /* x = 127 - raw y, y = 127 - raw x */
    cr_assert_eq(qkf_events_decode(a2, sizeof a2, "a2", &o, &e), 0);
    cr_assert(e.ev[0].x == 117 && e.ev[0].y == 117 && e.ev[0].p == 0);
    qkf_events_free(&e);

    /* AEDAT 3.1 polarity word 0x00fe01fd: bit 0 valid, bit 1 = 0 (OFF), y = (0x1fd >> 2) &
     * 0x7fff = 127, x = 0xfe01fd >> 17 = 127; timestamp 7 with overflow 2: 2 << 31 | 7 */
    const char h3[] = "#!AER-DAT3.1\r\n#!END-HEADER\r\n";
    uint8_t a3[sizeof h3 - 1 + 28 + 8] = {0};
    memcpy(a3, h3, sizeof h3 - 1);
    uint8_t *p = a3 + sizeof h3 - 1;
    p[0] = 1, p[4] = 8, p[8] = 4, p[12] = 2, p[16] = 1, p[20] = 1, p[24] = 1;
    p[28] = 0xFD, p[29] = 0x01, p[30] = 0xFE, p[31] = 0x00, p[32] = 7;
    cr_assert_eq(qkf_events_decode(a3, sizeof a3, "a3", NULL, &e), 0, "%s", qkf_last_error());
    cr_assert_eq(e.n, 1);
    cr_assert(e.ev[0].x == 127 && e.ev[0].y == 127 && e.ev[0].p == 0);
    cr_assert_eq(e.ev[0].t, ((int64_t)2 << 31) | 7);
    qkf_events_free(&e);
}

Test(events, aedat2_fixture)
{
    qkf_events e;
    load_ok(FIX "dvs128.aedat", NULL, &e);
    check_expected(&e, "dvs128.jaer.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_AEDAT2);
    cr_assert(e.width == 128 && e.height == 128);
    cr_assert_eq(e.records, 6);
    cr_assert_eq(e.special, 2); /* the sync and the special event */
    qkf_events_free(&e);
    qkf_events_opts o = {.orient = QKF_EV_ORIENT_CIFAR10DVS};
    load_ok(FIX "dvs128.aedat", &o, &e);
    check_expected(&e, "dvs128.cifar10dvs.expected.csv");
    qkf_events_free(&e);
}

Test(events, aedat3_fixture)
{
    qkf_events e;
    load_ok(FIX "user01_fixture.aedat", NULL, &e);
    check_expected(&e, "user01_fixture.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_AEDAT3);
    cr_assert_eq(e.invalid, 1);         /* the valid bit honoured */
    cr_assert_eq(e.unknown_packets, 2); /* a special-event packet and a type-12 packet */
    cr_assert_eq(e.records, 2 + 4 + 0 + 3);
    qkf_events_free(&e);
}

Test(events, plain_fixtures)
{
    const char *files[] = {"plain.qev", "plain_i8.npy", "plain_f8_fortran.npy", "plain_struct.npy"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", files[k]);
        qkf_events e;
        load_ok(path, NULL, &e);
        check_expected(&e, "plain.expected.csv");
        cr_assert(e.width == 10 && e.height == 10, "%s: %dx%d", files[k], e.width, e.height);
        qkf_events_free(&e);
    }
}

Test(events, gesture_segments)
{
    qkf_events e;
    qkf_gesture_segment *s;
    int n;
    int rc = qkf_gesture_load(FIX "user01_fixture.aedat", NULL, NULL, &e, &s, &n);
    cr_assert_eq(rc, 0, "%s", qkf_last_error());
    cr_assert_eq(n, 3);
    const int label[3] = {0, 4, 10};
    const int64_t i0[3] = {0, 1, 3}, i1[3] = {1, 3, 5};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(s[k].label, label[k]);
        cr_assert(s[k].i0 == i0[k] && s[k].i1 == i1[k], "segment %d: %lld..%lld", k,
                  (long long)s[k].i0, (long long)s[k].i1);
    }
    cr_assert_eq(s[2].t_start, (int64_t)1 << 31);
    qkf_free(s);
    qkf_events_free(&e);

    char path[512];
    qkf_gesture_labels_path("/a/b.c/user02_led.aedat", path, sizeof path);
    cr_assert_str_eq(path, "/a/b.c/user02_led_labels.csv");
    cr_assert_neq(qkf_gesture_labels_load(FIX "bad_aedat3_labels.csv", &s, &n), 0);
    cr_assert(strstr(qkf_last_error(), "bad_aedat3_labels.csv: line 3 (byte"), "%s",
              qkf_last_error());
    cr_assert(strstr(qkf_last_error(), "class 12"), "%s", qkf_last_error());
    cr_assert_null(s);
}

/* ---- bad input ------------------------------------------------------------------------------ */

Test(events, bad_files)
{
    static const struct {
        const char *file, *where;
    } bad[] = {
        {"bad_nmnist_truncated.bin", "byte 15: truncated"},
        {"bad_nmnist_y241.bin", "byte 15 (event 3): x = 3, y = 241 is outside the 304x240"},
        {"bad_nmnist_backwards.bin", "byte 15 (event 3): timestamp 299 us goes back"},
        {"bad_aedat2_truncated.aedat", "byte 208: truncated"},
        {"bad_aedat2_version.aedat", "byte 0: AEDAT version '1.0'"},
        {"bad_aedat2_backwards.aedat", "(event 1): timestamp 99 us goes back"},
        {"bad_aedat3_truncated.aedat", "(packet 3): truncated packet"},
        {"bad_aedat3_noend.aedat", "without a '#!END-HEADER'"},
        {"bad_aedat3_eventsize.aedat", "(packet 0): polarity packet with 16-byte events"},
        {"bad_aedat3_outside.aedat", "(event 1): x = 128, y = 5 is outside the 128x128"},
        {"bad_aedat3_negative.aedat", "(event 0): negative timestamp"},
        {"bad_qev_truncated.qev", "byte 72: the header announces 4 events"},
        {"bad_qev_polarity.qev", "byte 56 (event 2): polarity 2"},
        {"bad_npy_polarity.npy", "(event 1): polarity 3 is not 0 or 1"},
        {"bad_npy_fraction.npy", "(event 0): t is not an integer"},
        {"bad_npy_truncated.npy", "truncated .npy data"},
        {"bad_aedat3_labels.csv", "byte 0: unknown event file format"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", bad[k].file);
        qkf_events e;
        memset(&e, 0x5A, sizeof e);
        qkf_clear_error();
        cr_assert_neq(qkf_events_load(path, NULL, &e), 0, "%s decoded", bad[k].file);
        const char *msg = qkf_last_error();
        cr_assert(strncmp(msg, path, strlen(path)) == 0, "message does not name the file: %s", msg);
        cr_assert(strstr(msg, bad[k].where), "%s: '%s' not in: %s", bad[k].file, bad[k].where, msg);
        cr_assert_null(strchr(msg, '\n'), "one line: %s", msg);
        cr_assert(e.ev == NULL && e.n == 0, "nothing left to free after an error");
    }
}

Test(events, backwards_drop_and_sensor_override)
{
    qkf_events e;
    qkf_events_opts o = {.backwards = QKF_EV_BACKWARDS_DROP};
    load_ok(FIX "bad_nmnist_backwards.bin", &o, &e);
    cr_assert_eq(e.n, 3);
    cr_assert_eq(e.dropped_backwards, 1);
    qkf_events_free(&e);

    o = (qkf_events_opts){.width = 20, .height = 40};
    cr_assert_neq(qkf_events_load(FIX "nmnist.bin", &o, &e), 0);
    cr_assert(strstr(qkf_last_error(), "(event 2): x = 33, y = 0 is outside the 20x40 sensor"),
              "%s", qkf_last_error());
    o = (qkf_events_opts){.width = 64, .height = 64};
    load_ok(FIX "nmnist.bin", &o, &e);
    cr_assert(e.width == 64 && e.height == 64);
    qkf_events_free(&e);
    o = (qkf_events_opts){.format = QKF_EVF_AEDAT3};
    cr_assert_neq(qkf_events_load(FIX "dvs128.aedat", &o, &e), 0);
    cr_assert(strstr(qkf_last_error(), "byte 0: not an AEDAT 3 file"), "%s", qkf_last_error());
    cr_assert_neq(qkf_events_load(tpath("missing.bin"), NULL, &e), 0);
    cr_assert(strstr(qkf_last_error(), "missing.bin: cannot open"), "%s", qkf_last_error());
}

/* Every prefix and every single-byte change of each good fixture decodes or fails cleanly; a
 * prefix that decodes gives a prefix of the events. */
Test(events, truncation_and_corruption_sweep)
{
    const char *files[] = {"nmnist.bin",      "dvs128.aedat", "user01_fixture.aedat",
                           "plain.qev",       "plain_i8.npy", "plain_f8_fortran.npy",
                           "plain_struct.npy"};
    const uint8_t vals[] = {0x00, 0xFF, 0x7F, 0x80, 0x23, 0x0A, 0xF0};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", files[k]);
        sweep_cuts_and_flips(files[k], path, vals, sizeof vals, "byte", NULL);
    }
}

/* ---- inputs found by fuzzing (tools/fuzz/) ------------------------------------------------- */

/* Decodes an exact-size copy of buf (the sanitizer sees any overread) and checks a clean
 * failure: nothing to free, one printable line naming the file and containing `where`. */
static void decode_fails(const uint8_t *buf, size_t len, const qkf_events_opts *o,
                         const char *where)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    qkf_events e;
    memset(&e, 0x5A, sizeof e);
    qkf_clear_error();
    int rc = qkf_events_decode(copy, len, "fuzz.in", o, &e);
    const char *msg = qkf_last_error();
    cr_assert_neq(rc, 0, "decoded, expected an error with '%s'", where);
    cr_assert(e.ev == NULL && e.n == 0, "nothing left to free after an error");
    cr_assert(strncmp(msg, "fuzz.in: byte ", 14) == 0, "file and byte offset first: %s", msg);
    cr_assert(strstr(msg, where), "'%s' not in: %s", where, msg);
    for (const char *m = msg; *m; m++)
        cr_assert((unsigned char)*m >= 0x20 && *m != 0x7F, "one printable line: %s", msg);
    free(copy);
}

/* A version 1 .npy file: the header dict (padded to 64 bytes, as NumPy writes it), then data. */
static uint8_t *npy_bytes(const char *dict, const uint8_t *data, size_t n, size_t *len)
{
    size_t dl = strlen(dict), hl = dl + 1;
    hl += (64 - (10 + hl) % 64) % 64;
    *len = 10 + hl + n;
    uint8_t *b = malloc(*len);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (uint8_t)hl, b[9] = (uint8_t)(hl >> 8);
    memset(b + 10, ' ', hl);
    memcpy(b + 10, dict, dl);
    b[10 + hl - 1] = '\n';
    if (n)
        memcpy(b + 10 + hl, data, n);
    return b;
}

/* The byte offset of the k-th (from 0) occurrence of `what` in the dict, in the file. */
static size_t dict_at(const char *dict, const char *what, int k)
{
    const char *p = strstr(dict, what);
    while (p && k--)
        p = strstr(p + 1, what);
    cr_assert_not_null(p);
    return 10 + (size_t)(p - dict);
}

/* .npy headers that overread the buffer (a second 'descr' mixing a structured and a plain
 * layout; a type with an empty kind read as an 8-byte float in a 2-byte field), printed an
 * uninitialized buffer (a dtype that is not a string) or raw bytes (a newline in a type), or
 * failed without a byte offset. */
Test(events, npy_header_fuzz_findings)
{
    static const char *dicts[] = {
        "{'descr': [('x','|u1'),('y','|u1'),('t','|u1'),('p','|u1')], 'descr': '<u8', "
        "'fortran_order': False, 'shape': (2,), }",
        "{'descr': [('x','<u2'),('y','<u2'),('t','<u2'),('p','<')], 'fortran_order': False, "
        "'shape': (1,), }",
        "{'descr': [('x','<u2'),('y','<u2'),('t','<u2'),('p','')], 'fortran_order': False, "
        "'shape': (1,), }",
        "{'descr': 5, 'fortran_order': False, 'shape': (1, 4), }",
        "{'descr': '<u\n8', 'fortran_order': False, 'shape': (1, 4), }",
        "{'descr': [('x','<u2'),('x','<u2')], 'fortran_order': False, 'shape': (1,), }",
        "{'descr': [('x','<u2'),('y','<u2'),('p','<u2')], 'fortran_order': False, "
        "'shape': (1,), }",
        "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 4, 1), }",
        "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }",
        "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 4), 'shape': (1, 4), }",
    };
    char where[10][96];
    snprintf(where[0], 96, "byte %zu: the .npy header names 'descr' twice",
             dict_at(dicts[0], "'descr'", 1));
    snprintf(where[1], 96, "byte %zu: .npy field 'p' has the unsupported type '<'",
             dict_at(dicts[1], "'<')", 0));
    snprintf(where[2], 96, "byte %zu: .npy field 'p' has the unsupported type ''",
             dict_at(dicts[2], "'')", 0));
    snprintf(where[3], 96, "byte %zu: cannot parse the .npy header dict",
             dict_at(dicts[3], "5", 0));
    snprintf(where[4], 96, "byte %zu: .npy dtype '<u?8' is not supported",
             dict_at(dicts[4], "'<u", 0));
    snprintf(where[5], 96, "byte %zu: .npy fields name x twice", dict_at(dicts[5], "'x'", 1));
    snprintf(where[6], 96, "byte %zu: the .npy structured array has no field 't'",
             dict_at(dicts[6], "[", 0));
    snprintf(where[7], 96, "byte %zu: .npy arrays of more than 2 dimensions",
             dict_at(dicts[7], "1)", 0));
    snprintf(where[8], 96, "byte %zu: .npy shape must be (N, 4)", dict_at(dicts[8], "(3", 0));
    snprintf(where[9], 96, "byte %zu: the .npy header names 'shape' twice",
             dict_at(dicts[9], "'shape'", 1));
    uint8_t data[16] = {1, 0, 1, 0, 1, 0, 0, 0};
    for (size_t k = 0; k < sizeof dicts / sizeof dicts[0]; k++) {
        size_t len;
        uint8_t *b = npy_bytes(dicts[k], data, sizeof data, &len);
        decode_fails(b, len, NULL, where[k]);
        free(b);
    }
}

/* Labels files with a NUL byte (fgets stopped at it: the rest of the line was ignored and the
 * byte offsets of later lines were wrong), control characters in a bad line (quoted raw in the
 * message) or no bytes at all (no offset named) fail with one printable line naming the byte
 * where the line starts. */
Test(events, labels_fuzz_findings)
{
#define TEXT(s) s, sizeof s - 1 /* a literal and its length, NUL bytes inside it counted */
    static const struct {
        const char *text;
        size_t len;
        const char *where;
    } bad[] = {
        {TEXT("class,startTime_usec,endTime_usec\n1,0,20\0junk\n5,20,40\n"),
         "line 2 (byte 34): not a text line (a NUL byte)"},
        {TEXT("class,startTime_usec,endTime_usec\n1,0,20\n1,0,2\x1b[2J0\r\n"),
         "line 3 (byte 41): expected 'class,startTime_usec,endTime_usec' with non-negative "
         "integers, got '1,0,2?[2J0'"},
        {TEXT(""), "byte 0: empty labels file"},
    };
#undef TEXT
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const char *path = tpath("fuzz_labels.csv");
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(bad[k].text, 1, bad[k].len, f), bad[k].len);
        fclose(f);
        qkf_gesture_segment *s = (qkf_gesture_segment *)&k;
        int n = -1;
        qkf_clear_error();
        cr_assert_neq(qkf_gesture_labels_load(path, &s, &n), 0, "case %zu loaded", k);
        const char *msg = qkf_last_error();
        cr_assert(s == NULL && n == 0, "nothing left to free after an error");
        cr_assert(strncmp(msg, path, strlen(path)) == 0 && msg[strlen(path)] == ':',
                  "message does not name the file: %s", msg);
        cr_assert(strstr(msg, bad[k].where), "'%s' not in: %s", bad[k].where, msg);
        for (const char *m = msg; *m; m++)
            cr_assert((unsigned char)*m >= 0x20 && *m != 0x7F, "one printable line: %s", msg);
    }
}

/* ---- writers ------------------------------------------------------------------------------- */

static void random_events(qkf_events *e, int w, int h, int64_t n, int64_t step, uint64_t seed)
{
    qkf_events_init(e, w, h, 8);
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    int64_t t = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = qkf_rng_u64(&r);
        t += (int64_t)(u % (uint64_t)step);
        qkf_events_push(e, t, (int)((u >> 20) % (uint64_t)w), (int)((u >> 40) % (uint64_t)h),
                        (int)(u >> 63));
    }
}

Test(events, round_trip_every_format)
{
    qkf_events e;
    /* ~20 s of events: the N-MNIST encoder needs overflow markers, AEDAT 3.1 two overflows */
    random_events(&e, 128, 128, 3000, 14000, 7);
    for (int f = QKF_EVF_NMNIST; f < QKF_EVF_COUNT; f++)
        for (int orient = 0; orient < (f == QKF_EVF_AEDAT2 ? 2 : 1); orient++) {
            uint8_t *buf;
            size_t len;
            cr_assert_eq(qkf_events_encode(&e, (qkf_evformat)f, orient, &buf, &len), 0, "%s: %s",
                         qkf_evformat_name((qkf_evformat)f), qkf_last_error());
            qkf_events d;
            qkf_events_opts o = {
                .format = (qkf_evformat)f, .width = 128, .height = 128, .orient = orient};
            cr_assert_eq(qkf_events_decode(buf, len, "rt", &o, &d), 0, "%s: %s",
                         qkf_evformat_name((qkf_evformat)f), qkf_last_error());
            cr_assert_eq(d.n, e.n, "%s", qkf_evformat_name((qkf_evformat)f));
            for (int64_t i = 0; i < e.n; i++)
                cr_assert(d.ev[i].t == e.ev[i].t && d.ev[i].x == e.ev[i].x &&
                              d.ev[i].y == e.ev[i].y && d.ev[i].p == e.ev[i].p,
                          "%s: event %lld", qkf_evformat_name((qkf_evformat)f), (long long)i);
            if (f == QKF_EVF_NMNIST)
                cr_assert_gt(d.special, 0, "overflow markers were written");
            qkf_events_free(&d);
            qkf_free(buf);
        }
    /* a file through qkf_events_save, by extension */
    cr_assert_eq(qkf_events_save(tpath("x.npy"), &e, QKF_EVF_AUTO), 0, "%s", qkf_last_error());
    qkf_events d;
    load_ok(tpath("x.npy"), NULL, &d);
    cr_assert_eq(d.n, e.n);
    qkf_events_free(&d);
    qkf_events_free(&e);
}

Test(events, save_failures_leave_nothing)
{
    qkf_events e;
    qkf_events_init(&e, 300, 300, 4);
    qkf_events_push(&e, 5, 10, 250, 1); /* y = 250: not storable in N-MNIST */
    cr_assert_neq(qkf_events_save(tpath("y.bin"), &e, QKF_EVF_AUTO), 0);
    cr_assert(strstr(qkf_last_error(), "y.bin: event 0"), "%s", qkf_last_error());
    cr_assert_neq(qkf_events_save(tpath("y.aedat2"), &e, QKF_EVF_AUTO), 0); /* not DVS128 */
    cr_assert_neq(qkf_events_save(tpath("y.unknown"), &e, QKF_EVF_AUTO), 0);
    cr_assert_neq(qkf_events_save(tpath("nodir/y.qev"), &e, QKF_EVF_AUTO), 0);
    cr_assert_eq(tmpdir_entries(tmpdir, NULL, 0), 0, "a failed save left a file");
    qkf_events_free(&e);
}

/* ---- frames and the stream ----------------------------------------------------------------- */

static qkf_events make(int w, int h, int n, const int64_t *t, const int *x, const int *y,
                       const int *p)
{
    qkf_events e;
    qkf_events_init(&e, w, h, n);
    for (int i = 0; i < n; i++)
        qkf_events_push(&e, t[i], x[i], y[i], p[i]);
    return e;
}

/* Events per frame of [T][2][H][W] frames. */
static void frame_counts(const float *f, int T, int H, int W, float *cnt)
{
    for (int t = 0; t < T; t++) {
        cnt[t] = 0;
        for (int i = 0; i < 2 * H * W; i++)
            cnt[t] += f[(size_t)t * 2 * H * W + i];
    }
}

Test(events, frames_by_number_as_spikingjelly)
{
    /* N = 10, T = 3: floor(10/3) = 3 per frame, the last frame takes the rest: 3, 3, 4 */
    int64_t t[10];
    int x[10], y[10], p[10];
    for (int i = 0; i < 10; i++)
        t[i] = i * 7, x[i] = i % 4, y[i] = i / 4, p[i] = i & 1;
    qkf_events e = make(4, 3, 10, t, x, y, p);
    float f[3 * 2 * 3 * 4], cnt[3];
    cr_assert_eq(qkf_events_frames(&e, 0, 10, 3, QKF_SPLIT_NUMBER, 3, 4, f), 0);
    frame_counts(f, 3, 3, 4, cnt);
    cr_assert(cnt[0] == 3 && cnt[1] == 3 && cnt[2] == 4);
    /* event 4 (x 0, y 1, OFF) is in frame 1, channel 0; event 5 (x 1, y 1, ON) channel 1 */
    cr_assert_eq(f[1 * 24 + 0 * 12 + 1 * 4 + 0], 1.0f);
    cr_assert_eq(f[1 * 24 + 1 * 12 + 1 * 4 + 1], 1.0f);
    cr_assert_eq(f[1 * 24 + 0 * 12 + 1 * 4 + 1], 0.0f);
    /* N = 2 < T = 3: floor(2/3) = 0, every event in the last frame */
    cr_assert_eq(qkf_events_frames(&e, 4, 6, 3, QKF_SPLIT_NUMBER, 3, 4, f), 0);
    frame_counts(f, 3, 3, 4, cnt);
    cr_assert(cnt[0] == 0 && cnt[1] == 0 && cnt[2] == 2);
    cr_assert_neq(qkf_events_frames(&e, 0, 11, 3, QKF_SPLIT_NUMBER, 3, 4, f), 0);
    e.ev[7].x = 4; /* outside the 4x3 sensor: refused, nothing written out of bounds */
    cr_assert_neq(qkf_events_frames(&e, 0, 10, 3, QKF_SPLIT_NUMBER, 3, 4, f), 0);
    cr_assert(strstr(qkf_last_error(), "event 7"), "%s", qkf_last_error());
    qkf_events_free(&e);
}

Test(events, frames_by_time_as_spikingjelly)
{
    /* t = 0, 5, 10, 10, 29, 30, T = 3: dt = floor(30 / 3) = 10; [0,10) [10,20) [20, end] */
    const int64_t t[6] = {0, 5, 10, 10, 29, 30};
    const int x[6] = {0, 1, 2, 3, 0, 1}, y[6] = {0}, p[6] = {1, 1, 0, 0, 1, 1};
    qkf_events e = make(4, 1, 6, t, x, y, p);
    float f[3 * 2 * 4], cnt[3];
    cr_assert_eq(qkf_events_frames(&e, 0, 6, 3, QKF_SPLIT_TIME, 1, 4, f), 0);
    frame_counts(f, 3, 1, 4, cnt);
    cr_assert(cnt[0] == 2 && cnt[1] == 2 && cnt[2] == 2, "%g %g %g", (double)cnt[0], (double)cnt[1],
              (double)cnt[2]);
    /* t = 0, 1, 31, T = 3: dt = 10, the middle window is empty (SpikingJelly would fail) */
    const int64_t t2[3] = {0, 1, 31};
    qkf_events g = make(4, 1, 3, t2, x, y, p);
    cr_assert_eq(qkf_events_frames(&g, 0, 3, 3, QKF_SPLIT_TIME, 1, 4, f), 0);
    frame_counts(f, 3, 1, 4, cnt);
    cr_assert(cnt[0] == 2 && cnt[1] == 0 && cnt[2] == 1);
    qkf_events_free(&e);
    qkf_events_free(&g);
}

Test(events, frames_scaled_onto_square)
{
    /* 304x240 onto 128x128: scale 128/304, 240*128/304 = 101 rows centred at (128-101)/2 = 13 */
    const int64_t t[3] = {0, 1, 2};
    const int x[3] = {0, 303, 152}, y[3] = {0, 239, 120}, p[3] = {1, 0, 1};
    qkf_events e = make(304, 240, 3, t, x, y, p);
    float *f = qkf_malloc(2 * 128 * 128 * sizeof(float));
    cr_assert_eq(qkf_events_frames(&e, 0, 3, 1, QKF_SPLIT_NUMBER, 128, 128, f), 0);
    cr_assert_eq(f[128 * 128 + 13 * 128 + 0], 1.0f);         /* (0,0) ON -> (0,13) */
    cr_assert_eq(f[113 * 128 + 127], 1.0f);                  /* (303,239) OFF -> (127,113) */
    cr_assert_eq(f[128 * 128 + (50 + 13) * 128 + 64], 1.0f); /* (152,120) -> (64,63) */
    qkf_free(f);
    qkf_events_free(&e);
}

Test(events, timed_stream)
{
    const int64_t t[6] = {3, 4, 10, 35, 36, 36};
    const int z[6] = {0};
    qkf_events e = make(1, 1, 6, t, z, z, z);
    qkf_event_stream s;
    qkf_event_stream_init(&s, e.ev, e.n, 0, 10);
    int64_t first, count, tw, seen = 0, windows = 0;
    const int64_t want_count[4] = {2, 1, 0, 3};
    while (qkf_event_stream_next(&s, &first, &count, &tw)) {
        cr_assert_lt(windows, 4);
        cr_assert_eq(tw, windows * 10);
        cr_assert_eq(first, seen);
        cr_assert_eq(count, want_count[windows]);
        for (int64_t i = first; i < first + count; i++)
            cr_assert(e.ev[i].t >= tw && e.ev[i].t < tw + 10);
        seen += count;
        windows++;
    }
    cr_assert_eq(seen, 6);
    cr_assert_eq(windows, 4);
    int64_t i0, i1;
    qkf_events_range(&e, 4, 36, &i0, &i1);
    cr_assert(i0 == 1 && i1 == 4);
    qkf_events_free(&e);
}

/* ---- DVS emulator ------------------------------------------------------------------------- */

static int same_events(const qkf_events *a, const qkf_events *b)
{
    if (a->n != b->n)
        return 0;
    for (int64_t i = 0; i < a->n; i++)
        if (a->ev[i].t != b->ev[i].t || a->ev[i].x != b->ev[i].x || a->ev[i].y != b->ev[i].y ||
            a->ev[i].p != b->ev[i].p)
            return 0;
    return 1;
}

Test(events, emulator_deterministic)
{
    uint8_t img[28 * 28];
    for (int i = 0; i < 28 * 28; i++)
        img[i] = (uint8_t)((i % 28 > 8 && i % 28 < 20 && i / 28 > 5) ? 40 + (i * 37) % 200 : 0);
    qkf_dvs_emu_cfg c;
    qkf_dvs_emu_defaults(&c);
    qkf_events a, b, d;
    cr_assert_eq(qkf_dvs_emu_run(&c, img, 1, 28, 28, &a), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_dvs_emu_run(&c, img, 1, 28, 28, &b), 0);
    cr_assert(same_events(&a, &b), "same seed, same events");
    cr_assert(a.width == 34 && a.height == 34);
    cr_assert_gt(a.n, 500);
    for (int64_t i = 1; i < a.n; i++)
        cr_assert_geq(a.ev[i].t, a.ev[i - 1].t);
    cr_assert_leq(a.ev[a.n - 1].t, 300000);
    c.seed = 2;
    cr_assert_eq(qkf_dvs_emu_run(&c, img, 1, 28, 28, &d), 0);
    cr_assert_not(same_events(&a, &d), "another seed, another sensor");
    qkf_events_free(&a);
    qkf_events_free(&b);
    qkf_events_free(&d);
}

Test(events, emulator_sanity)
{
    qkf_dvs_emu_cfg c;
    qkf_dvs_emu_defaults(&c);
    uint8_t blank[28 * 28] = {0};
    qkf_events e;
    cr_assert_eq(qkf_dvs_emu_run(&c, blank, 1, 28, 28, &e), 0);
    cr_assert_eq(e.n, 0, "a blank image gives no events");
    qkf_events_free(&e);

    /* A white square on black: events only within the saccade amplitude of its edges. */
    uint8_t sq[28 * 28] = {0};
    for (int y = 8; y < 20; y++)
        for (int x = 8; x < 20; x++)
            sq[y * 28 + x] = 255;
    cr_assert_eq(qkf_dvs_emu_run(&c, sq, 1, 28, 28, &e), 0);
    cr_assert_gt(e.n, 100);
    /* on the sensor the square spans 8..19 moved by 0..6 (amplitude 6): edges within x, y in
     * [8 - 1, 19 + 6 + 1]; its interior (13..19 seen at every offset) is uniform */
    int64_t inner = 0, outside = 0, on = 0;
    for (int64_t i = 0; i < e.n; i++) {
        int x = e.ev[i].x, y = e.ev[i].y;
        if (x < 7 || x > 26 || y < 7 || y > 26)
            outside++;
        if (x >= 15 && x <= 18 && y >= 15 && y <= 18)
            inner++;
        on += e.ev[i].p;
    }
    cr_assert_eq(outside, 0, "events far from every edge");
    cr_assert_eq(inner, 0, "events inside the uniform square");
    cr_assert(on > 0 && on < e.n, "both polarities");
    qkf_events_free(&e);

    /* background noise: events on a blank image, reproducible per recording */
    c.noise_hz = 50.0f;
    qkf_events a, b;
    cr_assert_eq(qkf_dvs_emu_run(&c, blank, 1, 28, 28, &a), 0);
    cr_assert_eq(qkf_dvs_emu_run(&c, blank, 1, 28, 28, &b), 0);
    cr_assert(same_events(&a, &b));
    cr_assert(a.n > 34 * 34 * 5 && a.n < 34 * 34 * 25, "~15 events per pixel, got %lld",
              (long long)a.n);
    qkf_events_free(&b);
    c.recording = 1;
    cr_assert_eq(qkf_dvs_emu_run(&c, blank, 1, 28, 28, &b), 0);
    cr_assert_not(same_events(&a, &b));
    qkf_events_free(&a);
    qkf_events_free(&b);

    c.scale = 0;
    cr_assert_neq(qkf_dvs_emu_run(&c, blank, 1, 28, 28, &a), 0);
    cr_assert(strstr(qkf_last_error(), "scale 0"), "%s", qkf_last_error());
}

Test(events, bench_runs)
{
    for (int f = QKF_EVF_NMNIST; f < QKF_EVF_COUNT; f++) {
        double eps = 0;
        cr_assert_eq(qkf_events_bench((qkf_evformat)f, 20000, 1, &eps), 0, "%s", qkf_last_error());
        cr_assert_gt(eps, 1e5);
    }
}

/* ---- the command ----------------------------------------------------------------------------- */

static int run(const char *args, char *out, size_t nout, char *err, size_t nerr)
{
    return run_qkf(tmpdir, args, out, nout, err, nerr);
}

/* Skips the test while tools/qkf.c does not dispatch `events` yet. */
static void need_command(void)
{
    char out[4096], err[4096];
    run("events --help", out, sizeof out, err, sizeof err);
    if (strstr(err, "unknown command"))
        cr_skip_test("qkf does not dispatch 'events' yet (tools/qkf.c)");
}

Test(events, cli_info)
{
    need_command();
    char out[8192], err[4096];
    cr_assert_eq(run("events info " FIX "user01_fixture.aedat", out, sizeof out, err, sizeof err),
                 0, "%s", err);
    const char *want[] = {"format: aedat3\n",
                          "events: 6\n",
                          "duration_us: 2147483838\n",
                          "width: 128\n",
                          "height: 128\n",
                          "rate_per_s: ",
                          "skipped_invalid: 1\n",
                          "skipped_packets: 2\n",
                          "segments: 3\n",
                          "segment 2: class 11 (label 10), 2147483648..2147483848 us, 2 events\n"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        cr_assert(strstr(out, want[k]), "'%s' not in:\n%s", want[k], out);
    cr_assert_eq(run("events info " FIX "plain.qev", out, sizeof out, err, sizeof err), 0);
    cr_assert(strstr(out, "events: 4\nduration_us: 1000000\nwidth: 10\nheight: 10\n"
                          "rate_per_s: 4\n"),
              "%s", out);
}

Test(events, cli_frames)
{
    need_command();
    char out[4096], err[4096];
    cr_assert_eq(
        run("events frames " FIX "nmnist.bin --T 4 --out f.h5", out, sizeof out, err, sizeof err),
        0, "%s", err);
    float *x;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(tpath("f.h5"), "input", &x, &nd, sh), 0, "%s", qkf_last_error());
    cr_assert(nd == 5 && sh[0] == 1 && sh[1] == 4 && sh[2] == 2 && sh[3] == 34 && sh[4] == 34);
    double sum = 0;
    for (int i = 0; i < 4 * 2 * 34 * 34; i++)
        sum += (double)x[i];
    cr_assert_eq(sum, 7.0);
    qkf_free(x);
    /* gesture: one sample per labelled segment, 128 -> 64 */
    cr_assert_eq(run("events frames " FIX "user01_fixture.aedat --gesture --T 2 --size 64 --out "
                     "g.h5",
                     out, sizeof out, err, sizeof err),
                 0, "%s", err);
    int64_t *lab;
    cr_assert_eq(qkf_h5_read_i64(tpath("g.h5"), "labels", &lab, &nd, sh), 0);
    cr_assert(nd == 1 && sh[0] == 3 && lab[0] == 0 && lab[1] == 4 && lab[2] == 10);
    qkf_free(lab);
    cr_assert_eq(qkf_h5_read_f32(tpath("g.h5"), "input", &x, &nd, sh), 0);
    cr_assert(sh[0] == 3 && sh[1] == 2 && sh[3] == 64 && sh[4] == 64);
    qkf_free(x);
}

Test(events, cli_bad_input_writes_nothing)
{
    need_command();
    char out[4096], err[4096];
    const char *cases[] = {
        "events frames " FIX "bad_aedat3_truncated.aedat --out o.h5",
        "events frames " FIX "bad_nmnist_y241.bin --out o.h5",
        "events frames " FIX "user01_fixture.aedat --labels " FIX "bad_aedat3_labels.csv --out "
        "o.h5",
        "events frames " FIX "nmnist.bin --split sideways --out o.h5",
        "events info " FIX "bad_npy_polarity.npy",
        "events convert " FIX "ncaltech.bin --out o.aedat2",
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int rc = run(cases[k], out, sizeof out, err, sizeof err);
        cr_assert_eq(rc, 1, "%s: exit %d", cases[k], rc);
        cr_assert(!strncmp(err, "qkf events: ", 12), "%s", err);
        cr_assert(strchr(err, '\n') == err + strlen(err) - 1, "one line: %s", err);
        cr_assert_not(exists(tpath("o.h5")) || exists(tpath("o.aedat2")), "%s wrote", cases[k]);
    }
    cr_assert(strstr(err, "ncaltech.bin") || strstr(err, "o.aedat2"), "%s", err);
}

Test(events, cli_emulate_fashion_mnist)
{
    need_command();
    if (!exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
        cr_skip_test("no /usr/share/datasets/fashion-mnist");
    char out[4096], err[4096];
    cr_assert_eq(run("events emulate --data fashion-mnist --test --index 3 --out e.bin", out,
                     sizeof out, err, sizeof err),
                 0, "%s", err);
    qkf_events a, b;
    load_ok(tpath("e.bin"), NULL, &a);
    cr_assert(a.width == 34 && a.n > 500, "%dx%d, %lld events", a.width, a.height, (long long)a.n);
    cr_assert_eq(run("events emulate --data fashion-mnist --test --index 3 --out e.qev", out,
                     sizeof out, err, sizeof err),
                 0, "%s", err);
    load_ok(tpath("e.qev"), NULL, &b);
    cr_assert(same_events(&a, &b), "the same recording through two formats");
    qkf_events_free(&a);
    qkf_events_free(&b);
    cr_assert_eq(run("events emulate --data fashion-mnist --test --index 0 --count 3 --sensor 32 "
                     "--T 4 --out fm.h5",
                     out, sizeof out, err, sizeof err),
                 0, "%s", err);
    float *x;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(tpath("fm.h5"), "input", &x, &nd, sh), 0);
    cr_assert(nd == 5 && sh[0] == 3 && sh[1] == 4 && sh[2] == 2 && sh[3] == 32 && sh[4] == 32);
    qkf_free(x);
}
