/* qkf serve: the event engine as a live device on a TCP port (tools/app/stream.c); qkf client:
 * replays an event file to it and prints the answers, or measures it with many connections
 * (--bench). The protocol is in docs/serve.md. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include "../io/events.h"
#include "../io/io.h"
#include "app/stream.h"
#include "../kernels/base.h"
#include "../sim/dense.h"
#include "../sim/sched.h"
#include "../sim/stats.h"
#include "../models/quant.h"
#include "app/quantize.h"
#include "cli.h"

static void serve_help(void)
{
    printf(
        "usage: qkf serve --weights W.h5 --listen HOST:PORT [--window-us N | --window-events N]\n"
        "                 [--steps N] [--max-sessions N] [--idle-timeout S] [--queue-bytes N]\n"
        "                 [--max-gap N] [--threads N] [--tb-compat] [--verbose]\n"
        "                 [--calibrate RATE [--seed N]]\n"
        "\n"
        "Serves a dvs model (dvs128, cifar10dvs) as a live device: every connection is a session\n"
        "of the event engine. Clients send HELLO (sensor size), then events; events are binned\n"
        "into frames per window (the sensor scaled onto the model input), each window is one time\n"
        "step of the engine, and each is answered with the class scores (the readout's mean over\n"
        "the sample's steps so far) and the spikes of every LIF layer in that step. Protocol:\n"
        "docs/serve.md. The first line on stdout is 'listening on HOST:PORT'. SIGINT or SIGTERM\n"
        "stops accepting, answers the windows already queued, and closes every session.\n"
        "\n"
        "  --listen HOST:PORT   a loopback address (127.0.0.1, localhost, [::1]); PORT 0 picks "
        "one\n"
        "  --window-us N        time windows of N microseconds (default 10000)\n"
        "  --window-events N    ... or windows of N events\n"
        "  --steps N            windows per sample: the session restarts from rest after N steps\n"
        "                       (default: the model's T; 0: never, scores are a running mean)\n"
        "  --max-sessions N     concurrent sessions; more get ERROR busy (default 64)\n"
        "  --idle-timeout S     close a session without progress for S seconds (default 30; 0 "
        "off)\n"
        "  --queue-bytes N      per session: window frames waiting for the engine; the socket is\n"
        "                       not read while they are full (default 1048576, at least 1 frame)\n"
        "  --max-gap N          at most N empty windows in one timestamp jump (default 1000;\n"
        "                       each is a step and an answer; FLUSH before a longer pause)\n"
        "  --threads N          worker threads stepping sessions (default: the cores)\n"
        "  --tb-compat          the official SSA proj_lif quirk (membrane over the T*B axis)\n"
        "  --verbose            one line per session event on stderr\n"
        "  --calibrate RATE     for benchmarks: first re-set every BatchNorm so that its LIF "
        "fires\n"
        "                       at about RATE on random sparse event frames (5%% of inputs "
        "active;\n"
        "                       as qkf bench event does); the scores then mean nothing\n"
        "\n"
        "chip arithmetic (docs/hardware.md): with --hw (or W.h5 a qkf quantize output) every\n"
        "session runs the integer event engine on the profile's arithmetic (a float W.h5 is\n"
        "quantised on load, after --calibrate if given); same protocol and answers.\n");
    fputs(qkf_hw_help, stdout);
}

static void client_help(void)
{
    printf(
        "usage: qkf client --connect HOST:PORT FILE [--realtime | --fast] [--speed X]\n"
        "                  [--chunk N] [--repeat R] [--bench N] [--quiet] [read options]\n"
        "\n"
        "Replays the events of FILE (any format qkf events reads: .bin, .aedat, .aedat4, .raw,\n"
        ".dat, .qev, .npy) to a\n"
        "qkf serve and prints one line per answered window:\n"
        "  window W sample S step K events N class C scores s0,s1,... spikes n0,n1,...\n"
        "(scores printed with 9 significant digits: they read back to the same float32).\n"
        "\n"
        "  --realtime        send events at the pace of their timestamps\n"
        "  --fast            as fast as the server takes them (default)\n"
        "  --speed X         realtime: timestamps run X times faster (default 1)\n"
        "  --chunk N         events per EVENTS frame at most (default 4096)\n"
        "  --repeat R        replay the file R times back to back (timestamps shifted)\n"
        "  --bench N         N concurrent connections each replaying FILE; prints events/s and\n"
        "                    the answer latency (from sending what closed a window to its answer)\n"
        "  --quiet           no answer lines (the summary only)\n"
        "  --format F, --sensor WxH, --layout L, --orient O, --backwards B   as qkf events\n");
}

/* ---- serve ----------------------------------------------------------------------------------- */

