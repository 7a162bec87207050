#!/usr/bin/env bash
# llama.cpp f32 batch-1 decode of a d8-size llama model vs nanochat's d8 batch-1 decode (issue 8),
# on this machine's CPU, in one invocation.
# Usage: bench/llama/run.sh   (env: BUILD=build-rel, ROUNDS=1, THREADS=2 (ours), LLAMA_THREADS="1 2", REBUILD=0)
#  - npm-installs node-llama-cpp 3.22.1 into bench/llama/node_modules if missing (prebuilt CPU
#    binaries; decode.mjs forbids building and downloading);
#  - writes build-llama/d8-llama-f32.gguf (git-ignored) with make_gguf.py if missing;
#  - compiles raw_decode.c against the package's libllama.so (build-llama/raw_decode): llama.cpp
#    driven from C with no node in the loop; this is the llama.cpp figure the ratio uses;
#  - per round: raw_decode and decode.mjs for each of LLAMA_THREADS (warm-up + 3 timed passes of 128 tokens
#    after the first, median; under node, 2 threads run slower than 1 on this 2-core machine; raw_decode scales),
#    then our d8 batch-1 decode (THREADS threads, best of 2 as decode_bench reports), each under
#    flock /tmp/nc_bench.lock; prints all and the ratio of ours to llama.cpp's fastest (raw).
# Ours: by default the already-built $BUILD/decode_bench on $BUILD/decode_bench_ckpts/d8, which is
# exactly what bench/decode_bench.sh runs, without its cmake step (so $BUILD is not rebuilt);
# REBUILD=1 (or no $BUILD/decode_bench) goes through MODELS=d8 bench/decode_bench.sh $BUILD instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
build=${BUILD:-build-rel}
rounds=${ROUNDS:-1}
threads=${THREADS:-2}
lthreads=${LLAMA_THREADS:-1 2}
gguf=build-llama/d8-llama-f32.gguf

[[ -d "$here/node_modules/node-llama-cpp" ]] || (cd "$here" && npm install --no-audit --no-fund)
if [[ ! -f "$gguf" ]]; then mkdir -p build-llama; /usr/bin/python3 "$here/make_gguf.py" "$gguf"; fi
lib="$here/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
if [[ ! -x build-llama/raw_decode || "$here/raw_decode.c" -nt build-llama/raw_decode ]]; then
  cc -std=c11 -O2 -D_GNU_SOURCE "$here/raw_decode.c" -o build-llama/raw_decode -L"$lib" \
    -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -Wl,-rpath,"$lib"
fi

ours() {
  if [[ "${REBUILD:-0}" != 1 && -x "$build/decode_bench" && -f "$build/decode_bench_ckpts/d8/meta_000000.json" ]]; then
    flock /tmp/nc_bench.lock "$build/decode_bench" --ckpt "$build/decode_bench_ckpts/d8" \
      --tokenizer "$build/decode_bench_ckpts/bytes.tiktoken" --threads "$threads"
  else
    MODELS=d8 flock /tmp/nc_bench.lock bench/decode_bench.sh "$build" --threads "$threads"
  fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for r in $(seq 1 "$rounds"); do
  l=""; lbest=0; n=""
  for lt in $lthreads; do
    echo "== round $r: llama.cpp (libllama.so direct, raw_decode), $gguf, $lt threads"
    rout=$(GGML_BACKEND_DIR="$lib" flock /tmp/nc_bench.lock build-llama/raw_decode "$gguf" "$lt" 128 32 3 2>&1 | grep -E 'load_backend|raw run|tok/s')
    echo "$rout"
    v=$(grep -o 'decode (libllama direct) [0-9.]*' <<<"$rout" | awk '{print $NF}')
    l="$l${l:+/}$v"
    lbest=$(awk -v a="$v" -v b="$lbest" 'BEGIN{print (a > b ? a : b)}')
  done
  for lt in $lthreads; do
    echo "== round $r: llama.cpp (node-llama-cpp 3.22.1 prebuilt CPU), $gguf, $lt threads"
    lout=$(cd "$here" && flock /tmp/nc_bench.lock node decode.mjs "../../$gguf" --threads "$lt" --tokens 128 --prompt 32 --reps 3)
    echo "$lout"
    v=$(grep -o 'llama.cpp f32 batch-1 decode [0-9.]*' <<<"$lout" | awk '{print $NF}')
    n="$n${n:+/}$v"
  done
  echo "== round $r: nanochat d8 ($build)"
  oout=$(ours)
  grep -v '^|' <<<"$oout" || true
  o=$(grep -o 'batch-1 decode *[0-9.]*' <<<"$oout" | head -1 | awk '{print $NF}')
  results+=("$r $l $n $lbest $o")
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | llama.cpp f32 direct, $lthreads threads (/) tok/s | same via node-llama-cpp | nanochat d8, $threads threads, tok/s | ours / llama.cpp's fastest direct |"
echo "|---:|---:|---:|---:|---:|"
for x in "${results[@]}"; do
  read -r r l n lb o <<<"$x"
  printf '| %s | %s | %s | %s | %s |\n' "$r" "$l" "$n" "$o" "$(awk -v a="$o" -v b="$lb" 'BEGIN{printf "%.2f", a/b}')"
done
