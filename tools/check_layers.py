#!/usr/bin/python3
"""Checks the include graph against the layers of docs/design.md, so knots cannot come back.

    kernels <- models <- sim  <- tools/app (applications, the public API) <- tools/*.c (the command)
                      <- io   <-

Each file belongs to the layer of its directory; an #include of a project file must point to a
layer its own may use (ALLOWED). System headers that touch files, sockets or processes are
confined too (SYSTEM): only io/ reads and writes HDF5, only sim/dist.c speaks MPI, and kernels/,
models/ and sim/ open no files. Prints each violation as one line and exits 1; exits 0 when the
graph is clean. `--self-test` checks that a knot is caught.
"""

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOWER = ["kernels", "models", "sim", "io"]
ALLOWED = {
    "kernels": {"kernels"},
    "models": {"kernels", "models"},
    "sim": {"kernels", "models", "sim"},
    "io": {"kernels", "models", "io"},
    "api": {"api"},  # include/qkf/qkf.h stands alone
    "app": {"kernels", "models", "sim", "io", "app", "api"},
    "cli": {"kernels", "models", "sim", "io", "app", "api", "cli"},
    "bench": {"kernels", "models", "sim", "io", "app", "api", "bench"},
    "tests": {"kernels", "models", "sim", "io", "app", "api", "tests"},
    "python": {"api"},
    "example": {"api"},
}
# system header -> layers that may include it
SYSTEM = {
    "hdf5.h": {"io", "tests"},
    "Python.h": {"python"},
}
NO_FILES = {"kernels", "models", "sim"}  # these layers open no files
FILE_CALLS = re.compile(r"\b(fopen|freopen|open|opendir|H5Fopen|H5Fcreate)\s*\(")


def layer_of(rel):
    parts = rel.parts
    if parts[0] in LOWER:
        return parts[0]
    if parts[0] == "include":
        return "api"
    if parts[0] == "tools":
        if len(parts) > 2 and parts[1] == "app":
            return "app"
        if len(parts) > 2 and parts[1] == "reference":
            return None
        return "cli"
    if parts[0] in ("bench", "tests", "python"):
        return parts[0]
    if parts[0] == "docs":
        return "example"
    return None


def sources(root):
    for p in sorted(root.rglob("*")):
        if p.suffix in (".c", ".h") and p.is_file():
            rel = p.relative_to(root)
            if rel.parts[0].startswith("build") or rel.parts[0].startswith("."):
                continue
            yield p, rel


INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def resolve(root, src, kind, name):
    """The project file an include names, or None for a system header."""
    cands = []
    if kind == '"':
        cands.append(src.parent / name)
    cands += [root / name, root / "include" / name]
    for c in cands:
        c = c.resolve()
        if c.is_file() and root.resolve() in c.parents:
            return c.relative_to(root.resolve())
    return None


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def check(root):
    bad = []
    for p, rel in sources(root):
        lay = layer_of(rel)
        if lay is None:
            continue
        text = p.read_text(errors="replace")
        for kind, name in INCLUDE.findall(text):
            tgt = resolve(root, p, kind, name)
            if tgt is None:
                base = Path(name).name
                if base == "mpi.h":
                    if rel.as_posix() != "sim/dist.c":
                        bad.append(f"{rel}: includes <mpi.h> (only sim/dist.c speaks MPI)")
                elif base in SYSTEM and lay not in SYSTEM[base]:
                    bad.append(f"{rel}: includes <{name}> ({lay}/ may not; only "
                               f"{', '.join(sorted(SYSTEM[base]))})")
                continue
            tl = layer_of(tgt)
            if tl is not None and tl not in ALLOWED[lay]:
                bad.append(f"{rel}: includes {tgt} ({lay} may not use {tl}: docs/design.md, "
                           f"Layers)")
        if lay in NO_FILES:
            for m in FILE_CALLS.finditer(strip_comments(text)):
                line = text[: m.start()].count("\n") + 1
                bad.append(f"{rel}:{line}: calls {m.group(1)}() ({lay}/ opens no files: io/ "
                           f"does)")
    return bad


def self_test():
    with tempfile.TemporaryDirectory() as d:
        r = Path(d)
        for sub in ("sim", "io", "kernels", "tools/app", "include/qkf", "python"):
            (r / sub).mkdir(parents=True)
        (r / "io/trace.h").write_text("")
        (r / "sim/dense.h").write_text('#include "../io/trace.h"\n')
        (r / "io/trace.c").write_text('#include "../sim/dense.h"\n#include <hdf5.h>\n')
        (r / "kernels/k.c").write_text('#include <hdf5.h>\nvoid f(void) { fopen("x", "r"); }\n')
        (r / "tools/cli.h").write_text("")
        (r / "tools/app/a.c").write_text('#include "../cli.h"\n')
        (r / "include/qkf/qkf.h").write_text("")
        (r / "io/net.c").write_text("#include <mpi.h>\n")
        (r / "python/m.c").write_text('#include <qkf/qkf.h>\n#include "../sim/dense.h"\n')
        bad = check(r)
        want = ["sim/dense.h: includes io/trace.h", "io/trace.c: includes sim/dense.h",
                "kernels/k.c: includes <hdf5.h>", "kernels/k.c:2: calls fopen()",
                "tools/app/a.c: includes tools/cli.h", "python/m.c: includes sim/dense.h",
                "io/net.c: includes <mpi.h>"]
        missing = [w for w in want if not any(b.startswith(w) for b in bad)]
        if missing or len(bad) != len(want):
            print("check_layers self-test failed:\n  " + "\n  ".join(bad), file=sys.stderr)
            return 1
    return 0


def main():
    if "--self-test" in sys.argv[1:]:
        return self_test()
    bad = check(ROOT)
    for b in bad:
        print(f"layers: {b}", file=sys.stderr)
    if not bad:
        print("layers: the include graph follows docs/design.md")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
