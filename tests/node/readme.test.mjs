// Every JavaScript snippet of README.md and of the package README (pkg-template/README.md)
// runs against the relay of the test bed (WSRELAY_TESTBED), unchanged but for the relay's
// address: each is written to a module next to the installed package and run by this Node.
// Snippets that rely on a global WebSocket run on Node 20 with --experimental-websocket, as
// the package README says. A block marked `js esbuild` is bundled and run in Chromium by
// tests/browser: here its lines are checked to be that page's; a block marked `js browser` runs
// there too.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const testbed = process.env.WSRELAY_TESTBED;
assert.ok(testbed, "WSRELAY_TESTBED is not set: run with `cargo xtask test`");
const url = await (await fetch(`${testbed}/url`)).text();
const major = Number(process.versions.node.split(".")[0]);

/** The fenced blocks of a Markdown file: [info string, code]. */
function blocks(markdown) {
  return [...markdown.matchAll(/^```([^\n]*)\n([\s\S]*?)^```$/gm)].map((m) => [m[1].trim(), m[2]]);
}

const sources = ["README.md", join("pkg-template", "README.md")];
for (const file of sources) {
  const snippets = blocks(readFileSync(join(root, file), "utf8")).filter(([info]) => info.startsWith("js"));
  assert.ok(snippets.length > 0, `${file} has JavaScript snippets`);
  snippets.forEach(([info, code], index) => {
    // Browser-only snippets (`wsrelay/persist`: IndexedDB, Web Locks) run in Chromium, in
    // tests/browser/persist.test.mjs.
    if (info === "js browser") return;
    if (info === "js esbuild") {
      test(`${file} snippet ${index + 1} is the esbuild page's code`, () => {
        const page = readFileSync(join(here, "..", "browser", "app", "esbuild", "main.js"), "utf8");
        for (const line of code.split("\n").map((l) => l.replace(/\s*\/\/.*$/, "").trim())) {
          if (line) assert.ok(page.includes(line), `${line} is not in tests/browser/app/esbuild/main.js`);
        }
      });
      return;
    }
    test(`${file} snippet ${index + 1} runs (Node ${major})`, () => {
      assert.ok(code.includes("ws://localhost:8080"), "the snippet names the relay it talks to");
      const commonjs = /\brequire\(/.test(code) && !/^import /m.test(code);
      const dir = mkdtempSync(join(here, ".readme-"));
      const path = join(dir, commonjs ? "snippet.cjs" : "snippet.mjs");
      writeFileSync(path, code.replaceAll("ws://localhost:8080", url));
      const flags = major < 22 && !code.includes("WebSocket }") ? ["--experimental-websocket"] : [];
      try {
        const output = execFileSync(process.execPath, [...flags, path], { encoding: "utf8", timeout: 30_000 });
        console.log(output.trim());
      } catch (error) {
        assert.fail(`exit ${error.status}:\n${error.stdout}${error.stderr}`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
