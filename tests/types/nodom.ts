// The web build's declarations in a project without the DOM library (tsconfig.nodom.json: a
// library build, a worker, `lib: ["ES2022"]`): the package needs no DOM, and its types must not
// either. What such a project writes: init, a client, its options and errors.
import init, { WebSocketClient, type WebSocketClientOptions, type WsRelayError } from "wsrelay";

const options: WebSocketClientOptions = { maxReconnectionDelay: 5000 };

export async function start(url: string, bytes: ArrayBuffer): Promise<WebSocketClient> {
  await init({ module_or_path: bytes });
  const client = new WebSocketClient(url, "worker", options);
  client.send("hello", { n: 1 }).catch((error: WsRelayError) => error.code);
  return client;
}
