//! Browser tests of the wasm client (headless Chromium via wasm-bindgen-test) against a real
//! relay run by the test bed of `cargo xtask test` (`xtask/src/testbed.rs`), whose control URL
//! arrives at compile time in `WSRELAY_TESTBED`.
//!
//! Handlers and listeners are small JavaScript functions (`Function::new_with_args`): the tests
//! exercise the client exactly as a page's script would call it.

#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

use js_sys::{Array, Function, Object, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use wsrelay::WebSocketClient;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen]
extern "C" {
    fn fetch(url: &str, init: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, millis: f64) -> JsValue;
}

const TESTBED: Option<&str> = option_env!("WSRELAY_TESTBED");

fn testbed_url() -> &'static str {
    TESTBED.expect("WSRELAY_TESTBED is not set: run the browser tests with `cargo xtask test`")
}

/// Calls the test bed's control API and returns the body.
async fn control(method: &str, path: &str) -> String {
    let init = obj(&[("method", method.into())]);
    let url = format!("{}{path}", testbed_url());
    let response = JsFuture::from(fetch(&url, &init))
        .await
        .expect("test bed reachable");
    let text = Reflect::get(&response, &"text".into()).expect("text()");
    let text: Function = text.unchecked_into();
    let body = text.call0(&response).expect("text() callable");
    let body = JsFuture::from(Promise::from(body)).await.expect("body");
    body.as_string().expect("text body")
}

async fn relay_url() -> String {
    control("GET", "/url").await
}

fn obj(entries: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in entries {
        Reflect::set(&object, &(*key).into(), value).expect("plain object");
    }
    object.into()
}

fn json(text: &str) -> JsValue {
    JSON::parse(text).expect("valid JSON in the test")
}

fn js(args: &str, body: &str) -> Function {
    Function::new_with_args(args, body)
}

fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, f64::from(ms));
    });
    let _ = JsFuture::from(promise).await;
}

/// A unique source name per test run, so tests never replace each other's connections.
fn unique(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e9) as u64)
}

