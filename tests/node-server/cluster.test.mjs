// Two Node servers on one Redis (a redis-server of the test's own), each in its own process:
// a client on each chats with the other across them, through the chat handler, and each
// server reaches the other's client (clients(), sendTo, request).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { child, connect, here, startRedis, until } from "./helpers.mjs";

test("two servers on one Redis: clients on each chat across them", async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const servers = ["a", "b"].map((id) => child(process.execPath, [join(here, "cluster-server.mjs"), redis.url, `node-${id}`]));
  t.after(() => servers.forEach((s) => s.stop()));
  const [urlA, urlB] = (await Promise.all(servers.map((s) => s.json("url", 10_000)))).map((r) => r.url);
  const alice = await connect(urlA, "alice");
  const bob = await connect(urlB, "bob");
  t.after(() => Promise.all([alice.close(), bob.close()]));
  const COUNT = 30;
  const got = { alice: [], bob: [] };
  alice.on("chat-message", (data) => got.alice.push(data));
  bob.on("chat-message", (data) => got.bob.push(data));
  for (let i = 0; i < COUNT; i++) {
    await Promise.all([alice.send("chat-message", { message: `alice #${i}` }), bob.send("chat-message", { message: `bob #${i}` })]);
  }
  await until(() => got.alice.length === 2 * COUNT && got.bob.length === 2 * COUNT, 20_000, "every chat message on both sides");
  for (const [name, messages] of Object.entries(got)) {
    for (const sender of ["alice", "bob"]) {
      const theirs = messages.filter((m) => m.sender === sender);
      assert.deepEqual(theirs.map((m) => m.message), Array.from({ length: COUNT }, (_, i) => `${sender} #${i}`), `${name} from ${sender}`);
      // Broadcast by the handler of the sender's own server.
      assert.ok(theirs.every((m) => m.via === (sender === "alice" ? "node-a" : "node-b")));
    }
  }

  // Each server knows the other's client.
  const ask = async (server, command, key) => {
    const before = server.lines.length;
    server.proc.stdin.write(JSON.stringify(command) + "\n");
    await until(() => server.lines.length > before, 10_000, key);
    return JSON.parse(server.lines[before]);
  };
  assert.deepEqual((await ask(servers[0], { clients: true }, "clients")).clients, ["alice", "bob"]);
  const notices = [];
  bob.on("notice", (payload) => notices.push(payload));
  assert.deepEqual(await ask(servers[0], { sendTo: ["bob", "notice", "from a"] }, "sendTo"), { sent: true });
  await until(() => notices.length === 1, 10_000, "bob's notice from server a");
  alice.on("whoami", () => "alice on a");
  assert.deepEqual(await ask(servers[1], { request: ["alice", "whoami", null] }, "request"), { answer: "alice on a" });

  // Closing: each server's process exits by itself.
  for (const server of servers) server.proc.stdin.end();
  assert.deepEqual(await Promise.all(servers.map((s) => s.exited)), [0, 0]);
});
