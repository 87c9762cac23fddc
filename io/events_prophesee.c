/* Prophesee files: EVT 2.0 and EVT 3.0 .raw, and .dat; readers and writers.
 *
 * As OpenEB documents them (the EVT 2.0 / EVT 3.0 format pages, its standalone decoders and
 * hal/.../evt2_event_types.h, evt3_event_types.h; metavision_core's dat_tools.py):
 *
 * Header: ASCII lines starting with '%', up to a "% end" line (newer files) or the first byte
 * that is not '%'. "% evt 2.0" / "% evt 3.0", "% format EVT3;height=720;width=1280",
 * "% geometry 1280x720", "% Width 304" / "% Height 240", "% Version 2" (.dat),
 * "% plugin_name ...", "% camera_integrator_name ...".
 *
 * EVT 2.0: little-endian 32-bit words, type in bits 31..28:
 *   0x0 CD_OFF, 0x1 CD_ON  bits 27..22 time low (6 bits), 21..11 x, 10..0 y
 *   0x8 EVT_TIME_HIGH      bits 27..0: time bits 33..6
 *   0xA EXT_TRIGGER, 0xD IMU, 0xE OTHER, 0xF CONTINUED: skipped and counted
 * EVT 3.0: little-endian 16-bit words, type in bits 15..12, a state machine:
 *   0x0 EVT_ADDR_Y   y = bits 10..0
 *   0x2 EVT_ADDR_X   one event at x = bits 10..0, polarity bit 11, the current y and time
 *   0x3 VECT_BASE_X  base x = bits 10..0, polarity bit 11
 *   0x4 VECT_12      events at base + i for each bit i of bits 11..0; base += 12
 *   0x5 VECT_8       the same for bits 7..0; base += 8
 *   0x6 EVT_TIME_LOW time bits 11..0;   0x8 EVT_TIME_HIGH time bits 23..12
 *   0xA EXT_TRIGGER, 0xD IMU, 0xE OTHERS, 0x7 CONTINUED_4, 0xF CONTINUED_12: skipped, counted
 * Both: words before the first EVT_TIME_HIGH are skipped (counted); a time high that falls by
 * nearly its whole range starts a new loop of the counter (2^34 us, 2^24 us), as OpenEB does.
 * Word types these formats do not define are refused: a wrong format fails loudly.
 *
 * .dat: the '%' header, then one byte event type and one byte event size, then events of that
 * size. Types 0 (Event2D) and 12 (EventCD): uint32 t (us), uint32 data: x bits 13..0, y bits
 * 27..14, polarity bit 28. Type 14 (triggers) is counted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events_internal.h"

typedef struct {
    qkf_evformat fmt; /* named by the header; AUTO if none */
    const char *fmt_name;
    int w, h;
    size_t data; /* the first byte after the header */
} ph_header;

/* The sensor of an OpenEB HAL plugin's device (hal_psee_plugins/src/devices: gen31 devices use
 * VGAGeometry, gen41, imx636 and imx646 HDGeometry, genx320 a 320x320 array), for files whose
 * header has no geometry line. Checked in order: "gen41" before "gen3". */
static const struct {
    const char *key;
    int w, h;
} plugin_sensors[] = {{"gen41", 1280, 720}, {"imx636", 1280, 720}, {"imx646", 1280, 720},
                      {"genx320", 320, 320}, {"gen3", 640, 480}};

static int starts(const char *l, size_t n, const char *s)
{
    size_t k = strlen(s);
    return n >= k && !memcmp(l, s, k);
}

/* Reads the '%' header lines. Never fails on content it does not know; fails on an unterminated
 * line. */
