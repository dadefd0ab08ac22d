//! Sessions on the real server: acknowledgements and the de-duplication of retransmitted
//! ids, a resumed session getting what it missed once, a parked session expiring after its
//! grace period, and a second connection of a source replacing the first or refused (pinned
//! with a plain tokio-tungstenite client, in process).
//!
//! Then a client's connection attempts, in the order the relay sees them: an attempt the client
//! has given up on (its upgrade held back on a stalled link) that reaches the relay after the
//! attempt the client now uses is refused and changes nothing, on one relay and across two on
//! Redis; another instance of the same source still replaces, or is refused with
//! `--on-duplicate reject`. Real relay processes, real `redis-server`, native wsrelay clients,
//! and a proxy that holds an upgrade back and lets it through when told.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Redis, Relay};
use common::{config, disconnected, nothing_before_marker, start, watch_disconnects, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify};
use tokio::task::AbortHandle;
use wsrelay::{Event, Incoming, WebSocketClient};
use wsrelay_server::{DisconnectReason, OnDuplicate, ServerConfig, WebSocketServer};

#[tokio::test]
async fn acks_and_deduplication_of_retransmitted_ids() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, mut welcome) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let sid = welcome["sid"].take();
    assert!(sid.is_string(), "the session instance is named: {sid}");
    assert_eq!(
        welcome,
        json!({"type": "~welcome", "v": 1, "session": "alice-session-1", "ack": 0, "resumed": false,
               "window": 262_144, "sid": null})
    );
    let mut bob = Client::bare(addr, "bob").await;

    alice.send(r#"{"type":"m","id":1,"payload":1}"#).await;
    alice.send(r#"{"type":"m","id":2,"payload":2}"#).await;
    alice.acked(2).await;
    assert_eq!(bob.recv().await["payload"], 1);
    assert_eq!(bob.recv().await["payload"], 2);

    // A retransmit of 2 (the client did not see the ack) is dropped; 3 is new.
    alice.send(r#"{"type":"m","id":2,"payload":2}"#).await;
    alice.send(r#"{"type":"m","id":3,"payload":3}"#).await;
    alice.acked(3).await;
    assert_eq!(bob.recv().await["payload"], 3);
    nothing_before_marker(&server, &mut bob, "bob").await;

    // Bare clients get no acks: the next frame alice's bare peer sees is the marker.
    bob.send(r#"{"type":"m","id":7,"payload":4}"#).await;
    assert_eq!(alice.recv_app().await["payload"], 4);
    nothing_before_marker(&server, &mut bob, "bob").await;
}

#[tokio::test]
async fn a_resumed_session_gets_missed_frames_once() {
    let (builder, mut gone) = watch_disconnects(WebSocketServer::builder(config()));
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let token = "k3J9aQ2xP0tLw8Zr";
    let (mut alice, first) = Client::session(addr, "alice", token, 0).await;
    alice.send(r#"{"type":"m","id":1}"#).await;
    alice.acked(1).await;
    server.send_to("alice", "n", &1).await.unwrap();
    server.send_to("alice", "n", &2).await.unwrap();
    assert_eq!(alice.recv_app().await["payload"], 1);
    assert_eq!(alice.recv_app().await["payload"], 2);
    alice.send(r#"{"type":"~ack","ack":1}"#).await;
    // The link dies without a close handshake.
    drop(alice);
    assert!(matches!(
        disconnected(&mut gone, "alice").await,
        DisconnectReason::Closed(_)
    ));
    assert_eq!(server.stats().parked_sessions, 1);

    // Sent while alice is away: kept in her session.
    server.send_to("alice", "n", &3).await.unwrap();
    let mut bob = Client::bare(addr, "bob").await;
    bob.send(r#"{"type":"chat","payload":4}"#).await;
    bob.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(bob.recv().await["type"], "~pong");

    let (mut alice, welcome) = Client::resume(addr, "alice", token, 1, Some(&first["sid"])).await;
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["sid"], first["sid"], "the same instance goes on");
    assert_eq!(welcome["ack"], 1, "the server tells which ids it consumed");
    assert_eq!(alice.recv_app().await["payload"], 2);
    assert_eq!(alice.recv_app().await["payload"], 3);
    assert_eq!(
        alice.recv_app().await,
        json!({"type": "chat", "source": "bob", "payload": 4})
    );
    nothing_before_marker(&server, &mut alice, "alice").await;

    // A retransmitted id from before the reconnect is still a duplicate.
    alice.send(r#"{"type":"chat","id":1}"#).await;
    alice
        .send(r#"{"type":"chat","id":2,"payload":"new"}"#)
        .await;
    assert_eq!(bob.recv().await["payload"], "new");

    // Another token is a fresh session.
    drop(alice);
    disconnected(&mut gone, "alice").await;
    let (_alice, welcome) = Client::session(addr, "alice", "another-token", 5).await;
    assert_eq!(welcome["resumed"], false);
    assert_eq!(welcome["ack"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_parked_session_expires_after_its_grace_period_on_the_paused_clock() {
    let config = ServerConfig {
        session_grace: Duration::from_secs(60),
        ..config()
    };
    let (builder, mut gone) = watch_disconnects(WebSocketServer::builder(config));
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let token = "alice-session-1";
    let (mut alice, first) = Client::session(addr, "alice", token, 0).await;
    server.send_to("alice", "n", &1).await.unwrap();
    assert_eq!(alice.recv_app().await["payload"], 1);
    drop(alice);
    disconnected(&mut gone, "alice").await;
    server.send_to("alice", "n", &2).await.unwrap();

    // Within the grace period the session waits for her...
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(server.stats().parked_sessions, 1);
    // ...after it, it is gone, and so is what was kept for her.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(server.stats().parked_sessions, 0);
    assert!(matches!(
        server.send_to("alice", "n", &3).await,
        Err(wsrelay_server::SendError::UnknownTarget)
    ));
    let (mut alice, welcome) = Client::resume(addr, "alice", token, 1, Some(&first["sid"])).await;
    assert_eq!(welcome["resumed"], false, "{welcome}");
    assert_ne!(welcome["sid"], first["sid"], "a new instance");
    server.send_to("alice", "n", &4).await.unwrap();
    assert_eq!(alice.recv_app().await["payload"], 4);
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let (builder, mut gone) = watch_disconnects(WebSocketServer::builder(config()));
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let mut first = Client::bare(addr, "alice").await;
    let mut second = Client::bare(addr, "alice").await;
    assert_eq!(first.closed().await.0, Some(4409));
    assert_eq!(
        disconnected(&mut gone, "alice").await,
        DisconnectReason::Replaced
    );
    assert_eq!(server.clients().await.unwrap(), ["alice"]);
    assert_eq!(server.stats().replaced, 1);
    nothing_before_marker(&server, &mut second, "alice").await;
}

#[tokio::test]
async fn a_second_connection_can_be_rejected() {
    let server = start(ServerConfig {
        on_duplicate: OnDuplicate::Reject,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut first = Client::bare(addr, "alice").await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/?source=alice")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 409)
        }
        other => panic!("expected 409, got {:?}", other.map(|_| ())),
    }
    nothing_before_marker(&server, &mut first, "alice").await;
}

const PATIENCE: Duration = Duration::from_secs(30);

/// A link whose client's bytes were held back: what the client sent before it gave up, and
/// whether it did (its end closed).
#[derive(Default)]
struct HeldLink {
    bytes: Vec<u8>,
    given_up: bool,
}

/// A TCP proxy in front of the relays. New links go to `target`; while `hold` is set, a new
/// link's bytes are kept instead (nothing reaches a relay) until [`Gate::release`] sends them,
/// as a stalled network delivers an old upgrade late.
struct Gate {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    hold: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<HeldLink>>>,
    changed: Arc<Notify>,
    links: Arc<Mutex<Vec<Link>>>,
}

/// A link the gate carries: its task, and whether it is silenced.
struct Link {
    task: AbortHandle,
    silent: Arc<AtomicBool>,
}

impl Gate {
    async fn start(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            target: Arc::new(Mutex::new(target)),
            hold: Arc::default(),
            held: Arc::default(),
            changed: Arc::default(),
            links: Arc::default(),
        };
        let (target, hold, held, changed, links) = (
            Arc::clone(&gate.target),
            Arc::clone(&gate.hold),
            Arc::clone(&gate.held),
            Arc::clone(&gate.changed),
            Arc::clone(&gate.links),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if hold.load(Ordering::SeqCst) {
                    let index = {
                        let mut held = held.lock().unwrap();
                        held.push(HeldLink::default());
                        held.len() - 1
                    };
                    tokio::spawn(keep(client, index, Arc::clone(&held), Arc::clone(&changed)));
                    changed.notify_waiters();
                    continue;
                }
                let upstream = *target.lock().unwrap();
                let silent = Arc::new(AtomicBool::new(false));
                let quiet = Arc::clone(&silent);
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pipe(client_read, server_write, Arc::clone(&quiet)) => {}
                        () = pipe(server_read, client_write, quiet) => {}
                    }
                });
                links.lock().unwrap().push(Link {
                    task: task.abort_handle(),
                    silent,
                });
            }
        });
        gate
    }

    fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }

    /// Cuts every link it carries (the held ones stay held).
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.task.abort();
        }
    }

    /// Silences every link it carries for good: nothing more goes through, either way, and
    /// the relay's end stays open (a link that died without the relay noticing).
    fn silence(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.silent.store(true, Ordering::SeqCst);
        }
    }

    /// Waits until a held link's client has given up on it.
    async fn given_up(&self) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                if self.held.lock().unwrap().iter().any(|link| link.given_up) {
                    return;
                }
                changed.await;
            }
        })
        .await
        .expect("the client gives up on the held attempt");
    }

    /// Sends what the held links' clients sent to `target` now, as a late delivery, and
    /// returns what the relay answered on each (until it closed, or 3 s).
    async fn release(&self, target: SocketAddr) -> Vec<Vec<u8>> {
        let held: Vec<HeldLink> = std::mem::take(&mut *self.held.lock().unwrap());
        let mut answers = Vec::new();
        for link in held {
            let mut server = TcpStream::connect(target).await.unwrap();
            server.write_all(&link.bytes).await.unwrap();
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(3), server.read_to_end(&mut answer)).await;
            answers.push(answer);
        }
        answers
    }
}

