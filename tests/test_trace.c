/* Traces (io/trace.c) and their reports (io/report.c).
 *
 * Exactness: a trace of the production dense engine (fused BN + LIF) holds bit for bit what an
 * engine that keeps every tensor computes, and matches the PyTorch reference's membranes and
 * spikes on a fixture. The event-engine path (qkf_trace_put, one step of one sample at a time)
 * writes the same file content as the dense hook. Streaming: a slow writer makes the simulation
 * wait without the queue outgrowing its buffer; a reader sees blocks while the run continues; a
 * killed run and a run that hits the file size limit leave a readable file with every completed
 * block. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <fnmatch.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../io/io.h"
#include "../io/report.h"
#include "../io/trace.h"
#include "../kernels/base.h"
#include "../sim/dense.h"
#include "../sim/sched.h"
#include "util.h"

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "/tmp/qkf_test_trace_%ld_%s.h5", (long)getpid(), name);
    unlink(buf);
}

typedef struct {
    qkf_model m;
    float *x;
    int B;
    char wpath[512], rpath[512];
} fixture;

static void fixture_load(fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    snprintf(f->wpath, sizeof f->wpath, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(f->rpath, sizeof f->rpath, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    qkf_h5_quiet();
    cr_assert_eq(qkf_ckpt_load(f->wpath, &f->m), 0, "%s", qkf_last_error());
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(f->rpath, "input", &f->x, &nd, sh), 0, "%s", qkf_last_error());
    f->B = (int)sh[0];
}

static void fixture_free(fixture *f)
{
    qkf_free(f->x);
    qkf_model_free(&f->m);
}

static const char *lif_name(const qkf_graph *g, int l) { return g->ops[g->lif_ops[l]].name; }

static float *read_grid(const char *path, const char *layer, const char *obs, int64_t sh[3])
{
    char key[256];
    snprintf(key, sizeof key, "nodes/%s/observables/%s/data", layer, obs);
    float *d = NULL;
    int nd;
    cr_assert_eq(qkf_report_read_f32(path, key, &d, &nd, sh), 0, "%s", qkf_last_error());
    cr_assert_eq(nd, 3, "%s rank", key);
    return d;
}

/* The spikes of a trace as a dense [S][steps][n] 0/1 grid (steps: t_start + i*dt). */
static uint8_t *read_spikes(const char *path, const char *layer, int64_t n, int steps, int t_start,
                            int dt, int64_t *S)
{
    char key[256];
    int64_t *idx, ish[3], tsh[3];
    float *tm;
    int nd;
    snprintf(key, sizeof key, "nodes/%s/observables/spikes/idx", layer);
    cr_assert_eq(qkf_report_read_i64(path, key, &idx, &nd, ish), 0, "%s", qkf_last_error());
    snprintf(key, sizeof key, "nodes/%s/observables/spikes/time", layer);
    cr_assert_eq(qkf_report_read_f32(path, key, &tm, &nd, tsh), 0, "%s", qkf_last_error());
    cr_assert(ish[0] == tsh[0] && ish[1] == tsh[1], "%s: idx and time shapes differ", layer);
    *S = ish[0];
    uint8_t *g = qkf_calloc((size_t)(ish[0] * steps * n + 1), 1);
    for (int64_t s = 0; s < ish[0]; s++) {
        float last = -1.0f;
        for (int64_t j = 0; j < ish[1]; j++) {
            int64_t i = idx[s * ish[1] + j];
            float t = tm[s * ish[1] + j];
            if (i < 0) { /* padding: -1 with +inf, and only at the end of a row */
                cr_assert(isinf(t), "%s: padding idx -1 with time %g", layer, (double)t);
                continue;
            }
            cr_assert(i < n && t >= last, "%s: event %lld (idx %lld, t %g) out of order", layer,
                      (long long)j, (long long)i, (double)t);
            last = t;
            int k = ((int)t - t_start) / dt;
            cr_assert(k >= 0 && k < steps && ((int)t - t_start) % dt == 0, "%s: time %g", layer,
                      (double)t);
            g[(s * steps + k) * n + i] = 1;
        }
    }
    qkf_free(idx);
    qkf_free(tm);
    return g;
}

/* ---- SHA-256 ------------------------------------------------------------------------- */

static void hex(const uint8_t d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

Test(trace, sha256_vectors)
{
    /* FIPS 180-4 examples */
    static const struct {
        const char *msg, *digest;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char h[65];
    uint8_t d[32];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        qkf_sha256(v[i].msg, strlen(v[i].msg), d);
        hex(d, h);
        cr_expect_str_eq(h, v[i].digest, "sha256('%s')", v[i].msg);
    }
    /* a million 'a' through the file reader (crosses its 64 KiB reads and block boundaries) */
    char path[256];
    tmp_path(path, sizeof path, "sha");
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 1000000; i++)
        fputc('a', f);
    fclose(f);
    cr_assert_eq(qkf_sha256_file(path, h), 0, "%s", qkf_last_error());
    cr_expect_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    unlink(path);
    cr_expect_neq(qkf_sha256_file("/nonexistent/x", h), 0);
}

/* ---- specs ----------------------------------------------------------------------------- */

static void small_graph(qkf_graph *g)
{
    qkf_config cfg;
    cr_assert_eq(qkf_config_preset("cifar10", &cfg), 0);
    cfg.img_size = 16;
    cfg.embed_dims = 96;
    cr_assert_eq(qkf_graph_walk(&cfg, 0, g), 0, "%s", qkf_last_error());
}

