//! The few JavaScript APIs the driver uses that web-sys does not give in a shape that works in
//! browsers and Node.js alike.
//!
//! `performance.now()` and `crypto.getRandomValues()` are globals in every runtime supported,
//! but web-sys reaches them only through `window` (absent in Node and workers); `then` is taken
//! with plain functions (js-sys's wants `Closure`s, one per call).

#[cfg(feature = "persist")]
use alloc::string::String;

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// A `Promise`, as far as awaiting it with plain functions goes.
    pub type Thenable;
    #[wasm_bindgen(method)]
    pub fn then(this: &Thenable, on_fulfilled: &JsValue, on_rejected: &JsValue) -> JsValue;

    /// `globalThis` (ES2020: every runtime the package supports).
    #[wasm_bindgen(thread_local_v2, js_name = globalThis)]
    pub static GLOBAL_THIS: JsValue;

    /// Milliseconds since the Unix epoch: the wall clock, for the journal's deadlines.
    #[cfg(feature = "persist")]
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    pub fn date_now() -> f64;

    /// Monotonic milliseconds (browsers, Node 16+): the core's clock.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    pub fn performance_now() -> f64;

    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues, catch)]
    pub fn get_random_values(buffer: &mut [u8]) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = console, js_name = log)]
    pub fn log(label: &str, what: &str, detail: &JsValue);

    /// An `EventTarget`, as far as adding and removing listeners with the event type taken as
    /// the JavaScript value it is goes (web-sys wants a `&str`: a copy into wasm memory and
    /// back for nothing).
    pub type Listeners;
    #[wasm_bindgen(method, catch, js_name = addEventListener)]
    pub fn add_event_listener(
        this: &Listeners,
        kind: &JsValue,
        listener: &JsValue,
        options: &JsValue,
    ) -> Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = removeEventListener)]
    pub fn remove_event_listener(
        this: &Listeners,
        kind: &JsValue,
        listener: &JsValue,
        options: &JsValue,
    ) -> Result<(), JsValue>;

    /// `target[key] = value` on an object of the driver's own (`Reflect.set`, which only
    /// throws for a proxy or a non-object): the key crosses as the text it is, rather than as a
    /// JavaScript string made first, and no exception is checked for.
    #[wasm_bindgen(js_namespace = Reflect, js_name = set)]
    pub fn set(target: &JsValue, key: &str, value: &JsValue);

    /// [`set`] with a key the driver keeps as a JavaScript string: nothing to decode.
    #[wasm_bindgen(js_namespace = Reflect, js_name = set)]
    pub fn set_key(target: &JsValue, key: &JsValue, value: &JsValue);

    /// [`set`] for a number, which then crosses as the number it is.
    #[wasm_bindgen(js_namespace = Reflect, js_name = set)]
    pub fn set_number(target: &JsValue, key: &str, value: f64);

    /// `target[key]`, whatever a getter throws caught (`Reflect.get`), the key crossing as text.
    #[wasm_bindgen(js_namespace = Reflect, js_name = get, catch)]
    pub fn get(target: &JsValue, key: &str) -> Result<JsValue, JsValue>;

    /// The global `setTimeout` (browsers, workers and Node.js): its handle is a number in
    /// browsers and an object in Node.js, so it stays a `JsValue`.
    #[wasm_bindgen(js_name = setTimeout)]
    pub fn set_timeout(callback: &JsValue, millis: i32) -> JsValue;

    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(handle: &JsValue);
}

/// The socket's hot path, written in JavaScript (`socket.js`): a frame is read there with
/// `JSON.parse` and crosses as its fields; its payload stays a JavaScript value.
#[wasm_bindgen(module = "/src/web/socket.js")]
extern "C" {
    /// Listens to `socket`: `on_frame` for the frames read in JavaScript, `on_event` for
    /// everything else.
    pub fn watch(socket: &JsValue, on_frame: &JsValue, on_event: &JsValue);

    /// `JSON.parse(text)`, or `undefined` for what is not JSON.
    pub fn read(text: &JsValue) -> JsValue;

    /// `handler(frame.payload, frame)`; what it throws is caught.
    #[wasm_bindgen(catch)]
    pub fn deliver(handler: &JsValue, frame: &JsValue) -> Result<JsValue, JsValue>;

    /// `frame.payload`.
    pub fn payload(frame: &JsValue) -> JsValue;
}

/// The journal of a client created with `persist` (`journal.js`): a file in Node.js, an
/// IndexedDB database in browsers.
#[cfg(feature = "persist")]
#[wasm_bindgen(module = "/src/web/journal.js")]
extern "C" {
    /// Creates the journal file at `path` if there is none; its text.
    #[wasm_bindgen(catch, js_name = journalOpen)]
    pub fn journal_open(path: &str) -> Result<String, JsValue>;

    /// Stores one batch in `store` (a path, or an `IDBDatabase`): appended, or replacing the
    /// journal (`rewrite`). `undefined` once written (a file), or a Promise that settles with
    /// the batch's transaction (IndexedDB).
    #[wasm_bindgen(catch, js_name = journalWrite)]
    pub fn journal_write(store: &JsValue, text: &str, rewrite: bool) -> Result<JsValue, JsValue>;

    /// Moves an unreadable journal aside; where it went.
    #[wasm_bindgen(catch, js_name = journalSetAside)]
    pub fn journal_set_aside(store: &JsValue) -> Result<String, JsValue>;
}
