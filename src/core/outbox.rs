//! The client's outgoing reliable stream: messages waiting to be sent or acknowledged, in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Error, Instant, Options};

/// Ids ordered by when something is due for them. Used for request timeouts and message
/// time-to-live: the earliest is found in O(log n) whatever order the deadlines came in.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    by_time: BTreeSet<(Instant, u64)>,
    by_id: BTreeMap<u64, Instant>,
}

impl Deadlines {
    pub(crate) fn insert(&mut self, id: u64, at: Instant) {
        if let Some(previous) = self.by_id.insert(id, at) {
            self.by_time.remove(&(previous, id));
        }
        self.by_time.insert((at, id));
    }

    /// Forgets `id`; tells whether it was there.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.by_id.remove(&id) {
            Some(at) => self.by_time.remove(&(at, id)),
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }

    /// Removes and returns one id due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let &(at, id) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    /// Removes and returns every id, in id order.
    pub(crate) fn drain(&mut self) -> Vec<u64> {
        self.by_time.clear();
        std::mem::take(&mut self.by_id).into_keys().collect()
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
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    bytes: usize,
    last_id: u64,
    expiries: Deadlines,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            entries: VecDeque::new(),
            bytes: 0,
            last_id: 0,
            expiries: Deadlines::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        if self.entries.len() >= options.max_enqueued_messages {
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
        if let Some(at) = expires {
            self.expiries.insert(id, at);
        }
        self.entries.push_back(Entry {
            id,
            frame,
            transmitted: false,
            settles,
        });
        Ok(id)
    }

    /// Marks the newest entry transmitted and returns a copy of its frame to send.
    pub(crate) fn transmit_newest(&mut self) -> Option<String> {
        let entry = self.entries.back_mut()?;
        self.expiries.remove(entry.id);
        entry.transmitted = true;
        Some(entry.frame.clone())
    }

    /// Marks every entry transmitted and returns their frames, oldest first.
    pub(crate) fn transmit_all(&mut self) -> Vec<String> {
        self.entries
            .iter_mut()
            .map(|entry| {
                self.expiries.remove(entry.id);
                entry.transmitted = true;
                entry.frame.clone()
            })
            .collect()
    }

    /// Removes every entry with id ≤ `ack`, oldest first.
    pub(crate) fn settle_through(&mut self, ack: u64) -> Vec<Entry> {
        let count = self
            .entries
            .iter()
            .take_while(|entry| entry.id <= ack)
            .count();
        let settled: Vec<Entry> = self.entries.drain(..count).collect();
        for entry in &settled {
            self.forget(entry);
        }
        settled
    }

    /// Removes the entry with `id`, wherever it is.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Entry> {
        let index = self
            .entries
            .binary_search_by_key(&id, |entry| entry.id)
            .ok()?;
        let entry = self.entries.remove(index)?;
        self.forget(&entry);
        Some(entry)
    }

    /// Removes the entry with `id` if it was never transmitted (nobody has seen it yet).
    pub(crate) fn remove_untransmitted(&mut self, id: u64) -> Option<Entry> {
        let index = self
            .entries
            .binary_search_by_key(&id, |entry| entry.id)
            .ok()?;
        if self.entries[index].transmitted {
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
        self.remove(id)
    }

    /// Removes and returns every entry, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        self.bytes = 0;
        self.expiries.drain();
        self.entries.drain(..).collect()
    }

    fn forget(&mut self, entry: &Entry) {
        self.bytes -= entry.frame.len();
        self.expiries.remove(entry.id);
    }
}
