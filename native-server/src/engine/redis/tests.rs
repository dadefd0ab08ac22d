//! The engine against a real `redis-server` (started here on a free port): what a connection
//! that a newer one of its source has replaced on the same relay can and cannot do.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;
use wsrelay_core::server::memory::EngineLimits;

use super::RedisEngine;
use crate::engine::{
    Attempt, Claim, Doorbell, Effect, Hello, MessageRouter, Routed, SessionStore, Signal,
};
use crate::requests::Requests;

/// A `redis-server` of the test's own, killed when dropped.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn engine(redis: &Redis) -> Arc<RedisEngine> {
    let requests = Arc::new(Requests::new(Vec::new()));
    let engine = RedisEngine::start(
        &redis.url,
        Some("test".into()),
        EngineLimits::default(),
        crate::config::RoomRetention::default(),
        requests,
        CancellationToken::new(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.healthy() {
        assert!(tokio::time::Instant::now() < deadline, "registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine
}

fn attempt(number: u64) -> Attempt {
    Attempt {
        instance: "alicetab".into(),
        number,
    }
}

async fn opened(engine: &RedisEngine, source: &str, number: u64, bell: &Doorbell) -> Claim {
    let mut claim = engine
        .claim(source, Some(&attempt(number)), bell, false)
        .await
        .unwrap();
    let hello = Hello {
        token: format!("{source}-session"),
        ack: 0,
        sid: None,
    };
    let next = claim.next;
    engine.open(&mut claim, Some(&hello), next).await.unwrap();
    claim
}

/// Every signal rung on `bell` within a short while.
async fn rung(bell: &Doorbell) -> Vec<Signal> {
    let mut signals = Vec::new();
    while let Ok(rung) = tokio::time::timeout(Duration::from_millis(200), bell.wait()).await {
        for signal in [
            Signal::Mail,
            Signal::Wake,
            Signal::Replaced,
            Signal::Superseded,
            Signal::Overflowed,
            Signal::Gone,
        ] {
            if rung.has(signal) {
                signals.push(signal);
            }
        }
    }
    signals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_connection_cannot_close_or_rob_its_successor_on_the_same_relay() {
    let redis = Redis::start();
    let engine = engine(&redis).await;
    let (old_bell, new_bell) = (Doorbell::default(), Doorbell::default());
    let old = opened(&engine, "alice", 1, &old_bell).await;
    // A newer attempt of the same client, on this relay: the old connection is told.
    let new = engine
        .claim("alice", Some(&attempt(2)), &new_bell, false)
        .await
        .unwrap();
    assert!(rung(&old_bell).await.contains(&Signal::Superseded));
    // The old connection, not yet ended, reads its mailbox: fenced. That is its own news; the
    // new connection is neither closed nor rung.
    let mut frames = Vec::new();
    assert_eq!(engine.fetch(&old, 1, &mut frames, 256).await.unwrap(), 0);
    let signals = rung(&new_bell).await;
    assert!(
        !signals.contains(&Signal::Replaced) && !signals.contains(&Signal::Superseded),
        "the successor was told {signals:?}"
    );
    // And what it routes is fenced as superseded, not as replaced by another client.
    let routed = engine
        .route(&old, Some(1), &Effect::Consume, &old_bell)
        .await;
    assert_eq!(routed, Routed::Fenced { superseded: true });
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_sent_again_by_the_successor_is_appended_once() {
    let redis = Redis::start();
    let engine = engine(&redis).await;
    let bob = opened(&engine, "bob", 1, &Doorbell::default()).await;
    let old = opened(&engine, "alice", 1, &Doorbell::default()).await;
    // The successor claims before it has opened (its hello is on the way) ...
    let new_bell = Doorbell::default();
    let mut new = engine
        .claim("alice", Some(&attempt(2)), &new_bell, false)
        .await
        .unwrap();
    // ... while the old connection still routes message 7: appended, not committed (fenced).
    let frame = Utf8Bytes::from(r#"{"type":"n","id":7,"source":"alice","payload":7}"#);
    let effect = Effect::Broadcast {
        frame: frame.clone(),
    };
    let routed = engine
        .route(&old, Some(7), &effect, &Doorbell::default())
        .await;
    assert_eq!(routed, Routed::Fenced { superseded: true });
    // The client sends 7 again on its new connection: bob gets it once.
    let hello = Hello {
        token: "alice-session".into(),
        ack: 0,
        sid: None,
    };
    let next = new.next;
    engine.open(&mut new, Some(&hello), next).await.unwrap();
    let routed = engine.route(&new, Some(7), &effect, &new_bell).await;
    assert_eq!(routed, Routed::Done);
    // Bob reads the log of everyone (as the note of each append reaches this relay).
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        for batch in engine.fetch_logs(&bob, 256).await.unwrap() {
            assert_eq!(batch.room, "");
            assert_eq!(batch.lost, None);
            frames.extend(batch.frames);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payload = r#""type":"n","id":7,"source":"alice","payload":7}"#;
    let copies = frames
        .iter()
        .filter(|(_, f)| f.as_str().ends_with(payload))
        .count();
    assert_eq!(copies, 1, "{frames:?}");
}
