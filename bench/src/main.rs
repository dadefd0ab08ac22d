//! `wsrelay-bench`: wsrelay-server side by side with its peers, in one command.
//!
//! - `wsrelay-bench run [--quick | --smoke] [--only GROUPS] [--md PATH] [--json PATH]
//!   [--note TEXT]`: runs every scenario (full mode by default), prints the table of ratios
//!   and writes `BENCHMARKS.md` and `bench/results.json` (`--smoke`: tiny sizes, about a second
//!   per scenario, checks the harness, writes nothing unless asked to). `--only` runs some
//!   groups of rows (comma-separated: echo, send_to, broadcast, idle, client, multicore,
//!   cluster, npm) and, like `--smoke`, writes nothing unless asked to.
//! - `wsrelay-bench serve KIND ...`: one server under test (started by `run`).
//! - `wsrelay-bench drive echo|broadcast|pairs|open|idle ADDRS PIDS N SECS [plain|socketio]
//!   [NUMBER]`: loads servers started by hand (for profiling them: perf, valgrind, node
//!   --cpu-prof); several comma-separated addresses split the clients between them.
//! - `WSRELAY_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"`: extra arguments of the Node
//!   process hosting the npm rows' clients (to profile them in the very run measured).
//! - `WSRELAY_BENCH_CLIENT_OPTIONS='{"ackDelay":500}'`: options of the npm rows' wsrelay
//!   clients, a JSON object (to compare settings side by side).
//!
//! `cargo xtask bench` builds this in release and runs it.

mod cluster;
mod load;
mod npm;
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
            "usage: wsrelay-bench run [--quick | --smoke] [--only GROUPS] [--md PATH] [--json PATH] [--note TEXT]\n       wsrelay-bench serve KIND\n       wsrelay-bench drive client ADDR ours|tt MESSAGES"
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
    /// wsrelay on a multi-thread runtime with two workers (the multi-core rows).
    Wsrelay2,
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
            Peer::Wsrelay2 => "W2",
            Peer::Raw => "R",
            Peer::Tt => "T",
            Peer::Tt4k => "T4k",
            Peer::Node => "N",
        }
    }

    fn proto(self) -> Proto {
        match self {
            Peer::Wsrelay | Peer::Wsrelay2 => Proto::Wsrelay,
            Peer::Raw => Proto::Raw,
            _ => Proto::Plain,
        }
    }
}

const LABELS: [(&str, &str); 11] = [
    (OURS, "wsrelay-server (this repository), default `ServerConfig`, current-thread runtime"),
    ("R", "raw TCP (the ceiling): echo = one read, one write; fan-out = frames copied verbatim to each recipient's buffer, one write per recipient per wake-up; no WebSocket processing"),
    ("T", "minimal tokio-tungstenite 0.29, defaults (128 KiB read buffer): echo = `send` per message; hub = unbounded queue per connection, feed every queued frame then one flush"),
    ("T4k", "the same tokio-tungstenite echo server / hub with a 4 KiB read buffer (tuned)"),
    ("N", "Node's `ws` 8 (npm), written as its README does: echo, broadcast loop over `wss.clients`, heartbeat idiom"),
    ("W2", "the same wsrelay-server on a multi-thread runtime with 2 workers, not pinned: on this 2-core machine it shares core 1 with the load generator (multi-core rows)"),
    ("T client", "a tokio-tungstenite client sending the same wsrelay frames by hand (scenario 6)"),
    ("M", "cluster rows: one wsrelay-server in memory (no Redis), every client on it: what the cluster costs (ours there: two wsrelay-server processes on one Redis)"),
    ("SIO", "cluster rows: Socket.IO 4.8 with `@socket.io/redis-adapter` 8.3 (Redis pub/sub, no connection state recovery), two Node processes on the same Redis, `redis` 6 client"),
    ("SIOs", "cluster rows: Socket.IO 4.8 with `@socket.io/redis-streams-adapter` 0.3 and connection state recovery on, two Node processes on the same Redis, `redis` 6 client"),
    ("SIOc", "npm rows: socket.io-client 4.8 (npm, websocket transport, one connection per client) in one Node process against Socket.IO 4.8 in memory (ours there: wsrelay's npm package, its Node build, against wsrelay-server); both on npm `ws` 8.21"),
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
    cluster: ClusterPlan,
    npm: NpmPlan,
}

/// Sizes of the npm rows (JavaScript clients in one Node process).
#[derive(Debug, Clone)]
struct NpmPlan {
    /// A few clients at a rate neither side saturates.
    moderate: npm::NpmLoad,
    /// Many clients, a few broadcasts per second.
    fanout: npm::NpmLoad,
    /// Run socket.io-client too (npm packages: the smoke run leaves it out).
    socketio: bool,
}

impl NpmPlan {
    fn scenarios(&self) -> [(String, npm::NpmLoad); 2] {
        let m = self.moderate;
        let f = self.fanout;
        [
            (
                format!(
                    "npm client, {} receivers, {:.0} deliveries/s",
                    m.receivers,
                    m.deliveries_per_s()
                ),
                m,
            ),
            (
                format!(
                    "npm client fan-out, {} receivers, {:.0} broadcasts/s",
                    f.receivers, f.rate
                ),
                f,
            ),
        ]
    }
}

