/* AEDAT 2.0 (jAER) and AEDAT 3.1 (cAER/DV, polarity packets), and DVS128 Gesture label files.
 *
 * AEDAT 2.0: ASCII header lines starting with '#' (the first "#!AER-DAT2.0"), then 8-byte
 * records: big-endian uint32 address, big-endian uint32 timestamp (us). DVS128 address: bit 0
 * raw polarity (0 = ON), bits 1..7 raw x, bits 8..14 raw y, bit 15 external sync and bit 31
 * special events (skipped). jAER's extractor flips x and the polarity; SpikingJelly's
 * CIFAR10-DVS loader also transposes (QKF_EV_ORIENT_CIFAR10DVS).
 *
 * AEDAT 3.1: header lines from "#!AER-DAT3.1" to "#!END-HEADER", then packets, little-endian:
 * a 28-byte header (int16 eventType, int16 eventSource, int32 eventSize, eventTSOffset,
 * eventTSOverflow, eventCapacity, eventNumber, eventValid) and eventCapacity * eventSize bytes of
 * events, of which the first eventNumber are read. Polarity events (type 1, 8 bytes): uint32
 * data (bit 0 valid, bit 1 polarity, bits 2..16 y, bits 17..31 x), int32 timestamp; the full
 * time is eventTSOverflow << 31 | timestamp. Other packet types are skipped and counted.
 *
 * DVS128 Gesture: "<stem>.aedat" with "<stem>_labels.csv": a header line, then
 * "class,startTime_usec,endTime_usec" rows, classes 1..11; a sample is the events with
 * start <= t < end (as SpikingJelly slices them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events_internal.h"

#define AEDAT3_HEADER 28
#define POLARITY_EVENT 1

/* Skips the '#' header lines; *data receives the offset of the first binary byte. For AEDAT 3.1
 * the header must end with a "#!END-HEADER" line. */
static int skip_header(const uint8_t *buf, size_t len, const char *name, int version, size_t *data)
{
    const char *magic = version == 2 ? "#!AER-DAT2." : "#!AER-DAT3.";
    size_t ml = strlen(magic);
    if (len < ml || memcmp(buf, magic, ml) != 0) {
        char got[16];
        size_t k = 0;
        for (; k < len && k < 12 && buf[k] >= 0x20 && buf[k] < 0x7F; k++)
            got[k] = (char)buf[k];
        got[k] = 0;
        return qkf_set_error("%s: byte 0: not an AEDAT %d file (the first line is '%s', expected "
                             "'%s0' or '%s1')",
                             name, version, got, magic, magic);
    }
    size_t pos = 0;
    while (pos < len && buf[pos] == '#') {
        const uint8_t *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            return qkf_set_error("%s: byte %zu: unterminated header line", name, pos);
        size_t end = (size_t)(nl - buf) + 1;
        int last = version == 3 && end - pos >= 12 && memcmp(buf + pos, "#!END-HEADER", 12) == 0;
        pos = end;
        if (last) {
            *data = pos;
            return 0;
        }
    }
    if (version == 3)
        return qkf_set_error("%s: byte %zu: the header ends without a '#!END-HEADER' line", name,
                             pos);
    *data = pos;
    return 0;
}

/* ---- AEDAT 2.0 address layouts -------------------------------------------------------------
 *
 * From jAER's chip classes (their event extractors): DVS128.Extractor (DVS128, Tmpdiff128),
 * DavisBaseCamera.DavisEventExtractor with DavisChip's masks (DAVIS240A/B/C, DVS240, Davis128,
 * Davis208, Davis346*, Davis640, CDAVIS, SciDVS), Davis208PixelParade (polarity inverted),
 * DVXplorer.DVXExtractor, DVS640.Extractor and DVS1280x720SD.Extractor. */

