// End to end: two people chat in the www/ demo (headless Chromium, the npm package's web build)
// through the real relay binary; the relay stops while Alice types, comes back, and her queued
// messages reach Bob exactly once and are marked delivered; messages typed offline survive a
// reload of the page (the demo persists), also when the relay of a cluster on Redis dies
// during the reload.
//
// Needs WSRELAY_SERVER_BIN (the built relay), www/pkg (the package) and redis-server;
// `cargo xtask test` provides them. Screenshots go to test-output/e2e/.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { binary, BROWSER_ARGS, CHROMIUM, joinChat, output, say, startRelay, startRelayAgain, stopRelay, WAIT } from "./relay.mjs";

/** Texts of the chat messages on `page` (system lines excluded). */
function texts(page) {
  return page.$$eval("#log .msg:not(.system) .text", (nodes) => nodes.map((n) => n.textContent));
}

test("two people chat, the relay restarts, queued messages arrive once and are marked delivered", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  mkdirSync(output, { recursive: true });
  let relay = await startRelay();
  const base = `http://127.0.0.1:${relay.port}/`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: BROWSER_ARGS,
  });
  try {
    const alice = await browser.newPage({ viewport: { width: 1000, height: 700 } });
    const bob = await browser.newPage({ viewport: { width: 390, height: 740 } }); // a phone
    for (const page of [alice, bob]) page.on("pageerror", (error) => assert.fail(`page error: ${error}`));

    // Alice's WebSocket goes through a gate the test can close, so that after the restart Bob
    // is back before her queued messages are sent (a fresh relay only relays to who is there).
    let aliceMayConnect = true;
    await alice.routeWebSocket(/.*/, (ws) => {
      if (aliceMayConnect) ws.connectToServer();
      else ws.close({ code: 1011, reason: "test gate closed" });
    });

    await joinChat(alice, base, "alice");
    await joinChat(bob, base, "bob");
    await alice.waitForSelector('.person[data-to="bob"]', { timeout: WAIT });
    await bob.click("#toggle-people");
    await bob.waitForSelector('.person[data-to="alice"]', { timeout: WAIT });
    await bob.click("#toggle-people");

    // Both ways, with delivered marks from the recipient's receipt.
    await say(alice, "hello bob");
    await bob.waitForFunction(() => document.body.innerText.includes("hello bob"), null, { timeout: WAIT });
    await say(bob, "hi alice");
    await alice.waitForFunction(() => document.body.innerText.includes("hi alice"), null, { timeout: WAIT });
    await alice.waitForSelector('.msg.mine[data-status="delivered"]', { timeout: WAIT });

    // The relay goes away; Alice keeps typing.
    aliceMayConnect = false;
    await stopRelay(relay);
    await alice.waitForSelector('#state:not([data-state="open"])', { timeout: WAIT });
    const offline = ["while offline 1", "while offline 2", "while offline 3"];
    for (const text of offline) await say(alice, text);
    assert.equal(await alice.$$eval('.msg.mine[data-status="queued"]', (n) => n.length), 3);
    await alice.waitForFunction(() => document.querySelector("#state").textContent.includes("3 queued"), null, { timeout: WAIT });
    await alice.screenshot({ path: join(output, "alice-offline.png") });

    // It comes back on the same port: Bob reconnects, then Alice, who flushes her queue.
    relay = await startRelayAgain(relay.port);
    await bob.waitForSelector('#state[data-state="open"]', { timeout: WAIT });
    aliceMayConnect = true;
    await alice.waitForSelector('#state[data-state="open"]', { timeout: WAIT });
    await alice.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="delivered"]').length === 4,
      null,
      { timeout: WAIT },
    );

    // The connection badge's tooltip shows the client's statistics (refreshed every second).
    await alice.waitForFunction(
      () => /reconnects 1\n/.test(document.querySelector("#state").title),
      null,
      { timeout: WAIT },
    );
    const tooltip = await alice.$eval("#state", (badge) => badge.title);
    assert.match(tooltip, /^round trip \d+ ms \(smoothed \d+ ms\)$/m);
    assert.match(tooltip, /^acknowledged [1-9]\d*$/m);
    assert.match(tooltip, /^failed 0$/m);

    const seen = await texts(bob);
    for (const text of offline) {
      assert.equal(seen.filter((t) => t === text).length, 1, `${text} arrives exactly once: ${JSON.stringify(seen)}`);
    }
    assert.deepEqual(seen.filter((t) => t.startsWith("while offline")), offline, "in the order typed");
    assert.equal((await texts(alice)).filter((t) => t === "hi alice").length, 1);

    await alice.screenshot({ path: join(output, "alice.png") });
    await bob.screenshot({ path: join(output, "bob.png") });
  } finally {
    await browser.close();
    await stopRelay(relay);
  }
});

