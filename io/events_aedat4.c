/* AEDAT 4.0 (iniVation DV): reader and writer.
 *
 * The file (iniVation's AEDAT 4.0 description; the schemas IOHeader.fbs, events.fbs, frame.fbs,
 * imu.fbs, trigger.fbs of dv-processing):
 *   "#!AER-DAT4.0\r\n"                      the version line, 14 bytes
 *   int32 S, then S bytes                    the IOHeader FlatBuffer (identifier "IOHE"):
 *       compression: int32 = NONE (NONE, LZ4, LZ4_HIGH, ZSTD, ZSTD_HIGH)
 *       dataTablePosition: int64 = -1        where the packets end (the file data table)
 *       infoNode: string                     XML: one <node name="ID"> per stream under
 *                                            "outInfo", attr typeIdentifier (EVTS, FRME, IMUS,
 *                                            TRIG), and its "info" node: sizeX, sizeY, source
 *   packets: int32 streamId, int32 size, then size bytes: a size-prefixed FlatBuffer,
 *            compressed as one LZ4 frame or one Zstd frame unless NONE
 *   EVTS: table EventPacket { elements: [Event] }, struct Event { int64 t; int16 x, y;
 *         bool on; } (16 bytes with padding)
 * Frames, IMU samples and triggers are counted (frames: one per packet; IMU and trigger
 * packets: their elements vector), not decoded.
 *
 * The FlatBuffer reader below is ours and small: every offset it follows is checked against the
 * buffer before it is read (FlatBuffers binary format: a uoffset_t root at byte 0; a table starts
 * with an soffset_t to its vtable; the vtable holds uint16 vtable size, table size, then one
 * uint16 field offset per field, 0 for absent; vectors and strings are a uint32 count followed by
 * the elements). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <zstd.h>

#include "events_internal.h"

#define VERSION_LINE "#!AER-DAT4.0\r\n"
#define VERSION_LEN 14
#define MAX_PACKET (64u << 20) /* decompressed bytes per packet we accept */
#define MAX_STREAMS 64

/* ---- bounds-checked FlatBuffer tables ------------------------------------------------------- */

typedef struct {
    const uint8_t *b;
    size_t len;
    size_t base;      /* the buffer's offset in what messages count from (file or packet) */
    const char *what; /* "the IOHeader", "packet 3" ... */
    char err[160];
} fb_buf;

static int fb_fail(fb_buf *f, size_t at, const char *msg)
{
    snprintf(f->err, sizeof f->err, "%s", msg);
    f->base += at; /* the reported offset */
    return -1;
}

/* The table the uoffset at `at` points to; checks its vtable. */
static int fb_table_at(fb_buf *f, size_t at, size_t *table)
{
    if (at > f->len || f->len - at < 4)
        return fb_fail(f, at, "offset past the end of the FlatBuffer");
    size_t t = at + qkf__le32(f->b + at);
    if (t < at || t > f->len || f->len - t < 4)
        return fb_fail(f, at, "table offset past the end of the FlatBuffer");
    int32_t so = (int32_t)qkf__le32(f->b + t);
    int64_t vt = (int64_t)t - so;
    if (vt < 0 || (uint64_t)vt > f->len || f->len - (size_t)vt < 4)
        return fb_fail(f, t, "vtable offset outside the FlatBuffer");
    uint16_t vsize = qkf__le16(f->b + vt), tsize = qkf__le16(f->b + vt + 2);
    if (vsize < 4 || (vsize & 1) || (size_t)vt + vsize > f->len || tsize < 4 ||
        t + tsize > f->len)
        return fb_fail(f, (size_t)vt, "bad vtable (sizes outside the FlatBuffer)");
    *table = t;
    return 0;
}

