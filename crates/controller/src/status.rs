//! The engine's state in the `Fleet` status, and back.
//!
//! The engine's persisted state travels in `status.rollout.state` (bounded whatever the
//! fleet's size: see `endstate_rollout::persist`); the other fields are its readable
//! projection for `kubectl get fleet -o yaml` and dashboards, bounded too: the newest 20
//! finished rollouts, the newest 100 quarantined commits, condition messages of at most
//! 32,768 characters.

use endstate_api::Condition;
use endstate_api::fleet::{
    BreakerState, BreakerStatus, BudgetUsage, FailedObject, FleetStatus, GateSample, HistoryEntry,
    QuarantinedCommit, RolloutCursor, WaveProgress,
};
use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as MetaTime;
use endstate_core::policy::Policy;
use endstate_rollout::engine::Phase;
use endstate_rollout::persist::StateError;
use endstate_rollout::text::{cut, cut_lines};
use endstate_rollout::time::human;
use endstate_rollout::{Engine, Time};

use crate::refusal::{MESSAGE_CHARS, Refusal};

/// The fleet's record beyond the engine's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The commit the fleet was last brought to (or is being brought to).
    pub last_applied: Option<String>,
    /// The last commit the fleet was healthy at.
    pub last_good: Option<String>,
    /// Finished rollouts, newest first.
    pub history: Vec<HistoryEntry>,
    /// Why the controller cannot make progress, if it cannot.
    pub stalled: Option<Refusal>,
    /// The conditions as last saved: a condition keeps its transition time while its status
    /// holds.
    pub conditions: Vec<Condition>,
    /// The `Fleet`'s `metadata.generation` the loop works from.
    pub generation: Option<i64>,
    /// Whether `spec.suspend` holds the loop.
    pub suspended: bool,
    /// The request tokens acted on.
    pub handled: Handled,
    /// Machines the last plan held back because their Cluster reports Failed.
    pub held_back: usize,
    /// What the last plan did not write because another Fleet owns it, in words.
    pub foreign: Option<String>,
    /// The business clusters whose changes the rollout held because they could not be used:
    /// cluster → (reason, message). Cleared when a rollout starts.
    pub unavailable: std::collections::BTreeMap<String, (String, String)>,
}

/// The tokens of the last requests acted on (see `endstate_api::fleet::requests`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// `fleet.endstate.dev/reconcile-requested-at`.
    pub reconcile: Option<String>,
    /// `fleet.endstate.dev/approve-requested-at`.
    pub approve: Option<String>,
    /// `fleet.endstate.dev/reset-breaker-requested-at`.
    pub reset_breaker: Option<String>,
}

/// The most waves listed in `status.rollout.progress`.
const PROGRESS_WAVES: usize = 64;
/// The most object names listed in flight and failed.
const NAMES: usize = 10;

/// The most history entries kept.
const HISTORY: usize = 20;

/// The most business clusters listed in `status.targets`, and the longest message of each.
const TARGETS: usize = 64;
const TARGET_MESSAGE_CHARS: usize = 160;

/// The business clusters as `status.targets` lists them: at most [`TARGETS`], by name,
/// messages cut; none when the Fleet writes to no business cluster.
pub fn targets(
    mut targets: Vec<endstate_api::fleet::TargetStatus>,
) -> Option<Vec<endstate_api::fleet::TargetStatus>> {
    if targets.is_empty() {
        return None;
    }
    targets.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    targets.truncate(TARGETS);
    for t in &mut targets {
        if let Some(m) = &mut t.message {
            *m = cut(m, TARGET_MESSAGE_CHARS);
        }
    }
    Some(targets)
}

impl Record {
    /// Notes a finished rollout.
    pub fn finished(&mut self, commit: &str, outcome: &str, changed: u32, now: Time) {
        self.history.insert(
            0,
            HistoryEntry {
                commit: commit.to_owned(),
                outcome: outcome.to_owned(),
                finished_at: now.rfc3339(),
                changed: changed.min(i32::MAX as u32) as i32,
            },
        );
        self.history.truncate(HISTORY);
    }
}

