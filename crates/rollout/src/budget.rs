//! The fleet-wide change budget: named operation classes with a limit per sliding window,
//! shared by every rollout and persisted with the rest of the state, so a restart never
//! resets what was spent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::time::Time;

/// What each class spent, as (time, count) entries; entries that fall out of every window are
/// dropped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budgets {
    /// Class name → spends, oldest first.
    pub spent: BTreeMap<String, Vec<(Time, u64)>>,
}

impl Budgets {
    /// How many operations of `class` may start at `now` (`usize::MAX` when unlimited).
    pub fn available(&self, policy: &Policy, class: Option<&str>, now: Time) -> usize {
        let Some(limit) = class.and_then(|c| policy.budget(c)) else {
            return usize::MAX;
        };
        let used = self.used(&limit.class, now - limit.window);
        limit.limit.saturating_sub(used) as usize
    }

    /// What `class` spent after `since`.
    pub fn used(&self, class: &str, since: Time) -> u64 {
        self.spent
            .get(class)
            .into_iter()
            .flatten()
            .filter(|(t, _)| *t > since)
            .map(|(_, n)| n)
            .sum()
    }

    /// Records `count` operations of `class` at `now`, and forgets spends older than the
    /// class's window.
    pub fn spend(&mut self, policy: &Policy, class: Option<&str>, count: u64, now: Time) {
        let (Some(class), true) = (class, count > 0) else {
            return;
        };
        let entries = self.spent.entry(class.to_owned()).or_default();
        match entries.last_mut() {
            Some((t, n)) if *t == now => *n += count,
            _ => entries.push((now, count)),
        }
        if let Some(limit) = policy.budget(class) {
            let horizon = now - limit.window;
            entries.retain(|(t, _)| *t > horizon);
        }
    }

    /// When `class` next has room for one operation: the moment enough old spends leave the
    /// window. `None` when it has room now, or never will (a limit of zero).
    pub fn next_room(&self, policy: &Policy, class: Option<&str>, now: Time) -> Option<Time> {
        let limit = class.and_then(|c| policy.budget(c))?;
        if limit.limit == 0 {
            return None;
        }
        let horizon = now - limit.window;
        let live: Vec<&(Time, u64)> = self
            .spent
            .get(&limit.class)?
            .iter()
            .filter(|(t, _)| *t > horizon)
            .collect();
        let mut used: u64 = live.iter().map(|(_, n)| n).sum();
        if used < limit.limit {
            return None;
        }
        for (t, n) in live {
            used -= n;
            if used < limit.limit {
                return Some(*t + limit.window + std::time::Duration::from_millis(1));
            }
        }
        None
    }

    /// Spends per class within its window at `now`, for status.
    pub fn usage(&self, policy: &Policy, now: Time) -> Vec<(String, u64, u64)> {
        policy
            .budgets
            .iter()
            .map(|b| {
                (
                    b.class.clone(),
                    self.used(&b.class, now - b.window),
                    b.limit,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::BudgetLimit;

    fn policy(limit: u64, window: u64) -> Policy {
        Policy {
            budgets: vec![BudgetLimit {
                class: "machine-update".into(),
                limit,
                window: Duration::from_secs(window),
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn spends_slide_out_of_the_window() {
        let p = policy(10, 60);
        let mut b = Budgets::default();
        let class = Some("machine-update");
        b.spend(&p, class, 7, Time(0));
        b.spend(&p, class, 3, Time(30_000));
        assert_eq!(b.available(&p, class, Time(30_000)), 0);
        assert_eq!(b.next_room(&p, class, Time(30_000)), Some(Time(60_001)));
        assert_eq!(b.available(&p, class, Time(60_001)), 7);
        assert_eq!(b.available(&p, Some("cluster-update"), Time(0)), usize::MAX);
    }
}
