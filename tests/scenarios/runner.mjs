// The JavaScript runner of the shared behaviour scenarios (scenarios.json; README.md says what
// each step means). It runs unchanged in Node and in a browser page: everything it needs from
// its runtime comes in `env`.
//
//   env = {
//     WebSocketClient,        // the package's class
//     url,                    // the relay's ws:// URL
//     control(method, path),  // the test bed's control API: resolves to the body text
//     WebSocket,              // passed as options.WebSocket (undefined: the global class)
//     BareWebSocket,          // the class of bare clients
//   }

const FAST = { minReconnectionDelay: 100, maxReconnectionDelay: 300, connectionTimeout: 2000 };
const PATIENCE = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** JSON-equal (key order aside). */
function same(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => same(a[key], b[key]));
}

/** Every field of `expected` is in `actual`, JSON-equal. */
function includes(actual, expected = {}) {
  return Object.entries(expected).every(([key, value]) => same(actual?.[key], value));
}

function fail(step, message) {
  throw new Error(`${JSON.stringify(step)}: ${message}`);
}

async function eventually(what, condition) {
  const deadline = Date.now() + PATIENCE;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** What an event's detail says, in the scenarios' terms. */
function detailOf(name, detail) {
  if (name === "error") {
    return { code: detail.code, type: detail.type, closeCode: detail.closeCode, message: detail.message };
  }
  return detail;
}

/** Runs one scenario; throws on the first step that does not hold. */
export async function run(scenario, env) {
  const suffix = Math.floor(Math.random() * 1e9);
  const sources = new Map(); // name -> source
  const clients = new Map(); // name -> { client, events: [[name, detail]], cursor, log }
  const bares = new Map();
  const pending = new Map();
  const source = (name) => {
    if (!sources.has(name)) sources.set(name, `${name}-${suffix}`);
    return sources.get(name);
  };
  // Rooms are named like clients: the scenario's name plus the run's suffix.
  const room = (name) => `${name}-${suffix}`;
  const get = (step) => clients.get(step.client) ?? fail(step, `no client ${step.client}`);
  const options = (extra) => ({ ...FAST, ...extra, ...(env.WebSocket ? { WebSocket: env.WebSocket } : {}) });

  function create(step) {
    const name = step.sameSourceAs ? source(step.sameSourceAs) : source(step.client);
    const client = new env.WebSocketClient(env.url, name, options(step.options));
    const entry = { client, events: [], cursor: 0, log: new Map() };
    for (const event of ["open", "close", "reconnecting", "error", "response"]) {
      client.addEventListener(event, (e) => entry.events.push([event, detailOf(event, e.detail)]));
    }
    clients.set(step.client, entry);
    return entry;
  }

  async function waitEvent(step, entry, name, detail) {
    let found = -1;
    await eventually(`${name} ${JSON.stringify(detail ?? {})}`, () => {
      found = entry.events.findIndex(
        ([event, d], index) => index >= entry.cursor && event === name && includes(d, detail),
      );
      return found >= 0;
    }).catch((error) => fail(step, `${error.message}; events: ${JSON.stringify(entry.events)}`));
    entry.cursor = found + 1;
  }

  async function outcome(step, promise, expect = "ok") {
    let value;
    let error;
    try {
      value = await promise;
    } catch (caught) {
      error = caught;
    }
    if (expect === "ok") {
      if (error) fail(step, `failed with ${error.code}: ${error.message}`);
      return;
    }
    if (expect.error !== undefined) {
      if (!error) fail(step, `succeeded with ${JSON.stringify(value)}, expected ${expect.error}`);
      if (error.name !== "WsRelayError") fail(step, `not a WsRelayError: ${error}`);
      if (error.code !== expect.error) fail(step, `failed with ${error.code}: ${error.message}`);
      if (expect.message !== undefined && error.message !== expect.message) {
        fail(step, `message ${JSON.stringify(error.message)}`);
      }
      return;
    }
    if (error) fail(step, `failed with ${error.code}: ${error.message}`);
    if (expect.value !== undefined && !same(value, expect.value)) {
      fail(step, `answered ${JSON.stringify(value)}`);
    }
    if (expect.sources !== undefined) {
      const missing = expect.sources.map(source).filter((s) => !value.includes(s));
      if (missing.length) fail(step, `${JSON.stringify(value)} lacks ${missing}`);
    }
  }

  const handlers = {
    record: () => undefined,
    echo: (payload) => payload,
    fail: () => {
      throw new Error("boom");
    },
    hang: () => new Promise(() => {}),
  };

  try {
    for (const step of scenario.steps) await runStep(step);
  } finally {
    // Whatever happened, nothing is left open to keep the runtime (or the relay) busy.
    for (const socket of bares.values()) socket.close();
    await Promise.all([...clients.values()].map(({ client }) => client.close()));
  }

  async function runStep(step) {
    switch (step.do) {
      case "connect": {
        const entry = create(step);
        await waitEvent(step, entry, "open");
        break;
      }
      case "create":
        create(step);
        break;
      case "construct": {
        const url = step.url ?? env.url;
        const name = step.source ?? source("construct");
        try {
          new env.WebSocketClient(url, name, options(step.options));
        } catch (error) {
          if (error.code !== step.expect.error) fail(step, `threw ${error.code}: ${error.message}`);
          break;
        }
        fail(step, "constructed");
        break;
      }
      case "on": {
        const entry = get(step);
        const answer =
          typeof step.handler === "object" ? () => step.handler.reply : handlers[step.handler];
        const log = [];
        entry.log.set(step.type, log);
        entry.client.on(step.type, (payload, message) => {
          log.push({ payload, source: message.source, room: message.room });
          return answer(payload, message);
        });
        break;
      }
      case "send": {
        const address = {};
        if (step.to) address.to = source(step.to);
        if (step.room) address.room = room(step.room);
        const send = get(step).client.send(step.type, step.payload, step.to || step.room ? address : undefined);
        if (step.as) {
          // Observed at once, so an early failure is no unhandled rejection.
          const settled = send.then(
            (value) => ({ value }),
            (error) => ({ error }),
          );
          pending.set(step.as, settled);
        } else {
          await outcome(step, send, step.expect);
        }
        break;
      }
      case "await": {
        const settled = await pending.get(step.promise);
        await outcome(step, settled.error ? Promise.reject(settled.error) : Promise.resolve(), step.expect);
        break;
      }
      case "request": {
        const request = {};
        if (step.to) request.to = source(step.to);
        if (step.timeout !== undefined) request.timeout = step.timeout;
        const payload = step.roomPayload ? { room: room(step.roomPayload) } : step.payload;
        const started = Date.now();
        await outcome(step, get(step).client.request(step.type, payload, request), step.expect);
        const elapsed = Date.now() - started;
        if (step.elapsed && (elapsed < step.elapsed[0] || elapsed > step.elapsed[1])) {
          fail(step, `took ${elapsed} ms`);
        }
        break;
      }
      case "received": {
        const log = get(step).log.get(step.type) ?? fail(step, "no handler");
        await eventually(`${step.payloads.length} ${step.type}`, () => log.length >= step.payloads.length).catch(
          () => fail(step, `received ${JSON.stringify(log)}`),
        );
        await sleep(50); // nothing more arrives
        if (!same(log.map((m) => m.payload), step.payloads)) fail(step, `received ${JSON.stringify(log)}`);
        if (step.from && !log.every((m) => m.source === source(step.from))) {
          fail(step, `from ${JSON.stringify(log.map((m) => m.source))}`);
        }
        if (step.room && !log.every((m) => m.room === room(step.room))) {
          fail(step, `in rooms ${JSON.stringify(log.map((m) => m.room))}`);
        }
        break;
      }
      case "join":
      case "leave": {
        const client = get(step).client;
        const change = step.do === "join" ? client.join(room(step.room)) : client.leave(room(step.room));
        if (step.as) {
          pending.set(step.as, change.then((value) => ({ value }), (error) => ({ error })));
        } else {
          await outcome(step, change, step.expect);
        }
        break;
      }
      case "reconnect":
        get(step).client.reconnect();
        break;
      case "event":
        await waitEvent(step, get(step), step.event, step.detail);
        break;
      case "state": {
        const { client } = get(step);
        if (step.readyState !== undefined && client.readyState !== step.readyState) {
          fail(step, `readyState ${client.readyState}`);
        }
        if (step.queued !== undefined && client.queued !== step.queued) fail(step, `queued ${client.queued}`);
        break;
      }
      case "stats": {
        const stats = get(step).client.stats();
        for (const [key, least] of Object.entries(step.atLeast ?? {})) {
          if (!(stats[key] >= least)) fail(step, `stats ${JSON.stringify(stats)}`);
        }
        for (const [key, value] of Object.entries(step.equal ?? {})) {
          if (stats[key] !== value) fail(step, `stats ${JSON.stringify(stats)}`);
        }
        for (const key of step.present ?? []) {
          if (typeof stats[key] !== "number") fail(step, `stats ${JSON.stringify(stats)}`);
        }
        break;
      }
      case "close":
        await get(step).client.close(step.code, step.reason);
        break;
      case "relay": {
        const body = await env.control("POST", `/${step.action}`);
        if (body !== "ok") fail(step, body);
        break;
      }
      case "bare": {
        const socket = new env.BareWebSocket(`${env.url}/?source=${encodeURIComponent(source(step.client))}`);
        await new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onerror = () => reject(new Error("bare client failed to connect"));
        });
        bares.set(step.client, socket);
        break;
      }
      case "bareSend":
        bares.get(step.client).send(JSON.stringify(step.frame));
        break;
      case "bareClose":
        bares.get(step.client).close();
        break;
      case "sleep":
        await sleep(step.ms);
        break;
      default:
        fail(step, "unknown step");
    }
  }
}
