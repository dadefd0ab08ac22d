//! A build without the feature `persist` (the browser package): no client persists its state,
//! and the journal's hooks in the machine do what a client that does not persist does.
//! `durable.rs` is the real thing.

use super::*;
use crate::client::events::Receipt;

impl ClientCore {
    /// A client that persists records that a handler finished; this one has nothing to record.
    pub fn handled(&mut self, _receipt: Receipt) {}

    /// Everything received may be acknowledged.
    pub(super) fn ackable(&self) -> u64 {
        self.received
    }

    pub(super) fn durable_ack_wanted(&mut self) {}

    pub(super) fn durable_hello(&mut self, _ack: u64) {}

    pub(super) fn durable_welcome(&mut self, _resumed: bool) {}

    /// Every frame is handed over, without a receipt.
    pub(super) fn receipt(&self, _seq: u64) -> Option<Option<Receipt>> {
        Some(None)
    }

    pub(super) fn mark_handled(&mut self, _seq: u64) {}

    /// No journal: nothing to save.
    pub(super) fn save(&mut self) -> Option<Output> {
        None
    }
}
