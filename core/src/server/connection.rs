//! [`ServerConnection`]: every decision the server makes about one WebSocket connection.
//!
//! Inputs are the client's frames, transport events, the engine's answers and signals, the
//! application handlers' replies and [`handle_timeout`](ServerConnection::handle_timeout); each
//! takes the current time. After each input the driver drains
//! [`poll_output`](ServerConnection::poll_output), carries out every [`Output`] in order
//! (feeding the answers of `Open`, `Route` and `Call` back), and sleeps until
//! [`poll_timeout`](ServerConnection::poll_timeout). The driver decides nothing: it reads,
//! writes, sleeps, and asks the engine.
//!
//! Flow control (`PROTOCOL.md` section 4): a message is consumed only when every recipient
//! that is connected has room (the engine answers [`Routed::Blocked`] otherwise), only while
//! this client's own backlog is under the window, and only while fewer than
//! `max_pending_calls` handler calls wait. Until then it waits here, unacknowledged, with the
//! frames that follow it; acknowledgements and pings are still read and answered, so two
//! clients blocked on each other keep draining. A client whose backlog stays over the window
//! for `slow_consumer_timeout` is closed with 1013: it reconnects and resumes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Deref;
use std::time::Duration;

use super::engine::{Effect, Hello, Opened, Routed};
use super::limit::{Answerable, Limiter, RateLimit, Verdict};
use crate::protocol::{
    DecodeError, ErrorCode, ErrorReport, Frame, Message, RemoteError, Welcome, CLOSE_REPLACED,
    CLOSE_SUPERSEDED, RELAY_PREFIX, VERSION,
};
use crate::{Instant, Reply};

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
    /// A blocked message is retried after this long even without a wake-up.
    pub retry_interval: Duration,
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
            rate_limit: None,
            answerable: 1024,
            settle_delay: Duration::ZERO,
            settle_bytes: 0,
        }
    }
}

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
pub struct Counters {
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
    /// [`ServerConnection::handle_written`].
    Deliver(F),
    /// Write a WebSocket ping (the liveness check of a silent connection).
    Ping,
    /// Ask the engine to open the session of a hello, or to set up a bare client (`None`);
    /// answer with [`ServerConnection::handle_opened`]. `fresh_next` is the first position of
    /// a fresh session.
    Open {
        /// What the hello said; `None` for a bare client.
        hello: Option<Hello>,
        /// Where a fresh session starts.
        fresh_next: u64,
    },
    /// Ask the engine to consume message `id` (de-duplicating it) with `effect`; answer with
    /// [`ServerConnection::handle_routed`].
    Route {
        /// The message's id (`None` from bare clients).
        id: Option<u64>,
        /// What consuming it does.
        effect: Effect<F>,
    },
    /// Append a reliable frame to this client's own mailbox (a handler's response, an error
    /// about a message without id). No answer.
    Append(F),
    /// Call the application handler of `kind`; answer with
    /// [`ServerConnection::handle_reply`], in the order of the calls.
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
    /// End the connection: write what was transmitted, then this close frame if any.
    Close(Option<CloseFrame>),
    /// For logs and metrics.
    Event(ServerEvent),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// No frame yet: is it a wsrelay client (hello) or a bare one? (`announced`: the URL said
    /// it is a wsrelay client.)
    Pending { announced: bool },
    /// Waiting for the engine's `Opened` (with the token for a session).
    Opening { token: Option<String>, late: bool },
    /// No session: frames without ids, no acknowledgements.
    Bare,
    /// A wsrelay client's session.
    Session { token: String },
    /// Ended; deliveries are still written until the driver closes.
    Closed,
}

/// A message handed to the engine, or waiting to be.
#[derive(Debug, Clone)]
struct Held<F> {
    id: Option<u64>,
    effect: Effect<F>,
    /// The handler call to make once it is consumed.
    call: Option<(String, Option<String>)>,
    /// `None` while the engine works on it; the retry time while it is blocked.
    retry_at: Option<Instant>,
}

/// Client input kept in arrival order until it can be consumed.
#[derive(Debug, Clone)]
enum Work {
    Text(String),
    TooLarge(usize),
    Binary,
    /// A message over the rate limit, to be answered `rate_limited` in its turn.
    RateLimited(u64),
}

/// Longest piece of client input echoed in an error message or event.
const ECHO_LIMIT: usize = 64;

