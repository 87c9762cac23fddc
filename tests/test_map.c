/* Mapping onto a chip (models/map.c) and the chip cost model (sim/cost.c): every neuron mapped
 * exactly once and no core over a limit on every variant and profile; a model that does not fit
 * refused with its layer and limit; per-core counts that sum to the event engine's own counters;
 * totals that recompute from the counts; a network small enough to count by hand. */
#include "util.h"

#include "../models/map.h"
#include "../sim/cost.h"
#include "../sim/sched.h"
#include "../sim/stats.h"

#include "../io/hw_profile.h"

static void load_hw(const char *name, qkf_hw_profile *hw)
{
    cr_assert_eq(qkf_hw_load(name, hw), 0, "%s", qkf_last_error());
}

/* ---- mapping ---------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *seen;
    int64_t n;
    int bad;
} cover;

static void mark(int64_t a, int64_t b, void *arg)
{
    cover *c = arg;
    for (int64_t x = a; x < b; x++) {
        if (x < 0 || x >= c->n || c->seen[x]) {
            c->bad = 1;
            return;
        }
        c->seen[x] = 1;
    }
}

/* Input axons of core i of a conv unit, counted independently of the mapper: the distinct input
 * positions of every pre-pool output position whose pooled home the core holds, x cin. */
static int64_t conv_axons(const qkf_map *m, int i)
{
    const qkf_map_core *co = &m->core[i];
    const qkf_map_unit *u = &m->unit[co->unit];
    uint8_t *in = calloc((size_t)u->ih * u->iw, 1);
    int64_t n = 0;
    for (int oy = 0; oy < u->ho; oy++)
        for (int ox = 0; ox < u->wo; ox++) {
            int q = u->pool ? (oy / 2) * u->gw + ox / 2 : oy * u->gw + ox;
            if (q / u->tq != co->run)
                continue;
            for (int ky = 0; ky < u->k; ky++)
                for (int kx = 0; kx < u->k; kx++) {
                    int iy = oy * u->stride - u->pad + ky, ix = ox * u->stride - u->pad + kx;
                    if (iy >= 0 && iy < u->ih && ix >= 0 && ix < u->iw && !in[iy * u->iw + ix])
                        in[iy * u->iw + ix] = 1, n++;
                }
        }
    free(in);
    return n * u->cin;
}

static void check_map(const qkf_map *m, const char *what)
{
    const qkf_hw_profile *hw = &m->hw;
    int64_t total = 0;
    for (int u = 0; u < m->n_units; u++) {
        const qkf_map_unit *un = &m->unit[u];
        cover c = {calloc((size_t)un->neurons + 1, 1), un->neurons, 0};
        for (int i = un->first_core; i < un->first_core + un->n_cores; i++) {
            cr_assert_eq(m->core[i].unit, u, "%s: core %d", what, i);
            qkf_map_core_ranges(m, i, mark, &c);
        }
        cr_assert_not(c.bad, "%s: %s: a neuron mapped twice or out of range", what, un->name);
        for (int64_t x = 0; x < un->neurons; x++) {
            cr_assert(c.seen[x], "%s: %s: neuron %lld not mapped", what, un->name, (long long)x);
            int core = qkf_map_core_of(m, u, x);
            cr_assert(core >= un->first_core && core < un->first_core + un->n_cores);
        }
        free(c.seen);
        total += un->neurons;
        cr_assert_str_neq(un->limit, "", "%s: %s has no binding limit", what, un->name);
        if (hw->max_fan_in > 0)
            cr_assert_leq(un->max_axons, hw->max_fan_in, "%s: %s", what, un->name);
        if (hw->synapse_bytes > 0)
            cr_assert_leq(un->max_syn_bytes, hw->synapse_bytes, "%s: %s", what, un->name);
    }
    cr_assert_eq(total, m->neurons, "%s", what);
    int cpt = hw->cores_per_tile, W = hw->mesh_width, H = hw->mesh_height;
    int64_t *neur = calloc((size_t)m->n_phys + 1, sizeof(int64_t));
    int64_t *axon = calloc((size_t)m->n_phys + 1, sizeof(int64_t));
    int64_t *byte = calloc((size_t)m->n_phys + 1, sizeof(int64_t));
    int *layers = calloc((size_t)m->n_phys + 1, sizeof(int));
    for (int i = 0; i < m->n_cores; i++) {
        const qkf_map_core *co = &m->core[i];
        const qkf_map_unit *u = &m->unit[co->unit];
        cr_assert(co->phys >= 0 && co->phys < m->n_phys);
        neur[co->phys] += co->neurons;
        byte[co->phys] += co->bytes;
        /* conv axons recounted independently; other kinds as the mapper counts them */
        axon[co->phys] += u->kind == QKF_UNIT_CONV || u->kind == QKF_UNIT_ENCODE
                              ? conv_axons(m, i)
                              : co->axons;
        if (i == 0 || m->core[i - 1].phys != co->phys || m->core[i - 1].unit != co->unit)
            layers[co->phys]++;
        cr_assert(co->x >= 0 && co->x < m->chips * W && co->y >= 0 && co->y < H, "%s", what);
        cr_assert(co->slot >= 0 && co->slot < cpt);
        /* physical cores in order, each at one place: (chip, tile, slot) counts them (one
         * layer per core: the slot is the chip's core that holds the layer, checked above) */
        if (hw->max_layers_per_core != 1)
            cr_assert_eq(((int64_t)co->chip * W * H + co->tile) * cpt + co->slot, co->phys, "%s",
                         what);
        if (i > 0)
            cr_assert(co->phys == m->core[i - 1].phys || co->phys == m->core[i - 1].phys + 1);
    }
    for (int p = 0; p < m->n_phys; p++) {
        if (hw->max_neurons > 0 && hw->max_layers_per_core != 1)
            cr_assert_leq(neur[p], hw->max_neurons, "%s: core %d", what, p);
        if (hw->max_fan_in > 0)
            cr_assert_leq(axon[p], hw->max_fan_in, "%s: core %d", what, p);
        if (hw->synapse_bytes > 0)
            cr_assert_leq(byte[p], hw->synapse_bytes, "%s: core %d", what, p);
        if (hw->max_layers_per_core > 0)
            cr_assert_leq(layers[p], hw->max_layers_per_core, "%s: core %d", what, p);
    }
    free(neur), free(axon), free(byte), free(layers);
    if (hw->max_layers_per_core == 1)
        cr_assert_leq(m->n_phys, W * H * cpt, "%s: one chip", what);
}

