//! The client's outgoing reliable stream: messages waiting to be sent or acknowledged, in order.

use alloc::string::String;
use alloc::vec::Vec;

use super::{Error, Options};
use crate::Instant;

/// Ids with a deadline each: request timeouts and message time-to-live.
///
/// A `Vec` in id order rather than a `BTreeSet` by time plus a `BTreeMap` by id: the B-tree
/// code was about 15 KB of the wasm build. Ids only grow, so inserting is a push and removing
/// is a binary search. The earliest deadline is cached, because the driver asks for it after
/// every input; it is found again by a linear scan over 16-byte entries only when the earliest
/// one goes, which stays in the microseconds for the 10 000 messages the queue holds at most.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    by_id: Vec<(u64, Instant)>,
    earliest: Option<Instant>,
}

impl Deadlines {
    pub(crate) fn insert(&mut self, id: u64, at: Instant) {
        match self.by_id.binary_search_by_key(&id, |&(id, _)| id) {
            Ok(index) => {
                if let Some(entry) = self.by_id.get_mut(index) {
                    entry.1 = at;
                }
                self.earliest = self.first_due().map(|(_, at)| at);
            }
            Err(index) => {
                self.by_id.insert(index, (id, at));
                self.earliest = Some(self.earliest.map_or(at, |earliest| earliest.min(at)));
            }
        }
    }

    /// Forgets `id`; tells whether it was there.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.by_id.binary_search_by_key(&id, |&(id, _)| id) {
            Ok(index) => {
                let (_, at) = self.by_id.remove(index);
                if self.earliest == Some(at) {
                    self.earliest = self.first_due().map(|(_, at)| at);
                }
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The deadline of `id`, if it has one.
    #[cfg(feature = "persist")]
    pub(crate) fn get(&self, id: u64) -> Option<Instant> {
        let index = self.by_id.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        self.by_id.get(index).map(|&(_, at)| at)
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.by_id.binary_search_by_key(&id, |&(id, _)| id).is_ok()
    }

    /// The position and time of the earliest deadline (the lowest id among equal times).
    fn first_due(&self) -> Option<(usize, Instant)> {
        let mut first: Option<(usize, Instant)> = None;
        for (index, &(_, at)) in self.by_id.iter().enumerate() {
            if first.is_none_or(|(_, earliest)| at < earliest) {
                first = Some((index, at));
            }
        }
        first
    }

    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.earliest
    }

    /// Removes and returns one id due at or before `now`, the earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        if self.earliest? > now {
            return None;
        }
        let (index, _) = self.first_due()?;
        let (id, _) = self.by_id.remove(index);
        self.earliest = self.first_due().map(|(_, at)| at);
        Some(id)
    }

    /// Removes and returns every (id, deadline), in id order.
    pub(crate) fn drain(&mut self) -> Vec<(u64, Instant)> {
        self.earliest = None;
        core::mem::take(&mut self.by_id)
    }
}

/// What an acknowledged message means to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settles {
    /// A send or a response: acknowledgement is its outcome (`Delivered`).
    OnAck,
    /// A request: its outcome is the reply (or a failure), the acknowledgement is silent.
    OnReply,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) frame: String,
    pub(crate) transmitted: bool,
    pub(crate) settles: Settles,
}

