//! The one retry policy: how long to wait before trying again, and when to give up.
//!
//! Every retry in endstate uses it — a write the API server answered with a transient error
//! (`endstate-kube`), a watch that broke (its re-list), a fetch that failed
//! (`endstate-git`), a Fleet's loop that ended on an error (`endstate-runtime`) — each with its
//! own bounds, and each on the clock of the loop that waits. The delay doubles from `initial`
//! up to `max`; a jittered delay is drawn between half and all of it from a salt (the object,
//! the watch), so that requests failing together do not come back together, and stays the
//! same for the same salt and attempt. The client-side rate limiter's slowing down on 429s is
//! not a retry: it paces every request, failed or not.

use std::time::Duration;

use crate::hash::Fnv1a;

/// Bounded exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Attempts in all, the first included; `None` retries for ever.
    pub attempts: Option<u32>,
}

impl Backoff {
    /// Delays from `initial`, doubling, at most `max`, for ever.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempts: None,
        }
    }

    /// Gives up after `attempts` in all.
    pub const fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// The delay before retry `retry` (0-based): `initial`, doubled per retry, at most `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] drawn between half and all of it, from `salt` and the retry.
    pub fn jittered(&self, retry: u32, salt: &str) -> Duration {
        let full = self.delay(retry);
        let draw = Fnv1a::new()
            .write(salt.bytes().chain(retry.to_le_bytes()))
            .finish()
            % 512;
        full / 2 + full / 2 * draw as u32 / 511
    }

    /// Whether an operation that failed `failures` times is given up.
    pub fn gives_up(&self, failures: u32) -> bool {
        self.attempts.is_some_and(|a| failures >= a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_bound() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let delays: Vec<u64> = (0..7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_half_and_all_and_spreads_by_salt() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..100 {
            let d = b.jittered(3, &format!("m{i}"));
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800));
            seen.insert(d);
            assert_eq!(
                d,
                b.jittered(3, &format!("m{i}")),
                "the same salt, the same delay"
            );
        }
        assert!(seen.len() > 50, "{} distinct delays", seen.len());
    }

    #[test]
    fn attempts_bound_the_retries() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5)).attempts(3);
        assert!(!b.gives_up(2));
        assert!(b.gives_up(3));
        assert!(!Backoff::new(Duration::ZERO, Duration::ZERO).gives_up(u32::MAX));
    }
}
