//! The frames handed to a connection of this relay (by an append here, or a note from another
//! relay) before it reads its mailbox: most deliveries then cost no read from Redis.
//!
//! Frames of different senders can arrive out of order: two relays append to one mailbox at
//! positions 7 and 8, and 8's note comes first. A gap at the position the connection expects
//! is therefore waited for; only a gap that lasts sends the connection to its mailbox. Notes
//! are not lost while the subscription holds (and when it breaks, or an append could not be
//! announced, every inbox is [forgotten](Inbox::forget)), so that is a safety net, not the
//! common path. Appends that nobody is told of (the recipient had no live connection when
//! they were made) are read when the connection opens, or when its lease is renewed after a
//! lapse.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tungstenite::Utf8Bytes;

/// How long a gap is waited for before the mailbox is read: longer than a note takes under
/// load (a broadcast announces its frames once every shard has them), short enough for a
/// lost one to be made up for soon.
pub(super) const GAP_WAIT: Duration = Duration::from_millis(1000);
/// Bytes of frames kept for one connection; beyond, it reads its mailbox instead.
const MAX_BYTES: usize = 1 << 20;

/// What a connection's fetch does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// This many frames were taken, from the position asked for on.
    Taken(usize),
    /// A frame before those handed over is missing: wait for it. `Some` the first time: ring
    /// the connection at this time, so that it reads its mailbox if the gap lasts.
    Wait(Option<Instant>),
    /// Read the mailbox: what was handed over cannot be trusted to hold everything.
    ReadMailbox,
}

/// Frames by position, for one connection.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    frames: BTreeMap<u64, Utf8Bytes>,
    bytes: usize,
    /// Something may have been appended without being handed over (notes lost while Redis
    /// was away, a new session): the next fetch reads the mailbox.
    stale: bool,
    /// Since when the connection waits for a missing frame.
    gap_since: Option<Instant>,
}

impl Inbox {
    /// Keeps the frame appended at `position`.
    pub(super) fn insert(&mut self, position: u64, frame: Utf8Bytes) {
        if self.stale {
            return; // the mailbox will be read anyway
        }
        if self.bytes + frame.len() > MAX_BYTES {
            // The connection does not keep up: its mailbox has it all.
            self.forget();
            return;
        }
        self.bytes += frame.len();
        if let Some(replaced) = self.frames.insert(position, frame) {
            self.bytes -= replaced.len();
        }
    }

    /// Whatever was handed over may be incomplete, or something was appended without being
    /// handed over: the next fetch reads the mailbox.
    pub(super) fn forget(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.stale = true;
    }

    /// Takes up to `max` frames from position `from` on, in order, into `out`.
    pub(super) fn take(
        &mut self,
        from: u64,
        max: usize,
        now: Instant,
        out: &mut Vec<Utf8Bytes>,
    ) -> Next {
        // What the connection has already.
        while let Some(entry) = self.frames.first_entry() {
            if *entry.key() >= from {
                break;
            }
            self.bytes -= entry.remove().len();
        }
        if !self.stale {
            match self.frames.first_key_value() {
                Some((&first, _)) if first == from => {
                    self.gap_since = None;
                    let mut taken = 0;
                    while taken < max {
                        let Some(entry) = self.frames.first_entry() else {
                            break;
                        };
                        if *entry.key() != from + taken as u64 {
                            break;
                        }
                        let frame = entry.remove();
                        self.bytes -= frame.len();
                        out.push(frame);
                        taken += 1;
                    }
                    return Next::Taken(taken);
                }
                Some(_) => match self.gap_since {
                    None => {
                        self.gap_since = Some(now);
                        return Next::Wait(Some(now + GAP_WAIT));
                    }
                    Some(since) if now < since + GAP_WAIT => return Next::Wait(None),
                    Some(_) => {}
                },
                // Everything handed over is taken (the ring came after an earlier fetch took
                // its frame): nothing to read.
                None => return Next::Taken(0),
            }
        }
        // From the read on, what is handed over lines up again.
        self.frames.clear();
        self.bytes = 0;
        self.stale = false;
        self.gap_since = None;
        Next::ReadMailbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("frame {n}"))
    }

    fn take(inbox: &mut Inbox, from: u64, now: Instant) -> (Next, Vec<String>) {
        let mut out = Vec::new();
        let next = inbox.take(from, 10, now, &mut out);
        (next, out.iter().map(|f| f.as_str().to_owned()).collect())
    }

    #[tokio::test]
    async fn frames_out_of_order_are_waited_for_and_taken_in_order() {
        let now = Instant::now();
        let mut inbox = Inbox::default();
        inbox.insert(8, frame(8));
        assert_eq!(
            take(&mut inbox, 7, now),
            (Next::Wait(Some(now + GAP_WAIT)), vec![])
        );
        // Rung again meanwhile: still waiting, no second timer.
        assert_eq!(take(&mut inbox, 7, now), (Next::Wait(None), vec![]));
        inbox.insert(7, frame(7));
        inbox.insert(10, frame(10));
        assert_eq!(
            take(&mut inbox, 7, now),
            (Next::Taken(2), vec!["frame 7".into(), "frame 8".into()])
        );
        assert_eq!(inbox.bytes, frame(10).len());
    }

    #[tokio::test]
    async fn a_gap_that_lasts_sends_the_connection_to_its_mailbox() {
        let now = Instant::now();
        let mut inbox = Inbox::default();
        inbox.insert(9, frame(9));
        assert!(matches!(take(&mut inbox, 7, now).0, Next::Wait(Some(_))));
        assert_eq!(take(&mut inbox, 7, now + GAP_WAIT).0, Next::ReadMailbox);
        assert_eq!(inbox.bytes, 0);
        // After the read, frames handed over are taken again.
        inbox.insert(12, frame(12));
        assert_eq!(take(&mut inbox, 12, now).0, Next::Taken(1));
    }

    #[tokio::test]
    async fn forgotten_means_reading_the_mailbox_and_empty_means_nothing_to_read() {
        let now = Instant::now();
        let mut inbox = Inbox::default();
        assert_eq!(take(&mut inbox, 1, now).0, Next::Taken(0));
        inbox.insert(1, frame(1));
        inbox.forget();
        inbox.insert(2, frame(2));
        assert_eq!(take(&mut inbox, 1, now).0, Next::ReadMailbox);
        // Frames the connection has already are dropped, not taken.
        inbox.insert(3, frame(3));
        inbox.insert(4, frame(4));
        assert_eq!(
            take(&mut inbox, 4, now),
            (Next::Taken(1), vec!["frame 4".into()])
        );
        assert_eq!(inbox.bytes, 0);
    }

    #[tokio::test]
    async fn a_connection_that_does_not_keep_up_reads_its_mailbox() {
        let now = Instant::now();
        let mut inbox = Inbox::default();
        let big = Utf8Bytes::from("x".repeat(MAX_BYTES / 2 + 1));
        inbox.insert(1, big.clone());
        inbox.insert(2, big);
        assert_eq!(take(&mut inbox, 1, now).0, Next::ReadMailbox);
    }
}