static void map_config(const qkf_config *cfg, const char *label)
{
    qkf_graph g;
    cr_assert_eq(qkf_graph_walk(cfg, 0, &g), 0, "%s", qkf_last_error());
    int fitted = 0;
    for (int p = 0; p < qkf_hw_count(); p++) { /* every bundled profile */
        qkf_hw_profile hw;
        load_hw(qkf_hw_name(p), &hw);
        qkf_map m;
        char what[256];
        snprintf(what, sizeof what, "%s on %s", label, qkf_hw_name(p));
        if (qkf_map_build(&m, &g, &hw) != 0) {
            /* a refusal names the layer, the limit and by how much */
            const char *e = qkf_last_error();
            cr_assert(strncmp(e, "layer ", 6) == 0 && strstr(e, " over)") && strstr(e, ": "),
                      "%s: %s", what, e);
            cr_assert(strstr(e, "neurons") || strstr(e, "fan-in") || strstr(e, "memory") ||
                          strstr(e, "cores") || strstr(e, "destinations"),
                      "%s: %s", what, e);
            continue;
        }
        fitted++;
        check_map(&m, what);
        /* deterministic */
        qkf_map m2;
        cr_assert_eq(qkf_map_build(&m2, &g, &hw), 0);
        cr_assert_eq(m2.n_cores, m.n_cores);
        cr_assert_eq(memcmp(m2.core, m.core, (size_t)m.n_cores * sizeof *m.core), 0, "%s", what);
        qkf_map_free(&m2);
        qkf_map_free(&m);
    }
    cr_assert_geq(fitted, 1, "%s fits no profile (the ideal machine takes anything)", label);
    qkf_graph_free(&g);
}

Test(map, every_preset_every_profile, .timeout = 900)
{
    const char *presets[] = {"cifar10", "cifar100", "imagenet-10-384", "dvs128-gesture",
                             "cifar10-dvs"};
    for (int i = 0; i < 5; i++) {
        qkf_config cfg;
        cr_assert_eq(qkf_config_preset(presets[i], &cfg), 0);
        if (cfg.variant == QKF_VARIANT_IMAGENET)
            cfg.img_size = 64; /* every layer as at 224, 12x fewer neurons (test time) */
        map_config(&cfg, presets[i]);
        if (i == 0) { /* QKCA's units (a [C][1] attention neuron, its masks) once */
            cfg.qk_attn = QKF_QK_CHANNEL;
            map_config(&cfg, presets[i]);
        }
    }
}

Test(map, small_variants_fit_loihi, .timeout = 300)
{
    /* the fixtures' small models are what Loihi can hold: each maps, and the mapping holds */
    const char *names[] = {"cifar_small", "cifar_qkca", "imagenet_small", "dvs128_small",
                           "cifar10dvs_small"};
    for (int i = 0; i < 5; i++) {
        char w[512];
        snprintf(w, sizeof w, "%s/%s.weights.h5", QKF_FIXTURE_DIR, names[i]);
        qkf_model md;
        memset(&md, 0, sizeof md);
        cr_assert_eq(qkf_ckpt_load(w, &md), 0, "%s", qkf_last_error());
        map_config(&md.cfg, names[i]);
        qkf_graph g;
        cr_assert_eq(qkf_graph_walk(&md.cfg, 0, &g), 0);
        qkf_hw_profile hw;
        load_hw("loihi", &hw);
        qkf_map m;
        cr_assert_eq(qkf_map_build(&m, &g, &hw), 0, "%s: %s", names[i], qkf_last_error());
        qkf_map_free(&m);
        qkf_graph_free(&g);
        qkf_model_free(&md);
    }
}

Test(map, too_big_is_refused_with_layer_and_limit)
{
    qkf_config cfg;
    cr_assert_eq(qkf_config_preset("cifar10", &cfg), 0);
    qkf_graph g;
    cr_assert_eq(qkf_graph_walk(&cfg, 0, &g), 0);
    qkf_hw_profile hw;
    load_hw("loihi", &hw);
    /* cifar10's patch_embed3.proj4 pools 2 x 2 pre-pool positions of 384 channels: a neuron
     * reads 4 x 4 x 384 = 6144 axons, Loihi's core takes 4096 */
    qkf_map m;
    cr_assert_neq(qkf_map_build(&m, &g, &hw), 0);
    cr_assert_str_eq(qkf_last_error(), "layer patch_embed3.proj4_lif: fan-in (axons per core): "
                                       "one neuron needs 6144, a core has 4096 (2048 over)");
    /* a neuron limit: a core of 8 neurons still fits (blocks shrink), a chip of one layer per
     * core does not */
    load_hw("speck", &hw);
    cr_assert_neq(qkf_map_build(&m, &g, &hw), 0);
    cr_assert(strstr(qkf_last_error(), "layer patch_embed1.proj1_lif: neurons per core: the "
                                       "layer (one core) needs 98304, a core has 65536 (32768 "
                                       "over)"),
              "%s", qkf_last_error());
    qkf_graph_free(&g);
}

/* A chain of n convs (3 x 3 or 1 x 1, stride 1, same padding) + LIFs on h x h frames with cin0
 * input channels, then the readout (10 classes): the graph of a DYNAP-CNN-sized network. */
typedef struct {
    qkf_tensor t[2 * 8 + 2];
    qkf_op op[2 * 8 + 1];
    int lif[8];
    qkf_graph g;
} chain;

static void chain_make(chain *ch, int cin0, int h, int n, const int *cout, const int *k)
{
    memset(ch, 0, sizeof *ch);
    static const char *tn[] = {"cur0", "s0", "cur1", "s1", "cur2", "s2", "cur3", "s3", "cur4",
                               "s4",   "cur5", "s5", "cur6", "s6", "cur7", "s7"};
    static const char *on[] = {"l0_conv", "l0_lif", "l1_conv", "l1_lif", "l2_conv", "l2_lif",
                               "l3_conv", "l3_lif", "l4_conv", "l4_lif", "l5_conv", "l5_lif",
                               "l6_conv", "l6_lif", "l7_conv", "l7_lif"};
    ch->t[0] = (qkf_tensor){cin0, h, h, 0, 0, "input"};
    int prev = 0, cin = cin0;
    for (int i = 0; i < n; i++) {
        ch->t[1 + 2 * i] = (qkf_tensor){cout[i], h, h, 0, 0, tn[2 * i]};
        ch->t[2 + 2 * i] = (qkf_tensor){cout[i], h, h, 0, 1, tn[2 * i + 1]};
        qkf_op *c = &ch->op[2 * i], *l = &ch->op[2 * i + 1];
        c->kind = QKF_OP_CONV, c->in0 = prev, c->in1 = c->in2 = -1, c->out = 1 + 2 * i;
        snprintf(c->name, sizeof c->name, "%s", on[2 * i]);
        c->cin = cin, c->cout = cout[i], c->k = k[i], c->stride = 1, c->pad = k[i] / 2;
        l->kind = QKF_OP_LIF, l->in0 = 1 + 2 * i, l->in1 = l->in2 = -1, l->out = 2 + 2 * i;
        snprintf(l->name, sizeof l->name, "%s", on[2 * i + 1]);
        l->lif_index = i, l->vth = 1;
        ch->lif[i] = 2 * i + 1;
        prev = 2 + 2 * i, cin = cout[i];
    }
    ch->t[1 + 2 * n] = (qkf_tensor){10, 1, 1, 0, 0, "logits"};
    qkf_op *r = &ch->op[2 * n];
    r->kind = QKF_OP_READOUT, r->in0 = prev, r->in1 = r->in2 = -1, r->out = 1 + 2 * n;
    snprintf(r->name, sizeof r->name, "head");
    ch->g.cfg.num_classes = 10, ch->g.cfg.T = 2;
    ch->g.n_ops = 2 * n + 1, ch->g.n_tensors = 2 * n + 2, ch->g.n_lif = n;
    ch->g.ops = ch->op, ch->g.tensors = ch->t, ch->g.input = 0, ch->g.lif_ops = ch->lif;
}

