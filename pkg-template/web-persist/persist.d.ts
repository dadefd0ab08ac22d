// The `wsrelay/persist` entry (browsers): the same API as the main entry, built with the
// journal, so that `persist: true` keeps the client's state in IndexedDB (see persist.js).
export * from "./wsrelay.js";
export { default } from "./wsrelay.js";
