/* Chip profiles: SANA-FE architecture descriptions (YAML) plus qkf's keys, parsed with libyaml.
 *
 * The file is loaded as a libyaml document (a node tree with line marks) and walked by schema:
 *   architecture: {name, attributes: {topology, width, height, link_buffer_size, sync_model,
 *                  latency_sync, qkf: {description, costs, energy_ac, energy_mac, layer limits,
 *                  arithmetic: {...}}},
 *                  tile: [{name, attributes: {8 hop costs}, core: [{name, attributes:
 *                  {buffer_position, buffer_inside_unit, max_neurons_supported, qkf: {limits}},
 *                  axon_in, synapse, dendrite, soma, axon_out}]}]}
 * SANA-FE's own rules are followed where it has them (src/yaml_arch.cpp: required keys, ranges
 * in names, list-or-single sections, sync tables; units are joules and seconds); everything qkf
 * cannot model is refused by name rather than ignored. Tiles must all be alike and cores must
 * share one pipeline (the same units and costs); cores may differ in their limits (groups).
 * A file without qkf's arithmetic is the float machine with that chip's costs.
 *
 * Every error is one line "FILE:LINE: KEY.PATH: what (hint)". */
#include "hw_profile.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../kernels/base.h"

/* The bundled profiles, generated from models/hw/NAME.yaml at build time (tools/embed_hw.cmake). */
typedef struct {
    const char *name;
    const unsigned char *text;
    size_t len;
} qkf__hw_bundle;
extern const qkf__hw_bundle qkf__hw_bundled[];
extern const int qkf__hw_n_bundled;

#define MAX_FILE (1 << 20)   /* a profile is a few KB; anything near this is not one */
#define MAX_VISITS 200000    /* nodes walked: aliases can make a small file a large tree */
#define MAX_RANGE (1 << 20)  /* copies one range may make */
#define MAX_MESH (1 << 24)   /* tiles in a mesh */
#define PATHLEN 400          /* a key's path, e.g. architecture.tile[0].core[1].attributes.qkf */

typedef struct {
    yaml_document_t *doc;
    const char *file;
    long visits;
    int integer; /* the profile has an integer arithmetic (set before the tiles are read) */
    int leak;
    int reset_subtract;
} ctx;

/* ---- errors and small helpers ----------------------------------------------------------- */

static int line_of(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 1; }

static int fail(ctx *c, const yaml_node_t *n, const char *key, const char *fmt, ...)
    QKF_PRINTF(4, 5);
static int fail(ctx *c, const yaml_node_t *n, const char *key, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *q = msg; *q; q++) /* quoted file text stays one printable line */
        if ((unsigned char)*q < 32 || *q == 127)
            *q = '?';
    return qkf_set_error("%s:%d: %s: %s", c->file, line_of(n), key, msg);
}

static yaml_node_t *node_at(ctx *c, int id) { return yaml_document_get_node(c->doc, id); }

static int visit(ctx *c, const yaml_node_t *n, const char *key)
{
    if (++c->visits > MAX_VISITS)
        return fail(c, n, key, "the document expands to more than %d nodes (aliases?)", MAX_VISITS);
    return 0;
}

/* The scalar's text, or NULL if n is not a scalar. */
static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int is_map(const yaml_node_t *n) { return n && n->type == YAML_MAPPING_NODE; }
static int is_seq(const yaml_node_t *n) { return n && n->type == YAML_SEQUENCE_NODE; }

static const char *kind_name(const yaml_node_t *n)
{
    return !n ? "nothing" : n->type == YAML_SCALAR_NODE ? "a scalar"
                        : n->type == YAML_SEQUENCE_NODE ? "a list"
                                                        : "a mapping";
}

static int want_map(ctx *c, const yaml_node_t *n, const char *key)
{
    if (visit(c, n, key))
        return -1;
    if (!is_map(n))
        return fail(c, n, key, "expected a mapping, found %s", kind_name(n));
    return 0;
}

/* A mapping's keys, checked against the known ones (NULL-terminated) and for duplicates. The
 * value of key known[i] goes to vals[i] (NULL if absent). */
static int read_map(ctx *c, yaml_node_t *m, const char *path, const char *const *known,
                    yaml_node_t **vals)
{
    int nk = 0;
    while (known[nk])
        nk++;
    for (int i = 0; i < nk; i++)
        vals[i] = NULL;
    if (want_map(c, m, path))
        return -1;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = node_at(c, pr->key), *v = node_at(c, pr->value);
        const char *ks = scalar(k);
        if (visit(c, k, path))
            return -1;
        if (!ks)
            return fail(c, k, path, "a key must be a plain name, found %s", kind_name(k));
        int i = 0;
        while (i < nk && strcmp(known[i], ks) != 0)
            i++;
        char hint[600];
        size_t o = 0;
        hint[0] = 0;
        if (i == nk) {
            for (int j = 0; j < nk && o < sizeof hint - 80; j++)
                o += (size_t)snprintf(hint + o, sizeof hint - o, "%s%s", j ? " " : "", known[j]);
            return fail(c, k, path, "unknown key '%.60s' (known here: %s)", ks, hint);
        }
        if (vals[i])
            return fail(c, k, path, "duplicate key '%s'", ks);
        vals[i] = v;
    }
    return 0;
}

/* out = path.key (or path[index] when key is NULL), cut to n - 1 characters. */
static void append(char *out, size_t n, size_t *o, const char *s)
{
    for (; *s && *o + 1 < n; s++)
        out[(*o)++] = *s;
    out[*o] = 0;
}
static void join(char *out, size_t n, const char *path, const char *key)
{
    size_t o = 0;
    out[0] = 0;
    append(out, n, &o, path);
    if (*path)
        append(out, n, &o, ".");
    append(out, n, &o, key);
}
static void join_index(char *out, size_t n, const char *path, int i)
{
    char num[16];
    size_t o = 0, k = sizeof num - 1;
    num[k] = 0;
    do {
        num[--k] = (char)('0' + i % 10);
        i /= 10;
    } while (i && k > 1);
    num[--k] = '[';
    out[0] = 0;
    append(out, n, &o, path);
    append(out, n, &o, num + k);
    append(out, n, &o, "]");
}

static int missing(ctx *c, const yaml_node_t *parent, const char *path, const char *key)
{
    return fail(c, parent, path, "missing required key '%s'", key);
}

static int get_int(ctx *c, const yaml_node_t *n, const char *key, long long lo, long long hi,
                   long long *out)
{
    const char *s = scalar(n);
    if (visit(c, n, key))
        return -1;
    if (!s)
        return fail(c, n, key, "expected an integer, found %s", kind_name(n));
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || isspace((unsigned char)*s))
        return fail(c, n, key, "'%.40s' is not an integer", s);
    if (v < lo || v > hi)
        return fail(c, n, key, "%lld is out of range (%lld..%lld)", v, lo, hi);
    *out = v;
    return 0;
}

static int get_int32(ctx *c, const yaml_node_t *n, const char *key, int lo, int hi, int *out)
{
    long long v;
    if (get_int(c, n, key, lo, hi, &v))
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return (int)(end - s);
}

/* A SANA-FE cost: a plain number of joules or seconds, not negative. */
static int get_cost(ctx *c, const yaml_node_t *n, const char *key, double *out)
{
    const char *s = scalar(n);
    if (visit(c, n, key))
        return -1;
    if (!s)
        return fail(c, n, key, "expected a number, found %s", kind_name(n));
    int k = parse_double(s, out);
    if (k < 0 || s[k])
        return fail(c, n, key, "'%.40s' is not a number (SANA-FE costs are plain numbers: %s)", s,
                    strncmp(key + (strrchr(key, '.') ? (size_t)(strrchr(key, '.') - key) + 1 : 0),
                            "energy", 6) == 0
                        ? "joules, e.g. 3.0e-12"
                        : "seconds, e.g. 4.1e-9");
    if (*out < 0)
        return fail(c, n, key, "negative cost %g", *out);
    return 0;
}

static int get_bool(ctx *c, const yaml_node_t *n, const char *key, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    const char *s = scalar(n);
    if (visit(c, n, key))
        return -1;
    for (size_t i = 0; s && i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcmp(s, yes[i]) || !strcmp(s, no[i])) {
            *out = !strcmp(s, yes[i]);
            return 0;
        }
    }
    return fail(c, n, key, "expected true or false, found %s%.40s%s", s ? "'" : "",
                s ? s : kind_name(n), s ? "'" : "");
}