Test(trace, parse_records)
{
    qkf_graph g;
    small_graph(&g);
    qkf_trace_spec sp;
    qkf_trace_spec_init(&sp);
    cr_expect_eq(sp.buffer_bytes, (size_t)QKF_TRACE_BUFFER_MB << 20);
    cr_assert_eq(qkf_trace_parse_record(&sp, "stage1.*:v,spikes", &g), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_trace_parse_record(&sp,
                                        "*.attn_lif:h,input:neurons=0-9,20,30-31:steps=1-:every=2"
                                        ":samples=3-5",
                                        &g),
                 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_trace_parse_record(&sp, "patch_embed1.proj_lif:h:random=50:seed=7", NULL), 0,
                 "%s", qkf_last_error());
    cr_assert_eq(sp.n_records, 3);
    const qkf_trace_record *r = &sp.records[1];
    cr_expect_str_eq(r->layers, "*.attn_lif");
    cr_expect_eq(r->obs, 6u);
    cr_expect_eq(r->n_neuron_ranges, 3);
    cr_expect(r->neuron_ranges[0].lo == 0 && r->neuron_ranges[0].hi == 9);
    cr_expect(r->neuron_ranges[1].lo == 20 && r->neuron_ranges[1].hi == 20);
    cr_expect(r->t_lo == 1 && r->t_hi == -1 && r->every == 2 && r->s_lo == 3 && r->s_hi == 5);
    cr_expect(sp.records[2].random_k == 50 && sp.records[2].has_seed && sp.records[2].seed == 7);
    cr_expect_eq(sp.records[0].obs, (1u << QKF_TRACE_V) | (1u << QKF_TRACE_SPIKES));

    /* errors name the problem and list what is valid; the spec is unchanged */
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage9.*:v", &g), 0);
    cr_expect(strstr(qkf_last_error(), "no LIF layer matches 'stage9.*'") &&
                  strstr(qkf_last_error(), "stage1.*.tssa.{q_lif,k_lif,attn_lif,proj_lif}") &&
                  strstr(qkf_last_error(), "patch_embed1.{"),
              "%s", qkf_last_error());
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage1.*:u", &g), 0);
    cr_expect(strstr(qkf_last_error(), "unknown observable 'u' (valid: v, h, input, spikes"), "%s",
              qkf_last_error());
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage1.*", &g), 0);
    cr_expect(strstr(qkf_last_error(), "expected LAYERS:OBS"), "%s", qkf_last_error());
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage1.*:v:color=red", &g), 0);
    cr_expect(strstr(qkf_last_error(), "unknown key 'color'"), "%s", qkf_last_error());
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage1.*:v:neurons=5-2", &g), 0);
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage1.*:v:every=0", &g), 0);
    qkf_trace_spec sp2; /* checked alone: in sp they would first conflict with stage1.*:v */
    qkf_trace_spec_init(&sp2);
    cr_expect_neq(qkf_trace_parse_record(&sp2, "stage1.*:v:neurons=0-999999", &g), 0);
    cr_expect(strstr(qkf_last_error(), "outside layer stage1.0.tssa.q_lif, which has 6144"), "%s",
              qkf_last_error());
    cr_expect_neq(qkf_trace_parse_record(&sp2, "stage1.*:v:steps=2-9", &g), 0);
    cr_expect(strstr(qkf_last_error(), "steps 2-9 outside 0-3 (T = 4)"), "%s", qkf_last_error());
    cr_expect_eq(sp2.n_records, 0);
    qkf_trace_spec_free(&sp2);
    /* the same (layer, observable) twice: fine if identical, an error if not */
    cr_expect_eq(qkf_trace_parse_record(&sp, "stage1.0.tssa.q_lif:v", &g), 0, "%s",
                 qkf_last_error());
    cr_expect_neq(qkf_trace_parse_record(&sp, "stage1.0.tssa.q_lif:v:every=2", &g), 0);
    cr_expect(strstr(qkf_last_error(), "different selections"), "%s", qkf_last_error());
    cr_expect_eq(sp.n_records, 4);
    cr_expect_eq(qkf_trace_parse_buffer(&sp, "8"), 0);
    cr_expect_eq(sp.buffer_bytes, (size_t)8 << 20);
    cr_expect_neq(qkf_trace_parse_buffer(&sp, "0"), 0);
    cr_expect_neq(qkf_trace_parse_buffer(&sp, "12x"), 0);
    qkf_trace_spec_free(&sp);
    qkf_graph_free(&g);
}

/* ---- exactness ------------------------------------------------------------------------- */

/* Trace of every observable of every layer from the production engine (fused BN + LIF, no
 * RECORD_VH) against (1) an engine that keeps every tensor and membrane: bit for bit, and
 * (2) the PyTorch reference fixture. */
Test(trace, dense_exact_cifar_small, .timeout = 60)
{
    fixture f;
    fixture_load(&f, "cifar_small");
    qkf_set_threads(2);
    int B = f.B, T = f.m.cfg.T, K = f.m.cfg.num_classes;
    qkf_dense *e = qkf_dense_create(&f.m, B, 0);
    qkf_dense *ref = qkf_dense_create(&f.m, B, QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH);
    cr_assert(e && ref, "%s", qkf_last_error());
    const qkf_graph *g = qkf_dense_graph(e);
    char path[256];
    tmp_path(path, sizeof path, "exact");
    qkf_trace_spec sp;
    qkf_trace_spec_init(&sp);
    sp.seed = 42;
    cr_assert_eq(qkf_trace_parse_record(&sp, "*:all", g), 0, "%s", qkf_last_error());
    char *argv[] = {"qkf", "infer", "--trace", path, "--record", "*:all"};
    qkf_trace *tr = qkf_trace_open(path, &sp, g, f.wpath, "dense", 6, argv);
    cr_assert_not_null(tr, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_set_sink(e, qkf_trace_sink(tr)), 0, "%s", qkf_last_error());
    float *l1 = qkf_malloc((size_t)B * K * sizeof(float)), *l2 = qkf_malloc((size_t)B * K * 4);
    int64_t *c1 = qkf_calloc((size_t)g->n_lif, 8), *c2 = qkf_calloc((size_t)g->n_lif, 8);
    cr_assert_eq(qkf_dense_forward(e, f.x, B, l1, c1), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_forward(ref, f.x, B, l2, c2), 0);
    /* recording changes nothing */
    cr_expect_eq(memcmp(l1, l2, (size_t)B * K * sizeof(float)), 0, "logits changed");
    cr_expect_eq(memcmp(c1, c2, (size_t)g->n_lif * 8), 0, "spike counts changed");

    double max_v = 0, max_h = 0;
    int64_t *silent = qkf_calloc((size_t)g->n_lif, 8), *sat = qkf_calloc((size_t)g->n_lif, 8);
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_op *op = &g->ops[g->lif_ops[l]];
        const qkf_tensor *t = &g->tensors[op->out], *xt = &g->tensors[op->in0];
        int64_t N = (int64_t)t->h * t->w, n = t->c * N, F = (int64_t)T * B;
        int64_t sh[3], S;
        float *tv = read_grid(path, op->name, "v", sh);
        cr_assert(sh[0] == B && sh[1] == T && sh[2] == n, "%s v shape", op->name);
        float *th = read_grid(path, op->name, "h", sh);
        float *tx = read_grid(path, op->name, "input", sh);
        uint8_t *ts = read_spikes(path, op->name, n, T, 0, 1, &S);
        cr_assert_eq(S, B);
        const float *ev = qkf_dense_lif_v(ref, l), *eh = qkf_dense_lif_h(ref, l);
        const float *es = qkf_dense_tensor(ref, op->out), *ex = qkf_dense_tensor(ref, op->in0);
        char key[256];
        float *rv, *rh;
        int64_t *rs, rsh[5];
        int nd;
        snprintf(key, sizeof key, "v/%s", op->name);
        cr_assert_eq(qkf_h5_read_f32(f.rpath, key, &rv, &nd, rsh), 0, "%s", qkf_last_error());
        snprintf(key, sizeof key, "h/%s", op->name);
        cr_assert_eq(qkf_h5_read_f32(f.rpath, key, &rh, &nd, rsh), 0, "%s", qkf_last_error());
        snprintf(key, sizeof key, "spikes/%s", op->name);
        cr_assert_eq(qkf_h5_read_i64(f.rpath, key, &rs, &nd, rsh), 0, "%s", qkf_last_error());
        int64_t bad_engine = 0, bad_spikes = 0;
        for (int b = 0; b < B; b++)
            for (int ti = 0; ti < T; ti++)
                for (int64_t j = 0; j < n; j++) {
                    int64_t c = j / N, tok = j % N, fr = (int64_t)ti * B + b;
                    int64_t eo = (c * F + fr) * N + tok;
                    int64_t xo = (c * (xt->static_t ? B : F) + (xt->static_t ? b : fr)) * N + tok;
                    int64_t to = ((int64_t)b * T + ti) * n + j, ro = ((int64_t)ti * B + b) * n + j;
                    bad_engine += tv[to] != ev[eo] || th[to] != eh[eo] || tx[to] != ex[xo] ||
                                  ts[to] != (es[eo] != 0.0f);
                    bad_spikes += ts[to] != rs[ro];
                    double dv = fabs((double)tv[to] - (double)rv[ro]);
                    double dh = fabs((double)th[to] - (double)rh[ro]);
                    max_v = dv > max_v ? dv : max_v;
                    max_h = dh > max_h ? dh : max_h;
                }
        for (int64_t j = 0; j < n; j++) { /* expected report: neurons never / always firing */
            int64_t c = j / N, tok = j % N, k = 0;
            for (int64_t fr = 0; fr < F; fr++)
                k += es[(c * F + fr) * N + tok] != 0.0f;
            silent[l] += k == 0;
            sat[l] += k == F;
        }
        cr_expect_eq(bad_engine, 0, "%s: %lld values differ from the engine's own", op->name,
                     (long long)bad_engine);
        cr_expect_eq(bad_spikes, 0, "%s: %lld spikes differ from the reference", op->name,
                     (long long)bad_spikes);
        qkf_free(tv);
        qkf_free(th);
        qkf_free(tx);
        qkf_free(ts);
        qkf_free(rv);
        qkf_free(rh);
        qkf_free(rs);
    }
    /* The reference sums convolutions in another order (oneDNN), and the engine's default
     * Winograd F(4x4, 3x3) rounds its transforms: membranes agree to float rounding (test_dense
     * sees at most ~1.6e-5 on this fixture with F(4x4), ~2.4e-6 with direct convolution). */
    cr_expect_leq(max_v, 5e-5, "v differs from the reference by %g", max_v);
    cr_expect_leq(max_h, 5e-5, "h differs from the reference by %g", max_h);
    cr_log_info("cifar_small trace vs reference: max |dv| %.2e, max |dh| %.2e", max_v, max_h);

    /* the report of this trace: rates are the engine's spike counts over T*B*n */
    qkf_report rep;
    cr_assert_eq(qkf_report_load(path, &rep), 0, "%s", qkf_last_error());
    cr_assert_eq(rep.n_layers, g->n_lif);
    cr_expect_str_eq(rep.engine, "dense");
    cr_expect_eq(rep.seed, 42);
    cr_expect_eq(rep.T, T);
    cr_expect(strstr(rep.command, "--record '*:all'"), "%s", rep.command);
    cr_expect(strstr(rep.config, "\"embed_dims\": 96"), "%s", rep.config);
    char sha[65];
    cr_assert_eq(qkf_sha256_file(f.wpath, sha), 0);
    cr_expect_str_eq(rep.sha256, sha);
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_report_layer *L = &rep.layers[l];
        int64_t n = qkf_graph_lif_neurons(g, l);
        cr_expect_str_eq(L->name, lif_name(g, l));
        cr_expect_eq(L->spikes, c1[l], "%s", L->name);
        cr_expect_eq(L->rate, (double)c1[l] / ((double)n * T * B), "%s", L->name);
        cr_expect(L->silent == silent[l] && L->saturated == sat[l],
                  "%s: silent %lld/%lld, "
                  "saturated %lld/%lld",
                  L->name, (long long)L->silent, (long long)silent[l], (long long)L->saturated,
                  (long long)sat[l]);
        cr_expect_str_eq(L->membrane, "h");
        int64_t sum = 0;
        for (int k = 0; k < QKF_REPORT_BINS; k++)
            sum += L->hist[k];
        cr_expect(sum == L->values && L->values == n * T * B && L->missing == 0, "%s", L->name);
        /* h >= vth exactly when the neuron spikes */
        int64_t above = L->hist[6] + L->hist[7] + L->hist[8];
        cr_expect_eq(above, c1[l], "%s: %lld values of h at or above vth, %lld spikes", L->name,
                     (long long)above, (long long)c1[l]);
        cr_expect_eq(L->is_qk_mask, strstr(L->name, "tssa.attn_lif") != NULL);
    }
    qkf_report_free(&rep);
    qkf_free(silent);
    qkf_free(sat);
    unlink(path);
    qkf_trace_spec_free(&sp);
    qkf_free(l1);
    qkf_free(l2);
    qkf_free(c1);
    qkf_free(c2);
    qkf_dense_free(e);
    qkf_dense_free(ref);
    fixture_free(&f);
}

