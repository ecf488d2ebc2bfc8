//! How long a plan takes, at worst: the engine's admission rules (`maxUnavailable`, the
//! budgets, the maintenance windows) walked in virtual time with every change taking the whole
//! gate timeout to become healthy, as [`Engine`](crate::Engine) would admit them. Metric gates
//! are not timed: one that does not answer can hold a bake up to the gate timeout longer.
//!
//! Pure, like the plan: the same plan, policy, spent budgets and `now` give the same estimate.
//! Approvals are not waited for: a wave that holds for approval is marked, and the waves after
//! it are timed as if it were approved at once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::budget::{BudgetClass, Budgets};
use crate::engine::FLIGHT_BUCKETS;
use crate::plan::{self, Plan, StageSpec};
use crate::time::{Time, next_window_open};
use endstate_core::policy::Policy;

/// The estimate of one wave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveEstimate {
    /// When its first change can start: after the wave before it, inside a window, with
    /// budget room.
    pub start: Time,
    /// When its last change is healthy (at worst) and its bake is over.
    pub end: Time,
    /// Rounds of at most `maxUnavailable` changes.
    pub rounds: u64,
    /// Time spent waiting for a maintenance window to open.
    pub window_wait: Duration,
    /// Time spent waiting for budget room, per class.
    pub budget_wait: BTreeMap<BudgetClass, Duration>,
    /// Whether the wave never finishes: a class with a limit of zero, or no window ever opens.
    pub blocked: Option<String>,
}

/// What the rollout spends from one budget class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetUse {
    /// The class.
    pub class: BudgetClass,
    /// The plan's changes of the class.
    pub spends: u64,
    /// Spent already within the window at `now` (from the persisted budgets; zero without).
    pub spent: u64,
    /// The class's limit and window, when it has one.
    pub limit: Option<(u64, Duration)>,
    /// How long the rollout waits for room in the class, in all.
    pub wait: Duration,
}

/// The estimate of a whole plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Per stage, in order.
    pub waves: Vec<WaveEstimate>,
    /// Per class the plan spends from, in class order.
    pub budgets: Vec<BudgetUse>,
}

impl Estimate {
    /// When the last wave is done, if every wave finishes.
    pub fn end(&self) -> Option<Time> {
        if self.waves.iter().any(|w| w.blocked.is_some()) {
            return None;
        }
        self.waves.last().map(|w| w.end)
    }
}

/// Walks `stages` of `plan` from `now`, with `budgets` already spent.
pub fn estimate(
    plan: &Plan,
    stages: &[StageSpec],
    policy: &Policy,
    budgets: &Budgets,
    now: Time,
) -> Estimate {
    let mut budgets = budgets.clone();
    let mut uses: BTreeMap<BudgetClass, BudgetUse> = BTreeMap::new();
    let mut waves = Vec::with_capacity(stages.len());
    let mut t = now;
    for stage in stages {
        let mut wave = WaveEstimate {
            start: t,
            end: t,
            rounds: 0,
            window_wait: Duration::ZERO,
            budget_wait: BTreeMap::new(),
            blocked: None,
        };
        let changes: Vec<Option<BudgetClass>> = (stage.start..stage.end)
            .filter_map(|p| {
                let op = plan.op(stage.seq, p)?;
                Some(plan::class(plan.id(stage.seq, p).kind, op))
            })
            .collect();
        let clusters: Vec<Option<(u32, usize)>> = (stage.start..stage.end)
            .filter(|p| plan.op(stage.seq, *p).is_some())
            .map(|p| plan.cluster_limit(policy, stage.seq, p))
            .collect();
        for class in changes.iter().flatten() {
            let used = uses.entry(*class).or_insert_with(|| BudgetUse {
                class: *class,
                spends: 0,
                spent: policy
                    .budget(*class)
                    .map_or(0, |l| budgets.used(*class, l.window, now)),
                limit: policy.budget(*class).map(|l| (l.limit, l.window)),
                wait: Duration::ZERO,
            });
            used.spends += 1;
        }
        let max = (stage.max_unavailable as usize).max(1);
        let mut next = 0;
        let mut first = true;
        while next < changes.len() {
            if stage.seq.gated() && !policy.windows.is_empty() {
                let (weekday, minute) = t.weekday_and_minute();
                if !policy.window_open(weekday, minute) {
                    let Some(open) = next_window_open(policy, t) else {
                        wave.blocked = Some("no maintenance window ever opens".to_owned());
                        break;
                    };
                    wave.window_wait += open.since(t);
                    t = open;
                }
            }
            // Admit a round as the engine does: in order, up to `maxUnavailable`, until a
            // change's Cluster is at its limit or its class has no room.
            let mut spends: BTreeMap<BudgetClass, u64> = BTreeMap::new();
            let mut per_cluster: BTreeMap<u32, usize> = BTreeMap::new();
            let mut admitted = 0;
            let mut blocked_on = None;
            while admitted < max && next + admitted < changes.len() {
                if let Some((c, limit)) = clusters[next + admitted] {
                    let busy = per_cluster.entry(c).or_default();
                    if *busy >= limit {
                        break;
                    }
                    *busy += 1;
                }
                let class = changes[next + admitted];
                let spent = class.map_or(0, |c| spends.get(&c).copied().unwrap_or(0)) as usize;
                if budgets.available(policy, class, t) <= spent {
                    blocked_on = class;
                    break;
                }
                if let Some(c) = class {
                    *spends.entry(c).or_default() += 1;
                }
                admitted += 1;
            }
            if admitted == 0 {
                let class = blocked_on.expect("only a budget stops a round before it starts");
                let Some(room) = budgets.next_room(policy, Some(class), t) else {
                    wave.blocked = Some(format!("budget {class} has a limit of 0"));
                    break;
                };
                let waited = room.since(t);
                *wave.budget_wait.entry(class).or_default() += waited;
                if let Some(u) = uses.get_mut(&class) {
                    u.wait += waited;
                }
                t = room;
                continue;
            }
            for (class, n) in spends {
                budgets.spend(policy, Some(class), n, t);
            }
            if first {
                wave.start = t;
                first = false;
            }
            next += admitted;
            wave.rounds += 1;
            if stage.seq.gated() {
                t = t + round_at_worst(policy.gate_timeout);
            }
        }
        if wave.blocked.is_none() {
            t = t + stage.bake();
        }
        wave.end = t;
        let blocked = wave.blocked.is_some();
        waves.push(wave);
        if blocked {
            break;
        }
    }
    Estimate {
        waves,
        budgets: uses.into_values().collect(),
    }
}

