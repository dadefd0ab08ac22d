//! A hundred native clients on two relay processes and one Redis, every link through a proxy
//! that spreads new links over both relays (round robin) and breaks them: resets, silences, and
//! slow starts that make a client give up an attempt whose upgrade still reaches a relay later.
//! Every client broadcasts numbered messages and sends one directed message; every delivery is
//! recorded. One summary line per run says what arrived, what was lost or doubled, which sends
//! failed and which clients stopped; then the promises of PROTOCOL.md section 11 are checked.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::chaos::{Chaos, ChaosProxy, Faults};
use common::cluster::{Redis, Relay, PATIENCE};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use wsrelay::{Event, Incoming, WebSocketClient};

/// Clients, each broadcasting `MESSAGES` numbered messages.
const CLIENTS: usize = 100;
/// Messages each client broadcasts, paced over `SENDING`.
const MESSAGES: u64 = 100;
/// How long the broadcasting lasts.
const SENDING: Duration = Duration::from_secs(9);
/// Percentage of new links (while faults are on) whose upgrade the proxy holds for
/// `SLOW_START_MS`: longer than the clients' `CONNECTION_TIMEOUT`, so that each is given up on
/// and reaches a relay late, a stale attempt.
const SLOW_START_PERCENT: u64 = 20;
const SLOW_START_MS: (u64, u64) = (2500, 3500);
/// The clients' connection timeout: short enough to give up on a held upgrade, long enough
/// for a relay busy with a backlog (a debug build, on a loaded machine) to answer a hello.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// After the sending: the longest wait for the sends to settle.
const SETTLE: Duration = Duration::from_secs(120);
/// After the sending: the longest wait for settling and deliveries together (a run that stops
/// making progress ends sooner, after `STALL`).
const AFTER_SENDING: Duration = Duration::from_secs(150);
/// Deliveries are waited for until none arrived for this long.
const STALL: Duration = Duration::from_secs(10);
/// A last wait once everything arrived, so that duplicates show.
const EXTRA: Duration = Duration::from_secs(1);

/// What a run does to the cluster besides the link faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Resets, silences and slow starts only.
    LinkFaults,
    /// The link faults, relay a SIGKILLed mid-stream and restarted on its port, then Redis
    /// (AOF, `appendfsync always`) stopped and started again, deliveries still flowing.
    RelayKillAndRedisRestart,
}

impl Scenario {
    /// Whether Redis restarts (then it must persist every write).
    fn restarts_redis(self) -> bool {
        self == Scenario::RelayKillAndRedisRestart
    }

    /// A short name for file names and the summary.
    fn name(self) -> &'static str {
        match self {
            Scenario::LinkFaults => "link-faults",
            Scenario::RelayKillAndRedisRestart => "relay-kill-redis-restart",
        }
    }
}

/// The source name of client `n`.
fn source(n: usize) -> String {
    format!("client-{n}")
}

/// Whom client `n` sends its one directed message to: the next client, which connected right
/// after it, so through the other relay (the proxy alternates).
fn target(n: usize) -> usize {
    (n + 1) % CLIENTS
}

/// What one client received, in arrival order, with arrival times.
#[derive(Debug, Default)]
struct Inbox {
    /// Broadcasts: per sender, the numbers.
    broadcast: HashMap<String, Vec<(u64, Instant)>>,
    /// Directed messages: sender and number.
    directed: Vec<(String, u64, Instant)>,
}

/// What one client's events said.
#[derive(Debug, Default)]
struct Watch {
    /// `SessionLost` events.
    sessions_lost: u64,
    /// The close that ended the client for good (`reconnecting: false`): code and reason.
    stopped: Option<(u16, String)>,
    /// Every close, by code.
    closes: BTreeMap<u16, u64>,
}

/// A client under test and what it saw.
struct Peer {
    client: WebSocketClient,
    inbox: Arc<Mutex<Inbox>>,
    watch: Arc<Mutex<Watch>>,
}

impl Peer {
    /// Whether the client stopped for good.
    fn stopped(&self) -> bool {
        self.watch.lock().is_ok_and(|w| w.stopped.is_some())
    }
}

