//! The load generator: one single-threaded tokio runtime (pinned to core 1 by the harness),
//! one task per connection, closed loops, precomputed masked frames, hdrhistogram latencies.
//!
//! Every loop ends: tasks are aborted when the measured window is over, and every wait on the
//! network is bounded by a timeout.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cluster::Probe;
use crate::procs::{rss_bytes, CpuMeter};
use crate::wire::{
    self, classify, connect, is_control, masked, stamp_of, Conn, ConnectSpec, Incoming, Message,
    Proto, FIRST_ID, OP_CLOSE, OP_PING, OP_TEXT, SENDER_WIDTH, SIO_PONG, TS_WIDTH,
};

/// Warm-up and measured window of a throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The scenario's primary value (messages or deliveries per second, bytes, fraction...).
    pub value: f64,
    /// Server CPU over the window, as a fraction of one core: the sum over every server-side
    /// process (relays and Redis in the cluster rows).
    pub server_cpu: f64,
    /// Load generator CPU over the window, as a fraction of one core.
    pub gen_cpu: f64,
    /// Latency percentiles in microseconds: p50, p95, p99.
    pub latency: Option<[f64; 3]>,
    /// CPU of each server-side process over the window (fraction of a core), by name.
    pub procs: Vec<(String, f64)>,
    /// What the servers asked of Redis over the window (cluster rows).
    pub redis: Option<RedisUse>,
}

/// Redis's share of a cluster run.
#[derive(Debug, Clone, Default)]
pub struct RedisUse {
    /// Commands Redis executed in the window, those run inside Lua scripts included.
    pub commands: u64,
    /// Commands the servers sent (a script call counts once): round trips, pipelined or not.
    pub round_trips: u64,
    /// Deliveries counted in the same window.
    pub delivered: u64,
    /// Growth of Redis's memory (client buffers left out) since the servers were up, per
    /// client, after the window.
    pub memory_per_client: f64,
    /// `MEMORY USAGE` of the relays' keys per session after the window, when they have any.
    pub key_bytes_per_session: Option<f64>,
}

/// Where a run's clients connect, and what is measured besides them.
pub struct Target {
    /// Client `i` connects to `addrs[i % addrs.len()]`: clients are split evenly, and the
    /// two members of a pair (`2k`, `2k + 1`) are on different servers when there are two.
    pub addrs: Vec<SocketAddr>,
    /// The server-side processes whose CPU is measured, by name.
    pub procs: Vec<(String, u32)>,
    /// The Redis the servers share.
    pub redis: Option<Probe>,
    /// Pause after the last client connected, before the load starts.
    pub settle: Duration,
}

impl Target {
    /// One server process.
    pub fn single(addr: SocketAddr, pid: u32) -> Target {
        Target {
            addrs: vec![addr],
            procs: vec![("server".into(), pid)],
            redis: None,
            settle: Duration::ZERO,
        }
    }
}

/// State shared by a run's tasks.
struct Shared {
    t0: Instant,
    measuring: Cell<bool>,
    count: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
    error: RefCell<Option<String>>,
}

impl Shared {
    fn new() -> Rc<Shared> {
        Rc::new(Shared {
            t0: Instant::now(),
            measuring: Cell::new(false),
            count: Cell::new(0),
            hist: RefCell::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ),
            error: RefCell::new(None),
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn delivered(&self, sent_us: Option<u64>) {
        self.count.set(self.count.get() + 1);
        if self.measuring.get() {
            if let Some(sent) = sent_us {
                let latency = self.now_us().saturating_sub(sent).max(1);
                let _ = self.hist.borrow_mut().record(latency);
            }
        }
    }

    fn fail(&self, error: impl std::fmt::Display) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(error.to_string());
        }
    }
}

/// Aborts a run's tasks when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Payload padding so that the payload (a JSON string: quotes, 16 digits, padding) has
/// `size` bytes.
pub fn pad_for(size: usize) -> usize {
    size.saturating_sub(2 + TS_WIDTH + SENDER_WIDTH)
}

