//! The browser and Node.js driver: the [`ClientCore`] driven by a JavaScript `WebSocket`, one
//! timer and the application's callbacks, exported to JavaScript as `WebSocketClient`.
//!
//! Every decision (reconnect, backoff, queue, acknowledgements, heartbeat, request timeouts,
//! close) is the core's. This module only:
//! - owns the current socket and its event closure ([`Connection`]), replaced and
//!   dropped on every reconnect, so nothing leaks;
//! - owns one `setTimeout` armed for [`ClientCore::poll_timeout`];
//! - turns core events into Promise settlements, handler calls and `EventTarget` events.
//!
//! Re-entrancy: JavaScript called from here (listeners, handlers, promise callbacks) may call
//! back into the client. No `RefCell` borrow is held across a call into JavaScript, and outputs
//! are popped from the core one at a time, so a nested drain simply continues the same queue
//! in order (frames can never be written out of order).

mod error;
mod js;
mod options;

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use js_sys::{Array, Function, Object, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;

use crate::client::{
    ClientCore, Event, InboundMessage, Outgoing, Output, ReadyState, ReplyTarget, TransportId,
};
use crate::protocol::RemoteError;
use crate::Instant;
use error::{core_error, error_value, thrown_message};
use js::{CustomEvent, EventTarget, Socket, SocketEvent};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = include_str!("types.d.ts");

/// A reliable WebSocket client for browsers and Node.js.
///
/// Construct it synchronously; it connects in the background, reconnects with backoff, queues
/// what is sent while disconnected and resolves each `send` when the server has acknowledged it.
#[wasm_bindgen]
pub struct WebSocketClient {
    inner: Rc<Inner>,
}

/// Everything a client is; shared (weakly) with the closures JavaScript calls.
struct Inner {
    state: RefCell<Driver>,
    events: EventTarget,
    source: String,
    url: String,
    socket_class: Function,
    debug: bool,
    /// The one timer callback, made once: `setTimeout` is re-armed with it, never a new closure.
    on_timer: Closure<dyn FnMut()>,
}

/// The mutable part of [`Inner`].
struct Driver {
    core: ClientCore,
    socket: Option<Connection>,
    /// The armed `setTimeout`: the deadline it is for and its handle.
    timer: Option<(Instant, JsValue)>,
    /// Promises of sends and requests: (message id, resolve, reject). A Vec, not a map: a
    /// map's generic code costs kilobytes of wasm, and few messages are unacknowledged at once.
    pending: Vec<(u64, Function, Function)>,
    /// `on` handlers, in registration order.
    handlers: Vec<(String, Function)>,
    /// Resolvers of `close()` promises.
    closing: Vec<Function>,
    /// While the client is not closed it keeps itself alive, as an open `WebSocket` does, even
    /// if the application dropped its reference; cleared (breaking the cycle) once closed.
    keep_alive: Option<Rc<Inner>>,
}

/// One socket and the closures it calls. Dropping it detaches them and closes the socket.
struct Connection {
    id: TransportId,
    socket: Socket,
    /// Listens to all four events (`onopen`, `onmessage`, `onclose`, `onerror`).
    _on_event: Closure<dyn FnMut(SocketEvent)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let socket = &self.socket;
        // npm `ws` throws an unhandled `error` event (crashing Node) when a socket closed
        // while connecting has no error listener: keep a harmless one.
        NOOP.with(|noop| listen(socket, &JsValue::NULL, noop));
        let _ = socket.close_plain();
    }
}

/// Sets the socket's `onopen`, `onmessage` and `onclose` to `handler`, its `onerror` to
/// `on_error`. Plain property sets (`Reflect.set`, which the driver imports anyway) rather
/// than four setter imports.
fn listen(socket: &Socket, handler: &JsValue, on_error: &JsValue) {
    let socket: &Object = socket.unchecked_ref();
    set(socket, "onopen", handler);
    set(socket, "onmessage", handler);
    set(socket, "onclose", handler);
    set(socket, "onerror", on_error);
}

thread_local! {
    /// A do-nothing listener, made once for the life of the module (never per connection).
    /// `FnMut`, like the timer callback, so the two share their glue.
    static NOOP: JsValue = Closure::<dyn FnMut()>::new(|| {}).into_js_value();
    /// The one callback of every handler result's `then`, made once for the life of the
    /// module: bound per result to `(token, fulfilled)`, it never outlives what it calls.
    static SETTLED: JsValue = Closure::<dyn FnMut(u32, bool, JsValue)>::new(settled).into_js_value();
    /// Messages whose handler results are being awaited, by token, and the last token given.
    static ANSWERS: RefCell<(u32, Vec<(u32, Answer)>)> = const { RefCell::new((0, Vec::new())) };
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.timer.take() {
            js::clear_timeout(&handle);
        }
    }
}

