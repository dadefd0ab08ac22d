// CommonJS keeps working, with the Node build's types (the exports map's node/require entry).
import wsrelay = require("wsrelay");

const client: wsrelay.WebSocketClient = new wsrelay.WebSocketClient("ws://127.0.0.1:9", "cjs", {
  startClosed: true,
});
export const closed: Promise<void> = client.close();
