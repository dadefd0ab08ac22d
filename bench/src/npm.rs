//! The npm rows: CPU time per delivery of the JavaScript clients, end to end. One Node process
//! (`bench/node/npm/clients.js`, on the load generator's core) hosts the receiving clients:
//! wsrelay's npm package (its Node build, installed from the packed `pkg/`) against
//! wsrelay-server, or socket.io-client against Socket.IO 4 in memory
//! (`bench/node/socketio/server.js memory`), the server on its own core. A sender in this
//! process broadcasts on a fixed schedule; the Node process measures its own CPU
//! (`process.cpuUsage`, user + system) from the end of a warm-up to the last delivery and
//! checks that every client received every broadcast, exactly once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::load::{Broadcaster, Sample};
use crate::procs::{CpuMeter, Server};
use crate::wire::Proto;

/// Extra arguments for the Node process of the clients (for profiling: `--cpu-prof
/// --cpu-prof-dir=DIR`), split on spaces.
pub const NODE_ARGS_ENV: &str = "WSRELAY_BENCH_NODE_ARGS";

/// The load of one npm row: every broadcast reaches every receiver.
#[derive(Debug, Clone, Copy)]
pub struct NpmLoad {
    /// Receiving clients in the Node process.
    pub receivers: usize,
    /// Broadcasts per second while measured.
    pub rate: f64,
    /// Broadcasts before the measurement, sent `warmup_rate` per second, then a pause of
    /// [`SETTLE`]. V8 runs a wasm function as Liftoff's baseline code until it has run enough
    /// to be compiled again by TurboFan: measured after a warm-up of half a second, wsrelay's
    /// client cost twice what it costs after several seconds of traffic (and as much as it
    /// costs at once with `--no-liftoff`). The warm-up is long enough for the measurement to
    /// see the steady state, as a long-running application does.
    pub warmup: u64,
    pub warmup_rate: f64,
    /// Broadcasts measured.
    pub measured: u64,
}

/// The pause between the warm-up and the measured broadcasts: the last acknowledgements of
/// the warm-up fall before the measurement, which starts at the first measured delivery.
const SETTLE: Duration = Duration::from_millis(200);

impl NpmLoad {
    /// Deliveries per second, in all.
    pub fn deliveries_per_s(&self) -> f64 {
        self.rate * self.receivers as f64
    }
}

/// The client library measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// wsrelay's npm package, against wsrelay-server.
    Wsrelay,
    /// socket.io-client, against Socket.IO.
    SocketIo,
}

/// Installs what the clients need in `dir` (bench/node/npm): its npm dependencies from the
/// committed lockfile when missing, then wsrelay's package as a user gets it (`npm pack` of
/// `pkg/`, `npm install` of the tarball) when the installed copy is not the one in `pkg/`.
pub fn prepare(root: &Path, dir: &Path) -> Result<(), String> {
    let built = root.join("pkg").join("node");
    if !built.join("wsrelay_bg.wasm").is_file() {
        return Err("pkg/ is not built (cargo xtask pkg; cargo xtask bench builds it)".into());
    }
    crate::node::npm_install(dir, &["ws", "socket.io-client"], "the npm rows' clients")?;
    let installed = dir.join("node_modules").join("wsrelay").join("node");
    let same = ["wsrelay_bg.wasm", "wsrelay.js"].iter().all(|file| {
        match (
            std::fs::read(built.join(file)),
            std::fs::read(installed.join(file)),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    });
    if same {
        return Ok(());
    }
    println!(
        "installing wsrelay's npm package (npm pack pkg/) in {}",
        dir.display()
    );
    let packed = std::env::temp_dir().join(format!("wsrelay-bench-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&packed);
    std::fs::create_dir_all(&packed).map_err(|e| format!("{}: {e}", packed.display()))?;
    let result = pack_and_install(root, dir, &packed);
    let _ = std::fs::remove_dir_all(&packed);
    result
}

fn pack_and_install(root: &Path, dir: &Path, packed: &Path) -> Result<(), String> {
    let status = Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(packed)
        .arg(root.join("pkg"))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if !status.success() {
        return Err(format!("npm pack pkg/ failed ({status})"));
    }
    let tarball: PathBuf = std::fs::read_dir(packed)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "tgz"))
        .ok_or("npm pack made no tarball")?;
    // Same name and version on every build: remove the old copy so npm cannot keep it.
    let _ = std::fs::remove_dir_all(dir.join("node_modules").join("wsrelay"));
    let status = Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund"])
        .arg(&tarball)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "npm install of the packed package failed ({status})"
        ))
    }
}

