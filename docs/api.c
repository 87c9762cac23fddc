/* A complete program on qkf's public API (include/qkf/qkf.h): load a checkpoint, run a batch in
 * both engines, compare their logits, print spike counts and the event engine's work, run the
 * same batch on a chip's integer arithmetic (the bundled profile "loihi", as qkf infer --hw
 * does), quantise the model for it (as qkf quantize does), and save the checkpoint again. Build
 * it against an installed qkf:
 *
 *   cc -std=c11 -O2 docs/api.c -o api $(pkg-config --cflags --libs qkf)
 *   ./api tests/fixtures/cifar_small.weights.h5 /tmp/copy.h5
 *
 * tools/test.sh builds and runs it against `cmake --install` into a temporary prefix. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qkf/qkf.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "api: %s: %s (%s)\n", what, qkf_error_message(), qkf_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: api CHECKPOINT.h5 COPY.h5\n");
        return 2;
    }
    qkf_net_t *net = NULL;
    int rc = qkf_net_load(argv[1], &net);
    if (rc)
        return fail(argv[1], rc);
    qkf_net_config_t c;
    qkf_net_config(net, &c);
    printf("qkf %s: %s variant, %d x %d x %d input, %d classes, T = %d, %lld parameters, %d LIF "
           "layers\n",
           qkf_version_string(), c.variant, c.in_channels, c.img_size, c.img_size, c.num_classes,
           c.T, (long long)qkf_net_num_parameters(net), qkf_net_num_layers(net));

    /* four samples of a deterministic pattern in [-1, 1], [B][C][H][W] (frames for dvs models:
     * event counts, [B][T][C][H][W]) */
    int frames = !strcmp(c.variant, "dvs128") || !strcmp(c.variant, "cifar10dvs");
    int64_t B = 4, shape[5];
    int ndim = 0;
    shape[ndim++] = B;
    if (frames)
        shape[ndim++] = c.T;
    shape[ndim++] = c.in_channels, shape[ndim++] = c.img_size, shape[ndim++] = c.img_size;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = frames ? (float)((i * 7919) % 5 == 0) : (float)sin(0.37 * (double)i);

    qkf_run_opts_t o;
    qkf_run_opts_init(&o);
    o.batch = 2;
    qkf_result_t *rd = NULL, *re = NULL;
    o.mode = QKF_MODE_DENSE;
    if ((rc = qkf_net_run(net, x, shape, ndim, &o, &rd)))
        return fail("dense run", rc);
    o.mode = QKF_MODE_EVENT;
    if ((rc = qkf_net_run(net, x, shape, ndim, &o, &re)))
        return fail("event run", rc);

    const float *ld = qkf_result_logits(rd), *le = qkf_result_logits(re);
    double diff = 0.0;
    for (int64_t b = 0; b < B; b++) {
        int best = 0;
        for (int k = 0; k < c.num_classes; k++) {
            double d = fabs((double)ld[b * c.num_classes + k] - (double)le[b * c.num_classes + k]);
            diff = d > diff ? d : diff;
            if (ld[b * c.num_classes + k] > ld[b * c.num_classes + best])
                best = k;
        }
        printf("sample %lld: class %d\n", (long long)b, best);
    }
    printf("largest logit difference between the engines: %.3g\n", diff);

    const int64_t *counts = qkf_result_spike_counts(re);
    for (int l = 0; l < qkf_net_num_layers(net) && l < 4; l++)
        printf("%-28s %8lld spikes, rate %.4f\n", qkf_net_layer_name(net, l), (long long)counts[l],
               qkf_result_firing_rate(re, l));
    qkf_stats_t s;
    qkf_result_stats(re, &s);
    printf("event engine: %lld accumulates, %lld multiply-accumulates, %.3g J over %d nodes\n",
           (long long)s.accumulates, (long long)s.macs, s.energy_j, s.n_nodes);

    /* on a chip: the profile's integer arithmetic, in the integer event engine */
    qkf_profile_t *chip = NULL;
    if ((rc = qkf_profile_load("loihi", &chip)))
        return fail("loihi", rc);
    printf("profile %s: %s\n", qkf_profile_name(chip), qkf_profile_description(chip));
    for (int i = 0; i < qkf_profile_num_fields(chip); i++) {
        double v;
        const char *name = qkf_profile_field(chip, i, &v);
        if (!strcmp(name, "arith.weight_bits") || !strcmp(name, "arith.membrane_bits"))
            printf("  %s = %g\n", name, v);
    }
    qkf_result_t *rh = NULL, *rq = NULL;
    o.mode = QKF_MODE_EVENT;
    o.profile = chip; /* or o.hw = "loihi" (a name or a .yaml file) */
    if ((rc = qkf_net_run(net, x, shape, ndim, &o, &rh)))
        return fail("run on loihi", rc);
    const int64_t *li = qkf_result_logits_int(rh);
    printf("loihi, sample 0: integer logits");
    for (int k = 0; k < c.num_classes; k++)
        printf(" %lld", (long long)li[k]);
    printf("\n");

    /* quantised once (qkf_net_save would write qkf quantize's file): the same integers */
    qkf_net_t *q = NULL;
    if ((rc = qkf_net_quantize(net, chip, NULL, &q)))
        return fail("quantize", rc);
    o.profile = NULL; /* an integer network runs on its own arithmetic */
    o.mode = QKF_MODE_DENSE;
    if ((rc = qkf_net_run(q, x, shape, ndim, &o, &rq)))
        return fail("integer run", rc);
    int same = !memcmp(li, qkf_result_logits_int(rq), (size_t)B * c.num_classes * sizeof *li);
    printf("quantised for %s: dense integer engine %s the event engine\n",
           qkf_net_profile_name(q), same ? "agrees with" : "DIFFERS from");
    if (!same)
        return 1;

    if ((rc = qkf_net_save(net, argv[2])))
        return fail(argv[2], rc);
    qkf_net_t *copy = NULL;
    if ((rc = qkf_net_load(argv[2], &copy)))
        return fail(argv[2], rc);
    printf("saved and reloaded %s: %lld parameters\n", argv[2],
           (long long)qkf_net_num_parameters(copy));

    /* errors are codes plus one line */
    qkf_net_t *none = NULL;
    rc = qkf_net_load("/nonexistent.h5", &none);
    printf("loading a missing file: %s: %s\n", qkf_strerror(rc), qkf_error_message());

    qkf_result_free(rd);
    qkf_result_free(re);
    qkf_result_free(rh);
    qkf_result_free(rq);
    qkf_net_free(q);
    qkf_profile_free(chip);
    qkf_net_free(copy);
    qkf_net_free(net);
    free(x);
    return rc == QKF_EFILE && none == NULL ? 0 : 1;
}
