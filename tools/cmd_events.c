/* qkf events: event-camera files. info, frames (to an HDF5 `input` for qkf infer), emulate
 * (images -> events with the DVS emulator), convert, bench (decoder throughput). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/dataset.h"
#include "../io/dvs_emu.h"
#include "../io/events.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "cli.h"

/* The frame options of `frames` and `emulate`: --T, --size, --split. 1 consumed, 0 not ours,
 * -1 error. */
static int frame_opt(qkf_args *a, long *T, long *size, qkf_split *split, const char **split_name)
{
    const char *v;
    int r;
    if ((r = qkf_arg(a, "--T", &v)) != 0)
        return r < 0 || qkf_parse_int("--T", v, 1, 1024, T) ? -1 : 1;
    if ((r = qkf_arg(a, "--size", &v)) != 0)
        return r < 0 || qkf_parse_int("--size", v, 1, 4096, size) ? -1 : 1;
    if ((r = qkf_arg(a, "--split", &v)) != 0) {
        if (r < 0 || qkf_split_parse(v, split))
            return -1;
        *split_name = v;
        return 1;
    }
    return 0;
}

static void help(void)
{
    printf(
        "usage: qkf events info FILE [read options] [--labels CSV]\n"
        "       qkf events frames FILE --out X.h5 [--T 16] [--split number|time] [--size S]\n"
        "                  [--gesture | --labels CSV] [read options]\n"
        "       qkf events emulate --data NAME --index I [--count N] [--test] --out FILE\n"
        "                  [emulator options] [--T 16 --split number|time --size S]\n"
        "       qkf events convert FILE --out OUT [--to FORMAT] [read options]\n"
        "       qkf events bench [--events N] [--repeat R] [FILE...]\n"
        "\n"
        "Formats (docs/events.md): nmnist (N-MNIST/N-Caltech101 .bin), aedat2 (jAER: DVS128,\n"
        "DAVIS240/346/640, DVXplorer, ... by the header's AEChip), aedat3 (AEDAT 3.1 polarity\n"
        "packets, DVS128 Gesture), aedat4 (iniVation DV; LZ4/Zstd packets), evt2 and evt3\n"
        "(Prophesee .raw), dat (Prophesee .dat), qev (qkf's plain binary), npy.\n"
        "\n"
        "read options:\n"
        "  --format F        auto (default: magic bytes, then .bin), nmnist, aedat2, aedat3, "
        "aedat4,\n"
        "                    evt2, evt3, dat, qev, npy\n"
        "  --sensor WxH      sensor size (default: the file's camera or chip; nmnist 34x34 or\n"
        "                    304x240)\n"
        "  --layout L        aedat2 address layout: auto (default: the AEChip header line;\n"
        "                    dvs128 without one), dvs128, davis, davis208, dvxplorer, dvs640,\n"
        "                    dvs1280 (davis needs --sensor when no known chip names the size)\n"
        "  --orient O        aedat2 DVS128 orientation: jaer (default) or cifar10dvs "
        "(SpikingJelly)\n"
        "  --backwards B     timestamps going back: fail (default) or drop (dropped and counted)\n"
        "\n"
        "info prints one 'key: value' per line: format, camera (the chip or camera the file\n"
        "names), layout (aedat2), events (valid events decoded), duration_us, width, height,\n"
        "rate_per_s, t_first_us, t_last_us, on, off, and what was skipped (special, invalid,\n"
        "packets, aps, imu, external); for an aedat3 file with a <stem>_labels.csv (or\n"
        "--labels), its gesture segments.\n"
        "\n"
        "frames writes dataset `input` float32 [B,T,2,H,W] (channel 0 OFF, 1 ON event counts,\n"
        "SpikingJelly's split_by rule), atomically; B = 1, or one sample per gesture segment with\n"
        "--gesture/--labels (then also `labels` int64 [B], classes 1..11 stored as 0..10).\n"
        "  --size S          SxS frames; the sensor is scaled onto them keeping its aspect ratio\n"
        "                    (default: the sensor size)\n"
        "\n"
        "emulate turns images of a dataset (fashion-mnist, mnist, cifar10:DIR, X.h5, ...) into\n"
        "DVS events: three saccades over the image, log-intensity thresholds per pixel.\n"
        "  --out F.qev|.bin|.npy|.aedat   the events of one image (--count 1)\n"
        "  --out F.h5        frames `input` [N,T,2,S,S] and `labels` [N] of N images\n"
        "  --seed N          sensor (threshold mismatch) seed, default 1; noise also uses the "
        "index\n"
        "  --threshold C     contrast threshold in log intensity (0.5)   --sigma S  mismatch "
        "(0.05)\n"
        "  --eps E           log offset (0.1)      --noise HZ  background events per pixel (0)\n"
        "  --scale K         sensor pixels per image pixel (1)   --sensor S  side (image + 6)\n"
        "  --amplitude A     saccade triangle side in pixels (sensor - image)\n"
        "  --saccades N      (3)   --saccade-ms MS (100)   --step-us US sampling step (1000)\n"
        "\n"
        "convert writes --to FORMAT, or by OUT's extension: .bin (nmnist), .aedat (aedat3),\n"
        ".aedat2/.dat (aedat2, DVS128 addresses), .aedat4 (LZ4 packets), .raw (evt3), .qev,\n"
        ".npy; --to evt2 and --to dat name the other Prophesee formats.\n"
        "\n"
        "bench measures decoding speed (events/s) per format on N synthetic DVS128 events\n"
        "(default 4000000, best of R = 3 runs; aedat4 uncompressed, LZ4 and Zstd), and the load\n"
        "speed of each FILE given.\n");
}

