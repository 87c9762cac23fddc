/* Live event streams over TCP with libuv: the event server (one engine session per connection)
 * and the replay client. The protocol is in tools/app/stream.h and docs/serve.md.
 *
 * Server session, data flow. Bytes arrive in the session's read buffer (64 KiB, reused) and are
 * parsed in place: frame headers, then event records one at a time. Each event is checked and
 * added to the open window's frame ([2][H][W] counts, qkf_events_accumulate's mapping of the
 * sensor onto the model input). When a window closes (time: an event at or past its end; events:
 * its last event; FLUSH, RESET, END) its frame moves into the session's queue, a ring of
 * nq = queue_bytes / frame bytes frames, and the engine is asked to step it.
 *
 * Compute. At most one uv_queue_work item per session: it steps every frame queued when it was
 * dispatched, in order, and encodes one SCORES answer per frame into a single write buffer. The
 * loop thread only appends frames past the ones in flight, so the worker and the loop never touch
 * the same frame, and answers leave in window order.
 *
 * Backpressure. When the queue is full, parsing stops where it is (an event not yet taken, or a
 * control message not yet done) and the socket is not read (uv_read_stop) until the worker has
 * drained the queue; the client's writes then block in its kernel. Answers not yet taken by the
 * kernel count too: while more than out_limit bytes are pending, no new work is dispatched, so
 * a client that does not read stops its own input. A session thus holds at most its engine
 * state, nq + 1 frames, the read buffer and out_limit + one batch of answers
 * (qkf_server_session_bound).
 *
 * Closing. A session ends by END or EOF (graceful: queued windows are stepped and answered, then
 * the socket is shut down), by an error (ERROR frame, queue dropped, shutdown), by server close
 * (graceful, then ERROR shutdown; a client that does not take its answers is dropped after
 * shutdown_timeout) or by a broken connection (closed as soon as no work is in flight). After
 * the shutdown request the input is read and discarded until the client hangs up, or until a
 * 2 s linger timer fires. The session's memory is freed when both its handles (socket, timer)
 * have closed; no handle is closed while its work item is in flight. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/base.h"
#include "stream.h"

#define RBUF_BYTES (64 * 1024)
#define LINGER_MS 2000
#define WELCOME_FIXED 44
#define SCORES_FIXED 28
#define T_MAX ((int64_t)1 << 62) /* timestamps beyond this are refused (no overflow of t0 + W) */

/* ---- little-endian fields ------------------------------------------------------------------ */

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void putf(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put32(p, u);
}
static uint32_t get16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}
static float getf(const uint8_t *p)
{
    uint32_t u = get32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Frame header: u32 length of type + payload, u8 type. */
static void put_header(uint8_t *p, uint8_t type, size_t payload)
{
    put32(p, (uint32_t)(payload + 1));
    p[4] = type;
}

const char *qkf_serve_error_name(int code)
{
    switch (code) {
#define QKF__SERVE_NAME(name, c, text)                                                             \
    case c:                                                                                        \
        return text;
        QKF_SERVE_ERRORS(QKF__SERVE_NAME)
#undef QKF__SERVE_NAME
    default:
        return "unknown error";
    }
}

/* ---- addresses and windows ----------------------------------------------------------------- */

int qkf_stream_addr(const char *host_port, struct sockaddr_storage *addr)
{
    const char *colon = strrchr(host_port, ':');
    if (!colon || colon == host_port || !colon[1])
        return qkf_set_error("'%s' is not HOST:PORT", host_port);
    char host[256];
    size_t n = (size_t)(colon - host_port);
    if (n >= sizeof host)
        return qkf_set_error("'%s': host name too long", host_port);
    memcpy(host, host_port, n);
    host[n] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return qkf_set_error("'%s': port '%s' is not 0..65535", host_port, colon + 1);
    memset(addr, 0, sizeof *addr);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = 0;
    }
    if (!strcmp(host, "localhost"))
        strcpy(host, "127.0.0.1");
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
        if (uv_ip6_addr(host, (int)port, a6))
            return qkf_set_error("'%s': '%s' is not an IPv6 address", host_port, host);
        static const uint8_t lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        if (memcmp(&a6->sin6_addr, lo6, 16) != 0)
            return qkf_set_error("'%s': only loopback addresses (127.0.0.1, ::1) are allowed: the "
                                 "protocol has no authentication",
                                 host_port);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
    if (uv_ip4_addr(host, (int)port, a4))
        return qkf_set_error("'%s': '%s' is not an IPv4 address", host_port, host);
    if (((const uint8_t *)&a4->sin_addr)[0] != 127)
        return qkf_set_error("'%s': only loopback addresses (127.0.0.1, ::1) are allowed: the "
                             "protocol has no authentication",
                             host_port);
    return 0;
}

int64_t qkf_stream_window_of(const qkf_event *ev, int64_t i, qkf_window_kind kind, int64_t window)
{
    return kind == QKF_WINDOW_TIME ? (ev[i].t - ev[0].t) / window : i / window;
}

int64_t qkf_stream_windows(const qkf_event *ev, int64_t n, qkf_window_kind kind, int64_t window)
{
    if (n <= 0)
        return 0;
    return kind == QKF_WINDOW_TIME ? qkf_stream_window_of(ev, n - 1, kind, window) + 1
                                   : (n + window - 1) / window;
}

/* ---- server -------------------------------------------------------------------------------- */

typedef struct {
    uint64_t window;
    uint32_t events;
    int reset; /* the window starts a new sample (RESET) */
} slot;

/* A write: the request, then the bytes. */
typedef struct {
    uv_write_t req;
    void *owner;
    size_t len;
    int64_t closes; /* client: the last window this write closes, or -1 */
    uint8_t data[];
} wreq;

static wreq *wreq_new(void *owner, size_t len)
{
    wreq *r = qkf_malloc(sizeof *r + len);
    r->owner = owner;
    r->len = len;
    r->closes = -1;
    r->req.data = r;
    return r;
}

