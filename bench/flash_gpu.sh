#!/bin/bash
# Flash attention on the H100 (docs/opencl.md "Flash attention", docs/performance.md
# "GPU (H100)"): correctness on the card (test_ocl_attn: fp32 and mma.sync kernels
# against the interpreter; test_ocl: every op family and the tiny training step),
# attention forward+backward at d12's heads (ours flash vs ours decomposed vs torch
# SDPA, one run), d12's training step with and without the pattern, and d12 at 32 x 2048
# against the PyTorch reference. Runs on the GPU machine from the repository root:
#   bench/flash_gpu.sh [PACK]   PACK (default build-flash-gpu/pack): what bench/gpu_pack.sh
#                               assembles (bench/gpu_pack.sh build-flash-gpu)
# Env: FLASH_PARTS="tests attn train ref ocl" (which parts run; also "fa": the block-size /
#      stage variants of FLASH_FA timed one by one, the fastest exported as NC_OCL_FA, and
#      "t32": d12 at 32 x 2048 with NC_PROFILE=40, first as before 2026-11-27 (statistics pass,
#      one stage, loop-nest scatter_add), then as now), FLASH_STEPS=4,
#      FLASH_FA="BM,BMQ,BN,KM,QN,ST ..." (NC_OCL_FA values the "fa" part tries),
#      FLASH_BEFORE="VAR=VALUE ..." (the "t32" part's first run; default: the code before 2026-11-27),
#      "b32": the bf16 model (--precision bf16) at 32 x 2048 with NC_PROFILE=40, first with the
#      binaries in PACK/base/ when present (a pack of the code before, for side-by-side figures), then now.
set -u
P=${1:-build-flash-gpu/pack}
export LD_LIBRARY_PATH=$PWD/$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd $P/nanochat | grep -q "libxml2.*not found"; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/$P/fallback; fi
OUT=${OUT:-/tmp/flash_out}; mkdir -p "$OUT"
mkdir -p /tmp/fg/cli && cp $P/nanochat /tmp/fg/cli/
export NC_SOURCE_DIR=$PWD NC_BUILD_DIR=/tmp/fg NC_CACHE_DIR=/tmp/fg_kc
STEPS=${FLASH_STEPS:-4}
PARTS=" ${FLASH_PARTS:-tests attn train ref ocl} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); $(python3 -c 'import torch; print("torch", torch.__version__)' 2>&1)"
if has tests; then
  echo "== test_ocl_attn (flash attention vs the interpreter; bf16 tiles on mma.sync)"
  timeout 150 $P/test_ocl_attn --jobs 1 --verbose 2>&1 | tee "$OUT/test_ocl_attn.txt" | grep -E "worst|arena|FAIL|Synthesis|rror" | head -30
fi
if has attn; then
  echo "== attention forward + backward, d12 heads (B=8, T=2048, H=6, D=128, causal)"
  timeout 120 $P/gpu_bench --device gpu --precision bf16 --reps 5 attn:8:2048:6:128 2>&1 | tee "$OUT/attn_ours.txt"
  if [ -x $P/base/gpu_bench ]; then
    echo "-- the code before (PACK/base)"
    GPU_BENCH_ATTN_OLD=0 timeout 60 $P/base/gpu_bench --device gpu --precision bf16 --reps 5 attn:8:2048:6:128 2>&1 | tail -1
  fi
  GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision fp32 --reps 3 attn:8:2048:6:128 2>&1 | tee -a "$OUT/attn_ours.txt"
  timeout 60 python3 tools/torch_gpu_bench.py --reps 20 attn:8:2048:6:128 2>&1 | tee "$OUT/attn_torch.txt"
  echo "== ptxas report of the flash kernels (registers, spills, shared memory)"
  NC_OCL_BUILD_LOG=1 NC_OCL_BUILD_OPTS=-cl-nv-verbose GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 1 \
    attn:1:256:6:128 > "$OUT/attn_ptxas.txt" 2>&1
  grep -A4 -E "Compiling entry function 'nc_fa|Function properties for nc_fa" "$OUT/attn_ptxas.txt" | grep -E "nc_fa|registers|spill" | head -12
