//! The cluster rows' Redis: a `redis-server` of the run's own on a free port (no persistence),
//! and what the harness reads from it: command counts (`INFO commandstats`), memory
//! (`INFO memory`, `MEMORY USAGE` of the relays' keys).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// The persistence settings of every Redis the harness starts (reported with the figures).
pub const REDIS_PERSISTENCE: [&str; 4] = ["--save", "", "--appendonly", "no"];

/// A running `redis-server`; stopped when dropped.
pub struct Redis {
    child: Child,
    pub pid: u32,
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// Starts `redis-server` on a free loopback port (pinned to `core` when given), without
    /// snapshots or AOF, and waits until it answers `PING` (at most 5 s per attempt, 3
    /// attempts: a port picked free may be taken before Redis binds it).
    pub fn start(core: Option<usize>) -> Result<Redis, String> {
        match Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => return Err(format!("redis-server --version failed ({status})")),
            Err(error) => {
                return Err(format!(
                    "redis-server not found ({error}): the cluster rows need it \
                     (`apt-get install -y redis-server`; `cargo xtask test` and \
                     `cargo xtask bench` install it)"
                ))
            }
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut command = match core {
                Some(core) => {
                    let mut c = Command::new("taskset");
                    c.arg("-c").arg(core.to_string()).arg("redis-server");
                    c
                }
                None => Command::new("redis-server"),
            };
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(REDIS_PERSISTENCE)
                .arg("--dir")
                .arg(std::env::temp_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let child = command
                .spawn()
                .map_err(|e| format!("cannot start redis-server: {e}"))?;
            let pid = child.id();
            let mut redis = Redis { child, pid, port };
            match redis.wait_ready(Duration::from_secs(5)) {
                Ok(()) => return Ok(redis),
                Err(error) => last = error,
            }
            drop(redis);
        }
        Err(format!("redis-server did not start: {last}"))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited ({status})"));
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no PONG on port {} within {limit:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// Commands that the wsrelay engine runs only inside its Lua scripts: counted by Redis in
/// `INFO commandstats` like any other, they are not round trips. PUBLISH is left out: the
/// relays also publish on their own (notes to one relay), and `commandstats` cannot tell the
/// two apart, so every PUBLISH counts as a round trip (an overstatement of ours: a room's
/// append publishes from its script).
fn script_commands() -> Vec<String> {
    const SCRIPTS: [&str; 13] = [
        include_str!("../../native-server/src/engine/redis/common.lua"),
        include_str!("../../native-server/src/engine/redis/log_append.lua"),
        include_str!("../../native-server/src/engine/redis/log_end.lua"),
        include_str!("../../native-server/src/engine/redis/place.lua"),
        include_str!("../../native-server/src/engine/redis/claim.lua"),
        include_str!("../../native-server/src/engine/redis/commit.lua"),
        include_str!("../../native-server/src/engine/redis/fetch.lua"),
        include_str!("../../native-server/src/engine/redis/membership.lua"),
        include_str!("../../native-server/src/engine/redis/open.lua"),
        include_str!("../../native-server/src/engine/redis/release.lua"),
        include_str!("../../native-server/src/engine/redis/renew.lua"),
        include_str!("../../native-server/src/engine/redis/route_one.lua"),
        include_str!("../../native-server/src/engine/redis/settle.lua"),
    ];
    let mut names: Vec<String> = Vec::new();
    for script in SCRIPTS {
        for call in ["redis.call('", "redis.pcall('"] {
            for (at, _) in script.match_indices(call) {
                let rest = &script[at + call.len()..];
                if let Some(end) = rest.find('\'') {
                    let name = rest[..end].to_ascii_lowercase();
                    if name != "publish" && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    names
}

/// Calls per command (`INFO commandstats`), the harness's own reads left out.
#[derive(Debug, Clone, Default)]
pub struct Commands(HashMap<String, u64>);

impl Commands {
    fn parse(info: &str) -> Commands {
        let mut calls = HashMap::new();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let count = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.trim().parse::<u64>().ok());
            if let Some(count) = count {
                calls.insert(name.to_owned(), count);
            }
        }
        Commands(calls)
    }

    fn ours(name: &str) -> bool {
        // The harness's reads: INFO, MEMORY USAGE, SCAN, PUBSUB, and the connection's
        // HELLO/CLIENT.
        ["info", "memory", "scan", "pubsub", "hello", "client"]
            .iter()
            .any(|own| name == *own || name.starts_with(&format!("{own}|")))
    }

    /// What ran between `before` and `self`: (commands executed, scripts' inner commands
    /// included; round trips, i.e. commands sent by clients: a script call counts once).
    pub fn since(&self, before: &Commands, script_commands: &[String]) -> (u64, u64) {
        let mut all = 0;
        let mut inner = 0;
        let mut scripts = 0;
        for (name, &calls) in &self.0 {
            if Commands::ours(name) {
                continue;
            }
            let delta = calls.saturating_sub(before.0.get(name).copied().unwrap_or(0));
            all += delta;
            if script_commands.iter().any(|c| c == name) {
                inner += delta;
            }
            if [
                "eval",
                "evalsha",
                "evalsha_ro",
                "eval_ro",
                "fcall",
                "fcall_ro",
            ]
            .contains(&name.as_str())
            {
                scripts += delta;
            }
        }
        // Without a script call, nothing ran inside one (the Socket.IO adapters run none).
        let round_trips = if scripts == 0 { all } else { all - inner };
        (all, round_trips)
    }
}

/// The harness's connection to a run's Redis.
pub struct Probe {
    conn: MultiplexedConnection,
    script_commands: Vec<String>,
    /// [`used_memory`](Self::used_memory) once the servers were up, before any client
    /// connected.
    pub baseline_memory: u64,
    /// Key pattern of the relays' state, measured with `MEMORY USAGE` after a run.
    pub keys: Option<&'static str>,
}

/// Bounds every call of the probe.
async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("redis {what}: {error}")),
        Err(_) => Err(format!("redis {what}: no answer within 10 s")),
    }
}

impl Probe {
    pub async fn connect(url: &str, keys: Option<&'static str>) -> Result<Probe, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
        let mut conn = bounded("connect", client.get_multiplexed_async_connection()).await?;
        // `MEMORY USAGE` of a long stream (a room's log) reads all of it: the calls are bounded
        // by `bounded`, not by the connection's default half second.
        conn.set_response_timeout(Duration::from_secs(10));
        let mut probe = Probe {
            conn,
            script_commands: script_commands(),
            baseline_memory: 0,
            keys,
        };
        probe.baseline_memory = probe.used_memory().await?;
        Ok(probe)
    }

    /// Waits until `n` clients subscribe to `channel` (at most `limit`): a relay subscribes
    /// once it has its node number, and refuses clients with 1013 until then.
    pub async fn wait_subscribers(
        &self,
        channel: &str,
        n: u64,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let mut conn = self.conn.clone();
            let (_, count): (String, u64) = bounded(
                "PUBSUB NUMSUB",
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query_async(&mut conn),
            )
            .await?;
            if count >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{count} of {n} servers subscribed to {channel} within {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn commands(&self) -> Result<Commands, String> {
        let mut conn = self.conn.clone();
        let info: String = bounded(
            "INFO",
            redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn),
        )
        .await?;
        Ok(Commands::parse(&info))
    }

    /// (commands executed, round trips) between two snapshots. With
    /// `WSRELAY_BENCH_REDIS_TOP` set, the commands Redis ran most are printed too (what a
    /// figure per delivery is made of).
    pub fn count(&self, before: &Commands, after: &Commands) -> (u64, u64) {
        if std::env::var_os("WSRELAY_BENCH_REDIS_TOP").is_some() {
            let mut top: Vec<(&String, u64)> = after
                .0
                .iter()
                .map(|(name, &calls)| (name, calls - before.0.get(name).copied().unwrap_or(0)))
                .filter(|(_, calls)| *calls > 0)
                .collect();
            top.sort_by_key(|&(_, calls)| std::cmp::Reverse(calls));
            top.truncate(8);
            eprintln!("      Redis ran: {top:?}");
        }
        after.since(before, &self.script_commands)
    }

    /// `used_memory` less the clients' buffers (`mem_clients_normal`: some 20 KB of query
    /// and output buffers per connection, which a relay opens when it needs them): the memory
    /// that holds data.
    pub async fn used_memory(&self) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let info: String = bounded(
            "INFO",
            redis::cmd("INFO").arg("memory").query_async(&mut conn),
        )
        .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("INFO memory has no {name}"))
        };
        Ok(field("used_memory")?.saturating_sub(field("mem_clients_normal")?))
    }

