// The wsrelay chat demo: plain ES module over the npm package's web build (copied to ./pkg by
// `cargo xtask run`). Everyone, one person, or a room (#general, #random, or one made here),
// with who is online in each room. It persists (`persist: true`, the package's `wsrelay/persist`
// entry): a message typed offline keeps its "queued" mark across a reload and goes out, once,
// when the relay is back; the tabs of one name share one connection.
import init, { WebSocketClient } from "./pkg/persist/persist.js";

const $ = (id) => document.getElementById(id);
const log = $("log");
const people = new Map(); // source -> <li>
let client = null;
let me = "";
let target = ""; // "" = everyone
let room = ""; // the room messages go to, when one is chosen (then `target` is "")
/** The rooms this session is a member of, and who of each room's members is online. */
const joined = new Set();
const roomMembers = new Map(); // room -> Set of sources
let countdown = null;

/** Messages this page sent, by their client-side id, so receipts can mark them delivered. */
const mine = new Map();

function time(at = Date.now()) {
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function scrollDown() {
  log.parentElement.scrollTop = log.parentElement.scrollHeight;
}

function system(text) {
  const li = document.createElement("li");
  li.className = "msg system";
  li.textContent = text;
  log.append(li);
  scrollDown();
}

function addMessage({ from, to, room: where, text, at, own, cid }) {
  const li = document.createElement("li");
  li.className = own ? "msg mine" : "msg";
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = own ? "you" : from;
  const when = document.createElement("time");
  when.textContent = time(at);
  meta.append(who);
  if (where) {
    const place = document.createElement("span");
    place.className = "where";
    place.textContent = `#${where}`;
    meta.append(place);
  }
  if (to) {
    const direct = document.createElement("span");
    direct.textContent = own ? `→ ${to}` : "(direct)";
    meta.append(direct);
  }
  meta.append(when);
  if (own) {
    const status = document.createElement("span");
    status.className = "status";
    meta.append(status);
  }
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  li.append(meta, body);
  if (cid) li.dataset.cid = cid;
  log.append(li);
  scrollDown();
  return li;
}

const STATUS_TEXT = { queued: "… queued", sending: "sending…", sent: "✓ sent", delivered: "✓✓ delivered" };

function setStatus(li, status, detail = "") {
  // "delivered" (a recipient answered) may come before "sent" (the server's ack): keep the best.
  if (li.dataset.status === "delivered" && status === "sent") return;
  li.dataset.status = status;
  li.querySelector(".status").textContent = status === "failed" ? `✗ ${detail}` : STATUS_TEXT[status];
}

function showState(state, text) {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent = text;
  badge.title = statsText(client.stats());
}

/** The client's statistics, for the connection badge's tooltip. */
function statsText(stats) {
  const ms = (value) => (value === undefined ? "–" : `${value} ms`);
  return [
    `round trip ${ms(stats.rtt)} (smoothed ${ms(stats.smoothedRtt)})`,
    `reconnects ${stats.reconnects}`,
    `retransmitted ${stats.retransmitted}`,
    `queued ${stats.queuedMessages} (${stats.queuedBytes} B)`,
    `acknowledged ${stats.acknowledged}`,
    `failed ${stats.failed}`,
  ].join("\n");
}

function refreshState() {
  if (!client) return;
  const queued = client.queued;
  if (client.readyState === 1) {
    clearInterval(countdown);
    showState("open", "connected");
  } else if (client.readyState === 3) {
    showState("closed", queued ? `offline · ${queued} queued` : "offline");
  } else if (!countdown) {
    showState("connecting", queued ? `connecting… · ${queued} queued` : "connecting…");
  }
}

function reconnecting({ attempt, delay }) {
  clearInterval(countdown);
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    const queued = client.queued;
    const text = left > 0 ? `reconnecting in ${left} s` : "reconnecting…";
    showState(left > 0 ? "reconnecting" : "connecting", queued ? `${text} · ${queued} queued` : text);
    if (left <= 0) {
      clearInterval(countdown);
      countdown = null;
    }
  };
  countdown = setInterval(tick, 250);
  tick();
  if (attempt === 1) system("connection lost, retrying");
}

function setOnline(source, online) {
  if (source === me) return;
  if (online && !people.has(source)) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.className = "person";
    button.dataset.to = source;
    button.textContent = source;
    li.append(button);
    $("people-list").append(li);
    people.set(source, li);
  } else if (!online && people.has(source)) {
    people.get(source).remove();
    people.delete(source);
    if (target === source) chooseTarget("");
  }
}

