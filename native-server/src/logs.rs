//! Log lines a client can provoke at will (invalid frames, refused connections, accept errors)
//! are rate-limited: a flood must not become a flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Lets at most `PER_SECOND` lines of one kind through per second; the ones held back are
/// counted and reported with the next line let through.
#[derive(Debug)]
pub(crate) struct LogLimit {
    /// The current second (since the first use) in the high 32 bits, lines let through in it
    /// in the low 32 bits.
    slot: AtomicU64,
    suppressed: AtomicU64,
}

const PER_SECOND: u64 = 10;

fn second() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

impl LogLimit {
    pub(crate) const fn new() -> Self {
        LogLimit {
            slot: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one let through)` when this line may be logged.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = second();
        let mut current = self.slot.load(Ordering::Relaxed);
        loop {
            let (at, count) = (current >> 32, current & 0xffff_ffff);
            let next = if at == now {
                if count >= PER_SECOND {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (now << 32) | 1
            };
            match self.slot.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
}

/// At most 64 characters of text a peer chose (a header, a reason), for a log line.
pub(crate) fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((cut, _)) => text.get(..cut).unwrap_or(text),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_lines_is_cut_to_the_limit() {
        let limit = LogLimit::new();
        let allowed = (0..1000).filter(|_| limit.allow().is_some()).count();
        // Two seconds at most can start during the loop.
        assert!((10..=20).contains(&allowed), "{allowed}");
        assert_eq!(clip(&"é".repeat(100)).chars().count(), 64);
    }
}
