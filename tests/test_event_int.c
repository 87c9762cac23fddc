/* The event engine's integer mode (qkf_sched_create_int) against the dense integer engine
 * (sim/dense_int.c) and the PyTorch integer reference's fixtures (tests/fixtures/
 * MODEL_int_PROFILE.h5): every spike of every LIF layer and every integer logit equal, bit for
 * bit, at 1, 2 and 3 threads, on every variant (cifar, QKCA, imagenet, dvs128, cifar10dvs, and
 * the tb_compat model) and on the fixtures' arithmetics: loihi (16-bit wrapping current: int16
 * sums), speck and a '>'-comparator saturating one (int32 sums), wide16 (wide registers). Integer
 * sums are exact, so there is no tolerance and no flip budget anywhere. Also: sessions stepped
 * frame by frame equal the forward, the engine's float mode is untouched by an integer engine in
 * the same process, and integer mode refuses what it does not do. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../models/quant.h"
#include "../sim/dense_int.h"
#include "../sim/sched.h"
#include "util.h"

static void setup(void)
{
    qkf_h5_quiet();
    qkf_set_threads(2);
}

TestSuite(event_int, .init = setup, .timeout = 300);

typedef struct {
    qkf_model m;
    qkf_qmodel q;
    float *x;
    int B;
    char ref[512];
} fixture;

/* weights: the float fixture model (tests/fixtures/MODEL.weights.h5); arithmetic and input: the
 * integer fixture of profile prof (or, for a model without one, of cifar_small on prof). */
static void load(fixture *fx, const char *model, const char *prof, const char *arith_of)
{
    memset(fx, 0, sizeof *fx);
    char w[512];
    snprintf(w, sizeof w, "%s/%s.weights.h5", QKF_FIXTURE_DIR, model);
    snprintf(fx->ref, sizeof fx->ref, "%s/%s_int_%s.h5", QKF_FIXTURE_DIR,
             arith_of ? arith_of : model, prof);
    if (access(w, R_OK) || access(fx->ref, R_OK))
        cr_skip_test("fixture %s or %s not present", w, fx->ref);
    cr_assert_eq(qkf_ckpt_load(w, &fx->m), 0, "%s", qkf_last_error());
    int64_t *av, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(fx->ref, "arith", &av, &nd, sh), 0, "%s", qkf_last_error());
    qkf_hw_arith a;
    fixture_arith(av, &a);
    qkf_free(av);
    cr_assert_eq(qkf_h5_read_f32(fx->ref, "input", &fx->x, &nd, sh), 0, "%s", qkf_last_error());
    fx->B = (int)sh[0];
    fixture_norm(fx->ref, &fx->m);
    cr_assert_eq(qkf_quantize(&fx->m, &a, prof, NULL, &fx->q), 0, "%s", qkf_last_error());
}

static void unload(fixture *fx)
{
    qkf_qmodel_free(&fx->q);
    qkf_model_free(&fx->m);
    qkf_free(fx->x);
}

/* Event (integer mode) and dense integer engines on the same B samples: spikes of every layer
 * (qkf_sched_compare_int), integer and float logits, at 1, 2 and 3 threads; and the reference's
 * integer logits when ref_logits. Returns the spikes of the run. */
