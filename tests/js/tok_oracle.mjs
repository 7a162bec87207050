#!/usr/bin/env node
// Tokenizer parity oracle: encodes each FILE (UTF-8 text) with js-tiktoken's
// gpt2, cl100k_base and o200k_base (ordinary text: special-token strings are
// plain text) and writes OUTDIR/<file basename>.<encoding>.ids, the ids
// separated by single spaces on one line. tests/test_tok_parity.c compares.
// Usage: node tests/js/tok_oracle.mjs OUTDIR FILE...
import fs from "node:fs";
import path from "node:path";
import { Tiktoken } from "js-tiktoken/lite";
import gpt2 from "js-tiktoken/ranks/gpt2";
import cl100k_base from "js-tiktoken/ranks/cl100k_base";
import o200k_base from "js-tiktoken/ranks/o200k_base";

const [outDir, ...files] = process.argv.slice(2);
if (!outDir || files.length === 0) {
  console.error("usage: node tok_oracle.mjs OUTDIR FILE...");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const encs = { gpt2: new Tiktoken(gpt2), cl100k_base: new Tiktoken(cl100k_base), o200k_base: new Tiktoken(o200k_base) };
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  for (const [name, enc] of Object.entries(encs)) {
    const ids = enc.encode(text, [], []);
    const out = path.join(outDir, `${path.basename(file)}.${name}.ids`);
    const tmp = `${out}.tmp.${process.pid}`;
    fs.writeFileSync(tmp, ids.join(" ") + "\n");
    fs.renameSync(tmp, out);
  }
}