/// The server side of one WebSocket connection, sans-IO.
#[derive(Debug)]
pub struct ServerConnection<F, H> {
    source: String,
    settings: ConnectionSettings,
    handlers: H,
    mode: Mode,
    // ---- client -> server ----
    /// The de-duplication watermark: the highest id consumed.
    consumed: u64,
    /// The highest id acknowledged to the client.
    acked_to_client: u64,
    held: Option<Held<F>>,
    stash: VecDeque<Work>,
    stash_bytes: usize,
    /// Kinds and ids of the handler calls waiting for their reply, oldest first.
    calls: VecDeque<(String, Option<u64>)>,
    // ---- server -> client ----
    /// Position before the session's first frame (client counts start there).
    base: u64,
    /// The next position to fetch and transmit.
    next: u64,
    /// The last position the client has (acknowledged, or written for a bare client).
    settled: u64,
    /// Sizes of the frames transmitted and not settled, oldest first.
    in_flight: VecDeque<usize>,
    backlog_bytes: usize,
    /// Bytes acknowledged by the client and not settled with the engine yet, and when they
    /// will be (`settle_delay`).
    settle_owed: usize,
    settle_due: Option<Instant>,
    /// The latest time an input brought: a deferred settle is due `settle_delay` after it.
    latest: Instant,
    over_since: Option<Instant>,
    // ---- liveness ----
    heard: bool,
    awaiting_pong: bool,
    next_check: Instant,
    hello_deadline: Instant,
    /// When the client's credentials expire, if they do.
    expires: Option<Instant>,
    limiter: Option<Limiter>,
    answerable: Answerable,
    counters: Counters,
    /// The position the claim gave for the source's next frame: frames before it existed
    /// before this connection.
    claimed_next: u64,
    ending: Option<DisconnectReason>,
    outputs: VecDeque<Output<F>>,
}

impl<F: FrameText, H: HandlerSet> ServerConnection<F, H> {
    /// A connection of `source`, which the engine's claim gave position `next` for its next
    /// frame. `announced`: its URL said it speaks the protocol (`v=1`), so it will send a
    /// hello.
    pub fn new(
        source: String,
        next: u64,
        announced: bool,
        settings: ConnectionSettings,
        handlers: H,
        now: Instant,
    ) -> Self {
        let hello_timeout = if announced {
            settings.announced_hello_timeout
        } else {
            settings.hello_timeout
        };
        ServerConnection {
            source,
            hello_deadline: now + hello_timeout,
            next_check: now + settings.ping_interval,
            limiter: settings.rate_limit.map(|limit| Limiter::new(limit, now)),
            answerable: Answerable::default(),
            counters: Counters::default(),
            claimed_next: next,
            expires: None,
            settings,
            handlers,
            mode: Mode::Pending { announced },
            consumed: 0,
            acked_to_client: 0,
            held: None,
            stash: VecDeque::new(),
            stash_bytes: 0,
            calls: VecDeque::new(),
            base: next.saturating_sub(1),
            next,
            settled: next.saturating_sub(1),
            in_flight: VecDeque::new(),
            backlog_bytes: 0,
            settle_owed: 0,
            settle_due: None,
            latest: now,
            over_since: None,
            heard: false,
            awaiting_pong: false,
            ending: None,
            outputs: VecDeque::new(),
        }
    }

    /// The client's credentials expire at `at`: the connection is closed then with
    /// [`CLOSE_EXPIRED`], and its client reconnects with fresh ones.
    pub fn set_expiry(&mut self, at: Instant) {
        self.expires = Some(at);
    }

    // ---- getters ----

    /// The client's identity.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the client is a wsrelay client with a session.
    pub fn has_session(&self) -> bool {
        matches!(self.mode, Mode::Session { .. })
    }

    /// Why the connection ended, once it has.
    pub fn ending(&self) -> Option<&DisconnectReason> {
        self.ending.as_ref()
    }

    /// Whether the driver should read the next frame: false while too much input waits.
    pub fn wants_read(&self) -> bool {
        self.ending.is_none() && self.stash_bytes <= self.settings.stash_limit
    }

    /// The position to fetch from the mailbox next, when frames may be sent (not before the
    /// client's kind is known).
    pub fn fetch_from(&self) -> Option<u64> {
        match self.mode {
            Mode::Bare | Mode::Session { .. } | Mode::Closed => Some(self.next),
            Mode::Pending { .. } | Mode::Opening { .. } => None,
        }
    }

    /// What the connection has counted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes transmitted and not yet acknowledged (written, for a bare client).
    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    // ---- outputs ----

