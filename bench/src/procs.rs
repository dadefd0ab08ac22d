//! Server processes: started pinned to core 0, their address read from their first line,
//! their CPU time and RSS read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerCmd {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// A running server process; killed when dropped.
pub struct Server {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `taskset` can pin processes here (and there are at least two cores).
pub fn can_pin() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores >= 2
        && Command::new("taskset")
            .args(["-c", "0", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Starts `cmd` (pinned to `core` when given) and waits up to 20 s for its address line.
pub fn start(cmd: &ServerCmd, core: Option<usize>) -> Result<Server, String> {
    let mut command = match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(&cmd.program);
            c
        }
        None => Command::new(&cmd.program),
    };
    command
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.program.display()))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first);
        // Keep draining so that the server never blocks on a full pipe.
        for _ in lines.map_while(Result::ok) {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(Ok(line))) => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} {:?} did not announce its address: {other:?}",
                cmd.program.display(),
                cmd.args
            ));
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| format!("unexpected first line {line:?}"))?;
    let pid = child.id();
    Ok(Server {
        child,
        _stdin: stdin,
        pid,
        addr,
    })
}

/// User + system CPU time of a process (all threads), in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size of a process, in bytes.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU used by a process over an interval, as a fraction of one core.
pub struct CpuMeter {
    pid: String,
    cpu: f64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: impl ToString) -> CpuMeter {
        let pid = pid.to_string();
        CpuMeter {
            cpu: cpu_seconds(&pid).unwrap_or(0.0),
            pid,
            at: Instant::now(),
        }
    }

    /// Fraction of a core used since `start`.
    pub fn read(&self) -> f64 {
        let used = cpu_seconds(&self.pid).unwrap_or(self.cpu) - self.cpu;
        let elapsed = self.at.elapsed().as_secs_f64();
        if elapsed > 0.0 {
            used / elapsed
        } else {
            0.0
        }
    }
}
