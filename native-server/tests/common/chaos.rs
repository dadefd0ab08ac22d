//! A TCP proxy that breaks the links it carries, for fault tests with real sockets: resets
//! (RST), silences of 1-2 s mid-link, and "slow starts" that hold a new link's first bytes (the
//! HTTP upgrade) for 1-2 s. In front of several upstreams it hands each new link to the next
//! one, as a round-robin load balancer would, so a client's successive attempts land on
//! different servers. Shared by `tests/faults.rs` (root crate, through `#[path]`) and the
//! cluster fault tests of the server.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// A small deterministic generator for the faults (xorshift64*).
#[derive(Debug, Clone)]
pub struct Dice(pub u64);

impl Dice {
    /// The next raw draw.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi)` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// How a [`ChaosProxy`] behaves.
#[derive(Debug, Clone)]
pub struct Chaos {
    /// Where links go: link `n` to `upstreams[n % len]` (the next one when that refuses).
    pub upstreams: Vec<SocketAddr>,
    /// Seed of the faults' dice.
    pub seed: u64,
    /// Whether faults are on from the start (see [`ChaosProxy::set_faults`]).
    pub faults: bool,
    /// Percentage of new links (made while faults are on) whose first bytes from the client
    /// are held for `slow_start_ms` before they are forwarded.
    pub slow_start_percent: u64,
    /// How long a slow start holds the client's first bytes: uniform in this range of ms.
    pub slow_start_ms: (u64, u64),
}

impl Chaos {
    /// One upstream, faults on, no slow start: resets and silences only.
    pub fn new(upstream: SocketAddr, seed: u64) -> Chaos {
        Chaos {
            upstreams: vec![upstream],
            seed,
            faults: true,
            slow_start_percent: 0,
            slow_start_ms: (1000, 2000),
        }
    }
}

/// How many faults of each kind a [`ChaosProxy`] did, and how many links it carried.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Links accepted from clients.
    pub links: AtomicU64,
    /// Links whose upstream refused, carried to the next one instead.
    pub failovers: AtomicU64,
    /// Links whose upstream(s) all refused (closed at once).
    pub refused: AtomicU64,
    /// Links reset (RST both ways).
    pub resets: AtomicU64,
    /// Silences of 1-2 s (nothing forwarded either way, then everything).
    pub silences: AtomicU64,
    /// New links whose first client bytes were held for 1-2 s.
    pub slow_starts: AtomicU64,
    /// Links per upstream (in the order of [`Chaos::upstreams`]).
    pub per_upstream: Vec<AtomicU64>,
}

/// A snapshot of [`FaultCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Links accepted from clients.
    pub links: u64,
    /// Links carried to another upstream than theirs, which refused.
    pub failovers: u64,
    /// Links whose upstream(s) all refused.
    pub refused: u64,
    /// Links reset.
    pub resets: u64,
    /// Silences of 1-2 s.
    pub silences: u64,
    /// Slow starts (first client bytes held 1-2 s).
    pub slow_starts: u64,
    /// Links per upstream.
    pub per_upstream: Vec<u64>,
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "links {} (per upstream {:?}, failovers {}, refused {}), resets {}, silences {}, \
             slow starts {}",
            self.links,
            self.per_upstream,
            self.failovers,
            self.refused,
            self.resets,
            self.silences,
            self.slow_starts
        )
    }
}

/// A TCP proxy whose every link, while faults are on, is reset after an exponential-ish time
/// of mean ~2 s, or goes silent (nothing forwarded either way) for 1-2 s first; some new links
/// start slowly (see [`Chaos::slow_start_percent`]).
pub struct ChaosProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    faults: Arc<AtomicBool>,
    counters: Arc<FaultCounters>,
    acceptor: tokio::task::AbortHandle,
}

impl ChaosProxy {
    /// One upstream, faults on from the start, resets and silences only (no slow start).
    pub async fn start(upstream: SocketAddr, seed: u64) -> ChaosProxy {
        ChaosProxy::start_with(Chaos::new(upstream, seed)).await
    }

