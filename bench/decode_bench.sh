#!/usr/bin/env bash
# Inference benchmark (docs/performance.md, "Inference"): for d4, d8 and d12
# init checkpoints on the CPU, batch-1 decode tokens/s, time to first token,
# and aggregate tokens/s with 1, 4 and 16 concurrent requests through the
# engine's continuous batching (bench/decode_bench.c).
# Usage: bench/decode_bench.sh [BUILD_DIR] [decode_bench args...]
#   (default BUILD_DIR build-bench; e.g. --threads 1, --tokens 128, --prompt 32, --profile;
#    --steps ROWS --tokens N times N decode steps of the model alone, no table;
#    --membw: the memory read bandwidth of 1..N threads; --gemm: the skinny GEMM at
#    decode's shapes, M = 1, 4, 16; both once, without checkpoints)
# Threads default to one per core (the fastest configuration). Ends with the
# issue's table: batch-1 decode, time to first token, aggregate tokens/s with
# 1, 4 and 16 concurrent requests (and the 4 and 16 ratios to 1).
# Env: MODELS="d4 d8 d12" (the specs under models/specs), NC_CACHE_DIR (kernel cache).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
shift || true

# a fresh build folder is configured Release without tests; an existing one keeps its settings
if [[ -f "$build/CMakeCache.txt" ]]; then cmake -S . -B "$build" >/dev/null
else cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=OFF >/dev/null; fi
cmake --build "$build" -j"$(nproc)" --target nanochat >/dev/null
# link the benchmark like the nanochat binary (same libraries, its own main)
cc -std=c11 -O2 -D_GNU_SOURCE -I. -c bench/decode_bench.c -o "$build/decode_bench.o"
link=$(tr ' ' '\n' < "$build/cli/CMakeFiles/nanochat.dir/link.txt" | grep -v '^CMakeFiles/.*\.o$' | tr '\n' ' ')
(cd "$build/cli" && eval "${link/-o nanochat/-o ../decode_bench ../decode_bench.o}")

if [[ " $* " == *" --membw "* || " $* " == *" --gemm "* ]]; then
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  exec "$build/decode_bench" "$@"
fi

work="$build/decode_bench_ckpts"
mkdir -p "$work"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for m in ${MODELS:-d4 d8 d12}; do
  [[ -f "$work/$m/meta_000000.json" ]] || "$build/cli/nanochat" init --spec "models/specs/$m.xml" -o "$work/$m" >/dev/null
  out=$("$build/decode_bench" --ckpt "$work/$m" --tokenizer "$work/bytes.tiktoken" "$@")
  grep -v '^|' <<<"$out" || true
  rows+=("$(grep '^|' <<<"$out" || true)")
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| model | params | threads | batch-1 decode | time to first token | 1 request | 4 requests | 16 requests |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
