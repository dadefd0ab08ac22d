//! Project automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask test`: installs what the tests need if it is missing, then runs every check
//!   and test: formatting, clippy (native, wasm32, and the package's no-std wasm32 build),
//!   rustdoc, the native test suites, the npm client's and the Node server package's tests.
//!   `cargo xtask test web` runs only the JavaScript client's tests (Node and headless
//!   Chromium against the test bed), `cargo xtask test node-server` only the Node server
//!   package's.
//! - `cargo xtask run [--port N] [--host H]`: builds and starts the relay server with the
//!   browser demo in `www/` (building the wasm package into `www/pkg` when it is stale).
//! - `cargo xtask pkg [client|server]`: builds the npm packages: the client into `pkg/`
//!   (`npm install --install-links ./pkg` takes it), the Node server `wsrelay-server` into
//!   `pkg-server/` (the napi-rs addon; its platform package in `pkg-server/npm/PLATFORM`).
//! - `cargo xtask testbed`: runs the relay under the test supervisor the browser and Node tests
//!   use, and prints its control URL (for running those tests by hand).
//! - `cargo xtask bench [--quick] [--only GROUPS] [--note TEXT]`: builds the benchmarks
//!   (`bench/`) in release and runs them: wsrelay-server side by side with its peers; prints a
//!   table of ratios and writes `BENCHMARKS.md` and `bench/results.json`. `--quick` takes under
//!   5 minutes. `--only cluster` runs only the cluster rows (two relays on Redis against
//!   Socket.IO) and writes nothing unless `--md`/`--json` say where. Installs `redis-server`
//!   when missing, Chromium for the browser row, and builds the npm packages for the npm,
//!   end-to-end and browser rows (`pkg/`) and the Node server rows (`pkg-server/`) when they
//!   are older than their sources.
//! - `cargo xtask fuzz [CASES] [SEED]`: builds the fuzz targets (`fuzz/`) in release and runs
//!   CASES cases (default 12 million, about a minute): the frame decoder, a server
//!   connection's programs, the HTTP upgrade's parsing; no panic, allocations bounded.
//!
//! Each step streams its output; test counts reported by cargo are added up and printed as the
//! last line, `tests: N passed, M failed`.

use std::env;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