/// Sizes of the cluster rows (two relays on one Redis, and their peers).
#[derive(Debug, Clone)]
struct ClusterPlan {
    /// Broadcast: clients, senders.
    broadcast: (usize, usize),
    /// send_to pairs, closed and open loop.
    pairs: usize,
    /// The open loop's directed messages per second, in all.
    rate: f64,
    /// Run the Socket.IO peers (npm packages: the smoke run leaves them out).
    socketio: bool,
}

impl ClusterPlan {
    fn full() -> ClusterPlan {
        ClusterPlan {
            broadcast: (1000, 4),
            pairs: 500,
            rate: 10_000.0,
            socketio: true,
        }
    }

    fn broadcast_name(&self) -> String {
        let (conns, senders) = self.broadcast;
        format!("cluster broadcast {conns}x{senders}")
    }

    fn pairs_name(&self) -> String {
        format!("cluster send_to {} pairs", self.pairs)
    }

    fn open_name(&self) -> String {
        format!(
            "cluster send_to {} pairs, {:.0} msg/s",
            self.pairs, self.rate
        )
    }
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
            cluster: ClusterPlan::full(),
            npm: NpmPlan {
                moderate: npm::NpmLoad {
                    receivers: 10,
                    rate: 200.0,
                    warmup: 3000,
                    warmup_rate: 1000.0,
                    measured: 600,
                },
                fanout: npm::NpmLoad {
                    receivers: 500,
                    rate: 5.0,
                    warmup: 60,
                    warmup_rate: 20.0,
                    measured: 20,
                },
                socketio: true,
            },
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
            cluster: ClusterPlan::full(),
            npm: NpmPlan {
                moderate: npm::NpmLoad {
                    receivers: 10,
                    rate: 200.0,
                    warmup: 3000,
                    warmup_rate: 1000.0,
                    measured: 400,
                },
                fanout: npm::NpmLoad {
                    receivers: 500,
                    rate: 5.0,
                    warmup: 60,
                    warmup_rate: 20.0,
                    measured: 10,
                },
                socketio: true,
            },
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
            cluster: ClusterPlan {
                broadcast: (20, 2),
                pairs: 5,
                rate: 200.0,
                socketio: false,
            },
            npm: NpmPlan {
                moderate: npm::NpmLoad {
                    receivers: 4,
                    rate: 100.0,
                    warmup: 5,
                    warmup_rate: 100.0,
                    measured: 25,
                },
                fanout: npm::NpmLoad {
                    receivers: 20,
                    rate: 20.0,
                    warmup: 1,
                    warmup_rate: 20.0,
                    measured: 4,
                },
                socketio: false,
            },
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
    /// The groups of rows to run (`--only`); empty: all.
    only: Vec<String>,
}

/// The groups of rows `--only` selects from.
const GROUPS: [&str; 8] = [
    "echo",
    "send_to",
    "broadcast",
    "idle",
    "client",
    "multicore",
    "cluster",
    "npm",
];

impl Options {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn parse_run_args(args: &[String]) -> Result<Options, String> {
    let root = repo_root();
    let mut plan = Plan::full();
    let mut md = Some(root.join("BENCHMARKS.md"));
    let mut json = Some(root.join("bench").join("results.json"));
    let mut note = None;
    let mut pin = true;
    let mut smoke = false;
    let mut only: Vec<String> = Vec::new();
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
            "--only" => {
                let value = rest.next().ok_or("--only needs a value")?;
                for group in value.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    if !GROUPS.contains(&group) {
                        return Err(format!(
                            "--only: unknown group {group} (groups: {})",
                            GROUPS.join(", ")
                        ));
                    }
                    only.push(group.to_owned());
                }
            }
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
    if smoke || !only.is_empty() {
        // A smoke run checks the harness and a partial run has only some rows: neither
        // overwrites the committed results.
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
        only,
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
    node_server(&root.join("bench").join("node"), &["ws"], "the Node peer")
}

/// Finds (or installs) the Socket.IO peers of the cluster rows.
fn socketio_peer(root: &Path) -> Result<ServerCmd, String> {
    node_server(
        &root.join("bench").join("node").join("socketio"),
        &[
            "socket.io",
            "redis",
            "@socket.io/redis-adapter",
            "@socket.io/redis-streams-adapter",
        ],
        "the Socket.IO peers",
    )
}

/// `node DIR/server.js`, once Node answers and the npm `modules` are in `DIR/node_modules`
/// (installed from the committed lockfile when one is missing).
fn node_server(dir: &Path, modules: &[&str], what: &str) -> Result<ServerCmd, String> {
    npm_install(dir, modules, what)?;
    Ok(ServerCmd {
        program: PathBuf::from("node"),
        args: vec![dir.join("server.js").display().to_string()],
    })
}

/// Checks that Node answers and that the npm `modules` are in `DIR/node_modules`, installing
/// them from the committed lockfile when one is missing.
fn npm_install(dir: &Path, modules: &[&str], what: &str) -> Result<(), String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node not found: {e}"))?;
    if !node.status.success() {
        return Err("node --version failed".into());
    }
    let installed = modules
        .iter()
        .all(|m| dir.join("node_modules").join(m).is_dir());
    if !installed {
        println!(
            "installing {what} (npm install {} in {})...",
            modules.join(" "),
            dir.display()
        );
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .map_err(|e| format!("npm: {e}"))?;
        if !status.success() {
            return Err(format!("npm install failed ({status})"));
        }
    }
    Ok(())
}

