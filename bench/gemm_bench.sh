#!/usr/bin/env bash
# GEMM benchmark: our JIT GEMM (codegen/gemm.c) vs OpenBLAS sgemm at the
# model's shapes, 1 and 2 threads; cold compile time of the GEMM modules.
# OpenBLAS is linked into the benchmark binary only, never into the product.
# Usage: bench/gemm_bench.sh [BUILD_DIR] [gemm_bench args...]
#   (default BUILD_DIR build-bench; e.g. --reps 5, --knobs 6,64,384,120,512,4,1,0,
#    --avx2, --no-blas, --threads 2, --shape I)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
shift || true

# libopenblas-dev (cblas.h + libopenblas.so) if missing (a cblas.h alone may
# come from the reference BLAS).
if ! dpkg-query -W -f='${Status}' libopenblas-dev 2>/dev/null | grep -q "install ok installed"; then
  apt_get="apt-get"
  [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && apt_get="sudo apt-get"
  DEBIAN_FRONTEND=noninteractive $apt_get install -y libopenblas-dev >/dev/null
fi

# Our library: only the layers the GEMM needs (codegen + support), optimized.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target nc_codegen nc_support >/dev/null
llvm_config=$(command -v llvm-config-19 || echo /usr/lib/llvm-19/bin/llvm-config)
blas_inc=/usr/include/x86_64-linux-gnu/openblas-pthread
[[ -d $blas_inc ]] || blas_inc=/usr/include/x86_64-linux-gnu
cc -std=c11 -O2 -D_GNU_SOURCE -DNC_HAVE_LLVM=1 -I. -I"$($llvm_config --includedir)" -I"$blas_inc" \
  bench/gemm_bench.c -o "$build/gemm_bench" \
  "$build/codegen/libnc_codegen.a" "$build/support/libnc_support.a" \
  $($llvm_config --ldflags) $($llvm_config --link-shared --libs) -lopenblas -lpthread -lm \
  -Wl,-rpath,"$($llvm_config --libdir)"

# This machine's environment may set OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE, which
# pin OpenBLAS to a slower kernel; let it pick its own. Nothing else is pinned.
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$build/gemm_bench" "$@"