static int64_t agree(const fixture *fx, int B, int tb, int ref_logits)
{
    const qkf_graph *g = &fx->q.g;
    int K = g->cfg.num_classes;
    int64_t *li = qkf_malloc((size_t)B * K * sizeof(int64_t));
    float *ld = qkf_malloc((size_t)B * K * sizeof(float)), *le = qkf_malloc((size_t)B * K * sizeof(float));
    int64_t *ref = NULL, sh[5], spikes = 0;
    int nd;
    if (ref_logits)
        cr_assert_eq(qkf_h5_read_i64(fx->ref, "logits_int", &ref, &nd, sh), 0, "%s",
                     qkf_last_error());
    qkf_set_threads(2);
    qkf_dense_int *d = qkf_dense_int_create(&fx->q, B, tb ? QKF_DENSE_INT_TB_COMPAT : 0);
    cr_assert_not_null(d, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_int_forward(d, fx->x, B, ld, li, NULL), 0, "%s", qkf_last_error());
    for (int th = 1; th <= 3; th++) {
        qkf_set_threads(th);
        qkf_sched *e =
            qkf_sched_create_int(&fx->q, B, QKF_SCHED_RECORD | (tb ? QKF_SCHED_TB_COMPAT : 0));
        cr_assert_not_null(e, "%s", qkf_last_error());
        cr_assert(qkf_sched_is_int(e));
        cr_assert_eq(qkf_sched_forward(e, fx->x, B, le, NULL), 0, "%s", qkf_last_error());
        qkf_xcheck r;
        cr_assert_eq(qkf_sched_compare_int(e, d, B, &r), 0, "%s", qkf_last_error());
        cr_assert_eq(r.mismatches, 0,
                     "%s (%d threads): %lld spikes differ, first at layer %s, t %d, b %d, neuron "
                     "%lld (dense %d)",
                     fx->ref, th, (long long)r.mismatches,
                     r.layer >= 0 ? g->ops[g->lif_ops[r.layer]].name : "-", r.t, r.b,
                     (long long)r.neuron, r.dense_spike);
        spikes = r.spikes;
        const int64_t *ei = qkf_sched_logits_int(e);
        for (int i = 0; i < B * K; i++) {
            cr_assert_eq(ei[i], li[i], "%s (%d threads): logit_int %d: event %lld, dense %lld",
                         fx->ref, th, i, (long long)ei[i], (long long)li[i]);
            if (ref)
                cr_assert_eq(ei[i], ref[i], "%s: logit_int %d: event %lld, reference %lld",
                             fx->ref, i, (long long)ei[i], (long long)ref[i]);
        }
        cr_assert_eq(memcmp(le, ld, (size_t)B * K * sizeof(float)), 0, "%s: float logits",
                     fx->ref);
        qkf_sched_free(e);
    }
    qkf_set_threads(2);
    qkf_dense_int_free(d);
    qkf_free(ref);
    qkf_free(li);
    qkf_free(ld);
    qkf_free(le);
    return spikes;
}

static void run(const char *model, const char *prof)
{
    fixture fx;
    load(&fx, model, prof, NULL);
    int64_t spikes = agree(&fx, fx.B, 0, 1);
    cr_assert_gt(spikes, 0, "%s: no spikes at all (the comparison would prove nothing)", fx.ref);
    unload(&fx);
}

Test(event_int, cifar_loihi) { run("cifar_small", "loihi"); }
Test(event_int, cifar_speck) { run("cifar_small", "speck"); }
Test(event_int, cifar_gt_saturate) { run("cifar_small", "gtsat"); }
Test(event_int, cifar_qkca_loihi) { run("cifar_qkca", "loihi"); }
Test(event_int, imagenet_loihi) { run("imagenet_small", "loihi"); }
Test(event_int, imagenet_wide16) { run("imagenet_small", "wide16"); }
Test(event_int, dvs128_loihi) { run("dvs128_small", "loihi"); }
Test(event_int, dvs128_speck) { run("dvs128_small", "speck"); }
Test(event_int, cifar10dvs_loihi) { run("cifar10dvs_small", "loihi"); }
Test(event_int, cifar10dvs_gt_saturate) { run("cifar10dvs_small", "gtsat"); }

/* The tb_compat model (the official SSA proj_lif over the T*B axis): its own fixture at B = 2,
 * the event engine's shared-membrane (tb) code against the dense integer engine's T*B membrane
 * and the reference's logits; and one sample (where the axes coincide). */
Test(event_int, cifar_tb_loihi)
{
    fixture fx;
    load(&fx, "cifar_tb", "loihi", NULL);
    cr_assert_eq(fx.B, 2);
    int64_t spikes = agree(&fx, fx.B, 1, 1);
    cr_assert_gt(spikes, 0);
    cr_assert_gt(agree(&fx, 1, 1, 0), 0);
    unload(&fx);
}

/* A session stepped frame by frame gives the forward's spikes per step and, after T steps, its
 * logits bit for bit (static: the image at every step; dvs: the frames). */