/* One of the words in choices (NULL-terminated): its index. */
static int get_word(ctx *c, const yaml_node_t *n, const char *key, const char *const *choices,
                    int *out)
{
    const char *s = scalar(n);
    if (visit(c, n, key))
        return -1;
    char list[200];
    size_t o = 0;
    list[0] = 0;
    for (int i = 0; choices[i]; i++) {
        if (s && !strcmp(s, choices[i])) {
            *out = i;
            return 0;
        }
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", choices[i]);
    }
    return fail(c, n, key, "%s%.40s%s is not one of: %s", s ? "'" : "", s ? s : kind_name(n),
                s ? "'" : "", list);
}

static int get_name(ctx *c, const yaml_node_t *n, const char *key, char *out, size_t cap)
{
    const char *s = scalar(n);
    if (visit(c, n, key))
        return -1;
    if (!s || !*s)
        return fail(c, n, key, "expected a name, found %s", s ? "an empty string" : kind_name(n));
    if (strlen(s) >= cap)
        return fail(c, n, key, "longer than %zu characters", cap - 1);
    for (const char *q = s; *q; q++)
        if ((unsigned char)*q < 32 || *q == 127)
            return fail(c, n, key, "control character in a name");
    snprintf(out, cap, "%s", s);
    return 0;
}

/* A quantity with a unit (qkf's keys only): "0.9 pJ", "128 KiB". */
typedef struct {
    const char *unit;
    double mult;
} unit_t;
static const unit_t energy_units[] = {{"J", 1},      {"mJ", 1e-3},  {"uJ", 1e-6},
                                      {"nJ", 1e-9},  {"pJ", 1e-12}, {"fJ", 1e-15},
                                      {NULL, 0}};
static const unit_t byte_units[] = {{"B", 1},          {"KiB", 1024.0},       {"MiB", 1048576.0},
                                    {"GiB", 1073741824.0}, {"kB", 1e3},       {"MB", 1e6},
                                    {"GB", 1e9},       {NULL, 0}};

static int get_quantity(ctx *c, const yaml_node_t *n, const char *key, const unit_t *units,
                        const char *example, double *out)
{
    const char *s = scalar(n);
    if (visit(c, n, key))
        return -1;
    if (!s)
        return fail(c, n, key, "expected a quantity like %s, found %s", example, kind_name(n));
    double v;
    int k = parse_double(s, &v);
    if (k < 0)
        return fail(c, n, key, "'%.40s' is not a quantity (write e.g. %s)", s, example);
    const char *u = s + k;
    while (*u == ' ')
        u++;
    if (!*u)
        return fail(c, n, key, "missing unit in '%.40s' (write e.g. %s)", s, example);
    char list[120];
    size_t o = 0;
    for (int i = 0; units[i].unit; i++) {
        if (!strcmp(u, units[i].unit)) {
            if (v < 0)
                return fail(c, n, key, "negative value '%.40s'", s);
            *out = v * units[i].mult;
            return 0;
        }
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? " " : "", units[i].unit);
    }
    return fail(c, n, key, "unknown unit '%.20s' (one of: %s)", u, list);
}

static int get_bytes(ctx *c, const yaml_node_t *n, const char *key, int64_t *out)
{
    double v;
    if (get_quantity(c, n, key, byte_units, "128 KiB", &v))
        return -1;
    if (v != floor(v) || v > 4.0e18)
        return fail(c, n, key, "not a whole number of bytes below 4e18");
    *out = (int64_t)v;
    return 0;
}

/* SANA-FE's range in a name: "core[0..3]" (brackets optional) makes last - first + 1 copies. */
static int name_count(ctx *c, const yaml_node_t *n, const char *key, const char *name, int *count)
{
    const char *dots = strstr(name, "..");
    *count = 1;
    if (!dots)
        return 0;
    const char *b = strchr(name, '['), *e = strchr(name, ']');
    const char *start = b ? b + 1 : name, *end = e ? e : name + strlen(name);
    if (end <= start || dots <= start || dots >= end)
        return fail(c, n, key, "bad range in '%s' (write name[FIRST..LAST])", name);
    unsigned long long v[2];
    const char *p[2] = {start, dots + 2}, *q[2] = {dots, end};
    for (int i = 0; i < 2; i++) {
        if (p[i] >= q[i] || q[i] - p[i] > 9)
            return fail(c, n, key, "bad range in '%s' (write name[FIRST..LAST])", name);
        v[i] = 0;
        for (const char *r = p[i]; r < q[i]; r++) {
            if (!isdigit((unsigned char)*r))
                return fail(c, n, key, "bad range in '%s' (write name[FIRST..LAST])", name);
            v[i] = v[i] * 10 + (unsigned)(*r - '0');
        }
    }
    if (v[0] > v[1])
        return fail(c, n, key, "range '%s' runs backwards (first > last)", name);
    if (v[1] - v[0] + 1 > MAX_RANGE)
        return fail(c, n, key, "range '%s' makes more than %d copies", name, MAX_RANGE);
    *count = (int)(v[1] - v[0] + 1);
    return 0;
}

/* A SANA-FE section that is a list of entries or one entry: calls fn on each. */
typedef int (*entry_fn)(ctx *c, yaml_node_t *n, const char *path, void *arg);
static int each_entry(ctx *c, yaml_node_t *sec, const char *path, entry_fn fn, void *arg)
{
    char p[PATHLEN];
    if (visit(c, sec, path))
        return -1;
    if (is_seq(sec)) {
        int i = 0;
        if (sec->data.sequence.items.start == sec->data.sequence.items.top)
            return fail(c, sec, path, "empty list");
        for (yaml_node_item_t *it = sec->data.sequence.items.start;
             it < sec->data.sequence.items.top; it++, i++) {
            join_index(p, sizeof p, path, i);
            if (fn(c, node_at(c, *it), p, arg))
                return -1;
        }
        return 0;
    }
    return fn(c, sec, path, arg);
}

/* ---- pipeline units ------------------------------------------------------------------------ */

static const char *const sec_names[QKF_HW_UNIT_KINDS] = {"axon_in", "synapse", "dendrite", "soma",
                                                         "axon_out"};

/* Keys SANA-FE accepts on a synapse, dendrite or soma unit (src/pipeline.hpp framework attributes
 * and the attributes its built-in models register, src/models.hpp), all parsed here. */
static const char *const unit_keys[] = {
    "model", "plugin", "log_energy", "log_latency", "update_every_timestep", "force_update",
    "force_update_every_timestep", "synapse_hw_name", "dendrite_hw_name", "soma_hw_name",
    "connections_out", "energy_process_spike", "latency_process_spike", "energy_update",
    "latency_update", "energy_access_neuron", "latency_access_neuron", "energy_update_neuron",
    "latency_update_neuron", "energy_spike_out", "latency_spike_out",
    /* model attributes (defaults for the neurons and edges mapped onto the unit) */
    "weight", "w", "delay", "d", "latency", "taps", "time_constants", "space_constants", "rate",
    "poisson", "spikes", "bias", "force_potential", "leak_decay", "log_u", "noise", "noise_bits",
    "refractory_delay", "reset_mode", "reverse_reset_mode", "reset", "reverse_reset",
    "reverse_threshold", "threshold", "leak", "leak_towards_zero", "random_mask", NULL};
enum {
    UK_MODEL, UK_PLUGIN, UK_LOG_E, UK_LOG_L, UK_UPDATE_EVERY, UK_FORCE_UPDATE, UK_FORCE_EVERY,
    UK_SYN_HW, UK_DEN_HW, UK_SOMA_HW, UK_CONN_OUT, UK_E_PROC, UK_L_PROC, UK_E_UPD, UK_L_UPD,
    UK_E_ACC, UK_L_ACC, UK_E_UPDN, UK_L_UPDN, UK_E_SPK, UK_L_SPK, UK_WEIGHT, UK_W, UK_DELAY, UK_D,
    UK_LATENCY, UK_TAPS, UK_TCONST, UK_SCONST, UK_RATE, UK_POISSON, UK_SPIKES, UK_BIAS, UK_FPOT,
    UK_LEAK_DECAY, UK_LOG_U, UK_NOISE, UK_NOISE_BITS, UK_REFRACT, UK_RESET_MODE, UK_RRESET_MODE,
    UK_RESET, UK_RRESET, UK_RTHRESH, UK_THRESH, UK_LEAK, UK_LEAK_TZ, UK_RANDOM_MASK, UK_N
};

/* SANA-FE's built-in models (src/models.cpp model_get_pipeline_unit). */
static const char *const builtin_models[] = {"current_based", "accumulator",
                                             "accumulator_with_delay", "taps", "input",
                                             "leaky_integrate_fire", "truenorth", NULL};

