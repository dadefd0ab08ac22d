// Size regression guard of the web build (wasm + JS glue, gzip -9). The target (13 KB) is
// tracked in BENCHMARKS.md; this ceiling sits a little above the size reached, so a change
// that grows the package noticeably fails here and must say why.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const CEILING = 42.5 * 1024; // reached: 42.2 KB here (37.0 KB wasm + 5.2 KB glue)

test("web build stays under its size ceiling (gzip -9)", () => {
  const dir = new URL("../../pkg/web/", import.meta.url);
  const gz = (file) => gzipSync(readFileSync(new URL(file, dir)), { level: 9 }).length;
  const wasm = gz("wsrelay_bg.wasm");
  const glue = gz("wsrelay.js");
  console.log(`web build: wasm ${wasm} B + glue ${glue} B = ${wasm + glue} B gzipped`);
  assert.ok(wasm + glue <= CEILING, `${wasm + glue} B > ceiling ${CEILING} B`);
});
