// TypeScript users' view of the npm package (installed from its tarball by `cargo xtask test`):
// `tsc --strict` (skipLibCheck off) over api.ts, which uses the whole documented API, under
// moduleResolution bundler (also with the `browser` condition), Node16 and NodeNext (ES2022 and
// @types/node only: no DOM library, no ES2023 Symbol.dispose); then the NodeNext build runs
// against the relay of the test bed (WSRELAY_TESTBED), so declarations and package agree.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");

function check(config) {
  try {
    execFileSync(process.execPath, [tsc, "-p", join(here, config)], { cwd: here, encoding: "utf8" });
  } catch (error) {
    assert.fail(`tsc -p ${config}:\n${error.stdout}${error.stderr}`);
  }
}

test("tsc --strict, moduleResolution bundler (web build types)", () => check("tsconfig.bundler.json"));
test("tsc --strict, moduleResolution bundler with the browser condition", () => check("tsconfig.browser.json"));
test("tsc --strict, moduleResolution bundler without the DOM library", () => check("tsconfig.nodom.json"));

test("tsc --strict, Node16 (ESM and CommonJS, no DOM)", () => check("tsconfig.node16.json"));

test("tsc --strict, NodeNext (ESM and CommonJS, no DOM), then run against the relay", async () => {
  rmSync(join(here, "build"), { recursive: true, force: true });
  check("tsconfig.nodenext.json");
  const testbed = process.env.WSRELAY_TESTBED;
  assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");
  const url = await (await fetch(`${testbed}/url`)).text();
  // Node 20 has a global WebSocket only behind this flag; the program uses the global one.
  const flags = Number(process.versions.node.split(".")[0]) < 22 ? ["--experimental-websocket"] : [];
  const output = execFileSync(process.execPath, [...flags, join(here, "build", "run.js"), url], {
    encoding: "utf8",
    timeout: 30_000,
  });
  const seen = JSON.parse(output.trim().split("\n").at(-1));
  assert.ok(seen.some((line) => /^alice-\d+ says Hi$/.test(line)), output);
  for (const line of ["received", "online true", "members 2", "unknown_target", "WsRelayError -", "stats true number true", "close 4000 done false"]) {
    assert.ok(seen.includes(line), `${line} missing from ${output}`);
  }
});
