//! `wsrelay-bench`: wsrelay-server side by side with its peers, in one command.
//!
//! - `wsrelay-bench run [--quick | --smoke] [--md PATH] [--json PATH] [--note TEXT]`: runs
//!   every scenario (full mode by default), prints the table of ratios and writes
//!   `BENCHMARKS.md` and `bench/results.json` (`--smoke`: tiny sizes, about a second per
//!   scenario, checks the harness, writes nothing unless asked to).
//! - `wsrelay-bench serve KIND ...`: one server under test (started by `run`).
//! - `wsrelay-bench drive echo|broadcast|idle ADDR PID N SECS [plain] [PAYLOAD_BYTES]`: loads a
//!   server started by hand (for profiling it: perf, valgrind).
//!
//! `cargo xtask bench` builds this in release and runs it.

mod load;
mod procs;
mod report;
mod servers;
mod wire;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use load::{Sample, Timing};
use procs::ServerCmd;
use report::{Cell, Context, Metric, Run, Verdict};
use wire::Proto;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => servers::serve(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("drive") => drive(&args[1..]),
        _ => Err(
            "usage: wsrelay-bench run [--quick | --smoke] [--md PATH] [--json PATH] [--note TEXT]\n       wsrelay-bench serve KIND"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wsrelay-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Wsrelay,
    Raw,
    Tt,
    Tt4k,
    Node,
}

const OURS: &str = "wsrelay";

impl Peer {
    fn code(self) -> &'static str {
        match self {
            Peer::Wsrelay => OURS,
            Peer::Raw => "R",
            Peer::Tt => "T",
            Peer::Tt4k => "T4k",
            Peer::Node => "N",
        }
    }

    fn proto(self) -> Proto {
        match self {
            Peer::Wsrelay => Proto::Wsrelay,
            Peer::Raw => Proto::Raw,
            _ => Proto::Plain,
        }
    }
}

const LABELS: [(&str, &str); 6] = [
    (OURS, "wsrelay-server (this repository), default `ServerConfig`, current-thread runtime"),
    ("R", "raw TCP (the ceiling): echo = one read, one write; fan-out = frames copied verbatim to each recipient's buffer, one write per recipient per wake-up; no WebSocket processing"),
    ("T", "minimal tokio-tungstenite 0.29, defaults (128 KiB read buffer): echo = `send` per message; hub = unbounded queue per connection, feed every queued frame then one flush"),
    ("T4k", "the same tokio-tungstenite echo server / hub with a 4 KiB read buffer (tuned)"),
    ("N", "Node's `ws` 8 (npm), written as its README does: echo, broadcast loop over `wss.clients`, heartbeat idiom"),
    ("T client", "a tokio-tungstenite client sending the same wsrelay frames by hand (scenario 6)"),
];

/// What a server is started for.
#[derive(Debug, Clone, Copy)]
enum Role {
    Echo,
    Broadcast,
    Pairs,
    Idle { ping_ms: u64 },
}

/// Sizes and durations of one mode.
#[derive(Debug, Clone)]
struct Plan {
    name: &'static str,
    reps: usize,
    timing: Timing,
    echo: Vec<(usize, usize)>,
    pairs: usize,
    broadcast: Vec<(usize, usize)>,
    idle_conns: usize,
    idle_reps: usize,
    heartbeat_window: Duration,
    heartbeat_fast_window: Duration,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            name: "full",
            reps: 3,
            timing: Timing {
                warmup: Duration::from_millis(1000),
                window: Duration::from_millis(3000),
            },
            echo: vec![
                (20, 1),
                (20, 100),
                (20, 1000),
                (1024, 1),
                (1024, 100),
                (1024, 1000),
            ],
            pairs: 500,
            broadcast: vec![(1000, 1), (1000, 4), (5000, 4)],
            idle_conns: 10_000,
            idle_reps: 3,
            heartbeat_window: Duration::from_secs(31),
            heartbeat_fast_window: Duration::from_secs(10),
        }
    }

    fn quick() -> Plan {
        Plan {
            name: "quick",
            reps: 3,
            timing: Timing {
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(800),
            },
            echo: vec![(20, 1), (20, 100), (20, 1000), (1024, 100)],
            pairs: 500,
            broadcast: vec![(1000, 1), (1000, 4), (5000, 4)],
            idle_conns: 10_000,
            idle_reps: 1,
            heartbeat_window: Duration::from_secs(10),
            heartbeat_fast_window: Duration::from_secs(5),
        }
    }

    fn smoke() -> Plan {
        Plan {
            name: "smoke",
            reps: 1,
            timing: Timing {
                warmup: Duration::from_millis(100),
                window: Duration::from_millis(300),
            },
            echo: vec![(20, 1), (1024, 10)],
            pairs: 5,
            broadcast: vec![(20, 2)],
            idle_conns: 100,
            idle_reps: 1,
            heartbeat_window: Duration::from_millis(500),
            heartbeat_fast_window: Duration::from_millis(1200),
        }
    }
}