/// Copies `from` to `to` until either ends; while `silent`, what is read is kept back (and
/// the end of `from` is not passed on).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        while silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Keeps what a held link's client sends, and notes when it gives up (its end closes).
async fn keep(
    mut client: TcpStream,
    index: usize,
    held: Arc<Mutex<Vec<HeldLink>>>,
    changed: Arc<Notify>,
) {
    let mut buf = [0; 4096];
    loop {
        let n = client.read(&mut buf).await.unwrap_or(0);
        if let Some(link) = held.lock().unwrap().get_mut(index) {
            link.bytes.extend_from_slice(&buf[..n]);
            link.given_up = n == 0;
        }
        if n == 0 {
            changed.notify_waiters();
            return;
        }
    }
}

/// The close code of the first close frame a server wrote after its HTTP answer, if any.
fn close_code(answer: &[u8]) -> Option<u16> {
    let head = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut frames = answer.get(head..)?;
    while frames.len() >= 2 {
        let (opcode, len) = (frames[0] & 0x0f, usize::from(frames[1] & 0x7f));
        let (start, len) = match len {
            126 => (4, usize::from(u16::from_be_bytes([frames[2], frames[3]]))),
            127 => return None,
            len => (2, len),
        };
        let payload = frames.get(start..start + len)?;
        if opcode == 8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        frames = &frames[start + len..];
    }
    None
}

