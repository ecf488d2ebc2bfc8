//! The engine's protocol: the events the controller feeds it, the effects it asks for, the
//! reports worth telling people, where a rollout is ([`Phase`]), and what starting and resuming
//! one take. Data only: what the engine does with them is in the other files of [`super`].

use endstate_core::ObjectRef;
use serde::{Deserialize, Serialize};

use super::restore::RestorePlan;
use super::trip::Evidence;
use super::waiting::WaitReason;
use crate::gates::{Kept, Sample};
use crate::health::Health;
use crate::live::LiveError;
use crate::plan::{Plan, Seq};
use crate::time::Time;
use endstate_core::policy::{MetricGate, Policy};

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    /// Starting and gating the current stage's changes.
    Running,
    /// The stage is healthy and must stay so until `until`.
    Baking {
        /// When the bake ends.
        until: Time,
        /// When the metric gates are next sampled.
        next_sample: Option<Time>,
        /// Whether the last sample of every metric gate was in bounds.
        metrics_ok: bool,
        /// Since when the metric gates have had no data (no answer or no series), if so.
        metrics_missing_since: Option<Time>,
        /// When the query now outstanding was asked, if one is: it counts as no data from then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asked: Option<Time>,
        /// The gates' last answers (bounded: see [`crate::gates`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        samples: Vec<Kept>,
    },
    /// The stage is done; the next waits for a human.
    AwaitingApproval,
    /// Every stage is done.
    Completed,
    /// A newer commit took over.
    Superseded,
    /// The breaker tripped: restoring, then reverting.
    Tripped {
        /// Whether the revert was requested and not yet answered.
        revert_pending: bool,
    },
    /// The breaker tripped and everything that could be done is done.
    Restored,
}

/// Why a write the engine asked for did not land.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The live fleet refused it or failed.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The object is not in the commit being rolled out: not written.
    #[error("not in the commit's desired set")]
    NotDesired,
}

/// What happened, fed back by the controller.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Time passed; re-evaluate timers and start what may start.
    Tick,
    /// Outcomes of [`Effect::Apply`] / [`Effect::Delete`]: the generation written (0 for a
    /// delete issued, [`KEPT`] for one not issued because the object is kept), or why the
    /// write failed.
    Written(Vec<(ObjectRef, Result<i64, WriteError>)>),
    /// What the gates see of objects the engine is interested in (see [`super::Engine::interest`]).
    Observed(Vec<(ObjectRef, Health)>),
    /// The answers of the metric gates asked by [`Effect::Sample`], by gate name.
    Sampled(Vec<(String, Sample)>),
    /// A human approved the held stage.
    Approve,
    /// The branch moved on to another commit.
    NewCommit(String),
    /// The answer to [`Effect::PrepareRestore`].
    RestorePlan(RestorePlan),
    /// Outcomes of [`Effect::Restore`].
    Restored(Vec<(ObjectRef, Result<(), WriteError>)>),
    /// The outcome of [`Effect::Revert`]: the commits blamed and the reverts pushed (empty
    /// when the revert went to a side branch or was not needed), in words.
    Reverted {
        /// The commits blamed: quarantined from now on.
        culprits: Vec<String>,
        /// The revert commits on the branch.
        reverts: Vec<String>,
        /// What happened.
        outcome: String,
    },
    /// A human reset the breaker.
    ResetBreaker,
}

/// What the controller must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Save the state now: the writes after this effect were admitted by it.
    Persist,
    /// Apply the commit's desired objects with these identities.
    Apply(Vec<ObjectRef>),
    /// Delete these objects.
    Delete(Vec<ObjectRef>),
    /// Look at these objects and answer with [`Event::Observed`] (once, after a resume).
    Observe(Vec<ObjectRef>),
    /// Work out how each started position is undone ([`super::RestoreClass::of`] against what a trip
    /// restores) for the positions [`super::Engine::restore_ranges`] names, and answer with
    /// [`Event::RestorePlan`].
    PrepareRestore,
    /// Undo these changes: put back what the restore target has.
    Restore(Vec<ObjectRef>),
    /// Revert the commits that caused the failure, in `last_good..commit`, blaming the
    /// objects that failed (none: the whole range).
    Revert {
        /// The rolled-out commit.
        commit: String,
        /// The last good commit.
        last_good: Option<String>,
        /// The failed objects (the first [`super::KEPT_FAILED_POSITIONS`]).
        failed: Vec<ObjectRef>,
        /// Why.
        evidence: Evidence,
    },
    /// Sample these metric gates and answer with [`Event::Sampled`].
    Sample(Vec<MetricGate>),
    /// Call back with [`Event::Tick`] no later than this.
    WakeAt(Time),
    /// Something worth telling people.
    Report(Report),
}

