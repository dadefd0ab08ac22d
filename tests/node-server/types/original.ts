// The original design's server example, as written there: `tsc --strict` must accept it
// (ES module; original.cts is the same under CommonJS). Type-checked only, never run.
import { WebSocketServer } from "wsrelay-server";

const server = new WebSocketServer(8080);
server.on("chat-message", ({ source, payload }) => {
  server.broadcast("chat-message", { sender: source, message: payload.message, timestamp: Date.now() });
});
server.sendTo("client123", "private-message", { message: "This is for you only" });
server.broadcast("announcement", { message: "Server is restarting in 5 minutes" }, "admin-client");
server.close();
