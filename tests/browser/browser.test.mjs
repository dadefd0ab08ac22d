// The npm package in headless Chromium against the relay of the test bed (WSRELAY_TESTBED):
// - the shared behaviour scenarios (tests/scenarios), on the package's web build as installed;
// - a page bundled with Vite and one bundled with esbuild (app/), each built here and run.
// `cargo xtask test` installs the package from its tarball into node_modules first.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import { readFileSync, rmSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const testbed = process.env.WSRELAY_TESTBED;
assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const dist = join(here, "dist");
const bin = (name) => join(here, "node_modules", ".bin", name);

const SCENARIO_PAGE = `<!doctype html><meta charset="utf-8"><title>scenarios</title>
<script type="module">
  import init, { WebSocketClient } from "/pkg/wsrelay.js";
  import { run } from "/scenarios/runner.mjs";
  window.runScenario = async (index, url, testbed) => {
    await init();
    const { scenarios } = await (await fetch("/scenarios/scenarios.json")).json();
    const control = async (method, path) => (await fetch(testbed + path, { method })).text();
    await run(scenarios[index], { WebSocketClient, url, control, BareWebSocket: WebSocket });
  };
</script>`;

// URL prefix -> folder served under it.
const roots = {
  "/pkg/": join(here, "node_modules", "wsrelay", "web"),
  "/scenarios/": join(here, "..", "scenarios"),
  "/vite/": join(dist, "vite"),
  "/esbuild/": join(dist, "esbuild"),
};
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".wasm": "application/wasm" };

function serve(request, response) {
  const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
  if (path === "/scenarios.html") {
    response.writeHead(200, { "content-type": "text/html" }).end(SCENARIO_PAGE);
    return;
  }
  const prefix = Object.keys(roots).find((p) => path.startsWith(p));
  const rest = prefix && normalize(path.slice(prefix.length) || "index.html");
  const file = rest && !rest.startsWith("..") && join(roots[prefix], rest);
  if (!file || !existsSync(file)) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
  response.end(readFileSync(file));
}

let server;
let base;
let browser;
let relay;

before(async () => {
  rmSync(dist, { recursive: true, force: true });
  // Vite: the package and its .wasm as they are.
  execFileSync(bin("vite"), ["build", join(here, "app", "vite"), "--outDir", join(dist, "vite"), "--emptyOutDir", "--base", "./", "--logLevel", "warn"], { stdio: "inherit" });
  // esbuild: the .wasm through the file loader (the package README says so).
  execFileSync(bin("esbuild"), [join(here, "app", "esbuild", "main.js"), "--bundle", "--format=esm", "--loader:.wasm=file", `--outdir=${join(dist, "esbuild")}`], { stdio: "inherit" });
  copyFileSync(join(here, "app", "esbuild", "index.html"), join(dist, "esbuild", "index.html"));
  server = createServer(serve);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
  relay = await (await fetch(`${testbed}/url`)).text();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** Opens `path` in a new page; the page's console errors are kept for the assertion message. */
async function open(path) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  await page.goto(base + path);
  return { page, errors };
}

const { scenarios } = JSON.parse(readFileSync(join(here, "..", "scenarios", "scenarios.json")));
scenarios.forEach((scenario, index) => {
  test(`${scenario.name} (Chromium)`, async () => {
    const { page } = await open("/scenarios.html");
    try {
      await page.waitForFunction(() => typeof window.runScenario === "function");
      await page.evaluate(([i, url, bed]) => window.runScenario(i, url, bed), [index, relay, testbed]);
    } finally {
      await page.close();
    }
  });
});

for (const bundler of ["vite", "esbuild"]) {
  test(`a page bundled with ${bundler} runs in Chromium against the relay`, async () => {
    const { page, errors } = await open(`/${bundler}/index.html?relay=${encodeURIComponent(relay)}`);
    try {
      await page.waitForFunction(() => window.result !== undefined, null, { timeout: 15_000 });
      const result = await page.evaluate(() => window.result);
      assert.ok(result.ok, `${result.error}; page errors: ${errors.join("; ")}`);
      assert.deepEqual(result.value.answer, { status: "received", echo: "Hi" });
      assert.equal(result.value.online, true);
      assert.ok(result.value.acknowledged >= 1);
    } finally {
      await page.close();
    }
  });
}

test("reconnecting through an outage raises no page error and reports each failed attempt (Chromium)", async () => {
  // A port where nothing listens: every attempt fails (an `error`, then a `close` 1006). The
  // browser's `error` event is a plain Event, not an ErrorEvent: reading it must not throw.
  const closed = createServer();
  await new Promise((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const deadPort = closed.address().port;
  await new Promise((resolve) => closed.close(resolve));
  // Page errors only: Chromium logs every failed WebSocket to the console by itself.
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(base + "/scenarios.html");
  try {
    const result = await page.evaluate(async (url) => {
      const { default: init, WebSocketClient } = await import("/pkg/wsrelay.js");
      await init();
      const client = new WebSocketClient(url, "outage", { minReconnectionDelay: 50, maxReconnectionDelay: 100 });
      const seen = { transport: 0, closes: 0, reconnecting: 0 };
      client.addEventListener("error", (e) => e.detail.code === "transport" && seen.transport++);
      client.addEventListener("close", () => seen.closes++);
      client.addEventListener("reconnecting", () => seen.reconnecting++);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await client.close();
      return seen;
    }, `ws://127.0.0.1:${deadPort}`);
    assert.deepEqual(errors, [], "no page error");
    assert.ok(result.reconnecting >= 3, `attempts: ${JSON.stringify(result)}`);
    assert.ok(result.transport >= 3, `each failed attempt is a transport error: ${JSON.stringify(result)}`);
  } finally {
    await page.close();
  }
});

test("the README's install (npm install --install-links ./pkg) works with the Vite dev server (Chromium)", { timeout: 120_000 }, async () => {
  // A new project next to nothing: the package installed as the README says, then `vite` (dev,
  // not build) serving a page that imports it. A plain `npm install ./pkg` links the folder,
  // and the dev server then refuses the .wasm outside its root (403); --install-links copies.
  const project = join(dist, "vite-dev");
  rmSync(project, { recursive: true, force: true });
  mkdirSync(project, { recursive: true });
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "vite-dev-app", private: true, type: "module" }));
  writeFileSync(join(project, "index.html"), `<!doctype html><meta charset="utf-8"><script type="module" src="./main.js"></script>`);
  copyFileSync(join(here, "app", "page.js"), join(project, "page.js"));
  writeFileSync(join(project, "main.js"), readFileSync(join(here, "app", "vite", "main.js"), "utf8").replace("../page.js", "./page.js"));
  execFileSync("npm", ["install", "--install-links", "--no-audit", "--no-fund", join(here, "..", "..", "pkg")], { cwd: project, stdio: "inherit" });
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  const vite = spawn(bin("vite"), ["--port", String(port), "--strictPort", "--host", "127.0.0.1", "--logLevel", "warn"], { cwd: project, stdio: "inherit" });
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`).catch(() => null))?.ok);
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    try {
      await page.goto(`http://127.0.0.1:${port}/?relay=${encodeURIComponent(relay)}`);
      await page.waitForFunction(() => window.result !== undefined, null, { timeout: 60_000 });
      const result = await page.evaluate(() => window.result);
      assert.ok(result.ok, `${result.error}; page errors: ${errors.join("; ")}`);
      assert.deepEqual(result.value.answer, { status: "received", echo: "Hi" });
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  } finally {
    vite.kill();
  }
});

/** Polls `check` every 100 ms for up to 30 s. */
async function waitFor(check) {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail("timed out");
}