impl Effect {
    /// The write of `ids` in `seq`: their deletes in the delete sequence, else their applies.
    pub(crate) fn write(seq: Seq, ids: Vec<ObjectRef>) -> Effect {
        if seq == Seq::Deletes {
            Effect::Delete(ids)
        } else {
            Effect::Apply(ids)
        }
    }
}

/// Progress worth telling people.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// A stage started.
    StageStarted {
        /// Index.
        index: usize,
        /// Name.
        name: String,
        /// Changes in it.
        size: u32,
    },
    /// A stage settled (and baked).
    StageCompleted {
        /// Index.
        index: usize,
        /// Name.
        name: String,
        /// Objects of the stage that failed.
        failures: u32,
    },
    /// The stage holds for approval.
    AwaitingApproval(String),
    /// No work starts, and why.
    Waiting(WaitReason),
    /// An object failed its gate.
    Failed(ObjectRef, String),
    /// The breaker tripped.
    Tripped(Evidence),
    /// Restores were issued.
    RestoreIssued(usize),
    /// A trip leaves this many objects the rollout created in place (see
    /// [`super::RestoreClass::LeaveCreated`]).
    LeftCreated(usize),
    /// The Machines of a Cluster whose change failed its gate in this rollout are skipped,
    /// not rolled out (the first of them named).
    Held {
        /// The Cluster.
        cluster: ObjectRef,
        /// The first Machine held back.
        first: ObjectRef,
    },
    /// The Machines of a business cluster that cannot be used are held, not rolled out or
    /// failed (the first of them named); the rollout goes on with the others.
    TargetHeld {
        /// The business cluster.
        cluster: String,
        /// Why, as a condition reason (`TargetUnreachable`, …).
        reason: String,
        /// What is wrong, in words.
        message: String,
        /// The first change held.
        first: ObjectRef,
    },
    /// Everything a trip could do is done: restored (and the revert answered).
    Restored {
        /// Restores that failed.
        unrestored: u32,
    },
    /// The rollout finished.
    Completed {
        /// Objects changed.
        changed: u32,
        /// Machines held back because their Cluster failed in the rollout: the fleet is not
        /// at the commit, so it is not a good commit.
        held: u32,
    },
    /// A newer commit took over.
    Superseded(String),
}

/// The outcome of a delete that was not issued: the object is kept (annotated `prune:
/// disabled`, or no longer the fleet's, on the server), so there is nothing to wait for.
pub const KEPT: i64 = -1;

/// Why the engine wants to hear about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// It is in flight: gate it for this generation (unknown until its write returned).
    Gate(Option<i64>),
    /// Its delete is in flight: it passes when it is gone.
    Gone,
    /// Its stage bakes: a `Failed` status counts against the breaker.
    Bake,
}

/// What starting a rollout needs.
#[derive(Clone, Debug)]
pub struct Start {
    /// The commit.
    pub commit: String,
    /// The last good commit, what a trip restores.
    pub last_good: Option<String>,
    /// The commit the fleet was at (the plan's base: what it drops is deleted, and fields it set
    /// that the commit no longer sets are removed).
    pub base: Option<String>,
    /// The plan.
    pub plan: Plan,
    /// The commit's policy.
    pub policy: Policy,
}

/// What the controller must recompute to resume a loaded rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumable {
    /// The commit to render and plan.
    pub commit: String,
    /// The base commit: its dropped objects are the deletes, its dropped fields are removed.
    pub base: Option<String>,
    /// The orphans the delete sequence covers.
    pub orphans: Vec<ObjectRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_of_the_delete_sequence_deletes() {
        let ids = vec![ObjectRef::new(endstate_core::Kind::Machine, "fleet", "m-1")];
        assert_eq!(
            Effect::write(Seq::Deletes, ids.clone()),
            Effect::Delete(ids.clone())
        );
        for seq in [Seq::Packages, Seq::Clusters, Seq::Machines, Seq::Reinstalls] {
            assert_eq!(Effect::write(seq, ids.clone()), Effect::Apply(ids.clone()));
        }
    }

    #[test]
    fn a_phase_is_persisted_by_name_and_a_bake_without_answers_stays_small() {
        assert_eq!(
            serde_json::to_value(Phase::AwaitingApproval).unwrap(),
            serde_json::json!("AwaitingApproval")
        );
        let baking = Phase::Baking {
            until: Time(5),
            next_sample: None,
            metrics_ok: true,
            metrics_missing_since: None,
            asked: None,
            samples: Vec::new(),
        };
        let json = serde_json::to_value(&baking).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Baking": {"until": 5, "next_sample": null, "metrics_ok": true,
                "metrics_missing_since": null}})
        );
        assert_eq!(serde_json::from_value::<Phase>(json).unwrap(), baking);
    }
}
