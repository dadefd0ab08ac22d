//! The server's life: running, shutting down gracefully (connections flush and close with
//! the shutdown code), or aborting (connections end at once), and the tasks the shutdown
//! waits for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::engine::Doorbell;

/// Where the server is in its life, and how each connection learns of its end.
pub(crate) struct Lifecycle {
    /// Cancelled by `close()`: connections flush, send `shutdown_code` and end.
    shutdown: CancellationToken,
    shutdown_code: AtomicU16,
    /// Cancelled when the shutdown deadline passed: connections end at once.
    abort: CancellationToken,
    /// The tasks the shutdown waits for (connections, the presence announcer, the sweeper).
    pub(crate) tracker: TaskTracker,
    /// Every live connection's doorbell, so that the shutdown reaches them all.
    bells: Bells,
}

impl Lifecycle {
    /// A running server; `shutdown` is cancelled when it shuts down (the engine holds it too).
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Lifecycle {
            shutdown,
            shutdown_code: AtomicU16::new(1001),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            bells: Bells::default(),
        }
    }

    /// Whether the server shuts down (gracefully or not).
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when the server starts shutting down.
    pub(crate) fn shut_down(&self) -> WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// The token cancelled when the server starts shutting down, for a task that must not
    /// keep the server alive.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when the shutdown's deadline passed (or the server was dropped).
    pub(crate) fn aborted(&self) -> WaitForCancellationFuture<'_> {
        self.abort.cancelled()
    }

    /// The close code connections end with in a graceful shutdown.
    pub(crate) fn shutdown_code(&self) -> u16 {
        self.shutdown_code.load(Ordering::Relaxed)
    }

    /// Starts a graceful shutdown with close code `code`: every connection is told, and no
    /// task is tracked from now on.
    pub(crate) fn shut_down_with(&self, code: u16) {
        self.shutdown_code.store(code, Ordering::Relaxed);
        self.shutdown.cancel();
        self.bells.ring_all(false);
        self.tracker.close();
    }

    /// Ends every connection at once.
    pub(crate) fn abort(&self) {
        self.shutdown.cancel();
        self.abort.cancel();
        self.bells.ring_all(true);
    }

    /// Registers a connection's doorbell; returns its key for [`forget`](Self::forget).
    pub(crate) fn register(&self, doorbell: &Doorbell) -> u64 {
        self.bells.add(doorbell)
    }

    /// Forgets a connection that ended.
    pub(crate) fn forget(&self, key: u64) {
        self.bells.remove(key);
    }
}

/// Every live connection's doorbell.
#[derive(Default)]
struct Bells {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Doorbell>>,
}

impl Bells {
    fn live(&self) -> MutexGuard<'_, HashMap<u64, Doorbell>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, doorbell: &Doorbell) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.live().insert(key, doorbell.clone());
        key
    }

    fn remove(&self, key: u64) {
        self.live().remove(&key);
    }

    /// Tells every connection the server shuts down (gracefully, or at once with `abort`).
    fn ring_all(&self, abort: bool) {
        for doorbell in self.live().values() {
            if abort {
                doorbell.ring_abort();
            } else {
                doorbell.ring_shutdown();
            }
        }
    }
}
