// `persist: true` in headless Chromium (the `wsrelay/persist` entry, IndexedDB), against the
// relay of the test bed (WSRELAY_TESTBED). Real components throughout: the package as
// installed, the browser's IndexedDB and Web Locks, the relay. The recipient of every test is
// a page of the package's main entry in another browser. A page error fails the test.
//
// 1. The link down, 5 messages sent, the page reloaded, the link back: each once, in order;
//    the new page reports them `restored`, then `delivered`.
// 2. The sender's browser process killed (SIGKILL) mid-stream, a new one on the same profile:
//    every message acknowledged or restored arrives exactly once, in order.
// 3. Two tabs of one source: one owns the connection (a Web Lock), the other sends and
//    receives through it (BroadcastChannel), then takes over when the owner's page closes;
//    nothing lost or doubled, no 4409 replacement.
// 5. Storage unavailable or failing: an `error` event `storage`, delivery in memory.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { readFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const testbed = process.env.WSRELAY_TESTBED;
assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run"];
const WAIT = 20_000;
const installed = join(here, "node_modules", "wsrelay");
const roots = { "/pkg/": join(installed, "web"), "/persist/": join(installed, "web-persist") };
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };

function serve(request, response) {
  const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
  if (path === "/blank.html") {
    response.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>persist</title>");
    return;
  }
  const prefix = Object.keys(roots).find((p) => path.startsWith(p));
  const rest = prefix && normalize(path.slice(prefix.length));
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
let relay;
let browser;

before(async () => {
  server = createServer(serve);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
  relay = await (await fetch(`${testbed}/url`)).text();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
});

after(async () => {
  await browser?.close();
  server?.close();
});

const unique = (name) => `${name}-${Math.floor(Math.random() * 1e9)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Fails the test on any uncaught error of `page`. */
function watch(page, errors) {
  page.on("pageerror", (error) => errors.push(String(error)));
  return page;
}

/**
 * A recipient page (the main entry, no persist) named `source`: `window.got` fills with the
 * payloads of `n` messages, in arrival order.
 */
async function recipient(source, errors) {
  const page = watch(await browser.newPage(), errors);
  await page.goto(`${base}/blank.html`);
  await page.evaluate(async ([url, source]) => {
    const { default: init, WebSocketClient } = await import("/pkg/wsrelay.js");
    await init();
    window.got = [];
    const client = (window.inboxClient = new WebSocketClient(url, source));
    client.on("n", (payload) => {
      window.got.push(payload);
    });
    await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
  }, [relay, source]);
  return page;
}

/**
 * Starts a `persist: true` client named `source` in `page` (`window.client`), recording its
 * events in `window.seen` (`restored` with the restored ids, `delivered`, `failed`, `error`
 * codes, `open`, `close` codes) and the outcome of each `send` made with `window.sendN`.
 */
async function persistent(page, source, options = {}) {
  await page.evaluate(async ([url, source, options]) => {
    const { default: init, WebSocketClient } = await import("/persist/persist.js");
    await init();
    const seen = (window.seen = { events: [], restored: [], delivered: [], failed: [], errors: [], acked: [], opens: 0, closes: [] });
    const client = (window.client = new WebSocketClient(url, source, { persist: true, minReconnectionDelay: 100, maxReconnectionDelay: 300, ...options }));
    client.addEventListener("restored", (e) => {
      seen.events.push("restored");
      seen.restored.push(...e.detail.messages.map((m) => ({ id: m.id, type: m.type, payload: m.payload })));
    });
    client.addEventListener("delivered", (e) => {
      seen.events.push("delivered");
      seen.delivered.push(e.detail.id);
    });
    client.addEventListener("failed", (e) => seen.failed.push([e.detail.id, e.detail.error.code]));
    client.addEventListener("error", (e) => seen.errors.push(e.detail.code));
    client.addEventListener("open", () => seen.opens++);
    client.addEventListener("close", (e) => seen.closes.push(e.detail.code));
    window.sendN = (n) =>
      client.send("n", n, { to: options.to }).then(
        () => seen.acked.push(n),
        (error) => seen.failed.push([n, error.code]),
      );
  }, [relay, source, options]);
}

/**
 * Runs `body` with a fresh recipient (its source `to`, its page `inbox`), a browser context and
 * the list of page errors, which must stay empty; closes the context and the inbox after.
 */
async function withRecipient(body) {
  const errors = [];
  const to = unique("recipient");
  const inbox = await recipient(to, errors);
  const context = await browser.newContext();
  try {
    await body({ to, inbox, context, errors });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await inbox.close();
  }
}

/**
 * Puts `page`'s WebSockets through a gate: up, they reach the relay; down, they are refused at
 * once. `down()` also cuts the link that is open.
 */
async function gate(page) {
  let up = true;
  let current;
  await page.routeWebSocket(/.*/, (ws) => {
    if (!up) return ws.close({ code: 1011, reason: "link down" });
    current = ws;
    ws.connectToServer();
  });
  return {
    down: async () => {
      up = false;
      await current.close({ code: 1011, reason: "link down" });
    },
    up: () => {
      up = true;
    },
  };
}

/** The `q` lines (queued messages) of `source`'s journal in this page's IndexedDB. */
function journaledQueued(page, source) {
  return page.evaluate((name) => new Promise((resolve, reject) => {
    const open = indexedDB.open(name);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const read = open.result.transaction("journal").objectStore("journal").getAll();
      read.onsuccess = () => {
        open.result.close();
        resolve(read.result.join("").split("\n").filter((line) => line.startsWith('{"q"')).length);
      };
    };
  }), `wsrelay:${source}`);
}

test("persist (1): sent offline, page reloaded, link back: each once, in order, restored then delivered", () => withRecipient(async ({ to, inbox, context, errors }) => {
  const source = unique("sender");
  const page = watch(await context.newPage(), errors);
  const link = await gate(page);
  await page.goto(`${base}/blank.html`);
  await persistent(page, source, { to });
  await page.waitForFunction(() => window.seen.opens === 1, null, { timeout: WAIT });
  await link.down();
  await page.waitForFunction(() => window.client.readyState !== 1, null, { timeout: WAIT });
  await page.evaluate(() => {
    for (let n = 1; n <= 5; n++) window.sendN(n);
  });
  // The reload comes once the five are in the journal (a page closed before its batch is
  // stored loses that batch: PROTOCOL.md section 13, the one window before storage).
  for (let i = 0; (await journaledQueued(page, source)) < 5; i++) {
    assert.ok(i < 100, "the five messages reach the journal");
    await sleep(50);
  }
  await page.reload();
  await persistent(page, source, { to });
  await page.waitForFunction(() => window.seen.events.includes("restored"), null, { timeout: WAIT });
  assert.equal(await page.evaluate(() => window.client.readyState), 0, "still offline");
  link.up();
  await inbox.waitForFunction(() => window.got.length >= 5, null, { timeout: WAIT });
  await page.waitForFunction(() => window.seen.delivered.length === 5, null, { timeout: WAIT });
  await sleep(500); // a copy sent twice would arrive by now
  const seen = await page.evaluate(() => window.seen);
  assert.deepEqual(await inbox.evaluate(() => window.got), [1, 2, 3, 4, 5]);
  assert.deepEqual(seen.restored.map((m) => m.payload), [1, 2, 3, 4, 5]);
  assert.deepEqual(seen.restored.map((m) => m.type), ["n", "n", "n", "n", "n"]);
  assert.deepEqual([...seen.delivered].sort((a, b) => a - b), seen.restored.map((m) => m.id));
  assert.equal(seen.events[0], "restored", "restored comes first");
  assert.deepEqual(seen.failed, []);
  assert.deepEqual(seen.errors, []);
}));

/** Starts Chromium on `profile` with a DevTools port; its process and a Playwright handle. */
async function launchOwn(profile) {
  const child = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const endpoint = await new Promise((resolve, reject) => {
    let text = "";
    child.stderr.on("data", (chunk) => {
      text += chunk;
      const found = /DevTools listening on (ws:\/\/\S+)/.exec(text);
      if (found) resolve(found[1]);
    });
    child.once("exit", (code) => reject(new Error(`chromium exited (${code}): ${text}`)));
  });
  const own = await chromium.connectOverCDP(endpoint);
  return { child, own, context: own.contexts()[0] };
}

test("persist (2): the browser killed (SIGKILL) mid-stream, restarted on its profile: acknowledged or restored, each once, in order", { timeout: 90_000 }, async () => {
  const errors = [];
  const to = unique("recipient");
  const source = unique("sender");
  const inbox = await recipient(to, errors);
  const profile = mkdtempSync(join(tmpdir(), "wsrelay-profile-"));
  let first;
  let second;
  try {
    first = await launchOwn(profile);
    const page = watch(await first.context.newPage(), errors);
    // What the page learns is copied out as it happens: the page dies with its browser.
    const acked = [];
    await page.exposeFunction("reportAck", (n) => acked.push(n));
    await page.goto(`${base}/blank.html`);
    await persistent(page, source, { to });
    await page.waitForFunction(() => window.seen.opens === 1, null, { timeout: WAIT });
    await page.evaluate((to) => {
      let n = 0;
      window.pump = setInterval(() => {
        const sent = ++n;
        window.client.send("n", sent, { to }).then(() => window.reportAck(sent));
      }, 5);
    }, to);
    // Mid-stream: some acknowledged, some surely not yet.
    for (let i = 0; acked.length < 40; i++) {
      assert.ok(i < 400, `acknowledgements: ${acked.length}`);
      await sleep(10);
    }
    first.child.kill("SIGKILL");
    await new Promise((resolve) => first.child.once("exit", resolve));
    const ackedBeforeKill = [...acked];

    second = await launchOwn(profile);
    const again = watch(await second.context.newPage(), errors);
    await again.goto(`${base}/blank.html`);
    await persistent(again, source, { to });
    await again.waitForFunction(() => window.seen.events.includes("restored"), null, { timeout: WAIT });
    const restored = (await again.evaluate(() => window.seen.restored)).map((m) => m.payload);
    await again.waitForFunction(
      () => window.seen.delivered.length + window.seen.failed.length === window.seen.restored.length,
      null,
      { timeout: WAIT },
    );
    await sleep(1000); // a copy sent twice would arrive by now
    const got = await inbox.evaluate(() => window.got);
    const failed = await again.evaluate(() => window.seen.failed);
    console.log(`acknowledged before the kill: ${ackedBeforeKill.length}, restored: ${restored.length}, received: ${got.length}`);
    assert.ok(restored.length > 0, "the kill left messages journaled and not acknowledged");
    assert.deepEqual(failed, [], "restored messages are delivered");
    // A message is journaled before it is sent, and batches are stored in order: what
    // arrived is the first messages, without a gap.
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => i + 1));
    assert.equal(new Set(got).size, got.length, `nothing twice: ${got}`);
    assert.deepEqual(got, [...got].sort((a, b) => a - b), "in order");
    for (const n of [...ackedBeforeKill, ...restored]) assert.ok(got.includes(n), `${n} arrived`);
    assert.ok(ackedBeforeKill.length >= 40);
    assert.deepEqual(errors, []);
  } finally {
    // Both gone before their profile is removed (a live one still writes into it).
    for (const launched of [first, second]) {
      const child = launched?.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
      }
    }
    await inbox.close();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  }
});

test("persist (3): two tabs of one source, both sending: one owns the connection, the other goes through it; nothing lost or doubled, no 4409", () => withRecipient(async ({ to, inbox, context, errors }) => {
  const source = unique("shared");
  const connections = { a: 0, b: 0 };
  const tab = async (name) => {
    const page = watch(await context.newPage(), errors);
    await page.routeWebSocket(/.*/, (ws) => {
      connections[name]++;
      ws.connectToServer();
    });
    await page.goto(`${base}/blank.html`);
    await persistent(page, source, { to });
    await page.evaluate((to) => {
      window.to = to;
      window.notes = [];
      window.client.on("note", (payload) => {
        window.notes.push(payload);
      });
      window.sendAll = (prefix, from, count) => {
        for (let i = from; i < from + count; i++) {
          window.client.send("n", `${prefix}${i}`, { to }).then(() => window.seen.acked.push(`${prefix}${i}`));
        }
      };
    }, to);
    return page;
  };
  const inOrder = (prefix, count) => Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`);
  const a = await tab("a");
  await a.waitForFunction(() => window.seen.opens === 1, null, { timeout: WAIT });
  const b = await tab("b");
  await a.evaluate(() => window.sendAll("a", 1, 10));
  await b.evaluate(() => window.sendAll("b", 1, 10));
  // The second tab's messages go out through the first tab's connection, and are settled
  // back to it.
  await inbox.waitForFunction(() => window.got.length >= 20, null, { timeout: WAIT });
  await b.waitForFunction(() => window.seen.acked.length === 10, null, { timeout: WAIT });
  assert.equal(await b.evaluate(() => window.client.owner), false);
  assert.equal(await b.evaluate(() => window.client.readyState), 1, "the owner's connection is open");
  assert.equal(connections.b, 0, "the second tab opened no connection of its own");
  // What the source receives reaches both tabs' handlers.
  await inbox.evaluate((source) => window.inboxClient.send("note", "hello tabs", { to: source }), source);
  await a.waitForFunction(() => window.notes.length === 1, null, { timeout: WAIT });
  await b.waitForFunction(() => window.notes.length === 1, null, { timeout: WAIT });
  // The owner's page closes: the other tab takes the lock and the journal, and connects.
  await a.close({ runBeforeUnload: false });
  await b.waitForFunction(() => window.client.owner && window.seen.opens === 1, null, { timeout: WAIT });
  await b.evaluate(() => window.sendAll("b", 11, 5));
  await inbox.waitForFunction(() => window.got.length >= 25, null, { timeout: WAIT });
  await b.waitForFunction(() => window.client.queued === 0, null, { timeout: WAIT });
  await sleep(500); // a copy sent twice would arrive by now
  const got = await inbox.evaluate(() => window.got);
  assert.deepEqual(got.filter((p) => p.startsWith("a")), inOrder("a", 10));
  assert.deepEqual(got.filter((p) => p.startsWith("b")), inOrder("b", 15));
  assert.equal(got.length, 25, `nothing twice: ${got}`);
  const seenB = await b.evaluate(() => window.seen);
  assert.ok(!seenB.closes.includes(4409), `no replacement: ${seenB.closes}`);
  assert.deepEqual(seenB.errors, []);
  assert.deepEqual(seenB.failed, []);
  assert.equal(seenB.acked.length, 15);
  assert.deepEqual(connections, { a: 1, b: 1 }, "one connection per owner, in turn");
}));

