// Peer N of the wsrelay benchmarks: the npm `ws` server, written the way its README does.
//
//   node server.js echo|hub|chat [pingMs]
//
// echo: every message is sent back to its sender.
// hub:  a message naming `"to":"ID"` goes to the client connected with ?source=ID; any other is
//       sent to every other client (the README's broadcast idiom).
// chat: the original design's chat handler: a `{"type":"bc","payload":{"message":M}}` message
//       is parsed and `{"type":"bc","payload":{"sender":SOURCE,"message":M,"timestamp":NOW}}`
//       sent to every client, the sender too (the README's broadcast idiom including itself).
// pingMs > 0: the README's heartbeat idiom (ping every client each interval, terminate the
//       ones that did not answer the previous ping).
// Prints `listening on http://HOST:PORT` once bound; exits when stdin closes (the harness died).
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const mode = process.argv[2] || 'echo';
const pingMs = Number(process.argv[3] || 0);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
const bySource = new Map();
const TO = Buffer.from('"to":"');

wss.on('listening', () => {
  process.stdout.write(`listening on http://127.0.0.1:${wss.address().port}\n`);
});

function heartbeat() {
  this.isAlive = true;
}

wss.on('connection', (ws, req) => {
  ws.isAlive = true;
  ws.on('pong', heartbeat);
  ws.on('error', () => {});
  if (mode === 'echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    return;
  }
  const source = new URL(req.url, 'http://localhost').searchParams.get('source') || '';
  if (mode === 'chat') {
    ws.on('message', (data) => {
      const message = JSON.parse(data);
      if (message.type !== 'bc') return;
      const out = JSON.stringify({
        type: 'bc',
        payload: { sender: source, message: message.payload.message, timestamp: Date.now() },
      });
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(out);
      }
    });
    return;
  }
  bySource.set(source, ws);
  ws.on('close', () => {
    if (bySource.get(source) === ws) bySource.delete(source);
  });
  ws.on('message', (data, isBinary) => {
    const at = data.indexOf(TO);
    if (at >= 0) {
      const start = at + TO.length;
      const end = data.indexOf(34, start); // closing quote
      const target = bySource.get(data.toString('utf8', start, end));
      if (target !== undefined && target.readyState === WebSocket.OPEN) {
        target.send(data, { binary: isBinary });
      }
      return;
    }
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});

if (pingMs > 0) {
  const interval = setInterval(() => {
    for (const ws of wss.clients) {
      if (ws.isAlive === false) {
        ws.terminate();
        continue;
      }
      ws.isAlive = false;
      ws.ping();
    }
  }, pingMs);
  wss.on('close', () => clearInterval(interval));
}

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
