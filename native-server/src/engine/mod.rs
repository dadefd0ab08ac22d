//! The seam between the connections and where sessions live and how frames travel: the
//! [`SessionStore`] and [`MessageRouter`] traits, and the [`Doorbell`] through which an engine reaches
//! a connection. The in-memory engine ([`MemoryEngine`]) is the embedded default.
//!
//! # The contract an engine meets
//!
//! Vocabulary (mailbox, position, session, claim, epoch) as in
//! [`wsrelay_core::server::engine`].
//!
//! - **Durable before acknowledged.** [`MessageRouter::route`] answers [`Routed::Done`] only once the
//!   message's effect (frames appended to every recipient's mailbox, or a handler call due)
//!   and the sender's de-duplication watermark are as durable as the engine promises: the
//!   connection acknowledges the client right after. For the memory engine that is "in this
//!   process"; for a remote store, "written to the store". [`MessageRouter::append`] (responses and
//!   errors to the sender itself) and [`SessionStore::settle`] need the same before the
//!   connection goes on; `claim` and `open` before the welcome is sent.
//! - **Once.** `route` is idempotent per (source, session, id): a second route of an id at or
//!   below the watermark answers [`Routed::Duplicate`] and delivers nothing. Messages without
//!   an id (bare clients) are not de-duplicated.
//! - **Order.** Frames appended to one mailbox keep the order of the appends, and a connection
//!   routes its messages one at a time, so what one sender sends reaches each recipient in
//!   order. Nothing is promised between different senders.
//! - **Flow control.** A client's message to a connected recipient whose mailbox holds more
//!   than the window answers [`Routed::Blocked`] and consumes nothing; the engine rings the
//!   waiter's doorbell with [`Signal::Wake`] when that recipient drains or leaves (the
//!   connection also retries on a timer, so a lost wake-up only delays). Appends of the
//!   server's own API never wait; past a mailbox's hard bound `send_to` is refused and a
//!   broadcast breaks that recipient's session.
//! - **Fencing.** [`SessionStore::claim`] gives every connection of a source a newer epoch.
//!   Every later operation carries its [`Claim`]; one with an older epoch does nothing
//!   (`route` answers [`Routed::Fenced`]), so a replaced connection, or a process frozen and
//!   woken up, cannot consume, deliver or settle for the source any more. The previous owner
//!   is told [`Signal::Replaced`] (or [`Signal::Superseded`]) when the engine can reach it.
//! - **Attempts in order.** Claims follow
//!   [`Succession::of`](wsrelay_core::server::engine::Succession::of): a connection attempt of a client
//!   instance that is not newer than the source's last claim of that instance is refused
//!   ([`ClaimError::Stale`]) and changes nothing, whether or not a connection holds the source
//!   now. The last claim's attempt lives as long as the source's state.
//! - **Loss is explicit.** [`SessionStore::open`] resumes only when the token matches and
//!   every frame after the client's count is still there; otherwise it opens a fresh session
//!   and says so (`resumed: false`, with `lost` when known), and the client is told. Never a
//!   gap.
//! - **Unavailable, not wrong.** An engine that cannot reach its store answers
//!   [`EngineError`] (or [`Routed::Unavailable`]): nothing was consumed, the client is not
//!   acknowledged and sends again.

mod memory;
mod redis;

use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use futures_util::task::AtomicWaker;
use tungstenite::Utf8Bytes;
pub use wsrelay_core::server::engine::{
    Attempt, Claim, ClaimRefused, Effect, Hello, LogBatch, Opened, Routed, Signal,
};

pub(crate) use self::redis::RedisEngine;
pub(crate) use memory::MemoryEngine;

/// The engine's store cannot be reached; nothing was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError(pub String);

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "engine unavailable: {}", self.0)
    }
}

impl std::error::Error for EngineError {}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// Another client instance holds the source and duplicates are refused.
    Occupied,
    /// A newer connection attempt of the same client instance claimed the source: its client
    /// has given up on this one.
    Stale,
    /// The engine's store cannot be reached.
    #[allow(
        dead_code,
        reason = "the memory engine is always reachable; remote ones are not"
    )]
    Unavailable(EngineError),
}

impl ClaimError {
    /// The refusal, as the connection's state machine names it (and tells the client).
    pub fn refused(&self) -> ClaimRefused {
        match self {
            ClaimError::Occupied => ClaimRefused::Occupied,
            ClaimError::Stale => ClaimRefused::Stale,
            ClaimError::Unavailable(_) => ClaimRefused::Unavailable,
        }
    }
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::Occupied => f.write_str("another client holds the source"),
            ClaimError::Stale => f.write_str("a newer attempt of this client holds the source"),
            ClaimError::Unavailable(error) => error.fmt(f),
        }
    }
}

