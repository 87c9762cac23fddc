/* qkf map --export-sanafe DIR (tools/cmd_map.c): runs the event engine on one sample, maps the
 * model, counts the sample's costs (sim/cost.c) and writes SANA-FE's description of it with
 * io/sanafe.c (which writes files and so may not run the engines itself). */
#include <stdio.h>
#include <string.h>

#include "../io/h5_part.h"
#include "../io/sanafe.h"
#include "../kernels/base.h"
#include "../models/map.h"
#include "../sim/cost.h"
#include "../sim/sched.h"
#include "cli.h"

static void cost_json(FILE *f, void *arg)
{
    qkf_cost_write_json(f, arg);
}

int qkf_cli_map_export_sanafe(const qkf_model *m, const qkf_hw_profile *hw, const char *input,
                      int64_t sample, const char *dir, int quiet)
{
    if (qkf_config_is_frames(&m->cfg))
        return qkf_set_error("--export-sanafe: a %s model's input events arrive from outside the "
                             "mesh, which SANA-FE's network format has no source for: export an "
                             "image model",
                             qkf_variant_name(m->cfg.variant));
    int ndim, rc = -1;
    int64_t shape[5];
    qkf_h5_rows *in = qkf_h5_rows_open(input, "input", &ndim, shape);
    if (!in)
        return -1;
    if (ndim != 4 || shape[1] != m->cfg.in_channels || shape[2] != m->cfg.img_size ||
        shape[3] != m->cfg.img_size) {
        qkf_h5_rows_close(in);
        return qkf_set_error("%s: dataset 'input' must be images [B][%d][%d][%d] for this model",
                             input, m->cfg.in_channels, m->cfg.img_size, m->cfg.img_size);
    }
    if (sample < 0 || sample >= shape[0]) {
        qkf_h5_rows_close(in);
        return qkf_set_error("%s: --sample %lld: dataset 'input' holds %lld samples", input,
                             (long long)sample, (long long)shape[0]);
    }
    int64_t per = shape[1] * shape[2] * shape[3];
    float *x = qkf_malloc((size_t)per * sizeof(float));
    float *logits = qkf_malloc((size_t)(m->cfg.num_classes > 0 ? m->cfg.num_classes : 1) *
                               sizeof(float));
    int T = m->cfg.T;
    qkf_sched *e = NULL;
    qkf_map map;
    memset(&map, 0, sizeof map);
    qkf_cost cost;
    memset(&cost, 0, sizeof cost);
    int mapped = 0;
    const uint8_t **sp = NULL;
    if (qkf_h5_rows_read_f32(in, sample, 1, x))
        goto done;
    if (!(e = qkf_sched_create(m, 1, QKF_SCHED_RECORD)))
        goto done;
    const qkf_graph *g = qkf_sched_graph(e);
    if (qkf_map_build(&map, g, hw))
        goto done;
    mapped = 1;
    if (!quiet)
        qkf_map_print(&map);
    if (qkf_sched_forward(e, x, 1, logits, NULL) || qkf_cost_init(&cost, &map, T))
        goto done;
    sp = qkf_calloc((size_t)(g->n_lif > 0 ? g->n_lif : 1), sizeof *sp);
    for (int l = 0; l < g->n_lif; l++)
        sp[l] = qkf_sched_spikes(e, l);
    if (qkf_cost_add(&cost, sp, NULL, 1) ||
        qkf_sanafe_write(&map, &m->params, sp, T, cost_json, &cost, dir))
        goto done;
    rc = 0;
done:
    qkf_free(sp);
    if (cost.map)
        qkf_cost_free(&cost);
    if (mapped)
        qkf_map_free(&map);
    if (e)
        qkf_sched_free(e);
    qkf_h5_rows_close(in);
    qkf_free(x), qkf_free(logits);
    return rc;
}
