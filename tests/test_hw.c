/* Chip profiles (io/hw_profile.c): the bundled profiles load and agree with their files; a
 * profile written here loads field by field; a table of broken profiles each get one line naming
 * the file, the line and the key, and the reason; qkf hw list|show as users call them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../io/hw_profile.h"
#include "../kernels/base.h"
#include "util.h"

/* A valid profile using every part of the format: two core entries (limits differ), YAML
 * anchors, a flow-style sync table out of order, an input soma listed before the neuron soma. */
static const char base_yaml[] =
    "architecture:\n"
    "  name: testchip\n"
    "  attributes:\n"
    "    topology: mesh\n"
    "    width: 2\n"
    "    height: 2\n"
    "    link_buffer_size: 8\n"
    "    sync_model: table\n"
    "    latency_sync: {4: 2.0e-6, 1: 1.0e-6}\n"
    "    qkf:\n"
    "      description: \"a test chip\"\n"
    "      costs: calibrated\n"
    "      energy_ac: 0.5 pJ\n"
    "      energy_mac: 2 nJ\n"
    "      max_kernel: 7\n"
    "      arithmetic:\n"
    "        weight_bits: 8\n"
    "        weight_exp_min: -4\n"
    "        weight_exp_max: 3\n"
    "        scale: per_channel\n"
    "        current_bits: 16\n"
    "        current_overflow: wrap\n"
    "        current_shift: 6\n"
    "        membrane_bits: 24\n"
    "        membrane_overflow: saturate\n"
    "        leak: decay\n"
    "        decay_bits: 12\n"
    "        threshold_bits: 17\n"
    "        threshold_shift: 6\n"
    "        threshold_compare: greater\n"
    "        reset: zero\n"
    "        bias_bits: 13\n"
    "        bias_exp_max: 7\n"
    "        graded_bits: 0\n"
    "        input_bits: 8\n"
    "  tile:\n"
    "    - name: t[0..3]\n"
    "      attributes:\n"
    "        energy_north_hop: 1.0e-12\n"
    "        latency_north_hop: 2.0e-9\n"
    "        energy_east_hop: 3.0e-12\n"
    "        latency_east_hop: 4.0e-9\n"
    "        energy_south_hop: 5.0e-12\n"
    "        latency_south_hop: 6.0e-9\n"
    "        energy_west_hop: 7.0e-12\n"
    "        latency_west_hop: 8.0e-9\n"
    "      core: &cores\n"
    "        - name: big[0..1]\n"
    "          attributes:\n"
    "            buffer_position: soma\n"
    "            max_neurons_supported: 512\n"
    "            qkf: {synapse_memory: 64 KiB, max_fan_in: 1024, max_fan_out: 2048}\n"
    "          axon_in: &ain\n"
    "            - name: in\n"
    "              attributes: {energy_message_in: 1.5e-12, latency_message_in: 1.0e-9}\n"
    "          synapse: &syn\n"
    "            - name: conv\n"
    "              attributes: {model: current_based, energy_process_spike: 2.5e-12, latency_process_spike: 3.0e-9}\n"
    "            - name: dense\n"
    "              attributes: {model: current_based, energy_process_spike: 9.0e-12, latency_process_spike: 9.0e-9}\n"
    "          dendrite: &den\n"
    "            name: acc\n"
    "            attributes: {model: accumulator, energy_update: 0.25e-12, latency_update: 0.5e-9}\n"
    "          soma: &soma\n"
    "            - name: inputs[0..9]\n"
    "              attributes: {model: input}\n"
    "            - name: lif\n"
    "              attributes: {model: leaky_integrate_fire, reset_mode: hard, energy_access_neuron: 4.0e-12, latency_access_neuron: 5.0e-9, energy_update_neuron: 6.0e-12, latency_update_neuron: 7.0e-9, energy_spike_out: 8.0e-12, latency_spike_out: 9.0e-9}\n"
    "          axon_out:\n"
    "            - name: out\n"
    "              attributes: {energy_message_out: 10.0e-12, latency_message_out: 11.0e-9}\n"
    "        - name: small\n"
    "          attributes:\n"
    "            buffer_position: soma\n"
    "            max_neurons_supported: 128\n"
    "            qkf: {max_layers: 1, max_destinations: 2}\n"
    "          axon_in: *ain\n"
    "          synapse: *syn\n"
    "          dendrite: *den\n"
    "          soma: *soma\n"
    "          axon_out: [{name: out, attributes: {energy_message_out: 10.0e-12, latency_message_out: 11.0e-9}}]\n";

