// The clients of many.test.mjs: N plain WebSocket clients (npm `ws`, the bare protocol:
// `?source=ID`, `{"type", "payload"}`), opened 100 at a time.
//   node many.mjs URL N
// Prints {"connected":N}; then, for each line on stdin, {"messages":{TYPE:COUNT},"closed":{CODE:COUNT}}
// (messages counted per type over all clients).
import { createInterface } from "node:readline";
import { createRequire } from "node:module";

const WebSocket = createRequire(import.meta.url)("ws");
const [url, countArg] = process.argv.slice(2);
const count = Number(countArg);
const messages = {};
const closed = {};
const sockets = [];
for (let first = 0; first < count; first += 100) {
  const batch = [];
  for (let i = first; i < Math.min(first + 100, count); i++) {
    const socket = new WebSocket(`${url}/?source=c${i}`);
    socket.on("message", (data) => {
      const type = JSON.parse(data).type;
      messages[type] = (messages[type] ?? 0) + 1;
    });
    socket.on("close", (code) => {
      closed[code] = (closed[code] ?? 0) + 1;
    });
    batch.push(new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    }));
    sockets.push(socket);
  }
  await Promise.all(batch);
}
console.log(JSON.stringify({ connected: sockets.length }));
const lines = createInterface({ input: process.stdin });
lines.on("line", () => console.log(JSON.stringify({ messages, closed })));
lines.on("close", () => process.exit(0));