test("messages typed offline keep their queued mark across a reload, then turn delivered (persist)", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  mkdirSync(output, { recursive: true });
  const relay = await startRelay();
  const base = `http://127.0.0.1:${relay.port}/`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const alice = await browser.newPage({ viewport: { width: 1000, height: 700 } });
    const bob = await browser.newPage({ viewport: { width: 390, height: 740 } });
    for (const page of [alice, bob]) page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
    // Alice's link goes through a gate: shut, her attempts are refused at once.
    let linkUp = true;
    let current;
    await alice.routeWebSocket(/.*/, (ws) => {
      if (!linkUp) return ws.close({ code: 1011, reason: "link down" });
      current = ws;
      ws.connectToServer();
    });
    await joinChat(alice, base, "alice");
    await joinChat(bob, base, "bob");
    await alice.waitForSelector('.person[data-to="bob"]', { timeout: WAIT });

    linkUp = false;
    await current.close({ code: 1011, reason: "link down" });
    await alice.waitForSelector('#state:not([data-state="open"])', { timeout: WAIT });
    const offline = ["typed offline 1", "typed offline 2"];
    for (const text of offline) await say(alice, text);
    assert.equal(await alice.$$eval('.msg.mine[data-status="queued"]', (n) => n.length), 2);
    // The reload comes once both are in the page's journal (IndexedDB `wsrelay:alice`).
    const journaled = () => alice.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open("wsrelay:alice");
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const read = open.result.transaction("journal").objectStore("journal").getAll();
        read.onsuccess = () => {
          open.result.close();
          resolve(read.result.join("").split("\n").filter((line) => line.startsWith('{"q"')).length);
        };
      };
    }));
    for (let i = 0; (await journaled()) < 2; i++) {
      assert.ok(i < 100, "both messages reach the journal");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }

    // Reloaded (still offline), and joined again under the remembered name: the two are there,
    // marked queued.
    await alice.reload();
    await alice.click("#join");
    await alice.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="queued"]').length === 2,
      null,
      { timeout: WAIT },
    );
    assert.deepEqual(await texts(alice), offline);
    await alice.screenshot({ path: join(output, "alice-reloaded-offline.png") });

    // The link is back: they go out once, in order, and Bob's receipts mark them delivered.
    linkUp = true;
    await alice.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="delivered"]').length === 2,
      null,
      { timeout: WAIT },
    );
    await new Promise((resolve) => setTimeout(resolve, 500)); // a copy sent twice would arrive by now
    const seen = await texts(bob);
    assert.deepEqual(seen.filter((t) => t.startsWith("typed offline")), offline, "each once, in order");
    await alice.screenshot({ path: join(output, "alice-reloaded-delivered.png") });
  } finally {
    await browser.close();
    await stopRelay(relay);
  }
});

