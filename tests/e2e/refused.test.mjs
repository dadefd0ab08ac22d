// A refusal a browser can read: a page in headless Chromium whose token is refused, or whose
// Origin is not allowed, learns why (4401 / 4403 and the relay's reason) within seconds, its
// client stops, and what it had queued is rejected, never sent. A browser's WebSocket cannot
// see the HTTP status of a refused upgrade, so the relay accepts it and closes at once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { binary, BROWSER_ARGS, CHROMIUM, startRelay, stopRelay } from "./relay.mjs";

/** In the page served by the relay: a client that sends at once, and how it ends. */
async function refusedIn(page, base, options) {
  await page.goto(base);
  return page.evaluate(async ([url, options]) => {
    const { default: init, WebSocketClient } = await import("/pkg/wsrelay.js");
    await init();
    const started = performance.now();
    const client = new WebSocketClient(url, "alice", { minReconnectionDelay: 50, ...options });
    const stopped = new Promise((resolve) =>
      client.addEventListener("error", (e) => e.detail.code === "rejected" && resolve(e.detail)),
    );
    const sent = client.send("hello", { n: 1 }).then(
      () => ({ ok: true }),
      (error) => ({ code: error.code, closeCode: error.closeCode }),
    );
    const error = await stopped;
    const outcome = await sent;
    return {
      error: { code: error.code, closeCode: error.closeCode, message: error.message },
      sent: outcome,
      readyState: client.readyState,
      elapsed: performance.now() - started,
    };
  }, [base.replace("http", "ws"), options]);
}

for (const [what, flags, options, closeCode, reason] of [
  ["a forged token", ["--auth-secret", "the relay's own secret, long enough"], { token: "a.b.c" }, 4401, /token/],
  ["an Origin that is not allowed", ["--allowed-origin", "https://app.example"], {}, 4403, /origin/],
]) {
  test(`a page with ${what} is told why at once and its sends are rejected`, { timeout: 60_000 }, async () => {
    assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
    const relay = await startRelay(0, flags);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
    try {
      const page = await browser.newPage();
      const errors = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      const result = await refusedIn(page, `http://127.0.0.1:${relay.port}/`, options);
      assert.equal(result.error.code, "rejected");
      assert.equal(result.error.closeCode, closeCode);
      assert.match(result.error.message, reason);
      assert.deepEqual(result.sent, { code: "rejected", closeCode }, "never sent, so rejected");
      assert.equal(result.readyState, 3, "stopped");
      assert.ok(result.elapsed < 5_000, `told within seconds (${result.elapsed} ms)`);
      assert.deepEqual(errors, [], "no page error");
    } finally {
      await browser.close();
      await stopRelay(relay);
    }
  });
}
