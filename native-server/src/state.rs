//! What every connection and the public handle share: settings, the engine, the application's
//! handlers and hooks, the server's requests, counters and the server's lifecycle.

use std::sync::Arc;

use wsrelay_core::server::ServerEvent;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::handlers::Handlers;
use crate::hooks::Hooks;
use crate::lifecycle::Lifecycle;
use crate::logs::LogLimit;
use crate::metrics::Metrics;
use crate::requests::Requests;

/// Wakes the presence announcer when somebody connects or disconnects: the state holds it, the
/// announcer (a service above the state) waits on it.
#[derive(Default)]
pub(crate) struct PresenceSignal(tokio::sync::Notify);

impl PresenceSignal {
    pub(crate) fn changed(&self) {
        self.0.notify_one();
    }

    /// Waits for the next change.
    pub(crate) async fn wait(&self) {
        self.0.notified().await;
    }
}

/// Everything the connections and the public handle share.
pub(crate) struct ServerState {
    pub(crate) config: ServerConfig,
    pub(crate) auth: Box<Authenticator>,
    pub(crate) engine: Engine,
    pub(crate) handlers: Arc<Handlers>,
    pub(crate) requests: Arc<Requests>,
    pub(crate) hooks: Hooks,
    pub(crate) clock: Clock,
    /// Places of pending and WebSocket connections, in total and per address.
    pub(crate) admission: Arc<Admission>,
    pub(crate) metrics: Metrics,
    /// Running, shutting down or aborting; the tasks the shutdown waits for.
    pub(crate) lifecycle: Lifecycle,
    /// Tells the presence announcer that somebody came or went.
    pub(crate) presence: Arc<PresenceSignal>,
}

/// Invalid input is logged at debug level, and at most a few lines a second.
static INVALID_INPUT: LogLimit = LogLimit::new();

impl ServerState {
    /// Whether the server accepts connections: `Err` says why not (it is shutting down). The
    /// upgrade asks this.
    pub(crate) fn accepting(&self) -> Result<(), String> {
        if self.lifecycle.shutting_down() {
            return Err("shutting down".into());
        }
        Ok(())
    }

    /// Whether the server is ready for clients, as `GET /readyz` answers: it accepts
    /// connections, and its engine's store answers (Redis may not; memory always does).
    /// `Err` says why not.
    ///
    /// An unreachable Redis makes the relay not ready but does not refuse upgrades: a
    /// connection made meanwhile is closed with 1013 when its claim fails, and the health
    /// flag may lag Redis's return by a second, which should not turn clients away.
    pub(crate) fn ready(&self) -> Result<(), String> {
        self.accepting()?;
        if !self.engine.healthy() {
            return Err("Redis does not answer".into());
        }
        Ok(())
    }

    /// Reads the gauges of `GET /metrics` (what is counted, rather than bumped).
    pub(crate) fn refresh_gauges(&self) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (pending, live) = self.admission.counts();
        self.metrics.pending.set(gauge(pending));
        self.metrics.connections.set(gauge(live));
        let (parked, _) = self.engine.local_counts();
        self.metrics.sessions_parked.set(gauge(parked));
    }

    /// Logs what a connection's state machine reports, and counts it.
    pub(crate) fn record(&self, source: &str, event: ServerEvent) {
        let metrics = &self.metrics;
        match event {
            ServerEvent::Rejected { code, message, re } => {
                metrics.invalid_frames.inc();
                metrics.count_error(code.as_str());
                if let Some(suppressed) = INVALID_INPUT.allow() {
                    tracing::debug!(source, %code, re, detail = message, suppressed, "invalid input");
                }
            }
            ServerEvent::Duplicate { id } => {
                metrics.duplicates.inc();
                tracing::trace!(source, id, "duplicate dropped");
            }
            ServerEvent::Opened {
                resumed,
                lost,
                late,
            } => {
                metrics.sessions_opened.inc();
                if resumed {
                    metrics.sessions_resumed.inc();
                }
                match lost {
                    Some(lost) => tracing::info!(source, lost, late, "session not resumed"),
                    None => tracing::debug!(source, resumed, late, "session opened"),
                }
            }
            ServerEvent::Blocked { on } => {
                metrics.blocked.inc();
                tracing::trace!(source, on, "waiting for a recipient that is behind");
            }
            ServerEvent::ClientError { code, message } => {
                tracing::debug!(source, code, detail = message, "client reported an error");
            }
            ServerEvent::Unanswerable { kind } => {
                tracing::debug!(source, kind, "handler answered a message without id");
            }
            ServerEvent::Dropped { kind } => tracing::debug!(source, kind, "dropped"),
            ServerEvent::Membership { room, joined } => {
                tracing::debug!(source, room, joined, "membership");
                self.presence.changed();
            }
            ServerEvent::RateLimited { re } => {
                metrics.rate_limited.inc();
                if re.is_some() {
                    metrics.count_error("rate_limited");
                }
                if let Some(suppressed) = INVALID_INPUT.allow() {
                    tracing::debug!(source, re, suppressed, "over the rate limit");
                }
            }
        }
    }
}
