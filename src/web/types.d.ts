
/**
 * Options of `new WebSocketClient(url, source, options)`. Durations are in milliseconds.
 * The names and defaults are those of the core's option table (`Options::NAMES`).
 */
export interface WebSocketClientOptions {
  /** Delay before the first reconnect attempt. Default 1000. */
  minReconnectionDelay?: number;
  /** Cap on the delay between attempts. Default 10000. */
  maxReconnectionDelay?: number;
  /** Each further attempt waits this many times longer (at least 1). Default 1.3. */
  reconnectionDelayGrowFactor?: number;
  /** Fraction of randomness drawn for every attempt, 0 to 1 (0 disables it). Default 0.3. */
  reconnectionJitter?: number;
  /** A connection must stay open this long before the retry count resets. Default 5000. */
  minUptime?: number;
  /** How long an attempt may take, up to the server's welcome. Default 4000. */
  connectionTimeout?: number;
  /** Give up after this many failed attempts in a row. Default `Infinity`: never. */
  maxRetries?: number;
  /** Do not connect until `reconnect()` is called. Default false. */
  startClosed?: boolean;
  /** Most messages waiting for acknowledgement (queued or in flight). Default 10000. */
  maxEnqueuedMessages?: number;
  /** Most bytes waiting for acknowledgement. Default 16 MiB. */
  maxEnqueuedBytes?: number;
  /** Largest encoded message. Default 1 MiB (the server's default limit). */
  maxMessageSize?: number;
  /** An application ping is sent this often while open. Default 25000. */
  heartbeatInterval?: number;
  /** The connection is declared dead after this long without any frame. Default 45000. */
  heartbeatTimeout?: number;
  /** Timeout of a `request()` that names none. Default 30000. */
  requestTimeout?: number;
  /** Received frames are acknowledged at most this long after arrival. Default 1000. */
  ackDelay?: number;
  /** ...or at once when this many are unacknowledged. Default 128. */
  ackEvery?: number;
  /** ...or at once when this many bytes of frames are unacknowledged (0: every frame). Default 64 KiB. */
  ackBytes?: number;
  /** How long `close()` waits for messages in flight to be acknowledged. Default 5000. */
  closeTimeout?: number;
  /** Close codes after which the client stops reconnecting. Default [1002, 1008, 4401, 4403, 4409]. */
  stopCodes?: number[];
  /** Log every frame and connection attempt to the console. Default false. */
  debug?: boolean;
  /**
   * A credential for a relay that verifies identities, sent as the `token` query parameter:
   * a string, or a function called before every connection attempt (so an expiring token is
   * renewed on reconnect, and after the relay closes with 4001 when one expires) that returns
   * the token or a Promise of it. A function that throws or rejects fails that attempt, which
   * is retried with the usual backoff.
   */
  token?: string | (() => string | PromiseLike<string>);
  /**
   * The WebSocket class to use where the runtime has none (Node 20: `require("ws")`).
   * Default: `globalThis.WebSocket`.
   */
  WebSocket?: abstract new (url: string) => unknown;
  /**
   * Keeps the client's state in a journal, so that a new process or page carries on where
   * this one stopped, even if it was killed. In browsers, `true`: an IndexedDB database per
   * source, through the `wsrelay/persist` entry (`import init, { WebSocketClient } from
   * "wsrelay/persist"`; the main entry refuses it with `invalid_option`, its module leaves the
   * journal out); one tab of a source owns the journal and the connection at a time (a Web
   * Lock), the others send and receive through it (a BroadcastChannel) and take over when it
   * closes. In Node.js 20.16+, `{ path }`: a file. The messages queued and not seen
   * acknowledged are sent, once, in order, before anything sent later (a `restored` event
   * names them; their outcomes come as `delivered` and `failed` events), and a message whose
   * handler finished is not handled again. One path per client. Storage that fails is
   * reported as an `error` event with code `storage`, and the client goes on in memory.
   * PROTOCOL.md section 13 says what a crash between two steps can do.
   */
  persist?: true | { path: string };
}

/** A message an earlier process queued, restored from the journal (`restored` event). */
export interface RestoredMessage<T = any> {
  /** Its id: its `delivered` or `failed` event (or, for a request, `response`) carries it. */
  id: number;
  type: string;
  payload?: T;
  /** The client it is addressed to, if any. */
  to?: string;
  /** A request: its outcome is a `response` event (or `failed`). */
  request: boolean;
}