/// How one send ended, and when.
struct Sent {
    /// The sender.
    from: usize,
    /// The broadcast's number, or `None` for the directed message.
    number: Option<u64>,
    /// Its outcome.
    outcome: Result<(), wsrelay::Error>,
    /// When the future resolved.
    at: Instant,
}

/// The figures of one run.
#[derive(Debug, Default)]
struct Summary {
    scenario: &'static str,
    /// Deliveries recorded (broadcast and directed, duplicates included).
    received: u64,
    /// Deliveries expected: every broadcast at every other client, every directed message.
    expected: u64,
    /// Deliveries of a number the receiver already had from that sender.
    duplicates: u64,
    /// Expected deliveries that never came.
    lost: u64,
    /// ... of which at a receiver that stopped for good.
    lost_at_stopped: u64,
    /// ... of which of a message whose send failed.
    lost_of_failed: u64,
    /// ... of which of an acknowledged message at a receiver still running.
    lost_acknowledged: u64,
    /// First arrivals of a number after a larger one from the same sender.
    order_violations: u64,
    /// Directed messages that reached somebody else.
    misdirected: u64,
    /// Sends that resolved `Ok`.
    sends_ok: u64,
    /// Sends that failed, by kind.
    sends_failed: BTreeMap<String, u64>,
    /// Sends still pending when the wait for them ended.
    sends_unsettled: u64,
    /// Clients stopped for good.
    stopped: u64,
    /// Their final close codes.
    stop_codes: BTreeMap<u16, u64>,
    /// Every close the clients saw, by code.
    closes: BTreeMap<u16, u64>,
    /// `SessionLost` events.
    sessions_lost: u64,
    /// What the proxy did.
    faults: Faults,
    /// Connections the relays' logs say were replaced (4409).
    replaced_in_logs: u64,
    /// Connections the relays' logs say were superseded by their client's newer attempt (4410).
    superseded_in_logs: u64,
    /// Stale attempts (given up on by their clients) the relays' logs say were refused.
    stale_in_logs: u64,
    /// Frames still in the Redis mailboxes of the clients that did not stop, at the end.
    left_in_mailboxes: u64,
    /// From the last send that resolved `Ok` to the last delivery, in ms (negative: the last
    /// delivery came first).
    last_ack_to_last_delivery_ms: i64,
    /// From the end of the sending to the last delivery.
    sending_end_to_last_delivery: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] deliveries {}/{} | duplicates {} | lost {} (at stopped receivers {}, of failed \
             sends {}, acknowledged at running receivers {}) | order violations {} | misdirected \
             {} | sends ok {}, failed {:?}, unsettled {} | clients stopped {} (codes {:?}) | \
             closes seen {:?} | sessions lost {} | in relay logs: replaced {}, superseded {}, \
             stale attempts refused {} | left in running \
             clients' mailboxes {} | {} | last ack -> last delivery {} ms | end of sending -> last delivery {:.1} s",
            self.scenario,
            self.received,
            self.expected,
            self.duplicates,
            self.lost,
            self.lost_at_stopped,
            self.lost_of_failed,
            self.lost_acknowledged,
            self.order_violations,
            self.misdirected,
            self.sends_ok,
            self.sends_failed,
            self.sends_unsettled,
            self.stopped,
            self.stop_codes,
            self.closes,
            self.sessions_lost,
            self.replaced_in_logs,
            self.superseded_in_logs,
            self.stale_in_logs,
            self.left_in_mailboxes,
            self.faults,
            self.last_ack_to_last_delivery_ms,
            self.sending_end_to_last_delivery.as_secs_f64(),
        )
    }
}

/// A short name for a failed send's error.
fn kind(error: &wsrelay::Error) -> String {
    match error {
        wsrelay::Error::Rejected { code, reason } => format!("rejected {code} {reason}"),
        other => other.code().to_owned(),
    }
}

