//! The server's clock: tokio's (so that tests on a paused clock reach session expiry and
//! liveness timeouts), as the milliseconds the sans-IO core counts in.

use wsrelay_core::Instant;

/// Converts between tokio's clock and the core's milliseconds since the server started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Now, as the core counts.
    pub(crate) fn now(&self) -> Instant {
        let millis = self.origin.elapsed().as_millis();
        Instant::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// A core instant on tokio's clock.
    pub(crate) fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.origin + std::time::Duration::from_millis(at.as_millis())
    }
}