static int ceil_log2i(int64_t v)
{
    int b = 0;
    while (((int64_t)1 << b) < v)
        b++;
    return b;
}

/* Speck's cores differ (kernel memory 16, 16, 16, 32, 32, 64, 64, 16, 16 K; neuron memory 64,
 * 64, 64, 32, 32, 16, 16, 16, 16 K entries): each layer must sit on a core whose own memories
 * hold it (sinabs' formulas), not merely the largest of each. */
Test(map, speck_per_core_memories)
{
    qkf_hw_profile hw;
    load_hw("speck", &hw);
    cr_assert_eq(hw.n_groups, 4);
    /* 64 -> 64 channels, 3 x 3 on 4 x 4: kernel 64 x 2^(4 + 6) = 65536 (cores 5, 6 only),
     * neurons 64 x 2^4 = 1024; the first layer (2 -> 64) and a 1 x 1 (64 -> 16) fit anywhere */
    int cout[5] = {64, 64, 64, 64, 16}, k[5] = {3, 3, 3, 3, 1};
    chain ch;
    chain_make(&ch, 2, 4, 3, (int[]){64, 64, 16}, (int[]){3, 3, 1});
    qkf_map m;
    cr_assert_eq(qkf_map_build(&m, &ch.g, &hw), 0, "%s", qkf_last_error());
    /* layer 1 needs a 64 K kernel core: core 5 (the first that holds it); the others the
     * first free core that holds them */
    int want[4] = {0, 5, 1, 2};
    for (int u = 0; u < m.n_units; u++) {
        const qkf_map_core *co = &m.core[m.unit[u].first_core];
        cr_assert_eq(co->slot, want[u], "%s on core %d", m.unit[u].name, co->slot);
    }
    qkf_map_free(&m);
    /* two such layers: cores 5 and 6; every layer within its own core's memories */
    chain_make(&ch, 2, 4, 4, (int[]){64, 64, 64, 16}, (int[]){3, 3, 3, 1});
    cr_assert_eq(qkf_map_build(&m, &ch.g, &hw), 0, "%s", qkf_last_error());
    uint8_t used[9] = {0};
    for (int u = 0; u < m.n_units; u++) {
        const qkf_map_unit *un = &m.unit[u];
        const qkf_map_core *co = &m.core[un->first_core];
        cr_assert_eq(un->n_cores, 1);
        cr_assert_not(used[co->slot], "two layers on core %d", co->slot);
        used[co->slot] = 1;
        int64_t kern = co->bytes, neur = un->neurons;
        if (un->kind == QKF_UNIT_CONV) { /* sinabs' formulas, recomputed */
            kern = (int64_t)un->cin << (ceil_log2i((int64_t)un->k * un->k) + ceil_log2i(un->C));
            neur = (int64_t)un->C << (ceil_log2i(un->ho) + ceil_log2i(un->wo));
            cr_assert_eq(kern, co->bytes);
        }
        static const int64_t kmem[9] = {16384, 16384, 16384, 32768, 32768, 65536, 65536, 16384,
                                        16384};
        static const int64_t nmem[9] = {65536, 65536, 65536, 32768, 32768, 16384, 16384, 16384,
                                        16384};
        cr_assert_leq(kern, kmem[co->slot], "%s on core %d", un->name, co->slot);
        cr_assert_leq(neur, nmem[co->slot], "%s on core %d", un->name, co->slot);
    }
    cr_assert(used[5] && used[6]);
    qkf_map_free(&m);
    /* three: two cores hold such a kernel */
    chain_make(&ch, 2, 4, 5, cout, k);
    cr_assert_neq(qkf_map_build(&m, &ch.g, &hw), 0);
    cr_assert_str_eq(qkf_last_error(),
                     "layer l3_lif: cores: it fits only cores that other layers need, by their "
                     "memories: cores 5 (l1_lif), 6 (l2_lif); 3 layers for 2 cores (1 over)");
    /* a layer no core holds though each memory alone fits the largest core's: 64 -> 64
     * channels 3 x 3 on 32 x 32: kernel 65536 (cores 5, 6) and neurons 64 x 2^10 = 65536
     * (cores 0-2) */
    chain_make(&ch, 2, 32, 3, (int[]){64, 64, 4}, (int[]){3, 3, 1});
    cr_assert_neq(qkf_map_build(&m, &ch.g, &hw), 0);
    cr_assert_str_eq(qkf_last_error(),
                     "layer l1_lif: fits no core of the chip: cores 0-2: synaptic memory per core "
                     "needs 65536, has 16384 (49152 over); cores 3-4: neurons per core needs "
                     "65536, has 32768 (32768 over); cores 5-6: neurons per core needs 65536, has "
                     "16384 (49152 over); cores 7-8: neurons per core needs 65536, has 16384 "
                     "(49152 over)");
}

/* ---- the CLI ---------------------------------------------------------------------------------- */

static char dir[256];
static void setup(void)
{
    tmpdir_make(dir, sizeof dir, "map");
}
static void teardown(void)
{
    tmpdir_remove(dir);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t r = fread(s, 1, (size_t)n, f);
    s[r] = 0;
    fclose(f);
    return s;
}

