//! Sessions and mailboxes in Redis, shared by every relay on it: several relays behave as one
//! server, and a relay's death loses nothing it acknowledged.
//!
//! # Data model (`PROTOCOL.md` section 12)
//!
//! Sources are spread over [`SHARDS`] shards; every key of a source carries its shard as a hash
//! tag (`wsr:{7}:...`), so each script touches one Redis Cluster slot. Per source (`<h>` its
//! UTF-8 bytes in hex):
//! - `wsr:{s}:m:<h>`, a hash: `epoch` (fencing), `owner` (the relay's node number) and `lease`
//!   (ms, Redis time) while a connection holds it; `session`, `token`, `sid`, `consumed` (the
//!   de-duplication watermark), `base`; `first` (the position of the box's first frame),
//!   `bytes`; `lost`/`broken` when a broadcast found the box full.
//! - `wsr:{s}:b:<h>`, a list: the mailbox, reliable frames from position `first` on.
//! - `wsr:{s}:f:<h>`, a hash: per sender, the last directed message appended (`token|id`), so
//!   that appending a message twice (a relay died between appending and acknowledging) has the
//!   effect of once.
//! - per shard, `wsr:{s}:members` (the sources with keys) and `wsr:{s}:bf` (per sender, the
//!   last broadcast applied to the shard).
//!
//! Global: `wsr:presence` (a sorted set, source → lease end), `wsr:nodes` (node numbers).
//!
//! Retention: a source's keys expire `session_grace` after its last connection ended, or after
//! its relay stopped renewing the lease (`LEASE`, renewed every third of it); a mailbox holds
//! at most `max_backlog` bytes.
//!
//! # Travel
//!
//! Appends are Lua scripts that return the position given and the recipient's owner. The
//! appending relay hands a frame to its own connections directly, and publishes it with the
//! positions to each other owner's channel `wsr:n:<node>`. Pub/sub is only a shortcut: a
//! connection takes a frame from it only at the position it expects next, and otherwise reads
//! its mailbox, which is the truth; after a resubscription every connection reads its
//! mailbox again, so a notification lost while Redis was away delays nothing for long.
//!
//! # Failures
//!
//! Every call has a deadline. While Redis cannot be reached nothing is consumed or
//! acknowledged (`Routed::Unavailable`): clients keep their messages and send them again;
//! the relay reports not ready; the connection manager and the subscriber reconnect.

mod appends;
mod inbox;
mod leases;
mod logs;
mod rooms;
mod status;
mod store;
#[cfg(test)]
mod tests;
mod travel;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;
use wsrelay_core::server::memory::EngineLimits;

use super::{
    Attempt, Claim, ClaimError, Doorbell, Effect, EngineError, Hello, MessageRouter, Opened,
    Routed, SendRefused, SessionStore, Signal,
};
use crate::config::RoomRetention;
use crate::requests::Requests;
use inbox::{Inbox, Next};
use wire::{hex, unhex, Note};

/// Shards sources are spread over (hash tags): a broadcast costs one script per shard.
pub(crate) const SHARDS: u32 = 16;
/// How long a relay holds a source without renewing (it renews every third of it).
const LEASE: Duration = Duration::from_secs(30);
/// Deadline of every Redis call.
const DEADLINE: Duration = Duration::from_secs(2);
/// How often Redis is asked whether it answers (`PING`), so that the health flag
/// readiness reads is current on an idle relay too: otherwise only calls made for clients
/// refresh it, and a relay without clients would never notice Redis going or coming back.
const PROBE: Duration = Duration::from_secs(1);
/// The channel every relay listens to, besides its own.
const ALL: &str = "wsr:all";

struct Scripts {
    claim: Script,
    open: Script,
    route_one: Script,
    log_append: Script,
    log_end: Script,
    place: Script,
    commit: Script,
    fetch: Script,
    settle: Script,
    release: Script,
    renew: Script,
    membership: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("common.lua")))
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            claim: script(include_str!("claim.lua")),
            open: script(include_str!("open.lua")),
            route_one: script(include_str!("route_one.lua")),
            log_append: script(include_str!("log_append.lua")),
            log_end: script(include_str!("log_end.lua")),
            place: script(include_str!("place.lua")),
            commit: script(include_str!("commit.lua")),
            fetch: script(include_str!("fetch.lua")),
            settle: script(include_str!("settle.lua")),
            release: script(include_str!("release.lua")),
            renew: script(include_str!("renew.lua")),
            membership: script(include_str!("membership.lua")),
        }
    }
}

/// A connection of this relay, as the engine knows it.
struct Local {
    epoch: u64,
    doorbell: Doorbell,
    /// Frames handed over by an append on this relay or a note, before the mailbox is read.
    inbox: Inbox,
    /// The connection opened a session (not a bare client).
    session: bool,
}

/// The Redis engine. Cheap to share; its background tasks end with the server.
pub(crate) struct RedisEngine {
    conn: ConnectionManager,
    client: redis::Client,
    scripts: Scripts,
    limits: EngineLimits,
    retention: RoomRetention,
    node_id: String,
    /// This relay's number, from `wsr:nodes` (known once Redis answered).
    node: OnceLock<u64>,
    locals: Mutex<HashMap<String, Local>>,
    /// The rooms' logs this relay's connections follow (`logs`). Locked before `locals`
    /// when both are.
    feeds: Mutex<logs::Feeds>,
    /// Places in rooms' logs that members reached and that are not stored yet (source, room).
    unstored: Mutex<HashMap<(String, String), u64>>,
    requests: Arc<Requests>,
    healthy: AtomicBool,
    /// Redis was unreachable since it last answered (logged), so its answer again is news.
    was_unreachable: AtomicBool,
    /// Rung when Redis answers again after failing: what could not be announced meanwhile is
    /// made up for by a sweep of every relay.
    recovered: tokio::sync::Notify,
    /// Names this process's session instances apart from any other's.
    instance: u64,
    sessions_opened: AtomicU64,
}

