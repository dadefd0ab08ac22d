// The clients of the browser row of the wsrelay benchmarks: RECEIVERS clients in ONE headless
// Chromium page, each counting the `bc` messages it receives, and the CPU time of the page's
// renderer process over the measured deliveries.
//
//   node clients.js wsrelay|socketio|bare URL RECEIVERS WARMUP MEASURED TIMEOUT_MS PKG_WEB
//
// wsrelay:  wsrelay's web build (PKG_WEB: the package's `pkg/web`, an ES module and its .wasm)
//           imported by the page, the browser's own WebSocket, a handler
//           `client.on('bc', ...)`. Options of the client may be set for a comparison with the
//           environment variable WSRELAY_BENCH_CLIENT_OPTIONS, a JSON object.
// socketio: socket.io-client's browser bundle (`dist/socket.io.min.js` of this folder's
//           socket.io-client) loaded by a <script> tag, the websocket transport only (the
//           server allows nothing else), one connection per client (`forceNew`), a listener
//           `socket.on('bc', ...)`.
// bare:     the floor, no library: the browser's WebSocket speaking Socket.IO's wire format by
//           hand to the same Socket.IO server (engine.io v4: `40` to join the namespace once
//           the server's `0{...}` arrives, `3` to each ping `2`), an `onmessage` that counts
//           the frames starting `42` without parsing them. What Chromium costs per message
//           whatever the library does.
// The page is served by a static HTTP server of this process on a free loopback port; the
// browser is the system Chromium (CHROMIUM, default /usr/bin/chromium), headless, driven over
// the DevTools protocol on its `--remote-debugging-pipe` (no Playwright: see `launch`). The
// page's uncaught errors, console errors and Chromium's own error messages (a failed
// WebSocket...) are collected; the page's renderer process is the one a DevTools trace names
// for its main frame.
//
// Prints `ready` once every client is connected. The harness then sends the WARMUP deliveries'
// broadcasts (they warm up the JIT and are not measured) and writes `mark` on stdin: this
// process waits until the page has every warm-up delivery, then 250 ms more (the last
// acknowledgements), reads the renderer's CPU time and answers `marked`; then the harness
// sends the measured broadcasts. At the (WARMUP + MEASURED)-th delivery the page tells this
// process, which reads the CPU time again and prints one JSON line:
//   delivered, expected   deliveries counted in the page, and expected;
//   short                 clients that did not receive exactly their share;
//   measured, cpu_us, wall_us
//                         `measured` deliveries took `cpu_us` of the renderer's CPU time (user
//                         + system, every thread: /proc/PID/task/*/schedstat, nanoseconds) in
//                         `wall_us`;
//   browser_cpu_us        the same for every process of the browser (the browser process, the
//                         network service that owns the sockets, the GPU process, renderers);
//   renderer_pid, renderer_threads_us, threads_exited
//                         the renderer, its CPU time by thread name, and how many of its
//                         threads exited while measured (their time is lost);
//   browser_processes_us  the browser's CPU time by kind of process;
//   warmup_lag_ms         how long the page took after `mark` to have the whole warm-up;
//   errors                the page's uncaught errors and console errors.
// A run with any error, with short clients or with fewer deliveries than expected failed.
// After TIMEOUT_MS without completing, the same line says what arrived. Exits when stdin
// closes (the harness is done or died).
//
// WSRELAY_BENCH_BROWSER_PROFILE=DIR: also records a CPU profile of the page's JavaScript (and
// wasm) over the measured window through the DevTools protocol (Profiler domain, 100 µs
// sampling) and writes it to DIR/browser-MODE-PID.cpuprofile (open it in Chrome's DevTools or
// speedscope). The profiler's own cost is then in the measured CPU time.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const readline = require('readline');

const [mode, url, receiversArg, warmupArg, measuredArg, timeoutArg, pkgWeb] =
  process.argv.slice(2);
const receivers = Number(receiversArg);
const warmup = Number(warmupArg);
const measured = Number(measuredArg);
const expected = warmup + measured;
const perClient = expected / receivers;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PROFILE_DIR = process.env.WSRELAY_BENCH_BROWSER_PROFILE;
// The pause between the last warm-up delivery and the measurement: longer than the 1 s
// within which a wsrelay client acknowledges what it received.
const SETTLE_MS = 1050;

