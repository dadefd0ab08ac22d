//! Time as the core sees it: a point given by the driver, never read from a clock.

use core::ops::Add;
use core::time::Duration;

/// A point in time, in whole milliseconds since an origin the driver chooses (the start of the
/// process natively, `performance.now()`'s origin in a browser, zero in simulations).
///
/// The core never asks for the current time: every input carries it. Milliseconds are fine
/// enough for reconnect delays, heartbeats and timeouts, and they exist identically on every
/// platform (`std::time::Instant::now()` panics on `wasm32-unknown-unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this instant is (zero if it is not later).
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, duration: Duration) -> Instant {
        Instant(self.0.saturating_add(millis(duration)))
    }
}

/// Whole milliseconds in `duration`, saturating at `u64::MAX`: `Duration::as_millis` without
/// its `u128` (whose multiplication and conversions are library calls in the wasm build).
pub(crate) fn millis(duration: Duration) -> u64 {
    // A comparison rather than `saturating_mul`, whose overflow check is a 128-bit product.
    let secs = duration.as_secs();
    if secs > u64::MAX / 1000 {
        return u64::MAX;
    }
    (secs * 1000).saturating_add(u64::from(duration.subsec_millis()))
}
