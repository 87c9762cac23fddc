/* Tests for the camera formats of issue #18: AEDAT 2.0 DAVIS layouts, AEDAT 4.0, Prophesee EVT
 * 2.0 / EVT 3.0 .raw and .dat (io/events_aedat.c, io/events_aedat4.c, io/events_prophesee.c).
 *
 * The fixtures are written byte by byte by tools/reference/make_camera_fixtures.py from known
 * events, independently of qkf's encoders (its FlatBuffers are laid out unlike qkf's writer);
 * NAME.expected.csv lists what a correct reader decodes. A few words are also decoded here by
 * hand. Bad files must be refused with one line naming the file and the byte offset; every
 * prefix and single-byte corruption of a good file must decode (a prefix of the events) or fail
 * cleanly. The library's own encoders round-trip random events through every new format. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "io/events.h"
#include "kernels/base.h"
#include "util.h"
#include "events_util.h"

#define FIX QKF_FIXTURE_DIR "/events/"

static char tmpdir[64];

static void setup(void) { tmpdir_make(tmpdir, sizeof tmpdir, "cameras"); }
static void teardown(void) { tmpdir_remove(tmpdir); }

TestSuite(cameras, .init = setup, .fini = teardown, .timeout = 300);

static unsigned le16(const uint8_t *b) { return (unsigned)(b[0] | b[1] << 8); }

static void check_expected(const qkf_events *e, const char *csv)
{
    char path[512];
    snprintf(path, sizeof path, FIX "%s", csv);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    char line[256];
    cr_assert_not_null(fgets(line, sizeof line, f));
    int64_t i = 0;
    long long x, y, t, p;
    while (fscanf(f, "%lld,%lld,%lld,%lld", &x, &y, &t, &p) == 4) {
        cr_assert_lt(i, e->n, "%s: fewer events decoded (%lld)", csv, (long long)e->n);
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

static void load_ok(const char *file, const qkf_events_opts *o, qkf_events *e)
{
    char path[512];
    snprintf(path, sizeof path, FIX "%s", file);
    int rc = qkf_events_load(path, o, e);
    cr_assert_eq(rc, 0, "%s: %s", file, qkf_last_error());
}

/* ---- good files ---------------------------------------------------------------------------- */

