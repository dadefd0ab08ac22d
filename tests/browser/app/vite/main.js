// Vite bundles the package and its .wasm as they are: `init()` finds the .wasm itself.
import init, { WebSocketClient } from "wsrelay";
import { demo, report } from "../page.js";

report(init().then(() => demo(WebSocketClient)));