Test(map, cli_json_and_refusal, .init = setup, .fini = teardown, .timeout = 120)
{
    char w[512];
    snprintf(w, sizeof w, "%s/cifar_small.weights.h5", QKF_FIXTURE_DIR);
    cr_assert_eq(run_cmd("%s map --weights %s --hw loihi --json %s/m.json >%s/out 2>&1",
                         QKF_BINARY, w, dir, dir),
                 0);
    char *j = slurp(tmpdir_path(dir, "m.json"));
    cr_assert_not_null(j);
    const char *keys[] = {"\"profile\": \"loihi\"", "\"chips\": ", "\"cores\": [", "\"tile\": [",
                          "\"core\": ", "\"layer\": \"patch_embed1.proj_lif\"", "\"neurons\": [0, ",
                          "\"layers\": [", "\"limit\": \""};
    for (int i = 0; i < 9; i++)
        cr_assert(strstr(j, keys[i]), "missing %s", keys[i]);
    free(j);
    char only[256];
    cr_assert_eq(tmpdir_entries(dir, only, sizeof only), 2, "a .tmp left behind?");
    /* refused: one line, exit 1, no file */
    int rc = run_cmd("%s map --weights %s --hw speck --json %s/s.json >%s/out 2>%s/err",
                     QKF_BINARY, w, dir, dir, dir);
    cr_assert_neq(rc, 0);
    char *e = slurp(tmpdir_path(dir, "err"));
    cr_assert(strncmp(e, "qkf map: layer ", 15) == 0 && strstr(e, "over)\n") &&
                  strchr(e, '\n') == e + strlen(e) - 1,
              "%s", e);
    free(e);
    cr_assert_neq(access(tmpdir_path(dir, "s.json"), F_OK), 0);
    cr_assert_eq(run_cmd("%s map --help >%s/out", QKF_BINARY, dir), 0);
}

/* qkf sim --hw --latency detailed: both latency models in the report (the integer engine on
 * loihi, the float engine on ideal-45nm); refused without --hw or with an unknown model */
Test(map, cli_sim_latency_detailed, .init = setup, .fini = teardown, .timeout = 300)
{
    char w[512], x[512];
    snprintf(w, sizeof w, "%s/cifar_small.weights.h5", QKF_FIXTURE_DIR);
    snprintf(x, sizeof x, "%s/cifar_small.ref.h5", QKF_FIXTURE_DIR);
    const char *hw[2] = {"loihi", "ideal-45nm"};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(run_cmd("%s sim --weights %s --input %s --hw %s --latency detailed "
                             "--threads 2 --report %s/r.json >%s/out 2>&1",
                             QKF_BINARY, w, x, hw[i], dir, dir),
                     0, "%s", hw[i]);
        char *j = slurp(tmpdir_path(dir, "r.json")), *o = slurp(tmpdir_path(dir, "out"));
        cr_assert_not_null(j);
        const char *keys[] = {"\"latency_s\": {\"per_step\": [", "\"latency_detailed_s\": {",
                              "\"blocked_messages\": [", "\"neurobench\": {"};
        for (int k = 0; k < 4; k++)
            cr_assert(strstr(j, keys[k]), "%s: missing %s", hw[i], keys[k]);
        cr_assert(strstr(o, "(detailed: contention"), "%s", o);
        free(j), free(o);
    }
    cr_assert_neq(run_cmd("%s sim --weights %s --input %s --latency detailed >%s/out 2>%s/err",
                          QKF_BINARY, w, x, dir, dir),
                  0);
    char *e = slurp(tmpdir_path(dir, "err"));
    cr_assert_str_eq(e,
                     "qkf sim: --latency detailed prices a chip's steps: it needs --hw PROFILE\n");
    free(e);
    cr_assert_neq(run_cmd("%s sim --weights %s --input %s --hw loihi --latency exact >%s/out "
                          "2>%s/err",
                          QKF_BINARY, w, x, dir, dir),
                  0);
    e = slurp(tmpdir_path(dir, "err"));
    cr_assert(strstr(e, "option --latency: 'exact' is not a model (simple or detailed)"), "%s", e);
    free(e);
}

/* ---- costs against the engine ----------------------------------------------------------------- */