mod glue;
mod napi;
mod testbed;
mod web;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = project_root();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&root, args.get(1).map(String::as_str)),
        Some("run") => run(&root, &args[1..]),
        Some("pkg") => pkg(&root, &args[1..]),
        Some("testbed") => testbed(&root),
        Some("bench") => bench(&root, &args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask test [web|node-server] | cargo xtask run [--port N] [--host H] | \
                 cargo xtask pkg [client|server] | cargo xtask testbed | cargo xtask bench [--quick] [--only GROUPS] | \
                 cargo xtask fuzz [CASES] [SEED]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn project_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Passed and failed test counts, summed over every step.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Reads a test runner's summary line (cargo's `test result: ok. 3 passed; 0 failed; ...`,
    /// node's `ℹ pass 3` / `ℹ fail 0`).
    fn read(&mut self, line: &str) {
        let node = line
            .trim()
            .strip_prefix("ℹ ")
            .map(|rest| rest.split_whitespace());
        if let Some(mut words) = node {
            if let (Some(kind), Some(Ok(n))) = (words.next(), words.next().map(str::parse::<u64>)) {
                match kind {
                    "pass" => self.passed += n,
                    "fail" => self.failed += n,
                    _ => {}
                }
            }
            return;
        }
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            for part in rest.split([';', '.']) {
                let mut words = part.split_whitespace();
                if let (Some(count), Some(kind)) = (words.next(), words.next()) {
                    match (count.parse::<u64>(), kind) {
                        (Ok(n), "passed") => self.passed += n,
                        (Ok(n), "failed") => self.failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Runs `command` in `root`, streaming its output and counting test results.
fn step(name: &str, root: &Path, command: &mut Command, tally: &mut Tally) -> Result<(), String> {
    println!("\n==> {name}");
    let started = Instant::now();
    let mut child = command
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: cannot start {:?}: {e}", command.get_program()))?;
    let (lines_tx, lines_rx) = mpsc::channel::<(bool, String)>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .enumerate()
    .map(|(index, stream)| {
        let tx = lines_tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send((index == 0, line)).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(lines_tx);
    for (is_stdout, line) in lines_rx {
        tally.read(&line);
        if is_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().map_err(|e| format!("{name}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "<== {name}: {} in {seconds:.1} s",
        if status.success() { "ok" } else { "FAILED" }
    );
    let _ = std::io::stdout().flush();
    if status.success() {
        Ok(())
    } else {
        Err(format!("step '{name}' failed ({status})"))
    }
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Whether `program` is on the PATH.
fn on_path(program: &str) -> bool {
    env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(program).is_file())
}

/// Installs Debian `packages` through apt (as root), or fails with `how` (what to run).
fn apt_install(root: &Path, tally: &mut Tally, packages: &str, how: &str) -> Result<(), String> {
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    if !root_user {
        return Err(how.to_owned());
    }
    let script = format!(
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {packages}"
    );
    step(
        &format!("install {packages} (apt, once)"),
        root,
        Command::new("sh").args(["-c", &script]),
        tally,
    )
}

/// Installs `redis-server` (the cluster tests and benchmark rows start their own) when
/// missing.
fn ensure_redis(root: &Path, tally: &mut Tally) -> Result<(), String> {
    if on_path("redis-server") {
        return Ok(());
    }
    apt_install(
        root,
        tally,
        "redis-server",
        "the cluster tests need redis-server: run `sudo apt-get install -y redis-server`",
    )
}

/// Adds the wasm32 target through rustup when it is missing.
fn ensure_wasm_target(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to add the {WASM_TARGET} target: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    step(
        "install the wasm32 target",
        root,
        Command::new("rustup").args(["target", "add", WASM_TARGET]),
        tally,
    )
}

/// Every check and test; `web` alone runs only the JavaScript client's tests (Node and
/// Chromium), `node-server` only the Node server package's, for a quick check of a package
/// while working on it.
fn test(root: &Path, only: Option<&str>) -> Result<(), String> {
    let started = Instant::now();
    let mut tally = Tally::default();
    let result = match only {
        None => run_tests(root, &mut tally),
        Some("web") => web::run_client_tests(root, &mut tally).map(drop),
        Some("node-server") => test_node_server(root, &mut tally),
        Some(other) => Err(format!(
            "cargo xtask test {other}: only `web` or `node-server` may follow `test`"
        )),
    };
    println!(
        "\nxtask test: {} in {:.0} s",
        if result.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    result
}

fn run_tests(root: &Path, tally: &mut Tally) -> Result<(), String> {
    ensure_wasm_target(root, tally)?;
    step(
        "format",
        root,
        cargo().args(["fmt", "--all", "--", "--check"]),
        tally,
    )?;
    step(
        "clippy (native)",
        root,
        // With the native client's `tls` feature, so that its code is linted too.
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "wsrelay/tls",
            "--",
            "-D",
            "warnings",
        ]),
        tally,
    )?;
    step(
        "clippy (wasm32)",
        root,
        cargo()
            .args([
                "clippy",
                "-p",
                "wsrelay",
                "-p",
                "wsrelay-core",
                "--all-targets",
                "--target",
                WASM_TARGET,
                "--",
                "-D",
                "warnings",
            ])
            .env("CLIPPY_CONF_DIR", root.join("scripts/clippy_wasm")),
        tally,
    )?;
    // The package's own configuration (`cargo xtask pkg`): no std, so the core's client and
    // protocol must keep to `core` and `alloc`. The tests need std: the library alone.
    step(
        "clippy (wasm32, the package: no std)",
        root,
        cargo()
            .args([
                "clippy",
                "-p",
                "wsrelay",
                "--lib",
                "--target",
                WASM_TARGET,
                "--no-default-features",
                "--features",
                "small-allocator",
                "--",
                "-D",
                "warnings",
            ])
            .env("CLIPPY_CONF_DIR", root.join("scripts/clippy_wasm")),
        tally,
    )?;
    // Public items are documented (the lint above); their links must lead somewhere.
    step(
        "docs (rustdoc, broken links are errors)",
        root,
        cargo()
            .args([
                "doc",
                "--no-deps",
                "-p",
                "wsrelay",
                "-p",
                "wsrelay-core",
                "-p",
                "wsrelay-server",
                "--features",
                "wsrelay-core/sim",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
        tally,
    )?;
    ensure_redis(root, tally)?;
    // The native client's `tls` feature on: its wss:// tests (tests/tls.rs) run too.
    step(
        "native tests (native client with TLS)",
        root,
        cargo().args(["test", "--workspace", "--features", "wsrelay/tls"]),
        tally,
    )?;
    let client = web::run_client_tests(root, tally)?;
    // The Node server package, with the client package's clients.
    napi::run_server_tests(root, &client, tally)
}

/// `cargo xtask test node-server`: the Node server package's tests alone, with what they
/// need (the client package, Chromium, Node 22, redis-server, certificates).
fn test_node_server(root: &Path, tally: &mut Tally) -> Result<(), String> {
    web::ensure_chromium(root, tally)?;
    web::ensure_npm(root, "tests/node22", tally)?;
    ensure_redis(root, tally)?;
    let pkg = web::build_pkg(root, tally)?;
    let tarball = web::pack(root, &pkg, tally)?;
    web::test_certificates(root, tally)?;
    napi::run_server_tests(root, &tarball, tally)
}

/// `cargo xtask pkg [client|server]`: the npm packages, both unless one is named.
fn pkg(root: &Path, args: &[String]) -> Result<(), String> {
    let mut tally = Tally::default();
    let (client, server) = match args.first().map(String::as_str) {
        None => (true, true),
        Some("client") => (true, false),
        Some("server") => (false, true),
        Some(other) => {
            return Err(format!(
                "cargo xtask pkg: unknown package {other} (client or server)"
            ))
        }
    };
    if client {
        web::build_pkg(root, &mut tally)?;
    }
    if server {
        napi::build_server_pkg(root, &mut tally)?;
    }
    Ok(())
}

fn testbed(root: &Path) -> Result<(), String> {
    let relay = web::relay_binary(root, &mut Tally::default())?;
    let bed = testbed::start(&relay)?;
    println!("test bed: {} (Ctrl-C to stop)", bed.control_url);
    println!(
        "  WSRELAY_TESTBED={} cargo test -p wsrelay --target {WASM_TARGET} --test web",
        bed.control_url
    );
    loop {
        thread::park();
    }
}

fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut port = "8080".to_owned();
    let mut host = "127.0.0.1".to_owned();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.clone(),
            "--host" => host = value.clone(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let www = root.join("www");
    web::ensure_www_pkg(root)?;
    let status = cargo()
        .current_dir(root)
        .args([
            "run",
            "--release",
            "-p",
            "wsrelay-server",
            "--",
            "--host",
            &host,
            "--port",
            &port,
        ])
        .arg("--www")
        .arg(&www)
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the relay server exited with {status}"))
    }
}

/// Builds the fuzz targets in release and runs them (`fuzz/src/main.rs`).
fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    let mut tally = Tally::default();
    step(
        "build the fuzz targets (release)",
        root,
        cargo().args(["build", "--release", "-p", "wsrelay-fuzz"]),
        &mut tally,
    )?;
    let exe = web::target_dir(root).join("release").join("wsrelay-fuzz");
    step(
        "fuzz: decoder, server connection, HTTP upgrade, WebSocket frames",
        root,
        Command::new(&exe).args(args),
        &mut tally,
    )
}

/// Builds the benchmark harness in release and runs it with `args` (`--quick`, `--smoke`,
/// `--note TEXT`, `--md PATH`, `--json PATH`).
fn bench(root: &Path, args: &[String]) -> Result<(), String> {
    let mut tally = Tally::default();
    // The cluster rows start their own redis-server.
    ensure_redis(root, &mut tally)?;
    // The npm rows run the package's Node build: built from the current sources.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let wants = |names: &[&str]| {
        only.is_none_or(|groups| groups.split(',').any(|g| names.contains(&g.trim())))
    };
    // The end-to-end row too, with the relay binary; the browser row runs its web build.
    if wants(&["npm", "e2e", "browser"]) {
        web::ensure_pkg(root, &mut tally)?;
    }
    // The Node server package's rows run pkg-server/, built from the current sources.
    if wants(&["node-server"]) {
        napi::ensure_server_pkg(root, &mut tally)?;
    }
    // The browser row's page runs in Debian's Chromium (driven over its DevTools pipe).
    if wants(&["browser"]) {
        web::ensure_chromium(root, &mut tally)?;
    }
    // The end-to-end row starts the relay as users do: `wsrelay-server`, built next to the
    // harness (its default features: jemalloc).
    step(
        "build the benchmarks and the relay (release)",
        root,
        cargo().args([
            "build",
            "--release",
            "-p",
            "wsrelay-bench",
            "-p",
            "wsrelay-server",
        ]),
        &mut tally,
    )?;
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("release").join("wsrelay-bench");
    let status = Command::new(&exe)
        .current_dir(root)
        .arg("run")
        .args(args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the benchmark failed ({status})"))
    }
}