/* Compares two traces' datasets of (layer, obs) element by element (NaN == NaN). */
static void expect_same_dataset(const char *a, const char *b, const char *key)
{
    float *x, *y;
    int nx, ny;
    int64_t sx[3] = {0}, sy[3] = {0};
    cr_assert_eq(qkf_report_read_f32(a, key, &x, &nx, sx), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_report_read_f32(b, key, &y, &ny, sy), 0, "%s", qkf_last_error());
    cr_assert(nx == ny && sx[0] == sy[0] && sx[1] == sy[1] && sx[2] == sy[2],
              "%s: shapes differ ([%lld,%lld,%lld] vs [%lld,%lld,%lld])", key, (long long)sx[0],
              (long long)sx[1], (long long)sx[2], (long long)sy[0], (long long)sy[1],
              (long long)sy[2]);
    int64_t n = sx[0] * (nx > 1 ? sx[1] : 1) * (nx > 2 ? sx[2] : 1), diff = 0;
    for (int64_t i = 0; i < n; i++)
        diff += !(x[i] == y[i] || (isnan(x[i]) && isnan(y[i])));
    cr_expect_eq(diff, 0, "%s: %lld of %lld values differ", key, (long long)diff, (long long)n);
    qkf_free(x);
    qkf_free(y);
}

/* Selections (neuron ranges, a random subset, steps every k, a sample range) through the dense
 * hook and through qkf_trace_put, fed per (step, layer, sample) as the event engine does: the same
 * file content, and the content is the engine's values at the selected places. */
