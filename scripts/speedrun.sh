#!/usr/bin/env bash
# The main job. Today: set up, build, show the nanochat d4 GPT and its whole
# training step as graphs, dump a sample transformer block in the text IR,
# XML and DOT, and write an initialized d4 checkpoint. Later milestones grow
# this into the full tokenizer -> pretraining -> SFT -> chat pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target nanochat
nc=build/cli/nanochat
model=models/examples/tiny_block.ncir
mkdir -p out
echo "== nanochat graph check models/specs/d4.xml  (the GPT forward graph)"
$nc graph check models/specs/d4.xml
echo "== nanochat graph check models/specs/d4.xml --train  (forward + backward + AdamW/Muon)"
$nc graph check models/specs/d4.xml --train | grep -v '^input\|^output'
echo "== nanochat init --spec models/specs/d4.xml -o out/d4"
$nc init --spec models/specs/d4.xml -o out/d4
echo "== nanochat graph check $model"
$nc graph check "$model"
echo "== nanochat graph dump $model --passes verify,dce"
$nc graph dump "$model" --passes verify,dce --timing
$nc graph dump "$model" --format xml -o out/tiny_block.xml
$nc graph dump "$model" --format dot -o out/tiny_block.dot
echo "== wrote out/tiny_block.xml and out/tiny_block.dot (render: dot -Tsvg out/tiny_block.dot > out/tiny_block.svg)"
