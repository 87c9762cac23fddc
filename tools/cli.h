/* Shared helpers of the qkf command: option parsing, model loading, tables. */
#ifndef QKF_CLI_H
#define QKF_CLI_H

#include <stdint.h>

#include "../io/events.h"
#include "../models/hw.h"
#include "../models/quant.h"
#include "../io/trace.h"
#include "../models/qkformer.h"
#include "app/opts.h"

/* --hw NAME|FILE.yaml: the chip profile (a bundled name or a profile file, io/hw_profile.h),
 * loaded into *hw. 1 if consumed (and loaded), 0 if not ours, -1 on error (a bad profile's one
 * line names the file, line and key). qkf_hw_help: its help lines. */
int qkf_arg_hw(qkf_args *a, qkf_hw_profile *hw);
extern const char *const qkf_hw_help;

/* qkf infer --hw (tools/cmd_infer_int.c): the integer model (qkf_app_qmodel,
 * tools/app/quantize.h) run by the dense integer engine or, with event, the integer event engine
 * (xcheck: the dense one beside it, every spike and integer logit compared); tb runs the tb_compat
 * graph; topt->path traces the running engine in membrane units (argc/argv: the trace's
 * provenance). Returns the exit status (error printed). */
int qkf_cli_infer_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                     const qkf_quant_opts *base, const char *input, const char *output, int batch,
                     int event, int xcheck, int tb, int quiet, const qkf_trace_opts *topt,
                     int argc, char **argv);
/* qkf eval --hw (tools/cmd_quantize.c): the integer accuracy on the test split, in the dense
 * integer engine or (event) the integer event engine, tb: the tb_compat graph; flips (dense
 * only): spikes that differ from the float model's, per layer. Returns the exit status. */
int qkf_cli_eval_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                    const qkf_quant_opts *base, long limit, int batch, int event, int tb,
                    int flips);
/* --calib N, --headroom H, --clip-bias: 1 if consumed, 0 if not ours, -1 on error. */
int qkf_arg_quant(qkf_args *a, long *calib, qkf_quant_opts *o);
extern const char *const qkf_quant_help; /* --calib, --headroom, --clip-bias */
/* qkf map --export-sanafe DIR (tools/cmd_map_sanafe.c): runs the event engine on sample `sample`
 * of input (dataset 'input', images [B][C][H][W]), maps the model onto hw (the table unless
 * quiet), counts the sample's costs and writes DIR (io/sanafe.h). 0, or -1 (error recorded). */
int qkf_cli_map_export_sanafe(const qkf_model *m, const qkf_hw_profile *hw, const char *input,
                              int64_t sample, const char *dir, int quiet);
/* Event-file reader options of qkf events and qkf client: --format, --sensor WxH (sides up to
 * max_side), --orient jaer|cifar10dvs, --backwards fail|drop. 1 if consumed, 0 if not ours,
 * -1 on error. */
int qkf_arg_events(qkf_args *a, qkf_events_opts *o, int max_side);

/* Trace options of qkf infer, qkf sim and qkf train (qkf_trace_opts: tools/app/opts.h). */
extern const char *const qkf_trace_help; /* help lines for the options below */
/* Consumes --trace, --record, --trace-buffer, --trace-raw, --force: 1, 0 (not ours), -1 error. */
int qkf_arg_trace(qkf_args *a, qkf_trace_opts *t);

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
int cmd_quantize(int argc, char **argv);

int qkf_cli_fail(const char *cmd); /* prints "qkf CMD: <last error>" and returns 1 */
/* Prints as qkf_cli_fail on MPI rank 0 only (every rank sees the same options and files);
 * returns 1 on every rank. */
int qkf_cli_fail_rank0(const char *cmd);
/* Reports an application's failure (QKF_APP_*, tools/app/evaluate.h) on the rank it names;
 * returns 1. */
int qkf_cli_app_fail(const char *cmd, int rc);

#endif