typedef struct {
    const char *name;
    int xshift, xbits, yshift, ybits, pshift;
    int p_on;                /* the raw polarity bit of an ON event */
    int flip_x, flip_y;      /* x = W - 1 - raw x; y = H - 1 - raw y */
    uint32_t type_bit;       /* set: not a DVS event (special, APS or IMU) */
    int type_kind;           /* what type_bit marks: 0 special, 1 APS (or IMU), 2 IMU (or special) */
    uint32_t ext_bit;        /* external input / sync events */
    int ext_special;         /* counted as special (DVS128 sync) rather than external */
    int w, h;                /* the sensor when no chip names it (0: --sensor is needed) */
} layout_def;

#define DAVIS_IMU 0x80000C00u /* jAER's ADDRESS_TYPE_IMU: bit 31 and readout bits 10..11 */

static const layout_def layouts[QKF_EV_LAYOUT_COUNT] = {
    [QKF_EV_LAYOUT_DVS128] = {"dvs128", 1, 7, 8, 7, 0, 0, 1, 0, 0x80000000u, 0, 0x8000u, 1, 128,
                              128},
    [QKF_EV_LAYOUT_DAVIS] = {"davis", 12, 10, 22, 9, 11, 1, 1, 0, 0x80000000u, 1, 0x400u, 0, 0, 0},
    [QKF_EV_LAYOUT_DAVIS208] = {"davis208", 12, 10, 22, 9, 11, 0, 1, 0, 0x80000000u, 1, 0x400u, 0,
                                208, 192},
    [QKF_EV_LAYOUT_DVXPLORER] = {"dvxplorer", 12, 10, 22, 9, 11, 1, 0, 1, 0x80000000u, 2, 0x400u,
                                 0, 640, 480},
    [QKF_EV_LAYOUT_DVS640] = {"dvs640", 1, 10, 11, 10, 0, 1, 1, 0, 0, 0, 0, 0, 640, 480},
    [QKF_EV_LAYOUT_DVS1280] = {"dvs1280", 1, 11, 12, 10, 0, 1, 1, 0, 0, 0, 0, 0, 1280, 720},
};

/* jAER chip classes (the last part of the `# AEChip:` class name), their layout and sensor. */
static const struct {
    const char *chip;
    qkf_evlayout layout;
    int w, h;
} chips[] = {
    {"DVS128", QKF_EV_LAYOUT_DVS128, 128, 128},
    {"Tmpdiff128", QKF_EV_LAYOUT_DVS128, 128, 128},
    {"DAVIS240A", QKF_EV_LAYOUT_DAVIS, 240, 180},
    {"DAVIS240B", QKF_EV_LAYOUT_DAVIS, 240, 180},
    {"DAVIS240C", QKF_EV_LAYOUT_DAVIS, 240, 180},
    {"DVS240", QKF_EV_LAYOUT_DAVIS, 240, 180},
    {"Davis128", QKF_EV_LAYOUT_DAVIS, 128, 128},
    {"Davis128Color", QKF_EV_LAYOUT_DAVIS, 128, 128},
    {"Davis208PixelParade", QKF_EV_LAYOUT_DAVIS208, 208, 192},
    {"Davis208PixelParadeColor", QKF_EV_LAYOUT_DAVIS208, 208, 192},
    {"Davis346B", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis346BColor", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis346Zynq", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis346blue", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis346red", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis346redColor", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis346cBSI", QKF_EV_LAYOUT_DAVIS, 346, 260},
    {"Davis640", QKF_EV_LAYOUT_DAVIS, 640, 480},
    {"Davis640Color", QKF_EV_LAYOUT_DAVIS, 640, 480},
    {"CDAVIS", QKF_EV_LAYOUT_DAVIS, 640, 480},
    {"SciDVS", QKF_EV_LAYOUT_DAVIS, 112, 126},
    {"DVXplorer", QKF_EV_LAYOUT_DVXPLORER, 640, 480},
    {"DVS640", QKF_EV_LAYOUT_DVS640, 640, 480},
    {"DVS1280x720SD", QKF_EV_LAYOUT_DVS1280, 1280, 720},
};

