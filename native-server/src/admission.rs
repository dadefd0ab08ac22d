//! Who gets a place, and how many: TCP connections that have not become WebSocket connections
//! yet (pending: HTTP requests, idle keep-alive, TLS handshakes) and WebSocket connections
//! (live), counted in total and per peer IP address. A place is held by a guard and given back
//! when the guard drops, however the connection ends.
//!
//! The total of pending connections is a semaphore the accept loop waits on before it accepts:
//! at the bound, new connections wait in the kernel's listen queue (costing no descriptor of
//! ours) until a place frees, which the handshake timeout guarantees. The per-address bounds
//! can only be checked once a connection is accepted: beyond them it is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;

/// Places taken from one address.
#[derive(Debug, Default, Clone, Copy)]
struct Taken {
    pending: usize,
    live: usize,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The total is reached.
    Total,
    /// The peer's address has its share.
    PerIp,
}

/// The counts, behind one lock (held for a map operation, never across an `.await`).
#[derive(Debug)]
pub(crate) struct Admission {
    pending_places: Arc<Semaphore>,
    max_pending_per_ip: usize,
    max_live: usize,
    max_live_per_ip: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pending: usize,
    live: usize,
    by_ip: HashMap<IpAddr, Taken>,
}

impl Admission {
    pub(crate) fn new(config: &ServerConfig) -> Arc<Self> {
        Arc::new(Admission {
            pending_places: Arc::new(Semaphore::new(config.max_pending_connections.max(1))),
            max_pending_per_ip: config.max_pending_per_ip.unwrap_or(usize::MAX),
            max_live: config.max_connections,
            max_live_per_ip: config.max_connections_per_ip.unwrap_or(usize::MAX),
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The counts stay consistent through a panic elsewhere: every update is one statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a pending place to be free: the accept loop accepts only then.
    pub(crate) async fn pending_place(&self) -> OwnedSemaphorePermit {
        let places = Arc::clone(&self.pending_places);
        // The semaphore is never closed.
        match places.acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => std::future::pending().await,
        }
    }

    /// The place `permit` for a connection accepted from `ip`, until it upgrades or ends.
    pub(crate) fn pending(
        self: &Arc<Self>,
        ip: IpAddr,
        permit: OwnedSemaphorePermit,
    ) -> Result<Place, Full> {
        let mut state = self.state();
        let taken = state.by_ip.entry(ip).or_default();
        if taken.pending >= self.max_pending_per_ip {
            return Err(Full::PerIp);
        }
        taken.pending += 1;
        state.pending += 1;
        Ok(Place {
            admission: Arc::clone(self),
            ip,
            live: false,
            _permit: Some(permit),
        })
    }

    /// A place for a WebSocket connection from `ip`, for its whole life.
    pub(crate) fn live(self: &Arc<Self>, ip: IpAddr) -> Result<Place, Full> {
        let mut state = self.state();
        if state.live >= self.max_live {
            return Err(Full::Total);
        }
        let taken = state.by_ip.entry(ip).or_default();
        if taken.live >= self.max_live_per_ip {
            if taken.pending == 0 && taken.live == 0 {
                state.by_ip.remove(&ip);
            }
            return Err(Full::PerIp);
        }
        taken.live += 1;
        state.live += 1;
        Ok(Place {
            admission: Arc::clone(self),
            ip,
            live: true,
            _permit: None,
        })
    }

    /// Connections pending and live now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending, state.live)
    }
}

/// One place, given back on drop.
#[derive(Debug)]
pub(crate) struct Place {
    admission: Arc<Admission>,
    ip: IpAddr,
    live: bool,
    /// A pending place's share of the total.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        if self.live {
            state.live -= 1;
        } else {
            state.pending -= 1;
        }
        if let Some(taken) = state.by_ip.get_mut(&self.ip) {
            if self.live {
                taken.live -= 1;
            } else {
                taken.pending -= 1;
            }
            if taken.pending == 0 && taken.live == 0 {
                state.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Open files a server needs besides its connections: the listener, static files, logs.
const SPARE_FILES: u64 = 64;
/// The bound of connections when the open-file limit allows it (`ServerConfig`'s default).
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// The bound of pending connections when the open-file limit allows it.
const DEFAULT_MAX_PENDING: u64 = 1024;

/// Every connection is a file: raises the process's open-file limit to what the bounds need
/// (`connections` and `pending`, or their defaults, 10 000 and 1024, when `None`), or sizes
/// the bounds the operator did not set to the limit there is, with a warning. Fails, saying
/// so, only when bounds the operator set cannot fit. `names` are what the operator calls the
/// two bounds (the relay binary's flags, an addon's option names), for the messages. Returns
/// (max connections, max pending connections), for
/// [`ServerConfig::max_connections`](crate::ServerConfig::max_connections) and
/// [`ServerConfig::max_pending_connections`](crate::ServerConfig::max_pending_connections).
pub fn size_to_open_files(
    connections: Option<usize>,
    pending: Option<usize>,
    names: [&str; 2],
) -> Result<(usize, usize), String> {
    let wanted_connections = connections.map_or(DEFAULT_MAX_CONNECTIONS, |n| n as u64);
    let wanted_pending = pending.map_or(DEFAULT_MAX_PENDING, |n| n as u64);
    let needed = wanted_connections
        .saturating_add(wanted_pending)
        .saturating_add(SPARE_FILES);
    let limit = match rlimit::increase_nofile_limit(needed) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, needed, "cannot raise the open-file limit");
            needed
        }
    };
    let [connections_name, pending_name] = names;
    match fit_to_open_files(connections, pending, limit) {
        Fit::Fits => Ok((wanted_connections as usize, wanted_pending as usize)),
        Fit::Sized(connections, pending) => {
            tracing::warn!(
                limit,
                max_connections = connections,
                max_pending_connections = pending,
                "the open-file limit is below what the default bounds need ({needed}): they \
                 are sized to it (raise it with ulimit -Hn or LimitNOFILE=, or set \
                 {connections_name} and {pending_name})"
            );
            Ok((connections as usize, pending as usize))
        }
        Fit::Refused => Err(format!(
            "{connections_name} {wanted_connections} and {pending_name} {wanted_pending} \
             need {needed} open files, but the hard limit is {limit}: raise it (ulimit -Hn, \
             LimitNOFILE=) or lower them"
        )),
    }
}

