// Declarations of wsrelay-server (written by hand; the same text serves `import` as
// index.d.mts and `require` as index.d.ts). They need no DOM library and no @types/node.

/** Options of `new WebSocketServer(options)`: the relay binary's, durations in milliseconds. */
export interface ServerOptions {
  /** Port to listen on; 0 picks a free one (read it from `server.port`). Default 8080. */
  port?: number;
  /** Address to listen on. Default `127.0.0.1`; `0.0.0.0` or `::` for every interface. */
  host?: string;
  /** Serve the files of this directory over HTTP on the same port. */
  www?: string;
  /** Serve `wss://` (and `www` over `https://`): PEM text or bytes, or PEM files. */
  tls?: { cert: string | Uint8Array; key: string | Uint8Array } | { certFile: string; keyFile: string };
  /** Verify identities: HS256 JSON Web Tokens signed with this secret (`sub` is the source). */
  authSecret?: string | Uint8Array;
  /** The same, the secret read from this file (trailing newline ignored). */
  authSecretFile?: string;
  /** A second connection of a connected source replaces the first (default) or is refused. */
  onDuplicate?: "replace" | "reject";
  /** Browser origins allowed to connect. Default: any, or with `www` only the server's own. */
  allowedOrigins?: string[];
  /** Most clients at once (default 10 000, or what the open-file limit allows). */
  maxConnections?: number;
  /** Most clients at once from one IP address (default: no limit). */
  maxConnectionsPerIp?: number;
  /** Most connections not upgraded yet (default 1024, or what the open-file limit allows). */
  maxPendingConnections?: number;
  /** The same per IP address (default: no limit). */
  maxPendingPerIp?: number;
  /** Time for a TLS handshake and each HTTP request's headers, ms (default 10 000). */
  handshakeTimeout?: number;
  /** Messages per second per client (default 0: none; flow control always holds). */
  rateLimit?: number;
  /** Messages at once after a quiet spell (default twice the rate). */
  rateBurst?: number;
  /** Liveness check period, ms (default 30 000); a silent client is dropped after two. */
  pingInterval?: number;
  /** Keep sessions in the Redis at this URL, shared by every server on it. */
  redis?: string;
  /** This server's name among servers sharing Redis, in logs (default: generated). */
  nodeId?: string;
  /** With `redis`: the most messages a room's log keeps (default 100 000); a client further
   * behind is told how many it lost (an `error` event with code `lost`). */
  roomRetention?: number;
  /** With `redis`: how long a room's log without new messages is kept, ms (default 600 000). */
  roomIdle?: number;
  /** Announce joins and leaves as `relay:presence` and answer `relay:clients` (default true). */
  presence?: boolean;
  /** Relay messages of types without a handler between clients (default true). */
  relay?: boolean;
  /** Largest message in bytes (default 1 MiB). */
  maxMessageSize?: number;
  /** How long a disconnected client's session is kept for a resume, ms (default 60 000). */
  sessionGrace?: number;
  /** How long `close()` waits for connections to close, ms (default 5000). */
  shutdownTimeout?: number;
  /** How long a handler may take, ms (default 30 000): then its sender gets a
   * `handler_error` and the server an `error` (code `timeout`). Each connection runs one
   * handler call at a time, so one that never settled would hold up its sender for good. */
  handlerTimeout?: number;
  /** The server's log lines on stderr (default `warn`; `RUST_LOG` replaces it). */
  logLevel?: "off" | "error" | "warn" | "info" | "debug" | "trace";
  /** Log lines as text (default) or JSON objects. */
  logFormat?: "text" | "json";
}

/** A message delivered to a handler. */
export interface IncomingMessage<P = any> {
  /** The sender, as the server registered it (never taken from the message). */
  readonly source: string;
  /** The message's payload (`null` when it had none). */
  readonly payload: P;
  /** The message's type. */
  readonly type: string;
}

/** A message handler: what it returns or resolves to is sent back as the response
 * (`undefined`: none); a throw or rejection answers with a `handler_error`. */
export type MessageHandler<P = any, R = unknown> = (message: IncomingMessage<P>) => R | PromiseLike<R>;

/** The `connection` event's details. */
export interface ConnectionInfo {
  /** The peer's address and port (`null` when unknown). */
  address: string | null;
}

/** Why a connection ended. */
export type DisconnectReason =
  | "closed"
  | "failed"
  | "replaced"
  | "superseded"
  | "slow_consumer"
  | "stale"
  | "shutdown"
  | "too_large"
  | "invalid_utf8"
  | "protocol_error"
  | "flooding"
  | "expired"
  | (string & {});

/** The `disconnect` event's details. */
export interface DisconnectInfo {
  reason: DisconnectReason;
  /** The client's close code, when it closed with one. */
  code: number | null;
}

