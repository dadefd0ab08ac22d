//! `drive`: one load against servers started by hand, to profile them (perf, valgrind, node
//! --cpu-prof) outside a whole run.

use std::time::Duration;

use crate::load::{self, Timing};
use crate::report;
use crate::rows::cluster_detail;
use crate::wire::Proto;

/// load against servers started by hand. `ADDRS` and `PIDS` are comma-separated (client `i`
/// goes to the `i mod k`-th address; the CPU of every pid is measured); `N` is clients
/// (echo, broadcast, idle) or pairs (pairs, open); `NUMBER` is the echo payload size (default
/// 20 bytes) or the open loop's messages per second (default 10 000).
///
/// `drive client ADDR ours|tt MESSAGES`: scenario 6's client sends exactly `MESSAGES` and
/// waits for their acknowledgements (for callgrind: see `load::client_count`).
pub fn drive(args: &[String]) -> Result<(), String> {
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

/// `drive client ADDR ours|tt MESSAGES` (see [`drive`]).
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