test("two tabs of one name share one connection: the second sends through the first, then takes over", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  const relay = await startRelay();
  const base = `http://127.0.0.1:${relay.port}/`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    // Alice's two tabs share a browser profile (one context); Bob is elsewhere.
    const context = await browser.newContext();
    const first = await context.newPage();
    const second = await context.newPage();
    const bob = await browser.newPage();
    const sockets = { first: 0, second: 0 };
    for (const [name, page] of [["first", first], ["second", second], ["bob", bob]]) {
      page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
      page.on("websocket", () => (sockets[name] = (sockets[name] ?? 0) + 1));
    }
    await joinChat(bob, base, "bob");
    await joinChat(first, base, "alice");
    await joinChat(second, base, "alice"); // connected through the first tab
    await say(second, "from the second tab");
    await bob.waitForFunction(() => document.body.innerText.includes("from the second tab"), null, { timeout: WAIT });
    // Bob's receipt reaches the tab that sent it: marked delivered there.
    await second.waitForSelector('.msg.mine[data-status="delivered"]', { timeout: WAIT });
    assert.equal(sockets.second, 0, "the second tab opened no connection");
    assert.equal(await first.$eval("#ended", (box) => box.hidden), true, "nobody was replaced (4409)");

    // The first tab closes: the second takes the connection over.
    await first.close();
    for (let i = 0; sockets.second !== 1; i++) {
      assert.ok(i < 150, "the second tab connects once it owns the name");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await second.waitForFunction(() => document.querySelector("#state").dataset.state === "open", null, { timeout: WAIT });
    await say(second, "after the first tab closed");
    await bob.waitForFunction(() => document.body.innerText.includes("after the first tab closed"), null, { timeout: WAIT });
    await second.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="delivered"]').length === 2,
      null,
      { timeout: WAIT },
    );
    assert.equal(sockets.second, 1, "one connection, once it owns the name");
    // The first message, still in the shared journal when the first tab closed, is sent again
    // by the second (the relay drops the copy) and is not shown twice.
    assert.deepEqual(await texts(second), ["from the second tab", "after the first tab closed"]);
    const seen = await texts(bob);
    for (const text of ["from the second tab", "after the first tab closed"]) {
      assert.equal(seen.filter((t) => t === text).length, 1, `${text} arrives once: ${JSON.stringify(seen)}`);
    }
  } finally {
    await browser.close();
    await stopRelay(relay);
  }
});

