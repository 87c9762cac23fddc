/* Streaming: the event engine stepped one time window at a time (qkf_sched_session), and the
 * event server and client over libuv (tools/app/stream.c).
 *
 * Sessions must reproduce qkf_sched_forward bit for bit: the same code runs each step in the same
 * order, and the readout's time mean is accumulated exactly as the forward sums it. The server
 * must give every client exactly the answers of an offline session stepped on the same events
 * (frames by qkf_event_stream windows and qkf_events_accumulate), whatever the other clients do:
 * many at once, slow readers, malformed or oversized frames, clients that vanish. Each server
 * runs in-process on its own loop in a thread, on an ephemeral loopback port; after it stops,
 * its loop must close with no handle left (uv_loop_close == 0). Hostile clients are plain
 * blocking sockets; well-behaved ones are qkf_client (the library behind qkf client). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "../io/events.h"
#include "../io/io.h"
#include "../tools/app/stream.h"
#include "../kernels/base.h"
#include "../sim/dense.h"
#include "../sim/sched.h"

static void setup(void)
{
    qkf_h5_quiet();
    qkf_set_threads(1);
    signal(SIGPIPE, SIG_IGN); /* hostile clients write to sockets the server closed */
}

TestSuite(serve, .init = setup, .timeout = 60);

/* ---- fixtures ------------------------------------------------------------------------------ */

typedef struct {
    qkf_model m;
    float *x; /* the reference input: [B][T][C][H][W] frames or [B][C][H][W] images */
    int B, T;
    int64_t per; /* floats of one frame (or image) */
} fixture;

