// After close(), nothing of the server holds the process: a program that started a server,
// served clients, left a request waiting and called close() exits by itself, without
// process.exit, and quickly.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { child, here, within } from "./helpers.mjs";

test("the process exits by itself after close()", async () => {
  const started = Date.now();
  const program = child(process.execPath, [join(here, "exit-program.mjs")]);
  const code = await within(program.exited, 20_000, "still running");
  program.stop();
  assert.equal(code, 0, `exit: ${code}\n${program.lines.join("\n")}\n${program.stderr}`);
  const report = JSON.parse(program.lines.find((l) => l.includes('"closed"')));
  assert.deepEqual(report, { closed: true, pending: "closed", after: "closed" });
  assert.ok(Date.now() - started < 15_000);
});

test("a server that never closes holds the process, as a listening server does", async () => {
  const program = child(process.execPath, ["-e", `
    const { WebSocketServer } = require(${JSON.stringify(join(here, "node_modules", "wsrelay-server"))});
    new WebSocketServer({ port: 0 });
    console.log("listening");
  `]);
  await program.line((l) => l === "listening", 10_000);
  const code = await within(program.exited, 1000, "still running");
  program.stop();
  assert.equal(code, "still running");
});
