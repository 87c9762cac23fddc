/* Shared helpers of the qkf command: option parsing, model loading, tables. */
#ifndef QKF_CLI_H
#define QKF_CLI_H

#include <stdint.h>

#include "../io/events.h"
#include "../models/hw.h"
#include "../io/trace.h"
#include "../models/qkformer.h"

/* A tiny long-option parser: "--name value", "--name=value" and flags. */
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

/* --hw NAME|FILE.yaml: the chip profile (a bundled name or a profile file, io/hw_profile.h),
 * loaded into *hw. 1 if consumed (and loaded), 0 if not ours, -1 on error (a bad profile's one
 * line names the file, line and key). qkf_hw_help: its help lines. */
int qkf_arg_hw(qkf_args *a, qkf_hw_profile *hw);
extern const char *const qkf_hw_help;

/* Event-file reader options of qkf events and qkf client: --format, --sensor WxH (sides up to
 * max_side), --orient jaer|cifar10dvs, --backwards fail|drop. 1 if consumed, 0 if not ours,
 * -1 on error. */
int qkf_arg_events(qkf_args *a, qkf_events_opts *o, int max_side);

/* Config overrides shared by info/init: --img-size --in-channels --num-classes --embed-dims
 * --num-heads --mlp-ratio --depths --T --qk-attn. Returns 1 if consumed, 0 if not, -1 error. */
int qkf_arg_config(qkf_args *a, qkf_config *cfg);

/* Trace options of qkf infer and qkf sim (tools/trace_opts.c). */
#define QKF_MAX_RECORDS 32
typedef struct {
    const char *path; /* --trace; NULL: no trace */
    const char *records[QKF_MAX_RECORDS];
    int n_records, force, raw;
    long buffer_mb;
} qkf_trace_opts;
extern const char *const qkf_trace_help; /* help lines for the options below */
void qkf_trace_opts_init(qkf_trace_opts *t);
/* Consumes --trace, --record, --trace-buffer, --trace-raw, --force: 1, 0 (not ours), -1 error. */
int qkf_arg_trace(qkf_args *a, qkf_trace_opts *t);
/* Parses the records against g and opens the trace (ts: initialised by the caller, freed by it). */
qkf_trace *qkf_trace_opts_open(const qkf_trace_opts *t, qkf_trace_spec *ts, const qkf_graph *g,
                               const char *weights, const char *engine, int argc, char **argv);

int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_sim(int, char **);
int cmd_map(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_hw(int argc, char **argv);

int qkf_cli_fail(const char *cmd); /* prints "qkf CMD: <last error>" and returns 1 */
/* Prints as qkf_cli_fail on MPI rank 0 only (every rank sees the same options and files);
 * returns 1 on every rank. */
int qkf_cli_fail_rank0(const char *cmd);

#endif
