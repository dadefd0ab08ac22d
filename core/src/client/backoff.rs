//! Reconnection delays: exponential growth with a cap and jitter on every attempt.

use core::time::Duration;

use super::Options;
use crate::time::millis;

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
    let min = millis(options.min_reconnection_delay) as f64;
    let max = (millis(options.max_reconnection_delay) as f64).max(min);
    let base = min
        * powi(
            options.reconnection_delay_grow_factor.max(1.0),
            attempt.saturating_sub(1),
        );
    let jitter = options.reconnection_jitter.clamp(0.0, 1.0);
    let hi = (base * (1.0 + jitter)).min(max);
    // Not `f64::clamp`: its NaN assertion formats floats when it panics, which pulls about
    // 15 KB of float formatting into the wasm build. `max >= min` holds by construction.
    let lo = (hi * (1.0 - jitter)).max(min).min(max);
    // Whole milliseconds: the core's clock has no finer grain.
    (
        Duration::from_millis(round(lo)),
        Duration::from_millis(round(hi.max(lo))),
    )
}

/// `base` to the power `exponent`, by squaring: what `f64::powi` does (compiler-rt's
/// `__powidf2`), which is std's, not core's, and the core builds without std for the browser.
fn powi(mut base: f64, mut exponent: u32) -> f64 {
    let mut result = 1.0;
    while exponent != 0 {
        if exponent & 1 == 1 {
            result *= base;
        }
        exponent >>= 1;
        base *= base;
    }
    result
}

/// `x.round() as u64` for `x >= 0` (half away from zero), without std's `f64::round`. Below
/// 2^53 the fraction `x - trunc(x)` is exact; above, every `f64` is whole.
fn round(x: f64) -> u64 {
    let whole = x as u64;
    if x - whole as f64 >= 0.5 {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// Draws the delay before reconnect `attempt` from [`delay_range`].
pub(crate) fn next_delay(options: &Options, attempt: u32, rng: &mut Rng) -> Duration {
    let (lo, hi) = delay_range(options, attempt);
    // `hi >= lo`: saturating only spares the overflow panic's code.
    let spread = hi.saturating_sub(lo);
    let jitter = (rng.next_unit() * (millis(spread) as f64 + 1.0)) as u64;
    lo.saturating_add(Duration::from_millis(jitter).min(spread))
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
    fn powi_and_round_match_std() {
        for base in [1.0, 1.3, 1.5, 2.0, 10.0] {
            for exponent in [0, 1, 2, 3, 7, 30, 64, 1000] {
                let ours = powi(base, exponent);
                let std = base.powi(exponent as i32);
                let close = ours == std || ((ours - std) / std).abs() <= 1e-15;
                assert!(close, "{base}^{exponent}: {ours} vs {std}");
            }
        }
        for x in [
            0.0,
            0.4,
            0.5,
            0.49999999999999994,
            1.5,
            2.5,
            1e15 + 0.5,
            1e300,
        ] {
            assert_eq!(round(x), x.round() as u64, "{x}");
        }
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