/// The longest a round of changes can take before each is healthy or failed: the gate
/// timeout, counted from its start time rounded up to a flight bucket (see
/// [`FLIGHT_BUCKETS`]).
fn round_at_worst(gate_timeout: Duration) -> Duration {
    gate_timeout + gate_timeout / FLIGHT_BUCKETS as u32
}

#[cfg(test)]
mod tests {
    use endstate_api::Machine;
    use endstate_core::FleetObject;

    use super::*;
    use crate::plan::Inputs;
    use endstate_core::policy::{Amount, BudgetLimit, Window};

    const MINUTE: Duration = Duration::from_secs(60);

    fn machines(n: usize, kubelet: &str) -> Vec<FleetObject> {
        (0..n)
            .map(|i| {
                Machine::test(&format!("m-{i:03}"))
                    .in_cluster("c")
                    .ip("10.0.0.1")
                    .hostname(format!("m-{i:03}"))
                    .idc(["a", "b"][i % 2])
                    .package("kubelet", kubelet)
                    .namespace("ns")
                    .build()
                    .into()
            })
            .collect()
    }

    /// Waves `10%` (bake 10m) and `100%`, `maxUnavailable: 10`, gate timeout 16m (a round takes
    /// 17m at worst: the start rounds up to a bucket of a minute).
    fn policy() -> Policy {
        let mut p = Policy::default();
        p.machines.waves[0].size = Amount::Percent(10.0);
        p.machines.waves[0].bake = 10 * MINUTE;
        p.machines.waves.truncate(1);
        p.machines.waves.push(endstate_core::policy::WaveSpec {
            name: Some("rest".into()),
            size: Amount::Percent(100.0),
            bake: Duration::ZERO,
            pause: false,
        });
        p.machines.max_unavailable = Amount::Count(10);
        p.gate_timeout = 16 * MINUTE;
        p
    }

    fn run(policy: &Policy, budgets: &Budgets, now: Time) -> Estimate {
        let live = machines(100, "k1");
        let desired = machines(100, "k2");
        let plan = Plan::new(Inputs {
            desired: &desired,
            base: None,
            live: &live,
            fleet: &endstate_core::ownership::FleetId::new("ns", "f"),
            policy,
            orphans: None,
        });
        estimate(&plan, &plan.stages(policy), policy, budgets, now)
    }

    // 2026-11-30T00:00:00Z, a Monday.
    const MONDAY: Time = Time(1_795_996_800_000);

