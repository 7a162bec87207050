#!/bin/bash
# Assembles the OpenCL-only pack that bench/gpu_bench.sh runs on the GPU machine
# (which can install nothing): builds nanochat and the OpenCL tests in
# build-ocl-gpu (-DNC_WITH_LLVM=OFF), links bench/gpu_bench.c and bench/wgmma_probe.c
# (bench/wgmma_probe.sh) against its libraries, and copies them with the shared libraries the GPU machine lacks
# (lib/; fallback/ holds a libxml2 with its ICU, used only when the machine's
# own is missing). Run from the repository root on the development machine:
#   bench/gpu_pack.sh [BUILD_DIR]   (default build-ocl-gpu; the pack is BUILD_DIR/pack,
#                                    git-ignored: name it in the run tool's carry)
set -eu
B=${1:-build-ocl-gpu}
P=$B/pack
[ -f $B/CMakeCache.txt ] || cmake -S . -B $B -DNC_WITH_LLVM=OFF -DNC_BUILD_TESTS=ON > /dev/null
cmake --build $B -j2 --target nanochat test_ocl test_ocl_bf16 test_ocl_resident test_ocl_attn test_bf16_train test_tune_flash
mkdir -p $P/lib $P/fallback
gcc -std=c11 -O2 -Wall -D_GNU_SOURCE -I. bench/gpu_bench.c -o $P/gpu_bench $B/runtime/libnc_runtime.a $B/codegen/libnc_codegen.a \
  $B/passes/libnc_passes.a $B/ir/libnc_ir.a $B/support/libnc_support.a -lOpenCL -lxml2 -ljansson -lm -lpthread
gcc -std=c11 -O2 -Wall -D_GNU_SOURCE -I. bench/wgmma_probe.c -o $P/wgmma_probe $B/codegen/libnc_codegen.a $B/ir/libnc_ir.a $B/support/libnc_support.a \
  -lOpenCL -lm
cp $B/cli/nanochat $B/tests/test_ocl $B/tests/test_ocl_bf16 $B/tests/test_ocl_resident $B/tests/test_ocl_attn $B/tests/test_bf16_train $B/tests/test_tune_flash $P/
L=/lib/x86_64-linux-gnu
for f in libcriterion.so.3 libgit2.so.1.5 libhttp_parser.so.2.9 libjansson.so.4 libmbedcrypto.so.7 libmbedtls.so.14 libmbedx509.so.1 \
  libmicrohttpd.so.12 libnanomsg.so.5 libssh2.so.1 libyaml-0.so.2; do
  [ -e $P/lib/$f ] || cp -L $L/$f $P/lib/ 2>/dev/null || echo "gpu_pack: $f not found in $L (the GPU machine may lack it)" >&2
done
for f in libxml2.so.2 libicuuc.so.72 libicudata.so.72; do
  [ -e $P/fallback/$f ] || cp -L $L/$f $P/fallback/ 2>/dev/null || echo "gpu_pack: $f not found in $L" >&2
done
du -sh $P
