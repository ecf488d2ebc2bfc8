//! The fleet-wide change budget: named operation classes with a limit per window, shared by
//! every rollout and persisted with the rest of the state, so a restart never resets what was
//! spent.
//!
//! Spends are counted in a fixed number of time buckets per window ([`BUCKETS`]), not one
//! entry per operation, so the persisted budget is the same size for 10 operations or 100k.
//! A bucket leaves the window only once its *end* is older than the window: every spend stays
//! counted for at least the whole window, so a budget is never exceeded; it may be under-used
//! by up to one bucket (a spend early in a bucket is counted up to `window / BUCKETS` longer
//! than a sliding window would).
//!
//! A new commit may change a class's window or limit. The buckets keep their times, so what
//! was spent still counts: under a shorter window it leaves sooner, under a longer one it
//! stays longer — except spends already forgotten because they left the window in force when
//! they were pruned, which a longer window does not bring back. A new limit applies at once to
//! what is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;
use endstate_core::policy::Policy;

/// Buckets per window.
pub const BUCKETS: u64 = 16;

/// The most buckets one class keeps: a window's worth, plus those of an earlier, different
/// window still counting. Past it, the two oldest are merged (which only counts them longer).
const MAX_BUCKETS: usize = 2 * BUCKETS as usize + 2;

pub use endstate_core::policy::BudgetClass;

/// Spends counted in one time bucket `[start, end)`; persisted as `[start, end, count]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(Time, Time, u64)", into = "(Time, Time, u64)")]
pub struct Bucket {
    /// When the bucket starts (ms).
    pub start: Time,
    /// When it ends (ms): it counts until `end + window`.
    pub end: Time,
    /// Operations spent in it.
    pub count: u64,
}

impl From<(Time, Time, u64)> for Bucket {
    fn from((start, end, count): (Time, Time, u64)) -> Self {
        Bucket { start, end, count }
    }
}

impl From<Bucket> for (Time, Time, u64) {
    fn from(b: Bucket) -> Self {
        (b.start, b.end, b.count)
    }
}

/// What each class spent, in buckets, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budgets {
    /// Class → buckets, oldest first.
    #[serde(default)]
    spent: BTreeMap<BudgetClass, Vec<Bucket>>,
}

impl Budgets {
    /// How many operations of `class` may start at `now` (`usize::MAX` when unlimited).
    pub fn available(&self, policy: &Policy, class: Option<BudgetClass>, now: Time) -> usize {
        let Some(limit) = class.and_then(|c| policy.budget(c)) else {
            return usize::MAX;
        };
        let used = self.used(limit.class, limit.window, now);
        limit.limit.saturating_sub(used).min(usize::MAX as u64) as usize
    }

    /// What `class` spent that still counts at `now` under `window`.
    pub fn used(&self, class: BudgetClass, window: Duration, now: Time) -> u64 {
        let horizon = now - window;
        self.spent
            .get(&class)
            .into_iter()
            .flatten()
            .filter(|b| b.end > horizon)
            .map(|b| b.count)
            .sum()
    }

    /// Gives back `count` of `class` spent at `at` (a change admitted then and never made).
    pub fn refund(&mut self, class: Option<BudgetClass>, count: u64, at: Time) {
        let Some(buckets) = class.and_then(|c| self.spent.get_mut(&c)) else {
            return;
        };
        if let Some(bucket) = buckets.iter_mut().rev().find(|b| b.start <= at) {
            bucket.count = bucket.count.saturating_sub(count);
        }
    }

    /// Records `count` operations of `class` at `now`, and forgets buckets that left the
    /// class's window.
    pub fn spend(&mut self, policy: &Policy, class: Option<BudgetClass>, count: u64, now: Time) {
        let (Some(class), true) = (class, count > 0) else {
            return;
        };
        // Unlimited classes are counted too (in hour buckets), so a limit added by a later
        // commit sees what was spent.
        let window = policy
            .budget(class)
            .map_or(Duration::from_secs(3600), |l| l.window);
        let width = (window.as_millis() as u64 / BUCKETS).max(1000) as i64;
        let buckets = self.spent.entry(class).or_default();
        match buckets.last_mut() {
            Some(b) if b.start <= now && now < b.end => b.count += count,
            _ => {
                let start = now.millis().div_euclid(width) * width;
                buckets.push(Bucket {
                    start: Time(start),
                    end: Time(start + width),
                    count,
                });
            }
        }
        let horizon = now - window;
        buckets.retain(|b| b.end > horizon);
        while buckets.len() > MAX_BUCKETS {
            let second = buckets.remove(1);
            let first = &mut buckets[0];
            first.end = first.end.max(second.end);
            first.count += second.count;
        }
    }