struct Harness {
    exe: PathBuf,
    node: Option<ServerCmd>,
    socketio: Option<ServerCmd>,
    /// bench/node/npm, ready (the npm rows' clients).
    npm: Option<PathBuf>,
    core: Option<usize>,
}

/// What the cluster rows compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterPeer {
    /// Ours: two wsrelay relays on one Redis.
    Relays,
    /// One wsrelay relay, sessions in memory.
    Memory,
    /// Socket.IO, two Node processes, `@socket.io/redis-adapter`.
    SioRedis,
    /// Socket.IO, two Node processes, `@socket.io/redis-streams-adapter`.
    SioStreams,
}

impl ClusterPeer {
    fn code(self) -> &'static str {
        match self {
            ClusterPeer::Relays => OURS,
            ClusterPeer::Memory => "M",
            ClusterPeer::SioRedis => "SIO",
            ClusterPeer::SioStreams => "SIOs",
        }
    }

    fn proto(self) -> Proto {
        match self {
            ClusterPeer::Relays | ClusterPeer::Memory => Proto::Wsrelay,
            ClusterPeer::SioRedis | ClusterPeer::SioStreams => Proto::SocketIo,
        }
    }
}

/// The load of a cluster row.
#[derive(Debug, Clone, Copy)]
enum ClusterLoad {
    Broadcast { conns: usize, senders: usize },
    Pairs { pairs: usize },
    Open { pairs: usize, rate: f64 },
}

/// The processes of one cluster run, stopped when dropped (the servers before Redis).
struct Topology {
    target: load::Target,
    _servers: Vec<procs::Server>,
    _redis: Option<cluster::Redis>,
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
            (Peer::Wsrelay2, Role::Idle { .. }) => None,
            (Peer::Wsrelay2, _) => ours(&["wsrelay", "--workers", "2"]),
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
        // Two workers need two cores: not pinned.
        let core = self.core.filter(|_| peer != Peer::Wsrelay2);
        procs::start(&cmd, core)
    }

    /// Starts the Socket.IO peer alone, in memory (the npm rows).
    fn socketio_memory(&self) -> Result<procs::Server, String> {
        let mut cmd = self
            .socketio
            .clone()
            .ok_or("the Socket.IO peer is not installed")?;
        cmd.args.push("memory".into());
        procs::start(&cmd, self.core)
    }

    /// Starts a cluster peer: a fresh Redis (pinned with the servers) and two servers on it,
    /// or the one relay in memory.
    async fn cluster(&self, peer: ClusterPeer) -> Result<Topology, String> {
        if peer == ClusterPeer::Memory {
            let server = self.start(Peer::Wsrelay, Role::Broadcast)?;
            let mut target = load::Target::single(server.addr, server.pid);
            target.procs[0].0 = "relay".into();
            return Ok(Topology {
                target,
                _servers: vec![server],
                _redis: None,
            });
        }
        let redis = cluster::Redis::start(self.core)?;
        let url = redis.url();
        let mut servers = Vec::new();
        for node in ["a", "b"] {
            let cmd = match peer {
                ClusterPeer::Relays => ServerCmd {
                    program: self.exe.clone(),
                    args: [
                        "serve",
                        "wsrelay",
                        "--redis",
                        &url,
                        "--node-id",
                        &format!("relay-{node}"),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                },
                _ => {
                    let mut cmd = self
                        .socketio
                        .clone()
                        .ok_or("the Socket.IO peers are not installed")?;
                    let mode = if peer == ClusterPeer::SioRedis {
                        "redis"
                    } else {
                        "streams"
                    };
                    cmd.args.push(mode.into());
                    cmd.args.push(url.clone());
                    cmd
                }
            };
            servers.push(procs::start(&cmd, self.core)?);
        }
        let keys = (peer == ClusterPeer::Relays).then_some("wsr:*");
        let probe = cluster::Probe::connect(&url, keys).await?;
        if peer == ClusterPeer::Relays {
            // Every relay listens on `wsr:all` once it can take clients (PROTOCOL.md section 12).
            probe
                .wait_subscribers("wsr:all", 2, Duration::from_secs(10))
                .await?;
        }
        let mut procs: Vec<(String, u32)> = servers
            .iter()
            .zip(["relay a", "relay b"])
            .map(|(server, name)| (name.to_owned(), server.pid))
            .collect();
        procs.push(("redis".into(), redis.pid));
        Ok(Topology {
            target: load::Target {
                addrs: servers.iter().map(|s| s.addr).collect(),
                procs,
                redis: Some(probe),
                // Room subscriptions and session claims complete after the connect is answered.
                settle: Duration::from_millis(200),
            },
            _servers: servers,
            _redis: Some(redis),
        })
    }

    async fn cluster_run(
        &self,
        peer: ClusterPeer,
        load: ClusterLoad,
        timing: Timing,
    ) -> Result<Sample, String> {
        let topology = self.cluster(peer).await?;
        let target = &topology.target;
        let proto = peer.proto();
        match load {
            ClusterLoad::Broadcast { conns, senders } => {
                load::broadcast(target, proto, conns, senders, timing).await
            }
            ClusterLoad::Pairs { pairs } => load::send_to(target, proto, pairs, timing).await,
            ClusterLoad::Open { pairs, rate } => {
                load::send_to_open(target, proto, pairs, rate, timing).await
            }
        }
    }
}