/** Options of `send()`. */
export interface SendOptions {
  /** Deliver to this client (`source`) only, instead of every other client. */
  to?: string;
  /**
   * Deliver to every other member of this room, instead of every other client. The client
   * must have joined it (`join`), else the send fails with `not_member`.
   */
  room?: string;
  /** Fail with `expired` if the message could not be sent within this many milliseconds. */
  ttl?: number;
}

/** Options of `request()`. */
export interface RequestOptions {
  /** Ask this client (`source`); without it, the server answers or relays to everybody. */
  to?: string;
  /** Ask the other members of this room (joined first); the first answer settles it. */
  room?: string;
  /** Reject with `timeout` after this many milliseconds. Default `requestTimeout`. */
  timeout?: number;
}

/** The stable codes of `WsRelayError.code` (a peer may use its own codes too). */
export type WsRelayErrorCode =
  | "queue_full" | "queue_bytes_full" | "too_large" | "invalid_payload" | "invalid_type"
  | "expired" | "timeout" | "closed" | "rejected" | "retries_exhausted" | "transport"
  | "protocol" | "handler_error" | "unanswerable" | "unknown_target" | "invalid_option"
  | "no_websocket" | "session_lost" | "overflow" | "unconfirmed" | "no_handler"
  | "not_member" | "forbidden" | "lost"
  | (string & {});

/** Every Promise of the client rejects with this; branch on `code`. */
export interface WsRelayError extends Error {
  name: "WsRelayError";
  code: WsRelayErrorCode;
  /** For `rejected` (and `unconfirmed` by a rejection): the close code that made the client stop (4409, 1008...). */
  closeCode?: number;
  /**
   * For `unconfirmed`: why the client stopped (`rejected`, `retries_exhausted`, `closed`). The
   * message had been sent and was not acknowledged: it may have been delivered. A message that
   * fails with `rejected` itself was never sent.
   */
  cause?: WsRelayError;
  /** For `handler_error` and `unanswerable` events: the message type of the handler. */
  type?: string;
}

/**
 * What a handler learns about the message besides its payload: the message as it arrived
 * (its envelope, `PROTOCOL.md` section 2), read once by the runtime's `JSON.parse`.
 */
export interface MessageInfo {
  type: string;
  /** The sender as the server registered it; undefined when the server sent it. */
  source?: string;
  /** The sender's message id; undefined for messages that cannot be answered. */
  id?: number;
  /** Set when the message was sent to this client alone (`options.to` of its sender). */
  to?: string;
  /** `true` when the sender waits for a response (its `request`). */
  request?: boolean;
  /**
   * The room it was sent to (`send(type, payload, { room })`, or the relay's presence of a
   * room); undefined for a message to this client alone or to everyone.
   */
  room?: string;
}

/**
 * Handles a message. The value returned (or resolved) is sent back as the response;
 * `undefined` sends none; a throw or rejection sends an error response `handler_error`.
 * A value for a message without `id` cannot be sent: an `error` event `unanswerable` says so.
 */
export type MessageHandler<T = any, R = unknown> =
  (payload: T, message: MessageInfo) => R | undefined | void | PromiseLike<R | undefined | void>;

/** A response that no pending request waits for (e.g. the answer to a plain `send`). */
export interface ResponseDetail<T = any> {
  type: string;
  /** The id of our message it answers. */
  re: number;
  source?: string;
  payload?: T;
  error?: WsRelayError;
}

/** What `stats()` returns. Times are in milliseconds. */
export interface ClientStats {
  /** The last round-trip time (hello to welcome, then each heartbeat ping to its pong). */
  rtt?: number;
  /** The smoothed round-trip time. */
  smoothedRtt?: number;
  /** How many times the connection opened again after the first open. */
  reconnects: number;
  /** Frames sent again on a new connection because the server had not acknowledged them. */
  retransmitted: number;
  /** Messages waiting to be sent or acknowledged. */
  queuedMessages: number;
  /** Bytes of those messages' frames. */
  queuedBytes: number;
  /** Messages the server acknowledged. */
  acknowledged: number;
  /** Messages that failed. */
  failed: number;
}

/**
 * An event of the client: a `CustomEvent` at run time, declared structurally so that the
 * declarations need neither the DOM library nor Node's.
 */
export interface WsRelayEvent<D> {
  readonly type: string;
  readonly detail: D;
}