static int read_header(const uint8_t *buf, size_t len, const char *name, ph_header *h,
                       char *camera, size_t ccap)
{
    memset(h, 0, sizeof *h);
    h->fmt = QKF_EVF_AUTO;
    int have_plugin = 0;
    size_t pos = 0;
    while (pos < len && buf[pos] == '%') {
        const uint8_t *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            if (name)
                return qkf_set_error("%s: byte %zu: unterminated header line", name, pos);
            return -1;
        }
        size_t end = (size_t)(nl - buf);
        const char *l = (const char *)buf + pos + 1;
        size_t n = end - pos - 1;
        while (n && (l[n - 1] == '\r' || l[n - 1] == ' '))
            n--;
        while (n && *l == ' ')
            l++, n--;
        pos = end + 1;
        if (n == 3 && !memcmp(l, "end", 3))
            break;
        if (starts(l, n, "evt ")) {
            if (starts(l + 4, n - 4, "2.0") && n == 7)
                h->fmt = QKF_EVF_EVT2, h->fmt_name = "EVT 2.0";
            else if (starts(l + 4, n - 4, "3.0") && n == 7)
                h->fmt = QKF_EVF_EVT3, h->fmt_name = "EVT 3.0";
            else
                h->fmt = QKF_EVF_COUNT, h->fmt_name = "another EVT version";
        } else if (starts(l, n, "format ")) {
            size_t k = 7, e = k;
            while (e < n && l[e] != ';')
                e++;
            if (e - k == 4 && !memcmp(l + k, "EVT2", 4))
                h->fmt = QKF_EVF_EVT2, h->fmt_name = "EVT 2.0";
            else if (e - k == 4 && !memcmp(l + k, "EVT3", 4))
                h->fmt = QKF_EVF_EVT3, h->fmt_name = "EVT 3.0";
            else
                h->fmt = QKF_EVF_COUNT, h->fmt_name = "another format";
            while (e < n) { /* ;height=720;width=1280 */
                size_t a = ++e;
                while (e < n && l[e] != ';')
                    e++;
                long x = 0;
                if (e - a > 6 && !memcmp(l + a, "width=", 6) &&
                    (x = strtol(l + a + 6, NULL, 10)) > 0 && x <= 65536)
                    h->w = (int)x;
                else if (e - a > 7 && !memcmp(l + a, "height=", 7) &&
                         (x = strtol(l + a + 7, NULL, 10)) > 0 && x <= 65536)
                    h->h = (int)x;
            }
        } else if (starts(l, n, "geometry ")) {
            char *e;
            long w = strtol(l + 9, &e, 10);
            if (e < l + n && *e == 'x') {
                long hh = strtol(e + 1, NULL, 10);
                if (w > 0 && hh > 0 && w <= 65536 && hh <= 65536)
                    h->w = (int)w, h->h = (int)hh;
            }
        } else if (starts(l, n, "Width ") || starts(l, n, "Height ")) {
            long x = strtol(l + (l[0] == 'W' ? 6 : 7), NULL, 10);
            if (x > 0 && x <= 65536)
                *(l[0] == 'W' ? &h->w : &h->h) = (int)x;
        } else if (starts(l, n, "Version ") || starts(l, n, "Data file containing")) {
            if (h->fmt == QKF_EVF_AUTO)
                h->fmt = QKF_EVF_DAT, h->fmt_name = ".dat";
        } else if (camera && (starts(l, n, "plugin_name ") ||
                              (!have_plugin && (starts(l, n, "camera_integrator_name ") ||
                                                starts(l, n, "integrator_name "))))) {
            const char *s = memchr(l, ' ', n);
            size_t k = (size_t)(s - l) + 1, c = 0;
            for (; k < n && c + 1 < ccap; k++)
                camera[c++] = (l[k] >= 0x20 && l[k] < 0x7F) ? l[k] : '?';
            camera[c] = 0;
            have_plugin |= starts(l, n, "plugin_name ");
        }
    }
    h->data = pos;
    if (h->w <= 0 || h->h <= 0)
        h->w = h->h = 0;
    if (!h->w && camera && have_plugin) /* no geometry line: the sensor of the plugin's device */
        for (size_t i = 0; i < sizeof plugin_sensors / sizeof plugin_sensors[0]; i++)
            if (strstr(camera, plugin_sensors[i].key)) {
                h->w = plugin_sensors[i].w, h->h = plugin_sensors[i].h;
                break;
            }
    return 0;
}

qkf_evformat qkf__sniff_prophesee(const uint8_t *buf, size_t len)
{
    ph_header h;
    if (read_header(buf, len, NULL, &h, NULL, 0))
        return QKF_EVF_AUTO;
    return h.fmt == QKF_EVF_COUNT ? QKF_EVF_AUTO : h.fmt;
}

/* Reads the header of a file decoded as `want`; sets the sensor. */
static int header_for(const uint8_t *buf, size_t len, qkf__evdec *d, qkf_evformat want,
                      const char *want_name, ph_header *h)
{
    if (read_header(buf, len, d->name, h, d->out->camera, sizeof d->out->camera))
        return -1;
    if (h->fmt != QKF_EVF_AUTO && h->fmt != want)
        return qkf_set_error("%s: byte 0: the header names %s, not %s (--format names the "
                             "format)",
                             d->name, h->fmt_name, want_name);
    if (!d->w) {
        if (h->w)
            d->w = h->w, d->h = h->h;
        else
            d->w = d->h = 65536, d->size_from_events = 1;
    }
    return 0;
}