/// Messages not yet acknowledged by the server, oldest first, ids increasing.
///
/// A `Vec` whose first `settled` slots are spent, rather than a `VecDeque` (kilobytes of wasm):
/// acknowledgements settle from the front by moving that index, and the spent slots are
/// dropped in one go once they are at least half of the vector, so settling costs O(1)
/// amortized however many messages are in flight.
///
/// `entries[settled..sent]` were sent on the current connection and are in flight
/// (`in_flight` bytes); the rest wait for the connection, or for room in the server's window.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: Vec<Entry>,
    settled: usize,
    sent: usize,
    in_flight: usize,
    bytes: usize,
    last_id: u64,
    expiries: Deadlines,
    /// Frames transmitted again on a later connection (statistics).
    retransmitted: u64,
    /// Only entries with ids up to this one may be transmitted: a client that persists its
    /// state sends nothing that its journal does not hold (`u64::MAX` otherwise).
    #[cfg(feature = "persist")]
    cleared: u64,
    /// Ids that left since the last [`take_removed`](Self::take_removed), kept for the
    /// journal (`None` when there is none).
    #[cfg(feature = "persist")]
    removed: Option<Vec<u64>>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            entries: Vec::new(),
            settled: 0,
            sent: 0,
            in_flight: 0,
            bytes: 0,
            last_id: 0,
            expiries: Deadlines::default(),
            retransmitted: 0,
            #[cfg(feature = "persist")]
            cleared: u64::MAX,
            #[cfg(feature = "persist")]
            removed: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.settled
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the frames still waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many frames were sent a second time or more (again on a new connection).
    pub(crate) fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// The entries still waiting, oldest first.
    pub(crate) fn live(&self) -> &[Entry] {
        self.entries.get(self.settled..).unwrap_or_default()
    }

    /// Where the live entry with `id` is in `entries`.
    fn index_of(&self, id: u64) -> Option<usize> {
        let offset = self
            .live()
            .binary_search_by_key(&id, |entry| entry.id)
            .ok()?;
        Some(self.settled + offset)
    }

    /// Queues a message whose frame `encode` writes given its id, after checking every bound.
    /// The id is only consumed when the message is accepted.
    pub(crate) fn push(
        &mut self,
        options: &Options,
        encode: impl FnOnce(u64) -> String,
        expires: Option<Instant>,
        settles: Settles,
    ) -> Result<u64, Error> {
        if self.len() >= options.max_enqueued_messages {
            return Err(Error::QueueFull {
                limit: options.max_enqueued_messages,
            });
        }
        let id = self.last_id + 1;
        let frame = encode(id);
        if frame.len() > options.max_message_size {
            return Err(Error::TooLarge {
                size: frame.len(),
                limit: options.max_message_size,
            });
        }
        if self.bytes + frame.len() > options.max_enqueued_bytes {
            return Err(Error::QueueBytesFull {
                limit: options.max_enqueued_bytes,
            });
        }
        self.last_id = id;
        self.bytes += frame.len();
        debug_assert!(
            self.entries.last().is_none_or(|last| last.id < id),
            "ids increase along the outbox: lookups binary-search it"
        );
        if let Some(at) = expires {
            self.expiries.insert(id, at);
        }
        self.entries.push(Entry {
            id,
            frame,
            transmitted: false,
            settles,
        });
        Ok(id)
    }

    /// A new connection: nothing is in flight on it yet, everything is to be sent (again).
    pub(crate) fn restart(&mut self) {
        self.sent = self.settled;
        self.in_flight = 0;
    }

    /// Sends the next entries, oldest first, while the bytes in flight stay within `window`
    /// (one entry is always sent when nothing is in flight, whatever its size), at most
    /// `budget` of them. Each frame sent is handed to `transmit`. Returns how many were sent,
    /// and whether the budget alone stopped it (more would have gone).
    pub(crate) fn send_more(
        &mut self,
        window: Option<usize>,
        budget: usize,
        mut transmit: impl FnMut(String),
    ) -> (usize, bool) {
        let mut count = 0;
        while let Some(entry) = self.entries.get_mut(self.sent) {
            let len = entry.frame.len();
            #[cfg(feature = "persist")]
            if entry.id > self.cleared {
                break;
            }
            if self.in_flight > 0 && window.is_some_and(|w| self.in_flight + len > w) {
                break;
            }
            if count == budget {
                return (count, true);
            }
            count += 1;
            // Sent again on a new connection: a retransmission.
            self.retransmitted += u64::from(entry.transmitted);
            entry.transmitted = true;
            // Time-to-live only limits waiting to be sent.
            self.expiries.remove(entry.id);
            transmit(entry.frame.clone());
            self.in_flight += len;
            self.sent += 1;
        }
        (count, false)
    }

    /// Removes and returns every entry that was ever transmitted, oldest first (right after
    /// [`restart`](Self::restart): nothing is in flight on the new connection).
    pub(crate) fn take_transmitted(&mut self) -> Vec<Entry> {
        debug_assert!(
            self.sent == self.settled && self.in_flight == 0,
            "after a restart"
        );
        let mut taken = Vec::new();
        let mut index = self.settled;
        while let Some(entry) = self.entries.get(index) {
            if entry.transmitted {
                let entry = self.entries.remove(index);
                self.forget(entry.id, entry.frame.len(), entry.transmitted);
                taken.push(entry);
            } else {
                index += 1;
            }
        }
        taken
    }

    /// Removes every entry with id ≤ `ack`, oldest first, and says how each settles.
    pub(crate) fn settle_through(&mut self, ack: u64) -> Vec<(u64, Settles)> {
        let mut settled = Vec::new();
        while let Some(entry) = self.entries.get_mut(self.settled) {
            if entry.id > ack {
                break;
            }
            debug_assert!(
                !entry.frame.is_empty(),
                "a live entry keeps its frame: only settled slots are emptied"
            );
            // The slot stays until the next compaction; its frame's memory goes now.
            let frame = core::mem::take(&mut entry.frame);
            let (id, transmitted, settles) = (entry.id, entry.transmitted, entry.settles);
            if self.settled < self.sent {
                self.in_flight -= frame.len();
            }
            self.settled += 1;
            self.forget(id, frame.len(), transmitted);
            settled.push((id, settles));
        }
        // Acknowledged without being sent on this connection (sent on an earlier one).
        self.sent = self.sent.max(self.settled);
        if self.settled * 2 >= self.entries.len() {
            // Not `drain(..n)`: `Drain` is a few hundred bytes of wasm; this moves the same.
            self.entries = self.entries.split_off(self.settled);
            self.sent -= self.settled;
            self.settled = 0;
        }
        debug_assert!(self.sent <= self.entries.len() && self.settled <= self.sent);
        settled
    }

    /// Removes the entry with `id`, wherever it is.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Entry> {
        let index = self.index_of(id)?;
        let entry = self.entries.remove(index);
        if index < self.sent {
            self.sent -= 1;
            self.in_flight -= entry.frame.len();
        }
        self.forget(entry.id, entry.frame.len(), entry.transmitted);
        Some(entry)
    }

    /// Removes the entry with `id` if it was never transmitted (nobody has seen it yet).
    pub(crate) fn remove_untransmitted(&mut self, id: u64) -> Option<Entry> {
        let index = self.index_of(id)?;
        if self.entries.get(index)?.transmitted {
            return None;
        }
        self.remove(id)
    }

    /// The earliest time-to-live deadline among untransmitted entries.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries.earliest()
    }

    /// Removes and returns one untransmitted entry whose time-to-live ran out by `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Entry> {
        let id = self.expiries.pop_due(now)?;
        let entry = self.remove(id);
        debug_assert!(
            entry.as_ref().is_none_or(|entry| !entry.transmitted),
            "a transmitted message has no time-to-live left: it must never fail as expired"
        );
        entry
    }

    /// Removes and returns every entry, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        self.bytes = 0;
        self.sent = 0;
        self.in_flight = 0;
        self.expiries.drain();
        let settled = core::mem::take(&mut self.settled);
        // The entries after the settled ones (not `drain(..).skip(n)`: the adapter's code is a
        // few hundred bytes of wasm).
        let mut entries = core::mem::take(&mut self.entries);
        let drained = entries.split_off(settled.min(entries.len()));
        #[cfg(feature = "persist")]
        for entry in &drained {
            self.note_removed(entry.id);
        }
        drained
    }

    fn forget(&mut self, id: u64, frame_len: usize, transmitted: bool) {
        debug_assert!(
            frame_len <= self.bytes,
            "every frame's bytes were counted when it was pushed"
        );
        self.bytes -= frame_len;
        #[cfg(feature = "persist")]
        self.note_removed(id);
        // Only untransmitted entries can have a time-to-live deadline left.
        if !transmitted {
            self.expiries.remove(id);
        }
    }
}

