#!/usr/bin/env node
// The bounded request queue of `nanochat serve`, run against a server started
// with --slots 1 --queue 1: a burst of long requests must get some 503s
// (OpenAI's error shape, code "queue_full", Retry-After) while the admitted
// ones succeed, and the server must be idle and answering afterwards.
// Usage: node tests/js/serve_queue.mjs BASE_URL
import assert from "node:assert/strict";

const base = process.argv[2];
if (!base) {
  console.error("usage: node serve_queue.mjs BASE_URL");
  process.exit(2);
}
const body = (i) => JSON.stringify({ messages: [{ role: "user", content: "Talk for a while." }], n: 1,
                                      max_tokens: 600, seed: i });
let rejected = 0, ok = 0;
for (let round = 0; round < 3 && rejected === 0; round++) {
  const res = await Promise.all(Array.from({ length: 8 }, (_, i) =>
    fetch(base + "/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: body(i) })
      .then(async (r) => ({ status: r.status, retry: r.headers.get("retry-after"), json: await r.json() }))));
  for (const r of res) {
    if (r.status === 200) {
      ok++;
      assert.equal(r.json.object, "chat.completion");
    } else {
      assert.equal(r.status, 503, JSON.stringify(r.json));
      assert.equal(r.json.error.code, "queue_full");
      assert.equal(r.json.error.type, "server_error");
      assert.equal(r.retry, "1");
      rejected++;
    }
  }
}
console.log(`${ok} served, ${rejected} rejected with 503 queue_full`);
assert.ok(rejected > 0, "a burst of 8 long requests never filled a 1-slot, 1-deep queue");
assert.ok(ok >= 1, "the request that got the slot was served");
let h;
for (let t = 0; t < 300; t++) {  // a finished stream's bookkeeping ends just after its last byte
  h = await (await fetch(base + "/health")).json();
  if (h.active + h.queued + h.in_flight === 0) break;
  await new Promise((r) => setTimeout(r, 10));
}
assert.equal(h.active + h.queued + h.in_flight, 0, JSON.stringify(h));
console.log("serve queue test passed");
