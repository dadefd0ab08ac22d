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
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(millis))
    }
}