static void fixture_load(const char *name, fixture *f)
{
    char w[512], ref[512];
    snprintf(w, sizeof w, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(ref, sizeof ref, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    if (access(w, R_OK) != 0 || access(ref, R_OK) != 0)
        cr_skip_test("fixture %s not present", name);
    memset(f, 0, sizeof *f);
    cr_assert_eq(qkf_ckpt_load(w, &f->m), 0, "%s", qkf_last_error());
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(ref, "input", &f->x, &nd, sh), 0, "%s", qkf_last_error());
    f->B = (int)sh[0];
    if (nd == 5)
        f->m.cfg.T = (int)sh[1];
    f->T = f->m.cfg.T;
    f->per = (int64_t)f->m.cfg.in_channels * f->m.cfg.img_size * f->m.cfg.img_size;
}

static void fixture_free(fixture *f)
{
    qkf_free(f->x);
    qkf_model_free(&f->m);
}

static const float *frame_of(const fixture *f, int b, int t)
{
    if (qkf_config_is_frames(&f->m.cfg))
        return f->x + ((int64_t)b * f->T + t) * f->per;
    return f->x + (int64_t)b * f->per; /* a static image: the same at every step */
}

/* ---- sessions ------------------------------------------------------------------------------ */

/* Steps every sample of fixture `name` frame by frame and compares with one batch forward:
 * each step's per-layer spike counts with the recorded spikes of (t, b), and the scores after T
 * steps with the logits, bit for bit. One session serves all samples (reset between them). */
static void session_matches_forward(const char *name, int threads)
{
    fixture f;
    fixture_load(name, &f);
    qkf_sched *e = qkf_sched_create(&f.m, f.B, QKF_SCHED_RECORD);
    cr_assert_not_null(e, "%s", qkf_last_error());
    const qkf_graph *g = qkf_sched_graph(e);
    int K = f.m.cfg.num_classes, L = g->n_lif;
    float *logits = qkf_malloc((size_t)f.B * K * sizeof(float));
    cr_assert_eq(qkf_sched_forward(e, f.x, f.B, logits, NULL), 0, "%s", qkf_last_error());

    qkf_sched_session *s = qkf_sched_session_new(e, threads);
    cr_assert_not_null(s, "%s", qkf_last_error());
    cr_assert_gt(qkf_sched_session_bytes(s), 0);
    float *scores = qkf_malloc((size_t)K * sizeof(float));
    int64_t *sc = qkf_malloc((size_t)L * sizeof(int64_t));
    for (int b = 0; b < f.B; b++) {
        qkf_sched_session_reset(s);
        for (int t = 0; t < f.T; t++) {
            cr_assert_eq(qkf_sched_session_step(s, frame_of(&f, b, t), sc), 0, "%s",
                         qkf_last_error());
            for (int l = 0; l < L; l++) {
                int64_t n = qkf_graph_lif_neurons(g, l), want = 0;
                const uint8_t *r = qkf_sched_spikes(e, l) + ((int64_t)t * f.B + b) * n;
                for (int64_t i = 0; i < n; i++)
                    want += r[i];
                cr_assert_eq(sc[l], want,
                             "%s: sample %d step %d layer %d: %lld spikes, forward "
                             "%lld",
                             name, b, t, l, (long long)sc[l], (long long)want);
            }
        }
        cr_assert_eq(qkf_sched_session_steps(s), f.T);
        qkf_sched_session_scores(s, scores);
        for (int j = 0; j < K; j++)
            cr_assert_eq(memcmp(&scores[j], &logits[(int64_t)b * K + j], sizeof(float)), 0,
                         "%s: sample %d class %d: session %.9g, forward %.9g", name, b, j,
                         (double)scores[j], (double)logits[(int64_t)b * K + j]);
    }
    qkf_stats *st = qkf_sched_session_stats(s);
    cr_assert_eq(st->T, 1);
    cr_assert_eq(st->batches, (int64_t)f.B * f.T);
    cr_assert_eq(st->samples, f.B);
    qkf_free(sc);
    qkf_free(scores);
    qkf_sched_session_free(s);
    qkf_free(logits);
    qkf_sched_free(e);
    fixture_free(&f);
}

Test(serve, session_steps_equal_forward_dvs128) { session_matches_forward("dvs128_small", 1); }
Test(serve, session_steps_equal_forward_cifar10dvs)
{
    session_matches_forward("cifar10dvs_small", 1);
}
Test(serve, session_threads_equal_forward) { session_matches_forward("dvs128_small", 2); }
Test(serve, session_static_image_equals_forward) { session_matches_forward("cifar_small", 1); }

/* On the dvs128 fixture the dense engine's logits are those of the event engine bit for bit (no
 * neuron of it lies within float rounding of its threshold), so the stepped session equals the
 * dense forward too. */
Test(serve, session_equals_dense_dvs128)
{
    fixture f;
    fixture_load("dvs128_small", &f);
    int K = f.m.cfg.num_classes;
    qkf_dense *d = qkf_dense_create(&f.m, f.B, 0);
    cr_assert_not_null(d, "%s", qkf_last_error());
    float *dl = qkf_malloc((size_t)f.B * K * sizeof(float)), *scores = qkf_malloc((size_t)K * 4);
    cr_assert_eq(qkf_dense_forward(d, f.x, f.B, dl, NULL), 0, "%s", qkf_last_error());
    qkf_sched *e = qkf_sched_create(&f.m, 1, 0);
    cr_assert_not_null(e, "%s", qkf_last_error());
    for (int b = 0; b < f.B; b++) {
        qkf_sched_session *s = qkf_sched_session_new(e, 1);
        for (int t = 0; t < f.T; t++)
            cr_assert_eq(qkf_sched_session_step(s, frame_of(&f, b, t), NULL), 0);
        qkf_sched_session_scores(s, scores);
        for (int j = 0; j < K; j++)
            cr_assert_eq(memcmp(&scores[j], &dl[(int64_t)b * K + j], sizeof(float)), 0,
                         "sample %d class %d: session %.9g, dense %.9g", b, j, (double)scores[j],
                         (double)dl[(int64_t)b * K + j]);
        qkf_sched_session_free(s);
    }
    qkf_sched_free(e);
    qkf_free(scores);
    qkf_free(dl);
    qkf_dense_free(d);
    fixture_free(&f);
}

/* A frame value that is not an event count fails the step and changes nothing. */
Test(serve, session_rejects_non_counts)
{
    fixture f;
    fixture_load("dvs128_small", &f);
    qkf_sched *e = qkf_sched_create(&f.m, 1, 0);
    qkf_sched_session *s = qkf_sched_session_new(e, 1);
    float *x = qkf_malloc((size_t)f.per * sizeof(float));
    memcpy(x, frame_of(&f, 0, 0), (size_t)f.per * sizeof(float));
    x[5] = 0.5f;
    cr_assert_neq(qkf_sched_session_step(s, x, NULL), 0);
    cr_assert(strstr(qkf_last_error(), "event counts"), "%s", qkf_last_error());
    x[5] = 70000.0f;
    cr_assert_neq(qkf_sched_session_step(s, x, NULL), 0);
    cr_assert_eq(qkf_sched_session_steps(s), 0);
    qkf_free(x);
    qkf_sched_session_free(s);
    qkf_sched_free(e);
    fixture_free(&f);
}

/* ---- offline reference ------------------------------------------------------------------- */

typedef struct {
    int K, L;
    int64_t n, cap;
    float *scores;    /* [n][K] */
    uint32_t *spikes; /* [n][L] */
    uint64_t *window;
    uint32_t *sample, *step, *events;
} answers;

static void answers_push(answers *A, uint64_t window, uint32_t sample, uint32_t step,
                         uint32_t events, const float *scores, const uint32_t *spikes)
{
    if (A->n == A->cap) {
        int64_t cap = A->cap ? 2 * A->cap : 64;
        A->scores = realloc(A->scores, (size_t)(cap * A->K) * sizeof(float));
        A->spikes = realloc(A->spikes, (size_t)(cap * (A->L + 1)) * sizeof(uint32_t));
        A->window = realloc(A->window, (size_t)cap * sizeof(uint64_t));
        A->sample = realloc(A->sample, (size_t)cap * sizeof(uint32_t));
        A->step = realloc(A->step, (size_t)cap * sizeof(uint32_t));
        A->events = realloc(A->events, (size_t)cap * sizeof(uint32_t));
        A->cap = cap;
    }
    int64_t i = A->n++;
    memcpy(A->scores + i * A->K, scores, (size_t)A->K * sizeof(float));
    memcpy(A->spikes + i * A->L, spikes, (size_t)A->L * sizeof(uint32_t));
    A->window[i] = window, A->sample[i] = sample, A->step[i] = step, A->events[i] = events;
}

static void answers_free(answers *A)
{
    free(A->scores);
    free(A->spikes);
    free(A->window);
    free(A->sample);
    free(A->step);
    free(A->events);
    memset(A, 0, sizeof *A);
}

/* What the server must answer for events ev: windows by the server's rule (time: consecutive
 * windows from the first event, empty ones included, as qkf_event_stream delivers them; events:
 * runs of `window` events), each binned with qkf_events_accumulate and stepped by one session
 * that restarts after `steps` steps (0: never). */
static void offline(const qkf_sched *e, const qkf_events *ev, qkf_window_kind kind, int64_t window,
                    int steps, answers *A)
{
    const qkf_graph *g = qkf_sched_graph(e);
    const qkf_tensor *x = &g->tensors[g->input];
    memset(A, 0, sizeof *A);
    A->K = g->cfg.num_classes, A->L = g->n_lif;
    int64_t per = (int64_t)x->c * x->h * x->w;
    float *frame = qkf_malloc((size_t)per * sizeof(float)), *sc = qkf_malloc((size_t)A->K * 4);
    int64_t *spk = qkf_malloc((size_t)A->L * sizeof(int64_t));
    uint32_t *sp32 = qkf_malloc((size_t)A->L * sizeof(uint32_t) + 4);
    qkf_sched_session *s = qkf_sched_session_new(e, 1);
    qkf_event_stream st;
    if (ev->n)
        qkf_event_stream_init(&st, ev->ev, ev->n, ev->ev[0].t, window);
    int64_t first = 0, count = 0, tw, done = 0;
    uint32_t sample = 0;
    for (uint64_t w = 0;; w++) {
        if (kind == QKF_WINDOW_TIME) {
            if (!ev->n || !qkf_event_stream_next(&st, &first, &count, &tw))
                break;
        } else {
            if (done >= ev->n)
                break;
            first = done;
            count = ev->n - done < window ? ev->n - done : window;
            done += count;
        }
        memset(frame, 0, (size_t)per * sizeof(float));
        qkf_events_accumulate(ev->ev + first, count, ev->width, ev->height, x->h, x->w, frame);
        if (steps > 0 && qkf_sched_session_steps(s) >= steps) {
            qkf_sched_session_reset(s);
            sample++;
        }
        cr_assert_eq(qkf_sched_session_step(s, frame, spk), 0, "%s", qkf_last_error());
        qkf_sched_session_scores(s, sc);
        for (int l = 0; l < A->L; l++)
            sp32[l] = (uint32_t)spk[l];
        answers_push(A, w, sample, (uint32_t)qkf_sched_session_steps(s), (uint32_t)count, sc, sp32);
    }
    qkf_sched_session_free(s);
    qkf_free(sp32);
    qkf_free(spk);
    qkf_free(sc);
    qkf_free(frame);
}

static void expect_same_answers(const answers *got, const answers *want, const char *what)
{
    cr_assert_eq(got->n, want->n, "%s: %lld answers, %lld expected", what, (long long)got->n,
                 (long long)want->n);
    for (int64_t i = 0; i < want->n; i++) {
        cr_assert_eq(got->window[i], want->window[i], "%s: answer %lld", what, (long long)i);
        cr_assert_eq(got->sample[i], want->sample[i], "%s: window %lld sample", what, (long long)i);
        cr_assert_eq(got->step[i], want->step[i], "%s: window %lld step", what, (long long)i);
        cr_assert_eq(got->events[i], want->events[i], "%s: window %lld events", what, (long long)i);
        cr_assert_eq(memcmp(got->scores + i * want->K, want->scores + i * want->K,
                            (size_t)want->K * sizeof(float)),
                     0,
                     "%s: window %lld: scores differ from the offline engine (class 0: %.9g vs "
                     "%.9g)",
                     what, (long long)i, (double)got->scores[i * want->K],
                     (double)want->scores[i * want->K]);
        cr_assert_eq(memcmp(got->spikes + i * want->L, want->spikes + i * want->L,
                            (size_t)want->L * sizeof(uint32_t)),
                     0, "%s: window %lld: spike counts differ", what, (long long)i);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* n random events on a w x h sensor over `us` microseconds (timestamps non-decreasing). */
static void random_events(qkf_events *ev, int w, int h, int64_t n, int64_t us, uint64_t seed)
{
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    qkf_events_init(ev, w, h, n);
    int64_t *t = qkf_malloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)
        t[i] = (int64_t)(qkf_rng_u64(&r) % (uint64_t)us);
    qsort(t, (size_t)n, sizeof *t, cmp_i64);
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = qkf_rng_u64(&r);
        /* a blob that drifts across the sensor, plus noise: realistic firing */
        int cx = (int)((int64_t)w * t[i] / us), x, y;
        if (u & 1) {
            x = (cx + (int)((u >> 8) % 7) - 3 + w) % w;
            y = (int)((u >> 16) % (uint64_t)h);
        } else {
            x = (int)((u >> 8) % (uint64_t)w);
            y = (int)((u >> 24) % (uint64_t)h);
        }
        qkf_events_push(ev, 1000 + t[i], x, y, (int)((u >> 40) & 1));
    }
    qkf_free(t);
}

/* ---- an in-process server -------------------------------------------------------------------- */

typedef struct {
    pthread_t th;
    uv_loop_t loop;
    uv_async_t stop, probe; /* probe: copy the statistics (on the loop thread) into `live` */
    const qkf_sched *e;
    qkf_server_opts o;
    qkf_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready, port;
    char error[256];
    int stop_sent;
    qkf_server_stats live;
    int probed;
    /* after the loop ended */
    qkf_server_stats st;
    int64_t bound;
    int loop_close;
} server_ctx;

static void on_stop(uv_async_t *a)
{
    server_ctx *c = a->data;
    qkf_server_close(c->srv, NULL, NULL);
    uv_close((uv_handle_t *)&c->stop, NULL);
    uv_close((uv_handle_t *)&c->probe, NULL);
}

static void on_probe(uv_async_t *a)
{
    server_ctx *c = a->data;
    pthread_mutex_lock(&c->mu);
    c->live = *qkf_server_stats_get(c->srv);
    c->probed++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void *server_main(void *arg)
{
    server_ctx *c = arg;
    uv_loop_init(&c->loop);
    c->srv = qkf_server_new(&c->loop, c->e, &c->o);
    int ok = c->srv && qkf_server_listen(c->srv, "127.0.0.1:0") == 0;
    if (!ok)
        snprintf(c->error, sizeof c->error, "%s", qkf_last_error());
    uv_async_init(&c->loop, &c->stop, on_stop);
    uv_async_init(&c->loop, &c->probe, on_probe);
    c->stop.data = c->probe.data = c;
    pthread_mutex_lock(&c->mu);
    c->ready = 1;
    c->port = ok ? qkf_server_port(c->srv) : -1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    if (c->srv) {
        c->st = *qkf_server_stats_get(c->srv);
        c->bound = qkf_server_session_bound(c->srv);
        qkf_server_free(c->srv);
    }
    c->loop_close = uv_loop_close(&c->loop);
    return NULL;
}

static void server_start(server_ctx *c, const qkf_sched *e, const qkf_server_opts *o)
{
    memset(c, 0, sizeof *c);
    c->e = e;
    c->o = *o;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    cr_assert_eq(pthread_create(&c->th, NULL, server_main, c), 0);
    pthread_mutex_lock(&c->mu);
    while (!c->ready)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    cr_assert_gt(c->port, 0, "server: %s", c->error);
}

/* The server's statistics now, while it runs. */
static qkf_server_stats server_probe(server_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->probed;
    uv_async_send(&c->probe);
    while (c->probed == n)
        pthread_cond_wait(&c->cv, &c->mu);
    qkf_server_stats st = c->live;
    pthread_mutex_unlock(&c->mu);
    return st;
}

/* Asks the server to close (qkf_server_close on its loop); returns at once. */
static void server_signal_stop(server_ctx *c)
{
    if (!c->stop_sent++)
        uv_async_send(&c->stop);
}

/* Stops the server and checks that it let go of everything. */
static void server_stop(server_ctx *c)
{
    server_signal_stop(c);
    pthread_join(c->th, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    cr_assert_eq(c->loop_close, 0, "the server's loop still had handles: %s",
                 uv_strerror(c->loop_close));
    cr_assert_eq(c->st.sessions_active, 0);
    cr_assert_leq(c->st.peak_session_bytes, c->bound, "a session held %lld bytes (bound %lld)",
                  (long long)c->st.peak_session_bytes, (long long)c->bound);
}

/* The dvs128 fixture model and its engine. */
typedef struct {
    fixture f;
    qkf_sched *e;
} model;

/* Loads the model and, when o is given, fills it with the server's defaults for it. */
static void model_load(model *m, qkf_server_opts *o)
{
    fixture_load("dvs128_small", &m->f);
    m->e = qkf_sched_create(&m->f.m, 1, 0);
    cr_assert_not_null(m->e, "%s", qkf_last_error());
    if (o)
        qkf_server_opts_default(o, &m->f.m.cfg);
}

static void model_free(model *m)
{
    qkf_sched_free(m->e);
    fixture_free(&m->f);
}

/* ---- library clients --------------------------------------------------------------------------
 */

static void collect(void *data, int id, const qkf_answer *a)
{
    answers *A = (answers *)data + id;
    A->K = a->classes, A->L = a->layers;
    answers_push(A, a->window, a->sample, a->step, a->events, a->scores, a->spikes);
}

/* n clients at once, client i replaying ev[i]; answers into got[i] (zeroed here). */
static void run_clients(int port, int n, const qkf_events *ev, answers *got, int realtime,
                        double speed, qkf_client_result *res)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    qkf_client **cl = qkf_calloc((size_t)n, sizeof *cl);
    memset(got, 0, (size_t)n * sizeof *got);
    for (int i = 0; i < n; i++) {
        qkf_client_opts o;
        qkf_client_opts_default(&o);
        o.realtime = realtime;
        o.speed = speed;
        o.chunk = 500; /* several frames per client */
        o.on_answer = collect;
        o.data = got;
        o.id = i;
        cl[i] = qkf_client_new(&loop, where, &ev[i], &o);
        cr_assert_not_null(cl[i], "%s", qkf_last_error());
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < n; i++) {
        const qkf_client_result *r = qkf_client_result_get(cl[i]);
        if (res) {
            res[i] = *r;
            res[i].latency = NULL;
        }
        cr_assert(r->done, "client %d: %s", i, r->error[0] ? r->error : "did not finish");
        cr_assert_eq(r->answers, r->windows);
        for (int64_t k = 0; k < r->answers; k++)
            cr_assert_geq(r->latency[k], 0.0, "client %d window %lld: no latency", i, (long long)k);
        qkf_client_free(cl[i]);
    }
    qkf_free(cl);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* Eight clients at once, each with its own events (a 34x34 sensor scaled onto the 32x32 input),
 * get exactly the offline engine's answers: scores, spike counts, windows, samples, steps. */
Test(serve, concurrent_clients_match_offline, .timeout = 60)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    enum { NC = 8 };
    qkf_events ev[NC];
    answers want[NC], got[NC];
    o.window = 5000;
    for (int i = 0; i < NC; i++) {
        random_events(&ev[i], 34, 34, 3000 + 500 * i, 60000 + 7000 * i, 100 + (uint64_t)i);
        offline(m.e, &ev[i], QKF_WINDOW_TIME, o.window, o.steps, &want[i]);
    }
    server_ctx sc;
    server_start(&sc, m.e, &o);
    run_clients(sc.port, NC, ev, got, 0, 1.0, NULL);
    server_stop(&sc);
    int64_t windows = 0, events = 0;
    for (int i = 0; i < NC; i++) {
        char what[32];
        snprintf(what, sizeof what, "client %d", i);
        expect_same_answers(&got[i], &want[i], what);
        cr_assert_gt(want[i].n, 8, "several samples per client");
        windows += want[i].n, events += ev[i].n;
        answers_free(&got[i]);
        answers_free(&want[i]);
        qkf_events_free(&ev[i]);
    }
    cr_assert_eq(sc.st.windows, windows);
    cr_assert_eq(sc.st.events, events);
    cr_assert_eq(sc.st.sessions_total, NC);
    cr_assert_eq(sc.st.errors, 0);
    model_free(&m);
}

/* Windows of a fixed number of events, never reset (a running mean), replayed in real time (fast
 * forward x20). */
Test(serve, event_windows_running_mean_realtime, .timeout = 60)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    qkf_events ev[2];
    answers want[2], got[2];
    o.window_kind = QKF_WINDOW_EVENTS;
    o.window = 250;
    o.steps = 0;
    for (int i = 0; i < 2; i++) {
        random_events(&ev[i], 32, 32, 2600 + 100 * i, 100000, 300 + (uint64_t)i);
        offline(m.e, &ev[i], QKF_WINDOW_EVENTS, o.window, 0, &want[i]);
    }
    server_ctx sc;
    server_start(&sc, m.e, &o);
    run_clients(sc.port, 2, ev, got, 1, 20.0, NULL);
    server_stop(&sc);
    for (int i = 0; i < 2; i++) {
        expect_same_answers(&got[i], &want[i], "event windows");
        cr_assert_eq(got[i].sample[got[i].n - 1], 0);
        cr_assert_eq(got[i].events[got[i].n - 1], (uint32_t)(ev[i].n - (got[i].n - 1) * 250));
        answers_free(&got[i]);
        answers_free(&want[i]);
        qkf_events_free(&ev[i]);
    }
    model_free(&m);
}

/* The fixture's frames sent as events over the wire (one 1000 us window per time step, counts
 * as repeated events, channel 0 OFF and 1 ON): after T windows the scores are the batch
 * forward's logits, bit for bit, and each step's spike counts are the forward's. */
Test(serve, fixture_frames_over_the_wire_equal_forward, .timeout = 60)
{
    model m;
    model_load(&m, NULL);
    fixture *f = &m.f;
    const qkf_graph *g = qkf_sched_graph(m.e);
    int K = f->m.cfg.num_classes, H = f->m.cfg.img_size, W = H, L = g->n_lif;
    qkf_sched *eb = qkf_sched_create(&f->m, f->B, QKF_SCHED_RECORD);
    float *logits = qkf_malloc((size_t)f->B * K * sizeof(float));
    cr_assert_eq(qkf_sched_forward(eb, f->x, f->B, logits, NULL), 0);
    qkf_events *ev = qkf_calloc((size_t)f->B, sizeof *ev);
    for (int b = 0; b < f->B; b++) {
        qkf_events_init(&ev[b], W, H, 1024);
        for (int t = 0; t < f->T; t++) {
            const float *fr = frame_of(f, b, t);
            for (int c = 0; c < 2; c++)
                for (int p = 0; p < H * W; p++)
                    for (int k = 0; k < (int)fr[c * H * W + p]; k++)
                        qkf_events_push(&ev[b], 1000 * t + k % 1000, p % W, p / W, c);
        }
        /* the events of a pixel are pushed together: sort by time (stable) */
        for (int64_t i = 1; i < ev[b].n; i++)
            for (int64_t j = i; j > 0 && ev[b].ev[j - 1].t > ev[b].ev[j].t; j--) {
                qkf_event z = ev[b].ev[j];
                ev[b].ev[j] = ev[b].ev[j - 1], ev[b].ev[j - 1] = z;
            }
        cr_assert_lt(ev[b].ev[0].t, 1000, "step 0 has events");
    }
    qkf_server_opts o;
    qkf_server_opts_default(&o, &f->m.cfg);
    o.window = 1000;
    server_ctx sc;
    server_start(&sc, m.e, &o);
    answers *got = qkf_calloc((size_t)f->B, sizeof *got);
    run_clients(sc.port, f->B, ev, got, 0, 1.0, NULL);
    server_stop(&sc);
    for (int b = 0; b < f->B; b++) {
        cr_assert_eq(got[b].n, f->T);
        for (int t = 0; t < f->T; t++)
            for (int l = 0; l < L; l++) {
                int64_t n = qkf_graph_lif_neurons(g, l), want = 0;
                const uint8_t *r = qkf_sched_spikes(eb, l) + ((int64_t)t * f->B + b) * n;
                for (int64_t i = 0; i < n; i++)
                    want += r[i];
                cr_assert_eq(got[b].spikes[t * L + l], (uint32_t)want, "sample %d step %d layer %d",
                             b, t, l);
            }
        cr_assert_eq(memcmp(got[b].scores + (int64_t)(f->T - 1) * K, logits + (int64_t)b * K,
                            (size_t)K * sizeof(float)),
                     0, "sample %d: the scores after T windows are not the forward's logits", b);
        answers_free(&got[b]);
        qkf_events_free(&ev[b]);
    }
    qkf_free(got);
    qkf_free(ev);
    qkf_free(logits);
    qkf_sched_free(eb);
    model_free(&m);
}

/* ---- raw clients ------------------------------------------------------------------------------
 */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    struct timeval tv = {10, 0}; /* no read waits forever */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Sends everything; 0, or -1 if the peer is gone. */
static int raw_send(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int raw_frame(int fd, uint8_t type, const void *payload, uint32_t n)
{
    uint8_t h[5];
    le32(h, n + 1);
    h[4] = type;
    if (raw_send(fd, h, 5))
        return -1;
    return n ? raw_send(fd, payload, n) : 0;
}

static void raw_hello(int fd, int version, int w, int h)
{
    uint8_t p[12] = {(uint8_t)version, (uint8_t)(version >> 8), 0, 0};
    le32(p + 4, (uint32_t)w);
    le32(p + 8, (uint32_t)h);
    cr_assert_eq(raw_frame(fd, QKF_MSG_HELLO, p, 12), 0);
}

static void put_event(uint8_t *p, int64_t t, int x, int y, int pol)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)t >> (8 * i));
    p[8] = (uint8_t)x, p[9] = (uint8_t)(x >> 8), p[10] = (uint8_t)y, p[11] = (uint8_t)(y >> 8);
    p[12] = (uint8_t)pol;
}

