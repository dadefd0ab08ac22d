// What `persist: true` costs a page (BENCHMARKS.md, "Issue 19 in browsers"): the sender's
// main-thread time (Chromium's TaskDuration, over CDP) and wall time per message, with and
// without persist, for messages sent one at a time (each awaited: a batch and a transaction
// per message) and in a burst (many messages per batch); and the bare IndexedDB transaction.
// Not a test: run by hand against a relay of the test bed, with the package installed here:
//   WSRELAY_TESTBED=http://127.0.0.1:PORT node bench-persist.mjs
import { createServer } from "node:http";
import { readFileSync, existsSync } from "node:fs";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const installed = join(here, "node_modules", "wsrelay");
const roots = { "/pkg/": join(installed, "web"), "/persist/": join(installed, "web-persist") };
const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm" };
const server = createServer((request, response) => {
  const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
  if (path === "/blank.html") return response.writeHead(200, { "content-type": "text/html" }).end("<!doctype html>");
  const prefix = Object.keys(roots).find((p) => path.startsWith(p));
  const file = prefix && join(roots[prefix], normalize(path.slice(prefix.length)));
  if (!file || !existsSync(file)) return response.writeHead(404).end();
  response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const relay = await (await fetch(`${process.env.WSRELAY_TESTBED}/url`)).text();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});

// The messages go to a plain client in a page of its own, which ignores them: the sender's
// page only sends.
const sink = `sink-${Math.floor(Math.random() * 1e9)}`;
const sinkPage = await (await browser.newContext()).newPage();
await sinkPage.goto(`${base}/blank.html`);
await sinkPage.evaluate(async ([url, sink]) => {
  const { default: init, WebSocketClient } = await import("/pkg/wsrelay.js");
  await init();
  window.client = new WebSocketClient(url, sink);
  await new Promise((resolve) => window.client.addEventListener("open", resolve, { once: true }));
}, [relay, sink]);

/** Main-thread µs and wall µs per message of `count` messages sent in `mode`, in a fresh page. */
async function measure(persist, mode, count) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/blank.html`);
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const source = `bench-${Math.floor(Math.random() * 1e9)}`;
  await page.evaluate(async ([url, source, persist]) => {
    const { default: init, WebSocketClient } = await import("/persist/persist.js");
    await init();
    window.client = new WebSocketClient(url, source, persist ? { persist: true } : {});
    await new Promise((resolve) => window.client.addEventListener("open", resolve, { once: true }));
  }, [relay, source, persist]);
  const task = async () => (await cdp.send("Performance.getMetrics")).metrics.find((m) => m.name === "TaskDuration").value;
  const before = await task();
  const wall = await page.evaluate(async ([mode, count, source, sink]) => {
    const start = performance.now();
    const payload = { text: "a chat message of about a hundred bytes, typed by someone somewhere" };
    if (mode === "sequential") {
      for (let i = 0; i < count; i++) await window.client.send("bench", payload, { to: sink });
    } else if (mode === "burst") {
      await Promise.all(Array.from({ length: count }, () => window.client.send("bench", payload, { to: sink })));
    } else {
      const db = await new Promise((resolve, reject) => {
        const open = indexedDB.open(`bare-${source}`, 1);
        open.onupgradeneeded = () => open.result.createObjectStore("s", { autoIncrement: true });
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      const line = JSON.stringify({ q: 1, f: JSON.stringify({ type: "bench", id: 1, payload }) }) + "\n";
      for (let i = 0; i < count; i++) {
        await new Promise((resolve, reject) => {
          const transaction = db.transaction("s", "readwrite");
          transaction.objectStore("s").add(line);
          transaction.oncomplete = resolve;
          transaction.onabort = () => reject(transaction.error);
        });
      }
    }
    return performance.now() - start;
  }, [mode, count, source, sink]);
  const cpu = (await task()) - before;
  await context.close();
  return { cpuUs: (cpu * 1e6) / count, wallUs: (wall * 1000) / count };
}

const rows = [];
for (let round = 0; round < 3; round++) {
  for (const [mode, count] of [["sequential", 500], ["burst", 5000]]) {
    for (const persist of [false, true]) {
      const { cpuUs, wallUs } = await measure(persist, mode, count);
      rows.push(`${mode} x${count}, persist ${persist ? "on " : "off"}: main thread ${cpuUs.toFixed(1)} µs, wall ${wallUs.toFixed(1)} µs per message`);
    }
  }
  const { cpuUs, wallUs } = await measure(false, "bare", 500);
  rows.push(`bare IndexedDB transaction (one ~150 B record): main thread ${cpuUs.toFixed(1)} µs, wall ${wallUs.toFixed(1)} µs each`);
}
console.log(rows.join("\n"));
await browser.close();
server.close();
