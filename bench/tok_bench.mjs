#!/usr/bin/env node
// js-tiktoken side of bench/tok_bench.sh: encodes FILE with the named
// encoding and prints "<tokens> <seconds> <MB/s>" (encode time only; the
// file is decoded to a JS string first, as tiktoken users pass strings).
// Usage: node bench/tok_bench.mjs FILE gpt2|cl100k_base
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests", "js", "package.json"));
const { Tiktoken } = require("js-tiktoken/lite");
const [file, name] = process.argv.slice(2);
const ranks = require(`js-tiktoken/ranks/${name}`);
const enc = new Tiktoken(ranks.default ?? ranks);
const buf = fs.readFileSync(file);
const text = buf.toString("utf8");
enc.encode("warm up the regex and maps", [], []);
const t0 = process.hrtime.bigint();
const ids = enc.encode(text, [], []);
const dt = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`${ids.length} ${dt.toFixed(3)} ${(buf.length / 1e6 / dt).toFixed(2)}`);