typedef struct {
    qkf_hw_unit *units;
    int *n;
    qkf_hw_unit_kind kind;
    yaml_node_t *soma_attrs[QKF_HW_MAX_UNITS]; /* attributes of soma units, checked later */
} unit_arg;

static int parse_unit(ctx *c, yaml_node_t *n, const char *path, void *argp)
{
    unit_arg *a = argp;
    static const char *const entry_keys[] = {"name", "attributes", NULL};
    yaml_node_t *v[2];
    char p[PATHLEN];
    if (read_map(c, n, path, entry_keys, v))
        return -1;
    if (!v[0])
        return missing(c, n, path, "name");
    if (*a->n >= QKF_HW_MAX_UNITS)
        return fail(c, n, path, "more than %d pipeline units in a core", QKF_HW_MAX_UNITS);
    qkf_hw_unit *u = &a->units[*a->n];
    memset(u, 0, sizeof *u);
    u->kind = a->kind;
    join(p, sizeof p, path, "name");
    if (get_name(c, v[0], p, u->name, sizeof u->name) || name_count(c, v[0], p, u->name, &u->count))
        return -1;
    if (!v[1])
        return missing(c, n, path, "attributes");
    join(p, sizeof p, path, "attributes");
    char q[PATHLEN];
    if (a->kind == QKF_HW_AXON_IN || a->kind == QKF_HW_AXON_OUT) {
        const char *const in_keys[] = {"energy_message_in", "latency_message_in", NULL};
        const char *const out_keys[] = {"energy_message_out", "latency_message_out", NULL};
        const char *const *keys = a->kind == QKF_HW_AXON_IN ? in_keys : out_keys;
        yaml_node_t *w[2];
        if (read_map(c, v[1], p, keys, w))
            return -1;
        for (int i = 0; i < 2; i++) {
            join(q, sizeof q, p, keys[i]);
            if (!w[i])
                return missing(c, v[1], p, keys[i]);
            if (get_cost(c, w[i], q, i ? &u->latency[0] : &u->energy[0]))
                return -1;
        }
        (*a->n)++;
        return 0;
    }
    yaml_node_t *w[UK_N];
    if (read_map(c, v[1], p, unit_keys, w))
        return -1;
    if (!w[UK_MODEL])
        return missing(c, v[1], p, "model");
    join(q, sizeof q, p, "model");
    if (get_name(c, w[UK_MODEL], q, u->model, sizeof u->model))
        return -1;
    int builtin = 0;
    for (int i = 0; builtin_models[i]; i++)
        builtin |= !strcmp(u->model, builtin_models[i]);
    if (!builtin && !w[UK_PLUGIN])
        return fail(c, w[UK_MODEL], q,
                    "unknown model '%s' (SANA-FE's built-in models: current_based, accumulator, "
                    "accumulator_with_delay, taps, input, leaky_integrate_fire, truenorth; "
                    "others need a plugin)",
                    u->model);
    if (w[UK_PLUGIN]) {
        join(q, sizeof q, p, "plugin");
        if (!scalar(w[UK_PLUGIN]))
            return fail(c, w[UK_PLUGIN], q, "expected a plugin library path");
        u->count = -u->count; /* marks a plugin unit until the defaults are chosen */
    }
    const int bools[] = {UK_LOG_E, UK_LOG_L, UK_UPDATE_EVERY, UK_FORCE_UPDATE, UK_FORCE_EVERY};
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
        int b;
        join(q, sizeof q, p, unit_keys[bools[i]]);
        if (w[bools[i]] && get_bool(c, w[bools[i]], q, &b))
            return -1;
    }
    /* Costs: SANA-FE reads the ones of every section from any unit (a unit may implement several
     * sections); this section's are the ones qkf prices. A soma's three must come together. */
    const int all_costs[] = {UK_E_PROC, UK_L_PROC, UK_E_UPD,  UK_L_UPD,  UK_E_ACC, UK_L_ACC,
                             UK_E_UPDN, UK_L_UPDN, UK_E_SPK, UK_L_SPK};
    double val[UK_N] = {0};
    for (size_t i = 0; i < sizeof all_costs / sizeof all_costs[0]; i++) {
        int k = all_costs[i];
        join(q, sizeof q, p, unit_keys[k]);
        if (w[k] && get_cost(c, w[k], q, &val[k]))
            return -1;
    }
    int soma_e = !!w[UK_E_ACC] + !!w[UK_E_UPDN] + !!w[UK_E_SPK];
    int soma_l = !!w[UK_L_ACC] + !!w[UK_L_UPDN] + !!w[UK_L_SPK];
    if (soma_e % 3)
        return missing(c, v[1], p,
                       !w[UK_E_ACC] ? "energy_access_neuron"
                       : !w[UK_E_UPDN] ? "energy_update_neuron"
                                       : "energy_spike_out");
    if (soma_l % 3)
        return missing(c, v[1], p,
                       !w[UK_L_ACC] ? "latency_access_neuron"
                       : !w[UK_L_UPDN] ? "latency_update_neuron"
                                       : "latency_spike_out");
    if (a->kind == QKF_HW_SYNAPSE) {
        u->energy[0] = val[UK_E_PROC];
        u->latency[0] = val[UK_L_PROC];
    } else if (a->kind == QKF_HW_DENDRITE) {
        u->energy[0] = val[UK_E_UPD];
        u->latency[0] = val[UK_L_UPD];
    } else {
        u->energy[0] = val[UK_E_ACC];
        u->energy[1] = val[UK_E_UPDN];
        u->energy[2] = val[UK_E_SPK];
        u->latency[0] = val[UK_L_ACC];
        u->latency[1] = val[UK_L_UPDN];
        u->latency[2] = val[UK_L_SPK];
        a->soma_attrs[*a->n] = v[1];
    }
    /* Remember which of this section's costs were given (the default unit needs them). */
    int has = a->kind == QKF_HW_SYNAPSE    ? (w[UK_E_PROC] && w[UK_L_PROC])
              : a->kind == QKF_HW_DENDRITE ? (w[UK_E_UPD] && w[UK_L_UPD])
                                           : (soma_e == 3 && soma_l == 3);
    if (!has)
        u->is_default = -1; /* no costs: may not be the default unit */
    (*a->n)++;
    return 0;
}

/* Chooses the default unit of each kind and refuses models qkf does not run. */
static int choose_defaults(ctx *c, yaml_node_t *core, const char *path, qkf_hw_unit *units, int n,
                           yaml_node_t **soma_attrs, yaml_node_t **sections)
{
    static const char *const cost_key[QKF_HW_UNIT_KINDS] = {
        "energy_message_in", "energy_process_spike", "energy_update", "energy_access_neuron",
        "energy_message_out"};
    char p[PATHLEN];
    for (int k = 0; k < QKF_HW_UNIT_KINDS; k++) {
        int d = -1;
        for (int i = 0; i < n && d < 0; i++)
            if ((int)units[i].kind == k && !(k == QKF_HW_SOMA && !strcmp(units[i].model, "input")))
                d = i;
        join(p, sizeof p, path, sec_names[k]);
        if (d < 0)
            return fail(c, sections[k], p,
                        "no neuron soma: every soma unit has model input (qkf's neurons need a "
                        "leaky_integrate_fire soma)");
        qkf_hw_unit *u = &units[d];
        yaml_node_t *where = sections[k];
        if (u->count < 0)
            return fail(c, where, p,
                        "the default %s unit '%s' is a plugin model '%s' (plugins are not "
                        "modelled: qkf runs its own arithmetic; list a built-in unit first)",
                        sec_names[k], u->name, u->model);
        if (u->is_default < 0)
            return fail(c, where, p, "missing required key '%s' in the default %s unit '%s'",
                        cost_key[k], sec_names[k], u->name);
        if (k == QKF_HW_SYNAPSE && strcmp(u->model, "current_based"))
            return fail(c, where, p,
                        "the default synapse unit '%s' has model '%s' (only current_based "
                        "synapses are modelled)",
                        u->name, u->model);
        if (k == QKF_HW_DENDRITE && strcmp(u->model, "accumulator"))
            return fail(c, where, p, "the default dendrite unit '%s' has model '%s' (%s)", u->name,
                        u->model,
                        !strcmp(u->model, "taps") ? "multi-compartment dendrites are not modelled"
                        : !strcmp(u->model, "accumulator_with_delay")
                            ? "synaptic delays are not modelled"
                            : "only accumulator dendrites are modelled");
        if (k == QKF_HW_SOMA) {
            int lif = !strcmp(u->model, "leaky_integrate_fire");
            int tn = !strcmp(u->model, "truenorth");
            if (tn && !(c->integer && c->leak == QKF_HW_LEAK_LINEAR))
                return fail(c, where, p,
                            "the default soma '%s' is a TrueNorth neuron (model truenorth: a "
                            "linear leak), modelled only with a qkf arithmetic of leak: linear",
                            u->name);
            if (!lif && !tn)
                return fail(c, where, p,
                            "the default soma '%s' has model '%s' (only leaky_integrate_fire "
                            "neurons are modelled)",
                            u->name, u->model);
            if (lif && c->integer && c->leak == QKF_HW_LEAK_LINEAR)
                return fail(c, where, p,
                            "inconsistent: a leaky_integrate_fire soma with a qkf arithmetic of "
                            "leak: linear (use model truenorth, or leak: decay)");
            yaml_node_t *w[UK_N];
            char q[PATHLEN];
            join(q, sizeof q, p, "attributes");
            if (read_map(c, soma_attrs[d], q, unit_keys, w))
                return -1;
            if (w[UK_NOISE])
                return fail(c, w[UK_NOISE], q,
                            "noise on the default soma '%s': stochastic neurons are not modelled",
                            u->name);
            if (w[UK_RESET_MODE]) {
                static const char *const modes[] = {"hard", "soft", "none", "saturate", NULL};
                int m;
                char r[PATHLEN];
                join(r, sizeof r, q, "reset_mode");
                if (get_word(c, w[UK_RESET_MODE], r, modes, &m))
                    return -1;
                if (m > 1)
                    return fail(c, w[UK_RESET_MODE], r,
                                "reset_mode %s is not modelled (hard or soft)", modes[m]);
                if (c->integer && m != c->reset_subtract)
                    return fail(c, w[UK_RESET_MODE], r,
                                "inconsistent: reset_mode %s but the qkf arithmetic has reset: %s",
                                modes[m], c->reset_subtract ? "subtract" : "zero");
            }
        }
        u->is_default = 1;
    }
    for (int i = 0; i < n; i++) {
        if (units[i].is_default < 0)
            units[i].is_default = 0;
        if (units[i].count < 0)
            units[i].count = -units[i].count;
    }
    (void)core;
    return 0;
}

