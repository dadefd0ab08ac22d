//! The groups of rows `run` measures, one function each (`--only` selects groups): the rows
//! of one server against its peers ([`server`]: echo, send_to, broadcast, idle, multicore), the
//! clients' rows ([`client`]: the native client and the wasm package's size, the npm
//! client; [`browser`]: the web build in Chromium), the cluster rows ([`cluster`]), the
//! end-to-end row ([`e2e`]) and the Node server package's rows ([`node_server`]). Each prints
//! its progress and returns its cells.
//!
//! Also here: what they share (peers interleaved, a run's value, progress lines).

mod browser;
mod client;
mod cluster;
mod e2e;
mod node_server;
mod server;

pub use browser::{browser_rows, RENDERER_METRIC as BROWSER_METRIC, SOCKETIO as BROWSER_SOCKETIO};
pub use client::{client_rows, npm_rows};
pub use cluster::{cluster_rows, rooms_rows};
pub use e2e::{e2e_rows, SOCKETIO as E2E_SOCKETIO};
pub use node_server::{node_server_rows, RELAY_BINARY, SOCKETIO_CHAT};
pub use server::{broadcast_rows, echo_rows, idle_rows, multicore_rows, send_to_rows};

use crate::harness::{Harness, Peer, Role};
use crate::load::Sample;
use crate::report::{self, Metric, Run};

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

/// The run of `peer` in a cell, from its sample (or why it has none).
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

/// What a cell measures.
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

/// A payload size as the tables name it: `20 B`, `4 KiB`.
fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The progress line of one run.
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
pub fn cluster_detail(s: &Sample) -> String {
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

/// `name 12%, ...`: the CPU of each process.
fn cpu_breakdown(procs: &[(String, f64)]) -> String {
    procs
        .iter()
        .map(|(name, cpu)| format!("{name} {:.0}%", cpu * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}
