//! The few JavaScript APIs the driver uses, declared by hand.
//!
//! Why not web-sys: its `WebSocket`, `CloseEvent` and `EventTarget` bindings are written for the
//! browser's classes, and the npm `ws` class that Node 20 needs is not one of them. Declaring
//! only the members we call, structurally (`obj.send(...)`, `event.code`), works with the
//! browser's `WebSocket`, Node 22's global one and npm `ws` alike, and keeps the module small.

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// A WebSocket, as browsers, Node 22+ and npm `ws` all shape it.
    pub type Socket;
    #[wasm_bindgen(method, catch)]
    pub fn send(this: &Socket, data: &str) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn close(this: &Socket, code: u16, reason: &str) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch, js_name = close)]
    pub fn close_plain(this: &Socket) -> Result<(), JsValue>;

    /// `Event`, `MessageEvent` and `CloseEvent` fields (npm `ws` events have the same names).
    pub type SocketEvent;
    #[wasm_bindgen(method, getter = type)]
    pub fn kind(this: &SocketEvent) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn data(this: &SocketEvent) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn code(this: &SocketEvent) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn reason(this: &SocketEvent) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn message(this: &SocketEvent) -> JsValue;

    /// The platform's `EventTarget` (browsers and Node 15+).
    pub type EventTarget;
    #[wasm_bindgen(constructor, js_class = "EventTarget")]
    pub fn new_event_target() -> EventTarget;
    #[wasm_bindgen(method, js_name = addEventListener)]
    pub fn add_event_listener(
        this: &EventTarget,
        kind: &str,
        listener: &JsValue,
        options: &JsValue,
    );
    #[wasm_bindgen(method, js_name = removeEventListener)]
    pub fn remove_event_listener(
        this: &EventTarget,
        kind: &str,
        listener: &JsValue,
        options: &JsValue,
    );
    #[wasm_bindgen(method, js_name = dispatchEvent)]
    pub fn dispatch_event(this: &EventTarget, event: &CustomEvent) -> bool;

    /// The platform's `CustomEvent` (browsers and Node 19+).
    pub type CustomEvent;
    #[wasm_bindgen(constructor, js_class = "CustomEvent")]
    pub fn new_custom_event(kind: &str, init: &JsValue) -> CustomEvent;

    /// A `Promise`, as far as awaiting it with plain functions goes (js-sys's `then` wants
    /// closures).
    pub type Thenable;
    #[wasm_bindgen(method)]
    pub fn then(this: &Thenable, on_fulfilled: &JsValue, on_rejected: &JsValue) -> JsValue;

    /// Returns a number in browsers and a `Timeout` object in Node: kept opaque.
    #[wasm_bindgen(js_name = setTimeout)]
    pub fn set_timeout(handler: &JsValue, millis: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(handle: &JsValue);

    /// `globalThis` (ES2020: every runtime the package supports).
    #[wasm_bindgen(thread_local_v2, js_name = globalThis)]
    pub static GLOBAL_THIS: JsValue;

    /// Monotonic milliseconds (browsers, Node 16+): the core's clock.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    pub fn performance_now() -> f64;

    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues, catch)]
    pub fn get_random_values(buffer: &mut [u8]) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = console, js_name = log)]
    pub fn log(label: &str, what: &str, detail: &JsValue);
}
