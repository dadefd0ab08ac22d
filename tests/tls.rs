//! The native client over `wss://` (feature `tls`, which `cargo xtask test` turns on): a
//! relay serving TLS with a certificate made at run time, trusted through the client's own
//! root store; an untrusted certificate is a failed attempt, never a silent downgrade.

#![cfg(all(feature = "tls", not(target_arch = "wasm32")))]

#[path = "../native-server/tests/common/certs.rs"]
mod certs;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wsrelay::{Event, Incoming, WebSocketClient};
use wsrelay_server::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wsrelay_server::{ServerConfig, WebSocketServer};

const PATIENCE: Duration = Duration::from_secs(10);

async fn tls_relay(certs: &certs::TestCertificates) -> WebSocketServer {
    let chain = vec![CertificateDer::from(certs.cert_der.clone())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key_der.clone()));
    let tls = wsrelay_server::tls_config_from_der(chain, key).expect("a valid certificate");
    let config = ServerConfig {
        tls: Some(tls),
        presence: true,
        ..ServerConfig::default()
    };
    WebSocketServer::bind("127.0.0.1:0", config)
        .await
        .expect("bind a loopback port")
}

fn trusting(ca_der: &[u8]) -> Arc<wsrelay::rustls::ClientConfig> {
    let mut roots = wsrelay::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("a CA certificate");
    let provider = Arc::new(wsrelay::rustls::crypto::ring::default_provider());
    let config = wsrelay::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_talk_over_wss_with_a_trusted_root() {
    let certs = certs::test_certificates().expect("certificates");
    let relay = tls_relay(&certs).await;
    let url = format!("wss://localhost:{}", relay.local_addr().port());
    let tls = trusting(&certs.ca_der);
    let alice = WebSocketClient::builder(&url, "alice").tls_config(Arc::clone(&tls));
    // A broadcast reaches who is connected when it is relayed: Alice must be open first.
    let mut alice_events = alice.subscribe();
    let alice = alice.build().expect("client");
    tokio::time::timeout(PATIENCE, async {
        while !matches!(alice_events.recv().await, Ok(Event::Open { .. }) | Err(_)) {}
    })
    .await
    .expect("alice connected over TLS");
    let bob = WebSocketClient::builder(&url, "bob")
        .tls_config(tls)
        .build()
        .expect("client");
    bob.on("get-time", |_: Incoming<Value>| async { Some(42) });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    alice.on("chat", move |m: Incoming<Value>| {
        let _ = tx.send((m.source, m.payload));
        async {}
    });
    bob.send("chat", json!({"hi": 1}))
        .await
        .expect("acknowledged");
    let (from, payload) = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!((from.as_deref(), payload), (Some("bob"), json!({"hi": 1})));
    let time: u64 = alice
        .request_to("bob", "get-time", (), PATIENCE)
        .await
        .expect("answered over TLS");
    assert_eq!(time, 42);
    alice.close().await;
    bob.close().await;
    relay.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_the_attempt() {
    let certs = certs::test_certificates().expect("certificates");
    let relay = tls_relay(&certs).await;
    let url = format!("wss://localhost:{}", relay.local_addr().port());
    // The webpki roots do not know this CA; another CA is not it either.
    let other = certs::test_certificates().expect("certificates");
    for builder in [
        WebSocketClient::builder(&url, "eve"),
        WebSocketClient::builder(&url, "eve").tls_config(trusting(&other.ca_der)),
    ] {
        let builder = builder
            .min_reconnection_delay(Duration::from_millis(50))
            .max_retries(Some(1));
        let mut events = builder.subscribe();
        let client = builder.build().expect("client");
        let error = tokio::time::timeout(PATIENCE, async {
            loop {
                match events.recv().await {
                    Ok(Event::Error(wsrelay::Error::Transport(message))) => return message,
                    Ok(Event::Open { .. }) => panic!("connected with an untrusted certificate"),
                    Ok(_) => {}
                    Err(error) => panic!("events ended: {error}"),
                }
            }
        })
        .await
        .expect("an error in time");
        assert!(
            error.to_ascii_lowercase().contains("certificate"),
            "{error}"
        );
        client.close().await;
    }
    relay.close().await;
}
