//! The rows of one server against its peers, every run on a fresh server process, the
//! peers interleaved: echo, send_to, broadcast, idle memory and heartbeat, multi-core.

use crate::harness::{Harness, Peer, Role};
use crate::load;
use crate::plan::Plan;
use crate::report::{Cell, Run};

use super::{interleaved, metric, run_of, size_name};

/// Scenario 1, echo: a row per payload size and number of connections of the plan.
pub async fn echo_rows(harness: &Harness, plan: &Plan, peers: &[Peer]) -> Vec<Cell> {
    let timing = plan.timing;
    let mut cells = Vec::new();
    for &(size, conns) in &plan.echo {
        let name = format!("echo {} x{conns}", size_name(size));
        println!("{name}");
        let mut cell = Cell {
            metric: metric(name.clone(), "msgs/s", "msg/s", true, conns > 1),
            runs: Vec::new(),
        };
        interleaved(
            harness,
            &name,
            plan.reps,
            peers,
            Role::Echo,
            |addr, pid, peer| load::echo(addr, pid, peer.proto(), conns, size, timing),
            |peer, result| cell.runs.push(run_of(peer.code(), result)),
        )
        .await;
        cells.push(cell);
    }
    cells
}

/// Scenario 2: send_to between pairs.
pub async fn send_to_rows(harness: &Harness, plan: &Plan, peers: &[Peer]) -> Vec<Cell> {
    let timing = plan.timing;
    let name = format!("send_to {} pairs", plan.pairs);
    println!("{name}");
    let mut cell = Cell {
        metric: metric(name.clone(), "deliveries/s", "msg/s", true, true),
        runs: Vec::new(),
    };
    let pairs = plan.pairs;
    interleaved(
        harness,
        &name,
        plan.reps,
        peers,
        Role::Pairs,
        |addr, pid, peer| async move {
            let target = load::Target::single(addr, pid);
            load::send_to(&target, peer.proto(), pairs, timing).await
        },
        |peer, result| cell.runs.push(run_of(peer.code(), result)),
    )
    .await;
    vec![cell]
}

/// Scenario 3, broadcast excluding the sender: deliveries per second for every size of the
/// plan, and the p95 latency for 5000 connections or more (for the only size, when the plan
/// has one).
pub async fn broadcast_rows(harness: &Harness, plan: &Plan, peers: &[Peer]) -> Vec<Cell> {
    let timing = plan.timing;
    let mut cells = Vec::new();
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
        interleaved(
            harness,
            &name,
            plan.reps,
            peers,
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
    cells
}

/// Scenarios 4 and 5, idle: the server's memory per idle connection and the heartbeat's CPU
/// at the default interval (same runs); 5b, the heartbeat at a 1 s ping interval. Raw TCP has
/// no idle server.
pub async fn idle_rows(harness: &Harness, plan: &Plan, peers: &[Peer]) -> Vec<Cell> {
    let idle_peers: Vec<Peer> = peers.iter().copied().filter(|p| *p != Peer::Raw).collect();
    let default_ping = wsrelay_server::ServerConfig::default().ping_interval;
    let default_ping_ms = u64::try_from(default_ping.as_millis()).unwrap_or(30_000);
    // The client core's own heartbeat, as a wsrelay client sends it.
    let app_ping = Some(wsrelay::client::Options::default().heartbeat_interval);
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
    vec![memory, heartbeat, fast]
}

/// Scenario 7, multi-core: echo 20 B x100 and broadcast 1000x4 with one worker (wsrelay) and
/// two (W2).
pub async fn multicore_rows(harness: &Harness, plan: &Plan) -> Vec<Cell> {
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
