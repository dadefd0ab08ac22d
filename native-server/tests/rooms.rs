//! Rooms on the real server over loopback (PROTOCOL.md section 14), pinned with a plain
//! tokio-tungstenite client: joining and leaving answered once the server has it, a room's
//! messages reaching its members only, refusals (`not_member`, a room name that is not one,
//! `forbidden` by the token's `rooms` claim, both with the library and with the relay binary),
//! the server's own room API, presence per room, membership kept by a resumed session and gone
//! with a lost one, and a bystander in a quiet room unaffected by a burst in a busy one.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{config, nothing_before_marker, spawn_relay, start, Client};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use wsrelay_server::{JwtAuth, SendError, ServerConfig, WebSocketServer};

const SECRET: &str = "a secret of at least thirty-two bytes for rooms";

/// Sends `relay:join` (or `relay:leave`) of `room` as message `id` and returns the answer.
async fn membership(client: &mut Client, kind: &str, id: u64, room: &str) -> Value {
    let frame = json!({"type": kind, "id": id, "request": true, "payload": {"room": room}});
    client.send(&frame.to_string()).await;
    client.recv_app().await
}

async fn join(client: &mut Client, id: u64, room: &str) {
    let answer = membership(client, "relay:join", id, room).await;
    assert_eq!(
        answer,
        json!({"type": "relay:join", "re": id, "room": room}),
        "joined"
    );
}

/// A session named `source` (its token made from it).
async fn session(addr: SocketAddr, source: &str) -> Client {
    Client::session(addr, source, &format!("{source}-session"), 0)
        .await
        .0
}

