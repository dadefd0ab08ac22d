// The burst of handlers.test.mjs: one wsrelay client sends COUNT messages of SIZE characters
// at once (its outbox takes them all) and reports when every send has resolved, i.e. when
// the server has consumed them all.
//   node burst.mjs URL SOURCE COUNT SIZE
import { createRequire } from "node:module";
import { WebSocketClient } from "wsrelay";

const [url, source, countArg, sizeArg] = process.argv.slice(2);
const count = Number(countArg);
const pad = "x".repeat(Number(sizeArg));
const client = new WebSocketClient(url, source, {
  WebSocket: createRequire(import.meta.url)("ws"),
  maxEnqueuedMessages: count * 2,
  maxEnqueuedBytes: 2 ** 30,
});
await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
let failed = 0;
let firstError = null;
const started = performance.now();
const sends = [];
for (let n = 0; n < count; n++) {
  sends.push(
    client.send("work", { n, pad }).catch((error) => {
      failed += 1;
      firstError ??= String(error.code ?? error);
    }),
  );
}
const queuedAtOnce = client.queued;
await Promise.all(sends);
const ms = performance.now() - started;
console.log(JSON.stringify({ sent: count, failed, firstError, queuedAtOnce, ms }));
await client.close();