fn now() -> Instant {
    Instant::from_millis(js::performance_now() as u64)
}

/// 64 random bits: the core's jitter and session token seed.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if js::get_random_values(&mut bytes).is_err() {
        // No Web Crypto (very old runtimes): Math.random is weaker but still spreads retries.
        for byte in &mut bytes {
            *byte = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    u64::from_le_bytes(bytes)
}

fn set(object: &Object, key: &str, value: &JsValue) {
    // Defining a data property on a plain object we just made cannot fail.
    let _ = Reflect::set(object, &key.into(), value);
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

/// `JSON.parse` of a payload the core has already validated.
fn parse(payload: Option<&str>) -> JsValue {
    payload
        .and_then(|text| JSON::parse(text).ok())
        .unwrap_or(JsValue::UNDEFINED)
}

fn rejected(error: JsValue) -> Promise {
    Promise::reject(&error)
}

/// `options.to` and a duration option, from the optional per-call options object.
fn call_options(options: &JsValue, duration_key: &str) -> (Option<String>, Option<Duration>) {
    if !options.is_object() {
        return (None, None);
    }
    let to = Reflect::get(options, &"to".into())
        .ok()
        .and_then(|to| to.as_string());
    let duration = Reflect::get(options, &duration_key.into())
        .ok()
        .and_then(|ms| ms.as_f64())
        .filter(|ms| *ms >= 0.0)
        .map(|ms| Duration::from_millis(ms as u64));
    (to, duration)
}

#[wasm_bindgen]
impl WebSocketClient {
    /// Creates a client for `url` with identity `source`. It connects in the background
    /// (unless `options.startClosed`). Throws a `WsRelayError` (`invalid_option`,
    /// `no_websocket`) for unusable options.
    #[wasm_bindgen(constructor)]
    pub fn new(
        url: &str,
        source: &str,
        #[wasm_bindgen(unchecked_param_type = "WebSocketClientOptions")] options: Option<Object>,
    ) -> Result<WebSocketClient, JsValue> {
        let options = options::read(&options.map_or(JsValue::UNDEFINED, Into::into))?;
        // The identity travels as the `source` query parameter (PROTOCOL.md section 1).
        let mut full_url = String::from(url);
        full_url.push(if url.contains('?') { '&' } else { '?' });
        full_url.push_str("source=");
        full_url.push_str(&String::from(js_sys::encode_uri_component(source)));
        let core = ClientCore::new(options.core, seed(), now());
        let inner = Rc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            Inner {
                state: RefCell::new(Driver {
                    core,
                    socket: None,
                    timer: None,
                    pending: Vec::new(),
                    handlers: Vec::new(),
                    closing: Vec::new(),
                    keep_alive: None,
                }),
                events: EventTarget::new_event_target(),
                source: source.into(),
                url: full_url,
                socket_class: options.socket_class,
                debug: options.debug,
                on_timer: Closure::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.state.borrow_mut().timer = None;
                        inner.state.borrow_mut().core.handle_timeout(now());
                        inner.drain();
                    }
                }),
            }
        });
        inner.drain();
        Ok(WebSocketClient { inner })
    }

    /// Sends a message; resolves when the server has acknowledged it (it then has it, once),
    /// rejects with a `WsRelayError` saying why not. `options.to` sends it to one client only,
    /// `options.ttl` (ms) fails it with `expired` if it could not be sent in time.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn send(
        &self,
        #[wasm_bindgen(js_name = "type")] kind: &str,
        #[wasm_bindgen(unchecked_param_type = "unknown")] payload: JsValue,
        #[wasm_bindgen(unchecked_param_type = "SendOptions")] options: Option<Object>,
    ) -> Promise {
        let options = options.map_or(JsValue::UNDEFINED, Into::into);
        let (to, ttl) = call_options(&options, "ttl");
        self.inner.enqueue(kind, &payload, to.as_deref(), ttl, None)
    }

    /// Sends a request and resolves with the response's payload. Rejects with `timeout` after
    /// `options.timeout` ms (default `requestTimeout`), or with the responder's error code
    /// (`handler_error`...). `options.to` addresses one client.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn request(
        &self,
        #[wasm_bindgen(js_name = "type")] kind: &str,
        #[wasm_bindgen(unchecked_param_type = "unknown")] payload: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RequestOptions")] options: Option<Object>,
    ) -> Promise {
        let options = options.map_or(JsValue::UNDEFINED, Into::into);
        let (to, timeout) = call_options(&options, "timeout");
        self.inner
            .enqueue(kind, &payload, to.as_deref(), None, Some(timeout))
    }

    /// Registers a handler for messages of `type`. It receives `(payload, message)`; what it
    /// returns (or resolves to) is sent back as the response, `undefined` sends none, and a
    /// throw or rejection sends an error response `handler_error` and is reported as an
    /// `error` event. With several handlers, the first value in registration order answers.
    pub fn on(
        &self,
        #[wasm_bindgen(js_name = "type")] kind: &str,
        #[wasm_bindgen(unchecked_param_type = "MessageHandler")] handler: Function,
    ) {
        let mut state = self.inner.state.borrow_mut();
        state.handlers.push((kind.into(), handler));
    }

    /// Removes `handler` for `type`, or every handler for `type` when none is given.
    pub fn off(
        &self,
        #[wasm_bindgen(js_name = "type")] kind: &str,
        #[wasm_bindgen(unchecked_param_type = "MessageHandler")] handler: Option<Function>,
    ) {
        let removed: Vec<_> = {
            let mut state = self.inner.state.borrow_mut();
            let (gone, kept) = std::mem::take(&mut state.handlers)
                .into_iter()
                .partition(|(k, h)| k == kind && handler.as_ref().is_none_or(|f| f == h));
            state.handlers = kept;
            gone
        };
        // Dropped outside the borrow: releasing a JS reference runs no JS, but stay uniform.
        drop(removed);
    }

    /// Listens for `open`, `close`, `reconnecting`, `error` or `response`. Each is a
    /// `CustomEvent` whose `detail` carries the data (see `WebSocketClientEventMap`).
    #[wasm_bindgen(js_name = addEventListener, skip_typescript)]
    pub fn add_event_listener(&self, kind: &str, listener: &JsValue, options: &JsValue) {
        self.inner
            .events
            .add_event_listener(kind, listener, options);
    }

    /// Stops listening.
    #[wasm_bindgen(js_name = removeEventListener, skip_typescript)]
    pub fn remove_event_listener(&self, kind: &str, listener: &JsValue, options: &JsValue) {
        self.inner
            .events
            .remove_event_listener(kind, listener, options);
    }

    /// Closes gracefully: new sends are refused, messages in flight get `closeTimeout` to be
    /// acknowledged, then the socket closes with `code` (default 1000) and `reason`. Resolves
    /// once closed; whatever was not acknowledged is rejected with `closed`.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self, code: Option<u16>, reason: Option<String>) -> Promise {
        let inner = &self.inner;
        if inner.state.borrow().core.ready_state() == ReadyState::Closed {
            // Not started, already closed, or given up: close() still ends any start_closed
            // state so later sends fail with `closed`.
            inner.state.borrow_mut().core.close(now(), 1000, "");
            inner.drain();
            return Promise::resolve(&JsValue::UNDEFINED);
        }
        let mut resolver = None;
        let promise = Promise::new(&mut |resolve, _reject| resolver = Some(resolve));
        if let Some(resolve) = resolver {
            inner.state.borrow_mut().closing.push(resolve);
        }
        let reason = reason.unwrap_or_default();
        inner
            .state
            .borrow_mut()
            .core
            .close(now(), code.unwrap_or(1000), &reason);
        inner.drain();
        promise
    }

    /// Connects now: after `close()`, with `startClosed`, or to replace the current connection.
    /// The retry count starts again from zero.
    pub fn reconnect(&self) {
        self.inner.state.borrow_mut().core.reconnect(now());
        self.inner.drain();
    }

    /// 0 connecting (or waiting to reconnect), 1 open, 2 closing, 3 closed.
    #[wasm_bindgen(getter = readyState, unchecked_return_type = "0 | 1 | 2 | 3")]
    pub fn ready_state(&self) -> u8 {
        self.inner.state.borrow().core.ready_state() as u8
    }

    /// The identity this client connects with.
    #[wasm_bindgen(getter)]
    pub fn source(&self) -> String {
        self.inner.source.clone()
    }

    /// The URL connected to, `source` parameter included.
    #[wasm_bindgen(getter)]
    pub fn url(&self) -> String {
        self.inner.url.clone()
    }

    /// Messages waiting to be sent or acknowledged.
    #[wasm_bindgen(getter)]
    pub fn queued(&self) -> usize {
        self.inner.state.borrow().core.queued()
    }

    /// Failed connection attempts since the last stable connection.
    #[wasm_bindgen(getter = retryCount)]
    pub fn retry_count(&self) -> u32 {
        self.inner.state.borrow().core.retry_count()
    }
}

