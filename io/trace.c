/* Trace writer: record specs, the NIR-layout HDF5 file, and the streaming machinery behind it.
 *
 * A spec (one qkf_trace_record per --record) is resolved against the model graph into slots, one
 * per recorded (layer, observable), each with its neurons, steps and samples. Producers pack the
 * selected values of a slot into blocks inside one ring buffer of spec->buffer_bytes, allocated
 * at open; a block is a 64-byte header plus either a float32 grid [rows][steps][neurons] or the
 * events (int32 idx[], float32 time[]) of one sample. Producers reserve space under a mutex, fill
 * it outside, and mark it ready; when the ring is full they wait on a condition variable. One
 * writer thread (libuv thread primitives) takes blocks in ring order, appends each to its
 * datasets (extend, then write one hyperslab) and flushes; it makes every HDF5 call of the trace,
 * from H5Fcreate to H5Fclose, because serial HDF5 belongs to one thread.
 *
 * Datasets are chunked and extendable along the sample axis (and the event axis), compressed with
 * shuffle + gzip, created before H5Fstart_swmr_write (SWMR forbids creating objects afterwards).
 * Grid chunks are one (sample, step) row, so every block write covers whole chunks and needs no
 * chunk cache. Unwritten grid values read as NaN, unwritten events as idx -1 / time +inf (the
 * NIR padding), so a block lost to a kill is visible as such. */
#define _POSIX_C_SOURCE 200809L
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>
#include <uv.h>
#include <zlib.h>

#include "../kernels/base.h"
#include "h5_internal.h"

#define HDR 64                   /* block header bytes; every block size is a multiple of it */
#define GRID_CHUNK_MAX (4 << 20) /* neurons per grid chunk (16 MiB): a chunk is a whole row */
#define DIRECT_MIN 4096          /* row bytes from which the worker pool compresses chunks */
#define MAX_JOBS 8               /* compression jobs per block */
#define EVENT_CHUNK 4096         /* events per chunk of idx / time */
#define EV_WINDOW 8192           /* samples whose event rows may be open at once per layer */
#define FLUSH_EVERY 0.05         /* seconds between flushes while blocks keep arriving */
#define TRACE_FORMAT 1

static const char *const obs_names[QKF_TRACE_NOBS] = {"v", "h", "input", "spikes"};

/* ---- SHA-256 (FIPS 180-4) --------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} sha256_ctx;

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(sha256_ctx *c, const uint8_t *p)
{
    uint32_t w[64], s[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, c->h, sizeof s);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = s[7] + (ror(s[4], 6) ^ ror(s[4], 11) ^ ror(s[4], 25)) +
                      ((s[4] & s[5]) ^ (~s[4] & s[6])) + sha_k[i] + w[i];
        uint32_t t2 = (ror(s[0], 2) ^ ror(s[0], 13) ^ ror(s[0], 22)) +
                      ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
        memmove(s + 1, s, 7 * sizeof(uint32_t));
        s[4] += t1;
        s[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        c->h[i] += s[i];
}

static void sha_init(sha256_ctx *c)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->len = 0;
    c->nbuf = 0;
}

static void sha_update(sha256_ctx *c, const uint8_t *p, size_t n)
{
    c->len += n;
    while (n > 0) {
        size_t k = 64 - c->nbuf < n ? 64 - c->nbuf : n;
        memcpy(c->buf + c->nbuf, p, k);
        c->nbuf += k, p += k, n -= k;
        if (c->nbuf == 64) {
            sha_block(c, c->buf);
            c->nbuf = 0;
        }
    }
}

static void sha_final(sha256_ctx *c, uint8_t out[32])
{
    uint64_t bits = c->len * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha_update(c, &pad, 1);
    while (c->nbuf != 56)
        sha_update(c, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(c, len, 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(c->h[i] >> (24 - 8 * j));
}

void qkf_sha256(const void *data, size_t n, uint8_t digest[32])
{
    sha256_ctx c;
    sha_init(&c);
    sha_update(&c, data, n);
    sha_final(&c, digest);
}

int qkf_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
    sha256_ctx c;
    sha_init(&c);
    uint8_t *buf = qkf_malloc(1 << 16), d[32];
    size_t n;
    while ((n = fread(buf, 1, 1 << 16, f)) > 0)
        sha_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    qkf_free(buf);
    if (bad)
        return qkf_set_error("%s: read error while computing its SHA-256", path);
    sha_final(&c, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* ---- specs ------------------------------------------------------------------------------ */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = qkf_malloc(n);
    memcpy(d, s, n);
    return d;
}

void qkf_trace_spec_init(qkf_trace_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->buffer_bytes = (size_t)QKF_TRACE_BUFFER_MB << 20;
}

static void record_free(qkf_trace_record *r)
{
    qkf_free(r->text);
    qkf_free(r->layers);
    qkf_free(r->neuron_ranges);
}

void qkf_trace_spec_free(qkf_trace_spec *spec)
{
    for (int i = 0; i < spec->n_records; i++)
        record_free(&spec->records[i]);
    qkf_free(spec->records);
    spec->records = NULL;
    spec->n_records = 0;
}

int qkf_trace_parse_buffer(qkf_trace_spec *spec, const char *mb)
{
    char *end;
    errno = 0;
    long v = strtol(mb, &end, 10);
    if (!*mb || *end || errno || v < 1 || v > 65536)
        return qkf_set_error("--trace-buffer: '%s' is not a size in MB from 1 to 65536", mb);
    spec->buffer_bytes = (size_t)v << 20;
    return 0;
}