/* EVENTS frames of ev[i0..i1), at most 1000 per frame. */
static int raw_events(int fd, const qkf_events *ev, int64_t i0, int64_t i1)
{
    uint8_t *buf = qkf_malloc(1000 * 13);
    int rc = 0;
    for (int64_t i = i0; i < i1 && !rc; i += 1000) {
        int64_t n = i1 - i < 1000 ? i1 - i : 1000;
        for (int64_t k = 0; k < n; k++)
            put_event(buf + 13 * k, ev->ev[i + k].t, ev->ev[i + k].x, ev->ev[i + k].y,
                      ev->ev[i + k].p);
        rc = raw_frame(fd, QKF_MSG_EVENTS, buf, (uint32_t)(13 * n));
    }
    qkf_free(buf);
    return rc;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 ? 0 : -1;
        p += k, n -= (size_t)k;
    }
    return 1;
}

/* Reads one frame: 1 (type, payload of *n bytes in buf), 0 at EOF, -1 on an error or timeout. */
static int raw_read(int fd, uint8_t *type, uint8_t *buf, uint32_t cap, uint32_t *n)
{
    uint8_t h[5];
    int r = read_full(fd, h, 5);
    if (r <= 0)
        return r;
    uint32_t len =
        (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    cr_assert(len >= 1 && len - 1 <= cap, "frame of %u bytes", len);
    *type = h[4];
    *n = len - 1;
    return *n ? (read_full(fd, buf, *n) == 1 ? 1 : -1) : 1;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Decodes a SCORES payload into A. */
static void scores_push(answers *A, const uint8_t *p, uint32_t n, int K, int L)
{
    cr_assert_eq(n, (uint32_t)(28 + 4 * K + 4 * L));
    A->K = K, A->L = L;
    float sc[64];
    uint32_t sp[64];
    for (int j = 0; j < K; j++) {
        uint32_t u = rd32(p + 24 + 4 * j);
        memcpy(&sc[j], &u, 4);
    }
    for (int l = 0; l < L; l++)
        sp[l] = rd32(p + 28 + 4 * K + 4 * l);
    uint64_t w = (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
    answers_push(A, w, rd32(p + 8), rd32(p + 12), rd32(p + 16), sc, sp);
}

/* Reads frames until EOF: SCORES into A (if not NULL), and the ERROR code (0 if none). Returns
 * the number of SCORES. */
static int64_t raw_drain(int fd, answers *A, int K, int L, int *error, char *msg, size_t cap)
{
    uint8_t *buf = qkf_malloc(1 << 16), type;
    uint32_t n;
    int64_t scores = 0;
    *error = 0;
    int r;
    while ((r = raw_read(fd, &type, buf, 1 << 16, &n)) == 1) {
        if (type == QKF_MSG_SCORES) {
            cr_assert_eq(*error, 0, "SCORES after ERROR");
            if (A)
                scores_push(A, buf, n, K, L);
            scores++;
        } else if (type == QKF_MSG_ERROR) {
            cr_assert_geq(n, 4);
            *error = (int)rd32(buf);
            if (msg)
                snprintf(msg, cap, "%.*s", (int)(n - 4), (const char *)buf + 4);
        } else {
            cr_assert_eq(type, QKF_MSG_WELCOME, "unexpected message 0x%02x", type);
        }
    }
    cr_assert_eq(r, 0, "the server did not close the connection (%s)", strerror(errno));
    qkf_free(buf);
    return scores;
}

/* Expects the server to answer with ERROR `code` and hang up. */
static void expect_error(int fd, int code, const char *what)
{
    int err;
    char msg[256] = "";
    raw_drain(fd, NULL, 0, 0, &err, msg, sizeof msg);
    cr_assert_eq(err, code, "%s: ERROR %d (%s) '%s', expected %d (%s)", what, err,
                 qkf_serve_error_name(err), msg, code, qkf_serve_error_name(code));
    cr_assert_neq(msg[0], 0, "%s: the ERROR carries a message", what);
    close(fd);
}

/* Malformed and oversized frames, and bad events: each gets its ERROR and its connection is
 * closed, while a session that was open all along (half its events sent before, half after)
 * still gets exactly the offline answers, and the server goes on accepting. */
Test(serve, malformed_frames_close_only_their_session, .timeout = 60)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.window = 5000;
    o.max_gap = 1000;
    qkf_events ev;
    random_events(&ev, 32, 32, 4000, 80000, 7);
    answers want, got;
    offline(m.e, &ev, QKF_WINDOW_TIME, o.window, o.steps, &want);
    memset(&got, 0, sizeof got);
    server_ctx sc;
    server_start(&sc, m.e, &o);

    int good = raw_connect(sc.port);
    raw_hello(good, 1, 32, 32);
    cr_assert_eq(raw_events(good, &ev, 0, ev.n / 2), 0);

    uint8_t ev1[13], ev2[26], junk[2000];
    int fd;
    /* an unknown message type */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_frame(fd, 0x7f, "x", 1);
    expect_error(fd, QKF_SERVE_E_MALFORMED, "unknown type");
    /* a frame of length 0 */
    fd = raw_connect(sc.port);
    raw_send(fd, "\0\0\0\0\1", 5);
    expect_error(fd, QKF_SERVE_E_MALFORMED, "length 0");
    /* an oversized frame: refused by its header, the payload never read */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_send(fd, "\xff\xff\xff\x7f\x02", 5);
    expect_error(fd, QKF_SERVE_E_TOO_LARGE, "oversized");
    fd = raw_connect(sc.port);
    le32(junk, QKF_SERVE_MAX_FRAME + 1);
    junk[4] = QKF_MSG_HELLO;
    raw_send(fd, junk, 5);
    expect_error(fd, QKF_SERVE_E_TOO_LARGE, "one byte too large");
    /* events before HELLO */
    fd = raw_connect(sc.port);
    put_event(ev1, 10, 1, 1, 1);
    raw_frame(fd, QKF_MSG_EVENTS, ev1, 13);
    expect_error(fd, QKF_SERVE_E_PROTOCOL, "EVENTS before HELLO");
    /* a second HELLO */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_hello(fd, 1, 32, 32);
    expect_error(fd, QKF_SERVE_E_PROTOCOL, "second HELLO");
    /* another protocol version */
    fd = raw_connect(sc.port);
    raw_hello(fd, 2, 32, 32);
    expect_error(fd, QKF_SERVE_E_VERSION, "version 2");
    /* a HELLO of the wrong size, a sensor of size 0 */
    fd = raw_connect(sc.port);
    raw_frame(fd, QKF_MSG_HELLO, "\1\0\0\0", 4);
    expect_error(fd, QKF_SERVE_E_MALFORMED, "short HELLO");
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 0, 32);
    expect_error(fd, QKF_SERVE_E_MALFORMED, "sensor 0x32");
    /* EVENTS whose payload is not whole records; FLUSH with a payload */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_frame(fd, QKF_MSG_EVENTS, ev2, 20);
    expect_error(fd, QKF_SERVE_E_MALFORMED, "partial record");
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_frame(fd, QKF_MSG_FLUSH, "a", 1);
    expect_error(fd, QKF_SERVE_E_MALFORMED, "FLUSH with payload");
    /* events outside the sensor, a bad polarity */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev1, 10, 32, 0, 1);
    raw_frame(fd, QKF_MSG_EVENTS, ev1, 13);
    expect_error(fd, QKF_SERVE_E_BAD_EVENT, "x outside");
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev1, 10, 3, 3, 2);
    raw_frame(fd, QKF_MSG_EVENTS, ev1, 13);
    expect_error(fd, QKF_SERVE_E_BAD_EVENT, "polarity 2");
    /* timestamps going back, negative, or jumping too far */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev2, 100, 1, 1, 1);
    put_event(ev2 + 13, 99, 1, 1, 1);
    raw_frame(fd, QKF_MSG_EVENTS, ev2, 26);
    expect_error(fd, QKF_SERVE_E_BAD_TIME, "backwards");
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev1, -5, 1, 1, 1);
    raw_frame(fd, QKF_MSG_EVENTS, ev1, 13);
    expect_error(fd, QKF_SERVE_E_BAD_TIME, "negative");
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev2, 100, 1, 1, 1);
    put_event(ev2 + 13, 100 + 5000 * 2000, 1, 1, 1);
    raw_frame(fd, QKF_MSG_EVENTS, ev2, 26);
    expect_error(fd, QKF_SERVE_E_BAD_TIME, "a jump of 2000 windows");
    /* more than 65535 events on one pixel in one window */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    uint8_t *many = qkf_malloc(65536 * 13);
    for (int i = 0; i < 65536; i++)
        put_event(many + 13 * i, 50, 7, 7, 1);
    raw_frame(fd, QKF_MSG_EVENTS, many, 65536 * 13);
    raw_frame(fd, QKF_MSG_FLUSH, NULL, 0);
    qkf_free(many);
    expect_error(fd, QKF_SERVE_E_OVERFLOW, "pixel overflow");
    /* garbage */
    qkf_rng r;
    qkf_rng_seed(&r, 99);
    for (int k = 0; k < 5; k++) {
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)qkf_rng_u64(&r);
        fd = raw_connect(sc.port);
        if (k & 1)
            raw_hello(fd, 1, 32, 32);
        raw_send(fd, junk, sizeof junk);
        int err;
        raw_drain(fd, NULL, 0, 0, &err, NULL, 0);
        cr_assert_gt(err, 0, "garbage %d: an ERROR frame", k);
        close(fd);
    }

    /* the good session carries on */
    cr_assert_eq(raw_events(good, &ev, ev.n / 2, ev.n), 0);
    cr_assert_eq(raw_frame(good, QKF_MSG_END, NULL, 0), 0);
    int err;
    raw_drain(good, &got, want.K, want.L, &err, NULL, 0);
    cr_assert_eq(err, 0);
    close(good);
    expect_same_answers(&got, &want, "the good session");

    /* and the server still accepts */
    answers again;
    run_clients(sc.port, 1, &ev, &again, 0, 1.0, NULL);
    expect_same_answers(&again, &want, "a later session");
    server_stop(&sc);
    cr_assert_eq(sc.st.errors, 22, "%lld ERROR frames", (long long)sc.st.errors); /* 17 + 5 */
    answers_free(&again);
    answers_free(&got);
    answers_free(&want);
    qkf_events_free(&ev);
    model_free(&m);
}