/* --name A|B: *out = va or vb. Returns 1 if consumed, 0 if not ours, -1 on error. */
static int arg_pick(qkf_args *a, const char *name, const char *sa, int va, const char *sb, int vb,
                    int *out)
{
    const char *v;
    int r = qkf_arg(a, name, &v);
    if (r <= 0)
        return r;
    if (strcmp(v, sa) && strcmp(v, sb))
        return qkf_set_error("option %s: '%s' is not %s or %s", name, v, sa, sb);
    *out = strcmp(v, sa) ? vb : va;
    return 1;
}

int qkf_arg_events(qkf_args *a, qkf_events_opts *o, int max_side)
{
    const char *v;
    int r;
    if ((r = qkf_arg(a, "--format", &v)) != 0)
        return r < 0 || qkf_evformat_parse(v, &o->format) ? -1 : 1;
    if ((r = qkf_arg(a, "--sensor", &v)) != 0) {
        if (r < 0)
            return -1;
        char *end;
        long w = strtol(v, &end, 10), h = 0;
        if (*end == 'x')
            h = strtol(end + 1, &end, 10);
        if (*end || w < 1 || h < 1 || w > max_side || h > max_side)
            return qkf_set_error("option --sensor: '%s' is not WxH (1..%d)", v, max_side);
        o->width = (int)w, o->height = (int)h;
        return 1;
    }
    if ((r = qkf_arg(a, "--layout", &v)) != 0)
        return r < 0 || qkf_evlayout_parse(v, &o->layout) ? -1 : 1;
    if ((r = arg_pick(a, "--orient", "jaer", QKF_EV_ORIENT_JAER, "cifar10dvs",
                      QKF_EV_ORIENT_CIFAR10DVS, &o->orient)) != 0)
        return r;
    return arg_pick(a, "--backwards", "fail", QKF_EV_BACKWARDS_FAIL, "drop", QKF_EV_BACKWARDS_DROP,
                    &o->backwards);
}

static int file_exists(const char *p) { return access(p, R_OK) == 0; }

/* ---- info ------------------------------------------------------------------------------------ */