/* A non-negative integer [s, e); 0 on success. */
static int parse_i64(const char *s, const char *e, int64_t *out)
{
    if (s == e || e - s > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = s; p < e; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

/* "A", "A-B" or (open_end) "A-": inclusive; hi = -1 for an open end. */
static int parse_range(const char *s, const char *e, int open_end, qkf_trace_range *r)
{
    const char *dash = memchr(s, '-', (size_t)(e - s));
    if (!dash) {
        r->hi = -2;
        if (parse_i64(s, e, &r->lo))
            return -1;
        r->hi = r->lo;
        return 0;
    }
    if (parse_i64(s, dash, &r->lo))
        return -1;
    if (dash + 1 == e) {
        r->hi = -1;
        return open_end ? 0 : -1;
    }
    return parse_i64(dash + 1, e, &r->hi) || r->hi < r->lo ? -1 : 0;
}

static int check_records(const qkf_trace_spec *spec, const qkf_graph *g);

int qkf_trace_parse_record(qkf_trace_spec *spec, const char *arg, const qkf_graph *g)
{
    qkf_trace_record r;
    memset(&r, 0, sizeof r);
    r.t_hi = -1;
    r.s_hi = -1;
    r.every = 1;
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg)
        return qkf_set_error("--record '%s': expected LAYERS:OBS, e.g. 'stage1.*:v,spikes' or "
                             "'*.attn_lif:spikes'",
                             arg);
    r.text = dup_str(arg);
    r.layers = qkf_malloc((size_t)(colon - arg) + 1);
    memcpy(r.layers, arg, (size_t)(colon - arg));
    r.layers[colon - arg] = 0;
    const char *p = colon + 1;
    /* observables up to the next ':' */
    const char *oe = strchr(p, ':');
    if (!oe)
        oe = p + strlen(p);
    for (const char *q = p; q <= oe;) {
        const char *c = memchr(q, ',', (size_t)(oe - q));
        if (!c)
            c = oe;
        size_t n = (size_t)(c - q);
        int found = 0;
        for (int o = 0; o < QKF_TRACE_NOBS; o++)
            if (strlen(obs_names[o]) == n && strncmp(q, obs_names[o], n) == 0)
                r.obs |= 1u << o, found = 1;
        if (n == 3 && strncmp(q, "all", 3) == 0)
            r.obs = (1u << QKF_TRACE_NOBS) - 1, found = 1;
        if (!found) {
            qkf_set_error("--record '%s': unknown observable '%.*s' (valid: v, h, input, spikes, "
                          "all)",
                          arg, (int)n, q);
            goto fail;
        }
        q = c + 1;
    }
    /* options */
    for (p = *oe ? oe + 1 : oe; *p;) {
        const char *e = strchr(p, ':');
        if (!e)
            e = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (!eq) {
            qkf_set_error("--record '%s': '%.*s' is not KEY=VALUE (keys: neurons, random, seed, "
                          "steps, every, samples)",
                          arg, (int)(e - p), p);
            goto fail;
        }
        size_t kn = (size_t)(eq - p);
        const char *v = eq + 1;
        qkf_trace_range rg = {0, 0};
        int bad = 0;
        if (kn == 7 && !strncmp(p, "neurons", 7)) {
            int cnt = 1;
            for (const char *q = v; q < e; q++)
                cnt += *q == ',';
            qkf_free(r.neuron_ranges);
            r.neuron_ranges = qkf_malloc((size_t)cnt * sizeof rg);
            r.n_neuron_ranges = 0;
            for (const char *q = v; q <= e && !bad;) {
                const char *c = memchr(q, ',', (size_t)(e - q));
                if (!c)
                    c = e;
                bad = parse_range(q, c, 0, &r.neuron_ranges[r.n_neuron_ranges++]);
                q = c + 1;
            }
        } else if (kn == 6 && !strncmp(p, "random", 6)) {
            bad = parse_i64(v, e, &r.random_k) || r.random_k < 1;
        } else if (kn == 4 && !strncmp(p, "seed", 4)) {
            int64_t sd = 0;
            bad = parse_i64(v, e, &sd);
            r.seed = (uint64_t)sd;
            r.has_seed = 1;
        } else if (kn == 5 && !strncmp(p, "steps", 5)) {
            bad = parse_range(v, e, 1, &rg);
            r.t_lo = rg.lo, r.t_hi = rg.hi;
        } else if (kn == 5 && !strncmp(p, "every", 5)) {
            int64_t k = 0;
            bad = parse_i64(v, e, &k) || k < 1 || k > 1 << 20;
            r.every = (int)k;
        } else if (kn == 7 && !strncmp(p, "samples", 7)) {
            bad = parse_range(v, e, 1, &rg);
            r.s_lo = rg.lo, r.s_hi = rg.hi;
        } else {
            qkf_set_error("--record '%s': unknown key '%.*s' (keys: neurons, random, seed, steps, "
                          "every, samples)",
                          arg, (int)kn, p);
            goto fail;
        }
        if (bad) {
            qkf_set_error("--record '%s': bad value in '%.*s' (ranges are A or A-B with A <= B, "
                          "counts are positive integers)",
                          arg, (int)(e - p), p);
            goto fail;
        }
        p = *e ? e + 1 : e;
    }
    qkf_trace_record *nr = qkf_malloc((size_t)(spec->n_records + 1) * sizeof(qkf_trace_record));
    if (spec->n_records)
        memcpy(nr, spec->records, (size_t)spec->n_records * sizeof *nr);
    nr[spec->n_records] = r;
    qkf_free(spec->records);
    spec->records = nr;
    spec->n_records++;
    if (g && check_records(spec, g)) {
        spec->n_records--;
        record_free(&spec->records[spec->n_records]);
        return -1;
    }
    return 0;
fail:
    record_free(&r);
    return -1;
}

/* Appends to a bounded string; once full, ends it with "..." and ignores the rest. */
typedef struct {
    char *s;
    size_t cap, len;
} strbuf;

static void sb_add(strbuf *b, const char *text, size_t n)
{
    if (b->len + n + 4 >= b->cap) {
        if (b->len + 4 < b->cap)
            b->len += (size_t)snprintf(b->s + b->len, b->cap - b->len, "...");
        b->len = b->cap; /* full */
        return;
    }
    memcpy(b->s + b->len, text, n);
    b->len += n;
    b->s[b->len] = 0;
}

/* The LIF layers as a short list for error messages: stage block indices become '*' and names
 * sharing a parent are grouped: "patch_embed1.{proj_lif,proj1_lif}, stage1.*.tssa.{q_lif,...}". */
static void layer_list(const qkf_graph *g, char *out, size_t cap)
{
    char(*gen)[QKF_MAX_NAME] = qkf_malloc((size_t)g->n_lif * QKF_MAX_NAME);
    int n = 0;
    for (int l = 0; l < g->n_lif; l++) {
        const char *name = g->ops[g->lif_ops[l]].name, *dot = strchr(name, '.');
        char buf[QKF_MAX_NAME];
        snprintf(buf, sizeof buf, "%s", name);
        if (!strncmp(name, "stage", 5) && dot && dot[1] >= '0' && dot[1] <= '9') {
            const char *rest = dot + 1;
            while (*rest >= '0' && *rest <= '9')
                rest++;
            snprintf(buf, sizeof buf, "%.*s.*%s", (int)(dot - name), name, rest);
        }
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = !strcmp(gen[i], buf);
        if (!dup)
            memcpy(gen[n++], buf, sizeof buf);
    }
    strbuf b = {out, cap, 0};
    out[0] = 0;
    for (int i = 0; i < n;) {
        const char *dot = strrchr(gen[i], '.');
        size_t plen = dot ? (size_t)(dot - gen[i]) + 1 : 0;
        int j = i + 1;
        while (j < n && plen && !strncmp(gen[j], gen[i], plen) && !strchr(gen[j] + plen, '.'))
            j++;
        if (i)
            sb_add(&b, ", ", 2);
        if (j - i == 1) {
            sb_add(&b, gen[i], strlen(gen[i]));
        } else {
            sb_add(&b, gen[i], plen);
            sb_add(&b, "{", 1);
            for (int k = i; k < j; k++) {
                if (k > i)
                    sb_add(&b, ",", 1);
                sb_add(&b, gen[k] + plen, strlen(gen[k] + plen));
            }
            sb_add(&b, "}", 1);
        }
        i = j;
    }
    qkf_free(gen);
}

/* ---- resolved selections ------------------------------------------------------------------ */

typedef struct {
    int layer, obs;
    const qkf_trace_record *rec;
    int64_t n_layer;  /* neurons of the layer */
    int64_t n_sel;    /* recorded neurons */
    int64_t *neurons; /* [n_sel] ascending, NULL: all */
    int t_lo, every, n_steps;
    int64_t s_lo, s_hi; /* s_hi -1: open */
    char path[QKF_MAX_NAME + 40];
    /* writer state */
    hid_t ds, ds_time;
    int direct; /* grid rows are whole chunks of at least DIRECT_MIN bytes: compressed in the
                   libuv worker pool and written with H5Dwrite_chunk */
    int64_t rows, width;
    int64_t *ev_tag, *ev_cnt; /* events: [EV_WINDOW] (sample, events so far) */
    int64_t ev_evicted;       /* the highest sample whose count was evicted, or -1 */
} slot;

static int same_selection(const qkf_trace_record *a, const qkf_trace_record *b)
{
    if (a->n_neuron_ranges != b->n_neuron_ranges || a->random_k != b->random_k ||
        a->has_seed != b->has_seed || a->seed != b->seed || a->t_lo != b->t_lo ||
        a->t_hi != b->t_hi || a->every != b->every || a->s_lo != b->s_lo || a->s_hi != b->s_hi)
        return 0;
    for (int i = 0; i < a->n_neuron_ranges; i++)
        if (a->neuron_ranges[i].lo != b->neuron_ranges[i].lo ||
            a->neuron_ranges[i].hi != b->neuron_ranges[i].hi)
            return 0;
    return 1;
}

/* slot_of[l * NOBS + o] = the record that selects (l, o), or -1. Checks names and overlaps. */
static int match_records(const qkf_trace_spec *spec, const qkf_graph *g, int *rec_of)
{
    for (int i = 0; i < g->n_lif * QKF_TRACE_NOBS; i++)
        rec_of[i] = -1;
    for (int r = 0; r < spec->n_records; r++) {
        const qkf_trace_record *rc = &spec->records[r];
        int matched = 0;
        for (int l = 0; l < g->n_lif; l++) {
            const char *name = g->ops[g->lif_ops[l]].name;
            if (fnmatch(rc->layers, name, 0) != 0)
                continue;
            matched++;
            for (int o = 0; o < QKF_TRACE_NOBS; o++) {
                if (!(rc->obs & (1u << o)))
                    continue;
                int *cur = &rec_of[l * QKF_TRACE_NOBS + o];
                if (*cur >= 0 && !same_selection(&spec->records[*cur], rc))
                    return qkf_set_error("--record '%s' and '%s' both record %s of %s, with "
                                         "different selections",
                                         spec->records[*cur].text, rc->text, obs_names[o], name);
                if (*cur < 0)
                    *cur = r;
            }
        }
        if (!matched) {
            char list[800];
            layer_list(g, list, sizeof list);
            return qkf_set_error("--record '%s': no LIF layer matches '%s' (layers: %s)", rc->text,
                                 rc->layers, list);
        }
    }
    return 0;
}

/* Steps, samples and neurons of record rc for layer l. neurons: NULL for all, else a
 * qkf_malloc'ed ascending list. */
static int select_for(const qkf_trace_spec *spec, const qkf_graph *g, const qkf_trace_record *rc,
                      int l, slot *s)
{
    const char *name = g->ops[g->lif_ops[l]].name;
    int T = g->cfg.T;
    int64_t n = qkf_graph_lif_neurons(g, l);
    int64_t t_hi = rc->t_hi < 0 ? T - 1 : rc->t_hi;
    if (rc->t_lo >= T || t_hi >= T)
        return qkf_set_error("--record '%s': steps %" PRId64 "-%" PRId64 " outside 0-%d (T = %d)",
                             rc->text, rc->t_lo, t_hi, T - 1, T);
    s->t_lo = (int)rc->t_lo;
    s->every = rc->every;
    s->n_steps = (int)((t_hi - rc->t_lo) / rc->every + 1);
    s->s_lo = rc->s_lo;
    s->s_hi = rc->s_hi;
    s->n_layer = n;
    s->neurons = NULL;
    s->n_sel = n;
    if (!rc->n_neuron_ranges && !rc->random_k)
        return 0;
    uint8_t *mark = qkf_calloc((size_t)n, 1);
    int64_t cand = 0;
    if (rc->n_neuron_ranges) {
        for (int i = 0; i < rc->n_neuron_ranges; i++) {
            const qkf_trace_range *r = &rc->neuron_ranges[i];
            if (r->hi >= n) {
                qkf_free(mark);
                return qkf_set_error("--record '%s': neurons %" PRId64 "-%" PRId64 " outside "
                                     "layer %s, which has %" PRId64 " (0-%" PRId64 ")",
                                     rc->text, r->lo, r->hi, name, n, n - 1);
            }
            for (int64_t j = r->lo; j <= r->hi; j++)
                cand += !mark[j], mark[j] = 1;
        }
    } else {
        memset(mark, 1, (size_t)n);
        cand = n;
    }
    if (rc->random_k && rc->random_k < cand) {
        /* Floyd's sampling of k of the cand candidate positions, then back to neuron indices. */
        int64_t *pos = qkf_malloc((size_t)cand * sizeof(int64_t));
        int64_t m = 0;
        for (int64_t j = 0; j < n; j++)
            if (mark[j])
                pos[m++] = j;
        uint8_t *pick = qkf_calloc((size_t)cand, 1);
        qkf_rng rng;
        uint64_t seed = rc->has_seed ? rc->seed : spec->seed;
        qkf_rng_seed(&rng, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(l + 1)));
        for (int64_t j = cand - rc->random_k; j < cand; j++) {
            int64_t r = (int64_t)(qkf_rng_u64(&rng) % (uint64_t)(j + 1));
            pick[pick[r] ? j : r] = 1;
        }
        memset(mark, 0, (size_t)n);
        for (int64_t j = 0; j < cand; j++)
            if (pick[j])
                mark[pos[j]] = 1;
        cand = rc->random_k;
        qkf_free(pick);
        qkf_free(pos);
    }
    if (cand == n) { /* every neuron after all */
        qkf_free(mark);
        return 0;
    }
    s->neurons = qkf_malloc((size_t)cand * sizeof(int64_t));
    s->n_sel = 0;
    for (int64_t j = 0; j < n; j++)
        if (mark[j])
            s->neurons[s->n_sel++] = j;
    qkf_free(mark);
    return 0;
}

