// `persist: { path }` in Node.js: a sending process killed with SIGKILL mid-stream and started
// again on the same journal; storage that cannot be written. The relay is the test bed's
// (WSRELAY_TESTBED); the sender is a real child process (persist-child.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocketClient } from "wsrelay";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const testbed = process.env.WSRELAY_TESTBED;
assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");
const relayUrl = async () => (await fetch(`${testbed}/url`)).text();
const unique = (name) => `${name}-${Math.floor(Math.random() * 1e9)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nextEvent = (client, name) =>
  new Promise((resolve) => client.addEventListener(name, (e) => resolve(e.detail), { once: true }));

/** Starts the child; `lines` fills with its report, `exited` resolves with its exit. */
function sender(args) {
  const child = spawn(process.execPath, [new URL("persist-child.mjs", import.meta.url).pathname, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = [];
  createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return { child, lines, exited };
}

const numbersIn = (lines, prefix) =>
  new Set(lines.filter((line) => line.startsWith(prefix)).map((line) => Number(line.slice(prefix.length))));

async function until(what, condition, ms = 20000) {
  const end = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < end, `timed out: ${what}`);
    await sleep(20);
  }
}

test("a sender killed mid-stream resumes from its journal: exactly once, in order", async () => {
  const url = await relayUrl();
  const receiverName = unique("receiver");
  const receiver = new WebSocketClient(url, receiverName, { WebSocket });
  // Every child started, killed at the end whatever happened (a live child keeps this test's
  // process, and the run, waiting).
  const children = [];
  const got = [];
  receiver.on("n", (n) => {
    got.push(n);
  });
  await nextEvent(receiver, "open");
  const directory = mkdtempSync(join(tmpdir(), "wsrelay-persist-"));
  const journal = join(directory, "sender.journal");
  try {
    await killAndResume(url, journal, receiverName, unique("sender"), got, children);
  } finally {
    for (const child of children) child.kill("SIGKILL");
    await receiver.close();
    rmSync(directory, { recursive: true, force: true });
  }
});

async function killAndResume(url, journal, receiverName, senderName, got, children) {
  const first = sender([url, journal, "1", "100000", receiverName, senderName]);
  children.push(first.child);
  await until("300 deliveries", () => numbersIn(first.lines, "delivered ").size >= 300);
  first.child.kill("SIGKILL");
  assert.equal((await first.exited).signal, "SIGKILL");

  const second = sender([url, journal, "1000000", "50", receiverName, senderName]);
  children.push(second.child);
  const { code } = await second.exited;
  assert.equal(code, 0, second.lines.join("\n"));
  assert.equal(second.lines.at(-1), "done");
  assert.ok(!second.lines.some((line) => line.startsWith("failed") || line.startsWith("error")), second.lines.join("\n"));
  const restored = numbersIn(second.lines, "restored ");
  assert.ok(restored.size > 0, "the kill left messages to restore");
  for (const n of restored) {
    assert.ok(second.lines.includes(`delivered ${n}`), `restored message ${n} has its outcome`);
  }

  const expected = new Set([...numbersIn(first.lines, "delivered "), ...restored]);
  for (let n = 1000000; n < 1000050; n++) expected.add(n);
  await until("every expected message", () => {
    const arrived = new Set(got);
    return [...expected].every((n) => arrived.has(n));
  });
  await sleep(200);
  for (let i = 1; i < got.length; i++) {
    assert.ok(got[i - 1] < got[i], `in order, none twice: ${got[i - 1]} then ${got[i]}`);
  }
}

test("a journal that cannot be written is reported, and the client works in memory", async () => {
  const url = await relayUrl();
  const path = join(tmpdir(), unique("no-such-directory"), "client.journal");
  const client = new WebSocketClient(url, unique("alice"), { WebSocket, persist: { path } });
  const error = await nextEvent(client, "error");
  assert.equal(error.code, "storage");
  assert.match(error.message, /no-such-directory/);
  await client.send("note", "still works");
  await client.close();
  assert.throws(() => new WebSocketClient(url, "x", { WebSocket, persist: { path: 3 } }), {
    code: "invalid_option",
  });
});
