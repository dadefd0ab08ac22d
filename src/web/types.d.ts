
/** Options of `new WebSocketClient(url, source, options)`. Durations are in milliseconds. */
export interface WebSocketClientOptions {
  /** Delay before the first reconnect attempt. Default 1000. */
  minReconnectionDelay?: number;
  /** Cap on the delay between attempts. Default 10000. */
  maxReconnectionDelay?: number;
  /** Each further attempt waits this many times longer. Default 1.3. */
  reconnectionDelayGrowFactor?: number;
  /** Fraction of randomness drawn for every attempt (0 disables it). Default 0.3. */
  reconnectionJitter?: number;
  /** A connection must stay open this long before the retry count resets. Default 5000. */
  minUptime?: number;
  /** How long an attempt may take, up to the server's welcome. Default 4000. */
  connectionTimeout?: number;
  /** Give up after this many failed attempts in a row. Default: never. */
  maxRetries?: number;
  /** Do not connect until `reconnect()` is called. Default false. */
  startClosed?: boolean;
  /** Most messages waiting for acknowledgement (queued or in flight). Default 10000. */
  maxEnqueuedMessages?: number;
  /** Most bytes waiting for acknowledgement. Default 16 MiB. */
  maxEnqueuedBytes?: number;
  /** Largest encoded message. Default 1 MiB (the server's default limit). */
  maxMessageSize?: number;
  /** An application ping is sent this often while open. Default 15000. */
  heartbeatInterval?: number;
  /** The connection is declared dead after this long without any frame. Default 30000. */
  heartbeatTimeout?: number;
  /** Timeout of a `request()` that names none. Default 30000. */
  requestTimeout?: number;
  /** How long `close()` waits for messages in flight to be acknowledged. Default 5000. */
  closeTimeout?: number;
  /** Log every frame and connection attempt to the console. Default false. */
  debug?: boolean;
  /**
   * The WebSocket class to use where the runtime has none (Node 20: `require('ws')`).
   * Default: `globalThis.WebSocket`.
   */
  WebSocket?: new (url: string) => unknown;
}

/** Options of `send()`. */
export interface SendOptions {
  /** Deliver to this client (`source`) only, instead of every other client. */
  to?: string;
  /** Fail with `expired` if the message could not be sent within this many milliseconds. */
  ttl?: number;
}

/** Options of `request()`. */
export interface RequestOptions {
  /** Ask this client (`source`); without it, the server answers or relays to everybody. */
  to?: string;
  /** Reject with `timeout` after this many milliseconds. Default `requestTimeout`. */
  timeout?: number;
}

/** The stable codes of `WsRelayError.code` (a peer may use its own codes too). */
export type WsRelayErrorCode =
  | "queue_full" | "queue_bytes_full" | "too_large" | "invalid_payload" | "invalid_type"
  | "expired" | "timeout" | "closed" | "rejected" | "retries_exhausted" | "transport"
  | "protocol" | "handler_error" | "unknown_target" | "invalid_option" | "no_websocket"
  | (string & {});

/** Every Promise of the client rejects with this; branch on `code`. */
export interface WsRelayError extends Error {
  name: "WsRelayError";
  code: WsRelayErrorCode;
  /** For `rejected`: the close code that made the client stop (4409, 1008...). */
  closeCode?: number;
}

/** What a handler learns about the message besides its payload. */
export interface MessageInfo {
  type: string;
  /** The sender as the server registered it; undefined when the server sent it. */
  source?: string;
  /** The sender's message id; undefined for messages that cannot be answered. */
  id?: number;
}

/**
 * Handles a message. The value returned (or resolved) is sent back as the response;
 * `undefined` sends none; a throw or rejection sends an error response `handler_error`.
 */
export type MessageHandler<T = any, R = unknown> =
  (payload: T, message: MessageInfo) => R | undefined | Promise<R | undefined>;

/** A response that no pending request waits for (e.g. the answer to a plain `send`). */
export interface ResponseDetail {
  type: string;
  /** The id of our message it answers. */
  re: number;
  source?: string;
  payload?: any;
  error?: WsRelayError;
}

/** The events of a `WebSocketClient`, each a `CustomEvent` carrying `detail`. */
export interface WebSocketClientEventMap {
  open: CustomEvent<{ resumed: boolean }>;
  /** The server no longer held this client's session: messages sent to it meanwhile are lost (`lost` of them, when known). */
  sessionlost: CustomEvent<{ lost: number | null }>;
  close: CustomEvent<{ code: number; reason: string; reconnecting: boolean }>;
  reconnecting: CustomEvent<{ attempt: number; delay: number }>;
  error: CustomEvent<WsRelayError>;
  response: CustomEvent<ResponseDetail>;
}

export interface WebSocketClient {
  addEventListener<K extends keyof WebSocketClientEventMap>(
    type: K,
    listener: (event: WebSocketClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof WebSocketClientEventMap>(
    type: K,
    listener: (event: WebSocketClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
}