/* ---- backpressure -----------------------------------------------------------------------------
 */

typedef struct {
    int fd;
    const qkf_events *ev;
    size_t total;
    volatile size_t sent; /* written by the writer thread, read after join or as a hint */
    pthread_mutex_t mu;
    int rc;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    uint8_t *buf = qkf_malloc(1000 * 13);
    for (int64_t i = 0; i < w->ev->n && !w->rc; i += 1000) {
        int64_t n = w->ev->n - i < 1000 ? w->ev->n - i : 1000;
        for (int64_t k = 0; k < n; k++) {
            const qkf_event *e = &w->ev->ev[i + k];
            put_event(buf + 13 * k, e->t, e->x, e->y, e->p);
        }
        w->rc = raw_frame(w->fd, QKF_MSG_EVENTS, buf, (uint32_t)(13 * n));
        pthread_mutex_lock(&w->mu);
        w->sent += 5 + 13 * (size_t)n;
        pthread_mutex_unlock(&w->mu);
    }
    if (!w->rc)
        w->rc = raw_frame(w->fd, QKF_MSG_END, NULL, 0);
    qkf_free(buf);
    return NULL;
}

/* A client that sends fast and reads nothing for a while: its answers fill the kernel's buffers
 * (the session's send buffer is 64 KiB), then back up in the server, which stops stepping its
 * windows; the session's two-frame queue fills and the server stops reading its socket (the
 * client waits, not reading, until the server's statistics show both). The
 * session's memory never exceeds its bound. Then the client reads, and every one of the 4000
 * windows is answered exactly as offline. */
