/**
 * The URL of the package's WebAssembly module, for bundlers that copy assets imported with a
 * file loader (esbuild: `--loader:.wasm=file`). Pass it to `init`:
 * `await init({ module_or_path: wasmUrl })`.
 */
declare const url: string;
export default url;
