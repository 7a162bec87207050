#!/bin/bash
# H100 benchmark of the OpenCL backend against PyTorch, side by side in one run
# (docs/performance.md, "GPU (H100)"): the bf16 tensor-core GEMM vs torch.matmul
# at d12/d20 shapes, attention forward+backward vs SDPA, and training tokens/s
# of `nanochat bench train --device opencl:gpu` (bf16 matmuls) vs the project's
# PyTorch reference (tools/torch_gpu_bench.py: bf16 autocast, torch.compile, SDPA).
# Runs on the GPU machine from the repository root:
#   bench/gpu_bench.sh [PACK]   PACK (default build-ocl-gpu/pack) holds nanochat,
#                               gpu_bench, test_ocl_bf16 and lib/ (shared libraries
#                               the GPU machine lacks), built with -DNC_WITH_LLVM=OFF
#                               (bench/gpu_pack.sh assembles it).
# Env: GPU_BENCH_PREC="fp32" (training: the graph's precision, each run with bf16 matmuls: fp32 = the fp32
#      graph with NC_OCL_MATMUL=bf16, bf16 = the bf16 model of --precision bf16; "fp32 bf16" runs both),
#      GPU_BENCH_TRAIN="d12:32,16:2048 d20:8,4:2048" (spec:batches:seq: ours tries the batches
#      in turn until one fits; torch runs the same batch; with flash attention d12 fits at 32 x 2048,
#      arena 71 GB; d20 does not at 16 x 2048, 83 GB; docs/performance.md), GPU_BENCH_STEPS=5, GPU_BENCH_TORCH=0 (skip torch),
#      GPU_BENCH_PARTS="tests gemm attn sweep train" (which parts run), GPU_BENCH_TC="BM,BN,WM,WN,BK[,MODE[,STAGES[,WG]]] ..."
#      (tensor-core knob sets the sweep tries, WG 1/2 the wgmma kernel, else mma.sync; the fastest on d12's
#      fc + dW_fc is used for training; without the sweep the default is the wgmma kernel on Hopper),
#      GPU_BENCH_TORCH_TRAIN=0 (skip torch's training runs only),
#      GPU_BENCH_RESIDENT_OFF=0 (skip the d12 run with NC_OCL_RESIDENT=0), GPU_BENCH_GEMM_EXTRA=0 (skip the
#      mma.sync and fp32 GEMM rows),
#      GPU_BENCH_TUNE=SECONDS (last, run `nanochat tune` on d12 into its own database when the binary has it).
set -u
P=${1:-build-ocl-gpu/pack}
export LD_LIBRARY_PATH=$PWD/$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd $P/nanochat | grep -q "libxml2.*not found"; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/$P/fallback; fi
OUT=${OUT:-/tmp/gpu_bench_out}; mkdir -p "$OUT"
mkdir -p /tmp/gb/cli && cp $P/nanochat /tmp/gb/cli/
export NC_SOURCE_DIR=$PWD NC_BUILD_DIR=/tmp/gb NC_CACHE_DIR=/tmp/gb_kc
STEPS=${GPU_BENCH_STEPS:-5}
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); $(python3 -c 'import torch; print("torch", torch.__version__)' 2>&1)"
PARTS=" ${GPU_BENCH_PARTS:-tests gemm attn sweep train} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
if has tests; then
  echo "== correctness: test_ocl_bf16 (wgmma, mma.sync and their emulations vs a CPU bf16 reference)"
  timeout 240 $P/test_ocl_bf16 --jobs 1 --verbose 2>&1 | tee "$OUT/test_ocl_bf16.txt" | grep -E "Passing|Failing|FAIL|SKIP|worst|Synthesis" | grep -v "is disabled"
  if [ -x $P/test_bf16_train ]; then
    echo "== correctness: test_bf16_train on OpenCL (every op and the tiny-all step of the bf16 model vs the interpreter)"
    timeout 150 $P/test_bf16_train --jobs 1 --verbose --filter '*opencl*' 2>&1 | tee "$OUT/test_bf16_train.txt" | grep -E "FAIL|zoo|step|Synthesis"
  fi
  if [ -x $P/test_ocl_resident ]; then
    echo "== correctness: test_ocl_resident (params and optimizer state kept on the device vs uploaded every step)"
    timeout 120 $P/test_ocl_resident --jobs 1 2>&1 | tail -3
  fi