Test(serve, slow_client_backpressure_bounded_memory, .timeout = 60)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.window = 1000;
    o.queue_bytes = 2 * 2 * 32 * 32 * sizeof(float); /* two frames */
    qkf_events ev;
    random_events(&ev, 32, 32, 120000, 4000000, 11);
    answers want, got;
    offline(m.e, &ev, QKF_WINDOW_TIME, o.window, o.steps, &want);
    memset(&got, 0, sizeof got);
    server_ctx sc;
    server_start(&sc, m.e, &o);

    int fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    writer w = {.fd = fd, .ev = &ev};
    for (int64_t i = 0; i < ev.n; i += 1000)
        w.total += 5 + 13 * (size_t)(ev.n - i < 1000 ? ev.n - i : 1000);
    pthread_mutex_init(&w.mu, NULL);
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    /* read nothing until the server holds answers back and has stopped reading */
    qkf_server_stats st;
    double t0 = qkf_now();
    do {
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
        st = server_probe(&sc);
    } while ((st.answer_waits == 0 || st.read_pauses == 0) && qkf_now() - t0 < 20.0);
    pthread_mutex_lock(&w.mu);
    size_t sent = w.sent;
    pthread_mutex_unlock(&w.mu);
    cr_log_info("after %.2f s without reading: %lld of 4000 windows answered, %zu of %zu bytes "
                "sent",
                qkf_now() - t0, (long long)st.windows, sent, w.total);
    cr_assert_gt(st.answer_waits, 0, "stepping waits for the slow reader");
    cr_assert_gt(st.read_pauses, 0, "reading stopped while the queue was full");
    cr_assert_lt(st.windows, 4000);
    int err;
    raw_drain(fd, &got, want.K, want.L, &err, NULL, 0);
    pthread_join(th, NULL);
    pthread_mutex_destroy(&w.mu);
    cr_assert_eq(w.rc, 0);
    cr_assert_eq(err, 0);
    close(fd);
    server_stop(&sc);
    expect_same_answers(&got, &want, "slow client");
    cr_log_info("read pauses %lld, answer waits %lld, peak session bytes %lld (bound %lld)",
                (long long)sc.st.read_pauses, (long long)sc.st.answer_waits,
                (long long)sc.st.peak_session_bytes, (long long)sc.bound);
    cr_assert_leq(sc.st.peak_queued, 2);
    answers_free(&got);
    answers_free(&want);
    qkf_events_free(&ev);
    model_free(&m);
}

