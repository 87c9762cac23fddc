/* Writing a chip mapping (models/map.h) to a file. */
#ifndef QKF_MAP_JSON_H
#define QKF_MAP_JSON_H

#include "../models/map.h"

/* Writes M.json ({"profile", "chips", "cores": [...], "layers": [...]}, docs/hardware.md) to
 * path.tmp, then renames it. */
int qkf_map_write_json(const qkf_map *m, const char *path);

#endif
