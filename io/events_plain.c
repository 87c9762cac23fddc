/* Plain event files: qkf's own .qev and NumPy .npy.
 *
 * .qev (little-endian):
 *   bytes 0..7    magic "QKFEV001"
 *   bytes 8..11   uint32 sensor width
 *   bytes 12..15  uint32 sensor height
 *   bytes 16..23  uint64 number of events n
 *   then n records of 16 bytes: int64 t (us), uint16 x, uint16 y, uint8 p (0 or 1), 3 zero bytes
 *
 * .npy (versions 1-3): either a 2-D array [N,4] of one numeric type with columns x, y, t, p, or a
 * 1-D structured array with fields x, y, t (or ts, timestamp) and p (or pol, polarity), each of
 * any integer, float (integral values) or bool type, either byte order; other fields and
 * padding are skipped. Polarity 0 or 1 (-1 is read as OFF); the sensor is the largest x and y
 * plus one unless --sensor gives it. */
#include <stdio.h>
#include <string.h>

#include "events_internal.h"

int qkf__decode_qev(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    if (len < QKF__QEV_HEADER || memcmp(buf, QKF__QEV_MAGIC, 8) != 0)
        return qkf_set_error("%s: byte 0: not a qkf event file (magic '%s' expected)", d->name,
                             QKF__QEV_MAGIC);
    uint32_t w = qkf__le32(buf + 8), h = qkf__le32(buf + 12);
    uint64_t n = qkf__le64(buf + 16);
    if (w < 1 || h < 1 || w > 65536 || h > 65536)
        return qkf_set_error("%s: byte 8: bad sensor size %ux%u in the header", d->name, w, h);
    uint64_t have = (len - QKF__QEV_HEADER) / QKF__QEV_RECORD;
    if (n != have || (len - QKF__QEV_HEADER) % QKF__QEV_RECORD)
        return qkf_set_error("%s: byte %zu: the header announces %llu events but the file holds "
                             "%llu records and %zu more bytes (truncated or trailing data)",
                             d->name, (size_t)(QKF__QEV_HEADER + have * QKF__QEV_RECORD),
                             (unsigned long long)n, (unsigned long long)have,
                             (size_t)((len - QKF__QEV_HEADER) % QKF__QEV_RECORD));
    if (!d->w)
        d->w = w, d->h = h;
    qkf__ev_reserve(d, (int64_t)n);
    for (uint64_t i = 0; i < n; i++) {
        size_t off = QKF__QEV_HEADER + QKF__QEV_RECORD * (size_t)i;
        const uint8_t *r = buf + off;
        if (r[12] > 1 || r[13] || r[14] || r[15])
            return qkf_set_error("%s: byte %zu (event %llu): polarity %u is not 0 or 1 (or the "
                                 "reserved bytes are not zero)",
                                 d->name, off, (unsigned long long)i, r[12]);
        if (qkf__ev_emit(d, (int64_t)qkf__le64(r), qkf__le16(r + 8), qkf__le16(r + 10), r[12], off,
                         (int64_t)i))
            return -1;
    }
    d->out->records = (int64_t)n;
    return 0;
}

int qkf__encode_qev(const qkf_events *e, uint8_t **buf, size_t *len)
{
    size_t size = QKF__QEV_HEADER + QKF__QEV_RECORD * (size_t)e->n;
    uint8_t *b = qkf_calloc(size, 1);
    memcpy(b, QKF__QEV_MAGIC, 8);
    qkf__put_le32(b + 8, (uint32_t)e->width);
    qkf__put_le32(b + 12, (uint32_t)e->height);
    qkf__put_le64(b + 16, (uint64_t)e->n);
    for (int64_t i = 0; i < e->n; i++) {
        uint8_t *r = b + QKF__QEV_HEADER + QKF__QEV_RECORD * (size_t)i;
        qkf__put_le64(r, (uint64_t)e->ev[i].t);
        qkf__put_le16(r + 8, e->ev[i].x);
        qkf__put_le16(r + 10, e->ev[i].y);
        r[12] = e->ev[i].p;
    }
    *buf = b;
    *len = size;
    return 0;
}

/* ---- NumPy ----------------------------------------------------------------------------------- */

typedef struct {
    char kind; /* 'i', 'u', 'f', 'b', or 'V' (padding) */
    int size;
    int big;
} npy_type;

enum { FX, FY, FT, FP, NFIELD };