const char *qkf_evlayout_name(qkf_evlayout l)
{
    if (l == QKF_EV_LAYOUT_AUTO)
        return "auto";
    return l > 0 && l < QKF_EV_LAYOUT_COUNT ? layouts[l].name : "?";
}

int qkf_evlayout_parse(const char *s, qkf_evlayout *l)
{
    for (int i = 0; i < QKF_EV_LAYOUT_COUNT; i++)
        if (!strcmp(s, qkf_evlayout_name((qkf_evlayout)i))) {
            *l = (qkf_evlayout)i;
            return 0;
        }
    return qkf_set_error("'%s' is not an AEDAT 2.0 address layout (auto, dvs128, davis, davis208, "
                         "dvxplorer, dvs640, dvs1280)",
                         s);
}

static int ieq(const char *a, const char *b, size_t n)
{
    if (strlen(b) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

/* Finds "# AEChip: <class>" among the header lines buf[0..data); copies the class name into
 * d->out->camera and sets *chip to its row of chips[] (-1: unknown), *at to the line's offset.
 * Returns 1 if there is such a line. */
static int find_chip(const uint8_t *buf, size_t data, qkf__evdec *d, int *chip, size_t *at)
{
    for (size_t pos = 0; pos < data;) {
        const uint8_t *nl = memchr(buf + pos, '\n', data - pos);
        size_t end = nl ? (size_t)(nl - buf) : data;
        const char *l = (const char *)buf + pos;
        size_t n = end - pos, k = 1;
        while (k < n && l[k] == ' ')
            k++;
        if (n - k >= 7 && !memcmp(l + k, "AEChip:", 7)) {
            k += 7;
            while (k < n && l[k] == ' ')
                k++;
            size_t e = n;
            while (e > k && (l[e - 1] == '\r' || l[e - 1] == ' '))
                e--;
            size_t c = 0;
            for (size_t i = k; i < e && c + 1 < sizeof d->out->camera; i++)
                d->out->camera[c++] = (l[i] >= 0x20 && l[i] < 0x7F) ? l[i] : '?';
            d->out->camera[c] = 0;
            size_t s = e; /* the simple class name: after the last '.' */
            while (s > k && l[s - 1] != '.')
                s--;
            *chip = -1;
            for (size_t i = 0; i < sizeof chips / sizeof chips[0]; i++)
                if (ieq(l + s, chips[i].chip, e - s))
                    *chip = (int)i;
            *at = pos;
            return 1;
        }
        pos = end + 1;
    }
    return 0;
}

int qkf__decode_aedat2(const uint8_t *buf, size_t len, int orient, qkf_evlayout layout,
                       qkf__evdec *d)
{
    size_t data;
    if (skip_header(buf, len, d->name, 2, &data))
        return -1;
    int chip = -1;
    size_t chip_at = 0;
    int named = find_chip(buf, data, d, &chip, &chip_at);
    int cw = 0, ch = 0;
    if (layout == QKF_EV_LAYOUT_AUTO) {
        if (named && chip < 0)
            return qkf_set_error("%s: byte %zu: AEChip '%s' has no known address layout "
                                 "(--layout dvs128|davis|davis208|dvxplorer|dvs640|dvs1280 and "
                                 "--sensor WxH read it as one)",
                                 d->name, chip_at, d->out->camera);
        layout = named ? chips[chip].layout : QKF_EV_LAYOUT_DVS128;
    }
    if (named && chip >= 0 && chips[chip].layout == layout)
        cw = chips[chip].w, ch = chips[chip].h;
    else
        cw = layouts[layout].w, ch = layouts[layout].h;
    if (!d->w) {
        if (!cw)
            return qkf_set_error("%s: byte 0: the %s layout needs the sensor size (--sensor WxH; "
                                 "no known chip in the header)",
                                 d->name, layouts[layout].name);
        d->w = cw, d->h = ch;
    }
    if (orient == QKF_EV_ORIENT_CIFAR10DVS && layout != QKF_EV_LAYOUT_DVS128)
        return qkf_set_error("%s: byte 0: the cifar10dvs orientation is for DVS128 addresses, "
                             "not the %s layout",
                             d->name, layouts[layout].name);
    d->out->layout = layout;
    const layout_def *L = &layouts[layout];
    uint32_t xm = (1u << L->xbits) - 1, ym = (1u << L->ybits) - 1;
    uint32_t used = xm << L->xshift | ym << L->yshift | 1u << L->pshift | L->type_bit | L->ext_bit;
    int64_t w1 = d->w - 1, h1 = d->h - 1;
    int cifar = orient == QKF_EV_ORIENT_CIFAR10DVS;
    size_t n = (len - data) / 8;
    qkf__ev_reserve(d, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        size_t off = data + 8 * i;
        uint32_t addr = qkf__be32(buf + off), ts = qkf__be32(buf + off + 4);
        if (addr & L->type_bit) {
            if (L->type_kind == 0)
                d->out->special++;
            else if ((addr & DAVIS_IMU) == DAVIS_IMU)
                d->out->imu++;
            else if (L->type_kind == 1)
                d->out->aps++;
            else
                d->out->special++;
            continue;
        }
        if (addr & L->ext_bit) {
            if (L->ext_special)
                d->out->special++;
            else
                d->out->external++;
            continue;
        }
        if (addr & ~used)
            return qkf_set_error("%s: byte %zu (event %lld): address 0x%08x sets bits the %s layout "
                                 "does not use (0x%08x; a file of another chip? --layout names "
                                 "one)",
                                 d->name, off, (long long)i, addr, L->name, addr & ~used);
        int64_t xr = (addr >> L->xshift) & xm, yr = (addr >> L->yshift) & ym;
        int p = (int)((addr >> L->pshift) & 1) == L->p_on;
        int64_t x, y;
        if (layout == QKF_EV_LAYOUT_DVS128) { /* 7-bit raw coordinates: emit checks x, y */
            x = cifar ? 127 - yr : 127 - xr;
            y = cifar ? 127 - xr : yr;
        } else {
            if (xr > w1 || yr > h1)
                return qkf_set_error("%s: byte %zu (event %lld): address 0x%08x: raw x %lld, y %lld "
                                     "is outside the %lldx%lld sensor of the %s layout (a file of "
                                     "another chip? --layout, --sensor)",
                                     d->name, off, (long long)i, addr, (long long)xr,
                                     (long long)yr, (long long)d->w, (long long)d->h, L->name);
            x = L->flip_x ? w1 - xr : xr;
            y = L->flip_y ? h1 - yr : yr;
        }
        if (qkf__ev_emit(d, ts, x, y, p, off, (int64_t)i))
            return -1;
    }
    d->out->records = (int64_t)n;
    if ((len - data) % 8)
        return qkf_set_error("%s: byte %zu: truncated event (%zu trailing bytes; AEDAT 2.0 events "
                             "are 8 bytes)",
                             d->name, data + 8 * n, (len - data) % 8);
    return 0;
}

int qkf__decode_aedat3(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    size_t pos;
    if (skip_header(buf, len, d->name, 3, &pos))
        return -1;
    int64_t rec = 0, packet = 0;
    qkf__ev_reserve(d, (int64_t)((len - pos) / 8)); /* every event is 8 bytes */
    while (pos < len) {
        if (len - pos < AEDAT3_HEADER)
            return qkf_set_error("%s: byte %zu (packet %lld): truncated packet header (%zu of %d "
                                 "bytes)",
                                 d->name, pos, (long long)packet, len - pos, AEDAT3_HEADER);
        const uint8_t *h = buf + pos;
        int type = (int16_t)qkf__le16(h);
        int32_t size = (int32_t)qkf__le32(h + 4), tsoff = (int32_t)qkf__le32(h + 8),
                ovf = (int32_t)qkf__le32(h + 12), cap = (int32_t)qkf__le32(h + 16),
                num = (int32_t)qkf__le32(h + 20), valid = (int32_t)qkf__le32(h + 24);
        if (type < 0 || size <= 0 || tsoff < 0 || tsoff > size - 4 || ovf < 0 || cap < 0 ||
            num < 0 || num > cap || valid < 0 || valid > num)
            return qkf_set_error("%s: byte %zu (packet %lld): bad packet header (type %d, "
                                 "eventSize %d, eventTSOffset %d, eventTSOverflow %d, "
                                 "eventCapacity %d, eventNumber %d, eventValid %d)",
                                 d->name, pos, (long long)packet, type, size, tsoff, ovf, cap, num,
                                 valid);
        uint64_t bytes = (uint64_t)cap * (uint64_t)size;
        if (bytes > len - pos - AEDAT3_HEADER)
            return qkf_set_error("%s: byte %zu (packet %lld): truncated packet: %llu bytes of "
                                 "events declared, %zu present",
                                 d->name, pos, (long long)packet, (unsigned long long)bytes,
                                 len - pos - AEDAT3_HEADER);
        size_t body = pos + AEDAT3_HEADER;
        if (type == POLARITY_EVENT) {
            if (size != 8 || tsoff != 4)
                return qkf_set_error("%s: byte %zu (packet %lld): polarity packet with %d-byte "
                                     "events, timestamp at byte %d (expected 8 and 4)",
                                     d->name, pos, (long long)packet, size, tsoff);
            int64_t hi = (int64_t)ovf << 31;
            for (int32_t k = 0; k < num; k++, rec++) {
                size_t off = body + 8 * (size_t)k;
                uint32_t v = qkf__le32(buf + off);
                int32_t ts = (int32_t)qkf__le32(buf + off + 4);
                if (!(v & 1)) {
                    d->out->invalid++;
                    continue;
                }
                if (ts < 0)
                    return qkf_set_error("%s: byte %zu (event %lld): negative timestamp %d",
                                         d->name, off, (long long)rec, ts);
                if (qkf__ev_emit(d, hi | ts, (v >> 17) & 0x7FFF, (v >> 2) & 0x7FFF, (v >> 1) & 1,
                                 off, rec))
                    return -1;
            }
        } else {
            d->out->unknown_packets++;
            rec += num;
        }
        pos = body + (size_t)bytes;
        packet++;
    }
    d->out->records = rec;
    return 0;
}

/* ---- encoders ------------------------------------------------------------------------------ */

static const char aedat2_header[] = "#!AER-DAT2.0\r\n"
                                    "# This is a raw AE data file created by qkf\r\n"
                                    "# Data format is int32 address, int32 timestamp (8 bytes "
                                    "total), repeated for each event\r\n"
                                    "# Timestamps tick is 1 us\r\n";

int qkf__encode_aedat2(const qkf_events *e, int orient, uint8_t **buf, size_t *len)
{
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        if (v->x > 127 || v->y > 127 || v->p > 1 || v->t < 0 || v->t > (int64_t)UINT32_MAX)
            return qkf_set_error("event %lld: x = %d, y = %d, p = %d, t = %lld cannot be stored "
                                 "as a DVS128 AEDAT 2.0 event",
                                 (long long)i, v->x, v->y, v->p, (long long)v->t);
    }
    size_t hl = sizeof aedat2_header - 1, size = hl + 8 * (size_t)e->n;
    uint8_t *b = qkf_malloc(size);
    memcpy(b, aedat2_header, hl);
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        uint32_t xr, yr;
        if (orient == QKF_EV_ORIENT_CIFAR10DVS)
            xr = 127u - v->y, yr = 127u - v->x;
        else
            xr = 127u - v->x, yr = v->y;
        uint32_t addr = yr << 8 | xr << 1 | (uint32_t)(1 - v->p);
        qkf__put_be32(b + hl + 8 * (size_t)i, addr);
        qkf__put_be32(b + hl + 8 * (size_t)i + 4, (uint32_t)v->t);
    }
    *buf = b;
    *len = size;
    return 0;
}

