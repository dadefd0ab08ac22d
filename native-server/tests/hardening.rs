//! What a hostile trial of the relay found, each pinned on the real server over loopback:
//! connections that never upgrade, oversized frames, identities that are not text, clients
//! speaking for the relay or answering what was not asked of them, unbounded lists, limits
//! per address and in total, the rate limit with a bystander, the HTTP endpoints, and the
//! WebSocket layer's pings, fragments and close frames.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{config, get, http, metric, start, upgrade_status, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsrelay_server::{Incoming, RateLimit, ServerConfig, WebSocketServer};

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 before the close, say
        }
    }
}

#[tokio::test]
async fn connections_that_never_upgrade_are_cut_after_the_handshake_timeout() {
    let server = start(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /?source=x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "idle"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(3)).await,
        "half a request"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A keep-alive connection that goes quiet after a request is cut the same way.
    let mut keep_alive = TcpStream::connect(addr).await.unwrap();
    keep_alive
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(3)).await,
        "keep-alive"
    );
}

#[tokio::test]
async fn past_the_pending_bound_accepting_waits_and_a_real_client_still_gets_in() {
    let server = start(ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        max_pending_connections: 8,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, _, metrics) = get_when_possible(addr, "/metrics").await;
    let pending = metric(&metrics, "wsrelay_pending_connections");
    assert!(pending <= 8.0, "never more than the bound: {pending}");
    // The idle ones time out in batches of 8; the real client is served in its turn.
    let started = Instant::now();
    let mut alice = tokio::time::timeout(Duration::from_secs(10), Client::bare(addr, "alice"))
        .await
        .expect("served once the idle connections were cut");
    alice.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(alice.recv().await["type"], "~pong");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// GETs `path`, retrying while the server is not accepting yet.
async fn get_when_possible(addr: SocketAddr, path: &str) -> (u16, String, String) {
    tokio::time::timeout(Duration::from_secs(10), get(addr, path))
        .await
        .expect("answered")
}

#[tokio::test]
async fn an_oversized_frame_is_refused_with_1009_and_too_large_not_a_reset() {
    let server = start(config()).await; // 1 MiB limit
    let addr = server.local_addr();
    let mut bob = Client::bare(addr, "bob").await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/?source=big"))
        .await
        .unwrap();
    // 20 MiB: far more than the socket buffers hold while the server stops reading.
    let huge = format!(r#"{{"type":"x","payload":"{}"}}"#, "a".repeat(20 << 20));
    // The write may fail once the server closed: what matters is what the client reads.
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        let _ = sink.send(Message::text(huge)).await;
        sink
    });
    // Read only once the server had time to answer: what a reset would destroy is gone then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut words = None;
    let code = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(text))) => {
                words = Some(serde_json::from_str::<Value>(&text).unwrap())
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("the connection was reset instead of closed: {error}"),
            None => panic!("the connection ended without a close frame"),
        }
    };
    assert_eq!(code, Some(1009));
    assert_eq!(words.map(|w| w["code"].clone()), Some(json!("too_large")));
    drop(writer);
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

