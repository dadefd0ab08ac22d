//! The browser row (`browser`): the JavaScript clients' CPU per delivery in one headless
//! Chromium page, wsrelay's web build against socket.io-client's browser bundle.

use crate::browser::{self, BrowserSample, PageClient};
use crate::harness::{Harness, Peer, Role, OURS};
use crate::plan::Plan;
use crate::report::{Cell, Run};

use super::metric;

/// The code of socket.io-client's browser bundle and Socket.IO in this row.
pub const SOCKETIO: &str = "SIOb";

/// The code of the row's floor: the bare WebSocket against Socket.IO.
pub const BARE: &str = "WSb";

/// The metric of the row's target: the page's renderer process.
pub const RENDERER_METRIC: &str = "renderer CPU per delivery";

/// Scenario 11, the `browser` group: in every repetition wsrelay's web build,
/// socket.io-client and the bare WebSocket (the floor) take turns, each run on a fresh server
/// process and a fresh browser.
/// Cells: CPU per delivery of the page's renderer process (the target's), and of every
/// process of the browser (the network service, which owns the sockets, included).
pub async fn browser_rows(harness: &Harness, plan: &Plan) -> Vec<Cell> {
    let Some(setup) = &harness.browser else {
        return Vec::new();
    };
    let load = plan.browser.fanout;
    let mut clients = vec![PageClient::Wsrelay];
    if harness.socketio.is_some() && plan.browser.socketio {
        clients.extend([PageClient::SocketIo, PageClient::Bare]);
    }
    let name = plan.browser.name();
    println!("{name}");
    let mut runs: Vec<(&'static str, Result<BrowserSample, String>)> = Vec::new();
    for rep in 0..plan.reps {
        for &client in &clients {
            let (code, server) = match client {
                PageClient::Wsrelay => (OURS, harness.start(Peer::Wsrelay, Role::Broadcast)),
                PageClient::SocketIo => (SOCKETIO, harness.socketio_memory()),
                PageClient::Bare => (BARE, harness.socketio_memory()),
            };
            let result = match server {
                Ok(server) => browser::run(setup, client, &server, load).await,
                Err(e) => Err(e),
            };
            match &result {
                Ok(s) => println!(
                    "  {name} [{code}] rep {}: {:.2} µs/delivery in the renderer ({:.0}% of a \
                     core), {:.2} µs in the whole browser ({:.0}%), server {:.0}%",
                    rep + 1,
                    s.renderer_us,
                    s.renderer_cpu * 100.0,
                    s.browser_us,
                    s.browser_cpu * 100.0,
                    s.server_cpu * 100.0
                ),
                Err(e) => println!("  {name} [{code}] rep {}: FAILED: {e}", rep + 1),
            }
            runs.push((code, result));
        }
    }
    let cell = |what: &str, value: fn(&BrowserSample) -> f64, cpu: fn(&BrowserSample) -> f64| {
        Cell {
            metric: metric(name.clone(), what, "µs", false, false),
            runs: runs
                .iter()
                .map(|&(code, ref result)| Run {
                    peer: code,
                    value: result.as_ref().map(value).map_err(Clone::clone),
                    server_cpu: result.as_ref().ok().map(|s| s.server_cpu),
                    // The load generator column: the processes measured.
                    gen_cpu: result.as_ref().ok().map(cpu),
                })
                .collect(),
        }
    };
    vec![
        cell(RENDERER_METRIC, |s| s.renderer_us, |s| s.renderer_cpu),
        cell(
            "Chromium CPU per delivery (every process)",
            |s| s.browser_us,
            |s| s.browser_cpu,
        ),
    ]
}
