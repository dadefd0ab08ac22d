// Every method and event of the Node server package (ping/pong included), in this process
// (Node 20, and Node 22 when `cargo xtask test` runs it again there), with clients of the
// `wsrelay` npm package.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { WebSocketServer, WsRelayError } from "wsrelay-server";
import { WebSocket, connect, nextEvent, sleep, unique, until } from "./helpers.mjs";

const require = createRequire(import.meta.url);

/** A server on a free port, closed when the test ends. */
function serve(t, options = {}) {
  const server = new WebSocketServer({ port: 0, ...options });
  t.after(() => server.close());
  return server;
}

/** wsrelay clients, closed when the test ends. */
async function clients(t, url, ...names) {
  const made = await Promise.all(names.map((name) => connect(url, unique(name))));
  t.after(() => Promise.all(made.map((c) => c.close())));
  return made;
}

test("ES module and CommonJS entries are the same classes", () => {
  const cjs = require("wsrelay-server");
  assert.equal(cjs.WebSocketServer, WebSocketServer);
  assert.equal(cjs.WsRelayError, WsRelayError);
});

test("new WebSocketServer(port | options): where it listens; bad input throws", async (t) => {
  const server = serve(t);
  assert.ok(server.port > 0);
  assert.equal(server.host, "127.0.0.1");
  assert.equal(server.url, `ws://127.0.0.1:${server.port}`);
  assert.deepEqual(server.address(), { address: "127.0.0.1", port: server.port });

  const byPort = new WebSocketServer(0);
  assert.ok(byPort.port > 0 && byPort.port !== server.port);
  await byPort.close();

  for (const bad of ["8080", null, [], { port: -1 }, { port: 1.5 }, { nope: 1 }, { pingInterval: "10s" },
    { onDuplicate: "ignore" }, { tls: { cert: "x" } }, { redis: "localhost:6379" }, { allowedOrigins: "x" },
    { authSecret: "" }, { authSecret: "a", authSecretFile: "b" }, { logLevel: "loud" }]) {
    assert.throws(() => new WebSocketServer(bad), TypeError, JSON.stringify(bad));
  }
  assert.throws(() => new WebSocketServer({ port: server.port }), (error) => {
    assert.ok(error instanceof WsRelayError);
    assert.equal(error.code, "EADDRINUSE");
    return true;
  });
  assert.throws(() => new WebSocketServer({ port: 0, www: "/no/such/dir" }), { code: "invalid_option" });
  assert.throws(() => new WebSocketServer({ port: 0, tls: { cert: "not PEM", key: "not PEM" } }), { code: "invalid_option" });
});

test("handlers: values, Promises, nothing; replaced and removed; other types are relayed", async (t) => {
  const server = serve(t);
  const [alice, bob] = await clients(t, server.url, "alice", "bob");
  const seen = [];
  server.on("add", ({ payload }) => payload[0] + payload[1]);
  server.on("slow-add", async ({ payload }) => {
    await sleep(20);
    return payload[0] + payload[1];
  });
  server.on("log", (message) => {
    seen.push(message);
  });
  assert.equal(await alice.request("add", [2, 3]), 5);
  assert.equal(await alice.request("slow-add", [4, 5]), 9);
  await alice.send("log", { line: "hello" });
  await alice.send("log");
  await until(() => seen.length === 2, 5000, "both log messages");
  assert.deepEqual(seen, [
    { source: alice.source, payload: { line: "hello" }, type: "log" },
    { source: alice.source, payload: null, type: "log" },
  ]);
  // `on` replaces; `off` removes, and the type is relayed between clients again.
  server.on("add", ({ payload }) => payload[0] * payload[1]);
  assert.equal(await alice.request("add", [2, 3]), 6);
  const relayed = [];
  bob.on("add", (payload, { source }) => {
    relayed.push({ payload, source });
  });
  server.off("add");
  await alice.send("add", [1, 1]);
  await until(() => relayed.length === 1, 5000, "the relayed message");
  assert.deepEqual(relayed, [{ payload: [1, 1], source: alice.source }]);
  // No handler at all: relayed, as by the relay binary.
  const chat = nextEvent(bob, "response").catch(() => {});
  bob.on("chat", (payload, { source }) => ({ echo: payload, from: source }));
  const answer = await alice.request("chat", "hi", { to: bob.source });
  assert.deepEqual(answer, { echo: "hi", from: alice.source });
  void chat;

  assert.throws(() => server.on("add", "not a function"), TypeError);
  assert.throws(() => server.on("", () => {}), TypeError);
  assert.throws(() => server.on("~ack", () => {}), TypeError);
  assert.throws(() => server.once("add", () => {}), TypeError);
});

