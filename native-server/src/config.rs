//! Server settings: limits, timers and policies, with production defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use wsrelay_core::server::RateLimit;

/// What to do when a connection claims a `source` that is already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// The new connection wins; the old one is closed with 4409 (`replaced`). This is what a
    /// client reconnecting over a half-open connection needs, so it is the default.
    #[default]
    Replace,
    /// The new connection is refused at the HTTP upgrade with 409 Conflict.
    Reject,
}

/// Settings of a [`WebSocketServer`](crate::WebSocketServer).
///
/// Build one from [`ServerConfig::default`] and override what you need:
///
/// ```
/// use std::time::Duration;
/// use wsrelay_server::ServerConfig;
///
/// let config = ServerConfig { ping_interval: Duration::from_secs(10), ..ServerConfig::default() };
/// assert_eq!(config.max_message_size, 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Relay messages that no handler claims: a message with `to` goes to that client only,
    /// any other is broadcast to every other client. Default `true`. When `false`, such
    /// messages are consumed and dropped (logged at debug level).
    pub relay: bool,
    /// Largest message accepted, in bytes (default 1 MiB). A larger frame is refused from its
    /// header, before its payload is read: the client gets `~error too_large` and the
    /// connection is closed with 1009 (its client reconnects).
    pub max_message_size: usize,
    /// Most WebSocket clients connected at once (default 10 000); beyond it upgrades are
    /// refused with 503 and a `Retry-After`.
    pub max_connections: usize,
    /// Most WebSocket clients connected at once from one IP address (default `None`: no
    /// limit); beyond it upgrades are refused with 429 and a `Retry-After`. Mind NAT: a whole
    /// office may share one address.
    pub max_connections_per_ip: Option<usize>,
    /// Most TCP connections that have not become WebSocket connections (HTTP requests in
    /// progress, idle keep-alive, TLS handshakes) at once (default 1024). At the bound the
    /// server accepts nothing more until one ends (they wait in the kernel's listen queue);
    /// `handshake_timeout` bounds how long that takes.
    pub max_pending_connections: usize,
    /// Most such connections from one IP address (default `None`: no limit); one beyond it
    /// is closed at once. Behind a reverse proxy every connection comes from the proxy.
    pub max_pending_per_ip: Option<usize>,
    /// How long a connection may take to complete its TLS handshake, and each HTTP request
    /// its headers, idle keep-alive included (default 10 s); then it is closed.
    pub handshake_timeout: Duration,
    /// Flow control (`PROTOCOL.md` section 4): bytes of frames waiting for a client's
    /// acknowledgement (written or not) beyond which other clients' messages to it wait,
    /// unacknowledged, instead of piling up (default 1 MiB). The server's own `send_to` and
    /// `broadcast` do not wait. Keep it well above what wsrelay clients leave unacknowledged
    /// (64 KiB by default, their `ackBytes`): under that, senders wait for their delayed
    /// acknowledgements.
    pub backlog_window: usize,
    /// Hard bound of a client's mailbox, in bytes (default 8 MiB). The server's `send_to`
    /// past it fails with [`SendError::Overflow`](crate::SendError::Overflow); a broadcast past
    /// it breaks the recipient's session, which its client then learns (`resumed: false`,
    /// with the count of frames lost). A client's message to a disconnected recipient past it
    /// is answered with `overflow`.
    pub max_backlog: usize,
    /// Retention of a room's log on the Redis engine (`PROTOCOL.md` section 14.1): the most
    /// entries kept (default 100 000), and how long a log without new messages is kept
    /// (default 10 minutes). A member whose place in the log fell off it is told how many
    /// messages it lost (`~error` `lost`), never a silent gap.
    pub room_retention: RoomRetention,
    /// How long a client's backlog may stay over `backlog_window` before it is closed as a
    /// slow consumer, with 1013 so that it reconnects and resumes (default 15 s).
    pub slow_consumer_timeout: Duration,
    /// Bytes a wsrelay client may have sent and not seen acknowledged, announced in the
    /// welcome (default 256 KiB). While the server delays acknowledgements, this is what it
    /// holds at most per client.
    pub send_window: usize,
    /// Interval of the liveness check (default 30 s). A connection that sent nothing during
    /// the last interval gets a WebSocket ping; if it has still sent nothing, not even the
    /// pong, at the next check it is closed and removed. Connections that speak on their own
    /// (a wsrelay client's `~ping` every 25 s) are not pinged at all.
    pub ping_interval: Duration,
    /// How long a disconnected client's session is kept for a resume (default 60 s).
    pub session_grace: Duration,
    /// How long a new connection's outbound frames are held waiting for a `~hello` before the
    /// client is taken for a bare client (default 500 ms). Any first frame ends the wait, so
    /// a bare client that only listens gets its first frames up to this much later (they wait
    /// in its mailbox meanwhile). wsrelay clients send their hello at once, so for them the
    /// wait is one round trip.
    pub hello_timeout: Duration,
    /// How long to wait for a peer to complete a close handshake (default 1 s).
    pub close_timeout: Duration,
    /// Deadline of [`close`](crate::WebSocketServer::close) (default 5 s): connections still
    /// open after it are dropped.
    pub shutdown_timeout: Duration,
    /// Replace or reject a second connection for a connected `source`.
    pub on_duplicate: OnDuplicate,
    /// Browser origins allowed to connect (exact `Origin` header values, e.g.
    /// `https://app.example.com`). Empty (the default) allows any, unless `own_origin` is set.
    /// A request without an `Origin` header (not a browser) is not affected; one from an
    /// origin not allowed is refused with 403.
    pub allowed_origins: Vec<String>,
    /// Also allow the server's own origin: an `Origin` whose host and port are the request's
    /// `Host` and whose scheme is this server's (`https` with TLS). With an empty
    /// `allowed_origins` this allows the own origin only: what pages served by `static_dir`
    /// need, and nothing more. Default `false`.
    pub own_origin: bool,
    /// Serve `wss://` (and the static files over `https://`) with this TLS configuration
    /// (see [`tls_config`](crate::tls_config) to load PEM files). `None` (default): plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The most one read from a connection's socket takes (default 8 KiB; more when a frame's
    /// header announces a larger one). The read buffer exists only while bytes wait to be
    /// decoded: an idle connection holds none, and a large message's goes with it.
    pub read_buffer_size: usize,
    /// Bytes of frames a connection encodes before writing them to the socket (default 8 KiB);
    /// every batch of frames is written at once anyway, and the buffer goes once written.
    pub write_buffer_size: usize,
    /// Announce who comes and goes to every client as `relay:presence` messages (payload
    /// `{"joined": [...], "left": [...]}`, coalesced per `presence_interval`), and answer
    /// `relay:clients` requests with the sorted list of online sources. Default `false`; the
    /// relay binary turns it on.
    pub presence: bool,
    /// How long presence changes gather before one announcement carries them (default
    /// 100 ms): a flood of connections costs each client a few frames, not one per arrival.
    pub presence_interval: Duration,
    /// Keep sessions and mailboxes in the Redis at this URL (`redis://HOST:PORT[/DB]`), shared
    /// by every relay on it: they behave as one server, and a relay's death loses nothing it
    /// acknowledged. `None` (the default): in this process's memory.
    pub redis: Option<String>,
    /// This relay's name among relays sharing Redis, in logs (default: generated).
    pub node_id: Option<String>,
    /// Serve the files of this directory over HTTP on the same port (requests that are not
    /// WebSocket upgrades). `None` (default) answers them with 426 Upgrade Required.
    pub static_dir: Option<PathBuf>,
    /// Each connection's message rate limit (`PROTOCOL.md` section 4): a token bucket of
    /// `burst` messages refilled at `per_second`. A message over it is answered with a
    /// reliable `~error` `rate_limited` naming it (it is not consumed: its sender may send it
    /// again later), any other frame over it is dropped, and a client that keeps sending
    /// faster than twice the rate is closed with 1008. The welcome announces the limit, and
    /// wsrelay clients pace themselves to it. `None` (the default): no limit.
    pub rate_limit: Option<RateLimit>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            relay: true,
            max_message_size: 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: None,
            max_pending_connections: 1024,
            max_pending_per_ip: None,
            handshake_timeout: Duration::from_secs(10),
            backlog_window: 1 << 20,
            max_backlog: 8 << 20,
            room_retention: RoomRetention::default(),
            slow_consumer_timeout: Duration::from_secs(15),
            send_window: 256 << 10,
            ping_interval: Duration::from_secs(30),
            session_grace: Duration::from_secs(60),
            hello_timeout: Duration::from_millis(500),
            close_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            on_duplicate: OnDuplicate::Replace,
            allowed_origins: Vec::new(),
            own_origin: false,
            tls: None,
            read_buffer_size: 8 * 1024,
            write_buffer_size: 8 * 1024,
            redis: None,
            node_id: None,
            presence: false,
            presence_interval: Duration::from_millis(100),
            static_dir: None,
            rate_limit: None,
        }
    }
}