/// Builds client `n` through `url`, recording what it receives and what its events say, and
/// waits until it is open.
async fn connect(url: &str, n: usize, delivered: &Arc<AtomicU64>) -> Peer {
    let builder = WebSocketClient::builder(url, source(n))
        .min_reconnection_delay(Duration::from_millis(50))
        .max_reconnection_delay(Duration::from_millis(400))
        .connection_timeout(CONNECTION_TIMEOUT)
        .seed(n as u64 + 1);
    let mut events = builder.subscribe();
    let watch: Arc<Mutex<Watch>> = Arc::default();
    let (open_tx, opened) = tokio::sync::oneshot::channel();
    let mut open_tx = Some(open_tx);
    let seen = Arc::clone(&watch);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::Open { .. }) => {
                    if let Some(tx) = open_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::SessionLost { .. }) => {
                    if let Ok(mut seen) = seen.lock() {
                        seen.sessions_lost += 1;
                    }
                }
                Ok(Event::Close {
                    code,
                    reason,
                    reconnecting,
                }) => {
                    if let Ok(mut seen) = seen.lock() {
                        *seen.closes.entry(code).or_default() += 1;
                        if !reconnecting {
                            seen.stopped = Some((code, reason));
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let client = builder.build().unwrap();
    let inbox: Arc<Mutex<Inbox>> = Arc::default();
    // Handlers are called in arrival order (their futures then run concurrently): record in
    // the call, not in the future.
    let (record, count) = (Arc::clone(&inbox), Arc::clone(delivered));
    client.on("n", move |m: Incoming<u64>| {
        let at = Instant::now();
        let sender = m.source.unwrap_or_default();
        if let Ok(mut inbox) = record.lock() {
            inbox
                .broadcast
                .entry(sender)
                .or_default()
                .push((m.payload, at));
        }
        count.fetch_add(1, Ordering::Relaxed);
        async {}
    });
    let (record, count) = (Arc::clone(&inbox), Arc::clone(delivered));
    client.on("d", move |m: Incoming<u64>| {
        let at = Instant::now();
        let sender = m.source.unwrap_or_default();
        if let Ok(mut inbox) = record.lock() {
            inbox.directed.push((sender, m.payload, at));
        }
        count.fetch_add(1, Ordering::Relaxed);
        async {}
    });
    tokio::time::timeout(PATIENCE, opened)
        .await
        .expect("the client connects")
        .unwrap();
    Peer {
        client,
        inbox,
        watch,
    }
}

/// Every client broadcasts `MESSAGES` numbered messages paced over `SENDING`, and, halfway,
/// one directed message to its [`target`]. Returns the sends, each resolving to a [`Sent`].
async fn chatter(peers: &[Peer]) -> JoinSet<Sent> {
    let mut sends = JoinSet::new();
    let pause = SENDING / MESSAGES as u32;
    for k in 0..MESSAGES {
        for (from, peer) in peers.iter().enumerate() {
            let send = peer.client.send("n", k);
            sends.spawn(async move {
                let outcome = send.await;
                Sent {
                    from,
                    number: Some(k),
                    outcome,
                    at: Instant::now(),
                }
            });
        }
        if k == MESSAGES / 2 {
            for (from, peer) in peers.iter().enumerate() {
                let send = peer.client.send_to(&source(target(from)), "d", from as u64);
                sends.spawn(async move {
                    let outcome = send.await;
                    Sent {
                        from,
                        number: None,
                        outcome,
                        at: Instant::now(),
                    }
                });
            }
        }
        tokio::time::sleep(pause).await;
    }
    sends
}

/// Waits for every send until `deadline`; returns those that settled and how many did not (a
/// send task that panicked counts as not settled).
async fn settle(mut sends: JoinSet<Sent>, deadline: Instant) -> (Vec<Sent>, u64) {
    let mut settled = Vec::new();
    let mut panicked = 0;
    while let Ok(Some(sent)) = tokio::time::timeout_at(deadline, sends.join_next()).await {
        match sent {
            Ok(sent) => settled.push(sent),
            Err(_) => panicked += 1,
        }
    }
    let unsettled = sends.len() as u64 + panicked;
    sends.abort_all();
    (settled, unsettled)
}

/// Whether every expected delivery arrived (duplicates aside).
fn complete(peers: &[Peer]) -> bool {
    peers.iter().enumerate().all(|(r, peer)| {
        let Ok(inbox) = peer.inbox.lock() else {
            return false;
        };
        let broadcasts = (0..CLIENTS).filter(|&s| s != r).all(|s| {
            inbox
                .broadcast
                .get(&source(s))
                .is_some_and(|got| got.len() >= MESSAGES as usize)
        });
        broadcasts && !inbox.directed.is_empty()
    })
}

/// How many lines of the log at `path` contain `needle`.
fn count_lines(path: &Path, needle: &str) -> u64 {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter(|line| line.contains(needle)).count() as u64)
        .unwrap_or(0)
}

/// A client's session in Redis, as the relays left it.
#[derive(Debug, Default)]
struct Mailbox {
    /// The claim counter (fencing).
    epoch: u64,
    /// The relay number holding it (empty when none).
    owner: String,
    /// Position of the first frame kept.
    first: u64,
    /// Frames in the mailbox (delivered ones leave it a quarter second after the client's
    /// acknowledgement).
    frames: u64,
}

/// Reads every client's session from Redis (PROTOCOL.md section 12).
async fn mailboxes(url: &str) -> Result<HashMap<usize, Mailbox>, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut found = HashMap::new();
    for n in 0..CLIENTS {
        let hex: String = source(n).bytes().map(|b| format!("{b:02x}")).collect();
        // The shard is not known here: the key is looked up by its pattern.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("wsr:{{*}}:m:{hex}"))
            .query_async(&mut conn)
            .await?;
        let Some(key) = keys.first() else { continue };
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await?;
        let frames: u64 = redis::cmd("LLEN")
            .arg(key.replace(":m:", ":b:"))
            .query_async(&mut conn)
            .await?;
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        found.insert(
            n,
            Mailbox {
                epoch: number("epoch"),
                owner: fields.get("owner").cloned().unwrap_or_default(),
                first: number("first"),
                frames,
            },
        );
    }
    Ok(found)
}

