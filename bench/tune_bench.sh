#!/usr/bin/env bash
# The autotuner on one device: `nanochat tune SPEC` with a time budget into a
# fresh tuning database (default vs tuned time per GEMM shape, as measured by
# the tuner: interleaved, the fastest of several runs each), then the training
# step timed without and with the database, interleaved A/B/A/B in one
# invocation (`nanochat bench train`; the kernel cache is keyed by the tuned
# knobs, so each side compiles its own plan once).
# Usage: bench/tune_bench.sh [BUILD_DIR]
#   (default BUILD_DIR build-bench, configured Release; env: SPEC=d4,
#    DEVICE=cpu (or opencl[:N]), BUDGET=60, BATCH=8, SEQ=256, STEPS=5,
#    ROUNDS=2, THREADS (cpu; default one per core), PRECISION (opencl: bf16),
#    DB=path (default: a temporary file, removed at the end),
#    NANOCHAT=path/to/nanochat to use a prebuilt binary and skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
spec=${SPEC:-d4}
device=${DEVICE:-cpu}
budget=${BUDGET:-60}
batch=${BATCH:-8}
seq=${SEQ:-256}
steps=${STEPS:-5}
rounds=${ROUNDS:-2}

if [[ -n ${NANOCHAT:-} ]]; then
  nanochat=$NANOCHAT
else
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=OFF >/dev/null
  fi
  if ! cmake --build "$build" -j"$(nproc)" --target nanochat >"$build/tune_bench_build.log" 2>&1; then
    cat "$build/tune_bench_build.log" >&2
    exit 1
  fi
  nanochat=$build/cli/nanochat
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
db=${DB:-$tmp/tune.json}
extra=()
[[ -n ${THREADS:-} ]] && extra+=(--threads "$THREADS")
[[ -n ${PRECISION:-} ]] && extra+=(--precision "$PRECISION")

echo "== $(date -u +%FT%TZ) $(uname -n), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== nanochat tune models/specs/$spec.xml --device $device --budget $budget (batch $batch x seq $seq) -> $db"
"$nanochat" tune "models/specs/$spec.xml" --device "$device" --budget "$budget" --batch "$batch" --seq "$seq" --db "$db" "${extra[@]}"

echo "== training step without / with the database ($rounds rounds, $steps steps each, load $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq 1 "$rounds"); do
  for side in default tuned; do
    if [[ $side == default ]]; then tdb=off; else tdb=$db; fi
    line=$(NC_TUNE_DB=$tdb "$nanochat" bench train --spec "models/specs/$spec.xml" --device "$device" --batch "$batch" --seq "$seq" \
      --steps "$steps" "${extra[@]}" 2>/dev/null | grep '^{')
    med=$(sed -n 's/.*"step_s_median":\([0-9.]*\).*/\1/p' <<<"$line")
    tps=$(sed -n 's/.*"tokens_per_s":\([0-9.]*\).*/\1/p' <<<"$line")
    printf 'round %d %-8s step %s s median, %s tokens/s\n' "$r" "$side" "$med" "$tps"
    echo "{\"bench\":\"tune\",\"round\":$r,\"side\":\"$side\",\"spec\":\"$spec\",\"device\":\"$device\",\"step_s_median\":$med,\"tokens_per_s\":$tps}"
  done
done