/* ---- clients that go away ---------------------------------------------------------------------
 */

/* Clients that hang up at every stage (before HELLO, inside a frame, with a reset, without
 * reading their answers), and one that half-closes after its events (EOF between frames counts
 * as END: it still gets every answer). The server survives all of them, a later client gets
 * exact answers, and everything is closed at the end. */
Test(serve, abrupt_disconnects, .timeout = 60)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.window = 2000;
    qkf_events ev;
    random_events(&ev, 32, 32, 6000, 100000, 21);
    answers want;
    offline(m.e, &ev, QKF_WINDOW_TIME, o.window, o.steps, &want);
    server_ctx sc;
    server_start(&sc, m.e, &o);
    int fd;
    /* connect and go */
    close(raw_connect(sc.port));
    /* inside a frame header, then inside an EVENTS payload */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_send(fd, "\x0e\x00", 2);
    close(fd);
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_events(fd, &ev, 0, 3000);
    raw_send(fd, "\x0e\x01\x00\x00\x02\x01\x02\x03", 8);
    close(fd);
    /* a reset in the middle of the stream */
    for (int k = 0; k < 3; k++) {
        fd = raw_connect(sc.port);
        raw_hello(fd, 1, 32, 32);
        raw_events(fd, &ev, 0, 2000 * (k + 1));
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    /* END, then gone without reading a single answer */
    for (int k = 0; k < 3; k++) {
        fd = raw_connect(sc.port);
        raw_hello(fd, 1, 32, 32);
        raw_events(fd, &ev, 0, ev.n);
        raw_frame(fd, QKF_MSG_END, NULL, 0);
        close(fd);
    }
    /* a half-close after the events: EOF between frames is END */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_events(fd, &ev, 0, ev.n);
    shutdown(fd, SHUT_WR);
    answers got;
    memset(&got, 0, sizeof got);
    int err;
    raw_drain(fd, &got, want.K, want.L, &err, NULL, 0);
    close(fd);
    cr_assert_eq(err, 0);
    expect_same_answers(&got, &want, "half-closed client");
    /* a well-behaved client afterwards */
    answers later;
    run_clients(sc.port, 1, &ev, &later, 0, 1.0, NULL);
    expect_same_answers(&later, &want, "later client");
    server_stop(&sc);
    cr_assert_geq(sc.st.disconnects, 2, "%lld disconnects", (long long)sc.st.disconnects);
    cr_assert_eq(sc.st.sessions_total, 11);
    answers_free(&later);
    answers_free(&got);
    answers_free(&want);
    qkf_events_free(&ev);
    model_free(&m);
}

/* A session that sends nothing is closed with ERROR idle; one that keeps sending is not. */
Test(serve, idle_timeout)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.idle_timeout = 0.3;
    o.window = 1000;
    server_ctx sc;
    server_start(&sc, m.e, &o);
    int busy = raw_connect(sc.port);
    raw_hello(busy, 1, 32, 32);
    double t0 = qkf_now();
    int fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    uint8_t e1[13];
    for (int k = 0; k < 6; k++) { /* 0.6 s of an event every 0.1 s */
        struct timespec nap = {0, 100 * 1000 * 1000};
        nanosleep(&nap, NULL);
        put_event(e1, 1000 * k, 1, 1, 1);
        cr_assert_eq(raw_frame(busy, QKF_MSG_EVENTS, e1, 13), 0);
    }
    expect_error(fd, QKF_SERVE_E_IDLE, "idle session");
    double dt = qkf_now() - t0;
    cr_assert(dt >= 0.29 && dt < 2.0, "closed after %.2f s", dt);
    raw_frame(busy, QKF_MSG_END, NULL, 0);
    int err;
    cr_assert_eq(raw_drain(busy, NULL, 0, 0, &err, NULL, 0), 6, "the active session answered");
    cr_assert_eq(err, 0);
    close(busy);
    server_stop(&sc);
    model_free(&m);
}

/* The default bound on empty windows in one timestamp jump (QKF_SERVE_MAX_GAP): 1000 empty
 * windows are stepped and answered, 1001 are refused with ERROR bad time naming the bound (not
 * 100 000 engine steps for one event), and after FLUSH any later timestamp opens a fresh window
 * with nothing stepped in between. */