/// Echo 20 B x100 and broadcast 1000x4 with one worker (wsrelay) and two (W2).
async fn multicore_rows(harness: &Harness, plan: &Plan) -> Vec<Cell> {
    let peers = [Peer::Wsrelay, Peer::Wsrelay2];
    let mut cells = Vec::new();
    let name = "multi-core echo 20 B x100".to_owned();
    println!("{name}");
    let mut echo = Cell {
        metric: metric(name.clone(), "msgs/s", "msg/s", true, true),
        runs: Vec::new(),
    };
    let timing = plan.timing;
    interleaved(
        harness,
        &name,
        plan.reps,
        &peers,
        Role::Echo,
        |addr, pid, peer| load::echo(addr, pid, peer.proto(), 100, 20, timing),
        |peer, result| echo.runs.push(run_of(peer.code(), result)),
    )
    .await;
    cells.push(echo);
    let name = "multi-core broadcast 1000x4".to_owned();
    println!("{name}");
    let mut broadcast = Cell {
        metric: metric(name.clone(), "deliveries/s", "msg/s", true, true),
        runs: Vec::new(),
    };
    interleaved(
        harness,
        &name,
        plan.reps,
        &peers,
        Role::Broadcast,
        |addr, pid, peer| async move {
            let target = load::Target::single(addr, pid);
            load::broadcast(&target, peer.proto(), 1000, 4, timing).await
        },
        |peer, result| broadcast.runs.push(run_of(peer.code(), result)),
    )
    .await;
    cells.push(broadcast);
    cells
}

