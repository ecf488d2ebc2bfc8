//! When to fetch: an interval with jitter, and whatever the webhook or the file watcher send.
//!
//! ```text
//!   webhook ──┐
//!   watcher ──┼──▶ Triggers::wait ──▶ Trigger  (queued triggers are coalesced into one)
//!   interval ─┘     (or the source's backoff delay while fetches fail)
//! ```

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// Why a fetch is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The interval elapsed (or the backoff delay after a failure).
    Interval,
    /// A push webhook arrived.
    Webhook {
        /// `github`, `gitlab` or `generic`.
        provider: &'static str,
        /// The pushed commit, when the payload names it.
        commit: Option<String>,
    },
    /// Files changed in a watched working tree.
    LocalChange {
        /// Some of the changed paths.
        paths: Vec<PathBuf>,
    },
}

/// The interval between fetches, each one jittered so that many controllers do not fetch in
/// step. Deterministic for a seed.
#[derive(Clone, Debug)]
pub struct Schedule {
    interval: Duration,
    jitter: f64,
    state: u64,
}

impl Schedule {
    /// Every `interval`, moved by up to ±`jitter` of it (a fraction, clamped to 0..=0.5),
    /// drawn from `seed`.
    pub fn new(interval: Duration, jitter: f64, seed: u64) -> Self {
        Schedule {
            interval,
            jitter: jitter.clamp(0.0, 0.5),
            // xorshift must not start at zero.
            state: seed | 1,
        }
    }

    /// The schedule of a `Fleet`'s `spec.source.interval` (default `1m`), jittered by ±10%.
    pub fn from_spec(interval: Option<&str>, seed: u64) -> crate::Result<Self> {
        let interval = match interval {
            Some(text) => endstate_api::duration::parse(text)
                .map_err(|e| crate::Error::Config(format!("spec.source.interval: {e}")))?,
            None => Duration::from_secs(60),
        };
        if interval.is_zero() {
            return Err(crate::Error::Config(
                "spec.source.interval must be longer than 0".into(),
            ));
        }
        Ok(Schedule::new(interval, 0.1, seed))
    }

    /// The delay before the next fetch.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let draw = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        let unit = draw as f64 / (1u64 << 53) as f64; // [0, 1)
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        self.interval.mul_f64(factor)
    }
}

/// The trigger queue a controller waits on.
#[derive(Debug)]
pub struct Triggers {
    sender: Sender<Trigger>,
    receiver: Receiver<Trigger>,
    schedule: Schedule,
}

impl Triggers {
    /// A queue ticking on `schedule`.
    pub fn new(schedule: Schedule) -> Self {
        let (sender, receiver) = mpsc::channel();
        Triggers {
            sender,
            receiver,
            schedule,
        }
    }

    /// A sender for the webhook server and the file watcher.
    pub fn sender(&self) -> Sender<Trigger> {
        self.sender.clone()
    }

    /// Blocks until the next trigger. `retry_in` (from [`crate::Source::retry_in`]) replaces
    /// the interval while fetches fail. Triggers queued meanwhile are folded into the one
    /// returned: one fetch serves them all.
    pub fn wait(&mut self, retry_in: Option<Duration>) -> Trigger {
        let delay = retry_in.unwrap_or_else(|| self.schedule.next_delay());
        let first = match self.receiver.recv_timeout(delay) {
            Ok(trigger) => trigger,
            // The sender half lives in `self`, so the queue never disconnects.
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                return Trigger::Interval;
            }
        };
        while self.receiver.try_recv().is_ok() {}
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut s = Schedule::new(Duration::from_secs(60), 0.2, 7);
        let delays: Vec<Duration> = (0..1000).map(|_| s.next_delay()).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(48) && *d <= Duration::from_secs(72))
        );
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > Duration::from_secs(20), "{min:?}..{max:?}");
        // Deterministic for a seed.
        let mut again = Schedule::new(Duration::from_secs(60), 0.2, 7);
        assert_eq!(again.next_delay(), delays[0]);
    }

    #[test]
    fn fleet_intervals() {
        let mut s = Schedule::from_spec(Some("2m"), 3).unwrap();
        let d = s.next_delay();
        assert!(
            d >= Duration::from_secs(108) && d <= Duration::from_secs(132),
            "{d:?}"
        );
        assert!(Schedule::from_spec(Some("soon"), 3).is_err());
        assert!(Schedule::from_spec(Some("0"), 3).is_err());
    }

    #[test]
    fn queued_triggers_fold_into_one() {
        let mut t = Triggers::new(Schedule::new(Duration::from_secs(3600), 0.0, 1));
        let tx = t.sender();
        for _ in 0..3 {
            tx.send(Trigger::LocalChange { paths: Vec::new() }).unwrap();
        }
        assert_eq!(t.wait(None), Trigger::LocalChange { paths: Vec::new() });
        assert_eq!(t.wait(Some(Duration::ZERO)), Trigger::Interval);
    }
}