Test(serve, default_max_gap, .timeout = 60)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    cr_assert_eq(o.max_gap, 1000);
    server_ctx sc;
    server_start(&sc, m.e, &o);
    const int64_t W = o.window;
    uint8_t ev[26];
    int err;
    char msg[256];
    /* window 0, 1000 empty windows, window 1001 */
    int fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev, 0, 1, 1, 1);
    put_event(ev + 13, 1001 * W, 2, 2, 0);
    cr_assert_eq(raw_frame(fd, QKF_MSG_EVENTS, ev, 26), 0);
    cr_assert_eq(raw_frame(fd, QKF_MSG_END, NULL, 0), 0);
    cr_expect_eq(raw_drain(fd, NULL, 0, 0, &err, msg, sizeof msg), 1002);
    cr_expect_eq(err, 0, "%s", msg);
    close(fd);
    /* one more empty window */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    put_event(ev + 13, 1002 * W, 2, 2, 0);
    cr_assert_eq(raw_frame(fd, QKF_MSG_EVENTS, ev, 26), 0);
    raw_drain(fd, NULL, 0, 0, &err, msg, sizeof msg);
    cr_expect_eq(err, QKF_SERVE_E_BAD_TIME, "%s", msg);
    cr_expect(strstr(msg, "1002 windows ahead") && strstr(msg, "at most 1000"), "%s", msg);
    close(fd);
    /* FLUSH, then an event 10^12 us later: two windows, two answers */
    fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    cr_assert_eq(raw_frame(fd, QKF_MSG_EVENTS, ev, 13), 0);
    cr_assert_eq(raw_frame(fd, QKF_MSG_FLUSH, NULL, 0), 0);
    put_event(ev + 13, 1000000000000LL, 2, 2, 0);
    cr_assert_eq(raw_frame(fd, QKF_MSG_EVENTS, ev + 13, 13), 0);
    cr_assert_eq(raw_frame(fd, QKF_MSG_END, NULL, 0), 0);
    cr_expect_eq(raw_drain(fd, NULL, 0, 0, &err, msg, sizeof msg), 2);
    cr_expect_eq(err, 0, "%s", msg);
    close(fd);
    server_stop(&sc);
    model_free(&m);
}

/* Beyond --max-sessions a connection gets ERROR busy; a slot freed is a slot reused. */
Test(serve, max_sessions_busy)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.max_sessions = 2;
    server_ctx sc;
    server_start(&sc, m.e, &o);
    int a = raw_connect(sc.port), b = raw_connect(sc.port);
    raw_hello(a, 1, 32, 32);
    raw_hello(b, 1, 32, 32);
    uint8_t type, buf[4096];
    uint32_t n;
    cr_assert_eq(raw_read(a, &type, buf, sizeof buf, &n), 1);
    cr_assert_eq(type, QKF_MSG_WELCOME);
    cr_assert_eq(raw_read(b, &type, buf, sizeof buf, &n), 1);
    int c = raw_connect(sc.port);
    raw_hello(c, 1, 32, 32);
    expect_error(c, QKF_SERVE_E_BUSY, "third session");
    raw_frame(a, QKF_MSG_END, NULL, 0);
    int err;
    raw_drain(a, NULL, 0, 0, &err, NULL, 0);
    close(a);
    /* the slot is released when a's session is freed: retry briefly */
    int ok = 0;
    for (int k = 0; k < 50 && !ok; k++) {
        int d = raw_connect(sc.port);
        raw_hello(d, 1, 32, 32);
        if (raw_read(d, &type, buf, sizeof buf, &n) == 1 && type == QKF_MSG_WELCOME)
            ok = 1;
        close(d);
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    cr_assert(ok, "a freed slot is reused");
    close(b);
    server_stop(&sc);
    cr_assert_geq(sc.st.rejected_busy, 1);
    model_free(&m);
}

/* Closing the server (what SIGINT/SIGTERM do) answers what was queued, then says ERROR shutdown
 * and hangs up; the loop ends with no handle left. */
Test(serve, close_answers_then_shuts_down)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.window = 2000;
    qkf_events ev;
    random_events(&ev, 32, 32, 3000, 60000, 31);
    int64_t closed = qkf_stream_windows(ev.ev, ev.n, QKF_WINDOW_TIME, o.window) - 1;
    server_ctx sc;
    server_start(&sc, m.e, &o);
    int fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    raw_events(fd, &ev, 0, ev.n); /* no END: the last window stays open */
    uint8_t type, *buf = qkf_malloc(1 << 16);
    uint32_t n;
    int64_t scores = 0;
    while (scores < closed) {
        cr_assert_eq(raw_read(fd, &type, buf, 1 << 16, &n), 1);
        scores += type == QKF_MSG_SCORES;
    }
    server_signal_stop(&sc);
    cr_assert_eq(raw_read(fd, &type, buf, 1 << 16, &n), 1);
    cr_assert_eq(type, QKF_MSG_ERROR);
    cr_assert_eq(rd32(buf), QKF_SERVE_E_SHUTDOWN);
    cr_assert_eq(raw_read(fd, &type, buf, 1 << 16, &n), 0, "EOF after the shutdown notice");
    close(fd);
    qkf_free(buf);
    server_stop(&sc);
    cr_assert_eq(sc.st.windows, closed);
    qkf_events_free(&ev);
    model_free(&m);
}

/* A client that never reads cannot hold up the server's close: after shutdown_timeout its
 * session is dropped (ERROR shutdown, then the 2 s linger), while the client still holds its
 * socket open. */
Test(serve, close_drops_a_client_that_does_not_read, .timeout = 30)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    o.window = 1000;
    o.queue_bytes = 1;
    o.shutdown_timeout = 0.2;
    qkf_events ev;
    random_events(&ev, 32, 32, 120000, 4000000, 51);
    server_ctx sc;
    server_start(&sc, m.e, &o);
    int fd = raw_connect(sc.port);
    raw_hello(fd, 1, 32, 32);
    writer w = {.fd = fd, .ev = &ev};
    pthread_mutex_init(&w.mu, NULL);
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    qkf_server_stats st;
    double t0 = qkf_now();
    do { /* until the session is stuck on its unread answers */
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
        st = server_probe(&sc);
    } while (st.answer_waits == 0 && qkf_now() - t0 < 20.0);
    cr_assert_gt(st.answer_waits, 0);
    t0 = qkf_now();
    server_stop(&sc);
    double dt = qkf_now() - t0;
    cr_assert_lt(dt, 5.0, "the close took %.2f s", dt);
    cr_log_info("closed in %.2f s with a client that does not read", dt);
    shutdown(fd, SHUT_RDWR); /* unblock the writer */
    pthread_join(th, NULL);
    pthread_mutex_destroy(&w.mu);
    close(fd);
    qkf_events_free(&ev);
    model_free(&m);
}

/* ---- the commands ------------------------------------------------------------------------------
 */

/* qkf serve in a child process on port 0, qkf client replaying a file to it, then a signal: the
 * server answers the open session's shutdown, closes cleanly and exits 0. */