/* base_yaml with the first occurrence of find replaced by repl (malloc'ed). */
static char *mutate(const char *find, const char *repl)
{
    const char *at = strstr(base_yaml, find);
    cr_assert_not_null(at, "fixture has no '%s'", find);
    size_t n = strlen(base_yaml) - strlen(find) + strlen(repl) + 1;
    char *s = malloc(n);
    size_t k = (size_t)(at - base_yaml);
    memcpy(s, base_yaml, k);
    strcpy(s + k, repl);
    strcat(s, at + strlen(find));
    return s;
}

/* 1-based line of the first occurrence of what in text (0 if absent). */
static int line_of(const char *text, const char *what)
{
    const char *at = strstr(text, what);
    if (!at)
        return 0;
    int line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

Test(hw, base_profile_loads_field_by_field)
{
    qkf_hw_profile p;
    cr_assert_eq(qkf_hw_parse(base_yaml, strlen(base_yaml), "base.yaml", &p), 0, "%s",
                 qkf_last_error());
    cr_expect_str_eq(p.name, "testchip");
    cr_expect_str_eq(p.path, "base.yaml");
    cr_expect_str_eq(p.description, "a test chip");
    cr_expect_eq(p.cost_basis, QKF_HW_COSTS_CALIBRATED);
    const qkf_hw_arith *a = &p.arith;
    cr_expect_eq(a->is_float, 0);
    cr_expect_eq(a->weight_bits, 8);
    cr_expect_eq(a->weight_exp_min, -4);
    cr_expect_eq(a->weight_exp_max, 3);
    cr_expect_eq(a->per_channel, 1);
    cr_expect_eq(a->current_bits, 16);
    cr_expect_eq(a->current_wrap, 1);
    cr_expect_eq(a->current_shift, 6);
    cr_expect_eq(a->membrane_bits, 24);
    cr_expect_eq(a->membrane_wrap, 0);
    cr_expect_eq(a->leak, QKF_HW_LEAK_DECAY);
    cr_expect_eq(a->decay_bits, 12);
    cr_expect_eq(a->threshold_bits, 17);
    cr_expect_eq(a->threshold_shift, 6);
    cr_expect_eq(a->threshold_ge, 0);
    cr_expect_eq(a->reset_subtract, 0);
    cr_expect_eq(a->bias_bits, 13);
    cr_expect_eq(a->bias_exp_max, 7);
    cr_expect_eq(a->graded_bits, 0);
    cr_expect_eq(a->input_bits, 8);
    cr_expect_eq(a->weight_codebook, 0);
    /* the mesh */
    cr_expect_eq(p.mesh_width, 2);
    cr_expect_eq(p.mesh_height, 2);
    cr_expect_eq(p.n_tiles, 4);
    cr_expect_eq(p.cores_per_tile, 3);
    cr_expect_eq(p.n_cores, 12);
    cr_expect_eq(p.link_buffer_size, 8);
    const double e_hop[4] = {1e-12, 3e-12, 5e-12, 7e-12}, t_hop[4] = {2e-9, 4e-9, 6e-9, 8e-9};
    for (int d = 0; d < 4; d++) {
        cr_expect_eq(p.e_hop[d], e_hop[d], "direction %d", d);
        cr_expect_eq(p.t_hop[d], t_hop[d], "direction %d", d);
    }
    cr_expect_eq(p.e_hop_ns, 0.5 * (1e-12 + 5e-12));
    cr_expect_eq(p.e_hop_ew, 0.5 * (3e-12 + 7e-12));
    cr_expect_eq(p.t_hop_ns, 0.5 * (2e-9 + 6e-9));
    cr_expect_eq(p.t_hop_ew, 0.5 * (4e-9 + 8e-9));
    /* the sync table, sorted by tiles in use */
    cr_expect_eq(p.sync_table, 1);
    cr_assert_eq(p.n_sync, 2);
    cr_expect_eq(p.sync_tiles[0], 1);
    cr_expect_eq(p.sync_s[0], 1e-6);
    cr_expect_eq(p.sync_tiles[1], 4);
    cr_expect_eq(p.sync_s[1], 2e-6);
    cr_expect_str_eq(p.buffer_position, "soma");
    /* the cores: two entries with their limits; the profile's limits are the largest */
    cr_assert_eq(p.n_groups, 2);
    cr_expect_str_eq(p.group[0].name, "big[0..1]");
    cr_expect_eq(p.group[0].count, 2);
    cr_expect_eq(p.group[0].max_neurons, 512);
    cr_expect_eq(p.group[0].synapse_bytes, 64 * 1024);
    cr_expect_eq(p.group[0].max_fan_in, 1024);
    cr_expect_eq(p.group[0].max_fan_out, 2048);
    cr_expect_eq(p.group[1].count, 1);
    cr_expect_eq(p.group[1].max_neurons, 128);
    cr_expect_eq(p.group[1].synapse_bytes, 0);
    cr_expect_eq(p.group[1].max_layers_per_core, 1);
    cr_expect_eq(p.group[1].max_destinations, 2);
    cr_expect_eq(p.max_neurons, 512);
    cr_expect_eq(p.synapse_bytes, 64 * 1024);
    cr_expect_eq(p.max_destinations, 2);
    cr_expect_eq(p.max_kernel, 7);
    cr_expect_eq(p.max_channels, 0);
    /* the pipeline: every unit in file order; the first of each kind is the default, except an
     * input soma */
    cr_assert_eq(p.n_units, 7);
    const char *names[7] = {"in", "conv", "dense", "acc", "inputs[0..9]", "lif", "out"};
    const int defaults[7] = {1, 1, 0, 1, 0, 1, 1};
    for (int i = 0; i < 7; i++) {
        cr_expect_str_eq(p.unit[i].name, names[i]);
        cr_expect_eq(p.unit[i].is_default, defaults[i], "unit %s", names[i]);
    }
    cr_expect_eq(p.unit[4].count, 10);
    cr_expect_eq(p.cost.e_message_in, 1.5e-12);
    cr_expect_eq(p.cost.t_message_in, 1e-9);
    cr_expect_eq(p.cost.e_process_spike, 2.5e-12);
    cr_expect_eq(p.cost.t_process_spike, 3e-9);
    cr_expect_eq(p.cost.e_dendrite_update, 0.25e-12);
    cr_expect_eq(p.cost.t_dendrite_update, 0.5e-9);
    cr_expect_eq(p.cost.e_access_neuron, 4e-12);
    cr_expect_eq(p.cost.t_access_neuron, 5e-9);
    cr_expect_eq(p.cost.e_update_neuron, 6e-12);
    cr_expect_eq(p.cost.t_update_neuron, 7e-9);
    cr_expect_eq(p.cost.e_spike_out, 8e-12);
    cr_expect_eq(p.cost.t_spike_out, 9e-9);
    cr_expect_eq(p.cost.e_message_out, 10e-12);
    cr_expect_eq(p.cost.t_message_out, 11e-9);
    /* quantities with units */
    cr_expect_eq(p.e_ac, 0.5 * 1e-12);
    cr_expect_eq(p.e_mac, 2 * 1e-9);
}

/* A SANA-FE file (no qkf keys) is the float machine at its costs. */
Test(hw, sanafe_file_without_qkf_keys_is_the_float_machine)
{
    const char *a = strstr(base_yaml, "    qkf:\n"), *b = strstr(base_yaml, "  tile:\n");
    cr_assert(a && b && a < b);
    char *s = malloc(strlen(base_yaml) + 1);
    memcpy(s, base_yaml, (size_t)(a - base_yaml));
    strcpy(s + (a - base_yaml), b);
    qkf_hw_profile p;
    int rc = qkf_hw_parse(s, strlen(s), "plain.yaml", &p);
    free(s);
    cr_assert_eq(rc, 0, "%s", qkf_last_error());
    cr_expect_eq(p.arith.is_float, 1);
    cr_expect_eq(p.cost_basis, QKF_HW_COSTS_AS_GIVEN);
    cr_expect_eq(p.cost.e_process_spike, 2.5e-12);
    cr_expect(strstr(p.description, "testchip") != NULL, "%s", p.description);
}

typedef struct {
    const char *find, *repl; /* the mutation of base_yaml */
    const char *at;          /* the error's line is the line of this text in the mutated file */
    const char *key;         /* the key path the error names */
    const char *what;        /* and a part of its reason */
} bad_case;

static const bad_case bad[] = {
    {"    topology: mesh\n", "    topology: mesh\n    colour: red\n", "colour", "architecture.attributes",
     "unknown key 'colour'"},
    {"energy_ac: 0.5 pJ", "energy_ac: 0.5", "energy_ac", "architecture.attributes.qkf.energy_ac",
     "missing unit"},
    {"energy_mac: 2 nJ", "energy_mac: 2 nW", "energy_mac", "architecture.attributes.qkf.energy_mac",
     "unknown unit 'nW'"},
    {"synapse_memory: 64 KiB", "synapse_memory: 65536", "synapse_memory",
     "architecture.tile[0].core[0].attributes.qkf.synapse_memory", "missing unit"},
    {"synapse_memory: 64 KiB", "synapse_memory: 0.5 B", "synapse_memory",
     "architecture.tile[0].core[0].attributes.qkf.synapse_memory", "whole number of bytes"},
    {"energy_spike_out: 8.0e-12", "energy_spike_out: -8.0e-12", "energy_spike_out",
     "architecture.tile[0].core[0].soma[1].attributes.energy_spike_out", "negative cost"},
    {"energy_west_hop: 7.0e-12", "energy_west_hop: -1e-12", "energy_west_hop",
     "architecture.tile[0].attributes.energy_west_hop", "negative cost"},
    {"latency_sync: {4: 2.0e-6", "latency_sync: {4: -2.0e-6", "latency_sync",
     "architecture.attributes.latency_sync", "negative cost"},
    {"energy_update: 0.25e-12", "energy_update: 0.25 pJ", "energy_update: 0.25 pJ",
     "architecture.tile[0].core[0].dendrite.attributes.energy_update", "joules, e.g. 3.0e-12"},
    {"weight_bits: 8", "weight_bits: 17", "weight_bits",
     "architecture.attributes.qkf.arithmetic.weight_bits", "out of range (1..16)"},
    {"weight_bits: 8", "weight_bits: 0", "weight_bits",
     "architecture.attributes.qkf.arithmetic.weight_bits", "out of range (1..16)"},
    {"membrane_bits: 24", "membrane_bits: 33", "membrane_bits",
     "architecture.attributes.qkf.arithmetic.membrane_bits", "out of range (2..32)"},
    {"membrane_bits: 24", "membrane_bits: 1", "membrane_bits",
     "architecture.attributes.qkf.arithmetic.membrane_bits", "out of range (2..32)"},
    {"membrane_bits: 24", "membrane_bits: 2.5", "membrane_bits",
     "architecture.attributes.qkf.arithmetic.membrane_bits", "not an integer"},
    {"    width: 2\n", "", "topology: mesh", "architecture.attributes",
     "missing required key 'width'"},
    {"        reset: zero\n", "", "weight_bits", "architecture.attributes.qkf.arithmetic",
     "missing required key 'reset'"},
    {"      costs: calibrated\n", "", "description", "architecture.attributes.qkf",
     "missing required key 'costs'"},
    {"energy_spike_out: 8.0e-12, ", "", "model: leaky_integrate_fire",
     "architecture.tile[0].core[0].soma[1].attributes", "missing required key 'energy_spike_out'"},
    {"    latency_sync: {4: 2.0e-6, 1: 1.0e-6}\n", "", "topology: mesh", "architecture.attributes",
     "missing required key 'latency_sync'"},
    {"threshold_bits: 17", "threshold_bits: 18", "threshold_bits",
     "architecture.attributes.qkf.arithmetic.threshold_bits", "inconsistent"},
    {"weight_exp_min: -4", "weight_exp_min: 5", "weight_exp_max",
     "architecture.attributes.qkf.arithmetic.weight_exp_max", "weight_exp_max 3 < weight_exp_min 5"},
    {"current_shift: 6", "current_shift: 9", "current_shift",
     "architecture.attributes.qkf.arithmetic.current_shift", "inconsistent"},
    {"graded_bits: 0", "graded_bits: 17", "graded_bits",
     "architecture.attributes.qkf.arithmetic.graded_bits", "inconsistent"},
    {"      arithmetic:\n", "      arithmetic:\n        float: true\n", "weight_bits",
     "architecture.attributes.qkf.arithmetic.weight_bits", "inconsistent: float: true"},
    {"leak: decay", "leak: none", "decay_bits", "architecture.attributes.qkf.arithmetic.decay_bits",
     "decay_bits with leak: none"},
    {"leak: decay\n        decay_bits: 12\n", "leak: linear\n", "  soma: &soma",
     "architecture.tile[0].core[0].soma", "inconsistent: a leaky_integrate_fire soma"},
    {"leak: decay", "leak: exponential", "leak", "architecture.attributes.qkf.arithmetic.leak",
     "is not one of: decay, none, linear"},
    {"topology: mesh", "topology: torus", "topology", "architecture.attributes.topology",
     "not modelled"},
    {"model: accumulator,", "model: taps,", "  dendrite: &den", "architecture.tile[0].core[0].dendrite",
     "multi-compartment dendrites are not modelled"},
    {"model: accumulator,", "model: accumulator_with_delay,", "  dendrite: &den",
     "architecture.tile[0].core[0].dendrite", "synaptic delays are not modelled"},
    {"model: leaky_integrate_fire,", "model: hh, plugin: libhh.so,", "  soma: &soma",
     "architecture.tile[0].core[0].soma", "plugins are not modelled"},
    {"model: leaky_integrate_fire,", "model: izhikevich,", "izhikevich",
     "architecture.tile[0].core[0].soma[1].attributes.model", "unknown model 'izhikevich'"},
    {"model: leaky_integrate_fire,", "model: truenorth,", "  soma: &soma",
     "architecture.tile[0].core[0].soma", "TrueNorth neuron"},
    {"{model: current_based, energy_process_spike: 2.5e-12",
     "{model: input, energy_process_spike: 2.5e-12", "  synapse: &syn",
     "architecture.tile[0].core[0].synapse", "only current_based synapses are modelled"},
    {"reset_mode: hard,", "noise: noise.csv,", "noise.csv",
     "architecture.tile[0].core[0].soma.attributes", "stochastic neurons are not modelled"},
    {"reset_mode: hard,", "reset_mode: soft,", "reset_mode",
     "architecture.tile[0].core[0].soma.attributes.reset_mode",
     "inconsistent: reset_mode soft but the qkf arithmetic has reset: zero"},
    {"reset_mode: hard,", "reset_mode: saturate,", "reset_mode",
     "architecture.tile[0].core[0].soma.attributes.reset_mode", "not modelled"},
    {"    width: 2\n", "    width: 1\n", "- name: t[0..3]", "architecture.tile",
     "4 tiles do not fit the 1 x 2 mesh"},
    {"t[0..3]", "t[3..0]", "t[3..0]", "architecture.tile[0].name", "runs backwards"},
    {"t[0..3]", "t[0..x]", "t[0..x]", "architecture.tile[0].name", "bad range"},
    {"    height: 2\n", "    height: 2\n    height: 3\n", "height: 3", "architecture.attributes",
     "duplicate key 'height'"},
    {"    width: 2\n", "    width: two\n", "width", "architecture.attributes.width",
     "not an integer"},
    {"sync_model: table", "sync_model: adaptive", "sync_model",
     "architecture.attributes.sync_model", "is not one of: fixed, table"},
    {"buffer_position: soma\n            max_neurons_supported: 512",
     "buffer_position: soma\n            buffer_inside_unit: maybe\n            max_neurons_supported: 512",
     "maybe", "architecture.tile[0].core[0].attributes.buffer_inside_unit", "true or false"},
    {"buffer_position: soma\n            max_neurons_supported: 512",
     "buffer_position: axon\n            max_neurons_supported: 512", "axon",
     "architecture.tile[0].core[0].attributes.buffer_position", "not one of: dendrite, soma"},
    {"max_neurons_supported: 128", "max_neurons_supported: 0", "max_neurons_supported: 0",
     "architecture.tile[0].core[1].attributes.max_neurons_supported", "out of range"},
    /* a second core entry with other costs */
    {"[{name: out, attributes: {energy_message_out: 10.0e-12",
     "[{name: out, attributes: {energy_message_out: 12.0e-12", "- name: small",
     "architecture.tile[0].core[1]", "pipeline different from core 'big[0..1]'"},
    /* a second tile entry with other hop costs */
    {"latency_message_out: 11.0e-9}}]\n",
     "latency_message_out: 11.0e-9}}]\n    - name: odd\n      attributes: {energy_north_hop: 0.0, "
     "latency_north_hop: 0.0, energy_east_hop: 0.0, latency_east_hop: 0.0, energy_south_hop: 0.0, "
     "latency_south_hop: 0.0, energy_west_hop: 0.0, latency_west_hop: 0.0}\n      core: *cores\n",
     "- name: odd", "architecture.tile[1]",
     "tile 'odd' differs from tile 't[0..3]' (heterogeneous tiles are not modelled"},
    {"    width: 2\n", "    width: [2\n", "height", "", "YAML:"},
    {"  name: testchip", "  name: chips[0..1]", "chips", "architecture.name",
     "several architectures"},
};

Test(hw, bad_profiles_get_one_line_naming_file_line_and_key)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const bad_case *b = &bad[i];
        char *text = mutate(b->find, b->repl);
        int line = line_of(text, b->at);
        cr_assert_gt(line, 0, "case %zu: '%s' not in the mutated text", i, b->at);
        qkf_hw_profile p;
        memset(&p, 0x5a, sizeof p);
        int rc = qkf_hw_parse(text, strlen(text), "bad.yaml", &p);
        free(text);
        const char *e = qkf_last_error();
        cr_expect_eq(rc, -1, "case %zu (%s -> %s) loaded", i, b->find, b->repl);
        char head[600];
        if (b->key[0])
            snprintf(head, sizeof head, "bad.yaml:%d: %s: ", line, b->key);
        else
            snprintf(head, sizeof head, "bad.yaml:%d: ", line);
        cr_expect(strncmp(e, head, strlen(head)) == 0, "case %zu: expected '%s...', got '%s'", i,
                  head, e);
        cr_expect(strstr(e, b->what) != NULL, "case %zu: no '%s' in '%s'", i, b->what, e);
        cr_expect(strchr(e, '\n') == NULL, "case %zu: more than one line: '%s'", i, e);
        cr_expect_eq(p.name[0], 0, "case %zu: the profile is not cleared after an error", i);
    }
}