/* A time-high value that falls by nearly the whole range starts a new loop (OpenEB). */
static inline int64_t time_base(int64_t cur, int64_t high, int64_t *loops, int shift, int bits)
{
    int64_t max_base = (((int64_t)1 << bits) - 1) << shift, loop = max_base + ((int64_t)1 << shift);
    int64_t nb = (high << shift) + *loops * loop;
    if (cur > nb && cur - nb >= max_base - ((int64_t)10 << shift)) {
        nb += loop;
        ++*loops;
    }
    return nb;
}

/* ---- EVT 2.0 -------------------------------------------------------------------------------- */

int qkf__decode_evt2(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    ph_header h;
    if (header_for(buf, len, d, QKF_EVF_EVT2, "EVT 2.0", &h))
        return -1;
    size_t n = (len - h.data) / 4;
    qkf__ev_reserve(d, (int64_t)n);
    int64_t base = -1, loops = 0;
    for (size_t i = 0; i < n; i++) {
        size_t off = h.data + 4 * i;
        uint32_t w = qkf__le32(buf + off);
        switch (w >> 28) {
        case 0x0:
        case 0x1:
            if (base < 0) {
                d->out->special++;
                break;
            }
            if (qkf__ev_emit(d, base + ((w >> 22) & 63), (w >> 11) & 0x7FF, w & 0x7FF,
                             (int)(w >> 28), off, (int64_t)i))
                return -1;
            break;
        case 0x8:
            base = time_base(base < 0 ? 0 : base, w & 0x0FFFFFFF, &loops, 6, 28);
            break;
        case 0xA:
            d->out->external++;
            break;
        case 0xD:
            d->out->imu++;
            break;
        case 0xE:
        case 0xF:
            d->out->special++;
            break;
        default:
            return qkf_set_error("%s: byte %zu (word %zu): word 0x%08x has type 0x%X, which EVT "
                                 "2.0 does not define (not an EVT 2.0 file? --format)",
                                 d->name, off, i, w, w >> 28);
        }
    }
    d->out->records = (int64_t)n;
    if ((len - h.data) % 4)
        return qkf_set_error("%s: byte %zu: truncated word (%zu trailing bytes; EVT 2.0 words are "
                             "4 bytes)",
                             d->name, h.data + 4 * n, (len - h.data) % 4);
    return 0;
}

/* ---- EVT 3.0 -------------------------------------------------------------------------------- */

int qkf__decode_evt3(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    ph_header h;
    if (header_for(buf, len, d, QKF_EVF_EVT3, "EVT 3.0", &h))
        return -1;
    size_t n = (len - h.data) / 2;
    qkf__ev_reserve(d, (int64_t)n + 12);
    int64_t base = -1, t = 0, loops = 0, y = -1, bx = -1, rec = 0;
    int bp = 0;
    for (size_t i = 0; i < n; i++) {
        size_t off = h.data + 2 * i;
        unsigned w = qkf__le16(buf + off), type = w >> 12;
        if (base < 0 && type != 0x8) { /* before the first time high */
            d->out->special++, rec++;
            continue;
        }
        switch (type) {
        case 0x0:
            y = w & 0x7FF;
            break;
        case 0x2:
            if (y < 0)
                return qkf_set_error("%s: byte %zu (word %zu): an event before any EVT_ADDR_Y word",
                                     d->name, off, i);
            rec++;
            qkf__ev_ensure(d, 1);
            if (qkf__ev_emit(d, t, w & 0x7FF, y, (int)(w >> 11) & 1, off, rec - 1))
                return -1;
            break;
        case 0x3:
            bx = w & 0x7FF;
            bp = (int)(w >> 11) & 1;
            break;
        case 0x4:
        case 0x5: {
            if (y < 0 || bx < 0)
                return qkf_set_error("%s: byte %zu (word %zu): a vector before any %s word", d->name,
                                     off, i, y < 0 ? "EVT_ADDR_Y" : "VECT_BASE_X");
            unsigned mask = type == 0x4 ? (w & 0xFFF) : (w & 0xFF);
            qkf__ev_ensure(d, 12);
            for (int64_t x = bx; mask; mask >>= 1, x++)
                if (mask & 1) {
                    rec++;
                    if (qkf__ev_emit(d, t, x, y, bp, off, rec - 1))
                        return -1;
                }
            bx += type == 0x4 ? 12 : 8;
            break;
        }
        case 0x6:
            t = base + (w & 0xFFF);
            break;
        case 0x8:
            base = time_base(base < 0 ? 0 : base, w & 0xFFF, &loops, 12, 12);
            t = base;
            break;
        case 0xA:
            d->out->external++, rec++;
            break;
        case 0xD:
            d->out->imu++, rec++;
            break;
        case 0x7:
        case 0xE:
        case 0xF:
            d->out->special++, rec++;
            break;
        default:
            return qkf_set_error("%s: byte %zu (word %zu): word 0x%04x has type 0x%X, which EVT "
                                 "3.0 does not define (not an EVT 3.0 file? --format)",
                                 d->name, off, i, w, type);
        }
    }
    d->out->records = rec;
    if ((len - h.data) % 2)
        return qkf_set_error("%s: byte %zu: truncated word (1 trailing byte; EVT 3.0 words are 2 "
                             "bytes)",
                             d->name, h.data + 2 * n);
    return 0;
}

