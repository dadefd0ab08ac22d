//! The client state machine: one per `WebSocketClient`, whatever drives it. This file holds
//! its state, its getters, outputs and application commands; `transport.rs` the life of a
//! connection (opening, the welcome, losing it, closing), `traffic.rs` what flows on it.

#[cfg(feature = "persist")]
mod durable;
#[cfg(not(feature = "persist"))]
#[path = "durable_off.rs"]
mod durable;
#[cfg(test)]
mod tests;
mod traffic;
mod transport;

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

use super::events::*;

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
    /// Per room of the session (`""`: the log of everyone), where the client is in the room's
    /// log (`PROTOCOL.md` section 14.1): a frame at or below `received` is one it has. A list
    /// (a client is in a few rooms): a map's code is kilobytes of wasm.
    logs: Vec<(String, LogCursor)>,
    /// Log frames received since the last acknowledgement (counted with `received` towards
    /// `ack_every`).
    logs_unacked: u64,
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
    /// The message types the application has handlers for: a request of any other type is
    /// answered `no_handler` at once.
    handled: Vec<String>,
    /// The journal, for a client that persists its state (`restore`).
    #[cfg(feature = "persist")]
    durable: Option<alloc::boxed::Box<durable::Durable>>,
}

/// The client's place in one room's log: the last position received, and the last one it
/// told the server of.
#[derive(Debug, Default, Clone, Copy)]
struct LogCursor {
    received: u64,
    acknowledged: u64,
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
            logs: Vec::new(),
            logs_unacked: 0,
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
            handled: Vec::new(),
            #[cfg(feature = "persist")]
            durable: None,
        };
        if !start_closed {
            core.connect(now);
        }
        core
    }

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

    /// The next thing to do. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        let Some(output) = self.outputs.get_mut(self.polled) else {
            // Last, the journal lines of everything the input did, as one batch.
            return self.save();
        };
        let output = output.take();
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

    /// The application has (`true`) or no longer has a handler for messages of `kind`. A
    /// request of a type nobody handles is answered `no_handler` at once, so that its sender
    /// learns why instead of waiting for its timeout.
    pub fn set_handled(&mut self, kind: &str, handled: bool) {
        let known = self.handled.iter().position(|k| k == kind);
        match (known, handled) {
            (None, true) => self.handled.push(kind.to_owned()),
            (Some(index), false) => {
                self.handled.swap_remove(index);
            }
            _ => {}
        }
    }

    fn handles(&self, kind: &str) -> bool {
        self.handled.iter().any(|k| k == kind)
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
            room: None,
            payload,
            error,
            request: false,
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
}