typedef struct sess sess;
struct sess {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout; after the shutdown request, the linger deadline */
    uv_work_t work;
    uv_shutdown_t shut;
    qkf_server *srv;
    sess *prev, *next;
    int id;
    int handles; /* open handles (tcp, timer) */
    int closing_handles;
    int counted;   /* holds one of max_sessions */
    int reading;   /* uv_read_start is in effect */
    int stalled;   /* parsing waits for room in the queue */
    int busy;      /* a work item is in flight */
    int closing;   /* no more input */
    int graceful;  /* ... and the queued windows are still stepped and answered */
    int finishing; /* the shutdown request is under way */
    int shut_done; /* ... and completed */
    int peer_eof;  /* the client hung up its side */
    int deadline;  /* the server is closing: the timer is the drain deadline */
    int broken;    /* the connection failed: nothing more is written */
    int err_code;  /* the ERROR to send, or 0 */
    char err_msg[240];
    /* parser */
    uint8_t hdr[5];
    int hdr_n;
    uint8_t type;
    uint32_t left; /* payload bytes of the current frame still to come */
    uint8_t small[QKF_SERVE_HELLO_BYTES];
    int small_n;
    uint8_t rec[QKF_SERVE_EVENT_BYTES];
    int rec_n;
    int ctl; /* FLUSH / RESET / END waiting for room in the queue, or 0 */
    uint8_t *rbuf;
    size_t rpos, rlen;
    /* events and windows */
    int hello, sw, sh;
    int64_t t_last, t0, nev;
    int have_t0;
    int64_t open_events;
    int reset_next;
    uint64_t windows; /* closed so far */
    float *open;      /* the open window's frame */
    float **frames;   /* [nq] queued frames */
    slot *meta;       /* [nq] */
    int nq, qhead, qcount;
    /* the engine (the worker's side) */
    qkf_sched_session *es;
    int64_t *spk;
    float *scores;
    uint32_t sample;
    int wk_head, wk_n, wk_done, wk_err;
    wreq *wk_out;
    char wk_msg[240];
    /* output */
    int64_t out_pending;
    int out_wait; /* stepping waits for answers to drain */
};

struct qkf_server {
    uv_loop_t *loop;
    const qkf_sched *engine;
    qkf_server_opts o;
    uv_tcp_t listener;
    int listener_init, listener_open;
    sess *head;
    int serving;
    int closing, closed;
    qkf_server_close_cb close_cb;
    void *close_data;
    qkf_server_stats st;
    int C, H, W, classes, layers;
    int64_t frame_floats;
    size_t answer_bytes;
    int nq;
    int64_t out_limit;
    int64_t fixed_bytes; /* what a session with its engine state holds before any output */
    uint8_t *welcome;
    size_t welcome_len;
    int next_id;
};

static void slog(qkf_server *srv, const char *fmt, ...) QKF_PRINTF(2, 3);
static void slog(qkf_server *srv, const char *fmt, ...)
{
    if (!srv->o.log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    srv->o.log(srv->o.log_data, line);
}

void qkf_server_opts_default(qkf_server_opts *o, const qkf_config *cfg)
{
    memset(o, 0, sizeof *o);
    o->window_kind = QKF_WINDOW_TIME;
    o->window = 10000;
    o->steps = cfg ? cfg->T : 0;
    o->max_sessions = 64;
    o->idle_timeout = 30.0;
    o->queue_bytes = 1 << 20;
    o->max_gap = QKF_SERVE_MAX_GAP;
    o->sndbuf = 65536;
    o->shutdown_timeout = 5.0;
}

static void pump(sess *s);
static void close_handles(sess *s);
static void on_timer(uv_timer_t *t);

static void track_bytes(sess *s)
{
    qkf_server *srv = s->srv;
    int64_t b =
        srv->fixed_bytes + s->out_pending + (s->busy ? (int64_t)(s->wk_n * srv->answer_bytes) : 0);
    if (b > srv->st.peak_session_bytes)
        srv->st.peak_session_bytes = b;
}

static void restart_timer(sess *s)
{
    if (s->closing_handles || s->finishing || s->deadline || s->srv->o.idle_timeout <= 0)
        return;
    uint64_t ms = (uint64_t)(s->srv->o.idle_timeout * 1000.0 + 0.5);
    uv_timer_start(&s->timer, on_timer, ms ? ms : 1, 0);
}

static void stop_reading(sess *s)
{
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = 0;
    }
}

/* Records the session's error (the first one wins): no more input, the queue is dropped, an
 * ERROR frame goes out, the connection closes. */
static int fail(sess *s, int code, const char *fmt, ...) QKF_PRINTF(3, 4);
static int fail(sess *s, int code, const char *fmt, ...)
{
    if (s->err_code && s->err_code != QKF_SERVE_E_SHUTDOWN)
        return -1;
    s->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err_msg, sizeof s->err_msg, fmt, ap);
    va_end(ap);
    s->closing = 1;
    s->graceful = 0;
    stop_reading(s);
    slog(s->srv, "session %d: error %d (%s): %s", s->id, code, qkf_serve_error_name(code),
         s->err_msg);
    return -1;
}

/* The connection is gone: close as soon as no work is in flight. */
static void broken(sess *s)
{
    s->broken = 1;
    s->closing = 1;
    s->graceful = 0;
    stop_reading(s);
}

static void on_write(uv_write_t *req, int status)
{
    wreq *r = req->data;
    sess *s = r->owner;
    s->out_pending -= (int64_t)r->len;
    qkf_free(r);
    if (status < 0) {
        if (!s->broken && status != UV_ECANCELED) {
            slog(s->srv, "session %d: write: %s", s->id, uv_strerror(status));
            if (!s->closing)
                s->srv->st.disconnects++;
        }
        broken(s);
    } else {
        restart_timer(s);
    }
    pump(s);
}

