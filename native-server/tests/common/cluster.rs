//! Real processes for the cluster tests: a `redis-server` of the test's own and
//! `wsrelay-server` relays on it, on free loopback ports, with the signals to hurt them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Upper bound for starting or stopping a process.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A port nobody listens on now.
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A `redis-server` of the test's own, on a free port, its files in a directory of its own
/// (removed when dropped).
pub struct Redis {
    /// The process, while it runs.
    pub child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
}

impl Redis {
    /// With `persistent`, every write is appended to the AOF and fsynced before it is answered.
    pub async fn start(persistent: bool) -> Redis {
        let port = free_port().await;
        let dir = std::env::temp_dir().join(format!("wsrelay-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            child: None,
            port,
            dir,
            persistent,
        };
        redis.launch().await;
        redis
    }

    /// Starts the process (again) on the same port and directory, and waits until it answers
    /// `PING`.
    pub async fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        self.child = Some(command.spawn().expect("redis-server is installed"));
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await {
                let _ = stream.write_all(b"PING\r\n").await;
                let mut reply = [0; 7];
                if stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n" {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops Redis as an operator would (it writes what it must first), and starts it again.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM").await;
            let _ = tokio::time::timeout(PATIENCE, child.wait()).await;
        }
        self.launch().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends the signal `name` (`KILL`, `TERM`, `STOP`, `CONT`...) to `child`.
pub async fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// A `wsrelay-server` process on Redis.
pub struct Relay {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The Redis URL it was given.
    pub redis: String,
    /// Its `--node-id`.
    pub node: String,
}

impl Relay {
    /// A relay on a free port, logging to the test's stderr.
    pub async fn start(redis: &str, node: &str) -> Relay {
        Relay::start_on(redis, node, 0).await
    }

    /// A relay on `port` (0: a free one), logging to the test's stderr.
    pub async fn start_on(redis: &str, node: &str, port: u16) -> Relay {
        Relay::start_logged(redis, node, port, None).await
    }

    /// A relay on `port` (0: a free one) whose log (level `info` unless `RUST_LOG` says
    /// otherwise) is appended to `log`, or, without one, goes to the test's stderr (level
    /// `warn` unless `RUST_LOG` says otherwise).
    pub async fn start_logged(redis: &str, node: &str, port: u16, log: Option<&Path>) -> Relay {
        Relay::start_with(redis, node, port, log, &[]).await
    }

    /// [`start_logged`](Relay::start_logged) with more flags.
    pub async fn start_with(
        redis: &str,
        node: &str,
        port: u16,
        log: Option<&Path>,
        flags: &[&str],
    ) -> Relay {
        let port = port.to_string();
        let mut args = vec!["--port", &port, "--redis", redis, "--node-id", node];
        args.extend_from_slice(flags);
        let (child, addr) = match log {
            None => super::spawn_relay(&args, PATIENCE).await,
            Some(log) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("relay log file");
                super::spawn_relay_with(
                    &args,
                    PATIENCE,
                    Stdio::from(file),
                    "warn,wsrelay_server=info",
                )
                .await
            }
        };
        Relay {
            child,
            addr,
            redis: redis.to_owned(),
            node: node.to_owned(),
        }
    }

    /// SIGKILL: the process dies with whatever it had in flight. Returns its Redis URL, node
    /// id and port, to start it again.
    pub async fn kill(mut self) -> (String, String, u16) {
        signal(&self.child, "KILL").await;
        let _ = self.child.wait().await;
        (self.redis, self.node, self.addr.port())
    }
}

/// Waits for a client's first `open` on `events`, then keeps counting its lost sessions in
/// the background: the count it returns.
pub async fn opened_counting_losses(
    mut events: tokio::sync::broadcast::Receiver<wsrelay::Event>,
) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::broadcast::error::RecvError;
    use wsrelay::Event;
    let lost = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&lost);
    let (opened_tx, opened) = tokio::sync::oneshot::channel();
    let mut opened_tx = Some(opened_tx);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::Open { .. }) => {
                    if let Some(tx) = opened_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::SessionLost { .. }) => {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    tokio::time::timeout(PATIENCE, opened)
        .await
        .expect("connects")
        .unwrap();
    lost
}

/// Waits on `events` for the client's error with code `lost` (a room's log, or the log of
/// broadcasts, no longer held what it missed), failing on a lost session; returns the error's
/// message and the count it names.
pub async fn told_lost(
    events: &mut tokio::sync::broadcast::Receiver<wsrelay::Event>,
) -> (String, u64) {
    use tokio::sync::broadcast::error::RecvError;
    use wsrelay::{Error, Event};
    let message = loop {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Ok(Ok(Event::Error(Error::Remote(error)))) if error.code == "lost" => {
                break error.message
            }
            Ok(Ok(Event::SessionLost { lost })) => panic!("the session goes on; {lost:?} lost"),
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(error)) => panic!("{error}"),
            Err(_) => panic!("no `lost` error within {PATIENCE:?}"),
        }
    };
    // "... were lost to you: 212 (past the log's retention)"
    let count = message
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {message:?}"));
    (message, count)
}
