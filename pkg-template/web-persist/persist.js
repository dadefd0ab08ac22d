// The `wsrelay/persist` entry: the browser client with `persist: true`, its state kept in
// IndexedDB (PROTOCOL.md section 13). A separate entry, with its own build of the module (the
// journal is about 10 KB of gzipped wasm, BENCHMARKS.md), so that pages that do not persist
// never download it.
//
// Reading IndexedDB is asynchronous and a constructor is not: `new WebSocketClient(...)` checks
// its arguments at once (throwing as the plain client does), then takes the source's lock,
// opens the source's database and reads its journal, and only then constructs the client of
// the module from it. Every call made meanwhile (`send`, `request`, `on`, listeners, `close`...)
// is kept here, in order, and made on that client as soon as it exists: what the journal held
// is queued first (the `restored` event names it), then these calls' messages.
//
// One tab at a time owns a source's journal and its connection: the client takes the Web Lock
// `wsrelay:<source>` before it opens the database, and keeps it until the page goes away (or
// `free()`), so that two tabs never write one journal nor replace each other's connection
// (close 4409 and back). The other tabs of the source wait for the lock and meanwhile go
// through the owner, over the BroadcastChannel `wsrelay:<source>`: their `send`, `request`,
// `join` and `leave` are made by the owner's client (journaled there) and settled back; the
// messages the owner receives are handed to their handlers too. When the owner's page closes,
// the next tab takes the lock and restores from the journal. PROTOCOL.md section 13 has the
// model.
//
// Storage that is missing or fails (no `indexedDB`, private mode, quota, a refused open) is
// an `error` event with code `storage`; the client then goes on in memory.

import init, { initSync, WebSocketClient as Client, checkClient } from "./wsrelay.js";

export { initSync };
export default init;

const STORE = "journal";

/**
 * Opens (creating it if needed) the IndexedDB database `name` and reads its journal: every
 * batch stored, in the order stored. Rejects with why it could not.
 */
function openJournal(name) {
  return new Promise((resolve, reject) => {
    // `indexedDB` may be missing (some private modes, a sandboxed frame, a test): that throws
    // here, and the Promise rejects.
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore(STORE, { autoIncrement: true });
      // Where an unreadable journal is moved (`journal.js`, `journalSetAside`).
      db.createObjectStore("damaged", { autoIncrement: true });
    };
    request.onerror = () => reject(request.error ?? new Error("IndexedDB open failed"));
    request.onblocked = () => reject(new Error("IndexedDB open blocked by another page"));
    request.onsuccess = () => {
      const db = request.result;
      // Another page deleting or upgrading the database (site data cleared): let it, and
      // the next batch fails as a `storage` error (the client goes on in memory).
      db.onversionchange = () => db.close();
      try {
        const read = db.transaction(STORE).objectStore(STORE).getAll();
        read.onsuccess = () => resolve({ db, journal: read.result.join("") });
        read.onerror = () => {
          db.close();
          reject(read.error ?? new Error("IndexedDB read failed"));
        };
      } catch (error) {
        db.close();
        reject(error);
      }
    };
  });
}

const message = (error) => String(error?.message ?? error);

/** A `WsRelayError` as the module makes them, from its parts (errors cross tabs as parts). */
function relayError({ code, message, closeCode }) {
  const error = new Error(message);
  error.name = "WsRelayError";
  error.code = code;
  if (closeCode !== undefined) error.closeCode = closeCode;
  return error;
}

const errorParts = (error) => ({ code: error?.code ?? "handler_error", message: message(error), closeCode: error?.closeCode });

/** The methods that send a message, which a waiting tab hands to the owner. */
const SENDING = ["send", "request", "join", "leave"];

/** The owner's events that the waiting tabs see too: its connection's, and responses. */
const SHARED = ["open", "close", "reconnecting", "sessionlost", "response"];

/**
 * A reliable WebSocket client for browsers whose state survives the page (`persist: true`),
 * with the API of the package's main entry. Without `persist: true` it is the plain client.
 */
