// The original design's chat server, as a program (compiled by `tsc --strict`, run by
// chat.test.mjs): every chat message is broadcast by the handler with its `sender` set from
// the `source` the server registered, never from the message. The admin client asks for the
// announcement of the original example, then for the shutdown; after `close()` nothing holds
// the process and it exits by itself.
//
//   PORT=0 WWW=DIR node build/chat/server.js   (prints {"url": "ws://127.0.0.1:PORT"})
import { WebSocketServer } from "wsrelay-server";

interface ChatMessage {
  message: string;
}

const port = Number(process.env.PORT ?? 8080);
const www = process.env.WWW;
const server = new WebSocketServer(www === undefined ? port : { port, www });

server.on("chat-message", ({ source, payload }: { source: string; payload: ChatMessage }) => {
  server.broadcast("chat-message", { sender: source, message: payload.message, timestamp: Date.now() });
});

server.on("restart-notice", async ({ source }) => {
  if (source !== "admin-client") throw new Error("only the admin may announce");
  await server.sendTo("client123", "private-message", { message: "This is for you only" });
  const told = await server.broadcast(
    "announcement",
    { message: "Server is restarting in 5 minutes" },
    "admin-client",
  );
  return { told };
});

server.on("shutdown", ({ source }) => {
  if (source === "admin-client") void server.close();
});

server.on("error", (error) => console.error(`chat server: ${error.code}: ${error.message}`));
server.on("close", () => console.log(JSON.stringify({ closed: true })));
console.log(JSON.stringify({ url: server.url }));
