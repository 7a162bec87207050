#!/usr/bin/env bash
# Training throughput on this CPU: `nanochat bench train` vs the project's
# PyTorch reference (tools/torch_train_bench.py, the math of
# tools/nanochat_ref.py in eager fp32), same model, batch, seq and threads,
# run one after the other (never concurrently) in one invocation.
# Usage: bench/train_bench.sh [BUILD_DIR]
#   (default BUILD_DIR build-bench, configured Release; env: SPECS="d4 d8",
#    BATCH=8, SEQ=256, STEPS=5, THREADS=2, PY=/usr/bin/python3,
#    NANOCHAT=path/to/nanochat to time a prebuilt binary and skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
specs=${SPECS:-"d4 d8"}
batch=${BATCH:-8}
seq=${SEQ:-256}
steps=${STEPS:-5}
threads=${THREADS:-2}
py=${PY:-/usr/bin/python3}

# nanochat-c, optimized. An existing build dir is reused as configured (warn
# if it is not an optimized build); a new one is configured Release.
if [[ -n ${NANOCHAT:-} ]]; then
  nanochat=$NANOCHAT
  rev="prebuilt $NANOCHAT"
elif [[ -f $build/CMakeCache.txt ]]; then
  bt=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")
  [[ $bt == Release ]] || echo "warning: $build is CMAKE_BUILD_TYPE=$bt, not Release" >&2
else
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=OFF >/dev/null
fi
if [[ -z ${NANOCHAT:-} ]]; then
  if ! cmake --build "$build" -j"$(nproc)" --target nanochat >"$build/train_bench_build.log" 2>&1; then
    cat "$build/train_bench_build.log" >&2
    exit 1
  fi
  nanochat=$build/cli/nanochat
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || rev="$rev+dirty"
fi

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cores=$(nproc)
isa=AVX2
grep -m1 -qw avx512f /proc/cpuinfo && isa=AVX-512
date_utc=$(date -u +%FT%TZ)
torch_ver=$("$py" -c 'import torch; print(torch.__version__)')
echo "machine: $cores cores, $cpu ($isa), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $date_utc"
echo "nanochat-c $rev ($nanochat); torch $torch_ver ($py), eager fp32; batch $batch x seq $seq, 1 warm-up + $steps timed steps, $threads threads"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

json_field() { # json_field KEY LINE -> the number after "KEY":
  sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" <<<"$2"
}

rows=()
jrows=()
for spec in $specs; do
  sf=models/specs/$spec.xml
  echo
  echo "== $spec: nanochat-c"
  cmd_ours=("$nanochat" bench train --spec "$sf" --batch "$batch" --seq "$seq" --steps "$steps" --device cpu --threads "$threads")
  echo "\$ ${cmd_ours[*]}"
  out_ours=$("${cmd_ours[@]}" 2>/dev/null)
  echo "$out_ours"
  # MFU on both sides against the peak our bench measured just now
  peak=$(json_field peak_gflops "$(tail -n1 <<<"$out_ours")")
  sleep 1  # a pause between the two sides (they never overlap)
  echo "== $spec: PyTorch"
  cmd_torch=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE "$py" tools/torch_train_bench.py
             --spec "$sf" --batch "$batch" --seq "$seq" --steps "$steps" --threads "$threads" ${peak:+--peak "$peak"})
  echo "\$ ${cmd_torch[*]}"
  out_torch=$("${cmd_torch[@]}" 2>/dev/null)
  echo "$out_torch"
  sleep 1
  jo=$(tail -n1 <<<"$out_ours")
  jt=$(tail -n1 <<<"$out_torch")
  tps_o=$(json_field tokens_per_s "$jo")
  tps_t=$(json_field tokens_per_s "$jt")
  gf_o=$(json_field gflops "$jo")
  # the same FLOP count for PyTorch: tokens/s x (our gflops / our tokens/s)
  read -r ratio gf_t <<<"$(awk -v a="$tps_o" -v b="$tps_t" -v g="$gf_o" 'BEGIN {printf "%.2f %.2f", a/b, b*g/a}')"
  # and counting Muon's Polar Express matmuls too (not in nanochat's count):
  # (model FLOPs per step + Muon FLOPs per step) / step time
  mf=$(json_field muon_flops_per_step "$jt")
  read -r gfa_o gfa_t <<<"$(awk -v g="$gf_o" -v a="$tps_o" -v b="$tps_t" -v m="$mf" -v tok="$((batch * seq))" \
    'BEGIN {printf "%.1f %.1f", g + m / 1e9 * a / tok, b * g / a + m / 1e9 * b / tok}')"
  rows+=("$spec|$tps_o|$tps_t|$ratio|$gf_o|$gf_t|$gfa_o|$gfa_t")
  jrows+=("{\"spec\":\"$spec\",\"ours_tokens_per_s\":$tps_o,\"torch_tokens_per_s\":$tps_t,\"ratio\":$ratio,\"ours_gflops\":$gf_o,\"torch_gflops\":$gf_t,\"ours_gflops_incl_muon\":$gfa_o,\"torch_gflops_incl_muon\":$gfa_t,\"ours_step_s_median\":$(json_field step_s_median "$jo"),\"torch_step_s_median\":$(json_field step_s_median "$jt")}")
done

echo
echo "| spec | ours tokens/s | PyTorch tokens/s | ratio | ours GFLOP/s | PyTorch GFLOP/s | ours incl. Muon | PyTorch incl. Muon |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in "${rows[@]}"; do
  IFS='|' read -r s a b c d e f g <<<"$r"
  echo "| $s | $a | $b | $c | $d | $e | $f | $g |"
done
echo
joined=$(IFS=,; echo "${jrows[*]}")
printf '{"bench":"train_vs_torch","machine":"%s","isa":"%s","peak_gflops":%s,"cores":%s,"date":"%s","nanochat":"%s","torch":"%s","batch":%s,"seq":%s,"steps":%s,"threads":%s,"results":[%s]}\n' \
  "$cpu" "$isa" "${peak:-0}" "$cores" "$date_utc" "$rev" "$torch_ver" "$batch" "$seq" "$steps" "$threads" "$joined"