impl Inner {
    /// Carries out everything the core asks, then arms the timer for its next deadline.
    fn drain(self: &Rc<Self>) {
        loop {
            // One output at a time, the borrow released before acting (see the module docs).
            let output = self.state.borrow_mut().core.poll_output();
            match output {
                None => break,
                Some(Output::Connect(id)) => self.connect(id),
                Some(Output::Transmit(text)) => {
                    self.trace("send", &text);
                    let state = self.state.borrow();
                    if let Some(connection) = &state.socket {
                        // A socket that refuses (it is closing) reports its close next; the
                        // core then retransmits whatever was not acknowledged.
                        let _ = connection.socket.send(&text);
                    }
                }
                Some(Output::CloseTransport {
                    transport,
                    code,
                    reason,
                }) => {
                    let connection = {
                        let mut state = self.state.borrow_mut();
                        match &state.socket {
                            Some(c) if c.id == transport => state.socket.take(),
                            _ => None,
                        }
                    };
                    if let Some(connection) = connection {
                        // Browsers accept only 1000 and 3000-4999 from a page; fall back to a
                        // plain close for anything else.
                        if connection.socket.close(code, &reason).is_err() {
                            let _ = connection.socket.close_plain();
                        }
                    }
                }
                Some(Output::Event(event)) => self.event(event),
            }
        }
        let stale = {
            let mut state = self.state.borrow_mut();
            let next = state.core.poll_timeout();
            let armed = state.timer.as_ref().map(|(at, _)| *at);
            if armed != next {
                if let Some((_, handle)) = state.timer.take() {
                    js::clear_timeout(&handle);
                }
                if let Some(at) = next {
                    let delay = at.as_millis().saturating_sub(now().as_millis());
                    let handle = js::set_timeout(self.on_timer.as_ref(), delay as f64);
                    state.timer = Some((at, handle));
                }
            }
            if state.core.ready_state() == ReadyState::Closed {
                state.keep_alive.take()
            } else {
                state.keep_alive.get_or_insert_with(|| Rc::clone(self));
                None
            }
        };
        drop(stale);
    }