/// What the journal of a client that persists (`machine/durable.rs`) needs of the outbox.
#[cfg(feature = "persist")]
impl Outbox {
    /// Keeps the ids of the entries that leave (`true`), for the journal, or stops.
    pub(crate) fn keep_removed(&mut self, keep: bool) {
        self.removed = keep.then(Vec::new);
    }

    /// The ids that left since the last call, ascending.
    pub(crate) fn take_removed(&mut self) -> Vec<u64> {
        self.removed
            .as_mut()
            .map(core::mem::take)
            .unwrap_or_default()
    }

    /// How many ids left since the last [`take_removed`](Self::take_removed).
    pub(crate) fn removed_count(&self) -> usize {
        self.removed.as_ref().map_or(0, Vec::len)
    }

    /// Keeps `id` among the removed ones, in order: entries mostly leave oldest first, so
    /// this is mostly a push (and `sort` would be kilobytes of wasm).
    fn note_removed(&mut self, id: u64) {
        if let Some(removed) = &mut self.removed {
            if let Err(at) = removed.binary_search(&id) {
                removed.insert(at, id);
            }
        }
    }

    /// Lets entries up to `id` be transmitted.
    pub(crate) fn set_cleared(&mut self, id: u64) {
        self.cleared = id;
    }

    /// The highest id given so far.
    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    /// The next entry gets an id above `id` (a restored client continues its ids).
    pub(crate) fn skip_ids_through(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// Counts entries up to `id` as transmitted (restored: they may have been).
    pub(crate) fn mark_transmitted_through(&mut self, id: u64) {
        for entry in self.entries.iter_mut().filter(|entry| entry.id <= id) {
            entry.transmitted = true;
        }
    }

    /// When the entry `id`'s time-to-live ends, if it has one.
    pub(crate) fn expiry_of(&self, id: u64) -> Option<Instant> {
        self.expiries.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_pop_earliest_first_lowest_id_on_ties() {
        let mut deadlines = Deadlines::default();
        let at = Instant::from_millis;
        deadlines.insert(1, at(30));
        deadlines.insert(2, at(10));
        deadlines.insert(3, at(20));
        deadlines.insert(4, at(10));
        assert_eq!(deadlines.earliest(), Some(at(10)));
        assert_eq!(deadlines.pop_due(at(5)), None);
        assert_eq!(deadlines.pop_due(at(20)), Some(2));
        assert_eq!(deadlines.pop_due(at(20)), Some(4));
        assert!(deadlines.remove(1));
        assert!(!deadlines.remove(1));
        assert_eq!(deadlines.pop_due(at(20)), Some(3));
        assert_eq!(deadlines.pop_due(at(99)), None);
        deadlines.insert(6, at(1));
        deadlines.insert(5, at(2));
        let ids: Vec<u64> = deadlines.drain().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![5, 6]);
        assert_eq!(deadlines.len(), 0);
        assert_eq!(deadlines.earliest(), None);
    }

    #[test]
    fn the_cached_earliest_follows_removals() {
        let mut deadlines = Deadlines::default();
        let at = Instant::from_millis;
        deadlines.insert(1, at(10));
        deadlines.insert(2, at(5));
        deadlines.insert(3, at(7));
        assert!(deadlines.remove(2));
        assert_eq!(deadlines.earliest(), Some(at(7)));
        assert!(deadlines.remove(1));
        assert_eq!(deadlines.earliest(), Some(at(7)));
        deadlines.insert(3, at(9));
        assert_eq!(deadlines.pop_due(at(8)), None, "rescheduled later");
        assert_eq!(deadlines.pop_due(at(9)), Some(3));
        assert_eq!(deadlines.earliest(), None);
    }

    #[test]
    fn settling_moves_past_the_front_and_compacts() {
        let options = Options::default();
        let mut outbox = Outbox::new();
        for _ in 0..10 {
            outbox
                .push(&options, |id| id.to_string(), None, Settles::OnAck)
                .expect("room");
        }
        outbox.restart();
        let mut sent = Vec::new();
        outbox.send_more(None, usize::MAX, |frame| sent.push(frame));
        assert_eq!(sent.len(), 10);
        let settled = outbox.settle_through(3);
        assert_eq!(
            settled,
            [
                (1, Settles::OnAck),
                (2, Settles::OnAck),
                (3, Settles::OnAck)
            ]
        );
        assert_eq!(outbox.len(), 7);
        assert_eq!(
            outbox.bytes, 8,
            "one byte per frame \"4\" to \"9\", two for \"10\""
        );
        assert_eq!(outbox.remove(2).map(|e| e.id), None, "already settled");
        assert_eq!(outbox.remove(5).map(|e| e.id), Some(5));
        assert_eq!(outbox.settle_through(7).len(), 3);
        assert!(
            outbox.entries.len() <= 4,
            "spent slots dropped once they are half"
        );
        let rest: Vec<u64> = outbox.drain().into_iter().map(|e| e.id).collect();
        assert_eq!(rest, [8, 9, 10]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn sends_within_the_window_and_more_as_acknowledgements_come() {
        let options = Options::default();
        let mut outbox = Outbox::new();
        for _ in 0..5 {
            outbox
                .push(
                    &options,
                    |id| "x".repeat(10 + id as usize),
                    None,
                    Settles::OnAck,
                )
                .expect("room");
        }
        let mut sent = Vec::new();
        outbox.restart();
        outbox.send_more(Some(25), usize::MAX, |frame| sent.push(frame.len()));
        assert_eq!(sent, [11, 12], "23 bytes fit in 25, 36 would not");
        assert_eq!(outbox.settle_through(1).len(), 1);
        outbox.send_more(Some(25), usize::MAX, |frame| sent.push(frame.len()));
        assert_eq!(sent, [11, 12, 13], "12 + 13 = 25 fits");
        assert_eq!(
            outbox.remove(3).map(|e| e.id),
            Some(3),
            "in flight, removed"
        );
        outbox.settle_through(2);
        // One entry goes out when nothing is in flight, however large.
        outbox.send_more(Some(5), usize::MAX, |frame| sent.push(frame.len()));
        assert_eq!(sent, [11, 12, 13, 14]);
        // A new connection sends everything unacknowledged again.
        outbox.restart();
        outbox.send_more(None, usize::MAX, |frame| sent.push(frame.len()));
        assert_eq!(sent, [11, 12, 13, 14, 14, 15]);
    }
}
