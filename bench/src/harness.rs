//! The servers under test and what starts them: the peers compared ([`Peer`], and
//! [`ClusterPeer`] for the cluster rows), the legend of their codes ([`LABELS`]), and the
//! [`Harness`], which starts a fresh server (or a whole cluster on a fresh Redis) per run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::load::{self, Sample, Timing};
use crate::node::{self, node_peer, socketio_peer};
use crate::plan::Options;
use crate::procs::{self, ServerCmd};
use crate::wire::Proto;
use crate::{browser, cluster, e2e, npm};

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Wsrelay,
    /// wsrelay on a multi-thread runtime with two workers (the multi-core rows).
    Wsrelay2,
    Raw,
    Tt,
    Tt4k,
    Node,
}

/// The code of wsrelay-server (ours) in the tables.
pub const OURS: &str = "wsrelay";

impl Peer {
    pub fn code(self) -> &'static str {
        match self {
            Peer::Wsrelay => OURS,
            Peer::Wsrelay2 => "W2",
            Peer::Raw => "R",
            Peer::Tt => "T",
            Peer::Tt4k => "T4k",
            Peer::Node => "N",
        }
    }

    pub fn proto(self) -> Proto {
        match self {
            Peer::Wsrelay | Peer::Wsrelay2 => Proto::Wsrelay,
            Peer::Raw => Proto::Raw,
            _ => Proto::Plain,
        }
    }
}

/// What each peer code of the tables stands for (the report's legend).
pub const LABELS: [(&str, &str); 17] = [
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
    ("SIOh", "Node server rows: Socket.IO 4.8 in memory, websocket transport, with the original design's chat handler (`socket.on(\"bc\", p => io.emit(\"bc\", {sender, message, timestamp}))`; ours there: the npm package wsrelay-server with the same handler in JavaScript)"),
    ("Nh", "Node server rows: Node's `ws` 8 with the same chat handler, written as its README does (`JSON.parse`, then `send` to every client in `wss.clients`)"),
    ("WB", "Node server rows: the `wsrelay-server` binary with its default flags, relaying (ours there: the npm package wsrelay-server with no handler, relaying)"),
    ("SIOe", "end-to-end row: socket.io-client 4.8 senders (`emit` with an acknowledgement callback) and receivers in two Node processes against Socket.IO 4.8 in memory, defaults but for the websocket transport (ours there: wsrelay's npm package against the `wsrelay-server` binary with its default flags)"),
    ("SIOb", "browser row: socket.io-client 4.8's browser bundle (`dist/socket.io.min.js`, websocket transport, one connection per client) in one headless Chromium page against Socket.IO 4.8 in memory (ours there: wsrelay's web build, `pkg/web`, in the same kind of page against wsrelay-server)"),
    ("WSb", "browser row, the floor: no library, the page's own `WebSocket` speaking Socket.IO's wire format by hand (`40` to join, `3` to each ping) with an `onmessage` that counts the frames starting `42`, unparsed, against Socket.IO 4.8 in memory: what Chromium costs per message whatever the library"),
];

/// What a server is started for.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Echo,
    Broadcast,
    Pairs,
    Idle { ping_ms: u64 },
}

/// What a run starts its servers with: this program (`serve`), the Node peers that could be
/// installed, and the core the servers are pinned to.
pub struct Harness {
    exe: PathBuf,
    /// The Node `ws` peer, when it can run.
    pub node: Option<ServerCmd>,
    /// The Socket.IO peers (cluster rows, and the npm rows' server), when they can run.
    pub socketio: Option<ServerCmd>,
    /// bench/node/npm, ready (the clients of the npm rows and of the end-to-end row).
    pub npm: Option<PathBuf>,
    /// The `wsrelay-server` binary with its default flags (the end-to-end row, the Node
    /// server package's relay row), when built.
    pub relay: Option<ServerCmd>,
    /// The Node server package (bench/node/napi/server.js, the package installed), when its
    /// rows run.
    pub napi: Option<ServerCmd>,
    /// The browser row's page and packages, ready (Chromium found, `pkg/web` built).
    pub browser: Option<browser::Setup>,
    core: Option<usize>,
}

/// What the cluster rows compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPeer {
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
    pub fn code(self) -> &'static str {
        match self {
            ClusterPeer::Relays => OURS,
            ClusterPeer::Memory => "M",
            ClusterPeer::SioRedis => "SIO",
            ClusterPeer::SioStreams => "SIOs",
        }
    }

    pub fn proto(self) -> Proto {
        match self {
            ClusterPeer::Relays | ClusterPeer::Memory => Proto::Wsrelay,
            ClusterPeer::SioRedis | ClusterPeer::SioStreams => Proto::SocketIo,
        }
    }
}

/// The load of a cluster row.
#[derive(Debug, Clone, Copy)]
pub enum ClusterLoad {
    Broadcast {
        conns: usize,
        senders: usize,
    },
    Pairs {
        pairs: usize,
    },
    Open {
        pairs: usize,
        rate: f64,
    },
    /// `clients` in rooms of `size`, each sending `rate` messages per second to its room.
    Rooms {
        clients: usize,
        size: usize,
        rate: f64,
    },
}

/// The processes of one cluster run, stopped when dropped (the servers before Redis).
pub struct Topology {
    target: load::Target,
    _servers: Vec<procs::Server>,
    _redis: Option<cluster::Redis>,
}

