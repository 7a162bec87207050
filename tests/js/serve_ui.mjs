#!/usr/bin/env node
// The web UI of `nanochat serve` in headless Chromium (Debian's
// /usr/bin/chromium, driven by puppeteer-core): type a message, see the reply
// stream in and get rendered, the temperature/top-k controls reach the API,
// regenerate a reply, edit a user message (drops what follows), new chat, and
// the page's markdown renderer (HTML escaped first, code, emphasis, lists,
// links; no script injection).
// Usage: node tests/js/serve_ui.mjs BASE_URL [CHROMIUM]
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";

const [base, chromium = "/usr/bin/chromium"] = process.argv.slice(2);
if (!base) {
  console.error("usage: node serve_ui.mjs BASE_URL [CHROMIUM]");
  process.exit(2);
}
const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
});
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
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  const requests = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/v1/chat/completions") && r.method() === "POST") requests.push(JSON.parse(r.postData()));
  });
  await page.goto(base + "/", { waitUntil: "networkidle0" });
  const idle = () => page.waitForFunction(() => document.body.dataset.state === "idle", { timeout: 60000 });
  const texts = (sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));

  await test("page loads with the model name and controls", async () => {
    assert.equal(await page.title(), "nanochat");
    await page.waitForFunction(() => document.getElementById("model").textContent.length > 0, { timeout: 10000 });
    assert.ok(await page.$("#temperature"));
    assert.ok(await page.$("#topk"));
  });

  await test("type a message: the reply streams in and is rendered", async () => {
    // count how many times the reply's body changes while streaming
    await page.evaluate(() => {
      window.__paints = 0;
      new MutationObserver(() => {
        const b = document.querySelector(".msg.assistant.streaming .body");
        if (b && b.textContent.length) window.__paints++;
      }).observe(document.getElementById("chat"), { subtree: true, childList: true, characterData: true });
    });
    await page.click("#temperature", { clickCount: 3 });
    await page.type("#temperature", "0.3");
    await page.click("#topk", { clickCount: 3 });
    await page.type("#topk", "7");
    await page.type("#input", "Hello, who are you?");
    // Throttle the page's downloads so that the reply's events arrive over several frames even
    // on a fast machine (a whole reply within one frame would leave nothing to see streaming).
    await page.emulateNetworkConditions({ offline: false, download: 16 * 1024, upload: 1 << 20, latency: 0 });
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.body.dataset.state === "streaming", { timeout: 10000 });
    await idle();
    await page.emulateNetworkConditions(null);
    assert.deepEqual(await texts(".msg.user"), ["Hello, who are you?"]);
    const replies = await texts(".msg.assistant .body");
    assert.equal(replies.length, 1);
    assert.ok(replies[0].length > 0, "a non-empty reply");
    assert.ok((await page.evaluate(() => window.__paints)) >= 1, "the reply was painted while streaming");
    const last = requests[requests.length - 1];
    assert.equal(last.stream, true);
    assert.equal(last.temperature, 0.3);
    assert.equal(last.top_k, 7);
    assert.deepEqual(last.messages, [{ role: "user", content: "Hello, who are you?" }]);
  });

  await test("regenerate replaces the reply", async () => {
    const n0 = requests.length;
    await page.click(".msg.assistant .regen");
    // the click handler sets data-state=streaming synchronously, so idle() waits for the new reply
    await idle();
    assert.equal(requests.length, n0 + 1);
    assert.deepEqual(requests[n0].messages, [{ role: "user", content: "Hello, who are you?" }]);
    assert.equal((await texts(".msg.assistant")).length, 1);
    assert.equal((await texts(".msg.user")).length, 1);
  });

  await test("a second turn sends the history; editing the first message drops what follows", async () => {
    await page.type("#input", "Tell me more");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelectorAll(".msg.user").length === 2, { timeout: 10000 });
    await idle();
    assert.equal((await texts(".msg.assistant")).length, 2);
    const turn2 = requests[requests.length - 1].messages;
    assert.equal(turn2.length, 3);
    assert.deepEqual(turn2.map((m) => m.role), ["user", "assistant", "user"]);
    const n0 = requests.length;
    await page.click('.msg.user[data-index="0"]');
    await page.waitForSelector(".msg.user textarea");
    await page.$eval(".msg.user textarea", (t) => { t.value = "Edited question"; });
    await page.click(".msg.user .save");
    await page.waitForFunction((n) => document.body.dataset.state === "idle" && document.querySelectorAll(".msg.assistant").length === 1,
                               { timeout: 60000 }, n0);
    assert.deepEqual(await texts(".msg.user"), ["Edited question"]);
    assert.deepEqual(requests[n0].messages, [{ role: "user", content: "Edited question" }]);
  });

  await test("new chat clears the conversation", async () => {
    await page.click("#new-chat");
    assert.equal((await page.$$(".msg")).length, 0);
    await page.type("#input", "Fresh start");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelectorAll(".msg.user").length === 1, { timeout: 10000 });
    await idle();
    assert.deepEqual(requests[requests.length - 1].messages, [{ role: "user", content: "Fresh start" }]);
  });

  await test("Stop aborts the stream and the server frees the request", async () => {
    const health = () => page.evaluate(async () => (await fetch("/health")).json());
    const before = await health();
    await page.type("#input", "A long answer please");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => {
      const b = document.querySelector(".msg.assistant.streaming .body");
      return (b && b.textContent.length > 0) || document.body.dataset.state === "idle";
    }, { timeout: 30000 });
    const stillStreaming = await page.evaluate(() => document.body.dataset.state === "streaming");
    await page.click("#stop").catch(() => {});  // disabled when the reply already ended
    await idle();
    let h = await health();
    for (let t = 0; t < 200 && h.in_flight + h.active + h.queued > 0; t++) {
      await new Promise((r) => setTimeout(r, 10));
      h = await health();
    }
    assert.equal(h.in_flight + h.active + h.queued, 0, JSON.stringify(h));
    if (stillStreaming) assert.ok(h.cancelled >= before.cancelled + 1 || h.requests === before.requests + 1);
    console.log(`     stopped mid-stream: ${stillStreaming}, cancelled ${before.cancelled} -> ${h.cancelled}`);
  });

  await test("markdown renderer: escapes HTML, renders code, emphasis, lists, safe links", async () => {
    const html = await page.evaluate(() => markdown(
      "# Title\nSome **bold** and *it* and `a<b>`\n\n- one\n- two\n\n1. first\n2. second\n\n```js\nif (a < b) alert(1)\n```\n" +
      "<script>alert(1)</script> <img src=x onerror=alert(1)>\n[ok](https://example.com/a?b=1&c=2) [bad](javascript:alert(1))"));
    assert.ok(html.includes("<h3>Title</h3>"), html);
    assert.ok(html.includes("<strong>bold</strong>"));
    assert.ok(html.includes("<em>it</em>"));
    assert.ok(html.includes("<code>a&lt;b&gt;</code>"));
    assert.ok(html.includes("<ul><li>one</li><li>two</li></ul>"));
    assert.ok(html.includes("<ol><li>first</li><li>second</li></ol>"));
    assert.ok(html.includes('<pre><code class="language-js">if (a &lt; b) alert(1)</code></pre>'));
    assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert.ok(html.includes("&lt;img src=x onerror=alert(1)&gt;"));
    assert.ok(html.includes('<a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">ok</a>'));
    assert.ok(!html.includes('href="javascript'), html);
    // rendered into the page it adds no elements beyond the safe set
    const tags = await page.evaluate((h) => {
      const d = document.createElement("div");
      d.innerHTML = h;
      return [...d.querySelectorAll("*")].map((e) => e.tagName.toLowerCase());
    }, html);
    assert.ok(tags.every((t) => ["h3", "p", "strong", "em", "code", "ul", "ol", "li", "pre", "a", "br"].includes(t)), tags.join(","));
  });

  await test("no errors in the page", async () => {
    assert.deepEqual(pageErrors, []);
  });
} finally {
  await browser.close();
}
console.log(failures ? `${failures} UI test(s) failed` : "all web UI tests passed");
process.exit(failures ? 1 : 0);
