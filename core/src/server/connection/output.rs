//! What a connection asks of its driver, tells the application, and how it ends.

use std::borrow::Cow;

use crate::protocol::{ErrorCode, ErrorReport, Frame, RemoteError};
use crate::server::engine::{Effect, Hello};

/// Longest piece of client input echoed in an error message or event.
const ECHO_LIMIT: usize = 64;

/// Why a connection ended. Expected endings are not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed (with this close code, if it sent one) or the stream ended.
    Closed(Option<u16>),
    /// The connection failed (I/O error or a write that could not complete).
    Failed(String),
    /// Another client instance claimed the same `source` (closed with 4409).
    Replaced,
    /// A newer connection attempt of the same client claimed the `source` (closed with 4410):
    /// the client had given up on this connection.
    Superseded,
    /// The client stayed behind for too long, or its mailbox overflowed (closed with 1013; it
    /// may reconnect).
    SlowConsumer,
    /// The client answered no ping in time.
    Stale,
    /// The server shut down (closed with 1001 or 1012).
    Shutdown,
    /// A frame too large to read at all (closed with 1009).
    TooLarge,
    /// A text frame that is not UTF-8 (closed with 1007, as RFC 6455 requires).
    InvalidUtf8,
    /// A protocol violation, e.g. an unsupported version (closed with 1002).
    ProtocolError(String),
    /// The client kept sending over its rate limit (closed with 1008).
    Flooding,
    /// The client's credentials expired while it was connected (closed with 4001; it
    /// reconnects with fresh ones).
    Expired,
}

impl DisconnectReason {
    /// The reason as one word, for metrics and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            DisconnectReason::Closed(_) => "closed",
            DisconnectReason::Failed(_) => "failed",
            DisconnectReason::Replaced => "replaced",
            DisconnectReason::Superseded => "superseded",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::Stale => "stale",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::TooLarge => "too_large",
            DisconnectReason::InvalidUtf8 => "invalid_utf8",
            DisconnectReason::ProtocolError(_) => "protocol_error",
            DisconnectReason::Flooding => "flooding",
            DisconnectReason::Expired => "expired",
        }
    }
}

impl core::fmt::Display for DisconnectReason {
    /// Plain words for logs (JSON logs carry them as they are).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DisconnectReason::Closed(Some(code)) => write!(f, "closed by the client ({code})"),
            DisconnectReason::Closed(None) => f.write_str("closed by the client"),
            DisconnectReason::Failed(error) => write!(f, "connection failed: {error}"),
            DisconnectReason::Replaced => f.write_str("replaced by another client"),
            DisconnectReason::Superseded => {
                f.write_str("superseded by the client's newer connection")
            }
            DisconnectReason::SlowConsumer => f.write_str("slow consumer"),
            DisconnectReason::Stale => f.write_str("answered no ping"),
            DisconnectReason::Shutdown => f.write_str("server shut down"),
            DisconnectReason::TooLarge => f.write_str("frame too large"),
            DisconnectReason::InvalidUtf8 => f.write_str("text frame not UTF-8"),
            DisconnectReason::ProtocolError(error) => write!(f, "protocol error: {error}"),
            DisconnectReason::Flooding => f.write_str("over the rate limit"),
            DisconnectReason::Expired => f.write_str("credentials expired"),
        }
    }
}

/// Close code of a connection whose credentials (a token's `exp`) passed while it was open:
/// not a stop code, so the client fetches a new token and reconnects.
pub const CLOSE_EXPIRED: u16 = 4001;

/// A problem the transport reports instead of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// A frame larger than the transport reads at all.
    TooLarge,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// A WebSocket protocol violation.
    Protocol(String),
    /// Anything else (I/O).
    Io(String),
}

/// What a connection has counted so far, for metrics (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Application messages received (valid envelopes, whatever became of them).
    pub messages: u64,
    /// Acknowledgements received from the client.
    pub acks_received: u64,
    /// Acknowledgements sent to the client.
    pub acks_sent: u64,
    /// Frames the client had missed, sent again because it resumed its session.
    pub resent: u64,
}

/// A close frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Input was refused with an `~error` (the client and others carry on).
    Rejected {
        /// The error code sent.
        code: ErrorCode,
        /// The message sent (bounded in length).
        message: String,
        /// The offending message's id.
        re: Option<u64>,
    },
    /// A retransmitted message was dropped.
    Duplicate {
        /// Its id.
        id: u64,
    },
    /// A session was opened.
    Opened {
        /// The session was resumed.
        resumed: bool,
        /// Frames the client's previous session lost, when known.
        lost: Option<u64>,
        /// The hello came after the client was taken for a bare one.
        late: bool,
    },
    /// A message waits for a recipient that is behind.
    Blocked {
        /// The recipient.
        on: String,
    },
    /// The client reported an error (an `~error` frame).
    ClientError {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// A handler answered a message that has no id, so the answer cannot be sent.
    Unanswerable {
        /// The message type.
        kind: String,
    },
    /// A message was consumed and dropped: nothing handles it and relaying is off, or it is a
    /// directed response while relaying is off.
    Dropped {
        /// The message type.
        kind: String,
    },
    /// The client joined or left a room (its `relay:join` or `relay:leave` was consumed):
    /// presence per room changed.
    Membership {
        /// The room.
        room: String,
        /// Joined (else left).
        joined: bool,
    },
    /// A frame over the rate limit was refused (a message, with `re` its id) or dropped (any
    /// other frame: a ping, an invalid or binary frame).
    RateLimited {
        /// The refused message's id, if it was a message with one.
        re: Option<u64>,
    },
}

