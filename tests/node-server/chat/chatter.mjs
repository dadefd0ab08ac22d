// One chat client of the original design's chat example, the same code in Node (client.mjs)
// and in the browser (page.html): once every peer is online, sends `count` chat messages, checks that the messages of
// every peer arrive (its own too: the server broadcasts to everyone) in order, each once,
// with `sender` set by the server; then waits for the announcement (and, as `client123`, the
// private message) and closes. `print(report)` is called when the chat is complete
// (`chatted`) and at the end (`done`).
export async function chat({ WebSocketClient, url, name, peers, count, options, print }) {
  const next = new Map(peers.map((peer) => [peer, 0]));
  const report = { name, chats: 0, wrong: [], private: null, announcement: null };
  let chatted = false;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const check = () => {
    const complete = [...next.values()].every((n) => n === count);
    if (complete && !chatted) {
      chatted = true;
      print({ chatted: true, ...report });
    }
    const told = report.announcement !== null && (name !== "client123" || report.private !== null);
    if (complete && told) finish();
  };
  const client = new WebSocketClient(url, name, options);
  client.on("chat-message", (data, { source }) => {
    report.chats += 1;
    const expected = next.get(data.sender);
    // From the server (no source), sent by `sender`, and the next of that sender's.
    if (source || expected === undefined || data.message !== `${data.sender} #${expected}` || typeof data.timestamp !== "number") {
      report.wrong.push(data);
    } else {
      next.set(data.sender, expected + 1);
    }
    check();
  });
  client.on("private-message", (data) => {
    report.private = data.message;
    check();
  });
  client.on("announcement", (data) => {
    report.announcement = data.message;
    check();
  });
  await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
  print({ ready: name });
  // A broadcast reaches the clients connected at the time: chat once every peer is here
  // (the server answers `relay:clients` with who is online).
  for (;;) {
    const online = await client.request("relay:clients", null, { timeout: 5000 });
    if (peers.every((peer) => online.includes(peer))) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await Promise.all(Array.from({ length: count }, (_, i) => client.send("chat-message", { message: `${name} #${i}` })));
  await finished;
  await client.close();
  print({ done: true, ...report });
}
