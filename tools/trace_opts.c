/* The trace options shared by qkf infer, sim and train: --trace, --record (repeatable),
 * --trace-buffer, --trace-raw, --force, and opening the trace on an engine's graph. */
#include <string.h>

#include "../kernels/base.h"
#include "cli.h"

const char *const qkf_trace_help =
    "  --trace T.h5       record membranes and spikes while running (NIR data layout, readable\n"
    "                     during the run; docs/traces.md); refused if T.h5 exists, unless --force\n"
    "  --record SPEC      what to record, repeatable: LAYERS:OBS[,OBS...][:KEY=VALUE...]\n"
    "                     LAYERS a glob over module paths ('stage1.*', '*.attn_lif');\n"
    "                     OBS v, h, input, spikes, all; keys neurons=A-B,C random=K seed=S\n"
    "                     steps=A-B every=K samples=A-B (default: '*:spikes')\n"
    "  --trace-buffer MB  memory between the simulation and the trace writer (default 64)\n"
    "  --trace-raw        store membranes uncompressed: much less CPU, larger files\n"
    "  --force            overwrite an existing --trace file\n";

int qkf_arg_trace(qkf_args *a, qkf_trace_opts *t)
{
    const char *v;
    int r;
    if ((r = qkf_arg(a, "--trace", &t->path)) != 0)
        return r;
    if ((r = qkf_arg(a, "--record", &v)) != 0) {
        if (r < 0)
            return -1;
        if (t->n_records == QKF_MAX_RECORDS)
            return qkf_set_error("--record: at most %d", QKF_MAX_RECORDS);
        t->records[t->n_records++] = v;
        return 1;
    }
    if ((r = qkf_arg(a, "--trace-buffer", &v)) != 0)
        return r < 0 || qkf_parse_int("--trace-buffer", v, 1, 65536, &t->buffer_mb) ? -1 : 1;
    if (qkf_flag(a, "--trace-raw"))
        return t->raw = 1;
    if (qkf_flag(a, "--force"))
        return t->force = 1;
    return 0;
}
