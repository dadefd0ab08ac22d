//! `wsrelay-bench`: wsrelay-server side by side with its peers, in one command.
//!
//! - `wsrelay-bench run [--quick | --smoke] [--only GROUPS] [--md PATH] [--json PATH]
//!   [--note TEXT]`: runs every scenario (full mode by default), prints the table of ratios
//!   and writes `BENCHMARKS.md` and `bench/results.json` (`--smoke`: tiny sizes, about a second
//!   per scenario, checks the harness, writes nothing unless asked to). `--only` runs some
//!   groups of rows (comma-separated: echo, send_to, broadcast, idle, client, multicore,
//!   cluster, npm, e2e, browser) and, like `--smoke`, writes nothing unless asked to.
//! - `wsrelay-bench serve KIND ...`: one server under test (started by `run`).
//! - `wsrelay-bench drive echo|broadcast|pairs|open|idle ADDRS PIDS N SECS [plain|socketio]
//!   [NUMBER]`: loads servers started by hand (for profiling them: perf, valgrind, node
//!   --cpu-prof); several comma-separated addresses split the clients between them.
//! - `WSRELAY_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"`: extra arguments of the Node
//!   processes hosting the npm rows' and the end-to-end row's clients (to profile them in the
//!   very run measured).
//! - `WSRELAY_BENCH_BROWSER_PROFILE=DIR`: a CPU profile of the browser row's page over each
//!   measured window (DevTools protocol, `DIR/browser-MODE-PID.cpuprofile`); `CHROMIUM=PATH`:
//!   the browser of that row (default `/usr/bin/chromium`).
//! - `WSRELAY_BENCH_RELAY=PATH`: the `wsrelay-server` binary of the end-to-end row (default:
//!   the one next to this program).
//! - `WSRELAY_BENCH_CLIENT_OPTIONS='{"ackDelay":500}'`: options of the npm rows' and the
//!   browser row's wsrelay clients, a JSON object (to compare settings side by side).
//!
//! `cargo xtask bench` builds this in release and runs it.

mod browser;
mod cluster;
mod drive;
mod e2e;
mod harness;
mod load;
mod node;
mod npm;
mod plan;
mod procs;
mod report;
mod rows;
mod run;
mod servers;
mod verdicts;
mod wire;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => servers::serve(&args[1..]),
        Some("run") => run::run(&args[1..]),
        Some("drive") => drive::drive(&args[1..]),
        _ => Err(
            "usage: wsrelay-bench run [--quick | --smoke] [--only GROUPS] [--md PATH] [--json PATH] [--note TEXT]\n       wsrelay-bench serve KIND\n       wsrelay-bench drive client ADDR ours|tt MESSAGES"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wsrelay-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
