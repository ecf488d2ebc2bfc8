//! The rollout in time: the waves with their worst-case times under the budgets and windows,
//! how long it all takes at worst, and what each budget class spends.

use endstate_core::ObjectRef;
use endstate_rollout::Time;
use endstate_rollout::plan::{Plan, Seq, StageSpec};
use endstate_rollout::schedule::{self, Estimate as Schedule};

use crate::facts::{Facts, Index};
use crate::report::{Budget, Estimate, Wave};

/// The schedule of a plan that changes something.
#[derive(Debug)]
pub struct Scheduled {
    /// The waves, in the order they run.
    pub waves: Vec<Wave>,
    /// How long it takes at worst, when any wave starts.
    pub estimate: Option<Estimate>,
    /// What each budget class touched spends.
    pub budgets: Vec<Budget>,
}

/// Cuts `plan` into the policy's waves and times them from `facts.now`.
pub fn schedule(plan: &Plan, facts: &Facts<'_>, index: &Index<'_>) -> Scheduled {
    let stages = plan.stages(facts.policy);
    let estimate = schedule::estimate(plan, &stages, facts.policy, facts.budgets, facts.now);
    let end = estimate.end();
    Scheduled {
        waves: waves(plan, &stages, &estimate, facts, index),
        estimate: estimate.waves.first().map(|first| Estimate {
            start: first.start.rfc3339(),
            end: end.map(Time::rfc3339),
            seconds: end.map(|e| e.since(facts.now).as_secs()),
            approvals: stages.iter().filter(|s| s.pause).count() as u64,
        }),
        budgets: estimate
            .budgets
            .iter()
            .map(|b| Budget {
                class: b.class.as_str().to_owned(),
                spends: b.spends,
                spent: b.spent,
                limit: b.limit.map(|(limit, _)| limit),
                window_seconds: b.limit.map(|(_, window)| window.as_secs()),
                waits: !b.wait.is_zero(),
                wait_seconds: b.wait.as_secs(),
            })
            .collect(),
    }
}

/// Each stage as a wave: its changes by operation and failure domain, and its times.
fn waves(
    plan: &Plan,
    stages: &[StageSpec],
    estimate: &Schedule,
    facts: &Facts<'_>,
    index: &Index<'_>,
) -> Vec<Wave> {
    let lookup = |id: &ObjectRef| index.lookup(id);
    let spread = |seq: Seq| {
        let sequence = if seq == Seq::Clusters {
            &facts.policy.clusters
        } else {
            &facts.policy.machines
        };
        sequence
            .spread_by
            .clone()
            .unwrap_or_else(|| "idc".to_owned())
    };
    stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let spread_by = spread(stage.seq);
            let (ops, domains) = plan.breakdown(stage, &lookup, &spread_by);
            let timing = estimate.waves.get(i);
            let seconds = |d: std::time::Duration| d.as_secs();
            Wave {
                number: i as u64 + 1,
                name: stage.name.clone(),
                size: u64::from(stage.size),
                gated: stage.seq.gated(),
                max_unavailable: stage
                    .seq
                    .gated()
                    .then_some(u64::from(stage.max_unavailable)),
                bake_seconds: stage.bake().as_secs(),
                pause: stage.pause,
                ops: ops
                    .into_iter()
                    .map(|(op, n)| (op.to_owned(), n as u64))
                    .collect(),
                spread_by,
                domains: domains.into_iter().map(|(d, n)| (d, n as u64)).collect(),
                earliest_start: timing.map(|t| t.start.rfc3339()),
                latest_end: timing
                    .filter(|t| t.blocked.is_none())
                    .map(|t| t.end.rfc3339()),
                rounds: timing.map_or(0, |t| t.rounds),
                window_wait_seconds: timing.map_or(0, |t| seconds(t.window_wait)),
                budget_wait_seconds: timing
                    .map_or(0, |t| t.budget_wait.values().map(|d| seconds(*d)).sum()),
                blocked: timing.and_then(|t| t.blocked.clone()),
            }
        })
        .collect()
}