test("persist (3b): the owner's close() hands the source to the next tab, which restores and connects", () => withRecipient(async ({ to, inbox, context, errors }) => {
  const source = unique("shared");
  const tab = async () => {
    const page = watch(await context.newPage(), errors);
    await page.goto(`${base}/blank.html`);
    await persistent(page, source, { to });
    return page;
  };
  const a = await tab();
  await a.waitForFunction(() => window.seen.opens === 1, null, { timeout: WAIT });
  const b = await tab();
  assert.equal(await b.evaluate(() => window.client.owner), false);
  await a.evaluate(() => window.client.close());
  assert.equal(await a.evaluate(() => [window.client.owner, window.client.readyState].join()), "false,3");
  await b.waitForFunction(() => window.client.owner && window.seen.opens === 1, null, { timeout: WAIT });
  await b.evaluate(() => window.sendN(1));
  await inbox.waitForFunction(() => window.got.length === 1, null, { timeout: WAIT });
  // The closed tab takes no part any more: its sends are refused.
  assert.equal(await a.evaluate(() => window.client.send("n", 2).catch((error) => error.code)), "closed");
  assert.deepEqual(await inbox.evaluate(() => window.got), [1]);
}));

test("persist (3c): the owner's page closes with the other tab's messages unsent: the next owner restores and sends them, once", () => withRecipient(async ({ to, inbox, context, errors }) => {
  const source = unique("shared");
  const a = watch(await context.newPage(), errors);
  // The owner's link goes down, so that what it is handed stays in its journal, unsent.
  const link = await gate(a);
  await a.goto(`${base}/blank.html`);
  await persistent(a, source, { to });
  await a.waitForFunction(() => window.seen.opens === 1, null, { timeout: WAIT });
  const b = watch(await context.newPage(), errors);
  await b.goto(`${base}/blank.html`);
  await persistent(b, source, { to });
  await b.waitForFunction(() => window.client.readyState === 1, null, { timeout: WAIT });
  await link.down();
  await b.waitForFunction(() => window.client.readyState !== 1, null, { timeout: WAIT });
  // Handed to the owner, which journals them and cannot send them.
  await b.evaluate(() => [1, 2, 3].forEach((n) => window.sendN(n)));
  await a.waitForFunction(() => window.client.queued === 3, null, { timeout: WAIT });
  for (let i = 0; (await journaledQueued(a, source)) < 3; i++) {
    assert.ok(i < 100, "the three reach the owner's journal");
    await sleep(50);
  }
  await a.close({ runBeforeUnload: false });
  // The second tab takes over: the three come back from the journal and go out, once.
  await inbox.waitForFunction(() => window.got.length >= 3, null, { timeout: WAIT });
  await b.waitForFunction(() => window.seen.delivered.length === 3, null, { timeout: WAIT });
  await sleep(500); // a copy sent twice would arrive by now
  assert.deepEqual(await inbox.evaluate(() => window.got), [1, 2, 3]);
  const seen = await b.evaluate(() => window.seen);
  assert.deepEqual(seen.restored.map((m) => m.payload), [1, 2, 3], "restored by the new owner");
  // Their Promises in this tab were the old owner's to settle: 'unconfirmed', and the
  // events above say what became of them.
  assert.deepEqual(seen.failed, [[1, "unconfirmed"], [2, "unconfirmed"], [3, "unconfirmed"]]);
}));

