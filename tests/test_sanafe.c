/* qkf map --export-sanafe (io/sanafe.c): the written network parses back (a line reader of the
 * format the writer documents) and is the mapping and the run: every neuron of every unit once,
 * with the spikes the event engine recorded (the mask's recomputed here from k and the attention
 * neuron), on the core the mapping gave it, in a soma slot of its own; every conv edge's weight
 * one of the model's kernel taps between those two neurons; the synapses a step's spikes look up
 * and the destination cores they reach equal the cost model's look-ups and messages, less what
 * SANA-FE cannot hold as synapses (the encoding and head MACs, SSA's kv table). The refusals:
 * no input, a dvs model, a model that does not fit, a directory that is no earlier export.
 * SANA-FE itself is not run here (it is built outside the project: BENCHMARKS.md). */
#include "util.h"

#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>

#include "../io/hw_profile.h"
#include "../io/io.h"
#include "../io/sanafe.h"
#include "../models/map.h"
#include "../sim/cost.h"
#include "../sim/sched.h"

/* A tiny QKTA + SSA model (8 x 8 images, 16 channels, 2 heads, T = 2) whose BatchNorms are set
 * to fire often (scale 2.5, shift 1.0), and a random image. */
static void tiny_model(qkf_model *md, float **x, int qkca)
{
    memset(md, 0, sizeof *md);
    cr_assert_eq(qkf_config_preset("cifar10", &md->cfg), 0);
    md->cfg.img_size = 8, md->cfg.embed_dims = 16, md->cfg.num_heads = 2, md->cfg.depths = 3;
    md->cfg.T = 2, md->cfg.mlp_ratio = 1.0f, md->cfg.num_classes = 4;
    md->cfg.qk_attn = qkca ? QKF_QK_CHANNEL : QKF_QK_TOKEN;
    cr_assert_eq(qkf_params_build(&md->cfg, &md->params), 0, "%s", qkf_last_error());
    qkf_params_init(&md->cfg, &md->params, 7);
    for (int i = 0; i < md->params.n; i++) {
        const qkf_param *p = &md->params.p[i];
        size_t l = strlen(p->name);
        float v = l > 10 && !strcmp(p->name + l - 10, "_bn.weight") ? 2.5f
                  : l > 8 && !strcmp(p->name + l - 8, "_bn.bias") ? 1.0f
                                                                   : NAN;
        if (!isnan(v))
            for (int64_t k = 0; k < p->numel; k++)
                md->params.data[p->offset + k] = v;
    }
    int64_t n = 3 * 8 * 8;
    *x = malloc((size_t)n * sizeof(float));
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        (*x)[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
}

static void cost_json(FILE *f, void *arg)
{
    qkf_cost_write_json(f, arg);
}

typedef struct {
    int u;
    int64_t x;
} nref;

/* "L<u>.<x>" at s; returns the character after it. */
static const char *parse_ref(const char *s, nref *r)
{
    char *e;
    cr_assert(s[0] == 'L', "%s", s);
    r->u = (int)strtol(s + 1, &e, 10);
    cr_assert(*e == '.', "%s", s);
    r->x = strtoll(e + 1, &e, 10);
    return e;
}

static void structure_and_counts(int qkca)
{
    char dir[256];
    tmpdir_make(dir, sizeof dir, "sanafe");
    qkf_model md;
    float *x;
    tiny_model(&md, &x, qkca);
    int T = md.cfg.T;
    qkf_sched *e = qkf_sched_create(&md, 1, QKF_SCHED_RECORD);
    cr_assert_not_null(e, "%s", qkf_last_error());
    float logits[4];
    cr_assert_eq(qkf_sched_forward(e, x, 1, logits, NULL), 0, "%s", qkf_last_error());
    const qkf_graph *g = qkf_sched_graph(e);
    qkf_hw_profile hw;
    cr_assert_eq(qkf_hw_load("loihi", &hw), 0, "%s", qkf_last_error());
    qkf_map m;
    cr_assert_eq(qkf_map_build(&m, g, &hw), 0, "%s", qkf_last_error());
    cr_assert_gt(m.n_phys, 2, "the test wants several cores");
    qkf_cost c;
    cr_assert_eq(qkf_cost_init(&c, &m, T), 0);
    const uint8_t **sp = calloc((size_t)g->n_lif, sizeof *sp);
    for (int l = 0; l < g->n_lif; l++)
        sp[l] = qkf_sched_spikes(e, l);
    cr_assert_eq(qkf_cost_add(&c, sp, NULL, 1), 0);
    char out[300];
    snprintf(out, sizeof out, "%s/sf", dir);
    cr_assert_eq(qkf_sanafe_write(&m, &md.params, sp, T, cost_json, &c, out), 0, "%s", qkf_last_error());
    cr_assert_eq(tmpdir_entries(dir, NULL, 0), 1, "a .tmp left behind?");
    cr_assert_eq(tmpdir_entries(out, NULL, 0), 3);

    int nu = m.n_units;
    /* the spikes each unit must play: LIF spikes; the mask's k where the attention fired */
    uint8_t **want = calloc((size_t)nu, sizeof *want);
    int64_t total_spikes = 0;
    for (int u = 0; u < nu; u++) {
        const qkf_map_unit *un = &m.unit[u];
        want[u] = calloc((size_t)(T * un->neurons), 1);
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < un->neurons; i++) {
                uint8_t v = 0;
                if (un->lif_index >= 0) {
                    v = sp[un->lif_index][t * un->neurons + i];
                } else if (un->kind == QKF_UNIT_MASK) {
                    const qkf_map_unit *a = &m.unit[un->in[0].src[0]];
                    const qkf_map_unit *k = &m.unit[un->in[1].src[0]];
                    int64_t ch = i / un->N, n = i % un->N;
                    v = sp[k->lif_index][t * k->neurons + i] &&
                        sp[a->lif_index][t * a->neurons +
                                         (a->N == 1 ? ch : ch / un->d * un->N + n)];
                }
                want[u][t * un->neurons + i] = v;
                total_spikes += v;
            }
    }
    qkf_cost_counts tot = qkf_cost_total(&c);
    cr_assert_eq(total_spikes, tot.n[QKF_ACT_SPIKE], "spikes played = the cost model's spikes");
    cr_assert_gt(total_spikes, 100, "the tiny model should fire");

    /* read snn.yaml back */
    FILE *f = fopen(tmpdir_path(out, "snn.yaml"), "r");
    cr_assert_not_null(f);
    uint8_t **seen = calloc((size_t)nu, sizeof *seen), **mapped = calloc((size_t)nu, sizeof *mapped);
    for (int u = 0; u < nu; u++) {
        seen[u] = calloc((size_t)m.unit[u].neurons, 1);
        mapped[u] = calloc((size_t)m.unit[u].neurons, 1);
    }
    /* per step: synapses looked up and (source neuron, physical core) pairs reached */
    int64_t look[2] = {0, 0}, edges = 0;
    int64_t *base = calloc((size_t)nu + 1, sizeof(int64_t)); /* neuron offsets of the units */
    for (int u = 0; u < nu; u++)
        base[u + 1] = base[u] + m.unit[u].neurons;
    uint8_t *reach = calloc((size_t)(base[nu] * m.n_phys), 1); /* (source neuron, phys core) */
    uint8_t *slot_used = calloc((size_t)m.n_phys * 4096, 1);
    char line[512], sect = 0;
    int group = -1, n_groups = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        if (!strncmp(line, "network:", 8) || !strncmp(line, "  groups:", 9)) {
            sect = 'g';
            continue;
        }
        if (!strncmp(line, "  edges:", 8)) {
            sect = 'e';
            continue;
        }
        if (!strncmp(line, "mappings:", 9)) {
            sect = 'm';
            continue;
        }
        if (sect == 'g' && !strncmp(line, "    - name: L", 13)) {
            group = atoi(line + 13);
            cr_assert_eq(group, n_groups++, "groups in unit order");
            continue;
        }
        if (sect == 'g' && !strncmp(line, "        - ", 10)) {
            int64_t id;
            int a[2] = {-1, -1};
            cr_assert_eq(sscanf(line + 10, "%" SCNd64 ": [spikes: [%d, %d]]", &id, &a[0], &a[1]),
                         3, "%s", line);
            cr_assert(id >= 0 && id < m.unit[group].neurons && !seen[group][id], "%s", line);
            seen[group][id] = 1;
            for (int t = 0; t < T; t++)
                cr_assert_eq(a[t], want[group][t * m.unit[group].neurons + id], "%s", line);
            continue;
        }
        if (sect == 'e' && !strncmp(line, "    - L", 7)) {
            nref s, d;
            const char *p = parse_ref(line + 6, &s);
            cr_assert(!strncmp(p, " -> ", 4), "%s", line);
            p = parse_ref(p + 4, &d);
            cr_assert(s.u >= 0 && s.u < nu && s.x < m.unit[s.u].neurons && d.u >= 0 && d.u < nu &&
                          d.x < m.unit[d.u].neurons,
                      "%s", line);
            const qkf_map_unit *v = &m.unit[d.u];
            cr_assert(!strncmp(p, ": [weight: 0.0", 14), "%s", line);
            if (v->kind == QKF_UNIT_CONV) { /* a kernel tap of the model between the two */
                double w;
                cr_assert_eq(sscanf(p, ": [weight: 0.0, qkf_w: %lf]", &w), 1, "%s", line);
                const qkf_param *pw = &md.params.p[g->ops[v->op].p_w];
                cr_assert(strstr(pw->name, "conv.weight") && pw->shape[0] == v->C &&
                              pw->shape[1] == v->cin,
                          "%s: weight %s", v->name, pw->name);
                const float *W = md.params.data + pw->offset;
                int64_t sn = (int64_t)v->ih * v->iw;
                int ci = (int)(s.x / sn), iy = (int)(s.x % sn) / v->iw, ix = (int)(s.x % sn) % v->iw;
                int co = (int)(d.x / v->N), q = (int)(d.x % v->N), found = 0;
                for (int oy = 0; oy < v->ho && !found; oy++)
                    for (int ox = 0; ox < v->wo && !found; ox++) {
                        int qq = v->pool ? (oy / 2) * v->gw + ox / 2 : oy * v->gw + ox;
                        int ky = iy - (oy * v->stride - v->pad), kx = ix - (ox * v->stride - v->pad);
                        if (qq == q && ky >= 0 && ky < v->k && kx >= 0 && kx < v->k &&
                            (float)w == W[((int64_t)(co * v->cin + ci) * v->k + ky) * v->k + kx])
                            found = 1;
                    }
                cr_assert(found, "no kernel tap of %s gives %s", v->name, line);
            }
            edges++;
            reach[(base[s.u] + s.x) * m.n_phys + m.core[qkf_map_core_of(&m, d.u, d.x)].phys] = 1;
            for (int t = 0; t < T; t++)
                look[t] += want[s.u][t * m.unit[s.u].neurons + s.x];
            continue;
        }
        if (sect == 'm' && !strncmp(line, "  - L", 5)) {
            nref r;
            const char *p = parse_ref(line + 4, &r);
            int tile, core, slot;
            cr_assert_eq(sscanf(p, ": {core: %d.%d, soma: \"qkf_forced[%d]\"}", &tile, &core, &slot),
                         3, "%s", line);
            cr_assert(r.u >= 0 && r.u < nu && r.x < m.unit[r.u].neurons && !mapped[r.u][r.x],
                      "%s", line);
            mapped[r.u][r.x] = 1;
            const qkf_map_core *co = &m.core[qkf_map_core_of(&m, r.u, r.x)];
            cr_assert_eq(tile, co->x * hw.mesh_height + co->y, "%s", line);
            cr_assert_eq(core, co->slot, "%s", line);
            cr_assert(slot >= 0 && slot < 4096 && !slot_used[(size_t)co->phys * 4096 + slot],
                      "%s: slot taken", line);
            slot_used[(size_t)co->phys * 4096 + slot] = 1;
        }
    }
    fclose(f);
    cr_assert_eq(n_groups, nu);
    for (int u = 0; u < nu; u++)
        for (int64_t i = 0; i < m.unit[u].neurons; i++)
            cr_assert(seen[u][i] && mapped[u][i], "L%d.%lld listed and mapped once", u, (long long)i);

    /* the look-ups: the cost model's, less the encoding's and the head's MACs and the kv table's
     * coincidences, which SANA-FE holds no synapse for */
    int64_t once = 0, kv_look = 0, kv_msgs = 0;
    for (int i = 0; i < m.n_cores; i++)
        once += c.once_first[i] + c.once_last[i];
    for (int u = 0; u < nu; u++)
        if (m.unit[u].kind == QKF_UNIT_KV) {
            qkf_cost_counts k = qkf_cost_unit(&c, u);
            kv_look += k.n[QKF_ACT_LOOKUP], kv_msgs += k.n[QKF_ACT_MSG_OUT];
        }
    cr_assert_eq(look[0] + look[1], tot.n[QKF_ACT_LOOKUP] - once - kv_look,
                 "edges looked up %lld, the cost model's %lld - %lld MACs - %lld kv",
                 (long long)(look[0] + look[1]), (long long)tot.n[QKF_ACT_LOOKUP], (long long)once,
                 (long long)kv_look);
    cr_assert_gt(edges, 10000);
    /* messages: one per spike and destination physical core over all of a source's consumers;
     * the export's edges reach the cores the cost model's targets reach, less the kv tables'
     * (whose k and v messages, and the tables' own, SANA-FE does not see) */
    int64_t got_msgs = 0, want_msgs = 0, all_msgs = 0;
    uint8_t *hit = calloc((size_t)m.n_phys, 1), *hit_all = calloc((size_t)m.n_phys, 1);
    int *tc = malloc((size_t)m.n_cores * sizeof(int));
    int64_t *tl = malloc((size_t)m.n_cores * sizeof(int64_t));
    for (int s = 0; s < nu; s++)
        for (int64_t i = 0; i < m.unit[s].neurons; i++) {
            memset(hit, 0, (size_t)m.n_phys), memset(hit_all, 0, (size_t)m.n_phys);
            int64_t nw = 0, na = 0, ng = 0;
            for (int p = 0; p < m.n_phys; p++)
                ng += reach[(base[s] + i) * m.n_phys + p];
            for (int v = 0; v < nu; v++)
                for (int sl = 0; sl < m.unit[v].n_in; sl++) {
                    if (!qkf_map_feeds(&m, s, v, sl) ||
                        (m.unit[v].kind == QKF_UNIT_SSA_LIF && sl == 1))
                        continue;
                    int kv = m.unit[v].kind == QKF_UNIT_KV;
                    int nt = qkf_map_targets(&m, v, sl, i, tc, tl, NULL);
                    for (int k = 0; k < nt; k++) {
                        int ph = m.core[tc[k]].phys;
                        if (!kv && !hit[ph])
                            hit[ph] = 1, nw++;
                        if (!hit_all[ph])
                            hit_all[ph] = 1, na++;
                    }
                }
            cr_assert_eq(ng, nw, "L%d.%lld: edges reach %lld cores, the mapping's targets %lld",
                         s, (long long)i, (long long)ng, (long long)nw);
            for (int t = 0; t < T; t++)
                if (want[s][t * m.unit[s].neurons + i])
                    got_msgs += ng, want_msgs += nw, all_msgs += na;
        }
    cr_assert_eq(all_msgs, tot.n[QKF_ACT_MSG_OUT] - kv_msgs);
    /* qkf.json's "export" block (what SANA-FE should count) says the same */
    char *js = NULL;
    size_t jn = 0;
    FILE *jf = fopen(tmpdir_path(out, "qkf.json"), "r");
    cr_assert_not_null(jf);
    cr_assert_gt(getdelim(&js, &jn, 0, jf), 0);
    fclose(jf);
    const char *ex = strstr(js, "\"export\"");
    cr_assert_not_null(ex);
    int64_t ex_look = 0, ex_msgs = 0, ex_spk = 0;
    for (int t = 0; t < T; t++) {
        long long a, b, sk;
        ex = strstr(ex, "{\"t\": ");
        cr_assert_not_null(ex);
        cr_assert_eq(sscanf(strstr(ex, "\"spikes_out\""), "\"spikes_out\": %lld, \"synapse_lookups\": "
                                                       "%lld, \"messages_out\": %lld",
                            &sk, &a, &b),
                     3);
        cr_assert_eq(a, look[t], "step %d", t);
        ex_look += a, ex_msgs += b, ex_spk += sk;
        ex++;
    }
    cr_assert_eq(ex_spk, total_spikes);
    free(js);
    cr_assert_gt(got_msgs, 100);
    cr_assert_eq(ex_msgs, got_msgs);
    free(hit), free(hit_all), free(tc), free(tl), free(reach), free(base);

    /* arch.yaml: the profile's costs, one soma slot per neuron of the fullest core */
    char *a = NULL;
    size_t an = 0;
    FILE *af = fopen(tmpdir_path(out, "arch.yaml"), "r");
    cr_assert_not_null(af);
    cr_assert_gt(getdelim(&a, &an, 0, af), 0);
    fclose(af);
    const char *keys[] = {"topology: mesh", "width: 8", "height: 4",
                          "latency_sync: { 1: 6e-07, 2: 1e-06, 4: 1.4e-06, 29: 1.8e-06 }",
                          "energy_east_hop: 3e-12", "model: input",
                          "energy_access_neuron: 5.12e-11", "energy_spike_out: 6.93e-11",
                          "energy_process_spike: 2.4e-11", "energy_message_out: 1.11e-10",
                          "name: qkf_core[0..3]"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        cr_assert(strstr(a, keys[i]), "arch.yaml lacks %s", keys[i]);
    free(a);

    for (int u = 0; u < nu; u++)
        free(want[u]), free(seen[u]), free(mapped[u]);
    free(want), free(seen), free(mapped), free(slot_used);
    free(sp), free(x);
    qkf_cost_free(&c);
    qkf_map_free(&m);
    qkf_sched_free(e);
    qkf_model_free(&md);
    tmpdir_remove(dir);
}

