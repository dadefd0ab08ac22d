// esbuild bundles the package's JavaScript but does not follow its `new URL("wsrelay_bg.wasm",
// import.meta.url)`: importing the .wasm with the file loader (`--loader:.wasm=file`) copies it
// next to the bundle and gives its URL, which `init` takes. The package README shows these
// lines (tests/node/readme.test.mjs checks they are here).
import init, { WebSocketClient } from "wsrelay";
import wasmUrl from "wsrelay/wsrelay_bg.wasm";
import { demo, report } from "../page.js";

report(
  (async () => {
    await init({ module_or_path: wasmUrl });
    return demo(WebSocketClient);
  })(),
);
