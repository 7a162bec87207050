#!/usr/bin/env node
// Load test of `nanochat serve`: TOTAL requests (default 200) from CLIENTS
// concurrent clients (default 16) with the openai client, half streaming,
// half not, some with n = 2. Every request must succeed; afterwards the
// server must be idle (no busy slot, nothing queued or in flight).
// Usage: node tests/js/serve_load.mjs BASE_URL [TOTAL] [CLIENTS]
import assert from "node:assert/strict";
import OpenAI from "openai";

const [base, totalArg, clientsArg] = process.argv.slice(2);
if (!base) {
  console.error("usage: node serve_load.mjs BASE_URL [TOTAL] [CLIENTS]");
  process.exit(2);
}
const total = Number(totalArg ?? 200), clients = Number(clientsArg ?? 16);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: "none", maxRetries: 0, timeout: 300000 });
const model = (await client.models.list()).data[0].id;
let next = 0, done = 0, tokens = 0;
const errors = [];
const t0 = Date.now();

async function one(i) {
  const req = { model, messages: [{ role: "user", content: `Request number ${i}: say something.` }],
                max_tokens: 8 + (i % 9), seed: i, temperature: 0.9, n: i % 10 === 0 ? 2 : 1 };
  if (i % 2) {
    const s = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let finished = 0, usage = null;
    for await (const c of s) {
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) if (ch.finish_reason) finished++;
    }
    assert.equal(finished, req.n, `request ${i}: every choice finishes`);
    assert.ok(usage && usage.completion_tokens >= req.n, `request ${i}: usage chunk`);
    tokens += usage.completion_tokens;
  } else {
    const r = await client.chat.completions.create(req);
    assert.equal(r.choices.length, req.n);
    assert.ok(r.choices.every((c) => c.finish_reason === "stop" || c.finish_reason === "length"));
    tokens += r.usage.completion_tokens;
  }
}

async function worker() {
  while (next < total) {
    const i = next++;
    try {
      await one(i);
      done++;
    } catch (e) {
      errors.push(`request ${i}: ${e.message}`);
    }
  }
}
await Promise.all(Array.from({ length: clients }, worker));
const secs = (Date.now() - t0) / 1000;
console.log(`${done}/${total} requests from ${clients} clients in ${secs.toFixed(2)} s, ${tokens} tokens ` +
            `(${(tokens / secs).toFixed(0)} tokens/s), ${errors.length} errors`);
for (const e of errors.slice(0, 10)) console.log("  " + e);
// a finished stream's bookkeeping ends just after its last byte: allow 3 s
let h, idle = false;
for (let t = 0; t < 300 && !idle; t++) {
  if (t) await new Promise((r) => setTimeout(r, 10));
  h = await (await fetch(base + "/health")).json();
  idle = h.active === 0 && h.queued === 0 && h.in_flight === 0;
}
console.log("health after:", JSON.stringify(h));
if (!idle) console.log("FAIL: server not idle after the load");
process.exit(errors.length || done !== total || !idle ? 1 : 0);
