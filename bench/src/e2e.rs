//! The end-to-end row: JavaScript clients on both ends, the server in the middle, each peer
//! with its defaults. Two Node processes (`bench/node/npm/e2e.js`, both on the load
//! generator's core): one hosts the senders, each keeping a fixed number of broadcasts in
//! flight (the next sent as each is acknowledged), the other the receivers, which check that
//! every message of every sender arrives, in order, exactly once. wsrelay's npm package talks
//! to the `wsrelay-server` binary started with its default flags (only `--port 0`);
//! socket.io-client to Socket.IO 4 in memory (`bench/node/socketio/server.js memory`). The
//! server is pinned to its own core. The harness drives both processes over their stdin and
//! reads the deliveries and CPU time of every process over a window after a warm-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::npm::{Client, NodeClients};
use crate::procs::{CpuMeter, Server};

/// The relay binary used instead of the one built next to this program.
pub const RELAY_ENV: &str = "WSRELAY_BENCH_RELAY";

/// The `wsrelay-server` binary: `WSRELAY_BENCH_RELAY`, or the one in this program's
/// directory (`cargo xtask bench` builds both in release).
pub fn relay_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(RELAY_ENV) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .map(|dir| dir.join("wsrelay-server"))
        .ok_or("no directory for this program")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not built (cargo build -p wsrelay-server, or set {RELAY_ENV})",
            path.display()
        ))
    }
}

/// The load of the end-to-end row.
#[derive(Debug, Clone, Copy)]
pub struct E2eLoad {
    /// Sending clients, in one Node process.
    pub senders: usize,
    /// Messages each sender keeps sent and not yet acknowledged.
    pub in_flight: usize,
    /// Receiving clients, in the other Node process: every message reaches each of them.
    pub receivers: usize,
    /// Sending before the window: the connections fill up and V8 compiles the hot code
    /// (wasm runs as Liftoff's baseline code until TurboFan has compiled it).
    pub warmup: Duration,
    /// The window measured.
    pub window: Duration,
}

impl E2eLoad {
    /// The row's scenario name.
    pub fn name(&self) -> String {
        format!(
            "end to end, {} senders x {} in flight, {} receivers",
            self.senders, self.in_flight, self.receivers
        )
    }
}

/// One end-to-end run.
#[derive(Debug, Clone)]
pub struct E2eSample {
    /// Deliveries per second over the window (one message reaching one receiver's handler).
    pub deliveries_per_s: f64,
    /// CPU over the window, fraction of a core: the server, the senders' Node process, the
    /// receivers' Node process.
    pub server_cpu: f64,
    pub senders_cpu: f64,
    pub receivers_cpu: f64,
    /// Messages the senders sent in the whole run, and deliveries expected and seen.
    pub messages: u64,
    pub expected: u64,
    pub delivered: u64,
    /// Copies of messages the senders received from each other (not deliveries).
    pub echoes: u64,
}

impl E2eSample {
    /// Server CPU per delivery, µs.
    pub fn server_us(&self) -> f64 {
        self.server_cpu * 1e6 / self.deliveries_per_s
    }

    /// Both client processes' CPU per delivery, µs.
    pub fn clients_us(&self) -> f64 {
        (self.senders_cpu + self.receivers_cpu) * 1e6 / self.deliveries_per_s
    }
}

/// A number of a JSON report (NaN when absent: every check below then fails).
fn number(value: &serde_json::Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or(f64::NAN)
}

/// One run against `server` (fresh, pinned): wsrelay-server's binary for
/// [`Client::Wsrelay`], Socket.IO in memory for [`Client::SocketIo`]. `dir` is
/// bench/node/npm, prepared. Fails unless every receiver got every message exactly once.
pub async fn run(
    dir: &Path,
    client: Client,
    server: &Server,
    load: E2eLoad,
) -> Result<E2eSample, String> {
    let (mode, url) = match client {
        Client::Wsrelay => ("wsrelay", format!("ws://{}/", server.addr)),
        Client::SocketIo => ("socketio", format!("http://{}", server.addr)),
    };
    // Receivers first: a broadcast reaches the clients connected when it is relayed.
    let mut receivers = NodeClients::start(
        dir,
        "e2e.js",
        "receivers",
        &[
            "receive".into(),
            mode.into(),
            url.clone(),
            load.receivers.to_string(),
            load.senders.to_string(),
        ],
    )
    .await?;
    let mut senders = NodeClients::start(
        dir,
        "e2e.js",
        "senders",
        &[
            "send".into(),
            mode.into(),
            url,
            load.senders.to_string(),
            load.in_flight.to_string(),
        ],
    )
    .await?;
    senders.command("go").await?;
    tokio::time::sleep(load.warmup).await;
    // A loaded event loop answers late (seen: over 5 s in a first run): the window is read
    // on the receivers' clock and the CPU meters start and stop with their answers, so a late
    // answer lengthens the window and does not skew it.
    let second = Duration::from_secs(30);
    let start = receivers.ask("mark", second, "the mark").await?;
    let meters = [server.pid, senders.pid, receivers.pid].map(CpuMeter::start);
    tokio::time::sleep(load.window).await;
    let end = receivers.ask("mark", second, "the mark").await?;
    let [server_cpu, senders_cpu, receivers_cpu] = meters.map(|m| m.read());
    let drain = Duration::from_secs(30);
    let sent = senders.ask("stop", drain, "their report").await?;
    let counts: Vec<u64> = sent["sent"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    if counts.len() != load.senders {
        return Err(format!("the senders' report {sent}: no count per sender"));
    }
    if number(&sent, "failed") != 0.0 {
        return Err(format!(
            "{} sends failed (first: {})",
            sent["failed"], sent["error"]
        ));
    }
    let list = counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let check = receivers
        .ask(
            &format!("expect {list} {}", drain.as_millis()),
            drain + second,
            "their report",
        )
        .await?;
    senders.finish().await;
    receivers.finish().await;
    let messages: u64 = counts.iter().sum();
    let (expected, delivered) = (number(&check, "expected"), number(&check, "delivered"));
    if check["complete"] != serde_json::Value::Bool(true) {
        return Err(format!(
            "{delivered} of {expected} deliveries arrived: {} duplicates, {} missing or out of \
             order, {} malformed, {} of {} receivers short",
            check["duplicates"], check["gaps"], check["malformed"], check["short"], load.receivers
        ));
    }
    let deliveries = number(&end, "delivered") - number(&start, "delivered");
    let micros = number(&end, "t_us") - number(&start, "t_us");
    if !(deliveries > 0.0 && micros > 0.0) {
        return Err(format!(
            "nothing delivered in the window ({start} to {end})"
        ));
    }
    Ok(E2eSample {
        deliveries_per_s: deliveries * 1e6 / micros,
        server_cpu,
        senders_cpu,
        receivers_cpu,
        messages,
        expected: expected as u64,
        delivered: delivered as u64,
        echoes: sent["echoes"].as_u64().unwrap_or(0),
    })
}