/// One run: `server` is wsrelay-server or the Socket.IO peer (fresh, pinned), `dir` is
/// bench/node/npm (prepared). The sample's value is microseconds of client CPU per
/// delivery; `gen_cpu` is the client process's CPU over the measured span (fraction of a
/// core) and `server_cpu` the server's.
pub async fn run(
    dir: &Path,
    client: Client,
    server: &Server,
    load: NpmLoad,
) -> Result<Sample, String> {
    let (proto, mode, url) = match client {
        Client::Wsrelay => (Proto::Wsrelay, "wsrelay", format!("ws://{}/", server.addr)),
        Client::SocketIo => (
            Proto::SocketIo,
            "socketio",
            format!("http://{}", server.addr),
        ),
    };
    let mut sender = Broadcaster::connect(server.addr, proto).await?;
    let receivers = load.receivers as u64;
    let seconds = load.warmup as f64 / load.warmup_rate + load.measured as f64 / load.rate;
    let timeout = Duration::from_secs_f64(seconds) + Duration::from_secs(10);
    let args = [
        mode.to_owned(),
        url,
        load.receivers.to_string(),
        (load.warmup * receivers).to_string(),
        (load.measured * receivers).to_string(),
        timeout.as_millis().to_string(),
    ];
    let mut clients = NodeClients::start(dir, "clients.js", "clients", &args).await?;
    let send = async {
        sender.send(load.warmup_rate, load.warmup).await?;
        tokio::time::sleep(SETTLE).await;
        let meter = CpuMeter::start(server.pid);
        sender.send(load.rate, load.measured).await?;
        Ok::<_, String>(meter)
    };
    let (meter, line) = tokio::join!(
        send,
        clients.next_line(timeout + Duration::from_secs(5), "their report"),
    );
    let server_cpu = meter?.read();
    let line = line?;
    // Closed when the run is over: the clients exit (their profile, if any, is written).
    clients.finish().await;
    let report: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("the clients' report {line:?}: {e}"))?;
    let number = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    let (delivered, expected, short) = (number("delivered"), number("expected"), number("short"));
    if delivered != expected || short != 0.0 {
        return Err(format!(
            "{delivered} of {expected} deliveries arrived ({short} of {} clients did not get \
             exactly one copy of each of the {} broadcasts)",
            load.receivers,
            load.warmup + load.measured
        ));
    }
    let (measured, cpu_us, wall_us) = (number("measured"), number("cpu_us"), number("wall_us"));
    if !(measured > 0.0 && cpu_us > 0.0 && wall_us > 0.0) {
        return Err(format!("no CPU time measured: {line}"));
    }
    Ok(Sample {
        value: cpu_us / measured,
        server_cpu,
        gen_cpu: cpu_us / wall_us,
        ..Sample::default()
    })
}

/// A Node process of clients: its stdin for commands, its stdout for answers.
pub struct NodeClients {
    child: Child,
    /// The process, for its CPU time.
    pub pid: u32,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    what: &'static str,
}

impl NodeClients {
    /// Starts `node DIR/SCRIPT ARGS` (with the extra Node arguments of [`NODE_ARGS_ENV`]) and
    /// waits for its `ready`; `what` names it in errors.
    pub async fn start(
        dir: &Path,
        script: &str,
        what: &'static str,
        args: &[String],
    ) -> Result<NodeClients, String> {
        let mut command = tokio::process::Command::new("node");
        if let Ok(extra) = std::env::var(NODE_ARGS_ENV) {
            command.args(extra.split_whitespace());
        }
        let mut child = command
            .arg(dir.join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node: {e}"))?;
        let pid = child.id().ok_or("node exited at once")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut clients = NodeClients {
            child,
            pid,
            stdin,
            lines: BufReader::new(stdout).lines(),
            what,
        };
        let ready = clients
            .next_line(Duration::from_secs(60), "being connected")
            .await?;
        if ready.trim() != "ready" {
            return Err(format!("unexpected line from the {what}: {ready:?}"));
        }
        Ok(clients)
    }

    /// Writes `line` to the process's stdin.
    pub async fn command(&mut self, line: &str) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("writing to the {}: {e}", self.what);
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(failed)?;
        self.stdin.flush().await.map_err(failed)
    }

    /// The next line the process writes, within `limit` (`waiting`: what it says, for errors).
    pub async fn next_line(&mut self, limit: Duration, waiting: &str) -> Result<String, String> {
        let what = self.what;
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(format!("the {what} exited before {waiting}")),
            Ok(Err(e)) => Err(format!("reading the {what}: {e}")),
            Err(_) => Err(format!("the {what} took over {limit:?} for {waiting}")),
        }
    }

    /// Sends `line` and parses the JSON line that answers it.
    pub async fn ask(
        &mut self,
        line: &str,
        limit: Duration,
        waiting: &str,
    ) -> Result<serde_json::Value, String> {
        self.command(line).await?;
        let answer = self.next_line(limit, waiting).await?;
        serde_json::from_str(&answer).map_err(|e| format!("the {}' {answer:?}: {e}", self.what))
    }

    /// Closes stdin (the process exits) and waits a little for it.
    pub async fn finish(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