export class WebSocketClient {
  /** The module's client, once this tab owns the source and has read its journal. */
  #client = null;
  /** Calls other than messages made before it existed, in order: each a function of it. */
  #calls = [];
  /** Messages (`SENDING`) not yet made nor handed to an owner: `[method, args, resolve, reject]`. */
  #waiting = [];
  /** Messages handed to the owner `#owner`, by call number: `[resolve, reject]`. */
  #forwarded = new Map();
  #lastCall = 0;
  /** `on` handlers of this tab, by type. */
  #handlers = new Map();
  /** As the owner: the other tabs' handled types, type -> set of tab ids. */
  #remote = new Map();
  /** This tab, and the owner it hands its messages to (`null`: none known yet). */
  #tab = (globalThis.crypto?.randomUUID?.() ?? String(Math.random())).slice(0, 36);
  #owner = null;
  /** The owner's `readyState`, as it last said: a waiting tab's own. */
  #ownerState = 0;
  /** A waiting tab's listeners, which the owner's `SHARED` events reach. */
  #events = typeof EventTarget === "function" ? new EventTarget() : null;
  #channel = null;
  #source;
  #url;
  /** Lets go of the source's lock (`free()`), or stops waiting for it. */
  #release = () => {};
  /** Stops waiting for the lock; `null` once it is held (or there are no locks). */
  #stopWaiting = null;
  /** `close()` was called: this tab no longer takes part (see `close`). */
  #closed = false;

