//! Wire behaviour of the server library, pinned with a plain tokio-tungstenite client over
//! loopback (port 0).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, disconnected, nothing_before_marker, start, watch_disconnects, Client};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use wsrelay_server::{
    DisconnectReason, Incoming, OnDuplicate, Rejection, RequestError, ServerConfig, StatusCode,
    WebSocketServer,
};

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

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_dropped() {
    let settings = ServerConfig {
        ping_interval: Duration::from_millis(100),
        ..config()
    };
    let (builder, mut gone) = watch_disconnects(WebSocketServer::builder(settings));
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    // `silent` never polls its socket again, so it answers no ping.
    let _silent = Client::bare(addr, "silent").await;
    let mut alive = Client::bare(addr, "alive").await;
    let reader = tokio::spawn(async move {
        // Reading answers pings; the marker proves the connection survived.
        loop {
            if alive.recv().await["type"] == "marker" {
                return alive;
            }
        }
    });
    assert_eq!(
        disconnected(&mut gone, "silent").await,
        DisconnectReason::Stale
    );
    assert_eq!(server.stats().stale, 1);
    // Several ping periods later `alive` is still there.
    server.send_to("alive", "marker", &1).await.unwrap();
    let _alive = reader.await.unwrap();
    assert_eq!(server.clients().await.unwrap(), ["alive"]);
}

