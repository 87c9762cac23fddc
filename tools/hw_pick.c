/* --hw PROFILE for qkf map and qkf sim --hw: the chips qkf knows by name (models/map.c). */
#include "hw_pick.h"
#include "../models/map.h"

const char *const qkf_hw_pick_help = "a chip: loihi, speck, truenorth or ideal-45nm";

int qkf_hw_pick(const char *name_or_path, qkf_hw_profile *hw)
{
    return qkf_map_profile_builtin(name_or_path, hw);
}
