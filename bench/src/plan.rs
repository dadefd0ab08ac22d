//! What `run` measures: the sizes and durations of each mode (full, quick, smoke), the
//! groups of rows `--only` selects, and the command line of `run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::e2e::E2eLoad;
use crate::load::Timing;
use crate::npm;

/// Sizes and durations of one mode.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `full`, `quick` or `smoke`: the report says which.
    pub name: &'static str,
    /// Runs per peer and row, the peers interleaved.
    pub reps: usize,
    /// Warm-up and measured window of every throughput run.
    pub timing: Timing,
    /// Echo rows: payload size in bytes, connections.
    pub echo: Vec<(usize, usize)>,
    /// Pairs of the send_to row.
    pub pairs: usize,
    /// Broadcast rows: clients, senders.
    pub broadcast: Vec<(usize, usize)>,
    /// Connections of the idle and heartbeat rows.
    pub idle_conns: usize,
    /// Runs per peer of the idle and heartbeat rows.
    pub idle_reps: usize,
    /// How long the heartbeat's CPU is measured at the default ping interval.
    pub heartbeat_window: Duration,
    /// How long the heartbeat's CPU is measured at a 1 s ping interval.
    pub heartbeat_fast_window: Duration,
    /// Sizes of the cluster rows.
    pub cluster: ClusterPlan,
    /// Sizes of the npm rows.
    pub npm: NpmPlan,
    /// Sizes of the end-to-end row.
    pub e2e: E2ePlan,
    /// Sizes of the Node server package's rows.
    pub node_server: NodeServerPlan,
    /// Sizes of the browser row.
    pub browser: BrowserPlan,
}

/// Sizes of the Node server package's rows (issue 21): a broadcast load, every message
/// through the chat handler of each peer, and through the relay.
#[derive(Debug, Clone)]
pub struct NodeServerPlan {
    /// Clients, senders.
    pub broadcast: (usize, usize),
    /// Run Socket.IO too (npm packages: the smoke run leaves them out).
    pub socketio: bool,
}

impl NodeServerPlan {
    /// The chat row's name.
    pub fn chat_name(&self) -> String {
        let (conns, senders) = self.broadcast;
        format!("node server: chat handler, broadcast {conns}x{senders}")
    }

    /// The relay row's name.
    pub fn relay_name(&self) -> String {
        let (conns, senders) = self.broadcast;
        format!("node server: relay pattern, broadcast {conns}x{senders}")
    }
}

/// Sizes of the browser row (JavaScript clients in one headless Chromium page).
#[derive(Debug, Clone)]
pub struct BrowserPlan {
    /// The fan-out: every broadcast reaches every receiver of the page. Chromium refuses a
    /// renderer more than 255 WebSockets at a time, so the row has fewer receivers than the
    /// npm fan-out's 500.
    pub fanout: npm::NpmLoad,
    /// Run socket.io-client and the bare WebSocket too (against Socket.IO, whose npm
    /// packages the smoke run leaves out).
    pub socketio: bool,
}

impl BrowserPlan {
    /// The row's scenario name (`browser client ...`, as issue 18 asks).
    pub fn name(&self) -> String {
        let f = self.fanout;
        format!(
            "browser client fan-out, {} receivers, {:.0} broadcasts/s",
            f.receivers, f.rate
        )
    }
}

/// Sizes of the end-to-end row (senders and receivers in two Node processes).
#[derive(Debug, Clone)]
pub struct E2ePlan {
    pub load: E2eLoad,
    /// Run socket.io-client and Socket.IO too (npm packages: the smoke run leaves them out).
    pub socketio: bool,
}

impl E2ePlan {
    /// Issue 18's row: 10 senders x 100 in flight, 40 receivers; `warmup` and `window` in
    /// milliseconds.
    fn issue_18(warmup: u64, window: u64) -> E2ePlan {
        E2ePlan {
            load: E2eLoad {
                senders: 10,
                in_flight: 100,
                receivers: 40,
                warmup: Duration::from_millis(warmup),
                window: Duration::from_millis(window),
            },
            socketio: true,
        }
    }
}

/// Sizes of the npm rows (JavaScript clients in one Node process).
#[derive(Debug, Clone)]
pub struct NpmPlan {
    /// A few clients at a rate neither side saturates.
    pub moderate: npm::NpmLoad,
    /// Many clients, a few broadcasts per second.
    pub fanout: npm::NpmLoad,
    /// Run socket.io-client too (npm packages: the smoke run leaves it out).
    pub socketio: bool,
}

