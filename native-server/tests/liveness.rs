//! Liveness and endings on the real server: a connection that stops answering pings is
//! dropped, a slow consumer is cut off while the others carry on, a graceful close delivers
//! what was queued and then closes with 1001, and readiness fails while the server drains.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, disconnected, get, start, upgrade_status, watch_disconnects, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wsrelay_server::{DisconnectReason, ServerConfig, WebSocketServer};

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