Test(trace, put_path_equals_dense_hook, .timeout = 60)
{
    fixture f;
    fixture_load(&f, "cifar_small");
    int B = f.B, T = f.m.cfg.T, K = f.m.cfg.num_classes;
    qkf_dense *e = qkf_dense_create(&f.m, B, 0);
    qkf_dense *ref = qkf_dense_create(&f.m, B, QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH);
    const qkf_graph *g = qkf_dense_graph(e);
    const char *recs[] = {
        "stage1.*.[qkm]*_lif:v,spikes:neurons=0-99,1000-1009,4000:steps=1-3:every=2",
        "patch_embed1.*:input,h:random=37:seed=5:samples=1-2", "*.attn_lif:spikes,v:samples=1-"};
    char pa[256], pb[256];
    tmp_path(pa, sizeof pa, "hook");
    tmp_path(pb, sizeof pb, "put");
    qkf_trace_spec sp;
    qkf_trace_spec_init(&sp);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(qkf_trace_parse_record(&sp, recs[i], g), 0, "%s", qkf_last_error());
    char *argv[] = {"test"};
    qkf_trace *ta = qkf_trace_open(pa, &sp, g, NULL, "dense", 1, argv);
    qkf_trace *tb = qkf_trace_open(pb, &sp, g, NULL, "event", 1, argv);
    cr_assert(ta && tb, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_set_sink(e, qkf_trace_sink(ta)), 0);
    float *logits = qkf_malloc((size_t)B * K * sizeof(float));
    int64_t nmax = 0;
    for (int l = 0; l < g->n_lif; l++)
        nmax = qkf_graph_lif_neurons(g, l) > nmax ? qkf_graph_lif_neurons(g, l) : nmax;
    float *pv = qkf_malloc((size_t)nmax * 4), *ph = qkf_malloc((size_t)nmax * 4);
    float *px = qkf_malloc((size_t)nmax * 4), *ps = qkf_malloc((size_t)nmax * 4);
    for (int pass = 0; pass < 2; pass++) { /* samples 0..2B-1 */
        cr_assert_eq(qkf_dense_forward(e, f.x, B, logits, NULL), 0, "%s", qkf_last_error());
        cr_assert_eq(qkf_dense_forward(ref, f.x, B, logits, NULL), 0);
        for (int t = 0; t < T; t++)
            for (int l = 0; l < g->n_lif; l++) {
                if (!qkf_trace_wants(tb, l))
                    continue;
                const qkf_op *op = &g->ops[g->lif_ops[l]];
                const qkf_tensor *y = &g->tensors[op->out], *xt = &g->tensors[op->in0];
                int64_t N = (int64_t)y->h * y->w, n = y->c * N, F = (int64_t)T * B;
                for (int b = 0; b < B; b++) {
                    for (int64_t j = 0; j < n; j++) {
                        int64_t c = j / N, tok = j % N, o = (c * F + (int64_t)t * B + b) * N + tok;
                        int64_t xo = xt->static_t ? (c * B + b) * N + tok : o;
                        pv[j] = qkf_dense_lif_v(ref, l)[o];
                        ph[j] = qkf_dense_lif_h(ref, l)[o];
                        ps[j] = qkf_dense_tensor(ref, op->out)[o];
                        px[j] = qkf_dense_tensor(ref, op->in0)[xo];
                    }
                    cr_assert_eq(qkf_trace_put(tb, l, (int64_t)pass * B + b, t, pv, ph, px, ps, n),
                                 0, "%s", qkf_last_error());
                }
            }
    }
    cr_assert_eq(qkf_trace_close(ta), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_trace_close(tb), 0, "%s", qkf_last_error());
    for (int l = 0; l < g->n_lif; l++) {
        unsigned w = 0;
        const char *name = lif_name(g, l);
        for (int i = 0; i < 3; i++) {
            qkf_trace_spec one;
            qkf_trace_spec_init(&one);
            qkf_trace_parse_record(&one, recs[i], NULL);
            char pat[64];
            snprintf(pat, sizeof pat, "%s", one.records[0].layers);
            if (!fnmatch(pat, name, 0))
                w |= one.records[0].obs;
            qkf_trace_spec_free(&one);
        }
        static const char *on[] = {"v", "h", "input", "spikes"};
        for (int o = 0; o < 4; o++) {
            if (!(w & (1u << o)))
                continue;
            char key[256];
            if (o == 3) {
                snprintf(key, sizeof key, "nodes/%s/observables/spikes/idx", name);
                expect_same_dataset(pa, pb, key);
                snprintf(key, sizeof key, "nodes/%s/observables/spikes/time", name);
            } else {
                snprintf(key, sizeof key, "nodes/%s/observables/%s/data", name, on[o]);
            }
            expect_same_dataset(pa, pb, key);
        }
    }
    /* the selections hold the engine's values at the selected places (ref holds pass 2) */
    {
        int l = 3; /* stage1.0.tssa.q_lif */
        cr_assert_str_eq(lif_name(g, l), "stage1.0.tssa.q_lif");
        const qkf_tensor *y = &g->tensors[g->ops[g->lif_ops[l]].out];
        int64_t N = (int64_t)y->h * y->w, F = (int64_t)T * B, sh[3];
        float *d = read_grid(pa, lif_name(g, l), "v", sh);
        cr_assert(sh[0] == 2 * B && sh[1] == 2 && sh[2] == 111, "[%lld,%lld,%lld]",
                  (long long)sh[0], (long long)sh[1], (long long)sh[2]);
        int64_t *nr, nsh[3];
        int nd;
        char key[256];
        snprintf(key, sizeof key, "nodes/%s/observables/v/neurons", lif_name(g, l));
        cr_assert_eq(qkf_report_read_i64(pa, key, &nr, &nd, nsh), 0, "%s", qkf_last_error());
        cr_expect(nsh[0] == 111 && nr[0] == 0 && nr[99] == 99 && nr[100] == 1000 &&
                  nr[110] == 4000);
        int64_t bad = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < 2; i++)
                for (int64_t j = 0; j < 111; j++) {
                    int t = 1 + 2 * i;
                    int64_t n = nr[j], c = n / N, tok = n % N;
                    bad += d[((int64_t)(B + b) * 2 + i) * 111 + j] !=
                           qkf_dense_lif_v(ref, l)[(c * F + (int64_t)t * B + b) * N + tok];
                }
        cr_expect_eq(bad, 0);
        qkf_free(d);
        qkf_free(nr);
        /* random=37 gives 37 distinct neurons, the same for the same seed; samples 1-2 */
        snprintf(key, sizeof key, "nodes/patch_embed1.proj_lif/observables/h/neurons");
        cr_assert_eq(qkf_report_read_i64(pa, key, &nr, &nd, nsh), 0, "%s", qkf_last_error());
        cr_expect_eq(nsh[0], 37);
        for (int j = 1; j < 37; j++)
            cr_expect_gt(nr[j], nr[j - 1]);
        qkf_free(nr);
        d = read_grid(pa, "patch_embed1.proj_lif", "h", sh);
        cr_expect(sh[0] == 2 && sh[1] == T && sh[2] == 37);
        qkf_free(d);
    }
    unlink(pa);
    unlink(pb);
    qkf_trace_spec_free(&sp);
    qkf_free(logits);
    qkf_free(pv);
    qkf_free(ph);
    qkf_free(px);
    qkf_free(ps);
    qkf_dense_free(e);
    qkf_dense_free(ref);
    fixture_free(&f);
}

/* ---- streaming ------------------------------------------------------------------------- */

