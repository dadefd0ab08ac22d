//! The browser and Node.js driver: the [`ClientCore`](crate::client::ClientCore) driven by a
//! JavaScript `WebSocket`, one timer and the application's callbacks, exported to JavaScript
//! as `WebSocketClient`.
//!
//! Two parts:
//! - this module: the JavaScript class, [`WebSocketClient`] (constructor, `send`, `request`,
//!   `on`, `off`, listeners, `close`, `reconnect`, `stats` and the getters): the methods turn
//!   their JavaScript arguments into commands of the core and drain it, the getters read it;
//! - [`drain`]: what a client is (`Inner`: the core, the socket, the timers, the pending
//!   promises and handlers) and its drain loop, which pops the core's outputs and turns them
//!   into socket writes, timers, Promise settlements, handler calls and `EventTarget` events.
//!
//! Every decision (the URL, options, reconnect, backoff, queue, acknowledgements, heartbeat,
//! request timeouts, close, what becomes of a handler's value) is the core's; the driver only
//! carries it out.

mod drain;
mod error;
mod js;
mod options;

use alloc::rc::Rc;
use alloc::string::String;
use core::time::Duration;

use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;
use web_sys::EventTarget;

use crate::client::connect_url;
use crate::protocol::{JOIN, LEAVE};
use crate::Instant;
use drain::Inner;
use error::core_error;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = include_str!("types.d.ts");

/// A reliable WebSocket client for browsers and Node.js.
///
/// Construct it synchronously; it connects in the background, reconnects with backoff, queues
/// what is sent while disconnected and resolves each `send` when the server has acknowledged it.
/// Its TypeScript declaration is written by hand in `types.d.ts` (generic payloads, optional
/// arguments, typed events), so every export here skips the generated one.
#[wasm_bindgen(skip_typescript)]
pub struct WebSocketClient {
    inner: Rc<Inner>,
}

/// The core's clock: `performance.now()`, in whole milliseconds.
fn now() -> Instant {
    Instant::from_millis(js::performance_now() as u64)
}

/// Whole milliseconds of `duration` as a JavaScript number: `as_millis() as f64` without the
/// `u128` arithmetic (library calls in wasm).
fn millis(duration: Duration) -> f64 {
    duration.as_secs() as f64 * 1000.0 + f64::from(duration.subsec_millis())
}

fn set_number(object: &Object, key: &str, value: f64) {
    js::set_number(object, key, value);
}

/// The options of one `send` or `request`: `to`, `room` and a duration (`ttl`, `timeout`).
#[derive(Default)]
struct CallOptions {
    to: Option<String>,
    room: Option<String>,
    duration: Option<Duration>,
}

/// The [`CallOptions`] of the optional per-call options object, with `duration_key`.
fn call_options(options: &JsValue, duration_key: &str) -> CallOptions {
    if !options.is_object() {
        return CallOptions::default();
    }
    let text = |key| {
        js::get(options, key)
            .ok()
            .and_then(|value| value.as_string())
    };
    let duration = js::get(options, duration_key)
        .ok()
        .and_then(|ms| ms.as_f64())
        .filter(|ms| *ms >= 0.0)
        .map(|ms| Duration::from_millis(ms as u64));
    CallOptions {
        to: text("to"),
        room: text("room"),
        duration,
    }
}

impl WebSocketClient {
    /// A `relay:join` or `relay:leave` request for `room`.
    fn membership(&self, kind: &str, room: &str) -> Promise {
        let payload = Object::new();
        js::set(&payload, "room", &JsValue::from_str(room));
        self.inner
            .enqueue(kind, &payload, (None, None), None, Some(None))
    }
}

/// Checks `url`, `source` and `options` as the constructor does (throwing the same
/// `WsRelayError`) and returns the URL the client would connect to. For the `wsrelay/persist`
/// entry, which must throw from its constructor at once but constructs this class only once
/// it has read IndexedDB.
#[cfg(feature = "persist")]
#[wasm_bindgen(js_name = checkClient, skip_typescript)]
pub fn check_client(url: &str, source: &str, options: JsValue) -> Result<String, JsValue> {
    options::read(&options)?;
    connect_url(url, source).map_err(|error| core_error(&error))
}

