// The relay binary and the chat demo as the end-to-end tests drive them.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const output = join(root, "test-output", "e2e");
export const binary = process.env.WSRELAY_SERVER_BIN;
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const WAIT = 15_000;
export const BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"];

/** Starts the relay serving www/ on `port` (0: a free one); resolves once it listens. */
export function startRelay(port = 0, extra = []) {
  return new Promise((resolve, reject) => {
    const args = ["--host", "127.0.0.1", "--port", String(port), "--www", join(root, "www"), ...extra];
    const child = spawn(binary, args, {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    });
    const timer = setTimeout(() => reject(new Error("relay did not announce its port")), WAIT);
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`relay exited early with ${code}`)));
    createInterface({ input: child.stdout }).once("line", (line) => {
      clearTimeout(timer);
      const match = /^listening on https?:\/\/(.+):(\d+)$/.exec(line);
      if (!match) return reject(new Error(`unexpected relay output ${line}`));
      child.removeAllListeners("exit");
      resolve({ child, port: Number(match[2]) });
    });
  });
}

/** SIGTERM: the relay closes every connection with 1001 and exits. */
export function stopRelay({ child }) {
  return new Promise((resolve) => {
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}

export async function startRelayAgain(port, extra = []) {
  // The port was just released; a few quick retries cover the kernel catching up.
  for (let attempt = 0; ; attempt++) {
    try {
      return await startRelay(port, extra);
    } catch (error) {
      if (attempt >= 20) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function joinChat(page, base, name) {
  await page.goto(base);
  await page.fill("#name", name);
  await page.click("#join");
  await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT });
}

export async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

