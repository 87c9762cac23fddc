/* Writing a chip mapping (models/map.h) to a file. */
#ifndef QKF_MAP_JSON_H
#define QKF_MAP_JSON_H

#include <stdio.h>

#include "../models/map.h"

/* s as a JSON string, quoted and escaped (quotes, backslashes, control characters), to f. */
void qkf_json_str(FILE *f, const char *s);

/* Writes M.json ({"profile", "chips", "cores": [...], "layers": [...]}, docs/hardware.md) to
 * path.tmp, then renames it. */
int qkf_map_write_json(const qkf_map *m, const char *path);

#endif
