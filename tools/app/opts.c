/* Options by name (tools/app/opts.h): the one parser behind the command line, training config
 * files and the public API's option tables, so every way in gives the same messages. */
#include <stdlib.h>
#include <string.h>

#include "../../kernels/base.h"
#include "../../sim/dense.h"
#include "opts.h"

int qkf_arg(qkf_args *a, const char *name, const char **val)
{
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(s, name, n) != 0)
        return 0;
    if (s[n] == '=') {
        *val = s + n + 1;
        return 1;
    }
    if (s[n] != 0)
        return 0;
    if (a->i + 1 >= a->argc) {
        qkf_set_error("option %s needs a value", name);
        return -1;
    }
    *val = a->argv[++a->i];
    return 1;
}

int qkf_flag(qkf_args *a, const char *name) { return strcmp(a->argv[a->i], name) == 0; }

int qkf_arg_flag(qkf_args *a, const char *name, int *out)
{
    if (!qkf_flag(a, name))
        return 0;
    *out = 1;
    return 1;
}

int qkf_arg_positional(qkf_args *a, const char **val)
{
    if (a->argv[a->i][0] == '-' || *val)
        return qkf_set_error("unexpected argument '%s' (qkf %s --help)", a->argv[a->i], a->cmd);
    *val = a->argv[a->i];
    return 0;
}

int qkf_arg_int(qkf_args *a, const char *name, long lo, long hi, long *out)
{
    const char *v;
    int r = qkf_arg(a, name, &v);
    if (r <= 0)
        return r;
    return qkf_parse_int(name, v, lo, hi, out) ? -1 : 1;
}

int qkf_parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return qkf_set_error("option %s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi);
    *out = v;
    return 0;
}

int qkf_arg_conv(qkf_args *a, int *conv)
{
    const char *v;
    int r = qkf_arg(a, "--conv", &v);
    if (r <= 0)
        return r;
    return qkf_dense_conv_flags(v, conv) ? -1 : 1;
}

const char *const qkf_conv_help =
    "  --conv ALGO      the dense engine's 3x3 convolutions: winograd4 (Winograd\n"
    "                   F(4x4,3x3), the fastest; default, or $QKF_CONV), winograd2\n"
    "                   (F(2x2,3x3): exact wherever direct is, e.g. power-of-two\n"
    "                   weights), direct (im2col + sgemm, plain summation order)\n";

int qkf_parse_float(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi))
        return qkf_set_error("option %s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    *out = v;
    return 0;
}

int qkf_arg_config(qkf_args *a, qkf_config *cfg)
{
    static const struct {
        const char *opt;
        size_t off;
        long lo, hi;
    } ints[] = {
        {"--img-size", offsetof(qkf_config, img_size), 1, 4096},
        {"--in-channels", offsetof(qkf_config, in_channels), 1, 64},
        {"--num-classes", offsetof(qkf_config, num_classes), 1, 100000},
        {"--embed-dims", offsetof(qkf_config, embed_dims), 1, 65536},
        {"--num-heads", offsetof(qkf_config, num_heads), 1, 4096},
        {"--depths", offsetof(qkf_config, depths), 1, 1000},
        {"--T", offsetof(qkf_config, T), 1, 1024},
    };
    const char *v;
    int r;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if ((r = qkf_arg(a, ints[i].opt, &v)) != 0) {
            long x = 0;
            if (r < 0 || qkf_parse_int(ints[i].opt, v, ints[i].lo, ints[i].hi, &x))
                return -1;
            *(int *)((char *)cfg + ints[i].off) = (int)x;
            return 1;
        }
    }
    if ((r = qkf_arg(a, "--mlp-ratio", &v)) != 0) {
        double x = 0;
        if (r < 0 || qkf_parse_float("--mlp-ratio", v, 1e-3, 64, &x))
            return -1;
        cfg->mlp_ratio = (float)x;
        return 1;
    }
    if ((r = qkf_arg(a, "--qk-attn", &v)) != 0) {
        if (r < 0)
            return -1;
        if (strcmp(v, "token") == 0)
            cfg->qk_attn = QKF_QK_TOKEN;
        else if (strcmp(v, "channel") == 0)
            cfg->qk_attn = QKF_QK_CHANNEL;
        else
            return qkf_set_error("option --qk-attn: '%s' is not token or channel", v);
        return 1;
    }
    return 0;
}

void qkf_trace_opts_init(qkf_trace_opts *t)
{
    memset(t, 0, sizeof *t);
    t->buffer_mb = QKF_TRACE_BUFFER_MB;
}

qkf_trace *qkf_trace_opts_open(const qkf_trace_opts *t, qkf_trace_spec *ts, const qkf_graph *g,
                               const char *weights, const char *engine, int argc, char **argv)
{
    ts->buffer_bytes = (size_t)t->buffer_mb << 20;
    ts->force = t->force;
    ts->no_compress = t->raw;
    for (int i = 0; i < t->n_records; i++)
        if (qkf_trace_parse_record(ts, t->records[i], g))
            return NULL;
    return qkf_trace_open(t->path, ts, g, weights, engine, argc, argv);
}