test("sendTo, broadcast, request, clients", async (t) => {
  const server = serve(t);
  const [alice, bob, carol] = await clients(t, server.url, "alice", "bob", "carol");
  const got = { alice: [], bob: [], carol: [] };
  for (const [name, client] of [["alice", alice], ["bob", bob], ["carol", carol]]) {
    client.on("notice", (payload, { source }) => {
      got[name].push({ payload, source });
    });
  }
  assert.equal(await server.sendTo(bob.source, "notice", { text: "for bob" }), undefined);
  assert.equal(await server.broadcast("notice", "everyone but alice", alice.source), 2);
  assert.equal(await server.broadcast("notice", 42), 3);
  await until(() => got.alice.length === 1 && got.bob.length === 3 && got.carol.length === 2, 5000, "the notices");
  assert.deepEqual(got.bob.map((m) => m.payload), [{ text: "for bob" }, "everyone but alice", 42]);
  assert.equal(got.bob[0].source, undefined, "from the server: no source");
  await assert.rejects(server.sendTo("nobody-here", "notice", 1), (error) => {
    assert.ok(error instanceof WsRelayError);
    assert.equal(error.code, "unknown_target");
    return true;
  });
  // One nobody awaits fails without ending the process.
  server.sendTo("nobody-here", "notice", 1);
  await sleep(50);

  bob.on("get-time", () => ({ now: 1764090000 }));
  bob.on("never", () => new Promise(() => {}));
  bob.on("boom", () => {
    throw new Error("bob's boom");
  });
  assert.deepEqual(await server.request(bob.source, "get-time", null), { now: 1764090000 });
  const started = Date.now();
  await assert.rejects(server.request(bob.source, "never", null, { timeout: 300 }), { code: "timeout" });
  assert.ok(Date.now() - started >= 280);
  await assert.rejects(server.request(bob.source, "boom"), { code: "handler_error", message: "bob's boom" });
  await assert.rejects(server.request(bob.source, "no-such-type"), { code: "no_handler" });
  await assert.rejects(server.request("nobody-here", "get-time"), { code: "unknown_target" });

  assert.deepEqual(await server.clients(), [alice.source, bob.source, carol.source].sort());

  assert.throws(() => server.sendTo(42, "notice", 1), TypeError);
  assert.throws(() => server.sendTo(bob.source, "~welcome", 1), TypeError);
  assert.throws(() => server.broadcast("notice", { big: 1n }), TypeError);
  assert.throws(() => server.broadcast("notice", 1, 7), TypeError);
  assert.throws(() => server.request(bob.source, "get-time", null, { timeout: -1 }), TypeError);
  assert.throws(() => server.request(bob.source, "get-time", null, "soon"), TypeError);
});

test("rooms: join, broadcastTo, members, leave; clients join and send to rooms through it", async (t) => {
  const server = serve(t);
  const [alice, bob, carol] = await clients(t, server.url, "alice", "bob", "carol");
  const got = { alice: [], bob: [], carol: [] };
  for (const [name, client] of [["alice", alice], ["bob", bob], ["carol", carol]]) {
    client.on("notice", (payload, { source, room }) => {
      got[name].push({ payload, source, room });
    });
  }
  assert.equal(await server.join(alice.source, "general"), undefined);
  await bob.join("general"); // a client's own join, through the package's server
  assert.deepEqual(await server.members("general"), [alice.source, bob.source].sort());
  assert.equal(await server.broadcastTo("general", "notice", "to the room", alice.source), 1);
  await carol.send("notice", "carol is not in it", { room: "general" }).then(
    () => assert.fail("carol is no member"),
    (error) => assert.equal(error.code, "not_member"),
  );
  await alice.send("notice", "from alice", { room: "general" });
  await until(() => got.bob.length === 2 && got.alice.length === 0, 5000, "the room's notices");
  assert.deepEqual(got.bob, [
    { payload: "to the room", source: undefined, room: "general" },
    { payload: "from alice", source: alice.source, room: "general" },
  ]);
  assert.equal(await server.leave(bob.source, "general"), true);
  assert.equal(await server.leave(bob.source, "general"), false);
  assert.deepEqual(await server.members("general"), [alice.source]);
  await assert.rejects(server.join("nobody-here", "general"), { code: "unknown_target" });
  await assert.rejects(server.join(alice.source, "a\u0000b"), { code: "invalid_room" });
  assert.throws(() => server.broadcastTo("", "notice", 1), TypeError);
  assert.equal(got.carol.length, 0);
});