static int check_records(const qkf_trace_spec *spec, const qkf_graph *g)
{
    int *rec_of = qkf_malloc((size_t)g->n_lif * QKF_TRACE_NOBS * sizeof(int));
    int rc = match_records(spec, g, rec_of);
    for (int i = 0; i < g->n_lif * QKF_TRACE_NOBS && !rc; i++) {
        if (rec_of[i] < 0)
            continue;
        slot s;
        rc = select_for(spec, g, &spec->records[rec_of[i]], i / QKF_TRACE_NOBS, &s);
        if (!rc)
            qkf_free(s.neurons);
    }
    qkf_free(rec_of);
    return rc;
}

/* ---- the trace ------------------------------------------------------------------------- */

enum { BLK_PAD = 0, BLK_GRID, BLK_EVENTS, BLK_SYNC };

typedef struct {
    int32_t kind, ready, slot, nrows;
    int64_t row; /* first sample row of the dataset (sample - s_lo) */
    int32_t t0, nt;
    int64_t nev;
    uint64_t size, seq;
} blk;
_Static_assert(sizeof(blk) <= HDR, "block header larger than HDR");

struct qkf_trace {
    char *path;
    const qkf_graph *g;
    int n_slots;
    slot *slots;
    int *slot_of;         /* [n_lif * NOBS] -> slot or -1 */
    int64_t *next_sample; /* [n_lif]: put_layer, samples seen */
    qkf_lif_sink sink;    /* what engines call (qkf_trace_sink) */
    int delay_us;
    /* provenance, prepared on the opening thread */
    char *config_json, *cmdline, *engine, *weights;
    char sha[65];
    uint64_t seed;
    const qkf_qmodel *q; /* integer traces: membrane units (qkf_trace_spec.qmodel) */
    int no_compress;
    int force;
    /* ring */
    uint8_t *ring;
    size_t cap, head, tail, used, max_block;
    /* compression: scratch for a block's compressed chunks, their lengths, the writer's loop */
    uint8_t *zbuf;
    size_t zcap;
    uLongf *zlen;
    int zmax;
    uv_loop_t loop;
    uint64_t seq, done_seq;
    uv_mutex_t mu;
    uv_cond_t not_full, not_empty, done;
    uv_thread_t thread;
    int ready;    /* writer: 1 file created, -1 failed */
    int stop;     /* no more blocks: finish */
    int aborting; /* discard and stop */
    int failed;   /* the writer hit an error (err) */
    char err[1024];
    qkf_trace_stats st;
    /* writer-only */
    hid_t fid;
    double last_flush;
    int dirty;
};

static size_t align_hdr(size_t n) { return (n + HDR - 1) / HDR * HDR; }

/* Reserves a block of kind with payload bytes; waits for room. NULL when the writer failed or the
 * trace is stopping (error recorded on this thread). */
static blk *reserve(qkf_trace *tr, int kind, size_t payload)
{
    size_t need = align_hdr(HDR + payload);
    int waited = 0;
    uv_mutex_lock(&tr->mu);
    for (;;) {
        if (tr->failed || tr->aborting) {
            uv_mutex_unlock(&tr->mu);
            return tr->failed ? (qkf_set_error("%s", tr->err), NULL)
                              : (qkf_set_error("%s: trace aborted", tr->path), NULL);
        }
        size_t at = SIZE_MAX;
        if (tr->used == 0) {
            tr->head = tr->tail = 0;
            at = 0;
        } else if (tr->head > tr->tail) {
            if (tr->cap - tr->head >= need) {
                at = tr->head;
            } else if (tr->tail >= need) {
                blk *pad = (blk *)(tr->ring + tr->head);
                memset(pad, 0, sizeof *pad);
                pad->kind = BLK_PAD;
                pad->ready = 1;
                pad->size = tr->cap - tr->head;
                pad->seq = ++tr->seq;
                tr->used += tr->cap - tr->head;
                tr->head = 0;
                at = 0;
            }
        } else if (tr->head < tr->tail && tr->tail - tr->head >= need) {
            at = tr->head;
        }
        if (at != SIZE_MAX)
            break;
        waited = 1;
        uv_cond_wait(&tr->not_full, &tr->mu);
    }
    blk *b = (blk *)(tr->ring + tr->head);
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->size = need;
    b->seq = ++tr->seq;
    tr->head += need;
    if (tr->head == tr->cap)
        tr->head = 0;
    tr->used += need;
    if (tr->used > tr->st.max_queued)
        tr->st.max_queued = tr->used;
    tr->st.waits += waited;
    tr->st.bytes += (int64_t)payload;
    uv_mutex_unlock(&tr->mu);
    return b;
}

static void commit(qkf_trace *tr, blk *b)
{
    uv_mutex_lock(&tr->mu);
    b->ready = 1;
    uv_cond_signal(&tr->not_empty);
    uv_mutex_unlock(&tr->mu);
}

static void *payload(blk *b) { return (uint8_t *)b + HDR; }

/* ---- writer: HDF5 ------------------------------------------------------------------------ */

/* The innermost message of the HDF5 error stack (the errno text of a failed write). */
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc)
        snprintf(data, 256, "%s", e->desc);
    return 0;
}

static void h5_reason(char *buf, size_t cap)
{
    char desc[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, desc);
    const char *m = strstr(desc, "error message = '");
    if (m) {
        m += strlen("error message = '");
        const char *e = strchr(m, '\'');
        snprintf(buf, cap, "%.*s", e ? (int)(e - m) : (int)strlen(m), m);
    } else {
        snprintf(buf, cap, "%s", desc[0] ? desc : "HDF5 error");
    }
}

