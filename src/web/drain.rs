//! The drain loop of the JavaScript class ([`super::WebSocketClient`]): [`Inner`], what a
//! client is, and the code that pops the core's outputs one at a time and carries them out.
//!
//! Every decision (the URL, options, reconnect, backoff, queue, acknowledgements, heartbeat,
//! request timeouts, close, what becomes of a handler's value) is the core's. This module only:
//! - owns the current socket (web-sys `WebSocket`, constructed through the configured class so
//!   that npm `ws` works too) and its closures ([`Connection`]), replaced and dropped on every
//!   reconnect, so nothing leaks. The socket's events go through `socket.js`, which reads each
//!   frame with `JSON.parse`: messages and acknowledgements cross as their fields
//!   ([`ClientCore::handle_decoded`]), other frames as their text; either way the frame as
//!   `JSON.parse` read it is kept ([`State::parsed`]) for the handler or Promise that gets its
//!   payload, which so never crosses into wasm;
//! - owns the `setTimeout` timers armed for [`ClientCore::poll_timeout`] (at most two, see
//!   [`State::timers`]);
//! - turns core events into Promise settlements, handler calls and `EventTarget` events.
//!
//! Re-entrancy: JavaScript called from here (listeners, handlers, promise callbacks) may call
//! back into the client. No `RefCell` borrow is held across a call into JavaScript, and outputs
//! are popped from the core one at a time, so a nested drain simply continues the same queue
//! in order (frames can never be written out of order).

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::time::Duration;

use js_sys::{Array, Function, Object, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, CustomEvent, CustomEventInit, EventTarget, MessageEvent};

use super::error::{core_error, error_value, thrown_message};
use super::options::DriverOptions;
#[cfg(feature = "persist")]
use super::options::Persist;
use super::{js, millis, now, set_number};
use crate::client::{
    attempt_url, token_url, ClientCore, Error, Event, InboundMessage, Outgoing, Output, ReadyState,
    Receipt, ReplyTarget, TransportId,
};
#[cfg(feature = "persist")]
use crate::client::{RestoredMessage, Save};
use crate::protocol::{Frame, Message};
use crate::{Instant, Reply};

/// Everything a client is; shared (weakly) with the closures JavaScript calls.
pub(super) struct Inner {
    pub(super) state: RefCell<State>,
    pub(super) events: EventTarget,
    /// Kept as JavaScript strings: the getters return them, `connect` passes the URL on.
    pub(super) source: JsValue,
    pub(super) url: JsValue,
    socket_class: Function,
    debug: bool,
    /// The one callback of every handler result's `then` and of every timer: bound per result
    /// or timer to `(token, fulfilled)`, it calls [`Inner::settled`] while the client lives.
    on_settled: Function,
    /// A do-nothing listener, left on replaced sockets (see [`Connection::detach`]).
    noop: JsValue,
    /// `options.token`: a string, or a function called before every attempt.
    token: JsValue,
}

/// The mutable part of [`Inner`]: the core and what this driver tracks around it.
pub(super) struct State {
    pub(super) core: ClientCore,
    socket: Option<Connection>,
    /// The armed timers: the deadline each is for, and the timer (cancelled on drop). At most
    /// two. Every received message moves the core's next deadline from a far one (the
    /// heartbeat) to a near one (its acknowledgement) and back once acknowledged: a timer left
    /// armed for the far deadline, next to one for the near deadline, spares clearing and
    /// arming it again each time (a third of the CPU an acknowledgement cost in Node). A timer
    /// that fires before the core's deadline finds nothing due (a spurious
    /// [`ClientCore::handle_timeout`] is a no-op) and the next drain arms what remains.
    timers: [Option<(Instant, Timer)>; 2],
    /// Promises of sends and requests: (message id, resolve, reject). A Vec, not a map: a
    /// map's generic code costs kilobytes of wasm, and few messages are unacknowledged at once.
    pending: Vec<(u64, Function, Function)>,
    /// `on` handlers, one per type.
    pub(super) handlers: Vec<(String, Function)>,
    /// Resolvers of `close()` promises, settled once the core is closed.
    pub(super) closing: Vec<Function>,
    /// The attempt whose token is being fetched (the token function's Promise is pending).
    fetching: Option<TransportId>,
    /// While the client is not closed it keeps itself alive, as an open `WebSocket` does, even
    /// if the application dropped its reference; cleared (breaking the cycle) once closed.
    keep_alive: Option<Rc<Inner>>,
    /// Promises being awaited (handler results, tokens), by key, and the last key given.
    answers: Vec<(u32, Awaited)>,
    last_token: u32,
    /// The frame read in JavaScript that the core is deciding on: its payload is handed to a
    /// handler or a Promise from here (the core got its fields only).
    parsed: Option<JsValue>,
    /// The journal of a client created with `persist`.
    #[cfg(feature = "persist")]
    journal: Option<Journal>,
    /// Messages restored from the journal and not settled yet, with their types: nobody
    /// awaits them, so their outcomes become events.
    #[cfg(feature = "persist")]
    restored: Vec<(u64, String)>,
}