Test(hw, documents_that_are_not_profiles)
{
    static const struct {
        const char *text, *what;
    } docs[] = {
        {"", "empty document"},
        {"# only a comment\n", "empty document"},
        {"- a\n- b\n", "expected a mapping, found a list"},
        {"architecture: 5\n", "expected a mapping, found a scalar"},
        {"network: {}\n", "missing required key 'architecture'"},
        {"architectur:\n  name: x\n", "unknown key 'architectur'"},
        {"architecture: {name: x, attributes: {width: 1, height: 1, link_buffer_size: 1}}\n",
         "missing required key 'tile'"},
        {"\"unterminated\n", "YAML:"},
        {"a: \x01\n", "YAML:"},
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        qkf_hw_profile p;
        cr_expect_eq(qkf_hw_parse(docs[i].text, strlen(docs[i].text), "doc.yaml", &p), -1,
                     "doc %zu loaded", i);
        const char *e = qkf_last_error();
        cr_expect(strncmp(e, "doc.yaml:", 9) == 0 && strstr(e, docs[i].what) && !strchr(e, '\n'),
                  "doc %zu: '%s' (wanted '%s')", i, e, docs[i].what);
    }
}

/* Aliases can make a small file a huge tree: the walk is bounded (and says so). */
Test(hw, alias_expansion_is_bounded)
{
    char *text = mutate("  tile:\n    - name: t[0..3]\n", "  tile:\n    - &t\n      name: t[0..3]\n");
    size_t n = strlen(text);
    char *big = malloc(n + 3000 * 10 + 1);
    memcpy(big, text, n + 1);
    for (int i = 0; i < 3000; i++)
        strcat(big + n, "    - *t\n"), n += 9;
    qkf_hw_profile p;
    cr_expect_eq(qkf_hw_parse(big, strlen(big), "bomb.yaml", &p), -1);
    cr_expect(strstr(qkf_last_error(), "expands to more than") != NULL, "%s", qkf_last_error());
    free(text);
    free(big);
}