/* ---- .dat ------------------------------------------------------------------------------------ */

int qkf__decode_dat(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    ph_header h;
    if (header_for(buf, len, d, QKF_EVF_DAT, ".dat", &h))
        return -1;
    if (len - h.data < 2)
        return qkf_set_error("%s: byte %zu: truncated: no event type and size bytes", d->name,
                             h.data);
    int type = buf[h.data], size = buf[h.data + 1];
    if ((type != 0 && type != 12 && type != 14) || size != 8)
        return qkf_set_error("%s: byte %zu: event type %d of %d bytes (this reader takes CD "
                             "events, types 0 and 12, and triggers, type 14, of 8 bytes)",
                             d->name, h.data, type, size);
    size_t data = h.data + 2, n = (len - data) / 8;
    qkf__ev_reserve(d, type == 14 ? 0 : (int64_t)n);
    if (type == 14) {
        d->out->external += (int64_t)n;
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t off = data + 8 * i;
            uint32_t t = qkf__le32(buf + off), v = qkf__le32(buf + off + 4);
            if (v >> 29)
                return qkf_set_error("%s: byte %zu (event %zu): data word 0x%08x sets bits 29..31, "
                                     "which CD events do not use (not a CD .dat file?)",
                                     d->name, off, i, v);
            if (qkf__ev_emit(d, t, v & 0x3FFF, (v >> 14) & 0x3FFF, (int)(v >> 28) & 1, off,
                             (int64_t)i))
                return -1;
        }
    }
    d->out->records = (int64_t)n;
    if ((len - data) % 8)
        return qkf_set_error("%s: byte %zu: truncated event (%zu trailing bytes; .dat events are "
                             "8 bytes)",
                             d->name, data + 8 * n, (len - data) % 8);
    return 0;
}

/* ---- writers ------------------------------------------------------------------------------- */

static int check_events(const qkf_events *e, int maxc, int64_t maxt, const char *what)
{
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        if (v->x >= maxc || v->y >= maxc || v->p > 1 || v->t < 0 || v->t >= maxt ||
            (i && v->t < e->ev[i - 1].t))
            return qkf_set_error("event %lld: x = %d, y = %d, p = %d, t = %lld cannot be stored "
                                 "as %s (timestamps must not decrease)",
                                 (long long)i, v->x, v->y, v->p, (long long)v->t, what);
    }
    if (e->width < 1 || e->height < 1 || e->width > maxc || e->height > maxc)
        return qkf_set_error("a %dx%d sensor cannot be stored as %s", e->width, e->height, what);
    return 0;
}

static size_t raw_header(char *b, size_t cap, int v, const qkf_events *e)
{
    return (size_t)snprintf(b, cap,
                            "%% evt %d.0\n%% format EVT%d;height=%d;width=%d\n%% geometry %dx%d\n"
                            "%% integrator_name qkf\n%% end\n",
                            v, v, e->height, e->width, e->width, e->height);
}