test("events: connection, disconnect, error, response, close; once and off", async (t) => {
  const server = new WebSocketServer({ port: 0 });
  const events = [];
  server.on("connection", (source, info) => events.push(["connection", source, info]));
  server.on("disconnect", (source, info) => events.push(["disconnect", source, info]));
  const errors = [];
  server.on("error", (error) => errors.push(error));
  const responses = [];
  server.on("response", (response) => responses.push(response));
  let onceCalls = 0;
  server.once("connection", () => (onceCalls += 1));

  const alice = await connect(server.url, unique("alice"));
  const bob = await connect(server.url, unique("bob"));
  await until(() => events.length === 2, 5000, "two connection events");
  assert.equal(onceCalls, 1);
  assert.deepEqual(events.map(([kind, source]) => [kind, source]), [["connection", alice.source], ["connection", bob.source]]);
  assert.match(events[0][2].address, /^127\.0\.0\.1:\d+$/);

  // A handler that throws or rejects: the sender gets `handler_error`, the server `error`.
  server.on("throws", () => {
    throw new Error("sync failure");
  });
  server.on("rejects", async () => {
    throw new TypeError("async failure");
  });
  server.on("unwritable", () => ({ big: 1n }));
  await assert.rejects(alice.request("throws"), { code: "handler_error", message: "sync failure" });
  await assert.rejects(alice.request("rejects"), { code: "handler_error", message: "async failure" });
  await assert.rejects(alice.request("unwritable"), { code: "handler_error" });
  assert.equal(errors.length, 3);
  assert.ok(errors.every((e) => e instanceof WsRelayError && e.code === "handler_error" && e.source === alice.source));
  assert.deepEqual(errors.map((e) => e.type), ["throws", "rejects", "unwritable"]);
  assert.equal(errors[0].cause.message, "sync failure");
  // With no `error` listener, a line on stderr, never an uncaught error.
  server.off("error");
  const logged = [];
  const consoleError = console.error;
  console.error = (line) => logged.push(line);
  try {
    await assert.rejects(alice.request("throws"), { code: "handler_error" });
  } finally {
    console.error = consoleError;
  }
  assert.match(logged.join("\n"), /the handler of "throws" failed: sync failure/);

  // A client's answer to a message nobody waits for: `response`.
  bob.on("ask", (payload) => ({ answer: payload * 2 }));
  bob.on("ask-fail", () => {
    throw new Error("no");
  });
  await server.sendTo(bob.source, "ask", 21);
  await server.sendTo(bob.source, "ask-fail", null);
  await until(() => responses.length === 2, 5000, "two responses");
  assert.deepEqual(responses[0], { source: bob.source, type: "ask", payload: { answer: 42 } });
  assert.equal(responses[1].error.code, "handler_error");
  assert.equal(responses[1].error.message, "no");

  server.off("connection");
  await alice.close();
  await until(() => events.length === 3, 5000, "the disconnect event");
  assert.equal(events[2][0], "disconnect");
  assert.equal(events[2][1], alice.source);
  assert.equal(events[2][2].reason, "closed");
  const carol = await connect(server.url, unique("carol"));
  await sleep(50);
  assert.equal(events.length, 3, "no connection listener any more");

  let closed = 0;
  server.on("close", () => (closed += 1));
  const bobClosed = nextEvent(bob, "close");
  await server.close();
  assert.equal(closed, 1);
  assert.equal((await bobClosed).code, 1001);
  await Promise.all([bob.close(), carol.close()]);
  t.after(() => {});
});

test("stats, and close(): requests waiting fail, later calls fail with `closed`", async (t) => {
  const server = new WebSocketServer({ port: 0 });
  const [alice] = await clients(t, server.url, "alice");
  alice.on("never", () => new Promise(() => {}));
  const stats = server.stats();
  assert.equal(stats.connected, 1);
  assert.equal(stats.accepted, 1);
  assert.equal(stats.queuedCalls, 0);
  assert.equal(stats.engineReachable, true);
  const waiting = assert.rejects(server.request(alice.source, "never", null, { timeout: 60_000 }), { code: "closed" });
  await sleep(50);
  const closing = server.close();
  assert.equal(server.close(), closing, "close() twice: the same Promise");
  await closing;
  await waiting;
  await assert.rejects(server.broadcast("x", 1), { code: "closed" });
  await assert.rejects(server.clients(), { code: "closed" });
});

