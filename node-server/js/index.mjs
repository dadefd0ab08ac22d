// The ES module entry of wsrelay-server: the same classes as the CommonJS entry (index.js),
// so that `import` and `require` in one program share one server implementation.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const server = require('./index.js');

export const WebSocketServer = server.WebSocketServer;
export const WsRelayError = server.WsRelayError;