function chooseTarget(to, inRoom = "") {
  target = to;
  room = inRoom;
  for (const button of document.querySelectorAll(".person")) {
    button.classList.toggle("active", !inRoom && button.dataset.to === to);
  }
  for (const button of document.querySelectorAll(".room")) {
    button.classList.toggle("active", button.dataset.room === inRoom);
  }
  const label = inRoom ? `#${inRoom}` : to || "everyone";
  $("target").textContent = `to ${label}`;
  $("text").placeholder = inRoom || to ? `Message ${label}` : "Message";
  renderRooms();
  $("people").classList.remove("open");
  $("text").focus();
}

/** The room's button in the list, added if it is a new one. */
function roomButton(name) {
  let button = document.querySelector(`.room[data-room="${CSS.escape(name)}"]`);
  if (!button) {
    const li = document.createElement("li");
    button = document.createElement("button");
    button.className = "room";
    button.dataset.room = name;
    const count = document.createElement("span");
    count.className = "count";
    button.append(`#${name} `, count);
    li.append(button);
    $("room-list").append(li);
  }
  return button;
}

/** Each joined room's count of members online, and who they are for the chosen room. */
function renderRooms() {
  for (const button of document.querySelectorAll(".room")) {
    const members = roomMembers.get(button.dataset.room);
    button.querySelector(".count").textContent = joined.has(button.dataset.room) && members ? String(members.size) : "";
  }
  const members = room && roomMembers.get(room);
  $("room-members").hidden = !members;
  if (members) $("room-members").textContent = `In #${room}: ${[...members].sort().join(", ")}`;
}

/** Joins `name` (once the relay has us, messages to the room reach us) and lists its members. */
async function joinRoom(name) {
  roomButton(name);
  if (!joined.has(name)) {
    try {
      await client.join(name);
    } catch (error) {
      system(`could not join #${name}: ${error.code ?? error}`);
      return false;
    }
    joined.add(name);
    system(`you joined #${name}`);
  }
  await refreshRoom(name);
  return true;
}

/** Who of the room's members is online, asked again (after a join, or a reconnection). */
async function refreshRoom(name) {
  try {
    const list = await client.request("relay:clients", { room: name }, { timeout: 5000 });
    roomMembers.set(name, new Set(list));
  } catch (error) {
    system(`could not list #${name}: ${error.code ?? error}`);
  }
  renderRooms();
}

async function chooseRoom(name) {
  if (await joinRoom(name)) chooseTarget("", name);
}

async function refreshPeople() {
  try {
    const list = await client.request("relay:clients", null, { timeout: 5000 });
    for (const source of [...people.keys()]) if (!list.includes(source)) setOnline(source, false);
    for (const source of list) setOnline(source, true);
  } catch (error) {
    system(`could not list who is online: ${error.code ?? error}`);
  }
}