function fail(message) {
  process.stderr.write(`browser clients: ${message}\n`);
  process.exit(1);
}

if (
  !url ||
  !pkgWeb ||
  !['wsrelay', 'socketio', 'bare'].includes(mode) ||
  !(receivers > 0) ||
  !(measured > 0) ||
  !Number.isInteger(perClient)
) {
  fail(
    'usage: node clients.js wsrelay|socketio|bare URL RECEIVERS WARMUP MEASURED TIMEOUT_MS PKG_WEB',
  );
}

// Options of every wsrelay client, from WSRELAY_BENCH_CLIENT_OPTIONS (for comparisons).
let wsrelayOptions = {};
try {
  wsrelayOptions = JSON.parse(process.env.WSRELAY_BENCH_CLIENT_OPTIONS || '{}');
} catch (error) {
  fail(`WSRELAY_BENCH_CLIENT_OPTIONS: ${error.message}`);
}

// The page: the clients, their counts, and `window.__bench(...)` (a binding to this process)
// called once, at the last expected delivery. `deliver` is the one thing both clients do per
// message.
const PAGE = `<!doctype html><meta charset="utf-8"><title>wsrelay bench: browser clients</title>
<link rel="icon" href="data:,">
<script src="/socket.io.min.js"></script>
<script type="module">
  const counts = [];
  let delivered = 0;
  let expected = Infinity;
  // Every client, kept for the life of the page.
  const clients = [];
  function deliver(index) {
    counts[index] += 1;
    delivered += 1;
    if (delivered === expected) window.__bench("done");
  }
  async function connectWsrelay(url, index, options) {
    const client = new window.WsrelayClient(url, "r" + index, options);
    client.on("bc", (payload) => {
      if (typeof payload === "string") deliver(index);
    });
    client.addEventListener("error", (event) => {
      console.error("r" + index + ": " + (event.detail && event.detail.message));
    });
    await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
    return client;
  }
  async function connectSocketIo(url, index) {
    const socket = window.io(url, {
      transports: ["websocket"],
      forceNew: true,
      query: { source: "r" + index },
    });
    socket.on("bc", (payload) => {
      if (typeof payload === "string") deliver(index);
    });
    socket.on("connect_error", (error) => console.error("r" + index + ": " + error.message));
    await new Promise((resolve) => socket.once("connect", resolve));
    return socket;
  }
  async function connectBare(url, index) {
    const ws = new WebSocket(
      url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket&source=r" + index,
    );
    let joined;
    const open = new Promise((resolve) => (joined = resolve));
    ws.onmessage = (event) => {
      const data = event.data;
      if (data.charCodeAt(0) === 52 && data.charCodeAt(1) === 50) deliver(index);
      else if (data === "2") ws.send("3");
      else if (data.charCodeAt(0) === 48) ws.send("40");
      else if (data.startsWith("40")) joined();
    };
    ws.onerror = () => console.error("r" + index + ": WebSocket error");
    await open;
    return ws;
  }
  window.connectAll = async (mode, url, receivers, total, options) => {
    expected = total;
    let connect = mode === "bare" ? connectBare : connectSocketIo;
    if (mode === "wsrelay") {
      const { default: init, WebSocketClient } = await import("/pkg/wsrelay.js");
      await init();
      window.WsrelayClient = WebSocketClient;
      connect = connectWsrelay;
    }
    // At most 5 handshakes at a time: Chromium delays a new WebSocket handshake the more are
    // pending (seen here: 20 at once took 4.3 s, 200 in batches of 50 took 20 s, in batches
    // of 5 3 s).
    for (let first = 0; first < receivers; first += 5) {
      const batch = [];
      for (let i = first; i < Math.min(first + 5, receivers); i++) {
        counts[i] = 0;
        batch.push(connect(url, i, options));
      }
      clients.push(...(await Promise.all(batch)));
    }
    return document.visibilityState;
  };
  window.counts = () => ({ delivered, counts });
</script>`;

// URL path -> file served.
const FILES = {
  '/socket.io.min.js': path.join(
    __dirname,
    'node_modules',
    'socket.io-client',
    'dist',
    'socket.io.min.js',
  ),
};
const TYPES = { '.js': 'text/javascript', '.wasm': 'application/wasm' };

