//! The clients' rows: the native client's throughput against a tokio-tungstenite client
//! and the wasm package's size (`client`), and the npm client's CPU per delivery in Node
//! against socket.io-client (`npm`).

use std::path::Path;
use std::process::Command;

use crate::harness::{Harness, Peer, Role, OURS};
use crate::plan::Plan;
use crate::report::{self, Cell, Run};
use crate::{load, npm};

use super::{metric, run_of};

/// Scenario 6, the `client` group: the native client's throughput (acknowledged messages per
/// second on one connection) against a tokio-tungstenite client sending the same frames, and
/// the wasm package's size (from `root`'s `pkg/`).
pub async fn client_rows(harness: &Harness, plan: &Plan, root: &Path) -> Vec<Cell> {
    let timing = plan.timing;
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
    vec![cell, wasm_size(root)]
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

/// The gzipped size of the `.wasm` and `.js` files in `pkg` (not the `.d.js`).
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

/// Scenario 9, the npm rows: in every repetition wsrelay's package and socket.io-client take
/// turns, each run on a fresh server process and a fresh Node process of clients.
pub async fn npm_rows(harness: &Harness, plan: &Plan) -> Vec<Cell> {
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
