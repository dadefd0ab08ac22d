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
//!
//! Claims are also ordered by the client's own count of its attempts ([`Attempt`]): a
//! connection attempt that a client gave up on can still reach the server (a stalled link
//! delivers it late), after the attempt the client now uses. [`Succession::of`] is the one rule
//! every engine applies: such a stale attempt is refused, never allowed to replace its newer
//! sibling.

use super::connection::TRY_AGAIN_LATER;
use super::CloseFrame;
use crate::protocol::{RemoteError, CLOSE_REPLACED, CLOSE_SUPERSEDED};

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
    /// The connection attempt that made the claim (`None` for a client that named none).
    pub attempt: Option<Attempt>,
    /// The session token of the hello this connection opened with, once the engine's `open`
    /// has answered (`None` before, and for a bare client). It belongs to the connection, not
    /// to whatever holds the source later: a remote engine de-duplicates the connection's
    /// appends by it even after a newer connection took the source.
    pub session: Option<String>,
}

/// Which connection attempt of which client instance a claim comes from: the upgrade's
/// `attempt` parameter (PROTOCOL.md section 1). A client draws its `instance` once and numbers
/// its attempts upwards, so two attempts of one instance compare by `number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The client instance's random name (1 to 32 letters and digits).
    pub instance: String,
    /// The attempt's number, increasing with every attempt of the instance.
    pub number: u64,
}

/// Longest [`Attempt::instance`].
pub const MAX_INSTANCE_LEN: usize = 32;

impl Attempt {
    /// Reads the upgrade's `attempt` parameter, `INSTANCE.NUMBER`; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Attempt> {
        let (instance, number) = text.split_once('.')?;
        let valid = !instance.is_empty()
            && instance.len() <= MAX_INSTANCE_LEN
            && instance.bytes().all(|b| b.is_ascii_alphanumeric());
        let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        if !valid || !digits {
            return None;
        }
        Some(Attempt {
            instance: instance.into(),
            number: number.parse().ok()?,
        })
    }
}

/// How a new claim of a source stands to the source's last claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// Another client instance (or one that does not say): it replaces the connection that
    /// holds the source, if any, which is told [`Signal::Replaced`] (close 4409, a stop code:
    /// two instances fighting over one source must not take turns forever). With
    /// `--on-duplicate reject` it is refused instead while that connection lives.
    Replaces,
    /// A newer attempt of the same instance: the connection that holds the source, if any, is
    /// one its client has given up on; it is told [`Signal::Superseded`]. Never refused as a
    /// duplicate.
    Supersedes,
    /// An attempt of the same instance not newer than the last claim's: its client has already
    /// given up on it. Refused, and nothing changes.
    Stale,
}

impl Claim {
    /// Whether a connection of `holder` (the client instance of the source's last claim) holds
    /// the source now that this claim is stale: a newer attempt of this claim's own client.
    pub fn superseded_by(&self, holder: Option<&str>) -> bool {
        matches!((&self.attempt, holder), (Some(own), Some(holder)) if own.instance == holder)
    }
}

impl Succession {
    /// The rule, from the last claim's attempt (`None`: the source has no state, or its last
    /// claim said nothing) and the new claim's.
    pub fn of(last: Option<&Attempt>, new: Option<&Attempt>) -> Succession {
        match (last, new) {
            (Some(last), Some(new)) if last.instance == new.instance => {
                if new.number > last.number {
                    Succession::Supersedes
                } else {
                    Succession::Stale
                }
            }
            _ => Succession::Replaces,
        }
    }
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
    /// Deliver `frame` to every member of `room` but the sender, which must be a member
    /// (else [`Routed::NotMember`]).
    Room {
        /// The room.
        room: String,
        /// The frame as relayed (with its `room`).
        frame: F,
    },
    /// Make the sender's session a member of `room` (a member already stays one) and answer
    /// it with `frame`, in the same step: the client learns it joined only once it has.
    Join {
        /// The room.
        room: String,
        /// The response to the client's `relay:join`.
        frame: F,
    },
    /// The sender's session is no longer a member of `room` (if it was), answered with `frame`.
    Leave {
        /// The room.
        room: String,
        /// The response to the client's `relay:leave`.
        frame: F,
    },
    /// Deliver `frame` to the sender itself (an `~error` about the message, a handler's
    /// response). Never blocked: the connection slows its own client instead.
    ToSelf {
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
    /// `Room`: the sender is not a member of the room; nothing was consumed.
    NotMember,
    /// A recipient that is connected has more than the flow-control window waiting: nothing
    /// was consumed. Retry after a [`Signal::Wake`] (or a short timer).
    Blocked {
        /// The recipient that is behind.
        on: String,
    },
    /// The claim is stale: another connection owns the source now. Nothing was done.
    Fenced {
        /// That connection is a newer attempt of the same client instance (see
        /// [`Succession`]): this one was given up on by its client.
        superseded: bool,
    },
    /// The engine no longer has the source's state at all (a remote store lost its data, or
    /// the state expired while its owner could not renew it). Nothing was done; the client
    /// must reconnect, and will learn its session was lost.
    Gone,
    /// The engine cannot be reached (a remote store is down): nothing was consumed. Retry
    /// after a short timer.
    Unavailable,
}

/// Frames of one room's log for a connection (`PROTOCOL.md` section 14.1), from the engine's
/// answer to `Output::FetchLogs`: the entries after the connection's place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch<F> {
    /// The room (`""`: the log of everyone, which broadcasts take).
    pub room: String,
    /// The connection's place had fallen off the log's retention (or the log was lost and
    /// begun again): entries before `frames` are gone. The client is told (`~lost`), never a
    /// silent gap.
    pub lost: Option<Gap>,
    /// The entries, in position order: each frame carries its `pos`.
    pub frames: Vec<(u64, F)>,
}