/* Records the writer's first error: "<path>: <what> <where> (<why, or HDF5's reason>)". */
static int writer_fail(qkf_trace *tr, const char *what, const char *where, const char *reason)
{
    char why[256];
    if (reason)
        snprintf(why, sizeof why, "%s", reason);
    else
        h5_reason(why, sizeof why);
    uv_mutex_lock(&tr->mu);
    if (!tr->failed) {
        snprintf(tr->err, sizeof tr->err, "%s: %s%s%s (%s)", tr->path, what, where ? " " : "",
                 where ? where : "", why);
        tr->failed = 1;
    }
    uv_cond_broadcast(&tr->not_full);
    uv_cond_broadcast(&tr->done);
    uv_mutex_unlock(&tr->mu);
    return -1;
}

static int attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n, const void *val)
{
    hsize_t len = (hsize_t)n;
    hid_t sid = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &len, NULL);
    hid_t aid = sid < 0 ? -1 : H5Acreate2(obj, name, ftype, sid, H5P_DEFAULT, H5P_DEFAULT);
    int rc = aid < 0 || H5Awrite(aid, mtype, val) < 0 ? -1 : 0;
    if (aid >= 0)
        H5Aclose(aid);
    if (sid >= 0)
        H5Sclose(sid);
    return rc;
}

/* Variable-length UTF-8 strings: h5py gives str, as NIR's reader compares __type__ with str. */
static int attr_str(hid_t obj, const char *name, const char *val)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    int rc = t < 0 || H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0 ||
                     attr(obj, name, t, t, -1, &val)
                 ? -1
                 : 0;
    if (t >= 0)
        H5Tclose(t);
    return rc;
}

static int attr_i64(hid_t obj, const char *name, int64_t v)
{
    return attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, -1, &v);
}

static int attr_f64(hid_t obj, const char *name, double v)
{
    return attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, -1, &v);
}

static hid_t group(hid_t loc, const char *name, const char *type)
{
    hid_t gid = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (gid >= 0 && type && attr_str(gid, "__type__", type)) {
        H5Gclose(gid);
        return -1;
    }
    return gid;
}

/* A chunked, extendable dataset with a fill value, shuffled + gzip unless !compress. */
static hid_t dataset(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                     const hsize_t *dims, const hsize_t *maxdims, const hsize_t *chunk,
                     const void *fill, size_t cache_bytes, int compress)
{
    hid_t sid = H5Screate_simple(rank, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), dapl = H5Pcreate(H5P_DATASET_ACCESS);
    hid_t did = -1;
    if (sid >= 0 && dcpl >= 0 && dapl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
        (!compress || (H5Pset_shuffle(dcpl) >= 0 && H5Pset_deflate(dcpl, 1) >= 0)) &&
        H5Pset_fill_value(dcpl, mtype, fill) >= 0 &&
        H5Pset_chunk_cache(dapl, 521, cache_bytes, 1.0) >= 0)
        did = H5Dcreate2(loc, name, ftype, sid, H5P_DEFAULT, dcpl, dapl);
    if (dapl >= 0)
        H5Pclose(dapl);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (sid >= 0)
        H5Sclose(sid);
    return did;
}

static int create_slot(qkf_trace *tr, hid_t obs_group, slot *s)
{
    hid_t og = group(obs_group, obs_names[s->obs],
                     s->obs == QKF_TRACE_SPIKES ? "EventData" : "TimeGriddedData");
    if (og < 0)
        return -1;
    /* beyond NIR: where the recorded grid lies in the run (steps t_start + i*dt, samples from
     * first_sample) */
    int rc = attr_i64(og, "first_sample", s->s_lo);
    rc |= attr_i64(og, "n_steps", s->n_steps);
    if (s->obs == QKF_TRACE_SPIKES) {
        hsize_t dims[2] = {0, 0}, maxd[2] = {H5S_UNLIMITED, H5S_UNLIMITED},
                ch[2] = {1, EVENT_CHUNK};
        int32_t fill_i = -1;
        float fill_t = INFINITY;
        rc |= attr_i64(og, "n_neurons", s->n_layer);
        rc |= attr_f64(og, "t_max", (double)tr->g->cfg.T);
        rc |= attr_f64(og, "dt", (double)s->every);
        rc |= attr_f64(og, "t_start", (double)s->t_lo);
        if (!rc) {
            s->ds = dataset(og, "idx", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, dims, maxd, ch, &fill_i,
                            1 << 20, 1);
            s->ds_time = dataset(og, "time", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, maxd, ch,
                                 &fill_t, 1 << 20, 1);
            rc |= s->ds < 0 || s->ds_time < 0;
        }
        s->ev_tag = qkf_malloc(EV_WINDOW * sizeof(int64_t));
        s->ev_cnt = qkf_malloc(EV_WINDOW * sizeof(int64_t));
        for (int i = 0; i < EV_WINDOW; i++)
            s->ev_tag[i] = -1;
        s->ev_evicted = -1;
    } else {
        hsize_t dims[3] = {0, (hsize_t)s->n_steps, (hsize_t)s->n_sel};
        hsize_t maxd[3] = {H5S_UNLIMITED, dims[1], dims[2]};
        hsize_t ch[3] = {1, 1, dims[2] < GRID_CHUNK_MAX ? dims[2] : GRID_CHUNK_MAX};
        s->direct = !tr->no_compress && ch[2] == dims[2] && dims[2] * sizeof(float) >= DIRECT_MIN;
        float fill = NAN;
        rc |= attr_f64(og, "dt", (double)s->every);
        rc |= attr_f64(og, "t_start", (double)s->t_lo);
        if (!rc) {
            /* whole-chunk writes only: no chunk cache needed */
            s->ds =
                dataset(og, "data", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, dims, maxd, ch, &fill, 0,
                        !tr->no_compress);
            rc |= s->ds < 0;
        }
    }
    if (!rc && s->neurons) {
        hsize_t n = (hsize_t)s->n_sel;
        hid_t sid = H5Screate_simple(1, &n, NULL);
        hid_t did = sid < 0 ? -1
                            : H5Dcreate2(og, "neurons", H5T_STD_I64LE, sid, H5P_DEFAULT,
                                         H5P_DEFAULT, H5P_DEFAULT);
        rc |= did < 0 ||
              H5Dwrite(did, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->neurons) < 0;
        if (did >= 0)
            H5Dclose(did);
        if (sid >= 0)
            H5Sclose(sid);
    }
    H5Gclose(og);
    return rc ? -1 : 0;
}

static int create_file(qkf_trace *tr)
{
    const qkf_graph *g = tr->g;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        return writer_fail(tr, "cannot set up HDF5 file access", NULL, NULL);
    }
    tr->fid = H5Fcreate(tr->path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (tr->fid < 0)
        return writer_fail(tr, "cannot create the HDF5 file", NULL, NULL);
    int rc = attr_str(tr->fid, "__type__", "NIRGraphData");
    rc |= attr_str(tr->fid, "qkf_version", QKF_VERSION);
    rc |= attr_i64(tr->fid, "qkf_trace_format", TRACE_FORMAT);
    rc |= attr_str(tr->fid, "model_config", tr->config_json);
    rc |= attr_str(tr->fid, "checkpoint", tr->weights ? tr->weights : "");
    rc |= attr_str(tr->fid, "checkpoint_sha256", tr->sha);
    rc |= attr_str(tr->fid, "engine", tr->engine);
    rc |= attr(tr->fid, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, -1, &tr->seed);
    rc |= attr_str(tr->fid, "command_line", tr->cmdline);
    rc |= attr_i64(tr->fid, "T", g->cfg.T);
    if (tr->q) {
        rc |= attr_str(tr->fid, "units", "membrane");
        rc |= attr_str(tr->fid, "hw_name", tr->q->hw_name);
    }
    if (rc)
        return writer_fail(tr, "cannot write provenance attributes", NULL, NULL);
    hid_t nodes = group(tr->fid, "nodes", NULL);
    if (nodes < 0)
        return writer_fail(tr, "cannot create group", "/nodes", NULL);
    for (int i = 0; i < tr->n_slots && !rc;) {
        int l = tr->slots[i].layer;
        const qkf_op *op = &g->ops[g->lif_ops[l]];
        const qkf_tensor *t = &g->tensors[op->out];
        hid_t ng = group(nodes, op->name, "NIRNodeData");
        int64_t shape[3] = {t->c, t->h, t->w};
        rc = ng < 0;
        if (!rc) {
            rc |= attr_f64(ng, "vth", (double)op->vth);
            rc |= attr_i64(ng, "lif_index", l);
            rc |= attr_i64(ng, "n_neurons", qkf_graph_lif_neurons(g, l));
            rc |= attr(ng, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, shape);
            if (tr->q) { /* membrane units: the real value is value * delta[c] */
                const qkf_qop *qo = &tr->q->ops[g->lif_ops[l]];
                int64_t *th = qkf_malloc((size_t)t->c * sizeof(int64_t));
                for (int c = 0; c < t->c; c++)
                    th[c] = qo->theta[c];
                rc |= attr_str(ng, "units", "membrane");
                rc |= attr(ng, "delta", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, t->c, qo->delta);
                rc |= attr(ng, "threshold", H5T_STD_I64LE, H5T_NATIVE_INT64, t->c, th);
                qkf_free(th);
            }
            hid_t obs = group(ng, "observables", NULL);
            rc |= obs < 0;
            for (; !rc && i < tr->n_slots && tr->slots[i].layer == l; i++)
                rc |= create_slot(tr, obs, &tr->slots[i]);
            if (obs >= 0)
                H5Gclose(obs);
        }
        if (ng >= 0)
            H5Gclose(ng);
        if (rc) {
            H5Gclose(nodes);
            return writer_fail(tr, "cannot create the datasets of", op->name, NULL);
        }
    }
    H5Gclose(nodes);
    /* From here on readers may open the file (h5py: swmr=True) while it grows. */
    if (H5Fstart_swmr_write(tr->fid) < 0)
        return writer_fail(tr, "cannot start single-writer/multiple-reader mode", NULL, NULL);
    return 0;
}

