//! The end-to-end row (issue 18): wsrelay's npm package and the `wsrelay-server` binary with
//! its defaults against socket.io-client and Socket.IO 4 in memory, senders and receivers in
//! two Node processes; and its section of the report (CPU per process, what was checked).

use std::fmt::Write as _;

use crate::e2e::{self, E2eSample};
use crate::harness::{Harness, OURS};
use crate::npm::Client;
use crate::plan::Plan;
use crate::report::{self, Cell, Run};

use super::metric;

/// The code of socket.io-client and Socket.IO in this row.
pub const SOCKETIO: &str = "SIOe";

/// Scenario 10, the `e2e` group: in every repetition wsrelay and Socket.IO take turns, each
/// run on a fresh server and fresh Node processes. Returns the cells (deliveries/s, server
/// and client CPU per delivery) and the report's section on the row.
pub async fn e2e_rows(harness: &Harness, plan: &Plan) -> (Vec<Cell>, String) {
    let Some(dir) = &harness.npm else {
        return (Vec::new(), String::new());
    };
    let load = plan.e2e.load;
    let mut clients = vec![Client::Wsrelay];
    if harness.socketio.is_some() && plan.e2e.socketio {
        clients.push(Client::SocketIo);
    }
    let name = load.name();
    println!("{name}");
    let mut runs: Vec<(&'static str, Result<E2eSample, String>)> = Vec::new();
    for rep in 0..plan.reps {
        for &client in &clients {
            let (code, server) = match client {
                Client::Wsrelay => (OURS, harness.relay_defaults()),
                Client::SocketIo => (SOCKETIO, harness.socketio_memory()),
            };
            let result = match server {
                Ok(server) => e2e::run(dir, client, &server, load).await,
                Err(e) => Err(e),
            };
            match &result {
                Ok(s) => println!(
                    "  {name} [{code}] rep {}: {} deliveries/s; 100% delivered ({} of {}, {} \
                     messages), no duplicate\n      CPU: server {:.0}%, senders {:.0}%, \
                     receivers {:.0}%; per delivery: server {:.2} µs, clients {:.2} µs",
                    rep + 1,
                    report::fmt_value(s.deliveries_per_s),
                    s.delivered,
                    s.expected,
                    s.messages,
                    s.server_cpu * 100.0,
                    s.senders_cpu * 100.0,
                    s.receivers_cpu * 100.0,
                    s.server_us(),
                    s.clients_us()
                ),
                Err(e) => println!("  {name} [{code}] rep {}: FAILED: {e}", rep + 1),
            }
            runs.push((code, result));
        }
    }
    let cell = |what: &str, unit: &str, higher_better: bool, value: fn(&E2eSample) -> f64| Cell {
        metric: metric(name.clone(), what, unit, higher_better, false),
        runs: runs
            .iter()
            .map(|&(code, ref result)| Run {
                peer: code,
                value: result.as_ref().map(value).map_err(Clone::clone),
                server_cpu: result.as_ref().ok().map(|s| s.server_cpu),
                // Both client processes: the load generator of this row.
                gen_cpu: result
                    .as_ref()
                    .ok()
                    .map(|s| s.senders_cpu + s.receivers_cpu),
            })
            .collect(),
    };
    let cells = vec![
        cell("deliveries/s", "msg/s", true, |s| s.deliveries_per_s),
        cell("server CPU per delivery", "µs", false, E2eSample::server_us),
        cell(
            "client CPU per delivery (both Node processes)",
            "µs",
            false,
            E2eSample::clients_us,
        ),
    ];
    (cells, section(&name, &clients, &runs))
}

/// The report's section: the median CPU of each process and what every run checked.
fn section(
    name: &str,
    clients: &[Client],
    runs: &[(&'static str, Result<E2eSample, String>)],
) -> String {
    let mut out = String::from("## End-to-end row: CPU per process\n\n");
    out.push_str(
        "The server is pinned to core 0; both Node processes of clients share core 1 with the \
         harness, so their CPU adds up to at most one core. A run counts only if every \
         receiver got every message of every sender exactly once and in order (checked after \
         the senders stop, once their last messages are acknowledged).\n\n",
    );
    out.push_str(
        "| scenario | peer | runs valid | deliveries/s | server | senders | receivers | \
         messages in the last run |\n|---|---|---|---|---|---|---|---|\n",
    );
    for client in clients {
        let code = match client {
            Client::Wsrelay => OURS,
            Client::SocketIo => SOCKETIO,
        };
        let mine = || runs.iter().filter(|(c, _)| *c == code);
        let attempted = mine().count();
        let ok: Vec<&E2eSample> = mine().filter_map(|(_, r)| r.as_ref().ok()).collect();
        let median = |f: fn(&E2eSample) -> f64| report::median(ok.iter().map(|s| f(s)).collect());
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0));
        let _ = writeln!(
            out,
            "| {name} | {code} | {}/{} | {} | {} | {} | {} | {} |",
            ok.len(),
            attempted,
            median(|s| s.deliveries_per_s).map_or("-".into(), report::fmt_value),
            pct(median(|s| s.server_cpu)),
            pct(median(|s| s.senders_cpu)),
            pct(median(|s| s.receivers_cpu)),
            ok.last().map_or("-".into(), |s| format!(
                "{} sent, {} of {} delivered, {} copies to other senders",
                s.messages, s.delivered, s.expected, s.echoes
            )),
        );
    }
    out
}
