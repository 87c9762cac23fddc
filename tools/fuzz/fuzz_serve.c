/* afl++ harness for the `qkf serve` protocol: the frame decoder and the per-session state machine
 * of io/stream.c, fed byte streams split at arbitrary points; not part of the CMake build (see
 * tools/fuzz/README.md).
 *
 * The harness includes io/stream.c, so that it runs the server's own code paths with the bytes
 * delivered exactly where it wants them: a session is attached to one end of a socketpair (the
 * server's answers travel through the kernel as over TCP), and input is handed to the session's
 * read callback (alloc_cb, then on_read) in chunks, only while the session reads, as libuv would
 * deliver it; the end of the input is a real EOF (shutdown) or a real hang-up (close). The engine
 * is a tiny dvs128-shaped model (16x16 input, T = 4, random weights) stepped on libuv's pool.
 *
 * Input: four option bytes, then the client's byte stream.
 *   byte 0  bit 0     window kind (0 time, 1 events)
 *           bits 1-2  queue: 1, 2, 4 frames, or the default 1 MiB
 *           bit 3     steps per sample: 0 (never reset) or the model's T
 *           bits 4-5  client: 0 reads answers at once; 1 reads only when the server waits for
 *                     it (a slow client); 2 hangs up after sending, reading nothing; 3 reads at
 *                     once, and the server is closed (SIGTERM's path) half-way through the input
 *           bit 6     out_limit of two answers (answers back up at once) instead of 64 KiB
 *           bit 7     a 4 KiB send buffer instead of 64 KiB
 *   byte 1  window: 1 + b microseconds (time) or 1 + b % 32 events
 *   byte 2  max_gap: b % 16 empty windows
 *   byte 3  seed of the chunk sizes (1 to 4096 bytes, mostly small)
 * Each input runs twice: split as byte 3 says, then in chunks of 64 KiB (the read buffer). Checks
 * (a breach aborts, so afl records a crash):
 *   - the server's output is a sequence of well-formed frames: WELCOME (exactly the server's)
 *     first, if HELLO was good; SCORES of the right size for windows 0, 1, 2, ... in order, with
 *     the sample, step and event count that a reference decoder of the whole input (oracle()
 *     below, written from docs/serve.md) predicts; at most one ERROR, last, with a printable
 *     message; then EOF;
 *   - the ERROR code is the one the reference predicts (shutdown in client mode 3), and without
 *     one every window is answered (no answer lost);
 *   - both deliveries give the same frames (up to where an error drops queued windows);
 *   - no session ever exceeds qkf_server_session_bound, and the server closes with no session
 *     and no handle left (a session that does not end is a hang: afl's timeout).
 * A sanitizer build sees overreads, leaks (replaying with ASAN_OPTIONS=detect_leaks=1) and
 * undefined behaviour. Without arguments (afl-clang-fast builds) inputs come from afl's shared
 * memory; with arguments each is a file to run once; `--seeds DIR` writes the seed inputs. */
#define _GNU_SOURCE
#include "io/stream.c"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"

static uv_loop_t loop;
static qkf_model model;
static qkf_sched *engine;

static void breach(const char *what)
{
    fprintf(stderr, "fuzz_serve: contract broken: %s\n", what);
    abort();
}

/* The server options byte 0-2 of an input ask for (docs at the top). */
static void opts_of(const uint8_t *opt, qkf_server_opts *o)
{
    qkf_server_opts_default(o, &model.cfg);
    o->window_kind = opt[0] & 1 ? QKF_WINDOW_EVENTS : QKF_WINDOW_TIME;
    static const int64_t queue[4] = {1, 2, 4, 0};
    int64_t fb = 2 * (int64_t)model.cfg.img_size * model.cfg.img_size * (int64_t)sizeof(float);
    o->queue_bytes = queue[(opt[0] >> 1) & 3] ? queue[(opt[0] >> 1) & 3] * fb : 1 << 20;
    o->steps = opt[0] & 8 ? 0 : model.cfg.T;
    o->sndbuf = opt[0] & 0x80 ? 4096 : 65536;
    o->window = o->window_kind == QKF_WINDOW_TIME ? 1 + opt[1] : 1 + opt[1] % 32;
    o->max_gap = opt[2] % 16;
    o->idle_timeout = 0;
}