function serve(request, response) {
  const where = new URL(request.url, 'http://x').pathname;
  if (where === '/' || where === '/index.html') {
    response.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    return;
  }
  let file = FILES[where];
  if (!file && where.startsWith('/pkg/')) {
    const name = path.basename(where);
    // The package's files only (no folders, nothing above it).
    if (name === where.slice('/pkg/'.length)) file = path.join(pkgWeb, name);
  }
  fs.readFile(file || '', (error, data) => {
    if (error) {
      response.writeHead(404).end();
      return;
    }
    const type = TYPES[path.extname(file)] || 'application/octet-stream';
    response.writeHead(200, { 'content-type': type }).end(data);
  });
}

// The CPU time (user + system) of each thread of a process, in nanoseconds, by `PID/TID`:
// /proc/PID/task/TID/schedstat, precise where /proc/PID/stat counts clock ticks (10 ms).
// Threads are kept apart so that `since` can tell the ones that exited (their time is lost:
// `exited` says how many).
function threadTimes(pid) {
  const times = new Map();
  let tids = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return times;
  }
  for (const tid of tids) {
    try {
      const ns = Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      if (Number.isFinite(ns)) times.set(`${pid}/${tid}`, ns);
    } catch {
      // The thread exited between the listing and the read.
    }
  }
  return times;
}

// Every process descended from this one (the browser and its children), with its command line.
function descendants() {
  const parent = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(entry), Number(fields[1]));
    } catch {
      // Gone meanwhile.
    }
  }
  const ours = new Set([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!ours.has(pid) && ours.has(ppid)) {
        ours.add(pid);
        grew = true;
      }
    }
  }
  ours.delete(process.pid);
  return [...ours].map((pid) => {
    let cmdline = '';
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    } catch {
      // Gone meanwhile.
    }
    return { pid, cmdline };
  });
}

// What a browser process is, from its command line: `browser`, `renderer`, `gpu-process`,
// `utility network.mojom.NetworkService`...
function kind(cmdline) {
  const type = /--type=(\S+)/.exec(cmdline);
  const sub = /--utility-sub-type=(\S+)/.exec(cmdline);
  return type ? `${type[1]}${sub ? ` ${sub[1]}` : ''}` : 'browser';
}

// A reading of the CPU time of `pids`: every thread's nanoseconds.
function reading(pids) {
  const times = new Map();
  for (const pid of pids) for (const [k, v] of threadTimes(pid)) times.set(k, v);
  return { times, at: process.hrtime.bigint() };
}

// Microseconds of CPU between two readings (threads born in between count from zero), in
// all and by thread name (`comm`: the main thread is `chromium`, the IO thread
// `Chrome_ChildIOT`...).
function since(before, after) {
  let ns = 0;
  let exited = 0;
  const byName = {};
  const byPid = {};
  for (const [k, v] of after.times) {
    const delta = v - (before.times.get(k) || 0);
    ns += delta;
    const pid = k.split('/')[0];
    byPid[pid] = (byPid[pid] || 0) + delta / 1000;
    let name = '?';
    try {
      name = fs.readFileSync(`/proc/${k.replace('/', '/task/')}/comm`, 'utf8').trim();
    } catch {
      // Exited since the reading.
    }
    byName[name] = Math.round((byName[name] || 0) + delta / 1000);
  }
  for (const k of before.times.keys()) if (!after.times.has(k)) exited += 1;
  return { us: ns / 1000, exited, byName, byPid };
}

// A DevTools protocol connection over Chromium's `--remote-debugging-pipe` (fd 3 in, fd 4
// out, messages ended by NUL): commands answered by id, events handed to the listeners.
class Cdp {
  constructor(input, output) {
    this.input = input;
    this.id = 0;
    this.pending = new Map();
    this.listeners = [];
    let buffer = '';
    output.setEncoding('utf8');
    output.on('data', (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\0')) >= 0) {
        const message = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        this.dispatch(message);
      }
    });
  }

  dispatch(message) {
    if (message.id === undefined) {
      for (const listener of this.listeners) listener(message);
      return;
    }
    const call = this.pending.get(message.id);
    this.pending.delete(message.id);
    if (!call) return;
    if (message.error) call.reject(new Error(`${call.method}: ${message.error.message}`));
    else call.resolve(message.result);
  }

  send(method, params = {}, sessionId = undefined) {
    const id = ++this.id;
    this.input.write(`${JSON.stringify({ id, method, params, sessionId })}\0`);
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, method }));
  }
}

