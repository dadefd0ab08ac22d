// The whole API of wsrelay-server as TypeScript users write it: `tsc --strict` must accept
// every line, and reject each line under `@ts-expect-error`. Type-checked only, never run.
import {
  WebSocketServer,
  WsRelayError,
  type ClientResponse,
  type ConnectionInfo,
  type DisconnectInfo,
  type IncomingMessage,
  type ServerOptions,
  type ServerStats,
} from "wsrelay-server";

// Neither the DOM library nor @types/node here: a stand-in for console.log.
declare function log(...values: unknown[]): void;

const options: ServerOptions = {
  port: 0,
  host: "0.0.0.0",
  www: "./public",
  tls: { cert: "-----BEGIN CERTIFICATE-----", key: new Uint8Array(8) },
  authSecret: "secret",
  onDuplicate: "reject",
  allowedOrigins: ["https://app.example.com"],
  maxConnections: 5000,
  maxConnectionsPerIp: 50,
  maxPendingConnections: 512,
  maxPendingPerIp: 8,
  handshakeTimeout: 5000,
  rateLimit: 100,
  rateBurst: 200,
  pingInterval: 10_000,
  redis: "redis://127.0.0.1:6379",
  nodeId: "a",
  presence: false,
  relay: false,
  maxMessageSize: 65536,
  sessionGrace: 30_000,
  shutdownTimeout: 2000,
  logLevel: "info",
  logFormat: "json",
};
const files: ServerOptions = { tls: { certFile: "cert.pem", keyFile: "key.pem" }, authSecretFile: "secret" };
// @ts-expect-error: durations are numbers of milliseconds
const wrong: ServerOptions = { pingInterval: "10s" };
// @ts-expect-error: no such option
const typo: ServerOptions = { allowedOrigin: ["x"] };

async function everything(server: WebSocketServer): Promise<void> {
  const port: number = server.port;
  const url: string = server.url;
  const host: string = server.host;
  const { address } = server.address();

  // Handlers: `{ source, payload, type }`; the value (or Promise) is the response.
  server.on("add", ({ payload }: IncomingMessage<[number, number]>) => payload[0] + payload[1]);
  server.on<{ name: string }, string>("greet", async ({ source, payload }) => `hello ${payload.name} from ${source}`);
  server.on("anything", (message) => {
    const type: string = message.type;
    return undefined;
  });
  server.off("add");

  // Events.
  server.on("connection", (source: string, info: ConnectionInfo) => log(source, info.address));
  server.on("disconnect", (source: string, info: DisconnectInfo) => log(source, info.reason, info.code));
  server.on("error", (error: WsRelayError) => log(error.code, error.type, error.source));
  server.on("response", (response: ClientResponse) => log(response.source, response.payload, response.error));
  server.once("close", () => log("closed"));
  server.off("connection");
  // @ts-expect-error: a `connection` listener gets the source, a string
  server.on("connection", (source: number) => source);

  await server.sendTo("alice", "notice", { text: "hi" });
  const recipients: number = await server.broadcast("announcement", "everyone", "alice");
  await server.broadcast("announcement", null);
  const answer = await server.request<{ ok: boolean }>("alice", "ping", {}, { timeout: 1000 });
  const ok: boolean = answer.ok;
  const online: string[] = await server.clients();
  const stats: ServerStats = server.stats();
  const connected: number = stats.connected + stats.queuedCalls;
  try {
    await server.request("nobody", "ping");
  } catch (error) {
    if (error instanceof WsRelayError && error.code === "unknown_target") log(error.message);
  }
  // @ts-expect-error: the timeout is a number of milliseconds
  await server.request("alice", "ping", null, { timeout: "1s" });
  await server.close();
  log(port, url, host, address, recipients, ok, online, connected, wrong, typo, files);
}

everything(new WebSocketServer(options));
everything(new WebSocketServer());
