//! `run`: the whole benchmark. Pins itself (the load generator on core 1, the servers on core
//! 0), runs the groups of rows the options select, prints the table of ratios and the targets,
//! and writes `BENCHMARKS.md` and `bench/results.json`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::harness::{Harness, LABELS, OURS};
use crate::plan::{parse_run_args, repo_root, Options};
use crate::report::{self, Cell, Context, Verdict};
use crate::verdicts::verdicts;
use crate::{procs, rows};

const PINNED_ENV: &str = "WSRELAY_BENCH_PINNED";
/// `run [--quick | --smoke] [--only GROUPS] [--md PATH] [--json PATH] [--note TEXT]
/// [--no-pin]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = parse_run_args(args)?;
    // In the re-executed process (already on core 1) `can_pin` would see one core only.
    let already_pinned = std::env::var_os(PINNED_ENV).is_some();
    let pin = options.pin && (already_pinned || procs::can_pin());
    if pin && !already_pinned {
        // Re-run ourselves on core 1; the servers go to core 0.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let status = Command::new("taskset")
            .arg("-c")
            .arg("1")
            .arg(exe)
            .arg("run")
            .args(args)
            .env(PINNED_ENV, "1")
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("the pinned run failed ({status})"))
        };
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 25_000 => {
            eprintln!("note: open files limited to {limit}");
        }
        Ok(_) => {}
        Err(error) => eprintln!("note: cannot raise the open files limit: {error}"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async_run(options, pin))
}

/// Runs the groups of rows `options` selects, in the report's order, then reports.
async fn async_run(options: Options, pinned: bool) -> Result<(), String> {
    let started = Instant::now();
    let root = repo_root();
    let plan = &options.plan;
    let load_before = loadavg();
    let harness = Harness::prepare(&root, &options, pinned)?;
    let peers = harness.peers();
    println!(
        "wsrelay-bench: {} mode, {} repetitions, servers on {}",
        plan.name,
        plan.reps,
        if pinned {
            "core 0, load on core 1"
        } else {
            "any core (not pinned)"
        }
    );
    let mut cells: Vec<Cell> = Vec::new();
    let mut sections = Vec::new();
    if options.wants("echo") {
        cells.extend(rows::echo_rows(&harness, plan, &peers).await);
    }
    if options.wants("send_to") {
        cells.extend(rows::send_to_rows(&harness, plan, &peers).await);
    }
    if options.wants("broadcast") {
        cells.extend(rows::broadcast_rows(&harness, plan, &peers).await);
    }
    if options.wants("idle") {
        cells.extend(rows::idle_rows(&harness, plan, &peers).await);
    }
    if options.wants("client") {
        cells.extend(rows::client_rows(&harness, plan, &root).await);
    }
    if options.wants("multicore") {
        cells.extend(rows::multicore_rows(&harness, plan).await);
    }
    if options.wants("cluster") {
        let (cluster_cells, section) = rows::cluster_rows(&harness, plan).await;
        cells.extend(cluster_cells);
        sections.push(section);
    }
    if options.wants("rooms") {
        let (rooms_cells, section) = rows::rooms_rows(&harness, plan).await;
        cells.extend(rooms_cells);
        sections.push(section.replacen("## Cluster rows", "## Rooms rows", 1));
    }
    // Selected, and their clients installed (`Harness::prepare`).
    if options.wants("npm") && harness.npm.is_some() {
        cells.extend(rows::npm_rows(&harness, plan).await);
    }
    if options.wants("node-server") && harness.napi.is_some() {
        cells.extend(rows::node_server_rows(&harness, plan).await);
    }
    // Selected, and its page ready (`Harness::prepare`: Chromium, `pkg/web`).
    if harness.browser.is_some() {
        cells.extend(rows::browser_rows(&harness, plan).await);
    }
    // Selected, and the relay binary found too.
    if options.wants("e2e") && harness.relay.is_some() {
        let (e2e_cells, section) = rows::e2e_rows(&harness, plan).await;
        cells.extend(e2e_cells);
        sections.push(section);
    }

    let cells = with_per_cpu(cells);
    let verdicts = verdicts(&cells, plan);
    let machine = machine();
    let date = now_utc();
    let ctx = Context {
        mode: plan.name.into(),
        date,
        machine,
        load_before,
        load_after: loadavg(),
        duration_s: started.elapsed().as_secs_f64(),
        pinned,
        note: options.note.clone(),
        labels: LABELS.to_vec(),
        sections,
    };
    report_results(&cells, &ctx, &verdicts, &options, &root)?;
    println!(
        "wsrelay-bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    every_row_measured(&cells)
}

/// Work per server CPU-second, next to each throughput cell.
fn with_per_cpu(cells: Vec<Cell>) -> Vec<Cell> {
    cells
        .into_iter()
        .flat_map(|cell| {
            let extra = cell.metric.saturate.then(|| report::per_cpu(&cell));
            std::iter::once(cell).chain(extra)
        })
        .collect()
}

/// Prints the table of ratios and the targets, and writes the Markdown report and the JSON
/// rows where `options` says.
fn report_results(
    cells: &[Cell],
    ctx: &Context,
    verdicts: &[Verdict],
    options: &Options,
    root: &Path,
) -> Result<(), String> {
    let table = report::table(cells, OURS);
    println!("\n{table}");
    for v in verdicts {
        println!(
            "target: {} -> {} ({})",
            v.target,
            v.measured,
            match v.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
    }
    if let Some(path) = &options.md {
        let analysis = std::fs::read_to_string(root.join("bench").join("ANALYSIS.md")).ok();
        let text = report::markdown(cells, OURS, ctx, verdicts, analysis.as_deref());
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &options.json {
        let rows = report::json_rows(cells, OURS, ctx);
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Fails unless every row has a value of ours (the wasm package's size aside: `pkg/` may not
/// be built).
fn every_row_measured(cells: &[Cell]) -> Result<(), String> {
    // The harness is checked by the smoke run: every scenario must have produced a value.
    let failed: Vec<&Cell> = cells
        .iter()
        .filter(|c| !c.metric.scenario.starts_with("wasm package") && c.summary(OURS).is_none())
        .collect();
    let mut reasons: Vec<String> = Vec::new();
    for error in failed.iter().flat_map(|c| c.errors(OURS)) {
        if !reasons.contains(&error) {
            reasons.push(error);
        }
    }
    let missing: Vec<String> = failed
        .iter()
        .map(|c| format!("{} ({})", c.metric.scenario, c.metric.metric))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "no result for: {}\nbecause: {}",
            missing.join(", "),
            reasons.join("; ")
        ))
    }
}

/// The load averages (1, 5, 15 min) of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The CPU model, the number of vCPUs and the kernel: the report's machine line.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Not `available_parallelism`: this process is pinned to one core.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} vCPU, Linux {kernel}")
}

/// The date and time, UTC, ISO 8601.
fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}