#[wasm_bindgen]
impl WebSocketClient {
    /// Creates a client for `url` with identity `source`. It connects in the background
    /// (unless `options.startClosed`). Throws a `WsRelayError` (`invalid_option`,
    /// `no_websocket`) for an unusable URL, source or option.
    #[wasm_bindgen(constructor, skip_typescript)]
    pub fn new(url: &str, source: &str, options: JsValue) -> Result<WebSocketClient, JsValue> {
        let options = options::read(&options)?;
        let url = connect_url(url, source).map_err(|error| core_error(&error))?;
        // `new EventTarget()` exists in every supported runtime (browsers, Node 15+).
        let events = EventTarget::new()?;
        let inner = Inner::new(options, events, source, url);
        inner.drain();
        Ok(WebSocketClient { inner })
    }

    /// Sends a message; resolves when the server has acknowledged it (it then has it, once),
    /// rejects with a `WsRelayError` saying why not. `options.to` sends it to one client only,
    /// `options.ttl` (ms) fails it with `expired` if it could not be sent in time.
    #[wasm_bindgen(skip_typescript)]
    pub fn send(&self, kind: &str, payload: JsValue, options: JsValue) -> Promise {
        let options = call_options(&options, "ttl");
        let address = (options.to.as_deref(), options.room.as_deref());
        self.inner
            .enqueue(kind, &payload, address, options.duration, None)
    }

    /// Sends a request and resolves with the response's payload. Rejects with `timeout` after
    /// `options.timeout` ms (default `requestTimeout`), or with the responder's error code
    /// (`handler_error`...). `options.to` addresses one client.
    #[wasm_bindgen(skip_typescript)]
    pub fn request(&self, kind: &str, payload: JsValue, options: JsValue) -> Promise {
        let options = call_options(&options, "timeout");
        let address = (options.to.as_deref(), options.room.as_deref());
        self.inner
            .enqueue(kind, &payload, address, None, Some(options.duration))
    }

    /// Joins `room`: resolves once the server has made this client's session a member (from
    /// then on it receives what is sent to the room), rejects with `forbidden` when the
    /// client's credentials do not allow the room. Membership belongs to the session: kept
    /// across reconnections, gone when the session is lost (`sessionlost`).
    #[wasm_bindgen(skip_typescript)]
    pub fn join(&self, room: &str) -> Promise {
        self.membership(JOIN, room)
    }

    /// Leaves `room`: resolves once the server has it.
    #[wasm_bindgen(skip_typescript)]
    pub fn leave(&self, room: &str) -> Promise {
        self.membership(LEAVE, room)
    }