fn shard_of(source: &str) -> u32 {
    // FNV-1a: stable across processes and versions (the shard is part of every key).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in source.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % SHARDS
}

/// The keys of one source: meta, box, from, members.
struct Keys {
    meta: String,
    r#box: String,
    from: String,
    members: String,
    hex: String,
    /// The shard's key prefix (`wsr:{7}:`), for the keys a script finds on its way (a room's
    /// members in the shard, `wsr:{7}:r:<room>`).
    prefix: String,
}

impl Keys {
    fn of(source: &str) -> Keys {
        let shard = shard_of(source);
        let h = hex(source);
        Keys {
            meta: format!("wsr:{{{shard}}}:m:{h}"),
            r#box: format!("wsr:{{{shard}}}:b:{h}"),
            from: format!("wsr:{{{shard}}}:f:{h}"),
            members: format!("wsr:{{{shard}}}:members"),
            hex: h,
            prefix: format!("wsr:{{{shard}}}:"),
        }
    }

    /// The members of `room` (hex) in this source's shard.
    fn room(&self, room: &str) -> String {
        format!("{}r:{room}", self.prefix)
    }
}

fn unavailable(error: impl std::fmt::Display) -> EngineError {
    EngineError(error.to_string())
}

fn ints(value: &Value) -> Vec<i64> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => *n,
                Value::BulkString(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            })
            .collect(),
        Value::Int(n) => vec![*n],
        _ => Vec::new(),
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::Int(n)) => n.to_string(),
        Some(Value::SimpleString(text)) => text.clone(),
        _ => String::new(),
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

impl RedisEngine {
    /// An engine on the Redis at `url`. It does not wait for Redis: until Redis answers,
    /// connections are refused with 1013 and the relay reports not ready.
    pub(crate) fn start(
        url: &str,
        node_id: Option<String>,
        limits: EngineLimits,
        retention: RoomRetention,
        requests: Arc<Requests>,
        stop: CancellationToken,
    ) -> Result<Arc<RedisEngine>, EngineError> {
        // redis-rs leaves Nagle's algorithm on. Calls share one multiplexed connection, so a
        // small write issued while an earlier one is unacknowledged could wait for the peer's
        // delayed ACK; every call here is latency-bound, none gains from coalescing.
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(unavailable)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(DEADLINE))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        let instance = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        let node_id = node_id.unwrap_or_else(|| format!("relay-{:08x}", instance as u32));
        let engine = Arc::new(RedisEngine {
            conn,
            client,
            scripts: Scripts::new(),
            limits,
            retention,
            node_id,
            node: OnceLock::new(),
            locals: Mutex::default(),
            feeds: Mutex::default(),
            unstored: Mutex::default(),
            requests,
            healthy: AtomicBool::new(false),
            was_unreachable: AtomicBool::new(false),
            recovered: tokio::sync::Notify::new(),
            instance,
            sessions_opened: AtomicU64::new(0),
        });
        tokio::spawn(Arc::clone(&engine).listen(stop.clone()));
        tokio::spawn(Arc::clone(&engine).renew_leases(stop.clone()));
        tokio::spawn(Arc::clone(&engine).probe(stop.clone()));
        tokio::spawn(Arc::clone(&engine).store_places_regularly(stop.clone()));
        tokio::spawn(Arc::clone(&engine).announce_recovery(stop));
        tracing::info!(node = engine.node_id, "sessions in Redis");
        Ok(engine)
    }

    /// Whether Redis answers: the last call's outcome (one is made at least every [`PROBE`]),
    /// and this relay registered with it. One atomic load: `GET /readyz` asks on every probe.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sources connected to this relay.
    pub(crate) fn local_count(&self) -> usize {
        self.locals().len()
    }

    fn locals(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        self.locals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node(&self) -> Result<u64, EngineError> {
        self.node
            .get()
            .copied()
            .ok_or_else(|| EngineError("not registered with Redis yet".into()))
    }

    /// Runs a Redis call under the deadline, and keeps the health flag.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, EngineError> {
        let outcome = tokio::time::timeout(DEADLINE, call).await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(EngineError("Redis did not answer in time".into())),
        };
        let healthy = result.is_ok() && self.node.get().is_some();
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                if self.was_unreachable.swap(false, Ordering::Relaxed) {
                    tracing::info!(node = self.node_id, "Redis reachable again");
                } else {
                    tracing::info!(node = self.node_id, "Redis reachable");
                }
                // Whatever was appended while calls failed may have been announced to nobody.
                self.sweep();
                self.recovered.notify_one();
            } else if let Err(error) = &result {
                self.was_unreachable.store(true, Ordering::Relaxed);
                tracing::warn!(node = self.node_id, %error, "Redis unreachable");
            }
        }
        result
    }

    async fn eval(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Value, EngineError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        self.call(invocation.invoke_async(&mut conn)).await
    }

    /// The state of `claim`'s connection on this relay, if it is still the one that holds the
    /// source here (a newer claim of the source replaces the entry).
    fn with_local<R>(&self, claim: &Claim, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
        self.locals()
            .get_mut(&claim.source)
            .filter(|local| local.epoch == claim.epoch)
            .map(f)
    }

    fn new_sid(&self) -> String {
        let n = self.sessions_opened.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:x}.{n}", self.instance)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