static int extend(hid_t ds, const hsize_t *dims) { return H5Dset_extent(ds, dims) < 0 ? -1 : 0; }

/* Compression in the libuv worker pool. HDF5's filter pipeline for our datasets is shuffle, then
 * deflate (zlib's compress2); a job applies both to whole chunks, so the writer can store the
 * result with H5Dwrite_chunk and HDF5 itself reads it back as usual. zlib is thread-safe; HDF5
 * stays on the writer thread. */
typedef struct {
    uv_work_t req; /* first: the callback gets this pointer */
    uint8_t *src;  /* chunks c0..c1-1 of `row` bytes each, from src (shuffled in place) */
    size_t row, bound;
    int c0, c1;
    uint8_t *dst; /* chunk c compresses to dst + c * bound */
    uLongf *len;
    int failed;
} zjob;

static void zwork(uv_work_t *req)
{
    zjob *j = (zjob *)req;
    size_t n = j->row / 4;
    for (int c = j->c0; c < j->c1 && !j->failed; c++) {
        uint8_t *src = j->src + (size_t)c * j->row, *dst = j->dst + (size_t)c * j->bound;
        for (size_t i = 0; i < n; i++) /* H5Z shuffle, element size 4: byte planes */
            for (size_t k = 0; k < 4; k++)
                dst[k * n + i] = src[i * 4 + k];
        memcpy(src, dst, j->row);
        j->len[c] = (uLongf)j->bound;
        j->failed = compress2(dst, &j->len[c], src, (uLong)j->row, 1) != Z_OK;
    }
}

static void zdone(uv_work_t *req, int status) { (void)req, (void)status; }

/* A grid block through the worker pool: 1 when it cannot be (the caller writes it the usual
 * way), 0 done, -1 error. */
static int write_grid_direct(qkf_trace *tr, slot *s, blk *b)
{
    int n = b->nrows * b->nt;
    size_t row = (size_t)s->n_sel * sizeof(float), bound = compressBound((uLong)row);
    if (!s->direct || n > tr->zmax || (size_t)n * bound > tr->zcap)
        return 1;
    zjob jobs[MAX_JOBS];
    int J = n < MAX_JOBS ? n : MAX_JOBS;
    for (int k = 0; k < J; k++) {
        jobs[k] = (zjob){.src = payload(b),
                         .row = row,
                         .bound = bound,
                         .c0 = k * n / J,
                         .c1 = (k + 1) * n / J,
                         .dst = tr->zbuf,
                         .len = tr->zlen};
        /* one chunk (the event engine's blocks): not worth a trip through the pool */
        if (J == 1 || uv_queue_work(&tr->loop, &jobs[k].req, zwork, zdone) != 0)
            zwork(&jobs[k].req);
    }
    if (J > 1)
        uv_run(&tr->loop, UV_RUN_DEFAULT); /* returns once every job is done */
    for (int k = 0; k < J; k++)
        if (jobs[k].failed)
            return 1; /* zlib out of memory: let HDF5 try */
    for (int c = 0; c < n; c++) {
        hsize_t off[3] = {(hsize_t)(b->row + c / b->nt), (hsize_t)(b->t0 + c % b->nt), 0};
        if (H5Dwrite_chunk(s->ds, H5P_DEFAULT, 0, off, (size_t)tr->zlen[c],
                           tr->zbuf + (size_t)c * bound) < 0)
            return -1;
    }
    return 0;
}

static int write_block(qkf_trace *tr, blk *b)
{
    slot *s = &tr->slots[b->slot];
    if (b->kind == BLK_GRID) {
        int64_t rows = b->row + b->nrows;
        if (rows > s->rows) {
            hsize_t d[3] = {(hsize_t)rows, (hsize_t)s->n_steps, (hsize_t)s->n_sel};
            if (extend(s->ds, d))
                return -1;
            s->rows = rows;
        }
        int rc = write_grid_direct(tr, s, b);
        if (rc <= 0)
            return rc;
        hsize_t st[3] = {(hsize_t)b->row, (hsize_t)b->t0, 0};
        hsize_t ct[3] = {(hsize_t)b->nrows, (hsize_t)b->nt, (hsize_t)s->n_sel};
        return qkf_h5_write_slab(s->ds, H5T_NATIVE_FLOAT, 3, st, ct, payload(b));
    }
    /* events of one sample, appended to its row */
    int k = (int)(b->row % EV_WINDOW);
    if (s->ev_tag[k] != b->row) {
        if (b->row <= s->ev_evicted) {
            char why[128];
            snprintf(why, sizeof why,
                     "events of sample %" PRId64 " came after those of %d later "
                     "samples",
                     b->row + s->s_lo, EV_WINDOW);
            return writer_fail(tr, "cannot append to", s->path, why);
        }
        if (s->ev_tag[k] > s->ev_evicted)
            s->ev_evicted = s->ev_tag[k];
        s->ev_tag[k] = b->row;
        s->ev_cnt[k] = 0;
    }
    int64_t c0 = s->ev_cnt[k], rows = b->row + 1 > s->rows ? b->row + 1 : s->rows;
    int64_t width = c0 + b->nev > s->width ? c0 + b->nev : s->width;
    if (rows != s->rows || width != s->width) {
        hsize_t d[2] = {(hsize_t)rows, (hsize_t)width};
        if (extend(s->ds, d) || extend(s->ds_time, d))
            return -1;
        s->rows = rows;
        s->width = width;
    }
    if (b->nev > 0) {
        hsize_t st[2] = {(hsize_t)b->row, (hsize_t)c0}, ct[2] = {1, (hsize_t)b->nev};
        const int32_t *idx = payload(b);
        if (qkf_h5_write_slab(s->ds, H5T_NATIVE_INT32, 2, st, ct, idx) ||
            qkf_h5_write_slab(s->ds_time, H5T_NATIVE_FLOAT, 2, st, ct, idx + b->nev))
            return -1;
    }
    s->ev_cnt[k] = c0 + b->nev;
    return 0;
}

/* HDF5 cannot undo a failed write: the end-of-file address it then stores in the superblock lies
 * beyond the real end and no reader opens the file again. So the writer stops cleanly before a
 * block that might not fit under the file size limit (ulimit -f) or on the disk, leaving the file
 * as of its last flush. The margin covers compression overhead and index metadata. */
static int check_room(qkf_trace *tr, const blk *b)
{
    uint64_t need = b->size + b->size / 8 + (64u << 10);
    hsize_t eoa = 0;
    struct stat st;
    uint64_t size = H5Fget_filesize(tr->fid, &eoa) >= 0 ? (uint64_t)eoa : 0;
    if (stat(tr->path, &st) == 0 && (uint64_t)st.st_size > size)
        size = (uint64_t)st.st_size;
    char why[256];
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        size + need > (uint64_t)rl.rlim_cur) {
        snprintf(why, sizeof why,
                 "%s: the file size limit (ulimit -f) of %llu bytes is reached; "
                 "the trace holds every block before it",
                 strerror(EFBIG), (unsigned long long)rl.rlim_cur);
        return writer_fail(tr, "stopped before", tr->slots[b->slot].path, why);
    }
    struct statvfs vfs;
    if (statvfs(tr->path, &vfs) == 0) {
        uint64_t avail = (uint64_t)(geteuid() == 0 ? vfs.f_bfree : vfs.f_bavail) * vfs.f_frsize;
        if (avail < need) {
            snprintf(why, sizeof why,
                     "%s: %llu bytes free; the trace holds every block before "
                     "it",
                     strerror(ENOSPC), (unsigned long long)avail);
            return writer_fail(tr, "stopped before", tr->slots[b->slot].path, why);
        }
    }
    return 0;
}