static void session_case(const char *model, const char *prof)
{
    fixture fx;
    load(&fx, model, prof, NULL);
    const qkf_graph *g = &fx.q.g;
    int K = g->cfg.num_classes, T = g->cfg.T, nl = g->n_lif;
    const qkf_tensor *xin = &g->tensors[g->input];
    int64_t per = (int64_t)xin->c * xin->h * xin->w;
    qkf_sched *e = qkf_sched_create_int(&fx.q, 1, 0);
    cr_assert_not_null(e, "%s", qkf_last_error());
    float *lf = qkf_malloc((size_t)K * sizeof(float)), *ls = qkf_malloc((size_t)K * sizeof(float));
    int64_t *cf = qkf_calloc((size_t)nl, sizeof(int64_t)), *cs = qkf_calloc((size_t)nl, sizeof(int64_t));
    int64_t *step = qkf_calloc((size_t)nl, sizeof(int64_t));
    cr_assert_eq(qkf_sched_forward(e, fx.x, 1, lf, cf), 0, "%s", qkf_last_error());
    for (int th = 1; th <= 2; th++) {
        qkf_sched_session *s = qkf_sched_session_new(e, th);
        cr_assert_not_null(s, "%s", qkf_last_error());
        memset(cs, 0, (size_t)nl * sizeof(int64_t));
        for (int t = 0; t < T; t++) {
            const float *frame = xin->static_t ? fx.x : fx.x + (int64_t)t * per;
            cr_assert_eq(qkf_sched_session_step(s, frame, step), 0, "%s", qkf_last_error());
            for (int l = 0; l < nl; l++)
                cs[l] += step[l];
        }
        qkf_sched_session_scores(s, ls);
        cr_assert_eq(memcmp(cs, cf, (size_t)nl * sizeof(int64_t)), 0,
                     "%s: session spike counts differ from the forward's", model);
        cr_assert_eq(memcmp(ls, lf, (size_t)K * sizeof(float)), 0,
                     "%s: session scores differ from the forward's logits", model);
        /* reset: the same again */
        qkf_sched_session_reset(s);
        for (int t = 0; t < T; t++)
            qkf_sched_session_step(s, xin->static_t ? fx.x : fx.x + (int64_t)t * per, NULL);
        qkf_sched_session_scores(s, ls);
        cr_assert_eq(memcmp(ls, lf, (size_t)K * sizeof(float)), 0, "%s: after reset", model);
        qkf_sched_session_free(s);
    }
    qkf_free(lf);
    qkf_free(ls);
    qkf_free(cf);
    qkf_free(cs);
    qkf_free(step);
    qkf_sched_free(e);
    unload(&fx);
}

Test(event_int, session_cifar_loihi) { session_case("cifar_small", "loihi"); }
Test(event_int, session_dvs128_speck) { session_case("dvs128_small", "speck"); }

/* Integer mode refuses float arithmetic, with a message. */
Test(event_int, refusals)
{
    fixture fx;
    load(&fx, "cifar_small", "loihi", NULL);
    qkf_sched *e = qkf_sched_create_int(&fx.q, 1, 0);
    cr_assert_not_null(e);
    cr_assert_not_null(qkf_sched_logits_int(e));
    qkf_sched_free(e);
    qkf_sched *f = qkf_sched_create(&fx.m, 1, 0);
    cr_assert_null(qkf_sched_logits_int(f));
    cr_assert(!qkf_sched_is_int(f));
    qkf_sched_free(f);
    fx.q.arith.is_float = 1;
    cr_assert_null(qkf_sched_create_int(&fx.q, 1, 0));
    fx.q.arith.is_float = 0;
    unload(&fx);
}

/* The cifar10 widths on an 8x8 input (as tests/test_event.c's cifar_wide): patch_embed3.proj4 and
 * the stage-3 MLP exceed the engine's fused budget and run as (block, tile) items, block-major,
 * with int16 blocks of up to 256 channels and int32 pooled blocks; BatchNorms calibrated to fire
 * at ~15%, quantised with calibrated scales for each fixture arithmetic. */
