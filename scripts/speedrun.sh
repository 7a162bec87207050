#!/usr/bin/env bash
# The main job: train a small chat model from raw text on this machine, in
# about 30 minutes on 2 CPU cores, as nanochat's speedrun does on 8 GPUs:
#   setup -> build -> default corpus (Debian packages) -> tokenizer ->
#   pretraining -> synthetic chat data -> midtraining -> SFT -> report -> chat.
# Everything goes under $NANOCHAT_BASE_DIR (default: out/speedrun).
# Knobs (environment): SPEC (models/specs/d4.xml), BASE_MINUTES (12),
# MID_MINUTES (3), SFT_MINUTES (3), THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DNC_BUILD_TESTS=ON >/dev/null
cmake --build build -j"$(nproc)" --target nanochat >/dev/null
nc=build/cli/nanochat

BASE=${NANOCHAT_BASE_DIR:-$PWD/out/speedrun}
SPEC=${SPEC:-models/specs/d4.xml}
BASE_MINUTES=${BASE_MINUTES:-12}
MID_MINUTES=${MID_MINUTES:-3}
SFT_MINUTES=${SFT_MINUTES:-3}
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")
tag=$(basename "$SPEC" .xml)
mkdir -p "$BASE/tokenizer"
step() { printf '\n== [%4ds] %s\n' $(( $(date +%s) - start )) "$*"; }

step "default corpus: Bible (KJV), GCIDE, Jargon File, fortunes -> $BASE/corpus"
$nc data corpus -o "$BASE/corpus"
shards=("$BASE"/corpus/shard_*.jsonl.gz)
train_shards=("${shards[@]:0:${#shards[@]}-1}")

step "tokenizer: BPE, vocab 8192 (the spec's), on the training shards"
$nc tok train -q -i "${train_shards[@]}" --vocab-size 8192 -o "$BASE/tokenizer/tokenizer.tiktoken"

step "pretraining $SPEC for $BASE_MINUTES minutes"
$nc base-train --spec "$SPEC" --data-dir "$BASE/corpus" --out "$BASE" --model-tag "$tag" "${threads[@]}" \
  --time-budget $((BASE_MINUTES * 60)) --total-batch-size 4096 --device-batch-size 8 --seq 256 \
  --eval-every 100 --save-every 100 --overwrite 2>&1 | tee "$BASE/base-train.log" | grep --line-buffered -v '^  sample' || true
grep -q '"stage":"base"' "$BASE/base-train.log" || { echo "speedrun: base-train failed (see $BASE/base-train.log)"; exit 1; }

step "synthetic conversations: identity, spelling, arithmetic with the calculator"
mkdir -p "$BASE/chat"
$nc data synth identity -n 2000 -o "$BASE/chat/identity.jsonl" --seed 1
$nc data synth simplespelling -n 2000 -o "$BASE/chat/simplespelling.jsonl" --seed 2
$nc data synth spellingbee -n 2000 -o "$BASE/chat/spellingbee.jsonl" --seed 3
$nc data synth arithmetic -n 2000 -o "$BASE/chat/arithmetic.jsonl" --seed 4
$nc data synth identity -n 100 -o "$BASE/chat/val.jsonl" --seed 99
chat_data=(--data "$BASE/chat/identity.jsonl:2" --data "$BASE/chat/simplespelling.jsonl" \
           --data "$BASE/chat/spellingbee.jsonl" --data "$BASE/chat/arithmetic.jsonl" --val "$BASE/chat/val.jsonl")

step "midtraining for $MID_MINUTES minutes"
$nc mid-train "${chat_data[@]}" --out "$BASE" --model-tag "$tag" "${threads[@]}" \
  --time-budget $((MID_MINUTES * 60)) --device-batch-size 8 --seq 256 --eval-every 100 --overwrite 2>&1 | grep --line-buffered -v '^  sample'

step "SFT for $SFT_MINUTES minutes"
$nc sft "${chat_data[@]}" --out "$BASE" --model-tag "$tag" "${threads[@]}" \
  --time-budget $((SFT_MINUTES * 60)) --device-batch-size 8 --seq 256 --eval-every 100 --overwrite 2>&1 | grep --line-buffered -v '^  sample'

step "report"
$nc report --out "$BASE" --model-tag "$tag"

ckpt="$BASE/chatsft_checkpoints/$tag"
step "a sample chat"
$nc chat --ckpt "$ckpt" -t 0 -p "Who are you?" "${threads[@]}" || true

base_json=$(grep '"stage":"base"' "$BASE/base-train.log" | tail -1)
val_bpb=$(sed -n 's/.*"val_bpb":\([0-9.]*\).*/\1/p' <<<"$base_json")
uni_bpb=$(sed -n 's/.*"unigram_bpb":\([0-9.]*\).*/\1/p' <<<"$base_json")
elapsed=$(( $(date +%s) - start ))
printf '\nspeedrun done in %dm%02ds.\n' $((elapsed / 60)) $((elapsed % 60))
echo "base model: validation bits per byte $val_bpb (a unigram model of the same data: $uni_bpb)"
echo "model:  $ckpt"
echo "report: $BASE/report.md"
echo "chat:   $nc chat --ckpt $ckpt"
echo "serve:  $nc serve --ckpt $ckpt --port 8000   (then open http://localhost:8000/)"
