// End to end over TLS: the chat demo served over https:// by the relay binary (a certificate
// made at run time by `cargo run --example self_signed`, in WSRELAY_TLS_DIR), its client on
// wss:// in headless Chromium. The same person opening a second tab replaces the first,
// which says why and offers to rejoin instead of leaving a dead page with a live Send button.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { binary, BROWSER_ARGS, CHROMIUM, joinChat, output, say, startRelay, stopRelay, WAIT } from "./relay.mjs";

const tls = process.env.WSRELAY_TLS_DIR;

test("the demo over https and wss; a second tab replaces the first, which can rejoin", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  assert.ok(tls, "WSRELAY_TLS_DIR must hold cert.pem and key.pem (cargo xtask test makes them)");
  mkdirSync(output, { recursive: true });
  const relay = await startRelay(0, ["--tls-cert", join(tls, "cert.pem"), "--tls-key", join(tls, "key.pem")]);
  // The test CA is nobody's root: Chromium is told to accept the certificate.
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BROWSER_ARGS, "--ignore-certificate-errors"] });
  try {
    const base = `https://localhost:${relay.port}/`;
    const first = await browser.newPage();
    const second = await browser.newPage();
    for (const page of [first, second]) page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
    const sockets = [];
    first.on("websocket", (ws) => sockets.push(ws.url()));

    await joinChat(first, base, "carol");
    assert.equal(await first.evaluate(() => location.protocol), "https:");
    assert.ok(sockets[0].startsWith(`wss://localhost:${relay.port}/`), sockets[0]);
    await say(first, "from the first tab");
    await first.waitForSelector('.msg.mine[data-status="sent"]', { timeout: WAIT });

    // Carol opens the chat again in another tab: it takes over.
    await joinChat(second, base, "carol");
    await first.waitForSelector("#ended:not([hidden])", { timeout: WAIT });
    assert.match(await first.textContent("#ended-text"), /another tab/);
    assert.equal(await first.$eval("#send", (button) => button.disabled), true, "no live Send button");
    await first.screenshot({ path: join(output, "replaced.png") });
    await say(second, "from the second tab");
    await second.waitForSelector('.msg.mine[data-status="sent"]', { timeout: WAIT });

    // Rejoining from the first tab takes it back; now the second one is told.
    await first.click("#rejoin");
    await first.waitForSelector('#state[data-state="open"]', { timeout: WAIT });
    assert.equal(await first.$eval("#send", (button) => button.disabled), false);
    await second.waitForSelector("#ended:not([hidden])", { timeout: WAIT });
    await say(first, "back in the first tab");
    await first.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="sent"]').length === 2,
      null,
      { timeout: WAIT },
    );
  } finally {
    await browser.close();
    await stopRelay(relay);
  }
});
