//! End-to-end tests of the native client against the real `wsrelay-server` on loopback
//! (port 0), plus a TCP proxy that can go silent, and a paused-clock test of the driver's time.

#![cfg(not(target_arch = "wasm32"))]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use wsrelay::client::{delay_range, Options, ReadyState};
use wsrelay::{ClientBuilder, Error, Event, Incoming, SendOptions, WebSocketClient};
use wsrelay_server::{
    DisconnectReason, Incoming as ToServer, Rejection, RequestError, ServerConfig, StatusCode,
    WebSocketServer,
};

/// Upper bound of any single wait: a test that hangs fails instead.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Every test runs under this bound, so that a missing event or response fails the test
/// instead of hanging it.
async fn bounded(test: impl Future<Output = ()>) {
    if tokio::time::timeout(PATIENCE * 3, test).await.is_err() {
        panic!("the test did not finish in {:?}", PATIENCE * 3);
    }
}

async fn server() -> WebSocketServer {
    WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .expect("bind a loopback port")
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}")
}

/// Short delays so that reconnecting takes milliseconds, not seconds.
fn fast(addr: SocketAddr, source: &str) -> ClientBuilder {
    WebSocketClient::builder(url(addr), source)
        .min_reconnection_delay(Duration::from_millis(20))
        .max_reconnection_delay(Duration::from_millis(200))
        .connection_timeout(Duration::from_secs(2))
}

/// Waits for the first event matching `pick`, skipping others.
async fn next_event<T>(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(value) = pick(&event) {
                        return value;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("events ended: {what}"),
            }
        }
    })
    .await
}

async fn opened(events: &mut broadcast::Receiver<Event>) -> bool {
    next_event(events, "open", |e| match e {
        Event::Open { resumed } => Some(*resumed),
        _ => None,
    })
    .await
}

/// A client that is open, with its event receiver.
async fn connect(builder: ClientBuilder) -> (WebSocketClient, broadcast::Receiver<Event>) {
    // Subscribed before the client starts: on a multi-thread runtime the first connection can
    // open before a subscribe made after `build`.
    let mut events = builder.subscribe();
    let client = builder.build().expect("valid client settings");
    opened(&mut events).await;
    (client, events)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chat {
    message: String,
}

fn chat(message: &str) -> Chat {
    Chat {
        message: message.to_owned(),
    }
}

/// Records every chat message a client's handler sees, as (sender, text).
fn record_chat(client: &WebSocketClient) -> mpsc::UnboundedReceiver<(String, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    // Recorded in the handler's synchronous part: handlers are called in arrival order, the
    // futures they return run concurrently.
    client.on("chat-message", move |m: Incoming<Chat>| {
        let _ = tx.send((m.source.unwrap_or_default(), m.payload.message));
        async {}
    });
    rx
}

async fn take(rx: &mut mpsc::UnboundedReceiver<(String, String)>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let (source, text) = within("chat messages", rx.recv())
            .await
            .expect("handler channel open");
        out.push(format!("{source}: {text}"));
    }
    out
}

#[tokio::test]
async fn chat_between_several_clients_through_the_relay() {
    bounded(chat_between_several_clients_through_the_relay_body()).await
}