static void sleep_us(int us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void writer_main(void *arg)
{
    qkf_trace *tr = arg;
    /* A file size limit (ulimit -f) must give this thread EFBIG, not kill the process. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = uv_loop_init(&tr->loop) ? -1 : 0;
    if (rc)
        writer_fail(tr, "cannot start", "the compression loop", "uv_loop_init failed");
    else if ((rc = create_file(tr)) != 0)
        uv_loop_close(&tr->loop);
    uv_mutex_lock(&tr->mu);
    tr->ready = rc ? -1 : 1;
    uv_cond_broadcast(&tr->done);
    uv_mutex_unlock(&tr->mu);
    if (rc) {
        if (tr->fid >= 0)
            H5Fclose(tr->fid);
        tr->fid = H5I_INVALID_HID;
        return;
    }
    tr->last_flush = qkf_now();
    for (;;) {
        uv_mutex_lock(&tr->mu);
        /* the oldest block, once its producer has filled it; or the end */
        while (!(tr->used > 0 && ((blk *)(tr->ring + tr->tail))->ready) &&
               !(tr->used == 0 && tr->stop))
            uv_cond_wait(&tr->not_empty, &tr->mu);
        if (tr->used == 0) {
            uv_mutex_unlock(&tr->mu);
            break;
        }
        blk *b = (blk *)(tr->ring + tr->tail);
        int skip = tr->failed || tr->aborting;
        uv_mutex_unlock(&tr->mu);

        if (!skip && (b->kind == BLK_GRID || b->kind == BLK_EVENTS)) {
            if (tr->delay_us)
                sleep_us(tr->delay_us);
            if (check_room(tr, b) == 0) {
                if (write_block(tr, b))
                    writer_fail(tr, "cannot append to", tr->slots[b->slot].path, NULL);
                else
                    tr->dirty = 1;
            }
        }
        uv_mutex_lock(&tr->mu);
        int last = tr->used == b->size; /* nothing else queued */
        skip = tr->failed || tr->aborting;
        uv_mutex_unlock(&tr->mu);
        /* Flush when caught up, on a sync, or every FLUSH_EVERY seconds: readers (SWMR) see the
         * data, and a killed run keeps it. */
        if (tr->dirty && !skip &&
            (last || b->kind == BLK_SYNC || qkf_now() - tr->last_flush >= FLUSH_EVERY)) {
            if (H5Fflush(tr->fid, H5F_SCOPE_GLOBAL) < 0)
                writer_fail(tr, "cannot flush", NULL, NULL);
            tr->dirty = 0;
            tr->last_flush = qkf_now();
        }
        uv_mutex_lock(&tr->mu);
        if (b->kind == BLK_GRID || b->kind == BLK_EVENTS)
            tr->st.blocks++;
        tr->done_seq = b->seq;
        tr->tail += b->size;
        if (tr->tail == tr->cap)
            tr->tail = 0;
        tr->used -= b->size;
        uv_cond_broadcast(&tr->not_full);
        uv_cond_broadcast(&tr->done);
        uv_mutex_unlock(&tr->mu);
    }
    uv_loop_close(&tr->loop);
    int fail = 0;
    for (int i = 0; i < tr->n_slots; i++) {
        if (tr->slots[i].ds >= 0 && H5Dclose(tr->slots[i].ds) < 0)
            fail = 1;
        if (tr->slots[i].ds_time >= 0 && H5Dclose(tr->slots[i].ds_time) < 0)
            fail = 1;
        tr->slots[i].ds = tr->slots[i].ds_time = H5I_INVALID_HID;
    }
    if (H5Fclose(tr->fid) < 0)
        fail = 1;
    tr->fid = H5I_INVALID_HID;
    uv_mutex_lock(&tr->mu);
    int aborting = tr->aborting;
    uv_mutex_unlock(&tr->mu);
    if (fail && !aborting)
        writer_fail(tr, "cannot finish writing", NULL, NULL);
}

/* ---- producers -------------------------------------------------------------------------- */

/* One sample's values of a grid slot at step index i, in [C][F][N] layout (or per-sample). */
static void pack_row(float *dst, const slot *s, const float *src, int C, int64_t stride_c, int N)
{
    if (!s->neurons) {
        for (int c = 0; c < C; c++)
            memcpy(dst + (int64_t)c * N, src + c * stride_c, (size_t)N * sizeof(float));
        return;
    }
    for (int64_t j = 0; j < s->n_sel; j++) {
        int64_t n = s->neurons[j];
        dst[j] = src[(n / N) * stride_c + n % N];
    }
}

/* Spikes of one sample at one step: appends idx/time, returns the count (or counts only when
 * idx is NULL). */
static int64_t pack_events(int32_t *idx, float *time, const slot *s, const float *src, int C,
                           int64_t stride_c, int N, int t)
{
    int64_t k = 0;
    if (!s->neurons) {
        for (int c = 0; c < C; c++) {
            const float *p = src + c * stride_c;
            for (int n = 0; n < N; n++)
                if (p[n] != 0.0f) {
                    if (idx)
                        idx[k] = (int32_t)((int64_t)c * N + n), time[k] = (float)t;
                    k++;
                }
        }
        return k;
    }
    for (int64_t j = 0; j < s->n_sel; j++) {
        int64_t n = s->neurons[j];
        if (src[(n / N) * stride_c + n % N] != 0.0f) {
            if (idx)
                idx[k] = (int32_t)n, time[k] = (float)t;
            k++;
        }
    }
    return k;
}

static int in_samples(const slot *s, int64_t sample)
{
    return sample >= s->s_lo && (s->s_hi < 0 || sample <= s->s_hi);
}

/* A whole layer of a batch (the sink's put_layer): every recorded observable of layer
 * d->lif_index, B samples. */
static int layer_hook(void *ctx, const qkf_lif_data *d)
{
    qkf_trace *tr = ctx;
    int l = d->lif_index, B = d->B, C = d->C, N = d->N;
    int64_t base = tr->next_sample[l], F = (int64_t)d->T * B;
    tr->next_sample[l] += B;
    for (int o = 0; o < QKF_TRACE_NOBS; o++) {
        int si = tr->slot_of[l * QKF_TRACE_NOBS + o];
        if (si < 0)
            continue;
        const slot *s = &tr->slots[si];
        const float *src = o == QKF_TRACE_V       ? d->v
                           : o == QKF_TRACE_H     ? d->h
                           : o == QKF_TRACE_INPUT ? d->x
                                                  : d->s;
        int x_static = o == QKF_TRACE_INPUT && d->x_static;
        int64_t Fx = x_static ? B : F, stride_c = Fx * N;
        /* the batch's samples inside the selection: b0 .. b1-1 */
        int b0 = 0, b1 = B;
        while (b0 < B && !in_samples(s, base + b0))
            b0++;
        while (b1 > b0 && !in_samples(s, base + b1 - 1))
            b1--;
        if (b0 >= b1)
            continue;
        if (!src)
            return qkf_set_error("%s: the engine did not provide %s of layer %s", tr->path,
                                 obs_names[o], tr->g->ops[tr->g->lif_ops[l]].name);
        if (o == QKF_TRACE_SPIKES) {
            for (int b = b0; b < b1; b++) {
                int64_t tot = 0;
                for (int i = 0; i < s->n_steps; i++) {
                    int64_t f = (int64_t)(s->t_lo + i * s->every) * B + b;
                    tot += pack_events(NULL, NULL, s, src + f * N, C, stride_c, N, 0);
                }
                /* one block for the sample if it fits, else one per step */
                int per_step = HDR + (size_t)tot * 8 > tr->max_block;
                for (int i = 0; i < s->n_steps;) {
                    int i1 = per_step ? i + 1 : s->n_steps;
                    int64_t k = tot;
                    if (per_step) {
                        int64_t f = (int64_t)(s->t_lo + i * s->every) * B + b;
                        k = pack_events(NULL, NULL, s, src + f * N, C, stride_c, N, 0);
                    }
                    blk *bk = reserve(tr, BLK_EVENTS, (size_t)k * 8);
                    if (!bk)
                        return -1;
                    bk->slot = si;
                    bk->row = base + b - s->s_lo;
                    bk->nev = k;
                    int32_t *idx = payload(bk);
                    float *tm = (float *)(idx + k);
                    int64_t m = 0;
                    for (; i < i1; i++) {
                        int t = s->t_lo + i * s->every;
                        int64_t f = (int64_t)t * B + b;
                        m += pack_events(idx + m, tm + m, s, src + f * N, C, stride_c, N, t);
                    }
                    commit(tr, bk);
                }
            }
            continue;
        }
        size_t row_bytes = (size_t)s->n_sel * sizeof(float);
        size_t room = tr->max_block - HDR;
        size_t sample_bytes = row_bytes * (size_t)s->n_steps;
        if (sample_bytes <= room) { /* whole samples per block */
            int per = (int)(room / sample_bytes);
            for (int b = b0; b < b1; b += per) {
                int nr = b1 - b < per ? b1 - b : per;
                blk *bk = reserve(tr, BLK_GRID, sample_bytes * (size_t)nr);
                if (!bk)
                    return -1;
                bk->slot = si, bk->row = base + b - s->s_lo, bk->nrows = nr;
                bk->t0 = 0, bk->nt = s->n_steps;
                float *dst = payload(bk);
                for (int r = 0; r < nr; r++)
                    for (int i = 0; i < s->n_steps; i++) {
                        int64_t f =
                            x_static ? b + r : (int64_t)(s->t_lo + i * s->every) * B + b + r;
                        pack_row(dst, s, src + f * N, C, stride_c, N);
                        dst += s->n_sel;
                    }
                commit(tr, bk);
            }
        } else { /* a sample is larger than a block: steps per block */
            int per = row_bytes <= room ? (int)(room / row_bytes) : 1;
            for (int b = b0; b < b1; b++)
                for (int i0 = 0; i0 < s->n_steps; i0 += per) {
                    int nt = s->n_steps - i0 < per ? s->n_steps - i0 : per;
                    blk *bk = reserve(tr, BLK_GRID, row_bytes * (size_t)nt);
                    if (!bk)
                        return -1;
                    bk->slot = si, bk->row = base + b - s->s_lo, bk->nrows = 1;
                    bk->t0 = i0, bk->nt = nt;
                    float *dst = payload(bk);
                    for (int i = i0; i < i0 + nt; i++) {
                        int64_t f = x_static ? b : (int64_t)(s->t_lo + i * s->every) * B + b;
                        pack_row(dst, s, src + f * N, C, stride_c, N);
                        dst += s->n_sel;
                    }
                    commit(tr, bk);
                }
        }
    }
    return 0;
}

