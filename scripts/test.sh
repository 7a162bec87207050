#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite:
#   1. system packages (scripts/setup.sh), test-only npm packages (tests/js)
#   2. a normal build + ctest
#   3. an ASan+UBSan build + ctest of the parser/loader tests (label "asan")
# Usage: scripts/test.sh [--no-asan]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/setup.sh
if [[ -f tests/js/package.json ]]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNC_BUILD_TESTS=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

if [[ "${1:-}" != "--no-asan" ]]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNC_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  # Sanitized binaries from gcc 12 can crash at start-up, now and then, on
  # kernels that randomize mmap with more bits than ASan's shadow layout
  # expects (vm.mmap_rnd_bits > 28); the suite starts hundreds of them. Run it
  # without address-space randomization where the kernel lets us.
  norandom=()
  if setarch "$(uname -m)" -R true 2>/dev/null; then norandom=(setarch "$(uname -m)" -R); fi
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     "${norandom[@]}" ctest --output-on-failure -j"$jobs" -L asan)
fi
