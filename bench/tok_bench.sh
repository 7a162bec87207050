#!/usr/bin/env bash
# Tokenizer benchmark: encode MB/s of nanochat-c and js-tiktoken on the same
# ~10 MB of text with the same ranks (gpt2, cl100k_base), and the time to
# train a 32768-token tokenizer on it. Text: /work/shared/data/pretrain (or
# $NC_SHARED_DIR/data/pretrain) if present, else the committed test corpus
# (tests/data/tok) repeated.
# Usage: bench/tok_bench.sh [BUILD_DIR]   (default build; needs cli/nanochat
# built there, node, and `npm ci` done in tests/js)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
nc=$build/cli/nanochat
[[ -x $nc ]] || { echo "tok_bench: $nc not built (cmake --build $build --target nanochat)" >&2; exit 1; }
[[ -d tests/js/node_modules/js-tiktoken ]] || (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
ranks=$build/ranks
[[ -f $ranks/cl100k_base.tiktoken.json ]] || node tools/export_ranks.mjs "$ranks" 2>/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target=$((10 * 1000 * 1000))

shared=${NC_SHARED_DIR:-$(pwd)/../shared}
pre=$shared/data/pretrain
src="committed test corpus (tests/data/tok, repeated)"
if [[ -d $pre ]] && ls "$pre"/*.gz >/dev/null 2>&1; then
  src="$pre: $(cd "$pre" && ls *.gz | tr '\n' ' ')"
  # JSONL -> the text fields, one document after another; plain text as is.
  for f in "$pre"/*.gz; do
    case $f in
      *.jsonl.gz) gzip -dc "$f" | node -e '
        const rl = require("readline").createInterface({ input: process.stdin });
        rl.on("line", (l) => { if (l.trim()) process.stdout.write(JSON.parse(l).text + "\n\n"); });' ;;
      *) gzip -dc "$f" ;;
    esac
  done > "$work/all.txt"
else
  cat tests/data/tok/*.txt > "$work/all.txt"
fi
# Repeat or cut to ~10 MB.
: > "$work/bench.txt"
while (( $(stat -c %s "$work/bench.txt") < target )); do cat "$work/all.txt" >> "$work/bench.txt"; done
head -c $target "$work/bench.txt" > "$work/b.txt"
# Do not cut inside a UTF-8 character: drop a trailing partial sequence.
node -e 'const fs=require("fs");const b=fs.readFileSync(process.argv[1]);let n=b.length;let k=n-1;while(k>=0&&(b[k]&0xC0)==0x80)k--;if(k>=0&&b[k]>=0xC0){const need=b[k]>=0xF0?4:b[k]>=0xE0?3:2;if(n-k<need)n=k;}fs.writeFileSync(process.argv[1],b.subarray(0,n));' "$work/b.txt"
mv "$work/b.txt" "$work/bench.txt"
bytes=$(stat -c %s "$work/bench.txt")

echo "Tokenizer benchmark, $(date -u +%Y-%m-%d), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "text: $bytes bytes from $src"
printf '%-12s %-28s %10s %9s %9s\n' ranks encoder tokens seconds MB/s
for enc in cl100k_base gpt2; do
  for threads in 1 0; do
    label="nanochat-c ($([[ $threads == 1 ]] && echo 1 thread || echo "$(nproc) threads"))"
    out=$("$nc" tok encode -t $enc --ranks-dir "$ranks" --threads $threads --count --time "$work/bench.txt" 2>&1 >"$work/count")
    secs=$(sed -n 's/.* in \([0-9.]*\) s: .*/\1/p' <<<"$out")
    mbs=$(sed -n 's/.*s: \([0-9.]*\) MB\/s/\1/p' <<<"$out")
    printf '%-12s %-28s %10s %9s %9s\n' $enc "$label" "$(cat "$work/count")" "$secs" "$mbs"
    ours=$(cat "$work/count")
  done
  read -r jt js jm < <(node bench/tok_bench.mjs "$work/bench.txt" $enc)
  printf '%-12s %-28s %10s %9s %9s\n' $enc "js-tiktoken $(node -p 'require("./tests/js/package-lock.json").packages["node_modules/js-tiktoken"].version')" "$jt" "$js" "$jm"
  [[ $jt == "$ours" ]] || echo "  WARNING: token counts differ ($ours vs $jt)"
done

t0=$(date +%s.%N)
"$nc" tok train --input "$work/bench.txt" --vocab-size 32768 -o "$work/tok.tiktoken" -q
t1=$(date +%s.%N)
printf 'training: vocab 32768 on %s bytes: %.2f s (%s threads)\n' "$bytes" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$(nproc)"
"$nc" tok eval -t "$work/tok.tiktoken" --ranks-dir "$ranks"
