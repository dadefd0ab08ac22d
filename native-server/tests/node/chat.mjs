// A plain `ws` client speaking bare {type, payload} frames with ?source=, chatting through the
// relay binary. Usage: node chat.mjs ws://HOST:PORT   (exit 0 on success, 1 with a reason).
import WebSocket from 'ws';

const base = process.argv[2];
if (!base) {
  console.error('usage: node chat.mjs ws://HOST:PORT');
  process.exit(2);
}
const deadline = setTimeout(() => fail('timed out'), 10_000);

function fail(reason) {
  console.error(`node chat failed: ${reason}`);
  process.exit(1);
}

// A connection whose frames are queued so that tests can await the next matching one.
async function join(source, path = '/') {
  const ws = new WebSocket(`${base}${path}?source=${encodeURIComponent(source)}`);
  const queue = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    if (isBinary) return fail(`${source} got a binary frame`);
    const frame = JSON.parse(data.toString());
    // The relay announces who joins and leaves; this chat does not show it.
    if (frame.type === 'relay:presence') return;
    const waiter = waiters.shift();
    if (waiter) waiter(frame);
    else queue.push(frame);
  });
  ws.on('error', (error) => fail(`${source}: ${error.message}`));
  await new Promise((resolve) => ws.once('open', resolve));
  const client = {
    send: (frame) => ws.send(JSON.stringify(frame)),
    next: () =>
      queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiters.push(resolve)),
    close: () => ws.close(),
  };
  // Registered once the server answers our application ping.
  client.send({ type: '~ping' });
  expect(await client.next(), { type: '~pong' }, `${source} pong`);
  return client;
}

function expect(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${what}: expected ${e}, got ${a}`);
}

const alice = await join('alice');
const bob = await join('bob', '/ws');
const carol = await join('carol');

alice.send({ type: 'chat-message', payload: { message: 'Hello' } });
const hello = { type: 'chat-message', source: 'alice', payload: { message: 'Hello' } };
expect(await bob.next(), hello, 'bob receives the broadcast');
expect(await carol.next(), hello, 'carol receives the broadcast');

bob.send({ type: 'chat-message', to: 'alice', payload: { message: 'Hi alice' } });
expect(
  await alice.next(),
  { type: 'chat-message', to: 'alice', source: 'bob', payload: { message: 'Hi alice' } },
  'alice receives the direct message',
);

alice.send({ type: 'chat-message', id: 1, to: 'nobody', payload: {} });
const error = await alice.next();
if (error.type !== '~error' || error.code !== 'unknown_target' || error.re !== 1) {
  fail(`expected unknown_target, got ${JSON.stringify(error)}`);
}

// carol saw neither the direct message nor alice's own frames: her next frame is this one.
alice.send({ type: 'chat-message', payload: { message: 'Bye' } });
expect(await carol.next(), { type: 'chat-message', source: 'alice', payload: { message: 'Bye' } }, 'carol');

clearTimeout(deadline);
for (const client of [alice, bob, carol]) client.close();
console.log('node chat ok');
