/* --hw PROFILE for qkf map and qkf sim --hw: a profile by name or YAML file. */
#ifndef QKF_HW_PICK_H
#define QKF_HW_PICK_H

#include "../models/hw.h"

int qkf_hw_pick(const char *name_or_path, qkf_hw_profile *hw);
extern const char *const qkf_hw_pick_help;

#endif