    fn trace(&self, what: &str, detail: &str) {
        if self.debug {
            js::log("wsrelay", what, &detail.into());
        }
    }

    /// Opens the socket for transport `id`, replacing (and dropping) the previous one.
    fn connect(self: &Rc<Self>, id: TransportId) {
        self.trace("connect", &self.url);
        let previous = self.state.borrow_mut().socket.take();
        drop(previous);
        let args = Array::of1(&JsValue::from_str(&self.url));
        let socket: Socket = match Reflect::construct(&self.socket_class, &args) {
            Ok(socket) => socket.unchecked_into(),
            Err(thrown) => {
                // A malformed URL throws synchronously: the core treats it as a failed attempt.
                let message = thrown_message(&thrown);
                self.state
                    .borrow_mut()
                    .core
                    .handle_error(now(), id, &message);
                return;
            }
        };
        // One closure for the four events (told apart by `event.type`): each closure type
        // costs its own glue and shims.
        let weak = Rc::downgrade(self);
        let on_event = Closure::<dyn FnMut(SocketEvent)>::new(move |event: SocketEvent| {
            if let Some(inner) = weak.upgrade() {
                inner.socket_event(id, &event);
            }
        });
        listen(&socket, on_event.as_ref(), on_event.as_ref());
        self.state.borrow_mut().socket = Some(Connection {
            id,
            socket,
            _on_event: on_event,
        });
    }