    /// At most 4 of Cluster `c`'s Machines at once: the canary's 10 take three rounds, not
    /// one, and the rest 23 rounds of 4.
    #[test]
    fn a_round_holds_at_most_a_clusters_share() {
        let mut policy = policy();
        policy.machines.max_unavailable_per_cluster = Some(Amount::Count(4));
        let cluster: FleetObject = endstate_api::Cluster::test("c")
            .namespace("ns")
            .build()
            .into();
        let (mut live, mut desired) = (machines(100, "k1"), machines(100, "k2"));
        live.push(cluster.clone());
        desired.push(cluster);
        let plan = Plan::new(Inputs {
            desired: &desired,
            base: None,
            live: &live,
            fleet: &endstate_core::ownership::FleetId::new("ns", "f"),
            policy: &policy,
            orphans: None,
        });
        let e = estimate(
            &plan,
            &plan.stages(&policy),
            &policy,
            &Budgets::default(),
            MONDAY,
        );
        let rounds: Vec<u64> = e.waves.iter().map(|w| w.rounds).collect();
        assert_eq!(rounds, [3, 23]);
    }

    #[test]
    fn each_wave_takes_its_rounds_of_gate_timeout_and_its_bake() {
        let e = run(&policy(), &Budgets::default(), MONDAY);
        let minutes = |w: &WaveEstimate| (w.start.since(MONDAY), w.end.since(MONDAY));
        // 10 changes, 10 at a time: one round of 17m, then the bake; then 90 in 9 rounds.
        assert_eq!(e.waves.len(), 2);
        assert_eq!(minutes(&e.waves[0]), (Duration::ZERO, 27 * MINUTE));
        assert_eq!(e.waves[1].rounds, 9);
        assert_eq!(minutes(&e.waves[1]), (27 * MINUTE, 180 * MINUTE));
        assert_eq!(e.end(), Some(MONDAY + 180 * MINUTE));
        assert_eq!(e.budgets.len(), 1);
        assert_eq!(e.budgets[0].spends, 100);
        assert_eq!(e.budgets[0].wait, Duration::ZERO);
    }

    #[test]
    fn a_spent_budget_delays_the_waves_by_its_window() {
        let mut p = policy();
        // Rounds of about a minute: the budget, not the gates, sets the pace.
        p.gate_timeout = MINUTE;
        p.budgets.push(BudgetLimit {
            class: BudgetClass::MachineUpdate,
            limit: 50,
            window: Duration::from_secs(3600),
        });
        // 45 of the 50 spent a minute ago: 5 may start now, then nothing for an hour.
        let mut spent = Budgets::default();
        spent.spend(&p, Some(BudgetClass::MachineUpdate), 45, MONDAY - MINUTE);
        let e = run(&p, &spent, MONDAY);
        assert_eq!(e.budgets[0].spent, 45);
        assert_eq!(e.budgets[0].spends, 100);
        assert!(e.budgets[0].wait >= 50 * MINUTE, "{:?}", e.budgets[0].wait);
        assert!(e.end().unwrap() > MONDAY + 2 * 60 * MINUTE, "{:?}", e.end());
        assert!(!e.waves[0].budget_wait.is_empty() || !e.waves[1].budget_wait.is_empty());
        // With nothing spent before, the 100 changes need two windows' worth: one wait.
        let fresh = run(&p, &Budgets::default(), MONDAY);
        assert!(fresh.budgets[0].wait > Duration::ZERO);
        assert!(fresh.budgets[0].wait < e.budgets[0].wait + 60 * MINUTE);
    }

    #[test]
    fn a_closed_window_delays_the_first_wave_until_it_opens() {
        let mut p = policy();
        // Tuesdays 02:00–06:00 UTC.
        p.windows.push(Window {
            days: vec![1],
            start: 120,
            end: 360,
        });
        assert_eq!(MONDAY.weekday_and_minute(), (0, 0));
        let e = run(&p, &Budgets::default(), MONDAY);
        assert_eq!(e.waves[0].start, MONDAY + 26 * 60 * MINUTE);
        assert_eq!(e.waves[0].window_wait, 26 * 60 * MINUTE);
        // 3h of work fits in the window.
        assert_eq!(e.end(), Some(MONDAY + 29 * 60 * MINUTE));
        let zero = Policy {
            budgets: vec![BudgetLimit {
                class: BudgetClass::MachineUpdate,
                limit: 0,
                window: Duration::from_secs(60),
            }],
            ..policy()
        };
        let e = run(&zero, &Budgets::default(), MONDAY);
        assert_eq!(e.end(), None);
        assert!(
            e.waves[0]
                .blocked
                .as_deref()
                .unwrap()
                .contains("limit of 0")
        );
    }
}
