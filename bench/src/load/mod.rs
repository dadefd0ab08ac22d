//! The load generator: one single-threaded tokio runtime (pinned to core 1 by the harness),
//! one task per connection, closed loops, precomputed masked frames, hdrhistogram latencies.
//!
//! Every loop ends: tasks are aborted when the measured window is over, and every wait on the
//! network is bounded by a timeout.
//!
//! Here: what every load shares (the target, the sample, the shared counters, connecting,
//! measuring). The loads: [`loops`] (echo, send_to's closed loop, idle), [`fanout`]
//! (broadcast, send_to's open loop, the npm rows' broadcaster), [`client`] (the native
//! clients of scenario 6).

mod client;
mod fanout;
mod loops;

pub use client::{client_count, client_tungstenite, client_wsrelay};
pub use fanout::{broadcast, chat, rooms_open, send_to_open, Broadcaster};
pub use loops::{echo, idle, send_to};

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::cluster::Probe;
use crate::procs::CpuMeter;
use crate::wire::{connect, Conn, ConnectSpec, Proto, SENDER_WIDTH, TS_WIDTH};

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

/// Bounds every wait for the server (a stalled server fails the run instead of hanging it).
async fn timeout<T>(future: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no frame for 10 s")))
}
