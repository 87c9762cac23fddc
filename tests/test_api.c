/* The public C API (include/qkf/qkf.h) as a program uses it: networks, runs in both engines
 * against the reference fixtures, results, statistics, traces, errors as codes and messages,
 * evaluation and training jobs with callbacks. (The Python tests go through the same API; these
 * run under ASan too.) */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../include/qkf/qkf.h"
#include "util.h"

static char tdir[64];
static void setup(void) { tmpdir_make(tdir, sizeof tdir, "api"); }
static void teardown(void) { tmpdir_remove(tdir); }

typedef struct {
    float *x, *logits;
    int64_t shape[5];
    int ndim;
} ref_input;

static void read_ref(const char *name, ref_input *r)
{
    char path[512];
    int64_t ls[5];
    int nd;
    snprintf(path, sizeof path, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    cr_assert_eq(qkf_h5_read_f32(path, "input", &r->x, &r->ndim, r->shape), 0, "%s",
                 qkf_last_error());
    cr_assert_eq(qkf_h5_read_f32(path, "logits", &r->logits, &nd, ls), 0);
}

static qkf_net_t *load_fixture(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    qkf_net_t *n = NULL;
    cr_assert_eq(qkf_net_load(path, &n), QKF_OK, "%s", qkf_error_message());
    return n;
}

/* Both engines reproduce the PyTorch reference's logits, agree on every layer's spike count, and
 * the event engine's statistics add up. */
Test(api, run_both_engines, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *names[] = {"cifar_small", "dvs128_small"};
    for (int f = 0; f < 2; f++) {
        qkf_net_t *n = load_fixture(names[f]);
        ref_input r;
        read_ref(names[f], &r);
        qkf_net_config_t c;
        qkf_net_config(n, &c);
        int K = c.num_classes, L = qkf_net_num_layers(n);
        cr_assert_gt(L, 0);
        cr_expect_eq(strncmp(qkf_net_layer_name(n, 0), "patch_embed1.", 13), 0);
        cr_expect_null(qkf_net_layer_name(n, L));
        qkf_run_opts_t o;
        qkf_run_opts_init(&o);
        qkf_result_t *res[2];
        for (int mode = 0; mode < 2; mode++) {
            o.mode = mode;
            cr_assert_eq(qkf_net_run(n, r.x, r.shape, r.ndim, &o, &res[mode]), QKF_OK, "%s",
                         qkf_error_message());
            int64_t worst;
            /* summation order differs from PyTorch's (~1e-6); the fixtures have no flips */
            double e = max_abs_err(qkf_result_logits(res[mode]), r.logits, r.shape[0] * K,
                                   &worst);
            cr_expect_lt(e, 1e-5, "%s mode %d: logits differ by %g at %lld", names[f], mode, e,
                         (long long)worst);
            cr_expect_eq(qkf_result_samples(res[mode]), r.shape[0]);
        }
        int64_t spikes = 0;
        for (int l = 0; l < L; l++) {
            int64_t a = qkf_result_spike_counts(res[0])[l], b = qkf_result_spike_counts(res[1])[l];
            cr_expect_eq(a, b, "%s: layer %s", names[f], qkf_net_layer_name(n, l));
            double rate = (double)a / ((double)qkf_net_layer_neurons(n, l) * c.T * r.shape[0]);
            cr_expect_eq(qkf_result_firing_rate(res[0], l), rate);
            spikes += a;
        }
        cr_expect_gt(spikes, 0);
        qkf_stats_t s, d;
        qkf_result_stats(res[1], &s);
        qkf_result_stats(res[0], &d);
        cr_expect_eq(d.has_stats, 0); /* dense without opts.stats */
        cr_assert_eq(s.has_stats, 1);
        int64_t acs = 0, macs = 0;
        for (int i = 0; i < s.n_nodes; i++) {
            qkf_node_stats_t ns;
            cr_assert_eq(qkf_result_node(res[1], i, &ns), QKF_OK);
            acs += ns.accumulates, macs += ns.macs;
            if (ns.layer >= 0)
                cr_expect_eq(ns.out_spikes, qkf_result_spike_counts(res[1])[ns.layer], "%s",
                             ns.name);
        }
        cr_expect_eq(acs, s.accumulates);
        cr_expect_eq(macs, s.macs);
        cr_expect_gt(s.accumulates, 0);
        cr_expect_float_eq(s.energy_j, (0.9 * (double)s.accumulates + 4.6 * (double)s.macs) * 1e-12,
                           1e-18);
        qkf_node_stats_t ns;
        cr_expect_eq(qkf_result_node(res[1], s.n_nodes, &ns), QKF_EINVAL);
        qkf_result_free(res[0]);
        qkf_result_free(res[1]);
        qkf_free(r.x);
        qkf_free(r.logits);
        qkf_net_free(n);
    }
}

/* Save and reload; errors are codes plus one line naming the problem; nothing left behind. */
Test(api, errors_and_save, .init = setup, .fini = teardown, .timeout = 60)
{
    qkf_net_t *n = NULL;
    cr_expect_eq(qkf_net_load("/nonexistent/x.h5", &n), QKF_EFILE);
    cr_expect_null(n);
    cr_expect_not_null(strstr(qkf_error_message(), "/nonexistent/x.h5"));
    cr_expect_str_eq(qkf_strerror(QKF_EFILE), "file error");
    cr_expect_str_eq(qkf_strerror(12345), "unknown error");
    n = load_fixture("cifar_small");
    ref_input r;
    read_ref("cifar_small", &r);
    qkf_result_t *res = NULL;
    qkf_run_opts_t o;
    qkf_run_opts_init(&o);
    int64_t bad[4] = {r.shape[0], 2, r.shape[2], r.shape[3]};
    cr_expect_eq(qkf_net_run(n, r.x, bad, 4, &o, &res), QKF_EINVAL);
    cr_expect_not_null(strstr(qkf_error_message(), "channels"), "%s", qkf_error_message());
    cr_expect_null(res);
    cr_expect_eq(qkf_net_run(n, r.x, r.shape, 3, &o, &res), QKF_EINVAL);
    o.conv = "fft";
    cr_expect_eq(qkf_net_run(n, r.x, r.shape, 4, &o, &res), QKF_EINVAL);
    o.conv = NULL, o.mode = 7;
    cr_expect_eq(qkf_net_run(n, r.x, r.shape, 4, &o, &res), QKF_EINVAL);
    o.mode = QKF_MODE_DENSE;
    const char *rec[] = {"nosuchlayer:v"};
    char tpath[256];
    snprintf(tpath, sizeof tpath, "%s/t.h5", tdir);
    o.trace = tpath, o.record = rec, o.n_record = 1;
    cr_expect_eq(qkf_net_run(n, r.x, r.shape, 4, &o, &res), QKF_EFILE);
    cr_expect_neq(access(tpath, F_OK), 0, "a failed trace left %s behind", tpath);
    rec[0] = "stage1.*:v";
    cr_assert_eq(qkf_net_run(n, r.x, r.shape, 4, &o, &res), QKF_OK, "%s", qkf_error_message());
    qkf_result_free(res);
    cr_expect_eq(qkf_h5_has(tpath, "nodes/stage1.0.tssa.q_lif/observables/v/data"), 1);
    cr_expect_eq(qkf_net_run(n, r.x, r.shape, 4, &o, &res), QKF_EFILE); /* exists */
    char copy[256];
    snprintf(copy, sizeof copy, "%s/copy.h5", tdir);
    cr_assert_eq(qkf_net_save(n, copy), QKF_OK, "%s", qkf_error_message());
    qkf_net_t *m = NULL;
    cr_assert_eq(qkf_net_load(copy, &m), QKF_OK);
    cr_expect_eq(qkf_net_num_parameters(m), qkf_net_num_parameters(n));
    cr_expect_eq(qkf_net_num_parameters(m), 425494); /* qkf info of the fixture */
    qkf_net_free(m);
    qkf_net_free(n);
    qkf_net_free(NULL);
    qkf_result_free(NULL);
    qkf_free(r.x);
    qkf_free(r.logits);
}

typedef struct {
    int steps, epochs, stop_at;
    double last_loss;
} seen;

static int on_event(void *data, const qkf_train_event_t *ev)
{
    seen *s = data;
    if (ev->kind == QKF_TRAIN_STEP) {
        s->steps++;
        s->last_loss = ev->loss;
        cr_expect_eq(ev->step, s->steps);
    } else if (ev->kind == QKF_TRAIN_EPOCH) {
        s->epochs++;
        cr_expect(ev->test_acc >= 0.0 && ev->test_acc <= 1.0);
    }
    return s->stop_at && s->steps == s->stop_at;
}

/* A training job by option names: bad names and values are refused with the command's messages;
 * a run reports every step and epoch; a callback stops it with the checkpoint saved; the saved
 * network evaluates on the dataset. */
Test(api, training_job, .init = setup, .fini = teardown, .timeout = 120)
{
    char data[256], spec[300], out[256];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    snprintf(spec, sizeof spec, "h5:%s", data);
    snprintf(out, sizeof out, "%s/m.h5", tdir);
    write_quadrant_dataset(data, 32, 3);
    qkf_training_t *t = NULL;
    cr_assert_eq(qkf_training_new(&t), QKF_OK);
    cr_expect_eq(qkf_training_set(t, "no-such-option", "1"), QKF_EINVAL);
    cr_expect_eq(qkf_training_set(t, "epochs", "many"), QKF_EINVAL);
    cr_expect_str_eq(qkf_error_message(), "option --epochs: 'many' is not an integer in 1..100000");
    cr_expect_eq(qkf_training_set(t, "flip", "1"), QKF_EINVAL); /* a flag takes no value */
    const char *opts[][2] = {{"img-size", "8"},   {"in-channels", "1"}, {"num-classes", "4"},
                             {"embed-dims", "16"}, {"num-heads", "2"},  {"mlp-ratio", "2"},
                             {"depths", "3"},     {"T", "2"},          {"batch", "8"},
                             {"epochs", "2"},     {"threads", "1"},    {"eval-batch", "16"},
                             {"data", spec},      {"out", out},        {"quiet", NULL}};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        cr_assert_eq(qkf_training_set(t, opts[i][0], opts[i][1]), QKF_OK, "%s: %s", opts[i][0],
                     qkf_error_message());
    seen s = {0, 0, 0, 0.0};
    cr_assert_eq(qkf_training_run(t, on_event, &s), QKF_OK, "%s", qkf_error_message());
    cr_expect_eq(s.steps, 8); /* 32 / 8 per epoch, 2 epochs */
    cr_expect_eq(s.epochs, 2);
    cr_expect(isfinite(s.last_loss));
    qkf_net_t *n = NULL;
    cr_assert_eq(qkf_net_load(out, &n), QKF_OK, "%s", qkf_error_message());
    double acc = -1.0;
    int64_t cnt = 0;
    cr_assert_eq(qkf_net_evaluate(n, spec, 0, NULL, &acc, &cnt), QKF_OK, "%s",
                 qkf_error_message());
    cr_expect_eq(cnt, 32);
    cr_expect(acc >= 0.0 && acc <= 1.0);
    qkf_net_free(n);
    /* stopped by the callback: saved at that step */
    cr_assert_eq(qkf_training_set(t, "out", out), QKF_OK);
    seen st = {0, 0, 3, 0.0};
    cr_expect_eq(qkf_training_run(t, on_event, &st), QKF_ESTOPPED);
    cr_expect_eq(st.steps, 3);
    int64_t *step = NULL, sh[5];
    int nd;
    cr_assert_eq(qkf_h5_read_i64(out, "optim/step", &step, &nd, sh), 0, "%s", qkf_last_error());
    cr_expect_eq(step[0], 3);
    qkf_free(step);
    qkf_training_free(t);
}

/* Chip profiles: the bundled list, fields by name, errors naming the profile. */
Test(api, profiles)
{
    int n = qkf_profile_count(), have_loihi = 0;
    cr_assert_geq(n, 5);
    for (int i = 0; i < n; i++)
        have_loihi |= !strcmp(qkf_profile_bundled(i), "loihi");
    cr_expect(have_loihi);
    cr_expect_null(qkf_profile_bundled(n));
    cr_expect_null(qkf_profile_bundled(-1));
    qkf_profile_t *p = NULL;
    cr_assert_eq(qkf_profile_load("loihi", &p), QKF_OK, "%s", qkf_error_message());
    cr_expect_str_eq(qkf_profile_name(p), "loihi");
    cr_expect_str_eq(qkf_profile_path(p), "");
    cr_expect_str_eq(qkf_profile_cost_basis(p), "calibrated");
    cr_expect_not_null(strstr(qkf_profile_description(p), "Loihi"));
    int found = 0;
    for (int i = 0; i < qkf_profile_num_fields(p); i++) {
        double v = -1;
        const char *name = qkf_profile_field(p, i, &v);
        cr_assert_not_null(name);
        if (!strcmp(name, "arith.weight_bits")) {
            found++;
            cr_expect_eq(v, 8.0);
        }
        if (!strcmp(name, "arith.membrane_bits")) {
            found++;
            cr_expect_eq(v, 24.0);
        }
        if (!strcmp(name, "mesh.cores")) {
            found++;
            cr_expect_eq(v, 128.0); /* qkf hw show loihi: 128 cores */
        }
        if (!strcmp(name, "cost.e_process_spike")) {
            found++;
            cr_expect_float_eq(v, 24e-12, 1e-18); /* 24 pJ per synapse */
        }
    }
    cr_expect_eq(found, 4);
    double v;
    cr_expect_null(qkf_profile_field(p, qkf_profile_num_fields(p), &v));
    qkf_profile_free(p);
    p = NULL;
    cr_expect_eq(qkf_profile_load("nosuchchip", &p), QKF_EFILE);
    cr_expect_null(p);
    cr_expect_not_null(strstr(qkf_error_message(), "nosuchchip"), "%s", qkf_error_message());
    cr_expect_eq(qkf_profile_load("/nonexistent/chip.yaml", &p), QKF_EFILE);
    cr_expect_not_null(strstr(qkf_error_message(), "/nonexistent/chip.yaml"));
    qkf_profile_free(NULL);
}

/* A run with a profile is qkf infer --hw: the same integer logits (and the PyTorch integer
 * reference's: cifar_small_int_loihi), the same spike counts in the dense integer and the
 * integer event engine; a quantised network saved and reloaded runs the same bits; errors. */
Test(api, profile_runs, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *fx = QKF_FIXTURE_DIR "/cifar_small_int_loihi.h5";
    float *x;
    int64_t *ref, sh[5], lsh[5];
    int nd, lnd;
    cr_assert_eq(qkf_h5_read_f32(fx, "input", &x, &nd, sh), 0);
    cr_assert_eq(qkf_h5_read_i64(fx, "logits_int", &ref, &lnd, lsh), 0);
    int64_t nl = lsh[0] * lsh[1];
    qkf_net_t *n = load_fixture("cifar_small");
    cr_expect_eq(qkf_net_is_quantized(n), 0);
    cr_expect_null(qkf_net_profile_name(n));
    qkf_run_opts_t o;
    qkf_run_opts_init(&o);
    o.hw = "loihi";
    o.batch = 1;
    qkf_result_t *res[3] = {NULL, NULL, NULL};
    for (int mode = 0; mode < 2; mode++) {
        o.mode = mode;
        cr_assert_eq(qkf_net_run(n, x, sh, nd, &o, &res[mode]), QKF_OK, "%s",
                     qkf_error_message());
        const int64_t *li = qkf_result_logits_int(res[mode]);
        cr_assert_not_null(li);
        for (int64_t i = 0; i < nl; i++)
            cr_assert_eq(li[i], ref[i], "mode %d: integer logit %lld", mode, (long long)i);
    }
    for (int l = 0; l < qkf_net_num_layers(n); l++)
        cr_expect_eq(qkf_result_spike_counts(res[0])[l], qkf_result_spike_counts(res[1])[l],
                     "%s", qkf_net_layer_name(n, l));
    for (int64_t i = 0; i < nl; i++)
        cr_expect_eq(qkf_result_logits(res[0])[i], qkf_result_logits(res[1])[i]);
    qkf_stats_t s;
    qkf_result_stats(res[0], &s);
    cr_expect_eq(s.has_stats, 0); /* the dense integer engine counts no work */
    qkf_result_stats(res[1], &s);
    cr_expect_eq(s.has_stats, 1);
    cr_expect_gt(s.accumulates, 0);
    /* a float run has no integer logits */
    qkf_run_opts_t f;
    qkf_run_opts_init(&f);
    cr_assert_eq(qkf_net_run(n, x, sh, nd, &f, &res[2]), QKF_OK);
    cr_expect_null(qkf_result_logits_int(res[2]));
    qkf_result_free(res[2]);

    /* the same as the command: qkf infer --hw loihi (dense) writes these logits and counts */
    char y[256], cmd[1024];
    snprintf(y, sizeof y, "%s/y.h5", tdir);
    snprintf(cmd, sizeof cmd, "%s infer --weights %s/cifar_small.weights.h5 --hw loihi --input %s "
             "--output %s --quiet", QKF_BINARY, QKF_FIXTURE_DIR, fx, y);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    float *cl;
    int64_t csh[5];
    int cnd;
    cr_assert_eq(qkf_h5_read_f32(y, "logits", &cl, &cnd, csh), 0);
    cr_expect_eq(memcmp(cl, qkf_result_logits(res[0]), (size_t)nl * sizeof(float)), 0);
    qkf_free(cl);

    /* quantise explicitly, save (a qkf quantize file), reload: the same bits */
    qkf_profile_t *p = NULL;
    cr_assert_eq(qkf_profile_load("loihi", &p), QKF_OK);
    qkf_net_t *q = NULL, *q2 = NULL;
    cr_assert_eq(qkf_net_quantize(n, p, NULL, &q), QKF_OK, "%s", qkf_error_message());
    cr_expect_eq(qkf_net_is_quantized(q), 1);
    cr_expect_str_eq(qkf_net_profile_name(q), "loihi");
    cr_expect_eq(qkf_net_num_parameters(q), qkf_net_num_parameters(n));
    cr_expect_eq(qkf_net_num_layers(q), qkf_net_num_layers(n));
    char qp[256];
    snprintf(qp, sizeof qp, "%s/q.h5", tdir);
    cr_assert_eq(qkf_net_save(q, qp), QKF_OK, "%s", qkf_error_message());
    cr_assert_eq(qkf_net_load(qp, &q2), QKF_OK, "%s", qkf_error_message());
    cr_expect_eq(qkf_net_is_quantized(q2), 1);
    cr_expect_eq(qkf_net_num_parameters(q2), qkf_net_num_parameters(n));
    qkf_net_config_t c1, c2;
    qkf_net_config(n, &c1);
    qkf_net_config(q2, &c2);
    cr_expect_eq(c1.embed_dims, c2.embed_dims);
    cr_expect_eq(c1.T, c2.T);
    qkf_run_opts_init(&o); /* an integer network needs no profile; event mode */
    o.mode = QKF_MODE_EVENT;
    cr_assert_eq(qkf_net_run(q2, x, sh, nd, &o, &res[2]), QKF_OK, "%s", qkf_error_message());
    cr_expect_eq(memcmp(qkf_result_logits_int(res[2]), ref, (size_t)nl * sizeof(int64_t)), 0);
    for (int l = 0; l < qkf_net_num_layers(n); l++)
        cr_expect_eq(qkf_result_spike_counts(res[2])[l], qkf_result_spike_counts(res[1])[l]);
    qkf_result_free(res[2]);
    o.profile = p; /* its own profile is fine */
    cr_assert_eq(qkf_net_run(q2, x, sh, nd, &o, &res[2]), QKF_OK, "%s", qkf_error_message());
    qkf_result_free(res[2]);

    /* errors: one line each, no result */
    res[2] = NULL;
    o.profile = NULL, o.hw = "wide16"; /* another arithmetic than the network's */
    cr_expect_eq(qkf_net_run(q2, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    cr_expect_not_null(strstr(qkf_error_message(), "quantised for 'loihi'"), "%s",
                       qkf_error_message());
    o.hw = "nosuchchip";
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EFILE);
    o.hw = "ideal-45nm";
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    cr_expect_not_null(strstr(qkf_error_message(), "float machine"), "%s", qkf_error_message());
    o.hw = "truenorth"; /* a linear leak: QKFormer's LIF is not its neuron */
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    cr_expect_not_null(strstr(qkf_error_message(), "leak"), "%s", qkf_error_message());
    o.hw = "loihi", o.mode = QKF_MODE_DENSE, o.tb_compat = 1;
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    o.tb_compat = 0;
    int64_t big[4] = {sh[0], sh[1], 32, 32}; /* the integer model has its checkpoint's size */
    float *xb = qkf_calloc((size_t)(sh[0] * sh[1] * 32 * 32), sizeof(float));
    cr_expect_eq(qkf_net_run(n, xb, big, 4, &o, &res[2]), QKF_EINVAL);
    cr_expect_not_null(strstr(qkf_error_message(), "own size"), "%s", qkf_error_message());
    qkf_free(xb);
    o.stats = 1; /* the dense integer engine counts nothing */
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    o.stats = 0, o.conv = "direct";
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    o.conv = NULL;
    o.trace = qp;
    cr_expect_eq(qkf_net_run(n, x, sh, nd, &o, &res[2]), QKF_EINVAL);
    cr_expect_null(res[2]);
    qkf_net_t *qq = NULL;
    cr_expect_eq(qkf_net_quantize(q2, p, NULL, &qq), QKF_EINVAL); /* already integer */
    cr_expect_null(qq);
    cr_expect_eq(qkf_net_evaluate(q2, "fashion-mnist", 10, NULL, NULL, NULL), QKF_EINVAL);
    cr_expect_not_null(strstr(qkf_error_message(), "the model takes 3 x 16 x 16"), "%s",
                       qkf_error_message()); /* evaluated as qkf eval --hw: it checks the fit */
    qkf_quant_opts_t qo;
    qkf_quant_opts_init(&qo);
    qo.headroom = 0.5;
    cr_expect_eq(qkf_net_quantize(n, p, &qo, &qq), QKF_EINVAL);
    qkf_profile_free(p);
    qkf_net_free(q);
    qkf_net_free(q2);
    qkf_net_free(n);
    qkf_result_free(res[0]);
    qkf_result_free(res[1]);
    qkf_free(x);
    qkf_free(ref);
}