typedef struct {
    npy_type col[NFIELD]; /* the type of x, y, t, p */
    size_t off[NFIELD];   /* byte offset in a record (structured), or column index */
    size_t itemsize;      /* bytes per record (structured) or per element (2-D) */
    int structured, fortran;
    int64_t n;
} npy_info;

typedef struct {
    const char *b, *s, *e; /* the file's first byte, the next byte, the end of the header */
} cursor;

static size_t pos(const cursor *c) { return (size_t)(c->s - c->b); }

static void ws(cursor *c)
{
    while (c->s < c->e && (*c->s == ' ' || *c->s == '\n' || *c->s == '\t'))
        c->s++;
}

static int lit(cursor *c, char ch)
{
    ws(c);
    if (c->s < c->e && *c->s == ch) {
        c->s++;
        return 1;
    }
    return 0;
}

/* Reads a quoted string. Bytes outside printable ASCII are stored as '?' (no key or type
 * contains one), so a message quoting the string stays one printable line. */
static int str(cursor *c, char *out, size_t cap)
{
    ws(c);
    if (c->s >= c->e || (*c->s != '\'' && *c->s != '"'))
        return -1;
    char q = *c->s++;
    size_t k = 0;
    while (c->s < c->e && *c->s != q) {
        if (k + 1 >= cap)
            return -1;
        unsigned char ch = (unsigned char)*c->s++;
        out[k++] = ch >= 0x20 && ch < 0x7F ? (char)ch : '?';
    }
    if (c->s >= c->e)
        return -1;
    c->s++;
    out[k] = 0;
    return 0;
}

static int parse_type(const char *s, npy_type *t)
{
    t->big = 0;
    if (*s == '<' || *s == '|' || *s == '=')
        s++;
    else if (*s == '>')
        t->big = 1, s++;
    if (*s == '?' && !s[1]) {
        t->kind = 'b', t->size = 1;
        return 0;
    }
    t->kind = *s++;
    if (!t->kind || !strchr("iubfV", t->kind) || *s < '1' || *s > '9') /* strchr matches a NUL */
        return -1;
    int n = 0;
    for (; *s >= '0' && *s <= '9' && n < 100000; s++)
        n = n * 10 + (*s - '0');
    if (*s)
        return -1;
    t->size = n;
    if (t->kind == 'V')
        return 0;
    if (t->kind == 'f')
        return n == 4 || n == 8 ? 0 : -1;
    if (t->kind == 'b')
        return n == 1 ? 0 : -1;
    return n == 1 || n == 2 || n == 4 || n == 8 ? 0 : -1;
}

static int field_index(const char *name)
{
    if (!strcmp(name, "x"))
        return FX;
    if (!strcmp(name, "y"))
        return FY;
    if (!strcmp(name, "t") || !strcmp(name, "ts") || !strcmp(name, "timestamp"))
        return FT;
    if (!strcmp(name, "p") || !strcmp(name, "pol") || !strcmp(name, "polarity"))
        return FP;
    return -1;
}

static const char *field_name[NFIELD] = {"x", "y", "t", "p"};

