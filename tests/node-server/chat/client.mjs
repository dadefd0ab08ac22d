// A chat client in Node: Node 20 with npm `ws`, Node 22 with its global WebSocket.
//   node client.mjs URL NAME PEER,PEER,... COUNT
import { createRequire } from "node:module";
import { WebSocketClient } from "wsrelay";
import { chat } from "./chatter.mjs";

const [url, name, peers, count] = process.argv.slice(2);
const options = { minReconnectionDelay: 100, maxReconnectionDelay: 300 };
// The global one when this Node has it (22); npm `ws` otherwise (20).
const websocket = typeof globalThis.WebSocket === "function" ? "global" : "ws";
if (websocket === "ws") options.WebSocket = createRequire(import.meta.url)("ws");
await chat({
  WebSocketClient,
  url,
  name,
  peers: peers.split(","),
  count: Number(count),
  options,
  print: (report) => console.log(JSON.stringify({ ...report, node: process.version, websocket })),
});
