// llama.cpp f32 batch-1 decode through node-llama-cpp's prebuilt CPU binary (issue 8).
// Usage: node decode.mjs MODEL.gguf [--threads 2] [--tokens 128] [--prompt 32] [--reps 3] [--ctx 256]
// Loads the GGUF on the CPU (no GPU, no build, no download), evaluates a prompt of random
// token ids, then generates greedily: the clock starts when the first generated token arrives
// and stops after --tokens more (each one decode step of the model plus greedy sampling and
// node-llama-cpp's JS<->native hop). One warm-up pass, then --reps timed ones; prints each,
// the median tokens/s and one JSON line.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {statSync} from "node:fs";

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf("--" + name); return i >= 0 ? Number(args[i + 1]) : def; };
const modelPath = args.find((a, i) => !a.startsWith("--") && (i === 0 || !args[i - 1].startsWith("--")));
if (!modelPath) { console.error("usage: node decode.mjs MODEL.gguf [--threads 2] [--tokens 128] [--prompt 32] [--reps 3] [--ctx 256]"); process.exit(2); }
const threads = opt("threads", 2), N = opt("tokens", 128), P = opt("prompt", 32), reps = opt("reps", 3), ctxSize = opt("ctx", 256);

const llama = await getLlama({gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true,
                              progressLogs: false, maxThreads: threads, logLevel: LlamaLogLevel.warn});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({contextSize: ctxSize, batchSize: Math.min(512, ctxSize), threads: {ideal: threads, min: threads}});
const seq = context.getSequence();
let seed = 12345;
const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) % 8000;
const prompt = Array.from({length: P}, () => rnd());

async function once() {
  await seq.clearHistory();
  let n = 0, t0 = 0, t1 = 0;
  const tStart = performance.now();
  let tFirst = 0;
  for await (const tok of seq.evaluate(prompt, {temperature: 0})) {
    if (n === 0) { tFirst = performance.now(); t0 = tFirst; }
    n++;
    if (n === N + 1) { t1 = performance.now(); break; }
  }
  if (n !== N + 1) throw new Error(`generation stopped after ${n} tokens`);
  return {tps: N / ((t1 - t0) / 1000), ttft_ms: tFirst - tStart};
}

await once(); // warm-up (pages the mmapped weights in)
const runs = [];
for (let r = 0; r < reps; r++) {
  const x = await once();
  runs.push(x);
  console.log(`run ${r + 1}: ${x.tps.toFixed(1)} tok/s (${N} tokens after the first; prompt ${P} tokens, first token ${x.ttft_ms.toFixed(1)} ms)`);
}
const sorted = runs.map(r => r.tps).sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)], best = sorted[sorted.length - 1];
console.log(`llama.cpp f32 batch-1 decode ${median.toFixed(1)} tok/s (median of ${reps}, best ${best.toFixed(1)}; ${threads} threads, ctx ${context.contextSize}, ${llama.buildType} ${llama.gpu === false ? "CPU" : llama.gpu} build, flash attention ${context.flashAttention})`);
console.log(JSON.stringify({bench: "llama.cpp-f32-decode", model: modelPath, model_bytes: statSync(modelPath).size,
  threads, tokens: N, prompt: P, ctx: context.contextSize,
  tok_s_median: +median.toFixed(2), tok_s_best: +best.toFixed(2), tok_s_runs: runs.map(r => +r.tps.toFixed(2)),
  ttft_ms: runs.map(r => +r.ttft_ms.toFixed(2)), node_llama_cpp: "3.22.1", build: llama.buildType,
  system_info: llama.systemInfo.trim()}));
await context.dispose(); await model.dispose(); await llama.dispose();
