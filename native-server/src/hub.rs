//! The registry of connected clients, parked sessions and pending requests, and the fan-out.
//!
//! Locks are `std` locks held for a few map operations and non-blocking queue pushes, never
//! across an `.await`. Lock order: `clients`, then `parked`. Every frame addressed to a
//! `source` goes to exactly one place, decided under the `clients` lock: the connected client's
//! queue, or else the parked session's retransmit buffer, so a resumed client sees each frame
//! once and in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsrelay_core::protocol::RemoteError;
use wsrelay_core::server::ServerSession;

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::handlers::ErasedHandler;
use crate::DisconnectReason;

/// A frame waiting in a connection's outbound queue.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// An application frame or `~error`: numbered in the session and kept until acknowledged.
    Reliable(Utf8Bytes),
    /// `~ack`, `~pong`: written, never numbered.
    Control(Utf8Bytes),
}

/// Why a frame could not be handed to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Nobody with that source is connected or parked.
    UnknownTarget,
    /// The client's queue or session buffer is full: it is being cut off as a slow consumer.
    Overflow,
}

/// A connected client as the registry knows it.
pub(crate) struct ClientEntry {
    pub(crate) conn_id: u64,
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) kill: Arc<Kill>,
    /// Set once the connection is known to be bare or has a session (after the hello wait).
    pub(crate) decided: Arc<AtomicBool>,
    /// Cancelled when the connection task has finished and parked its session.
    pub(crate) done: CancellationToken,
}

/// Ends a connection from outside its task (replaced, slow consumer); the first reason wins.
#[derive(Default)]
pub(crate) struct Kill {
    pub(crate) token: CancellationToken,
    reason: OnceLock<DisconnectReason>,
}

impl Kill {
    /// Asks the connection to close for `reason`; returns whether this call decided it.
    pub(crate) fn kill(&self, reason: DisconnectReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    pub(crate) fn reason(&self) -> Option<DisconnectReason> {
        self.reason.get().cloned()
    }
}

impl ClientEntry {
    /// Queues a frame without waiting. A full queue makes the client a slow consumer.
    pub(crate) fn push(&self, frame: Outbound, stats: &Stats) -> Result<(), PushError> {
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.kill.kill(DisconnectReason::SlowConsumer) {
                    stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(conn = self.conn_id, "outbound queue full: slow consumer");
                }
                Err(PushError::Overflow)
            }
            // The task is ending; it parks its session under the `clients` lock we hold, so
            // this cannot happen while the entry is registered. Treat it as gone.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::UnknownTarget),
        }
    }
}

/// A disconnected client's session, kept for a resume until `expires`.
pub(crate) struct Parked {
    pub(crate) session: ServerSession<Utf8Bytes>,
    pub(crate) expires: Instant,
}

/// A server request waiting for its response.
pub(crate) struct PendingRequest {
    pub(crate) source: String,
    pub(crate) reply: oneshot::Sender<Result<Option<String>, RemoteError>>,
}

/// Counters, readable through [`ServerStats`](crate::ServerStats).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) replaced: AtomicU64,
    pub(crate) invalid_frames: AtomicU64,
}

pub(crate) type ConnectHook = Arc<dyn Fn(&crate::ClientInfo) + Send + Sync>;
pub(crate) type DisconnectHook = Arc<dyn Fn(&crate::ClientInfo, &DisconnectReason) + Send + Sync>;

/// Everything the connections and the public handle share.
pub(crate) struct Hub {
    pub(crate) config: ServerConfig,
    pub(crate) auth: Box<Authenticator>,
    pub(crate) clients: RwLock<HashMap<String, ClientEntry>>,
    pub(crate) parked: Mutex<HashMap<String, Parked>>,
    pub(crate) pending: Mutex<HashMap<u64, PendingRequest>>,
    pub(crate) handlers: RwLock<HashMap<String, ErasedHandler>>,
    pub(crate) on_connect: Vec<ConnectHook>,
    pub(crate) on_disconnect: Vec<DisconnectHook>,
    pub(crate) stats: Stats,
    /// WebSocket connections upgraded or being upgraded (for `max_connections`).
    pub(crate) live: AtomicUsize,
    pub(crate) next_conn_id: AtomicU64,
    pub(crate) next_message_id: AtomicU64,
    /// Cancelled by `close()`: connections flush, send `shutdown_code` and end.
    pub(crate) shutdown: CancellationToken,
    pub(crate) shutdown_code: std::sync::atomic::AtomicU16,
    /// Cancelled when the shutdown deadline passed: connections end at once.
    pub(crate) abort: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// Poisoning only means another thread panicked while holding the lock; the maps stay usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// Sends a reliable frame to `source`: its connection's queue, or its parked session.
    pub(crate) fn send_frame(&self, source: &str, frame: Utf8Bytes) -> Result<(), PushError> {
        let clients = read(&self.clients);
        if let Some(entry) = clients.get(source) {
            return entry.push(Outbound::Reliable(frame), &self.stats);
        }
        let mut parked = lock(&self.parked);
        match parked.get_mut(source) {
            Some(p) => {
                if p.session.record_written(frame).is_err() {
                    parked.remove(source);
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    return Err(PushError::Overflow);
                }
                Ok(())
            }
            None => Err(PushError::UnknownTarget),
        }
    }

    /// Hands the same bytes to every client but `exclude`, connected or parked; returns how
    /// many took them.
    pub(crate) fn broadcast_frame(&self, frame: &Utf8Bytes, exclude: Option<&str>) -> usize {
        let clients = read(&self.clients);
        let mut delivered = 0;
        for (source, entry) in clients.iter() {
            if Some(source.as_str()) != exclude
                && entry
                    .push(Outbound::Reliable(frame.clone()), &self.stats)
                    .is_ok()
            {
                delivered += 1;
            }
        }
        let mut parked = lock(&self.parked);
        parked.retain(|source, p| {
            if Some(source.as_str()) == exclude || clients.contains_key(source) {
                return true;
            }
            let kept = p.session.record_written(frame.clone()).is_ok();
            if kept {
                delivered += 1;
            } else {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            }
            kept
        });
        delivered
    }

    /// Drops parked sessions whose grace period is over.
    pub(crate) fn expire_parked(&self, now: Instant) {
        lock(&self.parked).retain(|source, p| {
            let keep = p.expires > now;
            if !keep {
                tracing::debug!(source, "session expired");
            }
            keep
        });
    }

    /// Settles a server request with the client's response.
    pub(crate) fn resolve(&self, from: &str, re: u64, result: Result<Option<String>, RemoteError>) {
        let mut pending = lock(&self.pending);
        match pending.get(&re) {
            Some(request) if request.source == from => {
                if let Some(request) = pending.remove(&re) {
                    // The requester may have timed out and gone: nothing to do then.
                    let _ = request.reply.send(result);
                }
            }
            _ => tracing::debug!(source = from, re, "response nobody waits for"),
        }
    }

    pub(crate) fn handler(&self, kind: &str) -> Option<ErasedHandler> {
        read(&self.handlers).get(kind).cloned()
    }
}
