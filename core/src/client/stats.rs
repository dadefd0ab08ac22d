//! What a client measured and counted, for dashboards and connection badges.

use core::time::Duration;

use crate::Instant;

/// A snapshot of a client's statistics ([`ClientCore::stats`](super::ClientCore::stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// The last round-trip time measured: the hello to its welcome, then every heartbeat
    /// `~ping` to its `~pong`. `None` before the first measurement.
    pub rtt: Option<Duration>,
    /// The smoothed round-trip time (RFC 6298: each sample moves it by an eighth of the
    /// difference).
    pub smoothed_rtt: Option<Duration>,
    /// How many times the connection opened again after the first open.
    pub reconnects: u64,
    /// Frames sent again on a new connection because the server had not acknowledged them.
    pub retransmitted: u64,
    /// Messages waiting to be sent or acknowledged.
    pub queued_messages: usize,
    /// Bytes of encoded frames waiting to be sent or acknowledged.
    pub queued_bytes: usize,
    /// Messages (sends, requests, responses) the server acknowledged.
    pub acknowledged: u64,
    /// Messages that failed (a request acknowledged and then timed out counts in both).
    pub failed: u64,
}

/// The round-trip clock: one probe (a hello or a ping) in flight at a time. Whole
/// milliseconds in `u64`, as the core's clock: `Duration` arithmetic carries overflow panics
/// the wasm build does without.
#[derive(Debug, Default)]
pub(crate) struct RoundTrips {
    probe: Option<Instant>,
    last: Option<u64>,
    smoothed: Option<u64>,
}

impl RoundTrips {
    /// A probe left at `now`; a probe still unanswered is forgotten (its answer will be taken
    /// for this one's, which can only make the sample shorter, never longer).
    pub(crate) fn sent(&mut self, now: Instant) {
        self.probe = Some(now);
    }

    /// The answer to the probe arrived at `now`.
    pub(crate) fn answered(&mut self, now: Instant) {
        let Some(sent) = self.probe.take() else {
            return;
        };
        let sample = now.as_millis().saturating_sub(sent.as_millis());
        self.last = Some(sample);
        // RFC 6298: 7/8 of the old plus 1/8 of the new.
        self.smoothed = Some(self.smoothed.map_or(sample, |old| {
            old.saturating_mul(7).saturating_add(sample) / 8
        }));
    }

    /// The connection is gone: an answer can no longer come.
    pub(crate) fn lost(&mut self) {
        self.probe = None;
    }

    /// The last sample.
    pub(crate) fn last(&self) -> Option<Duration> {
        self.last.map(Duration::from_millis)
    }

    /// The smoothed value.
    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.smoothed.map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_smoothing() {
        let at = Instant::from_millis;
        let mut rtt = RoundTrips::default();
        let ms = |n| Some(Duration::from_millis(n));
        rtt.answered(at(5));
        assert_eq!(rtt.last(), None, "no probe, no sample");
        rtt.sent(at(10));
        rtt.answered(at(90));
        assert_eq!((rtt.last(), rtt.smoothed()), (ms(80), ms(80)));
        rtt.sent(at(100));
        rtt.answered(at(116));
        assert_eq!((rtt.last(), rtt.smoothed()), (ms(16), ms(72)));
        rtt.sent(at(200));
        rtt.lost();
        rtt.answered(at(300));
        assert_eq!(rtt.last(), ms(16), "lost probes say nothing");
    }
}