/* The position of field i (of `width` bytes) of the table, or 0 if it is absent. */
static int fb_field(fb_buf *f, size_t table, int i, size_t width, size_t *pos)
{
    size_t vt = (size_t)((int64_t)table - (int32_t)qkf__le32(f->b + table));
    uint16_t vsize = qkf__le16(f->b + vt), tsize = qkf__le16(f->b + vt + 2);
    *pos = 0;
    if (4 + 2 * (size_t)i + 2 > vsize)
        return 0;
    uint16_t off = qkf__le16(f->b + vt + 4 + 2 * i);
    if (!off)
        return 0;
    if (off < 4 || (size_t)off + width > tsize)
        return fb_fail(f, vt + 4 + 2 * (size_t)i, "field outside its table");
    *pos = table + off;
    return 0;
}

/* The vector the uoffset at `at` points to: *data and *count elements of `elem` bytes. */
static int fb_vector(fb_buf *f, size_t at, size_t elem, size_t *data, size_t *count)
{
    size_t v = at + qkf__le32(f->b + at);
    if (v < at || v > f->len || f->len - v < 4)
        return fb_fail(f, at, "vector offset past the end of the FlatBuffer");
    uint32_t n = qkf__le32(f->b + v);
    if ((uint64_t)n * elem > f->len - v - 4)
        return fb_fail(f, v, "vector longer than the FlatBuffer");
    *data = v + 4;
    *count = n;
    return 0;
}

/* ---- the stream descriptions (the IOHeader's XML info node) --------------------------------- */

typedef struct {
    long id;
    char type[5];
    int w, h;
    char source[64];
} stream_desc;

