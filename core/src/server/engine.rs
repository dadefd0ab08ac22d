//! The vocabulary of the seam between a connection's state machine and the engine that keeps
//! sessions and routes frames (in memory, or in Redis for several relays).
//!
//! A source's **mailbox** holds the reliable frames addressed to it, each at a position: 1, 2,
//! 3... for the life of the source's state in the engine, across its sessions. The connection
//! that owns the source fetches frames from the mailbox in position order, writes them, and
//! settles them when the client acknowledges (PROTOCOL.md section 5); the engine drops settled
//! frames. A **session** adds what a resume needs: the client's token, the highest message id
//! consumed from the client (the de-duplication watermark) and the `base`, the position before
//! the session's first frame (the client counts frames from there).
//!
//! Ownership is fenced by a [`Claim`]: every connection of a source claims it at the upgrade,
//! which bumps the source's `epoch`; an operation carrying an older epoch is refused with
//! [`Routed::Fenced`] (or ignored), so a replaced connection, or a relay frozen and woken up,
//! can no longer consume, write or deliver for the source.

use crate::protocol::RemoteError;

/// A connection's ownership of a source, from the engine's `claim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The source claimed.
    pub source: String,
    /// The engine's own handle of the source's state (the in-memory engine's slot), so that
    /// the connection's operations find it without a lookup by name.
    pub key: u64,
    /// Increases with every claim of the source; operations with an older one are refused.
    pub epoch: u64,
    /// The position the source's next frame will get: frames from here on are the new
    /// connection's, whatever its hello decides about the session.
    pub next: u64,
}

/// What a hello says about the session the client had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The client's session token (chosen by the client, the same for the client's life).
    pub token: String,
    /// Reliable frames the client received in the session instance `sid`.
    pub ack: u64,
    /// The instance of the session the client last heard of (from a welcome), if any.
    pub sid: Option<String>,
}

/// The engine's answer to a hello (or to a client found to be bare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The session the hello named was held, with every frame after the client's `ack`.
    pub resumed: bool,
    /// The de-duplication watermark: ids up to this were consumed (0 for a fresh session).
    pub consumed: u64,
    /// The position before the session's first frame: the client's count `n` is position
    /// `base + n`.
    pub base: u64,
    /// The first position to fetch and send.
    pub next: u64,
    /// Not resumed although the source had a session: the frames it lost, when known.
    pub lost: Option<u64>,
    /// The session instance's name, for the welcome (`None` for a bare client). A session the
    /// client never heard of, or one opened afresh, has a new one, unique across restarts of
    /// the engine: a client's count then never applies to positions it was not made in.
    pub sid: Option<String>,
}

/// What consuming a client message does, besides advancing the watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<F> {
    /// Nothing more: the message went to an application handler, or is dropped.
    Consume,
    /// Deliver `frame` to `target`'s mailbox.
    To {
        /// The addressee.
        target: String,
        /// The frame as relayed.
        frame: F,
    },
    /// Deliver `frame` to every source but the sender.
    Broadcast {
        /// The frame as relayed.
        frame: F,
    },
    /// Deliver `frame` to the sender itself (an `~error` about the message, a handler's
    /// response). Never blocked: the connection slows its own client instead.
    Reply {
        /// The frame.
        frame: F,
    },
    /// The message answers the server's request `re`: hand the result to whoever waits.
    Resolve {
        /// The response's type.
        kind: String,
        /// The id of the server's request.
        re: u64,
        /// The response's payload (JSON text) or its error.
        result: Result<Option<String>, RemoteError>,
    },
}

/// The engine's answer to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Consumed: durable in the engine (what "durable" means is the engine's promise), so the
    /// client may be acknowledged.
    Done,
    /// The engine had already consumed this id (a retransmit after a reconnect).
    Duplicate,
    /// `To`: nobody with that source is connected or within its session grace period.
    UnknownTarget,
    /// `To`: the addressee's mailbox is at its hard bound; the message is refused.
    Overflow,
    /// A recipient that is connected has more than the flow-control window waiting: nothing
    /// was consumed. Retry after a [`Signal::Wake`] (or a short timer).
    Blocked {
        /// The recipient that is behind.
        on: String,
    },
    /// The claim is stale: another connection owns the source now. Nothing was done.
    Fenced,
    /// The engine no longer has the source's state at all (a remote store lost its data, or
    /// the state expired while its owner could not renew it). Nothing was done; the client
    /// must reconnect, and will learn its session was lost.
    Gone,
    /// The engine cannot be reached (a remote store is down): nothing was consumed. Retry
    /// after a short timer.
    Unavailable,
}

/// What the engine tells a connection outside of its own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// New frames wait in the mailbox.
    Mail,
    /// A recipient this connection was blocked on has room again (or left): retry.
    Wake,
    /// Another connection claimed the source.
    Replaced,
    /// The engine lost the source's state: the connection must end so that its client comes
    /// back to a fresh session (and is told).
    Gone,
    /// The mailbox reached its hard bound and the session lost frames: the client must be
    /// told, which takes a new connection (`resumed: false`, with the count).
    Overflowed,
}
