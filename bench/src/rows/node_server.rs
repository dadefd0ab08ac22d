//! The Node server package's rows (issue 21): the npm package `wsrelay-server` (the Rust
//! server as a native addon, in a Node process) with the original design's chat handler in
//! JavaScript, every message broadcast by the handler to every client, against Socket.IO 4
//! and Node's `ws` with the same handler; then the relay pattern (no JavaScript handler)
//! against the relay binary. Every run on a fresh server process pinned to the servers' core,
//! the peers interleaved; deliveries per second, and server CPU per delivery.

use crate::harness::{Harness, OURS};
use crate::load::{self, Sample, Target};
use crate::plan::Plan;
use crate::procs::ServerCmd;
use crate::report::{Cell, Run};
use crate::wire::Proto;

use super::{metric, progress, run_of};

/// The code of Socket.IO with the chat handler.
pub const SOCKETIO_CHAT: &str = "SIOh";
/// The code of Node's `ws` with the chat handler.
pub const WS_CHAT: &str = "Nh";
/// The code of the relay binary.
pub const RELAY_BINARY: &str = "WB";

/// A peer of these rows: its code, how it starts, how clients speak to it.
struct Peer<'a> {
    code: &'static str,
    cmd: &'a ServerCmd,
    mode: &'static str,
    proto: Proto,
}

/// Both rows; each row's cells: deliveries/s (its per-CPU cell is added by `run`) and server
/// CPU per delivery.
pub async fn node_server_rows(harness: &Harness, plan: &Plan) -> Vec<Cell> {
    let Some(napi) = &harness.napi else {
        return Vec::new();
    };
    let ns = &plan.node_server;
    let (conns, senders) = ns.broadcast;
    let timing = plan.timing;
    let mut chat_peers = vec![Peer {
        code: OURS,
        cmd: napi,
        mode: "chat",
        proto: Proto::Wsrelay,
    }];
    if let Some(cmd) = harness.socketio.as_ref().filter(|_| ns.socketio) {
        chat_peers.push(Peer {
            code: SOCKETIO_CHAT,
            cmd,
            mode: "chat",
            proto: Proto::SocketIo,
        });
    }
    if let Some(cmd) = &harness.node {
        chat_peers.push(Peer {
            code: WS_CHAT,
            cmd,
            mode: "chat",
            proto: Proto::Plain,
        });
    }
    let mut relay_peers = vec![Peer {
        code: OURS,
        cmd: napi,
        mode: "relay",
        proto: Proto::Wsrelay,
    }];
    if let Some(cmd) = &harness.relay {
        // The binary's flags are its own (`--port 0`): no mode.
        relay_peers.push(Peer {
            code: RELAY_BINARY,
            cmd,
            mode: "",
            proto: Proto::Wsrelay,
        });
    }
    let mut cells = Vec::new();
    for (name, peers, chat) in [
        (ns.chat_name(), &chat_peers, true),
        (ns.relay_name(), &relay_peers, false),
    ] {
        println!("{name}");
        let mut runs: Vec<(&'static str, Result<Sample, String>)> = Vec::new();
        for rep in 0..plan.reps {
            for peer in peers.iter() {
                let server = if peer.mode.is_empty() {
                    crate::procs::start(peer.cmd, harness.core())
                } else {
                    harness.start_mode(peer.cmd, peer.mode)
                };
                let result = match server {
                    Ok(server) => {
                        let target = Target::single(server.addr, server.pid);
                        if chat {
                            load::chat(&target, peer.proto, conns, senders, timing).await
                        } else {
                            load::broadcast(&target, peer.proto, conns, senders, timing).await
                        }
                    }
                    Err(e) => Err(e),
                };
                progress(&name, peer.code, rep, &result);
                runs.push((peer.code, result));
            }
        }
        cells.push(Cell {
            metric: metric(name.clone(), "deliveries/s", "msg/s", true, true),
            runs: runs
                .iter()
                .map(|(code, result)| run_of(code, result.clone()))
                .collect(),
        });
        cells.push(Cell {
            metric: metric(name, "server CPU per delivery", "µs", false, false),
            runs: runs
                .iter()
                .map(|&(peer, ref result)| Run {
                    peer,
                    value: result
                        .as_ref()
                        .map(|s| s.server_cpu * 1e6 / s.value)
                        .map_err(Clone::clone),
                    server_cpu: result.as_ref().ok().map(|s| s.server_cpu),
                    gen_cpu: result.as_ref().ok().map(|s| s.gen_cpu),
                })
                .collect(),
        });
    }
    cells
}
