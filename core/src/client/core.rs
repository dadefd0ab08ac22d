//! The client state machine: one per `WebSocketClient`, whatever drives it.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::backoff::{self, Rng};
use super::outbox::{Deadlines, Outbox, Settles};
use super::stats::RoundTrips;
use super::{Error, Options, Stats};
use crate::bucket::TokenBucket;
use crate::protocol::{
    json, push_u64, ErrorReport, Frame, Message, RemoteError, Welcome, RESERVED_PREFIX, VERSION,
};
use crate::{Instant, Reply};

/// Names one transport (one WebSocket) the core asked for. Events of a transport the core has
/// since abandoned carry an old id and are ignored, so a late `close` from a replaced socket
/// cannot tear down its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransportId(pub u64);

/// What the core asks the driver to do, or tells the application. Drain with
/// [`ClientCore::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Open a new WebSocket to the client's URL and report its events with this id.
    Connect(TransportId),
    /// Write this text frame on the current transport.
    Transmit(String),
    /// Close the transport with this id (the core has already stopped using it).
    CloseTransport {
        /// Which transport.
        transport: TransportId,
        /// Close code (1000 or 4000-4999; browsers accept no others from a page).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Something for the application.
    Event(Event),
}

/// What happened, for the application: the one event type of every driver.
///
/// The drivers route some events themselves ([`Message`](Event::Message) to the `on(type)`
/// handlers, [`Reply`](Event::Reply) and the outcomes of awaited messages to whoever awaits
/// them) and hand the rest to the application as they are: the native client's `subscribe`
/// yields this type, the JavaScript client turns each into a `CustomEvent`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection is open (the server's welcome arrived).
    Open {
        /// The server still held the session: nothing sent to this client was lost.
        resumed: bool,
    },
    /// The server no longer held this client's session when it reconnected (its grace period
    /// ended, its mailbox overflowed, or the server restarted): messages addressed to the
    /// client meanwhile are lost. Emitted before `Open { resumed: false }`, and only when the
    /// client had a session before; the application may want to fetch what it missed.
    SessionLost {
        /// How many reliable frames were lost, when the server knows.
        lost: Option<u64>,
    },
    /// A message for the `on(type)` handlers.
    Message(InboundMessage),
    /// A response that no pending request waits for (an answer to a plain send, or one that
    /// arrived after its request timed out).
    Response(Response),
    /// The response to a pending request.
    Reply {
        /// The request's id.
        request: u64,
        /// The responder.
        source: Option<String>,
        /// The payload (raw JSON, `None` when empty), or the responder's error.
        result: Result<Option<String>, RemoteError>,
    },
    /// The server acknowledged a send or response: it has it.
    Delivered {
        /// The message's id.
        id: u64,
    },
    /// A send, response or request failed; it will not be retried.
    Failed {
        /// The message's id.
        id: u64,
        /// Why.
        error: Error,
    },
    /// A transport closed.
    Close {
        /// Close code (1006 when the connection was lost without one).
        code: u16,
        /// Close reason.
        reason: String,
        /// Whether the client will try again.
        reconnecting: bool,
    },
    /// The next attempt is scheduled.
    Reconnecting {
        /// Attempt number, 1 for the first reconnect since the last stable connection.
        attempt: u32,
        /// How long until it starts.
        delay: Duration,
    },
    /// A problem that fails no particular message (a transport error, an `~error` from the
    /// server about no message of ours, a malformed or binary server frame, a handler that
    /// failed, a handler's value that could not be sent: see [`ClientCore::answer`]).
    Error(Error),
}

/// A message received, raw (payload as JSON text), for the `on(type)` handlers; the drivers
/// hand it to handlers decoded (the native client as a typed `Received<T>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Message type.
    pub kind: String,
    /// Raw JSON payload, if any.
    pub payload: Option<String>,
    /// Sender, as registered by the server (`None`: the server itself).
    pub source: Option<String>,
    /// The sender's id; present when the message can be answered.
    pub id: Option<u64>,
}

impl InboundMessage {
    /// Where a response to this message goes, if it can be answered.
    pub fn reply_target(&self) -> Option<ReplyTarget> {
        Some(ReplyTarget {
            kind: self.kind.clone(),
            re: self.id?,
            source: self.source.clone(),
        })
    }
}

/// What [`ClientCore::respond`] needs to address a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    /// The answered message's type (responses carry it too).
    pub kind: String,
    /// The answered message's id.
    pub re: u64,
    /// The answered message's sender (`None`: the server).
    pub source: Option<String>,
}

/// A response no request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response's type.
    pub kind: String,
    /// The id of our message it answers.
    pub re: u64,
    /// The responder.
    pub source: Option<String>,
    /// The payload (raw JSON), or the responder's error.
    pub result: Result<Option<String>, RemoteError>,
}

/// A message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outgoing<'a> {
    /// Message type: non-empty, not starting with `~`.
    pub kind: &'a str,
    /// Payload as JSON text (validated).
    pub payload: Option<&'a str>,
    /// Deliver to this source only.
    pub to: Option<&'a str>,
    /// Fail with [`Error::Expired`] if it could not be sent within this long.
    pub ttl: Option<Duration>,
}

/// The connection state, as `WebSocket.readyState` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// Connecting, handshaking, or waiting to reconnect.
    Connecting = 0,
    /// Open: messages flow.
    Open = 1,
    /// Closing gracefully.
    Closing = 2,
    /// Closed (by the application, by a stop code, or retries exhausted), or not started.
    Closed = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected and not trying: `start_closed`, closed, or given up.
    Closed,
    /// Waiting out the backoff before the next attempt.
    Waiting { until: Instant },
    /// The transport is being opened (`opened` false) or the hello awaits the welcome.
    Connecting {
        transport: TransportId,
        deadline: Instant,
        opened: bool,
    },
    /// Open for traffic.
    Open {
        transport: TransportId,
        since: Instant,
        last_heard: Instant,
        next_ping: Instant,
    },
    /// The application asked to close; waiting for in-flight messages to be acknowledged.
    Closing {
        transport: TransportId,
        deadline: Instant,
        code: u16,
    },
}