static const char aedat3_header[] = "#!AER-DAT3.1\r\n"
                                    "#Format: RAW\r\n"
                                    "#Source 1: DVS128\r\n"
                                    "#!END-HEADER\r\n";

#define AEDAT3_PACKET_EVENTS 4096 /* events per packet written */

int qkf__encode_aedat3(const qkf_events *e, uint8_t **buf, size_t *len)
{
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        if (v->x > 0x7FFF || v->y > 0x7FFF || v->p > 1 || v->t < 0 || (v->t >> 31) > INT32_MAX ||
            (i && v->t < e->ev[i - 1].t))
            return qkf_set_error("event %lld: x = %d, y = %d, p = %d, t = %lld cannot be stored "
                                 "as an AEDAT 3.1 polarity event (timestamps must not decrease)",
                                 (long long)i, v->x, v->y, v->p, (long long)v->t);
    }
    /* packets end at AEDAT3_PACKET_EVENTS events or where the timestamp overflow changes */
    int64_t packets = 0;
    for (int64_t i = 0; i < e->n;) {
        int64_t j = i + 1, ovf = e->ev[i].t >> 31;
        while (j < e->n && j - i < AEDAT3_PACKET_EVENTS && (e->ev[j].t >> 31) == ovf)
            j++;
        packets++;
        i = j;
    }
    size_t hl = sizeof aedat3_header - 1;
    size_t size = hl + (size_t)packets * AEDAT3_HEADER + 8 * (size_t)e->n;
    uint8_t *b = qkf_malloc(size), *w = b + hl;
    memcpy(b, aedat3_header, hl);
    for (int64_t i = 0; i < e->n;) {
        int64_t j = i + 1, ovf = e->ev[i].t >> 31;
        while (j < e->n && j - i < AEDAT3_PACKET_EVENTS && (e->ev[j].t >> 31) == ovf)
            j++;
        uint32_t cnt = (uint32_t)(j - i);
        qkf__put_le16(w, POLARITY_EVENT);
        qkf__put_le16(w + 2, 1);
        qkf__put_le32(w + 4, 8);
        qkf__put_le32(w + 8, 4);
        qkf__put_le32(w + 12, (uint32_t)ovf);
        qkf__put_le32(w + 16, cnt);
        qkf__put_le32(w + 20, cnt);
        qkf__put_le32(w + 24, cnt);
        w += AEDAT3_HEADER;
        for (int64_t k = i; k < j; k++, w += 8) {
            const qkf_event *v = &e->ev[k];
            qkf__put_le32(w, (uint32_t)v->x << 17 | (uint32_t)v->y << 2 | (uint32_t)v->p << 1 | 1u);
            qkf__put_le32(w + 4, (uint32_t)(v->t & 0x7FFFFFFF));
        }
        i = j;
    }
    *buf = b;
    *len = size;
    return 0;
}

