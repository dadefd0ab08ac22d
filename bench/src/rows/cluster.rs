//! The cluster rows: two wsrelay relays on one Redis, against one relay in memory and
//! Socket.IO on Redis, every run on fresh processes and a fresh Redis; and their section of
//! the report (CPU per process, Redis's settings).

use std::process::Command;

use crate::cluster::REDIS_PERSISTENCE;
use crate::harness::{ClusterLoad, ClusterPeer, Harness};
use crate::load::{self, Sample};
use crate::plan::Plan;
use crate::report::{self, Cell, Run};

use super::{cpu_breakdown, metric, progress};

/// Scenario 8, the cluster rows (two relays on one Redis, against one relay in memory and
/// Socket.IO on Redis): in every repetition each peer takes its turn (interleaved), each run on
/// fresh processes and a fresh Redis. Returns the cells and the report's section on them (CPU
/// per process, Redis's settings).
pub async fn cluster_rows(harness: &Harness, plan: &Plan) -> (Vec<Cell>, String) {
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

/// The rooms rows: one relay in memory, two relays on one Redis and Socket.IO 4 with its Redis
/// adapter, the same open loop of messages to rooms, each run on fresh processes and a fresh
/// Redis; the cells of an open loop (deliveries, server CPU, p50 and p95 latency, Redis's
/// work per delivery) and the report's section on CPU per process.
pub async fn rooms_rows(harness: &Harness, plan: &Plan) -> (Vec<Cell>, String) {
    let cp = &plan.cluster;
    let mut peers = vec![ClusterPeer::Memory, ClusterPeer::Relays];
    if harness.socketio.is_some() && cp.socketio {
        peers.push(ClusterPeer::SioRedis);
    }
    let (clients, size, rate) = cp.rooms;
    let load = ClusterLoad::Rooms {
        clients,
        size,
        rate,
    };
    let name = cp.rooms_name();
    println!("{name}");
    let mut runs: Vec<(ClusterPeer, Result<Sample, String>)> = Vec::new();
    for rep in 0..plan.reps {
        for &peer in &peers {
            let result = harness.cluster_run(peer, load, plan.timing).await;
            progress(&name, peer.code(), rep, &result);
            runs.push((peer, result));
        }
    }
    let mut cpu_rows: Vec<CpuRow> = Vec::new();
    for &peer in &peers {
        let samples: Vec<&Sample> = runs
            .iter()
            .filter(|(p, _)| *p == peer)
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect();
        let Some(first) = samples.first() else {
            continue;
        };
        let medians = first
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
    (
        cluster_cells(&name, load, &runs),
        cluster_section(&cpu_rows),
    )
}

/// The cells of one cluster scenario. Redis's cells leave out the peer without Redis.
fn cluster_cells(
    name: &str,
    load: ClusterLoad,
    runs: &[(ClusterPeer, Result<Sample, String>)],
) -> Vec<Cell> {
    let open = matches!(load, ClusterLoad::Open { .. } | ClusterLoad::Rooms { .. });
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

/// A scenario, a peer, and the median CPU of each of its processes.
type CpuRow = (String, ClusterPeer, Vec<(String, f64)>);

/// The report's section on the cluster rows: Redis's settings, the limits of the machine,
/// and the median CPU of every process.
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
        REDIS_PERSISTENCE
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
