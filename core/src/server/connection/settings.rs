//! What a connection is configured with and what it is generic over.

use core::ops::Deref;
use core::time::Duration;

use super::RateLimit;

/// The frame type the server keeps: cheap to clone (a broadcast hands every recipient the
/// same buffer), made from the encoded text, readable as text.
pub trait FrameText: Clone + From<String> + Deref<Target = str> {}

impl<T: Clone + From<String> + Deref<Target = str>> FrameText for T {}

/// Which message types the application handles itself (they are not relayed).
pub trait HandlerSet {
    /// Whether a handler is registered for `kind`.
    fn handles(&self, kind: &str) -> bool;
}

/// Settings of a connection; the server's configuration fills them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Largest text frame consumed; larger ones are answered with `too_large`.
    pub max_message_size: usize,
    /// How long a new connection may take to say whether it is a wsrelay client (a hello)
    /// before it is taken for a bare client.
    pub hello_timeout: Duration,
    /// How long a connection that announced the protocol in its URL (`v=1`) may take to send
    /// its hello; it is closed (and its client reconnects) rather than taken for a bare
    /// client, so a half-open connection cannot end up consuming its session's frames.
    pub announced_hello_timeout: Duration,
    /// Period of the liveness check: a connection silent for a period is pinged, and closed
    /// if still silent at the next check.
    pub ping_interval: Duration,
    /// Relay messages no handler takes: with `to` to that source, otherwise to everyone else.
    pub relay: bool,
    /// Bytes a client may have in flight unacknowledged, announced in the welcome.
    pub send_window: usize,
    /// Bytes waiting for this client's acknowledgement beyond which its senders wait (the
    /// engine enforces that) and this connection consumes nothing of its own.
    pub backlog_window: usize,
    /// How long the backlog may stay over the window before the client is closed as a slow
    /// consumer (1013, resumable).
    pub slow_consumer_timeout: Duration,
    /// Bytes of client frames held unconsumed while waiting; past it the driver stops reading.
    pub stash_limit: usize,
    /// Handler calls that may wait for their reply before consumption pauses.
    pub max_pending_calls: usize,
    /// A blocked message, or a fetch from the mailbox that failed, is retried after this long
    /// (a blocked message sooner if its recipient drains).
    pub retry_interval: Duration,
    /// Frames fetched from the mailbox at a time.
    pub fetch_batch: usize,
    /// The client's message rate limit, if any (`PROTOCOL.md` section 4); announced in the
    /// welcome, so that a wsrelay client keeps to it.
    pub rate_limit: Option<RateLimit>,
    /// How many of the messages with an id most recently relayed to the client it may answer:
    /// a response (`re` with `to`) to any other is refused with `unexpected_response`.
    pub answerable: usize,
    /// How long frames the client acknowledged may stay in the engine before they are settled
    /// (zero: at every acknowledgement). A remote engine pays a round trip per settle; it
    /// settles after this long, or sooner once `settle_bytes` are owed.
    pub settle_delay: Duration,
    /// Bytes of acknowledged frames after which a deferred settle is made at once.
    pub settle_bytes: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_message_size: 1 << 20,
            hello_timeout: Duration::from_millis(500),
            announced_hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            relay: true,
            send_window: 256 << 10,
            backlog_window: 1 << 20,
            slow_consumer_timeout: Duration::from_secs(15),
            stash_limit: (256 << 10) + (2 << 20),
            max_pending_calls: 256,
            retry_interval: Duration::from_millis(100),
            fetch_batch: 256,
            rate_limit: None,
            answerable: 1024,
            settle_delay: Duration::ZERO,
            settle_bytes: 0,
        }
    }
}