    /// When `class` next has room for one operation: the moment enough buckets leave the
    /// window. `None` when it has room now, or never will (a limit of zero).
    pub fn next_room(
        &self,
        policy: &Policy,
        class: Option<BudgetClass>,
        now: Time,
    ) -> Option<Time> {
        let limit = class.and_then(|c| policy.budget(c))?;
        if limit.limit == 0 {
            return None;
        }
        let horizon = now - limit.window;
        let mut counting: Vec<&Bucket> = self
            .spent
            .get(&limit.class)?
            .iter()
            .filter(|b| b.end > horizon)
            .collect();
        let mut used: u64 = counting.iter().map(|b| b.count).sum();
        if used < limit.limit {
            return None;
        }
        counting.sort_by_key(|b| b.end);
        for b in counting {
            used -= b.count;
            if used < limit.limit {
                return Some(b.end + limit.window);
            }
        }
        None
    }

    /// Per class with a limit: spent within its window at `now`, and the limit.
    pub fn usage(&self, policy: &Policy, now: Time) -> Vec<(BudgetClass, u64, u64)> {
        policy
            .budgets
            .iter()
            .map(|b| (b.class, self.used(b.class, b.window, now), b.limit))
            .collect()
    }

    /// The buckets kept, over all classes.
    pub fn buckets(&self) -> usize {
        self.spent.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use endstate_core::policy::BudgetLimit;

    fn policy(limit: u64, window: u64) -> Policy {
        Policy {
            budgets: vec![BudgetLimit {
                class: BudgetClass::MachineUpdate,
                limit,
                window: Duration::from_secs(window),
            }],
            ..Policy::default()
        }
    }

    const UPDATE: Option<BudgetClass> = Some(BudgetClass::MachineUpdate);

    #[test]
    fn a_bucket_leaves_the_window_when_its_end_does() {
        // A 160 s window: 10 s buckets.
        let p = policy(10, 160);
        let mut b = Budgets::default();
        b.spend(&p, UPDATE, 7, Time(3_000));
        b.spend(&p, UPDATE, 3, Time(30_000));
        assert_eq!(b.available(&p, UPDATE, Time(30_000)), 0);
        // The first bucket is [0 s, 10 s): it counts until 170 s, not 163 s.
        assert_eq!(b.next_room(&p, UPDATE, Time(30_000)), Some(Time(170_000)));
        assert_eq!(b.available(&p, UPDATE, Time(169_999)), 0);
        assert_eq!(b.available(&p, UPDATE, Time(170_000)), 7);
        assert_eq!(
            b.available(&p, Some(BudgetClass::ClusterUpdate), Time(0)),
            usize::MAX
        );
        assert_eq!(
            b.usage(&p, Time(30_000)),
            vec![(BudgetClass::MachineUpdate, 10, 10)]
        );
    }

    #[test]
    fn the_bucket_count_is_bounded_whatever_is_spent() {
        let p = policy(1_000_000, 3600);
        let mut b = Budgets::default();
        for second in 0..20_000 {
            b.spend(&p, UPDATE, 5, Time(second * 1000));
        }
        assert!(b.buckets() <= BUCKETS as usize + 1, "{}", b.buckets());
        // A commit shortening the window to 16 minutes: old buckets leave as their ends do.
        let short = policy(1_000_000, 960);
        let now = Time(20_000_000);
        let counted = b.used(BudgetClass::MachineUpdate, short.budgets[0].window, now);
        assert!((5 * 960..=5 * (960 + 225)).contains(&counted), "{counted}");
        for second in 20_000..21_000 {
            b.spend(&short, UPDATE, 1, Time(second * 1000));
        }
        assert!(b.buckets() <= MAX_BUCKETS, "{}", b.buckets());
    }

    #[test]
    fn a_spend_is_never_forgotten_before_its_window_passed() {
        let p = policy(5, 100);
        let mut b = Budgets::default();
        for t in [0, 999, 6_249, 6_250, 55_555] {
            b.spend(&p, UPDATE, 1, Time(t));
        }
        for t in [0i64, 1000, 50_000, 99_999] {
            assert!(
                b.used(
                    BudgetClass::MachineUpdate,
                    Duration::from_secs(100),
                    Time(t)
                ) >= 1
            );
        }
        // The last spend, at 55.555 s, counts at least until 155.555 s.
        assert!(
            b.used(
                BudgetClass::MachineUpdate,
                Duration::from_secs(100),
                Time(155_554)
            ) >= 1
        );
    }

    #[test]
    fn classes_serialise_by_their_policy_names() {
        let mut b = Budgets::default();
        b.spend(&policy(1, 60), Some(BudgetClass::MachineDelete), 1, Time(0));
        let json = serde_json::to_value(&b).unwrap();
        assert!(json["spent"].get("machine-delete").is_some(), "{json}");
        assert_eq!(
            BudgetClass::parse("cluster-update"),
            Some(BudgetClass::ClusterUpdate)
        );
    }
}