/// Builds the status from the engine's state and the record; the record's conditions take
/// the new ones (with their transition times kept where the status did not change).
pub fn to_status(engine: &Engine, record: &Record, policy: &Policy, now: Time) -> FleetStatus {
    let state = Some(engine.to_json());
    let rollout = match engine.rollout() {
        Some(r) => RolloutCursor {
            commit: r.commit().to_owned(),
            wave: r.stage_index() as i32,
            waves: r.stages().len() as i32,
            wave_name: r.stage().map(|s| s.name.clone()),
            phase: phase_name(r.phase(), r.waiting().is_some()).to_owned(),
            in_flight: Some(r.inflight() as i64),
            failed: Some(i64::from(r.failures().total)),
            waiting: r.waiting().map(ToString::to_string),
            progress: Some(progress(&r)),
            in_flight_objects: Some(
                r.inflight_ids()
                    .take(NAMES)
                    .map(|(id, _)| id.to_string())
                    .collect(),
            ),
            failed_objects: Some(
                r.failures()
                    .first
                    .iter()
                    .take(NAMES)
                    .map(|n| FailedObject {
                        object: n.object.clone(),
                        reason: n.reason.clone(),
                    })
                    .collect(),
            ),
            gate_samples: match r.phase() {
                Phase::Baking { samples, .. } if !samples.is_empty() => Some(
                    samples
                        .iter()
                        .map(|k| GateSample {
                            gate: k.gate.clone(),
                            at: k.at.rfc3339(),
                            answer: k.answer.clone(),
                        })
                        .collect(),
                ),
                _ => None,
            },
            state,
        },
        // No rollout yet: still persist budgets and quarantine.
        None => RolloutCursor {
            phase: "Idle".into(),
            state,
            ..RolloutCursor::default()
        },
    };
    let breaker = Some(match engine.breaker() {
        Some(trip) => BreakerStatus {
            state: BreakerState::Open,
            tripped_at: Some(trip.at.rfc3339()),
            commit: Some(trip.commit.clone()),
            evidence: Some(cut_lines(&trip.evidence.to_string(), MESSAGE_CHARS)),
        },
        None => BreakerStatus {
            state: BreakerState::Closed,
            ..BreakerStatus::default()
        },
    });
    let quarantine = engine
        .quarantine()
        .iter()
        .map(|q| QuarantinedCommit {
            commit: q.commit.clone(),
            reason: q.reason.clone(),
            revert_commit: q.revert.clone(),
        })
        .collect();
    let budgets = engine
        .budgets()
        .usage(policy, now)
        .into_iter()
        .map(|(class, used, limit)| BudgetUsage {
            class: class.as_str().to_owned(),
            spent: used.min(i64::MAX as u64) as i64,
            limit: limit.min(i64::MAX as u64) as i64,
            window: policy
                .budget(class)
                .map(|b| human(b.window))
                .unwrap_or_default(),
        })
        .collect();
    FleetStatus {
        observed_generation: record.generation,
        // Filled in by the loop from its backend, which knows the business clusters.
        targets: None,
        last_handled_reconcile_at: record.handled.reconcile.clone(),
        last_handled_approve_at: record.handled.approve.clone(),
        last_handled_reset_breaker_at: record.handled.reset_breaker.clone(),
        conditions: Some(conditions(engine, record, now)),
        last_applied_commit: record.last_applied.clone(),
        last_good_commit: record.last_good.clone(),
        rollout: Some(rollout),
        breaker,
        quarantine: Some(quarantine),
        budgets: Some(budgets),
        history: Some(record.history.clone()),
    }
}

/// Reads the engine's state and the record back from a status.
pub fn from_status(status: &FleetStatus) -> Result<(Engine, Record), StateError> {
    let engine = match status.rollout.as_ref().and_then(|r| r.state.clone()) {
        Some(value) => Engine::from_json(value)?,
        None => Engine::default(),
    };
    let record = Record {
        last_applied: status.last_applied_commit.clone(),
        last_good: status.last_good_commit.clone(),
        history: status.history.clone().unwrap_or_default(),
        stalled: None,
        conditions: status.conditions.clone().unwrap_or_default(),
        generation: status.observed_generation,
        suspended: false,
        handled: Handled {
            reconcile: status.last_handled_reconcile_at.clone(),
            approve: status.last_handled_approve_at.clone(),
            reset_breaker: status.last_handled_reset_breaker_at.clone(),
        },
        // The next reconcile plans again and counts them.
        held_back: 0,
        foreign: None,
        unavailable: Default::default(),
    };
    Ok((engine, record))
}

