#!/usr/bin/env bash
# Serving benchmark: for d4, d8 and d12 init checkpoints (vocab 8192, a
# tokenizer trained here on the system dictionary), starts `nanochat serve`
# and measures with 1, 4 and 16 concurrent streaming clients: aggregate
# completion tokens/s, per-stream decode tokens/s (batch 1 = the 1-client row)
# and time to first token. Short runs by default; init weights give random
# text, which is fine for speed (random models rarely end early).
#   bench/serve_bench.sh [BUILD_DIR] [MODELS] [REQUESTS_PER_CLIENT] [MAX_TOKENS]
#   bench/serve_bench.sh build "d4 d8 d12" 2 64
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
models=${2:-d4 d8 d12}
reqs=${3:-2}
toks=${4:-64}
bin=$build/cli/nanochat
[[ -x $bin ]] || { echo "serve_bench: $bin not found (build first)" >&2; exit 1; }
cache=${NC_BENCH_DIR:-$here/out/serve_bench}
mkdir -p "$cache"
tok=$cache/tokenizer.tiktoken
if [[ ! -f $tok.json ]]; then
  [[ -f /usr/share/dict/words ]] || { echo "serve_bench: needs /usr/share/dict/words (wamerican)" >&2; exit 1; }
  echo "training an 8192-token tokenizer on /usr/share/dict/words ..."
  paste -d' ' - - - - - - - - < /usr/share/dict/words > "$cache/corpus.txt"
  "$bin" tok train -q -i "$cache/corpus.txt" --vocab-size 8192 -o "$tok"
fi
echo "# nanochat serve benchmark: $(nproc) cores, $reqs requests/client, max_tokens $toks, $(date -u +%FT%TZ)"
for m in $models; do
  ck=$cache/$m
  if [[ ! -f $ck/model_000000.safetensors ]]; then
    "$bin" init --spec "$here/models/specs/$m.xml" -o "$ck" > /dev/null
  fi
  cp "$tok" "$ck/tokenizer.tiktoken"; cp "$tok.json" "$ck/tokenizer.tiktoken.json"
  log=$cache/$m.log
  "$bin" serve --ckpt "$ck" --port 0 --slots 16 -q > "$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 600); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
    [[ -n $port ]] && break
    kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  [[ -n $port ]] || { echo "serve_bench: server for $m did not start" >&2; kill $pid; exit 1; }
  node "$here/bench/serve_bench.mjs" "http://127.0.0.1:$port" "$m" "1,4,16" "$reqs" "$toks" || { kill $pid; exit 1; }
  kill $pid; wait $pid || true
done