    /// A proxy as `chaos` says.
    pub async fn start_with(chaos: Chaos) -> ChaosProxy {
        assert!(!chaos.upstreams.is_empty(), "a proxy needs an upstream");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let faults = Arc::new(AtomicBool::new(chaos.faults));
        let counters = Arc::new(FaultCounters {
            per_upstream: chaos.upstreams.iter().map(|_| AtomicU64::new(0)).collect(),
            ..FaultCounters::default()
        });
        let (on, counts) = (Arc::clone(&faults), Arc::clone(&counters));
        let acceptor = tokio::spawn(async move {
            let mut link = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                link += 1;
                counts.links.fetch_add(1, Ordering::Relaxed);
                let mut dice = Dice(chaos.seed ^ link.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let slow = on.load(Ordering::SeqCst)
                    && chaos.slow_start_percent > 0
                    && dice.percent(chaos.slow_start_percent);
                let (on, counts, upstreams) = (
                    Arc::clone(&on),
                    Arc::clone(&counts),
                    chaos.upstreams.clone(),
                );
                // Connected in the link's task: a slow upstream does not hold the others.
                tokio::spawn(async move {
                    let Some(server) = connect(&upstreams, link, &counts).await else {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let hold = if slow {
                        counts.slow_starts.fetch_add(1, Ordering::Relaxed);
                        let (lo, hi) = chaos.slow_start_ms;
                        Some(dice.millis(lo, hi))
                    } else {
                        None
                    };
                    chaos_link(client, server, dice, hold, on, counts).await;
                });
            }
        })
        .abort_handle();
        ChaosProxy {
            addr,
            faults,
            counters,
            acceptor,
        }
    }

    /// Turns the faults on or off. Off, links that are silent finish their silence, held
    /// upgrades go on after their hold, and nothing new happens to any link.
    pub fn set_faults(&self, on: bool) {
        self.faults.store(on, Ordering::SeqCst);
    }

    /// What the proxy did so far.
    pub fn faults(&self) -> Faults {
        let c = &self.counters;
        Faults {
            links: c.links.load(Ordering::Relaxed),
            failovers: c.failovers.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            silences: c.silences.load(Ordering::Relaxed),
            slow_starts: c.slow_starts.load(Ordering::Relaxed),
            per_upstream: c
                .per_upstream
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Connects link number `link` to its upstream in turn, or to the next ones when it refuses.
async fn connect(
    upstreams: &[SocketAddr],
    link: u64,
    counters: &FaultCounters,
) -> Option<TcpStream> {
    let len = upstreams.len();
    let first = usize::try_from(link).unwrap_or(0) % len;
    for i in 0..len {
        let n = (first + i) % len;
        if let Ok(server) = TcpStream::connect(upstreams[n]).await {
            counters.per_upstream[n].fetch_add(1, Ordering::Relaxed);
            if i > 0 {
                counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            return Some(server);
        }
    }
    None
}

/// How one direction of a link ended.
enum Ended {
    /// The reading side closed cleanly: the writing side was shut down in turn (FIN).
    Closed,
    /// A read or write failed.
    Broken,
}

async fn chaos_link(
    client: TcpStream,
    server: TcpStream,
    mut dice: Dice,
    hold: Option<Duration>,
    faults: Arc<AtomicBool>,
    counters: Arc<FaultCounters>,
) {
    let silent = Arc::new(AtomicBool::new(false));
    let resume = Arc::new(Notify::new());
    // An RST rather than a FIN when the link is cut: the peers see the link die, not close.
    // (Deprecated because a non-zero linger blocks the dropping thread; a zero linger never
    // does.)
    #[allow(deprecated)]
    {
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = server.set_linger(Some(Duration::ZERO));
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut pipes = JoinSet::new();
    pipes.spawn(pipe(
        client_read,
        server_write,
        hold,
        Arc::clone(&silent),
        Arc::clone(&resume),
    ));
    pipes.spawn(pipe(
        server_read,
        client_write,
        None,
        Arc::clone(&silent),
        Arc::clone(&resume),
    ));
    loop {
        let life = dice.millis(300, 3700);
        tokio::select! {
            ended = pipes.join_next() => match ended {
                // One way closed cleanly (and was closed onwards): the other carries on.
                Some(Ok(Ended::Closed)) => continue,
                // Broken, or both ways closed: the link is over (anything left is reset).
                Some(_) | None => return,
            },
            () = tokio::time::sleep(life) => {}
        }
        if !faults.load(Ordering::SeqCst) {
            continue;
        }
        if dice.next() % 3 == 0 {
            // Silence for 1-2 s, then carry on (TCP delivers what waited).
            counters.silences.fetch_add(1, Ordering::Relaxed);
            silent.store(true, Ordering::SeqCst);
            tokio::time::sleep(dice.millis(1000, 2000)).await;
            silent.store(false, Ordering::SeqCst);
            resume.notify_waiters();
        } else {
            counters.resets.fetch_add(1, Ordering::Relaxed);
            pipes.abort_all();
            return;
        }
    }
}

/// Copies `from` to `to`, waiting while the link is `silent`; the first bytes wait `hold`
/// first. A clean end of `from` shuts `to` down (FIN), as a load balancer passes it on.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut hold: Option<Duration>,
    silent: Arc<AtomicBool>,
    resume: Arc<Notify>,
) -> Ended {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                return match to.shutdown().await {
                    Ok(()) => Ended::Closed,
                    Err(_) => Ended::Broken,
                }
            }
            Err(_) => return Ended::Broken,
            Ok(n) => n,
        };
        if let Some(hold) = hold.take() {
            tokio::time::sleep(hold).await;
        }
        while silent.load(Ordering::SeqCst) {
            let resumed = resume.notified();
            if !silent.load(Ordering::SeqCst) {
                break;
            }
            resumed.await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Ended::Broken;
        }
    }
}
