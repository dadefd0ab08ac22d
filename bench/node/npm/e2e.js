// The end-to-end row of the wsrelay benchmarks: one Node process of senders and one of
// receivers, driven by the harness over stdin/stdout.
//
//   node e2e.js send    wsrelay|socketio URL SENDERS IN_FLIGHT
//   node e2e.js receive wsrelay|socketio URL RECEIVERS SENDERS
//
// wsrelay:  wsrelay's npm package (its Node build), `ws` as the WebSocket class (Node 20 has
//           none). A sender calls `client.send('bc', payload)` (a broadcast: no `to`) and
//           sends its next message when that Promise resolves (the relay acknowledged it).
// socketio: socket.io-client, websocket transport, one connection per client (`forceNew`). A
//           sender calls `socket.emit('bc', payload, ack)`; the server broadcasts
//           (`socket.broadcast.emit`) and then calls the acknowledgement.
// In both, every client is a plain default client but for the WebSocket class / transport.
//
// Payloads are 20-character strings: the sender's index on 2 digits, then its sequence number
// on 18 (`"03000000000000001234"`). A delivery is one payload reaching the `bc` handler of one
// receiver: each message sent is delivered once to each of the RECEIVERS receivers. (Both
// servers broadcast to every other client, so senders get each other's messages as well; they
// count them but those are not deliveries.) Each receiver checks, per sender, that the numbers
// arrive in order, each once.
//
// Senders: print `ready` once connected. Commands on stdin: `go` (each sender starts with
// IN_FLIGHT messages and sends one more as each is acknowledged), `stop` (no new message;
// once every message in flight is acknowledged, prints {"sent":[per sender],"failed",
// "error","echoes"}).
// Receivers: print `ready` once connected. Commands: `mark` (prints {"delivered","t_us"}:
// the deliveries so far and the monotonic clock), `expect N0,N1,... TIMEOUT_MS` (waits until
// every receiver has every message of every sender, or the timeout, then prints
// {"complete","expected","delivered","duplicates","gaps","malformed","short"}).
// Both exit when stdin closes (the harness is done or died).
'use strict';

const readline = require('readline');

const [role, mode, url, countArg, otherArg] = process.argv.slice(2);
const count = Number(countArg);
const other = Number(otherArg);

function fail(message) {
  process.stderr.write(`e2e ${role}: ${message}\n`);
  process.exit(1);
}

if (
  (role !== 'send' && role !== 'receive') ||
  (mode !== 'wsrelay' && mode !== 'socketio') ||
  !url ||
  !(count > 0) ||
  !(other > 0) ||
  (role === 'send' ? count : other) > 99
) {
  fail('usage: node e2e.js send|receive wsrelay|socketio URL COUNT SENDERS_OR_IN_FLIGHT');
}

function print(value) {
  process.stdout.write((typeof value === 'string' ? value : JSON.stringify(value)) + '\n');
}

// Connects client `name`; `onMessage(payload)` for each `bc` message. Resolves with
// `emit(payload, acked, failed)` once connected.
function connect(name, onMessage) {
  if (mode === 'wsrelay') {
    const { WebSocketClient } = require('wsrelay');
    const WebSocket = require('ws');
    const client = new WebSocketClient(url, name, { WebSocket });
    client.on('bc', onMessage);
    client.addEventListener('error', (event) => {
      process.stderr.write(`e2e ${name}: ${event.detail && event.detail.message}\n`);
    });
    const emit = (payload, acked, failed) => client.send('bc', payload).then(acked, failed);
    return new Promise((resolve) => {
      client.addEventListener('open', () => resolve({ client, emit }), { once: true });
    });
  }
  const { io } = require('socket.io-client');
  const socket = io(url, { transports: ['websocket'], forceNew: true, query: { source: name } });
  socket.on('bc', onMessage);
  socket.on('connect_error', (error) => {
    process.stderr.write(`e2e ${name}: ${error.message}\n`);
  });
  // The acknowledgement callback has no error argument without a timeout set.
  const emit = (payload, acked) => socket.emit('bc', payload, acked);
  return new Promise((resolve) => socket.once('connect', () => resolve({ client: socket, emit })));
}

