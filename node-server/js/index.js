'use strict';
// wsrelay-server for Node.js: the original design's `WebSocketServer`, running the wsrelay
// server (Rust) in this process as a native addon.
//
// This file is the API; the server is `NativeServer` (../src/lib.rs), loaded by binding.js
// (the napi-rs loader: this platform's package, e.g. `wsrelay-server-linux-x64-gnu`). The
// server's threads hand this thread batches of records (handler calls, outcomes, events), one
// JSON text per wake-up of the event loop (../src/bridge.rs documents the records); handler
// answers go back the same way, one `settle` per batch or per turn of the microtask queue.
// Payloads cross as JSON text: `JSON.stringify` here, `JSON.parse` of the whole batch there.

const { EventEmitter } = require('node:events');
const { readFileSync } = require('node:fs');
const { NativeServer } = require('./binding.js');

/** The names `on` takes as events; any other name is a message type. */
const EVENTS = new Set(['connection', 'disconnect', 'error', 'response', 'close']);
const DEFAULT_PORT = 8080;
const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_REQUEST_TIMEOUT = 30000;
/** Operation numbers stay within what the native side takes (u32). */
const MAX_OP = 0x7fffffff;

/** An error with a `code` to branch on (the client package's `WsRelayError` codes). */
class WsRelayError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = 'WsRelayError';
    this.code = code;
    if (details !== undefined) {
      if (details.type !== undefined) this.type = details.type;
      if (details.source !== undefined) this.source = details.source;
      if (details.cause !== undefined) this.cause = details.cause;
    }
  }
}

/** A native failure as a WsRelayError (napi-rs errors carry our code in `code`). */
function fromNative(error) {
  if (error instanceof WsRelayError) return error;
  const code = error && typeof error.code === 'string' ? error.code : 'failed';
  const message = error && typeof error.message === 'string' ? error.message : String(error);
  return new WsRelayError(code, message);
}

const noop = () => {};

/** `promise`, whose rejection nobody has to handle: a `sendTo` or `broadcast` nobody awaits
 * must not end the process when it fails. Awaiting it still sees the rejection. */
function handled(promise) {
  promise.catch(noop);
  return promise;
}

/** Payload to JSON text (`undefined`: `null`). */
function encode(payload, what) {
  let text;
  try {
    text = JSON.stringify(payload);
  } catch (error) {
    throw new TypeError(`${what}: the payload cannot be written as JSON (${error.message})`);
  }
  return text === undefined ? 'null' : text;
}

function checkName(value, what) {
  if (typeof value !== 'string' || value.length === 0) {
    throw new TypeError(`${what} must be a non-empty string (got ${describe(value)})`);
  }
}

function checkType(type) {
  checkName(type, 'type');
  if (type.startsWith('~')) {
    throw new TypeError(`type ${JSON.stringify(type)}: types starting with "~" are the protocol's`);
  }
}

function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '...' : value);
  return typeof value;
}

// --- options -------------------------------------------------------------------------------

function isBytes(value) {
  return typeof value === 'string' || value instanceof Uint8Array;
}

function bytes(value) {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);
}

