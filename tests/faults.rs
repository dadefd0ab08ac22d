//! Tens of native clients broadcasting numbered messages through the real server, each over a
//! link that a proxy resets every ~2 s on average and sometimes silences for 1-2 s: every
//! message arrives at every other client exactly once and in order, and every `send` settles.

#![cfg(not(target_arch = "wasm32"))]

#[path = "../native-server/tests/common/chaos.rs"]
mod chaos;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaos::ChaosProxy;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use wsrelay::{Event, Incoming, WebSocketClient};
use wsrelay_server::{ServerConfig, WebSocketServer};

const CLIENTS: usize = 30;
/// Messages each client sends, paced over `SENDING`.
const MESSAGES: u64 = 400;
const SENDING: Duration = Duration::from_secs(8);

/// What each client received: per sender, the sequence numbers in arrival order.
type Inbox = Arc<Mutex<HashMap<String, Vec<u64>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tens_of_clients_through_resets_and_silences_lose_and_duplicate_nothing() {
    let server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .expect("bind");
    let proxy = ChaosProxy::start(server.local_addr(), 0x5eed).await;
    let url = format!("ws://{}", proxy.addr);

    let mut clients = Vec::new();
    let mut inboxes = Vec::new();
    let sessions_lost = Arc::new(AtomicU64::new(0));
    let mut opened = Vec::new();
    for n in 0..CLIENTS {
        let builder = WebSocketClient::builder(url.clone(), format!("client-{n}"))
            .min_reconnection_delay(Duration::from_millis(50))
            .max_reconnection_delay(Duration::from_millis(400))
            .seed(n as u64 + 1);
        let mut events = builder.subscribe();
        let (open_tx, open_rx) = tokio::sync::oneshot::channel();
        opened.push(open_rx);
        let mut open_tx = Some(open_tx);
        let lost = Arc::clone(&sessions_lost);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Open { .. }) => {
                        if let Some(tx) = open_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::SessionLost { .. }) => {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let client = builder.build().expect("valid settings");
        let inbox: Inbox = Arc::default();
        let record = Arc::clone(&inbox);
        // Handlers are called in arrival order (their futures then run concurrently): record
        // in the call, not in the future.
        client.on("n", move |m: Incoming<u64>| {
            let sender = m.source.unwrap_or_default();
            record
                .lock()
                .expect("inbox")
                .entry(sender)
                .or_default()
                .push(m.payload);
            async {}
        });
        clients.push(client);
        inboxes.push(inbox);
    }

    // A broadcast reaches whoever is there: wait until everybody is.
    for open in opened {
        tokio::time::timeout(Duration::from_secs(30), open)
            .await
            .expect("every client connects")
            .expect("events go on");
    }

    // Everybody sends, paced, while the links fail under them.
    let mut sends = JoinSet::new();
    let pause = SENDING / MESSAGES as u32;
    for k in 0..MESSAGES {
        for client in &clients {
            sends.spawn(client.send("n", k));
        }
        tokio::time::sleep(pause).await;
    }
    proxy.set_faults(false);
    let settled = tokio::time::timeout(Duration::from_secs(60), async {
        let mut outcomes = Vec::new();
        while let Some(outcome) = sends.join_next().await {
            outcomes.push(outcome.expect("send task"));
        }
        outcomes
    })
    .await
    .expect("every send settles");
    let failed: Vec<_> = settled.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "sends failed: {failed:?}");

    // Then every message reaches every other client.
    let expected: Vec<u64> = (0..MESSAGES).collect();
    let everything_arrived = || {
        inboxes.iter().enumerate().all(|(n, inbox)| {
            let inbox = inbox.lock().expect("inbox");
            (0..CLIENTS)
                .filter(|&s| s != n)
                .all(|s| inbox.get(&format!("client-{s}")).map_or(0, Vec::len) >= expected.len())
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !everything_arrived() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A little longer, so that duplicates would have time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let faults = proxy.faults();
    let (resets, silences) = (faults.resets, faults.silences);
    assert!(resets >= CLIENTS as u64, "the proxy reset links: {resets}");
    assert!(silences >= 5, "the proxy silenced links: {silences}");
    for (n, inbox) in inboxes.iter().enumerate() {
        let inbox = inbox.lock().expect("inbox");
        for s in (0..CLIENTS).filter(|&s| s != n) {
            let got = inbox
                .get(&format!("client-{s}"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(got, expected, "client-{n} from client-{s}");
        }
    }
    assert_eq!(
        sessions_lost.load(Ordering::SeqCst),
        0,
        "no session was lost"
    );
    let stats = server.stats();
    assert_eq!(stats.slow_consumers, 0, "{stats:?}");
    println!("{CLIENTS} clients, {MESSAGES} messages each: {resets} resets, {silences} silences; {stats:?}");
    for client in &clients {
        client.close().await;
    }
    server.close().await;
}
