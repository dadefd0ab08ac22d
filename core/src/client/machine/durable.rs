//! A client whose state outlives its process (`persist`, PROTOCOL.md section 10): the journal
//! it writes, the gates that keep the wire behind the storage, and the restore.
//!
//! Two rules make a restart lose and repeat nothing:
//! - a message is transmitted only once the journal holds it, marked as possibly sent;
//! - a received frame is acknowledged only once the journal holds that it was handled.
//!
//! A crash then leaves the server holding every frame the journal does not say was handled
//! (it retransmits them on resume) and the journal holding every message the server may not
//! have (sent again on resume, the server's de-duplication dropping a second copy).

use core::time::Duration;

use super::*;
use crate::client::events::{Receipt, RestoredMessage, Save};
use crate::client::journal::{self, Journal, JournalError, Queued};
use crate::client::outbox::Entry;

/// The journal's side of a client that persists its state.
#[derive(Debug, Default)]
pub(super) struct Durable {
    /// Wall-clock time at `Instant` zero, in milliseconds since the Unix epoch: the journal
    /// keeps deadlines as wall-clock times, which a later process can read.
    epoch_ms: u64,
    /// The last batch handed out.
    issued: u64,
    /// Batches handed out and not yet confirmed, oldest first.
    waiting: Vec<Waiting>,
    /// Counts the sessions this process has been in: receipts of an earlier one are stale.
    generation: u32,
    /// What the journal holds once the batches handed out are stored: the highest id
    /// written, the highest id marked as possibly sent, the handled watermark, the session
    /// instance (`None` while the session line is due).
    written_id: u64,
    written_mark: u64,
    written_handled: u64,
    written_sid: Option<Option<String>>,
    /// The handled watermark the stored journal holds: acknowledgements never go past it.
    saved_handled: u64,
    /// Frames 1 to `handled` of this session were handled...
    handled: u64,
    /// ...and these above it too, ascending (handlers that finished out of order, or a
    /// restored journal's).
    handled_above: Vec<u64>,
    /// Of `handled_above`, those the journal does not hold yet.
    unwritten_above: Vec<u64>,
    /// Frames up to this one of this session were handed to the application in this
    /// process: a resume retransmits those after the hello's `ack`, and they are skipped.
    seen: u64,
    /// The `ack` of the last hello.
    hello_ack: u64,
    /// An acknowledgement is due and waits for the handled watermark to be stored: the next
    /// batch carries it, and its confirmation sends the acknowledgement.
    ack_wanted: bool,
    /// Bytes appended since the journal was last rewritten.
    appended: usize,
    /// The next batch rewrites the journal.
    rewrite: bool,
}

/// A batch handed out: what its confirmation lets through.
#[derive(Debug)]
struct Waiting {
    mark: u64,
    cleared: u64,
    generation: u32,
    handled: u64,
    /// An acknowledgement waits for this batch.
    ack: bool,
}

/// Past this many bytes appended, and twice what the state takes, the journal is rewritten.
const REWRITE_AFTER: usize = 64 * 1024;

/// Settled ids wait for a batch that is written anyway, or until there are this many: nothing
/// waits on them (a message settled but still in the journal is sent again after a restart,
/// and the server drops the copy), and writing them alone would cost a write per
/// acknowledgement.
const LEFT_BATCH: usize = 256;