/// Every wave of the rollout: done before the one in flight, pending after it.
fn progress(r: &endstate_rollout::engine::View<'_>) -> Vec<WaveProgress> {
    let current = r.stage_index();
    let finished = matches!(
        r.phase(),
        Phase::Completed | Phase::Superseded | Phase::Restored
    );
    let stages = r.stages();
    let mut out: Vec<WaveProgress> = stages
        .iter()
        .enumerate()
        .take(PROGRESS_WAVES)
        .map(|(i, stage)| {
            let failed = i64::from(r.failures().per_stage.get(i).copied().unwrap_or(0));
            let size = i64::from(stage.size);
            let (done, in_flight, state) = if i < current || (i == current && finished) {
                ((size - failed).max(0), 0, "Done")
            } else if i == current {
                (i64::from(r.settled()), r.inflight() as i64, "InFlight")
            } else {
                (0, 0, "Pending")
            };
            WaveProgress {
                name: stage.name.clone(),
                size,
                done,
                in_flight,
                failed,
                state: state.to_owned(),
            }
        })
        .collect();
    if stages.len() > PROGRESS_WAVES
        && let Some(last) = out.last_mut()
    {
        last.name = format!(
            "{} (and {} more waves)",
            last.name,
            stages.len() - PROGRESS_WAVES
        );
    }
    out
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

fn conditions(engine: &Engine, record: &Record, now: Time) -> Vec<Condition> {
    let at = MetaTime(
        endstate_api::k8s_openapi::jiff::Timestamp::from_millisecond(now.millis())
            .unwrap_or_default(),
    );
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" }.to_owned();
        // The transition time moves only when the status does.
        let since = record
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| at.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: cut_lines(&message, MESSAGE_CHARS),
            last_transition_time: since,
            observed_generation: record.generation,
        }
    };
    let busy = engine.busy() && !record.suspended;
    let (ready, reason, message) = if record.suspended {
        (
            false,
            "Suspended",
            "spec.suspend is true: nothing is fetched or written until it is unset".to_owned(),
        )
    } else if let Some(refusal) = &record.stalled {
        // The whole message is on the Stalled condition; Ready says what it is about.
        let text = refusal.to_string();
        let first = text.lines().next().unwrap_or_default();
        let more = if text.lines().nth(1).is_some() {
            " (the Stalled condition says more)"
        } else {
            ""
        };
        (
            false,
            refusal.reason(),
            format!("{}{more}", cut(first, 1024)),
        )
    } else if let Some(trip) = engine.breaker() {
        (
            false,
            "BreakerOpen",
            format!(
                "breaker open since {}: {}",
                trip.at, trip.evidence.threshold
            ),
        )
    } else if busy {
        let (reason, message) = busy_reason(engine);
        (false, reason, message)
    } else {
        idle_readiness(record)
    };
    // A Fleet that has not finished its first reconcile is still reconciling (kstatus).
    let first = !busy
        && !record.suspended
        && record.stalled.is_none()
        && engine.breaker().is_none()
        && record.last_applied.is_none();
    let (reconciling, why, what) = if busy {
        let (reason, message) = busy_reason(engine);
        (true, reason, message)
    } else if first {
        (true, reason, message.clone())
    } else if record.suspended {
        (false, "Suspended", "nothing to roll out".to_owned())
    } else {
        (false, "Idle", "nothing to roll out".to_owned())
    };
    vec![
        condition("Ready", ready, reason, message),
        condition("Reconciling", reconciling, why, what),
        condition(
            "Stalled",
            record.stalled.is_some(),
            record.stalled.as_ref().map_or("Ok", Refusal::reason),
            record.stalled.as_ref().map_or_else(
                || "the branch head can be applied".to_owned(),
                Refusal::message,
            ),
        ),
    ]
}

