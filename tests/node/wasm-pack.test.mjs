// A plain `wasm-pack build --target web` of the repository (cargo xtask test makes one into
// WSRELAY_PLAIN_PKG) yields a working package: its web build, initialised with the .wasm's
// bytes as Node allows, talks to the relay of the test bed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

test("a plain wasm-pack build --target web works", async () => {
  const dir = process.env.WSRELAY_PLAIN_PKG;
  const testbed = process.env.WSRELAY_TESTBED;
  assert.ok(dir && testbed, "WSRELAY_PLAIN_PKG and WSRELAY_TESTBED are set by `cargo xtask test`");
  const manifest = JSON.parse(readFileSync(join(dir, "package.json")));
  assert.equal(manifest.name, "wsrelay");
  const { default: init, WebSocketClient } = await import(pathToFileURL(join(dir, "wsrelay.js")));
  await init({ module_or_path: readFileSync(join(dir, "wsrelay_bg.wasm")) });
  const url = await (await fetch(`${testbed}/url`)).text();
  const WebSocket = globalThis.WebSocket ?? createRequire(import.meta.url)("ws");
  const client = new WebSocketClient(url, `plain-${Math.floor(Math.random() * 1e9)}`, { WebSocket });
  await client.send("note", 1);
  const online = await client.request("relay:clients");
  assert.ok(online.includes(client.source));
  await client.close();
  assert.equal(client.readyState, 3);
});
