// What the package README tells esbuild users: the .wasm's URL from the file loader, for init.
import init from "wsrelay";
import wasmUrl from "wsrelay/wsrelay_bg.wasm";

export const ready: Promise<unknown> = init({ module_or_path: wasmUrl });
