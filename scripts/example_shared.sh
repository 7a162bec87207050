#!/usr/bin/env bash
# An example run on the public data kit in ../shared/data (docs/training.md):
# pretraining on Gutenberg books, C4 and Wikipedia text; midtraining and SFT
# on identity and Alpaca-style chats; RL on GSM8K; the report.
# Usage: scripts/example_shared.sh [OUT_DIR]   (default out/example)
# Knobs (environment): SHARED (../shared), BASE_MINUTES (10), MID_MINUTES (2),
# SFT_MINUTES (2), RL_STEPS (4), THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
data=$SHARED/data
[[ -d $data/pretrain ]] || { echo "example: $data/pretrain not found (set SHARED)"; exit 2; }
OUT=${1:-out/example}
nc=${NC:-build/cli/nanochat}
[[ -x $nc ]] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j"$(nproc)" --target nanochat >/dev/null; }
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")
mkdir -p "$OUT/data" "$OUT/chat" "$OUT/tokenizer"
step() { printf '\n== %s\n' "$*"; }

step "data: hold out the last 20 C4 documents, the last 3 Wikipedia articles and the last 50 identity chats"
zcat "$data/pretrain/c4_sample.jsonl.gz" | head -n -20 > "$OUT/data/c4.jsonl"
zcat "$data/pretrain/wikipedia_sample.jsonl.gz" | head -n -3 > "$OUT/data/wikipedia.jsonl"
{ zcat "$data/pretrain/c4_sample.jsonl.gz" | tail -n 20; zcat "$data/pretrain/wikipedia_sample.jsonl.gz" | tail -n 3; } > "$OUT/data/val.jsonl"
train=("$data/pretrain/gutenberg_14books.jsonl.gz" "$OUT/data/c4.jsonl" "$OUT/data/wikipedia.jsonl")
zcat "$data/sft/identity_conversations.jsonl.gz" | head -n -50 > "$OUT/chat/identity.jsonl"
zcat "$data/sft/identity_conversations.jsonl.gz" | tail -n 50 > "$OUT/chat/identity_val.jsonl"
$nc data gsm8k "$data/eval/gsm8k/train.jsonl.gz" -o "$OUT/chat/gsm8k_train.jsonl"
$nc data gsm8k "$data/eval/gsm8k/test.jsonl.gz" -o "$OUT/chat/gsm8k_test.jsonl"

step "tokenizer (vocab 8192)"
$nc tok train -q -i "${train[@]}" --vocab-size 8192 -o "$OUT/tokenizer/tokenizer.tiktoken"

step "pretraining d4 for ${BASE_MINUTES:-10} minutes"
args=()
for f in "${train[@]}"; do args+=(--data "$f"); done
$nc base-train --spec models/specs/d4.xml "${args[@]}" --val "$OUT/data/val.jsonl" --out "$OUT" "${threads[@]}" \
  --time-budget $(( ${BASE_MINUTES:-10} * 60 )) --total-batch-size 4096 --eval-every 100 --save-every 200 --overwrite -q

chat=(--data "$OUT/chat/identity.jsonl" --data "$data/sft/alpaca_libre.jsonl.gz" --data "$OUT/chat/gsm8k_train.jsonl"
      --val "$OUT/chat/identity_val.jsonl")
step "midtraining for ${MID_MINUTES:-2} minutes"
$nc mid-train "${chat[@]}" --out "$OUT" "${threads[@]}" --time-budget $(( ${MID_MINUTES:-2} * 60 )) --overwrite -q
step "SFT for ${SFT_MINUTES:-2} minutes"
$nc sft "${chat[@]}" --out "$OUT" "${threads[@]}" --time-budget $(( ${SFT_MINUTES:-2} * 60 )) --overwrite -q

if [[ "${RL_STEPS:-4}" -gt 0 ]] && $nc rl --help >/dev/null 2>&1; then
  step "RL on GSM8K for ${RL_STEPS:-4} steps"
  $nc rl --data "$OUT/chat/gsm8k_train.jsonl" --val "$OUT/chat/gsm8k_test.jsonl" --out "$OUT" "${threads[@]}" \
    --num-iterations "${RL_STEPS:-4}" --examples-per-step 4 --samples 4 --max-new-tokens 64 --eval-every 0 \
    --eval-examples 20 --eval-k 4 --overwrite -q
fi

step "report"
$nc report --out "$OUT"
echo "report: $OUT/report.md"