static void costs_fixture(const char *name, const char *profile)
{
    char w[512], ref[512];
    snprintf(w, sizeof w, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(ref, sizeof ref, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    qkf_model md;
    memset(&md, 0, sizeof md);
    cr_assert_eq(qkf_ckpt_load(w, &md), 0, "%s", qkf_last_error());
    float *x;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(ref, "input", &x, &nd, sh), 0, "%s", qkf_last_error());
    if (nd == 5)
        md.cfg.T = (int)sh[1];
    int B = (int)sh[0];
    qkf_sched *e = qkf_sched_create(&md, B, QKF_SCHED_RECORD);
    cr_assert_not_null(e, "%s", qkf_last_error());
    float *logits = malloc((size_t)B * md.cfg.num_classes * sizeof(float));
    cr_assert_eq(qkf_sched_forward(e, x, B, logits, NULL), 0, "%s", qkf_last_error());
    const qkf_graph *g = qkf_sched_graph(e);
    qkf_hw_profile hw;
    load_hw(profile, &hw);
    qkf_map m;
    cr_assert_eq(qkf_map_build(&m, g, &hw), 0, "%s: %s", name, qkf_last_error());
    qkf_cost c;
    cr_assert_eq(qkf_cost_init(&c, &m, md.cfg.T), 0);
    qkf_cost_detailed(&c);
    const uint8_t **sp = calloc((size_t)g->n_lif, sizeof *sp);
    for (int l = 0; l < g->n_lif; l++)
        sp[l] = qkf_sched_spikes(e, l);
    cr_assert_eq(qkf_cost_add(&c, sp, nd == 5 ? x : NULL, B), 0);
    const qkf_stats *st = qkf_sched_stats(e);
    /* per engine node: the units' look-ups are its accumulates (+ its once-only MACs); the
     * mask looks up its k synapse and the d (QKCA: N) synapses of each attention spike */
    for (int i = 0; i < st->n_nodes; i++) {
        const qkf_node_info *ni = &st->node[i];
        qkf_work wk = qkf_stats_node_total(st, i, -1);
        int64_t look = 0, spikes = 0;
        int units = 0, spk_units = 0;
        for (int u = 0; u < m.n_units; u++) {
            qkf_cost_counts k = qkf_cost_unit(&c, u);
            if (m.unit[u].stat_node == i)
                look += k.n[QKF_ACT_LOOKUP], units++;
            if (m.unit[u].spike_node == i)
                spikes += k.n[QKF_ACT_SPIKE], spk_units++;
        }
        if (spk_units)
            cr_assert_eq(spikes, wk.out_spikes, "%s %s: %s spikes", name, profile, ni->name);
        if (ni->kind == QKF_NODE_ADD || ni->kind == QKF_NODE_ATTN)
            continue; /* no unit of its own: sums are routing, attention LIFs are counted above */
        cr_assert_gt(units, 0, "%s: node %s has no unit", name, ni->name);
        int64_t want = wk.acs + wk.macs;
        if (ni->kind == QKF_NODE_MASK) {
            int64_t fan = ni->head_dim; /* QKTA: an attention spike gates its head's channels */
            for (int u = 0; u < m.n_units; u++)
                if (m.unit[u].kind == QKF_UNIT_MASK && m.unit[u].stat_node == i &&
                    m.unit[m.unit[u].in[0].src[0]].N == 1)
                    fan = m.unit[u].N; /* QKCA: every token of its channel */
            want = wk.in_spikes[1] + fan * wk.in_spikes[0];
        }
        cr_assert_eq(look, want, "%s %s: node %s: look-ups %lld, engine %lld", name, profile,
                     ni->name, (long long)look, (long long)want);
    }
    /* totals recompute: cores, steps and layers give the same sums; energy is linear */
    qkf_cost_counts all = qkf_cost_total(&c), bystep, byunit;
    memset(&bystep, 0, sizeof bystep), memset(&byunit, 0, sizeof byunit);
    for (int t = 0; t < md.cfg.T; t++)
        for (int a = 0; a < QKF_ACT_COUNT; a++)
            bystep.n[a] += c.step[t].n[a];
    for (int u = 0; u < m.n_units; u++) {
        qkf_cost_counts k = qkf_cost_unit(&c, u);
        for (int a = 0; a < QKF_ACT_COUNT; a++)
            byunit.n[a] += k.n[a];
    }
    for (int a = 0; a < QKF_ACT_COUNT; a++) {
        cr_assert_eq(bystep.n[a], all.n[a], "%s", qkf_act_names[a]);
        cr_assert_eq(byunit.n[a], all.n[a], "%s", qkf_act_names[a]);
    }
    cr_assert_eq(all.n[QKF_ACT_ACCESS], m.neurons * md.cfg.T * B);
    cr_assert_eq(all.n[QKF_ACT_MSG_OUT] > 0, 1);
    double en[QKF_E_COUNT], ec[QKF_E_COUNT], sum = 0;
    qkf_cost_energy(&hw, &all, en);
    for (int i = 0; i < m.n_cores; i++) {
        qkf_cost_energy(&hw, &c.core[i], ec);
        sum += ec[QKF_E_TOTAL];
    }
    /* the detailed model: never below the simple model's network-free bound (the slowest
     * core's generation or processing, plus the sync), as every core's messages and work are
     * in it; and no more counts than the simple model's */
    for (int t = 0; t < md.cfg.T; t++) {
        double bound = c.lat_s[t] - c.net_s[t];
        cr_assert_geq(c.det_s[t], bound * (1 - 1e-9), "%s %s t=%d: detailed %g < bound %g", name,
                      profile, t, c.det_s[t], bound);
        cr_assert(c.det_s[t] > 0 || c.lat_s[t] == 0);
    }
    /* double sums in a different order: relative rounding only */
    cr_assert_leq(fabs(sum - en[QKF_E_TOTAL]), 1e-9 * en[QKF_E_TOTAL] + 1e-30);
    cr_assert_leq(fabs(en[0] + en[1] + en[2] + en[3] - en[4]), 1e-12 * en[4] + 1e-30);
    free(sp);
    qkf_cost_free(&c);
    qkf_map_free(&m);
    free(logits);
    qkf_sched_free(e);
    qkf_free(x);
    qkf_model_free(&md);
}

Test(cost, sums_to_engine_counts, .timeout = 300)
{
    const char *names[] = {"cifar_small", "cifar_qkca", "imagenet_small", "dvs128_small",
                           "cifar10dvs_small"};
    for (int i = 0; i < 5; i++) {
        costs_fixture(names[i], "loihi");
        costs_fixture(names[i], "ideal-45nm");
    }
}

/* ---- a network counted by hand ---------------------------------------------------------------- */

/* dvs input [1][1][2] -> conv 1x1 (2 channels) + LIF -> readout (3 classes), T = 2, on a made-up
 * chip: 2 x 1 tiles of one core with 2 neurons each, binary spikes, round costs. */
Test(cost, hand_counted)
{
    qkf_tensor tens[4] = {{1, 1, 2, 0, 0, "input"},
                          {2, 1, 2, 0, 0, "cur"},
                          {2, 1, 2, 0, 1, "s"},
                          {3, 1, 1, 0, 0, "logits"}};
    qkf_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].kind = QKF_OP_CONV, ops[0].in0 = 0, ops[0].in1 = ops[0].in2 = -1, ops[0].out = 1;
    snprintf(ops[0].name, sizeof ops[0].name, "c_conv");
    ops[0].cin = 1, ops[0].cout = 2, ops[0].k = 1, ops[0].stride = 1;
    ops[1].kind = QKF_OP_LIF, ops[1].in0 = 0 + 1, ops[1].in1 = ops[1].in2 = -1, ops[1].out = 2;
    snprintf(ops[1].name, sizeof ops[1].name, "c_lif");
    ops[1].lif_index = 0, ops[1].vth = 1;
    ops[2].kind = QKF_OP_READOUT, ops[2].in0 = 2, ops[2].in1 = ops[2].in2 = -1, ops[2].out = 3;
    snprintf(ops[2].name, sizeof ops[2].name, "head");
    int lif_ops[1] = {1};
    qkf_graph g;
    memset(&g, 0, sizeof g);
    g.cfg.num_classes = 3, g.cfg.T = 2;
    g.n_ops = 3, g.n_tensors = 4, g.n_lif = 1, g.ops = ops, g.tensors = tens, g.input = 0;
    g.lif_ops = lif_ops;

    qkf_hw_profile hw;
    memset(&hw, 0, sizeof hw);
    snprintf(hw.name, sizeof hw.name, "hand");
    hw.mesh_width = 2, hw.mesh_height = 1, hw.cores_per_tile = 1, hw.max_neurons = 2;
    hw.n_sync = 1, hw.sync_s[0] = 100e-9;
    qkf_hw_core_cost *k = &hw.cost;
    k->e_process_spike = 1e-12, k->t_process_spike = 1e-9;
    k->e_access_neuron = 2e-12, k->t_access_neuron = 2e-9;
    k->e_update_neuron = 3e-12, k->t_update_neuron = 3e-9;
    k->e_spike_out = 5e-12, k->t_spike_out = 5e-9;
    k->e_message_out = 7e-12, k->t_message_out = 7e-9;
    k->e_message_in = 11e-12, k->t_message_in = 11e-9;
    hw.e_hop_ew = 13e-12, hw.t_hop_ew = 13e-9, hw.e_hop_ns = 17e-12, hw.t_hop_ns = 17e-9;

    qkf_map m;
    cr_assert_eq(qkf_map_build(&m, &g, &hw), 0, "%s", qkf_last_error());
    /* conv: 4 neurons, 2 per core: one channel (both tokens) per core; readout: 2 counters */
    cr_assert_eq(m.n_cores, 3);
    cr_assert_eq(m.unit[0].tq, 2);
    cr_assert_eq(m.unit[0].cc, 1);
    cr_assert_eq(m.core[0].x, 0);
    cr_assert_eq(m.core[1].x, 1);
    cr_assert_eq(m.core[2].x, 2);
    cr_assert_eq(m.chips, 2);

    /* t0: input event at pixel 0 (count 1); neuron (c0, p0) fires.
     * t1: input event at pixel 1 with count 2; neurons (c0, p1) and (c1, p1) fire. */
    float frames[2][2] = {{1, 0}, {0, 2}};
    uint8_t s[2][4] = {{1, 0, 0, 0}, {0, 1, 0, 1}};
    const uint8_t *sp[1] = {&s[0][0]};
    qkf_cost c;
    cr_assert_eq(qkf_cost_init(&c, &m, 2), 0);
    qkf_cost_detailed(&c);
    cr_assert_eq(qkf_cost_add(&c, sp, &frames[0][0], 1), 0);
    /* by hand (docs/hardware.md, "Mapping and costs"):
     * t0  core0: access 2, update 2, spike 1, lookup 1, in 1, out 1, east 2 (to core 2)
     *         gen 4+6+5+7 = 22 ns, proc 11+1 = 12 ns
     *     core1: access 2, update 2, lookup 1, in 1: gen 10, proc 12
     *     core2: access 2, update 1 (counter 0), lookup 1, in 1: gen 7, proc 12
     *     step: max(22, 12) + 2 hops x 13 ns + 100 ns sync = 148 ns
     * t1  core0: access 2, update 2, spike 1, lookup 2, in 2 (count 2, binary), out 1, east 2
     *         gen 22, proc 22+2 = 24
     *     core1: the same, east 1: gen 22, proc 24
     *     core2: access 2, update 2, lookup 2 + 2 x 3 head MACs = 8, in 2: gen 10, proc 30
     *     step: max(22, 30) + 26 + 100 = 156 ns */
    qkf_cost_counts all = qkf_cost_total(&c);
    int64_t want[QKF_ACT_COUNT] = {12, 11, 3, 15, 0, 3, 9, 0, 5, 0, 0};
    for (int a = 0; a < QKF_ACT_COUNT; a++)
        cr_assert_eq(all.n[a], want[a], "%s: %lld, by hand %lld", qkf_act_names[a],
                     (long long)all.n[a], (long long)want[a]);
    double e[QKF_E_COUNT];
    qkf_cost_energy(&hw, &all, e);
    /* synapse 15 pJ; soma 12x2 + 11x3 + 3x5 = 72 pJ; network 3x7 + 9x11 + 5x13 = 185 pJ */
    cr_assert_float_eq(e[QKF_E_SYNAPSE], 15e-12, 1e-24);
    cr_assert_float_eq(e[QKF_E_SOMA], 72e-12, 1e-24);
    cr_assert_float_eq(e[QKF_E_NETWORK], 185e-12, 1e-24);
    cr_assert_float_eq(e[QKF_E_TOTAL], 272e-12, 1e-24);
    cr_assert_float_eq(c.lat_s[0], 148e-9, 1e-18);
    cr_assert_float_eq(c.lat_s[1], 156e-9, 1e-18);
    /* the detailed model by hand (sim/noc.h): messages in each core's neuron order, a neuron's
     * soma work (access 2, update 3, spike 5 ns) then its messages (+7 ns out); the cores' own
     * work (input from outside, head MACs) runs on their receiving side from 0.
     * t0  core0: neuron 0 (10) fires -> message to core 2 sent at 10 + 7 = 17; neuron 1 (5):
     *            placeholder at 22. core1: placeholder 10. core2: placeholder 5 + 2 = 7.
     *     core0, core1 own work: 11 + 1 = 12 each. The message: 2 hops east (26 ns), nothing
     *     in flight: received at 43 by the idle core 2, processed 11 + 1 = 12 -> 55.
     *     step: 55 + 100 = 155 ns
     * t1  core0: neurons 0 (5), 1 (10) -> message sent at 22; core1 the same, also at 22 (ties:
     *     the lower core first). Own work: core0, core1 2 x 11 + 2 = 24; core2 6 head MACs = 6.
     *     core0's message: 26 ns of hops, received at 48, done at 60; it stays in flight from 22
     *     to 48 with density 1/4 on each link of its route. core1's message (1 hop) shares the
     *     last link: 1/4 along its route, mean delay in flight 12: congestion 1/4 x 12 / 2 =
     *     1.5 ns < its 13 ns hop; no blocking (capacity 2 x 1). Received at max(60, 35) = 60,
     *     done at 72. step: 72 + 100 = 172 ns */
    cr_assert_float_eq(c.det_s[0], 155e-9, 1e-18);
    cr_assert_float_eq(c.det_s[1], 172e-9, 1e-18);
    cr_assert_eq(c.n_blk[0] + c.n_blk[1], 0);
    qkf_cost_free(&c);
    qkf_map_free(&m);
}

