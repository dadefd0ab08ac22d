// The original design's server example under CommonJS (`require`): type-checked only.
import wsrelay = require("wsrelay-server");

const server = new wsrelay.WebSocketServer(8080);
server.on("chat-message", ({ source, payload }) => {
  server.broadcast("chat-message", { sender: source, message: payload.message, timestamp: Date.now() });
});
server.sendTo("client123", "private-message", { message: "This is for you only" });
server.broadcast("announcement", { message: "Server is restarting in 5 minutes" }, "admin-client");
server.close();
