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
// One tab at a time owns a source's journal: the client takes the Web Lock `wsrelay:<source>`
// before it opens the database, and keeps it until the page goes away (or `free()`). A second
// tab of the same source waits for the lock, keeping its calls, so that two tabs never write
// one journal nor replace each other's connection (close 4409 and back); when the owner's
// page closes, the next tab takes the lock and restores from the journal.
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

/**
 * A reliable WebSocket client for browsers whose state survives the page (`persist: true`),
 * with the API of the package's main entry. Without `persist: true` it is the plain client.
 */
export class WebSocketClient {
  /** The module's client, once the journal is read. */
  #client = null;
  /** The calls made before it existed, in order: each a function of it. */
  #calls = [];
  /** Of those, the messages (`send`, `request`, `join`, `leave`): `queued` until then. */
  #messages = 0;
  #source;
  #url;
  /** Lets go of the source's lock (`free()`). */
  #release = () => {};

  constructor(url, source, options) {
    if (options?.persist !== true) {
      this.#client = new Client(url, source, options);
      return;
    }
    // Throws the plain client's WsRelayError for a bad URL, source or option.
    this.#url = checkClient(url, source, { ...options, persist: undefined });
    this.#source = source;
    const name = `wsrelay:${source}`;
    const start = async () => {
      let persist;
      try {
        const { db, journal } = await openJournal(name);
        persist = { name, indexedDB: db, journal };
      } catch (error) {
        // The client reports it (`error`, code `storage`) and keeps its state in memory.
        persist = { name, error: message(error) };
      }
      this.#client = new Client(url, source, { ...options, persist });
      this.#messages = 0;
      for (const call of this.#calls.splice(0)) call(this.#client);
    };
    const locks = globalThis.navigator?.locks;
    if (!locks) {
      // No Web Locks (an old browser, a worker without them): one tab per source, then.
      start();
      return;
    }
    const held = new Promise((resolve) => (this.#release = resolve));
    // The callback's Promise holds the lock: until `free()` or the page goes away.
    locks.request(name, async () => {
      await start();
      await held;
    });
  }

  /** Sends a message (`call`) now, or once the client exists; a Promise of its outcome. */
  #later(call) {
    if (this.#client) return call(this.#client);
    this.#messages++;
    return new Promise((resolve, reject) => {
      this.#calls.push((client) => {
        try {
          resolve(call(client));
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  /** Runs `call` on the client now, or once it exists (nothing returned). */
  #soon(call) {
    if (this.#client) call(this.#client);
    else this.#calls.push(call);
  }

  send(type, payload, options) {
    return this.#later((client) => client.send(type, payload, options));
  }

  request(type, payload, options) {
    return this.#later((client) => client.request(type, payload, options));
  }

  join(room) {
    return this.#later((client) => client.join(room));
  }

  leave(room) {
    return this.#later((client) => client.leave(room));
  }

  on(type, handler) {
    this.#soon((client) => client.on(type, handler));
  }

  off(type) {
    this.#soon((client) => client.off(type));
  }

  addEventListener(type, listener, options) {
    this.#soon((client) => client.addEventListener(type, listener, options));
  }

  removeEventListener(type, listener, options) {
    this.#soon((client) => client.removeEventListener(type, listener, options));
  }

  close(code, reason) {
    if (this.#client) return this.#client.close(code, reason);
    return new Promise((resolve) => this.#calls.push((client) => resolve(client.close(code, reason))));
  }

  reconnect() {
    this.#soon((client) => client.reconnect());
  }

  stats() {
    if (this.#client) return this.#client.stats();
    const queuedMessages = this.#messages;
    return { reconnects: 0, retransmitted: 0, queuedMessages, queuedBytes: 0, acknowledged: 0, failed: 0 };
  }

  get readyState() {
    return this.#client ? this.#client.readyState : 0;
  }

  get source() {
    return this.#client ? this.#client.source : this.#source;
  }

  get url() {
    return this.#client ? this.#client.url : this.#url;
  }

  get queued() {
    return this.#client ? this.#client.queued : this.#messages;
  }

  get retryCount() {
    return this.#client ? this.#client.retryCount : 0;
  }

  /** Frees the client and lets another tab of the source take its journal. */
  free() {
    this.#soon((client) => {
      client.free();
      this.#release();
    });
  }
}