int qkf_trace_put(qkf_trace *tr, int lif_index, int64_t sample, int t, const float *v,
                  const float *h, const float *x, const float *s_in, int64_t n)
{
    const qkf_graph *g = tr->g;
    if (lif_index < 0 || lif_index >= g->n_lif)
        return qkf_set_error("qkf_trace_put: LIF layer %d outside 0-%d", lif_index, g->n_lif - 1);
    const qkf_op *op = &g->ops[g->lif_ops[lif_index]];
    if (n != qkf_graph_lif_neurons(g, lif_index))
        return qkf_set_error("qkf_trace_put: layer %s has %" PRId64 " neurons, not %" PRId64,
                             op->name, qkf_graph_lif_neurons(g, lif_index), n);
    if (sample < 0 || t < 0 || t >= g->cfg.T)
        return qkf_set_error("qkf_trace_put: sample %" PRId64 ", step %d out of range", sample, t);
    const float *srcs[QKF_TRACE_NOBS] = {v, h, x, s_in};
    for (int o = 0; o < QKF_TRACE_NOBS; o++) {
        int si = tr->slot_of[lif_index * QKF_TRACE_NOBS + o];
        if (si < 0)
            continue;
        const slot *s = &tr->slots[si];
        if (!in_samples(s, sample) || t < s->t_lo || (t - s->t_lo) % s->every ||
            (t - s->t_lo) / s->every >= s->n_steps)
            continue;
        if (!srcs[o])
            return qkf_set_error("qkf_trace_put: layer %s records %s, which was not given",
                                 op->name, obs_names[o]);
        int i = (t - s->t_lo) / s->every;
        if (o == QKF_TRACE_SPIKES) {
            int64_t k = pack_events(NULL, NULL, s, srcs[o], 1, 0, (int)n, t);
            blk *bk = reserve(tr, BLK_EVENTS, (size_t)k * 8);
            if (!bk)
                return -1;
            bk->slot = si, bk->row = sample - s->s_lo, bk->nev = k;
            int32_t *idx = payload(bk);
            pack_events(idx, (float *)(idx + k), s, srcs[o], 1, 0, (int)n, t);
            commit(tr, bk);
        } else {
            blk *bk = reserve(tr, BLK_GRID, (size_t)s->n_sel * sizeof(float));
            if (!bk)
                return -1;
            bk->slot = si, bk->row = sample - s->s_lo, bk->nrows = 1, bk->t0 = i, bk->nt = 1;
            pack_row(payload(bk), s, srcs[o], 1, 0, (int)n);
            commit(tr, bk);
        }
    }
    return 0;
}

unsigned qkf_trace_wants(const qkf_trace *tr, int lif_index)
{
    unsigned m = 0;
    if (lif_index < 0 || lif_index >= tr->g->n_lif)
        return 0;
    for (int o = 0; o < QKF_TRACE_NOBS; o++)
        if (tr->slot_of[lif_index * QKF_TRACE_NOBS + o] >= 0)
            m |= 1u << o;
    return m;
}

int qkf_trace_put_layer(qkf_trace *tr, const qkf_lif_data *d)
{
    return layer_hook(tr, d);
}

static unsigned sink_wants(void *ctx, int lif_index)
{
    return qkf_trace_wants(ctx, lif_index);
}

static int sink_put(void *ctx, int lif_index, int64_t sample, int t, const float *v,
                    const float *h, const float *x, const float *s, int64_t n)
{
    return qkf_trace_put(ctx, lif_index, sample, t, v, h, x, s, n);
}

const qkf_lif_sink *qkf_trace_sink(qkf_trace *tr)
{
    tr->sink.ctx = tr;
    tr->sink.name = tr->path;
    tr->sink.n_lif = tr->g->n_lif;
    tr->sink.T = tr->g->cfg.T;
    tr->sink.wants = sink_wants;
    tr->sink.put = sink_put;
    tr->sink.put_layer = layer_hook;
    return &tr->sink;
}

int qkf_trace_sync(qkf_trace *tr)
{
    blk *b = reserve(tr, BLK_SYNC, 0);
    if (!b)
        return -1;
    uint64_t seq = b->seq;
    commit(tr, b);
    uv_mutex_lock(&tr->mu);
    while (tr->done_seq < seq && !tr->failed)
        uv_cond_wait(&tr->done, &tr->mu);
    int failed = tr->failed;
    uv_mutex_unlock(&tr->mu);
    return failed ? qkf_set_error("%s", tr->err) : 0;
}

void qkf_trace_get_stats(qkf_trace *tr, qkf_trace_stats *st)
{
    uv_mutex_lock(&tr->mu);
    *st = tr->st;
    st->capacity = tr->cap;
    uv_mutex_unlock(&tr->mu);
}

/* ---- open / close ---------------------------------------------------------------------- */

static char *config_json(const qkf_graph *g)
{
    const qkf_config *c = &g->cfg;
    int tb = 0;
    for (int i = 0; i < g->n_ops; i++)
        tb |= g->ops[i].kind == QKF_OP_LIF && g->ops[i].tb_compat;
    char *s = qkf_malloc(512);
    snprintf(s, 512,
             "{\"variant\": \"%s\", \"img_size\": %d, \"in_channels\": %d, \"num_classes\": %d, "
             "\"embed_dims\": %d, \"num_heads\": %d, \"mlp_ratio\": %g, \"depths\": %d, "
             "\"T\": %d, \"qk_attn\": \"%s\", \"tb_compat\": %d}",
             qkf_variant_name(c->variant), c->img_size, c->in_channels, c->num_classes,
             c->embed_dims, c->num_heads, (double)c->mlp_ratio, c->depths, c->T,
             c->qk_attn == QKF_QK_CHANNEL ? "channel" : "token", tb);
    return s;
}

/* argv as a shell would need it: words with unusual characters in single quotes. Without argv,
 * the process's own command line (/proc/self/cmdline). */