  constructor(url, source, options) {
    if (options?.persist !== true) {
      this.#client = new Client(url, source, options);
      return;
    }
    // Throws the plain client's WsRelayError for a bad URL, source or option.
    this.#url = checkClient(url, source, { ...options, persist: undefined });
    this.#source = source;
    const name = `wsrelay:${source}`;
    if (typeof BroadcastChannel === "function") {
      this.#channel = new BroadcastChannel(name);
      this.#channel.onmessage = (event) => this.#heard(event.data);
      // An owner already there answers with `owner`.
      this.#post({ op: "who" });
    }
    const start = async () => {
      let persist;
      try {
        const { db, journal } = await openJournal(name);
        persist = { name, indexedDB: db, journal };
      } catch (error) {
        // The client reports it (`error`, code `storage`) and keeps its state in memory.
        persist = { name, error: message(error) };
      }
      this.#own(new Client(url, source, { ...options, persist }));
    };
    const locks = globalThis.navigator?.locks;
    if (!locks) {
      // No Web Locks (an old browser, a worker without them): one tab per source, then.
      start();
      return;
    }
    const held = new Promise((resolve) => (this.#release = resolve));
    const waiting = new AbortController();
    // A tab closed or freed while it waits for the lock stops waiting.
    this.#stopWaiting = () => waiting.abort();
    // The callback's Promise holds the lock: until `close()`, `free()` or the page goes away.
    locks
      .request(name, { signal: waiting.signal }, async () => {
        this.#stopWaiting = null;
        await start();
        await held;
      })
      .catch((error) => {
        if (error?.name !== "AbortError") throw error;
      });
  }

  /** This tab now owns the source: `client` is restored; what was kept is made on it. */
  #own(client) {
    // Messages handed to the owner that went away and not settled: it may have journaled
    // them (then `client` restored them, and its `restored` event names them) or not.
    this.#lost();
    this.#client = client;
    this.#owner = this.#tab;
    for (const type of new Set([...this.#handlers.keys(), ...this.#remote.keys()])) {
      client.on(type, this.#dispatch(type));
    }
    for (const call of this.#calls.splice(0)) call(client);
    for (const type of SHARED) {
      client.addEventListener(type, (event) => {
        let detail = event.detail;
        // Errors cross as their parts (a structured clone keeps no `code`).
        if (detail?.error) detail = { ...detail, error: errorParts(detail.error) };
        this.#post({ op: "event", type, detail, readyState: client.readyState });
      });
    }
    for (const [method, args, resolve, reject] of this.#waiting.splice(0)) {
      try {
        resolve(client[method](...args));
      } catch (error) {
        reject(error);
      }
    }
    this.#post({ op: "owner", readyState: client.readyState });
    // A page that goes away says so, so that the other tabs hand it nothing more and keep
    // their messages for the next owner (a page kept in the back-forward cache may come back
    // holding the lock: it says nothing).
    globalThis.addEventListener?.("pagehide", (event) => {
      if (!event.persisted) this.#post({ op: "bye" });
    });
  }

  /** Rejects the messages handed to an owner that is gone. */
  #lost() {
    const lost = relayError({
      code: "unconfirmed",
      message: "the tab that owned the connection went away before this message was acknowledged: it may have been delivered (the next owner sends it if it was journaled)",
    });
    for (const [, reject] of this.#forwarded.values()) reject(lost);
    this.#forwarded.clear();
  }

  #post(data) {
    this.#channel?.postMessage({ ...data, from: this.#tab });
  }

  /** What another tab of the source said. */
  #heard(data) {
    const client = this.#client;
    const mine = data.to === this.#tab;
    switch (data.op) {
      case "who":
        if (client && !this.#closed) this.#post({ op: "owner", readyState: client.readyState });
        return;
      case "owner":
        if (client) return;
        this.#ownerState = data.readyState;
        if (data.from === this.#owner) return;
        // A new owner: what the previous one did not settle is lost with it.
        this.#lost();
        this.#owner = data.from;
        if (this.#handlers.size) this.#post({ op: "on", to: data.from, types: [...this.#handlers.keys()] });
        for (const call of this.#waiting.splice(0)) this.#forward(...call);
        return;
      case "call":
        if (!client || !mine || !SENDING.includes(data.method)) return;
        Promise.resolve()
          .then(() => client[data.method](...data.args))
          .then(
            (value) => this.#post({ op: "settled", to: data.from, call: data.call, ok: true, value }),
            (error) => this.#post({ op: "settled", to: data.from, call: data.call, ok: false, error: errorParts(error) }),
          );
        return;
      case "settled": {
        const pending = mine && this.#forwarded.get(data.call);
        if (!pending) return;
        this.#forwarded.delete(data.call);
        if (data.ok) pending[0](data.value);
        else pending[1](relayError(data.error));
        return;
      }
      case "on":
        if (!client || !mine) return;
        for (const type of data.types) {
          const tabs = this.#remote.get(type) ?? new Set();
          tabs.add(data.from);
          this.#remote.set(type, tabs);
          client.on(type, this.#dispatch(type));
        }
        return;
      case "off":
        if (!client || !mine) return;
        this.#remote.get(data.type)?.delete(data.from);
        if (!this.#remote.get(data.type)?.size) {
          this.#remote.delete(data.type);
          if (!this.#handlers.has(data.type)) client.off(data.type);
        }
        return;
      case "bye":
        if (client || data.from !== this.#owner) return;
        // What it had not settled stays pending: the next owner's announcement rejects it.
        this.#owner = null;
        this.#ownerState = 0;
        return;
      case "event": {
        if (client || data.from !== this.#owner) return;
        this.#ownerState = data.readyState;
        let detail = data.detail;
        if (detail?.error) detail = { ...detail, error: relayError(detail.error) };
        this.#events?.dispatchEvent(new CustomEvent(data.type, { detail }));
        return;
      }
      case "message":
        if (client || !data.tabs.includes(this.#tab)) return;
        try {
          this.#handlers.get(data.type)?.(data.payload, data.info);
        } catch (error) {
          // A handler of a waiting tab answers nothing: what it throws is its page's error.
          queueMicrotask(() => {
            throw error;
          });
        }
        return;
    }
  }

  /**
   * The owner's handler of `type`: hands each message to the tabs that handle it, then to
   * this tab's handler, whose value is the answer (the other tabs' are not: one answer).
   */
  #dispatch(type) {
    return (payload, info) => {
      const tabs = this.#remote.get(type);
      if (tabs?.size) this.#post({ op: "message", type, payload, info: { ...info }, tabs: [...tabs] });
      return this.#handlers.get(type)?.(payload, info);
    };
  }

  /** Hands a message to the owner; a Promise of its outcome, settled when the owner says. */
  #forward(method, args, resolve, reject) {
    const call = ++this.#lastCall;
    this.#forwarded.set(call, [resolve, reject]);
    this.#post({ op: "call", to: this.#owner, call, method, args });
  }

  /** Sends a message now, through the owner, or once one of them is there. */
  #message(method, args) {
    if (this.#client) return this.#client[method](...args);
    if (this.#closed) return Promise.reject(relayError({ code: "closed", message: "client closed" }));
    return new Promise((resolve, reject) => {
      if (this.#owner) this.#forward(method, args, resolve, reject);
      else this.#waiting.push([method, args, resolve, reject]);
    });
  }

  /** Runs `call` on the client now, or once this tab owns it (nothing returned). */
  #soon(call) {
    if (this.#client) call(this.#client);
    else this.#calls.push(call);
  }

  send(type, payload, options) {
    return this.#message("send", [type, payload, options]);
  }

  request(type, payload, options) {
    return this.#message("request", [type, payload, options]);
  }

  join(room) {
    return this.#message("join", [room]);
  }

  leave(room) {
    return this.#message("leave", [room]);
  }

  on(type, handler) {
    this.#handlers.set(type, handler);
    if (this.#client) this.#client.on(type, this.#dispatch(type));
    else if (this.#owner) this.#post({ op: "on", to: this.#owner, types: [type] });
  }

  off(type) {
    this.#handlers.delete(type);
    if (!this.#client) {
      if (this.#owner) this.#post({ op: "off", to: this.#owner, type });
    } else if (!this.#remote.get(type)?.size) {
      this.#client.off(type);
    }
  }

  /**
   * Listens to the client's events; in a tab that goes through the owner, meanwhile to the
   * owner's `open`, `close`, `reconnecting`, `sessionlost` and `response` events.
   */
  addEventListener(type, listener, options) {
    if (!this.#client) this.#events?.addEventListener(type, listener, options);
    this.#soon((client) => client.addEventListener(type, listener, options));
  }

  removeEventListener(type, listener, options) {
    this.#events?.removeEventListener(type, listener, options);
    this.#soon((client) => client.removeEventListener(type, listener, options));
  }

  /** Closes the client; a tab that does not own the source closes it once it does. */
  /**
   * Closes the client, and this tab's part in the source: once closed, the owner lets go of the
   * source's lock (the next tab takes over) and no longer relays the other tabs' messages. A
   * tab waiting for the lock stops waiting: its messages not yet handed to an owner are
   * rejected `closed`, those handed over are still settled by the owner. Create a new client
   * to take part again (`reconnect()` does nothing after `close()` here).
   */
  close(code, reason) {
    const wasClosed = this.#closed;
    this.#closed = true;
    const leave = () => {
      this.#release();
      if (this.#client) {
        this.#channel?.close();
        this.#channel = null;
      }
    };
    if (this.#client) return this.#client.close(code, reason).then(leave);
    if (this.#stopWaiting) {
      // Still waiting for the lock: stop. The channel stays open for the owner's answers.
      this.#stopWaiting();
      this.#stopWaiting = null;
      const closed = relayError({ code: "closed", message: "client closed before the message was sent" });
      for (const [, , , reject] of this.#waiting.splice(0)) reject(closed);
      return Promise.resolve();
    }
    if (wasClosed) return Promise.resolve();
    // The lock is held and the journal being read: close once the client exists.
    return new Promise((resolve) => this.#calls.push((client) => resolve(client.close(code, reason).then(leave))));
  }

  reconnect() {
    if (!this.#closed) this.#soon((client) => client.reconnect());
  }

  stats() {
    if (this.#client) return this.#client.stats();
    const queuedMessages = this.queued;
    return { reconnects: 0, retransmitted: 0, queuedMessages, queuedBytes: 0, acknowledged: 0, failed: 0 };
  }

  /** The client's; in a tab that goes through the owner, the owner's connection's. */
  get readyState() {
    if (this.#client) return this.#client.readyState;
    if (this.#closed) return 3;
    return this.#owner ? this.#ownerState : 0;
  }

  get source() {
    return this.#client ? this.#client.source : this.#source;
  }

  get url() {
    return this.#client ? this.#client.url : this.#url;
  }

  /** Messages waiting: in the client, or (a tab that does not own the source) kept or handed to the owner and not settled. */
  get queued() {
    return this.#client ? this.#client.queued : this.#waiting.length + this.#forwarded.size;
  }

  get retryCount() {
    return this.#client ? this.#client.retryCount : 0;
  }

  /** Whether this tab owns the source's journal and connection (the others go through it). */
  get owner() {
    return this.#client !== null && !this.#closed;
  }

  /**
   * Frees the client and lets another tab of the source take its journal. A tab that does not
   * own the source stops waiting for it: its messages not yet settled are rejected `closed`.
   */
  free() {
    this.#channel?.close();
    this.#channel = null;
    if (this.#client) {
      this.#client.free();
      this.#release();
      return;
    }
    this.#stopWaiting?.();
    this.#stopWaiting = null;
    const closed = relayError({ code: "closed", message: "client freed before the message was acknowledged" });
    for (const [, , , reject] of this.#waiting.splice(0)) reject(closed);
    for (const [, reject] of this.#forwarded.values()) reject(closed);
    this.#forwarded.clear();
  }
}
