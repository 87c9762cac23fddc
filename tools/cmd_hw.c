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
           "       qkf hw show NAME|FILE.yaml   (or: qkf hw show --hw NAME|FILE.yaml)\n"
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
    for (a.i = 1; a.i < argc; a.i++) {
        if (qkf_flag(&a, "--help") || qkf_flag(&a, "-h")) {
            help();
            return 0;
        }
    }
    if (argc < 2) {
        qkf_set_error("list or show? (qkf hw --help)");
        return qkf_cli_fail("hw");
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "list")) {
        if (argc > 2) {
            qkf_set_error("unexpected argument '%s' (qkf hw list takes none)", argv[2]);
            return qkf_cli_fail("hw");
        }
        printf("bundled chip profiles (qkf hw show NAME for everything in one):\n");
        qkf_hw_list(stdout);
        return 0;
    }
    if (strcmp(verb, "show")) {
        qkf_set_error("unknown subcommand '%s' (list or show; qkf hw --help)", verb);
        return qkf_cli_fail("hw");
    }
    /* qkf hw show PROFILE, or --hw PROFILE as every other command takes it */
    qkf_hw_profile *p = qkf_malloc(sizeof *p);
    const char *what = NULL;
    int loaded = 0, r = 0;
    for (a.i = 2; a.i < argc && r >= 0; a.i++) {
        if (loaded || what) {
            r = qkf_set_error("unexpected argument '%s' (qkf hw show takes one profile)",
                              argv[a.i]);
            break;
        }
        if ((r = qkf_arg_hw(&a, p)) != 0) {
            loaded = r > 0;
            continue;
        }
        r = qkf_arg_positional(&a, &what);
    }
    if (r >= 0 && !loaded) {
        if (!what)
            r = qkf_set_error("which profile? (qkf hw show NAME|FILE.yaml; qkf hw list names them)");
        else
            r = qkf_hw_load(what, p);
    }
    if (r >= 0)
        qkf_hw_describe(stdout, p);
    qkf_free(p);
    return r < 0 ? qkf_cli_fail("hw") : 0;
}
