//! Scenario 6: the native wsrelay client against a tokio-tungstenite client sending the same
//! frames by hand, acknowledged messages per second; and the count for profilers.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::{measure, Sample, Shared, Target, Tasks, Timing};

/// Scenario 6, ours: the native wsrelay client sends 20-byte payloads, keeping `window` sends
/// awaiting the server's acknowledgement; acknowledged messages/s.
pub async fn client_wsrelay(
    addr: SocketAddr,
    pid: u32,
    window: usize,
    timing: Timing,
) -> Result<Sample, String> {
    let shared = Shared::new();
    let (client, tasks) = start_client_wsrelay(addr, window, u64::MAX, &shared)?;
    let sample = measure(&shared, timing, &Target::single(addr, pid), 1).await;
    drop(tasks);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
    sample
}

/// The wsrelay client of scenario 6 sending `limit` messages (or forever), `window` in flight.
fn start_client_wsrelay(
    addr: SocketAddr,
    window: usize,
    limit: u64,
    shared: &Rc<Shared>,
) -> Result<(wsrelay::WebSocketClient, Tasks), String> {
    let client = wsrelay::WebSocketClient::new(format!("ws://{addr}/"), "bench-client")
        .map_err(|e| format!("client: {e}"))?;
    let payload = "x".repeat(18);
    let driver = {
        let shared = Rc::clone(shared);
        let client = client.clone();
        tokio::task::spawn_local(async move {
            let mut in_flight = FuturesUnordered::new();
            let mut issued = 0u64;
            loop {
                while in_flight.len() < window && issued < limit {
                    issued += 1;
                    let sent = shared.now_us();
                    let send = client.send("sink", payload.as_str());
                    in_flight.push(async move { (send.await, sent) });
                }
                match in_flight.next().await {
                    Some((Ok(()), sent)) => shared.delivered(Some(sent)),
                    Some((Err(error), _)) => {
                        shared.fail(format!("send failed: {error}"));
                        return;
                    }
                    None => return,
                }
            }
        })
    };
    Ok((client, Tasks(vec![driver])))
}

/// Scenario 6, peer: a bare tokio-tungstenite client speaking the same protocol by hand
/// (hello, ids, the same frames), `window` messages unacknowledged at most.
pub async fn client_tungstenite(
    addr: SocketAddr,
    pid: u32,
    window: u64,
    timing: Timing,
) -> Result<Sample, String> {
    let shared = Shared::new();
    let tasks =
        start_client_tungstenite(addr, window, u64::MAX, "bench-tungstenite", &shared).await?;
    let sample = measure(&shared, timing, &Target::single(addr, pid), 1).await;
    drop(tasks);
    sample
}

/// The tokio-tungstenite client of scenario 6 sending `limit` messages (or forever) in the
/// session named `session`.
async fn start_client_tungstenite(
    addr: SocketAddr,
    window: u64,
    limit: u64,
    session: &str,
    shared: &Rc<Shared>,
) -> Result<Tasks, String> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let url = format!("ws://{addr}/?source=bench-client");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let hello = format!(r#"{{"type":"~hello","v":1,"session":"{session}","ack":0}}"#);
    sink.send(WsMessage::text(hello))
        .await
        .map_err(|e| e.to_string())?;
    let acked = Rc::new(Cell::new(0u64));
    let wake = Rc::new(Notify::new());
    let reader = {
        let (shared, acked, wake) = (Rc::clone(shared), Rc::clone(&acked), Rc::clone(&wake));
        tokio::task::spawn_local(async move {
            while let Some(Ok(message)) = stream.next().await {
                let WsMessage::Text(text) = message else {
                    continue;
                };
                if let Some(rest) = text.as_str().strip_prefix(r#"{"type":"~ack","ack":"#) {
                    let n: u64 = rest.trim_end_matches('}').parse().unwrap_or(0);
                    let previous = acked.get();
                    if n > previous {
                        for _ in previous..n {
                            shared.delivered(None);
                        }
                        acked.set(n);
                        wake.notify_one();
                    }
                } else if text.as_str().starts_with(r#"{"type":"~error""#) {
                    shared.fail(text.as_str());
                    return;
                }
            }
            shared.fail("the server closed the connection");
        })
    };
    let writer = {
        let (acked, wake, shared) = (Rc::clone(&acked), Rc::clone(&wake), Rc::clone(shared));
        tokio::task::spawn_local(async move {
            let mut id = 0u64;
            while id < limit {
                while id - acked.get() >= window {
                    if tokio::time::timeout(Duration::from_secs(10), wake.notified())
                        .await
                        .is_err()
                    {
                        shared.fail("no acknowledgement for 10 s");
                        return;
                    }
                }
                id += 1;
                let text = format!(r#"{{"type":"sink","id":{id},"payload":"xxxxxxxxxxxxxxxxxx"}}"#);
                if sink.feed(WsMessage::text(text)).await.is_err() {
                    return;
                }
                let flush = id.is_multiple_of(16) || id - acked.get() >= window || id == limit;
                if flush && sink.flush().await.is_err() {
                    return;
                }
            }
        })
    };
    Ok(Tasks(vec![reader, writer]))
}

/// Scenario 6 for profilers: one client (`ours`: the wsrelay client, otherwise the
/// tokio-tungstenite one) sends exactly `messages` with 256 in flight and waits for every
/// acknowledgement. Returns the seconds that took. Run twice with different counts under
/// `valgrind --tool=callgrind`, the difference in instructions over the difference in
/// messages is the cost of one acknowledged message, set-up and shutdown excluded.
pub async fn client_count(addr: SocketAddr, ours: bool, messages: u64) -> Result<f64, String> {
    let shared = Shared::new();
    let start = Instant::now();
    let (client, tasks) = if ours {
        let window = 256;
        let (client, tasks) = start_client_wsrelay(addr, window, messages, &shared)?;
        (Some(client), tasks)
    } else {
        // A session of its own: a server that saw an earlier run must not take these ids for
        // that run's duplicates.
        let session = format!("bench-tungstenite-{}", std::process::id());
        let tasks = start_client_tungstenite(addr, 256, messages, &session, &shared).await?;
        (None, tasks)
    };
    let mut last = (0, Instant::now());
    while shared.count.get() < messages {
        if let Some(error) = shared.error.borrow().clone() {
            return Err(error);
        }
        let count = shared.count.get();
        if count != last.0 {
            last = (count, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return Err(format!("stalled after {count} acknowledgements"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(tasks);
    if let Some(client) = client {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
    }
    Ok(secs)
}
