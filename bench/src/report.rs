//! Results: medians per peer, ratios (> 1 always means wsrelay is better), the targets, the
//! printed table, `BENCHMARKS.md` and `bench/results.json`.

use std::fmt::Write as _;

use serde::Serialize;

/// A run below this server CPU (fraction of a core) measured the load generator, not the
/// server, where saturation was intended.
pub const SATURATED: f64 = 0.95;

/// What a cell measures.
#[derive(Debug, Clone)]
pub struct Metric {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub higher_better: bool,
    /// The server is meant to be saturated (runs below [`SATURATED`] are flagged).
    pub saturate: bool,
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct Run {
    pub peer: &'static str,
    pub value: Result<f64, String>,
    pub server_cpu: Option<f64>,
    pub gen_cpu: Option<f64>,
}

/// A scenario cell: its metric and every run of every peer.
#[derive(Debug, Clone)]
pub struct Cell {
    pub metric: Metric,
    pub runs: Vec<Run>,
}

/// Median value of a peer in a cell, with how it was obtained.
#[derive(Debug, Clone)]
pub struct Summary {
    pub value: f64,
    /// Runs used for the median / runs attempted.
    pub used: usize,
    pub attempted: usize,
    /// Every run was below the saturation threshold (the median is of unsaturated runs).
    pub unsaturated: bool,
    pub server_cpu: Option<f64>,
    pub gen_cpu: Option<f64>,
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

impl Cell {
    pub fn peers(&self) -> Vec<&'static str> {
        let mut peers: Vec<&'static str> = Vec::new();
        for run in &self.runs {
            if !peers.contains(&run.peer) {
                peers.push(run.peer);
            }
        }
        peers
    }

    pub fn summary(&self, peer: &str) -> Option<Summary> {
        let runs: Vec<&Run> = self.runs.iter().filter(|r| r.peer == peer).collect();
        let valid: Vec<&Run> = runs.iter().copied().filter(|r| r.value.is_ok()).collect();
        let saturated: Vec<&Run> = valid
            .iter()
            .copied()
            .filter(|r| !self.metric.saturate || r.server_cpu.unwrap_or(1.0) >= SATURATED)
            .collect();
        let (used, unsaturated) = if saturated.is_empty() {
            (valid.clone(), self.metric.saturate && !valid.is_empty())
        } else {
            (saturated, false)
        };
        let value = median(used.iter().filter_map(|r| r.value.clone().ok()).collect());
        Some(Summary {
            value: value?,
            used: used.len(),
            attempted: runs.len(),
            unsaturated,
            server_cpu: median(used.iter().filter_map(|r| r.server_cpu).collect()),
            gen_cpu: median(used.iter().filter_map(|r| r.gen_cpu).collect()),
        })
    }

    /// Errors of every run of `peer`.
    pub fn errors(&self, peer: &str) -> Vec<String> {
        self.runs
            .iter()
            .filter(|r| r.peer == peer)
            .filter_map(|r| r.value.clone().err())
            .collect()
    }

