//! Rooms across relays on one Redis (PROTOCOL.md section 14): real `redis-server` and
//! `wsrelay-server` processes on loopback, native wsrelay clients. Joining, leaving, sending
//! to a room and listing its members span the relays; a relay killed (SIGKILL) while clients
//! send numbered messages to several rooms loses nothing, duplicates nothing and mixes no
//! rooms up.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Redis, Relay, PATIENCE};
use tokio::task::JoinSet;
use wsrelay::{Incoming, WebSocketClient};

/// What a peer received: (sender, room, number), in arrival order.
type Got = Arc<Mutex<Vec<(String, String, u64)>>>;

/// A native client with fast reconnects, recording the numbered messages it receives.
struct Peer {
    client: WebSocketClient,
    got: Got,
    lost: Arc<AtomicU64>,
}

impl Peer {
    async fn connect(addr: SocketAddr, source: &str) -> Peer {
        let builder = WebSocketClient::builder(format!("ws://{addr}"), source)
            .min_reconnection_delay(Duration::from_millis(50))
            .max_reconnection_delay(Duration::from_millis(500));
        let events = builder.subscribe();
        let client = builder.build().unwrap();
        let got: Got = Arc::default();
        let record = Arc::clone(&got);
        // Called in arrival order: recorded in the call.
        client.on("n", move |m: Incoming<u64>| {
            let sender = m.source.unwrap_or_default();
            let room = m.room.unwrap_or_default();
            record.lock().unwrap().push((sender, room, m.payload));
            async {}
        });
        let lost = common::cluster::opened_counting_losses(events).await;
        Peer { client, got, lost }
    }