/// Runs `load` against every peer started in `role`, `reps` times with the peers interleaved,
/// prints each result and hands it to `record`.
async fn interleaved<F, Fut>(
    harness: &Harness,
    name: &str,
    reps: usize,
    peers: &[Peer],
    role: Role,
    load: F,
    mut record: impl FnMut(Peer, Result<Sample, String>),
) where
    F: Fn(std::net::SocketAddr, u32, Peer) -> Fut,
    Fut: std::future::Future<Output = Result<Sample, String>>,
{
    for rep in 0..reps {
        for &peer in peers {
            let result = match harness.start(peer, role) {
                Ok(server) => load(server.addr, server.pid, peer).await,
                Err(e) => Err(e),
            };
            progress(name, peer.code(), rep, &result);
            record(peer, result);
        }
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

fn progress(cell: &str, peer: &str, rep: usize, result: &Result<Sample, String>) {
    match result {
        Ok(s) => println!(
            "  {cell} [{peer}] rep {}: {} (server {:.0}%, load {:.0}%){}{}",
            rep + 1,
            report::fmt_value(s.value),
            s.server_cpu * 100.0,
            s.gen_cpu * 100.0,
            s.latency
                .map(|l| format!(", p50 {:.0} µs, p95 {:.0} µs", l[0], l[1]))
                .unwrap_or_default(),
            cluster_detail(s)
        ),
        Err(e) => println!("  {cell} [{peer}] rep {}: FAILED: {e}", rep + 1),
    }
}

/// The cluster part of a progress line: CPU per process and Redis's work per delivery.
fn cluster_detail(s: &Sample) -> String {
    if s.procs.len() < 2 && s.redis.is_none() {
        return String::new();
    }
    let mut out = format!("\n      CPU: {}", cpu_breakdown(&s.procs));
    if let Some(r) = &s.redis {
        let per = |n: u64| n as f64 / r.delivered.max(1) as f64;
        out.push_str(&format!(
            "; Redis per delivery: {:.3} commands, {:.4} round trips; Redis memory {:.0} B/client{}",
            per(r.commands),
            per(r.round_trips),
            r.memory_per_client,
            r.key_bytes_per_session
                .map(|b| format!(", keys {b:.0} B/session"))
                .unwrap_or_default()
        ));
    }
    out
}

fn cpu_breakdown(procs: &[(String, f64)]) -> String {
    procs
        .iter()
        .map(|(name, cpu)| format!("{name} {:.0}%", cpu * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn async_run(options: Options, pinned: bool) -> Result<(), String> {
    let started = Instant::now();
    let root = repo_root();
    let plan = options.plan.clone();
    let load_before = loadavg();
    let uses_node = ["echo", "send_to", "broadcast", "idle"]
        .iter()
        .any(|g| options.wants(g));
    let node = match uses_node.then(|| node_peer(&root)) {
        Some(Ok(cmd)) => Some(cmd),
        Some(Err(reason)) => {
            println!("note: Node peer unavailable ({reason}); its rows are skipped");
            None
        }
        None => None,
    };
    let socketio =
        match (options.wants("cluster") && plan.cluster.socketio).then(|| socketio_peer(&root)) {
            Some(Ok(cmd)) => Some(cmd),
            Some(Err(reason)) => {
                println!("note: Socket.IO peers unavailable ({reason}); their rows are skipped");
                None
            }
            None => None,
        };
    let wants_npm = options.wants("npm");
    let npm_dir = root.join("bench").join("node").join("npm");
    let npm = match wants_npm.then(|| npm::prepare(&root, &npm_dir)) {
        Some(Ok(())) => Some(npm_dir),
        Some(Err(reason)) => {
            println!("note: the npm rows cannot run ({reason}); they are skipped");
            None
        }
        None => None,
    };
    // The npm rows' Socket.IO server is the cluster rows' program, in memory.
    let socketio = match socketio {
        None if npm.is_some() && plan.npm.socketio => match socketio_peer(&root) {
            Ok(cmd) => Some(cmd),
            Err(reason) => {
                println!("note: Socket.IO peers unavailable ({reason}); their rows are skipped");
                None
            }
        },
        socketio => socketio,
    };
    let harness = Harness {
        exe: std::env::current_exe().map_err(|e| e.to_string())?,
        node,
        socketio,
        npm,
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
    for &(size, conns) in plan.echo.iter().filter(|_| options.wants("echo")) {
        let name = format!("echo {} x{conns}", size_name(size));
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "msgs/s", "msg/s", true, conns > 1),
            runs: Vec::new(),
        };
        interleaved(
            &harness,
            &name,
            plan.reps,
            &peers,
            Role::Echo,
            |addr, pid, peer| load::echo(addr, pid, peer.proto(), conns, size, timing),
            |peer, result| cell.runs.push(run_of(peer.code(), result)),
        )
        .await;
        cells.push(cell);
    }

    // 2. send_to between pairs.
    if options.wants("send_to") {
        let name = format!("send_to {} pairs", plan.pairs);
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "deliveries/s", "msg/s", true, true),
            runs: Vec::new(),
        };
        let pairs = plan.pairs;
        interleaved(
            &harness,
            &name,
            plan.reps,
            &peers,
            Role::Pairs,
            |addr, pid, peer| async move {
                let target = load::Target::single(addr, pid);
                load::send_to(&target, peer.proto(), pairs, timing).await
            },
            |peer, result| cell.runs.push(run_of(peer.code(), result)),
        )
        .await;
        cells.push(cell);
    }

    // 3. Broadcast excluding the sender.
    for &(conns, senders) in plan.broadcast.iter().filter(|_| options.wants("broadcast")) {
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
        interleaved(
            &harness,
            &name,
            plan.reps,
            &peers,
            Role::Broadcast,
            |addr, pid, peer| async move {
                let target = load::Target::single(addr, pid);
                load::broadcast(&target, peer.proto(), conns, senders, timing).await
            },
            |peer, result| {
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
            },
        )
        .await;
        cells.push(cell);
        if conns >= 5000 || plan.broadcast.len() == 1 {
            cells.push(p95);
        }
    }

    // 4 and 5. Idle memory, and the heartbeat's CPU at the default interval (same runs).
    let idle_peers: Vec<Peer> = peers.iter().copied().filter(|p| *p != Peer::Raw).collect();
    let default_ping = wsrelay_server::ServerConfig::default().ping_interval;
    let default_ping_ms = u64::try_from(default_ping.as_millis()).unwrap_or(30_000);
    // The client core's own heartbeat, as a wsrelay client sends it.
    let app_ping = Some(wsrelay::client::Options::default().heartbeat_interval);
    if options.wants("idle") {
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
    if options.wants("client") {
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

    // 7. Multi-core: the relay with two workers against one, same load.
    if options.wants("multicore") {
        cells.extend(multicore_rows(&harness, &plan).await);
    }

    // 8. Cluster: two relays on one Redis, against one relay in memory and Socket.IO on Redis.
    let mut sections = Vec::new();
    if options.wants("cluster") {
        let (cluster_cells, section) = cluster_rows(&harness, &plan).await;
        cells.extend(cluster_cells);
        sections.push(section);
    }

    // 9. The npm client: CPU per delivery in Node, wsrelay's package against socket.io-client.
    if harness.npm.is_some() {
        cells.extend(npm_rows(&harness, &plan).await);
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
        sections,
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
    let failed: Vec<&Cell> = cells
        .iter()
        .filter(|c| !c.metric.scenario.starts_with("wasm package") && c.summary(OURS).is_none())
        .collect();
    let mut reasons: Vec<String> = Vec::new();
    for error in failed.iter().flat_map(|c| c.errors(OURS)) {
        if !reasons.contains(&error) {
            reasons.push(error);
        }
    }
    let missing: Vec<String> = failed
        .iter()
        .map(|c| format!("{} ({})", c.metric.scenario, c.metric.metric))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "no result for: {}\nbecause: {}",
            missing.join(", "),
            reasons.join("; ")
        ))
    }
}

/// The npm rows: in every repetition wsrelay's package and socket.io-client take turns, each
/// run on a fresh server process and a fresh Node process of clients.
async fn npm_rows(harness: &Harness, plan: &Plan) -> Vec<Cell> {
    let Some(dir) = &harness.npm else {
        return Vec::new();
    };
    let mut clients = vec![npm::Client::Wsrelay];
    if harness.socketio.is_some() && plan.npm.socketio {
        clients.push(npm::Client::SocketIo);
    }
    let mut cells = Vec::new();
    for (name, load) in plan.npm.scenarios() {
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "client CPU per delivery", "µs", false, false),
            runs: Vec::new(),
        };
        for rep in 0..plan.reps {
            for &client in &clients {
                let (code, server) = match client {
                    npm::Client::Wsrelay => (OURS, harness.start(Peer::Wsrelay, Role::Broadcast)),
                    npm::Client::SocketIo => ("SIOc", harness.socketio_memory()),
                };
                let result = match server {
                    Ok(server) => npm::run(dir, client, &server, load).await,
                    Err(e) => Err(e),
                };
                match &result {
                    Ok(s) => println!(
                        "  {name} [{code}] rep {}: {:.2} µs/delivery (client process {:.0}%, server {:.0}%)",
                        rep + 1,
                        s.value,
                        s.gen_cpu * 100.0,
                        s.server_cpu * 100.0
                    ),
                    Err(e) => println!("  {name} [{code}] rep {}: FAILED: {e}", rep + 1),
                }
                cell.runs.push(run_of(code, result));
            }
        }
        cells.push(cell);
    }
    cells
}

