/* Options by name: a tiny long-option parser ("--name value", "--name=value" and flags) and
 * the checked number parsers behind it. The command line, training config files
 * (tools/app/trainer.h) and the public API (include/qkf/qkf.h) share it, so every way in reports
 * a bad value with the same message ("option --epochs: 'x' is not an integer in 1..100000"). */
#ifndef QKF_OPTS_H
#define QKF_OPTS_H

#include "../../io/trace.h"
#include "../../models/qkformer.h"

typedef struct {
    int argc;
    char **argv;
    int i;
    const char *cmd;
} qkf_args;

/* Returns 1 and sets *val if argv[i] is --name (consuming its value), 0 otherwise, -1 on a
 * missing value (error recorded). */
int qkf_arg(qkf_args *a, const char *name, const char **val);
int qkf_flag(qkf_args *a, const char *name);
int qkf_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int qkf_parse_float(const char *opt, const char *s, double lo, double hi, double *out);
/* --name N with N an integer in lo..hi: 1 (and *out set) if consumed, 0 if not ours, -1 on
 * error. qkf_arg_flag: 1 (and *out = 1) if argv[i] is the flag name, 0 otherwise. Both chain
 * with qkf_arg and each other into one test for a command's options. */
int qkf_arg_int(qkf_args *a, const char *name, long lo, long hi, long *out);
int qkf_arg_flag(qkf_args *a, const char *name, int *out);
/* The command's one positional argument (a file): sets *val, or records "unexpected argument
 * 'X' (qkf CMD --help)" and returns -1 if argv[i] is an unknown option or a second one. */
int qkf_arg_positional(qkf_args *a, const char **val);
/* --conv winograd4|winograd2|direct -> dense-engine flags (QKF_DENSE_WINO4, ...): 1 if
 * consumed, 0 if not ours, -1 on error; qkf_conv_help: its help lines. */
int qkf_arg_conv(qkf_args *a, int *conv);
extern const char *const qkf_conv_help;
/* Config overrides shared by info/init/train: --img-size --in-channels --num-classes
 * --embed-dims --num-heads --mlp-ratio --depths --T --qk-attn. Returns 1 if consumed, 0 if not,
 * -1 error. */
int qkf_arg_config(qkf_args *a, qkf_config *cfg);

/* What to trace (--trace, --record, ... of qkf infer, sim and train; the public API's run
 * options): a file, record specs (qkf_trace_parse_record) and buffer options. */
#define QKF_MAX_RECORDS 32
typedef struct {
    const char *path; /* --trace; NULL: no trace */
    const char *records[QKF_MAX_RECORDS];
    int n_records, force, raw;
    long buffer_mb;
} qkf_trace_opts;
void qkf_trace_opts_init(qkf_trace_opts *t);
/* Parses the records against g and opens the trace (ts: initialised by the caller, freed by it). */
qkf_trace *qkf_trace_opts_open(const qkf_trace_opts *t, qkf_trace_spec *ts, const qkf_graph *g,
                               const char *weights, const char *engine, int argc, char **argv);

#endif