/* Sends r (r->len bytes); takes it. */
static void send_req(sess *s, wreq *r)
{
    if (s->broken || s->closing_handles) {
        qkf_free(r);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
    s->out_pending += (int64_t)r->len;
    int rc = uv_write(&r->req, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (rc) {
        s->out_pending -= (int64_t)r->len;
        qkf_free(r);
        broken(s);
        return;
    }
    track_bytes(s);
}

static void send_error(sess *s)
{
    size_t n = strlen(s->err_msg);
    wreq *r = wreq_new(s, 5 + 4 + n);
    put_header(r->data, QKF_MSG_ERROR, 4 + n);
    put32(r->data + 5, (uint32_t)s->err_code);
    memcpy(r->data + 9, s->err_msg, n);
    s->srv->st.errors++;
    send_req(s, r);
}

/* ---- the worker: step the queued windows ---------------------------------------------------- */

static void work_cb(uv_work_t *w)
{
    sess *s = w->data;
    const qkf_server *srv = s->srv;
    uint8_t *p = s->wk_out->data;
    int K = srv->classes, L = srv->layers;
    for (int i = 0; i < s->wk_n; i++) {
        int k = (s->wk_head + i) % s->nq;
        const slot *m = &s->meta[k];
        int64_t steps = qkf_sched_session_steps(s->es);
        if (steps > 0 && (m->reset || (srv->o.steps > 0 && steps >= srv->o.steps))) {
            qkf_sched_session_reset(s->es);
            s->sample++;
        }
        if (qkf_sched_session_step(s->es, s->frames[k], s->spk)) {
            s->wk_err = QKF_SERVE_E_OVERFLOW;
            snprintf(s->wk_msg, sizeof s->wk_msg, "window %llu: %s", (unsigned long long)m->window,
                     qkf_last_error());
            break;
        }
        qkf_sched_session_scores(s->es, s->scores);
        put_header(p, QKF_MSG_SCORES, srv->answer_bytes - 5);
        uint8_t *q = p + 5;
        put64(q, m->window);
        put32(q + 8, s->sample);
        put32(q + 12, (uint32_t)qkf_sched_session_steps(s->es));
        put32(q + 16, m->events);
        put32(q + 20, (uint32_t)K);
        q += 24;
        for (int j = 0; j < K; j++, q += 4)
            putf(q, s->scores[j]);
        put32(q, (uint32_t)L);
        q += 4;
        for (int l = 0; l < L; l++, q += 4)
            put32(q, s->spk[l] > UINT32_MAX ? UINT32_MAX : (uint32_t)s->spk[l]);
        p += srv->answer_bytes;
        s->wk_done++;
    }
}

static void after_work(uv_work_t *w, int status)
{
    sess *s = w->data;
    (void)status; /* never cancelled */
    s->busy = 0;
    s->qhead = (s->qhead + s->wk_n) % s->nq;
    s->qcount -= s->wk_n;
    s->srv->st.windows += s->wk_done;
    wreq *r = s->wk_out;
    s->wk_out = NULL;
    r->len = (size_t)s->wk_done * s->srv->answer_bytes;
    if (r->len)
        send_req(s, r);
    else
        qkf_free(r);
    if (s->wk_err)
        fail(s, s->wk_err, "%s", s->wk_msg);
    pump(s);
}

/* Dispatches every queued window to the thread pool, unless work is in flight or too many
 * answers are still pending. */
static void schedule(sess *s)
{
    qkf_server *srv = s->srv;
    if (s->busy || s->qcount == 0 || s->broken || s->finishing || s->closing_handles)
        return;
    if (s->closing && !s->graceful)
        return;
    if (s->out_pending > srv->out_limit) {
        if (!s->out_wait) {
            s->out_wait = 1;
            srv->st.answer_waits++;
        }
        return;
    }
    s->out_wait = 0;
    s->wk_head = s->qhead;
    s->wk_n = s->qcount;
    s->wk_done = s->wk_err = 0;
    s->wk_out = wreq_new(s, (size_t)s->wk_n * srv->answer_bytes);
    s->busy = 1;
    s->work.data = s;
    track_bytes(s);
    int rc = uv_queue_work(srv->loop, &s->work, work_cb, after_work);
    if (rc) { /* only on invalid arguments */
        s->busy = 0;
        qkf_free(s->wk_out);
        s->wk_out = NULL;
        fail(s, QKF_SERVE_E_INTERNAL, "uv_queue_work: %s", uv_strerror(rc));
    }
}

/* ---- windows -------------------------------------------------------------------------------- */

/* Moves the open window into the queue; 0 if the queue is full. */
static int close_window(sess *s)
{
    if (s->qcount == s->nq)
        return 0;
    int k = (s->qhead + s->qcount) % s->nq;
    float *f = s->frames[k];
    s->frames[k] = s->open;
    s->open = f;
    memset(s->open, 0, (size_t)s->srv->frame_floats * sizeof(float));
    s->meta[k].window = s->windows++;
    s->meta[k].events = (uint32_t)s->open_events;
    s->meta[k].reset = s->reset_next;
    s->reset_next = 0;
    s->open_events = 0;
    s->qcount++;
    if (s->qcount > s->srv->st.peak_queued)
        s->srv->st.peak_queued = s->qcount;
    schedule(s);
    return 1;
}

enum { EV_OK = 0, EV_STALL = 1, EV_ERR = -1 };

static int on_event(sess *s)
{
    qkf_server *srv = s->srv;
    const uint8_t *r = s->rec;
    int64_t t = (int64_t)get64(r);
    uint32_t x = get16(r + 8), y = get16(r + 10), p = r[12];
    long long i = (long long)s->nev;
    if (x >= (uint32_t)s->sw || y >= (uint32_t)s->sh)
        return fail(s, QKF_SERVE_E_BAD_EVENT,
                    "event %lld: x = %u, y = %u is outside the %dx%d sensor", i, x, y, s->sw,
                    s->sh);
    if (p > 1)
        return fail(s, QKF_SERVE_E_BAD_EVENT, "event %lld: polarity %u (0 OFF or 1 ON)", i, p);
    if (t < 0 || t >= T_MAX)
        return fail(s, QKF_SERVE_E_BAD_TIME, "event %lld: timestamp %lld us out of range", i,
                    (long long)t);
    if (t < s->t_last)
        return fail(s, QKF_SERVE_E_BAD_TIME,
                    "event %lld: timestamp %lld us goes back (previous %lld us)", i, (long long)t,
                    (long long)s->t_last);
    int64_t W = srv->o.window;
    if (srv->o.window_kind == QKF_WINDOW_TIME) {
        if (!s->have_t0) {
            s->t0 = t;
            s->have_t0 = 1;
        }
        if (t - s->t0 >= W) {
            int64_t ahead = (t - s->t0) / W;
            if (ahead - 1 > srv->o.max_gap)
                return fail(s, QKF_SERVE_E_BAD_TIME,
                            "event %lld: timestamp %lld us is %lld windows ahead (at most %lld "
                            "empty windows in a row; FLUSH before a pause)",
                            i, (long long)t, (long long)ahead, (long long)srv->o.max_gap);
            while (t - s->t0 >= W) {
                if (!close_window(s))
                    return EV_STALL;
                s->t0 += W;
            }
        }
    } else if (s->open_events == W - 1 && s->qcount == s->nq) {
        return EV_STALL; /* this event closes the window: wait for room first */
    }
    qkf_event e = {t, (uint16_t)x, (uint16_t)y, (uint8_t)p};
    qkf_events_accumulate(&e, 1, s->sw, s->sh, srv->H, srv->W, s->open);
    s->open_events++;
    s->t_last = t;
    s->nev++;
    srv->st.events++;
    if (srv->o.window_kind == QKF_WINDOW_EVENTS && s->open_events == W)
        close_window(s);
    return EV_OK;
}

static int on_hello(sess *s)
{
    qkf_server *srv = s->srv;
    uint32_t version = get16(s->small), w = get32(s->small + 4), h = get32(s->small + 8);
    if (version != QKF_SERVE_VERSION)
        return fail(s, QKF_SERVE_E_VERSION, "protocol version %u (this server speaks %d)", version,
                    QKF_SERVE_VERSION);
    if (w < 1 || h < 1 || w > 65535 || h > 65535)
        return fail(s, QKF_SERVE_E_MALFORMED, "HELLO: sensor %ux%u (1..65535 each)", w, h);
    s->sw = (int)w, s->sh = (int)h;
    s->es = qkf_sched_session_new(srv->engine, 1);
    if (!s->es)
        return fail(s, QKF_SERVE_E_INTERNAL, "%s", qkf_last_error());
    s->nq = srv->nq;
    size_t fb = (size_t)srv->frame_floats * sizeof(float);
    s->open = qkf_calloc(1, fb);
    s->frames = qkf_calloc((size_t)s->nq, sizeof *s->frames);
    for (int i = 0; i < s->nq; i++)
        s->frames[i] = qkf_malloc(fb);
    s->meta = qkf_calloc((size_t)s->nq, sizeof *s->meta);
    s->spk = qkf_calloc((size_t)srv->layers, sizeof *s->spk);
    s->scores = qkf_calloc((size_t)srv->classes, sizeof *s->scores);
    s->hello = 1;
    wreq *r = wreq_new(s, srv->welcome_len);
    memcpy(r->data, srv->welcome, srv->welcome_len);
    send_req(s, r);
    slog(srv, "session %d: hello, sensor %dx%d", s->id, s->sw, s->sh);
    return 0;
}

/* A complete frame header: checks the length against the type. */
static int begin_frame(sess *s)
{
    uint32_t len = get32(s->hdr);
    s->type = s->hdr[4];
    s->small_n = s->rec_n = 0;
    if (len == 0)
        return fail(s, QKF_SERVE_E_MALFORMED, "frame of length 0 (no type)");
    if (len > QKF_SERVE_MAX_FRAME)
        return fail(s, QKF_SERVE_E_TOO_LARGE, "frame of %u bytes (at most %u)", len,
                    QKF_SERVE_MAX_FRAME);
    s->left = len - 1;
    switch (s->type) {
    case QKF_MSG_HELLO:
        if (s->hello)
            return fail(s, QKF_SERVE_E_PROTOCOL, "second HELLO");
        if (s->left != QKF_SERVE_HELLO_BYTES)
            return fail(s, QKF_SERVE_E_MALFORMED, "HELLO of %u bytes (%d expected)", s->left,
                        QKF_SERVE_HELLO_BYTES);
        return 0;
    case QKF_MSG_EVENTS:
        if (!s->hello)
            return fail(s, QKF_SERVE_E_PROTOCOL, "EVENTS before HELLO");
        if (s->left % QKF_SERVE_EVENT_BYTES)
            return fail(s, QKF_SERVE_E_MALFORMED,
                        "EVENTS payload of %u bytes is not a multiple of %d", s->left,
                        QKF_SERVE_EVENT_BYTES);
        return 0;
    case QKF_MSG_FLUSH:
    case QKF_MSG_RESET:
    case QKF_MSG_END:
        if (s->left)
            return fail(s, QKF_SERVE_E_MALFORMED,
                        "message type %u carries %u bytes (none expected)", s->type, s->left);
        if (!s->hello && s->type != QKF_MSG_END)
            return fail(s, QKF_SERVE_E_PROTOCOL, "%s before HELLO",
                        s->type == QKF_MSG_FLUSH ? "FLUSH" : "RESET");
        return 0;
    default:
        return fail(s, QKF_SERVE_E_MALFORMED, "unknown message type 0x%02x", s->type);
    }
}

/* FLUSH, RESET, END: 1 when done, 0 when the open window waits for room in the queue. */
static int run_ctl(sess *s)
{
    if (s->open_events > 0 && !close_window(s))
        return 0;
    switch (s->ctl) {
    case QKF_MSG_FLUSH:
        s->have_t0 = 0;
        break;
    case QKF_MSG_RESET:
        s->have_t0 = 0;
        s->t_last = 0;
        s->reset_next = 1;
        break;
    default: /* END, or EOF between frames */
        s->closing = 1;
        s->graceful = 1;
        stop_reading(s);
        slog(s->srv, "session %d: end after %llu windows", s->id, (unsigned long long)s->windows);
        break;
    }
    s->ctl = 0;
    return 1;
}

/* Parses the read buffer from rpos, as far as the queue allows. */
static void feed(sess *s)
{
    for (;;) {
        if (s->closing || s->stalled)
            return;
        if (s->ctl) {
            if (!run_ctl(s))
                s->stalled = 1;
            continue;
        }
        if (s->rec_n == QKF_SERVE_EVENT_BYTES) {
            int r = on_event(s);
            if (r == EV_STALL) {
                s->stalled = 1;
                return;
            }
            if (r == EV_ERR)
                return;
            s->rec_n = 0;
            continue;
        }
        if (s->hdr_n == 5 && s->left == 0 && s->rec_n == 0) { /* the frame is complete */
            s->hdr_n = 0;
            if (s->type == QKF_MSG_HELLO) {
                if (on_hello(s))
                    return;
            } else if (s->type != QKF_MSG_EVENTS) {
                s->ctl = s->type;
            }
            continue;
        }
        if (s->rpos == s->rlen)
            return;
        const uint8_t *p = s->rbuf + s->rpos;
        size_t avail = s->rlen - s->rpos, k;
        if (s->hdr_n < 5) {
            k = (size_t)(5 - s->hdr_n) < avail ? (size_t)(5 - s->hdr_n) : avail;
            memcpy(s->hdr + s->hdr_n, p, k);
            s->hdr_n += (int)k;
            s->rpos += k;
            if (s->hdr_n == 5 && begin_frame(s))
                return;
            continue;
        }
        if (s->type == QKF_MSG_EVENTS) {
            k = (size_t)(QKF_SERVE_EVENT_BYTES - s->rec_n);
            k = k < avail ? k : avail;
            memcpy(s->rec + s->rec_n, p, k);
            s->rec_n += (int)k;
        } else {
            k = s->left < avail ? s->left : avail;
            memcpy(s->small + s->small_n, p, k);
            s->small_n += (int)k;
        }
        s->left -= (uint32_t)k;
        s->rpos += k;
    }
}

/* ---- session life ---------------------------------------------------------------------------- */

static void session_free(sess *s)
{
    qkf_server *srv = s->srv;
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->st.sessions_active--;
    if (s->counted)
        srv->serving--;
    qkf_sched_session_free(s->es);
    if (s->frames)
        for (int i = 0; i < s->nq; i++)
            qkf_free(s->frames[i]);
    qkf_free(s->frames);
    qkf_free(s->open);
    qkf_free(s->meta);
    qkf_free(s->spk);
    qkf_free(s->scores);
    qkf_free(s->rbuf);
    slog(srv, "session %d: closed", s->id);
    qkf_free(s);
    if (srv->closing && !srv->closed && !srv->head && !srv->listener_open) {
        srv->closed = 1;
        if (srv->close_cb)
            srv->close_cb(srv, srv->close_data);
    }
}

static void on_close(uv_handle_t *h)
{
    sess *s = h->data;
    if (--s->handles == 0)
        session_free(s);
}

static void close_handles(sess *s)
{
    if (s->closing_handles)
        return;
    s->closing_handles = 1;
    stop_reading(s);
    uv_close((uv_handle_t *)&s->tcp, on_close);
    uv_close((uv_handle_t *)&s->timer, on_close);
}

/* After the shutdown the client sees EOF; the socket is closed once it hangs up too (reading and
 * discarding until then, so that unread input never turns the close into a reset that could
 * destroy the answers in flight), or when the linger timer expires. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    sess *s = req->data;
    s->shut_done = 1;
    if (status < 0 || s->peer_eof || !s->reading)
        close_handles(s);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    sess *s = h->data;
    (void)suggested;
    *b = uv_buf_init((char *)s->rbuf, RBUF_BYTES);
}

/* No more input and nothing left to step: the ERROR if any, then shut down the write side (the
 * client sees EOF after every answer); the linger timer closes the handles if it never ends. */
static void start_finish(sess *s)
{
    s->finishing = 1;
    stop_reading(s);
    if (s->broken) {
        close_handles(s);
        return;
    }
    if (s->err_code)
        send_error(s);
    s->shut.data = s;
    if (s->broken || uv_shutdown(&s->shut, (uv_stream_t *)&s->tcp, on_shutdown)) {
        close_handles(s);
        return;
    }
    if (!s->peer_eof && uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, on_read) == 0)
        s->reading = 1; /* discarding: see on_shutdown */
    uv_timer_start(&s->timer, on_timer, LINGER_MS, 0);
}

/* Moves the session on after any change: input (resume parsing when the queue has room),
 * compute (dispatch queued windows), and the end of the session. */
static void pump(sess *s)
{
    if (s->closing_handles)
        return;
    if (!s->closing && (s->stalled || s->ctl)) {
        s->stalled = 0;
        feed(s);
    }
    if (!s->closing && !s->stalled && !s->reading && s->rpos == s->rlen) {
        if (uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, on_read) == 0)
            s->reading = 1;
        else
            broken(s);
    }
    schedule(s);
    if (s->closing && !s->busy && !s->finishing) {
        if (!s->graceful)
            s->qcount = 0;
        if (s->qcount == 0)
            start_finish(s);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    sess *s = st->data;
    qkf_server *srv = s->srv;
    (void)b;
    if (nread == 0)
        return;
    if (s->finishing) { /* discarding until the client hangs up */
        if (nread < 0) {
            s->peer_eof = 1;
            stop_reading(s);
            if (s->shut_done)
                close_handles(s);
        }
        return;
    }
    if (nread < 0) {
        stop_reading(s);
        s->peer_eof = 1;
        if (!s->closing) {
            int mid = s->hdr_n > 0;
            if (nread == UV_EOF && !mid) {
                s->ctl = QKF_MSG_END; /* EOF between frames: as END */
            } else {
                srv->st.disconnects++;
                slog(srv, "session %d: %s", s->id,
                     nread == UV_EOF ? "EOF inside a frame" : uv_strerror((int)nread));
                if (nread == UV_EOF)
                    fail(s, QKF_SERVE_E_MALFORMED, "connection closed inside a frame");
                else
                    broken(s);
            }
        }
        pump(s);
        return;
    }
    s->rpos = 0;
    s->rlen = (size_t)nread;
    restart_timer(s);
    feed(s);
    if (s->stalled && s->reading) {
        stop_reading(s);
        srv->st.read_pauses++;
    }
    pump(s);
}

static void on_timer(uv_timer_t *t)
{
    sess *s = t->data;
    if (s->finishing) { /* the linger deadline */
        close_handles(s);
        return;
    }
    if (s->busy) { /* the engine is the slow one: look again soon */
        if (s->deadline)
            uv_timer_start(&s->timer, on_timer, 50, 0);
        else
            restart_timer(s);
        return;
    }
    if (s->deadline) { /* the server is closing and this client does not take its answers */
        s->graceful = 0;
        pump(s);
        return;
    }
    fail(s, QKF_SERVE_E_IDLE, "no progress for %g s", s->srv->o.idle_timeout);
    pump(s);
}

/* A session of srv with its handles initialised (not yet connected): on_connection accepts into
 * its tcp handle, then session_start begins it. */
static sess *session_new(qkf_server *srv)
{
    sess *s = qkf_calloc(1, sizeof *s);
    s->srv = srv;
    s->id = ++srv->next_id;
    s->rbuf = qkf_malloc(RBUF_BYTES);
    uv_tcp_init(srv->loop, &s->tcp);
    uv_timer_init(srv->loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    s->handles = 2;
    s->next = srv->head;
    if (srv->head)
        srv->head->prev = s;
    srv->head = s;
    srv->st.sessions_total++;
    if (++srv->st.sessions_active > srv->st.sessions_peak)
        srv->st.sessions_peak = srv->st.sessions_active;
    return s;
}

static void session_start(sess *s)
{
    qkf_server *srv = s->srv;
    uv_tcp_nodelay(&s->tcp, 1);
    if (srv->o.sndbuf > 0) {
        int size = srv->o.sndbuf;
        uv_send_buffer_size((uv_handle_t *)&s->tcp, &size);
    }
    slog(srv, "session %d: connected", s->id);
    if (srv->serving >= srv->o.max_sessions) {
        srv->st.rejected_busy++;
        fail(s, QKF_SERVE_E_BUSY, "%d sessions are open (the server's --max-sessions)",
             srv->serving);
        pump(s);
        return;
    }
    s->counted = 1;
    srv->serving++;
    if (srv->o.idle_timeout > 0)
        uv_timer_start(&s->timer, on_timer, (uint64_t)(srv->o.idle_timeout * 1000.0 + 0.5), 0);
    pump(s);
}

static void on_connection(uv_stream_t *l, int status)
{
    qkf_server *srv = l->data;
    if (status < 0) {
        slog(srv, "accept: %s", uv_strerror(status));
        return;
    }
    sess *s = session_new(srv);
    int rc = uv_accept(l, (uv_stream_t *)&s->tcp);
    if (rc) {
        slog(srv, "accept: %s", uv_strerror(rc));
        close_handles(s);
        return;
    }
    session_start(s);
}

/* ---- the server -------------------------------------------------------------------------------
 */

qkf_server *qkf_server_new(uv_loop_t *loop, const qkf_sched *e, const qkf_server_opts *o)
{
    const qkf_graph *g = qkf_sched_graph(e);
    const qkf_tensor *x = &g->tensors[g->input];
    if (x->static_t || x->c != 2) {
        qkf_set_error("the %s model takes %s; the server needs a dvs variant (2-channel event "
                      "frames: dvs128, cifar10dvs)",
                      qkf_variant_name(g->cfg.variant), x->static_t ? "images" : "other frames");
        return NULL;
    }
    if (o->window < 1 || o->window > ((int64_t)1 << 40)) {
        qkf_set_error("window of %lld (1..2^40)", (long long)o->window);
        return NULL;
    }
    if (o->max_sessions < 1 || o->steps < 0 || o->max_gap < 0 || o->idle_timeout < 0 ||
        o->sndbuf < 0 || !(o->shutdown_timeout >= 0)) {
        qkf_set_error("server options out of range");
        return NULL;
    }
    qkf_server *srv = qkf_calloc(1, sizeof *srv);
    srv->loop = loop;
    srv->engine = e;
    srv->o = *o;
    srv->C = x->c, srv->H = x->h, srv->W = x->w;
    srv->classes = g->cfg.num_classes;
    srv->layers = g->n_lif;
    srv->frame_floats = (int64_t)x->c * x->h * x->w;
    srv->answer_bytes = 5 + SCORES_FIXED + 4 * (size_t)srv->classes + 4 * (size_t)srv->layers;
    int64_t fb = srv->frame_floats * (int64_t)sizeof(float);
    int64_t nq = o->queue_bytes / fb;
    srv->nq = nq < 1 ? 1 : nq > 65536 ? 65536 : (int)nq;
    srv->out_limit = 64 * 1024;
    if (srv->out_limit < 2 * (int64_t)srv->answer_bytes)
        srv->out_limit = 2 * (int64_t)srv->answer_bytes;
    qkf_sched_session *probe = qkf_sched_session_new(e, 1);
    if (!probe) {
        qkf_free(srv);
        return NULL;
    }
    srv->fixed_bytes = (int64_t)sizeof(sess) + RBUF_BYTES + qkf_sched_session_bytes(probe) +
                       (srv->nq + 1) * fb + srv->nq * (int64_t)(sizeof(slot) + sizeof(float *)) +
                       srv->layers * 8 + srv->classes * 4;
    qkf_sched_session_free(probe);

    /* WELCOME, built once */
    size_t n = WELCOME_FIXED;
    for (int l = 0; l < srv->layers; l++)
        n += 2 + strlen(g->ops[g->lif_ops[l]].name);
    srv->welcome_len = 5 + n;
    srv->welcome = qkf_malloc(srv->welcome_len);
    uint8_t *p = srv->welcome;
    put_header(p, QKF_MSG_WELCOME, n);
    p += 5;
    put16(p, QKF_SERVE_VERSION);
    put16(p + 2, 0);
    put32(p + 4, (uint32_t)srv->classes);
    put32(p + 8, (uint32_t)srv->layers);
    put32(p + 12, (uint32_t)srv->C);
    put32(p + 16, (uint32_t)srv->H);
    put32(p + 20, (uint32_t)srv->W);
    p[24] = (uint8_t)o->window_kind;
    p[25] = p[26] = p[27] = 0;
    put64(p + 28, (uint64_t)o->window);
    put32(p + 36, (uint32_t)o->steps);
    put32(p + 40, QKF_SERVE_MAX_FRAME);
    p += WELCOME_FIXED;
    for (int l = 0; l < srv->layers; l++) {
        const char *name = g->ops[g->lif_ops[l]].name;
        size_t k = strlen(name);
        put16(p, (uint32_t)k);
        memcpy(p + 2, name, k);
        p += 2 + k;
    }
    return srv;
}

int qkf_server_listen(qkf_server *srv, const char *host_port)
{
    struct sockaddr_storage addr;
    if (qkf_stream_addr(host_port, &addr))
        return -1;
    if (srv->listener_init || srv->closing)
        return qkf_set_error("the server is already listening");
    uv_tcp_init(srv->loop, &srv->listener);
    srv->listener.data = srv;
    srv->listener_init = srv->listener_open = 1;
    int rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (rc)
        return qkf_set_error("listen on %s: %s", host_port, uv_strerror(rc));
    return 0;
}

int qkf_server_port(const qkf_server *srv)
{
    struct sockaddr_storage a;
    int len = sizeof a;
    if (!srv->listener_init || uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&a, &len) != 0)
        return -1;
    if (a.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    return ntohs(((struct sockaddr_in *)&a)->sin_port);
}

static void on_listener_close(uv_handle_t *h)
{
    qkf_server *srv = h->data;
    srv->listener_open = 0;
    if (srv->closing && !srv->closed && !srv->head) {
        srv->closed = 1;
        if (srv->close_cb)
            srv->close_cb(srv, srv->close_data);
    }
}

void qkf_server_close(qkf_server *srv, qkf_server_close_cb cb, void *data)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    srv->close_cb = cb;
    srv->close_data = data;
    slog(srv, "closing %lld sessions", (long long)srv->st.sessions_active);
    if (srv->listener_open)
        uv_close((uv_handle_t *)&srv->listener, on_listener_close);
    sess *next;
    for (sess *s = srv->head; s; s = next) {
        next = s->next;
        if (!s->closing) {
            /* graceful: the queued windows are answered, then ERROR shutdown */
            s->err_code = QKF_SERVE_E_SHUTDOWN;
            snprintf(s->err_msg, sizeof s->err_msg, "server shutting down");
            s->closing = 1;
            s->graceful = 1;
            stop_reading(s);
        }
        if (!s->finishing && !s->closing_handles) {
            s->deadline = 1;
            uv_timer_start(&s->timer, on_timer, (uint64_t)(srv->o.shutdown_timeout * 1000.0), 0);
        }
        pump(s);
    }
    if (!srv->head && !srv->listener_open && !srv->closed) {
        srv->closed = 1;
        if (cb)
            cb(srv, data);
    }
}

const qkf_server_stats *qkf_server_stats_get(const qkf_server *srv) { return &srv->st; }

int64_t qkf_server_session_bound(const qkf_server *srv)
{
    return srv->fixed_bytes + srv->out_limit + (int64_t)srv->answer_bytes * (srv->nq + 1) +
           (int64_t)srv->welcome_len + 4096; /* one ERROR frame */
}

void qkf_server_free(qkf_server *srv)
{
    if (!srv)
        return;
    if (srv->head || srv->listener_open)
        abort(); /* a programming error: qkf_server_close and the loop have not finished */
    qkf_free(srv->welcome);
    qkf_free(srv);
}

/* ---- client --------------------------------------------------------------------------------- */

struct qkf_client {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    int handles, closing, reading;
    const qkf_events *ev;
    qkf_client_opts o;
    char where[300];
    qkf_welcome w;
    int welcomed;
    /* receive */
    uint8_t *rbuf;
    uint8_t hdr[5];
    int hdr_n;
    uint32_t len, got;
    uint8_t *msg;
    uint32_t msg_cap;
    /* send */
    int64_t next;
    int sent_end;
    int64_t inflight;
    double t_wall0;
    int64_t closed_upto;
    double *close_time; /* [windows] */
    double start;
    float *scores;
    uint32_t *spikes;
    qkf_client_result res;
};

void qkf_client_opts_default(qkf_client_opts *o)
{
    memset(o, 0, sizeof *o);
    o->speed = 1.0;
    o->chunk = 4096;
    o->inflight = 256 * 1024;
}

static void client_error(qkf_client *c, const char *fmt, ...) QKF_PRINTF(2, 3);
static void client_error(qkf_client *c, const char *fmt, ...)
{
    if (c->res.error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res.error, sizeof c->res.error, fmt, ap);
    va_end(ap);
}

static void client_on_close(uv_handle_t *h)
{
    qkf_client *c = h->data;
    c->handles--;
}

static void client_close(qkf_client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->res.seconds = qkf_now() - c->start;
    c->res.done = c->sent_end && !c->res.error[0] && c->res.answers == c->res.windows;
    uv_close((uv_handle_t *)&c->tcp, client_on_close);
    uv_close((uv_handle_t *)&c->timer, client_on_close);
}

static void mark_closed(qkf_client *c, int64_t upto, double t)
{
    for (int64_t k = c->closed_upto + 1; k <= upto && k < c->res.windows; k++)
        c->close_time[k] = t;
    if (upto > c->closed_upto)
        c->closed_upto = upto;
}

static void client_pump(qkf_client *c);

static void client_on_write(uv_write_t *req, int status)
{
    wreq *r = req->data;
    qkf_client *c = r->owner;
    c->inflight -= (int64_t)r->len;
    if (status == 0 && r->closes >= 0)
        mark_closed(c, r->closes, qkf_now());
    qkf_free(r);
    if (status < 0) {
        if (status != UV_ECANCELED)
            client_error(c, "%s: write: %s", c->where, uv_strerror(status));
        client_close(c);
        return;
    }
    client_pump(c);
}

static void client_send(qkf_client *c, wreq *r)
{
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
    c->inflight += (int64_t)r->len;
    int64_t closes = r->closes;
    int rc = uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, client_on_write);
    if (rc) {
        c->inflight -= (int64_t)r->len;
        qkf_free(r);
        client_error(c, "%s: write: %s", c->where, uv_strerror(rc));
        client_close(c);
        return;
    }
    /* written at once (nothing queued behind it): the window is closed now */
    if (closes >= 0 && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
        mark_closed(c, closes, qkf_now());
}

/* Sends what may be sent: events (by the clock in realtime mode), then END. */
static void client_pump(qkf_client *c)
{
    const qkf_events *ev = c->ev;
    int64_t W = c->w.window;
    while (!c->closing && c->welcomed && !c->sent_end && c->inflight < c->o.inflight) {
        int64_t i0 = c->next, i1 = ev->n - i0 < c->o.chunk ? ev->n : i0 + c->o.chunk;
        if (c->o.realtime && i0 < ev->n) {
            double el = (qkf_now() - c->t_wall0) * c->o.speed * 1e6;
            int64_t j = i0;
            while (j < i1 && (double)(ev->ev[j].t - ev->ev[0].t) <= el)
                j++;
            i1 = j;
            if (i1 == i0)
                return; /* the timer calls again */
        }
        if (i0 == ev->n) {
            wreq *r = wreq_new(c, 5);
            put_header(r->data, QKF_MSG_END, 0);
            r->closes = c->res.windows - 1;
            c->sent_end = 1;
            uv_timer_stop(&c->timer);
            client_send(c, r);
            return;
        }
        size_t n = (size_t)(i1 - i0);
        wreq *r = wreq_new(c, 5 + n * QKF_SERVE_EVENT_BYTES);
        put_header(r->data, QKF_MSG_EVENTS, n * QKF_SERVE_EVENT_BYTES);
        uint8_t *p = r->data + 5;
        for (int64_t i = i0; i < i1; i++, p += QKF_SERVE_EVENT_BYTES) {
            const qkf_event *e = &ev->ev[i];
            put64(p, (uint64_t)e->t);
            put16(p + 8, e->x);
            put16(p + 10, e->y);
            p[12] = e->p;
        }
        /* the windows this frame closes: those before its last event's (time), or those it
         * completes (events) */
        r->closes = c->w.window_kind == QKF_WINDOW_TIME
                        ? qkf_stream_window_of(ev->ev, i1 - 1, QKF_WINDOW_TIME, W) - 1
                        : i1 / W - 1;
        c->next = i1;
        c->res.events += (int64_t)n;
        client_send(c, r);
    }
}

static void client_on_timer(uv_timer_t *t) { client_pump(t->data); }

static int client_welcome(qkf_client *c, const uint8_t *p, uint32_t n)
{
    if (n < WELCOME_FIXED)
        return qkf_set_error("WELCOME of %u bytes", n);
    qkf_welcome *w = &c->w;
    w->version = (int)get16(p);
    w->classes = (int)get32(p + 4);
    w->layers = (int)get32(p + 8);
    w->channels = (int)get32(p + 12);
    w->height = (int)get32(p + 16);
    w->width = (int)get32(p + 20);
    w->window_kind = p[24] == 1 ? QKF_WINDOW_EVENTS : QKF_WINDOW_TIME;
    w->window = (int64_t)get64(p + 28);
    w->steps = (int)get32(p + 36);
    w->max_frame = get32(p + 40);
    if (w->version != QKF_SERVE_VERSION || w->window < 1 || w->classes < 1 ||
        w->classes > 1 << 20 || w->layers < 0 || w->layers > 1 << 16)
        return qkf_set_error("WELCOME: version %d, window %lld, %d classes, %d layers", w->version,
                             (long long)w->window, w->classes, w->layers);
    int64_t maxev = ((int64_t)w->max_frame - 1) / QKF_SERVE_EVENT_BYTES;
    if (c->o.chunk > maxev)
        c->o.chunk = maxev;
    c->res.windows = qkf_stream_windows(c->ev->ev, c->ev->n, w->window_kind, w->window);
    c->close_time = qkf_calloc((size_t)c->res.windows + 1, sizeof(double));
    c->res.latency = qkf_calloc((size_t)c->res.windows + 1, sizeof(double));
    c->scores = qkf_calloc((size_t)w->classes, sizeof(float));
    c->spikes = qkf_calloc((size_t)w->layers + 1, sizeof(uint32_t));
    c->welcomed = 1;
    if (c->o.on_welcome)
        c->o.on_welcome(c->o.data, c->o.id, w);
    c->t_wall0 = qkf_now();
    if (c->o.realtime)
        uv_timer_start(&c->timer, client_on_timer, 1, 1);
    client_pump(c);
    return 0;
}

static int client_scores(qkf_client *c, const uint8_t *p, uint32_t n)
{
    const qkf_welcome *w = &c->w;
    if (!c->welcomed)
        return qkf_set_error("SCORES before WELCOME");
    if (n != SCORES_FIXED + 4 * (uint32_t)w->classes + 4 * (uint32_t)w->layers ||
        get32(p + 20) != (uint32_t)w->classes ||
        get32(p + 24 + 4 * (uint32_t)w->classes) != (uint32_t)w->layers)
        return qkf_set_error("SCORES of %u bytes does not match %d classes and %d layers", n,
                             w->classes, w->layers);
    qkf_answer a;
    a.window = get64(p);
    a.sample = get32(p + 8);
    a.step = get32(p + 12);
    a.events = get32(p + 16);
    a.classes = w->classes;
    a.layers = w->layers;
    const uint8_t *q = p + 24;
    for (int j = 0; j < w->classes; j++, q += 4)
        c->scores[j] = getf(q);
    q += 4;
    for (int l = 0; l < w->layers; l++, q += 4)
        c->spikes[l] = get32(q);
    a.scores = c->scores;
    a.spikes = c->spikes;
    if (c->res.answers >= c->res.windows)
        return qkf_set_error("answer for window %llu: more answers than the %lld windows sent",
                             (unsigned long long)a.window, (long long)c->res.windows);
    a.latency = a.window < (uint64_t)c->res.windows && c->close_time[a.window] > 0
                    ? qkf_now() - c->close_time[a.window]
                    : -1.0;
    c->res.latency[c->res.answers++] = a.latency;
    if (c->o.on_answer)
        c->o.on_answer(c->o.data, c->o.id, &a);
    return 0;
}

static void client_message(qkf_client *c, uint8_t type, const uint8_t *p, uint32_t n)
{
    int rc = 0;
    switch (type) {
    case QKF_MSG_WELCOME:
        rc = c->welcomed ? qkf_set_error("second WELCOME") : client_welcome(c, p, n);
        break;
    case QKF_MSG_SCORES:
        rc = client_scores(c, p, n);
        break;
    case QKF_MSG_ERROR:
        if (n < 4) {
            rc = qkf_set_error("ERROR of %u bytes", n);
            break;
        }
        c->res.error_code = (int)get32(p);
        client_error(c, "%s: server error %d (%s): %.*s", c->where, c->res.error_code,
                     qkf_serve_error_name(c->res.error_code), (int)(n - 4), (const char *)p + 4);
        break;
    default:
        rc = qkf_set_error("unknown message type 0x%02x", type);
    }
    if (rc) {
        client_error(c, "%s: %s", c->where, qkf_last_error());
        client_close(c);
    }
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    qkf_client *c = h->data;
    (void)suggested;
    *b = uv_buf_init((char *)c->rbuf, RBUF_BYTES);
}

static void client_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    qkf_client *c = st->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            client_error(c, "%s: read: %s", c->where, uv_strerror((int)nread));
        else if (c->hdr_n)
            client_error(c, "%s: the server hung up inside a frame", c->where);
        else if (!c->sent_end || c->res.answers != c->res.windows)
            client_error(c, "%s: the server hung up after %lld of %lld answers", c->where,
                         (long long)c->res.answers, (long long)c->res.windows);
        client_close(c);
        return;
    }
    const uint8_t *p = (const uint8_t *)b->base;
    size_t n = (size_t)nread;
    while (n > 0 && !c->closing) {
        if (c->hdr_n < 5) {
            size_t k = (size_t)(5 - c->hdr_n) < n ? (size_t)(5 - c->hdr_n) : n;
            memcpy(c->hdr + c->hdr_n, p, k);
            c->hdr_n += (int)k, p += k, n -= k;
            if (c->hdr_n < 5)
                break;
            c->len = get32(c->hdr);
            c->got = 0;
            if (c->len < 1 || c->len > QKF_SERVE_MAX_FRAME) {
                client_error(c, "%s: frame of %u bytes from the server", c->where, c->len);
                client_close(c);
                return;
            }
            if (c->len - 1 > c->msg_cap) {
                qkf_free(c->msg);
                c->msg_cap = c->len - 1;
                c->msg = qkf_malloc(c->msg_cap);
            }
        }
        uint32_t want = c->len - 1 - c->got;
        size_t k = want < n ? want : n;
        if (k)
            memcpy(c->msg + c->got, p, k);
        c->got += (uint32_t)k, p += k, n -= k;
        if (c->got == c->len - 1) {
            c->hdr_n = 0;
            client_message(c, c->hdr[4], c->msg, c->len - 1);
        }
    }
}