static int events_info(int argc, char **argv)
{
    qkf_args a = {argc, argv, 2, "events"};
    qkf_events_opts o;
    memset(&o, 0, sizeof o);
    const char *file = NULL, *labels = NULL;
    int r;
    for (; a.i < argc; a.i++) {
        if ((r = qkf_arg_events(&a, &o, 65536)) != 0 ||
            (r = qkf_arg(&a, "--labels", &labels)) != 0) {
            if (r < 0)
                return qkf_cli_fail("events");
            continue;
        }
        if (qkf_arg_positional(&a, &file))
            return qkf_cli_fail("events");
    }
    if (!file) {
        qkf_set_error("info needs an event FILE");
        return qkf_cli_fail("events");
    }
    qkf_events e;
    if (qkf_events_load(file, &o, &e))
        return qkf_cli_fail("events");
    char csv[4096];
    qkf_gesture_segment *segs = NULL;
    int nseg = 0;
    if (!labels && e.format == QKF_EVF_AEDAT3) {
        qkf_gesture_labels_path(file, csv, sizeof csv);
        if (file_exists(csv))
            labels = csv;
    }
    if (labels && qkf_gesture_labels_load(labels, &segs, &nseg)) {
        qkf_events_free(&e);
        return qkf_cli_fail("events");
    }
    int64_t on = 0, D = e.n ? e.ev[e.n - 1].t - e.ev[0].t : 0;
    for (int64_t i = 0; i < e.n; i++)
        on += e.ev[i].p;
    printf("format: %s\n", qkf_evformat_name(e.format));
    printf("camera: %s\n", e.camera[0] ? e.camera : "-");
    if (e.format == QKF_EVF_AEDAT2)
        printf("layout: %s\n", qkf_evlayout_name(e.layout));
    printf("events: %lld\n", (long long)e.n);
    printf("duration_us: %lld\n", (long long)D);
    printf("width: %d\n", e.width);
    printf("height: %d\n", e.height);
    printf("rate_per_s: %.6g\n", D > 0 ? (double)e.n / ((double)D * 1e-6) : 0.0);
    printf("t_first_us: %lld\n", e.n ? (long long)e.ev[0].t : 0LL);
    printf("t_last_us: %lld\n", e.n ? (long long)e.ev[e.n - 1].t : 0LL);
    printf("on: %lld\n", (long long)on);
    printf("off: %lld\n", (long long)(e.n - on));
    printf("records: %lld\n", (long long)e.records);
    printf("skipped_special: %lld\n", (long long)e.special);
    printf("skipped_invalid: %lld\n", (long long)e.invalid);
    printf("skipped_packets: %lld\n", (long long)e.unknown_packets);
    printf("skipped_aps: %lld\n", (long long)e.aps);
    printf("skipped_imu: %lld\n", (long long)e.imu);
    printf("skipped_external: %lld\n", (long long)e.external);
    printf("dropped_backwards: %lld\n", (long long)e.dropped_backwards);
    if (labels) {
        printf("labels: %s\n", labels);
        printf("segments: %d\n", nseg);
        for (int i = 0; i < nseg; i++) {
            int64_t i0, i1;
            qkf_events_range(&e, segs[i].t_start, segs[i].t_end, &i0, &i1);
            printf("segment %d: class %d (label %d), %lld..%lld us, %lld events\n", i,
                   segs[i].label + 1, segs[i].label, (long long)segs[i].t_start,
                   (long long)segs[i].t_end, (long long)(i1 - i0));
        }
    }
    qkf_free(segs);
    qkf_events_free(&e);
    return 0;
}

/* ---- frames ---------------------------------------------------------------------------------- */

