//! Who gets in, and how many, on the real server over loopback: authentication by the
//! server's hook, allowed origins (and the relay's own), connection limits per address and in
//! total (answered with `Retry-After`), connections that never upgrade cut after the handshake
//! timeout, the bound on pending connections (a real client still gets in), and the rate limit
//! that refuses and then cuts a flooder while a bystander chats on.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{config, get, http, metric, start, upgrade_status, Client, WAIT};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsrelay_server::{RateLimit, Rejection, ServerConfig, StatusCode, WebSocketServer};

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
