//! Every setting of the client, with reconnecting-websocket's names and defaults where it has one.

use std::time::Duration;

/// Settings of a [`ClientCore`](super::ClientCore).
///
/// The reconnection options mean what they mean in the JavaScript `reconnecting-websocket`
/// (`minReconnectionDelay` is `min_reconnection_delay`, and so on), with the same defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Delay before the first reconnect attempt. Default 1 s.
    pub min_reconnection_delay: Duration,
    /// Cap on the delay between attempts. Default 10 s.
    pub max_reconnection_delay: Duration,
    /// Each further attempt waits this many times longer. Default 1.3.
    pub reconnection_delay_grow_factor: f64,
    /// Fraction of randomness drawn afresh for every attempt (0 disables it), so that clients
    /// dropped together do not return together. Default 0.3.
    pub reconnection_jitter: f64,
    /// A connection must stay open this long before the retry count resets, so a server that
    /// accepts and then drops at once does not reset the backoff. Default 5 s.
    pub min_uptime: Duration,
    /// How long an attempt may take, from starting to connect to the server's welcome. Default 4 s.
    pub connection_timeout: Duration,
    /// Give up after this many failed reconnect attempts in a row. Default `None`: never.
    pub max_retries: Option<u32>,
    /// Do not connect until [`reconnect`](super::ClientCore::reconnect) is called. Default false.
    pub start_closed: bool,
    /// Most messages kept waiting for acknowledgement (queued or in flight). Default 10 000.
    pub max_enqueued_messages: usize,
    /// Most bytes of encoded frames kept waiting for acknowledgement. Default 16 MiB.
    pub max_enqueued_bytes: usize,
    /// Largest encoded frame the client sends (the server's default limit). Default 1 MiB.
    pub max_message_size: usize,
    /// An application ping is sent this often while open. Default 15 s.
    pub heartbeat_interval: Duration,
    /// The connection is declared dead after this long without any frame. Default 30 s.
    pub heartbeat_timeout: Duration,
    /// Timeout of a request that names none. Default 30 s.
    pub request_timeout: Duration,
    /// Received frames are acknowledged at most this long after arrival. Default 20 ms.
    pub ack_delay: Duration,
    /// ...or at once when this many are unacknowledged. Default 32.
    pub ack_every: u64,
    /// How long a graceful close waits for the server to acknowledge what is in flight. Default 5 s.
    pub close_timeout: Duration,
    /// Close codes after which the client stops reconnecting and reports the code: protocol
    /// error, policy violation, authentication failed, forbidden, replaced by another connection.
    pub stop_codes: Vec<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_reconnection_delay: Duration::from_millis(1000),
            max_reconnection_delay: Duration::from_millis(10_000),
            reconnection_delay_grow_factor: 1.3,
            reconnection_jitter: 0.3,
            min_uptime: Duration::from_millis(5000),
            connection_timeout: Duration::from_millis(4000),
            max_retries: None,
            start_closed: false,
            max_enqueued_messages: 10_000,
            max_enqueued_bytes: 16 << 20,
            max_message_size: 1 << 20,
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ack_delay: Duration::from_millis(20),
            ack_every: 32,
            close_timeout: Duration::from_secs(5),
            stop_codes: vec![1002, 1008, 4401, 4403, 4409],
        }
    }
}