/* Copies the XML attribute `key="..."` of the tag starting at s (up to '>') into out. */
static int xml_attr(const char *s, const char *end, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = s; p < end && *p != '>'; p++) {
        if ((size_t)(end - p) > kl + 2 && !memcmp(p, key, kl) && p[kl] == '=' && p[kl + 1] == '"' &&
            (p == s || p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n' || p[-1] == '\r')) {
            const char *v = p + kl + 2, *q = v;
            while (q < end && *q != '"')
                q++;
            size_t n = (size_t)(q - v) < cap - 1 ? (size_t)(q - v) : cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

/* Reads the streams: <node name="outInfo"> holds one <node name="ID"> per stream, with
 * <attr key="typeIdentifier"> and a child <node name="info"> with sizeX, sizeY, source. */
static int parse_streams(const char *x, size_t n, stream_desc *st, int *ns)
{
    const char *end = x + n;
    char names[8][32]; /* the open nodes' names */
    int depth = 0, out = -1, cur = -1;
    *ns = 0;
    for (const char *p = x; p < end; p++) {
        if (*p != '<')
            continue;
        if ((size_t)(end - p) >= 6 && !memcmp(p, "<node", 5) && (p[5] == ' ' || p[5] == '>')) {
            char name[32] = "";
            xml_attr(p + 5, end, "name", name, sizeof name);
            const char *q = p;
            while (q < end && *q != '>')
                q++;
            int selfclose = q > p && q[-1] == '/';
            if (!selfclose) {
                if (depth < 8)
                    snprintf(names[depth], sizeof names[depth], "%s", name);
                depth++;
                if (depth <= 8 && !strcmp(name, "outInfo"))
                    out = depth;
                else if (out > 0 && depth == out + 1) {
                    char *e;
                    long id = strtol(name, &e, 10);
                    if (*e || e == name || *ns == MAX_STREAMS)
                        cur = -1;
                    else {
                        cur = (*ns)++;
                        memset(&st[cur], 0, sizeof st[cur]);
                        st[cur].id = id;
                    }
                }
            }
            continue;
        }
        if ((size_t)(end - p) >= 7 && !memcmp(p, "</node>", 7)) {
            if (depth > 0)
                depth--;
            if (out > 0 && depth < out)
                out = -1, cur = -1;
            else if (out > 0 && depth == out)
                cur = -1;
            continue;
        }
        if ((size_t)(end - p) >= 6 && !memcmp(p, "<attr ", 6) && cur >= 0 && out > 0) {
            char key[32] = "";
            xml_attr(p + 5, end, "key", key, sizeof key);
            const char *v = p;
            while (v < end && *v != '>')
                v++;
            if (v >= end)
                break;
            v++;
            const char *ve = v;
            while (ve < end && *ve != '<')
                ve++;
            char val[64];
            size_t vl = (size_t)(ve - v) < sizeof val - 1 ? (size_t)(ve - v) : sizeof val - 1;
            memcpy(val, v, vl);
            val[vl] = 0;
            int in_info = depth == out + 2 && depth <= 8 && !strcmp(names[depth - 1], "info");
            for (char *c = val; *c; c++) /* values reach messages: printable only */
                if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F)
                    *c = '?';
            if (depth == out + 1 && !strcmp(key, "typeIdentifier"))
                snprintf(st[cur].type, sizeof st[cur].type, "%.4s", val);
            else if (in_info && !strcmp(key, "sizeX"))
                st[cur].w = atoi(val);
            else if (in_info && !strcmp(key, "sizeY"))
                st[cur].h = atoi(val);
            else if (in_info && !strcmp(key, "source"))
                snprintf(st[cur].source, sizeof st[cur].source, "%s", val);
        }
    }
    return 0;
}

/* ---- the decoder ------------------------------------------------------------------------------ */

static const char *compression_name(int c)
{
    static const char *names[] = {"none", "LZ4", "LZ4 high", "Zstd", "Zstd high"};
    return c >= 0 && c < 5 ? names[c] : "?";
}

/* Decompresses src[0..n) (one LZ4 or Zstd frame) into *out (grown as needed, up to MAX_PACKET).
 * Returns the decompressed size, or -1 with msg set. */
/* One decompression context per file, reset before each packet. */
typedef struct {
    LZ4F_dctx *lz;
    ZSTD_DCtx *zs;
} dctx;

static int64_t decompress(dctx *x, int comp, const uint8_t *src, size_t n, uint8_t **out,
                          size_t *cap, char *msg, size_t mcap)
{
    size_t got = 0;
    if (comp == QKF_AEDAT4_LZ4 || comp == QKF_AEDAT4_LZ4_HIGH) {
        if (!x->lz && LZ4F_isError(LZ4F_createDecompressionContext(&x->lz, LZ4F_VERSION))) {
            x->lz = NULL;
            snprintf(msg, mcap, "cannot create an LZ4 context");
            return -1;
        }
        LZ4F_dctx *dc = x->lz;
        LZ4F_resetDecompressionContext(dc);
        size_t in = 0, r = 1;
        for (;;) {
            if (got == *cap) {
                if (*cap >= MAX_PACKET) {
                    snprintf(msg, mcap, "decompresses to more than %u bytes", MAX_PACKET);
                    return -1;
                }
                size_t nc = *cap ? *cap * 2 : 1 << 16;
                uint8_t *g = qkf_malloc(nc);
                if (got)
                    memcpy(g, *out, got);
                qkf_free(*out);
                *out = g, *cap = nc;
            }
            size_t avail = *cap - got, dst = avail, srcn = n - in;
            r = LZ4F_decompress(dc, *out + got, &dst, src + in, &srcn, NULL);
            if (LZ4F_isError(r)) {
                snprintf(msg, mcap, "LZ4 error (%zu of %zu compressed bytes read): %s", in, n,
                         LZ4F_getErrorName(r));
                return -1;
            }
            got += dst, in += srcn;
            if (r == 0) /* the frame is complete */
                break;
            if (dst < avail && in == n) /* it needs input there is none of */
                break;
            if (!dst && !srcn) {
                snprintf(msg, mcap, "LZ4 frame makes no progress at compressed byte %zu", in);
                return -1;
            }
        }
        if (r != 0) {
            snprintf(msg, mcap, "truncated LZ4 frame (%zu compressed bytes)", n);
            return -1;
        }
        if (in != n) {
            snprintf(msg, mcap, "%zu bytes after the LZ4 frame", n - in);
            return -1;
        }
        return (int64_t)got;
    }
    if (!x->zs && !(x->zs = ZSTD_createDCtx())) {
        snprintf(msg, mcap, "cannot create a Zstd context");
        return -1;
    }
    ZSTD_DCtx *dc = x->zs;
    ZSTD_DCtx_reset(dc, ZSTD_reset_session_only);
    ZSTD_inBuffer ib = {src, n, 0};
    size_t r = 1;
    while (ib.pos < ib.size || r != 0) {
        if (got == *cap) {
            if (*cap >= MAX_PACKET) {
                snprintf(msg, mcap, "decompresses to more than %u bytes", MAX_PACKET);
                return -1;
            }
            size_t nc = *cap ? *cap * 2 : 1 << 16;
            uint8_t *g = qkf_malloc(nc);
            if (got)
                memcpy(g, *out, got);
            qkf_free(*out);
            *out = g, *cap = nc;
        }
        ZSTD_outBuffer ob = {*out + got, *cap - got, 0};
        size_t before = ib.pos;
        r = ZSTD_decompressStream(dc, &ob, &ib);
        if (ZSTD_isError(r)) {
            snprintf(msg, mcap, "Zstd error (%zu of %zu compressed bytes read): %s", ib.pos, n,
                     ZSTD_getErrorName(r));
            return -1;
        }
        got += ob.pos;
        if (r == 0 && ib.pos < ib.size) {
            snprintf(msg, mcap, "%zu bytes after the Zstd frame", ib.size - ib.pos);
            return -1;
        }
        if (r != 0 && ib.pos == ib.size && ob.pos < ob.size && ib.pos == before) {
            snprintf(msg, mcap, "truncated Zstd frame (%zu compressed bytes)", n);
            return -1;
        }
    }
    return (int64_t)got;
}

/* Reads the IOHeader at buf[18..18+size). */
static int read_ioheader(const uint8_t *buf, size_t size, qkf__evdec *d, int *comp, int64_t *dtp,
                         size_t *info, size_t *info_len)
{
    fb_buf f = {buf + 18, size, 18, "IOHeader", ""};
    size_t table, pos;
    *comp = 0, *dtp = -1, *info = 0, *info_len = 0;
    if (size < 8 || memcmp(buf + 18 + 4, "IOHE", 4) != 0)
        return qkf_set_error("%s: byte 18: the IOHeader is not a FlatBuffer with identifier "
                             "'IOHE' (%zu bytes)",
                             d->name, size);
    if (fb_table_at(&f, 0, &table) || fb_field(&f, table, 0, 4, &pos))
        goto bad;
    if (pos)
        *comp = (int32_t)qkf__le32(f.b + pos);
    if (fb_field(&f, table, 1, 8, &pos))
        goto bad;
    if (pos)
        *dtp = (int64_t)qkf__le64(f.b + pos);
    if (fb_field(&f, table, 2, 4, &pos))
        goto bad;
    if (pos) {
        size_t s, n;
        if (fb_vector(&f, pos, 1, &s, &n))
            goto bad;
        *info = 18 + s, *info_len = n;
    }
    if (*comp < 0 || *comp > QKF_AEDAT4_ZSTD_HIGH)
        return qkf_set_error("%s: byte 18: unknown IOHeader compression %d (0..4: none, LZ4, LZ4 "
                             "high, Zstd, Zstd high)",
                             d->name, *comp);
    return 0;
bad:
    return qkf_set_error("%s: byte %zu: IOHeader FlatBuffer: %s", d->name, f.base, f.err);
}

int qkf__decode_aedat4(const uint8_t *buf, size_t len, qkf__evdec *d)
{
    if (len < VERSION_LEN || memcmp(buf, VERSION_LINE, VERSION_LEN) != 0)
        return qkf_set_error("%s: byte 0: not an AEDAT 4.0 file (expected the line "
                             "'#!AER-DAT4.0' ending in CR LF)",
                             d->name);
    if (len < VERSION_LEN + 4)
        return qkf_set_error("%s: byte %d: truncated: no IOHeader size", d->name, VERSION_LEN);
    uint32_t hsize = qkf__le32(buf + VERSION_LEN);
    if (hsize > len - VERSION_LEN - 4)
        return qkf_set_error("%s: byte %d: truncated IOHeader (%u bytes declared, %zu present)",
                             d->name, VERSION_LEN, hsize, len - VERSION_LEN - 4);
    int comp = 0;
    int64_t dtp = -1;
    size_t info = 0, info_len = 0;
    if (read_ioheader(buf, hsize, d, &comp, &dtp, &info, &info_len))
        return -1;
    stream_desc st[MAX_STREAMS];
    int ns = 0;
    parse_streams((const char *)buf + info, info_len, st, &ns);
    if (ns == 0)
        return qkf_set_error("%s: byte %zu: the IOHeader's info node describes no stream (no "
                             "<node> under 'outInfo')",
                             d->name, info);
    int ev_stream = -1; /* the first polarity stream: its events are decoded */
    for (int i = 0; i < ns; i++) {
        if (!st[i].type[0])
            return qkf_set_error("%s: byte %zu: stream %ld has no typeIdentifier in the info node",
                                 d->name, info, st[i].id);
        for (int j = 0; j < i; j++)
            if (st[j].id == st[i].id)
                return qkf_set_error("%s: byte %zu: stream %ld is described twice", d->name, info,
                                     st[i].id);
        if (!strcmp(st[i].type, "EVTS") && ev_stream < 0)
            ev_stream = i;
    }
    if (ev_stream >= 0) {
        snprintf(d->out->camera, sizeof d->out->camera, "%s", st[ev_stream].source);
        if (!d->w && st[ev_stream].w > 0 && st[ev_stream].h > 0 && st[ev_stream].w <= 65536 &&
            st[ev_stream].h <= 65536)
            d->w = st[ev_stream].w, d->h = st[ev_stream].h;
    }
    if (!d->w) {
        d->w = d->h = 65536;
        d->size_from_events = 1;
    }
    size_t pos = VERSION_LEN + 4 + hsize, end = len;
    if (dtp >= 0) {
        if ((uint64_t)dtp < pos || (uint64_t)dtp > len)
            return qkf_set_error("%s: byte 18: the data table position %lld is outside the "
                                 "packets (bytes %zu..%zu)",
                                 d->name, (long long)dtp, pos, len);
        end = (size_t)dtp;
    }
    qkf__ev_ensure(d, 0);
    uint8_t *dec = NULL;
    size_t dcap = 0;
    dctx dx = {NULL, NULL};
    int rc = 0;
    int64_t packet = 0, rec = 0;
    char msg[160];
    for (; pos < end; packet++) {
        if (end - pos < 8) {
            rc = qkf_set_error("%s: byte %zu (packet %lld): truncated packet header (%zu of 8 "
                               "bytes)",
                               d->name, pos, (long long)packet, end - pos);
            break;
        }
        int32_t id = (int32_t)qkf__le32(buf + pos);
        uint32_t size = qkf__le32(buf + pos + 4);
        if (size > end - pos - 8) {
            rc = qkf_set_error("%s: byte %zu (packet %lld): truncated packet: %u bytes declared, "
                               "%zu present",
                               d->name, pos, (long long)packet, size, end - pos - 8);
            break;
        }
        int s = -1;
        for (int i = 0; i < ns; i++)
            if (st[i].id == id)
                s = i;
        if (s < 0) {
            rc = qkf_set_error("%s: byte %zu (packet %lld): stream id %d is not described in the "
                               "IOHeader",
                               d->name, pos, (long long)packet, id);
            break;
        }
        const uint8_t *p = buf + pos + 8;
        size_t plen = size, pbase = pos + 8; /* pbase: file offset of p, for uncompressed data */
        int compressed = comp != QKF_AEDAT4_NONE;
        if (compressed) {
            int64_t got = decompress(&dx, comp, buf + pos + 8, size, &dec, &dcap, msg, sizeof msg);
            if (got < 0) {
                rc = qkf_set_error("%s: byte %zu (packet %lld): %s packet: %s", d->name, pos,
                                   (long long)packet, compression_name(comp), msg);
                break;
            }
            p = dec, plen = (size_t)got;
        }
        /* where messages point: into the file, or at the packet and into its decompressed data */
#define AT(o) (compressed ? pos : pbase + (o))
        if (plen < 12 || qkf__le32(p) != plen - 4 || memcmp(p + 8, st[s].type, 4) != 0) {
            rc = qkf_set_error("%s: byte %zu (packet %lld): stream %d (%s): the packet is not a "
                               "size-prefixed FlatBuffer of its type (%zu bytes%s)",
                               d->name, pos, (long long)packet, id, st[s].type, plen,
                               plen >= 12 && qkf__le32(p) != plen - 4 ? ", wrong size prefix"
                                                                      : "");
            break;
        }
        fb_buf f = {p + 4, plen - 4, 4, "packet", ""};
        size_t table, fpos, data, count;
        if (fb_table_at(&f, 0, &table)) {
            rc = qkf_set_error("%s: byte %zu (packet %lld, %s byte %zu): FlatBuffer: %s", d->name,
                               AT(f.base), (long long)packet, compressed ? "decompressed" : "its",
                               f.base, f.err);
            break;
        }
        if (!strcmp(st[s].type, "FRME")) {
            d->out->aps++, rec++;
        } else if (!strcmp(st[s].type, "EVTS") || !strcmp(st[s].type, "IMUS") ||
                   !strcmp(st[s].type, "TRIG")) {
            int events = !strcmp(st[s].type, "EVTS");
            data = count = 0;
            if (fb_field(&f, table, 0, 4, &fpos) ||
                (fpos && fb_vector(&f, fpos, events ? 16 : 4, &data, &count))) {
                rc = qkf_set_error("%s: byte %zu (packet %lld, %s byte %zu): FlatBuffer: %s",
                                   d->name, AT(f.base), (long long)packet,
                                   compressed ? "decompressed" : "its", f.base, f.err);
                break;
            }
            if (!events || s != ev_stream) {
                if (!events)
                    *(st[s].type[0] == 'I' ? &d->out->imu : &d->out->external) += (int64_t)count;
                else
                    d->out->unknown_packets++;
                rec += (int64_t)count;
                pos += 8 + (size_t)size;
                continue;
            }
            qkf__ev_ensure(d, (int64_t)count);
            for (size_t k = 0; k < count; k++, rec++) {
                const uint8_t *e = f.b + data + 16 * k;
                int64_t t = (int64_t)qkf__le64(e);
                int x = (int16_t)qkf__le16(e + 8), y = (int16_t)qkf__le16(e + 10), on = e[12];
                size_t eo = 4 + data + 16 * k;
                if (on > 1) {
                    rc = qkf_set_error("%s: byte %zu (packet %lld, %s byte %zu, event %lld): "
                                       "polarity byte %d is not a bool",
                                       d->name, AT(eo + 12), (long long)packet,
                                       compressed ? "decompressed" : "its", eo + 12,
                                       (long long)rec, on);
                    break;
                }
                if (qkf__ev_emit(d, t, x, y, on, AT(eo), rec)) {
                    rc = -1;
                    break;
                }
            }
            if (rc)
                break;
        } else {
            d->out->unknown_packets++;
        }
#undef AT
        pos += 8 + (size_t)size;
    }
    qkf_free(dec);
    if (dx.lz)
        LZ4F_freeDecompressionContext(dx.lz);
    if (dx.zs)
        ZSTD_freeDCtx(dx.zs);
    d->out->records = rec;
    return rc;
}

/* ---- the writer ---------------------------------------------------------------------------- */

#define EVENTS_PER_PACKET 4096

static size_t put_ioheader(uint8_t *b, int comp, const char *xml)
{
    /* root uoffset -> table at 24; "IOHE"; vtable at 8 (10 bytes); table: soffset, compression,
     * (pad) dataTablePosition at +8, infoNode uoffset at +16 -> string at 44 */
    size_t xl = strlen(xml), n = 44 + 4 + xl + 1;
    n = (n + 3) & ~(size_t)3;
    if (!b)
        return n;
    memset(b, 0, n);
    qkf__put_le32(b, 24);
    memcpy(b + 4, "IOHE", 4);
    qkf__put_le16(b + 8, 10);
    qkf__put_le16(b + 10, 20);
    qkf__put_le16(b + 12, 4);
    qkf__put_le16(b + 14, 8);
    qkf__put_le16(b + 16, 16);
    qkf__put_le32(b + 24, 16); /* soffset: the vtable is 16 bytes before */
    qkf__put_le32(b + 28, (uint32_t)comp);
    qkf__put_le64(b + 32, (uint64_t)(int64_t)-1);
    qkf__put_le32(b + 40, 4); /* the string at 44 */
    qkf__put_le32(b + 44, (uint32_t)xl);
    memcpy(b + 48, xml, xl);
    return n;
}

int qkf_events_encode_aedat4(const qkf_events *e, qkf_aedat4_compression c, uint8_t **buf,
                             size_t *len)
{
    *buf = NULL;
    *len = 0;
    if ((int)c < 0 || c > QKF_AEDAT4_ZSTD_HIGH)
        return qkf_set_error("unknown AEDAT 4 compression %d", (int)c);
    for (int64_t i = 0; i < e->n; i++) {
        const qkf_event *v = &e->ev[i];
        if (v->x > INT16_MAX || v->y > INT16_MAX || v->p > 1 || v->t < 0 ||
            (i && v->t < e->ev[i - 1].t))
            return qkf_set_error("event %lld: x = %d, y = %d, p = %d, t = %lld cannot be stored "
                                 "as an AEDAT 4.0 polarity event (timestamps must not decrease)",
                                 (long long)i, v->x, v->y, v->p, (long long)v->t);
    }
    if (e->width < 1 || e->height < 1 || e->width > INT16_MAX || e->height > INT16_MAX)
        return qkf_set_error("a %dx%d sensor cannot be stored in AEDAT 4.0", e->width, e->height);
    static const char *cn[] = {"NONE", "LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH"};
    char xml[1024];
    snprintf(xml, sizeof xml,
             "<dv version=\"2.0\">\n"
             "    <node name=\"outInfo\" path=\"/mainloop/Recorder/outInfo/\">\n"
             "        <node name=\"0\" path=\"/mainloop/Recorder/outInfo/0/\">\n"
             "            <attr key=\"compression\" type=\"string\">%s</attr>\n"
             "            <attr key=\"originalModuleName\" type=\"string\">qkf</attr>\n"
             "            <attr key=\"originalOutputName\" type=\"string\">events</attr>\n"
             "            <attr key=\"typeDescription\" type=\"string\">Array of events "
             "(polarity ON/OFF).</attr>\n"
             "            <attr key=\"typeIdentifier\" type=\"string\">EVTS</attr>\n"
             "            <node name=\"info\" path=\"/mainloop/Recorder/outInfo/0/info/\">\n"
             "                <attr key=\"sizeX\" type=\"int\">%d</attr>\n"
             "                <attr key=\"sizeY\" type=\"int\">%d</attr>\n"
             "                <attr key=\"source\" type=\"string\">qkf</attr>\n"
             "            </node>\n"
             "        </node>\n"
             "    </node>\n"
             "</dv>\n",
             cn[c], e->width, e->height);
    size_t hl = put_ioheader(NULL, (int)c, xml);
    int64_t packets = (e->n + EVENTS_PER_PACKET - 1) / EVENTS_PER_PACKET;
    size_t raw_max = 32 + 16 * (size_t)EVENTS_PER_PACKET, bound = raw_max;
    if (c == QKF_AEDAT4_LZ4 || c == QKF_AEDAT4_LZ4_HIGH)
        bound = LZ4F_compressFrameBound(raw_max, NULL);
    else if (c != QKF_AEDAT4_NONE)
        bound = ZSTD_compressBound(raw_max);
    size_t cap = VERSION_LEN + 4 + hl + (size_t)packets * (8 + bound);
    uint8_t *b = qkf_malloc(cap), *raw = qkf_malloc(raw_max);
    memcpy(b, VERSION_LINE, VERSION_LEN);
    qkf__put_le32(b + VERSION_LEN, (uint32_t)hl);
    put_ioheader(b + VERSION_LEN + 4, (int)c, xml);
    size_t w = VERSION_LEN + 4 + hl;
    for (int64_t i = 0; i < e->n; i += EVENTS_PER_PACKET) {
        size_t cnt = (size_t)(e->n - i < EVENTS_PER_PACKET ? e->n - i : EVENTS_PER_PACKET);
        /* size prefix; root -> table at 20; "EVTS"; vtable at 12 (6 bytes); table: soffset 8,
         * elements uoffset -> vector at 28; events at 32 (8-aligned) */
        size_t rl = 32 + 16 * cnt;
        memset(raw, 0, 32);
        qkf__put_le32(raw, (uint32_t)(rl - 4));
        qkf__put_le32(raw + 4, 16);
        memcpy(raw + 8, "EVTS", 4);
        qkf__put_le16(raw + 12, 6);
        qkf__put_le16(raw + 14, 8);
        qkf__put_le16(raw + 16, 4);
        qkf__put_le32(raw + 20, 8);
        qkf__put_le32(raw + 24, 4);
        qkf__put_le32(raw + 28, (uint32_t)cnt);
        for (size_t k = 0; k < cnt; k++) {
            const qkf_event *v = &e->ev[i + (int64_t)k];
            uint8_t *r = raw + 32 + 16 * k;
            qkf__put_le64(r, (uint64_t)v->t);
            qkf__put_le16(r + 8, v->x);
            qkf__put_le16(r + 10, v->y);
            r[12] = v->p;
            r[13] = r[14] = r[15] = 0;
        }
        uint8_t *ph = b + w;
        size_t n;
        if (c == QKF_AEDAT4_NONE) {
            memcpy(ph + 8, raw, rl);
            n = rl;
        } else if (c == QKF_AEDAT4_LZ4 || c == QKF_AEDAT4_LZ4_HIGH) {
            LZ4F_preferences_t pr;
            memset(&pr, 0, sizeof pr);
            pr.compressionLevel = c == QKF_AEDAT4_LZ4_HIGH ? 9 : 0;
            n = LZ4F_compressFrame(ph + 8, bound, raw, rl, &pr);
            if (LZ4F_isError(n)) {
                qkf_free(b), qkf_free(raw);
                return qkf_set_error("LZ4 compression failed: %s", LZ4F_getErrorName(n));
            }
        } else {
            n = ZSTD_compress(ph + 8, bound, raw, rl, c == QKF_AEDAT4_ZSTD_HIGH ? 19 : 3);
            if (ZSTD_isError(n)) {
                qkf_free(b), qkf_free(raw);
                return qkf_set_error("Zstd compression failed: %s", ZSTD_getErrorName(n));
            }
        }
        qkf__put_le32(ph, 0);
        qkf__put_le32(ph + 4, (uint32_t)n);
        w += 8 + n;
    }
    qkf_free(raw);
    *buf = b;
    *len = w;
    return 0;
}
