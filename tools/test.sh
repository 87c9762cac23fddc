#!/usr/bin/env bash
# Builds qkf and runs the test suite: an optimised -Werror build with every test; the include
# graph against the layers of docs/design.md; the Python module's tests; the C example and the
# Python module against the installed library; a baseline build without -march=native
# (-DQKF_NATIVE=OFF: the hand-written kernel paths are picked at run time, kernels/isa.h) whose
# kernel and event-engine tests run on the default path and again with QKF_ISA=avx2 and
# QKF_ISA=portable forced (paths this CPU lacks are skipped; the kernel tests themselves also loop
# over every supported path); an aarch64 cross build of the event kernels run under qemu-user
# (tools/cross/aarch64.sh; QKF_CROSS=0 skips it); the MPI build (-DQKF_MPI=ON) with its 2-rank
# tests (QKF_MPI=0 skips it); then an AddressSanitizer + UndefinedBehaviorSanitizer build with
# every test again. This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export QKF_MPI=${QKF_MPI:-1}
bash tools/deps.sh
JOBS=${JOBS:-2}
# Test processes run side by side: spinning OpenMP workers would steal each other's cores.
export OMP_WAIT_POLICY=passive

echo "== release build (-Werror)"
cmake -S . -B build -DQKF_WERROR=ON >/dev/null
cmake --build build -j"$JOBS"
echo "== tests (release)"
./build/qkf_tests --jobs "$JOBS"

PY=/usr/bin/python3 # Debian's, with python3-numpy, -pytest, -h5py, -torch (not a pyenv shim)
[ -x "$PY" ] || PY=python3
echo "== layers (the include graph, docs/design.md)"
"$PY" tools/check_layers.py --self-test
"$PY" tools/check_layers.py

echo "== Python module (pytest)"
PYTHONPATH=build/python "$PY" -m pytest -q python/tests

echo "== installed library: the C example (pkg-config) and the Python module"
PREFIX=$(mktemp -d)
trap 'rm -rf "$PREFIX"' EXIT
cmake --install build --prefix "$PREFIX" >/dev/null
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
cc -std=c11 -O2 -Wall -Wextra -Werror docs/api.c -o "$PREFIX/api" \
  $(pkg-config --cflags --libs qkf)
"$PREFIX/api" tests/fixtures/cifar_small.weights.h5 "$PREFIX/copy.h5"
unset PKG_CONFIG_PATH
PYVER=$("$PY" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
PYDIR="$PREFIX/lib/$PYVER/dist-packages"
ROOT=$PWD
(cd "$PREFIX" && PYTHONPATH="$PYDIR" "$PY" - "$ROOT/tests/fixtures/cifar_small.weights.h5" \
    "$PYDIR" <<'EOF'
import sys
import numpy as np
import qkf
assert qkf.__file__.startswith(sys.argv[2]), qkf.__file__  # the installed copy, not the build's
m = qkf.load(sys.argv[1])
r = m.run(np.zeros((1, 3, 16, 16), np.float32), mode="event")
print("installed module:", qkf.__file__, m, r)
q = qkf.quantize(m, hw="loihi")
r = q.run(np.zeros((1, 3, 16, 16), np.float32), mode="event")
assert r.logits_int is not None and qkf.hw_profile("loihi")["arith"]["weight_bits"] == 8
print("installed module on a chip:", q, r.logits_int[0])
EOF
)

echo "== baseline build (-DQKF_NATIVE=OFF, -Werror)"
cmake -S . -B build-base -DQKF_WERROR=ON -DQKF_NATIVE=OFF >/dev/null
cmake --build build-base -j"$JOBS"
./build-base/qkf --version
# every kernel test (each loops over the supported paths) and the engine-level event tests; the
# forced paths skip the thread-count and statistics checks, which exercise no other kernel
ENGINE='event/@(*_matches_*|*_reference|attention_*|merge_*|fixture_*|random_*|pow2_*|frames_*)'
echo "== tests (baseline build, default path)"
./build-base/qkf_tests --jobs "$JOBS" --filter '@(event|event_cli|train_sparse|kernels)/*'
for isa in avx2 portable; do
  if QKF_ISA=$isa ./build-base/qkf --version >/dev/null 2>&1; then
    echo "== tests (baseline build, QKF_ISA=$isa)"
    QKF_ISA=$isa ./build-base/qkf_tests --jobs "$JOBS" --filter "$ENGINE"
    QKF_ISA=$isa ./build-base/qkf_tests --jobs "$JOBS" --filter 'train_sparse/*'
  else
    echo "== QKF_ISA=$isa: this CPU cannot run it, skipped"
  fi
done

if [ "${QKF_CROSS:-1}" = 1 ] && [ "$(uname -m)" = x86_64 ]; then
  echo "== aarch64 cross build of the event kernels, checked under qemu-user (QKF_CROSS=0 skips)"
  bash tools/cross/aarch64.sh
fi

if [ "${QKF_MPI:-0}" = 1 ]; then
  echo "== MPI build (-DQKF_MPI=ON) and 2-rank tests"
  cmake -S . -B build-mpi -DQKF_WERROR=ON -DQKF_MPI=ON -DQKF_PYTHON=OFF >/dev/null
  cmake --build build-mpi -j"$JOBS"
  ./build-mpi/qkf_tests --jobs 1 --filter 'mpi/*'
fi

echo "== ASan + UBSan build"
cmake -S . -B build-asan -DQKF_WERROR=ON -DQKF_SANITIZE=address,undefined -DQKF_PYTHON=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j"$JOBS"
echo "== tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp:print_suppressions=0 \
  ./build-asan/qkf_tests --jobs "$JOBS"
