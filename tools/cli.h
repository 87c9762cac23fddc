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

/* qkf infer --hw and qkf eval --hw in dense mode (the integer model: qkf_app_qmodel,
 * tools/app/quantize.h); return the exit status (error printed). infer: tb runs the tb_compat
 * graph (QKF_DENSE_INT_TB_COMPAT); topt->path traces the integer engine in membrane units
 * (qkf_dense_int_set_sink; argc/argv: the trace's provenance). */
int qkf_cli_infer_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                     const qkf_quant_opts *base, const char *input, const char *output, int batch,
                     int quiet, int tb, const qkf_trace_opts *topt, int argc, char **argv);
int qkf_cli_eval_hw(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                    const qkf_quant_opts *base, long limit, int batch, int flips);
/* --calib N, --headroom H, --clip-bias: 1 if consumed, 0 if not ours, -1 on error. */
int qkf_arg_quant(qkf_args *a, long *calib, qkf_quant_opts *o);
extern const char *const qkf_quant_help; /* --calib, --headroom, --clip-bias */
/* The input of qkf infer --hw, either integer engine (cmd_quantize.c): dataset 'input' of the
 * file opened for reading a batch at a time (*in; qkf_h5_rows_close it), checked against the
 * checkpoint's own size and T; *B its samples, *per the values per sample. 0, or -1 with one
 * line naming the file and the key. */
struct qkf_h5_rows;
int qkf_cli_int_input(const char *input, const qkf_qmodel *q, struct qkf_h5_rows **in,
                      int64_t *B, int64_t *per);
/* The output of qkf infer --hw, either integer engine, written as the batches come: Y.h5
 * (logits, logits_int, predictions = argmax of the integer logits, spike_count/<layer>,
 * firing_rate/<layer>, attributes engine, hw, qkf_version, weights) via .tmp + rename, and the
 * summary. open, then rows for each batch in order, then close (commits and prints unless quiet)
 * or abort (nothing left). Each returns 0 or -1 with the error recorded. */
typedef struct {
    void *o; /* qkf_h5out */
    int K;
    int64_t B;
    int64_t pred[16], logit_int[16];
    float logit[16];
} qkf_int_out;
int qkf_cli_int_out_open(qkf_int_out *w, const char *output, int64_t B, int K);
int qkf_cli_int_out_rows(qkf_int_out *w, int64_t b0, int n, const float *logits,
                         const int64_t *li);
int qkf_cli_int_out_close(qkf_int_out *w, const char *output, const char *weights,
                          const qkf_qmodel *q, const qkf_graph *g, const char *engine,
                          const char *label, const int64_t *counts, double dt, int quiet);
void qkf_cli_int_out_abort(qkf_int_out *w);
/* qkf map --export-sanafe DIR (tools/cmd_map_sanafe.c): runs the event engine on sample `sample`
 * of input (dataset 'input', images [B][C][H][W]), maps the model onto hw (the table unless
 * quiet), counts the sample's costs and writes DIR (io/sanafe.h). 0, or -1 (error recorded). */
int qkf_cli_map_export_sanafe(const qkf_model *m, const qkf_hw_profile *hw, const char *input,
                              int64_t sample, const char *dir, int quiet);
/* qkf infer --hw --mode event (tools/cmd_infer_int.c): the integer event engine, with
 * --cross-check against the dense integer engine; returns the exit status (error printed). */
int qkf_cli_infer_hw_event(const char *weights, const qkf_hw_profile *hw, long calib,
                           const char *data, const qkf_quant_opts *base, const char *input,
                           const char *output, int batch, int xcheck, int tb, int quiet);

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
