//! Verified identity with the native client: a relay verifying HS256 tokens (`JwtAuth`),
//! clients giving a fixed token or fetching a fresh one before every attempt. A token that
//! expires while connected closes the connection with 4001 and the client comes back with a
//! new one; a missing, forged or expired token, or a source that is not the token's, stops it.

#![cfg(not(target_arch = "wasm32"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use tokio::sync::broadcast;
use wsrelay::{ClientBuilder, Error, Event, WebSocketClient};
use wsrelay_server::{JwtAuth, ServerConfig, WebSocketServer};

const SECRET: &[u8] = b"a test secret that is long enough";
const PATIENCE: Duration = Duration::from_secs(10);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token for `sub` that expires `ttl` seconds from now (negative: already expired).
fn token(secret: &[u8], sub: &str, ttl: i64) -> String {
    let exp = unix_now().saturating_add_signed(ttl);
    encode(
        &Header::default(),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(secret),
    )
    .expect("encodable")
}

async fn relay() -> WebSocketServer {
    let auth = JwtAuth::hs256(SECRET);
    WebSocketServer::builder(ServerConfig::default())
        .authenticate(move |request| auth.verify(request))
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

fn builder(relay: &WebSocketServer, source: &str) -> ClientBuilder {
    WebSocketClient::builder(format!("ws://{}", relay.local_addr()), source)
        .min_reconnection_delay(Duration::from_millis(50))
        .max_reconnection_delay(Duration::from_millis(200))
}

/// The next event matching `wanted`, within the patience.
async fn next_event(
    events: &mut broadcast::Receiver<Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("no more events"),
            }
        }
    })
    .await
    .expect("the event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_connected_is_renewed_on_reconnect() {
    let relay = relay().await;
    let fetched = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&fetched);
    // Each token lives two seconds.
    let builder = builder(&relay, "alice").token_fn(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(token(SECRET, "alice", 2)) }
    });
    let mut events = builder.subscribe();
    let alice = builder.build().expect("client");
    next_event(&mut events, |e| matches!(e, Event::Open { .. })).await;
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        1,
        "fetched before the attempt"
    );
    let close = next_event(&mut events, |e| matches!(e, Event::Close { .. })).await;
    assert!(
        matches!(
            close,
            Event::Close {
                code: 4001,
                reconnecting: true,
                ..
            }
        ),
        "{close:?}"
    );
    next_event(&mut events, |e| matches!(e, Event::Open { .. })).await;
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        2,
        "a fresh token for the new attempt"
    );
    alice.send("hi", 1).await.expect("works with the new token");
    assert_eq!(relay.clients().await.expect("memory"), ["alice"]);
    alice.close().await;
    relay.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_expired_or_foreign_tokens_stop_the_client() {
    let relay = relay().await;
    let cases: [(&str, Option<String>, u16); 5] = [
        ("missing", None, 4401),
        (
            "forged",
            Some(token(b"another secret, also long enough", "bob", 60)),
            4401,
        ),
        ("expired", Some(token(SECRET, "bob", -10)), 4401),
        ("not a token", Some("abc.def.ghi".to_owned()), 4401),
        ("someone else's", Some(token(SECRET, "carol", 60)), 4403),
    ];
    for (case, token, code) in cases {
        let mut builder = builder(&relay, "bob");
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let mut events = builder.subscribe();
        let bob = builder.build().expect("client");
        let close = next_event(&mut events, |e| matches!(e, Event::Close { .. })).await;
        assert!(
            matches!(close, Event::Close { code: c, reconnecting: false, .. } if c == code),
            "{case}: {close:?}"
        );
        assert!(matches!(
            bob.send("hi", 1).await,
            Err(Error::Rejected { code: c, .. }) if c == code
        ));
    }
    assert!(relay.clients().await.expect("memory").is_empty());
    relay.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_identity_in_a_second_tab_replaces_the_first() {
    let relay = relay().await;
    let first = builder(&relay, "dave").token(token(SECRET, "dave", 60));
    let mut first_events = first.subscribe();
    let first = first.build().expect("client");
    next_event(&mut first_events, |e| matches!(e, Event::Open { .. })).await;
    let second = builder(&relay, "dave")
        .token(token(SECRET, "dave", 60))
        .build()
        .expect("client");
    second.send("hi", 1).await.expect("the new tab works");
    let close = next_event(&mut first_events, |e| matches!(e, Event::Close { .. })).await;
    assert!(
        matches!(
            close,
            Event::Close {
                code: 4409,
                reconnecting: false,
                ..
            }
        ),
        "the first tab is told why, and does not fight back: {close:?}"
    );
    assert_eq!(relay.clients().await.expect("memory"), ["dave"]);
    drop(first);
    second.close().await;
    relay.close().await;
}
