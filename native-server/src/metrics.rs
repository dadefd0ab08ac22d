//! The relay's metrics, in Prometheus's (OpenMetrics) text format at `GET /metrics`, kept by
//! Prometheus's own Rust client: counters are bumped where things happen; the gauges are read
//! when the metrics are scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wsrelay_core::server::engine::ClaimRefused;
use wsrelay_core::server::DisconnectReason;

/// A close code, or `"none"` when the connection ended without a close frame.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: String,
}

/// Why a connection ended ([`DisconnectReason::kind`]), or why its claim was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// An HTTP status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub(crate) status: u16,
}

/// Every counter the relay keeps (each is a cheap handle to shared atomics): what
/// `GET /metrics` shows and what [`ServerStats`](crate::ServerStats) reads.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections: Gauge,
    pub(crate) pending: Gauge,
    pub(crate) opened: Counter,
    pub(crate) closed: Family<CodeLabel, Counter>,
    pub(crate) refused: Family<StatusLabel, Counter>,
    /// Every refused upgrade, whatever its status (`refused` summed).
    refused_total: Counter,
    pub(crate) claims_refused: Family<ReasonLabel, Counter>,
    pub(crate) disconnects: Family<ReasonLabel, Counter>,
    pub(crate) turned_away: Counter,
    pub(crate) accept_errors: Counter,
    pub(crate) sessions_active: Gauge,
    pub(crate) sessions_parked: Gauge,
    pub(crate) sessions_opened: Counter,
    pub(crate) sessions_resumed: Counter,
    pub(crate) sessions_expired: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) acks_in: Counter,
    pub(crate) acks_out: Counter,
    pub(crate) resent: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) errors: Family<CodeLabel, Counter>,
    pub(crate) invalid_frames: Counter,
    pub(crate) blocked: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) handler_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("wsrelay");
        let metrics = Metrics {
            connections: Gauge::default(),
            pending: Gauge::default(),
            opened: Counter::default(),
            closed: Family::default(),
            refused: Family::default(),
            refused_total: Counter::default(),
            claims_refused: Family::default(),
            disconnects: Family::default(),
            turned_away: Counter::default(),
            accept_errors: Counter::default(),
            sessions_active: Gauge::default(),
            sessions_parked: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_resumed: Counter::default(),
            sessions_expired: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            acks_in: Counter::default(),
            acks_out: Counter::default(),
            resent: Counter::default(),
            duplicates: Counter::default(),
            errors: Family::default(),
            invalid_frames: Counter::default(),
            blocked: Counter::default(),
            rate_limited: Counter::default(),
            // 100 µs to about 26 s.
            handler_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections",
            "WebSocket connections open now",
            metrics.connections.clone(),
        );
        r.register(
            "pending_connections",
            "TCP connections not (yet) upgraded: HTTP requests, keep-alive, TLS handshakes",
            metrics.pending.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            metrics.opened.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket connections ended, by close code (sent or received; none: no close frame)",
            metrics.closed.clone(),
        );
        r.register(
            "upgrades_refused",
            "WebSocket upgrades refused, by HTTP status",
            metrics.refused.clone(),
        );
        r.register(
            "claims_refused",
            "WebSocket connections closed at once after the upgrade: the claim of their source \
             was refused (occupied: another client holds it; stale: a newer attempt of the same \
             client does; unavailable: Redis does not answer)",
            metrics.claims_refused.clone(),
        );
        r.register(
            "disconnects",
            "WebSocket connections ended, by reason (closed, failed, replaced, superseded, \
             slow_consumer, stale, shutdown, too_large, invalid_utf8, protocol_error, flooding, \
             expired)",
            metrics.disconnects.clone(),
        );
        r.register(
            "connections_turned_away",
            "TCP connections closed at once: too many waiting to upgrade",
            metrics.turned_away.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts (e.g. out of file descriptors)",
            metrics.accept_errors.clone(),
        );
        r.register(
            "sessions_active",
            "Connected clients with a session",
            metrics.sessions_active.clone(),
        );
        r.register(
            "sessions_parked",
            "Sessions kept for a resume after their client left",
            metrics.sessions_parked.clone(),
        );
        r.register(
            "sessions_opened",
            "Sessions opened by a hello (fresh or resumed)",
            metrics.sessions_opened.clone(),
        );
        r.register(
            "sessions_resumed",
            "Sessions resumed with nothing lost",
            metrics.sessions_resumed.clone(),
        );
        r.register(
            "sessions_expired",
            "Parked sessions forgotten after their grace period",
            metrics.sessions_expired.clone(),
        );
        r.register(
            "messages_received",
            "Application messages received from clients",
            metrics.messages_in.clone(),
        );
        r.register(
            "messages_sent",
            "Reliable frames written to clients (messages, responses, errors)",
            metrics.messages_out.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of text frames received",
            metrics.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes of text frames written",
            metrics.bytes_out.clone(),
        );
        r.register(
            "acks_received",
            "Acknowledgements received from clients",
            metrics.acks_in.clone(),
        );
        r.register(
            "acks_sent",
            "Acknowledgements sent to clients",
            metrics.acks_out.clone(),
        );
        r.register(
            "retransmitted_frames",
            "Frames sent again to clients that resumed their session",
            metrics.resent.clone(),
        );
        r.register(
            "duplicates",
            "Client retransmissions dropped as already consumed",
            metrics.duplicates.clone(),
        );
        r.register(
            "errors",
            "~error frames sent to clients, by code",
            metrics.errors.clone(),
        );
        r.register(
            "invalid_frames",
            "Client frames refused with an ~error (invalid, too large, binary, unexpected)",
            metrics.invalid_frames.clone(),
        );
        r.register(
            "blocked",
            "Times a client's message waited for a recipient that was behind (flow control)",
            metrics.blocked.clone(),
        );
        r.register(
            "rate_limited",
            "Frames over a client's rate limit (refused or dropped)",
            metrics.rate_limited.clone(),
        );
        r.register(
            "handler_duration_seconds",
            "Time server handlers took to answer",
            metrics.handler_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts an `~error` of `code` sent.
    pub(crate) fn count_error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Counts a connection that ended with close code `code`.
    pub(crate) fn count_closed(&self, code: Option<u16>) {
        let code = code.map_or_else(|| "none".to_owned(), |code| code.to_string());
        self.closed.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts an upgrade refused with `status`.
    pub(crate) fn count_refused(&self, status: u16) {
        self.refused.get_or_create(&StatusLabel { status }).inc();
        self.refused_total.inc();
    }

    /// Upgrades refused so far.
    pub(crate) fn refused_total(&self) -> u64 {
        self.refused_total.get()
    }

    /// Counts a claim refused after the upgrade.
    pub(crate) fn count_claim_refused(&self, refused: ClaimRefused) {
        let reason = match refused {
            ClaimRefused::Occupied => "occupied",
            ClaimRefused::Stale => "stale",
            ClaimRefused::Unavailable => "unavailable",
        };
        self.claims_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Claims refused so far because a newer attempt of the client held the source.
    pub(crate) fn stale_attempts(&self) -> u64 {
        let reason = "stale";
        self.claims_refused
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// Counts a connection that ended (when it is decided: its farewell may take a while).
    pub(crate) fn count_disconnect(&self, reason: &DisconnectReason) {
        let reason = reason.kind();
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Connections that ended for `reason` ([`DisconnectReason::kind`]) so far.
    pub(crate) fn disconnects(&self, reason: &'static str) -> u64 {
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