/// The cluster rows: in every repetition each peer takes its turn (interleaved), each run on
/// fresh processes and a fresh Redis. Returns the cells and the report's section on them (CPU
/// per process, Redis's settings).
async fn cluster_rows(harness: &Harness, plan: &Plan) -> (Vec<Cell>, String) {
    let cp = &plan.cluster;
    let mut peers = vec![ClusterPeer::Relays, ClusterPeer::Memory];
    if harness.socketio.is_some() && plan.cluster.socketio {
        peers.extend([ClusterPeer::SioRedis, ClusterPeer::SioStreams]);
    }
    let (conns, senders) = cp.broadcast;
    let scenarios = [
        (
            cp.broadcast_name(),
            ClusterLoad::Broadcast { conns, senders },
        ),
        (cp.pairs_name(), ClusterLoad::Pairs { pairs: cp.pairs }),
        (
            cp.open_name(),
            ClusterLoad::Open {
                pairs: cp.pairs,
                rate: cp.rate,
            },
        ),
    ];
    let mut cells = Vec::new();
    let mut cpu_rows: Vec<CpuRow> = Vec::new();
    for (name, load) in scenarios {
        println!("{name}");
        let mut runs: Vec<(ClusterPeer, Result<Sample, String>)> = Vec::new();
        for rep in 0..plan.reps {
            for &peer in &peers {
                let result = harness.cluster_run(peer, load, plan.timing).await;
                progress(&name, peer.code(), rep, &result);
                runs.push((peer, result));
            }
        }
        cells.extend(cluster_cells(&name, load, &runs));
        for &peer in &peers {
            let samples: Vec<&Sample> = runs
                .iter()
                .filter(|(p, _)| *p == peer)
                .filter_map(|(_, r)| r.as_ref().ok())
                .collect();
            let Some(first) = samples.first() else {
                continue;
            };
            let medians: Vec<(String, f64)> = first
                .procs
                .iter()
                .map(|(process, _)| {
                    let values = samples
                        .iter()
                        .filter_map(|s| s.procs.iter().find(|(n, _)| n == process))
                        .map(|(_, cpu)| *cpu)
                        .collect();
                    (process.clone(), report::median(values).unwrap_or(0.0))
                })
                .collect();
            cpu_rows.push((name.clone(), peer, medians));
        }
    }
    (cells, cluster_section(&cpu_rows))
}

