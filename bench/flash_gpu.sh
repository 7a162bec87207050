#!/bin/bash
# Flash attention on the H100 (docs/opencl.md "Flash attention", docs/performance.md
# "GPU (H100)"): correctness on the card (test_ocl_attn: fp32 and mma.sync kernels
# against the interpreter; test_ocl: every op family and the tiny training step),
# attention forward+backward at d12's heads (ours flash vs ours decomposed vs torch
# SDPA, one run), d12's training step with and without the pattern, and d12 at 32 x 2048
# against the PyTorch reference. Runs on the GPU machine from the repository root:
#   bench/flash_gpu.sh [PACK]   PACK (default build-flash-gpu/pack): what bench/gpu_pack.sh
#                               assembles (bench/gpu_pack.sh build-flash-gpu)
# Env: FLASH_PARTS="tests attn train ref ocl" (which parts run), FLASH_STEPS=4.
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
  GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision fp32 --reps 3 attn:8:2048:6:128 2>&1 | tee -a "$OUT/attn_ours.txt"
  timeout 60 python3 tools/torch_gpu_bench.py --reps 20 attn:8:2048:6:128 2>&1 | tee "$OUT/attn_torch.txt"
  echo "== ptxas report of the flash kernels (registers, spills, shared memory)"
  NC_OCL_BUILD_LOG=1 NC_OCL_BUILD_OPTS=-cl-nv-verbose GPU_BENCH_ATTN_OLD=0 timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 1 \
    attn:1:256:6:128 > "$OUT/attn_ptxas.txt" 2>&1
  grep -A4 -E "Compiling entry function 'nc_fa|Function properties for nc_fa" "$OUT/attn_ptxas.txt" | grep -E "nc_fa|registers|spill" | head -12
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