fi
# (B*T, C) x (C, 4C), (B*T, 4C) x (4C, C), (B*T, C) x (C, V) as nn.Linear stores them (W is (out, in): nt),
# the weight gradient dW = dY^T X (tn), and a square reference
BT=32768
CASES=""
for mc in d12:768 d20:1280; do m=${mc%%:*}; C=${mc##*:}
  CASES="$CASES gemm:$m.fc:$BT:$((4*C)):$C:0:1 gemm:$m.proj:$BT:$C:$((4*C)):0:1 gemm:$m.lm_head:$BT:32768:$C:0:1 gemm:$m.dW_fc:$((4*C)):$C:$BT:1:0"
done
CASES="$CASES gemm:square:8192:8192:8192:0:0"
if has gemm; then
  echo "== bf16 GEMM through the runtime (the default: wgmma on Hopper), two rows per shape: fp32 operands in memory"
  echo "   (the fp32 graph's GEMMs: packed to bf16 on every call) and bf16 operands in memory (as torch.matmul's, the"
  echo "   bf16 model's: read in place, k-contiguous ones and on wgmma m/n-contiguous ones too); then torch.matmul (bf16 operands)"
  timeout 120 $P/gpu_bench --device gpu --precision bf16 --operands fp32 --reps 5 $CASES | tee "$OUT/gemm_ours.txt"
  timeout 120 $P/gpu_bench --device gpu --precision bf16 --operands bf16 --reps 5 $CASES | tee "$OUT/gemm_ours_bf16.txt"
  [ "${GPU_BENCH_TORCH:-1}" = 1 ] && timeout 90 python3 tools/torch_gpu_bench.py --reps 20 $CASES | tee "$OUT/gemm_torch.txt"
  echo "== ours / torch.matmul"
  awk 'NR == FNR { if ($1 == "torch") tf[$3] = $(NF - 1); next } $1 == "ours" && tf[$3] { printf "%-12s %-15s ours %7.1f  torch %7.1f TFLOP/s  %5.1f%%\n", $3, $9, $12, tf[$3], 100 * $12 / tf[$3] }' \
    "$OUT/gemm_torch.txt" "$OUT/gemm_ours.txt" "$OUT/gemm_ours_bf16.txt" 2>/dev/null
  [ "${GPU_BENCH_GEMM_EXTRA:-1}" = 1 ] && {
  echo "== the mma.sync kernel (NC_OCL_WGMMA=0) for scale"
  NC_OCL_WGMMA=0 timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 5 gemm:d12.fc:$BT:3072:768:0:1 gemm:d12.dW_fc:3072:768:$BT:1:0 \
    gemm:square:8192:8192:8192:0:0
  echo "== fp32 GEMM (ours, the portable path) for scale"
  timeout 60 $P/gpu_bench --device gpu --precision fp32 --reps 3 gemm:d12.fc:$BT:3072:768:0:1
  }
fi
if has attn; then
  echo "== attention forward + backward, d12 heads (B=8, T=2048, H=6, D=128)"
  timeout 90 $P/gpu_bench --device gpu --precision bf16 --reps 3 attn:8:2048:6:128
  timeout 60 python3 tools/torch_gpu_bench.py --reps 10 attn:8:2048:6:128
fi
if has sweep; then
  echo "== tensor-core knob sweep (BM,BN,WM,WN,BK,MODE,STAGES[,WG]) on d12.fc, d12.dW_fc, d20.fc"
  best=""; bestt=1e9
  for tc in ${GPU_BENCH_TC:-128,128,0,0,64,1,3,1 256,128,0,0,32,1,4,1 128,256,0,0,64,1,3,1 128,128,0,0,64,1,3,2 128,128,0,0,32,1,3,1 128,128,64,32,32,1,3}; do
    r=$(NC_OCL_TC=$tc timeout 60 $P/gpu_bench --device gpu --precision bf16 --reps 5 gemm:d12.fc:$BT:3072:768:0:1 gemm:d12.dW_fc:3072:768:$BT:1:0 gemm:d20.fc:$BT:5120:1280:0:1 2>&1)
    echo "$r" | sed "s/^/$tc  /"
    t=$(echo "$r" | awk '/d12\./ && /ms/ {for (i = 1; i <= NF; i++) if ($i == "ms") s += $(i - 1)} END {print s ? s : 1e9}')
    if ! echo "$r" | grep -q WRONG && awk "BEGIN {exit !($t < $bestt)}"; then best=$tc; bestt=$t; fi
  done
  echo "fastest on d12 fc + dW_fc: $best ($bestt ms)"; export NC_OCL_TC=$best
fi
has train || exit 0
echo "== training (ours: OpenCL, bf16 matmuls, params and optimizer state on the device; torch: reference model, bf16 autocast + torch.compile, SDPA)"
for run in ${GPU_BENCH_TRAIN:-d12:32,16:2048 d20:8,4:2048}; do IFS=: read -r spec bs t <<< "$run"
  for prec in ${GPU_BENCH_PREC:-fp32}; do
    for b in ${bs//,/ }; do
      o="$OUT/ours_${spec}_${b}x${t}_$prec.txt"
      NC_OCL_MATMUL=bf16 NC_PROFILE=40 timeout 150 /tmp/gb/cli/nanochat bench train --spec models/specs/$spec.xml --batch $b --seq $t \
        --steps $STEPS --device opencl:gpu --precision $prec > "$o" 2>&1
      rc=$?
      echo "ours $spec ${b}x$t --precision $prec rc $rc: $(grep -E '^step [0-9.]* s median' "$o" | head -1)"
      grep -E "opencl profile|rror|out of" "$o" | head -3
      if [ $rc = 0 ]; then break; fi
    done
    grep -E "^  " "$o" | head -20
  done
  [ "${GPU_BENCH_TORCH_TRAIN:-${GPU_BENCH_TORCH:-1}}" = 1 ] || continue
  timeout 150 python3 tools/torch_gpu_bench.py --steps $STEPS train:models/specs/$spec.xml:$b:$t > "$OUT/torch_${spec}_${b}x$t.txt" 2>&1
  echo "torch rc $?"; grep -E "^torch" "$OUT/torch_${spec}_${b}x$t.txt" || tail -5 "$OUT/torch_${spec}_${b}x$t.txt"
done
if [ "${GPU_BENCH_RESIDENT_OFF:-1}" = 1 ]; then
  echo "== ours d12 16x2048 with device residency off (NC_OCL_RESIDENT=0: params and optimizer state uploaded and read back every step)"
  NC_OCL_RESIDENT=0 NC_OCL_MATMUL=bf16 timeout 120 /tmp/gb/cli/nanochat bench train --spec models/specs/d12.xml --batch 16 --seq 2048 \
    --steps $STEPS --device opencl:gpu 2>&1 | grep -E "^step [0-9.]* s median|rror"
fi
if [ "${GPU_BENCH_TUNE:-0}" != 0 ] && /tmp/gb/cli/nanochat tune --help > /dev/null 2>&1; then
  echo "== nanochat tune d12 (bf16, 16 x 2048, budget ${GPU_BENCH_TUNE} s; its own database, after the runs above)"
  NC_TUNE_DB=/tmp/gb_tune.json timeout $((GPU_BENCH_TUNE + 120)) /tmp/gb/cli/nanochat tune models/specs/d12.xml --device opencl:gpu \
    --precision bf16 --batch 16 --seq 2048 --budget $GPU_BENCH_TUNE 2>&1 | tail -15
  cp /tmp/gb_tune.json "$OUT/" 2>/dev/null
fi