/** A client's answer to a message of the server's (`sendTo`, `broadcast`) that no request
 * waits for: the `response` event. */
export interface ClientResponse {
  source: string;
  type: string;
  /** The answer's payload, unless the client's handler failed. */
  payload?: unknown;
  /** The client handler's error. */
  error?: WsRelayError;
}

/** `request`'s options. */
export interface RequestOptions {
  /** Milliseconds to wait for the response (default 30 000). */
  timeout?: number;
}

/** The server's counters. */
export interface ServerStats {
  /** Clients connected now. */
  connected: number;
  /** Sessions kept for a resume after their client disconnected. */
  parkedSessions: number;
  /** Upgrades accepted since start. */
  accepted: number;
  /** Upgrades refused (origin, token, duplicate, limits). */
  rejected: number;
  /** Clients closed for staying behind too long (1013; they may resume). */
  slowConsumers: number;
  /** Times a client's message waited for a recipient that was behind (flow control). */
  blocked: number;
  /** Connections dropped for not answering pings. */
  stale: number;
  /** Invalid frames answered with `~error`. */
  invalidFrames: number;
  /** Whether the engine's store answers (always without Redis). */
  engineReachable: boolean;
  /** Handler calls waiting for the JavaScript thread now. */
  queuedCalls: number;
  /** Handler calls taken by JavaScript and not answered yet. */
  unansweredCalls: number;
}

/** An error with a `code` to branch on: `unknown_target`, `timeout`, `closed`,
 * `handler_error`, `no_handler`, `overflow`, `unavailable`, `invalid_option`, `EADDRINUSE`... */
export declare class WsRelayError extends Error {
  readonly name: "WsRelayError";
  readonly code: string;
  /** The message type, for a handler's error. */
  readonly type?: string;
  /** The sender, for a handler's error. */
  readonly source?: string;
}

/** The events of `on(event, listener)`. */
export interface ServerEvents {
  connection: (source: string, info: ConnectionInfo) => void;
  disconnect: (source: string, info: DisconnectInfo) => void;
  error: (error: WsRelayError) => void;
  response: (response: ClientResponse) => void;
  close: () => void;
}

/** The wsrelay server, running in this process. */
export declare class WebSocketServer {
  /** Listens on `port` (0: a free one) of 127.0.0.1, or as `options` say. Listens before it
   * returns: throws `EADDRINUSE` and the like, and `TypeError` for a bad option. */
  constructor(portOrOptions?: number | ServerOptions);

  /** The port it listens on. */
  readonly port: number;
  /** The address it listens on. */
  readonly host: string;
  /** Where clients connect: `ws://host:port` (`wss://` with TLS). */
  readonly url: string;
  /** `{ address, port }`, as `net.Server#address()`. */
  address(): { address: string; port: number };

  /** A listener of a server event. */
  on<E extends keyof ServerEvents>(event: E, listener: ServerEvents[E]): this;
  /** The handler of messages of `type` (one per type: `on` replaces it). */
  on<P = any, R = unknown>(type: string, handler: MessageHandler<P, R>): this;
  /** A listener of a server event, called once. */
  once<E extends keyof ServerEvents>(event: E, listener: ServerEvents[E]): this;
  /** Removes an event's listener (all of them without one). */
  off<E extends keyof ServerEvents>(event: E, listener?: ServerEvents[E]): this;
  /** Removes the handler of messages of `type`. */
  off(type: string): this;

  /** Sends a message to the client `source`; resolves once it is in its mailbox. */
  sendTo(source: string, type: string, payload?: unknown): Promise<void>;
  /** Sends a message to every client but `excludeSource`; resolves with the recipients. */
  broadcast(type: string, payload?: unknown, excludeSource?: string | null): Promise<number>;
  /** Makes the client `source` a member of `room` (for its session's life). */
  join(source: string, room: string): Promise<void>;
  /** The client `source` leaves `room`; resolves with whether it was a member. */
  leave(source: string, room: string): Promise<boolean>;
  /** Sends a message to every member of `room` but `excludeSource`; resolves with the recipients. */
  broadcastTo(room: string, type: string, payload?: unknown, excludeSource?: string | null): Promise<number>;
  /** The members of `room` connected now, sorted. */
  members(room: string): Promise<string[]>;
  /** A request to the client `source`; resolves with its handler's answer. */
  request<R = any>(source: string, type: string, payload?: unknown, options?: RequestOptions): Promise<R>;
  /** The sources of the connected clients, sorted. */
  clients(): Promise<string[]>;
  /** The server's counters. */
  stats(): ServerStats;
  /** Closes every connection (1001) and stops; then nothing of it holds the process open. */
  close(): Promise<void>;
}