static const char *const bundled[] = {"ideal-45nm", "loihi", "speck", "truenorth", "wide16"};

/* Every bundled profile loads by name, is the file in models/hw (the embedded text is the
 * file's), and describes where its costs come from. */
Test(hw, bundled_profiles_load_and_match_their_files)
{
    cr_assert_eq(qkf_hw_count(), 5);
    for (int i = 0; i < 5; i++) {
        cr_expect_str_eq(qkf_hw_name(i), bundled[i]);
        qkf_hw_profile a, b;
        cr_assert_eq(qkf_hw_load(bundled[i], &a), 0, "%s: %s", bundled[i], qkf_last_error());
        cr_expect_str_eq(a.name, bundled[i]);
        cr_expect_str_eq(a.arch_name, bundled[i], "the architecture name is the bundled name");
        cr_expect_eq(a.path[0], 0);
        cr_expect_neq(a.cost_basis, QKF_HW_COSTS_AS_GIVEN, "%s: say where the costs come from",
                      bundled[i]);
        cr_expect(strlen(a.description) > 20, "%s: a description", bundled[i]);
        char path[512];
        snprintf(path, sizeof path, "%s/../../models/hw/%s.yaml", QKF_FIXTURE_DIR, bundled[i]);
        cr_assert_eq(qkf_hw_load(path, &b), 0, "%s", qkf_last_error());
        cr_expect_str_eq(b.path, path);
        cr_expect(memcmp(&a.arith, &b.arith, sizeof a.arith) == 0, "%s: arithmetic", bundled[i]);
        cr_expect(memcmp(&a.cost, &b.cost, sizeof a.cost) == 0, "%s: costs", bundled[i]);
        cr_expect(memcmp(a.unit, b.unit, sizeof a.unit) == 0, "%s: units", bundled[i]);
        cr_expect(memcmp(a.group, b.group, sizeof a.group) == 0, "%s: core limits", bundled[i]);
        size_t len;
        cr_expect_not_null(qkf_hw_text(i, &len));
        cr_expect_gt(len, 100);
    }
    cr_expect_null(qkf_hw_name(5));
    size_t len;
    cr_expect_null(qkf_hw_text(-1, &len));
}