/* ---- cores and tiles ----------------------------------------------------------------------- */

typedef struct {
    double e_hop[4], t_hop[4];
    int n_groups;
    qkf_hw_core_group group[QKF_HW_MAX_GROUPS];
    int n_units;
    qkf_hw_unit unit[QKF_HW_MAX_UNITS];
    char buffer_position[16];
    int buffer_inside_unit;
    char first_core[QKF_HW_NAME];
    int count;
    char name[QKF_HW_NAME];
} tile_t;

static int same_units(const qkf_hw_unit *a, int na, const qkf_hw_unit *b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++) {
        if (a[i].kind != b[i].kind || strcmp(a[i].model, b[i].model) || a[i].count != b[i].count ||
            a[i].is_default != b[i].is_default)
            return 0;
        for (int j = 0; j < 3; j++)
            if (a[i].energy[j] != b[i].energy[j] || a[i].latency[j] != b[i].latency[j])
                return 0;
    }
    return 1;
}

static int parse_core(ctx *c, yaml_node_t *n, const char *path, void *argp)
{
    tile_t *t = argp;
    static const char *const keys[] = {"name",     "attributes", "axon_in", "synapse",
                                       "dendrite", "soma",       "axon_out", NULL};
    yaml_node_t *v[7];
    char p[PATHLEN], q[340];
    if (read_map(c, n, path, keys, v))
        return -1;
    if (!v[0])
        return missing(c, n, path, "name");
    if (t->n_groups >= QKF_HW_MAX_GROUPS)
        return fail(c, n, path, "more than %d core entries in a tile", QKF_HW_MAX_GROUPS);
    qkf_hw_core_group *g = &t->group[t->n_groups];
    memset(g, 0, sizeof *g);
    join(p, sizeof p, path, "name");
    if (get_name(c, v[0], p, g->name, sizeof g->name) || name_count(c, v[0], p, g->name, &g->count))
        return -1;
    if (!v[1])
        return missing(c, n, path, "attributes");
    join(p, sizeof p, path, "attributes");
    static const char *const akeys[] = {"buffer_position", "buffer_inside_unit",
                                        "max_neurons_supported", "log_energy", "qkf", NULL};
    yaml_node_t *w[5];
    if (read_map(c, v[1], p, akeys, w))
        return -1;
    if (!w[0])
        return missing(c, v[1], p, "buffer_position");
    if (!w[2])
        return missing(c, v[1], p, "max_neurons_supported");
    static const char *const positions[] = {"dendrite", "soma", "axon_out", NULL};
    int pos, inside = 0, log_e;
    join(q, sizeof q, p, "buffer_position");
    if (get_word(c, w[0], q, positions, &pos))
        return -1;
    join(q, sizeof q, p, "buffer_inside_unit");
    if (w[1] && get_bool(c, w[1], q, &inside))
        return -1;
    join(q, sizeof q, p, "max_neurons_supported");
    long long mn;
    if (get_int(c, w[2], q, 1, INT32_MAX, &mn))
        return -1;
    g->max_neurons = mn;
    join(q, sizeof q, p, "log_energy");
    if (w[3] && get_bool(c, w[3], q, &log_e))
        return -1;
    if (w[4]) {
        static const char *const qkeys[] = {"synapse_memory", "max_fan_in", "max_fan_out",
                                            "max_layers", "max_destinations", NULL};
        yaml_node_t *z[5];
        join(q, sizeof q, p, "qkf");
        if (read_map(c, w[4], q, qkeys, z))
            return -1;
        char r[PATHLEN];
        join(r, sizeof r, q, "synapse_memory");
        if (z[0] && get_bytes(c, z[0], r, &g->synapse_bytes))
            return -1;
        long long x;
        int64_t *dst64[2] = {&g->max_fan_in, &g->max_fan_out};
        for (int i = 0; i < 2; i++) {
            join(r, sizeof r, q, qkeys[1 + i]);
            if (z[1 + i]) {
                if (get_int(c, z[1 + i], r, 0, (long long)1 << 40, &x))
                    return -1;
                *dst64[i] = x;
            }
        }
        int *dst[2] = {&g->max_layers_per_core, &g->max_destinations};
        for (int i = 0; i < 2; i++) {
            join(r, sizeof r, q, qkeys[3 + i]);
            if (z[3 + i] && get_int32(c, z[3 + i], r, 0, 1 << 20, dst[i]))
                return -1;
        }
    }
    /* the pipeline */
    qkf_hw_unit units[QKF_HW_MAX_UNITS];
    memset(units, 0, sizeof units);
    int nu = 0;
    unit_arg ua;
    memset(&ua, 0, sizeof ua);
    ua.units = units;
    ua.n = &nu;
    yaml_node_t *sections[QKF_HW_UNIT_KINDS];
    for (int k = 0; k < QKF_HW_UNIT_KINDS; k++) {
        sections[k] = v[2 + k];
        if (!v[2 + k])
            return missing(c, n, path, sec_names[k]);
        ua.kind = (qkf_hw_unit_kind)k;
        join(q, sizeof q, path, sec_names[k]);
        if (each_entry(c, v[2 + k], q, parse_unit, &ua))
            return -1;
    }
    if (choose_defaults(c, n, path, units, nu, ua.soma_attrs, sections))
        return -1;
    if (t->n_groups == 0) {
        memcpy(t->unit, units, sizeof units);
        t->n_units = nu;
        snprintf(t->buffer_position, sizeof t->buffer_position, "%s", positions[pos]);
        t->buffer_inside_unit = inside;
        snprintf(t->first_core, sizeof t->first_core, "%s", g->name);
    } else {
        if (!same_units(units, nu, t->unit, t->n_units))
            return fail(c, n, path,
                        "core '%s' has a pipeline different from core '%s' (cores with different "
                        "units or costs are not modelled; they may differ in their limits only)",
                        g->name, t->first_core);
        if (strcmp(positions[pos], t->buffer_position) || inside != t->buffer_inside_unit)
            return fail(c, n, path, "core '%s' buffers differently from core '%s' (not modelled)",
                        g->name, t->first_core);
    }
    t->n_groups++;
    return 0;
}