test("the main entry refuses persist: true, naming the entry that has it", async () => {
  const errors = [];
  const page = watch(await browser.newPage(), errors);
  try {
    await page.goto(`${base}/blank.html`);
    const thrown = await page.evaluate(async (url) => {
      const { default: init, WebSocketClient } = await import("/pkg/wsrelay.js");
      await init();
      try {
        new WebSocketClient(url, "refused", { persist: true });
        return null;
      } catch (error) {
        return [error.name, error.code, error.message];
      }
    }, relay);
    assert.equal(thrown?.[0], "WsRelayError");
    assert.equal(thrown[1], "invalid_option");
    assert.match(thrown[2], /wsrelay\/persist/);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

for (const [name, script] of [
  ["no indexedDB", () => Object.defineProperty(window, "indexedDB", { value: undefined })],
  ["a refused open", () => {
    IDBFactory.prototype.open = function () {
      throw new DOMException("refused by the test", "SecurityError");
    };
  }],
  ["a failing write", () => {
    // Opening and reading work; every readwrite transaction fails (as with a full quota).
    const transaction = IDBDatabase.prototype.transaction;
    IDBDatabase.prototype.transaction = function (stores, mode, ...rest) {
      if (mode === "readwrite") throw new DOMException("quota exceeded (the test)", "QuotaExceededError");
      return transaction.call(this, stores, mode, ...rest);
    };
  }],
]) {
  test(`persist (5): ${name}: an error event 'storage', and delivery in memory`, () => withRecipient(async ({ to, inbox, context, errors }) => {
    const page = watch(await context.newPage(), errors);
    await page.addInitScript(script);
    await page.goto(`${base}/blank.html`);
    await persistent(page, unique("sender"), { to });
    await page.evaluate(() => Promise.all([1, 2, 3].map((n) => window.sendN(n))));
    await inbox.waitForFunction(() => window.got.length >= 3, null, { timeout: WAIT });
    const seen = await page.evaluate(() => window.seen);
    assert.deepEqual(seen.errors, ["storage"]);
    assert.deepEqual(seen.acked, [1, 2, 3]);
    assert.deepEqual(await inbox.evaluate(() => window.got), [1, 2, 3]);
  }));
}

test("persist (5): a damaged journal is moved aside, reported, and started afresh", () => withRecipient(async ({ to, inbox, context, errors }) => {
  const source = unique("damaged");
  const page = watch(await context.newPage(), errors);
  await page.goto(`${base}/blank.html`);
  // A journal whose committed batch holds an unreadable line: damage, not a torn tail.
  await page.evaluate((name) => new Promise((resolve, reject) => {
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => {
      open.result.createObjectStore("journal", { autoIncrement: true });
      open.result.createObjectStore("damaged", { autoIncrement: true });
    };
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const transaction = open.result.transaction("journal", "readwrite");
      transaction.objectStore("journal").add('{"n":\n{"c":1}\n');
      transaction.oncomplete = () => {
        open.result.close();
        resolve();
      };
    };
  }), `wsrelay:${source}`);
  await persistent(page, source, { to });
  await page.evaluate(() => window.sendN(1));
  await inbox.waitForFunction(() => window.got.length === 1, null, { timeout: WAIT });
  const seen = await page.evaluate(() => window.seen);
  assert.deepEqual(seen.errors, ["storage"]);
  assert.deepEqual(seen.acked, [1]);
  const stores = await page.evaluate((name) => new Promise((resolve) => {
    const open = indexedDB.open(name);
    open.onsuccess = () => {
      const transaction = open.result.transaction(["journal", "damaged"]);
      const damaged = transaction.objectStore("damaged").getAll();
      const journal = transaction.objectStore("journal").getAll();
      transaction.oncomplete = () => resolve({ damaged: damaged.result, journal: journal.result.join("") });
    };
  }), `wsrelay:${source}`);
  assert.deepEqual(stores.damaged, ['{"n":\n{"c":1}\n'], "the damaged journal is kept aside");
  assert.ok(stores.journal.includes('{"q":1'), `a fresh journal: ${stores.journal}`);
}));

// The `js browser` snippets of README.md and the package README, run as they are in a page
// (the import named as this server serves it, the relay's address put in).
const root = join(here, "..", "..");
for (const file of ["README.md", join("pkg-template", "README.md")]) {
  const markdown = readFileSync(join(root, file), "utf8");
  const snippets = [...markdown.matchAll(/^```js browser\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
  snippets.forEach((code, index) => {
    test(`${file}: browser snippet ${index + 1} runs in Chromium`, async () => {
      assert.ok(code.includes("ws://localhost:8080") && code.includes('"wsrelay/persist"'));
      const errors = [];
      const context = await browser.newContext();
      const page = watch(await context.newPage(), errors);
      try {
        await page.goto(`${base}/blank.html`);
        const logged = [];
        page.on("console", (message) => logged.push(message.text()));
        const module = code
          .replace('"wsrelay/persist"', '"/persist/persist.js"')
          .replaceAll("ws://localhost:8080", relay);
        await page.addScriptTag({ type: "module", content: `${module}\nwindow.snippetDone = true;` });
        await page.waitForFunction(() => window.snippetDone === true || null, null, { timeout: WAIT });
        assert.deepEqual(errors, []);
        assert.ok(!logged.some((line) => line.startsWith("storage")), `no storage error: ${logged}`);
      } finally {
        await context.close();
      }
    });
  });
}
