//! The browser row: CPU time per delivery of the JavaScript clients in a browser, end to end.
//! One headless Chromium page (`bench/node/browser/clients.js` drives the system Chromium over
//! the DevTools protocol, on the load generator's core) hosts the receiving clients: wsrelay's
//! web build (`pkg/web`, an ES module and its `.wasm`, served to the page from loopback)
//! against wsrelay-server, or socket.io-client's browser bundle against Socket.IO 4 in memory
//! (`bench/node/socketio/server.js memory`), or, as the floor, the page's bare `WebSocket`
//! against the same Socket.IO; the server on its own core. A sender in this
//! process broadcasts on a fixed schedule, as in the npm rows; the CPU time of the page's
//! renderer process (and of every process of the browser) is read from `/proc` over the
//! measured broadcasts, and every client must have received every broadcast exactly once,
//! with no uncaught error or console error in the page.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::load::Broadcaster;
use crate::npm::{NodeClients, NpmLoad};
use crate::procs::{CpuMeter, Server};
use crate::wire::Proto;

/// The browser the page runs in (default `/usr/bin/chromium`, where Debian's `chromium`
/// package puts it and where `cargo xtask` installs it).
pub const CHROMIUM_ENV: &str = "CHROMIUM";

/// Set: print each run's report from the page (e.g. how long the page took to catch up with
/// the warm-up), for diagnosis.
pub const DEBUG_ENV: &str = "WSRELAY_BENCH_BROWSER_DEBUG";

/// Where the browser row's clients come from, once checked.
#[derive(Debug, Clone)]
pub struct Setup {
    /// bench/node/browser, its npm modules installed (socket.io-client, for its browser
    /// bundle).
    pub dir: PathBuf,
    /// The package's web build (`pkg/web`), which the page imports.
    pub pkg_web: PathBuf,
}

/// Checks what the browser row needs: the package's web build in `root/pkg/web`, Chromium
/// (`CHROMIUM` or `/usr/bin/chromium`), and the npm modules of `bench/node/browser`
/// (installed from its committed lockfile when missing).
pub fn prepare(root: &Path) -> Result<Setup, String> {
    let pkg_web = root.join("pkg").join("web");
    if !pkg_web.join("wsrelay_bg.wasm").is_file() {
        return Err("pkg/web is not built (cargo xtask pkg; cargo xtask bench builds it)".into());
    }
    let chromium = std::env::var_os(CHROMIUM_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (cargo xtask bench installs Debian's chromium; or set \
             {CHROMIUM_ENV})",
            chromium.display()
        ));
    }
    let dir = root.join("bench").join("node").join("browser");
    crate::node::npm_install(&dir, &["socket.io-client"], "the browser row's clients")?;
    Ok(Setup { dir, pkg_web })
}

/// The clients a browser run hosts in its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageClient {
    /// wsrelay's web build, against wsrelay-server.
    Wsrelay,
    /// socket.io-client's browser bundle, against Socket.IO.
    SocketIo,
    /// The floor: the browser's WebSocket and an `onmessage` that counts, speaking Socket.IO's
    /// wire format by hand, against Socket.IO.
    Bare,
}

/// What one browser run measured.
#[derive(Debug, Clone, Copy)]
pub struct BrowserSample {
    /// Microseconds of the page's renderer process (every thread) per measured delivery.
    pub renderer_us: f64,
    /// Microseconds of every process of the browser (browser, network service, GPU,
    /// renderers...) per measured delivery.
    pub browser_us: f64,
    /// The renderer's CPU over the measured span, as a fraction of a core.
    pub renderer_cpu: f64,
    /// Every browser process's CPU over the same span, as a fraction of a core.
    pub browser_cpu: f64,
    /// The server's CPU over the measured broadcasts, as a fraction of a core.
    pub server_cpu: f64,
}

