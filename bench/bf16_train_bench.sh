#!/usr/bin/env bash
# Mixed precision on this CPU: `nanochat bench train --precision fp32` vs
# `--precision bf16` (the bf16 model: bf16 activations and AVX512-BF16 GEMMs,
# fp32 weights; docs/model.md section 8), interleaved fp32, bf16, fp32, bf16
# ... so both see the same machine load, in one invocation. Prints each run,
# then per spec the medians of tokens/s and of process CPU time per step
# (getrusage: all threads; steadier than wall time on a loaded machine),
# the bf16/fp32 ratios, the load average, and one JSON line.
# Usage: bench/bf16_train_bench.sh [BUILD_DIR]
#   (default BUILD_DIR build-bench, configured Release; env: SPECS="d4 d8",
#    BATCH=8, SEQ=256, STEPS=5, ROUNDS=2, THREADS=2, DEVICE=cpu,
#    NANOCHAT=path/to/nanochat to time a prebuilt binary and skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
specs=${SPECS:-"d4 d8"}
batch=${BATCH:-8}
seq=${SEQ:-256}
steps=${STEPS:-5}
rounds=${ROUNDS:-2}
threads=${THREADS:-2}
device=${DEVICE:-cpu}

if [[ -n ${NANOCHAT:-} ]]; then
  nanochat=$NANOCHAT
else
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=OFF >/dev/null
  fi
  bt=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")
  [[ $bt == Release ]] || echo "warning: $build is CMAKE_BUILD_TYPE=$bt, not Release" >&2
  if ! cmake --build "$build" -j"$(nproc)" --target nanochat >"$build/bf16_bench_build.log" 2>&1; then
    cat "$build/bf16_bench_build.log" >&2
    exit 1
  fi
  nanochat=$build/cli/nanochat
fi

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
flags=$(grep -o -m1 'avx512_bf16' /proc/cpuinfo || echo "no avx512_bf16")
date_utc=$(date -u +%FT%TZ)
echo "machine: $(nproc) cores, $cpu ($flags); $date_utc"
echo "nanochat bench train on $device: batch $batch x seq $seq, 1 warm-up + $steps timed steps, $threads threads, $rounds rounds of fp32 then bf16"

json_field() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" <<<"$2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

rows=()
jrows=()
for spec in $specs; do
  declare -A tps=() cpus=()
  for ((r = 1; r <= rounds; r++)); do
    for prec in fp32 bf16; do
      load=$(cut -d' ' -f1 /proc/loadavg)
      cmd=("$nanochat" bench train --spec "models/specs/$spec.xml" --batch "$batch" --seq "$seq" --steps "$steps"
           --device "$device" --threads "$threads" --precision "$prec")
      out=$("${cmd[@]}" 2>/dev/null)
      j=$(tail -n1 <<<"$out")
      t=$(json_field tokens_per_s "$j")
      c=$(json_field cpu_s_median "$j")
      echo "$spec $prec round $r: $t tokens/s, step $(json_field step_s_median "$j") s, CPU $c s/step (load $load)"
      tps[$prec]="${tps[$prec]:-} $t"
      cpus[$prec]="${cpus[$prec]:-} $c"
    done
  done
  t32=$(median <<<"${tps[fp32]}"); t16=$(median <<<"${tps[bf16]}")
  c32=$(median <<<"${cpus[fp32]}"); c16=$(median <<<"${cpus[bf16]}")
  read -r rt rc <<<"$(awk -v a="$t16" -v b="$t32" -v c="$c32" -v d="$c16" 'BEGIN {printf "%.2f %.2f", a/b, c/d}')"
  rows+=("$spec|$t32|$t16|$rt|$c32|$c16|$rc")
  jrows+=("{\"spec\":\"$spec\",\"fp32_tokens_per_s\":$t32,\"bf16_tokens_per_s\":$t16,\"speedup_wall\":$rt,\"fp32_cpu_s\":$c32,\"bf16_cpu_s\":$c16,\"speedup_cpu\":$rc}")
  unset tps cpus
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| spec | fp32 tokens/s | bf16 tokens/s | bf16/fp32 | fp32 CPU s/step | bf16 CPU s/step | fp32/bf16 CPU |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in "${rows[@]}"; do
  IFS='|' read -r s a b c d e f <<<"$r"
  echo "| $s | $a | $b | $c | $d | $e | $f |"
done
joined=$(IFS=,; echo "${jrows[*]}")
printf '{"bench":"train_bf16_vs_fp32","machine":"%s","date":"%s","device":"%s","batch":%s,"seq":%s,"steps":%s,"threads":%s,"results":[%s]}\n' \
  "$cpu" "$date_utc" "$device" "$batch" "$seq" "$steps" "$threads" "$joined"