/// Writes one line per client to `path`: its state, what it received, and its session in
/// Redis (set `CLUSTER_FAULTS_DUMP=path` to get it, in `path.<scenario>`).
fn dump(peers: &[Peer], boxes: &HashMap<usize, Mailbox>, path: &str) {
    let mut out = String::new();
    for (n, peer) in peers.iter().enumerate() {
        let (received, twice) = peer
            .inbox
            .lock()
            .map(|inbox| {
                let received: usize = inbox.broadcast.values().map(Vec::len).sum();
                // The first few numbers that came twice: sender, number, ms between the two.
                let mut twice = Vec::new();
                for (sender, got) in &inbox.broadcast {
                    let mut first = HashMap::new();
                    for (k, at) in got {
                        if let Some(earlier) = first.insert(*k, *at) {
                            twice.push((
                                sender.clone(),
                                *k,
                                at.duration_since(earlier).as_millis(),
                            ));
                        }
                    }
                }
                twice.truncate(5);
                (received, twice)
            })
            .unwrap_or_default();
        let watch = peer
            .watch
            .lock()
            .map(|w| format!("{w:?}"))
            .unwrap_or_default();
        let session = boxes.get(&n).map_or_else(
            || "no session".to_owned(),
            |m| {
                format!(
                    "epoch {} owner {:?} first {} frames {}",
                    m.epoch, m.owner, m.first, m.frames
                )
            },
        );
        out += &format!(
            "{} {:?} received {received} twice {twice:?} | {session} | {watch} {:?}\n",
            source(n),
            peer.client.ready_state(),
            peer.client.stats(),
        );
    }
    if let Err(error) = std::fs::write(path, out) {
        println!("cannot write {path}: {error}");
    }
}

