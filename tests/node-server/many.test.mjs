// 5 000 clients connected to one Node server (this process): every connection event, the
// list of clients, a broadcast reaching each of them once, and close() closing them all.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { WebSocketServer } from "wsrelay-server";
import { child, here, until } from "./helpers.mjs";

test("5 000 clients on one server", async (t) => {
  const N = 5000;
  const server = new WebSocketServer({ port: 0 });
  t.after(() => server.close());
  const connected = new Set();
  const disconnected = new Set();
  server.on("connection", (source) => connected.add(source));
  server.on("disconnect", (source) => disconnected.add(source));
  const clients = child(process.execPath, [join(here, "many.mjs"), server.url, String(N)]);
  t.after(() => clients.stop());
  await clients.json("connected", 120_000);
  await until(() => connected.size === N, 30_000, `${N} connection events (${connected.size})`);
  assert.equal(server.stats().connected, N);
  const list = await server.clients();
  assert.equal(list.length, N);
  assert.equal(new Set(list).size, N);

  assert.equal(await server.broadcast("hello", { to: "everyone" }), N);
  const counts = async () => {
    const before = clients.lines.length;
    clients.proc.stdin.write("count\n");
    await until(() => clients.lines.length > before, 10_000, "the clients' counts");
    return JSON.parse(clients.lines[before]);
  };
  await until(async () => (await counts()).messages.hello === N, 30_000, "the broadcast at every client");
  assert.equal((await counts()).messages.hello, N, "each once");

  await server.close();
  await until(async () => (await counts()).closed["1001"] === N, 30_000, "every client closed with 1001");
  await until(() => disconnected.size === N, 10_000, `${N} disconnect events (${disconnected.size})`);
  clients.proc.stdin.end();
  assert.equal(await clients.exited, 0);
});