static int events_frames(int argc, char **argv)
{
    qkf_args a = {argc, argv, 2, "events"};
    qkf_events_opts o;
    memset(&o, 0, sizeof o);
    const char *file = NULL, *out = NULL, *labels = NULL;
    long T = 16, size = 0;
    qkf_split split = QKF_SPLIT_NUMBER;
    const char *split_name = "number";
    int gesture = 0, r;
    for (; a.i < argc; a.i++) {
        if ((r = qkf_arg_events(&a, &o, 65536)) != 0 ||
            (r = qkf_arg(&a, "--labels", &labels)) != 0 || (r = qkf_arg(&a, "--out", &out)) != 0 ||
            (r = frame_opt(&a, &T, &size, &split, &split_name)) != 0 ||
            (r = qkf_arg_flag(&a, "--gesture", &gesture)) != 0) {
            if (r < 0)
                return qkf_cli_fail("events");
            continue;
        }
        if (qkf_arg_positional(&a, &file))
            return qkf_cli_fail("events");
    }
    if (!file || !out) {
        qkf_set_error("frames needs an event FILE and --out X.h5");
        return qkf_cli_fail("events");
    }
    int rc = 1, nseg = 0;
    qkf_events e;
    memset(&e, 0, sizeof e);
    qkf_gesture_segment *segs = NULL;
    float *x = NULL;
    int64_t *lab = NULL, *cnt = NULL;
    qkf_h5out *h = NULL;
    if (gesture || labels) {
        if (qkf_gesture_load(file, labels, &o, &e, &segs, &nseg))
            goto done;
        if (nseg == 0) {
            qkf_set_error("%s: the labels file has no segments", file);
            goto done;
        }
    } else if (qkf_events_load(file, &o, &e)) {
        goto done;
    }
    int oh = size ? (int)size : e.height, ow = size ? (int)size : e.width;
    int64_t B = segs ? nseg : 1;
    size_t per = (size_t)T * 2 * (size_t)oh * (size_t)ow;
    if ((double)B * (double)per * 4.0 > 8e9) {
        qkf_set_error("%s: %lld samples of [%ld,2,%d,%d] frames exceed 8 GB", file, (long long)B, T,
                      oh, ow);
        goto done;
    }
    x = qkf_malloc((size_t)B * per * sizeof(float));
    cnt = qkf_malloc((size_t)B * sizeof(int64_t));
    for (int64_t b = 0; b < B; b++) {
        int64_t i0 = segs ? segs[b].i0 : 0, i1 = segs ? segs[b].i1 : e.n;
        cnt[b] = i1 - i0;
        if (qkf_events_frames(&e, i0, i1, (int)T, split, oh, ow, x + (size_t)b * per))
            goto done;
    }
    if (!(h = qkf_h5out_open(out)))
        goto done;
    int64_t shape[5] = {B, T, 2, oh, ow};
    if (qkf_h5out_f32(h, "input", 5, shape, x) || qkf_h5out_i64(h, "events", 1, &B, cnt))
        goto done;
    if (segs) {
        lab = qkf_malloc((size_t)B * sizeof(int64_t));
        for (int64_t b = 0; b < B; b++)
            lab[b] = segs[b].label;
        if (qkf_h5out_i64(h, "labels", 1, &B, lab))
            goto done;
    }
    if (qkf_h5out_attr_str(h, NULL, "source", file) ||
        qkf_h5out_attr_str(h, NULL, "format", qkf_evformat_name(e.format)) ||
        qkf_h5out_attr_str(h, NULL, "split_by", split_name) ||
        qkf_h5out_attr_i64(h, NULL, "T", T) ||
        qkf_h5out_attr_i64(h, NULL, "sensor_width", e.width) ||
        qkf_h5out_attr_i64(h, NULL, "sensor_height", e.height) ||
        qkf_h5out_attr_str(h, NULL, "qkf_version", QKF_VERSION))
        goto done;
    int crc = qkf_h5out_commit(h);
    h = NULL;
    if (crc)
        goto done;
    printf("wrote %s: input [%lld,%ld,2,%d,%d] from %lld events (%s, split by %s)\n", out,
           (long long)B, T, oh, ow, (long long)e.n, qkf_evformat_name(e.format), split_name);
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("events");
    if (h)
        qkf_h5out_abort(h);
    qkf_free(x);
    qkf_free(lab);
    qkf_free(cnt);
    qkf_free(segs);
    qkf_events_free(&e);
    return rc;
}