function connect(name) {
  me = name;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  client = new WebSocketClient(`${scheme}//${location.host}/ws`, name, {
    maxReconnectionDelay: 5000,
    persist: true,
  });
  // What an earlier page of this name typed and did not see acknowledged: shown again as
  // queued, sent first. The server's acknowledgement (`delivered`) makes it "sent"; the
  // recipient's receipt (a `response` with its cid) "delivered", as for any message.
  const restored = new Map(); // message id -> <li>
  client.addEventListener("restored", (event) => {
    let earlier = 0;
    for (const { id, type, payload, to } of event.detail.messages) {
      if (type !== "chat-message" || !payload?.cid) continue;
      // Sent from this very page through a tab that closed since (the tabs of one name share
      // a journal): it is on screen already.
      let li = mine.get(payload.cid);
      if (!li) {
        li = addMessage({ from: me, to: to ?? "", text: String(payload.message ?? ""), at: payload.sentAt, own: true, cid: payload.cid });
        mine.set(payload.cid, li);
        setStatus(li, "queued");
        earlier++;
      }
      restored.set(id, li);
    }
    if (earlier) system(`${earlier} message${earlier === 1 ? "" : "s"} from before the reload, queued again`);
    refreshState();
  });
  client.addEventListener("delivered", (event) => {
    const li = restored.get(event.detail.id);
    restored.delete(event.detail.id);
    if (li) setStatus(li, "sent");
  });
  client.addEventListener("failed", (event) => {
    const li = restored.get(event.detail.id);
    restored.delete(event.detail.id);
    if (li) setStatus(li, "failed", event.detail.error.code);
  });
  client.addEventListener("open", () => {
    refreshState();
    refreshPeople();
    for (const name of joined) refreshRoom(name);
  });
  client.addEventListener("close", (event) => {
    const { code, reason, reconnecting: again } = event.detail;
    if (!again) ended(code, reason);
    refreshState();
  });
  client.addEventListener("reconnecting", (event) => reconnecting(event.detail));
  // The relay no longer had this session: what was sent to us meanwhile is gone. Say so,
  // and refresh what can be asked again.
  client.addEventListener("sessionlost", (event) => {
    const { lost } = event.detail;
    system(lost == null ? "the relay lost our session: messages sent meanwhile are gone"
      : `the relay lost our session: ${lost} message${lost === 1 ? "" : "s"} sent meanwhile are gone`);
    refreshPeople();
    // Rooms belong to the session: they went with it. Join them again.
    const rooms = [...joined];
    joined.clear();
    for (const name of rooms) joinRoom(name);
  });
  client.addEventListener("error", (event) => console.warn("wsrelay:", event.detail));
  // A recipient's answer to one of our messages: the receipt that makes it "delivered".
  client.addEventListener("response", (event) => {
    const cid = event.detail?.payload?.cid;
    const li = cid && mine.get(cid);
    if (li) setStatus(li, "delivered");
  });

  client.on("chat-message", (payload, message) => {
    addMessage({ from: message.source, to: message.to ?? (payload.direct ? me : ""), room: message.room, text: String(payload.message ?? ""), at: payload.sentAt });
    return { status: "received", cid: payload.cid };
  });
  // Arrivals and departures, coalesced by the relay (one message for many changes): of
  // everyone, or, with a room in the envelope, of that room's members.
  client.on("relay:presence", ({ joined: came = [], left = [] }, message) => {
    if (message.room) {
      const members = roomMembers.get(message.room) ?? new Set();
      for (const source of came) {
        if (!members.has(source) && source !== me) system(`${source} joined #${message.room}`);
        members.add(source);
      }
      for (const source of left) {
        if (members.delete(source)) system(`${source} left #${message.room}`);
      }
      roomMembers.set(message.room, members);
      renderRooms();
      return;
    }
    for (const source of came) {
      if (source === me) continue;
      setOnline(source, true);
      system(`${source} joined`);
    }
    for (const source of left) {
      setOnline(source, false);
      system(`${source} left`);
    }
  });

  $("join-screen").hidden = true;
  $("chat-screen").hidden = false;
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  refreshState();
  $("text").focus();
}

/** Why the relay stopped this client, by close code (the client will not retry by itself). */
const ENDINGS = {
  4409: "You joined from another tab or device: this one was disconnected.",
  4401: "The relay did not accept your credentials.",
  4403: "The relay refused this connection.",
  1008: "Too many messages: the relay disconnected this tab.",
  1002: "The relay does not speak this client's protocol.",
};

/** The client stopped for good: say why, and offer to rejoin instead of a dead composer. */
function ended(code, reason) {
  system(`disconnected (${code}${reason ? ` ${reason}` : ""})`);
  $("ended-text").textContent = ENDINGS[code] ?? `Disconnected (${code}${reason ? `: ${reason}` : ""}).`;
  $("ended").hidden = false;
  $("text").disabled = true;
  $("send").disabled = true;
  $("rejoin").focus();
}

function rejoin() {
  $("ended").hidden = true;
  $("text").disabled = false;
  $("send").disabled = false;
  client.reconnect();
  refreshState();
  $("text").focus();
}

function send(text) {
  const cid = crypto.randomUUID();
  const li = addMessage({ from: me, to: target, room, text, at: Date.now(), own: true, cid });
  mine.set(cid, li);
  setStatus(li, client.readyState === 1 ? "sending" : "queued");
  const payload = { message: text, sentAt: Date.now(), cid, direct: Boolean(target) };
  const options = room ? { room } : target ? { to: target } : undefined;
  client
    .send("chat-message", payload, options)
    .then(() => setStatus(li, "sent"))
    .catch((error) => setStatus(li, "failed", error.code ?? String(error)));
  refreshState();
}

await init();

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(name)) {
    $("join-error").textContent = "Use 1 to 32 letters, digits, - or _.";
    return;
  }
  connect(name);
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  send(text);
  $("text").value = "";
});
$("people-list").addEventListener("click", (event) => {
  const button = event.target.closest(".person");
  if (button) chooseTarget(button.dataset.to);
});
$("room-list").addEventListener("click", (event) => {
  const button = event.target.closest(".room");
  if (button) chooseRoom(button.dataset.room);
});
$("new-room").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("room-name").value.trim();
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(name)) {
    system("a room name is 1 to 32 letters, digits, - or _");
    return;
  }
  $("room-name").value = "";
  chooseRoom(name);
});
$("toggle-people").addEventListener("click", () => $("people").classList.toggle("open"));
$("rejoin").addEventListener("click", rejoin);
setInterval(refreshState, 1000);

const remembered = decodeURIComponent(location.hash.slice(1));
if (remembered) $("name").value = remembered;