/// Where a client created with `persist` keeps its state (`journal.js`: a file in Node.js,
/// an IndexedDB database in browsers), and the journal lines of this turn, written together
/// once it ends.
#[cfg(feature = "persist")]
struct Journal {
    /// The file's path or the database's name, for error messages.
    name: String,
    /// The path, or the `IDBDatabase` (see [`Persist::store`]).
    store: JsValue,
    batch: String,
    rewrite: bool,
    /// The core's mark of the last batch in `batch`.
    mark: u64,
    /// The write is scheduled (a microtask).
    scheduled: bool,
}

/// An armed `setTimeout`, which calls `on_settled` with its `token`; dropping it clears it,
/// unless it has fired (`handle` taken).
struct Timer {
    handle: Option<JsValue>,
    token: u32,
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            js::clear_timeout(handle);
        }
    }
}

/// One socket and the closures it calls. Dropping it detaches them and closes the socket.
struct Connection {
    id: TransportId,
    socket: web_sys::WebSocket,
    /// The closures `socket.js` calls: frames read in JavaScript (messages and
    /// acknowledgements), and every other event (`open`, `close`, `error`, frames read from
    /// their text).
    _on_frame: Closure<OnFrame>,
    _on_event: Closure<dyn FnMut(web_sys::Event)>,
    /// The client's do-nothing listener.
    noop: JsValue,
}

impl Connection {
    /// Stops listening to the socket. Done before every `close()`: Node 22's WebSocket fires
    /// `error` and `close` synchronously from `close()` on a socket still connecting, which
    /// would call the event closure again while it runs. npm `ws` throws an unhandled `error`
    /// event (crashing Node) when a socket closed while connecting has no error listener, so
    /// a harmless one stays.
    fn detach(&self) {
        listen(&self.socket, &JsValue::NULL, &self.noop);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.detach();
        let _ = self.socket.close();
    }
}

/// A frame read in JavaScript (`socket.js`): type, id, re, to, source, request, length, the
/// frame itself; or `~ack` and its count, in place of the id.
type OnFrame = dyn FnMut(String, f64, f64, Option<String>, Option<String>, bool, u32, JsValue);

/// Sets the socket's `onopen`, `onmessage` and `onclose` to `handler`, its `onerror` to
/// `on_error`. Plain property sets (`Reflect.set`, which the driver imports anyway) rather
/// than web-sys's four setters: four imports less.
fn listen(socket: &web_sys::WebSocket, handler: &JsValue, on_error: &JsValue) {
    let socket: &Object = socket.unchecked_ref();
    set(socket, "onopen", handler);
    set(socket, "onmessage", handler);
    set(socket, "onclose", handler);
    set(socket, "onerror", on_error);
}

/// 64 random bits: the core's jitter and session token seed, from Web Crypto (a global in
/// every runtime the package supports: browsers, Node 20+).
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Without it (never in a supported runtime) the seed is the clock: retries still spread.
    if js::get_random_values(&mut bytes).is_err() {
        return js::performance_now().to_bits();
    }
    u64::from_le_bytes(bytes)
}

fn set(object: &Object, key: &str, value: &JsValue) {
    // Defining a data property on a plain object we just made cannot fail.
    js::set(object, key, value);
}

fn optional_string(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::UNDEFINED, JsValue::from_str)
}

/// `JSON.stringify(value)`: `Ok(None)` for `undefined`, `Err` for what JSON cannot encode
/// (cycles, BigInt).
fn stringify(value: &JsValue) -> Result<Option<String>, JsValue> {
    if value.is_undefined() {
        return Ok(None);
    }
    let text = JSON::stringify(value)
        .map_err(|_| core_error(&crate::client::Error::InvalidPayload))?
        .as_string();
    Ok(text)
}