/// Ready when no rollout is under way: `True` only once the commit the fleet was brought to
/// is recorded good, in the same save (a new Fleet, or one whose last rollout held Machines
/// back, is not Ready).
fn idle_readiness(record: &Record) -> (bool, &'static str, String) {
    match (&record.last_applied, &record.last_good) {
        (None, _) => (
            false,
            "Progressing",
            "not reconciled yet: the branch is fetched and rolled out first".to_owned(),
        ),
        (Some(applied), _) if !record.unavailable.is_empty() => {
            let (reason, _) = record.unavailable.values().next().expect("not empty");
            let each: Vec<String> = record
                .unavailable
                .iter()
                .map(|(cluster, (reason, message))| format!("{cluster}: {reason}: {message}"))
                .collect();
            (
                false,
                static_reason(reason),
                format!(
                    "Machines of business clusters that cannot be used are held, {applied} is not good: {}",
                    each.join("; ")
                ),
            )
        }
        (Some(_), _) if record.foreign.is_some() => (
            false,
            "OwnedByAnotherFleet",
            record.foreign.clone().unwrap_or_default(),
        ),
        (Some(applied), Some(good)) if applied == good => {
            (true, "InSync", format!("fleet at {applied}"))
        }
        (Some(applied), _) if record.held_back > 0 => (
            false,
            "HeldBack",
            format!(
                "{} Machines are held back, their Cluster reports Failed: {applied} is not good",
                record.held_back
            ),
        ),
        (Some(applied), _) => (
            false,
            "Progressing",
            format!("{applied} is rolled out and not recorded good yet"),
        ),
    }
}

/// A business cluster's reason as the `&'static str` conditions take (one of the four a
/// backend gives; anything else reads as `TargetUnavailable`).
fn static_reason(reason: &str) -> &'static str {
    [
        "TargetUnreachable",
        "TargetUnauthorized",
        "TargetMissingCRDs",
        "TargetSecretInvalid",
    ]
    .into_iter()
    .find(|r| *r == reason)
    .unwrap_or("TargetUnavailable")
}

