#!/usr/bin/env bash
# bf16 GEMM benchmark: our mixed-precision GEMM (codegen/gemm_bf16.c) next to
# our fp32 GEMM (codegen/gemm.c) at the model's shapes and Muon's squares, 1
# and 2 threads. Needs a CPU with avx512bf16.
# Usage: bench/gemm_bf16_bench.sh [BUILD_DIR] [gemm_bf16_bench args...]
#   (default BUILD_DIR build-bench-bf16; e.g. --reps 5, --shape I,
#    --knobs 6,64,768,120,512,4,1,0, --threads 1, --obj /tmp/bf16.o)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench-bf16}
shift || true

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target nc_codegen nc_support >/dev/null
llvm_config=$(command -v llvm-config-19 || echo /usr/lib/llvm-19/bin/llvm-config)
cc -std=c11 -O2 -D_GNU_SOURCE -DNC_HAVE_LLVM=1 -I. -I"$($llvm_config --includedir)" \
  bench/gemm_bf16_bench.c -o "$build/gemm_bf16_bench" \
  "$build/codegen/libnc_codegen.a" "$build/support/libnc_support.a" \
  $($llvm_config --ldflags) $($llvm_config --link-shared --libs) -lpthread -lm \
  -Wl,-rpath,"$($llvm_config --libdir)"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
"$build/gemm_bf16_bench" "$@"
