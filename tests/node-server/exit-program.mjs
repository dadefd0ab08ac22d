// The program of exit.test.mjs: a server with handlers and listeners, a client connected, a
// request left waiting, then close(); it must end by itself. It ends with one line:
// {"closed":true,"pending":CODE,"after":CODE}.
import { createRequire } from "node:module";
import { WebSocketClient } from "wsrelay";
import { WebSocketServer } from "wsrelay-server";

const server = new WebSocketServer({ port: 0 });
server.on("echo", ({ payload }) => payload);
server.on("connection", () => {});
server.on("error", () => {});
const client = new WebSocketClient(server.url, "alice", { WebSocket: createRequire(import.meta.url)("ws") });
client.on("never", () => new Promise(() => {}));
await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
if ((await client.request("echo", "hi")) !== "hi") throw new Error("no echo");
const pending = server.request("alice", "never", null, { timeout: 60_000 }).catch((error) => error.code);
await server.close();
const after = await server.broadcast("x", 1).catch((error) => error.code);
// The client would reconnect for ever: it is the program's, and closed too.
await client.close();
console.log(JSON.stringify({ closed: true, pending: await pending, after }));