test("options: authSecret, allowedOrigins, www, presence, relay, tls", async (t) => {
  const SECRET = "node server test secret";
  const token = (sub) => {
    const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 60 })}`;
    return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
  };
  const dir = mkdtempSync(join(tmpdir(), "wsrelay-node-server-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "hello.txt"), "hello from www");
  writeFileSync(join(dir, "secret"), `${SECRET}\n`);

  // Tokens, the secret from a file: a verified client connects, a forged one is refused.
  const verified = serve(t, { authSecretFile: join(dir, "secret"), presence: false });
  const alice = await connect(verified.url, "alice", { token: token("alice") });
  const forged = new (await import("wsrelay")).WebSocketClient(verified.url, "mallory", {
    WebSocket,
    token: "not.a.token",
    maxRetries: 0,
  });
  const refused = await nextEvent(forged, "close");
  assert.equal(refused.code, 4401);
  await forged.close();
  // presence: false: no `relay:clients` answer.
  await assert.rejects(alice.request("relay:clients", null, { timeout: 2000 }), (error) => error.code !== undefined);
  await alice.close();

  // www and allowed origins: files on the same port; a browser origin not allowed is refused.
  const site = serve(t, { www: dir, allowedOrigins: ["https://app.example.com"], relay: false });
  const response = await fetch(`http://127.0.0.1:${site.port}/hello.txt`);
  assert.equal(await response.text(), "hello from www");
  const fromElsewhere = new WebSocket(`${site.url}/?source=eve`, { origin: "https://evil.example.com" });
  const closedWith = await new Promise((resolve) => {
    fromElsewhere.on("close", (code) => resolve(code));
    fromElsewhere.on("error", () => resolve("refused"));
  });
  assert.ok(closedWith === 4403 || closedWith === "refused", `closed with ${closedWith}`);
  // relay: false: a message without a handler is consumed, not relayed.
  const [bob, carol] = await clients(t, site.url, "bob", "carol");
  const relayed = [];
  carol.on("chat", (payload) => relayed.push(payload));
  await bob.send("chat", "dropped");
  await sleep(100);
  assert.deepEqual(relayed, []);

  // TLS from PEM text (the test's CA and certificate, WSRELAY_TLS_DIR).
  const tlsDir = process.env.WSRELAY_TLS_DIR;
  assert.ok(tlsDir, "WSRELAY_TLS_DIR is not set: run with `cargo xtask test`");
  const secure = serve(t, {
    tls: { cert: readFileSync(join(tlsDir, "cert.pem"), "utf8"), key: readFileSync(join(tlsDir, "key.pem")) },
  });
  assert.match(secure.url, /^wss:\/\//);
  const ca = readFileSync(join(tlsDir, "ca.pem"));
  class TrustingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { ca });
    }
  }
  const dave = await connect(`wss://localhost:${secure.port}`, "dave", { WebSocket: TrustingWebSocket });
  secure.on("whoami", ({ source }) => source);
  assert.equal(await dave.request("whoami"), "dave");
  await dave.close();
});

test("ping/pong: a client that answers pings stays, one that stops is dropped (stale)", async (t) => {
  const server = serve(t, { pingInterval: 200 });
  const gone = [];
  server.on("disconnect", (source, info) => gone.push([source, info.reason]));
  // Plain WebSocket clients that say nothing: the server's pings are all that is heard.
  const open = (source, options) =>
    new Promise((resolve, reject) => {
      const socket = new WebSocket(`${server.url}/?source=${source}`, options);
      socket.once("open", () => resolve(socket));
      socket.once("error", reject);
    });
  const answering = await open("answers");
  const silent = await open("silent", { autoPong: false });
  t.after(() => answering.close());
  const closed = new Promise((resolve) => silent.once("close", resolve));
  await closed;
  await until(() => gone.length === 1, 5000, "the silent client's disconnect event");
  assert.deepEqual(gone, [["silent", "stale"]]);
  await sleep(500);
  assert.equal(answering.readyState, WebSocket.OPEN, "the answering client is still connected");
  assert.deepEqual(await server.clients(), ["answers"]);
});
