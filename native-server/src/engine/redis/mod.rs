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

mod inbox;
#[cfg(test)]
mod tests;
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
use wsrelay_core::server::memory::MemoryLimits;

use super::{
    Attempt, Claim, ClaimError, Doorbell, Effect, EngineError, Hello, Opened, Routed, Router,
    SendRefused, SessionStore, Signal,
};
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
    broadcast: Script,
    commit: Script,
    fetch: Script,
    settle: Script,
    release: Script,
    renew: Script,
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
            broadcast: script(include_str!("broadcast.lua")),
            commit: script(include_str!("commit.lua")),
            fetch: script(include_str!("fetch.lua")),
            settle: script(include_str!("settle.lua")),
            release: script(include_str!("release.lua")),
            renew: script(include_str!("renew.lua")),
        }
    }
}

/// A connection of this relay, as the engine knows it.
struct Local {
    epoch: u64,
    doorbell: Doorbell,
    /// Frames handed over by an append on this relay or a note, before the mailbox is read.
    inbox: Inbox,
}

/// The Redis engine. Cheap to share; its background tasks end with the server.
pub(crate) struct RedisEngine {
    conn: ConnectionManager,
    client: redis::Client,
    scripts: Scripts,
    limits: MemoryLimits,
    node_id: String,
    /// This relay's number, from `wsr:nodes` (known once Redis answered).
    node: OnceLock<u64>,
    locals: Mutex<HashMap<String, Local>>,
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
        }
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
        limits: MemoryLimits,
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
            node_id,
            node: OnceLock::new(),
            locals: Mutex::default(),
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

    /// Hands a frame appended at `position` for `source` to its owner: this relay's
    /// connection directly, another relay through its channel (`notes`, sent by the caller).
    fn handover(
        &self,
        source_hex: &str,
        position: i64,
        owner: &str,
        frame: &Utf8Bytes,
        notes: &mut HashMap<String, Vec<(String, u64)>>,
    ) {
        let Ok(position) = u64::try_from(position) else {
            return;
        };
        if owner.is_empty() {
            return; // parked: read from the mailbox when the client comes back
        }
        if self
            .node
            .get()
            .is_some_and(|node| node.to_string() == owner)
        {
            if let Some(source) = unhex(source_hex) {
                self.cache(&source, position, frame.clone());
            }
        } else {
            notes
                .entry(owner.to_owned())
                .or_default()
                .push((source_hex.to_owned(), position));
        }
    }

    /// The state of `claim`'s connection on this relay, if it is still the one that holds the
    /// source here (a newer claim of the source replaces the entry).
    fn with_local<R>(&self, claim: &Claim, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
        self.locals()
            .get_mut(&claim.source)
            .filter(|local| local.epoch == claim.epoch)
            .map(f)
    }

    /// Hands a frame to a connection of this relay, and rings it.
    fn cache(&self, source: &str, position: u64, frame: Utf8Bytes) {
        if let Some(local) = self.locals().get_mut(source) {
            local.inbox.insert(position, frame);
            local.doorbell.ring(Signal::Mail);
        }
    }

    /// Publishes the notes of an append to the relays that own its recipients.
    async fn publish(&self, notes: HashMap<String, Vec<(String, u64)>>, frame: &Utf8Bytes) {
        for (owner, entries) in notes {
            let note = Note::Frames {
                entries,
                frame: frame.as_str().to_owned(),
            };
            self.notify(&owner, note).await;
        }
    }

    /// Tells the owners of these sources (hex, owner) to read their mailboxes: something was
    /// appended for them that they may not have heard of.
    async fn check(&self, sources: Vec<(String, String)>) {
        let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
        for (source, owner) in sources {
            if owner.is_empty() {
                continue;
            }
            if self
                .node
                .get()
                .is_some_and(|node| node.to_string() == owner)
            {
                if let Some(source) = unhex(&source) {
                    self.recheck(&source);
                }
            } else {
                by_owner.entry(owner).or_default().push(source);
            }
        }
        for (owner, sources) in by_owner {
            self.notify(&owner, Note::Check { sources }).await;
        }
    }

    async fn notify(&self, node: &str, note: Note) {
        let mut conn = self.conn.clone();
        let channel = format!("wsr:n:{node}");
        let payload = note.encode();
        let sent: Result<i64, _> = self
            .call(
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn),
            )
            .await;
        if let Err(error) = sent {
            // The mailbox has the frame; the owner reads it at its next sweep.
            tracing::debug!(%error, node, "notification not published");
        }
    }

    /// Appends a frame for another source (a directed message, or the server's own).
    async fn route_one(
        &self,
        target: &str,
        frame: &Utf8Bytes,
        sender: Option<(&str, &str)>,
        window: Option<usize>,
    ) -> Result<(i64, i64, String), EngineError> {
        let keys = Keys::of(target);
        let (sender_hex, dedupe) = match sender {
            Some((source, dedupe)) => (hex(source), dedupe.to_owned()),
            None => (String::new(), String::new()),
        };
        let window = window.map_or(-1, |w| i64::try_from(w).unwrap_or(i64::MAX));
        let node = self.node()?.to_string();
        let value = self
            .eval(
                &self.scripts.route_one,
                &[&keys.meta, &keys.r#box, &keys.from],
                &[
                    frame.as_bytes(),
                    sender_hex.as_bytes(),
                    dedupe.as_bytes(),
                    window.to_string().as_bytes(),
                    self.limits.max_backlog.to_string().as_bytes(),
                    b"",
                    node.as_bytes(),
                    keys.hex.as_bytes(),
                ],
            )
            .await?;
        let parts = items(&value);
        let status = ints(&value).first().copied().unwrap_or(-1);
        let position = ints(&value).get(1).copied().unwrap_or(0);
        let owner = text(parts.get(2));
        match status {
            // Another relay's connection was told by the script itself.
            0 if owner == node => {
                if let Ok(position) = u64::try_from(position) {
                    self.cache(target, position, frame.clone());
                }
            }
            1 => self.check(vec![(keys.hex.clone(), owner.clone())]).await,
            _ => {}
        }
        Ok((status, position, owner))
    }

    /// Appends a frame to every source but `exclude`, shard by shard. Returns how many took
    /// it, or the member that is behind (nothing appended in its shard).
    async fn broadcast_all(
        &self,
        frame: &Utf8Bytes,
        exclude: Option<&str>,
        dedupe: &str,
        window: Option<usize>,
    ) -> Result<Result<usize, String>, EngineError> {
        let exclude_hex = exclude.map(hex).unwrap_or_default();
        let window = window.map_or(-1, |w| i64::try_from(w).unwrap_or(i64::MAX));
        let (window, max) = (window.to_string(), self.limits.max_backlog.to_string());
        let calls = (0..SHARDS).map(|shard| {
            let members = format!("wsr:{{{shard}}}:members");
            let dedupe_key = format!("wsr:{{{shard}}}:bf");
            let prefix = format!("wsr:{{{shard}}}:");
            let (window, max, exclude_hex) = (&window, &max, &exclude_hex);
            async move {
                self.eval(
                    &self.scripts.broadcast,
                    &[&members, &dedupe_key],
                    &[
                        frame.as_bytes(),
                        exclude_hex.as_bytes(),
                        dedupe.as_bytes(),
                        window.as_bytes(),
                        max.as_bytes(),
                        prefix.as_bytes(),
                    ],
                )
                .await
            }
        });
        let results = join_all(calls).await;
        let mut notes = HashMap::new();
        let mut checks = Vec::new();
        let mut behind = None;
        let mut failed = None;
        let mut delivered = 0;
        for result in results {
            // The shards that did append are announced even when another failed.
            let value = match result {
                Ok(value) => value,
                Err(error) => {
                    failed = Some(error);
                    continue;
                }
            };
            let parts = items(&value);
            match ints(&value).first().copied() {
                Some(1) => {
                    for entry in parts.get(1..).unwrap_or_default().chunks(2) {
                        if let [member, owner] = entry {
                            checks.push((text(Some(member)), text(Some(owner))));
                        }
                    }
                }
                Some(0) => {
                    for entry in parts.get(1..).unwrap_or_default().chunks(3) {
                        let [member, position, owner] = entry else {
                            continue;
                        };
                        let member = text(Some(member));
                        let position = ints(&Value::Array(vec![position.clone()]))
                            .first()
                            .copied()
                            .unwrap_or(-1);
                        let owner = text(Some(owner));
                        if position < 0 {
                            if !owner.is_empty() {
                                self.notify(&owner, Note::Overflowed { source: member })
                                    .await;
                            }
                            continue;
                        }
                        delivered += 1;
                        self.handover(&member, position, &owner, frame, &mut notes);
                    }
                }
                Some(3) => behind = unhex(&text(parts.get(1))),
                _ => {}
            }
        }
        self.publish(notes, frame).await;
        self.check(checks).await;
        if let Some(error) = failed {
            return Err(error);
        }
        Ok(match behind {
            Some(member) => Err(member),
            None => Ok(delivered),
        })
    }

    /// Consumes `id` for the claim's source (and appends `frame` to its own box).
    async fn commit(
        &self,
        claim: &Claim,
        id: Option<u64>,
        frame: Option<&Utf8Bytes>,
    ) -> Result<Routed, EngineError> {
        let keys = Keys::of(&claim.source);
        let id = id.map(|id| id.to_string()).unwrap_or_default();
        let value = self
            .eval(
                &self.scripts.commit,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    id.as_bytes(),
                    frame.map_or(&b""[..], |frame| frame.as_bytes()),
                ],
            )
            .await?;
        let numbers = ints(&value);
        Ok(match numbers.first().copied() {
            Some(0) => {
                if let (Some(frame), Some(&position)) = (frame, numbers.get(1)) {
                    if let Ok(position) = u64::try_from(position) {
                        self.cache(&claim.source, position, frame.clone());
                    }
                }
                Routed::Done
            }
            Some(1) => {
                // Appended before, its answer lost: the frame was never handed over.
                if frame.is_some() {
                    self.recheck(&claim.source);
                }
                Routed::Duplicate
            }
            Some(5) => Routed::Fenced {
                superseded: claim.superseded_by(Some(&text(items(&value).get(2)))),
            },
            _ => Routed::Gone,
        })
    }

    /// Settles a server request's answer: here, or at the relay that sent the request.
    async fn resolve(
        &self,
        source: &str,
        kind: &str,
        re: u64,
        result: &Result<Option<String>, wsrelay_core::protocol::RemoteError>,
    ) {
        let node = re >> 32;
        if node == 0 || self.node.get() == Some(&node) {
            self.requests.resolve(source, kind, re, result.clone());
            return;
        }
        let note = Note::Answer {
            source: source.to_owned(),
            kind: kind.to_owned(),
            re,
            result: result.clone(),
        };
        self.notify(&node.to_string(), note).await;
    }

    /// Receives this relay's notes, resubscribing (and sweeping) after every reconnect.
    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    delay = Duration::from_millis(100);
                    // Notes published while nobody listened are gone: every connection
                    // reads its mailbox again, and the other relays are asked to sweep too (a
                    // note this relay could not publish meanwhile is made up for).
                    self.sweep();
                    self.recovered.notify_one();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            message = messages.next() => match message {
                                Some(message) => self.receive(message.get_payload_bytes()),
                                None => break,
                            },
                        }
                    }
                    tracing::warn!(node = self.node_id, "lost the Redis subscription");
                }
                Err(error) => {
                    tracing::warn!(node = self.node_id, %error, "cannot subscribe to Redis");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, EngineError> {
        let node = match self.node.get() {
            Some(node) => *node,
            None => {
                let mut conn = self.conn.clone();
                let node: u64 = self
                    .call(redis::cmd("INCR").arg("wsr:nodes").query_async(&mut conn))
                    .await?;
                *self.node.get_or_init(|| node)
            }
        };
        self.requests.set_node(node);
        let connect = self.client.get_async_pubsub();
        let mut pubsub = tokio::time::timeout(DEADLINE, connect)
            .await
            .map_err(|_| EngineError("Redis did not answer in time".into()))?
            .map_err(unavailable)?;
        let channel = format!("wsr:n:{node}");
        for channel in [channel.as_str(), ALL] {
            tokio::time::timeout(DEADLINE, pubsub.subscribe(channel))
                .await
                .map_err(|_| EngineError("Redis did not answer in time".into()))?
                .map_err(unavailable)?;
        }
        tracing::info!(node = self.node_id, number = node, "subscribed to Redis");
        Ok(pubsub)
    }

    /// After Redis failed and answers again, asks every relay to sweep: a notification this
    /// relay could not publish meanwhile is made up for.
    async fn announce_recovery(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.recovered.notified() => {}
            }
            let mut conn = self.conn.clone();
            let sweep = Note::Sweep.encode();
            let published: Result<i64, _> = self
                .call(
                    redis::cmd("PUBLISH")
                        .arg(ALL)
                        .arg(sweep)
                        .query_async(&mut conn),
                )
                .await;
            if let Err(error) = published {
                tracing::debug!(%error, "sweep not announced");
            }
        }
    }

    /// Something was appended for `source` that its connection here was not handed: it reads
    /// its mailbox.
    fn recheck(&self, source: &str) {
        if let Some(local) = self.locals().get_mut(source) {
            local.inbox.forget();
            local.doorbell.ring(Signal::Mail);
        }
    }

    fn sweep(&self) {
        for local in self.locals().values_mut() {
            local.inbox.forget();
            local.doorbell.ring(Signal::Mail);
        }
    }

    fn receive(&self, payload: &[u8]) {
        let Some(note) = Note::decode(payload) else {
            tracing::warn!(node = self.node_id, "unreadable note");
            return;
        };
        match note {
            Note::Frames { entries, frame } => {
                let frame = Utf8Bytes::from(frame);
                for (source_hex, position) in entries {
                    if let Some(source) = unhex(&source_hex) {
                        self.cache(&source, position, frame.clone());
                    }
                }
            }
            Note::Sweep => self.sweep(),
            Note::Check { sources } => {
                for source in sources.iter().filter_map(|source| unhex(source)) {
                    self.recheck(&source);
                }
            }
            Note::Replaced {
                source,
                epoch,
                superseded,
            } => {
                let Some(source) = unhex(&source) else { return };
                if let Some(local) = self.locals().get(&source) {
                    if local.epoch < epoch {
                        local.doorbell.ring(if superseded {
                            Signal::Superseded
                        } else {
                            Signal::Replaced
                        });
                    }
                }
            }
            Note::Overflowed { source } => {
                let Some(source) = unhex(&source) else { return };
                if let Some(local) = self.locals().get(&source) {
                    local.doorbell.ring(Signal::Overflowed);
                }
            }
            Note::Answer {
                source,
                kind,
                re,
                result,
            } => self.requests.resolve(&source, &kind, re, result),
        }
    }

    /// Renews the lease of every connection of this relay, every third of it.
    async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(LEASE / 3);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let claims: Vec<(String, u64)> = self
                .locals()
                .iter()
                .map(|(source, local)| (source.clone(), local.epoch))
                .collect();
            let lease = LEASE.as_millis().to_string();
            let grace = self.limits.session_grace.as_millis().to_string();
            let engine = &*self;
            let renewals = claims.iter().map(|(source, epoch)| {
                let keys = Keys::of(source);
                let (lease, grace) = (&lease, &grace);
                async move {
                    let renewed = engine
                        .eval(
                            &engine.scripts.renew,
                            &[&keys.meta, &keys.r#box, &keys.from],
                            &[
                                epoch.to_string().as_bytes(),
                                lease.as_bytes(),
                                grace.as_bytes(),
                            ],
                        )
                        .await;
                    (source, renewed)
                }
            });
            for (source, renewed) in join_all(renewals).await {
                match renewed.map(|value| ints(&value).first().copied()) {
                    // Claimed by another connection, or the state is gone: the connection
                    // learns which at its next read of the mailbox.
                    Ok(Some(0)) => self.recheck(source),
                    Ok(status) => {
                        if status == Some(2) {
                            // The lease had lapsed: appends meanwhile were announced to
                            // nobody.
                            self.recheck(source);
                        }
                        self.present(source).await;
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Pings Redis every [`PROBE`] through the shared connection, for the health flag
    /// ([`call`](Self::call) keeps it): readiness turns to 503 within about `PROBE` +
    /// `DEADLINE` of Redis going away, and back once it answers. A round trip a second is
    /// nothing beside what clients cost, and `GET /readyz` itself only reads the flag, so
    /// probing the endpoint never reaches Redis.
    async fn probe(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE);
        // A ping that waited out its deadline is not followed by a burst of them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut conn = self.conn.clone();
            let pong: Result<String, _> =
                self.call(redis::cmd("PING").query_async(&mut conn)).await;
            if let Err(error) = pong {
                tracing::trace!(node = self.node_id, %error, "Redis did not answer a ping");
            }
        }
    }

    /// Marks `source` online until its lease ends.
    async fn present(&self, source: &str) {
        let mut conn = self.conn.clone();
        let until = now_ms() + LEASE.as_millis() as u64;
        let _: Result<i64, _> = self
            .call(
                redis::cmd("ZADD")
                    .arg("wsr:presence")
                    .arg(until)
                    .arg(source)
                    .query_async(&mut conn),
            )
            .await;
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

impl SessionStore for RedisEngine {
    async fn claim(
        &self,
        source: &str,
        attempt: Option<&Attempt>,
        doorbell: &Doorbell,
        exclusive: bool,
    ) -> Result<Claim, ClaimError> {
        let node = self.node().map_err(ClaimError::Unavailable)?;
        let keys = Keys::of(source);
        let (instance, number) = attempt.map_or((String::new(), String::new()), |attempt| {
            (attempt.instance.clone(), attempt.number.to_string())
        });
        let value = self
            .eval(
                &self.scripts.claim,
                &[&keys.meta, &keys.r#box, &keys.from, &keys.members],
                &[
                    node.to_string().as_bytes(),
                    if exclusive { b"1" } else { b"0" },
                    LEASE.as_millis().to_string().as_bytes(),
                    self.limits.session_grace.as_millis().to_string().as_bytes(),
                    keys.hex.as_bytes(),
                    instance.as_bytes(),
                    number.as_bytes(),
                ],
            )
            .await
            .map_err(ClaimError::Unavailable)?;
        let numbers = ints(&value);
        let epoch = match numbers.first().copied() {
            Some(-1) => return Err(ClaimError::Occupied),
            Some(-2) => return Err(ClaimError::Stale),
            Some(epoch) => u64::try_from(epoch).unwrap_or(0),
            None => return Err(ClaimError::Unavailable(EngineError("bad answer".into()))),
        };
        let next = numbers
            .get(1)
            .copied()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1);
        let previous = text(items(&value).get(2));
        let signal = if numbers.get(3) == Some(&1) {
            Signal::Superseded
        } else {
            Signal::Replaced
        };
        let replaced = self.locals().insert(
            source.to_owned(),
            Local {
                epoch,
                doorbell: doorbell.clone(),
                inbox: Inbox::default(),
            },
        );
        if let Some(old) = replaced {
            old.doorbell.ring(signal);
        }
        if !previous.is_empty() && previous != node.to_string() {
            let note = Note::Replaced {
                source: keys.hex.clone(),
                epoch,
                superseded: signal == Signal::Superseded,
            };
            self.notify(&previous, note).await;
        }
        self.present(source).await;
        Ok(Claim {
            source: source.to_owned(),
            key: 0,
            epoch,
            next,
            attempt: attempt.cloned(),
            session: None,
        })
    }

    async fn open(
        &self,
        claim: &mut Claim,
        hello: Option<&Hello>,
        fresh_next: u64,
    ) -> Result<Opened, EngineError> {
        let keys = Keys::of(&claim.source);
        let (token, ack, sid) = match hello {
            Some(hello) => (
                hello.token.as_str(),
                hello.ack,
                hello.sid.as_deref().unwrap_or(""),
            ),
            None => ("", 0, ""),
        };
        let new_sid = self.new_sid();
        let value = self
            .eval(
                &self.scripts.open,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    token.as_bytes(),
                    ack.to_string().as_bytes(),
                    sid.as_bytes(),
                    fresh_next.to_string().as_bytes(),
                    new_sid.as_bytes(),
                ],
            )
            .await?;
        let numbers = ints(&value);
        match numbers.first().copied() {
            Some(-1) => return Err(EngineError("the source was claimed again".into())),
            Some(-2) => return Err(EngineError("the source's state is gone".into())),
            _ => {}
        }
        let number = |i: usize| {
            numbers
                .get(i)
                .copied()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let lost = numbers.get(4).copied().filter(|&n| n >= 0);
        let sid = text(items(&value).get(5));
        claim.session = hello.map(|hello| hello.token.clone());
        // The connection reads the mailbox from its session's start.
        self.with_local(claim, |local| local.inbox.forget());
        Ok(Opened {
            resumed: number(0) == 1,
            consumed: number(1),
            base: number(2),
            next: number(3),
            lost: lost.and_then(|n| u64::try_from(n).ok()),
            sid: (!sid.is_empty()).then_some(sid),
        })
    }

    async fn fetch(
        &self,
        claim: &Claim,
        from: u64,
        out: &mut Vec<Utf8Bytes>,
        max: usize,
    ) -> Result<usize, EngineError> {
        let now = tokio::time::Instant::now();
        let next = self.with_local(claim, |local| match local.inbox.take(from, max, now, out) {
            Next::Wait(Some(at)) => {
                // If the missing frame does not come, the connection reads its mailbox.
                let doorbell = local.doorbell.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    doorbell.ring(Signal::Mail);
                });
                Next::Wait(None)
            }
            next => next,
        });
        // Without an entry of its own (a newer claim here took it), the mailbox answers.
        let next = next.unwrap_or(Next::ReadMailbox);
        match next {
            Next::Taken(count) => return Ok(count),
            Next::Wait(_) => return Ok(0),
            Next::ReadMailbox => {}
        }
        let keys = Keys::of(&claim.source);
        let value = self
            .eval(
                &self.scripts.fetch,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    from.to_string().as_bytes(),
                    max.to_string().as_bytes(),
                ],
            )
            .await?;
        let parts = items(&value);
        let signal = match ints(&Value::Array(parts.first().cloned().into_iter().collect()))
            .first()
            .copied()
        {
            Some(0) => None,
            Some(5) if claim.superseded_by(Some(&text(parts.get(1)))) => Some(Signal::Superseded),
            Some(5) => Some(Signal::Replaced),
            _ => Some(Signal::Gone),
        };
        if let Some(signal) = signal {
            // This connection's own doorbell: a newer connection of the source on this relay
            // is not the one fenced off.
            self.with_local(claim, |local| local.doorbell.ring(signal));
            return Ok(0);
        }
        let before = out.len();
        tracing::trace!(
            source = claim.source,
            from,
            count = parts.len().saturating_sub(1),
            "fetched from Redis"
        );
        for frame in parts.get(1..).unwrap_or_default() {
            if let Value::BulkString(bytes) = frame {
                match Utf8Bytes::try_from(bytes.clone()) {
                    Ok(frame) => out.push(frame),
                    Err(_) => tracing::error!("a mailbox frame is not UTF-8"),
                }
            }
        }
        if parts.len() > max {
            // A full batch: the mailbox may hold more, which nothing will hand over (it was
            // appended before this read). The next fetch reads the mailbox again.
            self.with_local(claim, |local| local.inbox.forget());
        }
        Ok(out.len() - before)
    }

    async fn settle(&self, claim: &Claim, through: u64) -> Result<(), EngineError> {
        let keys = Keys::of(&claim.source);
        self.eval(
            &self.scripts.settle,
            &[&keys.meta, &keys.r#box],
            &[
                claim.epoch.to_string().as_bytes(),
                through.to_string().as_bytes(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn release(&self, claim: &Claim) {
        {
            let mut locals = self.locals();
            if locals
                .get(&claim.source)
                .is_some_and(|local| local.epoch == claim.epoch)
            {
                locals.remove(&claim.source);
            }
        }
        let keys = Keys::of(&claim.source);
        let released = self
            .eval(
                &self.scripts.release,
                &[&keys.meta, &keys.r#box, &keys.from, &keys.members],
                &[
                    claim.epoch.to_string().as_bytes(),
                    self.limits.session_grace.as_millis().to_string().as_bytes(),
                    keys.hex.as_bytes(),
                ],
            )
            .await;
        if let Ok(value) = released {
            if ints(&value).first() == Some(&1) {
                let mut conn = self.conn.clone();
                let _: Result<i64, _> = self
                    .call(
                        redis::cmd("ZREM")
                            .arg("wsr:presence")
                            .arg(&claim.source)
                            .query_async(&mut conn),
                    )
                    .await;
            }
        }
    }
}

impl Router for RedisEngine {
    async fn route(
        &self,
        claim: &Claim,
        id: Option<u64>,
        effect: &Effect<Utf8Bytes>,
        _waiter: &Doorbell,
    ) -> Routed {
        let outcome = async {
            // The connection's own session, whoever holds the source on this relay now.
            let dedupe = || match (&claim.session, id) {
                (Some(token), Some(id)) => format!("{token}|{id}"),
                _ => String::new(),
            };
            match effect {
                Effect::Consume => self.commit(claim, id, None).await,
                Effect::Resolve { kind, re, result } => {
                    let routed = self.commit(claim, id, None).await?;
                    if routed == Routed::Done {
                        self.resolve(&claim.source, kind, *re, result).await;
                    }
                    Ok(routed)
                }
                Effect::Reply { frame } => self.commit(claim, id, Some(frame)).await,
                Effect::To { target, frame } if *target == claim.source => {
                    self.commit(claim, id, Some(frame)).await
                }
                Effect::To { target, frame } => {
                    let key = dedupe();
                    let sender = Some((claim.source.as_str(), key.as_str()));
                    let window = Some(self.limits.backlog_window);
                    let (status, _, _) = self.route_one(target, frame, sender, window).await?;
                    match status {
                        0 | 1 => self.commit(claim, id, None).await,
                        2 => Ok(Routed::UnknownTarget),
                        3 => Ok(Routed::Blocked { on: target.clone() }),
                        _ => Ok(Routed::Overflow),
                    }
                }
                Effect::Broadcast { frame } => {
                    let key = dedupe();
                    let window = Some(self.limits.backlog_window);
                    match self
                        .broadcast_all(frame, Some(&claim.source), &key, window)
                        .await?
                    {
                        Ok(_) => self.commit(claim, id, None).await,
                        Err(on) => Ok(Routed::Blocked { on }),
                    }
                }
            }
        };
        match outcome.await {
            Ok(routed) => routed,
            Err(error) => {
                tracing::debug!(source = claim.source, %error, "route not done");
                Routed::Unavailable
            }
        }
    }

    async fn append(&self, claim: &Claim, frame: Utf8Bytes) -> Result<(), EngineError> {
        match self.commit(claim, None, Some(&frame)).await? {
            Routed::Done => Ok(()),
            other => Err(EngineError(format!("not appended: {other:?}"))),
        }
    }

    async fn send_to(&self, target: &str, frame: Utf8Bytes) -> Result<(), SendRefused> {
        let (status, _, _) = self
            .route_one(target, &frame, None, None)
            .await
            .map_err(SendRefused::Unavailable)?;
        match status {
            0 => Ok(()),
            2 => Err(SendRefused::UnknownTarget),
            _ => Err(SendRefused::Overflow),
        }
    }

    async fn broadcast(
        &self,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, EngineError> {
        match self.broadcast_all(&frame, exclude, "", None).await? {
            Ok(delivered) => Ok(delivered),
            Err(on) => Err(EngineError(format!("{on} is behind"))),
        }
    }

    async fn clients(&self) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn.clone();
        let mut sources: Vec<String> = self
            .call(
                redis::cmd("ZRANGEBYSCORE")
                    .arg("wsr:presence")
                    .arg(now_ms())
                    .arg("+inf")
                    .query_async(&mut conn),
            )
            .await?;
        sources.sort_unstable();
        Ok(sources)
    }

    async fn is_connected(&self, source: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn.clone();
        let until: Option<u64> = self
            .call(
                redis::cmd("ZSCORE")
                    .arg("wsr:presence")
                    .arg(source)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(until.is_some_and(|until| until > now_ms()))
    }
}