/// Sums up what the peers received against what was sent.
fn summarize(peers: &[Peer], sent: &[Sent], unsettled: u64, sending_end: Instant) -> Summary {
    let mut summary = Summary {
        expected: (CLIENTS * (CLIENTS - 1)) as u64 * MESSAGES + CLIENTS as u64,
        sends_unsettled: unsettled,
        ..Summary::default()
    };
    let mut failed = std::collections::HashSet::new();
    let mut last_ack = None;
    for send in sent {
        match &send.outcome {
            Ok(()) => {
                summary.sends_ok += 1;
                last_ack = last_ack.max(Some(send.at));
            }
            Err(error) => {
                *summary.sends_failed.entry(kind(error)).or_default() += 1;
                failed.insert((send.from, send.number));
            }
        }
    }
    let stopped: Vec<bool> = peers.iter().map(Peer::stopped).collect();
    let mut last_delivery: Option<Instant> = None;
    // A missing delivery is put down to the first cause that applies.
    let lose = |summary: &mut Summary, receiver: usize, from: usize, number: Option<u64>| {
        summary.lost += 1;
        if stopped[receiver] {
            summary.lost_at_stopped += 1;
        } else if failed.contains(&(from, number)) {
            summary.lost_of_failed += 1;
        } else {
            summary.lost_acknowledged += 1;
        }
    };
    for (r, peer) in peers.iter().enumerate() {
        let Ok(inbox) = peer.inbox.lock() else {
            continue;
        };
        for s in (0..CLIENTS).filter(|&s| s != r) {
            let arrivals = inbox
                .broadcast
                .get(&source(s))
                .map_or(&[][..], Vec::as_slice);
            let mut times = vec![0u32; MESSAGES as usize];
            let mut highest = None;
            for &(k, at) in arrivals {
                summary.received += 1;
                last_delivery = last_delivery.max(Some(at));
                let Some(slot) = times.get_mut(k as usize) else {
                    continue;
                };
                *slot += 1;
                if *slot > 1 {
                    summary.duplicates += 1;
                    continue;
                }
                if highest.is_some_and(|h| k < h) {
                    summary.order_violations += 1;
                }
                highest = highest.max(Some(k));
            }
            for k in (0..MESSAGES).filter(|&k| times[k as usize] == 0) {
                lose(&mut summary, r, s, Some(k));
            }
        }
        let from = (r + CLIENTS - 1) % CLIENTS;
        let mut directed = 0;
        for (sender, number, at) in &inbox.directed {
            summary.received += 1;
            last_delivery = last_delivery.max(Some(*at));
            if *sender == source(from) && *number == from as u64 {
                directed += 1;
            } else {
                summary.misdirected += 1;
            }
        }
        match directed {
            0 => lose(&mut summary, r, from, None),
            n => summary.duplicates += n - 1,
        }
        // Broadcast arrivals from unknown senders count as received only.
        summary.received += inbox
            .broadcast
            .iter()
            .filter(|(sender, _)| !(0..CLIENTS).any(|s| s != r && **sender == source(s)))
            .map(|(_, got)| got.len() as u64)
            .sum::<u64>();
        let Ok(watch) = peer.watch.lock() else {
            continue;
        };
        summary.sessions_lost += watch.sessions_lost;
        for (code, n) in &watch.closes {
            *summary.closes.entry(*code).or_default() += n;
        }
        if let Some((code, _)) = &watch.stopped {
            summary.stopped += 1;
            *summary.stop_codes.entry(*code).or_default() += 1;
        }
    }
    if let (Some(ack), Some(delivery)) = (last_ack, last_delivery) {
        summary.last_ack_to_last_delivery_ms = if delivery >= ack {
            delivery.duration_since(ack).as_millis() as i64
        } else {
            -(ack.duration_since(delivery).as_millis() as i64)
        };
    }
    if let Some(delivery) = last_delivery {
        summary.sending_end_to_last_delivery = delivery.saturating_duration_since(sending_end);
    }
    summary
}