/// Why the server's own message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefused {
    /// Nobody with that source is connected or within its grace period.
    UnknownTarget,
    /// The recipient's mailbox is at its hard bound.
    Overflow,
    /// The engine's store cannot be reached.
    Unavailable(EngineError),
}

impl std::fmt::Display for SendRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendRefused::UnknownTarget => f.write_str("no client with that source"),
            SendRefused::Overflow => f.write_str("the client's mailbox is full"),
            SendRefused::Unavailable(error) => error.fmt(f),
        }
    }
}

/// Where sessions live: ownership of a source, the session a hello names, the mailbox.
pub trait SessionStore: Send + Sync {
    /// A connection of `attempt` takes `source` (newer epoch; the previous owner is told it was
    /// replaced or superseded), unless the attempt is stale
    /// ([`Succession::of`](wsrelay_core::server::engine::Succession::of)). With
    /// `exclusive`, a source that another instance holds is refused instead.
    fn claim(
        &self,
        source: &str,
        attempt: Option<&Attempt>,
        doorbell: &Doorbell,
        exclusive: bool,
    ) -> impl Future<Output = Result<Claim, ClaimError>> + Send;

    /// Resumes the session a hello names (token, instance, frames the client has), or opens
    /// a fresh one starting at `fresh_next`; `None` for a bare client. Durable before it
    /// answers. The claim records the session token ([`Claim::session`]).
    fn open(
        &self,
        claim: &mut Claim,
        hello: Option<&Hello>,
        fresh_next: u64,
    ) -> impl Future<Output = Result<Opened, EngineError>> + Send;