    /// Ours relative to `peer`: > 1 means wsrelay is better.
    pub fn ratio(&self, ours: &str, peer: &str) -> Option<f64> {
        let a = self.summary(ours)?.value;
        let b = self.summary(peer)?.value;
        let ratio = if self.metric.higher_better {
            a / b
        } else {
            b / a
        };
        ratio.is_finite().then_some(ratio)
    }
}

/// The same runs, as work per second of server CPU (value / server CPU fraction): a figure
/// that survives a machine shared with other work, where no run can saturate its core.
pub fn per_cpu(cell: &Cell) -> Cell {
    let mut metric = cell.metric.clone();
    metric.metric = format!("{} per server CPU-second", metric.metric);
    metric.saturate = false;
    Cell {
        metric,
        runs: cell
            .runs
            .iter()
            .map(|r| Run {
                peer: r.peer,
                value: match (&r.value, r.server_cpu) {
                    (Ok(v), Some(cpu)) if cpu > 0.01 => Ok(v / cpu),
                    (Ok(_), _) => Err("server CPU not measured".into()),
                    (Err(e), _) => Err(e.clone()),
                },
                server_cpu: r.server_cpu,
                gen_cpu: r.gen_cpu,
            })
            .collect(),
    }
}

/// One row of `bench/results.json`.
#[derive(Debug, Serialize)]
pub struct JsonRow {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub ours: Option<f64>,
    pub peer: String,
    pub peer_value: Option<f64>,
    pub ratio: Option<f64>,
    pub machine: String,
    pub date: String,
}

/// A target from the issue, evaluated on the results.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// Everything a report needs besides the cells.
pub struct Context {
    pub mode: String,
    pub date: String,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub duration_s: f64,
    pub pinned: bool,
    pub note: Option<String>,
    pub labels: Vec<(&'static str, &'static str)>,
    /// Markdown sections printed after the results table (the cluster rows' details).
    pub sections: Vec<String>,
}

pub fn fmt_value(value: f64) -> String {
    let abs = value.abs();
    if abs >= 100_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if abs >= 10_000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn fmt_cpu(cpu: Option<f64>) -> String {
    cpu.map_or("-".into(), |c| format!("{:.0}%", c * 100.0))
}

/// The results table (markdown): one row per scenario and peer.
pub fn table(cells: &[Cell], ours: &str) -> String {
    let mut out = String::new();
    out.push_str("| scenario | metric | wsrelay | peer | peer value | ratio | server CPU (ours / peer) | load gen CPU (ours / peer) | runs (ours / peer) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for cell in cells {
        let m = &cell.metric;
        let ours_summary = cell.summary(ours);
        let ours_text = match &ours_summary {
            Some(s) => format!(
                "{}{}",
                fmt_value(s.value),
                if s.unsaturated { " †" } else { "" }
            ),
            None => format!("error: {}", first(&cell.errors(ours))),
        };
        let peers: Vec<&str> = cell.peers().into_iter().filter(|p| *p != ours).collect();
        let peers = if peers.is_empty() { vec!["-"] } else { peers };
        for peer in peers {
            let peer_summary = cell.summary(peer);
            let peer_text = match &peer_summary {
                Some(s) => format!(
                    "{}{}",
                    fmt_value(s.value),
                    if s.unsaturated { " †" } else { "" }
                ),
                None if peer == "-" => "-".into(),
                None => format!("error: {}", first(&cell.errors(peer))),
            };
            let ratio = cell
                .ratio(ours, peer)
                .map_or("-".into(), |r| format!("**{r:.2}x**"));
            let runs = format!(
                "{} / {}",
                ours_summary
                    .as_ref()
                    .map_or("0".into(), |s| format!("{}/{}", s.used, s.attempted)),
                peer_summary
                    .as_ref()
                    .map_or("-".into(), |s| format!("{}/{}", s.used, s.attempted)),
            );
            let _ = writeln!(
                out,
                "| {} | {} ({}) | {} | {} | {} | {} | {} / {} | {} / {} | {} |",
                m.scenario,
                m.metric,
                m.unit,
                ours_text,
                peer,
                peer_text,
                ratio,
                fmt_cpu(ours_summary.as_ref().and_then(|s| s.server_cpu)),
                fmt_cpu(peer_summary.as_ref().and_then(|s| s.server_cpu)),
                fmt_cpu(ours_summary.as_ref().and_then(|s| s.gen_cpu)),
                fmt_cpu(peer_summary.as_ref().and_then(|s| s.gen_cpu)),
                runs
            );
        }
    }
    out
}

fn first(errors: &[String]) -> String {
    errors.first().map_or("no run".into(), |e| {
        let e: String = e.chars().take(80).collect();
        e.replace('|', "/")
    })
}

/// The rows of `bench/results.json`.
pub fn json_rows(cells: &[Cell], ours: &str, ctx: &Context) -> Vec<JsonRow> {
    let mut rows = Vec::new();
    for cell in cells {
        let ours_value = cell.summary(ours).map(|s| s.value);
        let peers: Vec<&str> = cell.peers().into_iter().filter(|p| *p != ours).collect();
        let peers = if peers.is_empty() { vec!["-"] } else { peers };
        for peer in peers {
            let label = ctx
                .labels
                .iter()
                .find(|(code, _)| *code == peer)
                .map_or(peer.to_owned(), |(_, label)| (*label).to_owned());
            rows.push(JsonRow {
                scenario: cell.metric.scenario.clone(),
                metric: format!("{} ({})", cell.metric.metric, cell.metric.unit),
                unit: cell.metric.unit.clone(),
                ours: ours_value,
                peer: label,
                peer_value: cell.summary(peer).map(|s| s.value),
                ratio: cell.ratio(ours, peer),
                machine: ctx.machine.clone(),
                date: ctx.date.clone(),
            });
        }
    }
    rows
}

/// Writes `BENCHMARKS.md`.
pub fn markdown(
    cells: &[Cell],
    ours: &str,
    ctx: &Context,
    verdicts: &[Verdict],
    analysis: Option<&str>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# wsrelay benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `cargo xtask bench{}` on {} ({} mode, {:.0} s). Regenerate with the same \
         command; `--quick` takes under 5 minutes. Raw rows: `bench/results.json`.\n",
        if ctx.mode == "full" { "" } else { " --quick" },
        ctx.date,
        ctx.mode,
        ctx.duration_s
    );
    let _ = writeln!(out, "## Machine and load\n");
    let _ = writeln!(out, "- Machine: {}", ctx.machine);
    let _ = writeln!(
        out,
        "- Load average (1/5/15 min) before: {}; after: {}",
        ctx.load_before, ctx.load_after
    );
    let _ = writeln!(
        out,
        "- Pinning: {}",
        if ctx.pinned {
            "servers on core 0 (`taskset -c 0`), load generator on core 1"
        } else {
            "none (fewer than 2 cores or no taskset): figures are not per-core"
        }
    );
    if let Some(note) = &ctx.note {
        let _ = writeln!(out, "- Note: {note}");
    }
    out.push('\n');
    out.push_str(METHOD);
    let _ = writeln!(out, "\n## Results\n");
    out.push_str(
        "Medians over the repetitions; ratio > 1 means wsrelay is better (throughput: ours / \
         peer; latency, memory, CPU, size: peer / ours). † = every run of that server stayed \
         below 95% of its core where saturation was intended: that figure measured the load \
         generator, not the server. `runs` = runs used for the median / runs attempted.\n\n",
    );
    out.push_str(&table(cells, ours));
    for section in &ctx.sections {
        out.push('\n');
        out.push_str(section.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "\n## Targets\n");
    out.push_str("| target | measured | met |\n|---|---|---|\n");
    for v in verdicts {
        let met = match v.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {} |", v.target, v.measured, met);
    }
    let _ = writeln!(out, "\n## Peers\n");
    for (code, label) in &ctx.labels {
        let _ = writeln!(out, "- **{code}**: {label}");
    }
    // A failed run leaves an error in every cell of its scenario: list each failure once,
    // with how many runs of that server it ended.
    let mut errors: Vec<(String, usize)> = Vec::new();
    for cell in cells {
        let mut in_cell: Vec<(String, usize)> = Vec::new();
        for run in &cell.runs {
            if let Err(e) = &run.value {
                let line = format!("{} / {}: {e}", cell.metric.scenario, run.peer);
                match in_cell.iter_mut().find(|(l, _)| *l == line) {
                    Some((_, n)) => *n += 1,
                    None => in_cell.push((line, 1)),
                }
            }
        }
        for (line, n) in in_cell {
            match errors.iter_mut().find(|(l, _)| *l == line) {
                Some((_, most)) => *most = (*most).max(n),
                None => errors.push((line, n)),
            }
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "\n## Failed runs\n");
        for (e, n) in errors {
            let runs = if n > 1 {
                format!(" ({n} runs)")
            } else {
                String::new()
            };
            let _ = writeln!(out, "- {e}{runs}");
        }
    }
    if let Some(analysis) = analysis {
        out.push('\n');
        out.push_str(analysis.trim_end());
        out.push('\n');
    }
    out
}

const METHOD: &str = "## Method

- Loopback only. Each server runs as its own process on a single-threaded tokio runtime (Node
  is single-threaded anyway), pinned to core 0; the load generator (Rust, one tokio
  current-thread runtime, precomputed masked frames where only the id and timestamp digits are
  patched per message, hdrhistogram latencies) is pinned to core 1.
- Every run starts a fresh server process (no state carried between runs) and the servers of
  a scenario take turns: A, B, C... then A, B, C... again (interleaved), 3+ repetitions,
  medians. Server CPU comes from `/proc/PID/stat` over the measured window (after a warm-up).
- All servers receive the same bytes: wsrelay envelopes
  `{\"type\":T,\"id\":N[,\"to\":X],\"payload\":\"...\"}` whose payload (a JSON string) has the
  stated size. wsrelay clients open with `~hello`, wait for `~welcome` and acknowledge every 32
  reliable frames (more often than the client core, which waits for 128 or its delay: the server
  reads more acknowledgements than from real clients); the peers just echo / forward the frame.
- Echo: closed loop, one message in flight per connection; wsrelay answers through an `echo`
  handler (`on(\"echo\", |m: Incoming<String>| async move { Some(m.payload) })`), the
  peers send the frame back.
- send_to: 500 pairs each bounce one directed message (`to` = partner): wsrelay relays it,
  T and N look up `to`, R forwards the frame to the partner connection.
- Broadcast excluding the sender: every client counts deliveries; each sender keeps at most 32
  messages not yet seen by a probe client; latency is from the send to each delivery.
- Idle memory: server RSS (`VmRSS`) growth divided by the number of connections (several
  127.0.0.x source addresses). Heartbeat: server CPU while the connections stay idle; wsrelay
  clients answer pings and send their `~ping` every 15 s like the client core; Node runs the
  `ws` README heartbeat idiom at the same interval.
- Native client: acknowledged messages per second with 256 sends in flight, the wsrelay
  client vs a tokio-tungstenite client sending the same frames by hand, both against
  wsrelay-server.
- Cluster rows (`cluster ...`): ours is two wsrelay-server processes (`ServerConfig::redis`,
  node ids `relay-a`, `relay-b`) on one `redis-server` that the harness starts for the run on
  a free port (`--save '' --appendonly no`). Client `i` connects to relay `i mod 2`: the
  clients are split evenly, and the two members of a pair are always on different relays,
  so every directed message crosses from one relay to the other through Redis. Peers, with
  the same clients, pacing and payloads: **M**, one wsrelay-server in memory holding every
  client (what the cluster costs), and Socket.IO 4 in two Node processes on the same kind of
  Redis, with `@socket.io/redis-adapter` (**SIO**) and with
  `@socket.io/redis-streams-adapter` and connection state recovery (**SIOs**)
  (`bench/node/socketio/server.js`: `socket.broadcast.emit` and `io.to(room).emit`, each
  client in a room named after its `source`). The load generator speaks Socket.IO's wire
  format itself (engine.io v4 over a plain WebSocket: `/socket.io/?EIO=4&transport=websocket`,
  open `0{...}`, `40`, events `42[\"bc\",payload]` / `42[\"dm\",to,payload]`, pings `2`
  answered with `3`) with the same 20-byte payload string.
- Cluster broadcast: as above, except that each sender's probe client is on the other relay
  (or Node server), so that the window of 32 bounds what crosses between them. Latency
  mostly follows from that window (Little's law: messages in flight / deliveries per
  second). Cluster send_to, closed loop: every pair bounces one message. Open loop: in
  each pair one client sends to the other on a fixed schedule, the pairs
  alternating direction, the stated rate in all, whatever comes back; latency counts from the
  write of each message (a server that falls behind delays the deliveries; a load generator
  that falls behind delivers fewer per second than the rate, shown in the row).
- Server CPU in the cluster rows is the sum over every server-side process (relays, Redis),
  all on core 0; saturation (†) is judged on that sum. Redis's work is read from
  `INFO commandstats` before and after the window: *round trips* are the commands the servers
  sent (a Lua script call counts once), *commands* what Redis executed (those a script ran
  included), both divided by the deliveries in the window. *Memory growth per client* is
  `used_memory` less the client buffers (`mem_clients_normal`) after the window, minus the
  same once the servers were up, per client; *bytes per session* sums `MEMORY USAGE` over
  the relays' keys (`wsr:*`: session hashes, mailboxes holding up to the 31 frames a client
  has not acknowledged yet, de-duplication hashes, shard sets, presence) divided by the
  sessions.
- npm rows (`npm client ...`): the JavaScript clients' CPU per delivery, end to end. One Node
  process (`bench/node/npm/clients.js`, on core 1) hosts the receiving clients: wsrelay's npm
  package (its Node build, installed from `npm pack` of `pkg/`) against wsrelay-server, or
  socket.io-client (**SIOc**) against Socket.IO 4 in memory (`server.js memory`), the server
  on core 0; both clients on the same npm `ws`. One sender of the load generator broadcasts
  20-byte payloads on a fixed schedule (open loop) that neither side saturates; each client
  counts its `bc` messages in a handler (`client.on` / `socket.on`). First a warm-up of 3 s at
  five (fan-out: four) times the rate, about 30 000 deliveries: V8 runs wasm as Liftoff's
  baseline code until it has run enough to be compiled by TurboFan, and after half a second
  of traffic wsrelay's client still costs twice its steady state. Then 200 ms of pause, and
  the measured broadcasts at the stated rate: the Node process reads `process.cpuUsage()`
  (user + system, every thread) at the first measured delivery and at the last; µs per
  delivery is that CPU time over the deliveries between them. A run in which any client
  missed a broadcast or got one twice failed. The load generator CPU column
  is the client process's. `WSRELAY_BENCH_NODE_ARGS=\"--cpu-prof --cpu-prof-dir=DIR\"` profiles
  the clients in the very run measured.
- Browser row (`browser client ...`, issue 18; `--only browser`): the npm fan-out's shape with
  the receivers in one headless Chromium page (Debian's `chromium`, which `cargo xtask bench`
  installs), on core 1 like the npm rows' Node process. `bench/node/browser/clients.js` serves
  the page from loopback and drives Chromium over the DevTools protocol on
  `--remote-debugging-pipe`, enabling only what reports the page's errors (Runtime, Log,
  Inspector). Not through Playwright: it enables DevTools' Network domain on every page, and
  Chromium then reports every WebSocket frame to it, which made the renderer's CPU per message
  2-2.5x what it is without. The page hosts 200 receivers (Chromium refuses a renderer its
  256th WebSocket, \"Insufficient resources\"; handshakes go 5 at a time, since Chromium
  delays a handshake the more are pending): wsrelay's web build (`pkg/web`, imported as an ES
  module) against wsrelay-server; socket.io-client's browser bundle (**SIOb**,
  `dist/socket.io.min.js`, websocket transport, `forceNew`) against Socket.IO 4 in memory;
  and the floor (**WSb**), the page's bare `WebSocket` speaking Socket.IO's frames by hand
  (`40` to join, `3` to each ping) and counting the `42` frames unparsed, against the same
  Socket.IO: what Chromium costs per message whatever the library. The load generator's
  sender broadcasts 20-byte payloads: 50 broadcasts at 10/s to warm up (10 000 deliveries; in
  5-second windows over a minute of traffic, wsrelay's cost showed no downward trend after the
  first 5 000), then 50 (`--quick`: 25) at 5/s, measured. The measurement starts once the page has every warm-up
  delivery and 250 ms more (the acknowledgements wsrelay's clients owe) and ends at the last
  delivery. The CPU time of the page's renderer process (the one a DevTools trace names for
  the page's main frame; Chromium also keeps a spare renderer and a WebUI one) is the sum of
  `/proc/PID/task/*/schedstat` over its threads (nanoseconds, where `/proc/PID/stat` counts
  10 ms ticks); µs per delivery is that over the measured deliveries. A second cell counts
  every process of the browser (the browser process, the network service, which owns the
  sockets, the GPU process, the renderers). A run failed if a client missed or doubled a
  broadcast, if the page raised an uncaught error or logged a console error (Chromium's own,
  such as a failed WebSocket, included), or if a thread of the renderer exited while measured
  (its time would be lost). The load generator column is the renderer's (second cell: the
  whole browser's) share of a core. `WSRELAY_BENCH_BROWSER_DEBUG=1` prints each run's CPU by
  renderer thread and by kind of browser process; `WSRELAY_BENCH_BROWSER_PROFILE=DIR` writes
  a DevTools CPU profile of the page over each measured window (its sampling, every 100 µs,
  inflates the figures of that run).
- End-to-end row (`end to end ...`, issue 18; `--only e2e`): JavaScript clients on both ends,
  each server with its defaults. Ours: wsrelay's npm package against the `wsrelay-server`
  binary (built in release next to the harness) started with its default flags, `--port 0`
  the only one given (no rate limit by default; flow control on). Peer (**SIOe**):
  socket.io-client against Socket.IO 4 in memory (`server.js memory`: defaults but for the
  websocket transport, which both clients use anyway). The server is pinned to core 0; two
  Node processes (`bench/node/npm/e2e.js`) share core 1: one hosts the 10 senders, the other
  the 40 receivers. Each sender keeps 100 broadcasts in flight: it sends its next message when
  one is acknowledged (wsrelay: the `send` Promise resolves on the relay's ack; Socket.IO:
  `emit('bc', payload, callback)`, the server calling the callback after
  `socket.broadcast.emit`). Payloads are 20-character strings carrying the sender and a
  sequence number. A *delivery* is one message reaching the `bc` handler of one receiver:
  each message makes 40. Both servers broadcast to every other client, so the senders also
  get each other's messages (9 more copies per message, carried by both peers alike, not
  counted). After a warm-up of 3 s the receivers' process counts deliveries over the window
  (5 s; `--quick` 3 s) on its own monotonic clock; the harness reads the CPU time of the
  server and of both Node processes from `/proc` over the same window. Then the senders stop,
  wait for their last acknowledgements and report how many messages each sent; a run counts
  only if every receiver then has every message of every sender, in order, exactly once
  (otherwise it failed, and says what was missing or duplicated). Cells: deliveries/s, server
  CPU per delivery, and the CPU of both client processes per delivery (the load generator
  column is their sum). The target is judged on the measured ratio and on the ratio of the
  peers' ceilings (1 s over the larger of server and client CPU per delivery: the rate at
  which the busier core would be full), since other work on a shared core 0 can hold a
  CPU-bound server to a fraction of its core.
";