    /// The numbers received from `source` in `room`, in arrival order.
    fn from(&self, source: &str, room: &str) -> Vec<u64> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(from, at, _)| from == source && at == room)
            .map(|(.., n)| *n)
            .collect()
    }

    async fn wait_for(&self, source: &str, room: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.from(source, room).len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} from {source} in {room}: {:?}",
                self.from(source, room).len(),
                self.from(source, room)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_the_relays() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let alice = Peer::connect(a.addr, "alice").await;
    let bob = Peer::connect(b.addr, "bob").await;
    let carol = Peer::connect(a.addr, "carol").await;
    alice.client.join("general").await.unwrap();
    bob.client.join("general").await.unwrap();
    carol.client.join("random").await.unwrap();

    // To the room, across relays, both ways; nobody outside it hears.
    alice.client.send_to_room("general", "n", 1).await.unwrap();
    bob.wait_for("alice", "general", 1).await;
    bob.client.send_to_room("general", "n", 2).await.unwrap();
    alice.wait_for("bob", "general", 1).await;
    carol.client.send_to_room("random", "n", 3).await.unwrap();
    // Who is in the room, across relays.
    let members: Vec<String> = carol
        .client
        .request("relay:clients", serde_json::json!({"room": "random"}), None)
        .await
        .unwrap();
    assert_eq!(members, ["carol"]);
    let members: Vec<String> = alice
        .client
        .request(
            "relay:clients",
            serde_json::json!({"room": "general"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(members, ["alice", "bob"]);
    // Not a member: refused, on either relay.
    let error = carol
        .client
        .send_to_room("general", "n", 4)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "not_member");
    // Bob leaves: nothing more reaches him.
    bob.client.leave("general").await.unwrap();
    alice.client.send_to_room("general", "n", 5).await.unwrap();
    carol.client.send_to_room("random", "n", 6).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bob.from("alice", "general"), [1]);
    assert!(
        carol.got.lock().unwrap().is_empty(),
        "carol is alone in random"
    );
    assert!(alice.from("carol", "random").is_empty());
    assert_eq!(alice.lost.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_belongs_to_the_session_across_relays() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let bob = Peer::connect(b.addr, "bob").await;
    bob.client.join("general").await.unwrap();
    let alice = Peer::connect(a.addr, "alice").await;
    alice.client.join("general").await.unwrap();
    // Alice comes back as a new client object, on the other relay: a new session (another
    // token), which is in no room; her old session left its rooms as the new one opened.
    alice.client.close().await;
    let alice = Peer::connect(b.addr, "alice").await;
    bob.client.send_to_room("general", "n", 1).await.unwrap();
    let error = alice
        .client
        .send_to_room("general", "n", 2)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "not_member", "a fresh session is in no room");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alice.from("bob", "general").is_empty());
    let members: Vec<String> = bob
        .client
        .request(
            "relay:clients",
            serde_json::json!({"room": "general"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(members, ["bob"], "the old session left with its rooms");
}

/// Two rooms over six clients, three on each relay; a2 and b2 are in both.
const RED: [&str; 4] = ["a1", "a2", "b1", "b2"];
const BLUE: [&str; 4] = ["a2", "a3", "b2", "b3"];

fn rooms_of(source: &str) -> Vec<&'static str> {
    let mut rooms = Vec::new();
    if RED.contains(&source) {
        rooms.push("red");
    }
    if BLUE.contains(&source) {
        rooms.push("blue");
    }
    rooms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_while_rooms_stream_loses_duplicates_and_mixes_up_nothing() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let a_addr = a.addr;
    let sources = ["a1", "a2", "a3", "b1", "b2", "b3"];
    let mut peers = Vec::new();
    for source in sources {
        let addr = if source.starts_with('a') {
            a.addr
        } else {
            b.addr
        };
        let peer = Peer::connect(addr, source).await;
        for room in rooms_of(source) {
            peer.client.join(room).await.unwrap();
        }
        peers.push(peer);
    }
    let count = 120u64;
    let sending = async {
        let mut sends = JoinSet::new();
        for n in 0..count {
            for (peer, source) in peers.iter().zip(sources) {
                for room in rooms_of(source) {
                    sends.spawn(peer.client.send_to_room(room, "n", n));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sends
    };
    let killing = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (redis_url, node, port) = a.kill().await;
        Relay::start_on(&redis_url, &node, port).await
    };
    let (mut sends, restarted) = tokio::join!(sending, killing);
    assert_eq!(restarted.addr, a_addr);
    // Every send settles, and none fails.
    let failed = tokio::time::timeout(PATIENCE * 2, async {
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
    assert!(failed.is_empty(), "sends failed: {failed:?}");

    // Every member got every other member's numbers in each shared room, once, in order;
    // nothing from a room it is not in.
    let expected: Vec<u64> = (0..count).collect();
    for (peer, me) in peers.iter().zip(sources) {
        for room in rooms_of(me) {
            for other in sources {
                if other != me && rooms_of(other).contains(&room) {
                    peer.wait_for(other, room, expected.len()).await;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (peer, me) in peers.iter().zip(sources) {
        let mine = rooms_of(me);
        for (from, room, _) in peer.got.lock().unwrap().iter() {
            assert!(
                mine.contains(&room.as_str()),
                "{me} got {from}'s message in {room}"
            );
        }
        for room in &mine {
            for other in sources {
                if other != me && rooms_of(other).contains(room) {
                    assert_eq!(
                        peer.from(other, room),
                        expected,
                        "{me} from {other} in {room}"
                    );
                }
            }
        }
        assert_eq!(
            peer.lost.load(Ordering::SeqCst),
            0,
            "{me}: a session was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_made_while_reconnecting_take_effect_once_back() {
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let bob = Peer::connect(b.addr, "bob").await;
    bob.client.join("late").await.unwrap();
    bob.client.join("red").await.unwrap();
    let alice = Peer::connect(a.addr, "alice").await;
    alice.client.join("red").await.unwrap();
    // Alice's relay dies; while her client reconnects she joins one room and leaves another.
    let (redis_url, node, port) = a.kill().await;
    let alice = Arc::new(alice);
    let joining = {
        let alice = Arc::clone(&alice);
        tokio::spawn(async move { alice.client.join("late").await })
    };
    let leaving = {
        let alice = Arc::clone(&alice);
        tokio::spawn(async move { alice.client.leave("red").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _a = Relay::start_on(&redis_url, &node, port).await;
    tokio::time::timeout(PATIENCE, joining)
        .await
        .expect("the join resolves once back")
        .unwrap()
        .unwrap();
    tokio::time::timeout(PATIENCE, leaving)
        .await
        .expect("the leave resolves once back")
        .unwrap()
        .unwrap();
    assert_eq!(alice.lost.load(Ordering::SeqCst), 0, "her session went on");
    for n in 0..20 {
        bob.client.send_to_room("late", "n", n).await.unwrap();
        bob.client.send_to_room("red", "n", n).await.unwrap();
    }
    alice.wait_for("bob", "late", 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alice.from("bob", "late"), (0..20).collect::<Vec<u64>>());
    assert!(alice.from("bob", "red").is_empty(), "she left red");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_place_fell_off_the_rooms_log_is_told_how_much_it_lost() {
    let redis = Redis::start(false).await;
    let flags = ["--room-retention", "10"];
    let a = Relay::start_with(&redis.url(), "a", 0, None, &flags).await;
    let b = Relay::start_with(&redis.url(), "b", 0, None, &flags).await;
    let bob = Peer::connect(b.addr, "bob").await;
    bob.client.join("red").await.unwrap();
    let alice = Peer::connect(a.addr, "alice").await;
    alice.client.join("red").await.unwrap();
    bob.client.send_to_room("red", "n", 0).await.unwrap();
    alice.wait_for("bob", "red", 1).await;
    // Alice is away (her session parked) while far more than the log keeps is sent.
    alice.client.close().await;
    let mut errors = alice.client.subscribe();
    for n in 1..=400u64 {
        bob.client.send_to_room("red", "n", n).await.unwrap();
    }
    alice.client.reconnect();
    let (message, lost) = common::cluster::told_lost(&mut errors).await;
    assert!(message.contains("room \"red\""), "{message}");
    let kept = 400 - lost;
    alice.wait_for("bob", "red", 1 + kept as usize).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut expected = vec![0];
    expected.extend(lost + 1..=400);
    assert_eq!(
        alice.from("bob", "red"),
        expected,
        "the rest, once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bystander_is_unaffected_by_a_burst_that_a_slow_member_holds_back() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let redis = Redis::start(false).await;
    let a = Relay::start(&redis.url(), "a").await;
    let b = Relay::start(&redis.url(), "b").await;
    let flooder = Peer::connect(a.addr, "flooder").await;
    flooder.client.join("busy").await.unwrap();
    let quiet_sender = Peer::connect(a.addr, "quiet-a").await;
    quiet_sender.client.join("quiet").await.unwrap();
    let quiet_receiver = Peer::connect(b.addr, "quiet-b").await;
    quiet_receiver.client.join("quiet").await.unwrap();
    // A member of "busy" that joins and then never reads: it falls behind at once. (Relay b
    // is ready: quiet-b's client opened on it.)
    let url = format!("ws://{}/?source=slow&v=1", b.addr);
    let (mut slow, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = r#"{"type":"~hello","v":1,"session":"slow-session-0123456789","ack":0}"#;
    slow.send(Message::text(hello)).await.unwrap();
    let join = r#"{"type":"relay:join","id":1,"request":true,"payload":{"room":"busy"}}"#;
    slow.send(Message::text(join)).await.unwrap();
    let joined = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(message)) = slow.next().await {
            if message
                .to_text()
                .is_ok_and(|text| text.contains(r#""re":1"#))
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(joined, Ok(true), "the slow member joined");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The flood: 1 KiB messages, far past what the slow member's window lets through.
    let big = "x".repeat(1024);
    let flood = {
        let client = flooder.client.clone();
        tokio::spawn(async move {
            let mut sends = JoinSet::new();
            for _ in 0..5000 {
                sends.spawn(client.send_to_room("busy", "big", big.clone()));
            }
            sends
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    for n in 0..20 {
        quiet_sender
            .client
            .send_to_room("quiet", "n", n)
            .await
            .unwrap();
    }
    quiet_receiver.wait_for("quiet-a", "quiet", 20).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the quiet room waited for the busy one: {took:?}"
    );
    // The flood is held back, not lost: it waits for the slow member.
    let mut sends = flood.await.unwrap();
    let settled_now = std::iter::from_fn(|| sends.try_join_next()).count();
    assert!(
        settled_now < 5000,
        "nothing held back: the slow member never slowed the room"
    );
    sends.abort_all();
    drop(slow);
}