/// The WebSocket layer as a client sees it on the wire: a ping answered with its payload, a
/// message in fragments with a ping between them read whole, the client's close frame
/// echoed; and a frame that breaks RFC 6455 (reserved bits) closed with 1002, the other
/// clients untouched.
#[tokio::test]
async fn pings_fragments_and_close_frames_follow_rfc_6455() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let server = start(config()).await;
    let addr = server.local_addr();
    let mut bob = Client::bare(addr, "bob").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/?source=alice"))
        .await
        .unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let text = r#"{"type":"chat","to":"bob","payload":"grüße in pieces"}"#.as_bytes();
    // Cut inside "ü", whose two bytes then arrive in different fragments.
    let cut = text.iter().position(|&b| b == 0xc3).unwrap() + 1;
    let (first, rest) = text.split_at(cut);
    let (middle, last) = rest.split_at(3);
    for (opcode, piece, fin) in [
        (OpCode::Data(Data::Text), first, false),
        (OpCode::Data(Data::Continue), middle, false),
        (OpCode::Data(Data::Continue), last, true),
    ] {
        ws.send(Message::Frame(Frame::message(piece.to_vec(), opcode, fin)))
            .await
            .unwrap();
        if !fin {
            ws.send(Message::Ping(b"between".to_vec().into()))
                .await
                .unwrap();
        }
    }
    let mut pongs = Vec::new();
    while pongs.len() < 3 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Pong(payload))) => pongs.push(payload.to_vec()),
            Some(Ok(_)) => {}
            other => panic!("expected pongs, read {other:?}"),
        }
    }
    assert_eq!(pongs[0], b"are you there");
    assert_eq!(pongs[1], b"between");
    let chat = bob.recv().await;
    assert_eq!(
        (chat["source"].clone(), chat["payload"].clone()),
        (json!("alice"), json!("grüße in pieces"))
    );
    ws.send(Message::Close(Some(CloseFrame {
        code: 4000.into(),
        reason: "done".into(),
    })))
    .await
    .unwrap();
    let echo = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected the close frame's echo, read {other:?}"),
        }
    };
    assert_eq!(echo, Some(4000));

    // Reserved bits set: a protocol error, closed with 1002.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /?source=carol HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        raw.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    raw.write_all(&[0xc1, 0x80, 1, 2, 3, 4]).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut reply)).await;
    let close = reply.windows(2).position(|w| w[0] == 0x88);
    let code = close.and_then(|at| reply.get(at + 2..at + 4));
    assert_eq!(code, Some(&1002u16.to_be_bytes()[..]), "read {reply:?}");
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