impl NpmPlan {
    pub fn scenarios(&self) -> [(String, npm::NpmLoad); 2] {
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
pub struct ClusterPlan {
    /// Broadcast: clients, senders.
    pub broadcast: (usize, usize),
    /// send_to pairs, closed and open loop.
    pub pairs: usize,
    /// The open loop's directed messages per second, in all.
    pub rate: f64,
    /// Run the Socket.IO peers (npm packages: the smoke run leaves them out).
    pub socketio: bool,
    /// The rooms rows: clients, room size, messages per second per client.
    pub rooms: (usize, usize, f64),
}

impl ClusterPlan {
    fn full() -> ClusterPlan {
        ClusterPlan {
            broadcast: (1000, 4),
            pairs: 500,
            rate: 10_000.0,
            socketio: true,
            rooms: (10_000, 10, 1.0),
        }
    }

    pub fn broadcast_name(&self) -> String {
        let (conns, senders) = self.broadcast;
        format!("cluster broadcast {conns}x{senders}")
    }

    pub fn pairs_name(&self) -> String {
        format!("cluster send_to {} pairs", self.pairs)
    }

    pub fn rooms_name(&self) -> String {
        let (clients, size, rate) = self.rooms;
        format!("rooms: {clients} clients in rooms of {size}, {rate} msg/s each",)
    }

    pub fn open_name(&self) -> String {
        format!(
            "cluster send_to {} pairs, {:.0} msg/s",
            self.pairs, self.rate
        )
    }
}

/// The browser row's fan-out (full mode): 200 receivers in the page (Chromium refuses a
/// renderer more than 255 WebSockets), 5 broadcasts per second as in the npm fan-out, after a
/// warm-up of 10 000 deliveries at twice that rate (the browser's processes then use about a
/// third of core 1, which they share with the load generator). In 5-second windows over a
/// minute of traffic, wsrelay's renderer CPU per delivery showed no downward trend after the
/// first 5 000 deliveries.
const BROWSER_FANOUT: npm::NpmLoad = npm::NpmLoad {
    receivers: 200,
    rate: 5.0,
    warmup: 50,
    warmup_rate: 10.0,
    measured: 50,
};

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
            e2e: E2ePlan::issue_18(3000, 5000),
            node_server: NodeServerPlan {
                broadcast: (1000, 4),
                socketio: true,
            },
            browser: BrowserPlan {
                fanout: BROWSER_FANOUT,
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
            e2e: E2ePlan::issue_18(3000, 3000),
            node_server: NodeServerPlan {
                broadcast: (1000, 4),
                socketio: true,
            },
            browser: BrowserPlan {
                fanout: npm::NpmLoad {
                    measured: 25,
                    ..BROWSER_FANOUT
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
                rooms: (40, 4, 5.0),
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
            e2e: E2ePlan {
                load: E2eLoad {
                    senders: 2,
                    in_flight: 10,
                    receivers: 4,
                    warmup: Duration::from_millis(200),
                    window: Duration::from_millis(400),
                },
                socketio: false,
            },
            node_server: NodeServerPlan {
                broadcast: (20, 2),
                socketio: false,
            },
            browser: BrowserPlan {
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
pub struct Options {
    /// The mode: `--quick`, `--smoke`, or full.
    pub plan: Plan,
    /// Where the Markdown report goes (`--md`); `None`: not written.
    pub md: Option<PathBuf>,
    /// Where the JSON rows go (`--json`); `None`: not written.
    pub json: Option<PathBuf>,
    /// `--note`: a line of the report.
    pub note: Option<String>,
    /// Pin the servers and the load generator to cores of their own (not `--no-pin`).
    pub pin: bool,
    /// The groups of rows to run (`--only`); empty: all.
    pub only: Vec<String>,
}

/// The groups of rows `--only` selects from.
pub const GROUPS: [&str; 12] = [
    "echo",
    "send_to",
    "broadcast",
    "idle",
    "client",
    "multicore",
    "cluster",
    "rooms",
    "npm",
    "e2e",
    "node-server",
    "browser",
];

impl Options {
    /// Whether `group` runs: every group does unless `--only` names some.
    pub fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// Reads `run`'s flags: the mode, `--only`, `--no-pin` and where the report goes.
pub fn parse_run_args(args: &[String]) -> Result<Options, String> {
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

/// The repository (the bench crate's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_row_is_named_as_issue_18_asks_and_fits_in_one_renderer() {
        for plan in [Plan::full(), Plan::quick(), Plan::smoke()] {
            let browser = &plan.browser;
            assert!(
                browser.name().starts_with("browser client "),
                "{}",
                plan.name
            );
            // Chromium refuses a renderer its 256th WebSocket.
            assert!(browser.fanout.receivers <= 255, "{}", plan.name);
            assert!(browser.fanout.measured > 0 && browser.fanout.warmup_rate > 0.0);
        }
        assert!(Plan::full().browser.socketio && Plan::quick().browser.socketio);
    }

    #[test]
    fn only_browser_selects_the_browser_row_alone() {
        let options = parse_run_args(&["--only".into(), "browser".into()]).expect("parsed");
        assert!(options.wants("browser"));
        assert!(GROUPS
            .iter()
            .filter(|g| **g != "browser")
            .all(|g| !options.wants(g)));
        // A partial run writes nothing unless told where.
        assert!(options.md.is_none() && options.json.is_none());
        // The full plan runs it too.
        let all = parse_run_args(&[]).expect("parsed");
        assert!(all.wants("browser"));
    }
}