/* Synthetic values for (sample, step, neuron): a hash, so the data does not compress away. */
static float synth(int64_t s, int t, int64_t j)
{
    uint64_t z = (uint64_t)s * 0x9E3779B97F4A7C15ull ^ (uint64_t)t * 0xBF58476D1CE4E5B9ull ^
                 (uint64_t)j * 0x94D049BB133111EBull;
    z ^= z >> 31;
    z *= 0xD6E8FEB86659FD93ull;
    z ^= z >> 29;
    return (float)(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 0.5f; /* [-0.5, 1.5) */
}

/* Hands sample s, steps t0..t1-1 of layer l to the trace (spikes where the value >= 1). */
static int put_synth(qkf_trace *tr, const qkf_graph *g, int l, int64_t s, int t0, int t1)
{
    int64_t n = qkf_graph_lif_neurons(g, l);
    float *v = qkf_malloc((size_t)n * 4), *sp = qkf_malloc((size_t)n * 4);
    int rc = 0;
    for (int t = t0; t < t1 && !rc; t++) {
        for (int64_t j = 0; j < n; j++) {
            v[j] = synth(s, t, j);
            sp[j] = v[j] >= 1.0f ? 1.0f : 0.0f;
        }
        rc = qkf_trace_put(tr, l, s, t, v, v, v, sp, n);
    }
    qkf_free(v);
    qkf_free(sp);
    return rc;
}

/* Rows of v/data of layer l equal to the synthetic values: complete rows from 0 on (a row of NaN
 * is a block not written; anything else is a corruption and fails). */
static int64_t check_synth_rows(const char *path, const qkf_graph *g, int l, int64_t *rows)
{
    int64_t sh[3], good = 0;
    float *d = read_grid(path, lif_name(g, l), "v", sh);
    *rows = sh[0];
    for (int64_t s = 0; s < sh[0]; s++) {
        int64_t ok = 0, nan = 0;
        for (int t = 0; t < sh[1]; t++)
            for (int64_t j = 0; j < sh[2]; j++) {
                float x = d[(s * sh[1] + t) * sh[2] + j];
                ok += x == synth(s, t, j);
                nan += isnan(x);
            }
        cr_expect_eq(ok + nan, sh[1] * sh[2], "sample %lld holds wrong values", (long long)s);
        if (ok == sh[1] * sh[2] && good == s)
            good++;
    }
    qkf_free(d);
    return good;
}

static int lif_of(const qkf_graph *g, const char *name)
{
    for (int l = 0; l < g->n_lif; l++)
        if (!strcmp(lif_name(g, l), name))
            return l;
    cr_assert_fail("no layer %s", name);
    return -1;
}

/* A writer slower than the simulation: producers wait, the queue never exceeds its buffer, and
 * nothing is lost (dense hook with samples split into step blocks, and the put path). */
Test(trace, slow_writer_bounded_memory, .timeout = 60)
{
    fixture f;
    fixture_load(&f, "cifar_small");
    int B = f.B, T = f.m.cfg.T, K = f.m.cfg.num_classes;
    qkf_dense *e = qkf_dense_create(&f.m, B, 0);
    qkf_dense *ref = qkf_dense_create(&f.m, B, QKF_DENSE_RECORD_VH);
    const qkf_graph *g = qkf_dense_graph(e);
    char path[256];
    tmp_path(path, sizeof path, "slow");
    qkf_trace_spec sp;
    qkf_trace_spec_init(&sp);
    sp.buffer_bytes = 768 << 10; /* ring 512 KB: a sample of mlp1_lif (393 KB) needs 3 blocks */
    sp.writer_delay_us = 2000;
    cr_assert_eq(qkf_trace_parse_record(&sp, "stage1.*:v,spikes", g), 0, "%s", qkf_last_error());
    char *argv[] = {"test"};
    qkf_trace *tr = qkf_trace_open(path, &sp, g, NULL, "dense", 1, argv);
    cr_assert_not_null(tr, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_set_sink(e, qkf_trace_sink(tr)), 0);
    float *logits = qkf_malloc((size_t)B * K * sizeof(float));
    for (int pass = 0; pass < 3; pass++)
        cr_assert_eq(qkf_dense_forward(e, f.x, B, logits, NULL), 0, "%s", qkf_last_error());
    qkf_trace_stats st;
    qkf_trace_get_stats(tr, &st);
    cr_assert_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
    cr_log_info("slow writer: %lld blocks, %lld bytes through a %zu-byte buffer, %lld waits, "
                "at most %zu bytes queued",
                (long long)st.blocks, (long long)st.bytes, st.capacity, (long long)st.waits,
                st.max_queued);
    cr_expect_eq(st.capacity, (size_t)512 << 10); /* two thirds of the budget */
    cr_expect_leq(st.max_queued, st.capacity);
    cr_expect_gt(st.waits, 0, "the producer never waited for the slow writer");
    cr_expect_gt(st.bytes, 4 * (int64_t)st.capacity);
    cr_assert_eq(qkf_dense_forward(ref, f.x, B, logits, NULL), 0);
    for (int l = 0; l < g->n_lif; l++) {
        const char *name = lif_name(g, l);
        if (strncmp(name, "stage1.", 7))
            continue;
        int64_t n = qkf_graph_lif_neurons(g, l), sh[3], S, F = (int64_t)T * B;
        const qkf_tensor *y = &g->tensors[g->ops[g->lif_ops[l]].out];
        int64_t N = (int64_t)y->h * y->w;
        float *d = read_grid(path, name, "v", sh);
        uint8_t *s = read_spikes(path, name, n, T, 0, 1, &S);
        cr_assert(sh[0] == 3 * B && S == 3 * B, "%s: %lld rows", name, (long long)sh[0]);
        int64_t bad = 0, spikes = 0;
        for (int64_t r = 0; r < sh[0]; r++)
            for (int t = 0; t < T; t++)
                for (int64_t j = 0; j < n; j++) {
                    int64_t o = ((j / N) * F + (int64_t)t * B + r % B) * N + j % N;
                    bad += d[(r * T + t) * n + j] != qkf_dense_lif_v(ref, l)[o];
                    spikes += s[(r * T + t) * n + j];
                }
        cr_expect_eq(bad, 0, "%s: %lld values lost or wrong", name, (long long)bad);
        cr_expect_gt(spikes, 0);
        qkf_free(d);
        qkf_free(s);
    }
    /* the put path under the same pressure */
    unlink(path);
    qkf_trace_spec_free(&sp);
    qkf_trace_spec_init(&sp);
    sp.buffer_bytes = 384 << 10;
    sp.writer_delay_us = 1000;
    cr_assert_eq(qkf_trace_parse_record(&sp, "stage1.0.mlp.mlp1_lif:v", g), 0);
    tr = qkf_trace_open(path, &sp, g, NULL, "event", 1, argv);
    cr_assert_not_null(tr, "%s", qkf_last_error());
    int l = lif_of(g, "stage1.0.mlp.mlp1_lif");
    for (int s = 0; s < 6; s++)
        cr_assert_eq(put_synth(tr, g, l, s, 0, T), 0, "%s", qkf_last_error());
    qkf_trace_get_stats(tr, &st);
    cr_assert_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
    cr_expect_leq(st.max_queued, st.capacity);
    cr_expect_gt(st.waits, 0);
    int64_t rows;
    cr_expect_eq(check_synth_rows(path, g, l, &rows), 6);
    cr_expect_eq(rows, 6);
    unlink(path);
    qkf_trace_spec_free(&sp);
    qkf_free(logits);
    qkf_dense_free(e);
    qkf_dense_free(ref);
    fixture_free(&f);
}

/* Another process reads the file (SWMR) while the run continues and sees every synced block. */
Test(trace, readable_while_running, .timeout = 60)
{
    char path[256];
    tmp_path(path, sizeof path, "live");
    int go[2], ack[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(ack), 0);
    pid_t pid = fork(); /* before this process opens anything: the reader starts clean */
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        qkf_h5_quiet();
        qkf_graph g;
        small_graph(&g);
        int l = lif_of(&g, "stage1.0.tssa.q_lif");
        unsigned char k;
        int status = 0;
        while (read(go[0], &k, 1) == 1 && k != 255) {
            int64_t rows, good = check_synth_rows(path, &g, l, &rows);
            if (good < k)
                status = 1;
            unsigned char r = (unsigned char)good;
            if (write(ack[1], &r, 1) != 1)
                status = 2;
        }
        qkf_graph_free(&g);
        _exit(status);
    }
    qkf_graph g;
    small_graph(&g);
    int l = lif_of(&g, "stage1.0.tssa.q_lif");
    qkf_trace_spec sp;
    qkf_trace_spec_init(&sp);
    cr_assert_eq(qkf_trace_parse_record(&sp, "stage1.0.tssa.q_lif:v", &g), 0);
    char *argv[] = {"test"};
    qkf_trace *tr = qkf_trace_open(path, &sp, &g, NULL, "event", 1, argv);
    cr_assert_not_null(tr, "%s", qkf_last_error());
    for (unsigned char k = 1; k <= 4; k++) {
        cr_assert_eq(put_synth(tr, &g, l, k - 1, 0, g.cfg.T), 0, "%s", qkf_last_error());
        cr_assert_eq(qkf_trace_sync(tr), 0, "%s", qkf_last_error());
        unsigned char seen = 0;
        cr_assert_eq(write(go[1], &k, 1), 1);
        cr_assert_eq(read(ack[0], &seen, 1), 1);
        cr_expect_geq(seen, k, "the reader saw %d complete samples of %d while running", seen, k);
    }
    cr_assert_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
    unsigned char stop = 255;
    cr_assert_eq(write(go[1], &stop, 1), 1);
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader failed (status %d)", status);
    unlink(path);
    qkf_trace_spec_free(&sp);
    qkf_graph_free(&g);
}

