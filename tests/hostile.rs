//! The real server under what a hostile (or merely bursty) client, or a crowd, does to it:
//! well-behaved clients stay connected and lose nothing, and senders are slowed rather than
//! recipients cut off.

#![cfg(not(target_arch = "wasm32"))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use wsrelay::{ClientBuilder, Error, Event, Incoming, WebSocketClient};
use wsrelay_server::{ServerConfig, WebSocketServer};

const PATIENCE: Duration = Duration::from_secs(60);

async fn server(config: ServerConfig) -> WebSocketServer {
    WebSocketServer::bind("127.0.0.1:0", config)
        .await
        .expect("bind a loopback port")
}

fn builder(addr: SocketAddr, source: &str) -> ClientBuilder {
    WebSocketClient::builder(format!("ws://{addr}"), source)
}

/// A client that records the numbers it receives as `kind`, and counts its closes.
struct Recorder {
    client: WebSocketClient,
    got: Arc<Mutex<Vec<(String, u64)>>>,
    closes: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
}

impl Recorder {
    async fn start(builder: ClientBuilder, kind: &str) -> Recorder {
        let mut events = builder.subscribe();
        let client = builder.build().expect("valid settings");
        let got: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let record = Arc::clone(&got);
        // A number, or an object whose `n` is one (padded messages).
        // Handlers are called in arrival order (their futures then run concurrently): record
        // in the call, not in the future.
        client.on(kind, move |m: Incoming<serde_json::Value>| {
            let from = m.source.unwrap_or_default();
            let n = m.payload.get("n").unwrap_or(&m.payload).as_u64();
            record
                .lock()
                .expect("record")
                .push((from, n.unwrap_or(u64::MAX)));
            async {}
        });
        let closes = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicBool::new(false));
        let (count, lost_flag) = (Arc::clone(&closes), Arc::clone(&lost));
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let mut opened_tx = Some(opened_tx);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Open { .. }) => {
                        if let Some(tx) = opened_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Close { .. }) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::SessionLost { .. }) => lost_flag.store(true, Ordering::SeqCst),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        tokio::time::timeout(PATIENCE, opened)
            .await
            .expect("connects")
            .expect("events go on");
        Recorder {
            client,
            got,
            closes,
            lost,
        }
    }

    fn from(&self, source: &str) -> Vec<u64> {
        let got = self.got.lock().expect("record");
        got.iter()
            .filter(|(from, _)| from == source)
            .map(|(_, n)| *n)
            .collect()
    }

    fn count(&self) -> usize {
        self.got.lock().expect("record").len()
    }

    async fn wait_for(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.count() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} messages arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn closes(&self) -> u64 {
        self.closes.load(Ordering::SeqCst)
    }
}

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket connection, not a wsrelay client: it does what the test says, nothing more.
async fn raw(addr: SocketAddr, query: &str) -> Raw {
    let url = format!("ws://{addr}/?{query}");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_of_10000_broadcasts_disturbs_nobody() {
    let server = server(ServerConfig::default()).await;
    let addr = server.local_addr();
    let alice = Recorder::start(builder(addr, "alice"), "chat").await;
    let bob = Recorder::start(builder(addr, "bob"), "chat").await;
    let carol = Recorder::start(builder(addr, "carol"), "chat").await;

    // A session client that ignores the window the welcome announces and writes everything
    // at once; it reads in the background, so its own acks do not block it.
    let mut hostile = raw(addr, "source=mallory&v=1").await;
    hostile
        .send(Message::text(
            r#"{"type":"~hello","v":1,"session":"mallory-session","ack":0}"#,
        ))
        .await
        .expect("hello");
    let (mut write, mut read) = hostile.split();
    let acked = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&acked);
    tokio::spawn(async move {
        while let Some(Ok(message)) = read.next().await {
            if let Message::Text(text) = message {
                let frame: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "~ack" {
                    seen.store(frame["ack"].as_u64().unwrap_or(0), Ordering::SeqCst);
                }
            }
        }
    });
    for n in 1..=10_000u64 {
        let frame = format!(r#"{{"type":"chat","id":{n},"payload":{n}}}"#);
        write.feed(Message::text(frame)).await.expect("feed");
    }
    write.flush().await.expect("flush");

    let expected: Vec<u64> = (1..=10_000).collect();
    for recorder in [&alice, &bob, &carol] {
        recorder.wait_for(10_000).await;
        assert_eq!(recorder.from("mallory"), expected);
        assert_eq!(recorder.closes(), 0, "a bystander was disconnected");
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while acked.load(Ordering::SeqCst) < 10_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats().slow_consumers, 0);
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_cut_off_while_its_sender_is_slowed_and_a_bystander_loses_nothing() {
    let config = ServerConfig {
        slow_consumer_timeout: Duration::from_secs(1),
        backlog_window: 64 * 1024,
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let addr = server.local_addr();
    let sender = Recorder::start(builder(addr, "sender"), "n").await;
    let bystander = Recorder::start(builder(addr, "bystander"), "n").await;
    // A bare client with a tiny receive buffer that never reads.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/?source=sloth");
    let (_sloth, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");

    // 8 MB in all: more than the kernel's socket buffers can hide.
    let pad = "x".repeat(1000);
    let mut sends = JoinSet::new();
    for n in 0..8_000u64 {
        sends.spawn(
            sender
                .client
                .send("n", serde_json::json!({ "n": n, "pad": pad })),
        );
        if n % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let outcomes = tokio::time::timeout(PATIENCE, async {
        let mut failed = 0;
        while let Some(outcome) = sends.join_next().await {
            failed += usize::from(outcome.expect("task").is_err());
        }
        failed
    })
    .await
    .expect("every send settles");
    assert_eq!(outcomes, 0, "no send failed");
    bystander.wait_for(8_000).await;
    assert_eq!(bystander.from("sender"), (0..8_000).collect::<Vec<u64>>());
    assert_eq!(bystander.closes(), 0, "the bystander stays connected");
    assert_eq!(sender.closes(), 0, "the sender stays connected");
    let stats = server.stats();
    assert_eq!(stats.slow_consumers, 1, "the sloth was cut off: {stats:?}");
    assert!(stats.blocked > 0, "the sender waited: {stats:?}");
    assert!(!server.is_connected("sloth").await.expect("memory engine"));
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_departed_peer_fails_each_message_and_cuts_off_nobody() {
    let server = server(ServerConfig::default()).await;
    let addr = server.local_addr();
    let sender = Recorder::start(builder(addr, "sender"), "n").await;
    let mut sends = JoinSet::new();
    for n in 0..5_000u64 {
        sends.spawn(sender.client.send_to("ghost", "n", n));
    }
    let mut unknown = 0;
    while let Some(outcome) = sends.join_next().await {
        match outcome.expect("task") {
            Err(Error::Remote(error)) if error.code == "unknown_target" => unknown += 1,
            other => panic!("expected unknown_target, got {other:?}"),
        }
    }
    assert_eq!(unknown, 5_000);
    assert_eq!(sender.closes(), 0, "the sender stays connected");
    sender.client.send("n", 1).await.expect("still works");
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_3000_connections_leaves_a_conversation_undisturbed() {
    let config = ServerConfig {
        presence: true,
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let addr = server.local_addr();
    let alice = Recorder::start(builder(addr, "alice"), "n").await;
    let bob = Recorder::start(builder(addr, "bob"), "n").await;

    let closed = Arc::new(AtomicU64::new(0));
    let mut flood = JoinSet::new();
    for n in 0..3000 {
        let closed = Arc::clone(&closed);
        flood.spawn(async move {
            let mut ws = raw(addr, &format!("source=flood-{n}")).await;
            // Reads what it is sent (presence announcements) until the test ends.
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(_) = message {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        });
        if n % 30 == 0 {
            alice.client.send("n", n / 30).await.expect("acked");
        }
    }
    bob.wait_for(100).await;
    assert_eq!(bob.from("alice"), (0..100).collect::<Vec<u64>>());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.clients().await.expect("memory engine").len() < 3002 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everybody connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "nobody of the flood was cut off"
    );
    assert_eq!((alice.closes(), bob.closes()), (0, 0));
    assert_eq!(server.stats().slow_consumers, 0);
    flood.abort_all();
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_of_1000_session_clients_after_a_restart_brings_everyone_back() {
    let config = ServerConfig {
        presence: true,
        ..ServerConfig::default()
    };
    let first = server(config.clone()).await;
    let addr = first.local_addr();
    let mut clients = Vec::new();
    for n in 0..1000 {
        clients.push(Recorder::start(builder(addr, &format!("client-{n}")), "n").await);
    }
    // The relay restarts: every client reconnects at once (within its backoff's jitter).
    first
        .close_with(wsrelay_server::ShutdownCode::Restart)
        .await;
    let second = WebSocketServer::bind(addr, config)
        .await
        .expect("same port");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while second.clients().await.expect("memory engine").len() < 1000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everybody came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new process has none of their sessions, and every client is told so.
    for (n, client) in clients.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !client.lost.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "client-{n} not told"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // And the crowd works: a broadcast reaches all 999 others.
    clients[0].client.send("n", 7).await.expect("acked");
    for client in &clients[1..] {
        client.wait_for(1).await;
        assert_eq!(client.from("client-0"), [7]);
    }
    assert_eq!(second.stats().slow_consumers, 0);
    second.close().await;
}