/** A port nobody listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A redis-server of the test's own (no persistence); resolves once it answers PING. */
async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const deadline = Date.now() + WAIT;
  for (;;) {
    const answered = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
      socket.once("data", (data) => { socket.destroy(); resolve(data.toString().startsWith("+PONG")); });
      socket.once("error", () => resolve(false));
    });
    if (answered) return { child, url: `redis://127.0.0.1:${port}` };
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("on Redis, a relay killed and restarted loses nothing, whoever reconnects first", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  mkdirSync(output, { recursive: true });
  const redis = await startRedis();
  const extra = ["--redis", redis.url, "--node-id", "e2e"];
  let relay = await startRelay(0, extra);
  const base = `http://127.0.0.1:${relay.port}/`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: BROWSER_ARGS,
  });
  try {
    const alice = await browser.newPage({ viewport: { width: 1000, height: 700 } });
    const bob = await browser.newPage({ viewport: { width: 1000, height: 700 } });
    for (const page of [alice, bob]) page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
    // This time the gate holds Bob back: Alice comes back first and sends to him while he is
    // away, which the in-memory relay could not survive.
    let bobMayConnect = true;
    await bob.routeWebSocket(/.*/, (ws) => {
      if (bobMayConnect) ws.connectToServer();
      else ws.close({ code: 1011, reason: "test gate closed" });
    });
    await joinChat(alice, base, "alice");
    await joinChat(bob, base, "bob");
    await say(alice, "hello bob");
    await bob.waitForFunction(() => document.body.innerText.includes("hello bob"), null, { timeout: WAIT });
    // Bob's answer reaches Alice through Redis a moment after he shows the message; the counts
    // of statuses below assume it came before the kill.
    await alice.waitForSelector('.msg.mine[data-status="delivered"]', { timeout: WAIT });

    // The relay is killed outright; Alice types while it is gone.
    bobMayConnect = false;
    relay.child.kill("SIGKILL");
    await new Promise((resolve) => relay.child.once("exit", resolve));
    await alice.waitForSelector('#state:not([data-state="open"])', { timeout: WAIT });
    const offline = ["while killed 1", "while killed 2", "while killed 3"];
    for (const text of offline) await say(alice, text);

    // It restarts; Alice is back first and her queue goes out, to Bob's session in Redis.
    relay = await startRelayAgain(relay.port, extra);
    await alice.waitForSelector('#state[data-state="open"]', { timeout: WAIT });
    // Acknowledged by the relay (sent), not yet answered by Bob (delivered): he is away.
    await alice.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="sent"]').length === 3,
      null,
      { timeout: WAIT },
    );
    bobMayConnect = true;
    await bob.waitForSelector('#state[data-state="open"]', { timeout: WAIT });
    await alice.waitForFunction(
      () => document.querySelectorAll('.msg.mine[data-status="delivered"]').length === 4,
      null,
      { timeout: WAIT },
    );
    const seen = await texts(bob);
    for (const text of offline) {
      assert.equal(seen.filter((t) => t === text).length, 1, `${text} arrives exactly once: ${JSON.stringify(seen)}`);
    }
    assert.deepEqual(seen.filter((t) => t.startsWith("while killed")), offline, "in the order typed");
    for (const page of [alice, bob]) {
      assert.ok(!(await page.textContent("#log")).includes("lost our session"), "no session was lost");
    }
    await bob.screenshot({ path: join(output, "bob-after-kill.png") });
  } finally {
    await browser.close();
    await stopRelay(relay);
    redis.child.kill("SIGTERM");
  }
});

test("rooms: #general reaches its members only, who are shown per room; a new room is made", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  mkdirSync(output, { recursive: true });
  const relay = await startRelay();
  const base = `http://127.0.0.1:${relay.port}/`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const pages = {};
    for (const name of ["alice", "bob", "carol"]) {
      const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
      page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
      await joinChat(page, base, name);
      pages[name] = page;
    }
    const { alice, bob, carol } = pages;
    // Alice and Bob enter #general; Carol stays out of it, in #random.
    await alice.click('.room[data-room="general"]');
    await bob.click('.room[data-room="general"]');
    await carol.click('.room[data-room="random"]');
    await alice.waitForFunction(
      () => document.querySelector("#room-members").textContent === "In #general: alice, bob",
      null,
      { timeout: WAIT },
    );
    await bob.waitForSelector('.room.active[data-room="general"]', { timeout: WAIT });
    await say(alice, "hello general");
    await bob.waitForFunction(
      () => [...document.querySelectorAll("#log .msg")].some((m) => m.textContent.includes("#general") && m.textContent.includes("hello general")),
      null,
      { timeout: WAIT },
    );
    await alice.waitForSelector('.msg.mine[data-status="delivered"]', { timeout: WAIT });
    // Carol hears something (a message to everyone: Bob goes back to "Everyone") but nothing
    // of #general.
    await bob.click('.person[data-to=""]');
    await say(bob, "hello everyone");
    await carol.waitForFunction(() => document.body.innerText.includes("hello everyone"), null, { timeout: WAIT });
    assert.ok(!(await texts(carol)).includes("hello general"), "a room's message stays in the room");
    assert.equal((await texts(bob)).filter((t) => t === "hello general").length, 1);

    // A room made on the spot, joined by its maker: the list shows it with one member.
    await carol.fill("#room-name", "lounge");
    await carol.press("#room-name", "Enter");
    await carol.waitForSelector('.room.active[data-room="lounge"]', { timeout: WAIT });
    await carol.waitForFunction(
      () => document.querySelector("#room-members").textContent === "In #lounge: carol",
      null,
      { timeout: WAIT },
    );
    await alice.screenshot({ path: join(output, "alice-rooms.png") });
  } finally {
    await browser.close();
    await stopRelay(relay);
  }
});

