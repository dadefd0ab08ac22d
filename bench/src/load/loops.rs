//! The closed loops and the idle connections: echo (scenario 1), send_to between pairs
//! (scenario 2), idle connections and the heartbeat (scenarios 4 and 5).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::procs::{rss_bytes, CpuMeter};
use crate::wire::{
    self, classify, is_control, masked, stamp_of, Conn, Incoming, Message, Proto, FIRST_ID,
    OP_PING, OP_TEXT, SIO_PONG,
};

use super::{connect_all, measure, pad_for, timeout, Sample, Shared, Target, Tasks, Timing};

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
                let data = conn.reader.data(&frame);
                if is_control(data) {
                    continue;
                }
                ack = conn.acks.count(data, conn.key);
            }
            break;
        }
        shared.delivered(Some(sent));
        if let Some(ack) = ack {
            conn.stream.write_all(&ack).await?;
        }
    }
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
        let ack = if wsrelay {
            conn.acks.count(data, conn.key)
        } else {
            None
        };
        id += 1;
        conn.stream
            .write_all(message.stamp(id, shared.now_us()))
            .await?;
        if let Some(ack) = ack {
            conn.stream.write_all(&ack).await?;
        }
    }
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