    /// `MEMORY USAGE` summed over the keys matching [`keys`](Self::keys), and how many of them
    /// are a session's meta hash (`:m:`): (bytes, sessions). At most 1000 SCAN rounds.
    pub async fn key_usage(&self) -> Result<Option<(u64, u64)>, String> {
        let Some(pattern) = self.keys else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        for _ in 0..1000 {
            let (next, batch): (u64, Vec<String>) = bounded(
                "SCAN",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut bytes = 0u64;
        for chunk in keys.chunks(50) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            let sizes: Vec<Option<u64>> =
                bounded("MEMORY USAGE", pipe.query_async(&mut conn)).await?;
            bytes += sizes.into_iter().flatten().sum::<u64>();
        }
        let sessions = keys.iter().filter(|k| k.contains(":m:")).count() as u64;
        Ok(Some((bytes, sessions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_leave_out_what_scripts_ran() {
        let before = Commands::parse("cmdstat_evalsha:calls=10,usec=1\r\ncmdstat_hset:calls=5\r\n");
        let after = Commands::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=9,usec_per_call=1.0\r\n\
             cmdstat_hset:calls=11\r\ncmdstat_rpush:calls=2\r\ncmdstat_publish:calls=3\r\n\
             cmdstat_info:calls=40\r\ncmdstat_memory|usage:calls=9\r\n",
        );
        let inner = script_commands();
        assert!(inner.iter().any(|c| c == "rpush") && inner.iter().any(|c| c == "hset"));
        assert!(!inner.iter().any(|c| c == "publish"));
        // 2 evalsha + 6 hset + 2 rpush + 3 publish; round trips: 2 evalsha + 3 publish.
        assert_eq!(after.since(&before, &inner), (13, 5));
        // Without script calls every command is a round trip (Socket.IO's PUBLISH, XADD...).
        let sio = Commands::parse("cmdstat_publish:calls=7\r\ncmdstat_xadd:calls=3\r\n");
        assert_eq!(sio.since(&Commands::default(), &inner), (10, 10));
    }
}