/* ---- emulate --------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int events_emulate(int argc, char **argv)
{
    qkf_args a = {argc, argv, 2, "events"};
    qkf_dvs_emu_cfg c;
    qkf_dvs_emu_defaults(&c);
    const char *data = NULL, *out = NULL, *v;
    long index = -1, count = 1, T = 16, size = 0, l;
    double f;
    int test = 0, r;
    qkf_split split = QKF_SPLIT_NUMBER;
    const char *split_name = "number";
    static const struct {
        const char *opt;
        double lo, hi;
        int kind; /* 0 threshold, 1 sigma, 2 eps, 3 noise, 4 amplitude */
    } fopts[] = {{"--threshold", 1e-4, 99, 0},
                 {"--sigma", 0, 0.99, 1},
                 {"--eps", 1e-6, 99, 2},
                 {"--noise", 0, 1e5, 3},
                 {"--amplitude", 0, 4096, 4}};
    static const struct {
        const char *opt;
        long lo, hi;
        int kind; /* 0 scale, 1 sensor, 2 saccades, 3 saccade-ms, 4 step-us, 5 seed */
    } iopts[] = {{"--scale", 1, 64, 0},        {"--sensor", 1, 4096, 1},
                 {"--saccades", 1, 1000, 2},   {"--saccade-ms", 1, 100000, 3},
                 {"--step-us", 1, 1000000, 4}, {"--seed", 0, 2147483647L, 5}};
    for (; a.i < argc; a.i++) {
        if ((r = qkf_arg(&a, "--data", &data)) != 0 || (r = qkf_arg(&a, "--out", &out)) != 0) {
            if (r < 0)
                return qkf_cli_fail("events");
            continue;
        }
        int used = 0;
        for (size_t k = 0; k < sizeof fopts / sizeof fopts[0] && !used; k++) {
            if ((r = qkf_arg(&a, fopts[k].opt, &v)) == 0)
                continue;
            if (r < 0 || qkf_parse_float(fopts[k].opt, v, fopts[k].lo, fopts[k].hi, &f))
                return qkf_cli_fail("events");
            float *dst[] = {&c.threshold, &c.sigma, &c.eps, &c.noise_hz, &c.amplitude};
            *dst[fopts[k].kind] = (float)f;
            used = 1;
        }
        for (size_t k = 0; k < sizeof iopts / sizeof iopts[0] && !used; k++) {
            if ((r = qkf_arg(&a, iopts[k].opt, &v)) == 0)
                continue;
            if (r < 0 || qkf_parse_int(iopts[k].opt, v, iopts[k].lo, iopts[k].hi, &l))
                return qkf_cli_fail("events");
            switch (iopts[k].kind) {
            case 0:
                c.scale = (int)l;
                break;
            case 1:
                c.sensor = (int)l;
                break;
            case 2:
                c.saccades = (int)l;
                break;
            case 3:
                c.saccade_us = (int64_t)l * 1000;
                break;
            case 4:
                c.dt_us = l;
                break;
            default:
                c.seed = (uint64_t)l;
                break;
            }
            used = 1;
        }
        if (used)
            continue;
        if ((r = qkf_arg_int(&a, "--index", 0, 100000000, &index)) != 0 ||
            (r = qkf_arg_int(&a, "--count", 1, 100000000, &count)) != 0 ||
            (r = frame_opt(&a, &T, &size, &split, &split_name)) != 0 ||
            (r = qkf_arg_flag(&a, "--test", &test)) != 0) {
            if (r < 0)
                return qkf_cli_fail("events");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf events --help)", argv[a.i]);
        return qkf_cli_fail("events");
    }
    if (!data || !out || index < 0) {
        qkf_set_error("emulate needs --data NAME, --index I and --out FILE");
        return qkf_cli_fail("events");
    }
    int h5 = ends_with(out, ".h5");
    qkf_evformat fmt = qkf_evformat_from_path(out);
    if (!h5 && fmt == QKF_EVF_AUTO) {
        qkf_set_error("%s: unknown output type (.h5 frames, or events .qev .bin .npy .aedat)", out);
        return qkf_cli_fail("events");
    }
    if (!h5 && count != 1) {
        qkf_set_error("an event file holds one recording: --count 1, or --out X.h5 for frames");
        return qkf_cli_fail("events");
    }
    int rc = 1;
    qkf_dataset d;
    memset(&d, 0, sizeof d);
    qkf_events e;
    memset(&e, 0, sizeof e);
    float *x = NULL;
    int64_t *lab = NULL, *cnt = NULL;
    qkf_h5out *h = NULL;
    if (qkf_dataset_load(data, !test, &d))
        goto done;
    if (index + count > d.n) {
        qkf_set_error("%s: images %ld..%ld requested, the %s split has %lld", data, index,
                      index + count - 1, test ? "test" : "train", (long long)d.n);
        goto done;
    }
    if (qkf_dvs_emu_validate(&c, d.h, d.w))
        goto done;
    size_t img = (size_t)d.c * (size_t)d.h * (size_t)d.w;
    if (!h5) {
        c.recording = (uint64_t)index;
        if (qkf_dvs_emu_run(&c, d.pixels + (size_t)index * img, d.c, d.h, d.w, &e) ||
            qkf_events_save(out, &e, fmt))
            goto done;
        printf("wrote %s: %lld events, %dx%d sensor, %lld us (image %ld, label %d)\n", out,
               (long long)e.n, e.width, e.height, e.n ? (long long)e.ev[e.n - 1].t : 0LL, index,
               d.labels ? d.labels[index] : -1);
        rc = 0;
        goto done;
    }
    int S = c.sensor ? c.sensor : (d.h > d.w ? d.h : d.w) * c.scale + 6;
    int os = size ? (int)size : S;
    size_t per = (size_t)T * 2 * (size_t)os * (size_t)os;
    if ((double)count * (double)per * 4.0 > 8e9) {
        qkf_set_error("%ld samples of [%ld,2,%d,%d] frames exceed 8 GB (fewer --count, smaller "
                      "--size or --T)",
                      count, T, os, os);
        goto done;
    }
    x = qkf_malloc((size_t)count * per * sizeof(float));
    lab = qkf_malloc((size_t)count * sizeof(int64_t));
    cnt = qkf_malloc((size_t)count * sizeof(int64_t));
    int64_t total = 0;
    for (long k = 0; k < count; k++) {
        c.recording = (uint64_t)(index + k);
        if (qkf_dvs_emu_run(&c, d.pixels + (size_t)(index + k) * img, d.c, d.h, d.w, &e) ||
            qkf_events_frames(&e, 0, e.n, (int)T, split, os, os, x + (size_t)k * per))
            goto done;
        lab[k] = d.labels ? d.labels[index + k] : -1;
        cnt[k] = e.n;
        total += e.n;
        qkf_events_free(&e);
    }
    if (!(h = qkf_h5out_open(out)))
        goto done;
    int64_t shape[5] = {count, T, 2, os, os}, n1 = count;
    if (qkf_h5out_f32(h, "input", 5, shape, x) || qkf_h5out_i64(h, "labels", 1, &n1, lab) ||
        qkf_h5out_i64(h, "events", 1, &n1, cnt) || qkf_h5out_attr_str(h, NULL, "source", data) ||
        qkf_h5out_attr_i64(h, NULL, "first_index", index) ||
        qkf_h5out_attr_str(h, NULL, "split", test ? "test" : "train") ||
        qkf_h5out_attr_str(h, NULL, "split_by", split_name) ||
        qkf_h5out_attr_i64(h, NULL, "T", T) || qkf_h5out_attr_i64(h, NULL, "sensor", S) ||
        qkf_h5out_attr_i64(h, NULL, "seed", (int64_t)c.seed) ||
        qkf_h5out_attr_i64(h, NULL, "scale", c.scale) ||
        qkf_h5out_attr_i64(h, NULL, "saccades", c.saccades) ||
        qkf_h5out_attr_i64(h, NULL, "saccade_us", c.saccade_us) ||
        qkf_h5out_attr_i64(h, NULL, "step_us", c.dt_us) ||
        qkf_h5out_attr_f64(h, NULL, "threshold", (double)c.threshold) ||
        qkf_h5out_attr_f64(h, NULL, "sigma", (double)c.sigma) ||
        qkf_h5out_attr_f64(h, NULL, "eps", (double)c.eps) ||
        qkf_h5out_attr_f64(h, NULL, "noise_hz", (double)c.noise_hz) ||
        qkf_h5out_attr_f64(h, NULL, "amplitude", (double)c.amplitude) ||
        qkf_h5out_attr_str(h, NULL, "qkf_version", QKF_VERSION))
        goto done;
    int crc = qkf_h5out_commit(h);
    h = NULL;
    if (crc)
        goto done;
    printf("wrote %s: input [%ld,%ld,2,%d,%d], labels [%ld]; %.1f events per image\n", out, count,
           T, os, os, count, (double)total / (double)count);
    rc = 0;
