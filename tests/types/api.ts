// The whole documented API of the npm package, as a TypeScript user writes it. Checked by
// `tsc --strict` under moduleResolution bundler (tsconfig.bundler.json: the web build's types,
// with the DOM library) and NodeNext (tsconfig.nodenext.json: the Node build's types, ES2022
// and @types/node only, no DOM); the NodeNext build is then run against the relay by
// types.test.mjs, so the declarations and the package must also agree at run time.
import init, {
  WebSocketClient,
  type ClientStats,
  type MessageInfo,
  type WebSocketClientOptions,
  type WsRelayError,
} from "wsrelay";

interface Chat {
  message: string;
}

/** Runs everything against the relay at `url`; resolves with what it saw. */
export async function main(url: string): Promise<string[]> {
  const seen: string[] = [];
  await init();

  // The original design's client example (the README's), typed.
  const suffix = Math.floor(Math.random() * 1e9);
  const alice = new WebSocketClient(url, `alice-${suffix}`, { maxReconnectionDelay: 5000 });
  const bob = new WebSocketClient(url, `bob-${suffix}`); // options are optional
  bob.on<Chat, { status: string }>("chat-message", async (data, { source }) => {
    seen.push(`${source} says ${data.message}`);
    return { status: "received" }; // the return value goes back as the response
  });
  alice.addEventListener("reconnecting", (e) => seen.push(`retry in ${e.detail.delay} ms`));
  await bob.send("chat-message", { message: "Hello" }); // resolves when the server has it
  const reply = await alice.request<{ status: string }>("chat-message", { message: "Hi" }, {
    to: bob.source,
    timeout: 5000,
  });
  seen.push(reply.status);

  // Every option, typed.
  const options: WebSocketClientOptions = {
    minReconnectionDelay: 100,
    maxReconnectionDelay: 300,
    reconnectionDelayGrowFactor: 1.3,
    reconnectionJitter: 0.3,
    minUptime: 5000,
    connectionTimeout: 4000,
    maxRetries: Infinity,
    startClosed: true,
    maxEnqueuedMessages: 100,
    maxEnqueuedBytes: 1 << 20,
    maxMessageSize: 1 << 16,
    heartbeatInterval: 15000,
    heartbeatTimeout: 30000,
    requestTimeout: 30000,
    ackDelay: 200,
    ackEvery: 128,
    ackBytes: 64 << 10,
    closeTimeout: 5000,
    stopCodes: [1002, 1008, 4401, 4403, 4409],
    debug: false,
  };
  const carol = new WebSocketClient(url, `carol-${suffix}`, options);
  const state: 0 | 1 | 2 | 3 = carol.readyState;
  seen.push(`carol ${state} ${carol.queued} ${carol.retryCount} ${carol.url.includes("source=")}`);
  carol.reconnect();
  await new Promise<void>((resolve) => carol.addEventListener("open", () => resolve(), { once: true }));

  // Payloads are generic; send and request take them optionally.
  await carol.send("ping");
  await carol.send<number[]>("numbers", [1, 2, 3], { ttl: 1000 });
  await carol.send("to-bob", { any: "thing" }, { to: bob.source });
  const online = await carol.request<string[]>("relay:clients");
  seen.push(`online ${online.includes(bob.source)}`);

  // Rooms: join and leave resolve once the relay has them; a send names its room, and a
  // handler reads the room of what it receives.
  const room = `general-${suffix}`;
  await carol.join(room);
  await bob.join(room);
  const members = await carol.request<string[]>("relay:clients", { room });
  seen.push(`members ${members.length}`);
  bob.on("room-chat", (text: string, { room: where }: MessageInfo) => {
    seen.push(`room ${where === room} ${text}`);
  });
  await carol.send("room-chat", "hi", { room });
  await bob.leave(room);

  // Handlers: sync or async, with or without a value; the message's info is typed.
  carol.on("get-time", () => Date.now());
  carol.on("log", (payload: unknown, info: MessageInfo) => {
    seen.push(`${info.type} ${info.source ?? "server"} ${info.id ?? "no id"} ${String(payload)}`);
  });
  carol.off("log");

  // Events: each detail is typed.
  const onOpen = (e: { detail: { resumed: boolean } }) => seen.push(`open ${e.detail.resumed}`);
  carol.addEventListener("open", onOpen);
  carol.removeEventListener("open", onOpen);
  carol.addEventListener("close", (e) => seen.push(`close ${e.detail.code} ${e.detail.reason} ${e.detail.reconnecting}`));
  carol.addEventListener("error", (e) => seen.push(`error ${e.detail.code} ${e.detail.type ?? ""}`));
  carol.addEventListener("response", (e) => seen.push(`response ${e.detail.type} ${e.detail.re}`));

  // Every rejection is a WsRelayError with a code.
  try {
    await carol.request("nobody-answers", null, { to: `nobody-${suffix}`, timeout: 2000 });
  } catch (caught) {
    const error = caught as WsRelayError;
    if (error.code === "unknown_target" || error.code === "timeout") seen.push(error.code);
    seen.push(`${error.name} ${error.closeCode ?? "-"}`);
  }

  const stats: ClientStats = carol.stats();
  seen.push(`stats ${stats.acknowledged >= 3} ${typeof stats.rtt} ${stats.smoothedRtt !== undefined}`);
  seen.push(`${stats.reconnects} ${stats.retransmitted} ${stats.queuedMessages} ${stats.queuedBytes} ${stats.failed}`);

  await Promise.all([alice.close(), bob.close(1000), carol.close(4000, "done")]);
  return seen;
}