    /// An `open`, `message`, `close` or `error` event of transport `id`'s socket.
    fn socket_event(self: &Rc<Self>, id: TransportId, event: &SocketEvent) {
        let now = now();
        match event.kind().as_string().as_deref() {
            Some("open") => self.state.borrow_mut().core.handle_opened(now, id),
            Some("message") => {
                // wsrelay speaks text frames only; a binary frame is not ours to interpret.
                let Some(text) = event.data().as_string() else {
                    return;
                };
                self.trace("receive", &text);
                self.state.borrow_mut().core.handle_frame(now, id, &text);
            }
            Some("close") => {
                let code = event.code().as_f64().map_or(1006, |c| c as u16);
                let reason = event.reason().as_string().unwrap_or_default();
                let mut state = self.state.borrow_mut();
                state.core.handle_closed(now, id, code, &reason);
            }
            Some("error") => {
                // Browsers say nothing about why (by design); npm `ws` has a message.
                let message = event
                    .message()
                    .as_string()
                    .unwrap_or_else(|| "WebSocket error".into());
                self.state.borrow_mut().core.handle_error(now, id, &message);
            }
            _ => return,
        }
        self.drain();
    }

    /// `send` and `request`: validate and queue in the core, return the Promise it settles.
    fn enqueue(
        self: &Rc<Self>,
        kind: &str,
        payload: &JsValue,
        to: Option<&str>,
        ttl: Option<Duration>,
        request: Option<Option<Duration>>,
    ) -> Promise {
        let payload = match stringify(payload) {
            Ok(payload) => payload,
            Err(error) => return rejected(error),
        };
        let message = Outgoing {
            kind,
            payload: payload.as_deref(),
            to,
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
            Err(error) => return rejected(core_error(&error)),
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
        let init = Object::new();
        set(&init, "detail", detail);
        let event = CustomEvent::new_custom_event(kind, &init);
        self.events.dispatch_event(&event);
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
            Event::Message(incoming) => self.handle_message(incoming),
            Event::Response(response) => {
                let detail = Object::new();
                set(&detail, "type", &response.kind.as_str().into());
                set(&detail, "re", &(response.re as f64).into());
                set(
                    &detail,
                    "source",
                    &optional_string(response.source.as_deref()),
                );
                match &response.result {
                    Ok(payload) => set(&detail, "payload", &parse(payload.as_deref())),
                    Err(remote) => set(&detail, "error", &remote_error(remote)),
                }
                self.dispatch("response", &detail);
            }
            Event::Reply {
                request, result, ..
            } => {
                if let Some((resolve, reject)) = self.settle(request) {
                    let _ = match result {
                        Ok(payload) => {
                            resolve.call1(&JsValue::UNDEFINED, &parse(payload.as_deref()))
                        }
                        Err(remote) => reject.call1(&JsValue::UNDEFINED, &remote_error(&remote)),
                    };
                }
            }
            Event::Delivered { id } => {
                if let Some((resolve, _)) = self.settle(id) {
                    let _ = resolve.call0(&JsValue::UNDEFINED);
                }
            }
            Event::Failed { id, error } => {
                let error = core_error(&error);
                match self.settle(id) {
                    Some((_, reject)) => {
                        let _ = reject.call1(&JsValue::UNDEFINED, &error);
                    }
                    // A response of ours failed: nobody awaits it, so report it.
                    None => self.dispatch("error", &error),
                }
            }
            Event::Close {
                code,
                reason,
                reconnecting,
            } => {
                let detail = Object::new();
                set(&detail, "code", &code.into());
                set(&detail, "reason", &reason.as_str().into());
                set(&detail, "reconnecting", &reconnecting.into());
                self.dispatch("close", &detail);
                if !reconnecting {
                    let waiting = std::mem::take(&mut self.state.borrow_mut().closing);
                    for resolve in waiting {
                        let _ = resolve.call0(&JsValue::UNDEFINED);
                    }
                }
            }
            Event::Reconnecting { attempt, delay } => {
                let detail = Object::new();
                set(&detail, "attempt", &attempt.into());
                set(&detail, "delay", &(delay.as_millis() as f64).into());
                self.dispatch("reconnecting", &detail);
            }
            Event::Error(error) => self.dispatch("error", &core_error(&error)),
        }
    }