/// The cells of one cluster scenario. Redis's cells leave out the peer without Redis.
fn cluster_cells(
    name: &str,
    load: ClusterLoad,
    runs: &[(ClusterPeer, Result<Sample, String>)],
) -> Vec<Cell> {
    let open = matches!(load, ClusterLoad::Open { .. });
    let cell = |what: &str,
                unit: &str,
                higher_better: bool,
                saturate: bool,
                which: &dyn Fn(ClusterPeer) -> bool,
                value: &dyn Fn(&Sample) -> Option<f64>| Cell {
        metric: metric(name.to_owned(), what, unit, higher_better, saturate),
        runs: runs
            .iter()
            .filter(|(peer, _)| which(*peer))
            .map(|(peer, result)| Run {
                peer: peer.code(),
                value: result
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| value(s).ok_or_else(|| format!("no {what} measured"))),
                server_cpu: result.as_ref().ok().map(|s| s.server_cpu),
                gen_cpu: result.as_ref().ok().map(|s| s.gen_cpu),
            })
            .collect(),
    };
    let all = |_: ClusterPeer| true;
    let with_redis = |peer: ClusterPeer| peer != ClusterPeer::Memory;
    let per_delivery = |s: &Sample, of: fn(&load::RedisUse) -> u64| {
        s.redis
            .as_ref()
            .filter(|r| r.delivered > 0)
            .map(|r| of(r) as f64 / r.delivered as f64)
    };
    let mut cells = vec![cell("deliveries/s", "msg/s", true, !open, &all, &|s| {
        Some(s.value)
    })];
    if open {
        cells.push(cell(
            "server CPU at that rate (every server process and Redis)",
            "% of a core",
            false,
            false,
            &all,
            &|s| Some(s.server_cpu * 100.0),
        ));
    }
    cells.push(cell("p50 latency", "ms", false, false, &all, &|s| {
        s.latency.map(|l| l[0] / 1000.0)
    }));
    cells.push(cell("p95 latency", "ms", false, false, &all, &|s| {
        s.latency.map(|l| l[1] / 1000.0)
    }));
    cells.push(cell(
        "Redis CPU",
        "% of a core",
        false,
        false,
        &with_redis,
        &|s| {
            s.procs
                .iter()
                .find(|(n, _)| n == "redis")
                .map(|(_, cpu)| cpu * 100.0)
        },
    ));
    cells.push(cell(
        "Redis round trips per delivery",
        "calls",
        false,
        false,
        &with_redis,
        &|s| per_delivery(s, |r| r.round_trips),
    ));
    cells.push(cell(
        "Redis commands per delivery (inside Lua scripts included)",
        "commands",
        false,
        false,
        &with_redis,
        &|s| per_delivery(s, |r| r.commands),
    ));
    if !open {
        cells.push(cell(
            "Redis memory growth per client",
            "B",
            false,
            false,
            &with_redis,
            &|s| s.redis.as_ref().map(|r| r.memory_per_client),
        ));
    }
    if matches!(load, ClusterLoad::Broadcast { .. }) {
        cells.push(cell(
            "bytes in Redis per session (MEMORY USAGE of its keys)",
            "B",
            false,
            false,
            &|peer| peer == ClusterPeer::Relays,
            &|s| s.redis.as_ref().and_then(|r| r.key_bytes_per_session),
        ));
    }
    cells
}

/// The report's section on the cluster rows: Redis's settings, the limits of the machine,
/// and the median CPU of every process.
/// A scenario, a peer, and the median CPU of each of its processes.
type CpuRow = (String, ClusterPeer, Vec<(String, f64)>);