/* What the integer engines are told: the numbers of issue #13 and docs/hardware.md for each
 * bundled chip (Lava's Loihi LIF, sinabs' Speck, the 45 nm float machine, the wide profile). */
Test(hw, bundled_arithmetic_is_the_documented_one)
{
    qkf_hw_profile p;
    cr_assert_eq(qkf_hw_load("loihi", &p), 0, "%s", qkf_last_error());
    const qkf_hw_arith *a = &p.arith;
    cr_expect(!a->is_float && a->weight_bits == 8 && a->membrane_bits == 24 &&
              a->current_bits == 16 && a->current_shift == 6 && a->decay_bits == 12 &&
              a->threshold_bits == 17 && a->threshold_shift == 6 && !a->threshold_ge &&
              !a->reset_subtract && a->bias_bits == 13 && a->bias_exp_max == 7 &&
              !a->membrane_wrap && a->leak == QKF_HW_LEAK_DECAY);
    cr_expect_eq(p.n_cores, 128);
    cr_expect_eq(p.cost.e_process_spike, 24.0e-12, "the conv synapse is the default");
    cr_assert_eq(qkf_hw_load("speck", &p), 0, "%s", qkf_last_error());
    cr_expect(a->weight_bits == 8 && a->membrane_bits == 16 && a->weight_exp_min == 0 &&
              a->weight_exp_max == 0 && !a->per_channel && a->threshold_ge &&
              a->leak == QKF_HW_LEAK_NONE);
    cr_expect_eq(p.n_cores, 9);
    cr_expect_eq(p.cost_basis, QKF_HW_COSTS_UNPUBLISHED);
    cr_expect_eq(p.max_destinations, 2);
    cr_assert_eq(qkf_hw_load("ideal-45nm", &p), 0, "%s", qkf_last_error());
    cr_expect(a->is_float && p.e_ac == 0.9e-12 && p.e_mac == 4.6e-12);
    cr_assert_eq(qkf_hw_load("wide16", &p), 0, "%s", qkf_last_error());
    cr_expect(a->weight_bits == 16 && a->membrane_bits == 32 && a->per_channel);
    cr_assert_eq(qkf_hw_load("truenorth", &p), 0, "%s", qkf_last_error());
    cr_expect(a->leak == QKF_HW_LEAK_LINEAR && a->weight_codebook == 4);
}

