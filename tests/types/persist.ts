// The `wsrelay/persist` entry as a page writes it (the package README): `persist: true`, the
// events of an earlier page's messages, and `owner`. Checked under moduleResolution bundler
// (tsconfig.bundler.json) with the DOM library: the entry is for browsers.
import init, { WebSocketClient, type RestoredMessage, type WsRelayError } from "wsrelay/persist";

export async function start(url: string): Promise<boolean> {
  await init();
  const client = new WebSocketClient(url, "alice", { persist: true });
  client.addEventListener("restored", (e) => {
    const messages: RestoredMessage[] = e.detail.messages;
    console.log(messages.map((m) => [m.id, m.type, m.payload]));
  });
  client.addEventListener("delivered", (e) => console.log(e.detail.id + 1));
  client.addEventListener("failed", (e) => console.log(e.detail.id, e.detail.error.code));
  await client.send("chat-message", { message: "hi" }).catch((error: WsRelayError) => error.code);
  // @ts-expect-error: `persist` is `true` or `{ path }`, nothing else.
  new WebSocketClient(url, "bob", { persist: "yes" });
  return client.owner;
}