/// How much of a room's log the Redis engine keeps ([`ServerConfig::room_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRetention {
    /// The most entries a room's log keeps (trimmed approximately, never below it).
    pub entries: usize,
    /// How long a log without new messages is kept.
    pub idle: Duration,
}

impl Default for RoomRetention {
    fn default() -> Self {
        RoomRetention {
            entries: 100_000,
            idle: Duration::from_secs(600),
        }
    }
}

impl ServerConfig {
    /// The transport's limit: a frame or message larger than `max_message_size` is refused
    /// from its header, before its payload is read.
    pub(crate) fn hard_message_limit(&self) -> usize {
        self.max_message_size
    }

    /// What each connection's state machine needs of these settings.
    pub(crate) fn connection_settings(&self) -> wsrelay_core::server::ConnectionSettings {
        wsrelay_core::server::ConnectionSettings {
            max_message_size: self.max_message_size,
            hello_timeout: self.hello_timeout,
            announced_hello_timeout: Duration::from_secs(10),
            ping_interval: self.ping_interval,
            relay: self.relay,
            send_window: self.send_window,
            backlog_window: self.backlog_window,
            slow_consumer_timeout: self.slow_consumer_timeout,
            // What a client keeps in flight within its window, and one largest frame more from
            // a client that does not keep to it, before the connection stops reading.
            stash_limit: self.send_window + self.hard_message_limit(),
            max_pending_calls: 256,
            retry_interval: Duration::from_millis(100),
            fetch_batch: 256,
            rate_limit: self.rate_limit,
            answerable: 1024,
            // Settling in memory is a few instructions and wakes blocked senders: at every
            // acknowledgement. On Redis it is a round trip per connection: a quarter of a
            // second's acknowledgements, or 64 KiB of them, settle at once. The mailbox then
            // holds at most that much already delivered, far below `backlog_window`.
            settle_delay: if self.redis.is_some() {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            },
            settle_bytes: (64 << 10).min(self.backlog_window / 4),
        }
    }

    /// The in-memory engine's bounds.
    pub(crate) fn memory_limits(&self) -> wsrelay_core::server::memory::EngineLimits {
        wsrelay_core::server::memory::EngineLimits {
            backlog_window: self.backlog_window,
            max_backlog: self.max_backlog,
            session_grace: self.session_grace,
        }
    }
}
