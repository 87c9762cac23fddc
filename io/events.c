/* Event sets: loading (format detection, then one decoder per format in io/events_*.c), saving,
 * time ranges, integration into frames, the timed stream, and the decoder benchmark.
 *
 * A file is read whole into memory and decoded in one pass into an array with room for every
 * record, so decoding never reallocates. Frames follow SpikingJelly's
 * integrate_events_by_fixed_frames_number: the index bounds of frame i are
 *   number:  [i*floor(N/T), (i+1)*floor(N/T)), the last frame ending at N;
 *   time:    dt = floor((t_last - t_first) / T), frame i holds t_first + i*dt <= t <
 *            t_first + (i+1)*dt, the last frame ending at N;
 * and channel 0 counts the OFF events (p == 0), channel 1 the ON events. */
#define _POSIX_C_SOURCE 200809L
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "events_internal.h"

static const char *format_names[QKF_EVF_COUNT] = {
    "auto", "nmnist", "aedat2", "aedat3", "qev", "npy", "aedat4", "evt2", "evt3", "dat"};
_Static_assert(sizeof format_names / sizeof format_names[0] == QKF_EVF_COUNT,
               "one name per format");

const char *qkf_evformat_name(qkf_evformat f)
{
    return f >= 0 && f < QKF_EVF_COUNT ? format_names[f] : "?";
}