Test(cameras, davis_aedat2_by_chip)
{
    qkf_events e;
    load_ok("davis240c.aedat", NULL, &e);
    check_expected(&e, "davis240c.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_AEDAT2);
    cr_assert_eq(e.layout, QKF_EV_LAYOUT_DAVIS);
    cr_assert_str_eq(e.camera, "eu.seebetter.ini.chips.davis.DAVIS240C");
    cr_assert(e.width == 240 && e.height == 180, "%dx%d", e.width, e.height);
    cr_assert(e.aps == 2 && e.imu == 7 && e.external == 2 && e.special == 0, "%lld %lld %lld",
              (long long)e.aps, (long long)e.imu, (long long)e.external);
    cr_assert_eq(e.records, 7 + 2 + 7 + 2);
    /* the events spread over the sensor, not one column (what the DVS128 layout made of them) */
    int cols[240] = {0}, ncols = 0;
    for (int64_t i = 0; i < e.n; i++)
        ncols += !cols[e.ev[i].x]++;
    cr_assert_geq(ncols, 4);
    qkf_events_free(&e);

    load_ok("davis346.aedat", NULL, &e);
    check_expected(&e, "davis346.expected.csv");
    cr_assert_str_eq(e.camera, "eu.seebetter.ini.chips.davis.Davis346B");
    cr_assert(e.width == 346 && e.height == 260);
    cr_assert(e.aps == 2 && e.imu == 7 && e.external == 2);
    qkf_events_free(&e);
}

Test(cameras, aedat4_every_compression)
{
    const char *files[] = {"aedat4_none.aedat4", "aedat4_lz4.aedat4", "aedat4_lz4high.aedat4",
                           "aedat4_zstd.aedat4", "aedat4_zstdhigh.aedat4"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        qkf_events e;
        load_ok(files[k], NULL, &e);
        check_expected(&e, "aedat4.expected.csv");
        cr_assert_eq(e.format, QKF_EVF_AEDAT4, "%s", files[k]);
        cr_assert_str_eq(e.camera, "DAVIS346_00000499");
        cr_assert(e.width == 346 && e.height == 260);
        /* one frame packet, an IMU packet of 3 samples, a trigger packet of 2 */
        cr_assert(e.aps == 1 && e.imu == 3 && e.external == 2, "%s: %lld %lld %lld", files[k],
                  (long long)e.aps, (long long)e.imu, (long long)e.external);
        qkf_events_free(&e);
    }
}

Test(cameras, prophesee_files)
{
    qkf_events e;
    load_ok("evt2.raw", NULL, &e);
    check_expected(&e, "evt2.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_EVT2);
    cr_assert(e.width == 640 && e.height == 480);
    cr_assert_str_eq(e.camera, "hal_plugin_imx636_evk4");
    cr_assert(e.external == 1 && e.special == 3, "%lld %lld", (long long)e.external,
              (long long)e.special); /* the event before the first time high, OTHER, CONTINUED */
    cr_assert_eq(e.ev[e.n - 1].t, ((int64_t)1 << 34) + 64 + 1, "the 2^34 us loop");
    qkf_events_free(&e);

    load_ok("evt3.raw", NULL, &e);
    check_expected(&e, "evt3.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_EVT3);
    cr_assert(e.width == 1280 && e.height == 720);
    cr_assert(e.external == 1 && e.special == 3);
    cr_assert_eq(e.ev[e.n - 1].t, ((int64_t)1 << 24) + (2 << 12) + 7, "the 2^24 us loop");
    qkf_events_free(&e);

    load_ok("cd.dat", NULL, &e);
    check_expected(&e, "cd.expected.csv");
    cr_assert_eq(e.format, QKF_EVF_DAT);
    cr_assert(e.width == 304 && e.height == 240);
    qkf_events_free(&e);
}

/* Words decoded by hand from the published layouts. */
Test(cameras, hand_checked_words)
{
    qkf_events e;
    /* DAVIS 0x16878800: y = 0x168 >> 2 & 0x1ff... bits 30..22 = 90, bits 21..12 = 0x78 = 120,
     * bit 11 = 1 (ON); jAER x = 239 - 120 = 119 */
    const char h2[] = "#!AER-DAT2.0\r\n# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n";
    uint8_t a2[sizeof h2 - 1 + 8];
    memcpy(a2, h2, sizeof h2 - 1);
    const uint8_t r2[8] = {0x16, 0x87, 0x88, 0x00, 0, 0, 0, 9};
    memcpy(a2 + sizeof h2 - 1, r2, 8);
    cr_assert_eq(qkf_events_decode(a2, sizeof a2, "a2", NULL, &e), 0, "%s", qkf_last_error());
    cr_assert(e.n == 1 && e.ev[0].x == 119 && e.ev[0].y == 90 && e.ev[0].p == 1 &&
              e.ev[0].t == 9);
    qkf_events_free(&e);

    /* EVT 2.0: time high 0x80000002 (base 128), then 0x148a08f0: ON, low 0x12, x 321, y 240 */
    const char h3[] = "% evt 2.0\n% geometry 640x480\n% end\n";
    uint8_t b2[sizeof h3 - 1 + 8];
    memcpy(b2, h3, sizeof h3 - 1);
    const uint8_t w2[8] = {0x02, 0, 0, 0x80, 0xf0, 0x08, 0x8a, 0x14};
    memcpy(b2 + sizeof h3 - 1, w2, 8);
    cr_assert_eq(qkf_events_decode(b2, sizeof b2, "e2", NULL, &e), 0, "%s", qkf_last_error());
    cr_assert(e.n == 1 && e.ev[0].x == 321 && e.ev[0].y == 240 && e.ev[0].p == 1 &&
              e.ev[0].t == 128 + 18);
    qkf_events_free(&e);

    /* EVT 3.0: time high 1, y 2, base x 10 OFF, VECT_12 0x4809: x 10, 13, 21 at t 4096 */
    const char h4[] = "% evt 3.0\n% geometry 64x64\n% end\n";
    uint8_t b3[sizeof h4 - 1 + 8];
    memcpy(b3, h4, sizeof h4 - 1);
    const uint8_t w3[8] = {0x01, 0x80, 0x02, 0x00, 0x0a, 0x30, 0x09, 0x48};
    memcpy(b3 + sizeof h4 - 1, w3, 8);
    cr_assert_eq(qkf_events_decode(b3, sizeof b3, "e3", NULL, &e), 0, "%s", qkf_last_error());
    cr_assert_eq(e.n, 3);
    cr_assert(e.ev[0].x == 10 && e.ev[1].x == 13 && e.ev[2].x == 21 && e.ev[2].y == 2 &&
              e.ev[2].p == 0 && e.ev[2].t == 4096);
    qkf_events_free(&e);

    /* .dat: t 5, data 0x103bc12f: x 0x12f = 303, y 0xef = 239, ON */
    const char h5[] = "% Version 2\n% Width 304\n% Height 240\n";
    uint8_t d[sizeof h5 - 1 + 10];
    memcpy(d, h5, sizeof h5 - 1);
    const uint8_t w5[10] = {12, 8, 5, 0, 0, 0, 0x2f, 0xc1, 0x3b, 0x10};
    memcpy(d + sizeof h5 - 1, w5, 10);
    cr_assert_eq(qkf_events_decode(d, sizeof d, "d", NULL, &e), 0, "%s", qkf_last_error());
    cr_assert(e.n == 1 && e.ev[0].x == 303 && e.ev[0].y == 239 && e.ev[0].p == 1 &&
              e.ev[0].t == 5);
    qkf_events_free(&e);
}

/* ---- bad files ------------------------------------------------------------------------------ */

Test(cameras, bad_files)
{
    static const struct {
        const char *file, *where;
    } bad[] = {
        {"bad_davis_bits.aedat", "byte 339 (event 1): address 0x00000a15 sets bits the davis"},
        {"bad_davis_outside.aedat", "byte 339 (event 1): address 0x010f0800: raw x 240, y 4 is "
                                    "outside the 240x180 sensor of the davis layout"},
        {"bad_dvs128_bits.aedat", "byte 337 (event 1): address 0x16870000 sets bits the dvs128"},
        {"bad_unknown_chip.aedat", "byte 175: AEChip 'ch.unizh.ini.jaer.chip.cochlea."
                                   "CochleaAMS1c' has no known address layout"},
        {"bad_aedat4_truncated.aedat4", "byte 1768 (packet 5): truncated packet: 52 bytes"},
        {"bad_aedat4_stream.aedat4", "byte 1350 (packet 0): stream id 9 is not described"},
        {"bad_aedat4_vector.aedat4", "byte 1390 (packet 0, its byte 32): FlatBuffer: vector "
                                     "longer than the FlatBuffer"},
        {"bad_aedat4_outside.aedat4", "byte 1410 (event 1): x = 346, y = 259 is outside the "
                                      "346x260"},
        {"bad_aedat4_lz4.aedat4", "byte 1350 (packet 0): LZ4 packet: LZ4 error"},
        {"bad_evt2_type.raw", "byte 142 (word 2): word 0x30000000 has type 0x3"},
        {"bad_evt2_outside.raw", "byte 138 (event 1): x = 320, y = 3 is outside the 320x240"},
        {"bad_evt2_truncated.raw", "byte 182: truncated word (2 trailing bytes"},
        {"bad_evt3_type.raw", "byte 142 (word 3): word 0x9000 has type 0x9"},
        {"bad_evt3_noy.raw", "byte 140 (word 2): an event before any EVT_ADDR_Y word"},
        {"bad_evt3_outside.raw", "byte 140 (event 5): x = 320, y = 5 is outside the 320x320"},
        {"bad_evt3_truncated.raw", "byte 182: truncated word (1 trailing byte"},
        {"bad_dat_bits.dat", "byte 113 (event 1): data word 0x40000003 sets bits 29..31"},
        {"bad_dat_type.dat", "byte 103: event type 40 of 36 bytes"},
        {"bad_dat_outside.dat", "byte 105 (event 0): x = 304, y = 5 is outside the 304x240"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", bad[k].file);
        qkf_events e;
        memset(&e, 0x5A, sizeof e);
        qkf_clear_error();
        cr_assert_neq(qkf_events_load(path, NULL, &e), 0, "%s decoded", bad[k].file);
        const char *msg = qkf_last_error();
        cr_assert(!strncmp(msg, path, strlen(path)), "message does not name the file: %s", msg);
        cr_assert(strstr(msg, bad[k].where), "%s: '%s' not in: %s", bad[k].file, bad[k].where,
                  msg);
        cr_assert_null(strchr(msg, '\n'), "one line: %s", msg);
        cr_assert(e.ev == NULL && e.n == 0, "nothing left to free after an error");
    }
}

/* --layout overrides the chip; a layout the addresses do not fit is refused, not misread. */
Test(cameras, layout_override)
{
    qkf_events e;
    qkf_events_opts o = {.layout = QKF_EV_LAYOUT_DVS128};
    cr_assert_neq(qkf_events_load(FIX "davis240c.aedat", &o, &e), 0);
    cr_assert(strstr(qkf_last_error(), "sets bits the dvs128 layout does not use"), "%s",
              qkf_last_error());
    o = (qkf_events_opts){.layout = QKF_EV_LAYOUT_DAVIS};
    cr_assert_neq(qkf_events_load(FIX "dvs128.aedat", &o, &e), 0); /* no chip line: no size */
    cr_assert(strstr(qkf_last_error(), "byte 0: the davis layout needs the sensor size"), "%s",
              qkf_last_error());
    o = (qkf_events_opts){.layout = QKF_EV_LAYOUT_DAVIS, .width = 240, .height = 180};
    cr_assert_neq(qkf_events_load(FIX "dvs128.aedat", &o, &e), 0);
    cr_assert(strstr(qkf_last_error(), "sets bits the davis layout does not use"), "%s",
              qkf_last_error());
    /* the DAVIS240C file read as a 346-wide DAVIS: x = 345 - raw x */
    o = (qkf_events_opts){.layout = QKF_EV_LAYOUT_DAVIS, .width = 346, .height = 260};
    load_ok("davis240c.aedat", &o, &e);
    cr_assert(e.width == 346 && e.ev[0].x == 345 && e.ev[1].x == 345 - 239, "%d %d", e.ev[0].x,
              e.ev[1].x);
    qkf_events_free(&e);
    /* DAVIS208 inverts the polarity */
    o = (qkf_events_opts){.layout = QKF_EV_LAYOUT_DAVIS208, .width = 240, .height = 180};
    load_ok("davis240c.aedat", &o, &e);
    cr_assert(e.ev[0].p == 0 && e.ev[1].p == 1);
    qkf_events_free(&e);
    o = (qkf_events_opts){.orient = QKF_EV_ORIENT_CIFAR10DVS};
    cr_assert_neq(qkf_events_load(FIX "davis240c.aedat", &o, &e), 0);
    cr_assert(strstr(qkf_last_error(), "cifar10dvs orientation is for DVS128"), "%s",
              qkf_last_error());
    /* the right format forced, or a wrong one refused */
    o = (qkf_events_opts){.format = QKF_EVF_EVT2};
    cr_assert_neq(qkf_events_load(FIX "evt3.raw", &o, &e), 0);
    cr_assert(strstr(qkf_last_error(), "byte 0: the header names EVT 3.0, not EVT 2.0"), "%s",
              qkf_last_error());
    qkf_evlayout l;
    cr_assert_eq(qkf_evlayout_parse("dvxplorer", &l), 0);
    cr_assert_eq(l, QKF_EV_LAYOUT_DVXPLORER);
    cr_assert_neq(qkf_evlayout_parse("davis999", &l), 0);
    qkf_evformat f;
    const char *names[] = {"aedat4", "evt2", "evt3", "dat"};
    const qkf_evformat want[] = {QKF_EVF_AEDAT4, QKF_EVF_EVT2, QKF_EVF_EVT3, QKF_EVF_DAT};
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(qkf_evformat_parse(names[k], &f), 0);
        cr_assert_eq(f, want[k]);
        cr_assert_str_eq(qkf_evformat_name(f), names[k]);
    }
}

/* Every prefix and every single-byte change of each good fixture decodes (a prefix of the events,
 * for cuts) or fails with a byte offset. */
Test(cameras, truncation_and_corruption_sweep)
{
    const char *files[] = {"davis240c.aedat", "aedat4_none.aedat4", "aedat4_lz4.aedat4",
                           "aedat4_zstd.aedat4", "evt2.raw", "evt3.raw", "cd.dat"};
    const uint8_t vals[] = {0x00, 0xFF, 0x25, 0x7F, 0x80, 0x23, 0x0A};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        /* the AEDAT 4 files are ~2 KB of packets: three values each keep the sanitizer run short */
        size_t nvals = strstr(files[k], "aedat4") ? 3 : sizeof vals;
        char path[512];
        snprintf(path, sizeof path, FIX "%s", files[k]);
        sweep_cuts_and_flips(files[k], path, vals, nvals, ": byte ", ": byte ");
    }
}

/* ---- the library's writers ------------------------------------------------------------------ */

/* Random events with runs of one row, time and polarity at rising x (what EVT 3 vectorises),
 * over span_us. */
static void random_events(qkf_events *e, int w, int h, int64_t n, int64_t span_us, uint64_t seed)
{
    qkf_events_init(e, w, h, n);
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    int64_t t = 0, step = 2 * span_us / n;
    while (e->n < n) {
        uint64_t u = qkf_rng_u64(&r);
        t += (int64_t)(u % (uint64_t)(step + 1));
        int x = (int)((u >> 20) % (uint64_t)w), y = (int)((u >> 36) % (uint64_t)h), p = (int)(u >> 63);
        int run = (int)((u >> 50) % 4); /* 0..3 more events in the same row at rising x */
        qkf_events_push(e, t, x, y, p);
        for (int k = 0; k < run && e->n < n; k++) {
            x += 1 + (int)((u >> (8 * k)) % 5);
            if (x >= w)
                break;
            qkf_events_push(e, t, x, y, p);
        }
    }
}

static void round_trip(const qkf_events *e, qkf_evformat f, int comp, uint8_t **keep,
                       size_t *keep_len)
{
    uint8_t *buf;
    size_t len;
    int rc = f == QKF_EVF_AEDAT4 ? qkf_events_encode_aedat4(e, (qkf_aedat4_compression)comp, &buf,
                                                            &len)
                                 : qkf_events_encode(e, f, 0, &buf, &len);
    cr_assert_eq(rc, 0, "%s: %s", qkf_evformat_name(f), qkf_last_error());
    qkf_events d;
    cr_assert_eq(qkf_events_decode(buf, len, "rt", NULL, &d), 0, "%s/%d: %s",
                 qkf_evformat_name(f), comp, qkf_last_error());
    cr_assert_eq(d.format, f, "detected by its magic");
    cr_assert(d.width == e->width && d.height == e->height, "%s: sensor %dx%d",
              qkf_evformat_name(f), d.width, d.height);
    cr_assert_eq(d.n, e->n, "%s/%d", qkf_evformat_name(f), comp);
    for (int64_t i = 0; i < e->n; i++)
        cr_assert(d.ev[i].t == e->ev[i].t && d.ev[i].x == e->ev[i].x && d.ev[i].y == e->ev[i].y &&
                      d.ev[i].p == e->ev[i].p,
                  "%s/%d: event %lld", qkf_evformat_name(f), comp, (long long)i);
    qkf_events_free(&d);
    if (keep) {
        *keep = buf;
        *keep_len = len;
    } else {
        qkf_free(buf);
    }
}

Test(cameras, round_trip_new_formats)
{
    qkf_events e;
    /* ~80 s: EVT 3's 24-bit time (16.8 s) loops several times */
    random_events(&e, 1280, 720, 20000, 200000000, 11);
    for (int c = QKF_AEDAT4_NONE; c <= QKF_AEDAT4_ZSTD_HIGH; c++)
        round_trip(&e, QKF_EVF_AEDAT4, c, NULL, NULL);
    round_trip(&e, QKF_EVF_EVT2, 0, NULL, NULL);
    round_trip(&e, QKF_EVF_DAT, 0, NULL, NULL);
    uint8_t *b;
    size_t len;
    round_trip(&e, QKF_EVF_EVT3, 0, &b, &len);
    /* the writer used vectors, and time highs that fall where the 24-bit counter loops */
    size_t h = 0;
    while (h < len && b[h] == '%')
        h = (size_t)((uint8_t *)memchr(b + h, '\n', len - h) - b) + 1;
    int vec12 = 0, vec8 = 0, wraps = 0;
    unsigned prev_high = 0;
    for (size_t i = h; i + 1 < len; i += 2) {
        unsigned w = le16(b + i);
        vec12 += w >> 12 == 4, vec8 += w >> 12 == 5;
        if (w >> 12 == 8) { /* a time high below the one before: the counter looped */
            wraps += (w & 0xFFF) < prev_high;
            prev_high = w & 0xFFF;
        }
    }
    cr_assert(vec12 > 100 && vec8 > 100, "vectors: %d VECT_12, %d VECT_8", vec12, vec8);
    int64_t loops = e.ev[e.n - 1].t >> 24;
    cr_assert(loops >= 2 && wraps == loops, "%d loop crossings, %lld loops", wraps,
              (long long)loops);
    qkf_free(b);
    qkf_events_free(&e);
    /* what a format cannot hold is refused */
    qkf_events_init(&e, 4096, 10, 1);
    qkf_events_push(&e, 0, 3000, 1, 1);
    cr_assert_neq(qkf_events_encode(&e, QKF_EVF_EVT3, 0, &b, &len), 0);
    cr_assert_neq(qkf_events_encode(&e, QKF_EVF_EVT2, 0, &b, &len), 0);
    qkf_events_free(&e);
}

Test(cameras, bench_runs)
{
    for (int c = QKF_AEDAT4_NONE; c <= QKF_AEDAT4_ZSTD_HIGH; c++) {
        double eps = 0;
        cr_assert_eq(qkf_events_bench_aedat4((qkf_aedat4_compression)c, 5000, 1, &eps), 0, "%s",
                     qkf_last_error());
        cr_assert_gt(eps, 1e4);
    }
}

/* ---- the command ------------------------------------------------------------------------------ */

static int run(const char *args, char *out, size_t nout, char *err, size_t nerr)
{
    return run_qkf(tmpdir, args, out, nout, err, nerr);
}

Test(cameras, cli_info_convert_frames)
{
    char out[8192], err[4096];
    cr_assert_eq(run("events info " FIX "davis240c.aedat", out, sizeof out, err, sizeof err), 0,
                 "%s", err);
    const char *want[] = {"format: aedat2\n", "camera: eu.seebetter.ini.chips.davis.DAVIS240C\n",
                          "layout: davis\n",  "events: 7\n",
                          "width: 240\n",     "height: 180\n",
                          "skipped_aps: 2\n", "skipped_imu: 7\n",
                          "skipped_external: 2\n"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        cr_assert(strstr(out, want[k]), "'%s' not in:\n%s", want[k], out);
    cr_assert_eq(run("events info " FIX "davis240c.aedat --layout dvs128", out, sizeof out, err,
                     sizeof err),
                 1);
    cr_assert(strstr(err, "sets bits the dvs128 layout does not use"), "%s", err);
    cr_assert_eq(run("events info " FIX "cd.dat --layout bogus", out, sizeof out, err, sizeof err),
                 1);
    /* every format through convert, by name and extension */
    cr_assert_eq(run("events convert " FIX "evt3.raw --out a.aedat4", out, sizeof out, err,
                     sizeof err),
                 0, "%s", err);
    cr_assert_eq(run("events convert a.aedat4 --out b.dat --to dat", out, sizeof out, err,
                     sizeof err),
                 0, "%s", err);
    cr_assert_eq(run("events convert b.dat --out c.raw --to evt2", out, sizeof out, err,
                     sizeof err),
                 0, "%s", err);
    cr_assert_eq(run("events info c.raw", out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_assert(strstr(out, "format: evt2\n") && strstr(out, "events: 12\n") &&
                  strstr(out, "width: 1280\n"),
              "%s", out);
    qkf_events a, b;
    load_ok("evt3.raw", NULL, &a);
    cr_assert_eq(qkf_events_load(tmpdir_path(tmpdir, "c.raw"), NULL, &b), 0, "%s",
                 qkf_last_error());
    cr_assert_eq(a.n, b.n);
    for (int64_t i = 0; i < a.n; i++)
        cr_assert(a.ev[i].t == b.ev[i].t && a.ev[i].x == b.ev[i].x && a.ev[i].y == b.ev[i].y &&
                  a.ev[i].p == b.ev[i].p);
    qkf_events_free(&a);
    qkf_events_free(&b);
    cr_assert_eq(run("events frames " FIX "davis346.aedat --T 2 --out f.h5", out, sizeof out, err,
                     sizeof err),
                 0, "%s", err);
    cr_assert(strstr(out, "input [1,2,2,260,346] from 6 events (aedat2"), "%s", out);
}

/* ---- inputs found by fuzzing (tools/fuzz/) ------------------------------------------------- */

/* A control character in a stream's typeIdentifier (from the IOHeader's XML) reached the message
 * raw (afl, campaign 2): the type is now quoted with such bytes as '?'. */
Test(cameras, aedat4_fuzz_findings)
{
    size_t len;
    uint8_t *b = slurp(FIX "aedat4_none.aedat4", &len);
    uint8_t *p = NULL;
    for (size_t i = 0; i + 11 <= len && !p; i++)
        if (!memcmp(b + i, "EVTS</attr>", 11))
            p = b + i;
    cr_assert_not_null(p);
    p[1] = 0x1b;
    qkf_events e;
    memset(&e, 0x5A, sizeof e);
    cr_assert_neq(qkf_events_decode(b, len, "fuzz.in", NULL, &e), 0);
    const char *msg = qkf_last_error();
    cr_assert(strstr(msg, "fuzz.in: byte 1350 (packet 0): stream 0 (E?TS): the packet is not a "
                          "size-prefixed FlatBuffer of its type"),
              "%s", msg);
    for (const char *m = msg; *m; m++)
        cr_assert((unsigned char)*m >= 0x20 && *m != 0x7F, "one printable line: %s", msg);
    cr_assert(e.ev == NULL && e.n == 0);
    free(b);
}

/* A compressed packet whose frame is cut short, or followed by stray bytes, is refused (afl cannot
 * reach these paths: it does not write valid LZ4 or Zstd frames). */
Test(cameras, aedat4_compressed_packet_faults)
{
    qkf_events e;
    qkf_events_init(&e, 64, 64, 16);
    for (int i = 0; i < 100; i++)
        qkf_events_push(&e, 1000 + i, i % 64, (i * 7) % 64, i & 1);
    const struct {
        qkf_aedat4_compression c;
        const char *name;
    } cs[] = {{QKF_AEDAT4_LZ4, "LZ4"}, {QKF_AEDAT4_ZSTD, "Zstd"}};
    for (int k = 0; k < 2; k++) {
        uint8_t *b;
        size_t len;
        cr_assert_eq(qkf_events_encode_aedat4(&e, cs[k].c, &b, &len), 0);
        size_t hdr = 18 + (size_t)(b[14] | b[15] << 8 | b[16] << 16 | (uint32_t)b[17] << 24);
        uint32_t size = (uint32_t)(b[hdr + 4] | b[hdr + 5] << 8 | b[hdr + 6] << 16);
        cr_assert_eq(hdr + 8 + size, len, "one packet");
        /* three stray bytes after the frame */
        uint8_t *x = malloc(len + 3);
        memcpy(x, b, len);
        x[len] = 1, x[len + 1] = 2, x[len + 2] = 3;
        x[hdr + 4] = (uint8_t)(size + 3);
        x[hdr + 5] = (uint8_t)((size + 3) >> 8);
        qkf_events d;
        cr_assert_neq(qkf_events_decode(x, len + 3, "x", NULL, &d), 0);
        cr_assert(strstr(qkf_last_error(), "3 bytes after the"), "%s: %s", cs[k].name,
                  qkf_last_error());
        /* the frame cut by 4 bytes (its end and checksum) */
        x[hdr + 4] = (uint8_t)(size - 4);
        x[hdr + 5] = (uint8_t)((size - 4) >> 8);
        cr_assert_neq(qkf_events_decode(x, len - 4, "x", NULL, &d), 0);
        char want[64];
        snprintf(want, sizeof want, "byte %zu (packet 0): %s packet: ", hdr, cs[k].name);
        cr_assert(strstr(qkf_last_error(), want), "%s", qkf_last_error());
        cr_assert(strstr(qkf_last_error(), "truncated"), "%s",
                  qkf_last_error());
        free(x);
        qkf_free(b);
    }
    qkf_events_free(&e);
}
