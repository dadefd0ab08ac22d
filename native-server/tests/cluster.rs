//! Several relays on one Redis behave as one server, and survive each other's death: real
//! `redis-server` and `wsrelay-server` processes on loopback, native wsrelay clients, and the
//! faults done for real (SIGKILL, SIGSTOP, a Redis restart, a proxy that moves links).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{signal, Redis, Relay, PATIENCE};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use wsrelay::{ClientBuilder, Event, Incoming, WebSocketClient};
use wsrelay_server::{ServerConfig, WebSocketServer};

/// A TCP proxy whose target can be switched; switching cuts the links it carries.
struct Switch {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Switch {
    async fn start(target: SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (to, registry) = (Arc::clone(&target), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = *to.lock().unwrap();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                registry.lock().unwrap().push(link.abort_handle());
            }
        });
        Switch {
            addr,
            target,
            links,
        }
    }

    /// New links go to `target`; the links open now are cut.
    fn switch(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// A native client with fast reconnects, recording the numbers it receives per sender.
struct Peer {
    client: WebSocketClient,
    got: Arc<Mutex<Vec<(String, u64)>>>,
    lost: Arc<AtomicU64>,
}

impl Peer {
    async fn connect(addr: SocketAddr, source: &str) -> Peer {
        Peer::start(
            WebSocketClient::builder(format!("ws://{addr}"), source)
                .min_reconnection_delay(Duration::from_millis(50))
                .max_reconnection_delay(Duration::from_millis(500)),
        )
        .await
    }

    async fn start(builder: ClientBuilder) -> Peer {
        let events = builder.subscribe();
        let client = builder.build().unwrap();
        let got: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let record = Arc::clone(&got);
        // Called in arrival order: record in the call.
        client.on("n", move |m: Incoming<u64>| {
            record
                .lock()
                .unwrap()
                .push((m.source.unwrap_or_default(), m.payload));
            async {}
        });
        let lost = common::cluster::opened_counting_losses(events).await;
        Peer { client, got, lost }
    }

    fn from(&self, source: &str) -> Vec<u64> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(from, _)| from == source)
            .map(|(_, n)| *n)
            .collect()
    }

    async fn wait_for(&self, source: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.from(source).len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} from {source}: {:?}",
                self.from(source).len(),
                self.from(source)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_redis_behave_as_one_server() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let alice = Peer::connect(a.addr, "alice").await;
    let bob = Peer::connect(b.addr, "bob").await;
    let carol = Peer::connect(a.addr, "carol").await;
    bob.client
        .on("get-name", |_: Incoming<()>| async { Some("Bob") });

    // Broadcast from a relay reaches clients of both.
    alice.client.send("n", 1).await.unwrap();
    bob.wait_for("alice", 1).await;
    carol.wait_for("alice", 1).await;
    // Directed, across relays, both ways.
    bob.client.send_to("alice", "n", 2).await.unwrap();
    alice.wait_for("bob", 1).await;
    assert!(carol.from("bob").is_empty(), "directed: carol gets nothing");
    // A request answered on the other relay.
    let name: String = alice
        .client
        .request_to("bob", "get-name", (), None)
        .await
        .unwrap();
    assert_eq!(name, "Bob");
    // Presence is the cluster's.
    let online: Vec<String> = alice
        .client
        .request("relay:clients", (), None)
        .await
        .unwrap();
    assert_eq!(online, ["alice", "bob", "carol"]);
    let joined: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&joined);
    alice
        .client
        .on("relay:presence", move |m: Incoming<Value>| {
            let names: Vec<String> = serde_json::from_value(m.payload["joined"].clone()).unwrap();
            seen.lock().unwrap().extend(names);
            async {}
        });
    // Dave joins on relay b: alice, on relay a, hears of it.
    let dave = Peer::connect(b.addr, "dave").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !joined.lock().unwrap().contains(&"dave".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no presence for dave"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An unknown target is known as such everywhere.
    let error = dave.client.send_to("nobody", "n", 3).await.unwrap_err();
    assert_eq!(error.code(), "unknown_target");
    assert_eq!(alice.lost.load(Ordering::SeqCst), 0);
    // What bob acknowledged leaves his mailbox in Redis (settled within a quarter second).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let bytes = session_field(&redis, "bob", "bytes").await;
        if bytes.as_deref() == Some("0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's mailbox still holds {bytes:?} bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_library_works_across_relays() {
    let redis = Redis::start(false).await;
    let config = ServerConfig {
        redis: Some(redis.url()),
        ..ServerConfig::default()
    };
    let a = WebSocketServer::bind("127.0.0.1:0", config.clone())
        .await
        .unwrap();
    let b = WebSocketServer::bind("127.0.0.1:0", config).await.unwrap();
    let alice = Peer::connect(a.local_addr(), "alice").await;
    alice
        .client
        .on("ask", |m: Incoming<u64>| async move { Some(m.payload * 2) });
    // Relay b sends to, requests from and broadcasts to a client of relay a.
    b.send_to("alice", "n", &7).await.unwrap();
    alice.wait_for("", 1).await;
    let doubled: u64 = b
        .request("alice", "ask", &21, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(doubled, 42);
    assert_eq!(b.broadcast("n", &8, None).await.unwrap(), 1);
    alice.wait_for("", 2).await;
    assert_eq!(alice.from(""), [7, 8]);
    assert!(b.is_connected("alice").await.unwrap());
    assert_eq!(b.clients().await.unwrap(), ["alice"]);
    alice.client.close().await;
    a.close().await;
    b.close().await;
}

/// A client away while more frames than one fetch takes (256) pile up in its mailbox gets them
/// all when it comes back, with nothing new arriving to wake its connection: the connection
/// reads its mailbox to the end, batch after batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_longer_than_a_batch_is_read_to_its_end() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let switch = Switch::start(a.addr).await;
    let alice = Peer::connect(a.addr, "alice").await;
    let bob = Peer::connect(switch.addr, "bob").await;
    alice.client.send("n", 0).await.unwrap();
    bob.wait_for("alice", 1).await;
    // Bob's link goes, and his attempts meet a closed port meanwhile.
    switch.switch(SocketAddr::from((
        [127, 0, 0, 1],
        common::cluster::free_port().await,
    )));
    let count = 700;
    let mut sends = JoinSet::new();
    for n in 1..count {
        sends.spawn(alice.client.send("n", n));
    }
    settled(sends).await;
    switch.switch(a.addr);
    bob.wait_for("alice", count as usize).await;
    assert_eq!(bob.from("alice"), (0..count).collect::<Vec<u64>>());
    assert_eq!(bob.lost.load(Ordering::SeqCst), 0);
}

/// Clients that each broadcast `count` numbered messages, paced, and what they all received.
async fn chatter(
    peers: &[Peer],
    sources: &[&str],
    count: u64,
) -> JoinSet<Result<(), wsrelay::Error>> {
    let mut sends = JoinSet::new();
    for n in 0..count {
        for peer in peers {
            sends.spawn(peer.client.send("n", n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = sources;
    sends
}

async fn settled(mut sends: JoinSet<Result<(), wsrelay::Error>>) {
    let outcomes = tokio::time::timeout(PATIENCE * 2, async {
        let mut failed = Vec::new();
        while let Some(outcome) = sends.join_next().await {
            if let Err(error) = outcome.unwrap() {
                failed.push(error);
            }
        }
        failed
    })
    .await
    .expect("every send settles");
    assert!(outcomes.is_empty(), "sends failed: {outcomes:?}");
}

/// Every peer got every other peer's `count` messages, once each and in order.
async fn everyone_got_everything(peers: &[Peer], sources: &[&str], count: u64) {
    let expected: Vec<u64> = (0..count).collect();
    for (i, peer) in peers.iter().enumerate() {
        for (j, source) in sources.iter().enumerate() {
            if i != j {
                peer.wait_for(source, expected.len()).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, peer) in peers.iter().enumerate() {
        for (j, source) in sources.iter().enumerate() {
            if i != j {
                assert_eq!(peer.from(source), expected, "{} from {source}", sources[i]);
            }
        }
        assert_eq!(
            peer.lost.load(Ordering::SeqCst),
            0,
            "{}: a session was lost",
            sources[i]
        );
    }
}

async fn killed_mid_stream(reconnect_elsewhere: bool) {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let switch = Switch::start(a.addr).await;
    let sources = ["a1", "a2", "a3", "b1", "b2", "b3"];
    let mut peers = Vec::new();
    for source in &sources {
        let addr = if source.starts_with('a') {
            switch.addr
        } else {
            b.addr
        };
        peers.push(Peer::connect(addr, source).await);
    }
    let count = 150;
    let sending = {
        let peers = &peers;
        async move { chatter(peers, &sources, count).await }
    };
    let killing = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (redis_url, node, port) = a.kill().await;
        if reconnect_elsewhere {
            switch.switch(b.addr);
            None
        } else {
            switch.switch(SocketAddr::from(([127, 0, 0, 1], port)));
            Some(Relay::start_on(&redis_url, &node, port).await)
        }
    };
    let (sends, _restarted) = tokio::join!(sending, killing);
    settled(sends).await;
    everyone_got_everything(&peers, &sources, count).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_nothing_when_its_clients_come_back_to_it() {
    killed_mid_stream(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_nothing_when_its_clients_move_to_another() {
    killed_mid_stream(true).await;
}

/// Four clients on two relays chatter while Redis restarts, with or without persistence;
/// returns them, how their sends ended, and Redis and the relays (kept running until the
/// caller has checked what arrived: acknowledged is not yet delivered).
async fn redis_restarts_mid_stream(
    persistent: bool,
) -> (
    Vec<Peer>,
    Vec<Option<wsrelay::Error>>,
    (Redis, Relay, Relay),
) {
    let mut redis = Redis::start(persistent).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let sources = ["a1", "a2", "b1", "b2"];
    let mut peers = Vec::new();
    for source in &sources {
        let addr = if source.starts_with('a') {
            a.addr
        } else {
            b.addr
        };
        peers.push(Peer::connect(addr, source).await);
    }
    let sending = {
        let peers = &peers;
        async move { chatter(peers, &sources, 150).await }
    };
    let restarting = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart().await;
    };
    let (mut sends, ()) = tokio::join!(sending, restarting);
    let outcomes = tokio::time::timeout(PATIENCE * 2, async {
        let mut outcomes = Vec::new();
        while let Some(outcome) = sends.join_next().await {
            outcomes.push(outcome.unwrap().err());
        }
        outcomes
    })
    .await
    .expect("every send settles");
    (peers, outcomes, (redis, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_persistence_loses_and_duplicates_nothing() {
    let (peers, outcomes, _running) = redis_restarts_mid_stream(true).await;
    let failed: Vec<_> = outcomes.iter().flatten().collect();
    assert!(failed.is_empty(), "sends failed: {failed:?}");
    everyone_got_everything(&peers, &["a1", "a2", "b1", "b2"], 150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_is_told_and_duplicates_nothing() {
    let (peers, outcomes, _running) = redis_restarts_mid_stream(false).await;
    // What was in flight when the state vanished fails with its reason; nothing else fails.
    for error in outcomes.iter().flatten() {
        assert_eq!(error.code(), "session_lost", "{error}");
    }
    let sources = ["a1", "a2", "b1", "b2"];
    for (i, peer) in peers.iter().enumerate() {
        assert!(
            peer.lost.load(Ordering::SeqCst) >= 1,
            "{} was told its session was lost",
            sources[i]
        );
        for source in sources.iter().filter(|s| **s != sources[i]) {
            let got = peer.from(source);
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "{} got {source}'s messages twice or out of order: {got:?}",
                sources[i]
            );
        }
    }
}

/// Reads a field of a source's session in Redis.
async fn session_field(redis: &Redis, source: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // The shard is not known here: look the key up by its pattern.
    let hex: String = source.bytes().map(|b| format!("{b:02x}")).collect();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("wsr:{{*}}:m:{hex}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let key = keys.first()?;
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_relay_whose_sessions_moved_on_cannot_deliver_or_write_when_it_wakes() {
    use futures_util::{SinkExt, StreamExt};
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let bob = Peer::connect(b.addr, "bob").await;
    // Alice's first connection, to relay a, from a raw client that stays open throughout.
    let url = format!("ws://{}/?source=alice&v=1", a.addr);
    let (mut old, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    old.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"~hello","v":1,"session":"alice-old-session","ack":0}"#,
    ))
    .await
    .unwrap();
    let welcome = old.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("~welcome"));

    // Relay a freezes; alice comes back through relay b.
    signal(&a.child, "STOP").await;
    let alice = Peer::connect(b.addr, "alice").await;
    for n in 0..20 {
        bob.client.send_to("alice", "n", n).await.unwrap();
    }
    alice.wait_for("bob", 20).await;

    // Relay a wakes: its connection of alice is fenced off. It delivers nothing more to the
    // old socket, and writes nothing to the session: alice's session is relay b's.
    signal(&a.child, "CONT").await;
    for n in 20..40 {
        bob.client.send_to("alice", "n", n).await.unwrap();
    }
    alice.wait_for("bob", 40).await;
    let mut old_got = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(message)) = old.next().await {
            match message {
                tokio_tungstenite::tungstenite::Message::Text(text) => old_got.push(text),
                tokio_tungstenite::tungstenite::Message::Close(frame) => {
                    return frame.map(|frame| u16::from(frame.code));
                }
                _ => {}
            }
        }
        None
    })
    .await
    .expect("the old connection ends");
    assert_eq!(closed, Some(4409), "closed as replaced");
    assert!(
        old_got.iter().all(|text| !text.contains("\"n\"")),
        "nothing of the moved session reached the old connection: {old_got:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alice.from("bob"), (0..40).collect::<Vec<u64>>());
    assert_eq!(
        session_field(&redis, "alice", "epoch").await.as_deref(),
        Some("2")
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_and_broadcasts_past_the_retention_are_told_to_their_clients() {
    let redis = Redis::start(false).await;
    let config = ServerConfig {
        redis: Some(redis.url()),
        session_grace: Duration::from_millis(800),
        room_retention: wsrelay_server::RoomRetention {
            entries: 10,
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let server = WebSocketServer::bind("127.0.0.1:0", config).await.unwrap();
    let addr = server.local_addr();
    let mut alice_events;
    let alice = {
        let builder = WebSocketClient::builder(format!("ws://{addr}"), "alice")
            .min_reconnection_delay(Duration::from_millis(50));
        alice_events = builder.subscribe();
        Peer::start(builder).await
    };
    let bob = Peer::connect(addr, "bob").await;

    // Alice leaves past her grace period, then comes back: her session is gone, and she is told.
    alice.client.close().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice.client.reconnect();
    let lost = loop {
        match tokio::time::timeout(PATIENCE, alice_events.recv())
            .await
            .unwrap()
        {
            Ok(Event::SessionLost { lost }) => break lost,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(lost, None, "the state is gone: how much is unknown");

    // Bob is away while the server broadcasts more than the log of everyone keeps: back, he
    // resumes, is told that messages were lost (how many), and gets every one still kept, in
    // order, once. Broadcasts are kept in the log, not in his mailbox, which never overflows.
    bob.client.close().await;
    let mut bob_events = bob.client.subscribe();
    for n in 0..400u64 {
        server.broadcast("n", &n, None).await.unwrap();
    }
    bob.client.reconnect();
    let (_, lost) = common::cluster::told_lost(&mut bob_events).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while (bob.from("").len() as u64) < 400 - lost {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} kept, {lost} lost",
            bob.from("").len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        bob.from(""),
        (lost..400).collect::<Vec<u64>>(),
        "the rest, once, in order"
    );
    assert!(
        lost > 0 && lost < 400 - 10,
        "retention 10 (trimmed approximately): {lost} lost"
    );
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_holds_everything_back_and_nothing_is_lost() {
    let redis = Redis::start(false).await;
    let config = ServerConfig {
        redis: Some(redis.url()),
        ..ServerConfig::default()
    };
    let server = WebSocketServer::bind("127.0.0.1:0", config).await.unwrap();
    let addr = server.local_addr();
    let alice = Peer::connect(addr, "alice").await;
    let bob = Peer::connect(addr, "bob").await;
    alice.client.send("n", 0).await.unwrap();
    bob.wait_for("alice", 1).await;
    assert!(server.stats().engine_reachable);

    // Redis stops answering (frozen): sends wait, unacknowledged, and the relay says so.
    let child = redis.child.as_ref().unwrap();
    signal(child, "STOP").await;
    let mut sends = JoinSet::new();
    for n in 1..=20 {
        sends.spawn(alice.client.send("n", n));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!server.stats().engine_reachable, "the relay knows");
    assert_eq!(sends.len(), 20, "nothing acknowledged meanwhile");
    assert_eq!(bob.from("alice"), [0], "nothing consumed meanwhile");

    // Redis is back: everything goes through, once.
    signal(child, "CONT").await;
    settled(sends).await;
    bob.wait_for("alice", 21).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bob.from("alice"), (0..=20).collect::<Vec<u64>>());
    assert!(server.stats().engine_reachable);
    assert_eq!(alice.lost.load(Ordering::SeqCst), 0);
    server.close().await;
}

/// Asks `GET /readyz` until it answers `status`; returns the body and how long that took.
async fn readiness(addr: SocketAddr, status: u16) -> (String, Duration) {
    let start = tokio::time::Instant::now();
    loop {
        let (answered, body) = common::http_get(addr, "/readyz").await;
        if answered == status {
            return (body, start.elapsed());
        }
        assert!(
            start.elapsed() < PATIENCE,
            "/readyz still answers {answered} ({body:?}), not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_frozen_killed_and_back() {
    let mut redis = Redis::start(false).await;
    let config = ServerConfig {
        redis: Some(redis.url()),
        ..ServerConfig::default()
    };
    let server = WebSocketServer::bind("127.0.0.1:0", config).await.unwrap();
    let addr = server.local_addr();
    // Ready once registered with Redis, with no client: the relay asks Redis by itself.
    readiness(addr, 200).await;
    assert_eq!(server.ready(), Ok(()));
    // Within a ping's period and deadline (1 s + 2 s) of each change, with room for a busy
    // machine; the relay keeps serving throughout.
    let prompt = Duration::from_secs(10);

    // Frozen: connections stay open, answers stop.
    let child = redis.child.as_ref().unwrap();
    signal(child, "STOP").await;
    let (body, took) = readiness(addr, 503).await;
    assert!(body.contains("Redis does not answer"), "{body:?}");
    assert!(took < prompt, "not ready after {took:?}");
    assert_eq!(server.ready(), Err("Redis does not answer".to_owned()));
    assert!(!server.stats().engine_reachable);
    assert_eq!(
        common::http_get(addr, "/healthz").await.0,
        200,
        "alive all the same"
    );
    signal(child, "CONT").await;
    let (_, took) = readiness(addr, 200).await;
    assert!(took < prompt, "ready again after {took:?}");

    // Killed: connections refused until it is started again on the same port.
    let mut child = redis.child.take().unwrap();
    signal(&child, "KILL").await;
    let _ = tokio::time::timeout(PATIENCE, child.wait()).await;
    let (_, took) = readiness(addr, 503).await;
    assert!(took < prompt, "not ready after {took:?}");
    redis.launch().await;
    readiness(addr, 200).await;
    assert!(server.stats().engine_reachable);
    server.close().await;
}