impl Inner {
    /// A client of `url` (the connect URL, `source` in it) with identity `source`: its core,
    /// its state, and the client's callbacks, made once (never per timer, socket or message);
    /// they hold it weakly, so they never keep it alive. Nothing runs yet: [`Inner::drain`]
    /// starts it.
    pub(super) fn new(
        options: DriverOptions,
        events: EventTarget,
        source: &str,
        url: String,
    ) -> Rc<Inner> {
        #[cfg(feature = "persist")]
        let (core, journal, trouble) = open_core(options.core, options.persist);
        #[cfg(not(feature = "persist"))]
        let (core, trouble) = (ClientCore::new(options.core, seed(), now()), None);
        let inner = Rc::new_cyclic(|weak: &alloc::rc::Weak<Inner>| {
            let on_settled = {
                let weak = weak.clone();
                Closure::<dyn FnMut(u32, bool, JsValue)>::new(move |token, fulfilled, value| {
                    if let Some(inner) = weak.upgrade() {
                        inner.settled(token, fulfilled, &value);
                    }
                })
            };
            Inner {
                state: RefCell::new(State {
                    core,
                    socket: None,
                    timers: [None, None],
                    pending: Vec::new(),
                    handlers: Vec::new(),
                    closing: Vec::new(),
                    fetching: None,
                    keep_alive: None,
                    answers: Vec::new(),
                    last_token: 0,
                    parsed: None,
                    #[cfg(feature = "persist")]
                    journal,
                    #[cfg(feature = "persist")]
                    restored: Vec::new(),
                }),
                events,
                source: source.into(),
                url: url.into(),
                socket_class: options.socket_class,
                debug: options.debug,
                on_settled: on_settled.into_js_value().unchecked_into(),
                noop: Closure::<dyn FnMut()>::new(|| {}).into_js_value(),
                token: options.token,
            }
        });
        if let Some(trouble) = trouble {
            inner.defer("error", &core_error(&Error::Storage(trouble)));
        }
        inner
    }

    /// Dispatches `kind` with `detail` once the current task is done: the constructor's
    /// events, which listeners added right after `new` must see.
    fn defer(&self, kind: &'static str, detail: &JsValue) {
        self.await_settled(&Promise::resolve(detail), Awaited::Dispatch(kind));
    }

    /// Keeps a batch of journal lines for the write at the end of this turn (one write per
    /// turn, however many inputs it had).
    #[cfg(feature = "persist")]
    fn journal_batch(&self, save: Save) {
        let schedule = {
            let mut state = self.state.borrow_mut();
            let Some(journal) = &mut state.journal else {
                return;
            };
            if save.rewrite {
                // The whole state, this turn's earlier batches included.
                journal.batch.clear();
                journal.rewrite = true;
            }
            journal.batch.push_str(&save.text);
            journal.mark = save.mark;
            !core::mem::replace(&mut journal.scheduled, true)
        };
        if schedule {
            let now = Promise::resolve(&JsValue::UNDEFINED);
            self.await_settled(&now, Awaited::Journal);
        }
    }

    /// Writes this turn's journal lines, then lets the core send and acknowledge what they
    /// record: at once for a file (written synchronously), once its transaction has completed
    /// for IndexedDB (`journal.js` returns a Promise then). Transactions on one database run
    /// in the order they were made, so a batch never overtakes an earlier one. A failed write
    /// leaves the client in memory, and says so.
    #[cfg(feature = "persist")]
    fn journal_write(self: &Rc<Self>) {
        let batch = {
            let mut state = self.state.borrow_mut();
            state.journal.as_mut().map(|journal| {
                journal.scheduled = false;
                (
                    journal.store.clone(),
                    core::mem::take(&mut journal.batch),
                    core::mem::take(&mut journal.rewrite),
                    journal.mark,
                )
            })
        };
        let Some((store, text, rewrite, mark)) = batch else {
            return;
        };
        match js::journal_write(&store, &text, rewrite) {
            Ok(pending) if pending.is_undefined() => {
                self.state.borrow_mut().core.handle_saved(now(), mark);
            }
            Ok(pending) => self.await_settled(pending.unchecked_ref(), Awaited::Saved(mark)),
            Err(thrown) => self.journal_failed(&thrown),
        }
        self.drain();
    }

    /// The storage refused a batch (`thrown` says why): the client goes on in memory, and the
    /// application is told once (later failures of batches already under way say nothing more).
    #[cfg(feature = "persist")]
    fn journal_failed(&self, thrown: &JsValue) {
        let failure = {
            let mut state = self.state.borrow_mut();
            state.journal.take().map(|journal| {
                state.core.stop_persisting();
                let mut message = journal.name;
                message.push_str(": ");
                message.push_str(&thrown_message(thrown));
                Error::Storage(message)
            })
        };
        if let Some(error) = failure {
            self.dispatch("error", &core_error(&error));
        }
    }

    /// A handler has finished with the message of `receipt` (a client that persists records
    /// it, so that it is not handled again after a restart).
    fn handled(&self, receipt: Option<Receipt>) {
        if let Some(receipt) = receipt {
            self.state.borrow_mut().core.handled(receipt);
        }
    }

