// Socket.IO peers of the wsrelay benchmarks: socket.io 4 with a Redis adapter (the cluster rows),
// or alone in memory (the npm client rows), written the way the adapters' READMEs do.
//
//   node server.js redis|streams REDIS_URL
//   node server.js memory|chat
//
// redis:   `@socket.io/redis-adapter` (pub/sub; no connection state recovery), `redis` client.
// streams: `@socket.io/redis-streams-adapter` (one Redis stream), with connection state
//          recovery on (its reason to exist; 2-minute window, the default).
// memory:  one process, Socket.IO's default in-memory adapter (the npm client rows and the
//          end-to-end row).
// chat:    the same, with the original design's chat handler instead of the events below:
//          `bc` {message} -> io.emit("bc", {sender, message, timestamp}) to everyone, the
//          sender too (the Node server package's rows).
//
// Each client joins a room named after its `?source=ID` query parameter. Events:
//   42["bc",payload]      -> socket.broadcast.emit("bc", payload)  (everybody else, every node)
//   42N["bc",payload]     -> the same, then the acknowledgement 43N[] (the end-to-end row)
//   42["dm",to,payload]   -> io.to(to).emit("dm", payload)          (the room `to`, any node)
//   42["join",room]       -> socket.join(room)                      (the rooms rows)
//   42["rm",room,payload] -> socket.to(room).emit("rm", payload)    (the room's other members)
// Prints `listening on http://HOST:PORT` once bound; exits when stdin closes (the harness died).
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { createClient } = require('redis');

const mode = process.argv[2];
const url = process.argv[3];

function fail(message) {
  process.stderr.write(`socket.io peer: ${message}\n`);
  process.exit(1);
}

async function main() {
  const options = { transports: ['websocket'], serveClient: false };
  if (mode === 'memory' || mode === 'chat') {
    return listen(options);
  }
  if (!url || (mode !== 'redis' && mode !== 'streams')) {
    fail('usage: node server.js redis|streams REDIS_URL | node server.js memory|chat');
  }
  const pub = createClient({ url });
  pub.on('error', (error) => process.stderr.write(`socket.io peer: redis: ${error.message}\n`));
  await pub.connect();
  if (mode === 'redis') {
    const sub = pub.duplicate();
    sub.on('error', (error) => process.stderr.write(`socket.io peer: redis: ${error.message}\n`));
    await sub.connect();
    options.adapter = require('@socket.io/redis-adapter').createAdapter(pub, sub);
  } else {
    options.adapter = require('@socket.io/redis-streams-adapter').createAdapter(pub);
    options.connectionStateRecovery = {};
  }
  listen(options);
}

function listen(options) {
  const httpServer = http.createServer();
  const io = new Server(httpServer, options);
  io.on('connection', (socket) => {
    const source = socket.handshake.query.source;
    if (mode === 'chat') {
      socket.on('bc', (payload) => {
        io.emit('bc', { sender: source, message: payload.message, timestamp: Date.now() });
      });
      return;
    }
    if (typeof source === 'string' && source !== '') {
      socket.join(source);
    }
    socket.on('bc', (payload, ack) => {
      socket.broadcast.emit('bc', payload);
      // The end-to-end row's senders ask for an acknowledgement (`emit` with a callback).
      if (typeof ack === 'function') ack();
    });
    socket.on('dm', (to, payload) => {
      if (typeof to === 'string') {
        io.to(to).emit('dm', payload);
      }
    });
    socket.on('join', (room) => {
      if (typeof room === 'string') {
        socket.join(room);
      }
    });
    socket.on('rm', (room, payload) => {
      if (typeof room === 'string') {
        socket.to(room).emit('rm', payload);
      }
    });
  });
  httpServer.listen(0, '127.0.0.1', () => {
    process.stdout.write(`listening on http://127.0.0.1:${httpServer.address().port}\n`);
  });
}

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
main().catch((error) => fail(error.stack || String(error)));