fi
if has fa; then
  echo "== flash attention block sizes and stages (NC_OCL_FA=BM,BMQ,BN,KM,QN,ST), fwd+bwd, d12 heads (B=8, T=2048)"
  echo "   first: before 2026-11-27 (statistics pass: NC_OCL_FA_STATS=1, one stage)"
  NC_OCL_FA_STATS=1 NC_OCL_FA=64,32,32,32,32,1 GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 5 attn:8:2048:6:128 2>&1 | tail -1
  best=""; bestt=1e9
  for fa in ${FLASH_FA:-64,32,32,32,32,1 64,32,32,32,32,2 64,64,32,64,32,2 128,64,32,64,32,2 64,64,32,128,32,2 64,32,32,64,32,2 64,64,64,64,32,2 128,128,32,128,32,2}; do
    r=$(NC_OCL_FA=$fa GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 5 attn:8:2048:6:128 2>&1)
    echo "$fa  $(echo "$r" | tail -1)"
    t=$(echo "$r" | awk '/^ours attention/ {for (i = 1; i <= NF; i++) if ($i == "ms") print $(i - 1)}' | tail -1)
    if [ -n "$t" ] && awk "BEGIN {exit !($t < $bestt)}"; then best=$fa; bestt=$t; fi
  done
  echo "fastest: NC_OCL_FA=$best ($bestt ms)"
  [ -n "$best" ] && export NC_OCL_FA=$best
  echo "== the fastest against the decomposition (values) and its ptxas report"
  timeout 90 $P/gpu_bench --device gpu --precision bf16 --reps 3 attn:8:2048:6:128 2>&1 | tail -6
  NC_OCL_BUILD_LOG=1 NC_OCL_BUILD_OPTS=-cl-nv-verbose GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 1 \
    attn:1:256:6:128 > "$OUT/attn_ptxas.txt" 2>&1
  grep -A4 -E "Compiling entry function 'nc_fa|Function properties for nc_fa" "$OUT/attn_ptxas.txt" | grep -E "nc_fa|registers|spill|smem" | head -16
  timeout 60 python3 tools/torch_gpu_bench.py --reps 20 attn:8:2048:6:128 2>&1 | tail -2
fi
if has t32; then
  echo "== d12 32 x 2048, fp32 graph + TC GEMMs, NC_PROFILE=40: before (statistics pass, one stage, loop-nest scatter_add), then now"
  env ${FLASH_BEFORE:-NC_OCL_FA_STATS=1 NC_OCL_FA=64,32,32,32,32,1 NC_OCL_SCATTER=0} NC_OCL_MATMUL=bf16 NC_PROFILE=40 timeout 150 /tmp/fg/cli/nanochat bench train \
    --spec models/specs/d12.xml --device opencl:gpu --batch 32 --seq 2048 --steps $STEPS > "$OUT/d12_32_before.txt" 2>&1
  echo "before (${FLASH_BEFORE:-NC_OCL_FA_STATS=1 NC_OCL_FA=64,32,32,32,32,1 NC_OCL_SCATTER=0}) rc $?: $(grep -E '^step [0-9.]* s median' "$OUT/d12_32_before.txt" | head -1)"
  NC_OCL_MATMUL=bf16 NC_PROFILE=40 timeout 150 /tmp/fg/cli/nanochat bench train --spec models/specs/d12.xml --device opencl:gpu --batch 32 \
    --seq 2048 --steps $STEPS > "$OUT/d12_32_now.txt" 2>&1
  echo "now (NC_OCL_FA=${NC_OCL_FA:-default}) rc $?: $(grep -E '^step [0-9.]* s median' "$OUT/d12_32_now.txt" | head -1)"
  grep -E "rror|out of|loss" "$OUT/d12_32_now.txt" | head -4
  grep -E "^  |profile" "$OUT/d12_32_now.txt" | head -30
  echo "-- before, top 12"
  grep -E "^  " "$OUT/d12_32_before.txt" | head -12