int qkf__encode_evt2(const qkf_events *e, uint8_t **buf, size_t *len)
{
    if (check_events(e, 2048, (int64_t)1 << 34, "EVT 2.0"))
        return -1;
    char hdr[256];
    size_t hl = raw_header(hdr, sizeof hdr, 2, e);
    uint8_t *b = qkf_malloc(hl + 8 * (size_t)e->n + 4), *w = b + hl;
    memcpy(b, hdr, hl);
    int64_t high = -1;
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        if (v->t >> 6 != high) {
            high = v->t >> 6;
            qkf__put_le32(w, 0x80000000u | (uint32_t)high);
            w += 4;
        }
        qkf__put_le32(w, (uint32_t)v->p << 28 | (uint32_t)(v->t & 63) << 22 | (uint32_t)v->x << 11 |
                             v->y);
        w += 4;
    }
    *buf = b;
    *len = (size_t)(w - b);
    return 0;
}

static uint8_t *put16(uint8_t *w, unsigned v)
{
    qkf__put_le16(w, (uint16_t)v);
    return w + 2;
}

int qkf__encode_evt3(const qkf_events *e, uint8_t **buf, size_t *len)
{
    if (check_events(e, 2048, INT64_MAX, "EVT 3.0"))
        return -1;
    char hdr[256];
    size_t hl = raw_header(hdr, sizeof hdr, 3, e);
    /* at most: per event time high, time low, y, x; loop crossings: 2 words per 16.7 s */
    int64_t loops = e->n ? e->ev[e->n - 1].t >> 24 : 0;
    uint8_t *b = qkf_malloc(hl + 2 + 8 * (size_t)e->n + 4 * (size_t)loops), *w = b + hl;
    memcpy(b, hdr, hl);
    w = put16(w, 0x8000); /* time high 0 of loop 0 */
    int64_t th = 0, tl = -1, y = -1;
    for (int64_t i = 0; i < e->n;) {
        const qkf_event *v = &e->ev[i];
        int64_t h = v->t >> 12;
        while ((th >> 12) < (h >> 12)) { /* cross into the next loop of the 24-bit counter */
            if ((th & 0xFFF) != 0xFFF)
                w = put16(w, 0x8FFF);
            w = put16(w, 0x8000);
            th = ((th >> 12) + 1) << 12;
        }
        if (h != th) {
            w = put16(w, 0x8000 | (unsigned)(h & 0xFFF));
            th = h, tl = -1;
        }
        if ((v->t & 0xFFF) != tl) {
            tl = v->t & 0xFFF;
            w = put16(w, 0x6000 | (unsigned)tl);
        }
        if (v->y != y) {
            y = v->y;
            w = put16(w, (unsigned)y);
        }
        /* a run of the same time, row and polarity with x rising within 12 columns: a vector */
        int64_t j = i + 1;
        while (j < e->n && e->ev[j].t == v->t && e->ev[j].y == v->y && e->ev[j].p == v->p &&
               e->ev[j].x > e->ev[j - 1].x && e->ev[j].x - v->x < 12)
            j++;
        if (j - i >= 2) {
            unsigned mask = 0;
            for (int64_t k = i; k < j; k++)
                mask |= 1u << (e->ev[k].x - v->x);
            int span8 = e->ev[j - 1].x - v->x < 8;
            w = put16(w, 0x3000 | (unsigned)v->p << 11 | v->x);
            w = put16(w, (span8 ? 0x5000u : 0x4000u) | mask);
        } else {
            w = put16(w, 0x2000 | (unsigned)v->p << 11 | v->x);
        }
        i = j;
    }
    *buf = b;
    *len = (size_t)(w - b);
    return 0;
}

int qkf__encode_dat(const qkf_events *e, uint8_t **buf, size_t *len)
{
    if (check_events(e, 16384, (int64_t)1 << 32, ".dat CD events"))
        return -1;
    char hdr[256];
    size_t hl = (size_t)snprintf(hdr, sizeof hdr,
                                 "%% Data file containing EventCD events.\n%% Version 2\n"
                                 "%% Height %d\n%% Width %d\n",
                                 e->height, e->width);
    size_t size = hl + 2 + 8 * (size_t)e->n;
    uint8_t *b = qkf_malloc(size), *w = b + hl + 2;
    memcpy(b, hdr, hl);
    b[hl] = 12, b[hl + 1] = 8;
    for (int64_t i = 0; i < e->n; i++, w += 8) {
        const qkf_event *v = &e->ev[i];
        qkf__put_le32(w, (uint32_t)v->t);
        qkf__put_le32(w + 4, (uint32_t)v->x | (uint32_t)v->y << 14 | (uint32_t)v->p << 28);
    }
    *buf = b;
    *len = size;
    return 0;
}