static void wide_load(fixture *f, const char *prof)
{
    char ref[512];
    snprintf(ref, sizeof ref, "%s/cifar_small_int_%s.h5", QKF_FIXTURE_DIR, prof);
    if (access(ref, R_OK))
        cr_skip_test("%s not present", ref);
    memset(f, 0, sizeof *f);
    snprintf(f->ref, sizeof f->ref, "%s", ref);
    cr_assert_eq(qkf_config_preset("cifar10", &f->m.cfg), 0);
    f->m.cfg.img_size = 8, f->m.cfg.T = 2;
    cr_assert_eq(qkf_params_build(&f->m.cfg, &f->m.params), 0, "%s", qkf_last_error());
    qkf_params_init(&f->m.cfg, &f->m.params, 31);
    f->B = 3;
    int64_t n = (int64_t)f->B * 3 * 8 * 8;
    f->x = qkf_malloc((size_t)n * sizeof(float));
    qkf_rng r;
    qkf_rng_seed(&r, 32);
    for (int64_t i = 0; i < n; i++)
        f->x[i] = qkf_rng_normal(&r);
    cr_assert_eq(qkf_stats_calibrate(&f->m, f->x, f->B, 0.15, 0.6, 0, 33), 0, "%s",
                 qkf_last_error());
    int64_t *av, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(ref, "arith", &av, &nd, sh), 0, "%s", qkf_last_error());
    qkf_hw_arith a;
    fixture_arith(av, &a);
    qkf_free(av);
    qkf_quant_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(qkf_quant_calibrate(&f->m, f->x, f->B, f->B, &o), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_quantize(&f->m, &a, prof, &o, &f->q), 0, "%s", qkf_last_error());
    qkf_quant_calib_free(&o, &f->m);
}

static void wide_case(const char *prof)
{
    fixture fx;
    wide_load(&fx, prof);
    int64_t spikes = agree(&fx, fx.B, 0, 0);
    cr_assert_gt(spikes, 0);
    unload(&fx);
}

Test(event_int, wide_blocks_loihi) { wide_case("loihi"); }
Test(event_int, wide_blocks_gtsat) { wide_case("gtsat"); }

/* ---- the command ------------------------------------------------------------------------------ */