/// Why a rollout under way is not done: the reason Ready and Reconciling report.
fn busy_reason(engine: &Engine) -> (&'static str, String) {
    let Some(r) = engine.rollout() else {
        return ("Progressing", "a rollout is under way".to_owned());
    };
    let wave = r
        .stage()
        .map(|s| {
            format!(
                "wave {} of {} ({})",
                r.stage_index() + 1,
                r.stages().len(),
                s.name
            )
        })
        .unwrap_or_else(|| "the rollout".to_owned());
    match (r.phase(), r.waiting()) {
        (Phase::AwaitingApproval, _) => (
            "AwaitingApproval",
            format!("{wave} is done and holds for approval (endstate approve)"),
        ),
        (Phase::Tripped { .. }, _) => (
            "Restoring",
            "the breaker tripped: restoring the last good state".to_owned(),
        ),
        (_, Some(why)) => (why.condition_reason(), format!("{wave}: {why}")),
        (Phase::Baking { .. }, None) => ("Baking", format!("{wave} is baking")),
        _ => ("Progressing", format!("{wave} is rolling out")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use endstate_core::policy::BudgetLimit;
    use endstate_rollout::BudgetClass;
    use endstate_rollout::persist::worst_state;

    use super::*;

    /// The whole Fleet object must stay under 256 KiB; metadata, spec and managedFields take a
    /// few KiB of the 32 KiB the status leaves.
    #[test]
    fn the_status_at_every_limit_stays_under_the_bound() {
        // 1M objects; 100k in flight over the widest span; every bounded part full.
        let inflight: Vec<u32> = (0..100_000u32)
            .map(|i| i * 13 % 131_072)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let failed: Vec<u32> = (0..1000u32).map(|i| i * 997).collect();
        let engine = Engine::from_json(worst_state(1_000_000, &inflight, &failed)).unwrap();
        let lines: String = (0..100_000)
            .map(|i| format!("base/machines.yaml:{i}:3: Machine/m-{i}: spec.ip \"10.0.0.{i}\" is not an IP address\n"))
            .collect();
        let record = Record {
            last_applied: Some("a".repeat(40)),
            last_good: Some("b".repeat(40)),
            history: (0..HISTORY + 5)
                .map(|_| HistoryEntry {
                    commit: "c".repeat(40),
                    outcome: "Superseded".into(),
                    finished_at: Time::ZERO.rfc3339(),
                    changed: i32::MAX,
                })
                .take(HISTORY)
                .collect(),
            stalled: Some(Refusal::InvalidCommit(lines)),
            ..Record::default()
        };
        let policy = Policy {
            budgets: BudgetClass::ALL
                .into_iter()
                .map(|class| BudgetLimit {
                    class,
                    limit: u64::MAX,
                    window: Duration::from_secs(3600),
                })
                .collect(),
            ..Policy::default()
        };
        let mut status = to_status(&engine, &record, &policy, Time(1_767_225_600_000));
        // 1000 business clusters that cannot be used, with long names and longer messages.
        status.targets = targets(
            (0..1000)
                .map(|i| endstate_api::fleet::TargetStatus {
                    cluster: format!("{i:04}{}", "c".repeat(59)),
                    ready: false,
                    reason: Some("TargetSecretInvalid".into()),
                    message: Some("m".repeat(10_000)),
                })
                .collect(),
        );
        assert_eq!(status.targets.as_ref().map(Vec::len), Some(TARGETS));
        let size = serde_json::to_vec(&status).unwrap().len();
        eprintln!("the status at every limit: {size} bytes");
        assert!(size <= 224 * 1024, "{size} bytes");
        let conditions = status.conditions.unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.len() < 1100, "{}", ready.message);
    }

    #[test]
    fn every_condition_says_why_and_keeps_its_transition_time() {
        let mut record = Record {
            last_applied: Some("c0ffee".into()),
            last_good: Some("c0ffee".into()),
            ..Record::default()
        };
        let status = to_status(
            &Engine::default(),
            &record,
            &Policy::default(),
            Time(1_700_000_000_000),
        );
        let first = status.conditions.unwrap();
        for condition in &first {
            assert!(!condition.message.is_empty(), "{condition:?}");
        }
        record.conditions = first.clone();
        let later = to_status(
            &Engine::default(),
            &record,
            &Policy::default(),
            Time(1_700_000_900_000),
        )
        .conditions
        .unwrap();
        assert_eq!(later, first, "nothing changed: nor do the transition times");
        record.stalled = Some(Refusal::InvalidCommit("base/x.yaml:1: bad".into()));
        let stalled = to_status(
            &Engine::default(),
            &record,
            &Policy::default(),
            Time(1_700_000_900_000),
        )
        .conditions
        .unwrap();
        let ready = stalled.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.reason, "InvalidCommit");
        assert_ne!(ready.last_transition_time, first[0].last_transition_time);
    }

    fn ready_and_reconciling(record: &Record) -> [(String, String); 2] {
        let conditions = to_status(&Engine::default(), record, &Policy::default(), Time(0))
            .conditions
            .unwrap();
        ["Ready", "Reconciling"].map(|type_| {
            let c = conditions.iter().find(|c| c.type_ == type_).unwrap();
            (c.status.clone(), c.reason.clone())
        })
    }

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_owned(), reason.to_owned())
    }

    /// A new Fleet said Ready=True InSync before anything was fetched, and again when its first
    /// rollout ended in the save before the good commit was recorded: `kubectl wait
    /// --for=condition=Ready` returned before the fleet was there.
    #[test]
    fn ready_is_true_only_with_the_good_commit_recorded() {
        let mut record = Record::default();
        assert_eq!(
            ready_and_reconciling(&record),
            [pair("False", "Progressing"), pair("True", "Progressing")],
            "a new Fleet"
        );
        record.last_applied = Some("c0ffee".into());
        assert_eq!(
            ready_and_reconciling(&record),
            [pair("False", "Progressing"), pair("False", "Idle")],
            "rolled out, not recorded good"
        );
        record.held_back = 3;
        assert_eq!(
            ready_and_reconciling(&record)[0],
            pair("False", "HeldBack"),
            "Machines held back by a failed Cluster"
        );
        record.last_good = Some("c0ffee".into());
        assert_eq!(
            ready_and_reconciling(&record),
            [pair("True", "InSync"), pair("False", "Idle")]
        );
        record.unavailable.insert(
            "b".into(),
            (
                "TargetUnreachable".into(),
                "https://10.0.0.2:6443: no answer".into(),
            ),
        );
        assert_eq!(
            ready_and_reconciling(&record)[0],
            pair("False", "TargetUnreachable"),
            "Machines held for a business cluster that cannot be used"
        );
        record.unavailable.clear();
        record.foreign = Some("2 objects owned by Fleet prod/f".into());
        assert_eq!(
            ready_and_reconciling(&record),
            [pair("False", "OwnedByAnotherFleet"), pair("False", "Idle")],
            "objects another Fleet owns are not at the commit, even one recorded good"
        );
        record.foreign = None;
        record.suspended = true;
        assert_eq!(
            ready_and_reconciling(&record),
            [pair("False", "Suspended"), pair("False", "Suspended")]
        );
    }
}
