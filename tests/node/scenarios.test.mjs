// The shared behaviour scenarios (tests/scenarios) on Node.js against the relay of the test bed
// (WSRELAY_TESTBED). `cargo xtask test` runs this file twice: on Node 20, which has no global
// WebSocket and is given the npm `ws` class, and on Node 22, whose global WebSocket is used.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { WebSocketClient } from "wsrelay";
import { run } from "../scenarios/runner.mjs";

const testbed = process.env.WSRELAY_TESTBED;
assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");
const control = async (method, path) => (await fetch(testbed + path, { method })).text();
const url = await control("GET", "/url");

const major = Number(process.versions.node.split(".")[0]);
let WebSocket;
let BareWebSocket = globalThis.WebSocket;
if (major < 22) {
  WebSocket = createRequire(import.meta.url)("ws");
  BareWebSocket = WebSocket;
} else {
  assert.equal(typeof globalThis.WebSocket, "function", "Node 22+ has a global WebSocket");
}
const runtime = major < 22 ? `Node ${major} + ws` : `Node ${major}, global WebSocket`;

const { scenarios } = JSON.parse(readFileSync(new URL("../scenarios/scenarios.json", import.meta.url)));
for (const scenario of scenarios) {
  test(`${scenario.name} (${runtime})`, () =>
    run(scenario, { WebSocketClient, url, control, WebSocket, BareWebSocket }));
}
