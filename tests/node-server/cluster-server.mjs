// A chat server of cluster.test.mjs: the original design's chat handler on a server that keeps
// its sessions in Redis, so that several such servers behave as one.
//   node cluster-server.mjs REDIS_URL NODE_ID
// Prints {"url"}; commands on stdin, one JSON per line, answered with one JSON line:
// {"clients":true} -> {"clients":[...]}, {"sendTo":[source,type,payload]} -> {"sent":true},
// {"request":[source,type,payload]} -> {"answer":...}; stdin's end closes the server, and the
// process exits by itself.
import { createInterface } from "node:readline";
import { WebSocketServer } from "wsrelay-server";

const [redis, nodeId] = process.argv.slice(2);
const server = new WebSocketServer({ port: 0, redis, nodeId });
server.on("chat-message", ({ source, payload }) => {
  server.broadcast("chat-message", { sender: source, message: payload.message, timestamp: Date.now(), via: nodeId });
});
server.on("error", (error) => console.error(`${nodeId}: ${error.code}: ${error.message}`));
const print = (value) => console.log(JSON.stringify(value));
const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const command = JSON.parse(line);
  try {
    if (command.clients) print({ clients: await server.clients() });
    else if (command.sendTo) print({ sent: (await server.sendTo(...command.sendTo)) === undefined });
    else if (command.request) print({ answer: await server.request(...command.request, { timeout: 5000 }) });
  } catch (error) {
    print({ error: error.code });
  }
});
lines.on("close", () => server.close());
print({ url: server.url });