    /// Registers the handler of messages of `type`, replacing any previous one (one handler
    /// per type). Handlers are called in arrival order with `(payload, message)`; what one
    /// returns (or resolves to) goes to the core, which sends it back (see `answer`).
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, kind: &str, handler: Function) {
        let previous = {
            let mut state = self.inner.state.borrow_mut();
            state.core.set_handled(kind, true);
            let handlers = &mut state.handlers;
            match handlers.iter_mut().find(|(k, _)| k == kind) {
                Some((_, slot)) => Some(core::mem::replace(slot, handler)),
                None => {
                    handlers.push((kind.into(), handler));
                    None
                }
            }
        };
        // Released outside the borrow: dropping a JS reference runs no JS, but stay uniform.
        drop(previous);
    }

    /// Removes the handler of `type`: such messages are then ignored, and requests of that
    /// type are answered `no_handler`.
    #[wasm_bindgen(skip_typescript)]
    pub fn off(&self, kind: &str) {
        let removed = {
            let mut state = self.inner.state.borrow_mut();
            state.core.set_handled(kind, false);
            let handlers = &mut state.handlers;
            let index = handlers.iter().position(|(k, _)| k == kind);
            index.map(|index| handlers.swap_remove(index))
        };
        drop(removed);
    }

    /// Listens for `open`, `close`, `reconnecting`, `error` or `response`. Each is a
    /// `CustomEvent` whose `detail` carries the data (see `WebSocketClientEventMap`).
    #[wasm_bindgen(js_name = addEventListener, skip_typescript)]
    pub fn add_event_listener(&self, kind: &JsValue, listener: &JsValue, options: &JsValue) {
        // Passed through as the application gave them (a type, a function or a listener
        // object, `true`, an options object or nothing), never copied into wasm memory. What
        // `EventTarget` throws (not a listener) is ignored, as it always was.
        let events = self.inner.events.unchecked_ref::<js::Listeners>();
        let _ = events.add_event_listener(kind, listener, options);
    }

    /// Stops listening.
    #[wasm_bindgen(js_name = removeEventListener, skip_typescript)]
    pub fn remove_event_listener(&self, kind: &JsValue, listener: &JsValue, options: &JsValue) {
        let events = self.inner.events.unchecked_ref::<js::Listeners>();
        let _ = events.remove_event_listener(kind, listener, options);
    }

    /// Closes gracefully: new sends are refused, messages in flight get `closeTimeout` to be
    /// acknowledged, then the socket closes with `code` (default 1000) and `reason`. Resolves
    /// once the client is closed (at once if it already is); whatever was not acknowledged is
    /// rejected with `closed`.
    #[wasm_bindgen(skip_typescript)]
    pub fn close(&self, code: Option<u16>, reason: Option<String>) -> Promise {
        let inner = &self.inner;
        let mut resolver = None;
        let promise = Promise::new(&mut |resolve, _reject| resolver = Some(resolve));
        {
            let mut state = inner.state.borrow_mut();
            if let Some(resolve) = resolver {
                state.closing.push(resolve);
            }
            let reason = reason.unwrap_or_default();
            state.core.close(now(), code.unwrap_or(1000), &reason);
        }
        inner.drain();
        promise
    }

    /// Connects now: after `close()`, with `startClosed`, or to replace the current connection.
    /// The retry count starts again from zero.
    #[wasm_bindgen(skip_typescript)]
    pub fn reconnect(&self) {
        self.inner.state.borrow_mut().core.reconnect(now());
        self.inner.drain();
    }

    /// Round-trip times (ms), reconnects, retransmitted frames, the queue and message
    /// outcomes so far (`ClientStats`).
    #[wasm_bindgen(skip_typescript)]
    pub fn stats(&self) -> Object {
        let stats = self.inner.state.borrow().core.stats();
        let object = Object::new();
        // An unmeasured time stays undefined.
        if let Some(rtt) = stats.rtt {
            set_number(&object, "rtt", millis(rtt));
        }
        if let Some(rtt) = stats.smoothed_rtt {
            set_number(&object, "smoothedRtt", millis(rtt));
        }
        set_number(&object, "reconnects", stats.reconnects as f64);
        set_number(&object, "retransmitted", stats.retransmitted as f64);
        set_number(&object, "queuedMessages", stats.queued_messages as f64);
        set_number(&object, "queuedBytes", stats.queued_bytes as f64);
        set_number(&object, "acknowledged", stats.acknowledged as f64);
        set_number(&object, "failed", stats.failed as f64);
        object
    }

    /// 0 connecting (or waiting to reconnect), 1 open, 2 closing, 3 closed.
    #[wasm_bindgen(getter = readyState, skip_typescript)]
    pub fn ready_state(&self) -> u8 {
        self.inner.state.borrow().core.ready_state() as u8
    }

    /// The identity this client connects with.
    #[wasm_bindgen(getter, skip_typescript)]
    pub fn source(&self) -> JsValue {
        self.inner.source.clone()
    }

    /// The URL connected to, `source` parameter included.
    #[wasm_bindgen(getter, skip_typescript)]
    pub fn url(&self) -> JsValue {
        self.inner.url.clone()
    }

    /// Messages waiting to be sent or acknowledged.
    #[wasm_bindgen(getter, skip_typescript)]
    pub fn queued(&self) -> usize {
        self.inner.state.borrow().core.queued()
    }

    /// Failed connection attempts since the last stable connection.
    #[wasm_bindgen(getter = retryCount, skip_typescript)]
    pub fn retry_count(&self) -> u32 {
        self.inner.state.borrow().core.retry_count()
    }
}