impl Harness {
    /// Finds (or installs) what the selected groups of rows need: the Node peer for the rows
    /// of one server, the Socket.IO peers for the cluster, npm and browser rows, the npm rows'
    /// clients, the browser row's page. What cannot run is said and its rows are skipped.
    /// The servers go to core 0 when `pinned`.
    pub fn prepare(root: &Path, options: &Options, pinned: bool) -> Result<Harness, String> {
        let plan = &options.plan;
        let uses_node = ["echo", "send_to", "broadcast", "idle", "node-server"]
            .iter()
            .any(|g| options.wants(g));
        let node = match uses_node.then(|| node_peer(root)) {
            Some(Ok(cmd)) => Some(cmd),
            Some(Err(reason)) => {
                println!("note: Node peer unavailable ({reason}); its rows are skipped");
                None
            }
            None => None,
        };
        let cluster_rows = options.wants("cluster") || options.wants("rooms");
        let socketio = match (cluster_rows && plan.cluster.socketio).then(|| socketio_peer(root)) {
            Some(Ok(cmd)) => Some(cmd),
            Some(Err(reason)) => {
                println!("note: Socket.IO peers unavailable ({reason}); their rows are skipped");
                None
            }
            None => None,
        };
        let wants_npm = options.wants("npm");
        let wants_e2e = options.wants("e2e");
        let npm_dir = root.join("bench").join("node").join("npm");
        let npm = match (wants_npm || wants_e2e).then(|| npm::prepare(root, &npm_dir)) {
            Some(Ok(())) => Some(npm_dir),
            Some(Err(reason)) => {
                println!(
                    "note: the npm and end-to-end rows cannot run ({reason}); they are skipped"
                );
                None
            }
            None => None,
        };
        let wants_node_server = options.wants("node-server");
        let napi = match wants_node_server.then(|| node::napi_peer(root)) {
            Some(Ok(cmd)) => Some(cmd),
            Some(Err(reason)) => {
                println!(
                    "note: the Node server package's rows cannot run ({reason}); they are skipped"
                );
                None
            }
            None => None,
        };
        // The end-to-end row measures the relay as users start it: its own binary; so does
        // the Node server package's relay row.
        let relay = match ((wants_e2e && npm.is_some()) || napi.is_some()).then(e2e::relay_binary) {
            Some(Ok(program)) => Some(ServerCmd {
                program,
                // A free port: the only flag given, none that changes the relay's behaviour.
                args: vec!["--port".into(), "0".into()],
            }),
            Some(Err(reason)) => {
                println!("note: the end-to-end row cannot run ({reason}); it is skipped");
                None
            }
            None => None,
        };
        let browser = match options.wants("browser").then(|| browser::prepare(root)) {
            Some(Ok(setup)) => Some(setup),
            Some(Err(reason)) => {
                println!("note: the browser row cannot run ({reason}); it is skipped");
                None
            }
            None => None,
        };
        // The Socket.IO server of the npm rows, the end-to-end row and the browser row is the
        // cluster rows' program, in memory.
        let needs_socketio = (npm.is_some()
            && ((wants_npm && plan.npm.socketio) || (wants_e2e && plan.e2e.socketio)))
            || (napi.is_some() && plan.node_server.socketio)
            || (browser.is_some() && plan.browser.socketio);
        let socketio = match socketio {
            None if needs_socketio => match socketio_peer(root) {
                Ok(cmd) => Some(cmd),
                Err(reason) => {
                    println!(
                        "note: Socket.IO peers unavailable ({reason}); their rows are skipped"
                    );
                    None
                }
            },
            socketio => socketio,
        };
        Ok(Harness {
            exe: std::env::current_exe().map_err(|e| e.to_string())?,
            node,
            socketio,
            npm,
            relay,
            napi,
            browser,
            core: pinned.then_some(0),
        })
    }

    /// The peers of the rows of one server: wsrelay, raw TCP, both tokio-tungstenite servers,
    /// and Node's `ws` when it can run.
    pub fn peers(&self) -> Vec<Peer> {
        let mut peers = vec![Peer::Wsrelay, Peer::Raw, Peer::Tt, Peer::Tt4k];
        if self.node.is_some() {
            peers.push(Peer::Node);
        }
        peers
    }

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

    /// Starts `peer`'s server for `role`, pinned with the other servers (two workers: not).
    pub fn start(&self, peer: Peer, role: Role) -> Result<procs::Server, String> {
        let cmd = self
            .command(peer, role)
            .ok_or_else(|| format!("{} has no server for {role:?}", peer.code()))?;
        // Two workers need two cores: not pinned.
        let core = self.core.filter(|_| peer != Peer::Wsrelay2);
        procs::start(&cmd, core)
    }

    /// Starts the `wsrelay-server` binary with its default flags (the end-to-end row).
    pub fn relay_defaults(&self) -> Result<procs::Server, String> {
        let cmd = self.relay.as_ref().ok_or("wsrelay-server is not built")?;
        procs::start(cmd, self.core)
    }

    /// The core the servers are pinned to, if they are.
    pub fn core(&self) -> Option<usize> {
        self.core
    }

    /// Starts `cmd` with `mode` appended, pinned with the other servers (the Node server
    /// package's rows).
    pub fn start_mode(&self, cmd: &ServerCmd, mode: &str) -> Result<procs::Server, String> {
        let mut cmd = cmd.clone();
        cmd.args.push(mode.into());
        procs::start(&cmd, self.core)
    }

    /// Starts the Socket.IO peer alone, in memory (the npm rows, the end-to-end row and the
    /// browser row).
    pub fn socketio_memory(&self) -> Result<procs::Server, String> {
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

    /// One cluster run: `peer`'s processes, fresh, under `load`.
    pub async fn cluster_run(
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
            ClusterLoad::Rooms {
                clients,
                size,
                rate,
            } => load::rooms_open(target, proto, clients, size, rate, timing).await,
        }
    }
}