static char *command_line(int argc, char *const *argv)
{
    if (argc <= 0 || !argv) {
        FILE *f = fopen("/proc/self/cmdline", "rb");
        char *buf = NULL, **words = NULL;
        size_t n = 0;
        if (f) {
            buf = qkf_malloc(1 << 16);
            n = fread(buf, 1, (1 << 16) - 1, f);
            fclose(f);
            buf[n] = 0;
        }
        int k = 0;
        for (size_t i = 0; i < n; i++)
            k += buf[i] == 0;
        words = qkf_malloc((size_t)(k + 1) * sizeof(char *));
        k = 0;
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
            words[k++] = buf + i;
        char *s = k ? command_line(k, words) : dup_str("");
        qkf_free(words);
        qkf_free(buf);
        return s;
    }
    size_t cap = 1;
    for (int i = 0; i < argc; i++)
        cap += 4 * strlen(argv[i]) + 3;
    char *s = qkf_malloc(cap), *p = s;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = *a != 0;
        for (const char *q = a; *q && plain; q++)
            plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                           "_-./=:,+@%",
                           *q) != NULL;
        if (i)
            *p++ = ' ';
        if (plain) {
            size_t n = strlen(a);
            memcpy(p, a, n);
            p += n;
            continue;
        }
        *p++ = '\'';
        for (const char *q = a; *q; q++) {
            if (*q == '\'') {
                memcpy(p, "'\\''", 4);
                p += 4;
            } else {
                *p++ = *q;
            }
        }
        *p++ = '\'';
    }
    *p = 0;
    return s;
}

static void trace_free(qkf_trace *tr)
{
    for (int i = 0; i < tr->n_slots; i++) {
        qkf_free(tr->slots[i].neurons);
        qkf_free(tr->slots[i].ev_tag);
        qkf_free(tr->slots[i].ev_cnt);
    }
    qkf_free(tr->slots);
    qkf_free(tr->slot_of);
    qkf_free(tr->next_sample);
    qkf_free(tr->ring);
    qkf_free(tr->zbuf);
    qkf_free(tr->zlen);
    qkf_free(tr->path);
    qkf_free(tr->config_json);
    qkf_free(tr->cmdline);
    qkf_free(tr->engine);
    qkf_free(tr->weights);
    qkf_free(tr);
}

qkf_trace *qkf_trace_open(const char *path, const qkf_trace_spec *spec, const qkf_graph *g,
                          const char *weights_path, const char *engine, int argc, char *const *argv)
{
    qkf_trace_spec dflt;
    qkf_trace_spec_init(&dflt);
    if (spec->n_records == 0) { /* spikes of every layer */
        if (qkf_trace_parse_record(&dflt, "*:spikes", NULL))
            return NULL;
        dflt.seed = spec->seed;
        dflt.buffer_bytes = spec->buffer_bytes;
        dflt.force = spec->force;
        dflt.no_compress = spec->no_compress;
        dflt.writer_delay_us = spec->writer_delay_us;
        dflt.qmodel = spec->qmodel;
        spec = &dflt;
    }
    qkf_trace *tr = qkf_calloc(1, sizeof *tr);
    tr->path = dup_str(path);
    tr->g = g;
    tr->fid = H5I_INVALID_HID;
    tr->seed = spec->seed;
    tr->q = spec->qmodel;
    tr->force = spec->force;
    tr->no_compress = spec->no_compress;
    tr->delay_us = spec->writer_delay_us;
    int *rec_of = qkf_malloc((size_t)g->n_lif * QKF_TRACE_NOBS * sizeof(int));
    tr->slot_of = qkf_malloc((size_t)g->n_lif * QKF_TRACE_NOBS * sizeof(int));
    tr->next_sample = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    int rc = match_records(spec, g, rec_of);
    for (int i = 0; i < g->n_lif * QKF_TRACE_NOBS; i++) {
        tr->slot_of[i] = -1;
        if (rec_of[i] >= 0)
            tr->n_slots++;
    }
    tr->slots = qkf_calloc((size_t)(tr->n_slots ? tr->n_slots : 1), sizeof(slot));
    /* slots in graph order, observables in enum order within a layer */
    for (int i = 0, k = 0; i < g->n_lif * QKF_TRACE_NOBS && !rc; i++) {
        if (rec_of[i] < 0)
            continue;
        slot *s = &tr->slots[k];
        s->layer = i / QKF_TRACE_NOBS;
        s->obs = i % QKF_TRACE_NOBS;
        s->rec = &spec->records[rec_of[i]];
        s->ds = s->ds_time = H5I_INVALID_HID;
        snprintf(s->path, sizeof s->path, "/nodes/%s/observables/%s",
                 g->ops[g->lif_ops[s->layer]].name, obs_names[s->obs]);
        rc = select_for(spec, g, s->rec, s->layer, s);
        s->rec = NULL; /* the spec need not outlive the trace */
        tr->slot_of[i] = k++;
    }
    qkf_free(rec_of);
    if (rc)
        goto fail;
    /* The buffer: two thirds are the ring, one third the writer's compression scratch. Blocks
     * hold up to a quarter of the ring (several in flight while the writer works); one step of
     * one sample, the smallest block, must fit in half of it. */
    tr->cap = spec->buffer_bytes / 3 * 2 / HDR * HDR;
    tr->zcap = spec->buffer_bytes - tr->cap;
    tr->zmax = (int)(tr->cap / 2 / DIRECT_MIN + 1);
    tr->max_block = tr->cap / 4 / HDR * HDR;
    for (int i = 0; i < tr->n_slots; i++) {
        const slot *s = &tr->slots[i];
        size_t row = HDR + (size_t)s->n_sel * (s->obs == QKF_TRACE_SPIKES ? 8 : 4);
        if (row > tr->cap / 2) {
            size_t mb = (3 * row + (1 << 20) - 1) >> 20;
            qkf_set_error("--trace-buffer %g MB is too small for %s of %s (one step of one "
                          "sample needs %zu bytes; give at least %zu MB)",
                          (double)spec->buffer_bytes / 1048576.0, obs_names[s->obs],
                          g->ops[g->lif_ops[s->layer]].name, row, mb);
            goto fail;
        }
    }
    tr->config_json = config_json(g);
    tr->cmdline = command_line(argc, argv);
    tr->engine = dup_str(engine ? engine : "");
    tr->weights = weights_path ? dup_str(weights_path) : NULL;
    if (weights_path && qkf_sha256_file(weights_path, tr->sha))
        goto fail;
    /* Create the file here: errno tells why it cannot be (exists, no such directory). */
    int fd = open(path, O_WRONLY | O_CREAT | (spec->force ? O_TRUNC : O_EXCL), 0666);
    if (fd < 0) {
        if (errno == EEXIST)
            qkf_set_error("%s: exists (use --force to overwrite it)", path);
        else
            qkf_set_error("%s: cannot create (%s)", path, strerror(errno));
        goto fail;
    }
    close(fd);
    tr->ring = qkf_malloc(tr->cap);
    tr->zbuf = qkf_malloc(tr->zcap);
    tr->zlen = qkf_malloc((size_t)tr->zmax * sizeof(uLongf));
    if (uv_mutex_init(&tr->mu) || uv_cond_init(&tr->not_full) || uv_cond_init(&tr->not_empty) ||
        uv_cond_init(&tr->done))
        abort(); /* only fails when out of resources */
    if (uv_thread_create(&tr->thread, writer_main, tr)) {
        qkf_set_error("%s: cannot start the trace writer thread", path);
        unlink(path);
        goto fail_sync;
    }
    uv_mutex_lock(&tr->mu);
    while (!tr->ready)
        uv_cond_wait(&tr->done, &tr->mu);
    uv_mutex_unlock(&tr->mu);
    if (tr->ready < 0) {
        uv_thread_join(&tr->thread);
        qkf_set_error("%s", tr->err);
        unlink(path);
        goto fail_sync;
    }
    qkf_trace_spec_free(&dflt);
    return tr;
fail_sync:
    uv_cond_destroy(&tr->done);
    uv_cond_destroy(&tr->not_empty);
    uv_cond_destroy(&tr->not_full);
    uv_mutex_destroy(&tr->mu);
fail:
    qkf_trace_spec_free(&dflt);
    trace_free(tr);
    return NULL;
}

static int finish(qkf_trace *tr, int abort_)
{
    uv_mutex_lock(&tr->mu);
    tr->stop = 1;
    tr->aborting = abort_;
    uv_cond_broadcast(&tr->not_empty);
    uv_cond_broadcast(&tr->not_full);
    uv_mutex_unlock(&tr->mu);
    uv_thread_join(&tr->thread);
    int rc = tr->failed ? qkf_set_error("%s", tr->err) : 0;
    if (abort_ && !tr->failed)
        unlink(tr->path);
    uv_cond_destroy(&tr->done);
    uv_cond_destroy(&tr->not_empty);
    uv_cond_destroy(&tr->not_full);
    uv_mutex_destroy(&tr->mu);
    trace_free(tr);
    return rc;
}

int qkf_trace_close(qkf_trace *tr) { return tr ? finish(tr, 0) : 0; }

void qkf_trace_abort(qkf_trace *tr)
{
    if (tr)
        finish(tr, 1);
}
