// Sends one text frame of SIZE bytes with a plain `ws` client and prints what the relay
// answered: its ~error frames, then `close CODE`. Usage: node oversized.mjs ws://HOST:PORT SIZE
import WebSocket from 'ws';

const [base, size] = process.argv.slice(2);
const ws = new WebSocket(`${base}/?source=oversized`);
const deadline = setTimeout(() => {
  console.log('timed out');
  process.exit(1);
}, 15_000);
ws.on('open', () => ws.send(JSON.stringify({ type: 'x', payload: 'a'.repeat(Number(size)) })));
ws.on('message', (data) => {
  const frame = JSON.parse(data.toString());
  if (frame.type === '~error') console.log(`error ${frame.code}`);
});
ws.on('error', (error) => console.log(`socket error ${error.message}`));
ws.on('close', (code) => {
  clearTimeout(deadline);
  console.log(`close ${code}`);
});
