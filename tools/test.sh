#!/usr/bin/env bash
# Builds qkf and runs the whole test suite twice: an optimised -Werror build, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build. This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
JOBS=${JOBS:-2}
# Test processes run side by side: spinning OpenMP workers would steal each other's cores.
export OMP_WAIT_POLICY=passive

echo "== release build (-Werror)"
cmake -S . -B build -DQKF_WERROR=ON >/dev/null
cmake --build build -j"$JOBS"
echo "== tests (release)"
./build/qkf_tests --jobs "$JOBS"

echo "== ASan + UBSan build"
cmake -S . -B build-asan -DQKF_WERROR=ON -DQKF_SANITIZE=address,undefined \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j"$JOBS"
echo "== tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./build-asan/qkf_tests --jobs "$JOBS"
