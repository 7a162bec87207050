#!/usr/bin/env node
// `nanochat serve` driven by the official openai npm client and raw fetch:
// non-streaming and streaming completions, n > 1, stop, seed
// reproducibility, the usage chunk, errors (malformed JSON, wrong types, huge
// body, unknown model, over-long prompt, bad temperature), /v1/models,
// /health, CORS, and a mid-stream disconnect that must free its slot.
// Usage: node tests/js/serve_api.mjs http://127.0.0.1:PORT
// tests/test_serve_e2e.c starts the server and runs this; exit 0 = pass.
import assert from "node:assert/strict";
import net from "node:net";
import OpenAI from "openai";

const base = process.argv[2];
if (!base) {
  console.error("usage: node serve_api.mjs BASE_URL");
  process.exit(2);
}
// SERVE_TEST_SLACK multiplies the deadlines for freeing a slot (sanitizer builds run slower).
const slack = Number(process.env.SERVE_TEST_SLACK || 1);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: "none", maxRetries: 0, timeout: 120000 });
const user = (content) => [{ role: "user", content }];
let failures = 0;
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}
async function post(body, headers = {}) {
  const res = await fetch(base + "/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* checked by the caller */ }
  return { status: res.status, headers: res.headers, text, json };
}
function assertError(r, status, param, needle, code) {
  assert.equal(r.status, status, `status for ${r.text}`);
  assert.ok(r.json && r.json.error, `error object in ${r.text}`);
  const e = r.json.error;
  assert.deepEqual(Object.keys(e).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof e.message, "string");
  assert.equal(typeof e.type, "string");
  if (param !== undefined) assert.equal(e.param, param);
  if (code !== undefined) assert.equal(e.code, code);
  if (needle) assert.ok(e.message.includes(needle), `'${e.message}' lacks '${needle}'`);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
}
async function health() {
  return (await fetch(base + "/health")).json();
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const models = await client.models.list();
const model = models.data[0].id;

await test("GET /v1/models and /v1/models/{id}", async () => {
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, "model");
  assert.equal(models.data[0].owned_by, "nanochat");
  assert.equal(typeof models.data[0].created, "number");
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  await assert.rejects(client.models.retrieve("gpt-4o"), (e) => e.status === 404);
});

await test("GET /health", async () => {
  const h = await health();
  assert.equal(h.status, "ok");
  assert.equal(h.ready, true);
  assert.equal(h.model, model);
  assert.ok(h.slots >= 1);
  assert.equal(h.active, 0);
  assert.equal(h.queued, 0);
  assert.ok(h.context > 0);
});

await test("non-streaming completion", async () => {
  const r = await client.chat.completions.create({ model, messages: user("Hello there"), max_tokens: 12, seed: 1 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, model);
  assert.ok(Math.abs(r.created - Date.now() / 1000) < 600);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, "assistant");
  assert.equal(typeof c.message.content, "string");
  assert.ok(["stop", "length"].includes(c.finish_reason));
  assert.ok(r.usage.prompt_tokens >= 5, "bos user_start ... user_end assistant_start");
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
  if (c.finish_reason === "length") assert.equal(r.usage.completion_tokens, 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

await test("seed reproducibility (same seed -> same text; other seeds differ)", async () => {
  const req = { model, messages: user("Tell me a story"), max_tokens: 40, temperature: 1.0, seed: 1234 };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.equal(a.usage.completion_tokens, b.usage.completion_tokens);
  const texts = new Set();
  for (const seed of [1, 2, 3, 4]) texts.add((await client.chat.completions.create({ ...req, seed })).choices[0].message.content);
  assert.ok(texts.size >= 2, "four seeds gave one text");
});

await test("streaming equals non-streaming for the same seed; role first; usage chunk; [DONE]", async () => {
  const req = { model, messages: user("Count to five"), max_tokens: 30, seed: 77 };
  const full = await client.chat.completions.create(req);
  const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = "", first = true, finish = null, usage = null, n = 0, id = null;
  for await (const chunk of stream) {
    n++;
    assert.equal(chunk.object, "chat.completion.chunk");
    assert.equal(chunk.model, model);
    id ??= chunk.id;
    assert.equal(chunk.id, id, "one id for the whole stream");
    if (chunk.usage) {
      assert.equal(chunk.choices.length, 0, "the usage chunk has no choices");
      usage = chunk.usage;
      continue;
    }
    assert.equal(chunk.usage, null, "usage: null on the other chunks");
    const c = chunk.choices[0];
    if (first) assert.equal(c.delta.role, "assistant", "role comes first");
    else assert.equal(c.delta.role, undefined);
    first = false;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.ok(n >= 3);
  assert.equal(text, full.choices[0].message.content);
  assert.equal(finish, full.choices[0].finish_reason);
  assert.deepEqual(usage, full.usage);
});

await test("raw SSE: data lines, ends with data: [DONE]", async () => {
  const r = await post({ model, messages: user("hi"), max_tokens: 5, stream: true });
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /^text\/event-stream/);
  const events = r.text.split("\n\n").filter((s) => s.length);
  assert.ok(events.every((e) => e.startsWith("data: ")));
  assert.equal(events[events.length - 1], "data: [DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
  assert.ok(chunks.every((c) => !("usage" in c)), "no usage fields unless include_usage");
  assert.ok(chunks[chunks.length - 1].choices[0].finish_reason);
});

await test("n > 1: n choices, indexed, each reproducible by seed", async () => {
  const req = { model, messages: user("Say something"), max_tokens: 16, n: 3, seed: 5 };
  const r = await client.chat.completions.create(req);
  assert.equal(r.choices.length, 3);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  const r2 = await client.chat.completions.create(req);
  assert.deepEqual(r2.choices.map((c) => c.message.content), r.choices.map((c) => c.message.content));
  const total = r.choices.length;
  assert.ok(r.usage.completion_tokens >= total && r.usage.completion_tokens <= 16 * total);
  // streaming with n = 2: every index gets its role chunk and a finish_reason
  const s = await client.chat.completions.create({ ...req, n: 2, stream: true });
  const texts = ["", ""], finished = [false, false], roles = [0, 0];
  for await (const chunk of s) {
    const c = chunk.choices[0];
    if (c.delta.role) roles[c.index]++;
    if (c.delta.content) texts[c.index] += c.delta.content;
    if (c.finish_reason) finished[c.index] = true;
  }
  assert.deepEqual(roles, [1, 1]);
  assert.deepEqual(finished, [true, true]);
});

await test("stop: the text ends right before the first stop string", async () => {
  const req = { model, messages: user("Write a long sentence"), max_tokens: 60, temperature: 1.0, seed: 99 };
  // a seed whose text has two ASCII characters after the 4th to cut at (random
  // init weights also emit bytes that are not UTF-8: those show as U+FFFD)
  let base_ = null, at = -1;
  for (let seed = 99; seed < 130 && at < 0; seed++) {
    req.seed = seed;
    base_ = (await client.chat.completions.create(req)).choices[0].message.content;
    for (let i = 4; i + 1 < base_.length && at < 0; i++) if (/^[\x21-\x7e]{2}$/.test(base_.slice(i, i + 2))) at = i;
  }
  assert.ok(at >= 0, "no usable text in 30 seeds");
  const stop = base_.slice(at, at + 2);
  const cut = base_.indexOf(stop);
  const r = await client.chat.completions.create({ ...req, stop });
  assert.equal(r.choices[0].message.content, base_.slice(0, cut));
  assert.equal(r.choices[0].finish_reason, "stop");
  const r2 = await client.chat.completions.create({ ...req, stop: ["\u0001never", stop] });
  assert.equal(r2.choices[0].message.content, base_.slice(0, cut));
  // streaming never emits the stop string either
  const s = await client.chat.completions.create({ ...req, stop, stream: true });
  let text = "";
  for await (const chunk of s) text += chunk.choices[0]?.delta?.content ?? "";
  assert.equal(text, base_.slice(0, cut));
});

await test("multi-turn and system messages", async () => {
  const r = await client.chat.completions.create({
    model, max_tokens: 5, seed: 3,
    messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" },
               { role: "assistant", content: "Hello!" }, { role: "user", content: [{ type: "text", text: "And?" }] }],
  });
  assert.equal(r.choices.length, 1);
  const one = await client.chat.completions.create({ model, max_tokens: 5, seed: 3, messages: user("Hi") });
  assert.ok(r.usage.prompt_tokens > one.usage.prompt_tokens);
});

await test("errors: malformed JSON, wrong types, bad values", async () => {
  assertError(await post("{\"messages\": [", {}), 400, null, "could not parse the JSON");
  assertError(await post("[]"), 400, null, "must be a JSON object");
  assertError(await post({ model }), 400, "messages", "messages is required");
  assertError(await post({ messages: "hi" }), 400, "messages", "must be an array");
  assertError(await post({ messages: [{ role: "user", content: 42 }] }), 400, "messages[0].content", "got integer");
  assertError(await post({ messages: [{ role: "wizard", content: "x" }] }), 400, "messages[0].role", "unsupported role");
  assertError(await post({ messages: user("x"), temperature: "hot" }), 400, "temperature", "must be a number");
  assertError(await post({ messages: user("x"), max_tokens: 1.5 }), 400, "max_tokens", "must be an integer");
  assertError(await post({ messages: user("x"), stream: "yes" }), 400, "stream", "must be a boolean");
  assertError(await post({ messages: user("x"), top_k: 500 }), 400, "top_k", "[0, 200]");
  assertError(await post({ messages: user("x"), max_tokens: 0 }), 400, "max_tokens", "[1, 4096]");
  assertError(await post({ messages: [{ role: "assistant", content: "x" }] }), 400, "messages", "alternate");
  assertError(await post({ messages: user("x".repeat(8001)) }), 400, "messages[0].content", "at most 8000");
  assertError(await post({ messages: new Array(501).fill({ role: "user", content: "x" }) }), 400, "messages",
              "too many messages");
  // the openai client maps them to its error classes
  await assert.rejects(client.chat.completions.create({ model, messages: user("x"), temperature: 2.5 }),
                       (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === "temperature");
  await assert.rejects(client.chat.completions.create({ model: "gpt-4o", messages: user("x") }),
                       (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
});

await test("errors: huge body (413), over-long prompt (context), unknown route (404), wrong method (405)", async () => {
  const huge = JSON.stringify({ model, messages: user("y".repeat(3 << 20)) });
  assertError(await post(huge), 413, null, "larger than");
  const h = await health();
  // 7000 distinct-ish characters are far more tokens than the test model's context
  let words = "";
  for (let i = 0; words.length < 7000; i++) words += `w${(i * 7919) % 10007} `;
  assertError(await post({ model, messages: user(words.slice(0, 7000)) }), 400, "messages", "maximum context length",
              "context_length_exceeded");
  assert.ok(h.context < 7000);
  const nf = await fetch(base + "/v2/nothing");
  assert.equal(nf.status, 404);
  assert.equal((await nf.json()).error.code, "unknown_url");
  const m = await fetch(base + "/v1/chat/completions");
  assert.equal(m.status, 405);
  assert.match(m.headers.get("allow"), /POST/);
  assert.equal((await m.json()).error.code, "method_not_allowed");
  const d = await fetch(base + "/health", { method: "DELETE" });
  assert.equal(d.status, 405);
});

await test("CORS: preflight and Access-Control-Allow-Origin", async () => {
  const pre = await fetch(base + "/v1/chat/completions", {
    method: "OPTIONS",
    headers: { Origin: "http://example.com", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type,authorization" },
  });
  assert.ok(pre.status === 204 || pre.status === 200);
  assert.equal(pre.headers.get("access-control-allow-origin"), "*");
  assert.match(pre.headers.get("access-control-allow-methods"), /POST/);
  assert.match(pre.headers.get("access-control-allow-headers"), /authorization/i);
  const r = await post({ model, messages: user("x"), max_tokens: 2 }, { Origin: "http://example.com" });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.equal((await fetch(base + "/v1/models")).headers.get("access-control-allow-origin"), "*");
});

await test("mid-stream disconnect cancels the request and frees its slot at once", async () => {
  const before = await health();
  const ac = new AbortController();
  // 8 samples of up to 900 tokens: far longer than the test takes unless cancelled
  const res = await fetch(base + "/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" }, signal: ac.signal,
    body: JSON.stringify({ model, messages: user("Go on and on"), stream: true, n: 8, max_tokens: 900, seed: 11 }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  let got = "";
  while (!/"content":"[^"]/.test(got)) got += new TextDecoder().decode((await reader.read()).value);
  let mid = await health();  // the engine counts rows after its first decode step
  for (let t = 0; mid.active === 0 && t < 400; t++) { await sleep(5); mid = await health(); }
  assert.ok(mid.active >= 1, `busy slots while streaming: ${JSON.stringify(mid)}`);
  const t0 = Date.now();
  ac.abort();
  let h;
  for (;;) {
    h = await health();
    if (h.active === 0 && h.queued === 0 && h.in_flight === 0) break;
    assert.ok(Date.now() - t0 < 2000 * slack, `slot still busy ${2 * slack} s after the disconnect: ${JSON.stringify(h)}`);
    await sleep(10);
  }
  assert.equal(h.cancelled, before.cancelled + 1, "counted as cancelled (not finished)");
  console.log(`     slot free ${Date.now() - t0} ms after the disconnect`);
  // and the server still answers
  const r = await client.chat.completions.create({ model, messages: user("still there?"), max_tokens: 3 });
  assert.equal(r.choices.length, 1);
});

await test("a client that gives up on a non-streaming request frees its slot too", async () => {
  const before = await health();
  const ac = new AbortController();
  const pending = fetch(base + "/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" }, signal: ac.signal,
    body: JSON.stringify({ model, messages: user("Go on and on"), n: 8, max_tokens: 900, seed: 12 }),
  }).catch((e) => e);
  let h = await health();
  for (let t = 0; h.active === 0 && t < 500; t++) { await sleep(5); h = await health(); }
  assert.ok(h.active >= 1, `the request never started decoding: ${JSON.stringify(h)}`);
  const t0 = Date.now();
  ac.abort();
  assert.equal((await pending).name, "AbortError");
  for (;;) {
    h = await health();
    if (h.active === 0 && h.queued === 0 && h.in_flight === 0) break;
    assert.ok(Date.now() - t0 < 2000 * slack, `slot still busy ${2 * slack} s after the client left: ${JSON.stringify(h)}`);
    await sleep(10);
  }
  assert.equal(h.cancelled, before.cancelled + 1);
  console.log(`     slot free ${Date.now() - t0} ms after the client left`);
});

await test("a client that stops reading blocks neither the engine nor other clients", async () => {
  const before = await health();
  const body = JSON.stringify({ model, messages: user("Go on and on"), stream: true, n: 8, max_tokens: 400, seed: 13 });
  const url = new URL(base);
  const sock = net.connect(Number(url.port), url.hostname);  // never reads: no 'data' listener
  await new Promise((r) => sock.once("connect", r));
  sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
             `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  let h = await health();
  for (let t = 0; h.active === 0 && t < 400; t++) { await sleep(5); h = await health(); }
  assert.ok(h.active >= 1, JSON.stringify(h));
  const t0 = Date.now();
  const other = await client.chat.completions.create({ model, messages: user("quick one"), max_tokens: 5, seed: 1 });
  assert.equal(other.choices.length, 1);
  // the engine finishes the stalled request's 8 samples although nothing was read
  for (;;) {
    h = await health();
    if (h.active === 0) break;
    assert.ok(Date.now() - t0 < 60000, "the engine waited for a client that does not read");
    await sleep(20);
  }
  sock.destroy();
  for (;;) {
    h = await health();
    if (h.in_flight === 0) break;
    assert.ok(Date.now() - t0 < 62000, `the stalled stream was not dropped: ${JSON.stringify(h)}`);
    await sleep(10);
  }
  assert.equal(h.requests, before.requests + 2);
});

console.log(failures ? `${failures} test(s) failed` : "all serve API tests passed");
process.exit(failures ? 1 : 0);