static int tiles_equal(const tile_t *a, const tile_t *b)
{
    if (memcmp(a->e_hop, b->e_hop, sizeof a->e_hop) || memcmp(a->t_hop, b->t_hop, sizeof a->t_hop))
        return 0;
    if (a->n_groups != b->n_groups || !same_units(a->unit, a->n_units, b->unit, b->n_units) ||
        strcmp(a->buffer_position, b->buffer_position) ||
        a->buffer_inside_unit != b->buffer_inside_unit)
        return 0;
    for (int i = 0; i < a->n_groups; i++) {
        const qkf_hw_core_group *x = &a->group[i], *y = &b->group[i];
        if (x->count != y->count || x->max_neurons != y->max_neurons ||
            x->synapse_bytes != y->synapse_bytes || x->max_fan_in != y->max_fan_in ||
            x->max_fan_out != y->max_fan_out || x->max_layers_per_core != y->max_layers_per_core ||
            x->max_destinations != y->max_destinations)
            return 0;
    }
    return 1;
}

typedef struct {
    tile_t *first, *cur;
    int n_entries;
    long long n_tiles;
} tiles_arg;

static int parse_tile(ctx *c, yaml_node_t *n, const char *path, void *argp)
{
    tiles_arg *ta = argp;
    tile_t *t = ta->n_entries == 0 ? ta->first : ta->cur;
    static const char *const keys[] = {"name", "attributes", "core", NULL};
    yaml_node_t *v[3];
    char p[PATHLEN], q[340];
    if (read_map(c, n, path, keys, v))
        return -1;
    memset(t, 0, sizeof *t);
    if (!v[0])
        return missing(c, n, path, "name");
    join(p, sizeof p, path, "name");
    if (get_name(c, v[0], p, t->name, sizeof t->name) || name_count(c, v[0], p, t->name, &t->count))
        return -1;
    if (!v[1])
        return missing(c, n, path, "attributes");
    join(p, sizeof p, path, "attributes");
    static const char *const akeys[] = {"energy_north_hop", "energy_east_hop", "energy_south_hop",
                                        "energy_west_hop",  "latency_north_hop",
                                        "latency_east_hop", "latency_south_hop",
                                        "latency_west_hop", "log_energy", NULL};
    yaml_node_t *w[9];
    if (read_map(c, v[1], p, akeys, w))
        return -1;
    for (int i = 0; i < 8; i++) {
        if (!w[i])
            return missing(c, v[1], p, akeys[i]);
        join(q, sizeof q, p, akeys[i]);
        if (get_cost(c, w[i], q, i < 4 ? &t->e_hop[i] : &t->t_hop[i - 4]))
            return -1;
    }
    int b;
    join(q, sizeof q, p, "log_energy");
    if (w[8] && get_bool(c, w[8], q, &b))
        return -1;
    if (!v[2])
        return missing(c, n, path, "core");
    join(p, sizeof p, path, "core");
    if (each_entry(c, v[2], p, parse_core, t))
        return -1;
    if (ta->n_entries > 0 && !tiles_equal(t, ta->first))
        return fail(c, n, path,
                    "tile '%s' differs from tile '%s' (heterogeneous tiles are not modelled: "
                    "every tile needs the same hop costs and cores)",
                    t->name, ta->first->name);
    ta->n_entries++;
    ta->n_tiles += t->count;
    if (ta->n_tiles > MAX_MESH)
        return fail(c, n, path, "more than %d tiles", MAX_MESH);
    return 0;
}

/* ---- qkf's arithmetic ---------------------------------------------------------------------- */

static int parse_arith(ctx *c, yaml_node_t *n, const char *path, qkf_hw_arith *ar)
{
    static const char *const keys[] = {
        "float", "weight_bits", "weight_exp_min", "weight_exp_max", "scale", "current_bits",
        "current_overflow", "current_shift", "membrane_bits", "membrane_overflow", "leak",
        "decay_bits", "threshold_bits", "threshold_shift", "threshold_compare", "reset",
        "bias_bits", "bias_exp_max", "graded_bits", "input_bits", "weight_codebook", NULL};
    enum {
        A_FLOAT, A_WBITS, A_WEMIN, A_WEMAX, A_SCALE, A_CBITS, A_COVF, A_CSHIFT, A_MBITS, A_MOVF,
        A_LEAK, A_DBITS, A_TBITS, A_TSHIFT, A_TCMP, A_RESET, A_BBITS, A_BEXP, A_GBITS, A_IBITS,
        A_CODEBOOK, A_N
    };
    yaml_node_t *v[A_N];
    char p[PATHLEN];
    if (read_map(c, n, path, keys, v))
        return -1;
    memset(ar, 0, sizeof *ar);
    int fl = 0;
    join(p, sizeof p, path, "float");
    if (v[A_FLOAT] && get_bool(c, v[A_FLOAT], p, &fl))
        return -1;
    if (fl) {
        for (int i = 1; i < A_N; i++)
            if (v[i]) {
                join(p, sizeof p, path, keys[i]);
                return fail(c, v[i], p,
                            "inconsistent: float: true takes no integer arithmetic key (remove "
                            "it or set float: false)");
            }
        ar->is_float = 1;
        return 0;
    }
    /* integer arithmetic: every key is required but decay_bits (leak: decay only) and the
     * weight codebook */
    for (int i = 1; i < A_N; i++)
        if (!v[i] && i != A_DBITS && i != A_CODEBOOK)
            return missing(c, n, path, keys[i]);
    struct {
        int k, lo, hi;
        int *dst;
    } ints[] = {
        {A_WBITS, 1, 16, &ar->weight_bits},       {A_WEMIN, -31, 31, &ar->weight_exp_min},
        {A_WEMAX, -31, 31, &ar->weight_exp_max},  {A_CBITS, 2, 32, &ar->current_bits},
        {A_CSHIFT, 0, 30, &ar->current_shift},    {A_MBITS, 2, 32, &ar->membrane_bits},
        {A_TBITS, 1, 31, &ar->threshold_bits},    {A_TSHIFT, 0, 30, &ar->threshold_shift},
        {A_BBITS, 1, 32, &ar->bias_bits},         {A_BEXP, 0, 30, &ar->bias_exp_max},
        {A_GBITS, 0, 32, &ar->graded_bits},       {A_IBITS, 1, 16, &ar->input_bits},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        join(p, sizeof p, path, keys[ints[i].k]);
        if (get_int32(c, v[ints[i].k], p, ints[i].lo, ints[i].hi, ints[i].dst))
            return -1;
    }
    static const char *const scales[] = {"per_layer", "per_channel", NULL};
    static const char *const ovf[] = {"saturate", "wrap", NULL};
    static const char *const leaks[] = {"decay", "none", "linear", NULL};
    static const char *const cmps[] = {"greater", "greater_equal", NULL};
    static const char *const resets[] = {"zero", "subtract", NULL};
    struct {
        int k;
        const char *const *w;
        int *dst;
    } words[] = {{A_SCALE, scales, &ar->per_channel},    {A_COVF, ovf, &ar->current_wrap},
                 {A_MOVF, ovf, &ar->membrane_wrap},      {A_LEAK, leaks, &ar->leak},
                 {A_TCMP, cmps, &ar->threshold_ge},      {A_RESET, resets, &ar->reset_subtract}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        join(p, sizeof p, path, keys[words[i].k]);
        if (get_word(c, v[words[i].k], p, words[i].w, words[i].dst))
            return -1;
    }
    join(p, sizeof p, path, "weight_codebook");
    if (v[A_CODEBOOK] && get_int32(c, v[A_CODEBOOK], p, 0, 1 << 16, &ar->weight_codebook))
        return -1;
    join(p, sizeof p, path, "decay_bits");
    if (ar->leak == QKF_HW_LEAK_DECAY) {
        if (!v[A_DBITS])
            return fail(c, n, path, "missing required key 'decay_bits' (leak: decay)");
        if (get_int32(c, v[A_DBITS], p, 1, 16, &ar->decay_bits))
            return -1;
    } else if (v[A_DBITS]) {
        return fail(c, v[A_DBITS], p,
                    "inconsistent: decay_bits with leak: %s (only leak: decay has a decay)",
                    leaks[ar->leak]);
    }
    /* combinations */
#define INCONS(k, ...)                                                                             \
    do {                                                                                           \
        join(p, sizeof p, path, keys[k]);                                                          \
        return fail(c, v[k], p, "inconsistent: " __VA_ARGS__);                                     \
    } while (0)
    if (ar->weight_exp_min > ar->weight_exp_max)
        INCONS(A_WEMAX, "weight_exp_max %d < weight_exp_min %d", ar->weight_exp_max,
               ar->weight_exp_min);
    if (ar->weight_bits > ar->current_bits)
        INCONS(A_WBITS, "weight_bits %d > current_bits %d (one weight must fit the current)",
               ar->weight_bits, ar->current_bits);
    if (ar->current_bits + ar->current_shift > ar->membrane_bits)
        INCONS(A_CSHIFT,
               "current_bits %d + current_shift %d > membrane_bits %d (the shifted current "
               "must fit the membrane)",
               ar->current_bits, ar->current_shift, ar->membrane_bits);
    if (ar->threshold_bits + ar->threshold_shift > ar->membrane_bits - 1)
        INCONS(A_TBITS,
               "threshold_bits %d + threshold_shift %d > membrane_bits %d - 1 (the threshold "
               "must be a positive membrane value)",
               ar->threshold_bits, ar->threshold_shift, ar->membrane_bits);
    if (ar->bias_bits + ar->bias_exp_max > ar->membrane_bits)
        INCONS(A_BEXP, "bias_bits %d + bias_exp_max %d > membrane_bits %d", ar->bias_bits,
               ar->bias_exp_max, ar->membrane_bits);
    if (ar->graded_bits > ar->current_bits)
        INCONS(A_GBITS, "graded_bits %d > current_bits %d", ar->graded_bits, ar->current_bits);
#undef INCONS
    return 0;
}

