//! The engine's state in the `Fleet` status, and back.
//!
//! The rollout engine's full state travels in `status.rollout.state` (opaque JSON); the
//! other fields are its readable projection for `kubectl get fleet -o yaml` and dashboards.

use endstate_api::Condition;
use endstate_api::fleet::{
    BreakerStatus, BudgetUsage, FleetStatus, HistoryEntry, QuarantinedCommit, RolloutCursor,
};
use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as MetaTime;
use endstate_rollout::State;
use endstate_rollout::Time;
use endstate_rollout::policy::Policy;
use endstate_rollout::rollout::Phase;

/// The fleet's record beyond the engine's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The commit the fleet was last brought to.
    pub last_applied: Option<String>,
    /// The last commit the fleet was healthy at.
    pub last_good: Option<String>,
    /// Finished rollouts, newest first.
    pub history: Vec<HistoryEntry>,
    /// Why the controller cannot make progress, if it cannot.
    pub stalled: Option<String>,
}

/// The most history entries kept.
const HISTORY: usize = 20;

impl Record {
    /// Notes a finished rollout.
    pub fn finished(&mut self, commit: &str, outcome: &str, changed: usize, now: Time) {
        self.history.insert(
            0,
            HistoryEntry {
                commit: commit.to_owned(),
                outcome: outcome.to_owned(),
                finished_at: now.rfc3339(),
                changed: changed.min(i32::MAX as usize) as i32,
            },
        );
        self.history.truncate(HISTORY);
    }
}

/// Builds the status from the engine's state (and its serialised form, when the caller has it
/// already) and the record.
pub fn to_status(
    state: &State,
    serialised: Option<serde_json::Value>,
    record: &Record,
    now: Time,
) -> FleetStatus {
    let serialised = serialised.or_else(|| serde_json::to_value(state).ok());
    let rollout = state.rollout.as_ref().map(|r| RolloutCursor {
        commit: r.commit.clone(),
        wave: r.stage as i32,
        waves: r.plan.stages.len() as i32,
        phase: phase_name(&r.phase, r.waiting.is_some()).to_owned(),
        state: serialised.clone(),
    });
    let rollout = rollout.or_else(|| {
        // No rollout yet: still persist budgets and quarantine.
        Some(RolloutCursor {
            phase: "Idle".into(),
            state: serialised,
            ..RolloutCursor::default()
        })
    });
    let breaker = Some(match &state.breaker {
        Some(trip) => BreakerStatus {
            state: "open".into(),
            tripped_at: Some(trip.at.rfc3339()),
            commit: Some(trip.commit.clone()),
            evidence: Some(trip.evidence.to_string()),
        },
        None => BreakerStatus {
            state: "closed".into(),
            ..BreakerStatus::default()
        },
    });
    let quarantine = state
        .quarantine
        .iter()
        .map(|q| QuarantinedCommit {
            commit: q.commit.clone(),
            reason: q.reason.clone(),
            revert_commit: q.revert.clone(),
        })
        .collect();
    let policy = state
        .rollout
        .as_ref()
        .map(|r| r.policy.clone())
        .unwrap_or_default();
    let budgets = budgets(state, &policy, now);
    FleetStatus {
        observed_generation: None,
        conditions: Some(conditions(state, record, now)),
        last_applied_commit: record.last_applied.clone(),
        last_good_commit: record.last_good.clone(),
        rollout,
        breaker,
        quarantine: Some(quarantine),
        budgets: Some(budgets),
        history: Some(record.history.clone()),
    }
}

/// Reads the engine's state and the record back from a status.
pub fn from_status(status: &FleetStatus) -> Result<(State, Record), String> {
    let state = match status.rollout.as_ref().and_then(|r| r.state.clone()) {
        Some(value) => serde_json::from_value(value)
            .map_err(|e| format!("status.rollout.state does not hold an engine state: {e}"))?,
        None => State::default(),
    };
    let record = Record {
        last_applied: status.last_applied_commit.clone(),
        last_good: status.last_good_commit.clone(),
        history: status.history.clone().unwrap_or_default(),
        stalled: None,
    };
    Ok((state, record))
}

fn budgets(state: &State, policy: &Policy, now: Time) -> Vec<BudgetUsage> {
    policy
        .budgets
        .iter()
        .map(|b| {
            let horizon = now - b.window;
            let spent = state
                .budgets
                .spent
                .get(&b.class)
                .into_iter()
                .flatten()
                .filter(|(t, _)| *t > horizon)
                .flat_map(|(t, n)| std::iter::repeat_n(t.millis() / 1000, *n as usize))
                .collect();
            BudgetUsage {
                class: b.class.clone(),
                spent,
            }
        })
        .collect()
}

/// The phase as the status names it.
pub fn phase_name(phase: &Phase, waiting: bool) -> &'static str {
    match phase {
        Phase::Running if waiting => "WaitingForBudget",
        Phase::Running => "Applying",
        Phase::Baking { .. } => "Baking",
        Phase::AwaitingApproval => "Paused",
        Phase::Completed => "Completed",
        Phase::Superseded => "Superseded",
        Phase::Tripped { .. } => "Restoring",
        Phase::Restored => "Restored",
    }
}

fn conditions(state: &State, record: &Record, now: Time) -> Vec<Condition> {
    let at = MetaTime(
        endstate_api::k8s_openapi::jiff::Timestamp::from_millisecond(now.millis())
            .unwrap_or_default(),
    );
    let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: at.clone(),
        observed_generation: None,
    };
    let busy = state.busy();
    let (ready, reason, message) = if let Some(why) = &record.stalled {
        (false, "Stalled", why.clone())
    } else if let Some(trip) = &state.breaker {
        (
            false,
            "BreakerOpen",
            format!(
                "breaker open since {}: {}",
                trip.at, trip.evidence.threshold
            ),
        )
    } else if busy {
        (false, "Progressing", "a rollout is under way".to_owned())
    } else {
        (
            true,
            "InSync",
            format!(
                "fleet at {}",
                record.last_applied.as_deref().unwrap_or("nothing yet")
            ),
        )
    };
    vec![
        condition("Ready", ready, reason, message.clone()),
        condition(
            "Reconciling",
            busy,
            if busy { "Progressing" } else { "Idle" },
            if busy {
                "a rollout is under way"
            } else {
                "nothing to roll out"
            }
            .to_owned(),
        ),
        condition(
            "Stalled",
            record.stalled.is_some(),
            if record.stalled.is_some() {
                "Stalled"
            } else {
                "Ok"
            },
            record
                .stalled
                .clone()
                .unwrap_or_else(|| "the branch head can be applied".to_owned()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_says_why() {
        let status = to_status(
            &State::default(),
            None,
            &Record::default(),
            Time(1_700_000_000_000),
        );
        for condition in status.conditions.unwrap() {
            assert!(!condition.message.is_empty(), "{condition:?}");
        }
    }
}