fi
if has b32; then
  echo "== d12 32 x 2048, the bf16 model (--precision bf16), NC_PROFILE=40: the code before (PACK/base), then now"
  for w in base now; do
    bin=/tmp/fg/cli/nanochat
    if [ $w = base ]; then [ -x $P/base/nanochat ] || continue; mkdir -p /tmp/fgb/cli && cp $P/base/nanochat /tmp/fgb/cli/ && bin=/tmp/fgb/cli/nanochat; fi
    NC_PROFILE=40 timeout 150 $bin bench train --spec models/specs/d12.xml --device opencl:gpu --precision bf16 --batch 32 --seq 2048 \
      --steps $STEPS > "$OUT/d12_32_bf16_$w.txt" 2>&1
    echo "$w rc $?: $(grep -E '^step [0-9.]* s median' "$OUT/d12_32_bf16_$w.txt" | head -1)"
    grep -E "rror|out of|loss" "$OUT/d12_32_bf16_$w.txt" | head -3
    grep -E "^  |profile" "$OUT/d12_32_bf16_$w.txt" | head -24
  done
fi
if has train; then
  echo "== d12 training step, 16 x 2048, fp32 graph + tensor-core GEMMs (the earlier GPU path): flash attention vs the decomposition"
  for off in 0 4096; do
    NC_PATTERNS_OFF=$off NC_OCL_MATMUL=bf16 NC_PROFILE=30 timeout 120 /tmp/fg/cli/nanochat bench train --spec models/specs/d12.xml --batch 16 --seq 2048 \
      --steps $STEPS --device opencl:gpu > "$OUT/d12_16_off$off.txt" 2>&1
    echo "NC_PATTERNS_OFF=$off rc $?: $(grep -E '^step [0-9.]* s median' "$OUT/d12_16_off$off.txt" | head -1)"
    grep -E "rror|out of" "$OUT/d12_16_off$off.txt" | head -3
  done
  grep -E "^  " "$OUT/d12_16_off0.txt" | head -12
  echo "== d12 32 x 2048, --precision bf16 (the brief's command), then the fp32 graph + TC GEMMs"
  NC_PROFILE=30 timeout 150 /tmp/fg/cli/nanochat bench train --spec models/specs/d12.xml --device opencl:gpu --precision bf16 --batch 32 --seq 2048 \
    --steps $STEPS > "$OUT/d12_32_bf16.txt" 2>&1
  echo "bf16 model rc $?: $(grep -E '^step [0-9.]* s median' "$OUT/d12_32_bf16.txt" | head -1)"
  grep -E "rror|out of|loss" "$OUT/d12_32_bf16.txt" | head -4
  NC_OCL_MATMUL=bf16 timeout 150 /tmp/fg/cli/nanochat bench train --spec models/specs/d12.xml --device opencl:gpu --batch 32 --seq 2048 \
    --steps $STEPS > "$OUT/d12_32_fp32g.txt" 2>&1
  echo "fp32 graph rc $?: $(grep -E '^step [0-9.]* s median' "$OUT/d12_32_fp32g.txt" | head -1)"
  grep -E "rror|out of" "$OUT/d12_32_fp32g.txt" | head -3
fi
if has ref; then
  echo "== PyTorch reference d12 32 x 2048 (bf16 autocast, torch.compile, SDPA)"
  timeout 200 python3 tools/torch_gpu_bench.py --steps $STEPS train:models/specs/d12.xml:32:2048 > "$OUT/torch_d12_32.txt" 2>&1
  echo "torch rc $?"; grep -E "^torch" "$OUT/torch_d12_32.txt" || tail -5 "$OUT/torch_d12_32.txt"
fi
if has ocl; then
  echo "== test_ocl on the card (op families incl. attention, tiny training step)"
  timeout 150 $P/test_ocl --jobs 1 --verbose 2>&1 | tee "$OUT/test_ocl.txt" | grep -E "worst|FAIL|Synthesis" | head -20
fi
echo "== done $(date -u +%FT%TZ)"