/* ---- the architecture ---------------------------------------------------------------------- */

static int parse_sync(ctx *c, yaml_node_t *model, yaml_node_t *lat, yaml_node_t *attrs,
                      const char *path, qkf_hw_profile *p)
{
    char k[PATHLEN];
    static const char *const models[] = {"fixed", "table", NULL};
    int m = 0;
    join(k, sizeof k, path, "sync_model");
    if (model && get_word(c, model, k, models, &m))
        return -1;
    p->sync_table = m;
    join(k, sizeof k, path, "latency_sync");
    p->n_sync = 1;
    p->sync_tiles[0] = 0;
    p->sync_s[0] = 0;
    if (!lat) {
        if (m == 1)
            return fail(c, attrs, path, "missing required key 'latency_sync' (sync_model table)");
        return 0;
    }
    if (m == 0 || scalar(lat))
        return get_cost(c, lat, k, &p->sync_s[0]);
    if (visit(c, lat, k))
        return -1;
    int n = 0;
    if (is_seq(lat)) {
        for (yaml_node_item_t *it = lat->data.sequence.items.start;
             it < lat->data.sequence.items.top; it++, n++) {
            if (n >= 16)
                return fail(c, lat, k, "more than 16 entries in the sync table");
            p->sync_tiles[n] = n;
            if (get_cost(c, node_at(c, *it), k, &p->sync_s[n]))
                return -1;
        }
    } else {
        for (yaml_node_pair_t *pr = lat->data.mapping.pairs.start;
             pr < lat->data.mapping.pairs.top; pr++, n++) {
            if (n >= 16)
                return fail(c, lat, k, "more than 16 entries in the sync table");
            int tiles;
            if (get_int32(c, node_at(c, pr->key), k, 0, MAX_MESH, &tiles) ||
                get_cost(c, node_at(c, pr->value), k, &p->sync_s[n]))
                return -1;
            for (int j = 0; j < n; j++)
                if (p->sync_tiles[j] == tiles)
                    return fail(c, node_at(c, pr->key), k, "duplicate tile count %d", tiles);
            p->sync_tiles[n] = tiles;
        }
    }
    if (n == 0)
        return fail(c, lat, k, "empty sync table");
    /* sorted by tiles in use (insertion sort; at most 16) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && p->sync_tiles[j - 1] > p->sync_tiles[j]; j--) {
            int t = p->sync_tiles[j];
            double s = p->sync_s[j];
            p->sync_tiles[j] = p->sync_tiles[j - 1];
            p->sync_s[j] = p->sync_s[j - 1];
            p->sync_tiles[j - 1] = t;
            p->sync_s[j - 1] = s;
        }
    p->n_sync = n;
    return 0;
}

static int parse_qkf(ctx *c, yaml_node_t *n, const char *path, qkf_hw_profile *p)
{
    static const char *const keys[] = {"description", "costs",          "energy_ac",
                                       "energy_mac",  "arithmetic",     "max_kernel",
                                       "max_feature_side", "max_input_side", "max_channels",
                                       NULL};
    yaml_node_t *v[9];
    char k[PATHLEN];
    if (read_map(c, n, path, keys, v))
        return -1;
    if (v[0]) {
        join(k, sizeof k, path, "description");
        const char *s = scalar(v[0]);
        if (visit(c, v[0], k))
            return -1;
        if (!s)
            return fail(c, v[0], k, "expected a line of text, found %s", kind_name(v[0]));
        if (strlen(s) >= sizeof p->description)
            return fail(c, v[0], k, "longer than %zu characters", sizeof p->description - 1);
        for (const char *q = s; *q; q++)
            if ((unsigned char)*q < 32 || *q == 127)
                return fail(c, v[0], k, "control character (one line of text)");
        snprintf(p->description, sizeof p->description, "%s", s);
    }
    if (!v[1])
        return missing(c, n, path, "costs");
    static const char *const bases[] = {"as_given",    "calibrated",  "estimate",
                                        "partial",     "unpublished", "hypothetical", NULL};
    int b;
    join(k, sizeof k, path, "costs");
    if (get_word(c, v[1], k, bases, &b))
        return -1;
    p->cost_basis = (qkf_hw_cost_basis)b;
    join(k, sizeof k, path, "energy_ac");
    if (v[2] && get_quantity(c, v[2], k, energy_units, "0.9 pJ", &p->e_ac))
        return -1;
    join(k, sizeof k, path, "energy_mac");
    if (v[3] && get_quantity(c, v[3], k, energy_units, "4.6 pJ", &p->e_mac))
        return -1;
    int *lim[4] = {&p->max_kernel, &p->max_feature_side, &p->max_input_side, &p->max_channels};
    for (int i = 0; i < 4; i++) {
        join(k, sizeof k, path, keys[5 + i]);
        if (v[5 + i] && get_int32(c, v[5 + i], k, 0, 1 << 20, lim[i]))
            return -1;
    }
    if (!v[4])
        return missing(c, n, path, "arithmetic");
    join(k, sizeof k, path, "arithmetic");
    return parse_arith(c, v[4], k, &p->arith);
}

static int parse_arch(ctx *c, yaml_node_t *root, qkf_hw_profile *p)
{
    static const char *const top_keys[] = {"architecture", "network", "mappings", NULL};
    yaml_node_t *top[3];
    if (!root)
        return fail(c, NULL, "architecture", "empty document (a profile starts with architecture:)");
    if (read_map(c, root, "(top level)", top_keys, top))
        return -1;
    yaml_node_t *arch = top[0];
    if (!arch)
        return fail(c, root, "architecture", "missing required key 'architecture'");
    static const char *const keys[] = {"name", "attributes", "tile", NULL};
    yaml_node_t *v[3];
    if (read_map(c, arch, "architecture", keys, v))
        return -1;
    if (!v[0])
        return missing(c, arch, "architecture", "name");
    if (get_name(c, v[0], "architecture.name", p->arch_name, sizeof p->arch_name))
        return -1;
    if (strchr(p->arch_name, '['))
        return fail(c, v[0], "architecture.name",
                    "a range in the architecture's name (several architectures) is not supported");
    if (!v[1])
        return missing(c, arch, "architecture", "attributes");
    static const char *const akeys[] = {"topology",   "width",        "height", "link_buffer_size",
                                        "sync_model", "latency_sync", "qkf",    NULL};
    yaml_node_t *w[7];
    const char *ap = "architecture.attributes";
    char k[PATHLEN];
    if (read_map(c, v[1], ap, akeys, w))
        return -1;
    if (w[0]) {
        static const char *const topo[] = {"mesh", NULL};
        int t;
        const char *s = scalar(w[0]);
        if (s && strcmp(s, "mesh"))
            return fail(c, w[0], "architecture.attributes.topology",
                        "topology '%.40s' is not modelled (only mesh, SANA-FE's network)", s);
        if (get_word(c, w[0], "architecture.attributes.topology", topo, &t))
            return -1;
    }
    for (int i = 1; i <= 3; i++)
        if (!w[i])
            return missing(c, v[1], ap, akeys[i]);
    if (get_int32(c, w[1], "architecture.attributes.width", 1, 65536, &p->mesh_width) ||
        get_int32(c, w[2], "architecture.attributes.height", 1, 65536, &p->mesh_height) ||
        get_int32(c, w[3], "architecture.attributes.link_buffer_size", 0, 1 << 20,
                  &p->link_buffer_size))
        return -1;
    if ((long long)p->mesh_width * p->mesh_height > MAX_MESH)
        return fail(c, w[2], "architecture.attributes.height", "a mesh of more than %d tiles",
                    MAX_MESH);
    if (parse_sync(c, w[4], w[5], v[1], ap, p))
        return -1;
    p->arith.is_float = 1; /* a SANA-FE file without qkf's keys: the float machine */
    if (w[6]) {
        join(k, sizeof k, ap, "qkf");
        if (parse_qkf(c, w[6], k, p))
            return -1;
    }
    c->integer = !p->arith.is_float;
    c->leak = p->arith.leak;
    c->reset_subtract = p->arith.reset_subtract;
    if (!v[2])
        return missing(c, arch, "architecture", "tile");
    tile_t *tiles = qkf_calloc(2, sizeof(tile_t));
    tiles_arg ta = {&tiles[0], &tiles[1], 0, 0};
    int rc = each_entry(c, v[2], "architecture.tile", parse_tile, &ta);
    if (!rc && ta.n_tiles > (long long)p->mesh_width * p->mesh_height)
        rc = fail(c, v[2], "architecture.tile", "%lld tiles do not fit the %d x %d mesh",
                  ta.n_tiles, p->mesh_width, p->mesh_height);
    if (!rc) {
        const tile_t *t = ta.first;
        p->n_tiles = (int)ta.n_tiles;
        memcpy(p->e_hop, t->e_hop, sizeof p->e_hop);
        memcpy(p->t_hop, t->t_hop, sizeof p->t_hop);
        p->e_hop_ns = 0.5 * (t->e_hop[QKF_HW_NORTH] + t->e_hop[QKF_HW_SOUTH]);
        p->t_hop_ns = 0.5 * (t->t_hop[QKF_HW_NORTH] + t->t_hop[QKF_HW_SOUTH]);
        p->e_hop_ew = 0.5 * (t->e_hop[QKF_HW_EAST] + t->e_hop[QKF_HW_WEST]);
        p->t_hop_ew = 0.5 * (t->t_hop[QKF_HW_EAST] + t->t_hop[QKF_HW_WEST]);
        p->n_groups = t->n_groups;
        memcpy(p->group, t->group, sizeof p->group);
        p->n_units = t->n_units;
        memcpy(p->unit, t->unit, sizeof p->unit);
        snprintf(p->buffer_position, sizeof p->buffer_position, "%s", t->buffer_position);
        p->buffer_inside_unit = t->buffer_inside_unit;
        long long cores = 0;
        for (int i = 0; i < t->n_groups; i++) {
            const qkf_hw_core_group *g = &t->group[i];
            cores += g->count;
#define MAX_OF(f, src) p->f = p->f > src ? p->f : src
            MAX_OF(max_neurons, g->max_neurons);
            MAX_OF(synapse_bytes, g->synapse_bytes);
            MAX_OF(max_fan_in, g->max_fan_in);
            MAX_OF(max_fan_out, g->max_fan_out);
            MAX_OF(max_layers_per_core, g->max_layers_per_core);
            MAX_OF(max_destinations, g->max_destinations);
#undef MAX_OF
        }
        if (cores > MAX_RANGE)
            rc = fail(c, v[2], "architecture.tile", "more than %d cores in a tile", MAX_RANGE);
        p->cores_per_tile = (int)cores;
        p->n_cores = (int64_t)cores * p->n_tiles;
        for (int i = 0; i < p->n_units; i++) {
            const qkf_hw_unit *u = &p->unit[i];
            if (!u->is_default)
                continue;
            switch (u->kind) {
            case QKF_HW_AXON_IN:
                p->cost.e_message_in = u->energy[0], p->cost.t_message_in = u->latency[0];
                break;
            case QKF_HW_SYNAPSE:
                p->cost.e_process_spike = u->energy[0], p->cost.t_process_spike = u->latency[0];
                break;
            case QKF_HW_DENDRITE:
                p->cost.e_dendrite_update = u->energy[0];
                p->cost.t_dendrite_update = u->latency[0];
                break;
            case QKF_HW_SOMA:
                p->cost.e_access_neuron = u->energy[0], p->cost.t_access_neuron = u->latency[0];
                p->cost.e_update_neuron = u->energy[1], p->cost.t_update_neuron = u->latency[1];
                p->cost.e_spike_out = u->energy[2], p->cost.t_spike_out = u->latency[2];
                break;
            case QKF_HW_AXON_OUT:
                p->cost.e_message_out = u->energy[0], p->cost.t_message_out = u->latency[0];
                break;
            default:
                break;
            }
        }
    }
    qkf_free(tiles);
    return rc;
}

