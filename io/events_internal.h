/* Internals shared by the event format decoders and encoders (io/events_*.c). */
#ifndef QKF_EVENTS_INTERNAL_H
#define QKF_EVENTS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../kernels/base.h"
#include "events.h"

/* Decoding state: the output (with room for every record of the buffer, so the hot loop never
 * grows it), the sensor bounds events are checked against, and the last timestamp. */
typedef struct {
    const char *name;
    qkf_events *out;
    int backwards;  /* QKF_EV_BACKWARDS_* */
    int64_t w, h;   /* sensor bounds checked per event */
    int64_t last_t; /* -1 before the first event */
    int64_t maxx, maxy;
    int size_from_events; /* set by a decoder whose file gave no sensor size: the sensor is
                             the largest x and y plus one (d->w, d->h are then 65536) */
} qkf__evdec;

/* Checks and appends one event decoded from the record `rec` at byte `off`. */
static inline int qkf__ev_emit(qkf__evdec *d, int64_t t, int64_t x, int64_t y, int p, size_t off,
                               int64_t rec)
{
    if (x < 0 || y < 0 || x >= d->w || y >= d->h)
        return qkf_set_error("%s: byte %zu (event %lld): x = %lld, y = %lld is outside the "
                             "%lldx%lld sensor (--sensor WxH sets its size)",
                             d->name, off, (long long)rec, (long long)x, (long long)y,
                             (long long)d->w, (long long)d->h);
    if (t < 0)
        return qkf_set_error("%s: byte %zu (event %lld): negative timestamp %lld us", d->name, off,
                             (long long)rec, (long long)t);
    if (t < d->last_t) {
        if (d->backwards == QKF_EV_BACKWARDS_DROP) {
            d->out->dropped_backwards++;
            return 0;
        }
        return qkf_set_error("%s: byte %zu (event %lld): timestamp %lld us goes back from %lld us "
                             "(--backwards drop skips such events)",
                             d->name, off, (long long)rec, (long long)t, (long long)d->last_t);
    }
    d->last_t = t;
    if (x > d->maxx)
        d->maxx = x;
    if (y > d->maxy)
        d->maxy = y;
    qkf_event *e = &d->out->ev[d->out->n++];
    e->t = t;
    e->x = (uint16_t)x;
    e->y = (uint16_t)y;
    e->p = (uint8_t)p;
    return 0;
}

static inline uint32_t qkf__be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}
static inline uint16_t qkf__le16(const uint8_t *b) { return (uint16_t)(b[0] | b[1] << 8); }
static inline uint32_t qkf__le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t qkf__le64(const uint8_t *b)
{
    return (uint64_t)qkf__le32(b) | (uint64_t)qkf__le32(b + 4) << 32;
}
static inline void qkf__put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8),
    b[3] = (uint8_t)v;
}
static inline void qkf__put_le16(uint8_t *b, uint16_t v)
{
    b[0] = (uint8_t)v, b[1] = (uint8_t)(v >> 8);
}
static inline void qkf__put_le32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)v, b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)(v >> 16),
    b[3] = (uint8_t)(v >> 24);
}
static inline void qkf__put_le64(uint8_t *b, uint64_t v)
{
    qkf__put_le32(b, (uint32_t)v);
    qkf__put_le32(b + 4, (uint32_t)(v >> 32));
}

/* Gives d->out room for cap events (every record of the buffer), so the hot loop never grows
 * the array. */
static inline void qkf__ev_reserve(qkf__evdec *d, int64_t cap)
{
    d->out->cap = cap > 0 ? cap : 1;
    d->out->ev = qkf_malloc((size_t)d->out->cap * sizeof(qkf_event));
}

/* Makes room for `more` events beyond d->out->n (doubling), for decoders that cannot count
 * their events before decoding (compressed or vectorised formats); called per packet or word
 * group, never per event. */
static inline void qkf__ev_ensure(qkf__evdec *d, int64_t more)
{
    qkf_events *o = d->out;
    if (o->ev && o->n + more <= o->cap)
        return;
    int64_t cap = o->cap > 0 ? o->cap : 1024;
    while (cap < o->n + more)
        cap *= 2;
    qkf_event *g = qkf_malloc((size_t)cap * sizeof *g);
    if (o->n)
        memcpy(g, o->ev, (size_t)o->n * sizeof *g);
    qkf_free(o->ev);
    o->ev = g;
    o->cap = cap;
}

static inline uint16_t qkf__be16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }

/* Decoders. d->w and d->h are the sensor bounds; a decoder whose header carries the sensor size
 * (qev) sets them when they are 0. Each reserves its output once its header is read. */
int qkf__decode_nmnist(const uint8_t *buf, size_t len, qkf__evdec *d);
int qkf__decode_aedat2(const uint8_t *buf, size_t len, int orient, qkf_evlayout layout,
                       qkf__evdec *d);
int qkf__decode_aedat4(const uint8_t *buf, size_t len, qkf__evdec *d);
int qkf__decode_evt2(const uint8_t *buf, size_t len, qkf__evdec *d);
int qkf__decode_evt3(const uint8_t *buf, size_t len, qkf__evdec *d);
int qkf__decode_dat(const uint8_t *buf, size_t len, qkf__evdec *d);
/* The format a Prophesee '%' header names (EVT2, EVT3 or DAT), or AUTO. */
qkf_evformat qkf__sniff_prophesee(const uint8_t *buf, size_t len);
int qkf__decode_aedat3(const uint8_t *buf, size_t len, qkf__evdec *d);
int qkf__decode_qev(const uint8_t *buf, size_t len, qkf__evdec *d);
int qkf__decode_npy(const uint8_t *buf, size_t len, qkf__evdec *d);

/* Encoders: a qkf_malloc'ed buffer. */
int qkf__encode_nmnist(const qkf_events *e, uint8_t **buf, size_t *len);
int qkf__encode_aedat2(const qkf_events *e, int orient, uint8_t **buf, size_t *len);
int qkf__encode_aedat3(const qkf_events *e, uint8_t **buf, size_t *len);
int qkf__encode_qev(const qkf_events *e, uint8_t **buf, size_t *len);
int qkf__encode_npy(const qkf_events *e, uint8_t **buf, size_t *len);
int qkf__encode_evt2(const qkf_events *e, uint8_t **buf, size_t *len);
int qkf__encode_evt3(const qkf_events *e, uint8_t **buf, size_t *len);
int qkf__encode_dat(const qkf_events *e, uint8_t **buf, size_t *len);

#define QKF__QEV_MAGIC "QKFEV001"
#define QKF__QEV_HEADER 24
#define QKF__QEV_RECORD 16

#endif