// Connects `n` clients, at most 50 handshakes at a time.
async function connectAll(n, prefix, onMessage) {
  const clients = [];
  for (let first = 0; first < n; first += 50) {
    const batch = [];
    for (let i = first; i < Math.min(first + 50, n); i++) {
      batch.push(connect(`${prefix}${i}`, (payload) => onMessage(i, payload)));
    }
    clients.push(...(await Promise.all(batch)));
  }
  return clients;
}

// Sender `index`'s payload number `seq`: 2 + 18 digits.
function payloadOf(index, seq) {
  return (index < 10 ? '0' : '') + index + String(seq).padStart(18, '0');
}

async function senders(n, inFlight) {
  const sent = new Array(n).fill(0);
  const pending = new Array(n).fill(0);
  let stopping = false;
  let failed = 0;
  let error = null;
  let echoes = 0;
  let reported = false;
  const clients = await connectAll(n, 's', (_, payload) => {
    if (typeof payload === 'string') echoes += 1;
  });
  const report = () => {
    if (reported || !stopping || pending.some((p) => p > 0)) return;
    reported = true;
    print({ sent, failed, error, echoes });
  };
  const sendNext = (index) => {
    const seq = sent[index];
    sent[index] = seq + 1;
    pending[index] += 1;
    clients[index].emit(payloadOf(index, seq), acked[index], failedOne[index]);
  };
  // One callback per sender, made once: no closure per message.
  const acked = clients.map((_, index) => () => {
    pending[index] -= 1;
    if (stopping) report();
    else sendNext(index);
  });
  const failedOne = clients.map((_, index) => (err) => {
    failed += 1;
    if (error === null) error = String((err && err.code) || err);
    pending[index] -= 1;
    if (stopping) report();
    else sendNext(index);
  });
  print('ready');
  return (command) => {
    if (command === 'go') {
      for (let index = 0; index < n; index++) {
        for (let k = 0; k < inFlight; k++) sendNext(index);
      }
    } else if (command === 'stop') {
      stopping = true;
      report();
    }
  };
}

async function receivers(n, senderCount) {
  // Per receiver and sender: the next sequence number expected.
  const next = new Float64Array(n * senderCount);
  let delivered = 0;
  let duplicates = 0;
  let gaps = 0;
  let malformed = 0;
  const onMessage = (r, payload) => {
    if (typeof payload !== 'string' || payload.length !== 20) {
      malformed += 1;
      return;
    }
    const s = (payload.charCodeAt(0) - 48) * 10 + (payload.charCodeAt(1) - 48);
    const seq = Number(payload.slice(2));
    if (!(s >= 0 && s < senderCount) || !Number.isInteger(seq)) {
      malformed += 1;
      return;
    }
    delivered += 1;
    const k = r * senderCount + s;
    const want = next[k];
    if (seq === want) {
      next[k] = want + 1;
    } else if (seq < want) {
      duplicates += 1;
    } else {
      // Out of order, or some were lost: the run fails either way.
      gaps += seq - want;
      next[k] = seq + 1;
    }
  };
  await connectAll(n, 'r', onMessage);
  print('ready');
  return (command) => {
    const [verb, countsArg, timeoutArg] = command.split(' ');
    if (verb === 'mark') {
      print({ delivered, t_us: Number(process.hrtime.bigint() / 1000n) });
    } else if (verb === 'expect') {
      const counts = (countsArg || '').split(',').map(Number);
      if (counts.length !== senderCount || counts.some((c) => !(c >= 0))) {
        fail(`expect: bad counts ${countsArg}`);
      }
      const expected = n * counts.reduce((a, b) => a + b, 0);
      const deadline = Date.now() + (Number(timeoutArg) || 30000);
      const check = () => {
        let short = 0;
        for (let r = 0; r < n; r++) {
          for (let s = 0; s < senderCount; s++) {
            if (next[r * senderCount + s] < counts[s]) {
              short += 1;
              break;
            }
          }
        }
        if (short === 0 || Date.now() >= deadline) {
          print({
            complete: short === 0 && duplicates === 0 && gaps === 0 && malformed === 0,
            expected,
            delivered,
            duplicates,
            gaps,
            malformed,
            short,
          });
        } else {
          setTimeout(check, 20);
        }
      };
      check();
    }
  };
}

async function main() {
  const handle =
    role === 'send' ? await senders(count, other) : await receivers(count, other);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => handle(line.trim()));
  lines.on('close', () => process.exit(0));
}

main().catch((error) => fail(error.stack || String(error)));
