// A sending process for persist.test.mjs: a client with `persist: { path }` that sends COUNT
// numbered messages to "receiver" from FROM on, in bursts, and reports on stdout, one line
// each: `restored N` for each message restored from the journal, `delivered N` for each
// acknowledged one, `failed N CODE`, and `done` once nothing is left to settle.
//   node persist-child.mjs URL JOURNAL FROM COUNT RECEIVER SOURCE
import { createRequire } from "node:module";
import { WebSocketClient } from "wsrelay";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const [url, path, fromArg, countArg, receiver, source] = process.argv.slice(2);
const from = Number(fromArg);
const count = Number(countArg);
const client = new WebSocketClient(url, source, {
  WebSocket,
  minReconnectionDelay: 50,
  maxReconnectionDelay: 200,
  persist: { path },
});
const numbers = new Map();
client.addEventListener("restored", (event) => {
  for (const message of event.detail.messages) {
    numbers.set(message.id, message.payload);
    console.log(`restored ${message.payload}`);
  }
});
client.addEventListener("delivered", (event) => console.log(`delivered ${numbers.get(event.detail.id)}`));
client.addEventListener("failed", (event) =>
  console.log(`failed ${numbers.get(event.detail.id)} ${event.detail.error.code}`),
);
client.addEventListener("error", (event) => console.log(`error ${event.detail.code} ${event.detail.message}`));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Faster than the relay acknowledges, so that a kill finds many messages queued; the queue is
// kept under its bound (10 000).
let next = from;
while (next < from + count) {
  for (let i = 0; i < 200 && next < from + count && client.queued < 5000; i++, next++) {
    const n = next;
    client.send("n", n, { to: receiver }).then(
      () => console.log(`delivered ${n}`),
      (error) => console.log(`failed ${n} ${error.code}`),
    );
  }
  await sleep(1);
}
while (client.queued > 0) await sleep(10);
console.log("done");
await client.close();