impl ClientCore {
    /// A client that keeps its state in a journal (`persist`), restored from `journal` (the
    /// text of every batch stored so far; empty for a new one). `epoch_ms` is the wall-clock
    /// time at `now`, in milliseconds since the Unix epoch.
    ///
    /// The messages queued before are queued again, first, with their ids (see
    /// [`Event::Restored`]); the session continues where the journal left it, so that the
    /// server, when it still holds it, resends what was not handled and drops what it
    /// already has. The driver stores each [`Output::Save`] and confirms it with
    /// [`handle_saved`](Self::handle_saved).
    pub fn restore(
        options: Options,
        seed: u64,
        now: Instant,
        epoch_ms: u64,
        journal: &str,
    ) -> Result<Self, JournalError> {
        let journal = Journal::replay(journal)?;
        let start_closed = options.start_closed;
        let mut core = ClientCore::new(
            Options {
                start_closed: true,
                ..options
            },
            seed,
            now,
        );
        core.options.start_closed = start_closed;
        let mut durable = Durable {
            epoch_ms: epoch_ms.saturating_sub(now.as_millis()),
            rewrite: true,
            ..Durable::default()
        };
        if let Some(session) = journal.session {
            core.session = session;
            core.had_session = journal.sid.is_some();
            core.sid = journal.sid;
        }
        core.received = journal.handled;
        durable.handled = journal.handled;
        durable.saved_handled = journal.handled;
        durable.handled_above = journal.handled_above;
        core.outbox.keep_removed(true);
        let at = |wall: u64| now + Duration::from_millis(wall.saturating_sub(epoch_ms));
        let mut restored = Vec::with_capacity(journal.queued.len());
        // Messages the options no longer let in (a smaller queue): said, not dropped.
        let mut refused = Vec::new();
        for queued in journal.queued {
            let settles = if queued.request {
                Settles::OnReply
            } else {
                Settles::OnAck
            };
            let sent = queued.id <= journal.marked;
            let expires = queued.expires.filter(|_| !sent).map(at);
            core.outbox.skip_ids_through(queued.id.saturating_sub(1));
            let message = describe(&queued);
            match core
                .outbox
                .push(&core.options, |_| queued.frame, expires, settles)
            {
                Ok(id) => {
                    if queued.request {
                        let timeout = core.options.request_timeout;
                        let deadline = queued.deadline.map_or(now + timeout, at);
                        core.requests.insert(id, deadline);
                        if let Some(to) = &message.to {
                            core.targets.push((id, to.clone()));
                        }
                    }
                }
                Err(error) => refused.push((message.id, error)),
            }
            restored.push(message);
        }
        core.outbox.skip_ids_through(journal.last_id);
        core.outbox.mark_transmitted_through(journal.marked);
        core.outbox.set_cleared(journal.marked);
        durable.written_id = core.outbox.last_id();
        durable.written_mark = journal.marked;
        core.durable = Some(alloc::boxed::Box::new(durable));
        core.event(Event::Restored(restored));
        for (id, error) in refused {
            core.fail(id, error);
        }
        if !start_closed {
            core.connect(now);
        }
        Ok(core)
    }

    /// The journal's batches up to `mark` are stored: what they record may now be sent and
    /// acknowledged.
    pub fn handle_saved(&mut self, now: Instant, mark: u64) {
        self.clock = self.clock.max(now);
        let Some(durable) = self.durable.as_deref_mut() else {
            return;
        };
        let mut cleared = None;
        let mut ack = false;
        let generation = durable.generation;
        let mut saved_handled = durable.saved_handled;
        durable.waiting.retain(|waiting| {
            if waiting.mark > mark {
                return true;
            }
            cleared = Some(waiting.cleared);
            ack |= waiting.ack;
            if waiting.generation == generation {
                saved_handled = saved_handled.max(waiting.handled);
            }
            false
        });
        durable.saved_handled = saved_handled;
        if let Some(cleared) = cleared {
            self.outbox.set_cleared(cleared);
        }
        self.send_more();
        if self.ackable() > self.acknowledged {
            if ack
                || self.received - self.acknowledged >= self.options.ack_every
                || self.unacked_bytes >= self.options.ack_bytes
            {
                self.send_ack();
            } else if self.ack_due.is_none() {
                self.ack_due = Some(now + self.options.ack_delay);
            }
        }
    }

    /// The handler of the message with this receipt has finished, its answer given: after a
    /// restart it is not handled again. A client that does not persist ignores it.
    pub fn handled(&mut self, receipt: Receipt) {
        if self
            .durable
            .as_deref()
            .is_some_and(|durable| durable.generation == receipt.generation)
        {
            self.mark_handled(receipt.seq);
        }
    }