/* ---- the reference decoder --------------------------------------------------------------- */

#define MAX_WIN 100000
typedef struct {
    int err;          /* the ERROR code the whole input earns, or 0 */
    int64_t windows;  /* windows closed before the end (or the error) */
    uint32_t *events; /* [MAX_WIN] events in window k */
    uint8_t *reset;   /* [MAX_WIN] window k starts a new sample (RESET) */
    int64_t nev;      /* events accepted */
} expect;

static void win_close(expect *e, int64_t *open, int *reset_next)
{
    if (e->windows < MAX_WIN) {
        e->events[e->windows] = (uint32_t)*open;
        e->reset[e->windows] = (uint8_t)*reset_next;
    }
    e->windows++;
    *open = 0;
    *reset_next = 0;
}

/* What a server with options o answers to the client byte stream b[0..n) (docs/serve.md). */
static void oracle(const uint8_t *b, size_t n, const qkf_server_opts *o, expect *e)
{
    size_t i = 0;
    int hello = 0, have_t0 = 0, reset_next = 0;
    uint32_t sw = 0, sh = 0;
    int64_t t0 = 0, t_last = 0, open = 0, W = o->window;
    e->err = 0, e->windows = 0, e->nev = 0;
    for (;;) {
        if (i == n) { /* EOF between frames: as END */
            if (open)
                win_close(e, &open, &reset_next);
            return;
        }
        if (n - i < 5) {
            e->err = QKF_SERVE_E_MALFORMED; /* EOF inside a frame */
            return;
        }
        uint32_t len = get32(b + i);
        uint8_t type = b[i + 4];
        i += 5;
        if (len == 0 || len > QKF_SERVE_MAX_FRAME) {
            e->err = len ? QKF_SERVE_E_TOO_LARGE : QKF_SERVE_E_MALFORMED;
            return;
        }
        uint32_t left = len - 1;
        switch (type) {
        case QKF_MSG_HELLO:
            e->err = hello                             ? QKF_SERVE_E_PROTOCOL
                     : left != QKF_SERVE_HELLO_BYTES ? QKF_SERVE_E_MALFORMED
                                                     : 0;
            break;
        case QKF_MSG_EVENTS:
            e->err = !hello                             ? QKF_SERVE_E_PROTOCOL
                     : left % QKF_SERVE_EVENT_BYTES ? QKF_SERVE_E_MALFORMED
                                                    : 0;
            break;
        case QKF_MSG_FLUSH:
        case QKF_MSG_RESET:
        case QKF_MSG_END:
            e->err = left                               ? QKF_SERVE_E_MALFORMED
                     : !hello && type != QKF_MSG_END ? QKF_SERVE_E_PROTOCOL
                                                     : 0;
            break;
        default:
            e->err = QKF_SERVE_E_MALFORMED;
        }
        if (e->err)
            return;
        if (type == QKF_MSG_EVENTS) {
            for (; left; left -= QKF_SERVE_EVENT_BYTES, i += QKF_SERVE_EVENT_BYTES) {
                if (n - i < QKF_SERVE_EVENT_BYTES) {
                    e->err = QKF_SERVE_E_MALFORMED;
                    return;
                }
                int64_t t = (int64_t)get64(b + i);
                uint32_t x = get16(b + i + 8), y = get16(b + i + 10), p = b[i + 12];
                if (x >= sw || y >= sh || p > 1) {
                    e->err = QKF_SERVE_E_BAD_EVENT;
                    return;
                }
                if (t < 0 || t >= T_MAX || t < t_last) {
                    e->err = QKF_SERVE_E_BAD_TIME;
                    return;
                }
                if (o->window_kind == QKF_WINDOW_TIME) {
                    if (!have_t0)
                        t0 = t, have_t0 = 1;
                    int64_t ahead = (t - t0) / W;
                    if (ahead - 1 > o->max_gap) {
                        e->err = QKF_SERVE_E_BAD_TIME;
                        return;
                    }
                    for (int64_t k = 0; k < ahead; k++)
                        win_close(e, &open, &reset_next);
                    t0 += ahead * W;
                }
                open++;
                t_last = t;
                e->nev++;
                if (o->window_kind == QKF_WINDOW_EVENTS && open == W)
                    win_close(e, &open, &reset_next);
            }
            continue;
        }
        if (n - i < left) {
            e->err = QKF_SERVE_E_MALFORMED;
            return;
        }
        if (type == QKF_MSG_HELLO) {
            uint32_t version = get16(b + i);
            sw = get32(b + i + 4), sh = get32(b + i + 8);
            if (version != QKF_SERVE_VERSION) {
                e->err = QKF_SERVE_E_VERSION;
                return;
            }
            if (sw < 1 || sh < 1 || sw > 65535 || sh > 65535) {
                e->err = QKF_SERVE_E_MALFORMED;
                return;
            }
            hello = 1;
        } else {
            if (open)
                win_close(e, &open, &reset_next);
            have_t0 = 0;
            if (type == QKF_MSG_RESET)
                t_last = 0, reset_next = 1;
            if (type == QKF_MSG_END)
                return;
        }
        i += left;
    }
}

