// The npm package's `token` option against relay binaries that verify identities (HS256
// tokens made here with node:crypto), one of them over TLS with a CA made at run time
// (WSRELAY_TLS_DIR, trusted through npm `ws`). Each test starts its own relay
// (WSRELAY_SERVER_BIN); `cargo xtask test` provides both, and runs this on Node 20 and 22.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { WebSocketClient } from "wsrelay";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const binary = process.env.WSRELAY_SERVER_BIN;
const tlsDir = process.env.WSRELAY_TLS_DIR;
assert.ok(binary && tlsDir, "WSRELAY_SERVER_BIN and WSRELAY_TLS_DIR: run with `cargo xtask test`");
const SECRET = "node test secret, long enough for HS256";

const base64url = (data) => Buffer.from(data).toString("base64url");
/** An HS256 token for `sub` expiring `ttl` seconds from now. */
function token(sub, ttl, secret = SECRET) {
  const head = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = base64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + ttl }));
  const signature = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** The relay binary verifying tokens, with `args`; resolves with its URL and process. */
function startRelay(args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ["--port", "0", ...args], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, WSRELAY_AUTH_SECRET: SECRET, RUST_LOG: "warn" },
    });
    child.once("error", reject);
    createInterface({ input: child.stdout }).once("line", (line) => {
      const match = /^listening on (https?):\/\/(.+)$/.exec(line);
      if (!match) return reject(new Error(`unexpected relay output ${line}`));
      const scheme = match[1] === "https" ? "wss" : "ws";
      const port = match[2].split(":").pop();
      resolve({ child, url: `${scheme}://localhost:${port}` });
    });
  });
}

const stop = ({ child }) => new Promise((resolve) => { child.once("exit", resolve); child.kill("SIGTERM"); });
const nextEvent = (client, name) =>
  new Promise((resolve) => client.addEventListener(name, (e) => resolve(e.detail), { once: true }));
const fast = { minReconnectionDelay: 50, maxReconnectionDelay: 200, WebSocket };

/** Clients made by a test, all closed when it ends (pass or fail), so that none keeps Node up. */
const made = [];
function newClient(url, source, options) {
  const created = new WebSocketClient(url, source, options);
  made.push(created);
  return created;
}
async function closeAll() {
  await Promise.all(made.splice(0).map((c) => c.close()));
}

test("a token function is asked before every attempt and renews an expired token", async () => {
  const relay = await startRelay();
  try {
    let asked = 0;
    // Each token lives two seconds; the relay closes with 4001 when it expires.
    const client = newClient(relay.url, "alice", {
      ...fast,
      token: async () => {
        asked += 1;
        return token("alice", 2);
      },
    });
    await nextEvent(client, "open");
    assert.equal(asked, 1);
    const closed = await nextEvent(client, "close");
    assert.equal(closed.code, 4001);
    assert.equal(closed.reconnecting, true);
    await nextEvent(client, "open");
    assert.equal(asked, 2, "a fresh token for the new attempt");
    await client.send("hello", { n: 1 });
    await client.close();
  } finally {
    await closeAll();
    await stop(relay);
  }
});

test("a fixed token works; missing, forged and foreign ones are refused at the upgrade", async () => {
  const relay = await startRelay();
  try {
    const alice = newClient(relay.url, "alice", { ...fast, token: token("alice", 60) });
    await nextEvent(alice, "open");
    await alice.send("hello", {});
    await alice.close();
    // The relay accepts the upgrade and closes it at once with 4401 or 4403 and the reason
    // (a browser's WebSocket cannot see an HTTP status): the client stops, says why, and
    // rejects what it had queued, which was never sent.
    for (const [what, options, closeCode] of [
      ["missing", {}, 4401],
      ["forged", { token: token("bob", 60, "another secret entirely") }, 4401],
      ["foreign", { token: () => Promise.resolve(token("carol", 60)) }, 4403],
    ]) {
      const bob = newClient(relay.url, "bob", { ...fast, ...options });
      let opened = false;
      bob.addEventListener("open", () => (opened = true));
      const queued = bob.send("hello", { n: 1 });
      const stopped = await new Promise((resolve) =>
        bob.addEventListener("error", (e) => e.detail.code === "rejected" && resolve(e.detail)),
      );
      assert.equal(stopped.closeCode, closeCode, what);
      assert.ok(stopped.message.length > 0, `${what}: a reason`);
      await assert.rejects(queued, (error) => error.code === "rejected" && error.closeCode === closeCode, what);
      assert.equal(opened, false, `${what}: never opened`);
      assert.equal(bob.readyState, 3, `${what}: closed for good`);
      await bob.close();
    }
    // A token function that throws fails the attempt, saying why.
    const dave = newClient(relay.url, "dave", {
      ...fast,
      maxRetries: 0,
      token: () => {
        throw new Error("no token today");
      },
    });
    const error = await nextEvent(dave, "error");
    assert.match(error.message, /token not available: no token today/);
    await dave.close();
    assert.throws(() => new WebSocketClient(relay.url, "dave", { WebSocket, token: 42 }), { code: "invalid_option" });
  } finally {
    await closeAll();
    await stop(relay);
  }
});

test("over TLS, with the relay's CA trusted through npm ws", async () => {
  const relay = await startRelay([
    "--tls-cert", join(tlsDir, "cert.pem"),
    "--tls-key", join(tlsDir, "key.pem"),
  ]);
  try {
    const ca = readFileSync(join(tlsDir, "ca.pem"));
    class Trusting extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols, { ca });
      }
    }
    const options = { ...fast, WebSocket: Trusting };
    assert.ok(relay.url.startsWith("wss://"));
    const alice = newClient(relay.url, "alice", { ...options, token: token("alice", 60) });
    const bob = newClient(relay.url, "bob", { ...options, token: () => token("bob", 60) });
    bob.on("get-time", () => 1764090000);
    await Promise.all([nextEvent(alice, "open"), nextEvent(bob, "open")]);
    assert.equal(await alice.request("get-time", null, { to: "bob", timeout: 5000 }), 1764090000);
    await Promise.all([alice.close(), bob.close()]);
  } finally {
    await closeAll();
    await stop(relay);
  }
});
