/* M.json of a chip mapping (qkf map --json): the mapping of models/map.h written as JSON. Here
 * in io/ because it is a file: models/ describes the mapping, io/ writes it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/base.h"
#include "map_json.h"

void qkf_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

typedef struct {
    FILE *f;
    const qkf_map *m;
    const qkf_map_core *c;
    int *first;
} range_ctx;

static void json_range(int64_t a, int64_t b, void *arg)
{
    range_ctx *r = arg;
    const qkf_map_core *c = r->c;
    fprintf(r->f,
            "%s\n    {\"tile\": [%d, %d], \"core\": %d, \"chip\": %d, \"slot\": %d, \"layer\": ",
            *r->first ? "" : ",", c->x, c->y, c->phys, c->chip, c->slot);
    qkf_json_str(r->f, r->m->unit[c->unit].name);
    fprintf(r->f, ", \"neurons\": [%lld, %lld]}", (long long)a, (long long)b);
    *r->first = 0;
}

int qkf_map_write_json(const qkf_map *m, const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return qkf_set_error("%s: cannot create the map (%s)", path, strerror(errno));
    fprintf(f, "{\n  \"profile\": ");
    qkf_json_str(f, m->hw.name);
    fprintf(f,
            ",\n  \"chips\": %d,\n  \"n_cores\": %d,\n  \"blocks\": %d,\n  \"tiles\": %d,\n"
            "  \"mesh\": [%d, %d],\n  \"cores_per_tile\": %d,\n  \"cores\": [",
            m->chips, m->n_phys, m->n_cores, m->tiles, m->hw.mesh_width, m->hw.mesh_height,
            m->hw.cores_per_tile);
    int first = 1;
    for (int i = 0; i < m->n_cores; i++) {
        range_ctx r = {f, m, &m->core[i], &first};
        qkf_map_core_ranges(m, i, json_range, &r);
    }
    fprintf(f, "\n  ],\n  \"layers\": [");
    for (int i = 0; i < m->n_units; i++) {
        const qkf_map_unit *u = &m->unit[i];
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        qkf_json_str(f, u->name);
        fprintf(f,
                ", \"kind\": \"%s\", \"neurons\": %lld, \"cores\": %d, \"limit\": \"%s\", "
                "\"channels\": %d, \"tokens\": %d, \"block\": [%d, %d], \"first_core\": %d, "
                "\"max_axons\": %lld, \"max_synapse_bytes\": %lld}",
                qkf_unit_kind_name(u->kind), (long long)u->neurons, u->n_phys, u->limit, u->C,
                u->N, u->cc, u->tq, u->first_core, (long long)u->max_axons,
                (long long)u->max_syn_bytes);
    }
    fprintf(f, "\n  ]\n}\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return qkf_set_error("%s: cannot write the map (%s)", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return qkf_set_error("%s: cannot rename the map into place (%s)", path, strerror(err));
    }
    return 0;
}