/* A run killed midway (SIGKILL, no close) leaves a readable file with every synced block. */
Test(trace, killed_run_keeps_completed_blocks, .timeout = 60)
{
    char path[256];
    tmp_path(path, sizeof path, "killed");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        qkf_h5_quiet();
        qkf_graph g;
        small_graph(&g);
        qkf_trace_spec sp;
        qkf_trace_spec_init(&sp);
        if (qkf_trace_parse_record(&sp, "stage1.0.tssa.q_lif:v,spikes", &g))
            _exit(3);
        char *argv[] = {"child"};
        qkf_trace *tr = qkf_trace_open(path, &sp, &g, NULL, "event", 1, argv);
        if (!tr)
            _exit(4);
        int l = lif_of(&g, "stage1.0.tssa.q_lif");
        for (int s = 0; s < 5; s++)
            if (put_synth(tr, &g, l, s, 0, g.cfg.T))
                _exit(5);
        if (qkf_trace_sync(tr))
            _exit(6);
        put_synth(tr, &g, l, 5, 0, 2); /* half a sample, maybe written, maybe not */
        raise(SIGKILL);
        _exit(7);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    qkf_graph g;
    small_graph(&g);
    int l = lif_of(&g, "stage1.0.tssa.q_lif");
    int64_t rows, good = check_synth_rows(path, &g, l, &rows);
    cr_expect_geq(good, 5, "%lld complete samples after the kill (5 were synced)", (long long)good);
    int64_t n = qkf_graph_lif_neurons(&g, l), S;
    uint8_t *s = read_spikes(path, lif_name(&g, l), n, g.cfg.T, 0, 1, &S);
    cr_expect_geq(S, 5);
    int64_t bad = 0;
    for (int64_t r = 0; r < 5; r++)
        for (int t = 0; t < g.cfg.T; t++)
            for (int64_t j = 0; j < n; j++)
                bad += s[(r * g.cfg.T + t) * n + j] != (synth(r, t, j) >= 1.0f);
    cr_expect_eq(bad, 0);
    qkf_free(s);
    qkf_report rep;
    cr_expect_eq(qkf_report_load(path, &rep), 0, "%s", qkf_last_error());
    qkf_report_free(&rep);
    unlink(path);
    qkf_graph_free(&g);
}

/* The file size limit (ulimit -f) reached mid-run: a clear error from put and close, and the file
 * still holds its complete blocks. */