/** Every option, its check and where it goes in the native options. */
const OPTIONS = {
  port: (v) => Number.isInteger(v) && v >= 0 && v <= 65535 || 'an integer from 0 to 65535',
  host: (v) => (typeof v === 'string' && v.length > 0) || 'a non-empty string',
  www: (v) => (typeof v === 'string' && v.length > 0) || 'a directory (string)',
  tls: (v) =>
    (v !== null && typeof v === 'object' &&
      ((isBytes(v.cert) && isBytes(v.key)) || (typeof v.certFile === 'string' && typeof v.keyFile === 'string'))) ||
    '{ cert, key } (PEM text or bytes) or { certFile, keyFile } (paths)',
  authSecret: (v) => (isBytes(v) && v.length > 0) || 'a non-empty string or bytes',
  authSecretFile: (v) => (typeof v === 'string' && v.length > 0) || 'a file path (string)',
  onDuplicate: (v) => v === 'replace' || v === 'reject' || '"replace" or "reject"',
  allowedOrigins: (v) => (Array.isArray(v) && v.every((o) => typeof o === 'string')) || 'an array of strings',
  maxConnections: count,
  maxConnectionsPerIp: count,
  maxPendingConnections: count,
  maxPendingPerIp: count,
  handshakeTimeout: millis,
  rateLimit: (v) => (Number.isInteger(v) && v >= 0 && v <= 0xffffffff) || 'an integer >= 0 (0: no limit)',
  rateBurst: count,
  pingInterval: millis,
  redis: (v) => (typeof v === 'string' && /^rediss?:\/\//.test(v)) || 'a redis:// URL',
  nodeId: (v) => (typeof v === 'string' && v.length > 0) || 'a non-empty string',
  roomRetention: count,
  roomIdle: millis,
  presence: (v) => typeof v === 'boolean' || 'a boolean',
  relay: (v) => typeof v === 'boolean' || 'a boolean',
  maxMessageSize: count,
  sessionGrace: millis,
  shutdownTimeout: millis,
  handlerTimeout: millis,
  logLevel: (v) => ['off', 'error', 'warn', 'info', 'debug', 'trace'].includes(v) || '"off", "error", "warn", "info", "debug" or "trace"',
  logFormat: (v) => v === 'text' || v === 'json' || '"text" or "json"',
};

function count(v) {
  return (Number.isInteger(v) && v >= 1 && v <= 0xffffffff) || 'an integer >= 1';
}

function millis(v) {
  return (typeof v === 'number' && v >= 1 && v <= 1e12) || 'a number of milliseconds >= 1';
}

/** `new WebSocketServer(port | options)`'s argument, checked, as the native options. */
function nativeOptions(portOrOptions) {
  let options;
  if (portOrOptions === undefined) options = {};
  else if (typeof portOrOptions === 'number') options = { port: portOrOptions };
  else if (portOrOptions !== null && typeof portOrOptions === 'object' && !Array.isArray(portOrOptions)) options = portOrOptions;
  else throw new TypeError(`new WebSocketServer(port | options): got ${describe(portOrOptions)}`);
  for (const [name, value] of Object.entries(options)) {
    const check = OPTIONS[name];
    if (check === undefined) {
      throw new TypeError(`unknown option ${JSON.stringify(name)} (options: ${Object.keys(OPTIONS).join(', ')})`);
    }
    if (value === undefined) continue;
    const verdict = check(value);
    if (verdict !== true) throw new TypeError(`option ${name} must be ${verdict} (got ${describe(value)})`);
  }
  if (options.authSecret !== undefined && options.authSecretFile !== undefined) {
    throw new TypeError('options authSecret and authSecretFile exclude each other');
  }
  const native = {
    port: options.port ?? DEFAULT_PORT,
    host: options.host ?? DEFAULT_HOST,
  };
  for (const name of [
    'www', 'onDuplicate', 'allowedOrigins', 'maxConnections', 'maxConnectionsPerIp', 'maxPendingConnections',
    'maxPendingPerIp', 'handshakeTimeout', 'rateLimit', 'rateBurst', 'pingInterval', 'redis', 'nodeId', 'roomRetention',
    'roomIdle', 'presence', 'relay', 'maxMessageSize', 'sessionGrace', 'shutdownTimeout', 'handlerTimeout', 'logLevel', 'logFormat',
  ]) {
    if (options[name] !== undefined) native[name] = options[name];
  }
  if (options.tls !== undefined) {
    if (options.tls.cert !== undefined) {
      native.tlsCert = bytes(options.tls.cert);
      native.tlsKey = bytes(options.tls.key);
    } else {
      native.tlsCertFile = options.tls.certFile;
      native.tlsKeyFile = options.tls.keyFile;
    }
  }
  if (options.authSecret !== undefined) native.authSecret = bytes(options.authSecret);
  if (options.authSecretFile !== undefined) {
    // As the relay binary: the file's trailing newline (and other trailing space) is not
    // part of the secret.
    let secret;
    try {
      secret = readFileSync(options.authSecretFile);
    } catch (error) {
      throw new WsRelayError('invalid_option', `authSecretFile ${options.authSecretFile}: ${error.message}`);
    }
    let end = secret.length;
    while (end > 0 && [9, 10, 13, 32].includes(secret[end - 1])) end -= 1;
    if (end === 0) throw new WsRelayError('invalid_option', `authSecretFile ${options.authSecretFile} is empty`);
    native.authSecret = secret.subarray(0, end);
  }
  return native;
}

// --- the server ------------------------------------------------------------------------------

/** An answer to handler call `id` (see ../src/bridge.rs): none, a value, or an error. */
function answerOf(id, value) {
  if (value === undefined) return `${id},0,null`;
  const text = JSON.stringify(value);
  return text === undefined ? `${id},0,null` : `${id},1,${text}`;
}

function errorAnswer(id, code, message) {
  return `${id},2,${JSON.stringify({ code, message })}`;
}

class WebSocketServer {
  #native;
  #handlers = new Map();
  #events = new EventEmitter();
  /** Operations waiting for their outcome, by number. */
  #ops = new Map();
  #nextOp = 1;
  /** Answers of async handlers, sent together at the end of the microtask turn. */
  #later = [];
  #closing = null;
  #closed = false;

  /**
   * Starts a server: `new WebSocketServer(8080)` or `new WebSocketServer({ port, host, ... })`.
   * Listens before it returns (throws `EADDRINUSE` and the like).
   */
  constructor(portOrOptions) {
    const options = nativeOptions(portOrOptions);
    try {
      this.#native = new NativeServer(options, (batch) => this.#dispatch(batch));
    } catch (error) {
      throw fromNative(error);
    }
  }

  /** The port the server listens on (the real one when asked for 0). */
  get port() {
    return this.#native.port;
  }

  /** The address the server listens on. */
  get host() {
    return this.#native.host;
  }

  /** `ws://host:port` (`wss://` with TLS): where clients connect. */
  get url() {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${this.#native.tls ? 'wss' : 'ws'}://${host}:${this.port}`;
  }

  /** `{ address, port }`, as `net.Server#address()`. */
  address() {
    return { address: this.host, port: this.port };
  }

  /**
   * `on(type, handler)`: the handler of messages of `type` (one per type; `on` replaces it),
   * called with `{ source, payload, type }`; what it returns or resolves to is the response.
   * `on(event, listener)` for the events `connection`, `disconnect`, `error`, `response` and
   * `close`.
   */
  on(type, handler) {
    if (EVENTS.has(type)) {
      this.#events.on(type, checkListener(handler));
      return this;
    }
    checkType(type);
    if (typeof handler !== 'function') {
      throw new TypeError(`on(${JSON.stringify(type)}, handler): the handler must be a function (got ${describe(handler)})`);
    }
    const known = this.#handlers.has(type);
    this.#handlers.set(type, handler);
    if (!known) this.#native.handle(type);
    return this;
  }

  /** A listener of one event, called once. */
  once(event, listener) {
    if (!EVENTS.has(event)) {
      throw new TypeError(`once(${describe(event)}): events are ${[...EVENTS].join(', ')}`);
    }
    this.#events.once(event, checkListener(listener));
    return this;
  }

  /** Removes the handler of a message type, or an event's listener (all of them without one). */
  off(type, listener) {
    if (EVENTS.has(type)) {
      if (listener === undefined) this.#events.removeAllListeners(type);
      else this.#events.off(type, listener);
      return this;
    }
    checkType(type);
    if (this.#handlers.delete(type)) this.#native.unhandle(type);
    return this;
  }

  /**
   * Sends a message from the server to the client `source`. Resolves once it is in the
   * client's mailbox (a client within its session's grace period gets it when it resumes);
   * rejects with `unknown_target` when nobody has that source.
   */
  sendTo(source, type, payload) {
    checkName(source, 'source');
    checkType(type);
    const text = encode(payload, 'sendTo');
    return handled(this.#operation((op) => this.#native.sendTo(source, type, text, op), () => undefined));
  }

  /**
   * Sends a message from the server to every client but `excludeSource`; resolves with the
   * number of recipients. The frame is written once for all of them.
   */
  broadcast(type, payload, excludeSource) {
    checkType(type);
    if (excludeSource !== undefined && excludeSource !== null) checkName(excludeSource, 'excludeSource');
    const text = encode(payload, 'broadcast');
    return handled(
      this.#operation((op) => this.#native.broadcast(type, text, excludeSource ?? null, op), (count) => count),
    );
  }

  /**
   * Makes the client `source` a member of `room` (its session's: kept across its
   * reconnections); rejects with `unknown_target` when nobody has that source.
   */
  join(source, room) {
    checkName(source, 'source');
    checkName(room, 'room');
    return handled(this.#operation((op) => this.#native.join(source, room, op), () => undefined));
  }

  /** The client `source` leaves `room`; resolves with whether it was a member. */
  leave(source, room) {
    checkName(source, 'source');
    checkName(room, 'room');
    return handled(this.#operation((op) => this.#native.leave(source, room, op)));
  }

  /**
   * Sends a message from the server to every member of `room` but `excludeSource`, with the
   * room in its envelope; resolves with the number of recipients.
   */
  broadcastTo(room, type, payload, excludeSource) {
    checkName(room, 'room');
    checkType(type);
    if (excludeSource !== undefined && excludeSource !== null) checkName(excludeSource, 'excludeSource');
    const text = encode(payload, 'broadcastTo');
    return handled(
      this.#operation((op) => this.#native.broadcastTo(room, type, text, excludeSource ?? null, op), (count) => count),
    );
  }

  /** The members of `room` connected now (all servers' with Redis), sorted. */
  members(room) {
    checkName(room, 'room');
    return this.#operation((op) => this.#native.members(room, op));
  }

  /**
   * Sends a request to the client `source` and resolves with its handler's answer; rejects
   * with `timeout` after `options.timeout` ms (30 s by default), with the client's error
   * (`handler_error`, `no_handler`...), or `unknown_target`.
   */
  request(source, type, payload, options) {
    checkName(source, 'source');
    checkType(type);
    let timeout = DEFAULT_REQUEST_TIMEOUT;
    if (options !== undefined && options !== null) {
      if (typeof options !== 'object') throw new TypeError(`request options must be an object (got ${describe(options)})`);
      if (options.timeout !== undefined) {
        if (typeof options.timeout !== 'number' || !(options.timeout >= 0) || !Number.isFinite(options.timeout)) {
          throw new TypeError(`request options.timeout must be a number of milliseconds >= 0 (got ${describe(options.timeout)})`);
        }
        timeout = options.timeout;
      }
    }
    const text = encode(payload, 'request');
    return this.#operation((op) => {
      this.#native.request(source, type, text, timeout, op);
      return null;
    });
  }

  /** The sources of the connected clients (all servers' with Redis), sorted. */
  clients() {
    return this.#operation((op) => this.#native.clients(op));
  }

  /** The server's counters. */
  stats() {
    return { ...this.#native.stats() };
  }

  /**
   * Stops accepting, lets every client receive what is queued for it, closes every
   * connection with 1001 (going away; clients reconnect elsewhere or later and resume), and
   * resolves once closed. Then nothing of the server holds the process open.
   */
  close() {
    if (this.#closing !== null) return this.#closing;
    this.#closing = new Promise((resolve, reject) => {
      const op = this.#op();
      // Closed from here on, whether or not the last batch (record 7) came with the outcome.
      const closed = () => {
        this.#ended();
        resolve();
      };
      this.#ops.set(op, { resolve: closed, reject });
      this.#native.close(false, op);
    });
    return this.#closing;
  }

  #op() {
    const op = this.#nextOp;
    this.#nextOp = op >= MAX_OP ? 1 : op + 1;
    return op;
  }

  /** Starts an operation: `start(op)` returns its outcome when it is done at once, or null
   * when it finishes in a later batch; `ready` turns the outcome into the value either way. */
  #operation(start, ready = (value) => value) {
    if (this.#closed) return Promise.reject(new WsRelayError('closed', 'the server is closed'));
    const op = this.#op();
    let outcome;
    try {
      outcome = start(op);
    } catch (error) {
      return Promise.reject(fromNative(error));
    }
    if (outcome !== null && outcome !== undefined) return Promise.resolve(ready(outcome));
    return new Promise((resolve, reject) => this.#ops.set(op, { resolve: (value) => resolve(ready(value)), reject }));
  }

  #finish(op, error, value) {
    const pending = this.#ops.get(op);
    if (pending === undefined) return;
    this.#ops.delete(op);
    if (error === null) pending.resolve(value);
    else pending.reject(error);
  }

  /** One batch from the server's threads. Never throws: what a listener throws is thrown
   * again on its own, after the batch (as from any event listener). */
  #dispatch(text) {
    let records;
    try {
      records = JSON.parse(text);
    } catch (error) {
      this.#reportError(new WsRelayError('failed', `unreadable batch from the server: ${error.message}`));
      return;
    }
    const answers = [];
    let i = 0;
    while (i < records.length) {
      switch (records[i]) {
        case 0:
          this.#call(records[i + 1], records[i + 2], records[i + 3], records[i + 4], answers);
          i += 5;
          break;
        case 1:
          this.#finish(records[i + 1], null, records[i + 2]);
          i += 3;
          break;
        case 2:
          this.#finish(records[i + 1], new WsRelayError(records[i + 2], records[i + 3]));
          i += 4;
          break;
        case 3:
          this.#emit('connection', records[i + 1], { address: records[i + 2] });
          i += 3;
          break;
        case 4:
          this.#emit('disconnect', records[i + 1], { reason: records[i + 2], code: records[i + 3] });
          i += 4;
          break;
        case 5:
          this.#emit('response', { source: records[i + 1], type: records[i + 2], payload: records[i + 3] });
          i += 4;
          break;
        case 6:
          this.#emit('response', {
            source: records[i + 1],
            type: records[i + 2],
            error: new WsRelayError(records[i + 3], records[i + 4], { source: records[i + 1], type: records[i + 2] }),
          });
          i += 5;
          break;
        case 7:
          this.#ended();
          i += 1;
          break;
        case 8:
          this.#reportError(
            new WsRelayError(
              'timeout',
              `the handler of ${JSON.stringify(records[i + 1])} did not answer within ${records[i + 3]} ms: its sender got a handler_error`,
              { type: records[i + 1], source: records[i + 2] },
            ),
          );
          i += 4;
          break;
        default:
          this.#reportError(new WsRelayError('failed', `unknown record ${records[i]} from the server`));
          i = records.length;
      }
    }
    if (answers.length > 0) this.#settle(answers);
  }

  /** Calls the handler of `type`; a value now goes into `answers`, a Promise's later. */
  #call(id, type, source, payload, answers) {
    const handler = this.#handlers.get(type);
    if (handler === undefined) {
      answers.push(errorAnswer(id, 'no_handler', `no handler for ${JSON.stringify(type)}`));
      return;
    }
    let value;
    try {
      value = handler({ source, payload, type });
    } catch (error) {
      answers.push(this.#failed(id, type, source, error));
      return;
    }
    if (value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function') {
      Promise.resolve(value).then(
        (resolved) => this.#answerLater(this.#answer(id, type, source, resolved)),
        (error) => this.#answerLater(this.#failed(id, type, source, error)),
      );
    } else {
      answers.push(this.#answer(id, type, source, value));
    }
  }

  #answer(id, type, source, value) {
    try {
      return answerOf(id, value);
    } catch (error) {
      return this.#failed(id, type, source, new TypeError(`the response cannot be written as JSON (${error.message})`));
    }
  }

  /** A handler failed: its sender gets a `handler_error` with the message, the server an
   * `error` event. */
  #failed(id, type, source, error) {
    const message = error instanceof Error ? error.message : String(error);
    this.#reportError(
      new WsRelayError('handler_error', `the handler of ${JSON.stringify(type)} failed: ${message}`, {
        type,
        source,
        cause: error,
      }),
    );
    return errorAnswer(id, 'handler_error', message);
  }

  #answerLater(answer) {
    this.#later.push(answer);
    if (this.#later.length === 1) {
      queueMicrotask(() => {
        const answers = this.#later;
        this.#later = [];
        this.#settle(answers);
      });
    }
  }

  #settle(answers) {
    try {
      this.#native.settle(`[${answers.join(',')}]`);
    } catch (error) {
      this.#reportError(fromNative(error));
    }
  }

  #emit(event, ...args) {
    try {
      this.#events.emit(event, ...args);
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  /** An `error` event, or a line on stderr when nobody listens (never an uncaught error). */
  #reportError(error) {
    if (this.#events.listenerCount('error') > 0) this.#emit('error', error);
    else console.error(`wsrelay-server: ${error.message}`);
  }

  /** The last batch: what still waits fails with `closed`, then `close` is emitted. */
  #ended() {
    if (this.#closed) return;
    this.#closed = true;
    const waiting = [...this.#ops.values()];
    this.#ops.clear();
    for (const { reject } of waiting) reject(new WsRelayError('closed', 'the server closed'));
    this.#emit('close');
  }
}

function checkListener(listener) {
  if (typeof listener !== 'function') throw new TypeError(`a listener must be a function (got ${describe(listener)})`);
  return listener;
}

module.exports = { WebSocketServer, WsRelayError };
