/* Live event streams over TCP (libuv): the server behind `qkf serve`, where every connection is a
 * session of the event engine fed with camera events and answered window by window, and the
 * client behind `qkf client`, which replays an event file to a server.
 *
 *   qkf_server_new / _listen / _close / _free     one server on the caller's loop
 *   qkf_client_new / _result / _free               one connection replaying events
 *   qkf_msg_* / qkf_serve_error_name               the wire protocol (docs/serve.md)
 *
 * Protocol, version 1 (all integers little-endian; byte layouts in docs/serve.md). A frame is a
 * u32 length (of what follows it), a u8 type and length - 1 bytes of payload. The client sends
 * HELLO (version, sensor size), then EVENTS (packed 13-byte records t, x, y, p), FLUSH, RESET
 * and finally END; the server answers HELLO with WELCOME and every window with SCORES (window
 * index, class scores, per-layer spike counts of the step). A bad frame gets an ERROR (code,
 * message) and the connection is closed; nothing a client sends can stop the server or touch
 * another session.
 *
 * Threads: everything runs on the caller's loop thread, except the engine steps, which run on
 * libuv's thread pool (uv_queue_work), one work item per session at a time, so windows of one
 * session are stepped and answered in order. Nothing here prints. */
#ifndef QKF_STREAM_H
#define QKF_STREAM_H

#include <stdint.h>

#include <uv.h>

#include "../../sim/sched.h"
#include "../../io/events.h"

#define QKF_SERVE_VERSION 1
#define QKF_SERVE_MAX_FRAME (1u << 20) /* largest frame length (type + payload), bytes */
/* Default --max-gap: 1000 empty windows (10 s of the default 10 ms windows) in one timestamp
 * jump. Every empty window is an engine step and an answer, so one event far ahead could make a
 * session step and answer for minutes (100 000 windows before); a client that pauses longer
 * sends FLUSH, after which the next event opens a fresh window (docs/serve.md). */
#define QKF_SERVE_MAX_GAP 1000
#define QKF_SERVE_EVENT_BYTES 13       /* i64 t, u16 x, u16 y, u8 p */
#define QKF_SERVE_HELLO_BYTES 12       /* u16 version, u16 flags, u32 width, u32 height */

typedef enum {
    QKF_MSG_HELLO = 0x01,   /* client: version, sensor size */
    QKF_MSG_EVENTS = 0x02,  /* client: n x 13-byte event records */
    QKF_MSG_FLUSH = 0x03,   /* client: close the open window now */
    QKF_MSG_RESET = 0x04,   /* client: close the open window; the next one starts a new sample */
    QKF_MSG_END = 0x05,     /* client: close the open window; answer everything, then hang up */
    QKF_MSG_WELCOME = 0x81, /* server: model and window configuration */
    QKF_MSG_SCORES = 0x82,  /* server: the answer to one window */
    QKF_MSG_ERROR = 0x83,   /* server: code, message; the connection closes after it */
} qkf_msg_type;

/* Error codes of ERROR frames: one table, X(name, code, text). */
#define QKF_SERVE_ERRORS(X)                                                                        \
    X(MALFORMED, 1, "malformed frame")                                                             \
    X(TOO_LARGE, 2, "frame too large")                                                             \
    X(VERSION, 3, "unsupported protocol version")                                                  \
    X(PROTOCOL, 4, "message out of order")                                                         \
    X(BAD_EVENT, 5, "event outside the sensor or bad polarity")                                    \
    X(BAD_TIME, 6, "timestamp going backwards or jumping too far ahead")                           \
    X(OVERFLOW, 7, "more than 65535 events on one input pixel in one window")                      \
    X(BUSY, 8, "too many sessions")                                                                \
    X(IDLE, 9, "idle timeout")                                                                     \
    X(SHUTDOWN, 10, "server shutting down")                                                        \
    X(INTERNAL, 11, "internal error")

