// The Node server package (npm `wsrelay-server`, installed from pkg-server/ by the harness)
// in the wsrelay benchmarks, with its defaults:
//
//   node server.js chat|relay
//
// chat:  the original design's chat handler, in JavaScript: `bc` {message} ->
//        server.broadcast("bc", {sender, message, timestamp}) to every client, the sender too.
// relay: no handler: the server relays `bc` between clients itself (the relay pattern).
// Prints `listening on http://HOST:PORT` once bound; closes when stdin closes (the harness
// is done or died), and the process then exits by itself.
'use strict';
const { WebSocketServer } = require('wsrelay-server');

const mode = process.argv[2];
if (mode !== 'chat' && mode !== 'relay') {
  process.stderr.write('usage: node server.js chat|relay\n');
  process.exit(2);
}
const server = new WebSocketServer({ port: 0 });
if (mode === 'chat') {
  server.on('bc', ({ source, payload }) => {
    server.broadcast('bc', { sender: source, message: payload.message, timestamp: Date.now() });
  });
}
server.on('error', (error) => process.stderr.write(`wsrelay-server: ${error.message}\n`));
process.stdout.write(`listening on http://127.0.0.1:${server.port}\n`);
process.stdin.on('end', () => server.close());
process.stdin.on('error', () => server.close());
process.stdin.resume();