/* ---- DVS128 Gesture labels ------------------------------------------------------------------ */

void qkf_gesture_labels_path(const char *aedat, char *buf, size_t cap)
{
    const char *slash = strrchr(aedat, '/'), *dot = strrchr(aedat, '.');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - aedat) : strlen(aedat);
    snprintf(buf, cap, "%.*s_labels.csv", (int)stem, aedat);
}

/* Parses a non-negative decimal integer at *s (spaces around it allowed); advances *s. */
static int parse_u(const char **s, int64_t *v)
{
    const char *p = *s;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    int64_t x = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (x > (INT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (*p - '0');
    }
    while (*p == ' ' || *p == '\t')
        p++;
    *v = x;
    *s = p;
    return 0;
}

/* Reads one line, as fgets (at most cap - 1 bytes, up to and including '\n'), but returns its
 * length in bytes, NUL bytes included (fgets cannot tell them from the end); 0 at the end. */
static size_t read_line(FILE *f, char *buf, size_t cap)
{
    size_t k = 0;
    for (int ch; k + 1 < cap && (ch = getc(f)) != EOF;) {
        buf[k++] = (char)ch;
        if (ch == '\n')
            break;
    }
    buf[k] = 0;
    return k;
}

int qkf_gesture_labels_load(const char *csv, qkf_gesture_segment **segs, int *n)
{
    *segs = NULL;
    *n = 0;
    FILE *f = fopen(csv, "rb");
    if (!f)
        return qkf_set_error("%s: cannot open the labels file", csv);
    char line[256];
    int cap = 16, cnt = 0, lineno = 0;
    long off = 0;
    qkf_gesture_segment *s = qkf_malloc((size_t)cap * sizeof *s);
    int rc = 0;
    for (size_t l; (l = read_line(f, line, sizeof line)) > 0;) {
        lineno++;
        long here = off;
        off += (long)l;
        if (memchr(line, 0, l)) {
            rc = qkf_set_error("%s: line %d (byte %ld): not a text line (a NUL byte)", csv,
                               lineno, here);
            break;
        }
        if (l == sizeof line - 1 && line[l - 1] != '\n') {
            rc = qkf_set_error("%s: line %d (byte %ld): line too long", csv, lineno, here);
            break;
        }
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' '))
            line[--l] = 0;
        if (lineno == 1) {
            if (strncmp(line, "class", 5) != 0) {
                rc = qkf_set_error("%s: line 1 (byte 0): expected the header "
                                   "'class,startTime_usec,endTime_usec'",
                                   csv);
                break;
            }
            continue;
        }
        if (l == 0)
            continue;
        const char *p = line;
        int64_t c, t0, t1;
        if (parse_u(&p, &c) || *p++ != ',' || parse_u(&p, &t0) || *p++ != ',' || parse_u(&p, &t1) ||
            *p) {
            for (char *q = line; *q; q++) /* the line is quoted: one printable line */
                if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7F)
                    *q = '?';
            rc = qkf_set_error("%s: line %d (byte %ld): expected 'class,startTime_usec,"
                               "endTime_usec' with non-negative integers, got '%s'",
                               csv, lineno, here, line);
            break;
        }
        if (c < 1 || c > 11) {
            rc = qkf_set_error("%s: line %d (byte %ld): class %lld is not in 1..11", csv, lineno,
                               here, (long long)c);
            break;
        }
        if (t1 <= t0) {
            rc = qkf_set_error("%s: line %d (byte %ld): the segment ends (%lld us) before it "
                               "starts (%lld us)",
                               csv, lineno, here, (long long)t1, (long long)t0);
            break;
        }
        if (cnt == cap) {
            qkf_gesture_segment *g = qkf_malloc((size_t)cap * 2 * sizeof *g);
            memcpy(g, s, (size_t)cap * sizeof *g);
            qkf_free(s);
            s = g;
            cap *= 2;
        }
        s[cnt].label = (int)c - 1;
        s[cnt].t_start = t0;
        s[cnt].t_end = t1;
        s[cnt].i0 = s[cnt].i1 = 0;
        cnt++;
    }
    if (!rc && ferror(f))
        rc = qkf_set_error("%s: read error", csv);
    if (!rc && lineno == 0)
        rc = qkf_set_error("%s: byte 0: empty labels file", csv);
    fclose(f);
    if (rc) {
        qkf_free(s);
        return rc;
    }
    *segs = s;
    *n = cnt;
    return 0;
}

int qkf_gesture_load(const char *aedat, const char *csv, const qkf_events_opts *o, qkf_events *ev,
                     qkf_gesture_segment **segs, int *n)
{
    char path[4096];
    if (!csv) {
        qkf_gesture_labels_path(aedat, path, sizeof path);
        csv = path;
    }
    if (qkf_gesture_labels_load(csv, segs, n))
        return -1;
    if (qkf_events_load(aedat, o, ev)) {
        qkf_free(*segs);
        *segs = NULL;
        *n = 0;
        return -1;
    }
    for (int i = 0; i < *n; i++)
        qkf_events_range(ev, (*segs)[i].t_start, (*segs)[i].t_end, &(*segs)[i].i0, &(*segs)[i].i1);
    return 0;
}