/// Options of `run`.
struct Options {
    plan: Plan,
    md: Option<PathBuf>,
    json: Option<PathBuf>,
    note: Option<String>,
    pin: bool,
}

fn parse_run_args(args: &[String]) -> Result<Options, String> {
    let root = repo_root();
    let mut plan = Plan::full();
    let mut md = Some(root.join("BENCHMARKS.md"));
    let mut json = Some(root.join("bench").join("results.json"));
    let mut note = None;
    let mut pin = true;
    let mut smoke = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--quick" => plan = Plan::quick(),
            "--full" => plan = Plan::full(),
            "--smoke" => {
                plan = Plan::smoke();
                smoke = true;
            }
            "--no-pin" => pin = false,
            "--md" | "--json" | "--note" => {
                let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--md" => md = Some(PathBuf::from(value)),
                    "--json" => json = Some(PathBuf::from(value)),
                    _ => note = Some(value.clone()),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if smoke {
        // A smoke run checks the harness; it never overwrites the committed results.
        let explicit = |p: &Option<PathBuf>, default: PathBuf| p.clone().filter(|p| *p != default);
        md = explicit(&md, root.join("BENCHMARKS.md"));
        json = explicit(&json, root.join("bench").join("results.json"));
    }
    Ok(Options {
        plan,
        md,
        json,
        note,
        pin,
    })
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

const PINNED_ENV: &str = "WSRELAY_BENCH_PINNED";

fn run(args: &[String]) -> Result<(), String> {
    let options = parse_run_args(args)?;
    // In the re-executed process (already on core 1) `can_pin` would see one core only.
    let already_pinned = std::env::var_os(PINNED_ENV).is_some();
    let pin = options.pin && (already_pinned || procs::can_pin());
    if pin && !already_pinned {
        // Re-run ourselves on core 1; the servers go to core 0.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let status = Command::new("taskset")
            .arg("-c")
            .arg("1")
            .arg(exe)
            .arg("run")
            .args(args)
            .env(PINNED_ENV, "1")
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("the pinned run failed ({status})"))
        };
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 25_000 => {
            eprintln!("note: open files limited to {limit}");
        }
        Ok(_) => {}
        Err(error) => eprintln!("note: cannot raise the open files limit: {error}"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async_run(options, pin))
}

/// Finds (or installs) the Node peer; `None` with the reason when it cannot run.
fn node_peer(root: &Path) -> Result<ServerCmd, String> {
    let dir = root.join("bench").join("node");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node not found: {e}"))?;
    if !node.status.success() {
        return Err("node --version failed".into());
    }
    if !dir.join("node_modules").join("ws").is_dir() {
        println!("installing the Node peer (npm install ws)...");
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm: {e}"))?;
        if !status.success() {
            return Err(format!("npm install failed ({status})"));
        }
    }
    Ok(ServerCmd {
        program: PathBuf::from("node"),
        args: vec![dir.join("server.js").display().to_string()],
    })
}

struct Harness {
    exe: PathBuf,
    node: Option<ServerCmd>,
    core: Option<usize>,
}

impl Harness {
    fn command(&self, peer: Peer, role: Role) -> Option<ServerCmd> {
        let ours = |args: &[&str]| {
            Some(ServerCmd {
                program: self.exe.clone(),
                args: std::iter::once("serve")
                    .chain(args.iter().copied())
                    .map(str::to_owned)
                    .collect(),
            })
        };
        match (peer, role) {
            (Peer::Wsrelay, Role::Idle { ping_ms }) => {
                ours(&["wsrelay", "--ping-ms", &ping_ms.to_string()])
            }
            (Peer::Wsrelay, _) => ours(&["wsrelay"]),
            (Peer::Raw, Role::Echo) => ours(&["raw-echo"]),
            (Peer::Raw, Role::Broadcast) => ours(&["raw-hub", "--mode", "broadcast"]),
            (Peer::Raw, Role::Pairs) => ours(&["raw-hub", "--mode", "pairs"]),
            (Peer::Raw, Role::Idle { .. }) => None,
            (Peer::Tt, Role::Echo | Role::Idle { .. }) => ours(&["tt-echo"]),
            (Peer::Tt4k, Role::Echo | Role::Idle { .. }) => {
                ours(&["tt-echo", "--read-buf", "4096"])
            }
            (Peer::Tt, _) => ours(&["tt-hub"]),
            (Peer::Tt4k, _) => ours(&["tt-hub", "--read-buf", "4096"]),
            (Peer::Node, role) => {
                let mut cmd = self.node.clone()?;
                match role {
                    Role::Echo => cmd.args.push("echo".into()),
                    Role::Idle { ping_ms } => {
                        cmd.args.push("echo".into());
                        cmd.args.push(ping_ms.to_string());
                    }
                    Role::Broadcast | Role::Pairs => cmd.args.push("hub".into()),
                }
                Some(cmd)
            }
        }
    }

    fn start(&self, peer: Peer, role: Role) -> Result<procs::Server, String> {
        let cmd = self
            .command(peer, role)
            .ok_or_else(|| format!("{} has no server for {role:?}", peer.code()))?;
        procs::start(&cmd, self.core)
    }
}

fn run_of(peer: &'static str, sample: Result<Sample, String>) -> Run {
    match sample {
        Ok(s) => Run {
            peer,
            value: Ok(s.value),
            server_cpu: Some(s.server_cpu),
            gen_cpu: Some(s.gen_cpu),
        },
        Err(e) => Run {
            peer,
            value: Err(e),
            server_cpu: None,
            gen_cpu: None,
        },
    }
}

fn metric(
    scenario: String,
    metric: &str,
    unit: &str,
    higher_better: bool,
    saturate: bool,
) -> Metric {
    Metric {
        scenario,
        metric: metric.into(),
        unit: unit.into(),
        higher_better,
        saturate,
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn progress(cell: &str, peer: Peer, rep: usize, result: &Result<Sample, String>) {
    match result {
        Ok(s) => println!(
            "  {cell} [{}] rep {}: {} (server {:.0}%, load {:.0}%){}",
            peer.code(),
            rep + 1,
            report::fmt_value(s.value),
            s.server_cpu * 100.0,
            s.gen_cpu * 100.0,
            s.latency
                .map(|l| format!(", p50 {:.0} µs, p95 {:.0} µs", l[0], l[1]))
                .unwrap_or_default()
        ),
        Err(e) => println!("  {cell} [{}] rep {}: FAILED: {e}", peer.code(), rep + 1),
    }
}

async fn async_run(options: Options, pinned: bool) -> Result<(), String> {
    let started = Instant::now();
    let root = repo_root();
    let plan = options.plan.clone();
    let load_before = loadavg();
    let node = match node_peer(&root) {
        Ok(cmd) => Some(cmd),
        Err(reason) => {
            println!("note: Node peer unavailable ({reason}); its rows are skipped");
            None
        }
    };
    let harness = Harness {
        exe: std::env::current_exe().map_err(|e| e.to_string())?,
        node,
        core: pinned.then_some(0),
    };
    let mut peers = vec![Peer::Wsrelay, Peer::Raw, Peer::Tt, Peer::Tt4k];
    if harness.node.is_some() {
        peers.push(Peer::Node);
    }
    let mut cells: Vec<Cell> = Vec::new();
    let timing = plan.timing;
    println!(
        "wsrelay-bench: {} mode, {} repetitions, servers on {}",
        plan.name,
        plan.reps,
        if pinned {
            "core 0, load on core 1"
        } else {
            "any core (not pinned)"
        }
    );

    // 1. Echo.
    for &(size, conns) in &plan.echo {
        let name = format!("echo {} x{conns}", size_name(size));
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "msgs/s", "msg/s", true, conns > 1),
            runs: Vec::new(),
        };
        for rep in 0..plan.reps {
            for &peer in &peers {
                let result = match harness.start(peer, Role::Echo) {
                    Ok(server) => {
                        load::echo(server.addr, server.pid, peer.proto(), conns, size, timing).await
                    }
                    Err(e) => Err(e),
                };
                progress(&name, peer, rep, &result);
                cell.runs.push(run_of(peer.code(), result));
            }
        }
        cells.push(cell);
    }

    // 2. send_to between pairs.
    {
        let name = format!("send_to {} pairs", plan.pairs);
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "deliveries/s", "msg/s", true, true),
            runs: Vec::new(),
        };
        for rep in 0..plan.reps {
            for &peer in &peers {
                let result = match harness.start(peer, Role::Pairs) {
                    Ok(server) => {
                        load::send_to(server.addr, server.pid, peer.proto(), plan.pairs, timing)
                            .await
                    }
                    Err(e) => Err(e),
                };
                progress(&name, peer, rep, &result);
                cell.runs.push(run_of(peer.code(), result));
            }
        }
        cells.push(cell);
    }

    // 3. Broadcast excluding the sender.
    for &(conns, senders) in &plan.broadcast {
        let name = format!("broadcast {conns}x{senders}");
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "deliveries/s", "msg/s", true, true),
            runs: Vec::new(),
        };
        let mut p95 = Cell {
            metric: metric(name.clone(), "p95 latency", "ms", false, false),
            runs: Vec::new(),
        };
        for rep in 0..plan.reps {
            for &peer in &peers {
                let result = match harness.start(peer, Role::Broadcast) {
                    Ok(server) => {
                        load::broadcast(
                            server.addr,
                            server.pid,
                            peer.proto(),
                            conns,
                            senders,
                            timing,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                progress(&name, peer, rep, &result);
                let latency = result.as_ref().map_err(Clone::clone).and_then(|s| {
                    s.latency
                        .map(|l| l[1] / 1000.0)
                        .ok_or_else(|| "no latency recorded".to_owned())
                });
                p95.runs.push(Run {
                    peer: peer.code(),
                    value: latency,
                    server_cpu: result.as_ref().ok().map(|s| s.server_cpu),
                    gen_cpu: result.as_ref().ok().map(|s| s.gen_cpu),
                });
                cell.runs.push(run_of(peer.code(), result));
            }
        }
        cells.push(cell);
        if conns >= 5000 || plan.broadcast.len() == 1 {
            cells.push(p95);
        }
    }

    // 4 and 5. Idle memory, and the heartbeat's CPU at the default interval (same runs).
    let idle_peers: Vec<Peer> = peers.iter().copied().filter(|p| *p != Peer::Raw).collect();
    let default_ping = wsrelay_server::ServerConfig::default().ping_interval;
    let default_ping_ms = u64::try_from(default_ping.as_millis()).unwrap_or(30_000);
    let app_ping = Some(Duration::from_secs(15));
    {
        let n = plan.idle_conns;
        let name = format!("idle {n} conns");
        let hb_name = format!("heartbeat {n} idle, ping {} s", default_ping.as_secs());
        println!("{name} / {hb_name}");
        let mut memory = Cell {
            metric: metric(name.clone(), "server RSS per conn", "KiB", false, false),
            runs: Vec::new(),
        };
        let mut heartbeat = Cell {
            metric: metric(hb_name.clone(), "server CPU", "% of a core", false, false),
            runs: Vec::new(),
        };
        for rep in 0..plan.idle_reps {
            for &peer in &idle_peers {
                let with_heartbeat = matches!(peer, Peer::Wsrelay | Peer::Node);
                let role = Role::Idle {
                    ping_ms: default_ping_ms,
                };
                let result = match harness.start(peer, role) {
                    Ok(server) => {
                        load::idle(
                            server.addr,
                            server.pid,
                            peer.proto(),
                            n,
                            (peer == Peer::Wsrelay).then_some(app_ping).flatten(),
                            with_heartbeat.then_some(plan.heartbeat_window),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match &result {
                    Ok(s) => println!(
                        "  {name} [{}] rep {}: {:.2} KiB/conn{}",
                        peer.code(),
                        rep + 1,
                        s.rss_per_conn / 1024.0,
                        s.cpu
                            .map(|c| format!(", heartbeat CPU {:.2}%", c * 100.0))
                            .unwrap_or_default()
                    ),
                    Err(e) => println!("  {name} [{}] rep {}: FAILED: {e}", peer.code(), rep + 1),
                }
                memory.runs.push(Run {
                    peer: peer.code(),
                    value: result
                        .as_ref()
                        .map(|s| s.rss_per_conn / 1024.0)
                        .map_err(Clone::clone),
                    server_cpu: None,
                    gen_cpu: None,
                });
                if with_heartbeat {
                    heartbeat.runs.push(Run {
                        peer: peer.code(),
                        value: result
                            .as_ref()
                            .map_err(Clone::clone)
                            .and_then(|s| s.cpu.map(|c| c * 100.0).ok_or_else(|| "no CPU".into())),
                        server_cpu: None,
                        gen_cpu: None,
                    });
                }
            }
        }
        cells.push(memory);
        cells.push(heartbeat);

        // 5b. Heartbeat at a 1 s ping interval.
        let fast_name = format!("heartbeat {n} idle, ping 1 s");
        println!("{fast_name}");
        let mut fast = Cell {
            metric: metric(fast_name.clone(), "server CPU", "% of a core", false, false),
            runs: Vec::new(),
        };
        for rep in 0..plan.idle_reps {
            for &peer in idle_peers
                .iter()
                .filter(|p| matches!(p, Peer::Wsrelay | Peer::Node))
            {
                let result = match harness.start(peer, Role::Idle { ping_ms: 1000 }) {
                    Ok(server) => {
                        load::idle(
                            server.addr,
                            server.pid,
                            peer.proto(),
                            n,
                            (peer == Peer::Wsrelay).then_some(app_ping).flatten(),
                            Some(plan.heartbeat_fast_window),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                let value = result
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.cpu.map(|c| c * 100.0).ok_or_else(|| "no CPU".into()));
                match &value {
                    Ok(v) => println!("  {fast_name} [{}] rep {}: {v:.2}%", peer.code(), rep + 1),
                    Err(e) => println!(
                        "  {fast_name} [{}] rep {}: FAILED: {e}",
                        peer.code(),
                        rep + 1
                    ),
                }
                fast.runs.push(Run {
                    peer: peer.code(),
                    value,
                    server_cpu: None,
                    gen_cpu: None,
                });
            }
        }
        cells.push(fast);
    }

    // 6. Native client throughput, and the wasm package's size.
    {
        let name = "native client, 1 conn".to_owned();
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "acked msgs/s", "msg/s", true, false),
            runs: Vec::new(),
        };
        for rep in 0..plan.reps {
            for ours in [true, false] {
                let result = match harness.start(Peer::Wsrelay, Role::Echo) {
                    Ok(server) => {
                        if ours {
                            load::client_wsrelay(server.addr, server.pid, 256, timing).await
                        } else {
                            load::client_tungstenite(server.addr, server.pid, 256, timing).await
                        }
                    }
                    Err(e) => Err(e),
                };
                let code = if ours { OURS } else { "T client" };
                match &result {
                    Ok(s) => println!(
                        "  {name} [{code}] rep {}: {} (server {:.0}%, client process {:.0}%)",
                        rep + 1,
                        report::fmt_value(s.value),
                        s.server_cpu * 100.0,
                        s.gen_cpu * 100.0
                    ),
                    Err(e) => println!("  {name} [{code}] rep {}: FAILED: {e}", rep + 1),
                }
                cell.runs.push(run_of(code, result));
            }
        }
        cells.push(cell);
        cells.push(wasm_size(&root));
    }

    // Work per server CPU-second, next to each throughput cell.
    let cells: Vec<Cell> = cells
        .into_iter()
        .flat_map(|cell| {
            let extra = cell.metric.saturate.then(|| report::per_cpu(&cell));
            std::iter::once(cell).chain(extra)
        })
        .collect();
    let verdicts = verdicts(&cells, &plan);
    let machine = machine();
    let date = now_utc();
    let ctx = Context {
        mode: plan.name.into(),
        date,
        machine,
        load_before,
        load_after: loadavg(),
        duration_s: started.elapsed().as_secs_f64(),
        pinned,
        note: options.note.clone(),
        labels: LABELS.to_vec(),
    };
    let table = report::table(&cells, OURS);
    println!("\n{table}");
    for v in &verdicts {
        println!(
            "target: {} -> {} ({})",
            v.target,
            v.measured,
            match v.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
    }
    if let Some(path) = &options.md {
        let analysis = std::fs::read_to_string(root.join("bench").join("ANALYSIS.md")).ok();
        let text = report::markdown(&cells, OURS, &ctx, &verdicts, analysis.as_deref());
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &options.json {
        let rows = report::json_rows(&cells, OURS, &ctx);
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "wsrelay-bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The harness is checked by the smoke run: every scenario must have produced a value.
    let missing: Vec<String> = cells
        .iter()
        .filter(|c| !c.metric.scenario.starts_with("wasm package") && c.summary(OURS).is_none())
        .map(|c| format!("{} ({})", c.metric.scenario, c.metric.metric))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("no result for: {}", missing.join(", ")))
    }
}

/// The wasm package's gzipped size (wasm + JS glue), from `pkg/` when it was built.
fn wasm_size(root: &Path) -> Cell {
    let mut cell = Cell {
        metric: metric(
            "wasm package (pkg/web: .wasm + .js glue)".into(),
            "gzip size",
            "KB",
            false,
            false,
        ),
        runs: Vec::new(),
    };
    // The browser build (`pkg/web`) is what a page downloads.
    let web = root.join("pkg").join("web");
    let dir = if web.is_dir() { web } else { root.join("pkg") };
    let value = gzip_size_of_pkg(&dir);
    cell.runs.push(Run {
        peer: OURS,
        value: value.map(|bytes| bytes as f64 / 1000.0),
        server_cpu: None,
        gen_cpu: None,
    });
    // Reference from ../shared/BENCHMARKS.md (not measured here): a wasm-bindgen client
    // using the browser's JSON, ~10 KB wasm + 2.8 KB glue.
    cell.runs.push(Run {
        peer: "ref",
        value: Ok(12.8),
        server_cpu: None,
        gen_cpu: None,
    });
    cell
}

fn gzip_size_of_pkg(pkg: &Path) -> Result<u64, String> {
    let entries =
        std::fs::read_dir(pkg).map_err(|_| "pkg/ not built (cargo xtask pkg)".to_owned())?;
    let mut total = 0;
    let mut files = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if ext == "wasm" || (ext == "js" && !name.ends_with(".d.js")) {
            let out = Command::new("gzip")
                .args(["-9", "-c"])
                .arg(&path)
                .output()
                .map_err(|e| format!("gzip: {e}"))?;
            total += out.stdout.len() as u64;
            files += 1;
        }
    }
    if files == 0 {
        return Err("pkg/ has no .wasm or .js".into());
    }
    Ok(total)
}

fn find<'a>(cells: &'a [Cell], scenario: &str, metric: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.metric.scenario == scenario && c.metric.metric == metric)
}

/// A ratio target. When either server stayed below 95% of its core in every run (a machine
/// shared with other work), the throughput ratio compares schedulers more than servers: the
/// verdict then uses the ratio of work per server CPU-second, and says so.
fn ratio_verdict(
    cells: &[Cell],
    scenario: &str,
    metric: &str,
    peer: &str,
    at_least: f64,
    what: String,
) -> Verdict {
    let Some(cell) = find(cells, scenario, metric) else {
        return Verdict {
            target: what,
            measured: "-".into(),
            met: None,
        };
    };
    let ratio = cell.ratio(OURS, peer);
    let unsaturated = [OURS, peer]
        .iter()
        .any(|p| cell.summary(p).is_some_and(|s| s.unsaturated));
    let per_cpu = find(cells, scenario, &format!("{metric} per server CPU-second"))
        .and_then(|c| c.ratio(OURS, peer));
    let measured = match (ratio, per_cpu) {
        (Some(r), Some(c)) => format!("{r:.2}x throughput, {c:.2}x per server CPU-second"),
        (Some(r), None) => format!("{r:.2}x"),
        _ => "-".into(),
    };
    let judged_per_cpu = unsaturated && per_cpu.is_some();
    Verdict {
        target: if judged_per_cpu {
            format!("{what} (judged per server CPU-second: runs unsaturated)")
        } else {
            what
        },
        measured,
        met: if judged_per_cpu { per_cpu } else { ratio }.map(|r| r >= at_least),
    }
}

fn verdicts(cells: &[Cell], plan: &Plan) -> Vec<Verdict> {
    let echo100 = "echo 20 B x100";
    let echo1 = "echo 20 B x1";
    let bc = "broadcast 1000x4";
    let mut out = vec![
        ratio_verdict(
            cells,
            echo100,
            "msgs/s",
            "T4k",
            1.0,
            "echo 20 B x100 >= 1.0x tuned tokio-tungstenite (T4k)".into(),
        ),
        ratio_verdict(
            cells,
            echo100,
            "msgs/s",
            "N",
            1.6,
            "echo 20 B x100 >= 1.6x Node ws".into(),
        ),
        ratio_verdict(
            cells,
            echo1,
            "msgs/s",
            "R",
            0.9,
            "echo 20 B x1 round trip within 10% of raw TCP (ratio >= 0.90)".into(),
        ),
        ratio_verdict(
            cells,
            bc,
            "deliveries/s",
            "T4k",
            1.0,
            "broadcast 1000x4 >= 1.0x tokio-tungstenite hub (T4k)".into(),
        ),
        ratio_verdict(
            cells,
            bc,
            "deliveries/s",
            "T",
            1.0,
            "broadcast 1000x4 >= 1.0x tokio-tungstenite hub (T, defaults)".into(),
        ),
        ratio_verdict(
            cells,
            bc,
            "deliveries/s",
            "N",
            3.0,
            "broadcast 1000x4 >= 3x Node ws".into(),
        ),
    ];
    let idle = format!("idle {} conns", plan.idle_conns);
    let kib = find(cells, &idle, "server RSS per conn")
        .and_then(|c| c.summary(OURS))
        .map(|s| s.value);
    out.push(Verdict {
        target: format!(
            "idle memory <= 4 KB user RSS per connection ({} conns)",
            plan.idle_conns
        ),
        measured: kib.map_or("-".into(), |k| format!("{k:.2} KiB ({:.2} KB)", k * 1.024)),
        met: kib.map(|k| k * 1.024 <= 4.0),
    });
    let hb = format!("heartbeat {} idle, ping 30 s", plan.idle_conns);
    let cpu = find(cells, &hb, "server CPU")
        .and_then(|c| c.summary(OURS))
        .map(|s| s.value);
    out.push(Verdict {
        target: format!(
            "heartbeat < 1% of a core at {} idle connections, default interval",
            plan.idle_conns
        ),
        measured: cpu.map_or("-".into(), |c| format!("{c:.2}%")),
        met: cpu.map(|c| c < 1.0),
    });
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Not `available_parallelism`: this process is pinned to one core.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} vCPU, Linux {kernel}")
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}

/// `drive echo|broadcast|idle ADDR PID N SECS [plain]`: one load against a running server.
fn drive(args: &[String]) -> Result<(), String> {
    let [what, addr, pid, n, secs, rest @ ..] = args else {
        return Err(
            "usage: drive echo|broadcast|idle ADDR PID N SECS [plain] [PAYLOAD_BYTES]".into(),
        );
    };
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let pid: u32 = pid.parse().map_err(|e| format!("{pid}: {e}"))?;
    let n: usize = n.parse().map_err(|e| format!("{n}: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("{secs}: {e}"))?;
    let proto = if rest.iter().any(|p| p == "plain") {
        Proto::Plain
    } else {
        Proto::Wsrelay
    };
    // The echo payload size (default 20 bytes), to compare read buffer sizes on larger frames.
    let size: usize = match rest.iter().find(|p| *p != "plain") {
        Some(size) => size.parse().map_err(|e| format!("{size}: {e}"))?,
        None => 20,
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let timing = Timing {
        warmup: Duration::from_millis(500),
        window: Duration::from_secs_f64(secs),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match what.as_str() {
            "echo" => {
                let s = load::echo(addr, pid, proto, n, size, timing).await?;
                println!("{s:?}");
            }
            "broadcast" => {
                let s = load::broadcast(addr, pid, proto, n, 4, timing).await?;
                println!("{s:?}");
            }
            "idle" => {
                let s = load::idle(
                    addr,
                    pid,
                    proto,
                    n,
                    Some(Duration::from_secs(15)),
                    Some(timing.window),
                )
                .await?;
                println!("{:.2} KiB/conn, cpu {:?}", s.rss_per_conn / 1024.0, s.cpu);
            }
            other => return Err(format!("unknown load {other}")),
        }
        Ok(())
    })
}
