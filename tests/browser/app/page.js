// What the bundled pages do once the package is initialised: two clients through the relay
// (its URL in the page's `?relay=` parameter), a handler's answer, the relay's own answer and
// stats(). The result lands in `window.result` for the test to read.
export async function demo(WebSocketClient) {
  const relay = new URLSearchParams(location.search).get("relay");
  const suffix = Math.floor(Math.random() * 1e9);
  const alice = new WebSocketClient(relay, `alice-${suffix}`);
  const bob = new WebSocketClient(relay, `bob-${suffix}`);
  bob.on("chat-message", (data) => ({ status: "received", echo: data.message }));
  await bob.send("chat-message", { message: "bob is here" });
  const answer = await alice.request("chat-message", { message: "Hi" }, { to: bob.source });
  const online = await alice.request("relay:clients");
  const stats = alice.stats();
  await Promise.all([alice.close(), bob.close()]);
  return { answer, online: online.includes(bob.source), acknowledged: stats.acknowledged };
}

export function report(promise) {
  window.result = promise.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, error: `${error.code ?? ""} ${error.message ?? error}` }),
  );
}
