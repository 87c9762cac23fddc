/* Chip profiles: loading a SANA-FE architecture description (YAML) with qkf's own keys into a
 * qkf_hw_profile (models/hw.h), the profiles bundled into the library (models/hw/NAME.yaml), and a
 * printed description of a profile (`qkf hw show`). The format and every key are in
 * docs/hardware.md ("Profiles").
 *
 * Errors are one line "FILE:LINE: KEY: what (hint)" recorded with qkf_set_error(); FILE is the
 * path, or "NAME.yaml (bundled)" for a bundled profile. */
#ifndef QKF_HW_PROFILE_H
#define QKF_HW_PROFILE_H

#include <stddef.h>
#include <stdio.h>

#include "../models/hw.h"

/* Loads a bundled profile by name ("loihi") or a file: a name_or_path containing '/' or ending in
 * .yaml/.yml is a file, anything else a bundled name. On error *p is zeroed. */
int qkf_hw_load(const char *name_or_path, qkf_hw_profile *p);

/* Parses a profile from len bytes of YAML text (not NUL-terminated). label names it in errors
 * and becomes p->path; the profile's name is its architecture name. */
int qkf_hw_parse(const char *text, size_t len, const char *label, qkf_hw_profile *p);

/* The bundled profiles: their number, and the i-th one's name and YAML text (NULL past the
 * end). */
int qkf_hw_count(void);
const char *qkf_hw_name(int i);
const char *qkf_hw_text(int i, size_t *len);

/* Prints the bundled profiles, one line each: name and description (qkf: description:). */
void qkf_hw_list(FILE *f);

/* Prints everything of a profile with units: arithmetic, mesh, core limits, pipeline units and
 * their costs, where the costs come from. */
void qkf_hw_describe(FILE *f, const qkf_hw_profile *p);

#endif
