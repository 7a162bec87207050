#!/usr/bin/env node
// Exports the GPT-2, cl100k_base and o200k_base ranks that the npm package
// js-tiktoken ships (in a compressed form inside ranks/*.js) as tiktoken rank
// files plus nanochat-c sidecars (docs/tokenizer.md):
//   OUTDIR/gpt2.tiktoken        OUTDIR/gpt2.tiktoken.json
//   OUTDIR/cl100k_base.tiktoken OUTDIR/cl100k_base.tiktoken.json
//   OUTDIR/o200k_base.tiktoken  OUTDIR/o200k_base.tiktoken.json
// Usage: node tools/export_ranks.mjs [OUTDIR]   (default build/ranks)
// js-tiktoken is resolved from tests/js (run `npm ci` there first).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.resolve(process.argv[2] ?? path.join(root, "build", "ranks"));
const require = createRequire(path.join(root, "tests", "js", "package.json"));

// The package's exports hide package.json; read it next to the resolved entry.
function jsTiktokenVersion() {
  let dir = path.dirname(require.resolve("js-tiktoken"));
  while (!fs.existsSync(path.join(dir, "package.json"))) dir = path.dirname(dir);
  return JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
}

const encodings = [
  ["gpt2", "gpt2"],
  ["cl100k_base", "cl100k"],
  ["o200k_base", "o200k"],
];

function writeAtomic(file, text) {
  const tmp = `${file}.tmp.${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

fs.mkdirSync(outDir, { recursive: true });
for (const [name, pattern] of encodings) {
  let ranks;
  try {
    ranks = require(`js-tiktoken/ranks/${name}`);
  } catch (e) {
    console.error(`export_ranks: cannot load js-tiktoken/ranks/${name} (run 'npm ci' in tests/js): ${e.message}`);
    process.exit(1);
  }
  ranks = ranks.default ?? ranks;
  // Compressed form: lines "<ignored> <first rank> tok tok ...", each token
  // base64 with consecutive ranks from the first.
  const lines = [];
  const seen = new Set();
  for (const line of ranks.bpe_ranks.split("\n")) {
    if (!line) continue;
    const [, offsetStr, ...tokens] = line.split(" ");
    const offset = Number.parseInt(offsetStr, 10);
    tokens.forEach((tok, i) => {
      if (seen.has(offset + i)) throw new Error(`${name}: duplicate rank ${offset + i}`);
      seen.add(offset + i);
      lines.push([offset + i, tok]);
    });
  }
  lines.sort((a, b) => a[0] - b[0]);
  const text = lines.map(([r, t]) => `${t} ${r}\n`).join("");
  const sidecar = {
    format: "nanochat-c-tokenizer",
    version: 1,
    pattern,
    special_tokens: ranks.special_tokens,
    source: `js-tiktoken ${jsTiktokenVersion()}`,
  };
  writeAtomic(path.join(outDir, `${name}.tiktoken`), text);
  writeAtomic(path.join(outDir, `${name}.tiktoken.json`), JSON.stringify(sidecar, null, 2) + "\n");
  console.error(`export_ranks: ${name}: ${lines.length} ranks -> ${path.join(outDir, name + ".tiktoken")}`);
}