/// What to do. Carry out every output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output<F> {
    /// Write this control or unnumbered frame (welcome, ack, pong, last words).
    Transmit(F),
    /// Write this frame from the mailbox (the next position); report it written with
    /// [`ServerConnection::handle_written`](super::ServerConnection::handle_written).
    Deliver(F),
    /// Write this frame of a room's log (it carries its position; it is acknowledged per
    /// room, not counted with the mailbox's frames).
    DeliverLogged(F),
    /// Write a WebSocket ping (the liveness check of a silent connection).
    Ping,
    /// Ask the engine to open the session of a hello, or to set up a bare client (`None`);
    /// answer with [`ServerConnection::handle_opened`](super::ServerConnection::handle_opened). `fresh_next` is the first position of
    /// a fresh session.
    Open {
        /// What the hello said; `None` for a bare client.
        hello: Option<Hello>,
        /// Where a fresh session starts.
        fresh_next: u64,
    },
    /// Ask the engine to consume message `id` (de-duplicating it) with `effect`; answer with
    /// [`ServerConnection::handle_routed`](super::ServerConnection::handle_routed).
    Route {
        /// The message's id (`None` from bare clients).
        id: Option<u64>,
        /// What consuming it does.
        effect: Effect<F>,
    },
    /// Read frames from the mailbox, from position `from` on, at most `max` of them; answer
    /// with [`ServerConnection::handle_fetched`](super::ServerConnection::handle_fetched) (or
    /// [`handle_fetch_failed`](super::ServerConnection::handle_fetch_failed)).
    Fetch {
        /// The first position to read.
        from: u64,
        /// The most frames to read.
        max: usize,
    },
    /// Read the new entries of the logs of the session's rooms, at most `max` of them; answer
    /// with [`ServerConnection::handle_logs_fetched`](super::ServerConnection::handle_logs_fetched)
    /// (or [`handle_fetch_failed`](super::ServerConnection::handle_fetch_failed)). The engine
    /// keeps where the connection is in each log.
    FetchLogs {
        /// The most entries to read.
        max: usize,
    },
    /// The client has every entry of `room`'s log up to `through` (`room` `""`: the log of
    /// everyone): the engine stores the session's place there. Given at every
    /// acknowledgement: the engine batches what it stores.
    SettleLog {
        /// The room.
        room: String,
        /// The last position the client has.
        through: u64,
    },
    /// Append a reliable frame to this client's own mailbox (a handler's response, an error
    /// about a message without id). No answer.
    Append(F),
    /// A handler's response that came after the connection ended: send it to the source's
    /// current session (the server's own `send_to`), wherever it is now: parked for a resume,
    /// or on the client's next connection. No answer.
    Late(F),
    /// Call the application handler of `kind`; answer with
    /// [`ServerConnection::handle_reply`](super::ServerConnection::handle_reply), in the order of the calls.
    Call {
        /// The message type.
        kind: String,
        /// The sender (this connection's source).
        source: String,
        /// The raw JSON payload.
        payload: Option<String>,
    },
    /// Frames up to this position reached the client: the engine may drop them.
    Settle {
        /// The last position settled.
        through: u64,
    },
    /// Give the source back to the engine, which keeps its session (if it has one) for the
    /// grace period. A replaced connection's release is fenced off by the engine.
    Release,
    /// End the connection: write what was transmitted, then this close frame if any (what
    /// the mailbox held has been fetched by then). The last output of a connection, but for
    /// [`Late`](Output::Late) responses.
    Close(Option<CloseFrame>),
    /// For logs and metrics.
    Event(ServerEvent),
}

/// The close of a client asked to come back later (the engine cannot be reached).
pub(crate) const TRY_AGAIN_LATER: CloseFrame = CloseFrame {
    code: 1013,
    reason: "try again later",
};

pub(super) fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason }
}

/// Encodes an `~error` frame.
pub fn error_frame(code: ErrorCode, message: &str, re: Option<u64>) -> String {
    Frame::Error(ErrorReport {
        error: RemoteError {
            code: code.as_str().to_owned(),
            message: message.to_owned(),
        },
        re,
    })
    .encode()
}

/// Client input as echoed in errors and logs: at most [`ECHO_LIMIT`] characters, so that a
/// megabyte `to` does not become a megabyte error.
pub(super) fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(ECHO_LIMIT) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => {
            let mut clipped = text.get(..cut).unwrap_or_default().to_owned();
            clipped.push('…');
            Cow::Owned(clipped)
        }
    }
}