/// One run: `server` is wsrelay-server (for [`PageClient::Wsrelay`]) or the Socket.IO peer
/// (fresh, pinned). Fails unless
/// every client received each broadcast exactly once and the page raised no error.
pub async fn run(
    setup: &Setup,
    client: PageClient,
    server: &Server,
    load: NpmLoad,
) -> Result<BrowserSample, String> {
    let (proto, mode, url) = match client {
        PageClient::Wsrelay => (Proto::Wsrelay, "wsrelay", format!("ws://{}/", server.addr)),
        PageClient::SocketIo => (
            Proto::SocketIo,
            "socketio",
            format!("http://{}", server.addr),
        ),
        PageClient::Bare => (Proto::SocketIo, "bare", format!("http://{}", server.addr)),
    };
    let mut sender = Broadcaster::connect(server.addr, proto).await?;
    let receivers = load.receivers as u64;
    let seconds = load.warmup as f64 / load.warmup_rate + load.measured as f64 / load.rate;
    let timeout = Duration::from_secs_f64(seconds) + Duration::from_secs(20);
    let args = [
        mode.to_owned(),
        url,
        load.receivers.to_string(),
        (load.warmup * receivers).to_string(),
        (load.measured * receivers).to_string(),
        timeout.as_millis().to_string(),
        setup.pkg_web.display().to_string(),
    ];
    let mut page = NodeClients::start(&setup.dir, "clients.js", "browser clients", &args).await?;
    sender.send(load.warmup_rate, load.warmup).await?;
    // The measurement starts just before the first measured broadcast, once the page has
    // every warm-up delivery and the acknowledgements they called for went out (the page's
    // process waits for both).
    page.command("mark").await?;
    let marked = page.next_line(Duration::from_secs(90), "the mark").await?;
    if marked.trim() != "marked" {
        return Err(format!("unexpected answer to the mark: {marked:?}"));
    }
    let meter = CpuMeter::start(server.pid);
    let (sent, line) = tokio::join!(
        sender.send(load.rate, load.measured),
        page.next_line(timeout + Duration::from_secs(5), "their report"),
    );
    let server_cpu = meter.read();
    sent?;
    let line = line?;
    if std::env::var_os(DEBUG_ENV).is_some() {
        eprintln!("browser clients: {line}");
    }
    // Closed when the run is over: the browser closes and the process exits.
    page.finish().await;
    let report: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("the page's report {line:?}: {e}"))?;
    check(&report, load)?;
    let number = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    let (measured, wall_us) = (number("measured"), number("wall_us"));
    let (renderer_us, browser_us) = (number("cpu_us"), number("browser_cpu_us"));
    Ok(BrowserSample {
        renderer_us: renderer_us / measured,
        browser_us: browser_us / measured,
        renderer_cpu: renderer_us / wall_us,
        browser_cpu: browser_us / wall_us,
        server_cpu,
    })
}

/// Checks the page's report: no error in the page, every delivery there exactly once, CPU
/// time measured.
fn check(report: &serde_json::Value, load: NpmLoad) -> Result<(), String> {
    let number = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    if let Some(first) = errors.first() {
        return Err(format!(
            "{} error(s) in the page, the first: {first}",
            errors.len()
        ));
    }
    let (delivered, expected, short) = (number("delivered"), number("expected"), number("short"));
    if delivered != expected || short != 0.0 {
        return Err(format!(
            "{delivered} of {expected} deliveries arrived ({short} of {} clients did not get \
             exactly one copy of each of the {} broadcasts)",
            load.receivers,
            load.warmup + load.measured
        ));
    }
    let (measured, cpu_us, wall_us) = (number("measured"), number("cpu_us"), number("wall_us"));
    if !(measured > 0.0 && cpu_us > 0.0 && wall_us > 0.0 && number("browser_cpu_us") > 0.0) {
        return Err(format!("no CPU time measured: {report}"));
    }
    if number("threads_exited") > 0.0 {
        // Their time is lost: the figure would be too low.
        return Err(format!(
            "threads of the renderer exited during the measurement: {report}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOAD: NpmLoad = NpmLoad {
        receivers: 2,
        rate: 5.0,
        warmup: 1,
        warmup_rate: 5.0,
        measured: 2,
    };

    fn report(changes: &[(&str, serde_json::Value)]) -> serde_json::Value {
        let mut report = serde_json::json!({
            "delivered": 6, "expected": 6, "short": 0, "measured": 4, "cpu_us": 400.0,
            "wall_us": 400000, "browser_cpu_us": 900.0, "renderer_pid": 7,
            "threads_exited": 0, "errors": []
        });
        for (key, value) in changes {
            report[*key] = value.clone();
        }
        report
    }

    #[test]
    fn a_complete_run_passes() {
        assert_eq!(check(&report(&[]), LOAD), Ok(()));
    }

    #[test]
    fn a_page_error_fails_the_run() {
        let errors = serde_json::json!(["page error: TypeError: x is undefined"]);
        let result = check(&report(&[("errors", errors)]), LOAD);
        assert!(result.is_err_and(|e| e.contains("TypeError")));
    }

    #[test]
    fn short_clients_fail_the_run() {
        let short = [("short", serde_json::json!(1))];
        assert!(check(&report(&short), LOAD).is_err());
        let missing = [("delivered", serde_json::json!(5))];
        assert!(check(&report(&missing), LOAD).is_err());
    }

    #[test]
    fn a_run_without_cpu_time_or_with_lost_threads_fails() {
        assert!(check(&report(&[("cpu_us", serde_json::json!(0))]), LOAD).is_err());
        assert!(check(&report(&[("threads_exited", serde_json::json!(1))]), LOAD).is_err());
        // A report cut short (the page's process died) has none of the numbers.
        assert!(check(&serde_json::json!({}), LOAD).is_err());
    }
}