static void cli_signal(int sig)
{
    model m;
    model_load(&m, NULL);
    char wpath[512], evpath[] = "/tmp/qkf_serve_XXXXXX", errpath[] = "/tmp/qkf_serve_err_XXXXXX";
    snprintf(wpath, sizeof wpath, "%s/dvs128_small.weights.h5", QKF_FIXTURE_DIR);
    /* temporary files are unlinked as soon as their names are no longer needed, so that a
     * failed assertion leaves nothing behind: the server's stderr is read through its fd */
    int efd = mkstemp(errpath);
    cr_assert_geq(efd, 0);
    unlink(errpath);
    int tfd = mkstemp(evpath);
    cr_assert_geq(tfd, 0);
    close(tfd);
    unlink(evpath);
    char qev[600];
    snprintf(qev, sizeof qev, "%s.qev", evpath);
    qkf_events ev;
    random_events(&ev, 34, 34, 4000, 90000, 41);
    answers want;
    offline(m.e, &ev, QKF_WINDOW_TIME, 7000, 4, &want);

    int out[2];
    cr_assert_eq(pipe(out), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        dup2(out[1], 1);
        dup2(efd, 2);
        close(out[0]);
        execl(QKF_BINARY, QKF_BINARY, "serve", "--weights", wpath, "--listen", "127.0.0.1:0",
              "--window-us", "7000", "--threads", "2", "--verbose", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *so = fdopen(out[0], "r");
    char line[4096];
    cr_assert_not_null(fgets(line, sizeof line, so), "qkf serve printed nothing");
    cr_assert(strncmp(line, "listening on 127.0.0.1:", 23) == 0, "first line: %s", line);
    int port = atoi(line + 23);
    cr_assert_gt(port, 0);

    cr_assert_eq(qkf_events_save(qev, &ev, QKF_EVF_QEV), 0, "%s", qkf_last_error());
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s client --connect 127.0.0.1:%d %s 2>&1", QKF_BINARY, port, qev);
    FILE *cl = popen(cmd, "r");
    int64_t lines = 0;
    char last[4096] = "";
    while (cl && fgets(line, sizeof line, cl))
        if (!strncmp(line, "window ", 7)) {
            lines++;
            snprintf(last, sizeof last, "%s", line);
        }
    int crc = cl ? pclose(cl) : -1;
    unlink(qev);
    cr_assert_eq(crc, 0, "qkf client failed");
    cr_assert_eq(lines, want.n);
    /* the last line's scores, read back, are the offline engine's floats */
    char *p = strstr(last, " scores ");
    cr_assert_not_null(p);
    p += 8;
    for (int j = 0; j < want.K; j++) {
        char *end;
        float v = strtof(p, &end);
        cr_assert_eq(memcmp(&v, &want.scores[(want.n - 1) * want.K + j], 4), 0,
                     "class %d: printed %.9g, offline %.9g", j, (double)v,
                     (double)want.scores[(want.n - 1) * want.K + j]);
        p = end + 1;
    }

    int fd = raw_connect(port); /* a session open at the signal */
    raw_hello(fd, 1, 34, 34);
    uint8_t type, buf[4096];
    uint32_t n;
    cr_assert_eq(raw_read(fd, &type, buf, sizeof buf, &n), 1);
    cr_assert_eq(type, QKF_MSG_WELCOME);
    kill(pid, sig);
    expect_error(fd, QKF_SERVE_E_SHUTDOWN, "open session at the signal");
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "qkf serve exit status %d", status);
    fclose(so);
    lseek(efd, 0, SEEK_SET);
    FILE *ef = fdopen(efd, "r");
    int closed_line = 0;
    char all[8192] = "";
    while (fgets(line, sizeof line, ef)) {
        closed_line |= strstr(line, "qkf serve: closed: 2 sessions") != NULL;
        if (strlen(all) + strlen(line) < sizeof all)
            strcat(all, line);
    }
    fclose(ef);
    cr_assert(closed_line, "qkf serve reports a clean close; its stderr:\n%s", all);
    answers_free(&want);
    qkf_events_free(&ev);
    model_free(&m);
}

Test(serve, cli_sigterm_closes_cleanly, .timeout = 60) { cli_signal(SIGTERM); }
Test(serve, cli_sigint_closes_cleanly, .timeout = 60) { cli_signal(SIGINT); }

/* Only loopback addresses; bad options are one line and a non-zero exit. */
Test(serve, cli_refuses_other_addresses)
{
    struct sockaddr_storage a;
    cr_assert_eq(qkf_stream_addr("127.0.0.1:0", &a), 0);
    cr_assert_eq(qkf_stream_addr("localhost:80", &a), 0);
    cr_assert_eq(qkf_stream_addr("[::1]:80", &a), 0);
    cr_assert_neq(qkf_stream_addr("0.0.0.0:80", &a), 0);
    cr_assert(strstr(qkf_last_error(), "loopback"), "%s", qkf_last_error());
    cr_assert_neq(qkf_stream_addr("10.1.2.3:80", &a), 0);
    cr_assert_neq(qkf_stream_addr("[::]:80", &a), 0);
    cr_assert_neq(qkf_stream_addr("127.0.0.1", &a), 0);
    cr_assert_neq(qkf_stream_addr("127.0.0.1:70000", &a), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s serve --weights %s/dvs128_small.weights.h5 --listen 0.0.0.0:5000 2>&1", QKF_BINARY,
             QKF_FIXTURE_DIR);
    FILE *f = popen(cmd, "r");
    char line[1024] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert_neq(pclose(f), 0);
    cr_assert(strstr(line, "qkf serve: --listen") && strstr(line, "loopback"), "%s", line);
    snprintf(cmd, sizeof cmd,
             "%s serve --weights %s/cifar_small.weights.h5 --listen 127.0.0.1:0 2>&1", QKF_BINARY,
             QKF_FIXTURE_DIR);
    f = popen(cmd, "r");
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert_neq(pclose(f), 0);
    cr_assert(strstr(line, "dvs variant"), "%s", line);
}

/* The bar: 64 concurrent clients with malformed input among them. 64 well-formed
 * clients stream at once (from their own thread and event loop) while malformed and oversized
 * connections arrive from the test thread; each bad one gets its ERROR and is closed, and every
 * good client still gets exactly the offline engine's answers. */
typedef struct {
    int port, n;
    const qkf_events *ev;
    answers *got;
} clients_job;

static void *clients_main(void *arg)
{
    clients_job *j = arg;
    run_clients(j->port, j->n, j->ev, j->got, 0, 1.0, NULL);
    return NULL;
}

Test(serve, sixty_four_clients_with_malformed_among_them, .timeout = 120)
{
    model m;
    qkf_server_opts o;
    model_load(&m, &o);
    enum { NC = 64 };
    o.window = 5000;
    o.max_sessions = NC + 16;
    qkf_events *ev = qkf_calloc(NC, sizeof *ev);
    answers *want = qkf_calloc(NC, sizeof *want), *got = qkf_calloc(NC, sizeof *got);
    for (int i = 0; i < NC; i++) {
        random_events(&ev[i], 32, 32, 600 + 20 * i, 16000 + 100 * i, 500 + (uint64_t)i);
        offline(m.e, &ev[i], QKF_WINDOW_TIME, o.window, o.steps, &want[i]);
    }
    server_ctx sc;
    server_start(&sc, m.e, &o);
    clients_job job = {sc.port, NC, ev, got};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, clients_main, &job), 0);
    uint8_t junk[5];
    for (int k = 0; k < 4; k++) {
        int fd = raw_connect(sc.port);
        raw_hello(fd, 1, 32, 32);
        raw_frame(fd, 0x7f, "x", 1);
        expect_error(fd, QKF_SERVE_E_MALFORMED, "unknown type among 64 clients");
        fd = raw_connect(sc.port);
        le32(junk, QKF_SERVE_MAX_FRAME + 1);
        junk[4] = QKF_MSG_HELLO;
        raw_send(fd, junk, 5);
        expect_error(fd, QKF_SERVE_E_TOO_LARGE, "oversized among 64 clients");
    }
    pthread_join(th, NULL);
    server_stop(&sc);
    int64_t windows = 0;
    for (int i = 0; i < NC; i++) {
        char what[32];
        snprintf(what, sizeof what, "client %d", i);
        expect_same_answers(&got[i], &want[i], what);
        windows += want[i].n;
        answers_free(&got[i]);
        answers_free(&want[i]);
        qkf_events_free(&ev[i]);
    }
    cr_assert_eq(sc.st.windows, windows);
    cr_assert_eq(sc.st.errors, 8);
    qkf_free(ev);
    qkf_free(want);
    qkf_free(got);
    model_free(&m);
}