done:
    if (rc)
        qkf_cli_fail("events");
    if (h)
        qkf_h5out_abort(h);
    qkf_free(x);
    qkf_free(lab);
    qkf_free(cnt);
    qkf_events_free(&e);
    qkf_dataset_free(&d);
    return rc;
}

/* ---- convert --------------------------------------------------------------------------------- */

static int events_convert(int argc, char **argv)
{
    qkf_args a = {argc, argv, 2, "events"};
    qkf_events_opts o;
    memset(&o, 0, sizeof o);
    const char *file = NULL, *out = NULL, *to = NULL;
    int r;
    for (; a.i < argc; a.i++) {
        if ((r = qkf_arg_events(&a, &o, 65536)) != 0 || (r = qkf_arg(&a, "--out", &out)) != 0 ||
            (r = qkf_arg(&a, "--to", &to)) != 0) {
            if (r < 0)
                return qkf_cli_fail("events");
            continue;
        }
        if (qkf_arg_positional(&a, &file))
            return qkf_cli_fail("events");
    }
    if (!file || !out) {
        qkf_set_error("convert needs an event FILE and --out OUT");
        return qkf_cli_fail("events");
    }
    qkf_evformat f = QKF_EVF_AUTO;
    if (to && qkf_evformat_parse(to, &f))
        return qkf_cli_fail("events");
    qkf_events e;
    if (qkf_events_load(file, &o, &e))
        return qkf_cli_fail("events");
    int rc = qkf_events_save(out, &e, f);
    if (!rc)
        printf("wrote %s: %lld events\n", out, (long long)e.n);
    qkf_events_free(&e);
    return rc ? qkf_cli_fail("events") : 0;
}

