//! Reconnection delays: exponential growth with a cap and jitter on every attempt.

use std::time::Duration;

use super::Options;

/// A small deterministic pseudo-random generator (SplitMix64). The driver seeds it from the
/// platform's entropy; simulations seed it with a constant, which makes runs reproducible.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The range a reconnection delay is drawn from for `attempt` (1 for the first reconnect).
///
/// The base delay is `min * grow^(attempt - 1)`, as in reconnecting-websocket. The draw is
/// uniform in `[hi * (1 - jitter), hi]` with `hi = min(base * (1 + jitter), max)`, then
/// clamped to `[min, max]`: the first reconnect spreads over 1.0 to 1.3 s by default, and
/// clients that reached the cap spread over 7 to 10 s instead of all retrying at once.
pub fn delay_range(options: &Options, attempt: u32) -> (Duration, Duration) {
    let min = options.min_reconnection_delay.as_millis() as f64;
    let max = (options.max_reconnection_delay.as_millis() as f64).max(min);
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = min
        * options
            .reconnection_delay_grow_factor
            .max(1.0)
            .powi(exponent);
    let jitter = options.reconnection_jitter.clamp(0.0, 1.0);
    let hi = (base * (1.0 + jitter)).min(max);
    // Not `f64::clamp`: its NaN assertion formats floats when it panics, which pulls about
    // 15 KB of float formatting into the wasm build. `max >= min` holds by construction.
    let lo = (hi * (1.0 - jitter)).max(min).min(max);
    // Whole milliseconds: the core's clock has no finer grain.
    (
        Duration::from_millis(lo.round() as u64),
        Duration::from_millis(hi.max(lo).round() as u64),
    )
}

/// Draws the delay before reconnect `attempt` from [`delay_range`].
pub(crate) fn next_delay(options: &Options, attempt: u32, rng: &mut Rng) -> Duration {
    let (lo, hi) = delay_range(options, attempt);
    let spread = (hi - lo).as_millis() as f64;
    lo + Duration::from_millis((rng.next_unit() * (spread + 1.0)) as u64).min(hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_grow_from_min_to_max() {
        let options = Options::default();
        let (lo, hi) = delay_range(&options, 1);
        assert_eq!((lo.as_millis(), hi.as_millis()), (1000, 1300));
        let (lo, hi) = delay_range(&options, 2);
        assert_eq!((lo.as_millis(), hi.as_millis()), (1183, 1690));
        let (lo, hi) = delay_range(&options, 30);
        assert_eq!((lo.as_millis(), hi.as_millis()), (7000, 10000));
    }

    #[test]
    fn every_draw_differs_and_stays_in_range() {
        let options = Options::default();
        let mut rng = Rng::new(7);
        let draws: Vec<_> = (0..20).map(|_| next_delay(&options, 1, &mut rng)).collect();
        assert!(draws.iter().all(|d| (1000..=1300).contains(&d.as_millis())));
        assert!(
            draws.windows(2).any(|w| w[0] != w[1]),
            "jitter on every attempt"
        );
    }

    #[test]
    fn zero_jitter_is_reconnecting_websocket() {
        let options = Options {
            reconnection_jitter: 0.0,
            ..Options::default()
        };
        let mut rng = Rng::new(1);
        assert_eq!(next_delay(&options, 1, &mut rng).as_millis(), 1000);
        assert_eq!(next_delay(&options, 2, &mut rng).as_millis(), 1300);
        assert_eq!(next_delay(&options, 3, &mut rng).as_millis(), 1690);
        assert_eq!(next_delay(&options, 50, &mut rng).as_millis(), 10000);
    }
}