    /// Storage failed (full, gone, refused): the client goes on in memory, as one that never
    /// persisted, and sends and acknowledges without waiting for it any more.
    pub fn stop_persisting(&mut self) {
        if self.durable.take().is_some() {
            self.outbox.keep_removed(false);
            self.outbox.set_cleared(u64::MAX);
            self.send_more();
            if self.received > self.acknowledged && self.ack_due.is_none() {
                self.ack_due = Some(self.clock + self.options.ack_delay);
            }
        }
    }

    /// How many received frames may be acknowledged: all of them, or for a client that
    /// persists, those the stored journal says were handled.
    pub(super) fn ackable(&self) -> u64 {
        match &self.durable {
            Some(durable) => durable.saved_handled.min(self.received),
            None => self.received,
        }
    }

    /// An acknowledgement went out short of what was received (`send_ack`): the rest waits
    /// for the handled watermark to be stored.
    pub(super) fn durable_ack_wanted(&mut self) {
        if let Some(durable) = self.durable.as_deref_mut() {
            durable.ack_wanted = true;
        }
    }

    /// The hello is about to say `ack`.
    pub(super) fn durable_hello(&mut self, ack: u64) {
        if let Some(durable) = self.durable.as_deref_mut() {
            durable.hello_ack = ack;
        }
    }

    /// A welcome arrived: the session goes on (`resumed`) from the hello's `ack`, and frames
    /// this process already handed over are skipped; or a new one counts from 1.
    pub(super) fn durable_welcome(&mut self, resumed: bool) {
        let Some(durable) = self.durable.as_deref_mut() else {
            return;
        };
        if resumed {
            durable.seen = durable.seen.max(self.received);
            self.received = durable.hello_ack;
        } else {
            durable.generation += 1;
            durable.handled = 0;
            durable.handled_above.clear();
            durable.unwritten_above.clear();
            durable.seen = 0;
            durable.saved_handled = 0;
            durable.written_handled = 0;
            durable.written_sid = None;
        }
    }

    /// Reliable frame `seq` arrived: its receipt, or `None` when it was handed over already
    /// (a resume's retransmission, or handled before a restart).
    pub(super) fn receipt(&self, seq: u64) -> Option<Option<Receipt>> {
        let Some(durable) = self.durable.as_deref() else {
            return Some(None);
        };
        if seq <= durable.seen
            || seq <= durable.handled
            || durable.handled_above.binary_search(&seq).is_ok()
        {
            return None;
        }
        Some(Some(Receipt {
            generation: durable.generation,
            seq,
        }))
    }

    /// Frame `seq` of this session was handled.
    pub(super) fn mark_handled(&mut self, seq: u64) {
        let Some(durable) = self.durable.as_deref_mut() else {
            return;
        };
        if seq <= durable.handled {
            return;
        }
        if seq == durable.handled + 1 {
            durable.handled = seq;
            while durable.handled_above.first() == Some(&(durable.handled + 1)) {
                durable.handled += 1;
                durable.handled_above.remove(0);
            }
        } else if let Err(at) = durable.handled_above.binary_search(&seq) {
            durable.handled_above.insert(at, seq);
            durable.unwritten_above.push(seq);
        }
    }