    /// The next thing to do. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output<F>> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ending.is_some() {
            return None;
        }
        let hello = matches!(self.mode, Mode::Pending { .. }).then_some(self.hello_deadline);
        let slow = self
            .over_since
            .map(|since| since + self.settings.slow_consumer_timeout);
        let retry = self.held.as_ref().and_then(|held| held.retry_at);
        [
            Some(self.next_check),
            hello,
            slow,
            retry,
            self.expires,
            self.settle_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- transport input ----

    /// A text frame arrived at `now`.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        if self.ending.is_some() {
            return;
        }
        self.latest = self.latest.max(now);
        self.heard = true;
        if text.len() > self.settings.max_message_size {
            self.not_a_hello();
            if self.within_limit(now, None) {
                self.work(Work::TooLarge(text.len()));
            }
            return;
        }
        let frame = Frame::decode(text);
        // Acknowledgements and the first hello are never limited: they only ever make the
        // connection lighter. Everything else counts.
        let exempt = match &frame {
            Ok(Frame::Ack { .. }) => true,
            Ok(Frame::Hello { .. }) => matches!(self.mode, Mode::Pending { .. } | Mode::Bare),
            _ => false,
        };
        match &frame {
            Ok(Frame::Message(_)) => self.counters.messages += 1,
            Ok(Frame::Ack { .. }) => self.counters.acks_received += 1,
            _ => {}
        }
        if !exempt {
            let id = match &frame {
                Ok(Frame::Message(message)) => message.id,
                _ => None,
            };
            if !self.within_limit(now, id) {
                return;
            }
        }
        match frame {
            Ok(Frame::Hello {
                version,
                session,
                ack,
                sid,
            }) => self.hello(version, session, ack, sid, text),
            Ok(Frame::Ack { ack }) => {
                self.not_a_hello();
                self.client_ack(ack);
            }
            Ok(Frame::Ping) => {
                self.not_a_hello();
                self.transmit(Frame::Pong.encode());
            }
            Ok(Frame::Pong) => self.not_a_hello(),
            Ok(Frame::Error(report)) => {
                self.not_a_hello();
                self.event(ServerEvent::ClientError {
                    code: clip(&report.error.code).into_owned(),
                    message: clip(&report.error.message).into_owned(),
                });
            }
            other => {
                self.not_a_hello();
                if self.can_consume() {
                    self.consume(other);
                } else {
                    self.stash(Work::Text(text.to_owned()));
                }
            }
        }
    }

    /// A binary frame arrived at `now`: refused.
    pub fn handle_binary(&mut self, now: Instant) {
        if self.ending.is_none() {
            self.heard = true;
            self.not_a_hello();
            if self.within_limit(now, None) {
                self.work(Work::Binary);
            }
        }
    }

    /// Any sign of life that is not a frame (a WebSocket pong or ping).
    pub fn handle_heard(&mut self) {
        self.heard = true;
    }

    /// The client closed the connection (with `code`, if it sent one), or the stream ended.
    pub fn handle_closed(&mut self, code: Option<u16>) {
        self.end(DisconnectReason::Closed(code), None, None);
    }

    /// The transport failed.
    pub fn handle_transport_error(&mut self, error: TransportError) {
        match error {
            TransportError::TooLarge => {
                let limit = self.settings.max_message_size;
                let message = format!("messages are limited to {limit} bytes");
                let words = error_frame(ErrorCode::TooLarge, &message, None);
                self.end(
                    DisconnectReason::TooLarge,
                    Some(words),
                    Some(close(1009, "message too big")),
                );
            }
            TransportError::InvalidUtf8 => {
                let message = "text frame is not valid UTF-8";
                let words = error_frame(ErrorCode::InvalidJson, message, None);
                self.end(
                    DisconnectReason::InvalidUtf8,
                    Some(words),
                    Some(close(1007, "invalid UTF-8")),
                );
            }
            TransportError::Protocol(message) => self.end(
                DisconnectReason::ProtocolError(message),
                None,
                Some(close(1002, "protocol error")),
            ),
            TransportError::Io(message) => self.end(DisconnectReason::Failed(message), None, None),
        }
    }

    /// `count` more frames of `Output::Deliver` were written to the socket. A bare client has
    /// no acknowledgements: for it, written is settled.
    pub fn handle_written(&mut self, count: usize) {
        if matches!(self.mode, Mode::Bare) && count > 0 {
            let through = (self.settled + count as u64).min(self.next - 1);
            self.settle_through(through);
            self.drain();
        }
    }

    // ---- engine input ----

    /// The engine opened the session (or set up the bare client) asked for by `Output::Open`.
    pub fn handle_opened(&mut self, opened: Opened) {
        let Mode::Opening { token, late } = std::mem::replace(&mut self.mode, Mode::Bare) else {
            return;
        };
        self.base = opened.base;
        self.next = opened.next;
        self.settled = opened.next - 1;
        self.in_flight.clear();
        self.backlog_bytes = 0;
        self.over_since = None;
        if opened.resumed {
            self.counters.resent += self.claimed_next.saturating_sub(opened.next);
        }
        self.settle_owed = 0;
        self.settle_due = None;
        if let Some(token) = token {
            self.consumed = opened.consumed;
            self.acked_to_client = opened.consumed;
            let welcome = Frame::Welcome(Welcome {
                version: VERSION,
                session: Cow::Borrowed(&token),
                ack: opened.consumed,
                resumed: opened.resumed,
                lost: opened.lost,
                window: Some(self.settings.send_window as u64),
                sid: opened.sid.as_deref().map(Cow::Borrowed),
                rate: self
                    .limiter
                    .as_ref()
                    .map(|limiter| u64::from(limiter.limit().per_second)),
                burst: self
                    .limiter
                    .as_ref()
                    .map(|limiter| u64::from(limiter.limit().burst)),
            });
            self.transmit(welcome.encode());
            self.event(ServerEvent::Opened {
                resumed: opened.resumed,
                lost: opened.lost,
                late,
            });
            self.mode = Mode::Session { token };
        }
        self.drain();
    }

    /// The engine's answer to the last `Output::Route`.
    pub fn handle_routed(&mut self, now: Instant, routed: Routed) {
        self.latest = self.latest.max(now);
        let Some(held) = self.held.take_if(|held| held.retry_at.is_none()) else {
            return;
        };
        match routed {
            Routed::Done | Routed::Duplicate => {
                if let Some(id) = held.id {
                    self.consumed = self.consumed.max(id);
                    if routed == Routed::Duplicate {
                        self.event(ServerEvent::Duplicate { id });
                    }
                }
                if let (Some((kind, payload)), Routed::Done) = (held.call, &routed) {
                    self.calls.push_back((kind.clone(), held.id));
                    self.outputs.push_back(Output::Call {
                        kind,
                        source: self.source.clone(),
                        payload,
                    });
                }
                self.drain();
            }
            Routed::UnknownTarget | Routed::Overflow => {
                let target = match &held.effect {
                    Effect::To { target, .. } => clip(target),
                    _ => Cow::Borrowed("?"),
                };
                let (code, message) = if routed == Routed::UnknownTarget {
                    let message = format!("no client with source \"{target}\"");
                    (ErrorCode::UnknownTarget, message)
                } else {
                    let message = format!("the mailbox of \"{target}\" is full");
                    (ErrorCode::Overflow, message)
                };
                // Consuming the message is answering it: the error goes out before the ack.
                let frame = self.rejection(code, message, held.id);
                self.route(held.id, Effect::Reply { frame }, None);
            }
            Routed::Blocked { .. } | Routed::Unavailable => {
                if let Routed::Blocked { on } = routed {
                    self.event(ServerEvent::Blocked { on });
                }
                self.held = Some(Held {
                    retry_at: Some(now + self.settings.retry_interval),
                    ..held
                });
            }
            Routed::Fenced { superseded: true } => self.handle_superseded(),
            Routed::Fenced { superseded: false } => self.handle_replaced(),
            Routed::Gone => self.handle_gone(),
        }
    }

    /// A recipient this connection waits for has room again: retry now.
    pub fn handle_wake(&mut self, now: Instant) {
        if let Some(held) = self.held.as_mut() {
            if held.retry_at.is_some() {
                held.retry_at = Some(now);
                self.handle_timeout(now);
            }
        }
    }

    /// A frame from the mailbox, at the position [`fetch_from`](Self::fetch_from) named (and
    /// the following ones, in order).
    pub fn handle_delivery(&mut self, now: Instant, frame: F) {
        if self.fetch_from().is_none() {
            return;
        }
        self.latest = self.latest.max(now);
        let len = frame.len();
        if matches!(self.mode, Mode::Session { .. } | Mode::Bare) {
            self.answerable.note(&frame, self.settings.answerable);
        }
        self.next += 1;
        self.in_flight.push_back(len);
        self.backlog_bytes += len;
        if self.backlog_bytes > self.settings.backlog_window && self.over_since.is_none() {
            self.over_since = Some(now);
        }
        self.outputs.push_back(Output::Deliver(frame));
    }

    /// An application handler's reply to the oldest call.
    pub fn handle_reply(&mut self, reply: Reply) {
        let Some((kind, id)) = self.calls.pop_front() else {
            return;
        };
        let (payload, error) = match reply {
            Reply::None => return self.drain(),
            Reply::Payload(payload) => (Some(payload), None),
            Reply::Error(error) => (None, Some(error)),
        };
        match id {
            Some(id) => {
                let response = Message {
                    kind: Cow::Borrowed(&kind),
                    id: None,
                    re: Some(id),
                    to: None,
                    source: None,
                    payload: payload.as_deref(),
                    error,
                };
                // Even after the connection ended: the response then waits in the parked
                // session for the client's return.
                self.outputs
                    .push_back(Output::Append(F::from(response.encode())));
            }
            None => self.event(ServerEvent::Unanswerable { kind }),
        }
        self.drain();
    }

    /// Another client instance claimed the source.
    pub fn handle_replaced(&mut self) {
        self.end(
            DisconnectReason::Replaced,
            None,
            Some(close(CLOSE_REPLACED, "replaced by another connection")),
        );
    }

    /// A newer connection attempt of the same client claimed the source.
    pub fn handle_superseded(&mut self) {
        self.end(
            DisconnectReason::Superseded,
            None,
            Some(close(CLOSE_SUPERSEDED, "superseded by a newer connection")),
        );
    }

    /// The mailbox overflowed: the session lost frames, which the client learns when it
    /// reconnects.
    pub fn handle_overflowed(&mut self) {
        self.end(
            DisconnectReason::SlowConsumer,
            None,
            Some(close(1013, "slow consumer")),
        );
    }

    /// The engine lost this source's state: the client reconnects (1012) and gets a fresh
    /// session, which tells it what it lost.
    pub fn handle_gone(&mut self) {
        self.end(
            DisconnectReason::Failed("the engine lost the session".into()),
            None,
            Some(close(1012, "session state lost")),
        );
    }

    /// The engine cannot be reached to open the session: the client is asked to come back
    /// later (1013), as a server under load would.
    pub fn handle_engine_down(&mut self, message: String) {
        self.end(
            DisconnectReason::Failed(message),
            None,
            Some(close(1013, "try again later")),
        );
    }

    /// The server shuts down, closing with `code`. Nothing more is consumed; what the client
    /// sent and was not acknowledged, it sends again to the next server.
    pub fn handle_shutdown(&mut self, code: u16) {
        self.end(
            DisconnectReason::Shutdown,
            None,
            Some(close(code, "server shutting down")),
        );
    }

    /// Time has come: run whatever is due at `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ending.is_some() {
            return;
        }
        self.latest = self.latest.max(now);
        if self.settle_due.is_some_and(|due| due <= now) {
            self.settle_now();
        }
        if self.expires.is_some_and(|at| at <= now) {
            self.end(
                DisconnectReason::Expired,
                None,
                Some(close(CLOSE_EXPIRED, "token expired")),
            );
            return;
        }
        if let Mode::Pending { announced } = self.mode {
            if self.hello_deadline <= now {
                if announced {
                    self.end(
                        DisconnectReason::Stale,
                        None,
                        Some(close(1000, "no hello in time")),
                    );
                    return;
                }
                self.not_a_hello();
            }
        }
        if self.next_check <= now {
            self.next_check = now + self.settings.ping_interval;
            // A connection that went quiet after a burst does not keep the room of its
            // largest backlog (up to a backlog window's worth of entries).
            super::shrink_drained(&mut self.in_flight);
            if std::mem::take(&mut self.heard) {
                // The client spoke during the period (a wsrelay client pings every 15 s): a
                // ping would only cost both sides a write and a read.
                self.awaiting_pong = false;
            } else if self.awaiting_pong {
                self.end(
                    DisconnectReason::Stale,
                    None,
                    Some(close(1000, "ping timeout")),
                );
                return;
            } else {
                self.awaiting_pong = true;
                self.outputs.push_back(Output::Ping);
            }
        }
        if self
            .over_since
            .is_some_and(|since| since + self.settings.slow_consumer_timeout <= now)
        {
            self.handle_overflowed();
            return;
        }
        if let Some(held) = self.held.as_mut() {
            if held.retry_at.is_some_and(|at| at <= now) {
                held.retry_at = None;
                let (id, effect) = (held.id, held.effect.clone());
                self.outputs.push_back(Output::Route { id, effect });
            }
        }
    }

    /// The end of a batch of input: acknowledge what was consumed. (Acknowledging per batch
    /// rather than per message lets one write carry the responses and the ack.)
    pub fn flush(&mut self) {
        if matches!(self.mode, Mode::Session { .. })
            && self.ending.is_none()
            && self.consumed > self.acked_to_client
        {
            self.acked_to_client = self.consumed;
            self.counters.acks_sent += 1;
            self.transmit(Frame::Ack { ack: self.consumed }.encode());
        }
    }

    // ---- internals ----

    fn transmit(&mut self, text: String) {
        self.outputs.push_back(Output::Transmit(F::from(text)));
    }

    fn event(&mut self, event: ServerEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Whether a message may be consumed now: the client's kind is known, nothing waits
    /// before it, and neither its own backlog nor its handler calls are over their bounds.
    fn can_consume(&self) -> bool {
        matches!(self.mode, Mode::Bare | Mode::Session { .. })
            && self.held.is_none()
            && self.stash.is_empty()
            && self.backlog_bytes <= self.settings.backlog_window
            && self.calls.len() < self.settings.max_pending_calls
    }

    /// Counts one frame against the rate limit; false when it is over. A message with an id
    /// (not a retransmit) is then answered `rate_limited` in its turn, anything else dropped;
    /// a client that keeps going over is closed with 1008.
    fn within_limit(&mut self, now: Instant, id: Option<u64>) -> bool {
        let Some(limiter) = self.limiter.as_mut() else {
            return true;
        };
        match limiter.take(now) {
            Verdict::Allow => true,
            Verdict::Refuse => {
                let retransmit = matches!(self.mode, Mode::Session { .. })
                    && id.is_some_and(|id| id <= self.consumed);
                let re = id.filter(|_| !retransmit);
                self.event(ServerEvent::RateLimited { re });
                if let Some(id) = re {
                    self.not_a_hello();
                    self.work(Work::RateLimited(id));
                }
                false
            }
            Verdict::Flood => {
                self.event(ServerEvent::RateLimited { re: None });
                self.end(
                    DisconnectReason::Flooding,
                    None,
                    Some(close(1008, "rate limit exceeded")),
                );
                false
            }
        }
    }

    fn stash(&mut self, work: Work) {
        if let Work::Text(text) = &work {
            self.stash_bytes += text.len();
        }
        self.stash.push_back(work);
    }

    /// Consumes what waited, in order, for as long as nothing blocks.
    fn drain(&mut self) {
        while self.ending.is_none()
            && matches!(self.mode, Mode::Bare | Mode::Session { .. })
            && self.held.is_none()
            && self.backlog_bytes <= self.settings.backlog_window
            && self.calls.len() < self.settings.max_pending_calls
        {
            let Some(work) = self.stash.pop_front() else {
                return;
            };
            match work {
                Work::Text(text) => {
                    self.stash_bytes -= text.len();
                    self.consume(Frame::decode(&text));
                }
                other => self.work_now(other),
            }
        }
    }

    /// Input other than a message: processed now or after what waits before it.
    fn work(&mut self, work: Work) {
        if self.can_consume() {
            self.work_now(work);
        } else {
            self.stash(work);
        }
    }

    fn work_now(&mut self, work: Work) {
        match work {
            Work::TooLarge(len) => {
                let limit = self.settings.max_message_size;
                let message = format!("frame of {len} bytes exceeds the limit of {limit}");
                self.reject_unnumbered(ErrorCode::TooLarge, message);
            }
            Work::Binary => self.reject_unnumbered(
                ErrorCode::BinaryFrame,
                "binary frames are not accepted".into(),
            ),
            Work::RateLimited(id) => {
                // Not consumed: the watermark stays, and the client may send it again later.
                let limit = self.settings.rate_limit.map_or(0, |limit| limit.per_second);
                let message = format!("over the rate limit of {limit} messages per second");
                let frame = F::from(error_frame(ErrorCode::RateLimited, &message, Some(id)));
                self.outputs.push_back(Output::Append(frame));
            }
            Work::Text(_) => debug_assert!(false, "texts are consumed, not worked"),
        }
    }

    /// The first frame is not a hello (or none came in time): a bare client.
    fn not_a_hello(&mut self) {
        if matches!(self.mode, Mode::Pending { .. }) {
            self.mode = Mode::Opening {
                token: None,
                late: false,
            };
            self.outputs.push_back(Output::Open {
                hello: None,
                fresh_next: self.next,
            });
        }
    }

    fn hello(
        &mut self,
        version: u64,
        token: Cow<'_, str>,
        ack: u64,
        sid: Option<Cow<'_, str>>,
        text: &str,
    ) {
        let late = match self.mode {
            Mode::Pending { .. } => false,
            Mode::Bare => true,
            _ => {
                // A second hello is a message to refuse, in its turn.
                if self.can_consume() {
                    self.consume(Frame::decode(text));
                } else {
                    self.stash(Work::Text(text.to_owned()));
                }
                return;
            }
        };
        if version != VERSION {
            let message = format!(
                "protocol version {version} is not supported; this server speaks {VERSION}"
            );
            let words = error_frame(ErrorCode::UnsupportedVersion, &message, None);
            let reason = DisconnectReason::ProtocolError(message);
            self.end(reason, Some(words), Some(close(1002, "protocol error")));
            return;
        }
        if !(8..=64).contains(&token.chars().count()) {
            let message = "the session token must be 8 to 64 characters";
            let words = error_frame(ErrorCode::InvalidFrame, message, None);
            let reason = DisconnectReason::ProtocolError(message.into());
            self.end(reason, Some(words), Some(close(1002, "protocol error")));
            return;
        }
        self.mode = Mode::Opening {
            token: Some(token.to_string()),
            late,
        };
        self.outputs.push_back(Output::Open {
            hello: Some(Hello {
                token: token.into_owned(),
                ack,
                sid: sid.map(Cow::into_owned),
            }),
            fresh_next: self.next,
        });
    }

    /// Decides what a message does and hands it to the engine.
    fn consume(&mut self, frame: Result<Frame<'_>, DecodeError>) {
        let message = match frame {
            Ok(Frame::Message(message)) => message,
            Ok(Frame::Hello { .. }) => {
                return self.reject_unnumbered(ErrorCode::InvalidFrame, "duplicate hello".into());
            }
            Ok(Frame::Welcome(_)) => {
                let message = "~welcome is sent by the server".into();
                return self.reject_unnumbered(ErrorCode::ReservedType, message);
            }
            Ok(_) => return, // control frames are handled as they arrive
            Err(error) => {
                if let Some(id) = error.id {
                    if self.is_duplicate(id) {
                        return;
                    }
                }
                let frame = self.rejection(error.code, error.message.into_owned(), error.id);
                return self.answer(error.id, frame);
            }
        };
        if let Some(id) = message.id {
            if self.is_duplicate(id) {
                return;
            }
        }
        let relay = self.settings.relay;
        let id = message.id;
        // The relay's own types reach the relay only: a client may ask it (`relay:clients`)
        // but never speak in its name to others (a forged `relay:presence`).
        if message.kind.starts_with(RELAY_PREFIX)
            && (message.to.is_some()
                || (message.re.is_none() && !self.handlers.handles(&message.kind)))
        {
            let text = format!("types starting with \"{RELAY_PREFIX}\" are the relay's own");
            let frame = self.rejection(ErrorCode::ReservedType, text, id);
            return self.answer(id, frame);
        }
        if let (Some(re), Some(to), true) = (message.re, message.to.as_deref(), relay) {
            // A response goes only to a client whose message (with that id) was relayed to
            // this one: nobody answers a request that was not put to them.
            if !self.answerable.contains(to, re) {
                let text = format!("no message {re} from \"{}\" was relayed to you", clip(to));
                let frame = self.rejection(ErrorCode::UnexpectedResponse, text, id);
                return self.answer(id, frame);
            }
        }
        if let Some(re) = message.re {
            let effect = match message.to.as_deref() {
                Some(to) if relay => Effect::To {
                    target: to.to_owned(),
                    frame: self.relayed(&message),
                },
                Some(_) => {
                    self.event(ServerEvent::Dropped {
                        kind: message.kind.into_owned(),
                    });
                    Effect::Consume
                }
                None => Effect::Resolve {
                    kind: message.kind.into_owned(),
                    re,
                    result: match message.error {
                        Some(error) => Err(error),
                        None => Ok(message.payload.map(str::to_owned)),
                    },
                },
            };
            return self.route(id, effect, None);
        }
        if let (Some(to), true) = (message.to.as_deref(), relay) {
            let effect = Effect::To {
                target: to.to_owned(),
                frame: self.relayed(&message),
            };
            return self.route(id, effect, None);
        }
        if self.handlers.handles(&message.kind) {
            let call = (
                message.kind.into_owned(),
                message.payload.map(str::to_owned),
            );
            return self.route(id, Effect::Consume, Some(call));
        }
        if relay {
            let frame = self.relayed(&message);
            return self.route(id, Effect::Broadcast { frame }, None);
        }
        self.event(ServerEvent::Dropped {
            kind: message.kind.into_owned(),
        });
        self.route(id, Effect::Consume, None);
    }

    fn is_duplicate(&mut self, id: u64) -> bool {
        let duplicate = matches!(self.mode, Mode::Session { .. }) && id <= self.consumed;
        if duplicate {
            // Acknowledged again by the next ack (the client's retransmit is settled by the
            // welcome's `ack` anyway).
            self.event(ServerEvent::Duplicate { id });
        }
        duplicate
    }

    fn route(
        &mut self,
        id: Option<u64>,
        effect: Effect<F>,
        call: Option<(String, Option<String>)>,
    ) {
        if id.is_none() && matches!(effect, Effect::Consume) {
            // Nothing to de-duplicate or deliver: no need to ask the engine.
            if let Some((kind, payload)) = call {
                self.calls.push_back((kind.clone(), None));
                self.outputs.push_back(Output::Call {
                    kind,
                    source: self.source.clone(),
                    payload,
                });
            }
            return;
        }
        self.outputs.push_back(Output::Route {
            id,
            effect: effect.clone(),
        });
        self.held = Some(Held {
            id,
            effect,
            call,
            retry_at: None,
        });
    }

    /// The relayed form of a client's message: the same fields, `source` set by the server.
    fn relayed(&self, message: &Message<'_>) -> F {
        F::from(
            Message {
                source: Some(Cow::Borrowed(&self.source)),
                ..message.clone()
            }
            .encode(),
        )
    }

    /// An `~error` frame about the client's input, reported as an event too.
    fn rejection(&mut self, code: ErrorCode, message: String, re: Option<u64>) -> F {
        let frame = error_frame(code, &message, re);
        self.event(ServerEvent::Rejected { code, message, re });
        F::from(frame)
    }

    /// Answers input that carries no id (nothing to consume) with an `~error`.
    fn reject_unnumbered(&mut self, code: ErrorCode, message: String) {
        let frame = self.rejection(code, message, None);
        self.answer(None, frame);
    }

    /// Sends `frame` to the client about message `id`: consuming the id if it has one.
    fn answer(&mut self, id: Option<u64>, frame: F) {
        match id {
            Some(_) => self.route(id, Effect::Reply { frame }, None),
            None => self.outputs.push_back(Output::Append(frame)),
        }
    }

    fn client_ack(&mut self, ack: u64) {
        if !matches!(self.mode, Mode::Session { .. }) {
            return;
        }
        // A stale ack, or one for more than was sent, changes nothing.
        let through = self.base.saturating_add(ack);
        if through > self.settled && through < self.next {
            self.settle_through(through);
            self.drain();
        }
    }

    fn settle_through(&mut self, through: u64) {
        if through <= self.settled {
            return;
        }
        for _ in self.settled..through {
            let len = self.in_flight.pop_front();
            debug_assert!(len.is_some(), "settled past what was transmitted");
            let len = len.unwrap_or(0);
            self.backlog_bytes -= len;
            self.settle_owed += len;
        }
        self.settled = through;
        if self.backlog_bytes <= self.settings.backlog_window {
            self.over_since = None;
        }
        if self.settings.settle_delay.is_zero() || self.settle_owed >= self.settings.settle_bytes {
            self.settle_now();
        } else if self.settle_due.is_none() {
            self.settle_due = Some(self.latest + self.settings.settle_delay);
        }
    }

    /// Settles with the engine what the client has.
    fn settle_now(&mut self) {
        self.settle_owed = 0;
        self.settle_due = None;
        let through = self.settled;
        // Acknowledgements read in one batch settle once: for a remote store each settle is
        // a round trip the connection waits for.
        match self.outputs.back_mut() {
            Some(Output::Settle { through: queued }) => *queued = through,
            _ => self.outputs.push_back(Output::Settle { through }),
        }
    }

    /// Ends the connection: last words and a close frame, if any, and the source released
    /// (its session parked for a resume).
    fn end(
        &mut self,
        reason: DisconnectReason,
        last_words: Option<String>,
        close: Option<CloseFrame>,
    ) {
        if self.ending.is_some() {
            return;
        }
        self.mode = Mode::Closed;
        self.held = None;
        self.stash.clear();
        self.stash_bytes = 0;
        if let Some(words) = last_words {
            self.transmit(words);
        }
        self.outputs.push_back(Output::Release);
        self.outputs.push_back(Output::Close(close));
        self.ending = Some(reason);
    }
}