typedef enum {
#define QKF__SERVE_ENUM(name, code, text) QKF_SERVE_E_##name = code,
    QKF_SERVE_ERRORS(QKF__SERVE_ENUM)
#undef QKF__SERVE_ENUM
} qkf_serve_error;

const char *qkf_serve_error_name(int code); /* "malformed frame", ...; "unknown error" */

typedef enum {
    QKF_WINDOW_TIME = 0,   /* windows of a fixed duration (microseconds) */
    QKF_WINDOW_EVENTS = 1, /* windows of a fixed number of events */
} qkf_window_kind;

/* The WELCOME payload, decoded. */
typedef struct {
    int version;
    int classes, layers;         /* scores per answer, spike counts per answer */
    int channels, height, width; /* the model's input frames */
    qkf_window_kind window_kind;
    int64_t window;    /* microseconds or events */
    int steps;         /* windows per sample (0: the session never resets by itself) */
    int64_t max_frame; /* QKF_SERVE_MAX_FRAME */
} qkf_welcome;

/* ---- server ------------------------------------------------------------------------------ */

typedef struct {
    qkf_window_kind window_kind;
    int64_t window;          /* microseconds (time) or events; default 10000 us */
    int steps;               /* windows per sample: the session resets after this many steps (the
                                model's T by default; 0: never, scores are a running mean) */
    int max_sessions;        /* concurrent sessions; more are answered ERROR busy (default 64) */
    double idle_timeout;     /* seconds without input (or output progress) before a session is
                                closed with ERROR idle; 0: never (default 30) */
    int64_t queue_bytes;     /* per session: window frames waiting for the engine; reading stops
                                while they are full (default 1 MiB, at least one frame) */
    int64_t max_gap;         /* time windows: at most this many empty windows in one timestamp jump
                                (default QKF_SERVE_MAX_GAP); each is an engine step and an
                                answer, so the bound is what one event can cost the server */
    double shutdown_timeout; /* server close: how long a session may take to answer its queued
                                windows (a client that does not read them) before it is
                                dropped, seconds (default 5) */
    int sndbuf; /* kernel send buffer of each session's socket (SO_SNDBUF; Linux doubles
                   it), so that answers a client does not read back up into the server's
                   own accounting soon; 0: the system's auto-tuned size (default 65536) */
    void (*log)(void *data, const char *line); /* optional: one line per session event */
    void *log_data;
} qkf_server_opts;

/* Defaults for a model of config cfg (steps = cfg->T). */
void qkf_server_opts_default(qkf_server_opts *o, const qkf_config *cfg);

typedef struct {
    int64_t sessions_total;  /* connections accepted */
    int64_t sessions_active; /* connections open now */
    int64_t sessions_peak;
    int64_t rejected_busy;
    int64_t events;             /* events accepted */
    int64_t windows;            /* windows stepped and answered */
    int64_t errors;             /* ERROR frames sent (busy, idle and shutdown included) */
    int64_t disconnects;        /* connections lost without END (reset, EOF inside a frame) */
    int64_t read_pauses;        /* times a session stopped reading: its queue was full */
    int64_t answer_waits;       /* times a session's stepping waited for its client to read */
    int64_t peak_session_bytes; /* the most memory one session held */
    int64_t peak_queued;        /* the most window frames one session had waiting */
} qkf_server_stats;

typedef struct qkf_server qkf_server;
typedef void (*qkf_server_close_cb)(qkf_server *s, void *data);

/* A server of engine e (a dvs variant: 2-channel frames; e must outlive the server) on the
 * caller's loop. NULL on error (message recorded). */
qkf_server *qkf_server_new(uv_loop_t *loop, const qkf_sched *e, const qkf_server_opts *o);
/* Binds "HOST:PORT" and listens. HOST must be a loopback address (127.0.0.0/8, localhost, ::1 or
 * [::1]): the protocol has no authentication. PORT 0 picks a free port (qkf_server_port). */
