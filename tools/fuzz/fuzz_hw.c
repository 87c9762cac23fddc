/* afl++ harness for the chip-profile loader (qkf_hw_parse, io/hw_profile.c); not part of the
 * CMake build (see tools/fuzz/README.md). Each argument is a profile file (how crashes are
 * replayed); an afl-clang-fast build runs in persistent mode.
 *
 * The contract checked (a breach aborts, which afl records as a crash): on error the profile is
 * all zeros and the message is one printable line "fuzz.yaml:LINE: ..." with LINE a line of the
 * input (or one past its end); on success every field is in the range the format allows (bits,
 * mesh, counts, one default unit of each kind, costs finite and not negative, strings
 * terminated, the sync table sorted) and the profile prints (qkf_hw_describe). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/hw_profile.h"
#include "kernels/base.h"
#include "fuzz_util.h"

static FILE *devnull;

static void breach(const char *what)
{
    fprintf(stderr, "fuzz_hw: contract broken (%s): %s\n", what, qkf_last_error());
    abort();
}

static int terminated(const char *s, size_t cap) { return memchr(s, 0, cap) != NULL; }

static int cost_ok(double v) { return isfinite(v) && v >= 0; }

static void check_profile(const qkf_hw_profile *p)
{
    const qkf_hw_arith *a = &p->arith;
    if (!terminated(p->name, sizeof p->name) || !p->name[0] ||
        !terminated(p->description, sizeof p->description) ||
        !terminated(p->arch_name, sizeof p->arch_name) ||
        !terminated(p->buffer_position, sizeof p->buffer_position))
        breach("a string is empty or not terminated");
    if (!a->is_float) {
        if (a->weight_bits < 1 || a->weight_bits > 16 || a->membrane_bits < 2 ||
            a->membrane_bits > 32 || a->current_bits < 2 || a->current_bits > 32 ||
            a->weight_exp_min > a->weight_exp_max || a->weight_bits > a->current_bits ||
            a->current_bits + a->current_shift > a->membrane_bits ||
            a->threshold_bits < 1 || a->threshold_bits + a->threshold_shift > a->membrane_bits - 1 ||
            a->bias_bits < 1 || a->bias_bits + a->bias_exp_max > a->membrane_bits ||
            a->graded_bits < 0 || a->graded_bits > a->current_bits || a->input_bits < 1 ||
            a->input_bits > 16 || a->leak < 0 || a->leak > 2 ||
            (a->leak == QKF_HW_LEAK_DECAY) != (a->decay_bits >= 1) || a->decay_bits > 16)
            breach("arithmetic out of range or inconsistent");
    }
    if (p->mesh_width < 1 || p->mesh_height < 1 || p->n_tiles < 1 ||
        (long long)p->n_tiles > (long long)p->mesh_width * p->mesh_height ||
        p->cores_per_tile < 1 || p->n_cores != (int64_t)p->n_tiles * p->cores_per_tile)
        breach("mesh");
    if (p->n_groups < 1 || p->n_groups > QKF_HW_MAX_GROUPS)
        breach("core groups");
    int64_t cores = 0;
    for (int i = 0; i < p->n_groups; i++) {
        const qkf_hw_core_group *g = &p->group[i];
        if (g->count < 1 || g->max_neurons < 1 || g->max_neurons > p->max_neurons ||
            g->synapse_bytes < 0 || g->max_fan_in < 0 || g->max_fan_out < 0 ||
            !terminated(g->name, sizeof g->name))
            breach("a core group");
        cores += g->count;
    }
    if (cores != p->cores_per_tile)
        breach("cores per tile");
    int defaults[QKF_HW_UNIT_KINDS] = {0};
    if (p->n_units < QKF_HW_UNIT_KINDS || p->n_units > QKF_HW_MAX_UNITS)
        breach("unit count");
    for (int i = 0; i < p->n_units; i++) {
        const qkf_hw_unit *u = &p->unit[i];
        if ((int)u->kind < 0 || u->kind >= QKF_HW_UNIT_KINDS || u->count < 1 ||
            (u->is_default != 0 && u->is_default != 1) || !terminated(u->name, sizeof u->name) ||
            !terminated(u->model, sizeof u->model))
            breach("a unit");
        defaults[u->kind] += u->is_default;
        for (int j = 0; j < 3; j++)
            if (!cost_ok(u->energy[j]) || !cost_ok(u->latency[j]))
                breach("a unit's cost");
    }
    for (int k = 0; k < QKF_HW_UNIT_KINDS; k++)
        if (defaults[k] != 1)
            breach("not exactly one default unit of a kind");
    const double *c = &p->cost.e_message_in;
    for (size_t i = 0; i < sizeof p->cost / sizeof(double); i++)
        if (!cost_ok(c[i]))
            breach("a default cost");
    for (int d = 0; d < 4; d++)
        if (!cost_ok(p->e_hop[d]) || !cost_ok(p->t_hop[d]))
            breach("a hop cost");
    if (p->n_sync < 1 || p->n_sync > 16)
        breach("sync table size");
    for (int i = 0; i < p->n_sync; i++)
        if (!cost_ok(p->sync_s[i]) || p->sync_tiles[i] < 0 ||
            (i > 0 && p->sync_tiles[i] <= p->sync_tiles[i - 1]))
            breach("sync table");
    if (!cost_ok(p->e_ac) || !cost_ok(p->e_mac))
        breach("arithmetic energies");
    qkf_hw_describe(devnull, p);
}

static void one(const uint8_t *buf, size_t len)
{
    static qkf_hw_profile p, zero;
    qkf_clear_error();
    if (qkf_hw_parse((const char *)buf, len, "fuzz.yaml", &p) == 0) {
        check_profile(&p);
        return;
    }
    if (memcmp(&p, &zero, sizeof p) != 0)
        breach("the profile is not cleared after an error");
    const char *m = qkf_last_error();
    if (strncmp(m, "fuzz.yaml:", 10) != 0)
        breach("message does not start with the file name");
    for (const char *q = m; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7F)
            breach("message is not one printable line");
    if (m[10] >= '0' && m[10] <= '9') {
        long line = strtol(m + 10, NULL, 10);
        long lines = 1;
        for (size_t i = 0; i < len; i++) /* an upper bound: libyaml also breaks lines at \r,
                                          * NEL (c2 85), LS and PS (e2 80 a8/a9) */
            lines += buf[i] == '\n' || buf[i] == '\r' || buf[i] == 0x85 || buf[i] == 0xa8 ||
                     buf[i] == 0xa9;
        if (line < 1 || line > lines + 1)
            breach("the line is not one of the input");
    }
}

int main(int argc, char **argv)
{
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        return 2;
#ifdef __AFL_FUZZ_TESTCASE_LEN
    if (argc < 2)
        return fuzz_persistent(one);
#endif
    if (argc < 2) {
        fprintf(stderr, "usage: fuzz_hw FILE... (or afl-fuzz ... -- fuzz_hw)\n");
        return 2;
    }
    return fuzz_run_files("fuzz_hw", argv + 1, argc - 1, one);
}