/* Parses the header dict; *data receives the offset of the array data. */
static int npy_header(const uint8_t *buf, size_t len, const char *name, npy_info *ni, size_t *data)
{
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return qkf_set_error("%s: byte 0: not a NumPy .npy file (magic)", name);
    int major = buf[6];
    size_t hl, start;
    if (major == 1) {
        hl = qkf__le16(buf + 8), start = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return qkf_set_error("%s: byte 8: truncated .npy header", name);
        hl = qkf__le32(buf + 8), start = 12;
    } else {
        return qkf_set_error("%s: byte 6: .npy format version %d is not supported", name, major);
    }
    if (hl > len - start)
        return qkf_set_error("%s: byte %zu: truncated .npy header (%zu bytes announced)", name,
                             start, hl);
    cursor c = {(const char *)buf, (const char *)buf + start, (const char *)buf + start + hl};
    char key[32], val[64];
    int have_descr = 0, have_shape = 0, have_order = 0, ndim = 0;
    size_t descr_at = start, shape_at = start;
    int64_t shape[2] = {0, 0};
    int found[NFIELD] = {0};
    memset(ni, 0, sizeof *ni);
    if (!lit(&c, '{'))
        goto bad;
    while (!lit(&c, '}')) {
        ws(&c);
        size_t key_at = pos(&c);
        if (str(&c, key, sizeof key) || !lit(&c, ':'))
            goto bad;
        int *have = NULL; /* each key once: a second descr would mix two layouts */
        if (!strcmp(key, "descr"))
            have = &have_descr;
        else if (!strcmp(key, "shape"))
            have = &have_shape;
        else if (!strcmp(key, "fortran_order"))
            have = &have_order;
        if (have && *have)
            return qkf_set_error("%s: byte %zu: the .npy header names '%s' twice", name, key_at,
                                 key);
        if (have)
            *have = 1;
        if (!strcmp(key, "descr")) {
            ws(&c);
            descr_at = pos(&c);
            if (lit(&c, '[')) {
                ni->structured = 1;
                size_t off = 0;
                while (!lit(&c, ']')) {
                    npy_type t;
                    char fname[32];
                    size_t fname_at, val_at;
                    if (!lit(&c, '('))
                        goto bad;
                    ws(&c);
                    fname_at = pos(&c);
                    if (str(&c, fname, sizeof fname) || !lit(&c, ','))
                        goto bad;
                    ws(&c);
                    val_at = pos(&c);
                    if (str(&c, val, sizeof val) || !lit(&c, ')'))
                        goto bad;
                    if (parse_type(val, &t))
                        return qkf_set_error("%s: byte %zu: .npy field '%s' has the unsupported "
                                             "type '%s' (integers, floats and bools)",
                                             name, val_at, fname, val);
                    int f = field_index(fname);
                    if (f >= 0 && t.kind != 'V') {
                        if (found[f])
                            return qkf_set_error("%s: byte %zu: .npy fields name %s twice", name,
                                                 fname_at, field_name[f]);
                        found[f] = 1, ni->col[f] = t, ni->off[f] = off;
                    }
                    off += (size_t)t.size;
                    lit(&c, ',');
                }
                ni->itemsize = off;
            } else {
                npy_type t;
                if (str(&c, val, sizeof val))
                    goto bad;
                if (parse_type(val, &t) || t.kind == 'V')
                    return qkf_set_error("%s: byte %zu: .npy dtype '%s' is not supported "
                                         "(integers, floats and bools)",
                                         name, descr_at, val);
                for (int f = 0; f < NFIELD; f++)
                    ni->col[f] = t, ni->off[f] = (size_t)f, found[f] = 1;
                ni->itemsize = (size_t)t.size;
            }
        } else if (!strcmp(key, "fortran_order")) {
            ws(&c);
            if (c.e - c.s >= 4 && !memcmp(c.s, "True", 4))
                ni->fortran = 1, c.s += 4;
            else if (c.e - c.s >= 5 && !memcmp(c.s, "False", 5))
                c.s += 5;
            else
                goto bad;
        } else if (!strcmp(key, "shape")) {
            ws(&c);
            shape_at = pos(&c);
            if (!lit(&c, '('))
                goto bad;
            while (!lit(&c, ')')) {
                ws(&c);
                size_t dim_at = pos(&c);
                int64_t v = 0;
                if (c.s >= c.e || *c.s < '0' || *c.s > '9')
                    goto bad;
                for (; c.s < c.e && *c.s >= '0' && *c.s <= '9'; c.s++) {
                    if (v > ((int64_t)1 << 50))
                        goto bad;
                    v = v * 10 + (*c.s - '0');
                }
                if (ndim == 2)
                    return qkf_set_error("%s: byte %zu: .npy arrays of more than 2 dimensions "
                                         "are not event lists",
                                         name, dim_at);
                shape[ndim++] = v;
                lit(&c, ',');
            }
        } else {
            goto bad;
        }
        lit(&c, ',');
    }
    if (!have_descr || !have_shape)
        goto bad;
    for (int f = 0; f < NFIELD; f++)
        if (!found[f])
            return qkf_set_error("%s: byte %zu: the .npy structured array has no field '%s' "
                                 "(fields x, y, t and p are needed)",
                                 name, descr_at, field_name[f]);
    if (ni->structured ? ndim != 1 : (ndim != 2 || shape[1] != 4))
        return qkf_set_error("%s: byte %zu: .npy shape must be (N, 4) for a plain array "
                             "(columns x, y, t, p) or (N,) for a structured one",
                             name, shape_at);
    ni->n = shape[0];
    *data = start + hl;
    size_t per = ni->itemsize * (ni->structured ? 1 : 4);
    if (per == 0 || (uint64_t)ni->n > (len - *data) / per)
        return qkf_set_error("%s: byte %zu: truncated .npy data (%lld events of %zu bytes "
                             "announced, %zu bytes present)",
                             name, *data, (long long)ni->n, per, len - *data);
    return 0;
bad:
    return qkf_set_error("%s: byte %zu: cannot parse the .npy header dict", name, pos(&c));
}

