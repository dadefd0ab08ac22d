// A plain `ws` client over TLS: the relay's certificate is trusted through the test CA given
// (no `rejectUnauthorized: false`). Usage: node tls.mjs wss://HOST:PORT CA.pem
// Checks GET /healthz over https, then two clients chat over wss; exit 0 on success.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import WebSocket from 'ws';

const [base, caFile] = process.argv.slice(2);
if (!base || !caFile) {
  console.error('usage: node tls.mjs wss://HOST:PORT CA.pem');
  process.exit(2);
}
const ca = readFileSync(caFile);
const deadline = setTimeout(() => fail('timed out'), 10_000);

function fail(reason) {
  console.error(`node tls failed: ${reason}`);
  process.exit(1);
}

const health = await new Promise((resolve, reject) => {
  https
    .get(`${base.replace('wss:', 'https:')}/healthz`, { ca }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve(`${res.statusCode} ${body.trim()}`));
    })
    .on('error', reject);
}).catch((error) => fail(`https: ${error.message}`));
if (health !== '200 ok') fail(`GET /healthz answered ${health}`);

async function join(source) {
  const ws = new WebSocket(`${base}/?source=${source}`, { ca });
  const frames = [];
  const waiters = [];
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    if (frame.type === 'relay:presence') return;
    const waiter = waiters.shift();
    if (waiter) waiter(frame);
    else frames.push(frame);
  });
  ws.on('error', (error) => fail(`${source}: ${error.message}`));
  await new Promise((resolve) => ws.once('open', resolve));
  const next = () =>
    frames.length > 0 ? Promise.resolve(frames.shift()) : new Promise((resolve) => waiters.push(resolve));
  ws.send(JSON.stringify({ type: '~ping' }));
  if ((await next()).type !== '~pong') fail(`${source}: no pong`);
  return { ws, next };
}

const alice = await join('alice');
const bob = await join('bob');
alice.ws.send(JSON.stringify({ type: 'chat', payload: 'over TLS' }));
const got = await bob.next();
if (got.source !== 'alice' || got.payload !== 'over TLS') fail(`bob got ${JSON.stringify(got)}`);
alice.ws.close();
bob.ws.close();
clearTimeout(deadline);
console.log('node tls ok');
