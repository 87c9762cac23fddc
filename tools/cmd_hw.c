/* qkf hw: the chip profiles. `qkf hw list` names the bundled ones; `qkf hw show NAME|FILE.yaml`
 * prints everything a profile says (arithmetic, mesh, core limits, pipeline costs with units),
 * which is also how a profile file is checked. */
#include <stdio.h>
#include <string.h>

#include "../io/hw_profile.h"
#include "../kernels/base.h"
#include "cli.h"

static void help(void)
{
    printf("usage: qkf hw list\n"
           "       qkf hw show NAME|FILE.yaml\n"
           "\n"
           "Chip profiles: the arithmetic, mesh, core limits and per-operation costs of a\n"
           "neuromorphic chip, in SANA-FE's architecture description (YAML) with qkf's keys for\n"
           "the integer arithmetic (docs/hardware.md, \"Profiles\"). A SANA-FE architecture file\n"
           "loads as it is (without qkf's keys it is the float machine at that chip's costs).\n"
           "\n"
           "  list             the bundled profiles, one line each\n"
           "  show PROFILE     everything in a profile, with units; a bad file gets one line\n"
           "                   naming the file, the line and the key\n"
           "\n"
           "PROFILE is a bundled name (loihi, speck, truenorth, ideal-45nm, wide16) or a file\n"
           "(a path with '/' or a .yaml/.yml name). The same argument picks the chip of\n"
           "infer, sim, eval, serve and quantize:\n"
           "%s",
           qkf_hw_help);
}

int cmd_hw(int argc, char **argv)
{
    qkf_args a = {argc, argv, 1, "hw"};
    const char *verb = NULL, *what = NULL;
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
        if (a.argv[a.i][0] == '-' || (verb && what)) {
            qkf_set_error("unexpected argument '%s' (qkf hw --help)", a.argv[a.i]);
            return qkf_cli_fail("hw");
        }
        if (!verb)
            verb = a.argv[a.i];
        else
            what = a.argv[a.i];
    }
    if (!verb) {
        qkf_set_error("list or show? (qkf hw --help)");
        return qkf_cli_fail("hw");
    }
    if (!strcmp(verb, "list")) {
        if (what) {
            qkf_set_error("unexpected argument '%s' (qkf hw list takes none)", what);
            return qkf_cli_fail("hw");
        }
        printf("bundled chip profiles (qkf hw show NAME for everything in one):\n");
        qkf_hw_list(stdout);
        return 0;
    }
    if (!strcmp(verb, "show")) {
        if (!what) {
            qkf_set_error("which profile? (qkf hw show NAME|FILE.yaml; qkf hw list names them)");
            return qkf_cli_fail("hw");
        }
        qkf_hw_profile *p = qkf_malloc(sizeof *p);
        int rc = qkf_hw_load(what, p);
        if (!rc)
            qkf_hw_describe(stdout, p);
        qkf_free(p);
        return rc ? qkf_cli_fail("hw") : 0;
    }
    qkf_set_error("unknown subcommand '%s' (list or show; qkf hw --help)", verb);
    return qkf_cli_fail("hw");
}
