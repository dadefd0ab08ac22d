// The `wsrelay/persist` entry (browsers): the same API as the main entry, built with the
// journal, so that `persist: true` keeps the client's state in IndexedDB (see persist.js).
import { WebSocketClient as Client } from "./wsrelay.js";

export * from "./wsrelay.js";
export { default } from "./wsrelay.js";

/**
 * The client of the main entry, with `persist: true` kept in IndexedDB (one database per
 * source) and shared by the tabs of a source: one owns the journal and the connection, the
 * others go through it. In a tab that goes through the owner, `readyState` and the `open`,
 * `close`, `reconnecting`, `sessionlost` and `response` events are the owner's connection's.
 */
export declare class WebSocketClient extends Client {
  /**
   * `true` in the tab that owns the source's journal and connection (it holds the Web Lock
   * `wsrelay:<source>`); `false` in a tab that goes through the owner, or that has not read
   * its journal yet, or after `close()`. Always `true` without `persist: true`.
   */
  readonly owner: boolean;
}