/// Connects `n` clients (`c0`..; client `i` to `addrs[i % addrs.len()]`), at most 200
/// handshakes at a time.
async fn connect_all(
    addrs: &[SocketAddr],
    proto: Proto,
    n: usize,
    read_capacity: usize,
) -> Result<Vec<Conn>, String> {
    if addrs.is_empty() {
        return Err("no server to connect to".into());
    }
    let spread = if n > 1000 { 32 } else { 1 };
    let limit = Duration::from_secs(20);
    let results: Vec<io::Result<Conn>> = stream::iter(0..n)
        .map(|index| async move {
            let source = format!("c{index}");
            let spec = ConnectSpec {
                addr: addrs[index % addrs.len()],
                proto,
                source: &source,
                index,
                spread,
                read_capacity,
            };
            connect(&spec, limit).await
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    for result in results {
        conns.push(result.map_err(|e| format!("connect: {e}"))?);
    }
    conns.sort_by_key(|c| c.index);
    // A server may register the last connections a moment after their handshake (or, for the
    // raw peer, their preamble) completed on our side.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(conns)
}

/// Lets the load run `warmup`, then measures `window`: deliveries per second, CPU of every
/// server-side process, latency, and (cluster rows) Redis's commands and memory. `clients`:
/// how many clients the run connected.
async fn measure(
    shared: &Shared,
    timing: Timing,
    target: &Target,
    clients: usize,
) -> Result<Sample, String> {
    tokio::time::sleep(timing.warmup).await;
    if let Some(error) = shared.error.borrow().clone() {
        return Err(error);
    }
    let commands_before = match &target.redis {
        Some(probe) => Some(probe.commands().await?),
        None => None,
    };
    let meters: Vec<(&str, CpuMeter)> = target
        .procs
        .iter()
        .map(|(name, pid)| (name.as_str(), CpuMeter::start(*pid)))
        .collect();
    let gen = CpuMeter::start(std::process::id());
    let start = Instant::now();
    let before = shared.count.get();
    shared.measuring.set(true);
    tokio::time::sleep(timing.window).await;
    shared.measuring.set(false);
    let delivered = shared.count.get() - before;
    let secs = start.elapsed().as_secs_f64();
    let procs: Vec<(String, f64)> = meters
        .iter()
        .map(|(name, meter)| ((*name).to_owned(), meter.read()))
        .collect();
    let gen_cpu = gen.read();
    let redis = match (&target.redis, commands_before) {
        (Some(probe), Some(before)) => {
            let after = probe.commands().await?;
            let (commands, round_trips) = probe.count(&before, &after);
            let memory = probe.used_memory().await?;
            let keys = probe.key_usage().await?;
            Some(RedisUse {
                commands,
                round_trips,
                delivered,
                memory_per_client: memory.saturating_sub(probe.baseline_memory) as f64
                    / clients.max(1) as f64,
                key_bytes_per_session: keys
                    .filter(|(_, sessions)| *sessions > 0)
                    .map(|(bytes, sessions)| bytes as f64 / sessions as f64),
            })
        }
        _ => None,
    };
    let sample = Sample {
        value: delivered as f64 / secs,
        server_cpu: procs.iter().map(|(_, cpu)| cpu).sum(),
        gen_cpu,
        latency: latency(&shared.hist.borrow()),
        procs,
        redis,
    };
    if let Some(error) = shared.error.borrow().clone() {
        return Err(error);
    }
    if delivered == 0 {
        return Err(
            "nothing was delivered in the measured window (the servers stalled, or \
             fell behind by more than the warm-up and the window)"
                .into(),
        );
    }
    Ok(sample)
}

fn latency(hist: &Histogram<u64>) -> Option<[f64; 3]> {
    (!hist.is_empty()).then(|| [0.50, 0.95, 0.99].map(|q| hist.value_at_quantile(q) as f64))
}

/// Scenario 1: closed-loop echo, one message in flight per connection.
pub async fn echo(
    addr: SocketAddr,
    pid: u32,
    proto: Proto,
    conns: usize,
    size: usize,
    timing: Timing,
) -> Result<Sample, String> {
    let target = Target::single(addr, pid);
    let clients = connect_all(&target.addrs, proto, conns, 4096).await?;
    let pad = pad_for(size);
    measure_loops(clients, timing, &target, move |conn, shared| async move {
        echo_loop(conn, &shared, pad).await
    })
    .await
}

/// Runs `client_loop` on every connection (a failure stops the measurement with its error)
/// and measures the server while they run.
async fn measure_loops<F, Fut>(
    clients: Vec<Conn>,
    timing: Timing,
    target: &Target,
    client_loop: F,
) -> Result<Sample, String>
where
    F: Fn(Conn, Rc<Shared>) -> Fut,
    Fut: std::future::Future<Output = io::Result<()>> + 'static,
{
    let shared = Shared::new();
    let n = clients.len();
    let tasks = Tasks(
        clients
            .into_iter()
            .map(|conn| {
                let shared = Rc::clone(&shared);
                let run = client_loop(conn, Rc::clone(&shared));
                tokio::task::spawn_local(async move {
                    if let Err(error) = run.await {
                        shared.fail(error);
                    }
                })
            })
            .collect(),
    );
    let sample = measure(&shared, timing, target, n).await;
    drop(tasks);
    sample
}

async fn echo_loop(mut conn: Conn, shared: &Shared, pad: usize) -> io::Result<()> {
    let mut message = Message::new("echo", None, 0, pad, conn.key);
    let wsrelay = conn.proto == Proto::Wsrelay;
    let mut id = FIRST_ID;
    loop {
        id += 1;
        let sent = shared.now_us();
        conn.stream.write_all(message.stamp(id, sent)).await?;
        let mut ack = None;
        loop {
            let frame = timeout(conn.next()).await?;
            if wsrelay {
                if is_control(conn.reader.data(&frame)) {
                    continue;
                }
                ack = conn.count_reliable();
            }
            break;
        }
        shared.delivered(Some(sent));
        if let Some(ack) = ack {
            conn.stream.write_all(&ack).await?;
        }
    }
}

/// Bounds every wait for the server (a stalled server fails the run instead of hanging it).
async fn timeout<T>(future: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no frame for 10 s")))
}

/// Scenario 2: `pairs` pairs of clients bounce one directed message each (`to` = partner).
/// With two servers in `target`, the partners of a pair are on different servers.
pub async fn send_to(
    target: &Target,
    proto: Proto,
    pairs: usize,
    timing: Timing,
) -> Result<Sample, String> {
    let clients = connect_all(&target.addrs, proto, pairs * 2, 4096).await?;
    tokio::time::sleep(target.settle).await;
    let pad = pad_for(20);
    measure_loops(clients, timing, target, move |conn, shared| async move {
        pair_loop(conn, &shared, pad).await
    })
    .await
}

/// Whether a received frame is an application message; answers Socket.IO's pings and fails
/// on a refusal.
async fn is_app<W: tokio::io::AsyncWrite + Unpin>(
    proto: Proto,
    data: &[u8],
    write: &mut W,
    key: [u8; 4],
) -> io::Result<bool> {
    match classify(proto, data) {
        Incoming::App => Ok(true),
        Incoming::Control => Ok(false),
        Incoming::Ping => {
            write.write_all(&masked(OP_TEXT, SIO_PONG, key)).await?;
            Ok(false)
        }
        Incoming::Refused => Err(io::Error::other(format!(
            "refused by the server: {}",
            String::from_utf8_lossy(data)
        ))),
    }
}

async fn pair_loop(mut conn: Conn, shared: &Shared, pad: usize) -> io::Result<()> {
    let partner = format!("c{}", conn.index ^ 1);
    let proto = conn.proto;
    let mut message = Message::of(
        proto,
        "dm",
        Some(&partner),
        conn.index as u64,
        pad,
        conn.key,
    );
    let wsrelay = proto == Proto::Wsrelay;
    let mut id = FIRST_ID;
    if conn.index.is_multiple_of(2) {
        id += 1;
        conn.stream
            .write_all(message.stamp(id, shared.now_us()))
            .await?;
    }
    loop {
        let frame = timeout(conn.next()).await?;
        let data = conn.reader.data(&frame);
        if !is_app(proto, data, &mut conn.stream, conn.key).await? {
            continue;
        }
        shared.delivered(stamp_of(proto, data, pad).map(|(ts, _)| ts));
        let ack = if wsrelay { conn.count_reliable() } else { None };
        id += 1;
        conn.stream
            .write_all(message.stamp(id, shared.now_us()))
            .await?;
        if let Some(ack) = ack {
            conn.stream.write_all(&ack).await?;
        }
    }
}

/// Messages a broadcast sender may have in flight (sent, not yet seen by the probe client).
pub const BROADCAST_WINDOW: u64 = 32;

/// Scenario 3: `senders` clients broadcast to everybody else; every client counts deliveries.
/// Senders are paced by a probe client (a non-sender): at most [`BROADCAST_WINDOW`] messages
/// of each sender not yet delivered to it. With several servers, a sender's probe is on
/// another server than the sender, so that the window bounds what crosses between servers.
pub async fn broadcast(
    target: &Target,
    proto: Proto,
    conns: usize,
    senders: usize,
    timing: Timing,
) -> Result<Sample, String> {
    let servers = target.addrs.len();
    // Client `senders + j` is on server `(senders + j) mod servers`.
    let probe_of = move |sender: usize| {
        (senders..senders + servers.max(1))
            .find(|p| servers < 2 || p % servers != sender % servers)
            .unwrap_or(senders)
    };
    if senders + servers.max(1) > conns {
        return Err("broadcast needs more clients than senders and probes".into());
    }
    let clients = connect_all(&target.addrs, proto, conns, 16 * 1024).await?;
    tokio::time::sleep(target.settle).await;
    let shared = Shared::new();
    let pad = pad_for(20);
    let seen: Rc<Vec<Cell<u64>>> = Rc::new((0..senders).map(|_| Cell::new(0)).collect());
    let wake: Rc<Vec<Notify>> = Rc::new((0..senders).map(|_| Notify::new()).collect());
    let mut handles = Vec::new();
    for conn in clients {
        let (index, key) = (conn.index, conn.key);
        let (receiver, write) = Receiver::split(conn, pad);
        if index < senders {
            let (shared, seen, wake, write) = (
                Rc::clone(&shared),
                Rc::clone(&seen),
                Rc::clone(&wake),
                Rc::clone(&write),
            );
            handles.push(tokio::task::spawn_local(async move {
                if let Err(error) =
                    sender_loop(proto, index, key, pad, &shared, &seen, &wake, &write).await
                {
                    shared.fail(error);
                }
            }));
        }
        let (shared, seen, wake) = (Rc::clone(&shared), Rc::clone(&seen), Rc::clone(&wake));
        handles.push(tokio::task::spawn_local(async move {
            let result = receiver
                .run(&shared, &write, |sender| {
                    let sender = sender as usize;
                    if probe_of(sender) == index {
                        if let Some(count) = seen.get(sender) {
                            count.set(count.get() + 1);
                            wake[sender].notify_one();
                        }
                    }
                })
                .await;
            if let Err(error) = result {
                shared.fail(error);
            }
        }));
    }
    let tasks = Tasks(handles);
    let sample = measure(&shared, timing, target, conns).await;
    drop(tasks);
    sample
}

/// The reading side of a connection whose writes are shared with another task.
struct Receiver {
    reader: wire::Reader,
    read: OwnedReadHalf,
    proto: Proto,
    key: [u8; 4],
    pad: usize,
}

type SharedWrite = Rc<tokio::sync::Mutex<OwnedWriteHalf>>;

impl Receiver {
    fn split(conn: Conn, pad: usize) -> (Receiver, SharedWrite) {
        let Conn {
            stream,
            reader,
            key,
            proto,
            ..
        } = conn;
        let (read, write) = stream.into_split();
        let receiver = Receiver {
            reader,
            read,
            proto,
            key,
            pad,
        };
        (receiver, Rc::new(tokio::sync::Mutex::new(write)))
    }

    /// Reads frames until the connection fails: counts every application message as a
    /// delivery (latency from its stamp) and hands its sender's index to `seen`;
    /// acknowledges wsrelay frames every 32; answers pings.
    async fn run(
        mut self,
        shared: &Shared,
        write: &tokio::sync::Mutex<OwnedWriteHalf>,
        mut seen: impl FnMut(u64),
    ) -> io::Result<()> {
        let mut reliable = 0u64;
        loop {
            let frame = self.reader.next(&mut self.read).await?;
            match frame.op {
                OP_TEXT => {}
                OP_CLOSE => return Err(wire::closed(self.reader.data(&frame))),
                OP_PING => {
                    let pong = masked(0xA, self.reader.data(&frame), self.key);
                    write.lock().await.write_all(&pong).await?;
                    continue;
                }
                _ => continue,
            }
            let data = self.reader.data(&frame);
            match classify(self.proto, data) {
                Incoming::App => {}
                Incoming::Control => continue,
                Incoming::Ping => {
                    let pong = masked(OP_TEXT, SIO_PONG, self.key);
                    write.lock().await.write_all(&pong).await?;
                    continue;
                }
                Incoming::Refused => {
                    return Err(io::Error::other(String::from_utf8_lossy(data).into_owned()))
                }
            }
            let stamp = stamp_of(self.proto, data, self.pad);
            shared.delivered(stamp.map(|(ts, _)| ts));
            if let Some((_, sender)) = stamp {
                seen(sender);
            }
            if self.proto == Proto::Wsrelay {
                reliable += 1;
                if let Some(ack) = wire::ack_due(reliable, self.key) {
                    write.lock().await.write_all(&ack).await?;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn sender_loop(
    proto: Proto,
    index: usize,
    key: [u8; 4],
    pad: usize,
    shared: &Shared,
    seen: &[Cell<u64>],
    wake: &[Notify],
    write: &tokio::sync::Mutex<OwnedWriteHalf>,
) -> io::Result<()> {
    let mut message = Message::of(proto, "bc", None, index as u64, pad, key);
    let mut id = FIRST_ID;
    let mut sent = 0u64;
    loop {
        while sent - seen[index].get() >= BROADCAST_WINDOW {
            if tokio::time::timeout(Duration::from_secs(10), wake[index].notified())
                .await
                .is_err()
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("broadcast sender {index} stalled: its messages stopped arriving"),
                ));
            }
        }
        sent += 1;
        id += 1;
        let frame = message.stamp(id, shared.now_us());
        write.lock().await.write_all(frame).await?;
    }
}

/// One client broadcasting on a fixed schedule, whatever comes back (the npm rows' sender:
/// the clients measured are elsewhere). What does come back is read, acknowledged every 32
/// (wsrelay) and answered (pings), so that the server never waits on it.
pub struct Broadcaster {
    message: Message,
    /// The last message id sent.
    id: u64,
    write: SharedWrite,
    shared: Rc<Shared>,
    _reader: Tasks,
}

impl Broadcaster {
    /// Connects the sender (`c0`) to `addr`.
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Result<Broadcaster, String> {
        let conn = connect_all(&[addr], proto, 1, 4096)
            .await?
            .pop()
            .ok_or("no connection")?;
        let pad = pad_for(20);
        let message = Message::of(proto, "bc", None, 0, pad, conn.key);
        let (receiver, write) = Receiver::split(conn, pad);
        let shared = Shared::new();
        let reader = {
            let (shared, write) = (Rc::clone(&shared), Rc::clone(&write));
            tokio::task::spawn_local(async move {
                if let Err(error) = receiver.run(&shared, &write, |_| {}).await {
                    shared.fail(error);
                }
            })
        };
        Ok(Broadcaster {
            message,
            id: FIRST_ID,
            write,
            shared,
            _reader: Tasks(vec![reader]),
        })
    }

    /// Sends `count` broadcasts (20-byte payloads), `rate` per second, the first at once.
    pub async fn send(&mut self, rate: f64, count: u64) -> Result<(), String> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("a broadcast rate must be positive ({rate})"));
        }
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for _ in 0..count {
            ticks.tick().await;
            if let Some(error) = self.shared.error.borrow().clone() {
                return Err(format!("the sender failed: {error}"));
            }
            self.id += 1;
            let frame = self.message.stamp(self.id, self.shared.now_us());
            self.write
                .lock()
                .await
                .write_all(frame)
                .await
                .map_err(|e| format!("the sender failed: {e}"))?;
        }
        Ok(())
    }
}

/// Scenario 2b, open loop: in each pair one client sends directed messages to its partner on
/// a fixed schedule, `rate` messages per second in all, whatever the answers (pairs alternate
/// direction, so that with two servers half the traffic goes each way). Latency runs from the
/// write of each message (not from the tick that was due: tokio's timer fires up to a
/// millisecond late, which is not the server's doing); a server that falls behind still shows,
/// since its backlog delays the deliveries, and a load generator that falls behind shows as
/// fewer deliveries per second than the rate.
pub async fn send_to_open(
    target: &Target,
    proto: Proto,
    pairs: usize,
    rate: f64,
    timing: Timing,
) -> Result<Sample, String> {
    if pairs == 0 || !rate.is_finite() || rate <= 0.0 {
        return Err(format!(
            "an open loop needs pairs and a rate ({pairs}, {rate})"
        ));
    }
    let clients = connect_all(&target.addrs, proto, pairs * 2, 4096).await?;
    tokio::time::sleep(target.settle).await;
    let shared = Shared::new();
    let pad = pad_for(20);
    let period = Duration::from_secs_f64(pairs as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut handles = Vec::new();
    for conn in clients {
        let (index, key) = (conn.index, conn.key);
        let pair = index / 2;
        let (receiver, write) = Receiver::split(conn, pad);
        if index % 2 == pair % 2 {
            let (shared, write) = (Rc::clone(&shared), Rc::clone(&write));
            // Senders take turns over the period instead of all writing at once.
            let first = start + period.mul_f64(pair as f64 / pairs as f64);
            handles.push(tokio::task::spawn_local(async move {
                let partner = format!("c{}", index ^ 1);
                let mut message = Message::of(proto, "dm", Some(&partner), index as u64, pad, key);
                let mut ticks = tokio::time::interval_at(first, period);
                let mut id = FIRST_ID;
                loop {
                    ticks.tick().await;
                    id += 1;
                    let frame = message.stamp(id, shared.now_us());
                    if let Err(error) = write.lock().await.write_all(frame).await {
                        shared.fail(error);
                        return;
                    }
                }
            }));
        }
        let shared = Rc::clone(&shared);
        handles.push(tokio::task::spawn_local(async move {
            if let Err(error) = receiver.run(&shared, &write, |_| {}).await {
                shared.fail(error);
            }
        }));
    }
    let tasks = Tasks(handles);
    let sample = measure(&shared, timing, target, pairs * 2).await;
    drop(tasks);
    sample
}

/// Keeps a connection open and idle: answers pings; a wsrelay client also sends its `~ping`
/// every `app_ping` (the client core's `heartbeat_interval`).
async fn idle_loop(mut conn: Conn, app_ping: Option<Duration>) -> io::Result<()> {
    let ping = wire::masked(OP_TEXT, b"{\"type\":\"~ping\"}", conn.key);
    let period = app_ping.unwrap_or(Duration::from_secs(3600));
    // Spread the clients' timers over the period, as independent clients would be.
    let offset = period.mul_f64((conn.index % 997) as f64 / 997.0);
    let mut next = tokio::time::Instant::now() + offset.max(Duration::from_millis(1));
    loop {
        tokio::select! {
            frame = conn.next() => {
                let frame = frame?;
                if frame.op == OP_PING {
                    continue;
                }
            }
            () = tokio::time::sleep_until(next), if app_ping.is_some() => {
                conn.stream.write_all(&ping).await?;
                next += period;
            }
        }
    }
}

/// What an idle run measured.
pub struct IdleSample {
    /// Server RSS growth per connection, in bytes.
    pub rss_per_conn: f64,
    /// Server CPU over the heartbeat window (fraction of a core), when one was measured.
    pub cpu: Option<f64>,
}

/// Scenarios 4 and 5: `n` idle connections; RSS growth per connection, then (when
/// `cpu_window` is given) the server's CPU while they stay idle.
pub async fn idle(
    addr: SocketAddr,
    pid: u32,
    proto: Proto,
    n: usize,
    app_ping: Option<Duration>,
    cpu_window: Option<Duration>,
) -> Result<IdleSample, String> {
    let pid_text = pid.to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes(&pid_text).ok_or("cannot read the server's RSS")?;
    let clients = connect_all(&[addr], proto, n, 256).await?;
    let failed: Rc<RefCell<Option<String>>> = Rc::default();
    let tasks = Tasks(
        clients
            .into_iter()
            .map(|conn| {
                let failed = Rc::clone(&failed);
                tokio::task::spawn_local(async move {
                    if let Err(error) = idle_loop(conn, app_ping).await {
                        failed.borrow_mut().get_or_insert(error.to_string());
                    }
                })
            })
            .collect(),
    );
    // Let the server settle (hello waits, first allocations) before reading its RSS.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rss_bytes(&pid_text).ok_or("cannot read the server's RSS")?;
    let cpu = match cpu_window {
        Some(window) => {
            let meter = CpuMeter::start(pid);
            tokio::time::sleep(window).await;
            Some(meter.read())
        }
        None => None,
    };
    if let Some(error) = failed.borrow().clone() {
        return Err(format!("an idle connection failed: {error}"));
    }
    drop(tasks);
    Ok(IdleSample {
        rss_per_conn: after.saturating_sub(before) as f64 / n as f64,
        cpu,
    })
}

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