Test(hw, names_and_paths)
{
    qkf_hw_profile p;
    cr_expect_eq(qkf_hw_load("lohi", &p), -1);
    cr_expect(strstr(qkf_last_error(), "lohi: no bundled profile") &&
                  strstr(qkf_last_error(), "loihi, speck"),
              "%s", qkf_last_error());
    cr_expect_eq(qkf_hw_load("/nonexistent/chip.yaml", &p), -1);
    cr_expect(strstr(qkf_last_error(), "/nonexistent/chip.yaml: cannot open"), "%s",
              qkf_last_error());
    cr_expect_eq(qkf_hw_load("", &p), -1);
}

/* ---- the command ---------------------------------------------------------------------------- */

static char cli_dir[256];
static void cli_setup(void) { tmpdir_make(cli_dir, sizeof cli_dir, "hw"); }
static void cli_teardown(void) { tmpdir_remove(cli_dir); }

/* Runs qkf with args; stdout and stderr into out/err; returns the exit status. */
static int qkf_run(const char *args, char *out, size_t nout, char *err, size_t nerr)
{
    int st = run_cmd("%s %s >%s 2>%s", QKF_BINARY, args, tmpdir_path(cli_dir, "out"),
                     tmpdir_path(cli_dir, "err"));
    const char *files[2] = {"out", "err"};
    char *bufs[2] = {out, err};
    size_t caps[2] = {nout, nerr};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(tmpdir_path(cli_dir, files[i]), "r");
        size_t n = f ? fread(bufs[i], 1, caps[i] - 1, f) : 0;
        bufs[i][n] = 0;
        if (f)
            fclose(f);
    }
    return st;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

