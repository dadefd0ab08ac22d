//! Smoke run of the benchmark harness (`wsrelay-bench run --smoke`): every scenario for about
//! a second with tiny sizes, against every peer that can start here. It checks that the
//! harness works end to end (servers start, clients speak the protocol, results are written),
//! not the timings. The cluster rows run for wsrelay only (two relays on a `redis-server` the
//! harness starts, and one relay in memory): without `redis-server` this test fails and says
//! so (`cargo xtask test` installs it); the Socket.IO peers are left to the real runs. The npm
//! rows run wsrelay's npm package only, and only once it is built (`cargo xtask pkg`): without
//! `pkg/` they are skipped. So is the end-to-end row without a `wsrelay-server` binary beside the
//! harness's (a workspace build makes one), the Node server package's rows without
//! `pkg-server/` (`cargo xtask pkg server`), and the browser row (wsrelay's web build alone,
//! in headless Chromium) without `pkg/web` or Chromium.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn smoke_run_produces_a_result_for_every_scenario() {
    let dir = std::env::temp_dir().join(format!("wsrelay-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let md = dir.join("BENCHMARKS.md");
    let json = dir.join("results.json");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_wsrelay-bench"))
        .arg("run")
        .arg("--smoke")
        .arg("--md")
        .arg(&md)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "smoke run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the smoke run took {:?}",
        started.elapsed()
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("results.json written"))
            .expect("results.json is JSON");
    for scenario in [
        "echo 20 B x1",
        "send_to 5 pairs",
        "broadcast 20x2",
        "idle 100 conns",
    ] {
        let row = rows
            .iter()
            .find(|r| r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{stdout}"));
        assert!(row["ours"].is_number(), "no value for {scenario}: {row}");
        for key in [
            "metric",
            "unit",
            "peer",
            "peer_value",
            "ratio",
            "machine",
            "date",
        ] {
            assert!(row.get(key).is_some(), "{scenario}: no {key} in {row}");
        }
    }
    for (scenario, metric) in [
        ("cluster broadcast 20x2", "deliveries/s (msg/s)"),
        (
            "cluster broadcast 20x2",
            "Redis round trips per delivery (calls)",
        ),
        (
            "cluster broadcast 20x2",
            "bytes in Redis per session (MEMORY USAGE of its keys) (B)",
        ),
        ("cluster send_to 5 pairs", "deliveries/s (msg/s)"),
        (
            "cluster send_to 5 pairs",
            "Redis commands per delivery (inside Lua scripts included) (commands)",
        ),
        ("cluster send_to 5 pairs, 200 msg/s", "p95 latency (ms)"),
    ] {
        let row = rows
            .iter()
            .find(|r| r["scenario"] == scenario && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no row for {scenario} / {metric}:\n{stdout}"));
        assert!(
            row["ours"].as_f64().is_some_and(|v| v > 0.0),
            "no value for {scenario} / {metric}: {row}"
        );
    }
    let pkg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pkg/node/wsrelay_bg.wasm");
    if pkg.is_file() {
        let npm: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| {
                r["scenario"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("npm client"))
                    && r["metric"] == "client CPU per delivery (µs)"
            })
            .collect();
        assert_eq!(npm.len(), 2, "the npm rows, with pkg/ built:\n{stdout}");
        for row in npm {
            assert!(
                row["ours"].as_f64().is_some_and(|v| v > 0.0),
                "no value for {row}"
            );
        }
    }
    // The end-to-end row needs the package and the relay binary: next to the harness (a
    // workspace build makes it; `cargo xtask bench` builds it in release) or named by
    // WSRELAY_BENCH_RELAY.
    let relay =
        std::path::Path::new(env!("CARGO_BIN_EXE_wsrelay-bench")).with_file_name("wsrelay-server");
    if pkg.is_file() && (relay.is_file() || std::env::var_os("WSRELAY_BENCH_RELAY").is_some()) {
        let scenario = "end to end, 2 senders x 10 in flight, 4 receivers";
        let row = rows
            .iter()
            .find(|r| r["scenario"] == scenario && r["metric"] == "deliveries/s (msg/s)")
            .unwrap_or_else(|| panic!("no end-to-end row:\n{stdout}"));
        assert!(
            row["ours"].as_f64().is_some_and(|v| v > 0.0),
            "no value for {row}"
        );
    }
    // The browser row needs the package's web build and Chromium (`cargo xtask bench`
    // installs it; CHROMIUM names another).
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pkg/web/wsrelay_bg.wasm");
    let chromium = std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    if web.is_file() && std::path::Path::new(&chromium).is_file() {
        let row = rows
            .iter()
            .find(|r| {
                r["scenario"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("browser client "))
                    && r["metric"] == "renderer CPU per delivery (µs)"
            })
            .unwrap_or_else(|| panic!("no browser row:\n{stdout}"));
        assert!(
            row["ours"].as_f64().is_some_and(|v| v > 0.0),
            "no value for {row}"
        );
    }
    let text = std::fs::read_to_string(&md).expect("BENCHMARKS.md written");
    assert!(text.contains("## Results") && text.contains("## Targets"));
    assert!(text.contains("## Cluster rows"), "no cluster section");
    let _ = std::fs::remove_dir_all(&dir);
}