/* QKTA (attention per head and token) and QKCA (per channel: the mask's attention synapses
 * reach every token of a channel) */
Test(sanafe, structure_and_counts_qkta, .timeout = 300)
{
    structure_and_counts(0);
}

Test(sanafe, structure_and_counts_qkca, .timeout = 300)
{
    structure_and_counts(1);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *s = NULL;
    size_t n = 0;
    if (getdelim(&s, &n, 0, f) < 0) {
        free(s);
        s = strdup("");
    }
    fclose(f);
    return s;
}

static void one_line_error(const char *path, const char *needle)
{
    char *e = slurp(path);
    cr_assert_not_null(e);
    cr_assert(!strncmp(e, "qkf map: ", 9) && strchr(e, '\n') == e + strlen(e) - 1 &&
                  strstr(e, needle),
              "want one line with '%s', got: %s", needle, e);
    free(e);
}

Test(sanafe, cli_and_refusals, .timeout = 300)
{
    char dir[256];
    tmpdir_make(dir, sizeof dir, "sanafe-cli");
    qkf_model md;
    float *x;
    tiny_model(&md, &x, 0);
    cr_assert_eq(qkf_ckpt_save(tmpdir_path(dir, "w.h5"), &md), 0, "%s", qkf_last_error());
    qkf_h5out *o = qkf_h5out_open(tmpdir_path(dir, "in.h5"));
    cr_assert_not_null(o);
    int64_t sh[4] = {1, 3, 8, 8};
    cr_assert_eq(qkf_h5out_f32(o, "input", 4, sh, x), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    const char *q = QKF_BINARY;
    /* written, then written again over the earlier export */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(run_cmd("%s map --weights %s/w.h5 --hw loihi --export-sanafe %s/sf --input "
                             "%s/in.h5 --quiet >%s/out 2>&1",
                             q, dir, dir, dir, dir),
                     0);
    cr_assert_eq(tmpdir_entries(tmpdir_path(dir, "sf"), NULL, 0), 3);
    char *j = slurp(tmpdir_path(dir, "sf/qkf.json"));
    cr_assert(strstr(j, "\"group\": \"L0\", \"layer\": \"patch_embed1.proj_lif\"") &&
                  strstr(j, "\"hw\": {") && strstr(j, "\"profile\": \"loihi\""),
              "%s", j);
    free(j);
    /* no input */
    cr_assert_neq(run_cmd("%s map --weights %s/w.h5 --hw loihi --export-sanafe %s/n 2>%s/err",
                          q, dir, dir, dir),
                  0);
    one_line_error(tmpdir_path(dir, "err"), "--input X.h5");
    /* a sample that is not there */
    cr_assert_neq(run_cmd("%s map --weights %s/w.h5 --hw loihi --export-sanafe %s/n --input "
                          "%s/in.h5 --sample 1 2>%s/err",
                          q, dir, dir, dir, dir),
                  0);
    one_line_error(tmpdir_path(dir, "err"), "holds 1 samples");
    /* a directory holding something else is not replaced */
    cr_assert_eq(mkdir(tmpdir_path(dir, "busy"), 0777), 0);
    for (int i = 0; i < 2; i++) { /* one of them named as an export's file */
        FILE *f = fopen(tmpdir_path(dir, i ? "busy/snn.yaml" : "busy/keep.txt"), "w");
        fputs("mine\n", f);
        fclose(f);
    }
    cr_assert_neq(run_cmd("%s map --weights %s/w.h5 --hw loihi --export-sanafe %s/busy --input "
                          "%s/in.h5 --quiet 2>%s/err",
                          q, dir, dir, dir, dir),
                  0);
    one_line_error(tmpdir_path(dir, "err"), "not replaced");
    cr_assert_eq(access(tmpdir_path(dir, "busy/keep.txt"), F_OK), 0);
    cr_assert_eq(access(tmpdir_path(dir, "busy/snn.yaml"), F_OK), 0, "nothing of it removed");
    /* a model that does not fit: the mapping's refusal, nothing written */
    cr_assert_neq(run_cmd("%s map --weights %s/w.h5 --hw speck --export-sanafe %s/tn --input "
                          "%s/in.h5 --quiet 2>%s/err",
                          q, dir, dir, dir, dir),
                  0);
    one_line_error(tmpdir_path(dir, "err"), "layer ");
    /* a dvs model: its events come from outside the mesh */
    cr_assert_neq(run_cmd("%s map --weights %s/cifar10dvs_small.weights.h5 --hw loihi "
                          "--export-sanafe %s/dvs --input %s/cifar10dvs_small.ref.h5 2>%s/err",
                          q, QKF_FIXTURE_DIR, dir, QKF_FIXTURE_DIR, dir),
                  0);
    one_line_error(tmpdir_path(dir, "err"), "outside the mesh");
    cr_assert_neq(access(tmpdir_path(dir, "tn"), F_OK), 0);
    cr_assert_neq(access(tmpdir_path(dir, "dvs"), F_OK), 0);
    cr_assert_neq(access(tmpdir_path(dir, "n"), F_OK), 0);
    char only[256];
    cr_assert_eq(tmpdir_entries(dir, only, sizeof only), 6, "w.h5 in.h5 out err sf busy only");
    free(x);
    qkf_model_free(&md);
    tmpdir_remove(dir);
}
