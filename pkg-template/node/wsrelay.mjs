// The Node build as an ES module. wasm-bindgen's Node build (./wsrelay.js, CommonJS) loads its
// .wasm synchronously when it is first required, so there is nothing left to initialise: the
// default export `init` resolves at once. `import init, { WebSocketClient } from "wsrelay";
// await init();` then runs unchanged in browsers, bundlers and Node. Re-exporting the one
// CommonJS module (rather than a second copy of the glue) keeps a single WebSocketClient class
// for `import` and `require` alike.
import wsrelay from "./wsrelay.js";

export const { WebSocketClient } = wsrelay;

/** Resolves at once: the Node build is ready as soon as it is imported. */
export default function init() {
  return Promise.resolve();
}

/** Does nothing: the Node build is ready as soon as it is imported. */
export function initSync() {}