/// The sans-IO client: every decision of a wsrelay client, no I/O, no clock.
///
/// Inputs are application commands ([`send`](Self::send), [`request`](Self::request),
/// [`respond`](Self::respond), [`close`](Self::close), [`reconnect`](Self::reconnect)),
/// transport events (`handle_opened`, `handle_frame`, `handle_closed`, `handle_error`) and
/// [`handle_timeout`](Self::handle_timeout); each takes the current time. After each input the
/// driver drains [`poll_output`](Self::poll_output) and arms a timer for
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ClientCore {
    options: Options,
    rng: Rng,
    session: String,
    /// This client's public name for its connection attempts (`attempt=INSTANCE.N` in the
    /// URL): unlike the session token it is no secret, and it lets the server order the
    /// attempts of one client.
    instance: String,
    state: State,
    /// Why sends are refused: set by `close` and by giving up, cleared by `reconnect`.
    /// `None` in `State::Closed` means "not started" (`start_closed`): sends are queued.
    stopped: Option<Error>,
    close_reason: String,
    last_transport: u64,
    retry_count: u32,
    outbox: Outbox,
    requests: Deadlines,
    received: u64,
    acknowledged: u64,
    /// Bytes of the reliable frames received since the last acknowledgement.
    unacked_bytes: usize,
    ack_due: Option<Instant>,
    /// A welcome was received before: a fresh session now means the old one was lost.
    had_session: bool,
    /// The session instance the received count is in (the last welcome's `sid`).
    sid: Option<String>,
    /// Bytes of messages the server lets this client have in flight (its welcome's `window`).
    window: Option<usize>,
    /// The server's rate limit (its welcome's `rate` and `burst`), kept to with a bucket of
    /// half the server's burst: the other half absorbs frames that bunch up on the way.
    pace: Option<TokenBucket>,
    /// Messages wait for the pacing bucket: send more at this time.
    paced: Option<Instant>,
    /// The latest time an input carried (for inputs that carry none, such as `respond`).
    clock: Instant,
    /// Pending requests addressed to one client, and that client: only its response settles
    /// them (any other is reported and ignored).
    targets: Vec<(u64, String)>,
    /// Outputs not yet polled are `outputs[polled..]`. A `Vec` read through a cursor rather
    /// than a `VecDeque` (whose code is kilobytes of wasm): the driver empties it after every
    /// input, and it is cleared each time it has been read to the end.
    outputs: Vec<Option<Output>>,
    polled: usize,
    round_trips: RoundTrips,
    /// Whether a connection ever opened: later opens are reconnects.
    opened_once: bool,
    reconnects: u64,
    acknowledged_messages: u64,
    failed_messages: u64,
}

/// What a message fails with when the client gives up for `error`: `error` itself when it was
/// never sent; when it was (and not acknowledged), it may have been delivered, and says so.
fn failure(error: &Error, sent: bool) -> Error {
    if sent {
        Error::Unconfirmed(alloc::boxed::Box::new(error.clone()))
    } else {
        error.clone()
    }
}

/// `len` random letters and digits.
fn random_name(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut name = String::with_capacity(len);
    for _ in 0..len {
        name.push(char::from(ALPHABET[(rng.next_u64() % 62) as usize]));
    }
    name
}

/// Close code for a connection the client abandons itself (heartbeat or handshake timeout,
/// protocol violation, explicit reconnect). Browsers only let pages send 1000 and 3000-4999.
const CLIENT_ABANDONED: u16 = 4000;
/// Close code reported when a transport ended without a close frame.
const ABNORMAL: u16 = 1006;

impl ClientCore {
    /// A client with `options`, seeded for jitter and the session token. Unless
    /// `start_closed`, it asks to connect at once (drain [`poll_output`](Self::poll_output)).
    pub fn new(options: Options, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let session = random_name(&mut rng, 22);
        // From a generator of its own, so that the backoff's jitter stays what the seed gave
        // before attempts had names.
        let instance = random_name(&mut Rng::new(seed ^ 0x6174_7465_6d70_7473), 12);
        let start_closed = options.start_closed;
        let mut core = ClientCore {
            options,
            rng,
            session,
            instance,
            state: State::Closed,
            stopped: None,
            close_reason: String::new(),
            last_transport: 0,
            retry_count: 0,
            outbox: Outbox::new(),
            requests: Deadlines::default(),
            received: 0,
            acknowledged: 0,
            unacked_bytes: 0,
            ack_due: None,
            had_session: false,
            sid: None,
            window: None,
            pace: None,
            paced: None,
            clock: now,
            targets: Vec::new(),
            outputs: Vec::new(),
            polled: 0,
            round_trips: RoundTrips::default(),
            opened_once: false,
            reconnects: 0,
            acknowledged_messages: 0,
            failed_messages: 0,
        };
        if !start_closed {
            core.connect(now);
        }
        core
    }

    // ---- getters ----

    /// The session token sent in every hello.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The name of this client's connection attempt `transport`, `INSTANCE.N`: the URL's
    /// `attempt` parameter ([`attempt_url`](super::attempt_url)), by which the server orders
    /// the attempts of one client (PROTOCOL.md section 1). Attempts are numbered upwards.
    pub fn attempt(&self, transport: TransportId) -> String {
        let mut name = String::with_capacity(self.instance.len() + 8);
        name.push_str(&self.instance);
        name.push('.');
        push_u64(&mut name, transport.0);
        name
    }

    /// The state, as `WebSocket.readyState` names it.
    pub fn ready_state(&self) -> ReadyState {
        match self.state {
            State::Closed => ReadyState::Closed,
            State::Waiting { .. } | State::Connecting { .. } => ReadyState::Connecting,
            State::Open { .. } => ReadyState::Open,
            State::Closing { .. } => ReadyState::Closing,
        }
    }

    /// Messages waiting to be sent or acknowledged.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Failed attempts since the last connection that stayed up `min_uptime`.
    pub fn retry_count(&self) -> u32 {
        self.retry_count
    }