/* ---- bench ----------------------------------------------------------------------------------- */

static int events_bench(int argc, char **argv)
{
    qkf_args a = {argc, argv, 2, "events"};
    long n = 4000000, repeat = 3;
    const char *v;
    int r, nfiles = 0;
    for (; a.i < argc; a.i++) {
        if ((r = qkf_arg(&a, "--events", &v)) != 0) {
            if (r < 0 || qkf_parse_int("--events", v, 1, 1000000000, &n))
                return qkf_cli_fail("events");
            continue;
        }
        if ((r = qkf_arg(&a, "--repeat", &v)) != 0) {
            if (r < 0 || qkf_parse_int("--repeat", v, 1, 1000, &repeat))
                return qkf_cli_fail("events");
            continue;
        }
        if (argv[a.i][0] == '-') {
            qkf_set_error("unexpected argument '%s' (qkf events --help)", argv[a.i]);
            return qkf_cli_fail("events");
        }
        argv[2 + nfiles++] = argv[a.i]; /* files, compacted in place */
    }
    printf("decoding %ld synthetic DVS128 events from memory, best of %ld\n", n, repeat);
    printf("%-11s %11s\n", "format", "M events/s");
    for (int f = QKF_EVF_NMNIST; f < QKF_EVF_COUNT; f++) {
        double eps;
        if (qkf_events_bench((qkf_evformat)f, n, (int)repeat, &eps))
            return qkf_cli_fail("events");
        printf("%-11s %11.1f\n", f == QKF_EVF_AEDAT4 ? "aedat4-lz4" : qkf_evformat_name((qkf_evformat)f),
               eps * 1e-6);
        if (f == QKF_EVF_AEDAT4) /* the other compressions beside DV's default, LZ4 */
            for (int c = QKF_AEDAT4_NONE; c <= QKF_AEDAT4_ZSTD; c += QKF_AEDAT4_ZSTD) {
                if (qkf_events_bench_aedat4((qkf_aedat4_compression)c, n, (int)repeat, &eps))
                    return qkf_cli_fail("events");
                printf("%-11s %11.1f\n", c == QKF_AEDAT4_NONE ? "aedat4-none" : "aedat4-zstd",
                       eps * 1e-6);
            }
    }
    for (int k = 0; k < nfiles; k++) {
        double best = 1e30;
        int64_t cnt = 0;
        for (long rep = 0; rep < repeat; rep++) {
            qkf_events e;
            double t0 = qkf_now();
            if (qkf_events_load(argv[2 + k], NULL, &e))
                return qkf_cli_fail("events");
            double dt = qkf_now() - t0;
            best = dt < best ? dt : best;
            cnt = e.n;
            qkf_events_free(&e);
        }
        printf("%s: %lld events loaded (read + decode) at %.1f M events/s\n", argv[2 + k],
               (long long)cnt, (double)cnt / best * 1e-6);
    }
    return 0;
}

int cmd_events(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help();
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        }
    const char *sub = argv[1];
    if (!strcmp(sub, "info"))
        return events_info(argc, argv);
    if (!strcmp(sub, "frames"))
        return events_frames(argc, argv);
    if (!strcmp(sub, "emulate"))
        return events_emulate(argc, argv);
    if (!strcmp(sub, "convert"))
        return events_convert(argc, argv);
    if (!strcmp(sub, "bench"))
        return events_bench(argc, argv);
    qkf_set_error("unknown subcommand '%s' (info, frames, emulate, convert, bench)", sub);
    return qkf_cli_fail("events");
}