typedef struct {
    uv_signal_t sigint, sigterm;
    qkf_server *srv;
    int signalled;
} serve_ctx;

static void log_line(void *data, const char *line)
{
    (void)data;
    fprintf(stderr, "qkf serve: %s\n", line);
}

static void on_signal(uv_signal_t *h, int signum)
{
    serve_ctx *c = h->data;
    if (c->signalled++)
        return;
    fprintf(stderr, "qkf serve: %s: closing %lld sessions\n",
            signum == SIGINT ? "SIGINT" : "SIGTERM",
            (long long)qkf_server_stats_get(c->srv)->sessions_active);
    /* a second signal gets the default action once these handles are gone */
    uv_close((uv_handle_t *)&c->sigint, NULL);
    uv_close((uv_handle_t *)&c->sigterm, NULL);
    qkf_server_close(c->srv, NULL, NULL);
}

static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        return qkf_set_error("option %s: '%s' is not an integer in %lld..%lld", opt, v,
                             (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

/* Benchmarks: BatchNorms re-set so that the LIFs fire at about `rate` on one sample of random
 * sparse event frames (dvs models). */
static int calibrate_model(qkf_model *m, double rate, uint64_t seed)
{
    if (!qkf_config_is_frames(&m->cfg))
        return 0; /* qkf_server_new refuses the model with its own message */
    int64_t n = (int64_t)m->cfg.T * m->cfg.in_channels * m->cfg.img_size * m->cfg.img_size;
    float *x = qkf_malloc((size_t)n * sizeof(float));
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        float u = qkf_rng_uniform(&r);
        x[i] = u < 0.95f ? 0.0f : u < 0.99f ? 1.0f : 2.0f;
    }
    int rc = qkf_stats_calibrate(m, x, 1, rate, 0.5, 0, seed);
    qkf_free(x);
    return rc;
}

int cmd_serve(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "serve"};
    const char *weights = NULL, *listen = NULL, *v;
    int64_t win_us = -1, win_ev = -1, steps = -1, maxs = 64, qbytes = 1 << 20, gap = 100000,
            threads = 0, seed = 1;
    double idle = 30.0, calibrate = 0.0;
    int tb = 0, verbose = 0, r, have_hw = 0;
    qkf_hw_profile hw;
    for (; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            serve_help();
            return 0;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) {
            if (r < 0)
                return qkf_cli_fail("serve");
            have_hw = 1;
            continue;
        }
        if (qkf_flag(&a, "--tb-compat")) {
            tb = 1;
            continue;
        }
        if (qkf_flag(&a, "--verbose")) {
            verbose = 1;
            continue;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) != 0 ||
            (r = qkf_arg(&a, "--listen", &listen)) != 0) {
            if (r < 0)
                return qkf_cli_fail("serve");
            continue;
        }
        static const struct {
            const char *opt;
            int64_t lo, hi;
        } ints[] = {{"--window-us", 1, (int64_t)1 << 40},
                    {"--window-events", 1, 1 << 30},
                    {"--steps", 0, 1 << 30},
                    {"--max-sessions", 1, 1 << 20},
                    {"--queue-bytes", 1, (int64_t)1 << 40},
                    {"--max-gap", 0, (int64_t)1 << 40},
                    {"--threads", 1, 1024},
                    {"--seed", 0, (int64_t)1 << 40}};
        int64_t *dst[] = {&win_us, &win_ev, &steps, &maxs, &qbytes, &gap, &threads, &seed};
        int hit = 0;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !hit; k++)
            if ((r = qkf_arg(&a, ints[k].opt, &v)) != 0) {
                if (r < 0 || parse_i64(ints[k].opt, v, ints[k].lo, ints[k].hi, dst[k]))
                    return qkf_cli_fail("serve");
                hit = 1;
            }
        if (hit)
            continue;
        if ((r = qkf_arg(&a, "--idle-timeout", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--idle-timeout", v, 0, 1e6, &idle))
                return qkf_cli_fail("serve");
            continue;
        }
        if ((r = qkf_arg(&a, "--calibrate", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--calibrate", v, 0.001, 0.6, &calibrate))
                return qkf_cli_fail("serve");
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf serve --help)", argv[a.i]);
        return qkf_cli_fail("serve");
    }
    if (!weights || !listen) {
        qkf_set_error("needs --weights W.h5 and --listen HOST:PORT (qkf serve --help)");
        return qkf_cli_fail("serve");
    }
    if (win_us > 0 && win_ev > 0) {
        qkf_set_error("--window-us and --window-events exclude each other");
        return qkf_cli_fail("serve");
    }
    struct sockaddr_storage addr;
    if (qkf_stream_addr(listen, &addr)) {
        fprintf(stderr, "qkf serve: --listen %s\n", qkf_last_error());
        return 1;
    }
    /* the engine steps sessions on libuv's thread pool, one OpenMP thread each */
    char nthr[32];
    snprintf(nthr, sizeof nthr, "%lld",
             (long long)(threads > 0 ? threads : (int64_t)sysconf(_SC_NPROCESSORS_ONLN)));
    if (threads > 0 || !getenv("UV_THREADPOOL_SIZE"))
        setenv("UV_THREADPOOL_SIZE", nthr, 1);
    qkf_set_threads(1);
    signal(SIGPIPE, SIG_IGN);

    qkf_model m;
    memset(&m, 0, sizeof m);
    qkf_qmodel q; /* --hw: the integer model the sessions run */
    memset(&q, 0, sizeof q);
    int isq = qkf_qckpt_is_quant(weights), imode = have_hw || isq == 1;
    if (isq < 0)
        return qkf_cli_fail("serve");
    if (have_hw && hw.arith.is_float) {
        qkf_set_error("--hw %s: the float machine (run without --hw)", hw.name);
        return qkf_cli_fail("serve");
    }
    if (imode && isq == 1 && calibrate > 0) {
        qkf_set_error("%s: already quantised (--calibrate needs a float checkpoint)", weights);
        return qkf_cli_fail("serve");
    }
    int lrc;
    if (imode && !(calibrate > 0)) {
        lrc = qkf_app_qmodel(weights, have_hw ? &hw : NULL, 0, NULL, NULL, &m, &q);
    } else {
        lrc = qkf_ckpt_load(weights, &m) ||
              (calibrate > 0 && calibrate_model(&m, calibrate, (uint64_t)seed)) ||
              (imode && qkf_quantize(&m, &hw.arith, hw.name, NULL, &q));
    }
    qkf_sched *e = NULL;
    if (!lrc)
        e = imode ? qkf_sched_create_int(&q, 1, tb ? QKF_SCHED_TB_COMPAT : 0)
                  : qkf_sched_create(&m, 1, tb ? QKF_SCHED_TB_COMPAT : 0);
    if (!e) {
        qkf_qmodel_free(&q);
        qkf_model_free(&m);
        return qkf_cli_fail("serve");
    }
    const qkf_config *cfg = imode ? &q.cfg : &m.cfg;
    qkf_server_opts o;
    qkf_server_opts_default(&o, cfg);
    if (win_ev > 0)
        o.window_kind = QKF_WINDOW_EVENTS, o.window = win_ev;
    else if (win_us > 0)
        o.window = win_us;
    if (steps >= 0)
        o.steps = (int)steps;
    o.max_sessions = (int)maxs;
    o.idle_timeout = idle;
    o.queue_bytes = qbytes;
    o.max_gap = gap;
    if (verbose)
        o.log = log_line;

    uv_loop_t loop;
    uv_loop_init(&loop);
    int rc = 1;
    qkf_server *srv = qkf_server_new(&loop, e, &o);
    if (!srv) {
        fprintf(stderr, "qkf serve: %s: %s\n", weights, qkf_last_error());
        goto out;
    }
    if (qkf_server_listen(srv, listen)) {
        fprintf(stderr, "qkf serve: %s\n", qkf_last_error());
        qkf_server_close(srv, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        qkf_server_free(srv);
        goto out;
    }
    serve_ctx ctx = {.srv = srv};
    uv_signal_init(&loop, &ctx.sigint);
    uv_signal_init(&loop, &ctx.sigterm);
    ctx.sigint.data = ctx.sigterm.data = &ctx;
    uv_signal_start(&ctx.sigint, on_signal, SIGINT);
    uv_signal_start(&ctx.sigterm, on_signal, SIGTERM);
    {
        const qkf_graph *g = qkf_sched_graph(e);
        const qkf_tensor *x = &g->tensors[g->input];
        char host[256];
        snprintf(host, sizeof host, "%s", listen);
        char *colon = strrchr(host, ':');
        *colon = 0;
        printf("listening on %s:%d\n", host, qkf_server_port(srv));
        printf("model: %s, %dx%dx%d frames, %d classes, %d LIF layers; windows of %lld %s, %d "
               "per sample; up to %d sessions, %lld bytes each at most\n",
               qkf_variant_name(cfg->variant), x->c, x->h, x->w, cfg->num_classes, g->n_lif,
               (long long)o.window, o.window_kind == QKF_WINDOW_TIME ? "us" : "events", o.steps,
               o.max_sessions, (long long)qkf_server_session_bound(srv));
        fflush(stdout);
    }
    double t0 = qkf_now();
    uv_run(&loop, UV_RUN_DEFAULT);
    const qkf_server_stats *st = qkf_server_stats_get(srv);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                 (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    fprintf(stderr,
            "qkf serve: closed: %lld sessions (%lld refused busy, %lld lost), %lld events, %lld "
            "windows, %lld error frames, %lld read pauses, %.1f s, %.1f CPU s\n",
            (long long)st->sessions_total, (long long)st->rejected_busy, (long long)st->disconnects,
            (long long)st->events, (long long)st->windows, (long long)st->errors,
            (long long)st->read_pauses, qkf_now() - t0, cpu);
    qkf_server_free(srv);
    rc = 0;
out:
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "qkf serve: the loop still has open handles\n");
        rc = 1;
    }
    qkf_sched_free(e);
    qkf_qmodel_free(&q);
    qkf_model_free(&m);
    return rc;
}

/* ---- client ---------------------------------------------------------------------------------- */

typedef struct {
    int quiet, bench;
} client_ctx;

static void print_welcome(void *data, int id, const qkf_welcome *w)
{
    const client_ctx *c = data;
    (void)id;
    if (c->quiet || c->bench)
        return;
    printf("# server: %d classes, %d LIF layers, input %dx%dx%d; windows of %lld %s, %d steps "
           "per sample\n",
           w->classes, w->layers, w->channels, w->height, w->width, (long long)w->window,
           w->window_kind == QKF_WINDOW_TIME ? "us" : "events", w->steps);
}

static void print_answer(void *data, int id, const qkf_answer *a)
{
    const client_ctx *c = data;
    (void)id;
    if (c->quiet || c->bench)
        return;
    int best = 0;
    for (int j = 1; j < a->classes; j++)
        if (a->scores[j] > a->scores[best])
            best = j;
    printf("window %llu sample %u step %u events %u class %d scores", (unsigned long long)a->window,
           a->sample, a->step, a->events, best);
    for (int j = 0; j < a->classes; j++)
        printf("%c%.9g", j ? ',' : ' ', (double)a->scores[j]);
    printf(" spikes");
    for (int l = 0; l < a->layers; l++)
        printf("%c%u", l ? ',' : ' ', a->spikes[l]);
    printf("\n");
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* The events of e repeated r times, each copy shifted past the previous one. */
static void repeat_events(const qkf_events *e, int r, qkf_events *out)
{
    qkf_events_init(out, e->width, e->height, e->n * r);
    int64_t span = e->n ? e->ev[e->n - 1].t - e->ev[0].t + 1 : 0;
    for (int k = 0; k < r; k++)
        for (int64_t i = 0; i < e->n; i++)
            qkf_events_push(out, e->ev[i].t + k * span, e->ev[i].x, e->ev[i].y, e->ev[i].p);
}

int cmd_client(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "client"};
    const char *connect = NULL, *file = NULL, *v;
    qkf_events_opts eo;
    memset(&eo, 0, sizeof eo);
    qkf_client_opts co;
    qkf_client_opts_default(&co);
    client_ctx cc = {0, 0};
    long bench = 0, repeat = 1, chunk = 4096;
    double speed = 1.0;
    int r;
    for (; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            client_help();
            return 0;
        }
        if (qkf_flag(&a, "--realtime") || qkf_flag(&a, "--fast")) {
            co.realtime = qkf_flag(&a, "--realtime");
            continue;
        }
        if ((r = qkf_arg_flag(&a, "--quiet", &cc.quiet)) ||
            (r = qkf_arg(&a, "--connect", &connect)) ||
            (r = qkf_arg_int(&a, "--bench", 1, 4096, &bench)) ||
            (r = qkf_arg_int(&a, "--repeat", 1, 1000000, &repeat)) ||
            (r = qkf_arg_int(&a, "--chunk", 1, 80000, &chunk)) ||
            (r = qkf_arg_events(&a, &eo, 65535))) {
            if (r < 0)
                return qkf_cli_fail("client");
            continue;
        }
        if ((r = qkf_arg(&a, "--speed", &v)) != 0) {
            if (r < 0 || qkf_parse_float("--speed", v, 1e-6, 1e9, &speed))
                return qkf_cli_fail("client");
            continue;
        }
        if (qkf_arg_positional(&a, &file))
            return qkf_cli_fail("client");
    }
    if (!connect || !file) {
        qkf_set_error("needs --connect HOST:PORT and an event FILE (qkf client --help)");
        return qkf_cli_fail("client");
    }
    struct sockaddr_storage addr;
    if (qkf_stream_addr(connect, &addr)) {
        fprintf(stderr, "qkf client: --connect %s\n", qkf_last_error());
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    qkf_events ev0, ev;
    if (qkf_events_load(file, &eo, &ev0))
        return qkf_cli_fail("client");
    if (repeat > 1) {
        repeat_events(&ev0, (int)repeat, &ev);
        qkf_events_free(&ev0);
    } else {
        ev = ev0;
    }
    co.speed = speed;
    co.chunk = chunk;
    cc.bench = bench > 0;
    co.on_welcome = print_welcome;
    co.on_answer = print_answer;
    co.data = &cc;
    int n = bench > 0 ? (int)bench : 1;

    uv_loop_t loop;
    uv_loop_init(&loop);
    qkf_client **cl = qkf_calloc((size_t)n, sizeof *cl);
    double t0 = qkf_now();
    int rc = 0;
    for (int i = 0; i < n; i++) {
        co.id = i;
        cl[i] = qkf_client_new(&loop, connect, &ev, &co);
        if (!cl[i]) {
            fprintf(stderr, "qkf client: %s\n", qkf_last_error());
            rc = 1;
            break;
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    double secs = qkf_now() - t0;
    int64_t events = 0, windows = 0, answers = 0, failed = 0, nl = 0;
    for (int i = 0; i < n && cl[i]; i++) {
        const qkf_client_result *res = qkf_client_result_get(cl[i]);
        events += res->events;
        windows += res->windows;
        answers += res->answers;
        nl += res->answers;
        if (!res->done) {
            failed++;
            if (failed <= 3)
                fprintf(stderr, "qkf client: %s\n",
                        res->error[0] ? res->error : "the replay did not finish");
        }
    }
    if (bench > 0) {
        double *lat = qkf_malloc((size_t)(nl + 1) * sizeof(double));
        int64_t k = 0;
        for (int i = 0; i < n && cl[i]; i++) {
            const qkf_client_result *res = qkf_client_result_get(cl[i]);
            for (int64_t j = 0; j < res->answers; j++)
                if (res->latency[j] >= 0)
                    lat[k++] = res->latency[j];
        }
        qsort(lat, (size_t)k, sizeof *lat, cmp_double);
        printf("clients: %d\nmode: %s\nevents: %lld\nwindows: %lld\nanswers: %lld\n"
               "seconds: %.3f\nevents_per_s: %.0f\nanswers_per_s: %.0f\n",
               n, co.realtime ? "realtime" : "fast", (long long)events, (long long)windows,
               (long long)answers, secs, (double)events / secs, (double)answers / secs);
        if (k > 0)
            printf("latency_p50_ms: %.3f\nlatency_p99_ms: %.3f\nlatency_max_ms: %.3f\n",
                   1e3 * lat[(k - 1) / 2], 1e3 * lat[(int64_t)((double)(k - 1) * 0.99)],
                   1e3 * lat[k - 1]);
        printf("failed: %lld\n", (long long)failed);
        qkf_free(lat);
    } else if (!cc.quiet && !failed) {
        fprintf(stderr, "qkf client: %lld events, %lld windows answered in %.3f s\n",
                (long long)events, (long long)answers, secs);
    }
    for (int i = 0; i < n; i++)
        qkf_client_free(cl[i]);
    qkf_free(cl);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "qkf client: the loop still has open handles\n");
        rc = 1;
    }
    qkf_events_free(&ev);
    return rc || failed ? 1 : 0;
}