/// Runs `scenario` (see the file's documentation), prints its summary line, then checks that
/// nothing was lost, doubled or reordered, that every send settled `Ok`, and that no client
/// stopped or lost its session.
async fn run(scenario: Scenario) {
    let start = Instant::now();
    let mut redis = Redis::start(scenario.restarts_redis()).await;
    let log = |node: &str| {
        std::env::temp_dir().join(format!(
            "wsrelay-cluster-faults-{}-{}-{node}.log",
            scenario.name(),
            std::process::id()
        ))
    };
    let logs = [log("a"), log("b")];
    for path in &logs {
        let _ = std::fs::remove_file(path);
    }
    let a = Relay::start_logged(&redis.url(), "a", 0, Some(&logs[0])).await;
    let b = Relay::start_logged(&redis.url(), "b", 0, Some(&logs[1])).await;
    let proxy = ChaosProxy::start_with(Chaos {
        upstreams: vec![a.addr, b.addr],
        seed: 0x5eed_2200 + scenario as u64,
        faults: false,
        slow_start_percent: SLOW_START_PERCENT,
        slow_start_ms: SLOW_START_MS,
    })
    .await;
    let url = format!("ws://{}", proxy.addr);

    // One after the other, faults off: the proxy alternates, so each client's neighbour is on
    // the other relay. A broadcast reaches whoever is there: everybody is, before it starts.
    let delivered = Arc::new(AtomicU64::new(0));
    let mut peers = Vec::new();
    for n in 0..CLIENTS {
        peers.push(connect(&url, n, &delivered).await);
    }
    let opened = start.elapsed();

    proxy.set_faults(true);
    let sending = chatter(&peers);
    // Returns relay a, restarted or not: dropping it would kill it.
    let hurting = async {
        if scenario != Scenario::RelayKillAndRedisRestart {
            return a;
        }
        tokio::time::sleep(SENDING / 3).await;
        let (redis_url, node, port) = a.kill().await;
        let restarted = Relay::start_logged(&redis_url, &node, port, Some(&logs[0])).await;
        tokio::time::sleep(SENDING / 3).await;
        redis.restart().await;
        restarted
    };
    let (sends, a) = tokio::join!(sending, hurting);
    let sending_end = Instant::now();
    proxy.set_faults(false);

    let settle_by = sending_end + SETTLE;
    let (sent, unsettled) = settle(sends, settle_by).await;
    let deadline = sending_end + AFTER_SENDING;
    let mut last = (delivered.load(Ordering::Relaxed), Instant::now());
    while !complete(&peers) && Instant::now() < deadline && last.1.elapsed() < STALL {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    tokio::time::sleep(EXTRA).await;

    let mut summary = summarize(&peers, &sent, unsettled, sending_end);
    summary.scenario = scenario.name();
    summary.faults = proxy.faults();
    let count = |needle: &str| logs.iter().map(|log| count_lines(log, needle)).sum();
    summary.replaced_in_logs = count("code=4409");
    summary.superseded_in_logs = count("code=4410");
    summary.stale_in_logs = count("a newer attempt of this client holds the source");
    match mailboxes(&redis.url()).await {
        Ok(boxes) => {
            summary.left_in_mailboxes = boxes
                .iter()
                .filter(|(n, _)| !peers[**n].stopped())
                .map(|(_, mailbox)| mailbox.frames)
                .sum();
            if let Ok(path) = std::env::var("CLUSTER_FAULTS_DUMP") {
                dump(&peers, &boxes, &format!("{path}.{}", scenario.name()));
            }
        }
        Err(error) => println!("cannot read the mailboxes: {error}"),
    }
    println!("{summary}");
    println!(
        "[{}] opened in {:.1} s, whole run {:.1} s; relay logs: {}",
        scenario.name(),
        opened.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        logs.iter()
            .map(|log| log.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    assert_eq!(summary.lost, 0, "nothing lost: {summary}");
    assert_eq!(summary.duplicates, 0, "nothing twice: {summary}");
    assert_eq!(summary.order_violations, 0, "order kept: {summary}");
    assert_eq!(summary.misdirected, 0, "directed kept: {summary}");
    assert!(
        summary.sends_failed.is_empty() && summary.sends_unsettled == 0,
        "every send settled Ok: {summary}"
    );
    assert_eq!(summary.stopped, 0, "no client stopped: {summary}");
    assert_eq!(summary.sessions_lost, 0, "no session lost: {summary}");
    // One client instance per source: its own reconnections supersede (4410), nobody is ever
    // replaced (4409, the stop code kept for another instance).
    assert_eq!(summary.replaced_in_logs, 0, "nobody replaced: {summary}");
    drop(peers);
    drop((a, b, redis));
}

/// One scenario at a time: each loads both cores of the machine for half a minute (a hundred
/// clients, two relays, Redis), and two at once would measure the machine, not the relays.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_on_two_relays_through_link_faults_lose_double_and_stop_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run(Scenario::LinkFaults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_through_link_faults_a_relay_kill_and_a_redis_restart_lose_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run(Scenario::RelayKillAndRedisRestart).await;
}
