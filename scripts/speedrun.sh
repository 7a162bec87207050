#!/usr/bin/env bash
# The main job. Today: set up, build, show the nanochat d4 GPT and its whole
# training step as graphs, write an initialized d4 checkpoint, run a few
# training steps compiled to native code, and dump a sample transformer block
# in the text IR, XML and DOT. Later milestones grow
# this into the full tokenizer -> pretraining -> SFT -> chat pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNC_BUILD_TESTS=ON >/dev/null
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
echo "== nanochat bench train --spec models/specs/d4.xml --steps 3  (the training step, JIT-compiled)"
$nc bench train --spec models/specs/d4.xml --steps 3
echo "== nanochat graph check $model"
$nc graph check "$model"
echo "== nanochat graph dump $model --passes verify,dce"
$nc graph dump "$model" --passes verify,dce --timing
$nc graph dump "$model" --format xml -o out/tiny_block.xml
$nc graph dump "$model" --format dot -o out/tiny_block.dot
echo "== wrote out/tiny_block.xml and out/tiny_block.dot (render: dot -Tsvg out/tiny_block.dot > out/tiny_block.svg)"
