#!/usr/bin/env node
// Client side of bench/serve_bench.sh: for each concurrency C, C clients each
// send R streaming chat completions (max_tokens T, seeded, temperature 1) to
// a running `nanochat serve`; prints time to first token, per-stream decode
// tokens/s and aggregate completion tokens/s. No dependencies (node's fetch).
// Usage: node bench/serve_bench.mjs BASE_URL LABEL "1,4,16" R T
const [base, label = "?", concArg = "1,4,16", reqArg = "2", tokArg = "64"] = process.argv.slice(2);
const R = Number(reqArg), T = Number(tokArg);

async function one(seed) {
  const t0 = performance.now();
  const res = await fetch(base + "/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "Write a short story about a robot." }],
                           max_tokens: T, seed, temperature: 1.0, stream: true,
                           stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const dec = new TextDecoder();
  let buf = "", first = null, usage = null;
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const j = JSON.parse(ev.slice(6));
      if (j.usage) usage = j.usage;
      if (first === null && j.choices?.[0]?.delta?.content) first = performance.now();
    }
  }
  const t1 = performance.now();
  return { ttft: (first ?? t1) - t0, tokens: usage.completion_tokens, decodeSecs: (t1 - (first ?? t1)) / 1000 };
}

for (const c of concArg.split(",").map(Number)) {
  await one(999);  // warm-up
  const results = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async (_, k) => {
    for (let i = 0; i < R; i++) results.push(await one(1000 * k + i));
  }));
  const secs = (performance.now() - t0) / 1000;
  const tokens = results.reduce((a, r) => a + r.tokens, 0);
  const ttfts = results.map((r) => r.ttft).sort((a, b) => a - b);
  const perStream = results.filter((r) => r.decodeSecs > 0).map((r) => (r.tokens - 1) / r.decodeSecs);
  const mean = (a) => a.reduce((x, y) => x + y, 0) / Math.max(1, a.length);
  console.log(`${label.padEnd(4)} clients=${String(c).padStart(2)}  requests=${String(results.length).padStart(3)}  ` +
              `aggregate=${(tokens / secs).toFixed(1).padStart(8)} tok/s  ` +
              `per-stream decode=${mean(perStream).toFixed(1).padStart(7)} tok/s  ` +
              `TTFT mean=${mean(ttfts).toFixed(1).padStart(7)} ms p50=${ttfts[Math.floor(ttfts.length / 2)].toFixed(1)} ms`);
}
