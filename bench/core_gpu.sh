#!/bin/bash
# The full CORE run (docs/eval.md, "The full run") on the GPU machine: nanochat's OpenCL device,
# the examples of every task strided over W processes (--rank R --world W) sharing the GPU, and
# their per-task counts merged into one table (bench/core_merge.py) under $OUT.
#   bench/core_gpu.sh [PACK]   PACK (default build-eval-ocl/pack): nanochat built with
#       -DNC_WITH_LLVM=OFF (stripped), lib/ (shared libraries the GPU machine lacks),
#       fallback.tgz (libxml2 + ICU, used only if missing there), ckpt.tgz (the checkpoint
#       folder d4/), bundle.tar (the core bundle folder core/).
# Env: CORE_WORLD (processes, 4), CORE_LIMIT (seconds each, 300), CORE_DEVICE (opencl:gpu),
#      CORE_ARGS (more `eval base` flags), CORE_CHECK=0 skips the 40-example check run,
#      CORE_KVAB=1 times arc_easy (CORE_KVAB_N examples, 600) with the KV cache off and on after the run.
set -u
P=${1:-build-eval-ocl/pack}
OUT=${OUT:-/tmp/core_gpu_out}; mkdir -p "$OUT"
W=${CORE_WORLD:-4}; LIMIT=${CORE_LIMIT:-300}; DEV=${CORE_DEVICE:-opencl:gpu}
R=/tmp/core_gpu; rm -rf $R; mkdir -p $R
tar xzf $P/ckpt.tgz -C $R && tar xf $P/bundle.tar -C $R || { echo "cannot unpack $P"; exit 1; }
export LD_LIBRARY_PATH=$PWD/$P/lib
if ldd $P/nanochat | grep -q "libxml2.*not found"; then
  tar xzf $P/fallback.tgz -C $R && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$R/fallback && echo "using the carried libxml2"
fi
ldd $P/nanochat | grep "not found"
{ echo "date $(date -u +%FT%TZ)"; echo "gpu $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)";
  echo "cpu $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"; echo "device $DEV, $W processes, limit $LIMIT s"; } | tee $OUT/summary.txt
$P/nanochat devices 2>&1 | tee -a $OUT/summary.txt
t0=$(date +%s.%N)
for r in $(seq 0 $((W - 1))); do
  mkdir -p $R/o$r
  NC_CACHE_DIR=$R/kc$r timeout $LIMIT $P/nanochat eval base --ckpt $R/d4 --bundle $R/core --device $DEV --rank $r --world $W \
    --batch 1024 --batch-tokens 65536 --out $R/o$r ${CORE_ARGS:-} > $OUT/rank$r.log 2>&1 &
done
if [ "${CORE_CHECK:-1}" != 0 ]; then  # the first 40 examples of 6 tasks, to compare with the CPU device's run (docs/eval.md)
  mkdir -p $R/check
  NC_CACHE_DIR=$R/kcc timeout $LIMIT $P/nanochat eval base --ckpt $R/d4 --bundle $R/core --device $DEV --max-per-task 40 \
    --tasks copa,arc_easy,piqa,lambada_openai,winograd,bigbench_language_identification --out $R/check > $OUT/check.log 2>&1 &
fi
wait
t1=$(date +%s.%N)
echo "wall $(python3 -c "print(round($t1 - $t0, 1))") s for the $W processes" | tee -a $OUT/summary.txt
if [ "${CORE_KVAB:-0}" != 0 ]; then  # arc_easy's first 600 examples with the KV cache on and off (auto is off on opencl)
  for kv in off on; do
    mkdir -p $R/kv$kv
    s0=$(date +%s.%N)
    NC_CACHE_DIR=$R/kc0 timeout 120 $P/nanochat eval base --ckpt $R/d4 --bundle $R/core --device $DEV --tasks arc_easy --max-per-task ${CORE_KVAB_N:-600} \
      --batch 1024 --batch-tokens 65536 --kv-cache $kv --out $R/kv$kv 2>&1 | grep -E "^core: arc|^nanochat eval" | sed "s/^/kv-cache $kv: /" | tee -a $OUT/summary.txt
    echo "kv-cache $kv: $(python3 -c "print(round($(date +%s.%N) - $s0, 1))") s wall (process)" | tee -a $OUT/summary.txt
  done
fi
python3 bench/core_merge.py --bundle $R/core --out $OUT/core_d4_full $(for r in $(seq 0 $((W - 1))); do echo $R/o$r/eval_base.json:$OUT/rank$r.log; done) | tee -a $OUT/summary.txt
