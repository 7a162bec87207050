#!/bin/bash
# Data parallel on 2 GPUs (docs/performance.md, "Data-parallel (2 GPUs)"):
# `nanochat base-train` of a spec (default d12) with 1 rank on one GPU, then
# with `mpirun -np 2` (each rank picks its own GPU: --device opencl:gpu and
# the local rank), the same per-rank batch (B x T, ACCUM micro-steps per rank
# and step). Prints the tokens/s of each (run.json: steps 2..N, all ranks'
# tokens), the scaling efficiency (2-rank tokens/s over 1-rank tokens/s;
# target >= 1.8) and each rank's time breakdown. Default: nanochat's d12 batch
# of 524288 tokens per optimizer step for both runs (MPI_BENCH_TOTAL), 8 x 2048
# per micro-step (32 micro-steps on 1 rank, 16 per rank on 2), 4 steps; nanochat
# itself runs 16 micro-steps of 16 x 2048 on one GPU: 16 x 2048 does not fit one rank's
# H100 with both the step and the accumulate graph compiled (their arenas are
# 52.6 GB each at 16 x 2048, 26.3 GB at 8 x 2048: `nanochat graph dump
# models/specs/d12.xml --train --after memplan --bind B=8,T=2048`).
# Runs on the GPU machine from the repository root:
#   bench/mpi_gpu_bench.sh [PACK]   PACK (default build-dist-gpu/pack): nanochat built with
#                                   -DNC_WITH_LLVM=OFF against Open MPI (libmpi.so.40), lib/ and
#                                   fallback/ with the shared libraries the GPU machine lacks.
# MPI_BENCH_TOTAL=N (default 524288) fixes the tokens per optimizer step for both runs (the same
# training), so the per-step communication is amortized as it is in a real run; MPI_BENCH_TOTAL=0
# instead runs MPI_BENCH_ACCUM micro-steps per rank and step (each rank the same work).
# Env: MPI_BENCH_DEVICE=opencl:gpu MPI_BENCH_SPEC=d12 MPI_BENCH_B=8 MPI_BENCH_T=2048 MPI_BENCH_ACCUM=8 MPI_BENCH_STEPS=4
#      MPI_BENCH_PRECISION=bf16 (matmuls; fp32 for the portable GEMM) MPI_BENCH_TIMEOUT=240 (per run)
#      MPI_BENCH_PLAIN=1 adds a third run: 2 ranks with NC_DP_OVERLAP=0 (the exchange after the backward pass)
# The 2-rank runs overlap the gradient exchange with the last micro-step's backward pass (the OpenCL
# readback hook, docs/distributed.md); each rank's end-of-run line gives the breakdown.
set -u
P=${1:-build-dist-gpu/pack}
export LD_LIBRARY_PATH=$PWD/$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd $P/nanochat | grep -q "libxml2.*not found"; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/$P/fallback; fi
OUT=${OUT:-/tmp/mpi_gpu_bench_out}; mkdir -p "$OUT"
SPEC=${MPI_BENCH_SPEC:-d12} B=${MPI_BENCH_B:-8} T=${MPI_BENCH_T:-2048} ACC=${MPI_BENCH_ACCUM:-8} STEPS=${MPI_BENCH_STEPS:-4}
TOTAL=${MPI_BENCH_TOTAL:-524288} ACCLABEL=$ACC
PREC=${MPI_BENCH_PRECISION:-bf16} TMO=${MPI_BENCH_TIMEOUT:-240} DEV=${MPI_BENCH_DEVICE:-opencl:gpu}
N=$PWD/$P/nanochat
echo "== $(date -u +%FT%TZ) $(hostname); $(mpirun --version 2>&1 | head -1)"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
echo "== shared libraries (MPI, and anything missing)"
ldd $N | grep -E "libmpi|open-rte|open-pal|not found"
ldd $N | grep -q "not found" && { echo "missing libraries: stop"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NC_CACHE_DIR=/tmp/mgb_kc NC_OCL_MATMUL=$PREC
# 2026-11-26 on nvidia-h100-x2: without these, processes started by mpirun saw no GPU (docs/distributed.md);
# MPI_BENCH_MCA=0 leaves Open MPI's defaults (then a run that finds no GPU is retried with them)
if [ "${MPI_BENCH_MCA:-1}" = 1 ]; then
  export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx HWLOC_COMPONENTS=-opencl,-cuda,-nvml
  echo "== Open MPI over shared memory (ob1/vader), hwloc GPU discovery off: $(env | grep -E '^(OMPI_MCA_(pml|btl|osc)|HWLOC_COMPONENTS)=' | tr '\n' ' ')"
fi
W=/tmp/mgb; rm -rf $W; mkdir -p $W
python3 - $W <<'EOF'
import random, sys
r = random.Random(5)
words = ("the of and to in is was for on that with as by at from his her an which or be are had it were this not but "
         "they have one all their has been its who new more first two after other time year years can when some").split()
for name, n in (("train.txt", 4000), ("val.txt", 200)):
    with open(f"{sys.argv[1]}/{name}", "w") as f:
        for _ in range(n):
            f.write(" ".join(r.choice(words) for _ in range(r.randint(100, 400))) + ".\n\n")
EOF
$N tok train -q -i $W/train.txt --vocab-size 512 -o $W/t.tiktoken || exit 1
echo "== OpenCL devices of processes that mpirun starts (\`nanochat devices\` calls no MPI_Init), per rank"
timeout 60 mpirun -np 2 --bind-to none $N devices 2>&1 | grep -E "^opencl" | sort | uniq -c
run() {  # label ranks [tag env]: tag names the run (its folder, log and TPS key), env its extra variables
  local label=$1 np=$2 tag=${3:-$2} envs=${4:-}
  local dir=$W/r$tag log=$OUT/${SPEC}_rank$tag.txt
  local total=$((B * T * ACC * np)); [ "$TOTAL" -gt 0 ] && total=$TOTAL
  local args="base-train --spec models/specs/$SPEC.xml --data $W/train.txt --val $W/val.txt --model-tag b --tokenizer $W/t.tiktoken
    --num-iterations $STEPS --device-batch-size $B --seq $T --total-batch-size $total --eval-every 0 --eval-batches 1
    --device $DEV --out $dir --overwrite"
  local t0=$(date +%s)
  if [ $np = 1 ]; then timeout $TMO $N $args > $log 2>&1
  else env $envs timeout $TMO mpirun -np $np --bind-to none $N $args > $log 2>&1; fi
  local rc=$?
  if [ $rc != 0 ] && [ $np != 1 ] && grep -q "found no OpenCL GPU" $log; then
    # 2026-11-26: ranks saw no GPU after MPI_Init on the 2-GPU H100 machine (docs/distributed.md);
    # once more with Open MPI's UCX layers off (shared memory through ob1/vader) and hwloc's GPU
    # discovery off (its OpenCL plugin initializes the OpenCL loader inside MPI_Init)
    grep -m1 "found no OpenCL GPU" $log
    echo "  again with OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx HWLOC_COMPONENTS=-opencl,-cuda,-nvml:"
    t0=$(date +%s)
    mv $log $OUT/${SPEC}_rank${tag}_first.txt
    env $envs OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx HWLOC_COMPONENTS=-opencl,-cuda,-nvml timeout $TMO mpirun -np $np --bind-to none $N $args > $log 2>&1
    rc=$?
  fi
  grep -E "local rank|data parallel over|rank [0-9]+: [0-9]+ steps|rror|out of|CL_" $log | head -8
  grep -aE "step [0-9]+/[0-9]+ .*tok/s" $log | tail -2 | sed 's/^.*\(step [0-9]*\/\)/  \1/'
  TPS[$tag]=$(python3 -c "import json,glob; print(round(json.load(open(glob.glob('$dir/**/run.json', recursive=True)[0]))['tokens_per_s']))" 2>/dev/null || echo 0)
  echo "$label: rc $rc, $(($(date +%s) - t0)) s in all, ${TPS[$tag]} tokens/s"
  [ $rc = 0 ] || tail -4 $log
}
declare -A TPS
if [ "$TOTAL" -gt 0 ]; then
  echo "== $SPEC, ${B}x$T per micro-step, $TOTAL tokens per optimizer step for both runs ($((TOTAL / (B * T))) micro-steps on 1 rank, $((TOTAL / (B * T * 2))) per rank on 2), $STEPS steps (tokens/s over steps 2..$STEPS), matmuls $PREC"
  ACCLABEL="$((TOTAL / (B * T))) (1 rank) / $((TOTAL / (B * T * 2))) (2 ranks)"
else
  echo "== $SPEC, ${B}x$T per micro-step, $ACC micro-steps per rank and step, $STEPS steps (tokens/s over steps 2..$STEPS), matmuls $PREC"
fi
run "1 rank (1 GPU)" 1
run "2 ranks (2 GPUs)" 2
[ "${MPI_BENCH_PLAIN:-0}" = 1 ] && run "2 ranks (2 GPUs), NC_DP_OVERLAP=0 (exchange after the backward pass)" 2 2plain NC_DP_OVERLAP=0
python3 - "${TPS[1]}" "${TPS[2]}" "$SPEC" "$B" "$T" "$ACCLABEL" "${TPS[2plain]:-0}" <<'EOF'
import sys
t1, t2, tp = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[7])
print(f"== result: {sys.argv[3]} {sys.argv[4]}x{sys.argv[5]} x{sys.argv[6]} per rank: 1 rank {t1:.0f} tokens/s, 2 ranks {t2:.0f} tokens/s, "
      f"scaling {t2 / t1 if t1 > 0 else float('nan'):.2f}x (target >= 1.8x)")
if tp > 0:
    print(f"== 2 ranks with NC_DP_OVERLAP=0: {tp:.0f} tokens/s, scaling {tp / t1 if t1 > 0 else float('nan'):.2f}x")
EOF