#[tokio::test]
async fn a_room_message_reaches_its_other_members_only() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = session(addr, "alice").await;
    let mut bob = session(addr, "bob").await;
    let mut carol = session(addr, "carol").await;
    join(&mut alice, 1, "general").await;
    join(&mut bob, 1, "general").await;
    join(&mut carol, 1, "random").await;

    alice
        .send(r#"{"type":"chat","id":2,"room":"general","payload":"hi"}"#)
        .await;
    alice.acked(2).await;
    assert_eq!(
        bob.recv_app().await,
        json!({"type": "chat", "id": 2, "source": "alice", "room": "general", "payload": "hi"})
    );
    // Not to its sender, nor to anyone outside the room.
    nothing_before_marker(&server, &mut alice, "alice").await;
    nothing_before_marker(&server, &mut carol, "carol").await;

    // A message to a room its sender is not in is refused before its acknowledgement.
    carol
        .send(r#"{"type":"chat","id":2,"room":"general","payload":"let me in"}"#)
        .await;
    let refused = carol.recv_app().await;
    assert_eq!(refused["type"], "~error");
    assert_eq!(refused["code"], "not_member");
    assert_eq!(refused["re"], 2);
    carol.acked(2).await;
    nothing_before_marker(&server, &mut bob, "bob").await;

    // Left: nothing more from the room.
    let left = membership(&mut bob, "relay:leave", 2, "general").await;
    assert_eq!(
        left,
        json!({"type": "relay:leave", "re": 2, "room": "general"})
    );
    alice
        .send(r#"{"type":"chat","id":3,"room":"general","payload":"anyone?"}"#)
        .await;
    alice.acked(3).await;
    nothing_before_marker(&server, &mut bob, "bob").await;
    assert_eq!(server.members("general").await.unwrap(), ["alice"]);
    assert_eq!(server.members("random").await.unwrap(), ["carol"]);
    assert!(server.members("nowhere").await.unwrap().is_empty());
}

#[tokio::test]
async fn frames_that_misuse_rooms_are_refused_with_a_code() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = session(addr, "alice").await;
    let _bob = session(addr, "bob").await;
    let long = format!(r#"{{"type":"chat","id":8,"room":"{}"}}"#, "r".repeat(129));
    let cases = [
        (
            r#"{"type":"relay:join","id":1,"payload":{"room":""}}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"relay:join","id":2,"payload":{"room":"a\u0001b"}}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"relay:join","id":3,"payload":"general"}"#,
            "invalid_frame",
        ),
        (r#"{"type":"relay:join","id":4}"#, "invalid_frame"),
        (
            r#"{"type":"relay:join","id":5,"to":"bob","payload":{"room":"x"}}"#,
            "reserved_type",
        ),
        (
            r#"{"type":"chat","id":6,"room":"x","to":"bob","payload":1}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"chat","id":7,"room":7,"payload":1}"#,
            "invalid_frame",
        ),
        (long.as_str(), "invalid_frame"),
    ];
    for (frame, code) in cases {
        alice.send(frame).await;
        let refused = alice.recv_app().await;
        assert_eq!(refused["type"], "~error", "{frame}: {refused}");
        assert_eq!(refused["code"], code, "{frame}: {refused}");
    }
    // The connection carries on.
    join(&mut alice, 9, "general").await;
}

#[tokio::test]
async fn the_server_joins_sends_to_and_lists_rooms() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    let mut carol = Client::bare(addr, "carol").await;
    server.join("alice", "team").await.unwrap();
    server.join("bob", "team").await.unwrap();
    assert!(matches!(
        server.join("nobody", "team").await,
        Err(SendError::UnknownTarget)
    ));
    assert!(matches!(
        server.join("alice", "").await,
        Err(SendError::InvalidRoom(_))
    ));
    assert_eq!(server.members("team").await.unwrap(), ["alice", "bob"]);

    let sent = server
        .broadcast_to("team", "standup", &json!({"at": 10}), Some("bob"))
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let got = alice.recv().await;
    assert_eq!(got["type"], "standup");
    assert_eq!(got["room"], "team");
    assert_eq!(got["payload"], json!({"at": 10}));
    assert!(got.get("source").is_none(), "from the server: {got}");
    nothing_before_marker(&server, &mut bob, "bob").await;
    nothing_before_marker(&server, &mut carol, "carol").await;

    assert!(server.leave("bob", "team").await.unwrap());
    assert!(
        !server.leave("bob", "team").await.unwrap(),
        "not a member any more"
    );
    assert_eq!(server.members("team").await.unwrap(), ["alice"]);
    // A bare client's membership ends with its connection.
    drop(alice);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.members("team").await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "alice still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn members_and_presence_per_room() {
    let server = start(ServerConfig {
        presence: true,
        presence_interval: Duration::from_millis(50),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut alice = session(addr, "alice").await;
    let mut carol = session(addr, "carol").await;
    join(&mut alice, 1, "general").await;

    let mut bob = session(addr, "bob").await;
    join(&mut bob, 1, "general").await;
    // Alice hears of bob in the room's presence: the room is in the envelope.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no presence of bob in general");
        let frame = alice.recv_app().await;
        if frame["type"] == "relay:presence" && frame["room"] == "general" {
            let joined = frame["payload"]["joined"].as_array().unwrap();
            if joined.contains(&json!("bob")) {
                break;
            }
        }
    }

    // The list of a room's members is for its members.
    bob.send(r#"{"type":"relay:clients","id":2,"request":true,"payload":{"room":"general"}}"#)
        .await;
    let list = loop {
        let frame = bob.recv_app().await;
        if frame["re"] == 2 {
            break frame;
        }
    };
    assert_eq!(list["payload"], json!(["alice", "bob"]), "{list}");
    carol
        .send(r#"{"type":"relay:clients","id":1,"request":true,"payload":{"room":"general"}}"#)
        .await;
    let refused = loop {
        let frame = carol.recv_app().await;
        if frame["re"] == 1 {
            break frame;
        }
    };
    assert_eq!(refused["error"]["code"], "not_member", "{refused}");
    // Carol hears nothing of the room's presence: everything she gets is about everyone.
    server.send_to("carol", "marker", &()).await.unwrap();
    loop {
        let frame = carol.recv_app().await;
        assert!(frame.get("room").is_none(), "carol got {frame}");
        if frame["type"] == "marker" {
            break;
        }
    }
}

#[tokio::test]
async fn membership_belongs_to_the_session() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, welcome) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let mut bob = session(addr, "bob").await;
    join(&mut alice, 1, "general").await;
    join(&mut bob, 1, "general").await;
    // Alice's connection drops; her session is parked, still a member.
    drop(alice);
    bob.send(r#"{"type":"chat","id":2,"room":"general","payload":"while you were away"}"#)
        .await;
    bob.acked(2).await;
    // She resumes (she had received one frame: the join's answer) and gets what she missed.
    let (mut alice, welcome) =
        Client::resume(addr, "alice", "alice-session-1", 1, Some(&welcome["sid"])).await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    let missed = alice.recv_app().await;
    assert_eq!(missed["payload"], "while you were away");
    assert_eq!(missed["room"], "general");
    // Her session goes (another token: a new session): its rooms go with it.
    drop(alice);
    let (mut alice, welcome) = Client::session(addr, "alice", "alice-session-2", 0).await;
    assert_eq!(welcome["resumed"], false);
    alice
        .send(r#"{"type":"chat","id":1,"room":"general","payload":"still here?"}"#)
        .await;
    assert_eq!(alice.recv_app().await["code"], "not_member");
    assert_eq!(server.members("general").await.unwrap(), ["bob"]);
}

#[tokio::test]
async fn a_bystander_in_a_quiet_room_is_unaffected_by_a_burst_in_a_busy_one() {
    // A small backlog window: the busy room's reader that does not read holds its senders
    // back after a few dozen frames.
    let server = start(ServerConfig {
        backlog_window: 16 << 10,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut loud = session(addr, "loud").await;
    let mut sleeper = session(addr, "sleeper").await;
    let mut talker = session(addr, "talker").await;
    let mut listener = session(addr, "listener").await;
    join(&mut loud, 1, "busy").await;
    join(&mut sleeper, 1, "busy").await;
    join(&mut talker, 1, "quiet").await;
    join(&mut listener, 1, "quiet").await;

    // The burst: far more than the window, to a member that reads nothing.
    let filler = "x".repeat(1000);
    for id in 2..200u64 {
        loud.send(&format!(
            r#"{{"type":"burst","id":{id},"room":"busy","payload":"{filler}"}}"#
        ))
        .await;
    }
    // Meanwhile the quiet room talks, promptly.
    for n in 0..20u64 {
        let started = Instant::now();
        talker
            .send(&format!(
                r#"{{"type":"chat","id":{},"room":"quiet","payload":{n}}}"#,
                n + 2
            ))
            .await;
        let got = listener.recv_app().await;
        assert_eq!(got["payload"], n);
        // Held back, it would wait for ever: any bound far under the test's patience shows
        // it was not (a loaded machine may take a moment).
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the quiet room waited {:?}",
            started.elapsed()
        );
    }
    // The busy room's sender is held back (flow control), not its frames lost: the sleeper
    // wakes up and reads every one, in order, acknowledging as it goes (its frame number is
    // the burst's id: its first frame was its join's answer).
    for id in 2..200u64 {
        let got = sleeper.recv_app().await;
        assert_eq!(got["id"], id, "{got}");
        sleeper
            .send(&format!(r#"{{"type":"~ack","ack":{id}}}"#))
            .await;
    }
}

/// A token for `sub` with `rooms` as its `rooms` claim (absent when `None`).
fn token(sub: &str, rooms: Option<Value>) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let mut claims = json!({"sub": sub, "exp": exp});
    if let Some(rooms) = rooms {
        claims["rooms"] = rooms;
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Joins of `rooms` by `source`, whose token claims `claim`: each one's answer type or error.
async fn joins(
    addr: SocketAddr,
    source: &str,
    claim: Option<Value>,
    rooms: &[&str],
) -> Vec<String> {
    let path = format!("/?token={}&v=1", token(source, claim));
    let mut client = Client::open(addr, &path).await;
    let hello = format!(r#"{{"type":"~hello","v":1,"session":"{source}-session","ack":0}}"#);
    client.send(&hello).await;
    assert_eq!(client.recv().await["type"], "~welcome");
    let mut outcomes = Vec::new();
    for (id, room) in (1..).zip(rooms) {
        let answer = membership(&mut client, "relay:join", id, room).await;
        outcomes.push(match answer["type"].as_str() {
            Some("~error") => answer["code"].as_str().unwrap().to_owned(),
            _ => "joined".to_owned(),
        });
    }
    outcomes
}

#[tokio::test]
async fn a_tokens_rooms_claim_says_which_rooms_it_may_join() {
    let auth = JwtAuth::hs256(SECRET.as_bytes());
    let server = WebSocketServer::builder(config())
        .authenticate(move |request| auth.verify(request))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let claim = json!(["lobby", "team-7/*"]);
    assert_eq!(
        joins(
            addr,
            "alice",
            Some(claim),
            &["lobby", "team-7/chat", "team-8/chat", "lobby2"]
        )
        .await,
        ["joined", "joined", "forbidden", "forbidden"]
    );
    // Without the claim, no room at all.
    assert_eq!(joins(addr, "bob", None, &["lobby"]).await, ["forbidden"]);
}

#[tokio::test]
async fn the_relay_binary_restricts_joins_only_with_a_secret() {
    let (_open, addr) = spawn_relay(&["--port", "0"], Duration::from_secs(10)).await;
    let mut anyone = session(addr, "anyone").await;
    join(&mut anyone, 1, "any-room").await;

    let (_secured, addr) = spawn_relay(
        &["--port", "0", "--auth-secret", SECRET],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        joins(addr, "carol", Some(json!(["lobby"])), &["lobby", "staff"]).await,
        ["joined", "forbidden"]
    );
}
