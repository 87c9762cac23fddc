/* The simulation application behind qkf sim: a checkpoint run over the samples of an input file
 * or a dataset's test split (read a batch at a time), in the event-driven engine (default) or the
 * dense engine, counting the work per node, head and step (sim/stats.h); optionally a trace,
 * NeuroBench's metrics (sim/neurobench.h), and with a chip profile its mapping and per-step costs
 * (sim/cost.h) and, for an integer profile or a quantised checkpoint, the integer event engine
 * with the spikes that differ from the float model's. Under mpirun each rank runs its contiguous
 * shard and the counters are summed exactly. The report files (JSON, CSV; docs/report.md) are
 * written here; the command prints the tables.
 *
 * Failures are QKF_APP_* codes (tools/app/evaluate.h): QKF_APP_HERE (this rank prints the
 * message, which under mpirun names the rank), QKF_APP_RANK0, QKF_APP_QUIET. */
#ifndef QKF_APP_SIM_H
#define QKF_APP_SIM_H

#include <stdint.h>

#include "../../models/hw.h"
#include "../../sim/cost.h"
#include "../../sim/neurobench.h"
#include "../../sim/stats.h"
#include "evaluate.h"
#include "opts.h"

typedef struct {
    const char *weights; /* checkpoint, float or quantised (required) */
    const char *input;   /* X.h5 with dataset 'input', or NULL */
    const char *data;    /* or a dataset whose test split runs (io/dataset.h names) */
    int64_t limit;       /* --data: the first N samples (0: all) */
    int batch;           /* samples per forward (and per read) */
    int event;           /* 1: the event engine; 0: the dense engine (float models) */
    int conv;            /* dense convolution flags (QKF_DENSE_WINO4, ...) */
    int tb;              /* the official SSA proj_lif quirk */
    int neurobench;      /* NeuroBench's metrics (a dense run beside the event engine; integer
                          * runs: the dense integer engine beside the integer event engine) */
    const qkf_hw_profile *hw; /* the chip, or NULL: mapped and priced; an integer profile (or a
                               * quantised checkpoint) runs the integer event engine */
    long calib;          /* integer runs: re-quantise calibrated on the first N input samples */
    const qkf_trace_opts *trace; /* a trace of the float run (path NULL or no struct: none) */
    int argc;            /* the command line, for the trace's provenance */
    char **argv;
    int quiet;           /* no lines about what each rank holds */
    int latency_detailed; /* with hw: also SANA-FE's detailed latency model (qkf_cost_detailed) */
} qkf_sim_opts;

/* Per LIF layer of an integer run: spikes of the float and of the integer engine, and the
 * neurons x steps where they differ. */
typedef struct {
    int64_t fs, is, diff, n;
} qkf_sim_flips;

typedef struct qkf_sim_state qkf_sim_state;

typedef struct {
    int integer;            /* the integer event engine ran */
    char engine[96];        /* "event", "dense", "event-int (loihi)" */
    const char *hw_name;    /* integer runs: the integer model's profile */
    const qkf_stats *st;    /* the counters over every rank (seconds: this rank's forward time) */
    const qkf_graph *g;     /* the graph run (LIF names of flips) */
    const qkf_cost *cost;   /* the chip's costs of the run's spikes, or NULL (no --hw, or the
                             * model does not fit the chip: not_priced says why) */
    const qkf_nb *nb;       /* NeuroBench's metrics, or NULL */
    const qkf_sim_flips *flips; /* integer runs of a float checkpoint: [g->n_lif], else NULL */
    int has_labels;         /* --data: correct holds the correct classifications */
    int64_t correct;
    char source[1024];      /* --data: the dataset as its reader names it */
    qkf_sim_state *state;   /* owns the above */
} qkf_sim_result;

/* Runs it; collective under mpirun. log receives lines for stderr (what each rank holds; a chip
 * that cannot hold the model). 0 or QKF_APP_*; free r with qkf_sim_result_free either way. */
int qkf_sim_run(const qkf_sim_opts *o, qkf_log_fn log, void *ctx, qkf_sim_result *r);
void qkf_sim_result_free(qkf_sim_result *r);

/* What the report says besides the counters. */
typedef struct {
    double e_ac, e_mac;         /* pJ per accumulate and multiply-accumulate */
    const char *engine, *weights, *input;
    int threads, tb;
    const qkf_cost *hw;         /* "hw" section, or NULL */
    const qkf_nb *nb;           /* "neurobench" section, or NULL */
} qkf_sim_report_info;

/* Writes the report (JSON when json, else CSV; docs/report.md) to path.tmp.<pid>, renamed over
 * path. 0 or -1 (nothing left behind). */
int qkf_sim_write_report(const char *path, int json, const qkf_stats *s,
                         const qkf_sim_report_info *ri);
/* The firing-rate estimate of energy (spec 7.3) of one node: e_ac x est SOPs + e_mac x est MACs. */
double qkf_sim_est_energy(const qkf_stats *s, int node, const qkf_work *w, int64_t samples,
                          double e_ac, double e_mac);

#endif