// Chromium, headless, driven over the pipe. No automation framework: Playwright enables
// DevTools' Network domain on every page, and Chromium then reports every WebSocket frame to
// it (measured here: socket.io-client's renderer CPU per delivery tripled). Only the Runtime,
// Log and Inspector domains are enabled, for the page's errors.
function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'wsrelay-bench-chromium-'));
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-extensions',
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    '--mute-audio',
    `--user-data-dir=${profile}`,
    '--remote-debugging-pipe',
    'about:blank',
  ];
  const child = spawn(CHROMIUM, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-2000);
  });
  child.on('error', (error) => fail(`cannot start ${CHROMIUM}: ${error.message}`));
  child.on('exit', (code, signal) => {
    fs.rmSync(profile, { recursive: true, force: true });
    if (!closing) fail(`Chromium exited (${code ?? signal}): ${stderr}`);
  });
  return { child, cdp: new Cdp(child.stdio[3], child.stdio[4]) };
}

let closing = false;

async function main() {
  const server = http.createServer(serve);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const { child, cdp } = launch();
  const { targetId } = await cdp.send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  const errors = [];
  let onBinding = () => {};
  let onTrace = () => {};
  cdp.listeners.push((event) => {
    const params = event.params || {};
    if (event.method === 'Tracing.dataCollected' || event.method === 'Tracing.tracingComplete') {
      onTrace(event);
    }
    if (event.sessionId !== sessionId) return;
    if (event.method === 'Runtime.exceptionThrown') {
      const details = params.exceptionDetails || {};
      errors.push(`page error: ${(details.exception && details.exception.description) || details.text}`);
    } else if (event.method === 'Runtime.consoleAPICalled' && params.type === 'error') {
      const text = (params.args || []).map((arg) => arg.value ?? arg.description).join(' ');
      errors.push(`console error: ${text}`);
    } else if (event.method === 'Log.entryAdded' && params.entry.level === 'error') {
      errors.push(`console error: ${params.entry.text}`);
    } else if (event.method === 'Inspector.targetCrashed') {
      errors.push('the page crashed');
    } else if (event.method === 'Runtime.bindingCalled' && params.name === '__bench') {
      onBinding();
    }
  });
  for (const domain of ['Runtime', 'Log', 'Inspector']) {
    await cdp.send(`${domain}.enable`, {}, sessionId);
  }
  // The page calls this at the last expected delivery.
  await cdp.send('Runtime.addBinding', { name: '__bench' }, sessionId);
  // `expression` evaluated in the page, awaited; its value.
  const evaluate = async (expression) => {
    const result = await cdp.send(
      'Runtime.evaluate',
      { expression, awaitPromise: true, returnByValue: true },
      sessionId,
    );
    if (result.exceptionDetails) {
      const details = result.exceptionDetails;
      throw new Error(`${(details.exception && details.exception.description) || details.text}`);
    }
    return result.result.value;
  };

  let start = null;
  // How long the page took, after the last warm-up broadcast, to have all of the warm-up.
  let lag = 0;
  let reported = false;
  let profiling = false;
  let renderers = [];
  let browserPids = [];
  // The kind of each browser process, by pid.
  const kinds = new Map();
  const byKind = (byPid) => {
    const out = {};
    for (const [pid, us] of Object.entries(byPid)) {
      const name = kinds.get(Number(pid)) || '?';
      out[name] = Math.round((out[name] || 0) + us);
    }
    return out;
  };

  async function report() {
    if (reported) return;
    reported = true;
    const end = { renderer: reading(renderers), browser: reading(browserPids) };
    let profile = null;
    if (profiling) profile = await cdp.send('Profiler.stop', {}, sessionId).catch(() => null);
    const state = await evaluate('window.counts()').catch(() => ({ delivered: 0, counts: [] }));
    const short = state.counts.filter((n) => n !== perClient).length + (receivers - state.counts.length);
    const none = { us: 0, exited: 0, byName: {}, byPid: {} };
    const renderer = start ? since(start.renderer, end.renderer) : none;
    const all = start ? since(start.browser, end.browser) : none;
    process.stdout.write(
      JSON.stringify({
        delivered: state.delivered,
        expected,
        short,
        measured: start ? state.delivered - start.delivered : 0,
        cpu_us: renderer.us,
        wall_us: start ? Number((end.renderer.at - start.renderer.at) / 1000n) : 0,
        browser_cpu_us: all.us,
        renderer_pid: renderers[0],
        threads_exited: renderer.exited,
        renderer_threads_us: renderer.byName,
        browser_processes_us: byKind(all.byPid),
        warmup_lag_ms: lag,
        errors,
      }) + '\n',
    );
    if (profile && profile.profile) {
      fs.mkdirSync(PROFILE_DIR, { recursive: true });
      const file = path.join(PROFILE_DIR, `browser-${mode}-${process.pid}.cpuprofile`);
      fs.writeFileSync(file, JSON.stringify(profile.profile));
      process.stderr.write(`browser clients: profile written to ${file}\n`);
    }
  }
  onBinding = () => report().catch((error) => fail(error.stack || String(error)));

  await cdp.send('Page.navigate', { url: `${base}/` }, sessionId);
  const loaded = Date.now() + 30_000;
  while (!(await evaluate('typeof window.connectAll === "function"').catch(() => false))) {
    if (Date.now() > loaded) fail('the page did not load');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const call = JSON.stringify([mode, url, receivers, expected, wsrelayOptions]);
  const visibility = await evaluate(`window.connectAll(...${call})`);
  if (visibility !== 'visible') errors.push(`the page is ${visibility}: its timers are throttled`);

  // The page's renderer. Chromium runs several (the page's, a spare one kept ready for the
  // next navigation, one for its own WebUI): the page's is the process a DevTools trace names
  // for the page's main frame (its `TracingStartedInBrowser` event), traced from the page's
  // session.
  const processes = descendants();
  browserPids = processes.map((p) => p.pid);
  for (const p of processes) kinds.set(p.pid, kind(p.cmdline));
  const traced = [];
  const complete = new Promise((resolve) => {
    onTrace = (event) => {
      if (event.method === 'Tracing.dataCollected') traced.push(...event.params.value);
      else resolve();
    };
  });
  await cdp.send(
    'Tracing.start',
    {
      traceConfig: { includedCategories: ['disabled-by-default-devtools.timeline'] },
      transferMode: 'ReportEvents',
    },
    sessionId,
  );
  await cdp.send('Tracing.end', {}, sessionId);
  await complete;
  const frames = traced
    .filter((event) => event.name === 'TracingStartedInBrowser')
    .flatMap((event) => (event.args && event.args.data && event.args.data.frames) || []);
  const main = frames.find((frame) => frame.isOutermostMainFrame && frame.url.startsWith(base));
  const renderer = processes.find(
    (p) => main && p.pid === main.processId && p.cmdline.includes('--type=renderer'),
  );
  if (!renderer) {
    fail(`the page's renderer process was not found (trace: ${JSON.stringify(frames)})`);
  }
  renderers = [renderer.pid];
  process.stdout.write('ready\n');
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    if (line.trim() !== 'mark') return;
    try {
      // A loaded page may still be working through the warm-up: wait for all of it, then
      // for the acknowledgements it owes (wsrelay acknowledges within 1 s).
      const asked = Date.now();
      const until = asked + 60_000;
      let state = await evaluate('window.counts().delivered');
      while (state < warmup && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        state = await evaluate('window.counts().delivered');
      }
      lag = Date.now() - asked;
      if (state !== warmup) {
        errors.push(`${state} of the ${warmup} warm-up deliveries arrived before the measurement`);
      }
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      if (PROFILE_DIR) {
        await cdp.send('Profiler.enable', {}, sessionId);
        await cdp.send('Profiler.setSamplingInterval', { interval: 100 }, sessionId);
        await cdp.send('Profiler.start', {}, sessionId);
        profiling = true;
      }
      start = { renderer: reading(renderers), browser: reading(browserPids), delivered: state };
      process.stdout.write('marked\n');
    } catch (error) {
      fail(error.stack || String(error));
    }
  });
  lines.on('close', () => {
    closing = true;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    cdp.send('Browser.close').catch(() => {});
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    exited.then(() => {
      clearTimeout(timer);
      process.exit(0);
    });
  });
  setTimeout(() => report().catch(() => {}), Number(timeoutArg) || 60000).unref();
}

main().catch((error) => fail(error.stack || String(error)));