/// How the bounds fit an open-file limit.
#[derive(Debug, PartialEq, Eq)]
enum Fit {
    /// As wanted.
    Fits,
    /// The bounds not set, sized to the limit: (connections, pending).
    Sized(u64, u64),
    /// The bounds set cannot fit.
    Refused,
}

/// [`size_to_open_files`]'s arithmetic, for an open-file `limit` already raised as far as it
/// goes.
fn fit_to_open_files(connections: Option<usize>, pending: Option<usize>, limit: u64) -> Fit {
    let wanted_connections = connections.map_or(DEFAULT_MAX_CONNECTIONS, |n| n as u64);
    let wanted_pending = pending.map_or(DEFAULT_MAX_PENDING, |n| n as u64);
    let needed = wanted_connections
        .saturating_add(wanted_pending)
        .saturating_add(SPARE_FILES);
    if limit >= needed {
        return Fit::Fits;
    }
    let available = limit.saturating_sub(SPARE_FILES);
    let sized = match (connections, pending) {
        (Some(_), Some(_)) => None,
        (Some(_), None) => Some((
            wanted_connections,
            available.saturating_sub(wanted_connections),
        )),
        (None, Some(_)) => Some((available.saturating_sub(wanted_pending), wanted_pending)),
        // A pending bound of an eighth of what is left, at most the default's.
        (None, None) => {
            let pending = (available / 8).min(DEFAULT_MAX_PENDING);
            Some((available - pending, pending))
        }
    };
    match sized {
        Some((connections, pending)) if connections > 0 && pending > 0 => {
            Fit::Sized(connections, pending)
        }
        _ => Fit::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_are_counted_per_address_and_given_back() {
        let config = ServerConfig {
            max_pending_connections: 3,
            max_pending_per_ip: Some(2),
            max_connections: 2,
            max_connections_per_ip: Some(1),
            ..ServerConfig::default()
        };
        let admission = Admission::new(&config);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let p1 = admission
            .pending(a, admission.pending_place().await)
            .expect("first");
        let _p2 = admission
            .pending(a, admission.pending_place().await)
            .expect("second");
        let third = admission.pending_place().await;
        assert_eq!(admission.pending(a, third).err(), Some(Full::PerIp));
        let _p3 = admission
            .pending(b, admission.pending_place().await)
            .expect("another address");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            admission.pending_place(),
        );
        assert!(
            waiting.await.is_err(),
            "the total is reached: accepting waits"
        );
        drop(p1);
        let place = admission.pending_place().await;
        assert!(admission.pending(b, place).is_ok(), "given back");

        let l1 = admission.live(a).expect("live");
        assert_eq!(admission.live(a).err(), Some(Full::PerIp));
        let _l2 = admission.live(b).expect("live");
        assert_eq!(
            admission.live([10, 0, 0, 3].into()).err(),
            Some(Full::Total)
        );
        drop(l1);
        assert!(admission.live(a).is_ok());
    }

    #[test]
    fn bounds_fit_the_open_file_limit() {
        assert_eq!(fit_to_open_files(None, None, 20_000), Fit::Fits);
        // 1024 - 64 = 960 files: an eighth for pending connections.
        assert_eq!(fit_to_open_files(None, None, 1024), Fit::Sized(840, 120));
        assert_eq!(
            fit_to_open_files(Some(500), None, 1024),
            Fit::Sized(500, 460)
        );
        assert_eq!(
            fit_to_open_files(None, Some(100), 1024),
            Fit::Sized(860, 100)
        );
        assert_eq!(fit_to_open_files(Some(500), Some(100), 1024), Fit::Fits);
        assert_eq!(fit_to_open_files(Some(5000), Some(100), 1024), Fit::Refused);
        assert_eq!(fit_to_open_files(Some(2000), None, 1024), Fit::Refused);
    }
}