/// Fast reconnects, so that tests that restart the relay do not wait long.
fn fast() -> Object {
    json(r#"{"minReconnectionDelay":100,"maxReconnectionDelay":300,"connectionTimeout":2000}"#)
        .unchecked_into()
}

fn client(url: &str, source: &str, options: Object) -> WebSocketClient {
    WebSocketClient::new(url, source, options.into()).expect("valid options")
}

/// A Promise of the `detail` of the next `name` event.
fn next_event(client: &WebSocketClient, name: &str) -> JsFuture {
    let mut resolver = None;
    let promise = Promise::new(&mut |resolve, _| resolver = Some(resolve));
    let resolve = resolver.expect("executor ran");
    let listener = js("resolve", "return (event) => resolve(event.detail)")
        .call1(&JsValue::NULL, &resolve)
        .expect("listener");
    client.add_event_listener(&name.into(), &listener, &obj(&[("once", true.into())]));
    JsFuture::from(promise)
}

/// Records every `name` event's detail into the returned array.
fn record(client: &WebSocketClient, name: &str) -> Array {
    let log = Array::new();
    let listener = js("log", "return (event) => log.push(event.detail)")
        .call1(&JsValue::NULL, &log)
        .expect("listener");
    client.add_event_listener(&name.into(), &listener, &JsValue::UNDEFINED);
    log
}

async fn open(url: &str, name: &str) -> (WebSocketClient, String) {
    let source = unique(name);
    let c = client(url, &source, fast());
    next_event(&c, "open").await.expect("opens");
    assert_eq!(c.ready_state(), 1);
    (c, source)
}

async fn error_code(promise: Promise) -> String {
    let error = JsFuture::from(promise).await.expect_err("should reject");
    assert_eq!(
        get(&error, "name").as_string().as_deref(),
        Some("WsRelayError")
    );
    get(&error, "code").as_string().expect("a code")
}

/// Waits until `condition` holds, up to `ms`.
async fn eventually(ms: u32, condition: impl Fn() -> bool) -> bool {
    for _ in 0..ms / 20 {
        if condition() {
            return true;
        }
        sleep(20).await;
    }
    condition()
}

#[wasm_bindgen_test]
async fn send_and_receive() {
    let url = relay_url().await;
    let (alice, alice_source) = open(&url, "alice").await;
    let (bob, _) = open(&url, "bob").await;
    let inbox = Array::new();
    let handler = js(
        "inbox",
        "return (payload, message) => { inbox.push([payload, message]); }",
    )
    .call1(&JsValue::NULL, &inbox)
    .expect("handler");
    bob.on("chat-message", handler.unchecked_into());
    JsFuture::from(alice.send(
        "chat-message",
        json(r#"{"message":"Hello"}"#),
        JsValue::UNDEFINED,
    ))
    .await
    .expect("acknowledged");
    assert!(eventually(2000, || inbox.length() == 1).await, "bob got it");
    let [payload, message] = [inbox.get(0), Array::from(&inbox.get(0)).get(1)];
    let payload = Array::from(&payload).get(0);
    assert_eq!(
        get(&payload, "message").as_string().as_deref(),
        Some("Hello")
    );
    assert_eq!(get(&message, "source").as_string(), Some(alice_source));
    assert_eq!(
        get(&message, "type").as_string().as_deref(),
        Some("chat-message")
    );
    assert_eq!(alice.queued(), 0);
    // Invalid input is a rejected promise with a code, never a panic.
    assert_eq!(
        error_code(alice.send("~reserved", JsValue::NULL, JsValue::UNDEFINED)).await,
        "invalid_type"
    );
    let cyclic = js("", "const a = {}; a.self = a; return a;")
        .call0(&JsValue::NULL)
        .expect("obj");
    assert_eq!(
        error_code(alice.send("x", cyclic, JsValue::UNDEFINED)).await,
        "invalid_payload"
    );
    JsFuture::from(alice.close(None, None))
        .await
        .expect("closes");
    JsFuture::from(bob.close(None, None)).await.expect("closes");
}

#[wasm_bindgen_test]
async fn responses_both_ways() {
    let url = relay_url().await;
    let (alice, alice_source) = open(&url, "alice").await;
    let (bob, bob_source) = open(&url, "bob").await;
    alice.on("double", js("p", "return { n: p.n * 2 };"));
    bob.on(
        "later",
        js(
            "p",
            "return new Promise((ok) => setTimeout(() => ok({ status: 'received', p }), 50));",
        ),
    );
    bob.on("boom", js("", "throw new Error('boom');"));
    let bob_errors = record(&bob, "error");

    let to_alice = obj(&[("to", alice_source.as_str().into())]);
    let answer = JsFuture::from(bob.request("double", json(r#"{"n":21}"#), to_alice))
        .await
        .expect("alice answers");
    assert_eq!(get(&answer, "n").as_f64(), Some(42.0));

    let to_bob = obj(&[("to", bob_source.as_str().into())]);
    let answer = JsFuture::from(alice.request("later", json("7"), to_bob.clone()))
        .await
        .expect("bob answers asynchronously");
    assert_eq!(
        get(&answer, "status").as_string().as_deref(),
        Some("received")
    );
    assert_eq!(get(&answer, "p").as_f64(), Some(7.0));

    let failed = alice.request("boom", JsValue::NULL, to_bob);
    assert_eq!(error_code(failed).await, "handler_error");
    assert_eq!(bob_errors.length(), 1, "the throwing handler is reported");
    assert_eq!(
        get(&bob_errors.get(0), "code").as_string().as_deref(),
        Some("handler_error")
    );

    // The server rejects a message for nobody; the request fails with its code.
    let nobody = obj(&[("to", "nobody-here".into())]);
    let failed = alice.request("double", json(r#"{"n":1}"#), nobody);
    assert_eq!(error_code(failed).await, "unknown_target");
    JsFuture::from(alice.close(None, None))
        .await
        .expect("closes");
    JsFuture::from(bob.close(None, None)).await.expect("closes");
}

#[wasm_bindgen_test]
async fn request_timeout() {
    let url = relay_url().await;
    let (alice, _) = open(&url, "alice").await;
    let (bob, bob_source) = open(&url, "bob").await;
    bob.on("never", js("", "return new Promise(() => {});"));
    let options = obj(&[("to", bob_source.as_str().into()), ("timeout", 300.into())]);
    let started = js_sys::Date::now();
    let failed = alice.request("never", JsValue::NULL, options);
    assert_eq!(error_code(failed).await, "timeout");
    let elapsed = js_sys::Date::now() - started;
    assert!(
        (250.0..3000.0).contains(&elapsed),
        "timed out after {elapsed} ms"
    );
    JsFuture::from(alice.close(None, None))
        .await
        .expect("closes");
    JsFuture::from(bob.close(None, None)).await.expect("closes");
}

#[wasm_bindgen_test]
async fn queued_sends_are_delivered_when_the_server_returns() {
    let url = relay_url().await;
    assert_eq!(control("POST", "/stop").await, "ok");
    // Alice retries every 1.5 s exactly, so bob is surely back before her messages are relayed.
    let options =
        json(r#"{"minReconnectionDelay":1500,"maxReconnectionDelay":1500,"reconnectionJitter":0}"#);
    let alice = client(&url, &unique("alice"), options.unchecked_into());
    let sends: Vec<JsFuture> = (1..=3)
        .map(|n| JsFuture::from(alice.send("queued", JsValue::from(n), JsValue::UNDEFINED)))
        .collect();
    assert_eq!(alice.queued(), 3);
    assert_eq!(
        alice.ready_state(),
        0,
        "connecting while the server is down"
    );
    sleep(200).await;
    assert_eq!(control("POST", "/start").await, "ok");
    let (bob, _) = open(&url, "bob").await;
    let inbox = Array::new();
    let handler = js("inbox", "return (n) => { inbox.push(n); }")
        .call1(&JsValue::NULL, &inbox)
        .expect("handler");
    bob.on("queued", handler.unchecked_into());
    for send in sends {
        send.await.expect("delivered after the server came back");
    }
    assert_eq!(alice.queued(), 0);
    assert!(
        eventually(2000, || inbox.length() == 3).await,
        "bob got all three"
    );
    let received: Vec<f64> = inbox.iter().filter_map(|n| n.as_f64()).collect();
    assert_eq!(received, [1.0, 2.0, 3.0], "in order, once");
    JsFuture::from(alice.close(None, None))
        .await
        .expect("closes");
    JsFuture::from(bob.close(None, None)).await.expect("closes");
}

#[wasm_bindgen_test]
async fn reconnects_after_a_server_restart() {
    let url = relay_url().await;
    let (alice, _) = open(&url, "alice").await;
    let closed = next_event(&alice, "close");
    let reconnecting = next_event(&alice, "reconnecting");
    let reopened = next_event(&alice, "open");
    assert_eq!(control("POST", "/restart").await, "ok");
    let close = closed.await.expect("close event");
    assert_eq!(get(&close, "reconnecting").as_bool(), Some(true));
    let attempt = reconnecting.await.expect("reconnecting event");
    assert_eq!(get(&attempt, "attempt").as_f64(), Some(1.0));
    let open = reopened.await.expect("open again");
    // A new server process has no memory of the session.
    assert_eq!(get(&open, "resumed").as_bool(), Some(false));
    assert_eq!(alice.ready_state(), 1);
    JsFuture::from(alice.send("after-restart", JsValue::from(1), JsValue::UNDEFINED))
        .await
        .expect("sends again");
    JsFuture::from(alice.close(None, None))
        .await
        .expect("closes");
}

#[wasm_bindgen_test]
async fn close_codes() {
    let url = relay_url().await;
    // The application closes: its code and reason, no reconnect, later sends refused.
    let (alice, _) = open(&url, "alice").await;
    let closed = next_event(&alice, "close");
    JsFuture::from(alice.close(Some(4000), Some("bye".into())))
        .await
        .expect("closes");
    let close = closed.await.expect("close event");
    assert_eq!(get(&close, "code").as_f64(), Some(4000.0));
    assert_eq!(get(&close, "reason").as_string().as_deref(), Some("bye"));
    assert_eq!(get(&close, "reconnecting").as_bool(), Some(false));
    assert_eq!(alice.ready_state(), 3);
    assert_eq!(
        error_code(alice.send("late", JsValue::NULL, JsValue::UNDEFINED)).await,
        "closed"
    );

    // The server replaces a connection whose source connects again (4409): a stop code.
    let (first, source) = open(&url, "twin").await;
    let closed = next_event(&first, "close");
    let errored = next_event(&first, "error");
    let second = client(&url, &source, fast());
    next_event(&second, "open").await.expect("the second opens");
    let close = closed.await.expect("the first is closed");
    assert_eq!(get(&close, "code").as_f64(), Some(4409.0));
    assert_eq!(get(&close, "reconnecting").as_bool(), Some(false));
    let error = errored.await.expect("error event");
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("rejected"));
    assert_eq!(get(&error, "closeCode").as_f64(), Some(4409.0));
    assert_eq!(first.ready_state(), 3);
    JsFuture::from(second.close(None, None))
        .await
        .expect("closes");
}