fn close(code: u16, reason: &'static str) -> CloseFrame {
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
fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(ECHO_LIMIT) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => {
            let mut clipped = text.get(..cut).unwrap_or_default().to_owned();
            clipped.push('…');
            Cow::Owned(clipped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHandlers;

    impl HandlerSet for NoHandlers {
        fn handles(&self, _kind: &str) -> bool {
            false
        }
    }

    fn outputs(machine: &mut ServerConnection<String, NoHandlers>) -> Vec<Output<String>> {
        std::iter::from_fn(|| machine.poll_output()).collect()
    }

    /// A connection with a fresh session, at position 1.
    fn opened(settings: ConnectionSettings, now: Instant) -> ServerConnection<String, NoHandlers> {
        let mut machine = ServerConnection::new("a".into(), 1, true, settings, NoHandlers, now);
        machine.handle_text(
            now,
            r#"{"type":"~hello","v":1,"session":"session-1","ack":0}"#,
        );
        let opening = outputs(&mut machine);
        assert!(
            opening.iter().any(|o| matches!(o, Output::Open { .. })),
            "{opening:?}"
        );
        machine.handle_opened(Opened {
            resumed: false,
            consumed: 0,
            base: 0,
            next: 1,
            lost: None,
            sid: Some("i".into()),
        });
        machine
    }

    #[test]
    fn acknowledgements_read_together_settle_once() {
        let now = Instant::from_millis(0);
        let settings = ConnectionSettings::default();
        let mut machine = opened(settings, now);
        for n in 0..3 {
            machine.handle_delivery(now, format!(r#"{{"type":"n","payload":{n}}}"#));
        }
        outputs(&mut machine);
        machine.handle_text(now, r#"{"type":"~ack","ack":1}"#);
        machine.handle_text(now, r#"{"type":"~ack","ack":3}"#);
        assert_eq!(settles(&mut machine), [3]);
        assert_eq!(machine.backlog_bytes(), 0);
    }

    fn settles(machine: &mut ServerConnection<String, NoHandlers>) -> Vec<u64> {
        outputs(machine)
            .into_iter()
            .filter_map(|output| match output {
                Output::Settle { through } => Some(through),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn deferred_settles_come_after_the_delay_or_past_the_bytes() {
        let now = Instant::from_millis(0);
        let settings = ConnectionSettings {
            settle_delay: Duration::from_millis(250),
            settle_bytes: 100,
            ..ConnectionSettings::default()
        };
        let mut machine = opened(settings, now);
        for n in 0..4 {
            machine.handle_delivery(now, format!("{{\"type\":\"n\",\"payload\":\"{n:>30}\"}}"));
        }
        outputs(&mut machine);
        machine.handle_text(now, r#"{"type":"~ack","ack":1}"#);
        assert_eq!(settles(&mut machine), [0u64; 0], "owed, not settled yet");
        assert_eq!(machine.poll_timeout(), Some(Instant::from_millis(250)));
        let later = Instant::from_millis(250);
        machine.handle_timeout(later);
        assert_eq!(settles(&mut machine), [1]);
        // Past the bytes (each frame is about 50): at once.
        machine.handle_text(later, r#"{"type":"~ack","ack":2}"#);
        assert_eq!(settles(&mut machine), [0u64; 0]);
        machine.handle_text(later, r#"{"type":"~ack","ack":4}"#);
        assert_eq!(settles(&mut machine), [4]);
        assert!(machine.poll_timeout() > Some(Instant::from_millis(250)));
    }

    #[test]
    fn a_quiet_connection_gives_back_the_room_of_its_burst_at_the_liveness_check() {
        let now = Instant::from_millis(0);
        let settings = ConnectionSettings::default();
        let ping_interval = settings.ping_interval;
        let mut machine = opened(settings, now);
        for n in 0..20_000 {
            machine.handle_delivery(now, format!(r#"{{"type":"n","payload":{n}}}"#));
        }
        outputs(&mut machine);
        machine.handle_text(now, r#"{"type":"~ack","ack":20000}"#);
        assert_eq!(settles(&mut machine), [20_000]);
        // Not while the traffic may go on...
        assert!(machine.in_flight.capacity() >= 20_000);
        // ...but at the next check of the client's liveness.
        machine.handle_timeout(now + ping_interval);
        assert!(
            machine.in_flight.capacity() < 256,
            "{}",
            machine.in_flight.capacity()
        );
        assert_eq!(machine.backlog_bytes(), 0);
    }
}