    /// Appends to `out` up to `max` frames of the claim's mailbox from position `from`, in
    /// order; returns how many.
    fn fetch(
        &self,
        claim: &Claim,
        from: u64,
        out: &mut Vec<Utf8Bytes>,
        max: usize,
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// The client has every frame through position `through`: the engine may drop them, and
    /// wakes senders blocked on this mailbox when it has room again.
    fn settle(
        &self,
        claim: &Claim,
        through: u64,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The connection ended: its session (if any) is kept for the grace period, then
    /// forgotten. A stale claim changes nothing.
    fn release(&self, claim: &Claim) -> impl Future<Output = ()> + Send;
}

/// How frames reach sources, and who is present.
pub trait MessageRouter: Send + Sync {
    /// Consumes message `id` with `effect` (see the contract above); `waiter` is rung with
    /// [`Signal::Wake`] when a recipient it is blocked on drains.
    fn route(
        &self,
        claim: &Claim,
        id: Option<u64>,
        effect: &Effect<Utf8Bytes>,
        waiter: &Doorbell,
    ) -> impl Future<Output = Routed> + Send;

    /// Appends a frame to the claim's own mailbox (a handler's response, an error).
    fn append(
        &self,
        claim: &Claim,
        frame: Utf8Bytes,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The server's own message to `target`.
    fn send_to(
        &self,
        target: &str,
        frame: Utf8Bytes,
    ) -> impl Future<Output = Result<(), SendRefused>> + Send;

    /// The server's own message to every source but `exclude`; returns how many took it.
    fn broadcast(
        &self,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// The sources connected now, sorted.
    fn clients(&self) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;

    /// Makes `source`'s session a member of `room` (a member already stays one): the
    /// server's own decision, as a client's `relay:join` is the client's.
    fn join(
        &self,
        source: &str,
        room: &str,
    ) -> impl Future<Output = Result<(), SendRefused>> + Send;

    /// `source`'s session leaves `room`; `false` when it was not a member.
    fn leave(
        &self,
        source: &str,
        room: &str,
    ) -> impl Future<Output = Result<bool, SendRefused>> + Send;

    /// The server's own message to every member of `room` but `exclude`; returns how many
    /// took it.
    fn send_to_room(
        &self,
        room: &str,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> impl Future<Output = Result<usize, SendRefused>> + Send;

    /// The members of `room` connected now, sorted.
    fn members(&self, room: &str) -> impl Future<Output = Result<Vec<String>, SendRefused>> + Send;

    /// Whether `source`'s session is a member of `room`.
    fn is_member(
        &self,
        source: &str,
        room: &str,
    ) -> impl Future<Output = Result<bool, SendRefused>> + Send;

    /// Every room with its members connected now (both sorted): presence per room.
    fn rooms(&self)
        -> impl Future<Output = Result<Vec<(String, Vec<String>)>, SendRefused>> + Send;

    /// Whether a connection holds `source`.
    fn is_connected(&self, source: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;
}

/// How an engine (and the server) reaches a connection's task: it sets a signal's bit and
/// wakes the task, which reads every bit set since it last looked. Signals of a kind coalesce;
/// none is lost (a bit set before the task waits is seen when it does). One atomic and a
/// waker, so that waiting, which a connection does at every turn of its loop, costs nothing
/// measurable.
#[derive(Debug, Default, Clone)]
pub struct Doorbell(std::sync::Arc<Bell>);

#[derive(Debug, Default)]
struct Bell {
    signals: AtomicU16,
    waker: AtomicWaker,
}

/// Signals received together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rung(u16);

/// The server shuts down gracefully.
const SHUTDOWN: u16 = 32;
/// The shutdown deadline passed: end at once.
const ABORT: u16 = 64;

impl Rung {
    /// Whether `signal` is among them.
    pub fn has(self, signal: Signal) -> bool {
        self.0 & bit(signal) != 0
    }

    /// The engine's signals among them, in the order a connection handles them.
    pub fn signals(self) -> impl Iterator<Item = Signal> {
        Signal::ALL
            .into_iter()
            .filter(move |&signal| self.has(signal))
    }

    /// Whether the server asked the connection to close gracefully.
    pub fn shutdown(self) -> bool {
        self.0 & SHUTDOWN != 0
    }

    /// Whether the server asked the connection to end at once.
    pub fn abort(self) -> bool {
        self.0 & ABORT != 0
    }
}

fn bit(signal: Signal) -> u16 {
    match signal {
        Signal::Logs => 256,
        Signal::Mail => 1,
        Signal::Wake => 2,
        Signal::Replaced => 4,
        Signal::Overflowed => 8,
        Signal::Gone => 16,
        Signal::Superseded => 128,
    }
}

impl PartialEq for Doorbell {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Doorbell {
    /// Tells the connection `signal`.
    pub fn ring(&self, signal: Signal) {
        self.set(bit(signal));
    }

    /// Tells the connection the server shuts down.
    pub fn ring_shutdown(&self) {
        self.set(SHUTDOWN);
    }

    /// Tells the connection to end at once.
    pub fn ring_abort(&self) {
        self.set(ABORT);
    }

    fn set(&self, bits: u16) {
        self.0.signals.fetch_or(bits, Ordering::AcqRel);
        self.0.waker.wake();
    }

    /// Waits until something was rung, and takes every signal rung so far.
    pub async fn wait(&self) -> Rung {
        std::future::poll_fn(|cx| {
            let rung = self.0.signals.swap(0, Ordering::AcqRel);
            if rung != 0 {
                return std::task::Poll::Ready(Rung(rung));
            }
            self.0.waker.register(cx.waker());
            // Rung between the first look and the registration: seen now.
            match self.0.signals.swap(0, Ordering::AcqRel) {
                0 => std::task::Poll::Pending,
                rung => std::task::Poll::Ready(Rung(rung)),
            }
        })
        .await
    }
}

/// The engine a server runs on: in memory (the embedded default), or Redis shared by several
/// relays.
#[allow(
    clippy::large_enum_variant,
    reason = "one engine per server: its size is nothing, a pointer hop on every call is not"
)]
pub(crate) enum Engine {
    /// Sessions in this process.
    Memory(MemoryEngine),
    /// Sessions in Redis.
    Redis(Arc<RedisEngine>),
}

impl Engine {
    /// Forgets sessions whose grace period is over (Redis expires its keys by itself).
    pub(crate) fn expire(&self) -> usize {
        match self {
            Engine::Memory(engine) => engine.expire(),
            Engine::Redis(_) => 0,
        }
    }

    /// Sessions parked in this process, and sources connected to it.
    pub(crate) fn local_counts(&self) -> (usize, usize) {
        match self {
            Engine::Memory(engine) => engine.local_counts(),
            Engine::Redis(engine) => (0, engine.local_count()),
        }
    }

    /// The server closed: the memory engine's sessions go with it; Redis keeps them for the
    /// clients to resume elsewhere.
    pub(crate) fn clear(&self) {
        if let Engine::Memory(engine) = self {
            engine.clear();
        }
    }

    /// The new entries of the logs of the claim's rooms (`PROTOCOL.md` section 14.1), at
    /// most `max`. The memory engine keeps rooms in mailboxes: it has no logs.
    pub(crate) async fn fetch_logs(
        &self,
        claim: &Claim,
        max: usize,
    ) -> Result<Vec<LogBatch<Utf8Bytes>>, EngineError> {
        match self {
            Engine::Memory(_) => Ok(Vec::new()),
            Engine::Redis(engine) => Box::pin(engine.fetch_logs(claim, max)).await,
        }
    }

    /// The claim's client has `room`'s log through `through`.
    pub(crate) async fn settle_log(
        &self,
        claim: &Claim,
        room: &str,
        through: u64,
    ) -> Result<(), EngineError> {
        match self {
            Engine::Memory(_) => Ok(()),
            Engine::Redis(engine) => Box::pin(engine.settle_log(claim, room, through)).await,
        }
    }

    /// Whether the engine's store answers (always, in memory).
    pub(crate) fn healthy(&self) -> bool {
        match self {
            Engine::Memory(_) => true,
            Engine::Redis(engine) => engine.healthy(),
        }
    }
}

/// Calls the same method on whichever engine runs. Redis's futures (a round trip, its
/// deadline, the scripts' arguments) are boxed: inline they would make every connection's task
/// that large with the memory engine too, and one allocation is nothing next to a round trip.
macro_rules! delegate {
    ($self:ident, $engine:ident => $call:expr) => {
        match $self {
            Engine::Memory($engine) => $call.await,
            Engine::Redis($engine) => Box::pin($call).await,
        }
    };
}

impl SessionStore for Engine {
    async fn claim(
        &self,
        source: &str,
        attempt: Option<&Attempt>,
        doorbell: &Doorbell,
        exclusive: bool,
    ) -> Result<Claim, ClaimError> {
        delegate!(self, e => e.claim(source, attempt, doorbell, exclusive))
    }

    async fn open(
        &self,
        claim: &mut Claim,
        hello: Option<&Hello>,
        fresh_next: u64,
    ) -> Result<Opened, EngineError> {
        delegate!(self, e => e.open(claim, hello, fresh_next))
    }

    async fn fetch(
        &self,
        claim: &Claim,
        from: u64,
        out: &mut Vec<Utf8Bytes>,
        max: usize,
    ) -> Result<usize, EngineError> {
        delegate!(self, e => e.fetch(claim, from, out, max))
    }

    async fn settle(&self, claim: &Claim, through: u64) -> Result<(), EngineError> {
        delegate!(self, e => e.settle(claim, through))
    }

    async fn release(&self, claim: &Claim) {
        delegate!(self, e => e.release(claim))
    }
}

impl MessageRouter for Engine {
    async fn route(
        &self,
        claim: &Claim,
        id: Option<u64>,
        effect: &Effect<Utf8Bytes>,
        waiter: &Doorbell,
    ) -> Routed {
        delegate!(self, e => e.route(claim, id, effect, waiter))
    }

    async fn append(&self, claim: &Claim, frame: Utf8Bytes) -> Result<(), EngineError> {
        delegate!(self, e => e.append(claim, frame))
    }

    async fn send_to(&self, target: &str, frame: Utf8Bytes) -> Result<(), SendRefused> {
        delegate!(self, e => e.send_to(target, frame))
    }

    async fn broadcast(
        &self,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, EngineError> {
        delegate!(self, e => e.broadcast(frame, exclude))
    }

    async fn clients(&self) -> Result<Vec<String>, EngineError> {
        delegate!(self, e => e.clients())
    }

    async fn is_connected(&self, source: &str) -> Result<bool, EngineError> {
        delegate!(self, e => e.is_connected(source))
    }

    async fn join(&self, source: &str, room: &str) -> Result<(), SendRefused> {
        delegate!(self, e => e.join(source, room))
    }

    async fn leave(&self, source: &str, room: &str) -> Result<bool, SendRefused> {
        delegate!(self, e => e.leave(source, room))
    }

    async fn send_to_room(
        &self,
        room: &str,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, SendRefused> {
        delegate!(self, e => e.send_to_room(room, frame, exclude))
    }

    async fn members(&self, room: &str) -> Result<Vec<String>, SendRefused> {
        delegate!(self, e => e.members(room))
    }

    async fn is_member(&self, source: &str, room: &str) -> Result<bool, SendRefused> {
        delegate!(self, e => e.is_member(source, room))
    }

    async fn rooms(&self) -> Result<Vec<(String, Vec<String>)>, SendRefused> {
        delegate!(self, e => e.rooms())
    }
}