    /// Calls the handlers of `incoming.kind` and answers with the first value they produce.
    fn handle_message(self: &Rc<Self>, incoming: InboundMessage) {
        let handlers: Vec<Function> = self
            .state
            .borrow()
            .handlers
            .iter()
            .filter(|(kind, _)| *kind == incoming.kind)
            .map(|(_, handler)| handler.clone())
            .collect();
        if handlers.is_empty() {
            return;
        }
        let payload = parse(incoming.payload.as_deref());
        let meta = Object::new();
        set(&meta, "type", &incoming.kind.as_str().into());
        set(
            &meta,
            "source",
            &optional_string(incoming.source.as_deref()),
        );
        set(
            &meta,
            "id",
            &incoming
                .id
                .map_or(JsValue::UNDEFINED, |id| (id as f64).into()),
        );
        // Every handler runs now, synchronously; their results may be promises.
        let mut results: Vec<Result<JsValue, JsValue>> = handlers
            .iter()
            .map(|handler| handler.call2(&JsValue::UNDEFINED, &payload, &meta))
            .collect();
        // Awaited from the last element: registration order.
        results.reverse();
        Answer {
            inner: Rc::downgrade(self),
            target: incoming.reply_target(),
            results,
            answered: false,
            failure: None,
        }
        .await_next();
    }
}

/// The handlers' results for one message, awaited one at a time in registration order: the
/// first defined value answers, and a failure answers `handler_error` only when no handler
/// produced a value. Every failure is reported as an `error` event.
///
/// Awaited with `Promise.then` and the module's one [`SETTLED`] callback rather than Rust
/// futures: an executor and its wakers cost kilobytes of wasm.
struct Answer {
    inner: Weak<Inner>,
    target: Option<ReplyTarget>,
    /// Still to await, the next one last.
    results: Vec<Result<JsValue, JsValue>>,
    answered: bool,
    failure: Option<String>,
}

impl Answer {
    /// Awaits the next result, or answers with the failure when none is left.
    fn await_next(mut self) {
        let Some(result) = self.results.pop() else {
            if let (false, Some(message), Some(target), Some(inner)) = (
                self.answered,
                self.failure,
                &self.target,
                self.inner.upgrade(),
            ) {
                let error = RemoteError {
                    code: "handler_error".into(),
                    message,
                };
                inner.respond(target, Err(error));
            }
            return;
        };
        // A throw is settled like a rejection: asynchronously, after what ran before it.
        let promise = match result {
            Ok(value) => Promise::resolve(&value),
            Err(thrown) => Promise::reject(&thrown),
        };
        let token = ANSWERS.with(|answers| {
            let mut answers = answers.borrow_mut();
            answers.0 = answers.0.wrapping_add(1);
            let token = answers.0;
            answers.1.push((token, self));
            token
        });
        SETTLED.with(|settled| {
            let settled: &Function = settled.unchecked_ref();
            let token = JsValue::from(token);
            let on = |fulfilled: bool| settled.bind2(&JsValue::NULL, &token, &fulfilled.into());
            promise
                .unchecked_ref::<js::Thenable>()
                .then(&on(true), &on(false));
        });
    }
}

/// A handler result of the [`Answer`] with `token` settled.
fn settled(token: u32, fulfilled: bool, value: JsValue) {
    let answer = ANSWERS.with(|answers| {
        let mut answers = answers.borrow_mut();
        let index = answers.1.iter().position(|(t, _)| *t == token)?;
        Some(answers.1.swap_remove(index).1)
    });
    let Some(mut answer) = answer else { return };
    let Some(inner) = answer.inner.upgrade() else {
        return;
    };
    if !fulfilled {
        let message = thrown_message(&value);
        inner.dispatch("error", &error_value("handler_error", &message));
        answer.failure.get_or_insert(message);
    } else if !(answer.answered || value.is_undefined()) {
        answer.answered = true;
        if let Some(target) = &answer.target {
            let reply = match stringify(&value) {
                Ok(text) => text.map(Ok),
                Err(_) => Some(Err(RemoteError {
                    code: "handler_error".into(),
                    message: "the handler's value is not JSON-serializable".into(),
                })),
            };
            if let Some(reply) = reply {
                inner.respond(target, reply);
            }
        }
    }
    drop(inner);
    answer.await_next();
}

impl Inner {
    fn respond(self: &Rc<Self>, target: &ReplyTarget, reply: Result<String, RemoteError>) {
        let result = {
            let mut state = self.state.borrow_mut();
            state
                .core
                .respond(target, reply.as_deref().map_err(Clone::clone))
        };
        if let Err(error) = result {
            // Closed meanwhile, queue full...: the answer cannot go out; say so.
            self.dispatch("error", &core_error(&error));
        }
        self.drain();
    }
}

/// `{code, message}` of a peer's error, as a `WsRelayError`.
fn remote_error(remote: &RemoteError) -> JsValue {
    error_value(&remote.code, &remote.message)
}