async fn chat_between_several_clients_through_the_relay_body() {
    let server = server().await;
    let addr = server.local_addr();
    let (alice, _) = connect(fast(addr, "alice")).await;
    let (bob, _) = connect(fast(addr, "bob")).await;
    let (carol, _) = connect(fast(addr, "carol")).await;
    let mut at_alice = record_chat(&alice);
    let mut at_bob = record_chat(&bob);
    let mut at_carol = record_chat(&carol);

    for text in ["hi all", "how are you?", "third"] {
        alice.send("chat-message", chat(text)).await.expect("acked");
    }
    bob.send("chat-message", chat("fine, thanks"))
        .await
        .expect("acked");

    let from_alice = ["alice: hi all", "alice: how are you?", "alice: third"];
    assert_eq!(take(&mut at_bob, 3).await, from_alice);
    let seen_by_carol = take(&mut at_carol, 4).await;
    assert_eq!(
        seen_by_carol,
        [
            "alice: hi all",
            "alice: how are you?",
            "alice: third",
            "bob: fine, thanks"
        ]
    );
    // Nobody hears their own messages back; alice hears bob.
    assert_eq!(take(&mut at_alice, 1).await, ["bob: fine, thanks"]);

    // A directed message reaches its target only.
    carol
        .send_to("alice", "chat-message", chat("psst"))
        .await
        .expect("acked");
    assert_eq!(take(&mut at_alice, 1).await, ["carol: psst"]);
    bob.send("chat-message", chat("marker"))
        .await
        .expect("acked");
    assert_eq!(take(&mut at_carol, 1).await, ["bob: marker"]);
    assert!(
        at_bob.try_recv().is_err(),
        "bob got carol's directed message"
    );

    // A directed message to nobody fails with the server's error.
    let error = carol
        .send_to("dave", "chat-message", chat("anyone?"))
        .await
        .expect_err("no such client");
    assert_eq!(error.code(), "unknown_target");

    for client in [alice, bob, carol] {
        within("close", client.close()).await;
        assert_eq!(client.ready_state(), ReadyState::Closed);
    }
    server.close().await;
}