/** The `detail` of each event of a `WebSocketClient`. */
export interface WebSocketClientEventMap {
  open: { resumed: boolean };
  /**
   * The server no longer held this client's session when it reconnected: messages sent to it
   * meanwhile are lost (`lost` of them, when the server knows). Comes before `open` with
   * `resumed: false`, and only after an earlier session.
   */
  sessionlost: { lost: number | null };
  close: { code: number; reason: string; reconnecting: boolean };
  reconnecting: { attempt: number; delay: number };
  /**
   * Something went wrong that no Promise reports. With code `lost`: messages of a room (or
   * broadcasts) fell off the server's retention of the room's log before this client had
   * them (a relay cluster on Redis); the message says which room and how many.
   */
  error: WsRelayError;
  response: ResponseDetail;
  /**
   * The first event of a client created with `persist`, dispatched once the constructor has
   * returned: the messages an earlier process queued and did not see settled, sent again.
   */
  restored: { messages: RestoredMessage[] };
  /** A restored message was acknowledged by the server (nobody awaits it any more). */
  delivered: { id: number };
  /** A restored message failed. */
  failed: { id: number; error: WsRelayError };
}

/** `addEventListener` options (a structural copy of the DOM's). */
export interface ListenerOptions {
  capture?: boolean;
  once?: boolean;
  passive?: boolean;
  signal?: unknown;
}

/**
 * A reliable WebSocket client for browsers and Node.js.
 *
 * Construct it synchronously; it connects in the background, reconnects with backoff, queues
 * what is sent while disconnected and resolves each `send` when the server has acknowledged it.
 */
export class WebSocketClient {
  /**
   * Creates a client for `url` (`ws://` or `wss://`) with identity `source` (1 to 128 bytes).
   * Throws a `WsRelayError` (`invalid_option`, `no_websocket`) for unusable arguments.
   */
  constructor(url: string, source: string, options?: WebSocketClientOptions);
  /** Resolves when the server has acknowledged the message; rejects with a `WsRelayError`. */
  send<T = unknown>(type: string, payload?: T, options?: SendOptions): Promise<void>;
  /**
   * Resolves with the response's payload; rejects with `timeout`, with `no_handler` at once when
   * the responder has no handler for `type`, or with the responder's error.
   */
  request<R = any, T = unknown>(type: string, payload?: T, options?: RequestOptions): Promise<R>;
  /**
   * Joins `room` (1 to 128 characters, no control characters): resolves once the server has
   * made this client's session a member, after which it receives what is sent to the room.
   * Membership belongs to the session: it is kept across reconnections, and gone when the
   * session is lost (`sessionlost`: join again). Rejects with `forbidden` when the client's
   * token does not allow the room.
   */
  join(room: string): Promise<void>;
  /** Leaves `room`: resolves once the server has it. */
  leave(room: string): Promise<void>;
  /** Registers the handler of `type`, replacing any previous one. */
  on<T = any, R = unknown>(type: string, handler: MessageHandler<T, R>): void;
  /** Removes the handler of `type`; such messages are then ignored, requests refused `no_handler`. */
  off(type: string): void;
  addEventListener<K extends keyof WebSocketClientEventMap>(
    type: K,
    listener: (event: WsRelayEvent<WebSocketClientEventMap[K]>) => void,
    options?: boolean | ListenerOptions,
  ): void;
  removeEventListener<K extends keyof WebSocketClientEventMap>(
    type: K,
    listener: (event: WsRelayEvent<WebSocketClientEventMap[K]>) => void,
    options?: boolean | ListenerOptions,
  ): void;
  /** Closes gracefully; resolves once closed. */
  close(code?: number, reason?: string): Promise<void>;
  /** Connects now (after `close()`, with `startClosed`, or replacing the connection). */
  reconnect(): void;
  /** Round-trip times, reconnects, retransmissions, the queue and message outcomes. */
  stats(): ClientStats;
  /** 0 connecting (or waiting to reconnect), 1 open, 2 closing, 3 closed. */
  readonly readyState: 0 | 1 | 2 | 3;
  /** The identity this client connects with. */
  readonly source: string;
  /** The URL connected to, `source` parameter included. */
  readonly url: string;
  /** Messages waiting to be sent or acknowledged. */
  readonly queued: number;
  /** Failed connection attempts since the last stable connection. */
  readonly retryCount: number;
  /** Frees the client's memory at once (it is also freed once closed and unreferenced). */
  free(): void;
}