fn cluster_section(rows: &[CpuRow]) -> String {
    let version = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .map(|o| {
                // `Redis server v=7.0.15 sha=...`, `v20.20.2`.
                let text = String::from_utf8_lossy(&o.stdout);
                let token = text
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("v="))
                    .unwrap_or(text.trim());
                token.to_owned()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "?".into())
    };
    let mut out = String::from("## Cluster rows: Redis and CPU per process\n\n");
    out.push_str(&format!(
        "- Redis: `redis-server` {}, a fresh one per run on a free loopback port, \
         started with `{}`: no snapshots and **no AOF**, so nothing a relay writes reaches a \
         disk; with `--appendonly yes` (`appendfsync everysec`) every write also goes to the AOF \
         and Redis's CPU per command grows. Node {} for the Socket.IO peers.\n",
        version("redis-server"),
        cluster::REDIS_PERSISTENCE
            .iter()
            .map(|a| if a.is_empty() { "''" } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        version("node"),
    ));
    out.push_str(
        "- Every server-side process of a row (both relays or both Node servers, and Redis) is \
         pinned to core 0 and the load generator to core 1. On this 2-core machine a cluster \
         row measures the work of the whole cluster per core, not what two relays and Redis on \
         cores of their own would deliver; latency includes the hand-offs between three \
         processes sharing one core. The server CPU column of these rows is the sum over the \
         processes.\n\n",
    );
    out.push_str(
        "| scenario | peer | CPU per process (median, % of a core) | sum |\n|---|---|---|---|\n",
    );
    for (scenario, peer, procs) in rows {
        let sum: f64 = procs.iter().map(|(_, cpu)| cpu).sum();
        out.push_str(&format!(
            "| {scenario} | {} | {} | {:.0}% |\n",
            peer.code(),
            cpu_breakdown(procs),
            sum * 100.0
        ));
    }
    out
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
    let cp = &plan.cluster;
    for (scenario, what) in [
        (cp.broadcast_name(), "broadcast"),
        (cp.pairs_name(), "send_to"),
    ] {
        for (peer, adapter) in [("SIO", "redis-adapter"), ("SIOs", "redis-streams-adapter")] {
            out.push(ratio_verdict(
                cells,
                &scenario,
                "deliveries/s",
                peer,
                5.0,
                format!("{scenario}: cross-relay {what} >= 5x Socket.IO with {adapter}"),
            ));
        }
    }
    let open = cp.open_name();
    let p95 = find(cells, &open, "p95 latency")
        .and_then(|c| c.summary(OURS))
        .map(|s| s.value);
    out.push(Verdict {
        target: format!("{open}: cross-relay send_to p95 < 5 ms"),
        measured: p95.map_or("-".into(), |v| format!("{v:.2} ms")),
        met: p95.map(|v| v < 5.0),
    });
    for (scenario, _) in plan.npm.scenarios() {
        out.push(ratio_verdict(
            cells,
            &scenario,
            "client CPU per delivery",
            "SIOc",
            1.0,
            format!("{scenario}: CPU per delivery <= 1.0x socket.io-client's"),
        ));
    }
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

/// `drive echo|broadcast|pairs|open|idle ADDRS PIDS N SECS [plain|socketio] [NUMBER]`: one
/// load against servers started by hand. `ADDRS` and `PIDS` are comma-separated (client `i`
/// goes to the `i mod k`-th address; the CPU of every pid is measured); `N` is clients
/// (echo, broadcast, idle) or pairs (pairs, open); `NUMBER` is the echo payload size (default
/// 20 bytes) or the open loop's messages per second (default 10 000).
///
/// `drive client ADDR ours|tt MESSAGES`: scenario 6's client sends exactly `MESSAGES` and
/// waits for their acknowledgements (for callgrind: see `load::client_count`).
fn drive(args: &[String]) -> Result<(), String> {
    if let [what, addr, which, messages] = args {
        if what == "client" {
            return drive_client(addr, which, messages);
        }
    }
    let [what, addrs, pids, n, secs, rest @ ..] = args else {
        return Err(
            "usage: drive echo|broadcast|pairs|open|idle ADDRS PIDS N SECS [plain|socketio] [NUMBER]"
                .into(),
        );
    };
    let addrs = addrs
        .split(',')
        .map(|a| a.parse().map_err(|e| format!("{a}: {e}")))
        .collect::<Result<Vec<std::net::SocketAddr>, String>>()?;
    let pids = pids
        .split(',')
        .map(|p| p.parse().map_err(|e| format!("{p}: {e}")))
        .collect::<Result<Vec<u32>, String>>()?;
    let (Some(&addr), Some(&pid)) = (addrs.first(), pids.first()) else {
        return Err("drive: no address or no pid".into());
    };
    let n: usize = n.parse().map_err(|e| format!("{n}: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("{secs}: {e}"))?;
    let proto = if rest.iter().any(|p| p == "plain") {
        Proto::Plain
    } else if rest.iter().any(|p| p == "socketio") {
        Proto::SocketIo
    } else {
        Proto::Wsrelay
    };
    let number: Option<f64> = match rest.iter().find(|p| *p != "plain" && *p != "socketio") {
        Some(number) => Some(number.parse().map_err(|e| format!("{number}: {e}"))?),
        None => None,
    };
    let target = load::Target {
        addrs,
        procs: pids
            .iter()
            .map(|pid| (format!("pid {pid}"), *pid))
            .collect(),
        redis: None,
        settle: Duration::from_millis(200),
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
        let sample = match what.as_str() {
            "echo" => {
                // The echo payload size, to compare read buffer sizes on larger frames.
                let size = number.map_or(20, |n| n as usize);
                load::echo(addr, pid, proto, n, size, timing).await?
            }
            "broadcast" => load::broadcast(&target, proto, n, 4, timing).await?,
            "pairs" => load::send_to(&target, proto, n, timing).await?,
            "open" => {
                let rate = number.unwrap_or(10_000.0);
                load::send_to_open(&target, proto, n, rate, timing).await?
            }
            "idle" => {
                let s = load::idle(
                    addr,
                    pid,
                    proto,
                    n,
                    Some(wsrelay::client::Options::default().heartbeat_interval),
                    Some(timing.window),
                )
                .await?;
                println!("{:.2} KiB/conn, cpu {:?}", s.rss_per_conn / 1024.0, s.cpu);
                return Ok(());
            }
            other => return Err(format!("unknown load {other}")),
        };
        println!(
            "{} per s (server {:.0}%, load {:.0}%){}{}",
            report::fmt_value(sample.value),
            sample.server_cpu * 100.0,
            sample.gen_cpu * 100.0,
            sample
                .latency
                .map(|l| format!(", p50 {:.0} µs, p95 {:.0} µs", l[0], l[1]))
                .unwrap_or_default(),
            cluster_detail(&sample)
        );
        Ok(())
    })
}

fn drive_client(addr: &str, which: &str, messages: &str) -> Result<(), String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let ours = match which {
        "ours" => true,
        "tt" => false,
        other => return Err(format!("drive client: ours or tt, not {other}")),
    };
    let messages: u64 = messages.parse().map_err(|e| format!("{messages}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let secs = local.block_on(&runtime, load::client_count(addr, ours, messages))?;
    println!(
        "{messages} acknowledged in {secs:.3} s: {}/s",
        report::fmt_value(messages as f64 / secs)
    );
    Ok(())
}