/// Binds `addr` again once the previous server has let it go.
async fn rebind(addr: SocketAddr) -> WebSocketServer {
    within("rebinding the port", async {
        loop {
            match WebSocketServer::bind(addr, ServerConfig::default()).await {
                Ok(server) => return server,
                // The old listener may take a moment to be dropped after its handle.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// Records the payloads of `note` messages the server consumes, in order.
///
/// wsrelay-server runs each handler call on its own task; these tests use tokio's
/// current-thread runtime, which polls tasks in spawn order, so the record is the order of
/// consumption.
fn record_notes(server: &WebSocketServer) -> Arc<Mutex<Vec<u32>>> {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&notes);
    server.on("note", move |m: ToServer<u32>| {
        sink.lock().expect("notes lock").push(m.payload);
        async {}
    });
    notes
}

#[tokio::test]
async fn server_restart_reconnects_with_backoff_and_delivers_exactly_once_in_order() {
    bounded(server_restart_reconnects_with_backoff_and_delivers_exactly_once_in_order_body()).await
}

async fn server_restart_reconnects_with_backoff_and_delivers_exactly_once_in_order_body() {
    let first = server().await;
    let addr = first.local_addr();
    let before = record_notes(&first);
    let (alice, mut events) = connect(fast(addr, "alice")).await;
    for n in 1..=3 {
        alice
            .send("note", n)
            .await
            .expect("acked by the first server");
    }
    assert_eq!(*before.lock().expect("lock"), [1, 2, 3]);

    // Kill the server: dropping its last handle aborts every connection.
    drop(first);
    let close = next_event(&mut events, "close", |e| match e {
        Event::Close {
            code, reconnecting, ..
        } => Some((*code, *reconnecting)),
        _ => None,
    })
    .await;
    assert!(close.1, "the client reconnects after {close:?}");

    // Sent while the server is down: queued, the futures pending.
    let pending: Vec<_> = (4..=8).map(|n| alice.send("note", n)).collect();
    assert!(alice.queued() >= 5);

    // Attempts fail against the closed port, each delay within the backoff range.
    let options = Options {
        min_reconnection_delay: Duration::from_millis(20),
        max_reconnection_delay: Duration::from_millis(200),
        ..Options::default()
    };
    let mut attempts = Vec::new();
    while attempts.len() < 3 {
        let (attempt, delay) = next_event(&mut events, "reconnecting", |e| match e {
            Event::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
            _ => None,
        })
        .await;
        let (lo, hi) = delay_range(&options, attempt);
        assert!(
            (lo..=hi).contains(&delay),
            "attempt {attempt}: {delay:?} outside {lo:?}..={hi:?}"
        );
        attempts.push(attempt);
    }
    assert!(
        attempts.windows(2).all(|w| w[1] == w[0] + 1),
        "{attempts:?}"
    );
    assert!(alice.retry_count() >= 3);

    // The server comes back on the same port (a new process: no sessions).
    let second = rebind(addr).await;
    let after = record_notes(&second);
    assert!(!opened(&mut events).await, "a fresh server cannot resume");
    for outcome in pending {
        within("pending send", outcome)
            .await
            .expect("acked by the second server");
    }
    assert_eq!(*after.lock().expect("lock"), [4, 5, 6, 7, 8]);
    assert_eq!(alice.queued(), 0);
    alice.close().await;
    second.close().await;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Time {
    now: u64,
}

#[tokio::test]
async fn responses_flow_both_ways() {
    bounded(responses_flow_both_ways_body()).await
}

async fn responses_flow_both_ways_body() {
    let server = server().await;
    server.on("add", |m: ToServer<(i64, i64)>| async move {
        Some(m.payload.0 + m.payload.1)
    });
    server.on("fail", |_: ToServer<Value>| async move {
        Err::<Option<()>, _>("no way")
    });
    let addr = server.local_addr();
    let (alice, mut events) = connect(fast(addr, "alice")).await;
    let (bob, _) = connect(fast(addr, "bob")).await;

    // A server handler's return resolves the client's request.
    let sum: i64 = alice.request("add", (2, 3), None).await.expect("a sum");
    assert_eq!(sum, 5);
    let error = alice
        .request::<Value>("fail", (), Duration::from_secs(5))
        .await
        .expect_err("the handler failed");
    assert!(
        matches!(&error, Error::Remote(r) if r.code == "handler_error" && r.message == "no way")
    );
    // A response that is not what the caller asked for is a decode error.
    let error = alice
        .request::<String>("add", (1, 1), None)
        .await
        .expect_err("a number is not a string");
    assert_eq!(error.code(), "decode");

    // A client handler's return reaches the server's request.
    alice.on("get-time", |_: Incoming<Value>| async move {
        Ok::<_, String>(Some(Time { now: 1_764_090_000 }))
    });
    let time: Time = server
        .request("alice", "get-time", &(), Duration::from_secs(5))
        .await
        .expect("alice answers");
    assert_eq!(time.now, 1_764_090_000);

    // A failing or panicking handler answers handler_error and the client lives on.
    alice.on("explode", |m: Incoming<bool>| async move {
        if m.payload {
            panic!("handler bug");
        }
        Err::<(), _>("refused")
    });
    for panics in [false, true] {
        match server
            .request::<_, Value>("alice", "explode", &panics, Duration::from_secs(5))
            .await
        {
            Err(RequestError::Remote(remote)) => assert_eq!(remote.code, "handler_error"),
            other => panic!("expected a handler_error, got {other:?}"),
        }
        let failed = next_event(&mut events, "handler failure", |e| match e {
            Event::Error(Error::Handler { kind, error }) => Some((kind.clone(), error.clone())),
            _ => None,
        })
        .await;
        assert_eq!(failed.0, "explode");
        assert_eq!(failed.1.code, "handler_error");
    }
    let time: Time = server
        .request("alice", "get-time", &(), Duration::from_secs(5))
        .await
        .expect("still answering after a panic");
    assert_eq!(time.now, 1_764_090_000);

    // Client to client: bob answers alice's directed request.
    bob.on("echo", |m: Incoming<Value>| async move { Some(m.payload) });
    let echoed: Value = alice
        .request_to("bob", "echo", json!({"x": [1, 2]}), None)
        .await
        .expect("bob echoes");
    assert_eq!(echoed, json!({"x": [1, 2]}));

    // `off` removes the handler: bob now refuses the request at once (no_handler).
    bob.off("echo");
    let started = tokio::time::Instant::now();
    let error = alice
        .request_to::<Value>("bob", "echo", 1, Duration::from_secs(20))
        .await
        .expect_err("nobody answers");
    assert!(
        matches!(&error, Error::Remote(r) if r.code == "no_handler"),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not at the timeout"
    );

    alice.close().await;
    bob.close().await;
    server.close().await;
}

#[tokio::test]
async fn request_times_out_with_the_timeout_error() {
    bounded(request_times_out_with_the_timeout_error_body()).await
}

async fn request_times_out_with_the_timeout_error_body() {
    let server = server().await;
    let addr = server.local_addr();
    let (alice, _) = connect(fast(addr, "alice")).await;
    let (_bob, _) = connect(fast(addr, "bob")).await;
    // Relayed to bob, who has no handler: no response ever comes.
    let started = tokio::time::Instant::now();
    let error = alice
        .request::<Value>("nobody-answers", 1, Duration::from_millis(300))
        .await
        .expect_err("no response");
    assert_eq!(error, Error::Timeout);
    // The core's clock has whole milliseconds (floored), so allow that much slack.
    assert!(started.elapsed() >= Duration::from_millis(299));
    // The default timeout comes from the builder; a ttl that cannot be met expires.
    let options = SendOptions {
        timeout: Some(Duration::from_millis(100)),
        ..SendOptions::default()
    };
    let error = alice
        .request_with::<Value>("nobody-answers", 2, options)
        .await
        .expect_err("no response");
    assert_eq!(error.code(), "timeout");
    alice.close().await;
    server.close().await;
}

/// A TCP proxy in front of the server whose connections can be made silent: bytes are still
/// read (so nobody blocks) but no longer forwarded, like a dead NAT mapping.
struct Proxy {
    addr: SocketAddr,
    silenced: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let silenced: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let registry = Arc::clone(&silenced);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let silent = Arc::new(AtomicBool::new(false));
                registry.lock().expect("registry").push(Arc::clone(&silent));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, Arc::clone(&silent)));
                tokio::spawn(pipe(server_read, client_write, silent));
            }
        });
        Proxy { addr, silenced }
    }

    /// Every connection open now goes silent in both directions; new ones work.
    fn silence_current(&self) {
        for flag in self.silenced.lock().expect("registry").drain(..) {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn silent_server_is_detected_by_the_heartbeat_and_the_client_reconnects() {
    bounded(silent_server_is_detected_by_the_heartbeat_and_the_client_reconnects_body()).await
}

async fn silent_server_is_detected_by_the_heartbeat_and_the_client_reconnects_body() {
    let server = server().await;
    let notes = record_notes(&server);
    let proxy = Proxy::start(server.local_addr()).await;
    let (alice, mut events) = connect(
        fast(proxy.addr, "alice")
            .heartbeat_interval(Duration::from_millis(100))
            .heartbeat_timeout(Duration::from_millis(400)),
    )
    .await;
    alice.send("note", 1).await.expect("acked");

    proxy.silence_current();
    let started = tokio::time::Instant::now();
    // Sent into the silence: not acknowledged until the next connection.
    let pending = alice.send("note", 2);
    let (code, reason, reconnecting) = next_event(&mut events, "heartbeat close", |e| match e {
        Event::Close {
            code,
            reason,
            reconnecting,
        } => Some((*code, reason.clone(), *reconnecting)),
        _ => None,
    })
    .await;
    assert_eq!(
        (code, reason.as_str(), reconnecting),
        (1006, "heartbeat timeout", true)
    );
    // Silence is declared after heartbeat_timeout since the last frame heard, which was at
    // most one heartbeat_interval before the proxy went silent.
    assert!(started.elapsed() >= Duration::from_millis(290));

    // The server still holds the session: the new connection resumes it.
    assert!(opened(&mut events).await, "session resumed");
    within("the send made during the silence", pending)
        .await
        .expect("acked after the reconnect");
    assert_eq!(*notes.lock().expect("lock"), [1, 2]);
    alice.close().await;
    server.close().await;
}

#[tokio::test]
async fn queue_overflow_and_close_with_pending_messages_fail_with_clear_errors() {
    bounded(queue_overflow_and_close_with_pending_messages_fail_with_clear_errors_body()).await
}

async fn queue_overflow_and_close_with_pending_messages_fail_with_clear_errors_body() {
    // Not connected (start_closed): everything waits in the bounded queue.
    let client = WebSocketClient::builder("ws://127.0.0.1:9/", "alice")
        .start_closed(true)
        .max_enqueued_messages(3)
        .build()
        .expect("valid settings");
    let pending: Vec<_> = (0..3).map(|n| client.send("note", n)).collect();
    assert_eq!(client.queued(), 3);
    let error = client.send("note", 3).await.expect_err("queue is full");
    assert_eq!(error, Error::QueueFull { limit: 3 });
    assert_eq!(client.post("note", 4), Err(Error::QueueFull { limit: 3 }));

    within("close", client.close()).await;
    for outcome in pending {
        assert_eq!(outcome.await, Err(Error::Closed));
    }
    assert_eq!(client.send("note", 5).await, Err(Error::Closed));
    assert_eq!(client.queued(), 0);
}

#[tokio::test]
async fn close_with_unacknowledged_messages_fails_them_after_the_close_timeout() {
    bounded(close_with_unacknowledged_messages_fails_them_after_the_close_timeout_body()).await
}

async fn close_with_unacknowledged_messages_fails_them_after_the_close_timeout_body() {
    let server = server().await;
    let proxy = Proxy::start(server.local_addr()).await;
    let (alice, mut events) =
        connect(fast(proxy.addr, "alice").close_timeout(Duration::from_millis(200))).await;
    alice.send("note", 1).await.expect("acked");
    proxy.silence_current();
    let sent = alice.send("note", 2);
    let posted = alice.post("note", 3).expect("queued");
    within("close", alice.close()).await;
    // Both were sent over the silenced link and never acknowledged: they may have been
    // delivered, and say so.
    let unconfirmed = Error::Unconfirmed(Box::new(Error::Closed));
    assert_eq!(sent.await, Err(unconfirmed.clone()));
    let failed = next_event(&mut events, "post failure", |e| match e {
        Event::Failed { id, error } if *id == posted => Some(error.clone()),
        _ => None,
    })
    .await;
    assert_eq!(failed, unconfirmed);
    next_event(&mut events, "final close", |e| match e {
        Event::Close {
            reconnecting: false,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    server.close().await;
}

#[tokio::test]
async fn refused_upgrade_maps_to_a_stop_code() {
    bounded(refused_upgrade_maps_to_a_stop_code_body()).await
}

async fn refused_upgrade_maps_to_a_stop_code_body() {
    let server = WebSocketServer::builder(ServerConfig::default())
        .authenticate(|_| Err::<String, _>(Rejection::new(StatusCode::UNAUTHORIZED, "bad token")))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let builder = fast(server.local_addr(), "mallory");
    let mut events = builder.subscribe();
    let client = builder.build().expect("valid settings");
    let pending = client.send("note", 1);
    let (code, reason, reconnecting) = next_event(&mut events, "close", |e| match e {
        Event::Close {
            code,
            reason,
            reconnecting,
        } => Some((*code, reason.clone(), *reconnecting)),
        _ => None,
    })
    .await;
    assert_eq!(code, 4401);
    assert!(reason.contains("bad token"), "{reason}");
    assert!(!reconnecting);
    let error = pending.await.expect_err("the client gave up");
    assert!(
        matches!(error, Error::Rejected { code: 4401, .. }),
        "{error:?}"
    );
    assert_eq!(client.ready_state(), ReadyState::Closed);
    server.close().await;
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection_cleanly() {
    bounded(dropping_the_last_handle_closes_the_connection_cleanly_body()).await
}

async fn dropping_the_last_handle_closes_the_connection_cleanly_body() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = WebSocketServer::builder(ServerConfig::default())
        .on_disconnect(move |info, reason| {
            let _ = tx.send((info.source.clone(), reason.clone()));
        })
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (alice, _) = connect(fast(server.local_addr(), "alice")).await;
    let clone = alice.clone();
    tokio::spawn(async move { clone.post("note", 1) })
        .await
        .expect("task")
        .expect("queued from another task");
    drop(alice);
    let (source, reason) = within("disconnect", rx.recv()).await.expect("hook");
    assert_eq!(source, "alice");
    assert_eq!(reason, DisconnectReason::Closed(Some(1000)));
    server.close().await;
}

#[tokio::test]
async fn construction_rejects_bad_settings() {
    bounded(construction_rejects_bad_settings_body()).await
}

async fn construction_rejects_bad_settings_body() {
    for (url, source) in [
        ("http://127.0.0.1:1/", "alice"),
        ("127.0.0.1:1", "alice"),
        ("ws://127.0.0.1:1/", ""),
    ] {
        let error = WebSocketClient::new(url, source).expect_err(url);
        assert_eq!(error.code(), "invalid_option");
    }
    if cfg!(not(feature = "tls")) {
        let error = WebSocketClient::new("wss://127.0.0.1:1", "alice").expect_err("no tls");
        assert!(error.to_string().contains("tls"), "{error}");
    }
}

/// The driver takes its time from tokio: with a paused clock, the core's connection timeout
/// and backoff happen at exact virtual instants, however long the test really takes.
#[tokio::test(start_paused = true)]
async fn connection_timeout_and_backoff_follow_the_tokio_clock() {
    bounded(connection_timeout_and_backoff_follow_the_tokio_clock_body()).await
}

async fn connection_timeout_and_backoff_follow_the_tokio_clock_body() {
    // Accepts TCP (the kernel's backlog) but never answers the upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let options = Options::default();
    let client = WebSocketClient::builder(url(addr), "alice")
        .options(options.clone())
        .build()
        .expect("valid settings");
    let mut events = client.subscribe();
    let start = tokio::time::Instant::now();
    let (code, reason) = next_event(&mut events, "timeout", |e| match e {
        Event::Close { code, reason, .. } => Some((*code, reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!((code, reason.as_str()), (1006, "connection timeout"));
    assert_eq!(start.elapsed(), options.connection_timeout);
    let delay = next_event(&mut events, "reconnecting", |e| match e {
        Event::Reconnecting { attempt: 1, delay } => Some(*delay),
        _ => None,
    })
    .await;
    let (lo, hi) = delay_range(&options, 1);
    assert!((lo..=hi).contains(&delay));
    next_event(&mut events, "second timeout", |e| match e {
        Event::Close { .. } => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        start.elapsed(),
        options.connection_timeout * 2 + delay,
        "second attempt starts after the drawn delay"
    );
    assert_eq!(client.retry_count(), 2);
    drop(listener);
}

/// With the `tls` feature, `wss://` goes through rustls: a peer that does not speak TLS is a
/// transport error and a reconnect, never a panic (rustls needs its crypto provider).
#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_to_a_peer_without_tls_is_a_transport_error() {
    bounded(wss_to_a_peer_without_tls_is_a_transport_error_body()).await
}

#[cfg(feature = "tls")]
async fn wss_to_a_peer_without_tls_is_a_transport_error_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot tls").await;
        }
    });
    let client = WebSocketClient::builder(format!("wss://{addr}"), "alice")
        .max_retries(Some(0))
        .build()
        .expect("wss is accepted with the tls feature");
    let mut events = client.subscribe();
    let error = next_event(&mut events, "transport error", |e| match e {
        Event::Error(error @ Error::Transport(_)) => Some(error.clone()),
        _ => None,
    })
    .await;
    assert_eq!(error.code(), "transport");
    next_event(&mut events, "give up", |e| match e {
        Event::Close {
            reconnecting: false,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Tagged {
    task: u32,
    seq: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_one_client_send_from_many_tasks() {
    bounded(clones_of_one_client_send_from_many_tasks_body()).await
}

async fn clones_of_one_client_send_from_many_tasks_body() {
    const TASKS: u32 = 4;
    const EACH: u32 = 25;
    let server = server().await;
    let addr = server.local_addr();
    let (alice, _) = connect(fast(addr, "alice")).await;
    let (bob, _) = connect(fast(addr, "bob")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    bob.on("tagged", move |m: Incoming<Tagged>| {
        let _ = tx.send(m.payload);
        async {}
    });
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let alice = alice.clone();
            tokio::spawn(async move {
                for seq in 0..EACH {
                    alice
                        .send("tagged", Tagged { task, seq })
                        .await
                        .expect("acked");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender task");
    }
    let mut next = vec![0; TASKS as usize];
    for _ in 0..TASKS * EACH {
        let m = within("relayed message", rx.recv()).await.expect("open");
        assert_eq!(m.seq, next[m.task as usize], "order of task {}", m.task);
        next[m.task as usize] += 1;
    }
    assert!(next.iter().all(|&n| n == EACH), "{next:?}");
    alice.close().await;
    bob.close().await;
    server.close().await;
}

#[tokio::test]
async fn reconnect_after_close_opens_again() {
    bounded(reconnect_after_close_opens_again_body()).await
}

async fn reconnect_after_close_opens_again_body() {
    let server = server().await;
    let notes = record_notes(&server);
    let (alice, mut events) = connect(fast(server.local_addr(), "alice")).await;
    alice.close().await;
    assert_eq!(alice.send("note", 1).await, Err(Error::Closed));
    alice.reconnect();
    opened(&mut events).await;
    assert_eq!(alice.ready_state(), ReadyState::Open);
    alice.send("note", 2).await.expect("acked after reconnect");
    assert_eq!(*notes.lock().expect("lock"), [2]);
    alice.close().await;
    server.close().await;
}

#[tokio::test]
async fn dropped_send_and_request_futures_leave_their_messages_and_report_nothing() {
    bounded(dropped_send_and_request_futures_leave_their_messages_and_report_nothing_body()).await
}

async fn dropped_send_and_request_futures_leave_their_messages_and_report_nothing_body() {
    let server = server().await;
    let notes = record_notes(&server);
    let addr = server.local_addr();
    let (alice, mut events) = connect(fast(addr, "alice")).await;
    let (_bob, _) = connect(fast(addr, "bob")).await;
    // Ids are consecutive: the dropped send is `posted + 1`.
    let posted = alice.post("note", 1).expect("queued");
    drop(alice.send("note", 2));
    // Dropped after being polled once (its waker registered), before its outcome.
    let mut polled = Box::pin(alice.send("note", 3));
    std::future::poll_fn(|cx| {
        assert!(
            polled.as_mut().poll(cx).is_pending(),
            "no acknowledgement yet"
        );
        std::task::Poll::Ready(())
    })
    .await;
    drop(polled);
    // Relayed to bob, who has no handler: it fails with a timeout that nobody hears of.
    drop(alice.request::<Value>("nobody-answers", 4, Duration::from_millis(50)));
    alice.send("note", 5).await.expect("acked");
    assert_eq!(
        *notes.lock().expect("lock"),
        [1, 2, 3, 5],
        "dropping does not cancel"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A post's outcome is an event; a dropped future's is nobody's, as with a oneshot.
    let marker = alice.post("note", 6).expect("queued");
    let mut outcomes = Vec::new();
    next_event(&mut events, "the marker's delivery", |e| match e {
        Event::Delivered { id } if *id == marker => Some(()),
        Event::Delivered { id } | Event::Failed { id, .. } => {
            outcomes.push(*id);
            None
        }
        _ => None,
    })
    .await;
    assert_eq!(outcomes, [posted]);
    alice.close().await;
    server.close().await;
}

#[test]
fn futures_resolve_as_closed_when_the_driver_s_runtime_shuts_down() {
    let build = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    };
    for polled in [true, false] {
        let runtime = build();
        let (client, sent, asked) = runtime.block_on(async {
            let client = WebSocketClient::builder("ws://127.0.0.1:9/", "alice")
                .start_closed(true)
                .build()
                .expect("valid settings");
            let sent = client.send("note", 1);
            let asked = client.request::<Value>("question", 2, None);
            if polled {
                // The driver runs once (and so may the futures, elsewhere).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (client, sent, asked)
        });
        // The driver's task is dropped with the runtime, run or not.
        drop(runtime);
        build().block_on(async {
            bounded(async {
                assert_eq!(within("send", sent).await, Err(Error::Closed));
                assert_eq!(within("request", asked).await, Err(Error::Closed));
                assert_eq!(
                    within("later send", client.send("note", 3)).await,
                    Err(Error::Closed)
                );
                within("close", client.close()).await;
            })
            .await;
        });
    }
}
