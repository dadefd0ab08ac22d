// Handlers that misbehave: one that throws, one that never settles, one that is slow under a
// burst of 10 000 messages. The server (this process) stays up; senders hear why; a slow
// handler slows its sender through flow control, holding its memory bounded and losing
// nothing. Its calls reach JavaScript many per turn of the event loop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { WebSocketServer } from "wsrelay-server";
import { child, connect, here, sleep, unique, until } from "./helpers.mjs";

test("a handler that throws: its sender gets handler_error, the server an error event", async (t) => {
  const server = new WebSocketServer({ port: 0 });
  t.after(() => server.close());
  const errors = [];
  server.on("error", (error) => errors.push(error));
  server.on("fragile", ({ payload }) => {
    if (payload.bad) throw new RangeError(`bad input ${payload.bad}`);
    return "fine";
  });
  const alice = await connect(server.url, unique("alice"));
  t.after(() => alice.close());
  await assert.rejects(alice.request("fragile", { bad: 7 }), { code: "handler_error", message: "bad input 7" });
  // The connection and the handler go on.
  assert.equal(await alice.request("fragile", { bad: 0 }), "fine");
  assert.equal(errors.length, 1);
  assert.equal(errors[0].cause.name, "RangeError");
});

test("a handler that never settles: the request times out; after handlerTimeout its sender goes on", async (t) => {
  const server = new WebSocketServer({ port: 0, handlerTimeout: 1500 });
  t.after(() => server.close());
  const errors = [];
  server.on("error", (error) => errors.push(error));
  server.on("never", () => new Promise(() => {}));
  server.on("echo", ({ payload }) => payload);
  const alice = await connect(server.url, unique("alice"));
  const bob = await connect(server.url, unique("bob"));
  t.after(() => Promise.all([alice.close(), bob.close()]));
  const started = Date.now();
  await assert.rejects(alice.request("never", null, { timeout: 300 }), { code: "timeout" });
  assert.ok(Date.now() - started < 1400);
  // Other clients are served meanwhile.
  assert.equal(await bob.request("echo", "bob's"), "bob's");
  // Alice's connection runs one handler call at a time: hers waits for the timeout.
  const next = alice.request("echo", "alice's", { timeout: 10_000 });
  assert.equal(await next, "alice's");
  assert.ok(Date.now() - started >= 1400, "after the handler timeout");
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "timeout");
  assert.equal(errors[0].type, "never");
  assert.equal(errors[0].source, alice.source);
  assert.equal(server.stats().unansweredCalls, 0);
});

test("a slow handler under a burst of 10 000 messages: memory bounded, nothing lost", async (t) => {
  const server = new WebSocketServer({ port: 0 });
  t.after(() => server.close());
  const COUNT = 10_000;
  const SIZE = 1000;
  let next = 0;
  let wrong = 0;
  let peakHeap = 0;
  let peakQueued = 0;
  // What JavaScript retains (not the garbage the JSON leaves until V8 collects it): the live
  // heap right after a full collection.
  v8.setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc");
  const retained = () => {
    gc();
    return process.memoryUsage().heapUsed;
  };
  // Turns of the event loop in which handlers ran: calls that arrive together are handed
  // to JavaScript together, several per wake-up.
  let turns = 0;
  let inTurn = false;
  // About 0.1 ms of work per message, on the main thread: slower than the sender.
  server.on("work", ({ payload }) => {
    if (!inTurn) {
      inTurn = true;
      turns += 1;
      queueMicrotask(() => (inTurn = false));
    }
    const until = performance.now() + 0.1;
    while (performance.now() < until);
    if (payload.n !== next || payload.pad.length !== SIZE) wrong += 1;
    next = payload.n + 1;
    if (next % 1000 === 0) peakHeap = Math.max(peakHeap, retained());
    if (next % 100 === 0) {
      const stats = server.stats();
      peakQueued = Math.max(peakQueued, stats.queuedCalls + stats.unansweredCalls);
    }
  });
  await sleep(200);
  const before = retained();
  // The sender in a process of its own: its outbox is its memory, not the server's.
  const sender = child(process.execPath, [join(here, "burst.mjs"), server.url, unique("burst"), String(COUNT), String(SIZE)]);
  t.after(() => sender.stop());
  const report = await sender.json("sent", 120_000);
  assert.equal(await sender.exited, 0, sender.stderr);
  assert.equal(report.failed, 0, JSON.stringify(report));
  await until(() => next === COUNT, 10_000, "every message at the handler");
  assert.equal(wrong, 0, "in order, each once, whole");
  // What waits for JavaScript is bounded by the connection's flow control: at most 256 handler
  // calls queued or unanswered, whatever the sender has left to send; JavaScript holds nothing
  // of the burst.
  assert.ok(peakQueued <= 256, `handler calls queued for JavaScript or unanswered: ${peakQueued}`);
  const grew = (peakHeap - before) / 2 ** 20;
  assert.ok(grew < 8, `the live JavaScript heap grew by ${grew.toFixed(1)} MiB`);
  assert.ok(COUNT / turns >= 10, `${COUNT} calls in ${turns} turns of the event loop`);
  // The sender was slowed to the handler's pace: its sends resolved as the handler went
  // (0.1 ms each, at least), not as fast as the network took them.
  assert.ok(report.ms >= COUNT * 0.1 * 0.8, `all sent in ${report.ms} ms`);
  assert.equal(report.queuedAtOnce, COUNT);
});
