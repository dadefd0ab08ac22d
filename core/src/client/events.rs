//! What the client machine says to its driver and to the application: its outputs, events,
//! messages and states.

use alloc::string::String;
use core::time::Duration;

use super::Error;
use crate::protocol::RemoteError;

/// Names one transport (one WebSocket) the core asked for. Events of a transport the core has
/// since abandoned carry an old id and are ignored, so a late `close` from a replaced socket
/// cannot tear down its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransportId(pub u64);

/// What the core asks the driver to do, or tells the application. Drain with
/// [`ClientCore::poll_output`](super::ClientCore::poll_output) after every input.
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
    /// Store these journal lines (a client that persists its state, see
    /// [`ClientCore::restore`](super::ClientCore::restore)), then confirm with
    /// [`ClientCore::handle_saved`](super::ClientCore::handle_saved). The core transmits no
    /// message and acknowledges no frame before the lines that record it are saved.
    Save(Save),
}

/// A batch of journal lines to store. Comes last in a drain: one per input at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Save {
    /// Confirms this batch (and every earlier one) once stored.
    pub mark: u64,
    /// The lines, each ending in a newline.
    pub text: String,
    /// Replace the whole journal with `text` (rather than append it): the journal had grown
    /// well past the state it describes, or it may end in a torn line.
    pub rewrite: bool,
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
    /// The messages an earlier process queued and did not see settled, restored from the
    /// journal (in their order, before anything sent since): they are sent again, and their
    /// outcomes come as `Delivered` or `Failed` events with these ids. The first event of a
    /// restored client.
    Restored(alloc::vec::Vec<RestoredMessage>),
    /// A problem that fails no particular message (a transport error, an `~error` from the
    /// server about no message of ours, a malformed or binary server frame, a handler that
    /// failed, a handler's value that could not be sent: see [`ClientCore::answer`](super::ClientCore::answer)).
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
    /// The room it was sent to (`None`: to this client alone, or to everyone).
    pub room: Option<String>,
    /// For a client that persists its state: hand it back to
    /// [`ClientCore::handled`](super::ClientCore::handled) once the handler has finished (its
    /// answer given), so that the message is not handled again after a restart.
    pub receipt: Option<Receipt>,
}

/// Names one received frame of one session, for [`ClientCore::handled`](super::ClientCore::handled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Receipt {
    pub(crate) generation: u32,
    pub(crate) seq: u64,
}

/// A message restored from the journal ([`Event::Restored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredMessage {
    /// Its id: its outcome event carries it.
    pub id: u64,
    /// Message type.
    pub kind: String,
    /// Raw JSON payload, if any.
    pub payload: Option<String>,
    /// The client it is addressed to, if any.
    pub to: Option<String>,
    /// Whether it is a request (its outcome is then a response event, or `Failed`).
    pub request: bool,
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

/// What [`ClientCore::respond`](super::ClientCore::respond) needs to address a response.
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
    /// Deliver to every other member of this room (the client must have joined it).
    pub room: Option<&'a str>,
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
