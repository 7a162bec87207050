#!/bin/bash
# Builds the pack that bench/core_gpu.sh runs on the GPU machine (docs/eval.md, "The full run"):
# an OpenCL-only nanochat (-DNC_WITH_LLVM=OFF) in build-eval-ocl/, stripped, with the shared
# libraries the GPU machine lacks, the checkpoint folder and the CORE bundle. build-*/ is
# git-ignored: name build-eval-ocl/pack in the run tool's `carry`.
#   bench/core_gpu_pack.sh [CKPT] [STEP]   CKPT (default /tmp/sr/base_checkpoints/d4), STEP (default 000100)
# Env: LIBS (folder of the extra shared libraries, default build-ocl-gpu/pack: lib/ and fallback/),
#      NC_SHARED_DIR (the bundle is $NC_SHARED_DIR/data/eval/core, default ../shared).
set -eu
CK=${1:-/tmp/sr/base_checkpoints/d4}; STEP=${2:-000100}
LIBS=${LIBS:-build-ocl-gpu/pack}
B=build-eval-ocl; P=$B/pack; T=$(mktemp -d /tmp/core_pack_XXXXXX)
cmake -S . -B $B -DNC_WITH_LLVM=OFF -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=OFF > /dev/null
cmake --build $B --target nanochat -j2 > /dev/null
rm -rf $P; mkdir -p $P/lib $T/d4
cp $B/cli/nanochat $P/ && strip $P/nanochat
cp $LIBS/lib/* $P/lib/
tar czf $P/fallback.tgz -C $LIBS fallback
cp $CK/model_$STEP.safetensors $CK/meta_$STEP.json $CK/tokenizer.tiktoken* $T/d4/
tar czf $P/ckpt.tgz -C $T d4
tar cf $P/bundle.tar -C ${NC_SHARED_DIR:-../shared}/data/eval core
rm -rf $T
du -sh $P