#[tokio::test]
async fn invalid_input_is_answered_and_harms_nobody() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;

    let deep = format!(
        r#"{{"type":"x","payload":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let cases = [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_frame"),
        (r#"{"payload":1}"#, "invalid_frame"),
        (r#"{"type":5}"#, "invalid_frame"),
        (r#"{"type":"a","type":"b"}"#, "invalid_frame"),
        (deep.as_str(), "invalid_json"),
        (r#"{"type":"\ud800"}"#, "invalid_frame"),
        (r#"{"type":"a","payload":tru}"#, "invalid_json"),
        (r#"{"type":"~nope"}"#, "reserved_type"),
    ];
    for (text, code) in cases {
        alice.send(text).await;
        let error = alice.recv().await;
        assert_eq!(error["type"], "~error", "{text}");
        assert_eq!(error["code"], code, "{text}: {error}");
    }
    alice
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            0xff, 0, 1,
        ]))
        .await
        .unwrap();
    assert_eq!(alice.recv().await["code"], "binary_frame");
    // An invalid frame that has an id is named by it.
    alice.send(r#"{"type":"~bad","id":12}"#).await;
    assert_eq!(alice.recv().await["re"], 12);

    // The connection carries on, and bob saw none of it.
    alice
        .send(r#"{"type":"chat","payload":"still here"}"#)
        .await;
    assert_eq!(bob.recv().await["payload"], "still here");
    assert_eq!(server.stats().invalid_frames, cases.len() as u64 + 2);
}

use futures_util::SinkExt;

#[tokio::test]
async fn invalid_utf8_fails_only_that_connection() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    alice.send_invalid_utf8().await;
    // RFC 6455 section 8.1: invalid UTF-8 in a text frame fails the connection (1007),
    // after an error frame saying why.
    let (code, texts) = alice.closed().await;
    assert_eq!(code, Some(1007));
    assert_eq!(texts[0]["code"], "invalid_json");
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

#[tokio::test]
async fn oversize_messages() {
    let server = start(ServerConfig {
        max_message_size: 1024,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    alice.send(r#"{"type":"chat","payload":"small"}"#).await;
    assert_eq!(bob.recv().await["payload"], "small");

    // Over the limit: refused from the header, told why, closed with 1009.
    for size in [1500, 5000] {
        let mut alice = Client::bare(addr, "alice").await;
        let big = format!(r#"{{"type":"x","payload":"{}"}}"#, "a".repeat(size));
        alice.send(&big).await;
        let (code, last_words) = alice.closed().await;
        assert_eq!(code, Some(1009));
        assert_eq!(
            last_words.last().map(|e| &e["code"]),
            Some(&"too_large".into())
        );
    }
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off() {
    let settings = ServerConfig {
        backlog_window: 64 * 1024,
        max_backlog: 512 * 1024,
        slow_consumer_timeout: Duration::from_millis(300),
        ..config()
    };
    let (builder, mut gone) = watch_disconnects(WebSocketServer::builder(settings));
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    // A tiny receive buffer, and the client never reads after registering.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let url = format!("ws://{addr}/?source=slow");
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let mut slow = Client { ws };
    slow.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(slow.recv().await["type"], "~pong");
    let mut fast = Client::bare(addr, "fast").await;

    let chunk = "x".repeat(64 * 1024);
    let producer = server.clone();
    let flood = tokio::spawn(async move {
        for _ in 0..10_000 {
            if producer.send_to("slow", "big", &chunk).await.is_err() {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    });
    assert_eq!(
        disconnected(&mut gone, "slow").await,
        DisconnectReason::SlowConsumer
    );
    assert!(flood.await.unwrap(), "the flood hit the bound");
    assert_eq!(server.stats().slow_consumers, 1);
    assert!(!server.is_connected("slow").await.unwrap());
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(fast.recv().await["type"], "still");
}

#[tokio::test]
async fn graceful_close_delivers_queued_frames_then_1001() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    for i in 0..100 {
        server.send_to("alice", "n", &i).await.unwrap();
    }
    let closing = server.clone();
    let close = tokio::spawn(async move { closing.close().await });
    let (code, texts) = alice.closed().await;
    assert_eq!(code, Some(1001));
    let received: Vec<_> = texts
        .iter()
        .map(|t| t["payload"].as_i64().unwrap())
        .collect();
    assert_eq!(received, (0..100).collect::<Vec<_>>());
    tokio::time::timeout(common::WAIT, close)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{addr}/?source=late"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn authentication_origin_and_connection_limits() {
    let settings = ServerConfig {
        allowed_origins: vec!["https://app.example".into()],
        max_connections: 2,
        ..config()
    };
    let server = WebSocketServer::builder(settings)
        .authenticate(|request| match request.query_param("token")?.as_deref() {
            Some("secret") => Ok(format!(
                "user-{}",
                request.query_param("name")?.unwrap_or_default()
            )),
            _ => Err(Rejection::new(StatusCode::UNAUTHORIZED, "bad token")),
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = |query: &str| {
        format!("ws://{addr}/ws?{query}")
            .into_client_request()
            .unwrap()
    };
    let status = |request| async move { common::upgrade_outcome(request).await.0 };
    // Refused for good: the upgrade is accepted and closed at once with the reason, which a
    // browser can read (it cannot read an HTTP status).
    assert_eq!(status(request("token=wrong")).await, 4401);

    let mut foreign = request("token=secret&name=x");
    foreign
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(status(foreign).await, 4403);

    let mut a = Client::open(addr, "/ws?token=secret&name=a").await;
    let mut b = Client::open(addr, "/?token=secret&name=b").await;
    assert_eq!(status(request("token=secret&name=c")).await, 503);
    a.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(a.recv().await["type"], "~pong");
    b.send(r#"{"type":"hi","source":"forged"}"#).await;
    assert_eq!(
        a.recv().await["source"],
        "user-b",
        "the identity comes from the hook"
    );
    assert_eq!(server.stats().rejected, 3);
}

#[tokio::test]
async fn an_unsupported_version_is_refused_with_1002() {
    let server = start(config()).await;
    let mut client = Client::open(server.local_addr(), "/?source=alice").await;
    client
        .send(r#"{"type":"~hello","v":2,"session":"abcdefgh","ack":0}"#)
        .await;
    let (code, texts) = client.closed().await;
    assert_eq!(code, Some(1002));
    assert_eq!(texts[0]["code"], "unsupported_version");
}

#[tokio::test]
async fn messages_much_larger_than_the_read_buffer_arrive_whole() {
    // The default read buffer is 1 KiB: a frame of 900 KiB (under the 1 MiB limit) takes
    // hundreds of reads and must come out in one piece, through a handler and relayed.
    let server = start(config()).await;
    server.on(
        "echo",
        |msg: Incoming<String>| async move { Some(msg.payload) },
    );
    let addr = server.local_addr();
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let mut bob = Client::bare(addr, "bob").await;
    let big: String = (0..900 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    alice
        .send(&format!(r#"{{"type":"echo","id":1,"payload":"{big}"}}"#))
        .await;
    let echoed = alice.recv_app().await;
    assert_eq!(echoed["re"], 1);
    assert_eq!(echoed["payload"].as_str(), Some(big.as_str()));
    alice
        .send(&format!(
            r#"{{"type":"big","id":2,"to":"bob","payload":"{big}"}}"#
        ))
        .await;
    let relayed = bob.recv().await;
    assert_eq!(relayed["source"], "alice");
    assert_eq!(relayed["payload"].as_str(), Some(big.as_str()));
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
