// Node.js tests of the npm package (installed from the packed tarball of pkg/ by
// `cargo xtask test`) against the real relay run by the test bed (WSRELAY_TESTBED).
// Node 20 has no global WebSocket: the npm `ws` class is passed as `options.WebSocket`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { WebSocketClient } from "wsrelay";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const testbed = process.env.WSRELAY_TESTBED;
assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");

const control = async (method, path) => (await fetch(testbed + path, { method })).text();
const relayUrl = () => control("GET", "/url");
const unique = (name) => `${name}-${Math.floor(Math.random() * 1e9)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nextEvent = (client, name) =>
  new Promise((resolve) => client.addEventListener(name, (e) => resolve(e.detail), { once: true }));
const fast = { minReconnectionDelay: 100, maxReconnectionDelay: 300, WebSocket };

async function connect(url, source, options = fast) {
  const client = new WebSocketClient(url, source, options);
  await nextEvent(client, "open");
  return client;
}

test("the original design's chat example: two clients chatting", async () => {
  const url = await relayUrl();
  const alice = await connect(url, unique("alice"));
  const bob = await connect(url, unique("bob"));
  const received = [];
  bob.on("chat-message", async (data, message) => {
    received.push({ data, from: message.source });
    return { status: "received" };
  });
  // A response to a plain send is surfaced as a `response` event.
  const response = nextEvent(alice, "response");
  await alice.send("chat-message", { message: "Hello" });
  const answer = await response;
  assert.deepEqual(answer.payload, { status: "received" });
  assert.equal(answer.source, bob.source);
  assert.equal(answer.type, "chat-message");
  assert.deepEqual(received, [{ data: { message: "Hello" }, from: alice.source }]);
  assert.equal(alice.queued, 0);
  await Promise.all([alice.close(), bob.close()]);
  assert.equal(alice.readyState, 3);
});

test("requests: answered, failed, timed out", async () => {
  const url = await relayUrl();
  const alice = await connect(url, unique("alice"));
  const bob = await connect(url, unique("bob"));
  bob.on("get-time", () => ({ now: 1764090000 }));
  bob.on("boom", () => {
    throw new Error("boom");
  });
  bob.on("never", () => new Promise(() => {}));
  const errors = [];
  bob.addEventListener("error", (e) => errors.push(e.detail.code));

  const time = await alice.request("get-time", {}, { to: bob.source, timeout: 5000 });
  assert.deepEqual(time, { now: 1764090000 });
  await assert.rejects(alice.request("boom", null, { to: bob.source }), (error) => {
    assert.equal(error.name, "WsRelayError");
    assert.equal(error.code, "handler_error");
    assert.equal(error.message, "boom");
    return true;
  });
  assert.deepEqual(errors, ["handler_error"]);
  const started = Date.now();
  await assert.rejects(alice.request("never", null, { to: bob.source, timeout: 300 }), {
    code: "timeout",
  });
  assert.ok(Date.now() - started >= 250);
  await assert.rejects(alice.request("get-time", {}, { to: "nobody-here" }), {
    code: "unknown_target",
  });
  await Promise.all([alice.close(), bob.close()]);
});

test("reconnects after a server restart and delivers what was queued", async () => {
  const url = await relayUrl();
  const alice = await connect(url, unique("alice"));
  const closed = nextEvent(alice, "close");
  await control("POST", "/stop");
  assert.equal((await closed).reconnecting, true);
  const pending = [1, 2, 3].map((n) => alice.send("queued", n));
  assert.equal(alice.queued, 3);
  const reopened = nextEvent(alice, "open");
  await control("POST", "/start");
  assert.equal((await reopened).resumed, false);
  await Promise.all(pending);
  assert.equal(alice.queued, 0);
  assert.equal(alice.readyState, 1);
  await alice.close();
});

test("options and errors are typed", async () => {
  assert.throws(() => new WebSocketClient("ws://127.0.0.1:9", "x", { minUptime: -1, WebSocket }), {
    code: "invalid_option",
  });
  const idle = new WebSocketClient("ws://127.0.0.1:9", "idle", { startClosed: true, WebSocket });
  assert.equal(idle.readyState, 3);
  await idle.close();
  await assert.rejects(idle.send("x", 1), { code: "closed" });
});
