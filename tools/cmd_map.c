/* qkf map: does a model fit a chip? Maps every neuron of every layer onto the cores of a chip
 * profile (models/map.h), prints per layer the neurons, cores, utilisation and the limit that
 * binds, then the cores, tiles and chips in use; --json writes the mapping (docs/hardware.md,
 * "Mapping and costs"). A model that cannot fit is refused with one line naming the layer, the
 * limit and by how much. */
#include <stdio.h>
#include <string.h>

#include "../io/io.h"
#include "../io/map_json.h"
#include "../kernels/base.h"
#include "../models/map.h"
#include "cli.h"

static void help(void)
{
    printf("usage: qkf map (--weights W.h5 | --preset NAME) --hw PROFILE [--json M.json] [--quiet]\n"
           "       qkf map --weights W.h5 --hw PROFILE --export-sanafe DIR --input X.h5 [--sample I]\n"
           "\n"
           "Maps every neuron of every layer of the model onto the cores of a chip: each layer\n"
           "(a conv with its BatchNorm, pool and LIF; the Q-K attention neuron; the Q-K mask; SSA's\n"
           "K^T V table and attention LIF; the readout's counters) is cut into blocks of tokens x\n"
           "channels as large as the profile's limits allow (neurons per core, input axons per\n"
           "core, synaptic memory per core as the chip stores weights; Speck: one layer per core,\n"
           "two destination cores), using the fewest cores; cores are placed tile after tile on\n"
           "the mesh so that consecutive layers are neighbours. Prints per layer: neurons, cores,\n"
           "utilisation (neurons / core slots), the block and the limit that stops it growing;\n"
           "then cores, tiles and chips. A model that does not fit is refused with the layer, the\n"
           "limit and by how much (exit 1).\n"
           "\n"
           "  --weights W.h5   the checkpoint (its configuration decides the layers)\n"
           "  --preset NAME    a configuration instead of a checkpoint (%s)\n"
           "%s"
           "  --json M.json    write the mapping: {\"profile\", \"chips\", \"cores\": [{\"tile\": [x, y],\n"
           "                   \"core\", \"layer\", \"neurons\": [first, end)}], \"layers\": [{\"name\",\n"
           "                   \"neurons\", \"cores\", \"limit\"}]} (neuron ranges in the per-sample\n"
           "                   flattening c*N + token that traces use)\n"
           "  --export-sanafe DIR  run the event engine on sample I (default 0) of X.h5 (dataset\n"
           "                   'input', images [B][C][H][W]) and write the mapped model as SANA-FE's\n"
           "                   network (DIR/snn.yaml: every neuron playing its recorded spikes,\n"
           "                   every synapse an edge, every neuron on its core) and architecture\n"
           "                   (DIR/arch.yaml: the profile's mesh and costs), and qkf's own counts\n"
           "                   of that sample (DIR/qkf.json); docs/hardware.md, \"Checked against\n"
           "                   SANA-FE\", says what is exported\n"
           "  --quiet          no table\n",
           qkf_config_preset_list(), qkf_hw_help);
}

int cmd_map(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "map"};
    const char *weights = NULL, *preset = NULL, *json = NULL, *export = NULL, *input = NULL;
    long sample = 0;
    int quiet = 0, have_hw = 0, r;
    qkf_hw_profile hw;
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if ((r = qkf_arg(&a, "--weights", &weights)) || (r = qkf_arg(&a, "--preset", &preset)) ||
            (r = qkf_arg(&a, "--json", &json)) || (r = qkf_arg(&a, "--export-sanafe", &export)) ||
            (r = qkf_arg(&a, "--input", &input)) ||
            (r = qkf_arg_int(&a, "--sample", 0, 1L << 40, &sample)) ||
            (r = qkf_arg_flag(&a, "--quiet", &quiet))) {
            if (r < 0)
                return qkf_cli_fail("map");
            continue;
        }
        if ((r = qkf_arg_hw(&a, &hw)) != 0) {
            if (r < 0)
                return qkf_cli_fail("map");
            have_hw = 1;
            continue;
        }
        qkf_set_error("unexpected argument '%s' (qkf map --help)", argv[a.i]);
        return qkf_cli_fail("map");
    }
    if (!weights == !preset) {
        qkf_set_error("give --weights W.h5 or --preset NAME (qkf map --help)");
        return qkf_cli_fail("map");
    }
    if (!have_hw) {
        qkf_set_error("--hw PROFILE is required (qkf map --help)");
        return qkf_cli_fail("map");
    }
    if (!export != !input || (export && (!weights || json)) || (!export && sample)) {
        qkf_set_error("--export-sanafe DIR takes --weights W.h5 and --input X.h5 (the spikes), "
                      "--sample only with it, and no --json (qkf map --help)");
        return qkf_cli_fail("map");
    }
    qkf_model m;
    memset(&m, 0, sizeof m);
    if (weights ? qkf_ckpt_load(weights, &m) : qkf_config_preset(preset, &m.cfg))
        return qkf_cli_fail("map");
    qkf_graph g;
    int rc = 1;
    if (qkf_graph_walk(&m.cfg, 0, &g))
        goto out;
    qkf_map map;
    if (export) {
        rc = qkf_cli_map_export_sanafe(&m, &hw, input, sample, export, quiet) ? 1 : 0;
        if (rc == 0 && !quiet)
            printf("wrote %s (arch.yaml, snn.yaml, qkf.json)\n", export);
    } else if (qkf_map_build(&map, &g, &hw) == 0) {
        if (!quiet)
            qkf_map_print(&map);
        rc = json && qkf_map_write_json(&map, json) ? 1 : 0;
        if (rc == 0 && json && !quiet)
            printf("wrote %s\n", json);
        qkf_map_free(&map);
    }
    qkf_graph_free(&g);
out:
    if (rc)
        qkf_cli_fail("map");
    qkf_model_free(&m);
    return rc;
}
