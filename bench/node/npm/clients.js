// The clients of the npm rows of the wsrelay benchmarks: RECEIVERS clients in this one Node
// process, each counting the `bc` messages it receives, and this process's CPU time
// (process.cpuUsage: user + system, every thread) over the measured deliveries.
//
//   node clients.js wsrelay|socketio URL RECEIVERS WARMUP MEASURED TIMEOUT_MS
//
// wsrelay:  wsrelay's npm package (`require('wsrelay')`: its Node build), `ws` as the
//           WebSocket class (Node 20 has none), a handler `client.on('bc', ...)`. Options of
//           the client may be set for a comparison with the environment variable
//           WSRELAY_BENCH_CLIENT_OPTIONS, a JSON object (e.g. `{"ackDelay":500}`; with
//           `{"persist":{"dir":D}}` each client keeps its journal in a file of its own in D).
// socketio: socket.io-client with the websocket transport only (the server allows nothing
//           else), one connection per client (`forceNew`), a listener `socket.on('bc', ...)`.
// Both use the same `ws` underneath (socket.io-client's engine.io-client depends on it).
//
// Prints `ready` once every client is connected. The harness then broadcasts; the first WARMUP
// deliveries (in all) warm up the JIT and are not measured; the CPU time is read at the
// delivery after them and at the (WARMUP + MEASURED)-th, then one JSON line is printed:
// {"delivered", "expected", "short", "measured", "cpu_us", "wall_us"}: `measured` deliveries
// took `cpu_us` of CPU time (user + system) in `wall_us`; `short` counts the clients that did
// not receive exactly their share (a run with short clients or fewer deliveries than expected
// failed). After TIMEOUT_MS without completing, the same line says what arrived. Exits when
// stdin closes (the harness is done or died).
'use strict';

const [mode, url, receiversArg, warmupArg, measuredArg, timeoutArg] = process.argv.slice(2);
const receivers = Number(receiversArg);
const warmup = Number(warmupArg);
const measured = Number(measuredArg);
const expected = warmup + measured;
const perClient = expected / receivers;

function fail(message) {
  process.stderr.write(`npm clients: ${message}\n`);
  process.exit(1);
}

if (!url || !(receivers > 0) || !(measured > 0) || !Number.isInteger(perClient)) {
  fail('usage: node clients.js wsrelay|socketio URL RECEIVERS WARMUP MEASURED TIMEOUT_MS');
}

// Options of every wsrelay client, from WSRELAY_BENCH_CLIENT_OPTIONS (for comparisons).
let wsrelayOptions = {};
try {
  wsrelayOptions = JSON.parse(process.env.WSRELAY_BENCH_CLIENT_OPTIONS || '{}');
} catch (error) {
  fail(`WSRELAY_BENCH_CLIENT_OPTIONS: ${error.message}`);
}

const counts = new Array(receivers).fill(0);
// Every client, kept for the life of the process.
const clients = [];
let delivered = 0;
let start = null;
let reported = false;

function report(end) {
  if (reported) return;
  reported = true;
  const cpu = start ? process.cpuUsage(start.cpu) : { user: 0, system: 0 };
  const wall = start ? end - start.wall : 0n;
  const short = counts.filter((n) => n !== perClient).length;
  process.stdout.write(
    JSON.stringify({
      delivered,
      expected,
      short,
      measured: start ? delivered - start.delivered : 0,
      cpu_us: cpu.user + cpu.system,
      wall_us: Number(wall / 1000n),
    }) + '\n',
  );
}

// The one thing both clients do per message.
function deliver(index) {
  counts[index] += 1;
  delivered += 1;
  if (delivered === warmup + 1) {
    start = { cpu: process.cpuUsage(), wall: process.hrtime.bigint(), delivered };
  }
  if (delivered === expected) {
    const end = process.hrtime.bigint();
    report(end);
  }
}

function connectWsrelay(index) {
  const { WebSocketClient } = require('wsrelay');
  const WebSocket = require('ws');
  // `{"persist":{"dir":D}}` gives each client a journal of its own in D (issue 19's cost).
  const persist = wsrelayOptions.persist?.dir
    ? { persist: { path: require('path').join(wsrelayOptions.persist.dir, `r${index}.journal`) } }
    : {};
  const client = new WebSocketClient(url, `r${index}`, { ...wsrelayOptions, ...persist, WebSocket });
  client.on('bc', (payload) => {
    if (typeof payload === 'string') deliver(index);
  });
  client.addEventListener('error', (event) => {
    process.stderr.write(`npm clients: r${index}: ${event.detail && event.detail.message}\n`);
  });
  return new Promise((resolve) => {
    client.addEventListener('open', () => resolve(client), { once: true });
  });
}

function connectSocketIo(index) {
  const { io } = require('socket.io-client');
  const socket = io(url, {
    transports: ['websocket'],
    forceNew: true,
    query: { source: `r${index}` },
  });
  socket.on('bc', (payload) => {
    if (typeof payload === 'string') deliver(index);
  });
  socket.on('connect_error', (error) => {
    process.stderr.write(`npm clients: r${index}: ${error.message}\n`);
  });
  return new Promise((resolve) => socket.once('connect', () => resolve(socket)));
}

async function main() {
  let connect;
  if (mode === 'wsrelay') {
    connect = connectWsrelay;
  } else if (mode === 'socketio') {
    connect = connectSocketIo;
  } else {
    fail(`unknown mode ${mode}`);
  }
  // At most 50 handshakes at a time.
  for (let first = 0; first < receivers; first += 50) {
    const batch = [];
    for (let i = first; i < Math.min(first + 50, receivers); i++) batch.push(connect(i));
    clients.push(...(await Promise.all(batch)));
  }
  process.stdout.write('ready\n');
  setTimeout(() => report(process.hrtime.bigint()), Number(timeoutArg) || 60000).unref();
}

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
main().catch((error) => fail(error.stack || String(error)));
