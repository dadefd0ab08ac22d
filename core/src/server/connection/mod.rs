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

mod delivery;
mod inbound;
mod liveness;
mod output;
mod settings;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use super::engine::{Effect, Hello, LogBatch, Opened, RoomAccess, Routed, Signal};
use super::limit::{Answerable, Limiter, RateLimit, Verdict};
use crate::protocol::{
    json, room_problem, DecodeError, ErrorCode, Frame, Message, Welcome, CLOSE_REPLACED,
    CLOSE_SUPERSEDED, JOIN, LEAVE, RELAY_PREFIX, VERSION,
};
use crate::{Instant, Reply};

pub use output::*;
pub use settings::*;

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
    /// The mailbox may hold frames not fetched yet.
    mail: bool,
    /// An `Output::Fetch` waits for its answer.
    fetching: bool,
    /// A fetch failed: the mailbox is read again at this time.
    refetch_at: Option<Instant>,
    /// The close frame to send once what the mailbox holds has gone out (the connection
    /// ended, and its client is told so).
    farewell: Option<CloseFrame>,
    /// Sizes of the frames transmitted and not settled, oldest first.
    in_flight: VecDeque<usize>,
    /// The logs of the session's rooms may hold entries not fetched yet.
    logs_mail: bool,
    /// An `Output::FetchLogs` waits for its answer.
    logs_fetching: bool,
    /// Per room (`""`: everyone), the positions and sizes of the log entries transmitted and
    /// not acknowledged, oldest first.
    logs_in_flight: HashMap<String, VecDeque<(u64, usize)>>,
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
    /// Which rooms the client's credentials let it join.
    room_access: RoomAccess,
    limiter: Option<Limiter>,
    answerable: Answerable,
    stats: ConnectionStats,
    /// The position the claim gave for the source's next frame: frames before it existed
    /// before this connection.
    claimed_next: u64,
    ending: Option<DisconnectReason>,
    /// The close code the end sent, or the client's.
    close_code: Option<u16>,
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
            stats: ConnectionStats::default(),
            claimed_next: next,
            expires: None,
            room_access: RoomAccess::Any,
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
            mail: true,
            fetching: false,
            refetch_at: None,
            farewell: None,
            in_flight: VecDeque::new(),
            logs_mail: false,
            logs_fetching: false,
            logs_in_flight: HashMap::new(),
            backlog_bytes: 0,
            settle_owed: 0,
            settle_due: None,
            latest: now,
            over_since: None,
            heard: false,
            awaiting_pong: false,
            ending: None,
            close_code: None,
            outputs: VecDeque::new(),
        }
    }

    /// The client's credentials expire at `at`: the connection is closed then with
    /// [`CLOSE_EXPIRED`], and its client reconnects with fresh ones.
    pub fn set_expiry(&mut self, at: Instant) {
        self.expires = Some(at);
    }

    /// Which rooms the client may join (default: any); others are refused with
    /// `~error` `forbidden`.
    pub fn set_room_access(&mut self, access: RoomAccess) {
        self.room_access = access;
    }

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

    /// The close code of the connection's end: the one sent to the client, or the one the
    /// client sent; `None` while it lives, or when no close frame went either way.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Whether the driver should read the next frame: false while too much input waits.
    pub fn wants_read(&self) -> bool {
        self.ending.is_none() && self.stash_bytes <= self.settings.stash_limit
    }

    /// The position to fetch from the mailbox next, when frames may be sent: not before the
    /// client's kind is known, and after the end only until the close frame is due.
    fn fetch_from(&self) -> Option<u64> {
        match self.mode {
            Mode::Bare | Mode::Session { .. } => Some(self.next),
            Mode::Closed if self.farewell.is_some() => Some(self.next),
            Mode::Closed | Mode::Pending { .. } | Mode::Opening { .. } => None,
        }
    }

    /// What the connection has counted so far.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Bytes transmitted and not yet acknowledged (written, for a bare client).
    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    /// The next thing to do. Call until `None` after every input.
    ///
    /// When nothing else is queued, the connection reads its mailbox (`Output::Fetch`) if it
    /// may hold frames; after the end, the close frame is due once the mailbox is drained.
    pub fn poll_output(&mut self) -> Option<Output<F>> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        if self.fetching {
            return None;
        }
        if self.mail {
            if let Some(from) = self.fetch_from() {
                self.mail = false;
                self.fetching = true;
                let max = self.settings.fetch_batch;
                return Some(Output::Fetch { from, max });
            }
        }
        if self.logs_mail
            && !self.logs_fetching
            && matches!(self.mode, Mode::Bare | Mode::Session { .. })
            && self.ending.is_none()
        {
            self.logs_mail = false;
            self.logs_fetching = true;
            let max = self.settings.fetch_batch;
            return Some(Output::FetchLogs { max });
        }
        self.farewell.take().map(|close| Output::Close(Some(close)))
    }

    /// An engine's signal about this connection.
    pub fn handle_signal(&mut self, now: Instant, signal: Signal) {
        match signal {
            Signal::Mail => self.mail = true,
            Signal::Logs => self.logs_mail = true,
            Signal::Wake => self.handle_wake(now),
            Signal::Replaced => self.handle_replaced(),
            Signal::Superseded => self.handle_superseded(),
            Signal::Overflowed => self.handle_overflowed(),
            Signal::Gone => self.handle_gone(),
        }
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
            self.refetch_at,
            self.expires,
            self.settle_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn transmit(&mut self, text: String) {
        self.outputs.push_back(Output::Transmit(F::from(text)));
    }

    fn event(&mut self, event: ServerEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Ends the connection: last words and a close frame, if any, and the source released
    /// (its session parked for a resume). The close frame waits until what the mailbox holds
    /// for the client has gone out; without one (the client closed, the transport is gone)
    /// nothing more is written.
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
        self.refetch_at = None;
        self.close_code = match (&close, &reason) {
            (Some(close), _) => Some(close.code),
            (None, DisconnectReason::Closed(code)) => *code,
            (None, _) => None,
        };
        match close {
            Some(close) => {
                self.mail = true;
                self.farewell = Some(close);
            }
            None => self.outputs.push_back(Output::Close(None)),
        }
        self.ending = Some(reason);
    }
}