/* The detailed model's contention by hand: one tile of 3 cores (every route is the sending
 * core's injection link, hops 0), link_buffer_size 1, so a route holds (0 + 1) x 1 message
 * before it blocks. Core 0 sends four messages to core 1 (processing 10 ns each) and one to
 * core 2 (20 ns), one every 1 ns. */
Test(cost, noc_contention_by_hand)
{
    int x[3] = {0, 0, 0}, y[3] = {0, 0, 0}, slot[3] = {0, 1, 2};
    qkf_noc n = {3, x, y, slot, 1, 1, 3, {1e-9, 1e-9, 1e-9, 1e-9}, 1};
    qkf_noc_msg msg[5] = {{1, 1e-9, 10e-9}, {1, 1e-9, 10e-9}, {1, 1e-9, 10e-9},
                          {1, 1e-9, 10e-9}, {2, 1e-9, 20e-9}};
    int64_t off[4] = {0, 5, 5, 5};
    qkf_noc_ws ws;
    memset(&ws, 0, sizeof ws);
    double blk;
    int64_t nb;
    /* t=1 m1: empty link, received at 1 by core 1, done at 11; in flight until 1.
     * t=2 m2: m1 has left; received at max(11, 2) = 11, done 21; in flight until 11.
     * t=3 m3: m2 in flight (density 1/2, mean delay 10): congestion 1/2 x 10 / 1 = 5 ns, so
     *         earliest 8; core 1 busy: received 21, done 31.
     * t=4 m4: m2, m3 in flight (1.0, not over the capacity 1): congestion 10: earliest 14;
     *         received 31, done 41.
     * t=5 m5: m2, m3, m4 in flight (1.5 > 1): blocked (1.5 - 1) x 10 = 5 ns, sent at 10;
     *         congestion 1.5 x 10 = 15: received by the idle core 2 at 25, done at 45.
     * The step: 45 ns (without contention m5 would be done at 25 and the step at 41). */
    double lat = qkf_noc_schedule(&n, msg, off, NULL, &ws, &blk, &nb);
    cr_assert_float_eq(lat, 45e-9, 1e-18, "%g", lat);
    cr_assert_float_eq(blk, 5e-9, 1e-18);
    cr_assert_eq(nb, 1);
    /* the same step again: the mesh starts empty each step */
    cr_assert_float_eq(qkf_noc_schedule(&n, msg, off, NULL, &ws, NULL, NULL), 45e-9, 1e-18);
    /* m5 alone: nothing shares its link: sent at 1, done at 21 (hops 0) */
    int64_t off5[4] = {0, 1, 1, 1};
    cr_assert_float_eq(qkf_noc_schedule(&n, &msg[4], off5, NULL, &ws, &blk, &nb), 21e-9, 1e-18);
    cr_assert_eq(nb, 0);
    /* routes that share no link (a 3 x 1 mesh: core 0 east and core 2 west into core 1's
     * tile, entering it from different sides) to one receiver: sent at 2, 1 ns hops, received
     * at 3 and at max(6, 3) = 6, done 9: the order and the receiver alone decide; a core's
     * own work (local) delays what it receives */
    int x3[3] = {0, 1, 2}, s3[3] = {0, 0, 0};
    qkf_noc n3 = {3, x3, y, s3, 3, 1, 1, {1e-9, 1e-9, 1e-9, 1e-9}, 1};
    qkf_noc_msg m3[2] = {{1, 2e-9, 3e-9}, {1, 2e-9, 3e-9}};
    int64_t o3[4] = {0, 1, 1, 2};
    cr_assert_float_eq(qkf_noc_schedule(&n3, m3, o3, NULL, &ws, NULL, NULL), 9e-9, 1e-18);
    double local[3] = {0, 7e-9, 0};
    cr_assert_float_eq(qkf_noc_schedule(&n3, m3, o3, local, &ws, NULL, NULL), 13e-9, 1e-18);
    qkf_noc_free(&ws);
}