// Issue 19's test 6: on a relay cluster (two relays on one Redis), Alice's relay is killed
// (SIGKILL) while she types and her page is reloaded; her relay comes back on its port: what
// she typed reaches Bob, on the other relay, exactly once and in order (the page's journal and
// the session in Redis together; her messages go through the log of everyone).
test("a relay of a cluster killed while the page reloads: what Alice typed reaches Bob once, in order (persist, Redis)", { timeout: 120_000 }, async () => {
  assert.ok(binary, "WSRELAY_SERVER_BIN must name the relay binary (cargo xtask test sets it)");
  const redis = await startRedis();
  const on = (node) => ["--redis", redis.url, "--node-id", node];
  const kill = (child, signal) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill(signal);
  });
  let a = await startRelay(0, on("a"));
  const b = await startRelay(0, on("b"));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    for (const page of [alice, bob]) page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
    await joinChat(alice, `http://127.0.0.1:${a.port}/`, "alice");
    await joinChat(bob, `http://127.0.0.1:${b.port}/`, "bob");
    const before = ["before 1", "before 2"];
    for (const text of before) await say(alice, text);
    await bob.waitForFunction((n) => document.querySelectorAll("#log .msg:not(.system)").length >= n, before.length, { timeout: WAIT });

    // Alice types on; her relay dies with whatever it had in flight, and her page reloads.
    const during = ["during 1", "during 2", "during 3"];
    for (const text of during) await say(alice, text);
    const port = a.port;
    await kill(a.child, "SIGKILL");
    const after = ["after 1", "after 2"];
    for (const text of after) await say(alice, text);
    await alice.waitForFunction(
      (n) => document.querySelectorAll(".msg.mine").length >= n,
      before.length + during.length + after.length,
      { timeout: WAIT },
    );
    // The reload comes once the last thing she typed is in the page's journal.
    const journal = () => alice.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open("wsrelay:alice");
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const read = open.result.transaction("journal").objectStore("journal").getAll();
        read.onsuccess = () => {
          open.result.close();
          resolve(read.result.join(""));
        };
      };
    }));
    for (let i = 0; !(await journal()).includes(after[after.length - 1]); i++) {
      assert.ok(i < 100, "what she typed reaches the journal");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Her relay is dead: the page itself is fetched from the other relay (the same files), and
    // her client keeps trying her own relay until it is back.
    const own = `http://127.0.0.1:${port}/`;
    await alice.route(`${own}**`, (route) =>
      route.continue({ url: route.request().url().replace(own, `http://127.0.0.1:${b.port}/`) }));
    await alice.reload();
    await alice.click("#join");
    a = await startRelayAgain(port, on("a"));

    // Everything she typed reaches Bob once, in order, across the relays.
    const typed = [...before, ...during, ...after];
    await bob.waitForFunction(
      (n) => [...document.querySelectorAll("#log .msg:not(.system) .text")].filter((t) => /^(before|during|after) /.test(t.textContent)).length >= n,
      typed.length,
      { timeout: WAIT },
    );
    // What the reloaded page restored (what had not been acknowledged) turns delivered.
    await alice.waitForFunction(
      () => {
        const mine = document.querySelectorAll(".msg.mine");
        return mine.length > 0 && [...mine].every((m) => m.dataset.status === "delivered");
      },
      null,
      { timeout: WAIT },
    );
    await new Promise((resolve) => setTimeout(resolve, 500)); // a copy sent twice would arrive by now
    const seen = (await texts(bob)).filter((t) => /^(before|during|after) /.test(t));
    assert.deepEqual(seen, typed, "each once, in order");
  } finally {
    await browser.close();
    await kill(a.child, "SIGTERM");
    await stopRelay(b);
    await kill(redis.child, "SIGKILL");
  }
});
