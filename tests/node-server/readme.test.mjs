// The TypeScript snippets of the READMEs that show the Node server package (README.md's Node
// section, the package's own README) are checked by `tsc --strict` against the installed
// package, unchanged; the package README's (the original design's example) also runs, on a
// free port instead of 8080, and its process must end by itself after its close().
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { here } from "./helpers.mjs";

const root = join(here, "..", "..");
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");

/** The ```ts blocks of a Markdown file that import wsrelay-server. */
function snippets(file) {
  const markdown = readFileSync(join(root, file), "utf8");
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]).filter((code) => code.includes('from "wsrelay-server"'));
}

test("the READMEs' TypeScript snippets pass tsc --strict; the package README's runs", () => {
  const dir = join(here, ".readme");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  try {
    const files = [];
    for (const [name, file] of [["readme", "README.md"], ["package", join("node-server", "js", "README.md")]]) {
      const found = snippets(file);
      assert.ok(found.length > 0, `${file} has a TypeScript snippet of wsrelay-server`);
      found.forEach((code, index) => {
        const path = join(dir, `${name}-${index + 1}.ts`);
        // A module (top-level await) of its own.
        writeFileSync(path, `${code}\nexport {};\n`);
        files.push(path);
      });
    }
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          skipLibCheck: false,
          target: "ES2022",
          lib: ["ES2022"],
          module: "NodeNext",
          moduleResolution: "NodeNext",
          types: ["node"],
          outDir: "build",
        },
        files,
      }),
    );
    try {
      execFileSync(process.execPath, [tsc, "-p", join(dir, "tsconfig.json")], { cwd: here, encoding: "utf8" });
    } catch (error) {
      assert.fail(`tsc:\n${error.stdout}${error.stderr}`);
    }
    // The original design's example: a server on a free port, which it then closes.
    const program = join(dir, "build", "package-1.js");
    writeFileSync(program, readFileSync(program, "utf8").replace("new WebSocketServer(8080)", "new WebSocketServer(0)"));
    execFileSync(process.execPath, [program], { cwd: here, encoding: "utf8", timeout: 20_000 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
