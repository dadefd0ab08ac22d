//! A token bucket on the core's clock: the server's rate limit, and the client's pacing to it.
//! Plain millisecond arithmetic (no `Duration`): the client's copy is in the browser package.

use crate::Instant;

/// One token, in the bucket's units (thousandths of a token: the refill is exact per
/// millisecond for any whole rate per second).
pub(crate) const TOKEN: u64 = 1000;

/// `full / TOKEN` tokens at most, refilled at `per_second` tokens per second.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: u64,
    full: u64,
    level: u64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `size` tokens at `now`.
    pub(crate) fn new(per_second: u64, size: u64, now: Instant) -> Self {
        let full = size.max(1).saturating_mul(TOKEN);
        TokenBucket {
            per_second: per_second.max(1),
            full,
            level: full,
            at: now,
        }
    }

    /// Adds what flowed in since the last refill (whole milliseconds: the core's time has no
    /// finer grain, so frequent calls lose nothing); returns how many units that was.
    pub(crate) fn refill(&mut self, now: Instant) -> u64 {
        let elapsed = now.as_millis().saturating_sub(self.at.as_millis());
        if elapsed == 0 {
            return 0;
        }
        self.at = now;
        let gained = elapsed.saturating_mul(self.per_second);
        self.level = self.level.saturating_add(gained).min(self.full);
        gained
    }

    /// Whole tokens in the bucket.
    pub(crate) fn tokens(&self) -> u64 {
        self.level / TOKEN
    }

    /// Takes `n` tokens (as far as there are: the level never goes below zero).
    pub(crate) fn spend(&mut self, n: u64) {
        self.level = self.level.saturating_sub(n.saturating_mul(TOKEN));
    }

    /// When the bucket holds a whole token again (at the last refill if it does now).
    pub(crate) fn next_token(&self) -> Instant {
        let missing = TOKEN.saturating_sub(self.level);
        Instant::from_millis(self.at.as_millis() + missing.div_ceil(self.per_second))
    }
}