    /// Carries out everything the core asks, then arms the timer for its next deadline and
    /// settles `close()` promises once the core is closed.
    pub(super) fn drain(self: &Rc<Self>) {
        loop {
            // One output at a time, the borrow released before acting (see the module docs).
            let output = self.state.borrow_mut().core.poll_output();
            match output {
                None => break,
                Some(Output::Connect(id)) => self.connect(id),
                Some(Output::Transmit(text)) => {
                    if self.debug {
                        self.trace("send", &JsValue::from_str(&text));
                    }
                    let state = self.state.borrow();
                    if let Some(connection) = &state.socket {
                        // A socket that refuses (it is closing) reports its close next; the
                        // core then retransmits whatever was not acknowledged.
                        let _ = connection.socket.send_with_str(&text);
                    }
                }
                Some(Output::CloseTransport {
                    transport,
                    code,
                    reason,
                }) => {
                    let connection = {
                        let mut state = self.state.borrow_mut();
                        // An attempt given up while its token is fetched: it never opens.
                        if state.fetching == Some(transport) {
                            state.fetching = None;
                        }
                        match &state.socket {
                            Some(c) if c.id == transport => state.socket.take(),
                            _ => None,
                        }
                    };
                    if let Some(connection) = connection {
                        // Browsers accept only 1000 and 3000-4999 from a page; the plain close
                        // of `Connection::drop` covers anything else.
                        connection.detach();
                        let _ = connection.socket.close_with_code_and_reason(code, &reason);
                    }
                }
                Some(Output::Event(event)) => self.event(event),
                #[cfg(feature = "persist")]
                Some(Output::Save(save)) => self.journal_batch(save),
                // Never: the core of a build without `persist` writes no journal.
                #[cfg(not(feature = "persist"))]
                Some(Output::Save(_)) => {}
            }
        }
        let (stale, closed) = {
            let mut state = self.state.borrow_mut();
            match state.core.poll_timeout() {
                // Nothing to wait for: no timer keeps Node running.
                None => state.timers = [None, None],
                // A timer armed for `next` or earlier will do (see `State::timers`).
                Some(next) if state.timers.iter().flatten().any(|(at, _)| *at <= next) => {}
                Some(next) => {
                    let delay = next.as_millis().saturating_sub(now().as_millis());
                    let delay = delay.min(i32::MAX as u64) as i32;
                    state.last_token = state.last_token.wrapping_add(1);
                    let token = state.last_token;
                    let on_fired =
                        self.on_settled
                            .bind2(&JsValue::NULL, &token.into(), &true.into());
                    let handle = Some(js::set_timeout(&on_fired, delay));
                    // In a free slot, else in place of the later timer (cleared as it is dropped).
                    let [first, second] = &mut state.timers;
                    let slot = match (&first, &second) {
                        (None, _) => first,
                        (_, None) => second,
                        (Some((a, _)), Some((b, _))) => {
                            if a > b {
                                first
                            } else {
                                second
                            }
                        }
                    };
                    *slot = Some((next, Timer { handle, token }));
                }
            }
            if state.core.ready_state() == ReadyState::Closed {
                (state.keep_alive.take(), core::mem::take(&mut state.closing))
            } else {
                state.keep_alive.get_or_insert_with(|| Rc::clone(self));
                (None, Vec::new())
            }
        };
        for resolve in closed {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
        drop(stale);
    }

    fn trace(&self, what: &str, detail: &JsValue) {
        if self.debug {
            js::log("wsrelay", what, detail);
        }
    }

    /// Starts attempt `id`: drops the previous socket, then opens a new one, once the token
    /// function (if the client has one) has given a token.
    fn connect(self: &Rc<Self>, id: TransportId) {
        self.trace("connect", &self.url);
        let previous = self.state.borrow_mut().socket.take();
        drop(previous);
        let Some(fetch) = self.token.dyn_ref::<Function>() else {
            return self.open(id, self.token.as_string());
        };
        self.state.borrow_mut().fetching = Some(id);
        let promise = match fetch.call0(&JsValue::UNDEFINED) {
            Ok(value) => Promise::resolve(&value),
            Err(thrown) => Promise::reject(&thrown),
        };
        self.await_settled(&promise, Awaited::Token(id));
    }

    /// The token function of attempt `id` settled with `value` (`fulfilled`, or rejected).
    fn token_settled(self: &Rc<Self>, id: TransportId, fulfilled: bool, value: &JsValue) {
        let current = {
            let mut state = self.state.borrow_mut();
            let current = state.fetching == Some(id);
            if current {
                state.fetching = None;
            }
            current
        };
        if !current {
            return; // the attempt was given up meanwhile
        }
        match value.as_string().filter(|_| fulfilled) {
            Some(token) => self.open(id, Some(token)),
            None => {
                let mut message = String::from("token not available: ");
                if fulfilled {
                    message.push_str("the token function must give a string");
                } else {
                    message.push_str(&thrown_message(value));
                }
                let mut state = self.state.borrow_mut();
                state.core.handle_error(now(), id, &message);
            }
        }
        self.drain();
    }

    /// Opens the socket of attempt `id`, named in the URL, with `token` in it when there is
    /// one.
    fn open(self: &Rc<Self>, id: TransportId, token: Option<String>) {
        let url = self.url.as_string().unwrap_or_default();
        let mut url = attempt_url(&url, &self.state.borrow().core.attempt(id));
        if let Some(token) = &token {
            url = token_url(&url, token);
        }
        let url = JsValue::from_str(&url);
        let args = Array::of1(&url);
        let socket: web_sys::WebSocket = match Reflect::construct(&self.socket_class, &args) {
            Ok(socket) => socket.unchecked_into(),
            Err(thrown) => {
                // A URL the runtime refuses throws synchronously: a failed attempt.
                let message = thrown_message(&thrown);
                self.state
                    .borrow_mut()
                    .core
                    .handle_error(now(), id, &message);
                return;
            }
        };
        // The closures hold the client weakly.
        let weak = Rc::downgrade(self);
        let on_frame = Closure::<OnFrame>::new(
            move |kind: String,
                  number: f64,
                  re: f64,
                  to: Option<String>,
                  source: Option<String>,
                  request: bool,
                  bytes: u32,
                  frame: JsValue| {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if kind == "~ack" {
                    return inner.decoded(id, Frame::Ack { ack: number as u64 }, 0, None);
                }
                let message = Message {
                    kind: kind.into(),
                    id: (number >= 1.0).then_some(number as u64),
                    re: (re >= 1.0).then_some(re as u64),
                    to: to.map(Into::into),
                    source: source.map(Into::into),
                    room: None,
                    payload: None,
                    error: None,
                    request,
                };
                inner.decoded(id, Frame::Message(message), bytes, Some(frame));
            },
        );
        let weak = Rc::downgrade(self);
        let on_event = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            if let Some(inner) = weak.upgrade() {
                inner.socket_event(id, &event);
            }
        });
        js::watch(&socket, on_frame.as_ref(), on_event.as_ref());
        self.state.borrow_mut().socket = Some(Connection {
            id,
            socket,
            _on_frame: on_frame,
            _on_event: on_event,
            noop: self.noop.clone(),
        });
    }

    /// A frame of transport `id` read in JavaScript: the core decides on its fields; `frame`
    /// (a message's) holds the payload for whatever the core makes of it.
    fn decoded(
        self: &Rc<Self>,
        id: TransportId,
        fields: Frame<'_>,
        bytes: u32,
        frame: Option<JsValue>,
    ) {
        if let Some(frame) = &frame {
            self.trace("receive", frame);
        }
        let now = now();
        self.received(frame, |core| {
            core.handle_decoded(now, id, fields, bytes as usize);
        });
    }

    /// Hands a received frame to the core (`handle`), with `frame`, the frame as `JSON.parse`
    /// read it, kept for the message, reply or response the core may make of it, then drains.
    fn received(self: &Rc<Self>, frame: Option<JsValue>, handle: impl FnOnce(&mut ClientCore)) {
        {
            let mut state = self.state.borrow_mut();
            state.parsed = frame;
            handle(&mut state.core);
        }
        self.drain();
        // A frame the core did not hand on (a duplicate, one before the welcome) is done with.
        self.state.borrow_mut().parsed = None;
    }

    /// An `open`, `message`, `close` or `error` event of transport `id`'s socket.
    fn socket_event(self: &Rc<Self>, id: TransportId, event: &web_sys::Event) {
        let now = now();
        // Events are read structurally: npm `ws` events are not the browser's classes. A
        // message, by far the most frequent, is told by its `data` (the others have none),
        // without copying its type into the module.
        let data = event.unchecked_ref::<MessageEvent>().data();
        if !data.is_undefined() {
            let Some(text) = data.as_string() else {
                self.state.borrow_mut().core.handle_binary(now, id);
                return self.drain();
            };
            self.trace("receive", &data);
            // The core reads the text; a payload it hands on is `JSON.parse`'s of the same
            // text, which reads every frame the core accepts.
            let frame = js::read(&data);
            return self.received(Some(frame), |core| core.handle_frame(now, id, &text));
        }
        match event.type_().as_str() {
            "open" => self.state.borrow_mut().core.handle_opened(now, id),
            "close" => {
                let event = event.unchecked_ref::<CloseEvent>();
                let reason = event.reason();
                let mut state = self.state.borrow_mut();
                state.core.handle_closed(now, id, event.code(), &reason);
            }
            "error" => {
                // Browsers say nothing about why (by design): their `error` is a plain Event,
                // with no `message` at all (reading it as an ErrorEvent's string threw a
                // TypeError out of the listener on every failed attempt). npm `ws` has one.
                let message = js::get(event, "message")
                    .ok()
                    .and_then(|message| message.as_string())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "WebSocket error".into());
                self.state.borrow_mut().core.handle_error(now, id, &message);
            }
            _ => return,
        }
        self.drain();
    }

    /// `send` and `request`: validate and queue in the core, return the Promise it settles.
    pub(super) fn enqueue(
        self: &Rc<Self>,
        kind: &str,
        payload: &JsValue,
        (to, room): (Option<&str>, Option<&str>),
        ttl: Option<Duration>,
        request: Option<Option<Duration>>,
    ) -> Promise {
        let payload = match stringify(payload) {
            Ok(payload) => payload,
            Err(error) => return Promise::reject(&error),
        };
        let message = Outgoing {
            kind,
            payload: payload.as_deref(),
            to,
            room,
            ttl,
        };
        let result = {
            let mut state = self.state.borrow_mut();
            match request {
                None => state.core.send(now(), message),
                Some(timeout) => state.core.request(now(), message, timeout),
            }
        };
        let id = match result {
            Ok(id) => id,
            Err(error) => return Promise::reject(&core_error(&error)),
        };
        let mut callbacks = None;
        let promise = Promise::new(&mut |resolve, reject| callbacks = Some((resolve, reject)));
        if let Some((resolve, reject)) = callbacks {
            self.state.borrow_mut().pending.push((id, resolve, reject));
        }
        self.drain();
        promise
    }

    fn dispatch(&self, kind: &str, detail: &JsValue) {
        let init = CustomEventInit::new();
        init.set_detail(detail);
        if let Ok(event) = CustomEvent::new_with_event_init_dict(kind, &init) {
            // A listener that throws is reported by the runtime, not to us.
            let _ = self.events.dispatch_event(&event);
        }
    }

    fn settle(&self, id: u64) -> Option<(Function, Function)> {
        let mut state = self.state.borrow_mut();
        let index = state
            .pending
            .iter()
            .position(|(pending, ..)| *pending == id)?;
        let (_, resolve, reject) = state.pending.swap_remove(index);
        Some((resolve, reject))
    }

    fn event(self: &Rc<Self>, event: Event) {
        match event {
            Event::Open { resumed } => {
                let detail = Object::new();
                set(&detail, "resumed", &resumed.into());
                self.dispatch("open", &detail);
            }
            Event::SessionLost { lost } => {
                let detail = Object::new();
                let lost = lost.map_or(JsValue::NULL, |lost| (lost as f64).into());
                set(&detail, "lost", &lost);
                self.dispatch("sessionlost", &detail);
            }
            Event::Message(message) => self.handle_message(message),
            Event::Response(response) => self.response(
                &response.kind,
                response.re,
                response.source.as_deref(),
                &response.result,
            ),
            Event::Reply {
                request,
                result,
                source,
            } => {
                if let Some((resolve, reject)) = self.settle(request) {
                    let _ = match result {
                        Ok(_) => resolve.call1(&JsValue::UNDEFINED, &js::payload(&self.frame())),
                        Err(remote) => reject.call1(
                            &JsValue::UNDEFINED,
                            &error_value(&remote.code, &remote.message),
                        ),
                    };
                } else if let Some(kind) = self.take_restored(request) {
                    // A restored request's response: its Promise was in an earlier process.
                    self.response(&kind, request, source.as_deref(), &result);
                }
            }
            Event::Delivered { id } => match self.settle(id) {
                Some((resolve, _)) => {
                    let _ = resolve.call0(&JsValue::UNDEFINED);
                }
                None => {
                    if self.take_restored(id).is_some() {
                        let detail = Object::new();
                        set_number(&detail, "id", id as f64);
                        self.dispatch("delivered", &detail);
                    }
                }
            },
            Event::Failed { id, error } => {
                let error = core_error(&error);
                match self.settle(id) {
                    Some((_, reject)) => {
                        let _ = reject.call1(&JsValue::UNDEFINED, &error);
                    }
                    None if self.take_restored(id).is_some() => {
                        let detail = Object::new();
                        set_number(&detail, "id", id as f64);
                        set(&detail, "error", &error);
                        self.dispatch("failed", &detail);
                    }
                    // A response of ours failed: nobody awaits it, so report it.
                    None => self.dispatch("error", &error),
                }
            }
            #[cfg(feature = "persist")]
            Event::Restored(messages) => self.restored(messages),
            // Never: only `ClientCore::restore` restores, and this build has none.
            #[cfg(not(feature = "persist"))]
            Event::Restored(_) => {}
            Event::Close {
                code,
                reason,
                reconnecting,
            } => {
                let detail = Object::new();
                set_number(&detail, "code", code.into());
                set(&detail, "reason", &reason.as_str().into());
                set(&detail, "reconnecting", &reconnecting.into());
                self.dispatch("close", &detail);
            }
            Event::Reconnecting { attempt, delay } => {
                let detail = Object::new();
                set_number(&detail, "attempt", attempt.into());
                set_number(&detail, "delay", millis(delay));
                self.dispatch("reconnecting", &detail);
            }
            Event::Error(error) => self.dispatch("error", &core_error(&error)),
        }
    }

    /// The messages the journal gave back: remembered (their outcomes become events) and
    /// announced, once the constructor has returned.
    #[cfg(feature = "persist")]
    fn restored(&self, messages: Vec<RestoredMessage>) {
        let list = Array::new();
        for message in &messages {
            let item = Object::new();
            set_number(&item, "id", message.id as f64);
            set(&item, "type", &message.kind.as_str().into());
            if let Some(payload) = &message.payload {
                set(&item, "payload", &js::read(&payload.as_str().into()));
            }
            set(&item, "to", &optional_string(message.to.as_deref()));
            set(&item, "request", &message.request.into());
            list.push(&item);
        }
        self.state.borrow_mut().restored.extend(
            messages
                .into_iter()
                .map(|message| (message.id, message.kind)),
        );
        let detail = Object::new();
        set(&detail, "messages", &list);
        self.defer("restored", &detail);
    }

    /// Forgets restored message `id` (it has its outcome); its type, if it was one.
    #[cfg(feature = "persist")]
    fn take_restored(&self, id: u64) -> Option<String> {
        let mut state = self.state.borrow_mut();
        let index = state
            .restored
            .iter()
            .position(|(restored, _)| *restored == id)?;
        Some(state.restored.swap_remove(index).1)
    }

    /// Nothing is ever restored in a build without `persist`.
    #[cfg(not(feature = "persist"))]
    fn take_restored(&self, _id: u64) -> Option<String> {
        None
    }

    /// A `response` event: a response that nobody awaits, to our message `re` of `kind`.
    fn response(
        &self,
        kind: &str,
        re: u64,
        source: Option<&str>,
        result: &Result<Option<String>, crate::protocol::RemoteError>,
    ) {
        let detail = Object::new();
        set(&detail, "type", &kind.into());
        set_number(&detail, "re", re as f64);
        set(&detail, "source", &optional_string(source));
        match result {
            Ok(_) => set(&detail, "payload", &js::payload(&self.frame())),
            Err(remote) => set(
                &detail,
                "error",
                &error_value(&remote.code, &remote.message),
            ),
        }
        self.dispatch("response", &detail);
    }

    /// Calls the handler of `message.kind`, now, and awaits what it returns.
    fn handle_message(self: &Rc<Self>, message: InboundMessage) {
        let handler = self
            .state
            .borrow()
            .handlers
            .iter()
            .find(|(kind, _)| *kind == message.kind)
            .map(|(_, handler)| handler.clone());
        let Some(handler) = handler else {
            return self.handled(message.receipt);
        };
        // The frame as `JSON.parse` read it is the handler's second argument, as it is.
        let result = js::deliver(&handler, &self.frame());
        // A throw is settled like a rejection: asynchronously, after what ran before it.
        let promise = match result {
            // Nothing returned, at once: nothing to answer (`Reply::None`), so no Promise to
            // await (the common case of a handler that only listens).
            Ok(value) if value.is_undefined() => return self.handled(message.receipt),
            Ok(value) => Promise::resolve(&value),
            Err(thrown) => Promise::reject(&thrown),
        };
        let answer = Answer {
            target: message.reply_target(),
            receipt: message.receipt,
            kind: message.kind,
        };
        self.await_settled(&promise, Awaited::Answer(answer));
    }

    /// The frame of the message, reply or response the core just handed on (see
    /// [`Inner::received`]): the core made it of the frame being received, so it is there.
    fn frame(&self) -> JsValue {
        let frame = self.state.borrow_mut().parsed.take();
        frame.unwrap_or(JsValue::UNDEFINED)
    }

    /// Awaits `promise` with the client's one `on_settled` callback, for `awaited`.
    fn await_settled(&self, promise: &Promise, awaited: Awaited) {
        let token = {
            let mut state = self.state.borrow_mut();
            state.last_token = state.last_token.wrapping_add(1);
            let token = state.last_token;
            state.answers.push((token, awaited));
            token
        };
        let token = JsValue::from(token);
        let on = |fulfilled: bool| {
            self.on_settled
                .bind2(&JsValue::NULL, &token, &fulfilled.into())
        };
        promise
            .unchecked_ref::<js::Thenable>()
            .then(&on(true), &on(false));
    }

    /// The timer of `token` fired, or the Promise awaited under `token` settled. A handler's
    /// result (or failure) becomes a [`Reply`], and the core decides what becomes of it; a
    /// token opens its attempt's socket.
    fn settled(self: &Rc<Self>, token: u32, fulfilled: bool, value: &JsValue) {
        let fired = {
            let mut state = self.state.borrow_mut();
            let timers = &mut state.timers;
            let slot = timers
                .iter_mut()
                .find(|slot| matches!(slot, Some((_, timer)) if timer.token == token));
            slot.and_then(Option::take)
        };
        if let Some((_, mut timer)) = fired {
            // A timer fired: nothing left to clear.
            timer.handle = None;
            self.state.borrow_mut().core.handle_timeout(now());
            return self.drain();
        }
        let awaited = {
            let mut state = self.state.borrow_mut();
            let index = state.answers.iter().position(|(t, _)| *t == token);
            index.map(|index| state.answers.swap_remove(index).1)
        };
        let answer = match awaited {
            Some(Awaited::Answer(answer)) => answer,
            Some(Awaited::Token(transport)) => {
                return self.token_settled(transport, fulfilled, value);
            }
            #[cfg(feature = "persist")]
            Some(Awaited::Journal) => return self.journal_write(),
            #[cfg(feature = "persist")]
            Some(Awaited::Saved(mark)) => {
                if fulfilled {
                    self.state.borrow_mut().core.handle_saved(now(), mark);
                } else {
                    self.journal_failed(value);
                }
                return self.drain();
            }
            Some(Awaited::Dispatch(kind)) => return self.dispatch(kind, value),
            None => return,
        };
        let reply = if !fulfilled {
            Reply::error("handler_error", thrown_message(value))
        } else {
            match stringify(value) {
                Ok(None) => Reply::None,
                Ok(Some(text)) => Reply::Payload(text),
                Err(_) => Reply::error(
                    "handler_error",
                    "the handler's value is not JSON-serializable",
                ),
            }
        };
        {
            let mut state = self.state.borrow_mut();
            state
                .core
                .answer(&answer.kind, answer.target.as_ref(), reply);
            // The answer is queued: both reach the journal in one batch.
            if let Some(receipt) = answer.receipt {
                state.core.handled(receipt);
            }
        }
        self.drain();
    }
}