#[tokio::test]
async fn identities_are_text_and_strictly_decoded() {
    let server = start(config()).await;
    let addr = server.local_addr();
    for bad in ["%FF", "%FE", "a%00b", "%07bell", "%C2%85", "%zz", "%F", ""] {
        assert_eq!(
            upgrade_status(addr, &format!("/?source={bad}"), &[]).await,
            400,
            "source={bad}"
        );
    }
    assert_eq!(
        upgrade_status(addr, "/?source=%C3%A9t%C3%A9", &[]).await,
        101
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

#[tokio::test]
async fn per_address_and_total_limits_answer_with_retry_after() {
    let server = start(ServerConfig {
        max_connections_per_ip: Some(2),
        max_connections: 3,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let _a = Client::bare(addr, "a").await;
    let _b = Client::bare(addr, "b").await;
    let request = |source: &str| {
        format!(
            "GET /?source={source} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let (status, head, _) = http(addr, &request("c")).await;
    assert_eq!(status, 429, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );

    // From another address (127.0.0.2 is loopback too), the total applies.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = other.connect(addr).await.unwrap();
    let (mut c, _) = tokio_tungstenite::client_async(format!("ws://{addr}/?source=c"), stream)
        .await
        .unwrap();
    c.send(Message::text(r#"{"type":"~ping"}"#)).await.unwrap();
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut stream = other.connect(addr).await.unwrap();
    stream.write_all(request("d").as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(WAIT, stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&response[..read]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 5"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_limited_and_then_cut_while_a_bystander_chats_on() {
    let server = start(ServerConfig {
        rate_limit: Some(RateLimit {
            per_second: 50,
            burst: 20,
        }),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut alice, welcome) = Client::session(addr, "alice", "alice-session-1", 0).await;
    assert_eq!(
        (welcome["rate"].clone(), welcome["burst"].clone()),
        (json!(50), json!(20))
    );
    let (mut bob, _) = Client::session(addr, "bob", "bob-session-01", 0).await;
    let (mut flood, _) = Client::session(addr, "flood", "flood-session", 0).await;
    // 30 messages at once: the burst of 20 passes, the next 10 are refused by id (not
    // consumed, so the acknowledgement stops at 20).
    for id in 1..=30 {
        flood
            .send(&format!(
                r#"{{"type":"spam","id":{id},"to":"bob","payload":{id}}}"#
            ))
            .await;
    }
    let mut refused = Vec::new();
    while refused.len() < 10 {
        let frame = flood.recv().await;
        if frame["code"] == "rate_limited" {
            refused.push(frame["re"].as_u64().unwrap());
        } else {
            assert!(
                frame["type"] == "~ack" && frame["ack"].as_u64() <= Some(20),
                "{frame}"
            );
        }
    }
    assert_eq!(refused, (21..=30).collect::<Vec<_>>());
    // 300 more: the debt of refusals passes a burst beyond what the rate forgives, and the
    // flooder is closed with 1008.
    for id in 31..=330 {
        flood
            .send(&format!(
                r#"{{"type":"spam","id":{id},"to":"bob","payload":{id}}}"#
            ))
            .await;
    }
    let (code, _) = flood.closed().await;
    assert_eq!(code, Some(1008));
    // Meanwhile alice and bob chat at their own pace, untouched.
    let started = Instant::now();
    for n in 1..=20 {
        alice
            .send(&format!(
                r#"{{"type":"chat","id":{n},"to":"bob","payload":{n}}}"#
            ))
            .await;
        alice.acked(n).await;
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        let frame = bob.recv_app().await;
        if frame["source"] == "alice" {
            got.push(frame["payload"].as_u64().unwrap());
        }
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    assert!(started.elapsed() < Duration::from_secs(2));
    let (_, _, metrics) = get(addr, "/metrics").await;
    assert!(metric(&metrics, "wsrelay_rate_limited_total") >= 20.0);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = WebSocketServer::builder(config())
        .on("add", |m: Incoming<(i64, i64)>| async move {
            Some(m.payload.0 + m.payload.1)
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    alice.send(r#"{"type":"add","id":1,"payload":[2,3]}"#).await;
    assert_eq!(alice.recv_app().await["payload"], 5);
    alice.send("not json").await;
    assert_eq!(alice.recv_app().await["code"], "invalid_json");
    let (status, head, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("openmetrics-text"), "{head}");
    for (name, at_least) in [
        ("wsrelay_connections ", 1.0),
        ("wsrelay_connections_opened_total", 1.0),
        ("wsrelay_sessions_active", 1.0),
        ("wsrelay_sessions_opened_total", 1.0),
        ("wsrelay_messages_received_total", 1.0),
        ("wsrelay_messages_sent_total", 2.0),
        ("wsrelay_received_bytes_total", 20.0),
        ("wsrelay_sent_bytes_total", 20.0),
        ("wsrelay_acks_sent_total", 1.0),
        ("wsrelay_errors_total{code=\"invalid_json\"}", 1.0),
        ("wsrelay_invalid_frames_total", 1.0),
        ("wsrelay_handler_duration_seconds_count", 1.0),
    ] {
        assert!(metric(&text, name) >= at_least, "{name} in\n{text}");
    }
    drop(alice);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = get(addr, "/metrics").await.2;
    assert!(
        metric(&text, "wsrelay_connections_closed_total") >= 1.0,
        "{text}"
    );
    // The statistics of the API are the same counters.
    let stats = server.stats();
    let closed = "wsrelay_disconnects_total{reason=\"closed\"}";
    assert_eq!(metric(&text, closed), 1.0, "{text}");
    let invalid = metric(&text, "wsrelay_invalid_frames_total");
    assert_eq!(invalid, stats.invalid_frames as f64, "{text}");
    let opened = metric(&text, "wsrelay_connections_opened_total");
    assert_eq!(opened, stats.accepted as f64, "{text}");
}

#[tokio::test]
async fn readiness_fails_while_draining() {
    let server = start(ServerConfig {
        shutdown_timeout: Duration::from_secs(3),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    // A bare client that never answers the close keeps the shutdown draining.
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "GET /?source=stuck HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = stuck.read(&mut buf).await.unwrap();
    let draining = server.clone();
    let closing = tokio::spawn(async move { draining.close().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.ready(), Err("shutting down".to_owned()));
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(get(addr, "/healthz").await.0, 200, "alive while it drains");
    assert_eq!(upgrade_status(addr, "/?source=late", &[]).await, 503);
    closing.await.unwrap();
}

#[tokio::test]
async fn own_origin_and_allowed_origins() {
    let server = start(ServerConfig {
        own_origin: true,
        allowed_origins: vec!["https://app.example".into()],
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let own = format!("http://{addr}");
    assert_eq!(
        upgrade_status(addr, "/?source=a", &[("origin", &own)]).await,
        101
    );
    assert_eq!(
        upgrade_status(addr, "/?source=b", &[("origin", "https://app.example")]).await,
        101
    );
    assert_eq!(
        upgrade_status(addr, "/?source=c", &[("origin", "https://evil.example")]).await,
        4403
    );
    assert_eq!(
        upgrade_status(addr, "/?source=d", &[]).await,
        101,
        "not a browser"
    );
}