Test(hw_cli, list_names_every_bundled_profile_once, .init = cli_setup, .fini = cli_teardown)
{
    static char out[1 << 16], err[4096];
    cr_assert_eq(qkf_run("hw list", out, sizeof out, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 5; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "\n  %s ", bundled[i]);
        cr_expect_eq(count(out, needle), 1, "%s in:\n%s", bundled[i], out);
    }
    cr_expect_eq(err[0], 0);
}

Test(hw_cli, show_prints_everything_with_units, .init = cli_setup, .fini = cli_teardown)
{
    static char out[1 << 16], err[4096];
    cr_assert_eq(qkf_run("hw show loihi", out, sizeof out, err, sizeof err), 0, "%s", err);
    const char *want[] = {"profile loihi", "arithmetic", "8-bit signed mantissa", "24 bits",
                          "spike when v > threshold", "mesh 8 x 4", "128 cores", "hop north",
                          "4.2 pJ, 6.5 ns", "1.8 us", "neurons 1024", "128 KiB",
                          "loihi_conv_synapse", "24 pJ, 3.1 ns", "51.2 pJ, 6 ns",
                          "111 pJ, 5.1 ns", "calibrated"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "no '%s' in:\n%s", want[i], out);
    /* a file works the same, a name through the path */
    char args[600];
    snprintf(args, sizeof args, "hw show %s/../../models/hw/speck.yaml", QKF_FIXTURE_DIR);
    cr_assert_eq(qkf_run(args, out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_expect(strstr(out, "profile speck") && strstr(out, "not published") &&
                  strstr(out, "spike when v >= threshold") && strstr(out, "destination cores 2"),
              "%s", out);
    cr_assert_eq(qkf_run("hw --help", out, sizeof out, err, sizeof err), 0);
    cr_expect(strstr(out, "usage: qkf hw list") && strstr(out, "--hw PROFILE"), "%s", out);
}

Test(hw_cli, a_bad_profile_gets_one_line, .init = cli_setup, .fini = cli_teardown)
{
    static char out[1 << 16], err[4096];
    char *text = mutate("weight_bits: 8", "weight_bits: 20");
    char path[512];
    snprintf(path, sizeof path, "%s", tmpdir_path(cli_dir, "bad.yaml"));
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    char args[600], head[700];
    snprintf(args, sizeof args, "hw show %s", path);
    cr_expect_eq(qkf_run(args, out, sizeof out, err, sizeof err), 1);
    snprintf(head, sizeof head,
             "qkf hw: %s:%d: architecture.attributes.qkf.arithmetic.weight_bits: 20 is out of "
             "range (1..16)\n",
             path, line_of(text, "weight_bits: 20"));
    cr_expect_str_eq(err, head);
    cr_expect_eq(out[0], 0, "nothing on stdout: %s", out);
    free(text);
    const char *bad_args[] = {"hw", "hw show", "hw show nochip", "hw frob", "hw list extra",
                              "hw show loihi speck", "hw --bogus"};
    for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
        cr_expect_eq(qkf_run(bad_args[i], out, sizeof out, err, sizeof err), 1, "%s",
                     bad_args[i]);
        cr_expect(strncmp(err, "qkf hw: ", 8) == 0 && count(err, "\n") == 1, "%s: '%s'",
                  bad_args[i], err);
    }
}
