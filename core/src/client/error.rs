//! Why a message, a request or the connection failed.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use crate::protocol::RemoteError;

/// Every failure the core reports. Each has a stable [`code`](Error::code) that the JavaScript
/// surface exposes as `error.code`, so callers can branch on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `max_enqueued_messages` messages already wait for acknowledgement.
    QueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// Accepting the message would exceed `max_enqueued_bytes`.
    QueueBytesFull {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The encoded message is larger than `max_message_size`.
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The payload is not valid JSON text.
    InvalidPayload,
    /// The type is empty or starts with the reserved `~`.
    InvalidType,
    /// The message's time-to-live ran out before it could be sent.
    Expired,
    /// No response arrived within the request's timeout.
    Timeout,
    /// The client was closed before the message was acknowledged.
    Closed,
    /// The server closed with a code that means "do not come back" (see `Options::stop_codes`).
    Rejected {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// `max_retries` reconnect attempts failed in a row.
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The server or the peer reported an error for this message.
    Remote(RemoteError),
    /// The transport reported an error.
    Transport(String),
    /// The server sent something that breaks the protocol.
    Protocol(String),
    /// A payload received does not have the shape the application asked for (a driver's typed
    /// `request` whose response does not deserialize).
    Decode(String),
    /// A setting cannot be used: an option out of range, a URL that is not `ws://` or `wss://`,
    /// a `source` that is not 1 to 128 bytes. The message names it.
    InvalidOption(String),
    /// A handler answered a message with an error (it failed, or chose to): reported here too,
    /// so that a failing handler is never silent even when the sender cannot be told.
    Handler {
        /// The message type the handler is registered for.
        kind: String,
        /// The error it answered with (code `handler_error` for a failure).
        error: RemoteError,
    },
    /// A handler returned a value for a message that cannot be answered: it carries no `id`
    /// (a bare client's message, a frame the server originated without one). The value is not
    /// sent anywhere; this says so instead of dropping it in silence.
    Unanswerable {
        /// The message type the handler is registered for.
        kind: String,
    },
    /// The message was sent, but the server lost the client's session before acknowledging
    /// it (its grace period ended, or it restarted): it may or may not have been delivered.
    /// Sending it again could deliver it twice, so the client does not; the application
    /// decides.
    SessionLost,
    /// The client stopped for good (`cause`: rejected by the server, retries exhausted, closed
    /// before the acknowledgement came) after it had sent the message and before the server
    /// acknowledged it: it may or may not have been delivered. Only a message that was never
    /// sent fails with the cause itself, so such a failure means "not delivered".
    Unconfirmed(Box<Error>),
    /// The storage of a client that persists its state failed (full, gone, refused, or its
    /// journal unreadable): the client goes on in memory, and a restart will not restore
    /// what it queues from now on.
    Storage(String),
}

impl Error {
    /// A stable, machine-readable name for the failure.
    pub fn code(&self) -> &str {
        match self {
            Error::QueueFull { .. } => "queue_full",
            Error::QueueBytesFull { .. } => "queue_bytes_full",
            Error::TooLarge { .. } => "too_large",
            Error::InvalidPayload => "invalid_payload",
            Error::InvalidType => "invalid_type",
            Error::Expired => "expired",
            Error::Timeout => "timeout",
            Error::Closed => "closed",
            Error::Rejected { .. } => "rejected",
            Error::RetriesExhausted { .. } => "retries_exhausted",
            Error::Remote(error) => &error.code,
            Error::Transport(_) => "transport",
            Error::Protocol(_) => "protocol",
            Error::Decode(_) => "decode",
            Error::InvalidOption(_) => "invalid_option",
            Error::Handler { error, .. } => &error.code,
            Error::Unanswerable { .. } => "unanswerable",
            Error::SessionLost => "session_lost",
            Error::Unconfirmed(_) => "unconfirmed",
            Error::Storage(_) => "storage",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::QueueFull { limit } => {
                write!(f, "send queue full: {limit} messages await acknowledgement")
            }
            Error::QueueBytesFull { limit } => {
                write!(
                    f,
                    "send queue full: over {limit} bytes await acknowledgement"
                )
            }
            Error::TooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds the limit of {limit}")
            }
            Error::InvalidPayload => f.write_str("payload is not valid JSON"),
            Error::InvalidType => f.write_str("type must be non-empty and not start with '~'"),
            Error::Expired => f.write_str("time-to-live expired before the message could be sent"),
            Error::Timeout => f.write_str("no response within the timeout"),
            Error::Closed => f.write_str("client closed before the message was acknowledged"),
            Error::Rejected { code, reason } => {
                write!(f, "server closed the connection for good ({code} {reason})")
            }
            Error::RetriesExhausted { attempts } => {
                write!(f, "gave up after {attempts} failed reconnect attempts")
            }
            Error::Remote(error) => write!(f, "{}: {}", error.code, error.message),
            Error::Transport(message) => write!(f, "transport error: {message}"),
            Error::Protocol(message) => write!(f, "protocol error: {message}"),
            Error::Decode(message) => write!(f, "cannot decode {message}"),
            Error::InvalidOption(message) => f.write_str(message),
            Error::Handler { kind, error } => {
                write!(
                    f,
                    "handler of \"{kind}\": {}: {}",
                    error.code, error.message
                )
            }
            Error::Unanswerable { kind } => write!(
                f,
                "the handler of \"{kind}\" returned a value, but the message has no id to answer"
            ),
            Error::SessionLost => f.write_str(
                "the server lost the session before acknowledging this message: it may have been \
                 delivered",
            ),
            Error::Unconfirmed(cause) => write!(
                f,
                "{cause}, after the message was sent and before it was acknowledged: it may \
                 have been delivered"
            ),
            Error::Storage(message) => write!(f, "storage failed, continuing in memory: {message}"),
        }
    }
}

impl core::error::Error for Error {}