/// The core of a new client, restored from its journal when it has one (`persist`), with
/// the journal; and what went wrong with the storage, to report (the client then keeps its
/// state in memory, or starts a fresh journal when the old one was unreadable).
#[cfg(feature = "persist")]
fn open_core(
    options: crate::client::Options,
    persist: Option<Persist>,
) -> (ClientCore, Option<Journal>, Option<String>) {
    let (now, seed) = (now(), seed());
    let Some(persist) = persist else {
        return (ClientCore::new(options, seed, now), None, None);
    };
    restore(options, persist, now, seed)
}

/// [`open_core`] for a client created with `persist`.
#[cfg(feature = "persist")]
fn restore(
    options: crate::client::Options,
    persist: Persist,
    now: Instant,
    seed: u64,
) -> (ClientCore, Option<Journal>, Option<String>) {
    let Persist { name, store, text } = persist;
    let epoch_ms = js::date_now() as u64;
    let mut trouble = String::from(name.as_str());
    trouble.push_str(": ");
    // Node.js reads its file now; the browser entry read IndexedDB before.
    let text = text.unwrap_or_else(|| js::journal_open(&name).map_err(|e| thrown_message(&e)));
    let text = match text {
        Ok(text) => text,
        Err(message) => {
            trouble.push_str(&message);
            return (ClientCore::new(options, seed, now), None, Some(trouble));
        }
    };
    let journal = |store| Journal {
        name,
        store,
        batch: String::new(),
        rewrite: false,
        mark: 0,
        scheduled: false,
    };
    let damage = match ClientCore::restore(options.clone(), seed, now, epoch_ms, &text) {
        Ok(core) => return (core, Some(journal(store)), None),
        Err(damage) => damage,
    };
    // Not `to_string()`: the formatting machinery is kilobytes of wasm.
    trouble.push_str("journal line ");
    crate::protocol::push_u64(&mut trouble, damage.line as u64);
    trouble.push_str(": ");
    trouble.push_str(damage.reason);
    match js::journal_set_aside(&store) {
        Ok(aside) => {
            trouble.push_str("; moved to ");
            trouble.push_str(&aside);
            trouble.push_str(", starting afresh");
            match ClientCore::restore(options.clone(), seed, now, epoch_ms, "") {
                Ok(core) => (core, Some(journal(store)), Some(trouble)),
                Err(_) => (ClientCore::new(options, seed, now), None, Some(trouble)),
            }
        }
        Err(thrown) => {
            trouble.push_str("; ");
            trouble.push_str(&thrown_message(&thrown));
            (ClientCore::new(options, seed, now), None, Some(trouble))
        }
    }
}

/// What a settled Promise was for.
enum Awaited {
    /// A handler's result.
    Answer(Answer),
    /// The token of connection attempt `0`.
    Token(TransportId),
    /// The end of the turn: write the journal's batch.
    #[cfg(feature = "persist")]
    Journal,
    /// The IndexedDB transaction of the journal's batches up to this mark.
    #[cfg(feature = "persist")]
    Saved(u64),
    /// An event to dispatch (the settled value is its detail).
    Dispatch(&'static str),
}

/// A message whose handler's result is awaited.
///
/// Awaited with `Promise.then` and the client's one `on_settled` callback rather than Rust
/// futures: an executor and its wakers cost kilobytes of wasm.
struct Answer {
    kind: String,
    target: Option<ReplyTarget>,
    /// Handed back to the core once answered (see [`ClientCore::handled`]).
    receipt: Option<Receipt>,
}
