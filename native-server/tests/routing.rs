//! Routing on the real server over loopback (port 0), pinned with a plain tokio-tungstenite
//! client: `send_to` and broadcasts, messages directed `to` a client or to an unknown one, the
//! server's handlers and its own requests to clients, responses between clients and who may
//! answer a request, the relay's own `relay:*` types (which a client may not send as the
//! relay), and the list of clients, a page at a time.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, nothing_before_marker, start, Client};
use serde_json::{json, Value};
use wsrelay_server::{Incoming, RequestError, ServerConfig};

#[tokio::test]
async fn send_to_reaches_only_that_client() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    assert_eq!(server.clients().await.unwrap(), ["alice", "bob"]);

    server
        .send_to("bob", "note", &json!({"x": 1}))
        .await
        .unwrap();
    // The server's own messages carry an id, so that a client's handler can answer them.
    assert_eq!(
        bob.recv().await,
        json!({"type": "note", "id": 1, "payload": {"x": 1}})
    );
    nothing_before_marker(&server, &mut alice, "alice").await;
    assert!(matches!(
        server.send_to("nobody", "note", &1).await,
        Err(wsrelay_server::SendError::UnknownTarget)
    ));
}

#[tokio::test]
async fn broadcast_excludes_the_sender_and_sets_source() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    let mut carol = Client::bare(addr, "carol").await;

    // The client's own `source` is ignored: the server sets the registered one.
    alice
        .send(r#"{"type":"chat","source":"mallory","payload":{"m":"hi"}}"#)
        .await;
    let expected = json!({"type": "chat", "source": "alice", "payload": {"m": "hi"}});
    assert_eq!(bob.recv().await, expected);
    assert_eq!(carol.recv().await, expected);
    nothing_before_marker(&server, &mut alice, "alice").await;

    // Server broadcasts, with and without exclusion.
    assert_eq!(
        server.broadcast("news", &"x", Some("bob")).await.unwrap(),
        2
    );
    assert_eq!(alice.recv().await["type"], "news");
    assert_eq!(carol.recv().await["type"], "news");
    nothing_before_marker(&server, &mut bob, "bob").await;
}

#[tokio::test]
async fn directed_messages_and_unknown_target() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let mut bob = Client::bare(addr, "bob").await;
    let mut carol = Client::bare(addr, "carol").await;

    alice
        .send(r#"{"type":"dm","id":1,"to":"bob","payload":"psst"}"#)
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "dm", "id": 1, "to": "bob", "source": "alice", "payload": "psst"})
    );
    alice.acked(1).await;
    nothing_before_marker(&server, &mut carol, "carol").await;

    // Reliable error naming the message, before the ack that covers it.
    alice.send(r#"{"type":"dm","id":2,"to":"nobody"}"#).await;
    let error = alice.recv().await;
    assert_eq!(error["type"], "~error");
    assert_eq!(error["code"], "unknown_target");
    assert_eq!(error["re"], 2);
    alice.acked(2).await;
}