int qkf_server_listen(qkf_server *s, const char *host_port);
int qkf_server_port(const qkf_server *s);
/* Stops accepting, and closes every session cleanly: it stops reading, steps and answers the
 * windows already queued, sends ERROR shutdown and hangs up. A session whose client does not
 * take its answers is dropped after shutdown_timeout, and a hung-up session whose client never
 * closes its side after 2 s more. cb (optional) runs once every handle of the server is closed;
 * the loop then has nothing left of the server. Call on the loop thread. */
void qkf_server_close(qkf_server *s, qkf_server_close_cb cb, void *data);
const qkf_server_stats *qkf_server_stats_get(const qkf_server *s);
/* The memory one session may hold at most (its engine state, frames, buffers). */
int64_t qkf_server_session_bound(const qkf_server *s);
/* Frees a closed server (after its close callback ran), or one that never listened. */
void qkf_server_free(qkf_server *s);

/* ---- client ------------------------------------------------------------------------------ */

/* One answer, decoded. scores and spikes point into the client's buffer: valid during the
 * callback only. */
typedef struct {
    uint64_t window; /* window index since the connection began */
    uint32_t sample; /* sample index (the session resets between samples) */
    uint32_t step;   /* 1-based step within the sample */
    uint32_t events; /* events in the window */
    int classes, layers;
    const float *scores;    /* [classes] */
    const uint32_t *spikes; /* [layers] spikes of each LIF layer in this step */
    double latency;         /* seconds from sending what closed the window to this answer */
} qkf_answer;

typedef struct {
    int realtime;     /* send events at the pace of their timestamps (else as fast as the
                         connection takes them) */
    double speed;     /* realtime: timestamps run this many times faster (default 1) */
    int64_t chunk;    /* events per EVENTS frame at most (default 4096) */
    int64_t inflight; /* bytes written but not yet taken by the kernel (default 256 KiB) */
    void (*on_welcome)(void *data, int id, const qkf_welcome *w);
    void (*on_answer)(void *data, int id, const qkf_answer *a);
    void *data;
    int id; /* passed to the callbacks */
} qkf_client_opts;

void qkf_client_opts_default(qkf_client_opts *o);

typedef struct {
    int done;        /* the server hung up after END and every window was answered */
    int error_code;  /* the server's ERROR code, or 0 */
    char error[256]; /* the server's message, or a connection error; "" if none */
    int64_t events;  /* events sent */
    int64_t windows; /* windows the events make (with the server's window rule) */
    int64_t answers; /* SCORES received */
    double seconds;  /* from connecting to the server hanging up */
    double *latency; /* [answers] seconds, in window order (-1: unknown) */
} qkf_client_result;

typedef struct qkf_client qkf_client;

/* Connects to "HOST:PORT" on the caller's loop and replays events ev (which must outlive the
 * client): HELLO with ev's sensor size, EVENTS, END; the run ends when the server hangs up. NULL
 * on error (message recorded). */
qkf_client *qkf_client_new(uv_loop_t *loop, const char *host_port, const qkf_events *ev,
                           const qkf_client_opts *o);
/* After the loop ran: what happened (valid until qkf_client_free). */
const qkf_client_result *qkf_client_result_get(const qkf_client *c);
void qkf_client_free(qkf_client *c);

/* The server's window rule on events ev[0..n): how many windows they make (time windows from
 * the first event's timestamp, empty ones included; event windows of `window` events, the last
 * one partial), and the window of event i. */
int64_t qkf_stream_windows(const qkf_event *ev, int64_t n, qkf_window_kind kind, int64_t window);
int64_t qkf_stream_window_of(const qkf_event *ev, int64_t i, qkf_window_kind kind, int64_t window);

/* Parses "HOST:PORT" into a loopback socket address (sockaddr_in or sockaddr_in6). */
int qkf_stream_addr(const char *host_port, struct sockaddr_storage *addr);

#endif