/* ---- one run ------------------------------------------------------------------------------ */

typedef struct {
    uint8_t *b;
    size_t n, cap;
    int eof;
} bytes;

static void bytes_add(bytes *o, const uint8_t *p, size_t n)
{
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2;
        o->b = realloc(o->b, o->cap);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

typedef struct {
    int fd; /* the client's end, -1 once closed */
    uv_poll_t poll;
    int polling;
    bytes out; /* what the server sent */
    qkf_server *srv;
    int closed;
} client;

static void on_client_readable(uv_poll_t *h, int status, int events)
{
    client *c = h->data;
    (void)events;
    uint8_t buf[65536];
    for (;;) {
        ssize_t r = status < 0 ? -1 : read(c->fd, buf, sizeof buf);
        if (r > 0) {
            bytes_add(&c->out, buf, (size_t)r);
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF (or a reset): the server hung up; the client hangs up too */
        if (getenv("FUZZ_SERVE_DEBUG"))
            fprintf(stderr, "client: read %zd (%s), %zu bytes so far\n", r, r < 0 ? strerror(errno) : "eof", c->out.n);
        c->out.eof = r == 0;
        uv_poll_stop(h);
        c->polling = 0;
        close(c->fd);
        c->fd = -1;
        return;
    }
}

static void client_poll(client *c)
{
    if (c->fd >= 0 && !c->polling) {
        uv_poll_start(&c->poll, UV_READABLE, on_client_readable);
        c->polling = 1;
    }
}

static void on_server_closed(qkf_server *s, void *data)
{
    (void)s;
    ((client *)data)->closed = 1;
}

static void on_poll_closed(uv_handle_t *h) { (void)h; }

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

/* Runs the session on b[0..n) with options opt; the server's output in *out. */
static void run(const uint8_t *opt, const uint8_t *b, size_t n, int whole, bytes *out,
                qkf_server_stats *st, int64_t *bound)
{
    qkf_server_opts o;
    opts_of(opt, &o);
    int mode = (opt[0] >> 4) & 3;
    qkf_server *srv = qkf_server_new(&loop, engine, &o);
    if (!srv)
        breach("qkf_server_new failed");
    if (opt[0] & 0x40)
        srv->out_limit = 2 * (int64_t)srv->answer_bytes;
    *bound = qkf_server_session_bound(srv);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        breach("socketpair");
    int small = 4096;
    if (opt[0] & 0x80)
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    client c = {.fd = sv[0], .srv = srv};
    uv_poll_init(&loop, &c.poll, c.fd);
    c.poll.data = &c;
    if (mode == 0 || mode == 3)
        client_poll(&c);

    sess *s = session_new(srv);
    if (uv_tcp_open(&s->tcp, sv[1]))
        breach("uv_tcp_open");
    session_start(s);
    int64_t sid = s->id;

    uint32_t seed = 0x9e3779b9u ^ opt[3] ^ (uint32_t)n << 8;
    size_t pos = 0, half = n / 2;
    int server_closing = 0;
    while (pos < n) {
        if (!srv->head || srv->head->id != sid)
            break; /* the session is gone */
        s = srv->head;
        if (s->closing || s->finishing || s->closing_handles)
            break;
        if (mode == 3 && !server_closing && pos >= half) {
            server_closing = 1;
            qkf_server_close(srv, on_server_closed, &c);
            continue;
        }
        if (!s->reading) { /* stalled: the engine, or the client, has to catch up */
            if (mode == 1 && !s->busy)
                client_poll(&c);
            if (mode == 2 && !s->busy && s->out_wait)
                break; /* the client never reads: hang up */
            uv_run(&loop, UV_RUN_ONCE);
            continue;
        }
        size_t k = RBUF_BYTES;
        if (!whole) {
            uint32_t r = rng_next(&seed);
            k = r % 4 == 0 ? 1 : r % 4 == 1 ? 1 + (r >> 2) % 13 : r % 4 == 2 ? 1 + (r >> 2) % 64
                                                                              : 1 + (r >> 2) % 4096;
        }
        if (k > n - pos)
            k = n - pos;
        uv_buf_t buf;
        alloc_cb((uv_handle_t *)&s->tcp, k, &buf);
        if (buf.len < k)
            breach("read buffer smaller than a chunk");
        memcpy(buf.base, b + pos, k);
        pos += k;
        on_read((uv_stream_t *)&s->tcp, (ssize_t)k, &buf);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    /* the end of the input */
    if (mode == 2) {
        close(c.fd);
        c.fd = -1;
    } else {
        shutdown(c.fd, SHUT_WR);
        client_poll(&c);
    }
    while (srv->head || c.fd >= 0) /* the session ends; the client reads until EOF */
        uv_run(&loop, UV_RUN_ONCE);
    if (!server_closing)
        qkf_server_close(srv, on_server_closed, &c);
    while (!c.closed)
        uv_run(&loop, UV_RUN_ONCE);
    if (c.polling)
        uv_poll_stop(&c.poll);
    if (c.fd >= 0)
        close(c.fd);
    uv_close((uv_handle_t *)&c.poll, on_poll_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_alive(&loop))
        breach("handles left on the loop");
    *st = srv->st;
    if (st->sessions_active != 0)
        breach("a session is left");
    qkf_server_free(srv);
    if (mode == 2)
        c.out.eof = 1; /* nothing was read */
    *out = c.out;
}

/* ---- checks ------------------------------------------------------------------------------ */

typedef struct {
    int welcome;     /* WELCOME seen */
    int64_t answers; /* SCORES */
    int err;         /* ERROR code, or 0 */
    size_t scores_end; /* bytes up to the end of the last SCORES */
    const uint8_t *err_frame;
    size_t err_len;
} parsed;

static void parse(const bytes *out, const qkf_server_opts *o, const expect *e,
                  parsed *pr)
{
    memset(pr, 0, sizeof *pr);
    size_t i = 0;
    const uint8_t *b = out->b;
    int64_t steps = 0;
    uint32_t sample = 0;
    int K = model.cfg.num_classes;
    size_t answer = 0;
    while (i < out->n) {
        if (out->n - i < 5)
            breach("output ends inside a frame header");
        uint32_t len = get32(b + i);
        uint8_t type = b[i + 4];
        if (len < 1 || len > QKF_SERVE_MAX_FRAME || out->n - i - 4 < len)
            breach("output frame length");
        const uint8_t *p = b + i + 5;
        uint32_t m = len - 1;
        if (pr->err)
            breach("a frame after ERROR");
        switch (type) {
        case QKF_MSG_WELCOME:
            if (pr->welcome || i != 0)
                breach("WELCOME not first, or twice");
            pr->welcome = 1;
            break;
        case QKF_MSG_SCORES: {
            if (!pr->welcome)
                breach("SCORES before WELCOME");
            if (answer == 0)
                answer = m;
            if (m != answer || get32(p + 20) != (uint32_t)K)
                breach("SCORES size");
            int64_t k = pr->answers;
            if (get64(p) != (uint64_t)k)
                breach("SCORES out of order (window index)");
            if (k < MAX_WIN) {
                if (k >= e->windows)
                    breach("more answers than windows");
                if (k < e->windows) {
                    if (steps > 0 && (e->reset[k] || (o->steps > 0 && steps >= o->steps)))
                        sample++, steps = 0;
                    steps++;
                    if (get32(p + 8) != sample || get32(p + 12) != (uint32_t)steps ||
                        get32(p + 16) != e->events[k])
                        breach("SCORES sample, step or events differ from the reference");
                }
            }
            for (int j = 0; j < K; j++) {
                float f = getf(p + 24 + 4 * j);
                if (f != f)
                    breach("a NaN score");
            }
            pr->answers++;
            pr->scores_end = i + 4 + len;
            break;
        }
        case QKF_MSG_ERROR:
            if (m < 4)
                breach("ERROR without a code");
            pr->err = (int)get32(p);
            if (pr->err < 1 || pr->err > QKF_SERVE_E_INTERNAL)
                breach("ERROR code out of range");
            for (uint32_t j = 4; j < m; j++)
                if (p[j] < 0x20 || p[j] > 0x7e)
                    breach("ERROR message not one printable line");
            if (m == 4)
                breach("ERROR without a message");
            pr->err_frame = b + i;
            pr->err_len = 4 + len;
            break;
        default:
            breach("unknown frame type from the server");
        }
        i += 4 + len;
    }
    if (!out->eof)
        breach("the server did not hang up");
}

static void check(const uint8_t *opt, const uint8_t *b, size_t n, const bytes *out,
                  const qkf_server_stats *st, int64_t bound, const expect *e, parsed *pr)
{
    qkf_server_opts o;
    opts_of(opt, &o);
    int mode = (opt[0] >> 4) & 3;
    (void)b, (void)n;
    if (st->peak_session_bytes > bound)
        breach("a session held more than qkf_server_session_bound");
    parse(out, &o, e, pr);
    if (mode == 2)
        return; /* the client hung up: nothing it did not read can be checked */
    if (mode == 3) {
        if (pr->err != e->err && pr->err != QKF_SERVE_E_SHUTDOWN)
            breach("ERROR code neither the reference's nor shutdown");
        if (pr->answers > e->windows)
            breach("more answers than windows");
        return;
    }
    if (pr->err == QKF_SERVE_E_OVERFLOW && e->nev >= 65536)
        return;
    if (pr->err != e->err) {
        fprintf(stderr, "fuzz_serve: server ERROR %d, reference %d\n", pr->err, e->err);
        breach("ERROR code differs from the reference");
    }
    if (!e->err && pr->answers != e->windows) {
        fprintf(stderr, "fuzz_serve: %lld answers, %lld windows\n", (long long)pr->answers,
                (long long)e->windows);
        breach("an answer lost");
    }
    if (!e->err && st->windows != e->windows)
        breach("the server's window count");
}

static void one(const uint8_t *data, size_t len)
{
    static uint32_t *ev_buf;
    static uint8_t *reset_buf;
    if (!ev_buf) {
        ev_buf = calloc(MAX_WIN, sizeof *ev_buf);
        reset_buf = calloc(MAX_WIN, 1);
    }
    if (len < 4)
        return;
    const uint8_t *opt = data, *b = data + 4;
    size_t n = len - 4;
    qkf_server_opts o;
    opts_of(opt, &o);
    expect e = {.events = ev_buf, .reset = reset_buf};
    oracle(b, n, &o, &e);
    if (e.windows > 4096)
        return; /* too slow to be useful: thousands of engine steps */
    bytes out[2];
    qkf_server_stats st[2];
    int64_t bound[2];
    parsed pr[2];
    for (int whole = 0; whole < 2; whole++) {
        run(opt, b, n, whole, &out[whole], &st[whole], &bound[whole]);
        check(opt, b, n, &out[whole], &st[whole], bound[whole], &e, &pr[whole]);
        if (getenv("FUZZ_SERVE_DEBUG"))
            fprintf(stderr,
                    "fuzz_serve: %s: %lld answers, error %d; reference %lld windows, error %d; "
                    "%lld read pauses, %lld answer waits, peak %lld of %lld bytes\n",
                    whole ? "whole" : "split", (long long)pr[whole].answers, pr[whole].err,
                    (long long)e.windows, e.err, (long long)st[whole].read_pauses,
                    (long long)st[whole].answer_waits, (long long)st[whole].peak_session_bytes,
                    (long long)bound[whole]);
    }
    int mode = (opt[0] >> 4) & 3;
    if (mode == 0 || mode == 1) { /* both deliveries: the same frames */
        size_t common = pr[0].scores_end < pr[1].scores_end ? pr[0].scores_end : pr[1].scores_end;
        if (common && memcmp(out[0].b, out[1].b, common) != 0)
            breach("the two deliveries answered differently");
        if (pr[0].err_len != pr[1].err_len ||
            (pr[0].err_len && memcmp(pr[0].err_frame, pr[1].err_frame, pr[0].err_len)))
            breach("the two deliveries sent different ERRORs");
    }
    free(out[0].b);
    free(out[1].b);
}

/* ---- seeds -------------------------------------------------------------------------------- */

static void seed_hdr(bytes *o, uint8_t type, uint32_t payload)
{
    uint8_t h[5];
    put_header(h, type, payload);
    bytes_add(o, h, 5);
}

static void seed_hello(bytes *o, uint32_t w, uint32_t h)
{
    uint8_t p[12];
    put16(p, 1), put16(p + 2, 0), put32(p + 4, w), put32(p + 8, h);
    seed_hdr(o, QKF_MSG_HELLO, 12);
    bytes_add(o, p, 12);
}

static void seed_events(bytes *o, int n, int64_t t0, int64_t dt, uint32_t w, uint32_t h)
{
    seed_hdr(o, QKF_MSG_EVENTS, (uint32_t)n * 13);
    for (int i = 0; i < n; i++) {
        uint8_t r[13];
        put64(r, (uint64_t)(t0 + i * dt));
        put16(r + 8, (uint32_t)(i * 7) % w), put16(r + 10, (uint32_t)(i * 3) % h);
        r[12] = (uint8_t)(i & 1);
        bytes_add(o, r, 13);
    }
}

static void write_seed(const char *dir, const char *name, const uint8_t opt[4], const bytes *b)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(opt, 1, 4, f) != 4 || fwrite(b->b, 1, b->n, f) != b->n || fclose(f)) {
        fprintf(stderr, "fuzz_serve: cannot write %s\n", path);
        exit(1);
    }
    free(b->b);
}

static int write_seeds(const char *dir)
{
    mkdir(dir, 0755);
    bytes b = {0};
    seed_hello(&b, 16, 16), seed_events(&b, 40, 1000, 5, 16, 16), seed_hdr(&b, QKF_MSG_END, 0);
    write_seed(dir, "time_end.bin", (const uint8_t[4]){0x00, 49, 3, 1}, &b);
    memset(&b, 0, sizeof b);
    seed_hello(&b, 34, 34), seed_events(&b, 30, 0, 3, 34, 34), seed_hdr(&b, QKF_MSG_FLUSH, 0);
    seed_events(&b, 20, 500, 2, 34, 34), seed_hdr(&b, QKF_MSG_RESET, 0);
    seed_events(&b, 20, 10, 9, 34, 34);
    write_seed(dir, "time_flush_reset_eof.bin", (const uint8_t[4]){0x02, 19, 7, 2}, &b);
    memset(&b, 0, sizeof b);
    seed_hello(&b, 8, 8), seed_events(&b, 50, 0, 1, 8, 8), seed_hdr(&b, QKF_MSG_RESET, 0);
    seed_events(&b, 13, 0, 1, 8, 8), seed_hdr(&b, QKF_MSG_END, 0);
    write_seed(dir, "events_slow.bin", (const uint8_t[4]){0x59, 6, 0, 3}, &b);
    memset(&b, 0, sizeof b);
    seed_hello(&b, 16, 16), seed_events(&b, 60, 0, 4, 16, 16), seed_events(&b, 60, 240, 4, 16, 16);
    seed_hdr(&b, QKF_MSG_END, 0);
    write_seed(dir, "time_backpressure.bin", (const uint8_t[4]){0xc2, 9, 15, 4}, &b);
    memset(&b, 0, sizeof b);
    seed_hello(&b, 16, 16), seed_events(&b, 80, 0, 2, 16, 16), seed_events(&b, 10, 160, 2, 16, 16);
    write_seed(dir, "close_midway.bin", (const uint8_t[4]){0x30, 9, 2, 2}, &b);
    memset(&b, 0, sizeof b);
    seed_hello(&b, 16, 16), seed_events(&b, 20, 0, 2, 16, 16);
    write_seed(dir, "hangup.bin", (const uint8_t[4]){0x20, 9, 2, 6}, &b);
    memset(&b, 0, sizeof b);
    seed_hello(&b, 16, 16), seed_events(&b, 3, 0, 2, 16, 16);
    seed_hdr(&b, QKF_MSG_EVENTS, 26); /* truncated: EOF inside a frame */
    bytes_add(&b, (const uint8_t *)"\x06\0\0\0\0\0\0\0\1\0\1\0\1", 13);
    write_seed(dir, "eof_inside.bin", (const uint8_t[4]){0x00, 9, 2, 7}, &b);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && !strcmp(argv[1], "--seeds"))
        return write_seeds(argv[2]);
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    qkf_set_threads(1);
    /* a tiny model of the dvs128 variant: 16x16 input, 4 steps, random weights */
    if (qkf_config_preset("dvs128", &model.cfg))
        breach("preset");
    model.cfg.img_size = 16, model.cfg.embed_dims = 32, model.cfg.num_heads = 2, model.cfg.T = 4;
    if (qkf_config_validate(&model.cfg) || qkf_params_build(&model.cfg, &model.params))
        breach(qkf_last_error());
    qkf_params_init(&model.cfg, &model.params, 1);
    engine = qkf_sched_create(&model, 1, 0);
    if (!engine)
        breach(qkf_last_error());
    uv_loop_init(&loop);
    int rc;
#ifdef __AFL_FUZZ_TESTCASE_LEN
    if (argc < 2)
        rc = fuzz_persistent(one);
    else
#endif
        rc = fuzz_run_files("fuzz_serve", argv + 1, argc - 1, one);
    uv_loop_close(&loop);
    qkf_sched_free(engine);
    qkf_model_free(&model);
    return rc;
}
