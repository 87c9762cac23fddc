#!/usr/bin/env bash
# Cross-builds the event kernels' portable path for aarch64 (Debian: gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross) and runs tools/cross/kernel_check.c under qemu-user (qemu-user), which
# compares every kernel of kernels/spike.c and kernels/spike_node.c with its _ref twin bit for
# bit, then again built with -DQKF_EMULATE_FMA (the portable gather's path for targets without an
# FMA, kernels/spike.c: power-of-two counts in float, other counts in double with the midpoint
# test and the reference's redo, on NEON). The rest of qkf (HDF5,
# OpenBLAS, OpenMP, Criterion) is not built here: see docs/design.md "Kernel paths per CPU" for
# what was and was not checked on ARM. Also builds the same check
# natively with -O3 as a control.
set -euo pipefail
cd "$(dirname "$0")/../.."
CC=${CC:-aarch64-linux-gnu-gcc}
OUT=${OUT:-build-aarch64}
mkdir -p "$OUT"
SRC="kernels/base.c kernels/isa.c kernels/spike.c kernels/spike_node.c tools/cross/kernel_check.c"
FLAGS="-std=c11 -O3 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
       -Wdouble-promotion -Wvla -ffp-contract=off -Werror -D_POSIX_C_SOURCE=200809L"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/kernel_check" $SRC -lm
if command -v file >/dev/null; then file "$OUT/kernel_check" | sed 's/, BuildID.*//'; fi
# the portable gather's inner loop, as the compiler vectorised it (NEON q registers)
# shellcheck disable=SC2086
"$CC" $FLAGS -S -o "$OUT/spike.s" kernels/spike.c
echo "NEON vector adds (fadd v.4s) in kernels/spike.c: $(grep -c 'fadd\s*v[0-9]*\.4s' "$OUT/spike.s")"
echo "NEON fused multiply-adds (fmla v.4s / fmadd) in kernels/spike.c: $(grep -cE 'fmla\s*v[0-9]*\.4s|fmadd' "$OUT/spike.s")"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$OUT/kernel_check"
# shellcheck disable=SC2086
"$CC" $FLAGS -DQKF_EMULATE_FMA -o "$OUT/kernel_check_emul" $SRC -lm
echo "with -DQKF_EMULATE_FMA (no hardware FMA in counted events):"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$OUT/kernel_check_emul"
