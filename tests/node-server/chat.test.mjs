// The original design's complete chat example on the Node server package: the server written
// in TypeScript (chat/server.ts, checked by `tsc --strict` with the package's declarations, as
// are the original example under ES modules, CommonJS and bundler resolution, and a program
// using the whole API), run by Node; clients from the `wsrelay` npm package in Node 20 (npm
// `ws`), Node 22 (its global WebSocket) and headless Chromium (a page the chat server serves
// itself, `www`). Every chat message reaches every client, in order, with `sender` set by the
// server's handler; then the announcement and the private message of the original example;
// then `close()`, after which the server's process exits by itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM, NODE22, child, connect, hasNode22, here, within } from "./helpers.mjs";

const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
const COUNT = 50;

function typecheck(config) {
  try {
    execFileSync(process.execPath, [tsc, "-p", join(here, config)], { cwd: here, encoding: "utf8" });
  } catch (error) {
    assert.fail(`tsc -p ${config}:\n${error.stdout}${error.stderr}`);
  }
}

test("tsc --strict accepts the original example (ESM, CommonJS, bundler) and the whole API", () => {
  rmSync(join(here, "build"), { recursive: true, force: true });
  typecheck("tsconfig.json");
  typecheck("tsconfig.bundler.json");
});

test("the original design's chat: a TypeScript server, clients in Node 20, Node 22 and Chromium", async (t) => {
  assert.ok(hasNode22(), `Node 22 is not installed at ${NODE22} (npm ci in tests/node22)`);
  // The page and the package's web build, served by the chat server itself.
  const www = mkdtempSync(join(tmpdir(), "wsrelay-chat-www-"));
  t.after(() => rmSync(www, { recursive: true, force: true }));
  cpSync(join(here, "chat", "page.html"), join(www, "page.html"));
  cpSync(join(here, "chat", "chatter.mjs"), join(www, "chatter.mjs"));
  mkdirSync(join(www, "pkg"));
  cpSync(join(here, "node_modules", "wsrelay", "web"), join(www, "pkg"), { recursive: true });

  const server = child(process.execPath, [join(here, "build", "chat", "server.js")], {
    env: { ...process.env, PORT: "0", WWW: www },
  });
  t.after(() => server.stop());
  const { url } = await server.json("url", 10_000);
  const port = new URL(url).port;

  const peers = ["client123", "node22", "browser"];
  const node20 = child(process.execPath, [join(here, "chat", "client.mjs"), url, "client123", peers.join(","), String(COUNT)]);
  const node22 = child(NODE22, [join(here, "chat", "client.mjs"), url, "node22", peers.join(","), String(COUNT)]);
  t.after(() => node20.stop());
  t.after(() => node22.stop());
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  await page.goto(`http://127.0.0.1:${port}/page.html#browser,${peers.join("+")},${COUNT}`);
  const browserReport = async (key) => {
    await page.waitForFunction((k) => window.reports.some((r) => r[k] || r.error), key, { timeout: 30_000 });
    const report = await page.evaluate((k) => window.reports.find((r) => r[k] || r.error), key);
    assert.equal(report.error, undefined, `the page failed: ${report.error} ${pageErrors.join("; ")}`);
    return report;
  };

  // Every client has every chat message of every client (its own included), in order, once.
  const chatted = await Promise.all([node20.json("chatted", 30_000), node22.json("chatted", 30_000), browserReport("chatted")]);
  for (const report of chatted) {
    assert.deepEqual(report.wrong, [], `${report.name} got messages out of place`);
    assert.equal(report.chats, COUNT * peers.length, `${report.name}'s count`);
  }
  assert.equal(chatted[0].websocket, "ws");
  assert.match(chatted[0].node, /^v20\./);
  assert.equal(chatted[1].websocket, "global");
  assert.match(chatted[1].node, /^v22\./);

  // The original example's announcement and private message, asked for by the admin.
  const admin = await connect(url, "admin-client");
  const answer = await admin.request("restart-notice", null, { timeout: 10_000 });
  assert.deepEqual(answer, { told: peers.length });
  const done = await Promise.all([node20.json("done", 30_000), node22.json("done", 30_000), browserReport("done")]);
  for (const report of done) {
    assert.equal(report.announcement, "Server is restarting in 5 minutes", report.name);
    assert.equal(report.private, report.name === "client123" ? "This is for you only" : null, report.name);
  }
  assert.equal(await node20.exited, 0, node20.stderr);
  assert.equal(await node22.exited, 0, node22.stderr);

  // A client that is not the admin may not announce: the handler's error reaches it.
  const intruder = await connect(url, "intruder");
  await assert.rejects(intruder.request("restart-notice", null), (error) => {
    assert.equal(error.code, "handler_error");
    assert.equal(error.message, "only the admin may announce");
    return true;
  });
  await intruder.close();

  // close(): the server's process ends by itself, nothing else holding it.
  const closedAt = Date.now();
  await admin.send("shutdown");
  await server.json("closed", 10_000);
  const code = await within(server.exited, 10_000, "still running");
  assert.equal(code, 0, `the server's exit: ${code}\n${server.stderr}`);
  assert.ok(Date.now() - closedAt < 10_000);
  await admin.close();
  assert.match(server.stderr, /chat server: handler_error: the handler of "restart-notice" failed: only the admin may announce/);
  assert.deepEqual(pageErrors, []);
});