/* ---- entry points -------------------------------------------------------------------------- */

int qkf_hw_parse(const char *text, size_t len, const char *label, qkf_hw_profile *p)
{
    memset(p, 0, sizeof *p);
    if (len > MAX_FILE)
        return qkf_set_error("%s: %zu bytes is not a profile (at most %d)", label, len, MAX_FILE);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return qkf_set_error("%s: cannot start the YAML parser (out of memory)", label);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int line = (int)parser.problem_mark.line + 1;
        if (parser.error == YAML_MEMORY_ERROR)
            qkf_set_error("%s: the YAML parser ran out of memory", label);
        else
            qkf_set_error("%s:%d: YAML: %s%s%s (not valid YAML)", label, line,
                          parser.problem ? parser.problem : "syntax error",
                          parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return -1;
    }
    ctx c = {&doc, label, 0, 0, 0, 0};
    int rc = parse_arch(&c, yaml_document_get_root_node(&doc), p);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", qkf_last_error());
        memset(p, 0, sizeof *p);
        return qkf_set_error("%s", keep);
    }
    snprintf(p->name, sizeof p->name, "%s", p->arch_name);
    snprintf(p->path, sizeof p->path, "%s", label);
    if (!p->description[0])
        snprintf(p->description, sizeof p->description,
                 "SANA-FE architecture '%s' (no qkf keys: the float machine at its costs)",
                 p->arch_name);
    return 0;
}

int qkf_hw_count(void) { return qkf__hw_n_bundled; }

const char *qkf_hw_name(int i)
{
    return i >= 0 && i < qkf__hw_n_bundled ? qkf__hw_bundled[i].name : NULL;
}

const char *qkf_hw_text(int i, size_t *len)
{
    if (i < 0 || i >= qkf__hw_n_bundled)
        return NULL;
    *len = qkf__hw_bundled[i].len;
    return (const char *)qkf__hw_bundled[i].text;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

int qkf_hw_load(const char *name_or_path, qkf_hw_profile *p)
{
    memset(p, 0, sizeof *p);
    if (!name_or_path || !*name_or_path)
        return qkf_set_error("--hw: empty profile name (qkf hw list names the bundled ones)");
    const char *s = name_or_path;
    if (!strchr(s, '/') && !ends_with(s, ".yaml") && !ends_with(s, ".yml")) {
        for (int i = 0; i < qkf__hw_n_bundled; i++) {
            if (strcmp(qkf__hw_bundled[i].name, s))
                continue;
            char label[QKF_HW_NAME + 32];
            snprintf(label, sizeof label, "%s.yaml (bundled)", s);
            if (qkf_hw_parse((const char *)qkf__hw_bundled[i].text, qkf__hw_bundled[i].len, label,
                             p))
                return -1;
            snprintf(p->name, sizeof p->name, "%s", s);
            p->path[0] = 0;
            return 0;
        }
        char names[400];
        size_t o = 0;
        names[0] = 0;
        for (int i = 0; i < qkf__hw_n_bundled && o < sizeof names - 70; i++)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "",
                                  qkf__hw_bundled[i].name);
        return qkf_set_error("%.100s: no bundled profile of that name (bundled: %s; a file needs "
                             "a .yaml name or a '/')",
                             s, names);
    }
    FILE *f = fopen(s, "rb");
    if (!f)
        return qkf_set_error("%s: cannot open (%s)", s, strerror(errno));
    char *buf = qkf_malloc(MAX_FILE + 1);
    size_t n = fread(buf, 1, MAX_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad)
        rc = qkf_set_error("%s: read error", s);
    else if (n > MAX_FILE)
        rc = qkf_set_error("%s: larger than %d bytes: not a profile", s, MAX_FILE);
    else
        rc = qkf_hw_parse(buf, n, s, p);
    qkf_free(buf);
    return rc;
}

void qkf_hw_list(FILE *f)
{
    qkf_hw_profile *p = qkf_malloc(sizeof *p);
    for (int i = 0; i < qkf__hw_n_bundled; i++) {
        const char *d = qkf_hw_load(qkf__hw_bundled[i].name, p) ? qkf_last_error()
                                                                 : p->description;
        fprintf(f, "  %-12s %s\n", qkf__hw_bundled[i].name, d);
    }
    qkf_free(p);
}