int qkf_evformat_parse(const char *s, qkf_evformat *f)
{
    for (int i = 0; i < QKF_EVF_COUNT; i++)
        if (!strcmp(s, format_names[i])) {
            *f = (qkf_evformat)i;
            return 0;
        }
    return qkf_set_error("'%s' is not an event format (auto, nmnist, aedat2, aedat3, qev, npy, "
                         "aedat4, evt2, evt3, dat)",
                         s);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

qkf_evformat qkf_evformat_from_path(const char *path)
{
    if (ends_with(path, ".bin"))
        return QKF_EVF_NMNIST;
    if (ends_with(path, ".qev"))
        return QKF_EVF_QEV;
    if (ends_with(path, ".npy"))
        return QKF_EVF_NPY;
    if (ends_with(path, ".aedat") || ends_with(path, ".aedat3"))
        return QKF_EVF_AEDAT3;
    if (ends_with(path, ".aedat2") || ends_with(path, ".dat"))
        return QKF_EVF_AEDAT2; /* jAER's old .dat; Prophesee .dat files are told by their header */
    if (ends_with(path, ".aedat4"))
        return QKF_EVF_AEDAT4;
    if (ends_with(path, ".raw"))
        return QKF_EVF_EVT3;
    return QKF_EVF_AUTO;
}

/* The format named by the first bytes, or AUTO. */
static qkf_evformat sniff(const uint8_t *b, size_t len)
{
    if (len >= 11 && !memcmp(b, "#!AER-DAT2.", 11))
        return QKF_EVF_AEDAT2;
    if (len >= 11 && !memcmp(b, "#!AER-DAT3.", 11))
        return QKF_EVF_AEDAT3;
    if (len >= 11 && !memcmp(b, "#!AER-DAT4.", 11))
        return QKF_EVF_AEDAT4;
    if (len >= 1 && b[0] == '%')
        return qkf__sniff_prophesee(b, len);
    if (len >= 6 && !memcmp(b, "\x93NUMPY", 6))
        return QKF_EVF_NPY;
    if (len >= 8 && !memcmp(b, QKF__QEV_MAGIC, 8))
        return QKF_EVF_QEV;
    return QKF_EVF_AUTO;
}

void qkf_events_init(qkf_events *e, int width, int height, int64_t cap)
{
    memset(e, 0, sizeof *e);
    e->width = width;
    e->height = height;
    e->cap = cap > 0 ? cap : 16;
    e->ev = qkf_malloc((size_t)e->cap * sizeof(qkf_event));
}

void qkf_events_push(qkf_events *e, int64_t t, int x, int y, int p)
{
    if (e->n == e->cap) {
        int64_t cap = e->cap ? e->cap * 2 : 16;
        qkf_event *g = qkf_malloc((size_t)cap * sizeof *g);
        if (e->n)
            memcpy(g, e->ev, (size_t)e->n * sizeof *g);
        qkf_free(e->ev);
        e->ev = g;
        e->cap = cap;
    }
    qkf_event *v = &e->ev[e->n++];
    v->t = t;
    v->x = (uint16_t)x;
    v->y = (uint16_t)y;
    v->p = (uint8_t)p;
}

void qkf_events_free(qkf_events *e)
{
    if (!e)
        return;
    qkf_free(e->ev);
    memset(e, 0, sizeof *e);
}

int qkf_events_decode(const uint8_t *buf, size_t len, const char *name, const qkf_events_opts *o,
                      qkf_events *out)
{
    qkf_events_opts def;
    memset(&def, 0, sizeof def);
    if (!o)
        o = &def;
    memset(out, 0, sizeof *out);
    if ((o->width != 0) != (o->height != 0) || o->width < 0 || o->height < 0 || o->width > 65536 ||
        o->height > 65536)
        return qkf_set_error("%s: bad sensor size %dx%d", name, o->width, o->height);
    qkf_evformat f = o->format;
    if (f == QKF_EVF_AUTO)
        f = sniff(buf, len);
    if (f == QKF_EVF_AUTO)
        f = qkf_evformat_from_path(name) == QKF_EVF_NMNIST ? QKF_EVF_NMNIST : QKF_EVF_AUTO;
    if (f == QKF_EVF_AUTO) {
        if (len >= 9 && !memcmp(buf, "#!AER-DAT", 9)) {
            int k = 0;
            while (9 + (size_t)k < len && k < 8 &&
                   ((buf[9 + k] >= '0' && buf[9 + k] <= '9') || buf[9 + k] == '.'))
                k++;
            return qkf_set_error("%s: byte 0: AEDAT version '%.*s' is not supported (2.0, 3.1 and "
                                 "4.0 are)",
                                 name, k, (const char *)buf + 9);
        }
        if (len >= 1 && buf[0] == '%')
            return qkf_set_error("%s: byte 0: a '%%' header that names no EVT 2.0, EVT 3.0 or "
                                 ".dat format ('%% evt', '%% format' or '%% Version' lines; "
                                 "--format evt2|evt3|dat names it)",
                                 name);
        return qkf_set_error("%s: byte 0: unknown event file format (no AEDAT, Prophesee, NumPy "
                             "or qev magic, not a .bin file; --format names it)",
                             name);
    }
    qkf__evdec d = {name, out, o->backwards, o->width, o->height, -1, 0, 0, 0};
    int auto_nmnist = f == QKF_EVF_NMNIST && !d.w, auto_npy = f == QKF_EVF_NPY && !d.w;
    if (auto_nmnist)
        d.w = 304, d.h = 240; /* the ATIS array; narrowed to N-MNIST's 34x34 below */
    else if (auto_npy)
        d.w = d.h = 65536;
    else if (f == QKF_EVF_AEDAT3 && !d.w)
        d.w = d.h = 128; /* DVS128 */
    int rc;
    switch (f) {
    case QKF_EVF_NMNIST:
        rc = qkf__decode_nmnist(buf, len, &d);
        break;
    case QKF_EVF_AEDAT2:
        rc = qkf__decode_aedat2(buf, len, o->orient, o->layout, &d);
        break;
    case QKF_EVF_AEDAT4:
        rc = qkf__decode_aedat4(buf, len, &d);
        break;
    case QKF_EVF_EVT2:
        rc = qkf__decode_evt2(buf, len, &d);
        break;
    case QKF_EVF_EVT3:
        rc = qkf__decode_evt3(buf, len, &d);
        break;
    case QKF_EVF_DAT:
        rc = qkf__decode_dat(buf, len, &d);
        break;
    case QKF_EVF_AEDAT3:
        rc = qkf__decode_aedat3(buf, len, &d);
        break;
    case QKF_EVF_QEV:
        rc = qkf__decode_qev(buf, len, &d);
        break;
    default:
        rc = qkf__decode_npy(buf, len, &d);
        break;
    }
    if (rc) {
        qkf_events_free(out);
        return -1;
    }
    out->format = f;
    out->width = (int)d.w;
    out->height = (int)d.h;
    if (auto_nmnist && d.maxx < 34 && d.maxy < 34)
        out->width = out->height = 34;
    if (auto_npy || d.size_from_events) {
        out->width = out->n ? (int)d.maxx + 1 : 1;
        out->height = out->n ? (int)d.maxy + 1 : 1;
    }
    return 0;
}

int qkf_events_load(const char *path, const qkf_events_opts *o, qkf_events *out)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return qkf_set_error("%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size, got = 0;
    uint8_t *buf = qkf_malloc(len ? len : 1);
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int err = r < 0 ? errno : EIO;
            close(fd);
            qkf_free(buf);
            return qkf_set_error("%s: read error at byte %zu (%s)", path, got, strerror(err));
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = qkf_events_decode(buf, len, path, o, out);
    qkf_free(buf);
    return rc;
}

int qkf_events_encode(const qkf_events *e, qkf_evformat f, int orient, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    switch (f) {
    case QKF_EVF_NMNIST:
        return qkf__encode_nmnist(e, buf, len);
    case QKF_EVF_AEDAT2:
        return qkf__encode_aedat2(e, orient, buf, len);
    case QKF_EVF_AEDAT3:
        return qkf__encode_aedat3(e, buf, len);
    case QKF_EVF_QEV:
        return qkf__encode_qev(e, buf, len);
    case QKF_EVF_NPY:
        return qkf__encode_npy(e, buf, len);
    case QKF_EVF_AEDAT4:
        return qkf_events_encode_aedat4(e, QKF_AEDAT4_LZ4, buf, len);
    case QKF_EVF_EVT2:
        return qkf__encode_evt2(e, buf, len);
    case QKF_EVF_EVT3:
        return qkf__encode_evt3(e, buf, len);
    case QKF_EVF_DAT:
        return qkf__encode_dat(e, buf, len);
    default:
        return qkf_set_error("no event format to write (name it, or use an extension: .bin, "
                             ".aedat, .aedat2, .aedat4, .raw, .qev, .npy)");
    }
}

int qkf_events_save(const char *path, const qkf_events *e, qkf_evformat f)
{
    if (f == QKF_EVF_AUTO)
        f = qkf_evformat_from_path(path);
    uint8_t *buf;
    size_t len;
    if (qkf_events_encode(e, f, QKF_EV_ORIENT_JAER, &buf, &len)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        return qkf_set_error("%s: %s", path, msg);
    }
    size_t cap = strlen(path) + 32;
    char *tmp = qkf_malloc(cap);
    snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        rc = qkf_set_error("%s: cannot create %s (%s)", path, tmp, strerror(errno));
        goto done;
    }
    for (size_t put = 0; put < len;) {
        ssize_t w = write(fd, buf + put, len - put);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = qkf_set_error("%s: write error (%s)", path, strerror(w < 0 ? errno : EIO));
            break;
        }
        put += (size_t)w;
    }
    if (!rc && fsync(fd) != 0)
        rc = qkf_set_error("%s: cannot sync %s (%s)", path, tmp, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = qkf_set_error("%s: cannot close %s (%s)", path, tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = qkf_set_error("%s: cannot rename %s into place (%s)", path, tmp, strerror(errno));
    if (rc)
        unlink(tmp);
done:
    qkf_free(tmp);
    qkf_free(buf);
    return rc;
}

/* First index in [lo, hi) whose timestamp is >= t. */
static int64_t lower_bound(const qkf_event *ev, int64_t lo, int64_t hi, int64_t t)
{
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ev[mid].t < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void qkf_events_range(const qkf_events *e, int64_t t0, int64_t t1, int64_t *i0, int64_t *i1)
{
    *i0 = lower_bound(e->ev, 0, e->n, t0);
    *i1 = t1 > t0 ? lower_bound(e->ev, *i0, e->n, t1) : *i0;
}

/* ---- frames -------------------------------------------------------------------------------- */

int qkf_split_parse(const char *s, qkf_split *split)
{
    if (!strcmp(s, "number"))
        *split = QKF_SPLIT_NUMBER;
    else if (!strcmp(s, "time"))
        *split = QKF_SPLIT_TIME;
    else
        return qkf_set_error("'%s' is not a split rule (number or time)", s);
    return 0;
}

void qkf_events_accumulate(const qkf_event *ev, int64_t n, int w, int h, int oh, int ow,
                           float *frame)
{
    float *off = frame, *on = frame + (size_t)oh * (size_t)ow;
    if (w == ow && h == oh) {
        for (int64_t i = 0; i < n; i++)
            (ev[i].p ? on : off)[(size_t)ev[i].y * (size_t)ow + ev[i].x] += 1.0f;
        return;
    }
    /* one rational scale num/den for both axes, the smaller of ow/w and oh/h, centred */
    int64_t num = ow, den = w;
    if ((int64_t)ow * h > (int64_t)oh * w)
        num = oh, den = h;
    int64_t ox = (ow - (int64_t)w * num / den) / 2, oy = (oh - (int64_t)h * num / den) / 2;
    for (int64_t i = 0; i < n; i++) {
        int64_t x = ev[i].x * num / den + ox, y = ev[i].y * num / den + oy;
        (ev[i].p ? on : off)[y * ow + x] += 1.0f;
    }
}

int qkf_events_frames(const qkf_events *e, int64_t i0, int64_t i1, int T, qkf_split split, int oh,
                      int ow, float *out)
{
    if (T < 1 || oh < 1 || ow < 1 || i0 < 0 || i1 < i0 || i1 > e->n)
        return qkf_set_error("frames: bad arguments (T %d, %dx%d, events %lld..%lld of %lld)", T,
                             oh, ow, (long long)i0, (long long)i1, (long long)e->n);
    if (e->width < 1 || e->height < 1)
        return qkf_set_error("frames: the events have no sensor size");
    for (int64_t i = i0; i < i1; i++) /* the readers guarantee it; a hand-made set may not */
        if (e->ev[i].x >= e->width || e->ev[i].y >= e->height || e->ev[i].p > 1 ||
            (i > i0 && e->ev[i].t < e->ev[i - 1].t))
            return qkf_set_error("frames: event %lld (x %d, y %d, p %d) is outside the %dx%d "
                                 "sensor or out of time order",
                                 (long long)i, e->ev[i].x, e->ev[i].y, e->ev[i].p, e->width,
                                 e->height);
    size_t plane = 2 * (size_t)oh * (size_t)ow;
    memset(out, 0, (size_t)T * plane * sizeof(float));
    int64_t n = i1 - i0;
    const qkf_event *ev = e->ev + i0;
    if (n == 0)
        return 0;
    for (int t = 0; t < T; t++) {
        int64_t jl, jr;
        if (split == QKF_SPLIT_NUMBER) {
            int64_t di = n / T;
            jl = (int64_t)t * di;
            jr = t == T - 1 ? n : jl + di;
        } else {
            int64_t t0 = ev[0].t, dt = (ev[n - 1].t - t0) / T;
            jl = lower_bound(ev, 0, n, t0 + (int64_t)t * dt);
            jr = t == T - 1 ? n : lower_bound(ev, jl, n, t0 + (int64_t)(t + 1) * dt);
        }
        qkf_events_accumulate(ev + jl, jr - jl, e->width, e->height, oh, ow, out + t * plane);
    }
    return 0;
}

/* ---- timed stream -------------------------------------------------------------------------- */

void qkf_event_stream_init(qkf_event_stream *s, const qkf_event *ev, int64_t n, int64_t t_start,
                           int64_t window_us)
{
    s->ev = ev;
    s->n = n;
    s->i = 0;
    s->t = t_start;
    s->window = window_us > 0 ? window_us : 1;
}

int qkf_event_stream_next(qkf_event_stream *s, int64_t *first, int64_t *count, int64_t *t_window)
{
    if (s->i >= s->n)
        return 0;
    int64_t end = s->t + s->window, j = s->i;
    while (j < s->n && s->ev[j].t < end)
        j++;
    /* events before t_start are delivered with the first window */
    *first = s->i;
    *count = j - s->i;
    *t_window = s->t;
    s->i = j;
    s->t = end;
    return 1;
}

/* ---- throughput ---------------------------------------------------------------------------- */

static int bench(qkf_evformat f, int c, int64_t n, int repeat, double *events_per_s)
{
    qkf_events e;
    qkf_events_init(&e, 128, 128, n);
    qkf_rng r;
    qkf_rng_seed(&r, 1234);
    int64_t t = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = qkf_rng_u64(&r);
        t += (int64_t)(u >> 62); /* 0..3 us apart: ~0.7 M events/s, a busy DVS128 */
        qkf_events_push(&e, t, (int)(u & 127), (int)((u >> 7) & 127), (int)((u >> 14) & 1));
    }
    uint8_t *buf;
    size_t len;
    int rc = f == QKF_EVF_AEDAT4 ? qkf_events_encode_aedat4(&e, (qkf_aedat4_compression)c, &buf,
                                                            &len)
                                 : qkf_events_encode(&e, f, QKF_EV_ORIENT_JAER, &buf, &len);
    qkf_events_free(&e);
    if (rc)
        return -1;
    double best = 1e30;
    qkf_events_opts o;
    memset(&o, 0, sizeof o);
    o.format = f;
    o.width = o.height = 128;
    for (int k = 0; k < repeat && !rc; k++) {
        qkf_events d;
        double t0 = qkf_now();
        rc = qkf_events_decode(buf, len, "<bench>", &o, &d);
        double dt = qkf_now() - t0;
        if (!rc && d.n != n)
            rc = qkf_set_error("bench: decoded %lld of %lld events", (long long)d.n, (long long)n);
        qkf_events_free(&d);
        best = dt < best ? dt : best;
    }
    qkf_free(buf);
    if (rc)
        return -1;
    *events_per_s = (double)n / best;
    return 0;
}

int qkf_events_bench(qkf_evformat f, int64_t n, int repeat, double *events_per_s)
{
    return bench(f, QKF_AEDAT4_LZ4, n, repeat, events_per_s);
}

int qkf_events_bench_aedat4(qkf_aedat4_compression c, int64_t n, int repeat, double *events_per_s)
{
    return bench(QKF_EVF_AEDAT4, (int)c, n, repeat, events_per_s);
}