/// A native client that gives up on an attempt after 500 ms and reconnects fast, recording
/// the numbers it receives and the events it sees.
struct Peer {
    client: WebSocketClient,
    got: Arc<Mutex<Vec<u64>>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Peer {
    async fn start(url: String, source: &str, seed: u64) -> Peer {
        let builder = WebSocketClient::builder(url, source)
            .connection_timeout(Duration::from_millis(500))
            .min_reconnection_delay(Duration::from_millis(50))
            .max_reconnection_delay(Duration::from_millis(200))
            .seed(seed);
        let mut stream = builder.subscribe();
        let client = builder.build().unwrap();
        let got: Arc<Mutex<Vec<u64>>> = Arc::default();
        let record = Arc::clone(&got);
        client.on("n", move |m: Incoming<u64>| {
            record.lock().unwrap().push(m.payload);
            async {}
        });
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let seen = Arc::clone(&events);
        tokio::spawn(async move {
            loop {
                match stream.recv().await {
                    Ok(event) => seen.lock().unwrap().push(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let peer = Peer {
            client,
            got,
            events,
        };
        peer.opened(1).await;
        peer
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.lock().unwrap().iter().filter(|e| f(e)).count()
    }

    /// Waits for the `n`th open.
    async fn opened(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.count(|e| matches!(e, Event::Open { .. })) < n {
            assert!(tokio::time::Instant::now() < deadline, "open #{n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stopped(&self) -> bool {
        self.count(|e| {
            matches!(
                e,
                Event::Close {
                    reconnecting: false,
                    ..
                }
            )
        }) > 0
    }

    async fn wait_for(&self, numbers: &[u64]) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.got.lock().unwrap().len() < numbers.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "got {:?}, waiting for {numbers:?}",
                self.got.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*self.got.lock().unwrap(), numbers);
    }
}

/// Alice's attempt is held back while she gives up on it and connects again (to `live`); the
/// held upgrade then reaches `stale_to`, `late` (after her new connection is up) or early
/// (before it). Bob, on `live` too, sends her numbers before and after.
async fn a_held_attempt(live: SocketAddr, stale_to: SocketAddr, late: bool) {
    let gate = Gate::start(live).await;
    let alice = Peer::start(format!("ws://{}", gate.addr), "alice", 1).await;
    let bob = Peer::start(format!("ws://{live}"), "bob", 2).await;
    bob.client.send("n", 0u64).await.unwrap();
    alice.wait_for(&[0]).await;

    gate.hold(true);
    gate.cut();
    gate.given_up().await;
    let answers = if late {
        gate.hold(false);
        alice.opened(2).await;
        gate.release(stale_to).await
    } else {
        let answers = gate.release(stale_to).await;
        gate.hold(false);
        alice.opened(2).await;
        answers
    };
    assert_eq!(answers.len(), 1, "one attempt was held");
    let answer = String::from_utf8_lossy(&answers[0]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    if late {
        // Refused after the upgrade with a code the client would not stop on.
        assert_eq!(close_code(&answers[0]), Some(4410), "{answer:?}");
    }

    bob.client.send("n", 1u64).await.unwrap();
    alice.wait_for(&[0, 1]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!alice.stopped(), "alice was not stopped");
    assert_eq!(
        alice.count(|e| matches!(e, Event::SessionLost { .. })),
        0,
        "alice's session was not touched"
    );
    assert_eq!(alice.count(|e| matches!(e, Event::Open { .. })), 2);
    alice.client.send("n", 2u64).await.unwrap();
    bob.wait_for(&[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_after_the_live_one_is_refused_on_one_relay() {
    let (_relay, addr) = common::spawn_relay(&["--port", "0"], PATIENCE).await;
    a_held_attempt(addr, addr, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_before_the_live_one_is_superseded_on_one_relay() {
    let (_relay, addr) = common::spawn_relay(&["--port", "0"], PATIENCE).await;
    a_held_attempt(addr, addr, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_after_the_live_one_is_refused_across_two_relays() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    // The live connection is on b; the stale upgrade reaches a.
    a_held_attempt(b.addr, a.addr, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_before_the_live_one_is_superseded_across_two_relays() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    a_held_attempt(b.addr, a.addr, false).await;
}

/// Another client object with the same source: it replaces the first, which stops with 4409;
/// or, with `--on-duplicate reject`, it is the one refused, with the same stop code. Meanwhile a
/// client whose own old connection still holds the source on the relay (a link that died
/// without the relay noticing) is never refused as its own duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_replaces_or_is_refused_but_a_client_never_duplicates_itself() {
    for reject in [false, true] {
        let args: &[&str] = if reject {
            &["--port", "0", "--on-duplicate", "reject"]
        } else {
            &["--port", "0"]
        };
        let (_relay, addr) = common::spawn_relay(args, PATIENCE).await;
        let gate = Gate::start(addr).await;
        let url = format!("ws://{}", gate.addr);
        let first = Peer::start(url.clone(), "twin", 1).await;

        // The link dies on the client's side only: the relay still holds the old connection
        // when the client's next attempt arrives.
        gate.silence();
        first.client.reconnect();
        first.opened(2).await;
        assert!(!first.stopped(), "reject={reject}: not its own duplicate");

        // Another instance: a second client object with the same source.
        let builder = WebSocketClient::builder(url.clone(), "twin")
            .min_reconnection_delay(Duration::from_millis(50))
            .seed(2);
        let mut events = builder.subscribe();
        let second = builder.build().unwrap();
        let loser = if reject { "second" } else { "first" };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stopped = if reject {
                let mut stop = false;
                while let Ok(event) = events.try_recv() {
                    stop |= matches!(
                        event,
                        Event::Close {
                            code: 4409,
                            reconnecting: false,
                            ..
                        }
                    );
                }
                stop
            } else {
                first.count(|e| {
                    matches!(
                        e,
                        Event::Close {
                            code: 4409,
                            reconnecting: false,
                            ..
                        }
                    )
                }) == 1
            };
            if stopped {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reject={reject}: the {loser} stops with 4409"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = second.send("n", 9u64).await;
        if reject {
            assert!(
                matches!(refused, Err(wsrelay::Error::Rejected { code: 4409, .. })),
                "{refused:?}"
            );
            assert!(!first.stopped());
        } else {
            assert!(refused.is_ok(), "{refused:?}");
        }
    }
}
