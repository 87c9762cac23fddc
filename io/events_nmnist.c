/* N-MNIST / N-Caltech101 .bin: 5-byte ATIS events (Orchard et al. 2015).
 *
 *   byte 0      x (8 bits)
 *   byte 1      y (8 bits); y == 240 marks a timestamp overflow: every later timestamp gains
 *               8192 us (the convention of the dataset's own Python reader, kept by Tonic)
 *   byte 2      bit 7 polarity (1 ON), bits 6..0 timestamp bits 22..16
 *   bytes 3, 4  timestamp bits 15..8, 7..0 (microseconds)
 *
 * No header; the file size is a multiple of 5. The sensor is N-MNIST's 34x34 when every event
 * fits it, otherwise the ATIS array of N-Caltech101 (304x240); --sensor overrides both. */
#include <string.h>

#include "events_internal.h"

#define OVERFLOW_Y 240
#define OVERFLOW_US 8192
#define TS_MAX 0x7FFFFF

int qkf__decode_nmnist(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    size_t n = len / 5;
    int64_t base = 0;
    qkf__ev_reserve(d, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = buf + 5 * i;
        if (b[1] == OVERFLOW_Y) {
            base += OVERFLOW_US;
            d->out->special++;
            continue;
        }
        int64_t t = base + (int64_t)((uint32_t)(b[2] & 0x7F) << 16 | (uint32_t)b[3] << 8 | b[4]);
        if (qkf__ev_emit(d, t, b[0], b[1], b[2] >> 7, 5 * i, (int64_t)i))
            return -1;
    }
    d->out->records = (int64_t)n;
    if (len % 5)
        return qkf_set_error(
            "%s: byte %zu: truncated event (%zu trailing bytes; N-MNIST events are "
            "5 bytes)",
            d->name, 5 * n, len % 5);
    return 0;
}

int qkf__encode_nmnist(const qkf_events *e, uint8_t **buf, size_t *len)
{
    /* first pass: check every event and count the overflow markers */
    int64_t base = 0, markers = 0, last = 0;
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        if (v->x > 255 || v->y >= OVERFLOW_Y || v->p > 1)
            return qkf_set_error("event %lld: x = %d, y = %d, p = %d cannot be stored in N-MNIST "
                                 "format (x < 256, y < 240, p 0 or 1)",
                                 (long long)i, v->x, v->y, v->p);
        if (v->t < last)
            return qkf_set_error("event %lld: timestamps must not decrease", (long long)i);
        last = v->t;
        int64_t k = v->t > TS_MAX ? (v->t - TS_MAX + OVERFLOW_US - 1) / OVERFLOW_US : 0;
        if (k > base)
            markers += k - base, base = k;
    }
    if (markers > ((int64_t)1 << 28))
        return qkf_set_error("timestamps up to %lld us need too many N-MNIST overflow markers",
                             (long long)last);
    size_t size = (size_t)(e->n + markers) * 5;
    uint8_t *b = qkf_malloc(size), *w = b;
    base = 0;
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        while (v->t - base * OVERFLOW_US > TS_MAX) {
            memset(w, 0, 5);
            w[1] = OVERFLOW_Y;
            w += 5, base++;
        }
        uint32_t ts = (uint32_t)(v->t - base * OVERFLOW_US);
        w[0] = (uint8_t)v->x;
        w[1] = (uint8_t)v->y;
        w[2] = (uint8_t)((v->p ? 0x80 : 0) | (ts >> 16));
        w[3] = (uint8_t)(ts >> 8);
        w[4] = (uint8_t)ts;
        w += 5;
    }
    *buf = b;
    *len = size;
    return 0;
}