/* ---- NeuroBench ------------------------------------------------------------------------------- */

#include "../sim/neurobench.h"

static void nb_fixture(const char *name)
{
    char w[512], ref[512];
    snprintf(w, sizeof w, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(ref, sizeof ref, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    qkf_model md;
    memset(&md, 0, sizeof md);
    cr_assert_eq(qkf_ckpt_load(w, &md), 0, "%s", qkf_last_error());
    float *x;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(ref, "input", &x, &nd, sh), 0, "%s", qkf_last_error());
    if (nd == 5)
        md.cfg.T = (int)sh[1];
    int B = (int)sh[0], T = md.cfg.T;
    float *lg = malloc((size_t)B * md.cfg.num_classes * sizeof(float));
    qkf_sched *e = qkf_sched_create(&md, B, 0);
    cr_assert_eq(qkf_sched_forward(e, x, B, lg, NULL), 0);
    qkf_dense *d = qkf_dense_create(&md, B, QKF_DENSE_KEEP_ALL | QKF_DENSE_RECORD_VH);
    cr_assert_not_null(d);
    cr_assert_eq(qkf_dense_forward(d, x, B, lg, NULL), 0);
    qkf_nb nb;
    cr_assert_eq(qkf_nb_init(&nb, &md, qkf_dense_graph(d)), 0);
    cr_assert_eq(qkf_nb_add(&nb, d, B), 0);
    const qkf_stats *st = qkf_sched_stats(e);
    /* activation sparsity: the engine's LIF spikes over its neurons (the fixtures' spikes agree
     * between engines exactly, test_event) */
    int64_t neurons = 0, spikes = 0;
    for (int i = 0; i < st->n_nodes; i++)
        if (st->node[i].neurons > 0) {
            neurons += st->node[i].neurons;
            spikes += qkf_stats_node_total(st, i, -1).out_spikes;
        }
    cr_assert_eq(nb.act_numel, neurons * T * B);
    cr_assert_eq(nb.act_nonzero, spikes, "%s", name);
    /* membranes: all at the first step, at most all at every step */
    cr_assert_geq(nb.mem_updates, neurons * B);
    cr_assert_leq(nb.mem_updates, neurons * T * B);
    /* a conv fed by one LIF's binary spikes: its effective ACs are the pairs of (spike, non-zero
     * weight), which with no zero weight are the event engine's accumulates */
    cr_assert_eq(nb.zero_weights, 0);
    int checked = 0;
    const qkf_graph *g = qkf_dense_graph(d);
    for (int l = 0; l < nb.n_layers; l++) {
        const qkf_op *op = &g->ops[nb.layer[l].op];
        if (op->kind != QKF_OP_CONV)
            continue;
        int p = -1;
        for (int i = 0; i < g->n_ops; i++)
            if (g->ops[i].out == op->in0)
                p = i;
        if (p < 0 || g->ops[p].kind != QKF_OP_LIF)
            continue;
        for (int i = 0; i < st->n_nodes; i++)
            if (st->node[i].op == nb.layer[l].op) {
                cr_assert_eq(nb.layer[l].eff_acs, qkf_stats_node_total(st, i, -1).acs, "%s %s",
                             name, nb.layer[l].name);
                cr_assert_eq(nb.layer[l].eff_macs, 0);
                checked++;
            }
    }
    cr_assert_gt(checked, 3);
    cr_assert_eq(nb.footprint, md.params.total * 4 + 8 * (int64_t)(nb.n_layers - 1));
    qkf_nb_free(&nb);
    qkf_dense_free(d);
    qkf_sched_free(e);
    free(lg);
    qkf_free(x);
    qkf_model_free(&md);
}

Test(neurobench, against_engine_counts, .timeout = 300)
{
    nb_fixture("cifar_small");
    nb_fixture("imagenet_small");
    nb_fixture("dvs128_small");
}

/* NeuroBench on an integer model (qkf sim --hw loihi): from the dense integer engine's tensors,
 * against the integer event engine's own spikes and the integer weights. */
static void nb_int_fixture(const char *name)
{
    char w[512], ref[512];
    snprintf(w, sizeof w, "%s/%s.weights.h5", QKF_FIXTURE_DIR, name);
    snprintf(ref, sizeof ref, "%s/%s.ref.h5", QKF_FIXTURE_DIR, name);
    qkf_model md;
    memset(&md, 0, sizeof md);
    cr_assert_eq(qkf_ckpt_load(w, &md), 0, "%s", qkf_last_error());
    float *x;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(ref, "input", &x, &nd, sh), 0, "%s", qkf_last_error());
    if (nd == 5)
        md.cfg.T = (int)sh[1];
    int B = (int)sh[0], T = md.cfg.T;
    qkf_hw_profile hw;
    load_hw("loihi", &hw);
    qkf_qmodel q;
    cr_assert_eq(qkf_quantize(&md, &hw.arith, "loihi", NULL, &q), 0, "%s", qkf_last_error());
    const qkf_graph *g = &q.g;
    qkf_sched *e = qkf_sched_create_int(&q, B, QKF_SCHED_RECORD);
    cr_assert_not_null(e, "%s", qkf_last_error());
    float *lg = malloc((size_t)B * md.cfg.num_classes * sizeof(float)); /* logits required */
    cr_assert_eq(qkf_sched_forward(e, x, B, lg, NULL), 0, "%s", qkf_last_error());
    qkf_dense_int *d = qkf_dense_int_create(&q, B, 0);
    cr_assert_not_null(d, "%s", qkf_last_error());
    cr_assert_eq(qkf_dense_int_forward(d, x, B, NULL, NULL, NULL), 0, "%s", qkf_last_error());
    qkf_nb nb;
    cr_assert_eq(qkf_nb_init_int(&nb, &q), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_nb_add_int(&nb, d, B), 0, "%s: %s", name, qkf_last_error());
    /* activations: the event engine's spikes over its neurons */
    int64_t neurons = 0, spikes = 0;
    for (int l = 0; l < g->n_lif; l++) {
        int64_t n = qkf_graph_lif_neurons(g, l) * T * B;
        const uint8_t *s = qkf_sched_spikes(e, l);
        for (int64_t i = 0; i < n; i++)
            spikes += s[i];
        neurons += qkf_graph_lif_neurons(g, l);
    }
    cr_assert_eq(nb.act_numel, neurons * T * B, "%s", name);
    cr_assert_eq(nb.act_nonzero, spikes, "%s", name);
    cr_assert_geq(nb.mem_updates, neurons * B);
    cr_assert_leq(nb.mem_updates, neurons * T * B);
    /* a conv fed by one LIF: its effective ACs are the (spike, non-zero integer weight) pairs,
     * counted here from the event engine's recorded spikes and the weight mantissas; at most
     * the accumulates the engine performed (it adds zero weights too) */
    const qkf_stats *st = qkf_sched_stats(e);
    int checked = 0;
    for (int l = 0; l < nb.n_layers; l++) {
        int oi = nb.layer[l].op;
        const qkf_op *op = &g->ops[oi];
        if (op->kind != QKF_OP_CONV)
            continue;
        int p = -1;
        for (int i = 0; i < g->n_ops; i++)
            if (g->ops[i].out == op->in0)
                p = i;
        if (p < 0 || g->ops[p].kind != QKF_OP_LIF)
            continue;
        const qkf_tensor *xt = &g->tensors[op->in0];
        const uint8_t *s = qkf_sched_spikes(e, g->ops[p].lif_index);
        const int16_t *wm = q.ops[oi].w_mant;
        int kk = op->k * op->k, N = xt->h * xt->w;
        int ho = (xt->h + 2 * op->pad - op->k) / op->stride + 1;
        int wo = (xt->w + 2 * op->pad - op->k) / op->stride + 1;
        int64_t want = 0;
        for (int64_t f = 0; f < (int64_t)T * B; f++)
            for (int ci = 0; ci < op->cin; ci++)
                for (int pp = 0; pp < N; pp++) {
                    if (!s[(f * op->cin + ci) * N + pp])
                        continue;
                    int iy = pp / xt->w, ix = pp % xt->w;
                    for (int oy = 0; oy < ho; oy++)
                        for (int ox = 0; ox < wo; ox++) {
                            int ky = iy - (oy * op->stride - op->pad);
                            int kx = ix - (ox * op->stride - op->pad);
                            if (ky < 0 || ky >= op->k || kx < 0 || kx >= op->k)
                                continue;
                            for (int co = 0; co < op->cout; co++)
                                want +=
                                    wm[((int64_t)co * op->cin + ci) * kk + ky * op->k + kx] != 0;
                        }
                }
        cr_assert_eq(nb.layer[l].eff_acs, want, "%s %s", name, op->name);
        cr_assert_eq(nb.layer[l].eff_macs, 0);
        for (int i = 0; i < st->n_nodes; i++)
            if (st->node[i].op == oi)
                cr_assert_leq(nb.layer[l].eff_acs, qkf_stats_node_total(st, i, -1).acs);
        checked++;
    }
    cr_assert_gt(checked, 3, "%s", name);
    /* footprint at the profile's bit widths; zero weights are zero mantissas */
    const qkf_hw_arith *a = &q.arith;
    int eb = 0, be = 0;
    while ((1 << eb) < a->weight_exp_max - a->weight_exp_min + 1)
        eb++;
    while ((1 << be) < a->bias_exp_max + 1)
        be++;
    int64_t bits = 0, zeros = 0;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        if (op->kind == QKF_OP_LIF)
            bits += (int64_t)g->tensors[op->out].c * a->threshold_bits;
        else if (op->kind == QKF_OP_CONV) {
            int64_t n = (int64_t)op->cout * op->cin * op->k * op->k;
            for (int64_t j = 0; j < n; j++)
                zeros += q.ops[i].w_mant[j] == 0;
            bits += n * a->weight_bits + (a->per_channel ? op->cout : 1) * eb +
                    (int64_t)op->cout * (a->bias_bits + be);
        } else if (op->kind == QKF_OP_READOUT) {
            int64_t n = (int64_t)g->cfg.num_classes * g->tensors[op->in0].c;
            for (int64_t j = 0; j < n; j++)
                zeros += q.ops[i].head_mant[j] == 0;
            bits += n * a->weight_bits + eb + 64 * (int64_t)g->cfg.num_classes;
        }
    }
    cr_assert_eq(nb.footprint, (bits + 7) / 8, "%s", name);
    cr_assert_eq(nb.zero_weights, zeros);
    cr_assert_lt(nb.footprint, md.params.total * 4, "integer weights are smaller");
    qkf_nb_free(&nb);
    qkf_dense_int_free(d);
    qkf_sched_free(e);
    free(lg);
    qkf_qmodel_free(&q);
    qkf_free(x);
    qkf_model_free(&md);
}

Test(neurobench, integer_against_engine_counts, .timeout = 300)
{
    nb_int_fixture("cifar_small");
    nb_int_fixture("dvs128_small");
}