/// Entries of a room's log that are gone before a connection had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first position the log still has.
    pub first: u64,
    /// How many entries between the connection's stored place and `first` are gone; `None`
    /// when the log was lost and begun again (unknown).
    pub count: Option<u64>,
}

/// What the engine tells a connection outside of its own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// New frames wait in the mailbox.
    Mail,
    /// New entries wait in the log of a room the session is in (`PROTOCOL.md` section
    /// 14.1): fetch them with `Output::FetchLogs`.
    Logs,
    /// A recipient this connection was blocked on has room again (or left): retry.
    Wake,
    /// Another client instance claimed the source.
    Replaced,
    /// A newer connection attempt of the same client instance claimed the source: the client
    /// has given up on this connection already.
    Superseded,
    /// The engine lost the source's state: the connection must end so that its client comes
    /// back to a fresh session (and is told).
    Gone,
    /// The mailbox reached its hard bound and the session lost frames: the client must be
    /// told, which takes a new connection (`resumed: false`, with the count).
    Overflowed,
}

impl Signal {
    /// Every signal, in the order a connection handles those that came together: the
    /// reasons to end first (the first one names the ending), then the wake-ups.
    pub const ALL: [Signal; 7] = [
        Signal::Replaced,
        Signal::Superseded,
        Signal::Overflowed,
        Signal::Gone,
        Signal::Wake,
        Signal::Mail,
        Signal::Logs,
    ];
}

/// Why the engine refused a connection's claim of its source. The connection is accepted
/// and closed at once with [`close_frame`](Self::close_frame): a browser's WebSocket reads a
/// close frame, never the status of a refused upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Another client instance holds the source and duplicates are refused.
    Occupied,
    /// A newer attempt of the same client instance claimed the source ([`Succession::Stale`]).
    Stale,
    /// The engine's store cannot be reached (a remote store only): the client comes back
    /// later.
    Unavailable,
}

impl ClaimRefused {
    /// The close frame that tells the client.
    pub fn close_frame(self) -> CloseFrame {
        match self {
            ClaimRefused::Occupied => CloseFrame {
                code: CLOSE_REPLACED,
                reason: "source already connected",
            },
            ClaimRefused::Stale => CloseFrame {
                code: CLOSE_SUPERSEDED,
                reason: "a newer connection attempt holds the source",
            },
            ClaimRefused::Unavailable => TRY_AGAIN_LATER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(instance: &str, number: u64) -> Attempt {
        Attempt {
            instance: instance.into(),
            number,
        }
    }

    #[test]
    fn attempts_parse_from_the_url_form_only() {
        assert_eq!(Attempt::parse("Ab3.7"), Some(attempt("Ab3", 7)));
        let long = "a".repeat(MAX_INSTANCE_LEN);
        assert_eq!(
            Attempt::parse(&format!("{long}.0")),
            Some(attempt(&long, 0))
        );
        for bad in [
            "",
            "Ab3",
            ".7",
            "Ab3.",
            "Ab3.-1",
            "Ab3.7.8",
            "A b.7",
            "Ab3.99999999999999999999",
            &format!("{long}a.1"),
        ] {
            assert_eq!(Attempt::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_a_newer_attempt_of_the_same_instance_supersedes() {
        let (a1, a2, b1) = (attempt("a", 1), attempt("a", 2), attempt("b", 1));
        assert_eq!(Succession::of(None, Some(&a1)), Succession::Replaces);
        assert_eq!(Succession::of(Some(&a1), Some(&a2)), Succession::Supersedes);
        assert_eq!(Succession::of(Some(&a2), Some(&a1)), Succession::Stale);
        assert_eq!(Succession::of(Some(&a2), Some(&a2)), Succession::Stale);
        assert_eq!(Succession::of(Some(&a2), Some(&b1)), Succession::Replaces);
        assert_eq!(Succession::of(Some(&a2), None), Succession::Replaces);
    }
}

/// Which rooms a connection's client may join (`PROTOCOL.md` section 14), from its
/// credentials: any room, or those its token names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RoomAccess {
    /// Any room (a server that does not verify identities).
    #[default]
    Any,
    /// Only these: a name, or a prefix followed by `*` (`team-7/*` allows `team-7/chat`).
    /// Empty: no room at all.
    Only(Vec<String>),
}

impl RoomAccess {
    /// Whether the client may join `room`.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            RoomAccess::Any => true,
            RoomAccess::Only(patterns) => {
                patterns
                    .iter()
                    .any(|pattern| match pattern.strip_suffix('*') {
                        Some(prefix) => room.starts_with(prefix),
                        None => room == pattern,
                    })
            }
        }
    }
}

#[cfg(test)]
mod room_tests {
    use super::*;

    #[test]
    fn room_access_takes_names_and_prefixes() {
        assert!(RoomAccess::Any.allows("anything"));
        let only = RoomAccess::Only(vec!["lobby".into(), "team-7/*".into()]);
        assert!(only.allows("lobby"));
        assert!(only.allows("team-7/chat"));
        assert!(only.allows("team-7/"));
        assert!(!only.allows("lobby2"));
        assert!(!only.allows("team-8/chat"));
        assert!(!RoomAccess::Only(Vec::new()).allows("lobby"));
    }
}