/* Runs qkf with args in a scratch directory; stdout and stderr captured; the exit status. */
static int qkf_run(const char *dir, const char *args, char *out, size_t nout, char *err,
                   size_t nerr)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s >%s/stdout 2>%s/stderr", dir, QKF_BINARY, args, dir,
             dir);
    int st = system(cmd);
    const char *names[2] = {"stdout", "stderr"};
    char *bufs[2] = {out, err};
    size_t caps[2] = {nout, nerr};
    for (int k = 0; k < 2; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(bufs[k], 1, caps[k] - 1, f) : 0;
        bufs[k][n] = 0;
        if (f)
            fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

/* qkf infer --hw loihi --mode event --cross-check: the engines agree, and Y.h5's integer logits
 * equal the dense integer engine's run of qkf infer --hw (and the reference's); qkf sim --hw
 * prints the spike differences against the float model; bad combinations fail with one line and
 * leave no file. */
Test(event_int, cli)
{
    char dir[] = "/tmp/qkf-test-event-int-XXXXXX", out[1 << 16], err[4096], args[2048];
    cr_assert_not_null(mkdtemp(dir));
    const char *F = QKF_FIXTURE_DIR;
    snprintf(args, sizeof args,
             "infer --weights %s/cifar_small.weights.h5 --input %s/cifar_small_int_loihi.h5 "
             "--output ev.h5 --hw loihi --mode event --cross-check --threads 2",
             F, F);
    cr_assert_eq(qkf_run(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_assert(strstr(out, "cross-check: engines agree") != NULL, "%s", out);
    snprintf(args, sizeof args,
             "infer --weights %s/cifar_small.weights.h5 --input %s/cifar_small_int_loihi.h5 "
             "--output dense.h5 --hw loihi --quiet",
             F, F);
    cr_assert_eq(qkf_run(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    char pe[600], pd[600], pr[600];
    snprintf(pe, sizeof pe, "%s/ev.h5", dir);
    snprintf(pd, sizeof pd, "%s/dense.h5", dir);
    snprintf(pr, sizeof pr, "%s/cifar_small_int_loihi.h5", F);
    int64_t *le, *ld, *lr, sh[5], she[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(pe, "logits_int", &le, &nd, she), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5_read_i64(pd, "logits_int", &ld, &nd, sh), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5_read_i64(pr, "logits_int", &lr, &nd, sh), 0, "%s", qkf_last_error());
    for (int64_t i = 0; i < she[0] * she[1]; i++) {
        cr_assert_eq(le[i], ld[i], "logit_int %lld: event %lld, dense %lld", (long long)i,
                     (long long)le[i], (long long)ld[i]);
        cr_assert_eq(le[i], lr[i], "logit_int %lld: event %lld, reference %lld", (long long)i,
                     (long long)le[i], (long long)lr[i]);
    }
    qkf_free(le);
    qkf_free(ld);
    qkf_free(lr);
    snprintf(args, sizeof args,
             "sim --weights %s/dvs128_small.weights.h5 --input %s/dvs128_small_int_speck.h5 "
             "--hw speck --threads 2",
             F, F);
    cr_assert_eq(qkf_run(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_assert(strstr(out, "spikes against the float model") != NULL, "%s", out);
    cr_assert(strstr(out, "patch_embed1.proj_lif") != NULL);
    /* --trace: the integer spikes of every layer (the reference's count) in membrane units */
    snprintf(args, sizeof args,
             "sim --weights %s/dvs128_small.weights.h5 --input %s/dvs128_small_int_speck.h5 "
             "--hw speck --threads 2 --trace ts.h5 --quiet",
             F, F);
    cr_assert_eq(qkf_run(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    {
        char pt[600], pf[600], key[300];
        snprintf(pt, sizeof pt, "%s/ts.h5", dir);
        snprintf(pf, sizeof pf, "%s/dvs128_small_int_speck.h5", F);
        fixture fx;
        load(&fx, "dvs128_small", "speck", NULL);
        const qkf_graph *g = &fx.q.g;
        for (int l = 0; l < g->n_lif; l++) {
            const char *name = g->ops[g->lif_ops[l]].name;
            int64_t *idx, *rs, s1[5], s2[5], ni = 0, nr = 0;
            snprintf(key, sizeof key, "nodes/%s/observables/spikes/idx", name);
            cr_assert_eq(qkf_h5_read_i64(pt, key, &idx, &nd, s1), 0, "%s", qkf_last_error());
            snprintf(key, sizeof key, "spikes/%s", name);
            cr_assert_eq(qkf_h5_read_i64(pf, key, &rs, &nd, s2), 0, "%s", qkf_last_error());
            for (int64_t i = 0; i < s1[0] * s1[1]; i++)
                ni += idx[i] >= 0;
            for (int64_t i = 0; i < s2[0] * s2[1] * s2[2]; i++)
                nr += rs[i];
            cr_assert_eq(ni, nr, "%s: %lld spikes traced, the reference has %lld", name,
                         (long long)ni, (long long)nr);
            qkf_free(idx);
            qkf_free(rs);
        }
        unload(&fx);
    }
    /* refusals: one line on stderr, non-zero, no output */
    const char *bad[] = {"--cross-check", "--mode event --trace t.h5 --record nosuch:v",
                         "--mode event --hw nosuchchip", "--mode event --hw ideal-45nm"};
    for (int k = 0; k < 4; k++) {
        snprintf(args, sizeof args,
                 "infer --weights %s/cifar_small.weights.h5 --input %s/cifar_small_int_loihi.h5 "
                 "--output bad.h5 --hw loihi %s",
                 F, F, bad[k]);
        cr_assert_neq(qkf_run(dir, args, out, sizeof out, err, sizeof err), 0, "%s", bad[k]);
        int nl = 0;
        for (const char *p = err; *p; p++)
            nl += *p == '\n';
        cr_assert_eq(nl, 1, "%s: stderr is\n%s", bad[k], err);
        char pb[600];
        snprintf(pb, sizeof pb, "%s/bad.h5", dir);
        cr_assert(access(pb, F_OK) != 0, "%s left bad.h5 behind", bad[k]);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* qkf bench event --hw loihi on the small cifar model, every kernel path this CPU runs: both row
 * kernels' ceilings measured (positive, per path), one row per path with a positive speedup and
 * both engines' accumulates per CPU second. Times are not checked (BENCHMARKS.md measures them). */
Test(event_int, bench_event_hw)
{
    char dir[] = "/tmp/qkf-test-bench-int-XXXXXX", out[1 << 16], err[4096], args[2048];
    char paths[64] = "";
    int npath = 0;
    cr_assert_not_null(mkdtemp(dir));
    for (int p = 0; p < QKF_ISA_COUNT; p++)
        if (qkf_isa_supported((qkf_isa)p)) {
            snprintf(paths + strlen(paths), sizeof paths - strlen(paths), "%s%s",
                     npath ? "," : "", qkf_isa_name((qkf_isa)p));
            npath++;
        }
    snprintf(args, sizeof args,
             "bench event --weights %s/cifar_small.weights.h5 --hw loihi --batch 2 --seconds 0.05 "
             "--threads 1 --isa %s",
             QKF_FIXTURE_DIR, paths);
    cr_assert_eq(qkf_run(dir, args, out, sizeof out, err, sizeof err), 0, "%s", err);
    int rows = 0;
    for (int p = 0; p < QKF_ISA_COUNT; p++) {
        if (!qkf_isa_supported((qkf_isa)p))
            continue;
        char want[128];
        snprintf(want, sizeof want, "the %s path's row kernels", qkf_isa_name((qkf_isa)p));
        const char *c = strstr(out, want);
        cr_assert_not_null(c, "no ceilings for %s: %s", qkf_isa_name((qkf_isa)p), out);
        double gf, gi;
        c = strstr(c, "per CPU second): ");
        cr_assert_not_null(c, "%s", out);
        cr_assert_eq(sscanf(c, "per CPU second): %lf G float adds/s, %lf G int16", &gf, &gi), 2,
                     "%s", c);
        cr_expect(gf > 0 && gi > 0, "%s", c);
        for (const char *r = strstr(out, "\n     2 "); r; r = strstr(r + 1, "\n     2 ")) {
            double fms, ims, sp;
            char name[32];
            const char *line_end = strchr(r + 1, '\n');
            char line[512];
            size_t n = line_end ? (size_t)(line_end - r - 1) : strlen(r + 1);
            n = n < sizeof line - 1 ? n : sizeof line - 1;
            memcpy(line, r + 1, n);
            line[n] = 0;
            cr_assert_eq(sscanf(line, "%*d %lf %lf %lfx", &fms, &ims, &sp), 3, "%s", line);
            const char *last = strrchr(line, ' ');
            cr_assert_eq(sscanf(last, " %31s", name), 1);
            if (strcmp(name, qkf_isa_name((qkf_isa)p)) == 0) {
                cr_expect(fms > 0 && ims > 0 && sp > 0, "%s", line);
                rows++;
            }
        }
    }
    cr_expect_eq(rows, npath, "one row per path: %s", out);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- traces --------------------------------------------------------------------------------- */

/* A LIF sink that keeps everything it is handed: per LIF layer [4][S][T][n] floats (v, h, input,
 * spikes; sample s, step t, neuron n in per-sample order), NaN where nothing was written. The
 * dense integer engine hands over whole layers (put_layer), the event engine rows of one (layer,
 * sample, step) (put); both land in the same place. */
typedef struct {
    const qkf_graph *g;
    int T, S;
    float **d;
    int64_t *next; /* put_layer: the next sample of each layer */
    qkf_lif_sink sink;
} capture;

static unsigned cap_wants(void *ctx, int l)
{
    (void)ctx, (void)l;
    return (1u << QKF_TRACE_NOBS) - 1;
}

static float *cap_at(const capture *c, int l, int k, int64_t s, int t)
{
    int64_t n = qkf_graph_lif_neurons(c->g, l);
    return c->d[l] + (((int64_t)k * c->S + s) * c->T + t) * n;
}

static int cap_put(void *ctx, int l, int64_t s, int t, const float *v, const float *h,
                   const float *x, const float *sp, int64_t n)
{
    capture *c = ctx;
    if (s < 0 || s >= c->S || t < 0 || t >= c->T || n != qkf_graph_lif_neurons(c->g, l))
        return -1;
    const float *o[4] = {v, h, x, sp};
    for (int k = 0; k < 4; k++)
        if (o[k])
            memcpy(cap_at(c, l, k, s, t), o[k], (size_t)n * sizeof(float));
    return 0;
}

static int cap_put_layer(void *ctx, const qkf_lif_data *d)
{
    capture *c = ctx;
    int l = d->lif_index, B = d->B, T = d->T;
    int64_t N = d->N, s0 = c->next[l], F = (int64_t)T * B;
    if (s0 + B > c->S)
        return -1;
    c->next[l] += B;
    const float *o[4] = {d->v, d->h, d->x, d->s};
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < B && o[k]; b++)
            for (int t = 0; t < T; t++) {
                float *dst = cap_at(c, l, k, s0 + b, t);
                int64_t f = k == QKF_TRACE_INPUT && d->x_static ? b : (int64_t)t * B + b;
                int64_t Fk = k == QKF_TRACE_INPUT && d->x_static ? B : F;
                for (int ch = 0; ch < d->C; ch++)
                    memcpy(dst + ch * N, o[k] + ((int64_t)ch * Fk + f) * N,
                           (size_t)N * sizeof(float));
            }
    return 0;
}

static void cap_init(capture *c, const qkf_graph *g, int S)
{
    memset(c, 0, sizeof *c);
    c->g = g, c->T = g->cfg.T, c->S = S;
    c->d = qkf_calloc((size_t)g->n_lif, sizeof(float *));
    c->next = qkf_calloc((size_t)g->n_lif, sizeof(int64_t));
    for (int l = 0; l < g->n_lif; l++) {
        int64_t n = 4 * (int64_t)S * c->T * qkf_graph_lif_neurons(g, l);
        c->d[l] = qkf_malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            c->d[l][i] = NAN;
    }
    c->sink = (qkf_lif_sink){c, "capture", g->n_lif, c->T, cap_wants, cap_put, cap_put_layer};
}

static void cap_free(capture *c)
{
    for (int l = 0; l < c->g->n_lif; l++)
        qkf_free(c->d[l]);
    qkf_free(c->d);
    qkf_free(c->next);
}

/* The integer event engine's trace (qkf_sched_set_trace in integer mode) against the dense
 * integer engine's (qkf_dense_int_set_sink) on two forwards of the fixture's samples (sample
 * numbering across forwards): every v, h, input and spike of every layer, bit for bit (integers
 * in membrane units: no tolerance), at 1, 2 and 3 threads; every value written; H an integer
 * that fires exactly where the comparator says (below 2^24, where float32 holds it); and
 * tracing changes no integer logit. */
static void trace_case(fixture *fx, int tb)
{
    const qkf_graph *g = &fx->q.g;
    int B = fx->B, S = 2 * B, K = g->cfg.num_classes;
    int64_t *ld = qkf_malloc((size_t)S * K * sizeof(int64_t));
    float *lf = qkf_malloc((size_t)B * K * sizeof(float));
    capture cd, ce;
    cap_init(&cd, g, S);
    qkf_dense_int *d = qkf_dense_int_create(&fx->q, B, tb ? QKF_DENSE_INT_TB_COMPAT : 0);
    cr_assert_not_null(d, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_int_set_sink(d, &cd.sink), 0, "%s", qkf_last_error());
    for (int pass = 0; pass < 2; pass++)
        cr_assert_eq(qkf_dense_int_forward(d, fx->x, B, lf, ld + (int64_t)pass * B * K, NULL), 0,
                     "%s", qkf_last_error());
    qkf_dense_int_free(d);
    int64_t spikes = 0;
    for (int l = 0; l < g->n_lif; l++) {
        const qkf_qop *ql = &fx->q.ops[g->lif_ops[l]];
        int64_t n = qkf_graph_lif_neurons(g, l), N = n / g->tensors[g->ops[g->lif_ops[l]].out].c;
        for (int64_t s = 0; s < S; s++)
            for (int t = 0; t < cd.T; t++) {
                const float *h = cap_at(&cd, l, QKF_TRACE_H, s, t);
                const float *sp = cap_at(&cd, l, QKF_TRACE_SPIKES, s, t);
                for (int64_t j = 0; j < n; j++) {
                    int64_t th = ql->theta[j / N];
                    int fire = fx->q.arith.threshold_ge ? h[j] >= (float)th : h[j] > (float)th;
                    if (fabsf(h[j]) >= 16777216.0f) /* float32 keeps 24 bits (wide16) */
                        fire = sp[j] != 0.0f;
                    cr_assert(h[j] == floorf(h[j]) && (float)fire == sp[j],
                              "%s: %s s %lld t %d n %lld: h %g, threshold %lld, spike %g",
                              fx->ref, g->ops[g->lif_ops[l]].name, (long long)s, t, (long long)j,
                              (double)h[j], (long long)th, (double)sp[j]);
                    spikes += fire;
                }
            }
    }
    cr_assert_gt(spikes, 0, "%s: no spikes (the comparison would prove nothing)", fx->ref);
    for (int th = 1; th <= 3; th++) {
        qkf_set_threads(th);
        cap_init(&ce, g, S);
        qkf_sched *e = qkf_sched_create_int(&fx->q, B, tb ? QKF_SCHED_TB_COMPAT : 0);
        cr_assert_not_null(e, "%s", qkf_last_error());
        cr_assert_eq(qkf_sched_set_trace(e, &ce.sink), 0, "%s", qkf_last_error());
        for (int pass = 0; pass < 2; pass++) {
            cr_assert_eq(qkf_sched_forward(e, fx->x, B, lf, NULL), 0, "%s", qkf_last_error());
            cr_assert_eq(memcmp(qkf_sched_logits_int(e), ld + (int64_t)pass * B * K,
                                (size_t)B * K * sizeof(int64_t)),
                         0, "%s (%d threads): traced integer logits differ", fx->ref, th);
        }
        qkf_sched_free(e);
        static const char *on[] = {"v", "h", "input", "spikes"};
        for (int l = 0; l < g->n_lif; l++) {
            int64_t n = 4 * (int64_t)S * cd.T * qkf_graph_lif_neurons(g, l), diff = 0, first = -1,
                    unset = 0;
            for (int64_t i = 0; i < n; i++) {
                unset += isnan(ce.d[l][i]) || isnan(cd.d[l][i]);
                if (memcmp(&ce.d[l][i], &cd.d[l][i], sizeof(float)) && diff++ == 0)
                    first = i;
            }
            int64_t per = (int64_t)S * cd.T * qkf_graph_lif_neurons(g, l);
            cr_assert_eq(unset, 0, "%s: %s: %lld values not written", fx->ref,
                         g->ops[g->lif_ops[l]].name, (long long)unset);
            cr_assert_eq(diff, 0,
                         "%s (%d threads): %s: %lld values differ, first %s [%lld]: event %g, "
                         "dense %g",
                         fx->ref, th, g->ops[g->lif_ops[l]].name, (long long)diff,
                         first >= 0 ? on[first / per] : "-", (long long)(first % per),
                         first >= 0 ? (double)ce.d[l][first] : 0.0,
                         first >= 0 ? (double)cd.d[l][first] : 0.0);
        }
        cap_free(&ce);
    }
    qkf_set_threads(2);
    cap_free(&cd);
    qkf_free(ld);
    qkf_free(lf);
}

static void trace_run(const char *model, const char *prof, int tb)
{
    fixture fx;
    load(&fx, model, prof, NULL);
    trace_case(&fx, tb);
    unload(&fx);
}

Test(event_int, trace_cifar_loihi) { trace_run("cifar_small", "loihi", 0); }
Test(event_int, trace_cifar_speck) { trace_run("cifar_small", "speck", 0); }
Test(event_int, trace_cifar_gt_saturate) { trace_run("cifar_small", "gtsat", 0); }
Test(event_int, trace_cifar_qkca_loihi) { trace_run("cifar_qkca", "loihi", 0); }
Test(event_int, trace_imagenet_wide16) { trace_run("imagenet_small", "wide16", 0); }
Test(event_int, trace_dvs128_speck) { trace_run("dvs128_small", "speck", 0); }
Test(event_int, trace_cifar10dvs_gt_saturate) { trace_run("cifar10dvs_small", "gtsat", 0); }
Test(event_int, trace_cifar_tb_loihi) { trace_run("cifar_tb", "loihi", 1); }

/* Block-major convs (int16 blocks, int32 pooled blocks) traced: they then run through the shared
 * currents, one sample at a time. */
Test(event_int, trace_wide_blocks_loihi)
{
    fixture fx;
    wide_load(&fx, "loihi");
    trace_case(&fx, 0);
    unload(&fx);
}
