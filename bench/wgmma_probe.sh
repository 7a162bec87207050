#!/bin/bash
# The wgmma experiment on the GPU machine (issue 5; docs/opencl.md "The wgmma kernel"), one call:
# bench/wgmma_probe (built into the pack by bench/gpu_pack.sh) first probes the device
# (compute capability, local memory, -cl-nv-arch sm_90a, the patched-PTX route) and then
# checks and times each GEMM knob set in its own process (a faulting kernel cannot take the
# others down), followed by torch.matmul at the same shapes for the ratio.
#   bench/wgmma_probe.sh [PACK]   Env: WGP_VARIANTS (knob sets, wgmma_probe's syntax), WGP_SHAPES
#                                 ("LABEL:M:N:K ..."), WGP_REPS (10), WGP_PROBE=0 (skip the device probe:
#                                 route 2, the patched PTX)
set -u
P=${1:-build-ocl-gpu/pack}
OUT=${OUT:-/tmp/wgmma_probe_out}; mkdir -p "$OUT"
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader)"
if [ "${WGP_PROBE:-1}" = 1 ]; then timeout 120 $P/wgmma_probe --out "$OUT" > "$OUT/probe.txt" 2>&1; echo "probe rc $?"; else echo "ROUTE 2" > "$OUT/probe.txt"; fi
grep -E "^device|LOCAL_MEM|__local|^build route|route [AB]|^ROUTE|error" "$OUT/probe.txt" | cut -c1-400
route=$(sed -n 's/^ROUTE \([0-9]\).*/\1/p' "$OUT/probe.txt")
SHAPES=${WGP_SHAPES:-"d12.fc:32768:3072:768 d12.proj:32768:768:3072 d12.lm_head:32768:32768:768 d12.dW_fc:3072:768:32768 \
d20.fc:32768:5120:1280 d20.proj:32768:1280:5120 d20.lm_head:32768:32768:1280 d20.dW_fc:5120:1280:32768 square:8192:8192:8192"}
VARIANTS=${WGP_VARIANTS:-"mma:128,128,64,32,32,3 wg:128,128,32,3,1 wg:128,128,32,3,2 wg:128,128,16,4,2 wg:128,256,32,2,1 wg:128,256,16,4,2 \
wg:64,128,64,2,1 wg:64,256,32,2,1 wg:256,128,32,2,1 wg:128,192,32,2,1 wg:128,64,64,2,1"}
for v in $VARIANTS; do
  if [[ $v == wg:* ]] && [ "${route:-0}" = 0 ]; then continue; fi
  timeout 150 $P/wgmma_probe --route "${route:-0}" --reps "${WGP_REPS:-10}" "$v" -- $SHAPES > "$OUT/v_${v//[:,]/_}.txt" 2>&1
  echo "$v rc $?: $(grep -cE ' ok$' "$OUT/v_${v//[:,]/_}.txt") ok, $(grep -cE 'WRONG|error' "$OUT/v_${v//[:,]/_}.txt") wrong/errors"
  grep -E "registers|spill|smem|warn|Warn|rror" "$OUT/v_${v//[:,]/_}.txt" | grep -v "^build" | sort | uniq -c | head -6 | cut -c1-300
done
cat "$OUT"/v_*.txt | grep -E " (ok|WRONG)$" > "$OUT/table.txt"
CASES=""
for s in $SHAPES; do IFS=: read -r l m n k <<< "$s"; t="0:1"; [[ $l == *dW* ]] && t="1:0"; [[ $l == square ]] && t="0:0"; CASES="$CASES gemm:$l:$m:$n:$k:$t"; done
timeout 120 python3 tools/torch_gpu_bench.py --reps 20 $CASES > "$OUT/torch.txt" 2>&1
echo "== ours (kernel only, packed bf16 operands) vs torch.matmul"
awk 'NR == FNR { if ($1 == "torch") tf[$3] = $(NF - 1); next }
     { printf "%-26s %-12s %8s ms %7s TFLOP/s  torch %7s  %5.1f%%  err %s %s\n", $1, $2, $3, $4, tf[$2], tf[$2] ? 100 * $4 / tf[$2] : 0, $5, $6 }' \
  "$OUT/torch.txt" "$OUT/table.txt"