#[tokio::test]
async fn server_handlers_answer_with_responses() {
    let server = start(config()).await;
    server.on("add", |msg: Incoming<(i64, i64)>| async move {
        Some(msg.payload.0 + msg.payload.1)
    });
    server.on(
        "whoami",
        |msg: Incoming<Value>| async move { Some(msg.source) },
    );
    server.on(
        "fail",
        |_: Incoming<Value>| async move { Err::<(), _>("boom") },
    );
    server.on("quiet", |_: Incoming<Value>| async move {});
    let addr = server.local_addr();
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let mut bob = Client::bare(addr, "bob").await;

    alice.send(r#"{"type":"add","id":1,"payload":[2,3]}"#).await;
    assert_eq!(
        alice.recv_app().await,
        json!({"type": "add", "re": 1, "payload": 5})
    );
    alice.send(r#"{"type":"whoami","id":2}"#).await;
    assert_eq!(
        alice.recv_app().await,
        json!({"type": "whoami", "re": 2, "payload": "alice"})
    );
    alice.send(r#"{"type":"fail","id":3}"#).await;
    let failed = alice.recv_app().await;
    assert_eq!(failed["re"], 3);
    assert_eq!(
        failed["error"],
        json!({"code": "handler_error", "message": "boom"})
    );
    alice
        .send(r#"{"type":"add","id":4,"payload":"not a pair"}"#)
        .await;
    let invalid = alice.recv_app().await;
    assert_eq!(invalid["re"], 4);
    assert_eq!(invalid["error"]["code"], "handler_error");
    alice.send(r#"{"type":"quiet","id":5}"#).await;
    alice.acked(5).await;
    nothing_before_marker(&server, &mut alice, "alice").await;
    // Handled types are not relayed.
    nothing_before_marker(&server, &mut bob, "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_a_senders_messages_in_order_and_survive_panics() {
    let server = start(config()).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    server.on("step", move |msg: Incoming<u64>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(msg.payload);
            // Earlier messages take longer: spawned concurrently, they would finish last.
            tokio::time::sleep(Duration::from_millis(20u64.saturating_sub(msg.payload))).await;
            Some(msg.payload)
        }
    });
    server.on("panic", |_: Incoming<Value>| async move {
        if true {
            panic!("handler bug");
        }
    });
    let (mut alice, _) = Client::session(server.local_addr(), "alice", "alice-session-1", 0).await;
    alice.send(r#"{"type":"panic","id":1}"#).await;
    for n in 0..20u64 {
        let id = n + 2;
        alice
            .send(&format!(r#"{{"type":"step","id":{id},"payload":{n}}}"#))
            .await;
    }
    let panicked = alice.recv_app().await;
    assert_eq!(panicked["re"], 1);
    assert_eq!(panicked["error"]["code"], "handler_error");
    for n in 0..20u64 {
        let response = alice.recv_app().await;
        assert_eq!(response["payload"], n, "responses in order: {response}");
    }
    assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn server_requests_await_the_client_response() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut bob = Client::bare(addr, "bob").await;

    let requester = server.clone();
    let pending = tokio::spawn(async move {
        requester
            .request::<_, Value>("bob", "get-time", &json!({"tz": "UTC"}), common::WAIT)
            .await
    });
    let request = bob.recv().await;
    assert_eq!(request["type"], "get-time");
    assert_eq!(request["payload"], json!({"tz": "UTC"}));
    let id = request["id"].as_u64().expect("a request carries an id");
    bob.send(&format!(
        r#"{{"type":"get-time","re":{id},"payload":{{"now":1764090000}}}}"#
    ))
    .await;
    assert_eq!(pending.await.unwrap().unwrap(), json!({"now": 1764090000}));

    let requester = server.clone();
    let failing = tokio::spawn(async move {
        requester
            .request::<_, Value>("bob", "x", &1, common::WAIT)
            .await
    });
    let id = bob.recv().await["id"].as_u64().unwrap();
    bob.send(&format!(
        r#"{{"type":"x","re":{id},"error":{{"code":"handler_error","message":"no"}}}}"#
    ))
    .await;
    match failing.await.unwrap() {
        Err(RequestError::Remote(error)) => assert_eq!(error.message, "no"),
        other => panic!("expected a remote error, got {other:?}"),
    }

    let timed_out = server
        .request::<_, Value>("bob", "ignored", &1, Duration::from_millis(50))
        .await;
    assert!(matches!(timed_out, Err(RequestError::Timeout)));
    assert!(matches!(
        server
            .request::<_, Value>("nobody", "x", &1, common::WAIT)
            .await,
        Err(RequestError::Send(_))
    ));
}

#[tokio::test]
async fn responses_between_clients_are_routed_by_to() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let (mut bob, _) = Client::session(addr, "bob", "bob-session-01", 0).await;

    alice.send(r#"{"type":"get-time","id":4,"to":"bob"}"#).await;
    let request = bob.recv_app().await;
    assert_eq!(request["source"], "alice");
    bob.send(r#"{"type":"get-time","id":9,"re":4,"to":"alice","payload":{"now":1}}"#)
        .await;
    assert_eq!(
        alice.recv_app().await,
        json!({"type": "get-time", "id": 9, "re": 4, "to": "alice", "source": "bob", "payload": {"now": 1}})
    );
}

#[tokio::test]
async fn clients_may_not_speak_for_the_relay() {
    let server = start(ServerConfig {
        presence: true,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut mallory, _) = Client::session(addr, "mallory", "mallory-session", 0).await;
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    mallory
        .send(r#"{"type":"relay:presence","id":1,"payload":{"joined":["admin"],"left":["alice"]}}"#)
        .await;
    let refused = reply(&mut mallory, 1).await;
    assert_eq!(refused["code"], "reserved_type", "{refused}");
    mallory.send(r#"{"type":"relay:clients","id":2}"#).await;
    let listed = reply(&mut mallory, 2).await;
    assert_eq!(
        listed["payload"],
        json!(["alice", "mallory"]),
        "the relay's own request works"
    );
    server.broadcast("marker", &1, None).await.unwrap();
    // Up to the marker, alice only saw the relay's own announcements.
    loop {
        let frame = alice.recv_app().await;
        if frame["type"] == "marker" {
            break;
        }
        assert!(
            frame.get("source").is_none(),
            "only from the relay: {frame}"
        );
        let names = frame["payload"]["joined"].as_array().unwrap();
        assert!(
            !names.contains(&json!("admin")),
            "no forged presence: {frame}"
        );
    }
}

/// The next frame that answers `re` (announcements and acks skipped).
async fn reply(client: &mut Client, re: u64) -> Value {
    loop {
        let frame = client.recv_app().await;
        if frame["re"] == re {
            return frame;
        }
    }
}

#[tokio::test]
async fn only_the_addressee_may_answer_a_request() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let (mut bob, _) = Client::session(addr, "bob", "bob-session-01", 0).await;
    let (mut mallory, _) = Client::session(addr, "mallory", "mallory-session", 0).await;
    alice
        .send(r#"{"type":"get-secret","id":7,"to":"bob","payload":null}"#)
        .await;
    alice.acked(7).await;
    assert_eq!(bob.recv_app().await["id"], 7);
    mallory
        .send(r#"{"type":"get-secret","id":1,"re":7,"to":"alice","payload":"forged"}"#)
        .await;
    let refused = mallory.recv_app().await;
    assert_eq!(refused["code"], "unexpected_response", "{refused}");
    bob.send(r#"{"type":"get-secret","id":1,"re":7,"to":"alice","payload":"bob's"}"#)
        .await;
    let answer = alice.recv_app().await;
    assert_eq!(
        (answer["source"].clone(), answer["payload"].clone()),
        (json!("bob"), json!("bob's")),
        "alice got bob's answer, and only it"
    );
}

#[tokio::test]
async fn the_list_of_clients_comes_a_page_at_a_time() {
    let server = start(ServerConfig {
        presence: true,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut crowd = Vec::new();
    for n in 0..1200 {
        let url = format!("ws://{addr}/?source=c{n:04}");
        crowd.push(tokio_tungstenite::connect_async(url).await.unwrap().0);
    }
    let (mut asker, _) = Client::session(addr, "zz-asker", "asker-session", 0).await;
    while server.clients().await.unwrap().len() < 1201 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    asker.send(r#"{"type":"relay:clients","id":1}"#).await;
    let first = loop {
        let frame = asker.recv_app().await;
        if frame["re"] == 1 {
            break frame;
        }
    };
    let first = first["payload"].as_array().unwrap().clone();
    assert_eq!(first.len(), 1000, "one page at most");
    let last = first.last().unwrap().as_str().unwrap();
    asker
        .send(&format!(
            r#"{{"type":"relay:clients","id":2,"payload":{{"after":"{last}"}}}}"#
        ))
        .await;
    let rest = loop {
        let frame = asker.recv_app().await;
        if frame["re"] == 2 {
            break frame;
        }
    };
    let rest = rest["payload"].as_array().unwrap();
    assert_eq!(rest.len(), 201, "the rest, asker included");
    assert_eq!(rest.last(), Some(&json!("zz-asker")));
    drop(crowd);
}