Test(trace, file_size_limit, .timeout = 60)
{
    char path[256];
    tmp_path(path, sizeof path, "fsize");
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        qkf_h5_quiet();
        qkf_graph g;
        small_graph(&g);
        qkf_trace_spec sp;
        qkf_trace_spec_init(&sp);
        if (qkf_trace_parse_record(&sp, "stage1.0.mlp.mlp1_lif:v", &g))
            _exit(3);
        struct rlimit rl = {1 << 20, 1 << 20};
        setrlimit(RLIMIT_FSIZE, &rl);
        char *argv[] = {"child"};
        qkf_trace *tr = qkf_trace_open(path, &sp, &g, NULL, "event", 1, argv);
        if (!tr)
            _exit(4);
        int l = lif_of(&g, "stage1.0.mlp.mlp1_lif");
        int rc = 0;
        for (int s = 0; s < 64 && !rc; s++)
            rc = put_synth(tr, &g, l, s, 0, g.cfg.T) || qkf_trace_sync(tr);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rc ? qkf_last_error() : "no error");
        int crc = qkf_trace_close(tr);
        dprintf(pfd[1], "%s\n%s\n", msg, crc ? qkf_last_error() : "close ok");
        _exit(rc && crc ? 0 : 8);
    }
    close(pfd[1]);
    char out[4096] = {0};
    size_t got = 0;
    ssize_t k;
    while (got < sizeof out - 1 && (k = read(pfd[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)k;
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    cr_log_info("file size limit: %s", out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d: %s", status, out);
    cr_expect(strstr(out, "File too large") && strstr(out, path), "%s", out);
    qkf_graph g;
    small_graph(&g);
    int l = lif_of(&g, "stage1.0.mlp.mlp1_lif");
    int64_t rows, good = check_synth_rows(path, &g, l, &rows);
    cr_expect_geq(good, 1, "no complete sample before the limit (%lld rows)", (long long)rows);
    unlink(path);
    qkf_graph_free(&g);
}

Test(trace, files_and_errors)
{
    qkf_graph g;
    small_graph(&g);
    char path[256];
    tmp_path(path, sizeof path, "exists");
    qkf_trace_spec sp;
    qkf_trace_spec_init(&sp); /* no record: spikes of every layer */
    char *argv[] = {"test"};
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    fputs("precious", fp);
    fclose(fp);
    cr_expect_null(qkf_trace_open(path, &sp, &g, NULL, "dense", 1, argv));
    cr_expect(strstr(qkf_last_error(), "exists (use --force"), "%s", qkf_last_error());
    struct stat stt;
    cr_expect(stat(path, &stt) == 0 && stt.st_size == 8, "the existing file was touched");
    sp.force = 1;
    qkf_trace *tr = qkf_trace_open(path, &sp, &g, NULL, "dense", 1, argv);
    cr_assert_not_null(tr, "%s", qkf_last_error());
    for (int l = 0; l < g.n_lif; l++)
        cr_expect_eq(qkf_trace_wants(tr, l), 1u << QKF_TRACE_SPIKES);
    cr_expect_eq(put_synth(tr, &g, 0, 0, 0, g.cfg.T), 0, "%s", qkf_last_error());
    float one = 0;
    cr_expect_neq(qkf_trace_put(tr, 0, 0, 0, NULL, NULL, NULL, &one, 1), 0);
    cr_expect(strstr(qkf_last_error(), "has 3072 neurons, not 1"), "%s", qkf_last_error());
    cr_expect_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
    qkf_report rep;
    cr_assert_eq(qkf_report_load(path, &rep), 0, "%s", qkf_last_error());
    cr_expect_eq(rep.n_layers, g.n_lif);
    cr_expect_str_eq(rep.layers[0].name, "patch_embed1.proj_lif");
    cr_expect_eq(rep.layers[0].spike_samples, 1);
    qkf_report_free(&rep);
    /* abort deletes the file */
    tr = qkf_trace_open(path, &sp, &g, NULL, "dense", 1, argv);
    cr_assert_not_null(tr, "%s", qkf_last_error());
    cr_expect_eq(put_synth(tr, &g, 0, 0, 0, g.cfg.T), 0);
    qkf_trace_abort(tr);
    cr_expect_neq(stat(path, &stt), 0, "abort left the file");
    /* a missing directory, a buffer too small for one step of one sample */
    cr_expect_null(qkf_trace_open("/nonexistent-dir/t.h5", &sp, &g, NULL, "dense", 1, argv));
    cr_expect(strstr(qkf_last_error(), "cannot create (No such file or directory)"), "%s",
              qkf_last_error());
    qkf_trace_spec_free(&sp);
    qkf_trace_spec_init(&sp);
    sp.buffer_bytes = 64 << 10;
    cr_assert_eq(qkf_trace_parse_record(&sp, "stage1.0.mlp.mlp1_lif:v", &g), 0);
    cr_expect_null(qkf_trace_open(path, &sp, &g, NULL, "dense", 1, argv));
    cr_expect(strstr(qkf_last_error(), "is too small for v of stage1.0.mlp.mlp1_lif"), "%s",
              qkf_last_error());
    cr_expect_neq(stat(path, &stt), 0, "a failed open left a file");
    /* a report of something that is not a trace */
    char wpath[512];
    snprintf(wpath, sizeof wpath, "%s/cifar_small.weights.h5", QKF_FIXTURE_DIR);
    cr_expect_neq(qkf_report_load(wpath, &rep), 0);
    cr_expect(strstr(qkf_last_error(), "not a trace"), "%s", qkf_last_error());
    qkf_trace_spec_free(&sp);
    qkf_graph_free(&g);
}

/* The event engine's trace against the dense engine's on the same input: identical spikes in
 * every layer, and v, h, input equal up to the rounding of folded BatchNorm (1e-4). */
Test(trace, event_engine_matches_dense, .timeout = 60)
{
    fixture f;
    fixture_load(&f, "cifar_small");
    int B = f.B, K = f.m.cfg.num_classes, T = f.m.cfg.T;
    qkf_dense *d = qkf_dense_create(&f.m, B, 0);
    qkf_sched *ev = qkf_sched_create(&f.m, B, 0);
    cr_assert(d && ev, "%s", qkf_last_error());
    const qkf_graph *g = qkf_dense_graph(d);
    char pd[256], pe[256];
    tmp_path(pd, sizeof pd, "xd");
    tmp_path(pe, sizeof pe, "xe");
    float *logits = qkf_malloc((size_t)B * K * sizeof(float));
    for (int k = 0; k < 2; k++) {
        qkf_trace_spec sp;
        qkf_trace_spec_init(&sp);
        cr_assert_eq(qkf_trace_parse_record(&sp, "*:all", g), 0, "%s", qkf_last_error());
        qkf_trace *tr = qkf_trace_open(k ? pe : pd, &sp, g, f.wpath, k ? "event" : "dense", 0, NULL);
        cr_assert_not_null(tr, "%s", qkf_last_error());
        if (k) {
            cr_assert_eq(qkf_sched_set_trace(ev, qkf_trace_sink(tr)), 0, "%s",
                         qkf_last_error());
            cr_assert_eq(qkf_sched_forward(ev, f.x, B, logits, NULL), 0, "%s", qkf_last_error());
        } else {
            cr_assert_eq(qkf_dense_set_sink(d, qkf_trace_sink(tr)), 0, "%s", qkf_last_error());
            cr_assert_eq(qkf_dense_forward(d, f.x, B, logits, NULL), 0, "%s", qkf_last_error());
        }
        cr_assert_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
        qkf_trace_spec_free(&sp);
    }
    const char *obs[] = {"v", "h", "input"};
    for (int l = 0; l < g->n_lif; l++) {
        const char *name = lif_name(g, l);
        int64_t n = qkf_graph_lif_neurons(g, l), S1, S2;
        uint8_t *s1 = read_spikes(pd, name, n, T, 0, 1, &S1), *s2 = read_spikes(pe, name, n, T, 0, 1, &S2);
        cr_assert_eq(S1, B);
        cr_assert_eq(S2, B);
        cr_expect_eq(memcmp(s1, s2, (size_t)(B * T * n)), 0, "%s: spikes differ", name);
        qkf_free(s1);
        qkf_free(s2);
        for (int o = 0; o < 3; o++) {
            int64_t sh1[3], sh2[3];
            float *a = read_grid(pd, name, obs[o], sh1), *b = read_grid(pe, name, obs[o], sh2);
            cr_assert(sh1[0] == sh2[0] && sh1[1] == sh2[1] && sh1[2] == sh2[2]);
            double worst = 0;
            for (int64_t i = 0; i < sh1[0] * sh1[1] * sh1[2]; i++) {
                double dd = fabs((double)a[i] - (double)b[i]);
                worst = dd > worst ? dd : worst;
            }
            cr_expect_leq(worst, 1e-4, "%s %s: dense and event differ by %g", name, obs[o], worst);
            qkf_free(a);
            qkf_free(b);
        }
    }
    unlink(pd);
    unlink(pe);
    qkf_free(logits);
    qkf_sched_free(ev);
    qkf_dense_free(d);
    fixture_free(&f);
}

/* --trace-raw: uncompressed membranes hold exactly what the compressed file holds. */
Test(trace, raw_equals_compressed, .timeout = 60)
{
    fixture f;
    fixture_load(&f, "cifar_small");
    int B = f.B, K = f.m.cfg.num_classes;
    char p[2][256];
    tmp_path(p[0], sizeof p[0], "gz");
    tmp_path(p[1], sizeof p[1], "raw");
    float *logits = qkf_malloc((size_t)B * K * sizeof(float));
    for (int k = 0; k < 2; k++) {
        qkf_dense *e = qkf_dense_create(&f.m, B, 0);
        const qkf_graph *g = qkf_dense_graph(e);
        qkf_trace_spec sp;
        qkf_trace_spec_init(&sp);
        sp.no_compress = k;
        cr_assert_eq(qkf_trace_parse_record(&sp, "stage1.*:v,h,spikes", g), 0, "%s", qkf_last_error());
        qkf_trace *tr = qkf_trace_open(p[k], &sp, g, f.wpath, "dense", 0, NULL);
        cr_assert_not_null(tr, "%s", qkf_last_error());
        cr_assert_eq(qkf_dense_set_sink(e, qkf_trace_sink(tr)), 0);
        cr_assert_eq(qkf_dense_forward(e, f.x, B, logits, NULL), 0);
        cr_assert_eq(qkf_trace_close(tr), 0, "%s", qkf_last_error());
        qkf_trace_spec_free(&sp);
        qkf_dense_free(e);
    }
    int64_t s0[3], s1[3];
    float *a = read_grid(p[0], "stage1.0.mlp.mlp1_lif", "v", s0);
    float *b = read_grid(p[1], "stage1.0.mlp.mlp1_lif", "v", s1);
    cr_assert(s0[0] == s1[0] && s0[1] == s1[1] && s0[2] == s1[2]);
    cr_expect_eq(memcmp(a, b, (size_t)(s0[0] * s0[1] * s0[2]) * sizeof(float)), 0);
    qkf_free(a);
    qkf_free(b);
    unlink(p[0]);
    unlink(p[1]);
    qkf_free(logits);
    fixture_free(&f);
}

/* qkf train --trace: the chosen updates' training-mode forwards are recorded, and recording
 * changes nothing in the training (bit-identical checkpoint weights). */
Test(trace, train_records_chosen_steps, .timeout = 120)
{
    if (access("/usr/share/datasets/fashion-mnist", R_OK) != 0)
        cr_skip_test("no /usr/share/datasets/fashion-mnist");
    char dir[64] = "/tmp/qkf_trtrace_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[2048];
    const char *common = "train --data fashion-mnist --epochs 1 --limit-train 96 --batch 16 "
                         "--no-eval --quiet --threads 2 --embed-dims 32 --num-heads 4";
    snprintf(cmd, sizeof cmd, "cd %s && %s %s --out a.h5 > log 2>&1 && %s %s --out b.h5 --trace "
             "t.h5 --record 'stage1.*:v,spikes' --record '*.attn_lif:spikes' "
             "--trace-steps 2,4-5 >> log 2>&1",
             dir, QKF_BINARY, common, QKF_BINARY, common);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    char a[128], b[128], t[128];
    snprintf(a, sizeof a, "%s/a.h5", dir);
    snprintf(b, sizeof b, "%s/b.h5", dir);
    snprintf(t, sizeof t, "%s/t.h5", dir);
    qkf_model ma, mb;
    memset(&ma, 0, sizeof ma);
    memset(&mb, 0, sizeof mb);
    cr_assert_eq(qkf_ckpt_load(a, &ma), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_ckpt_load(b, &mb), 0, "%s", qkf_last_error());
    cr_expect_eq(memcmp(ma.params.data, mb.params.data,
                        (size_t)ma.params.total * sizeof(float)),
                 0, "recording changed the training");
    /* 3 recorded updates x 16 samples */
    int64_t sh[3];
    float *v = read_grid(t, "stage1.0.mlp.mlp1_lif", "v", sh);
    cr_expect_eq(sh[0], 48);
    cr_expect_eq(sh[1], 2);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < sh[0] * sh[1] * sh[2]; i++)
        nonzero += v[i] != 0.0f && !isnan(v[i]);
    cr_expect_gt(nonzero, 0, "membranes recorded");
    qkf_free(v);
    qkf_model_free(&ma);
    qkf_model_free(&mb);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The root attribute key of trace path (a variable-length string) equals want. */
static void expect_root_str(const char *path, const char *key, const char *want)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0, "%s", path);
    hid_t a = H5Aopen(f, key, H5P_DEFAULT), t = H5Aget_type(a);
    char *v = NULL;
    cr_assert(a >= 0 && H5Tis_variable_str(t) > 0 && H5Aread(a, t, &v) >= 0, "%s: %s", path, key);
    cr_expect_str_eq(v, want, "%s: %s", path, key);
    H5free_memory(v);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
}

/* qkf infer --hw loihi --trace with the dense integer engine and with --mode event: the same file
 * content, dataset by dataset (values in membrane units, bit for bit), for every observable and
 * the selections (neuron ranges, a random subset, steps every k, sample ranges, --trace-raw);
 * only the engine attribute differs; an existing trace is refused without --force. */
Test(trace, int_engines_cli, .timeout = 120)
{
    char dir[256], args[2048], out[1 << 14], err[4096];
    tmpdir_make(dir, sizeof dir, "trace_int_cli");
    const char *F = QKF_FIXTURE_DIR;
    static const char *models[][2] = {{"cifar_small", "loihi"}, {"cifar_tb", "loihi"}};
    static const char *rec =
        "--record 'stage1.*.[qkm]*_lif:v,h,spikes:neurons=0-99,700-709:steps=1-3:every=2' "
        "--record 'patch_embed1.*:input,h:random=37:seed=5:samples=1-' --record '*.attn_lif:all' "
        "--record 'stage2.*:input,spikes'";
    for (int m = 0; m < 2; m++)
        for (int raw = 0; raw < 2; raw++) {
            const char *tb = m ? "--tb-compat" : "";
            for (int ev = 0; ev < 2; ev++) {
                snprintf(args, sizeof args,
                         "infer --weights %s/%s.weights.h5 --hw %s --input %s/%s_int_%s.h5 "
                         "--output y%d.h5 --trace t%d.h5 %s %s %s --threads 2 --quiet %s",
                         F, models[m][0], models[m][1], F, models[m][0], models[m][1], ev, ev, rec,
                         raw ? "--trace-raw" : "", tb, ev ? "--mode event" : "");
                cr_assert_eq(run_qkf(dir, args, out, sizeof out, err, sizeof err), 0, "%s: %s",
                             args, err);
            }
            char pa[512], pb[512];
            snprintf(pa, sizeof pa, "%s", tmpdir_path(dir, "t0.h5"));
            snprintf(pb, sizeof pb, "%s", tmpdir_path(dir, "t1.h5"));
            qkf_model fm;
            char w[512];
            snprintf(w, sizeof w, "%s/%s.weights.h5", F, models[m][0]);
            cr_assert_eq(qkf_ckpt_load(w, &fm), 0, "%s", qkf_last_error());
            qkf_graph g;
            cr_assert_eq(qkf_graph_walk(&fm.cfg, 0, &g), 0, "%s", qkf_last_error());
            int checked = 0;
            for (int l = 0; l < g.n_lif; l++) {
                const char *name = lif_name(&g, l);
                static const char *on[] = {"v", "h", "input"};
                char key[256];
                for (int o = 0; o < 3; o++) {
                    snprintf(key, sizeof key, "nodes/%s/observables/%s/data", name, on[o]);
                    int has = qkf_h5_has(pa, key);
                    cr_assert_eq(has, qkf_h5_has(pb, key), "%s", key);
                    if (has == 1)
                        expect_same_dataset(pa, pb, key), checked++;
                    snprintf(key, sizeof key, "nodes/%s/observables/%s/neurons", name, on[o]);
                    if (qkf_h5_has(pa, key) == 1) {
                        int64_t *na, *nb, sa[3], sb[3];
                        int nd;
                        cr_assert_eq(qkf_report_read_i64(pa, key, &na, &nd, sa), 0);
                        cr_assert_eq(qkf_report_read_i64(pb, key, &nb, &nd, sb), 0);
                        cr_assert(sa[0] == sb[0] && !memcmp(na, nb, (size_t)sa[0] * 8), "%s", key);
                        qkf_free(na);
                        qkf_free(nb);
                    }
                }
                snprintf(key, sizeof key, "nodes/%s/observables/spikes/idx", name);
                if (qkf_h5_has(pa, key) == 1) {
                    expect_same_dataset(pa, pb, key);
                    snprintf(key, sizeof key, "nodes/%s/observables/spikes/time", name);
                    expect_same_dataset(pa, pb, key), checked++;
                }
            }
            cr_assert_gt(checked, 10, "%d datasets compared", checked);
            expect_root_str(pa, "engine", "dense-int");
            expect_root_str(pb, "engine", "event-int");
            expect_root_str(pb, "units", "membrane");
            qkf_graph_free(&g);
            qkf_model_free(&fm);
            unlink(pa);
            unlink(pb);
        }
    /* an existing trace: refused without --force (one line, the file kept), replaced with it */
    snprintf(args, sizeof args,
             "infer --weights %s/cifar_small.weights.h5 --hw loihi "
             "--input %s/cifar_small_int_loihi.h5 --output y.h5 --trace t.h5 --mode event --quiet",
             F, F);
    cr_assert_eq(run_qkf(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_assert_neq(run_qkf(dir, args, out, sizeof out, err, sizeof err), 0);
    cr_assert(strstr(err, "t.h5") && strchr(err, '\n') == err + strlen(err) - 1, "%s", err);
    strcat(args, " --force");
    cr_assert_eq(run_qkf(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    tmpdir_remove(dir);
}