/* ---- printing ------------------------------------------------------------------------------ */

/* A value with an SI prefix: 3.1e-9 s -> "3.1 ns". */
static void si(char *out, size_t n, double v, const char *unit)
{
    static const struct {
        double m;
        const char *p;
    } pre[] = {{1, ""}, {1e-3, "m"}, {1e-6, "u"}, {1e-9, "n"}, {1e-12, "p"}, {1e-15, "f"}};
    if (v == 0) {
        snprintf(out, n, "0 %s", unit);
        return;
    }
    size_t i = 0;
    while (i + 1 < sizeof pre / sizeof pre[0] && fabs(v) < pre[i].m * 0.9999)
        i++;
    snprintf(out, n, "%.4g %s%s", v / pre[i].m, pre[i].p, unit);
}

static void bytes(char *out, size_t n, int64_t b)
{
    if (b == 0)
        snprintf(out, n, "unlimited");
    else if (b % (1 << 20) == 0)
        snprintf(out, n, "%lld MiB", (long long)(b >> 20));
    else if (b % 1024 == 0)
        snprintf(out, n, "%lld KiB", (long long)(b >> 10));
    else
        snprintf(out, n, "%lld B", (long long)b);
}

static void count_or_unlimited(char *out, size_t n, int64_t v)
{
    if (v == 0)
        snprintf(out, n, "unlimited");
    else
        snprintf(out, n, "%lld", (long long)v);
}

void qkf_hw_describe(FILE *f, const qkf_hw_profile *p)
{
    static const char *const basis[] = {
        "as given in the file (provenance not stated)", "calibrated against silicon",
        "published estimates", "partly published (the rest 0)",
        "not published (every cost is 0 = unknown)", "hypothetical chip"};
    static const char *const leaks[] = {"decay (v -= v * dv / 2^decay_bits)",
                                        "none (integrate-and-fire)",
                                        "linear (a constant subtracted each step)"};
    const qkf_hw_arith *a = &p->arith;
    char b1[64], b2[64];
    fprintf(f, "profile %s  (%s)\n", p->name, p->path[0] ? p->path : "bundled");
    fprintf(f, "  %s\n", p->description);
    fprintf(f, "  architecture name %s\n", p->arch_name);
    fprintf(f, "\narithmetic\n");
    if (a->is_float) {
        fprintf(f, "  float32 (the ideal machine: today's float engines)\n");
    } else {
        fprintf(f, "  weights        %d-bit signed mantissa << exponent %d..%d, %s scale%s\n",
                a->weight_bits, a->weight_exp_min, a->weight_exp_max,
                a->per_channel ? "per-channel" : "per-layer", "");
        if (a->weight_codebook)
            fprintf(f, "  weight values  at most %d distinct values per neuron\n",
                    a->weight_codebook);
        fprintf(f, "  current        %d bits, %s, enters the membrane << %d\n", a->current_bits,
                a->current_wrap ? "wraps" : "saturates", a->current_shift);
        fprintf(f, "  membrane       %d bits, %s\n", a->membrane_bits,
                a->membrane_wrap ? "wraps" : "saturates");
        fprintf(f, "  leak           %s", leaks[a->leak]);
        if (a->leak == QKF_HW_LEAK_DECAY)
            fprintf(f, ", decay_bits %d (QKFormer's tau = 2: dv = %d)", a->decay_bits,
                    1 << (a->decay_bits - 1));
        fprintf(f, "\n");
        fprintf(f, "  threshold      %d-bit unsigned mantissa << %d; spike when v %s threshold\n",
                a->threshold_bits, a->threshold_shift, a->threshold_ge ? ">=" : ">");
        fprintf(f, "  reset          %s\n", a->reset_subtract ? "subtract the threshold" : "to 0");
        fprintf(f, "  bias           %d-bit signed mantissa << 0..%d\n", a->bias_bits,
                a->bias_exp_max);
        if (a->graded_bits)
            fprintf(f, "  spikes         graded, %d-bit payload\n", a->graded_bits);
        else
            fprintf(f, "  spikes         binary (a count n is n spikes)\n");
        fprintf(f, "  input pixels   %d-bit unsigned\n", a->input_bits);
    }
    fprintf(f, "\nmesh\n");
    fprintf(f, "  topology       mesh %d x %d, %d tile%s defined, %d core%s per tile, %lld cores\n",
            p->mesh_width, p->mesh_height, p->n_tiles, p->n_tiles == 1 ? "" : "s",
            p->cores_per_tile, p->cores_per_tile == 1 ? "" : "s", (long long)p->n_cores);
    fprintf(f, "  link buffer    %d messages\n", p->link_buffer_size);
    static const char *const dir[4] = {"north", "east", "south", "west"};
    for (int d = 0; d < 4; d++) {
        si(b1, sizeof b1, p->e_hop[d], "J");
        si(b2, sizeof b2, p->t_hop[d], "s");
        fprintf(f, "  hop %-5s      %s, %s\n", dir[d], b1, b2);
    }
    if (!p->sync_table) {
        si(b1, sizeof b1, p->sync_s[0], "s");
        fprintf(f, "  sync           fixed %s per step\n", b1);
    } else {
        fprintf(f, "  sync           table (tiles in use -> latency; the largest key <= tiles):");
        for (int i = 0; i < p->n_sync; i++) {
            si(b1, sizeof b1, p->sync_s[i], "s");
            fprintf(f, "%s %d: %s", i ? "," : "", p->sync_tiles[i], b1);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\ncores (buffer before the %s unit%s)\n", p->buffer_position,
            p->buffer_inside_unit ? ", inside it" : "");
    for (int i = 0; i < p->n_groups; i++) {
        const qkf_hw_core_group *g = &p->group[i];
        char fi[32], fo[32], l[32], d[32];
        bytes(b1, sizeof b1, g->synapse_bytes);
        count_or_unlimited(fi, sizeof fi, g->max_fan_in);
        count_or_unlimited(fo, sizeof fo, g->max_fan_out);
        count_or_unlimited(l, sizeof l, g->max_layers_per_core);
        count_or_unlimited(d, sizeof d, g->max_destinations);
        fprintf(f,
                "  %-24s x%-3d neurons %lld, synaptic memory %s, fan-in %s, fan-out %s axons, "
                "layers %s, destination cores %s\n",
                g->name, g->count, (long long)g->max_neurons, b1, fi, fo, l, d);
    }
    if (p->max_kernel || p->max_feature_side || p->max_input_side || p->max_channels) {
        char k[32], fs[32], in[32], ch[32];
        count_or_unlimited(k, sizeof k, p->max_kernel);
        count_or_unlimited(fs, sizeof fs, p->max_feature_side);
        count_or_unlimited(in, sizeof in, p->max_input_side);
        count_or_unlimited(ch, sizeof ch, p->max_channels);
        fprintf(f, "  layer limits   kernel side %s, feature map side %s, input side %s, "
                   "channels %s\n",
                k, fs, in, ch);
    }
    fprintf(f, "\npipeline units and costs (%s; * = the unit qkf's neurons use)\n",
            basis[p->cost_basis]);
    static const char *const what[QKF_HW_UNIT_KINDS][3] = {
        {"per message in", NULL, NULL},
        {"per synapse looked up", NULL, NULL},
        {"per update", NULL, NULL},
        {"access neuron", "update neuron", "spike out"},
        {"per message out", NULL, NULL}};
    for (int i = 0; i < p->n_units; i++) {
        const qkf_hw_unit *u = &p->unit[i];
        fprintf(f, "  %c %-8s %-26s", u->is_default ? '*' : ' ', sec_names[u->kind], u->name);
        if (u->model[0])
            fprintf(f, " model %s", u->model);
        if (u->count > 1)
            fprintf(f, " (x%d)", u->count);
        fprintf(f, "\n");
        for (int j = 0; j < 3 && what[u->kind][j]; j++) {
            si(b1, sizeof b1, u->energy[j], "J");
            si(b2, sizeof b2, u->latency[j], "s");
            fprintf(f, "      %-22s %s, %s\n", what[u->kind][j], b1, b2);
        }
    }
    if (p->e_ac || p->e_mac) {
        si(b1, sizeof b1, p->e_ac, "J");
        si(b2, sizeof b2, p->e_mac, "J");
        fprintf(f, "\narithmetic energy  %s per accumulate (AC), %s per multiply-accumulate (MAC)\n",
                b1, b2);
    }
}
