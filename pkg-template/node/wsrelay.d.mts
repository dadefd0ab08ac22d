export * from "./wsrelay.js";

/**
 * Resolves at once: the Node build loads its WebAssembly synchronously when imported. It exists
 * so that `import init, { WebSocketClient } from "wsrelay"; await init();` runs unchanged in
 * browsers, bundlers and Node.
 */
export default function init(module_or_path?: unknown): Promise<void>;

/** Does nothing in the Node build (see `init`). */
export function initSync(module?: unknown): void;