/* Reads one value; *frac is set for a float that is not an integer (or out of range). */
static int64_t npy_value(const uint8_t *b, npy_type t, int *frac)
{
    uint8_t tmp[8];
    if (t.big && t.size > 1) {
        for (int k = 0; k < t.size; k++)
            tmp[k] = b[t.size - 1 - k];
        b = tmp;
    }
    switch (t.kind) {
    case 'b':
        return b[0] != 0;
    case 'u':
        switch (t.size) {
        case 1:
            return b[0];
        case 2:
            return qkf__le16(b);
        case 4:
            return qkf__le32(b);
        default: {
            uint64_t v = qkf__le64(b);
            if (v > (uint64_t)INT64_MAX)
                *frac = 1;
            return (int64_t)v;
        }
        }
    case 'i':
        switch (t.size) {
        case 1:
            return (int8_t)b[0];
        case 2:
            return (int16_t)qkf__le16(b);
        case 4:
            return (int32_t)qkf__le32(b);
        default:
            return (int64_t)qkf__le64(b);
        }
    default: {
        double v;
        if (t.size == 4) {
            uint32_t u = qkf__le32(b);
            float f;
            memcpy(&f, &u, 4);
            v = f;
        } else {
            uint64_t u = qkf__le64(b);
            memcpy(&v, &u, 8);
        }
        if (!(v >= -9.2e18 && v <= 9.2e18) || v != (double)(int64_t)v) {
            *frac = 1;
            return 0;
        }
        return (int64_t)v;
    }
    }
}

int qkf__decode_npy(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    npy_info ni;
    size_t data = 0;
    if (npy_header(buf, len, d->name, &ni, &data))
        return -1;
    qkf__ev_reserve(d, ni.n);
    for (int64_t i = 0; i < ni.n; i++) {
        int64_t v[NFIELD];
        size_t off0 = 0;
        for (int f = 0; f < NFIELD; f++) {
            size_t off;
            if (ni.structured)
                off = data + (size_t)i * ni.itemsize + ni.off[f];
            else if (ni.fortran)
                off = data + (ni.off[f] * (size_t)ni.n + (size_t)i) * ni.itemsize;
            else
                off = data + ((size_t)i * 4 + ni.off[f]) * ni.itemsize;
            if (f == 0)
                off0 = off;
            int frac = 0;
            v[f] = npy_value(buf + off, ni.col[f], &frac);
            if (frac)
                return qkf_set_error("%s: byte %zu (event %lld): %s is not an integer", d->name,
                                     off, (long long)i, field_name[f]);
        }
        if (v[FP] != 0 && v[FP] != 1 && v[FP] != -1)
            return qkf_set_error("%s: byte %zu (event %lld): polarity %lld is not 0 or 1", d->name,
                                 off0, (long long)i, (long long)v[FP]);
        if (qkf__ev_emit(d, v[FT], v[FX], v[FY], v[FP] == 1, off0, i))
            return -1;
    }
    d->out->records = ni.n;
    return 0;
}

int qkf__encode_npy(const qkf_events *e, uint8_t **buf, size_t *len)
{
    char dict[256];
    int dl = snprintf(dict, sizeof dict,
                      "{'descr': [('x', '<u2'), ('y', '<u2'), ('t', '<i8'), ('p', '|u1')], "
                      "'fortran_order': False, 'shape': (%lld,), }",
                      (long long)e->n);
    size_t hl = (size_t)dl + 1; /* + '\n' */
    hl += (64 - (10 + hl) % 64) % 64;
    size_t size = 10 + hl + 13 * (size_t)e->n;
    uint8_t *b = qkf_malloc(size);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    qkf__put_le16(b + 8, (uint16_t)hl);
    memset(b + 10, ' ', hl);
    memcpy(b + 10, dict, (size_t)dl);
    b[10 + hl - 1] = '\n';
    uint8_t *w = b + 10 + hl;
    for (int64_t i = 0; i < e->n; i++, w += 13) {
        qkf__put_le16(w, e->ev[i].x);
        qkf__put_le16(w + 2, e->ev[i].y);
        qkf__put_le64(w + 4, (uint64_t)e->ev[i].t);
        w[12] = e->ev[i].p;
    }
    *buf = b;
    *len = size;
    return 0;
}