    /// The journal lines the last input made, as one batch, if any.
    ///
    /// A batch is written when something waits on it: a message to transmit (its record, its
    /// mark), a new session, or an acknowledgement (the handled watermark). What nothing waits
    /// on (settled ids, the watermark between acknowledgements) rides along with the next
    /// such batch: a receiving client writes once per acknowledgement, not once per message.
    pub(super) fn save(&mut self) -> Option<Output> {
        let open = matches!(self.state, State::Open { .. } | State::Closing { .. });
        let durable = self.durable.as_deref_mut()?;
        let last_id = self.outbox.last_id();
        // The newest message still queued, if any.
        let newest = self.outbox.live().last().map(|entry| entry.id);
        let unmarked = newest.is_some_and(|id| id > durable.written_mark);
        let mark_to = if open && unmarked {
            last_id
        } else {
            durable.written_mark
        };
        let sid = Some(self.sid.clone());
        let session_due = durable.written_sid != sid;
        let handled_news =
            durable.handled != durable.written_handled || !durable.unwritten_above.is_empty();
        let ack = core::mem::take(&mut durable.ack_wanted);
        let due = durable.rewrite
            || session_due
            || newest.is_some_and(|id| id > durable.written_id)
            || mark_to != durable.written_mark
            || (ack && handled_news)
            || self.outbox.removed_count() >= LEFT_BATCH;
        if !due {
            if ack {
                // The watermark is written already: the acknowledgement waits for that batch.
                if let Some(last) = durable.waiting.last_mut() {
                    last.ack = true;
                }
            }
            return None;
        }
        let left: Vec<u64> = self
            .outbox
            .take_removed()
            .into_iter()
            .filter(|&id| id <= durable.written_id)
            .collect();
        let live = self.outbox.live();
        let rewrite = durable.rewrite
            || (durable.appended > REWRITE_AFTER
                && durable.appended > 2 * (self.outbox.bytes() + 1024));
        let epoch_ms = durable.epoch_ms;
        let wall = |at: Instant| epoch_ms + at.as_millis();
        let queued = |entry: &Entry| Queued {
            id: entry.id,
            request: entry.settles == Settles::OnReply,
            expires: self.outbox.expiry_of(entry.id).map(wall),
            deadline: self.requests.get(entry.id).map(wall),
            frame: entry.frame.clone(),
        };
        let mut text = String::new();
        if rewrite {
            journal::write_session_line(&mut text, &self.session, self.sid.as_deref());
            journal::write_number_line(&mut text, "w", durable.handled);
            for &seq in &durable.handled_above {
                journal::write_number_line(&mut text, "h", seq);
            }
            for entry in live {
                journal::write_queued_line(&mut text, &queued(entry));
            }
            // After the queued messages, whose ids must each be above the last one read.
            journal::write_number_line(&mut text, "n", last_id);
            journal::write_number_line(&mut text, "m", mark_to);
        } else {
            if session_due {
                journal::write_session_line(&mut text, &self.session, self.sid.as_deref());
            }
            if !left.is_empty() {
                text.push_str("{\"x\":\"");
                journal::write_ranges(&mut text, &left);
                text.push_str("\"}\n");
            }
            for entry in live.iter().filter(|entry| entry.id > durable.written_id) {
                journal::write_queued_line(&mut text, &queued(entry));
            }
            if mark_to != durable.written_mark {
                journal::write_number_line(&mut text, "m", mark_to);
            }
            if durable.handled != durable.written_handled {
                journal::write_number_line(&mut text, "w", durable.handled);
            }
            for &seq in durable
                .unwritten_above
                .iter()
                .filter(|&&seq| seq > durable.handled)
            {
                journal::write_number_line(&mut text, "h", seq);
            }
        }
        durable.issued += 1;
        journal::write_number_line(&mut text, "c", durable.issued);
        durable.appended = if rewrite {
            text.len()
        } else {
            durable.appended + text.len()
        };
        durable.rewrite = false;
        durable.written_id = last_id;
        durable.written_mark = mark_to;
        durable.written_handled = durable.handled;
        durable.written_sid = sid;
        durable.unwritten_above.clear();
        durable.waiting.push(Waiting {
            mark: durable.issued,
            cleared: mark_to,
            generation: durable.generation,
            handled: durable.handled,
            ack,
        });
        Some(Output::Save(Save {
            mark: durable.issued,
            text,
            rewrite,
        }))
    }
}

/// What the application is told about a restored message: its envelope, read back.
fn describe(queued: &Queued) -> RestoredMessage {
    let message = match Frame::decode(&queued.frame) {
        Ok(Frame::Message(message)) => Some(message),
        _ => None,
    };
    RestoredMessage {
        id: queued.id,
        kind: message
            .as_ref()
            .map(|message| String::from(&*message.kind))
            .unwrap_or_default(),
        payload: message
            .as_ref()
            .and_then(|message| message.payload.map(str::to_owned)),
        to: message
            .as_ref()
            .and_then(|message| message.to.as_deref().map(str::to_owned)),
        request: queued.request,
    }
}