static void client_on_connect(uv_connect_t *req, int status)
{
    qkf_client *c = req->data;
    if (status < 0) {
        client_error(c, "%s: connect: %s", c->where, uv_strerror(status));
        client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    wreq *r = wreq_new(c, 5 + QKF_SERVE_HELLO_BYTES);
    put_header(r->data, QKF_MSG_HELLO, QKF_SERVE_HELLO_BYTES);
    put16(r->data + 5, QKF_SERVE_VERSION);
    put16(r->data + 7, 0);
    put32(r->data + 9, (uint32_t)c->ev->width);
    put32(r->data + 13, (uint32_t)c->ev->height);
    client_send(c, r);
    if (!c->closing && uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_on_read)) {
        client_error(c, "%s: cannot read", c->where);
        client_close(c);
    }
}

qkf_client *qkf_client_new(uv_loop_t *loop, const char *host_port, const qkf_events *ev,
                           const qkf_client_opts *o)
{
    struct sockaddr_storage addr;
    if (qkf_stream_addr(host_port, &addr))
        return NULL;
    if (ev->width < 1 || ev->height < 1 || ev->width > 65535 || ev->height > 65535) {
        qkf_set_error("sensor %dx%d cannot be sent (1..65535)", ev->width, ev->height);
        return NULL;
    }
    qkf_client *c = qkf_calloc(1, sizeof *c);
    c->loop = loop;
    c->ev = ev;
    if (o)
        c->o = *o;
    else
        qkf_client_opts_default(&c->o);
    if (c->o.chunk < 1)
        c->o.chunk = 4096;
    if (c->o.inflight < 1)
        c->o.inflight = 256 * 1024;
    if (!(c->o.speed > 0))
        c->o.speed = 1.0;
    snprintf(c->where, sizeof c->where, "%s", host_port);
    c->closed_upto = -1;
    c->rbuf = qkf_malloc(RBUF_BYTES);
    c->start = qkf_now();
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c->timer.data = c->creq.data = c;
    c->handles = 2;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&addr, client_on_connect);
    if (rc) {
        client_error(c, "%s: connect: %s", host_port, uv_strerror(rc));
        client_close(c);
    }
    return c;
}

const qkf_client_result *qkf_client_result_get(const qkf_client *c) { return &c->res; }

void qkf_client_free(qkf_client *c)
{
    if (!c)
        return;
    if (c->handles)
        abort(); /* a programming error: the loop has not finished the client */
    qkf_free(c->close_time);
    qkf_free(c->res.latency);
    qkf_free(c->scores);
    qkf_free(c->spikes);
    qkf_free(c->msg);
    qkf_free(c->rbuf);
    qkf_free(c);
}