    /// Requests waiting for their response.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Round-trip times, reconnects, retransmissions, the queue and message outcomes so far.
    pub fn stats(&self) -> Stats {
        Stats {
            rtt: self.round_trips.last(),
            smoothed_rtt: self.round_trips.smoothed(),
            reconnects: self.reconnects,
            retransmitted: self.outbox.retransmitted(),
            queued_messages: self.outbox.len(),
            queued_bytes: self.outbox.bytes(),
            acknowledged: self.acknowledged_messages,
            failed: self.failed_messages,
        }
    }

    // ---- outputs ----

    /// The next thing to do. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.get_mut(self.polled)?.take();
        self.polled += 1;
        if self.polled == self.outputs.len() {
            self.outputs.clear();
            self.polled = 0;
        }
        output
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            State::Closed => None,
            State::Waiting { until } => Some(until),
            State::Connecting { deadline, .. } | State::Closing { deadline, .. } => Some(deadline),
            State::Open {
                last_heard,
                next_ping,
                ..
            } => Some(next_ping.min(last_heard + self.options.heartbeat_timeout)),
        };
        [
            state,
            self.ack_due,
            self.requests.earliest(),
            self.outbox.next_expiry(),
            self.paced,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- application commands ----

    /// Queues a message; it is sent at once when open, or on the next connection. Its outcome
    /// arrives later as [`Event::Delivered`] or [`Event::Failed`] with the returned id.
    pub fn send(&mut self, now: Instant, message: Outgoing<'_>) -> Result<u64, Error> {
        self.enqueue_outgoing(now, message, Settles::OnAck)
    }

    /// Sends a request; its outcome is [`Event::Reply`] or [`Event::Failed`] with the returned
    /// id. The timeout (default `request_timeout`) runs from now, queueing included.
    pub fn request(
        &mut self,
        now: Instant,
        message: Outgoing<'_>,
        timeout: Option<Duration>,
    ) -> Result<u64, Error> {
        let to = message.to;
        let id = self.enqueue_outgoing(now, message, Settles::OnReply)?;
        self.requests
            .insert(id, now + timeout.unwrap_or(self.options.request_timeout));
        if let Some(to) = to {
            // Entries of requests that ended otherwise (timeout, failure) go in batches.
            if self.targets.len() > 2 * self.requests.len() + 16 {
                let requests = &self.requests;
                self.targets.retain(|(id, _)| requests.contains(*id));
            }
            self.targets.push((id, to.to_owned()));
        }
        Ok(id)
    }

    /// Answers a received message with a handler's result (`Ok` payload as JSON text, or the
    /// handler's error). Reliable like a send: its outcome is `Delivered` or `Failed`.
    pub fn respond(
        &mut self,
        target: &ReplyTarget,
        result: Result<&str, RemoteError>,
    ) -> Result<u64, Error> {
        let (payload, error) = match result {
            Ok(payload) => (Some(payload), None),
            Err(error) => (None, Some(error)),
        };
        let response = Message {
            kind: target.kind.as_str().into(),
            id: None,
            re: Some(target.re),
            to: target.source.as_deref().map(Into::into),
            source: None,
            payload,
            error,
        };
        self.enqueue(response, None, Settles::OnAck)
    }

    /// Carries out what the application's handler of the received message `kind` produced,
    /// the same way in every driver (`PROTOCOL.md` section 6): a payload or an error is sent
    /// back to `target` (the message's [`reply_target`](InboundMessage::reply_target)); an
    /// error is also reported as [`Error::Handler`]; a value for a message that has no target
    /// (no `id`) is reported as [`Error::Unanswerable`] rather than dropped in silence; and an
    /// answer the client can no longer send (closed, queue full) is reported with its reason.
    pub fn answer(&mut self, kind: &str, target: Option<&ReplyTarget>, reply: Reply) {
        let result = match &reply {
            Reply::None => return,
            Reply::Payload(payload) => Ok(payload.as_str()),
            Reply::Error(error) => {
                self.event(Event::Error(Error::Handler {
                    kind: kind.to_owned(),
                    error: error.clone(),
                }));
                Err(error.clone())
            }
        };
        let Some(target) = target else {
            if result.is_ok() {
                self.event(Event::Error(Error::Unanswerable {
                    kind: kind.to_owned(),
                }));
            }
            return;
        };
        if let Err(error) = self.respond(target, result) {
            self.event(Event::Error(error));
        }
    }

    /// Closes gracefully: no new messages are accepted, messages in flight get up to
    /// `close_timeout` to be acknowledged, then the transport closes with `code` and `reason`.
    /// Whatever is still unacknowledged then fails with [`Error::Closed`], as do pending requests.
    pub fn close(&mut self, now: Instant, code: u16, reason: &str) {
        self.close_reason = reason.to_owned();
        match self.state {
            State::Open { transport, .. } if !self.outbox.is_empty() => {
                let deadline = now + self.options.close_timeout;
                self.state = State::Closing {
                    transport,
                    deadline,
                    code,
                };
                self.fail_requests(&Error::Closed);
            }
            State::Closing { .. } => {}
            State::Closed if self.stopped.is_some() => {}
            _ => self.finish_close(code, true),
        }
    }

    /// Connects now: from closed (or `start_closed`), or replacing the current connection.
    /// The retry count starts again from zero.
    pub fn reconnect(&mut self, now: Instant) {
        if let Some(transport) = self.transport() {
            self.abandon(transport, CLIENT_ABANDONED, "reconnect");
            self.event(Event::Close {
                code: CLIENT_ABANDONED,
                reason: "reconnect".to_owned(),
                reconnecting: true,
            });
        }
        self.retry_count = 0;
        self.stopped = None;
        self.connect(now);
    }

    // ---- transport events ----

    /// The transport `transport` opened: send the hello.
    pub fn handle_opened(&mut self, now: Instant, transport: TransportId) {
        if let State::Connecting {
            transport: current,
            ref mut opened,
            ..
        } = self.state
        {
            if current == transport {
                *opened = true;
                // The hello and its welcome are the first round trip measured.
                self.round_trips.sent(now);
                let hello = Frame::Hello {
                    version: VERSION,
                    session: self.session.as_str().into(),
                    ack: self.received,
                    sid: self.sid.as_deref().map(Into::into),
                };
                self.output(Output::Transmit(hello.encode()));
            }
        }
    }

    /// A text frame arrived on `transport`.
    pub fn handle_frame(&mut self, now: Instant, transport: TransportId, text: &str) {
        if self.transport() != Some(transport) {
            return;
        }
        self.clock = self.clock.max(now);
        if let State::Open {
            ref mut last_heard, ..
        } = self.state
        {
            *last_heard = now;
        }
        let frame = match Frame::decode(text) {
            Ok(frame) => frame,
            Err(error) => {
                // Not `to_string()`: the formatting machinery is kilobytes of wasm.
                let mut message = String::from(error.code.as_str());
                message.push_str(": ");
                message.push_str(&error.message);
                self.event(Event::Error(Error::Protocol(message)));
                return;
            }
        };
        match frame {
            Frame::Welcome(welcome) => self.handle_welcome(now, transport, &welcome),
            _ if matches!(self.state, State::Connecting { .. }) => {
                self.event(Event::Error(Error::Protocol(
                    "frame before the welcome".into(),
                )));
            }
            Frame::Message(message) => {
                self.count_received(now, text.len());
                self.handle_message(message);
            }
            Frame::Error(report) => {
                self.count_received(now, text.len());
                self.handle_error_report(report);
            }
            Frame::Ack { ack } => self.handle_ack(ack),
            Frame::Ping => self.output(Output::Transmit(Frame::Pong.encode())),
            Frame::Pong => self.round_trips.answered(now),
            Frame::Hello { .. } => {
                self.event(Event::Error(Error::Protocol(
                    "hello from the server".into(),
                )));
            }
        }
    }

    /// A binary frame arrived on `transport`. wsrelay speaks text frames only: it is reported
    /// as [`Error::Protocol`] and otherwise ignored (it still shows the connection is alive).
    pub fn handle_binary(&mut self, now: Instant, transport: TransportId) {
        if self.transport() != Some(transport) {
            return;
        }
        if let State::Open {
            ref mut last_heard, ..
        } = self.state
        {
            *last_heard = now;
        }
        self.event(Event::Error(Error::Protocol(
            "binary frame from the server".into(),
        )));
    }

    /// The transport `transport` closed with `code` and `reason`.
    pub fn handle_closed(&mut self, now: Instant, transport: TransportId, code: u16, reason: &str) {
        if self.transport() == Some(transport) {
            self.connection_lost(now, code, reason);
        }
    }

    /// The transport `transport` failed; it is treated as closed abnormally.
    pub fn handle_error(&mut self, now: Instant, transport: TransportId, message: &str) {
        if self.transport() == Some(transport) {
            self.event(Event::Error(Error::Transport(message.to_owned())));
            self.abandon(transport, CLIENT_ABANDONED, "transport error");
            self.connection_lost(now, ABNORMAL, message);
        }
    }

    /// Time has come: run whatever is due at `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.paced.is_some_and(|at| at <= now) {
            self.paced = None;
            self.send_more();
        }
        match self.state {
            State::Waiting { until } if until <= now => self.connect(now),
            State::Connecting {
                transport,
                deadline,
                ..
            } if deadline <= now => {
                self.abandon(transport, CLIENT_ABANDONED, "connection timeout");
                self.connection_lost(now, ABNORMAL, "connection timeout");
            }
            State::Open {
                transport,
                last_heard,
                next_ping,
                ..
            } => {
                if last_heard + self.options.heartbeat_timeout <= now {
                    self.abandon(transport, CLIENT_ABANDONED, "heartbeat timeout");
                    self.connection_lost(now, ABNORMAL, "heartbeat timeout");
                } else if next_ping <= now {
                    self.round_trips.sent(now);
                    // The server counts pings against its rate limit too.
                    if let Some(pace) = &mut self.pace {
                        pace.refill(now);
                        pace.spend(1);
                    }
                    self.output(Output::Transmit(Frame::Ping.encode()));
                    if let State::Open {
                        ref mut next_ping, ..
                    } = self.state
                    {
                        *next_ping = now + self.options.heartbeat_interval;
                    }
                }
            }
            State::Closing { deadline, code, .. } if deadline <= now => {
                self.finish_close(code, true)
            }
            _ => {}
        }
        if self.ack_due.is_some_and(|due| due <= now) {
            self.send_ack();
        }
        while let Some(id) = self.requests.pop_due(now) {
            self.outbox.remove_untransmitted(id);
            self.fail(id, Error::Timeout);
        }
        while let Some(entry) = self.outbox.pop_expired(now) {
            self.requests.remove(entry.id);
            self.fail(entry.id, Error::Expired);
        }
    }

    // ---- internals ----

    fn output(&mut self, output: Output) {
        self.outputs.push(Some(output));
    }

    fn event(&mut self, event: Event) {
        self.output(Output::Event(event));
    }

    /// Message `id` failed for good: its one outcome.
    fn fail(&mut self, id: u64, error: Error) {
        self.failed_messages += 1;
        self.event(Event::Failed { id, error });
    }

    fn transport(&self) -> Option<TransportId> {
        match self.state {
            State::Connecting { transport, .. }
            | State::Open { transport, .. }
            | State::Closing { transport, .. } => Some(transport),
            State::Closed | State::Waiting { .. } => None,
        }
    }

    /// Checks and queues an application message (send, request), transmitting it when open.
    fn enqueue_outgoing(
        &mut self,
        now: Instant,
        message: Outgoing<'_>,
        settles: Settles,
    ) -> Result<u64, Error> {
        self.clock = self.clock.max(now);
        if message.kind.is_empty() || message.kind.starts_with(RESERVED_PREFIX) {
            return Err(Error::InvalidType);
        }
        let message_frame = Message {
            kind: message.kind.into(),
            id: None,
            re: None,
            to: message.to.map(Into::into),
            source: None,
            payload: message.payload,
            error: None,
        };
        self.enqueue(message_frame, message.ttl.map(|ttl| now + ttl), settles)
    }

    /// Queues `message` under the next id, transmitting it when open.
    fn enqueue(
        &mut self,
        mut message: Message<'_>,
        expires: Option<Instant>,
        settles: Settles,
    ) -> Result<u64, Error> {
        if let Some(error) = &self.stopped {
            return Err(error.clone());
        }
        if let State::Closing { .. } = self.state {
            return Err(Error::Closed);
        }
        if let Some(payload) = message.payload {
            json::validate(payload).map_err(|_| Error::InvalidPayload)?;
        }
        let encode = |id| {
            message.id = Some(id);
            message.encode()
        };
        let id = self.outbox.push(&self.options, encode, expires, settles)?;
        self.send_more();
        Ok(id)
    }

    fn connect(&mut self, now: Instant) {
        self.last_transport += 1;
        let transport = TransportId(self.last_transport);
        let deadline = now + self.options.connection_timeout;
        self.state = State::Connecting {
            transport,
            deadline,
            opened: false,
        };
        self.output(Output::Connect(transport));
    }

    /// Stops using `transport` and asks the driver to close it.
    fn abandon(&mut self, transport: TransportId, code: u16, reason: &str) {
        self.output(Output::CloseTransport {
            transport,
            code,
            reason: reason.to_owned(),
        });
    }

    fn handle_welcome(&mut self, now: Instant, transport: TransportId, welcome: &Welcome<'_>) {
        let Welcome {
            version,
            ref session,
            ack,
            resumed,
            lost,
            window,
            ref sid,
            rate,
            burst,
        } = *welcome;
        if !matches!(self.state, State::Connecting { opened: true, .. }) {
            self.event(Event::Error(Error::Protocol("unexpected welcome".into())));
            return;
        }
        if version != VERSION || *session != self.session {
            let reason = if version != VERSION {
                "unsupported version"
            } else {
                "wrong session"
            };
            self.abandon(transport, CLIENT_ABANDONED, reason);
            self.connection_lost(now, 1002, reason);
            return;
        }
        let lost_session = !resumed && self.had_session;
        if !resumed {
            self.received = 0;
            if lost_session {
                self.event(Event::SessionLost { lost });
            }
        }
        self.had_session = true;
        self.sid = sid.as_deref().map(str::to_owned);
        self.window = window.map(|window| usize::try_from(window).unwrap_or(usize::MAX));
        self.pace = rate.map(|rate| TokenBucket::new(rate, burst.unwrap_or(1) / 2, now));
        self.paced = None;
        // The hello acknowledged everything received (a resumed session), or the count
        // starts again (a fresh one).
        self.acknowledged = self.received;
        self.unacked_bytes = 0;
        self.ack_due = None;
        self.round_trips.answered(now);
        if core::mem::replace(&mut self.opened_once, true) {
            self.reconnects += 1;
        }
        self.state = State::Open {
            transport,
            since: now,
            last_heard: now,
            next_ping: now + self.options.heartbeat_interval,
        };
        self.event(Event::Open { resumed });
        self.outbox.restart();
        if lost_session {
            // What the lost session had been sent and had not acknowledged may have been
            // consumed: sending it again could deliver it twice, and not sending it would leave
            // its sender guessing. It fails, saying so.
            self.settle_acked(ack);
            for entry in self.outbox.take_transmitted() {
                // A request that already timed out had its outcome: never a second one.
                let waiting = self.requests.remove(entry.id) || entry.settles == Settles::OnAck;
                if waiting {
                    self.fail(entry.id, Error::SessionLost);
                }
            }
        }
        self.handle_ack(ack);
    }

    /// Settles every message up to `ack`: sends and responses are delivered.
    fn settle_acked(&mut self, ack: u64) {
        for (id, settles) in self.outbox.settle_through(ack) {
            self.acknowledged_messages += 1;
            if settles == Settles::OnAck {
                self.event(Event::Delivered { id });
            }
        }
    }

    /// Transmits queued messages while open, as far as the server's window and rate limit
    /// allow; when the rate limit stops it, again once a token is back (`paced`).
    fn send_more(&mut self) {
        if let State::Open { .. } | State::Closing { .. } = self.state {
            let budget = match &mut self.pace {
                Some(pace) => {
                    pace.refill(self.clock);
                    usize::try_from(pace.tokens()).unwrap_or(usize::MAX)
                }
                None => usize::MAX,
            };
            let outputs = &mut self.outputs;
            let (sent, more) = self.outbox.send_more(self.window, budget, |frame| {
                outputs.push(Some(Output::Transmit(frame)));
            });
            if let Some(pace) = &mut self.pace {
                pace.spend(sent as u64);
                if more && self.paced.is_none() {
                    self.paced = Some(pace.next_token());
                }
            }
        }
    }

    /// One more reliable frame of `bytes` received: acknowledged at once past `ack_every`
    /// frames or `ack_bytes` bytes (so the server's flow control never waits on a lazy
    /// acknowledgement), else within `ack_delay`.
    fn count_received(&mut self, now: Instant, bytes: usize) {
        self.received += 1;
        self.unacked_bytes = self.unacked_bytes.saturating_add(bytes);
        if self.received - self.acknowledged >= self.options.ack_every
            || self.unacked_bytes >= self.options.ack_bytes
        {
            self.send_ack();
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.options.ack_delay);
        }
    }

    fn send_ack(&mut self) {
        self.ack_due = None;
        if matches!(self.state, State::Open { .. } | State::Closing { .. })
            && self.received > self.acknowledged
        {
            self.acknowledged = self.received;
            self.unacked_bytes = 0;
            let ack = Frame::Ack { ack: self.received };
            self.output(Output::Transmit(ack.encode()));
        }
    }

    fn handle_message(&mut self, message: Message<'_>) {
        let result = match message.error {
            Some(error) => Err(error),
            None => Ok(message.payload.map(str::to_owned)),
        };
        let source = message.source.map(Into::into);
        let Some(re) = message.re else {
            self.event(Event::Message(InboundMessage {
                kind: message.kind.into_owned(),
                payload: result.ok().flatten(),
                source,
                id: message.id,
            }));
            return;
        };
        if let Some(index) = self.targets.iter().position(|(id, _)| *id == re) {
            // Put to one client: nobody else may answer it (the server refuses such answers
            // too, but a client does not rely on a server it cannot see).
            if source.as_deref() != self.targets.get(index).map(|(_, to)| to.as_str()) {
                let message = "a response from another client than the one asked".into();
                self.event(Event::Error(Error::Protocol(message)));
                return;
            }
            self.targets.swap_remove(index);
        }
        if self.requests.remove(re) {
            self.event(Event::Reply {
                request: re,
                source,
                result,
            });
        } else {
            let kind = message.kind.into_owned();
            self.event(Event::Response(Response {
                kind,
                re,
                source,
                result,
            }));
        }
    }

    fn handle_error_report(&mut self, report: ErrorReport) {
        let error = Error::Remote(report.error);
        let Some(id) = report.re else {
            self.event(Event::Error(error));
            return;
        };
        // A request whose caller already got its outcome (a timeout) no longer waits: the
        // error is then only reported, never a second outcome for the same id.
        let entry = self.outbox.remove(id);
        let waiting =
            self.requests.remove(id) || entry.is_some_and(|entry| entry.settles == Settles::OnAck);
        if waiting {
            self.fail(id, error);
        } else {
            self.event(Event::Error(error));
        }
        self.check_closing_done();
    }

    fn handle_ack(&mut self, ack: u64) {
        self.settle_acked(ack);
        self.send_more();
        self.check_closing_done();
    }

    fn check_closing_done(&mut self) {
        if let State::Closing { code, .. } = self.state {
            if self.outbox.is_empty() {
                self.finish_close(code, true);
            }
        }
    }

    /// Pending requests fail with `error`; one that was sent already may have been delivered,
    /// and fails as [`Error::Unconfirmed`] instead.
    fn fail_requests(&mut self, error: &Error) {
        for (id, _) in self.requests.drain() {
            let sent = self.outbox.remove_untransmitted(id).is_none();
            self.fail(id, failure(error, sent));
        }
    }

    /// Everything still pending fails with `error`: the client will not send it. What it had
    /// sent and the server had not acknowledged may have been delivered, and says so
    /// ([`Error::Unconfirmed`]): only a message that never left fails with `error` itself.
    fn fail_everything(&mut self, error: &Error) {
        self.fail_requests(error);
        for entry in self.outbox.drain() {
            // Requests had their outcome above (or when they timed out): never a second one.
            if entry.settles == Settles::OnAck {
                self.fail(entry.id, failure(error, entry.transmitted));
            }
        }
        self.ack_due = None;
    }

    /// Ends in `Closed` at the application's request, closing the transport if there is one
    /// and it is still `alive`.
    fn finish_close(&mut self, code: u16, alive: bool) {
        let reason = core::mem::take(&mut self.close_reason);
        if let Some(transport) = self.transport().filter(|_| alive) {
            // What was received is acknowledged before the close, not left for the delay:
            // the server settles it rather than keeping it for a resume.
            self.send_ack();
            self.abandon(transport, code, &reason);
        }
        self.state = State::Closed;
        self.stopped = Some(Error::Closed);
        self.fail_everything(&Error::Closed);
        self.event(Event::Close {
            code,
            reason,
            reconnecting: false,
        });
    }

    /// The current transport is gone (closed, failed, timed out): decide what comes next.
    fn connection_lost(&mut self, now: Instant, code: u16, reason: &str) {
        self.round_trips.lost();
        let was_stable = match self.state {
            State::Closing { code, .. } => {
                self.finish_close(code, false);
                return;
            }
            State::Open { since, .. } => {
                now.saturating_duration_since(since) >= self.options.min_uptime
            }
            _ => false,
        };
        if was_stable {
            self.retry_count = 0;
        }
        let give_up = if self.options.stop_codes.contains(&code) {
            Some(Error::Rejected {
                code,
                reason: reason.to_owned(),
            })
        } else if self
            .options
            .max_retries
            .is_some_and(|max| self.retry_count >= max)
        {
            Some(Error::RetriesExhausted {
                attempts: self.retry_count,
            })
        } else {
            None
        };
        self.event(Event::Close {
            code,
            reason: reason.to_owned(),
            reconnecting: give_up.is_none(),
        });
        if let Some(error) = give_up {
            self.state = State::Closed;
            self.stopped = Some(error.clone());
            self.event(Event::Error(error.clone()));
            self.fail_everything(&error);
            return;
        }
        self.retry_count += 1;
        let delay = backoff::next_delay(&self.options, self.retry_count, &mut self.rng);
        self.state = State::Waiting { until: now + delay };
        self.event(Event::Reconnecting {
            attempt: self.retry_count,
            delay,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn drain(core: &mut ClientCore) -> Vec<Output> {
        core::iter::from_fn(|| core.poll_output()).collect()
    }

    fn events(core: &mut ClientCore) -> Vec<Event> {
        drain(core)
            .into_iter()
            .filter_map(|output| match output {
                Output::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// The welcome of `core`'s session, with the server's count `ack`.
    fn welcome(core: &ClientCore, ack: u64, resumed: bool) -> String {
        Frame::Welcome(Welcome {
            version: VERSION,
            session: core.session().to_owned().into(),
            ack,
            resumed,
            lost: None,
            window: None,
            sid: None,
            rate: None,
            burst: None,
        })
        .encode()
    }

    /// A core opened on transport 1 at `at(10)` whose welcome came at `at(25)`.
    fn open_core() -> ClientCore {
        let mut core = ClientCore::new(Options::default(), 1, at(0));
        core.handle_opened(at(10), TransportId(1));
        let welcome = welcome(&core, 0, false);
        core.handle_frame(at(25), TransportId(1), &welcome);
        drain(&mut core);
        core
    }

    fn transmitted(outputs: &[Output]) -> Vec<&str> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Transmit(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn handler_answers_go_back_or_are_reported() {
        let mut core = open_core();
        let target = ReplyTarget {
            kind: "get-time".into(),
            re: 4,
            source: Some("bob".into()),
        };
        core.answer("get-time", Some(&target), Reply::Payload("42".into()));
        let outputs = drain(&mut core);
        assert_eq!(
            transmitted(&outputs),
            [r#"{"type":"get-time","id":1,"re":4,"to":"bob","payload":42}"#]
        );

        core.answer(
            "get-time",
            Some(&target),
            Reply::error("handler_error", "boom"),
        );
        let outputs = drain(&mut core);
        assert_eq!(transmitted(&outputs).len(), 1, "the failure is answered");
        assert!(outputs.iter().any(|output| matches!(output,
            Output::Event(Event::Error(Error::Handler { kind, error }))
                if kind == "get-time" && error.message == "boom")));

        core.answer("get-time", Some(&target), Reply::None);
        assert_eq!(drain(&mut core), [], "nothing to say, nothing sent");

        // A message without an id cannot be answered: the value is reported, never dropped.
        core.answer("announcement", None, Reply::Payload("1".into()));
        assert_eq!(
            events(&mut core),
            [Event::Error(Error::Unanswerable {
                kind: "announcement".into()
            })]
        );
        core.answer("announcement", None, Reply::None);
        assert_eq!(drain(&mut core), []);

        // An answer the client can no longer send says why.
        core.close(at(30), 1000, "");
        drain(&mut core);
        core.answer("get-time", Some(&target), Reply::Payload("1".into()));
        assert_eq!(events(&mut core), [Event::Error(Error::Closed)]);
    }

    #[test]
    fn stats_count_round_trips_reconnects_and_outcomes() {
        let mut core = open_core();
        let stats = core.stats();
        assert_eq!(
            stats.rtt,
            Some(Duration::from_millis(15)),
            "hello to welcome"
        );
        assert_eq!(stats.reconnects, 0);

        let chat = Outgoing {
            kind: "chat",
            payload: Some("1"),
            ..Outgoing::default()
        };
        core.send(at(30), chat).expect("queued");
        core.send(at(30), chat).expect("queued");
        drain(&mut core);
        let stats = core.stats();
        assert_eq!((stats.queued_messages, stats.retransmitted), (2, 0));
        assert!(stats.queued_bytes > 20);

        // The heartbeat's ping and pong are the next sample.
        let ping_at = core.poll_timeout().expect("the next ping");
        core.handle_timeout(ping_at);
        assert_eq!(transmitted(&drain(&mut core)), [r#"{"type":"~ping"}"#]);
        core.handle_frame(
            ping_at + Duration::from_millis(7),
            TransportId(1),
            r#"{"type":"~pong"}"#,
        );
        core.handle_frame(
            ping_at + Duration::from_millis(8),
            TransportId(1),
            r#"{"type":"~ack","ack":1}"#,
        );
        drain(&mut core);
        let stats = core.stats();
        assert_eq!(stats.rtt, Some(Duration::from_millis(7)));
        assert_eq!(
            stats.smoothed_rtt,
            Some(Duration::from_millis(14)),
            "(15*7+7)/8"
        );
        assert_eq!((stats.acknowledged, stats.queued_messages), (1, 1));

        // Lost and back: the unacknowledged message is sent again.
        let now = ping_at + Duration::from_millis(10);
        core.handle_closed(now, TransportId(1), 1001, "going away");
        let retry = core.poll_timeout().expect("a reconnect");
        core.handle_timeout(retry);
        core.handle_opened(retry, TransportId(2));
        let welcome = welcome(&core, 1, true);
        core.handle_frame(retry, TransportId(2), &welcome);
        drain(&mut core);
        let stats = core.stats();
        assert_eq!((stats.reconnects, stats.retransmitted), (1, 1));

        core.close(retry, 1000, "");
        core.handle_timeout(retry + Duration::from_secs(5));
        drain(&mut core);
        assert_eq!(
            core.stats().failed,
            1,
            "the unacknowledged one failed as closed"
        );
    }

    #[test]
    fn only_the_addressee_of_a_request_settles_it() {
        let mut core = open_core();
        let ask = Outgoing {
            kind: "get-time",
            to: Some("bob"),
            ..Outgoing::default()
        };
        let id = core.request(at(30), ask, None).expect("sent");
        drain(&mut core);
        let answer = |source: &str| {
            let mut text = String::from(r#"{"type":"get-time","id":9,"re":"#);
            text.push_str(&id.to_string());
            text.push_str(r#","source":""#);
            text.push_str(source);
            text.push_str(r#"","payload":1}"#);
            text
        };
        core.handle_frame(at(40), TransportId(1), &answer("mallory"));
        let refused = events(&mut core);
        assert!(
            matches!(&refused[..], [Event::Error(Error::Protocol(m))] if m.contains("another client")),
            "{refused:?}"
        );
        assert_eq!(core.pending_requests(), 1);
        core.handle_frame(at(41), TransportId(1), &answer("bob"));
        assert!(events(&mut core)
            .iter()
            .any(|e| matches!(e, Event::Reply { request, .. } if request == &id)));
        assert_eq!(core.pending_requests(), 0);
    }

    /// A relayed chat message whose frame is `size` bytes long.
    fn chat_frame(size: usize) -> String {
        let head = r#"{"type":"chat","id":1,"source":"bob","payload":""#;
        let tail = r#""}"#;
        let mut text = String::from(head);
        text.extend(core::iter::repeat_n('x', size - head.len() - tail.len()));
        text.push_str(tail);
        assert_eq!(text.len(), size);
        text
    }

    fn ack_frame(count: u64) -> String {
        Frame::Ack { ack: count }.encode()
    }

    #[test]
    fn received_frames_are_acknowledged_after_the_delay() {
        let mut core = open_core();
        let delay = Options::default().ack_delay;
        assert_eq!(delay, Duration::from_millis(200));
        core.handle_frame(at(100), TransportId(1), &chat_frame(60));
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
        assert_eq!(core.poll_timeout(), Some(at(100) + delay));
        // A second frame within the delay rides on the first one's acknowledgement.
        core.handle_frame(at(150), TransportId(1), &chat_frame(60));
        assert_eq!(core.poll_timeout(), Some(at(100) + delay));
        core.handle_timeout(at(299));
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
        core.handle_timeout(at(100) + delay);
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(2)]);
        assert!(
            core.poll_timeout() > Some(at(100) + delay),
            "nothing more due"
        );
        // Control frames are not counted: nothing to acknowledge.
        core.handle_frame(at(400), TransportId(1), r#"{"type":"~pong"}"#);
        assert_eq!(
            core.poll_timeout(),
            Some(at(25) + core.options.heartbeat_interval)
        );
        core.handle_frame(at(500), TransportId(1), &chat_frame(60));
        core.handle_timeout(at(500) + delay);
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(3)]);
    }

    #[test]
    fn ack_every_frames_are_acknowledged_at_once() {
        let mut core = open_core();
        let every = core.options.ack_every;
        for n in 1..every {
            core.handle_frame(at(30), TransportId(1), &chat_frame(60));
            assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0], "frame {n}");
        }
        core.handle_frame(at(31), TransportId(1), &chat_frame(60));
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(every)]);
        assert!(
            core.poll_timeout() > Some(at(31) + core.options.ack_delay),
            "no acknowledgement left due"
        );
        // The count starts again from the acknowledgement.
        for _ in 1..every {
            core.handle_frame(at(32), TransportId(1), &chat_frame(60));
        }
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
        core.handle_frame(at(33), TransportId(1), &chat_frame(60));
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(2 * every)]);
    }

    #[test]
    fn ack_bytes_of_frames_are_acknowledged_at_once() {
        let mut core = open_core();
        assert_eq!(core.options.ack_bytes, 64 << 10);
        // 10 000-byte frames: the seventh makes 70 000 bytes, past 65 536.
        for n in 1..7 {
            core.handle_frame(at(30), TransportId(1), &chat_frame(10_000));
            assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0], "frame {n}");
        }
        core.handle_frame(at(31), TransportId(1), &chat_frame(10_000));
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(7)]);
        // The bytes count again from the acknowledgement: one exactly at the threshold.
        core.handle_frame(at(32), TransportId(1), &chat_frame(40_000));
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
        core.handle_frame(at(33), TransportId(1), &chat_frame(25_536));
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(9)]);
        // An error report is a reliable frame too, counted in frames and bytes.
        core.options.ack_bytes = 50;
        core.handle_frame(
            at(34),
            TransportId(1),
            r#"{"type":"~error","code":"unknown_target","message":"no client with source \"bob\" here","re":77}"#,
        );
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(10)]);
        // 0: every reliable frame at once.
        core.options.ack_bytes = 0;
        core.handle_frame(at(35), TransportId(1), &chat_frame(60));
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(11)]);
    }

    #[test]
    fn a_graceful_close_acknowledges_what_was_received_first() {
        let mut core = open_core();
        core.handle_frame(at(30), TransportId(1), &chat_frame(60));
        drain(&mut core);
        core.close(at(40), 1000, "bye");
        let outputs = drain(&mut core);
        assert_eq!(transmitted(&outputs), [ack_frame(1)]);
        let ack_at = outputs
            .iter()
            .position(|o| matches!(o, Output::Transmit(_)));
        let close_at = outputs
            .iter()
            .position(|o| matches!(o, Output::CloseTransport { code: 1000, .. }));
        assert!(
            ack_at < close_at,
            "the ack goes before the close: {outputs:?}"
        );
        assert_eq!(core.poll_timeout(), None, "nothing left due");

        // Closing with messages in flight: frames received meanwhile are acknowledged
        // before the close too, even when the server's ack comes before the delay is up.
        let mut core = open_core();
        let chat = Outgoing {
            kind: "chat",
            payload: Some("1"),
            ..Outgoing::default()
        };
        core.send(at(30), chat).expect("sent");
        drain(&mut core);
        core.close(at(31), 1000, "");
        core.handle_frame(at(32), TransportId(1), &chat_frame(60));
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
        core.handle_frame(at(40), TransportId(1), &ack_frame(1));
        let outputs = drain(&mut core);
        assert_eq!(transmitted(&outputs), [ack_frame(1)]);
        assert!(outputs
            .iter()
            .any(|o| matches!(o, Output::CloseTransport { code: 1000, .. })));
    }

    #[test]
    fn the_hello_acknowledges_what_was_received() {
        let mut core = open_core();
        for _ in 0..5 {
            core.handle_frame(at(30), TransportId(1), &chat_frame(10_000));
        }
        drain(&mut core);
        core.handle_closed(at(40), TransportId(1), 1001, "going away");
        // The acknowledgement's timer may still fire first, to no effect.
        let retry = loop {
            let due = core.poll_timeout().expect("a reconnect");
            core.handle_timeout(due);
            if drain(&mut core).contains(&Output::Connect(TransportId(2))) {
                break due;
            }
        };
        core.handle_opened(retry, TransportId(2));
        let outputs = drain(&mut core);
        assert!(
            transmitted(&outputs)[0].contains(r#""ack":5"#),
            "{outputs:?}"
        );
        let welcome = welcome(&core, 0, true);
        core.handle_frame(retry, TransportId(2), &welcome);
        drain(&mut core);
        // The five frames were acknowledged by the hello: the count and the bytes start
        // again (two more 10 000-byte frames would otherwise pass 64 KiB).
        for _ in 0..2 {
            core.handle_frame(retry, TransportId(2), &chat_frame(10_000));
        }
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
        let due = core.poll_timeout().expect("the acknowledgement");
        core.handle_timeout(due);
        assert_eq!(transmitted(&drain(&mut core)), [ack_frame(7)]);
    }

    #[test]
    fn binary_frames_are_reported() {
        let mut core = open_core();
        core.handle_binary(at(30), TransportId(1));
        assert_eq!(
            events(&mut core),
            [Event::Error(Error::Protocol(
                "binary frame from the server".into()
            ))]
        );
        core.handle_binary(at(30), TransportId(9));
        assert_eq!(
            drain(&mut core),
            [],
            "a replaced transport's frames are ignored"
        );
    }
}
