//! The rollout state machine: `step(event, now) -> effects`.
//!
//! The machine never performs I/O; it asks for writes ([`Effect::Apply`], [`Effect::Delete`],
//! [`Effect::Restore`], [`Effect::Revert`]) and learns their outcome from the events the
//! controller feeds back. What it must remember across restarts is small and bounded (see
//! [`crate::persist`]): a cursor into each sequence's order (see [`crate::plan`]), the
//! positions in flight, failure counts, budget buckets. The plan itself is recomputed from
//! the commit on resume and handed back with [`Engine::resume`].
//!
//! ```text
//!  start ─▶ Running ──stage settled──▶ Baking ──bake over──▶ (AwaitingApproval) ──▶ next stage
//!              │                          │                                          │
//!              │ threshold crossed        │ metric out of bounds                last stage
//!              ▼                          ▼                                          ▼
//!           Tripped: restore every started position, revert the culprits ──▶ Restored   Completed
//! ```
//!
//! Write-ahead: a batch of changes is admitted (cursor advanced, budget spent, positions put in
//! flight) and [`Effect::Persist`] is asked for *before* the writes, so a controller killed
//! between the two finds the batch in flight, re-issues its writes without spending again,
//! and gates them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use endstate_core::{FleetObject, ObjectRef};
use serde::{Deserialize, Serialize};

use crate::budget::{BudgetClass, Budgets};
use crate::gates::{Kept, Sample, Verdict};
use crate::health::Health;
use crate::plan::{self, Plan, Seq, StageSpec, Universe};
use crate::policy::{MetricGate, Policy};
use crate::positions::Positions;
use crate::time::{Time, human};

/// In-flight start times are rounded up to buckets of `gate timeout / FLIGHT_BUCKETS`, so the
/// persisted in-flight set holds at most this many (+1) groups, whatever the wave's size. A
/// gate's deadline is therefore up to one bucket later than its exact start plus the timeout.
pub const FLIGHT_BUCKETS: u64 = 16;
/// The failure reasons kept (the counts are exact).
pub const KEPT_FAILURES: usize = 20;
/// A kept reason is cut to this many characters.
pub const REASON_CHARS: usize = 256;
/// Failed positions kept for attributing the failure to commits (the counts are exact).
pub const KEPT_FAILED_POSITIONS: usize = 1000;
/// Quarantined commits kept: the newest.
pub const KEPT_QUARANTINE: usize = 100;
/// A quarantined commit's reason is cut to this many characters.
pub const QUARANTINE_REASON_CHARS: usize = 120;
/// Failed restores whose reasons are kept (the count is exact).
pub const KEPT_UNRESTORED: usize = 5;
/// Revert commits kept in the breaker's record.
pub const KEPT_REVERTS: usize = 20;
/// The widest range of positions in flight at once: admission waits while the oldest change
/// in flight is this far behind the cursor (it times out at its gate deadline at the latest).
/// Bounds the persisted in-flight bitmap (16 KiB) for any fleet size.
pub const MAX_SPAN: u32 = 1 << 17;
/// The most restores issued in one effect.
pub const RESTORE_BATCH: usize = 2000;

/// The rollout engine: everything endstate must remember between steps, across rollouts and
/// restarts.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub(crate) rollout: Option<Rollout>,
    pub(crate) budgets: Budgets,
    pub(crate) breaker: Option<Trip>,
    pub(crate) quarantine: Vec<Quarantined>,
}

/// One commit's rollout.
#[derive(Clone, Debug)]
pub(crate) struct Rollout {
    pub commit: String,
    pub last_good: Option<String>,
    /// The commit the fleet was at when the rollout was planned: what the commit drops from
    /// it is the delete sequence, and fields it set that the commit no longer sets are removed.
    pub base: Option<String>,
    pub orphans: Vec<ObjectRef>,
    pub stages: Vec<StageSpec>,
    pub stage: usize,
    /// The next position of the current stage's sequence to consider.
    pub cursor: u32,
    pub flights: Flights,
    pub failures: Failures,
    pub phase: Phase,
    pub superseded_by: Option<String>,
    pub started_at: Time,
    pub waiting: Option<String>,
    pub restore: Option<Restore>,
    pub unrestored: Notes,
    /// Not persisted: recomputed from the commit on resume.
    pub plan: Option<Plan>,
    pub policy: Policy,
    /// Positions of the current stage seen healthy: a bake fails the ones that go `Failed`.
    pub healthy: Positions,
    /// Whether the revert was asked for in this process (not persisted: a restart asks again).
    pub revert_asked: bool,
    /// Resumed with changes in flight not looked at since: no gate times out until they are
    /// (a change that settled just before the restart must not fail for lack of a look).
    pub regating: bool,
    /// Changes of the current stage that settled (for progress; counted again on resume).
    pub settled: u32,
    /// Machines held back by a failed Cluster.
    pub held: Held,
}

/// The changes in flight in the current stage.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flights {
    /// Position → the flight.
    pub by_position: BTreeMap<u32, Flight>,
    /// Start bucket → positions started in it.
    pub by_start: BTreeMap<Time, Positions>,
    /// Identity → position.
    pub index: HashMap<ObjectRef, u32>,
}

/// A started change waiting to settle.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Flight {
    /// Its start, rounded up to a bucket.
    pub started: Time,
    /// The generation the write produced, once known.
    pub generation: Option<i64>,
    /// Why it is not healthy yet, as last observed.
    pub last: Option<String>,
}

impl Flights {
    pub fn len(&self) -> usize {
        self.by_position.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_position.is_empty()
    }

    pub fn insert(&mut self, position: u32, id: ObjectRef, started: Time) {
        self.by_start.entry(started).or_default().insert(position);
        self.index.insert(id, position);
        self.by_position.insert(
            position,
            Flight {
                started,
                generation: None,
                last: None,
            },
        );
    }

    pub fn remove(&mut self, position: u32, id: &ObjectRef) -> Option<Flight> {
        let flight = self.by_position.remove(&position)?;
        self.index.remove(id);
        if let Some(group) = self.by_start.get_mut(&flight.started) {
            group.remove(position);
            if group.is_empty() {
                self.by_start.remove(&flight.started);
            }
        }
        Some(flight)
    }

    pub fn clear(&mut self) {
        *self = Flights::default();
    }
}

/// Failures of a rollout: exact counts, the first reasons, and (bounded) which positions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failures {
    /// Per stage.
    pub per_stage: Vec<u32>,
    /// In all.
    pub total: u32,
    /// The first [`KEPT_FAILURES`], with their reasons.
    pub first: Vec<Note>,
    /// The first [`KEPT_FAILED_POSITIONS`] failed positions, per universe.
    pub positions: BTreeMap<Universe, Positions>,
    /// Failures no object is to blame for (a metric gate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fleet: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An object (or the fleet) and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// `Machine/ns/m-1`, or `fleet`.
    pub object: String,
    /// Why, cut to [`REASON_CHARS`].
    pub reason: String,
}

impl Note {
    fn new(object: String, reason: &str) -> Self {
        Note {
            object,
            reason: cut(reason, REASON_CHARS),
        }
    }
}

/// A count of notes, and the first few.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notes {
    /// How many.
    pub count: u32,
    /// The first [`KEPT_UNRESTORED`].
    pub first: Vec<Note>,
}

impl Notes {
    fn push(&mut self, note: Note) {
        self.count += 1;
        if self.first.len() < KEPT_UNRESTORED {
            self.first.push(note);
        }
    }
}

/// Cuts `text` to at most `chars` characters, saying so.
pub fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// After a trip: what is left to undo, as cursors counting down each lane's positions.
///
/// Lanes: restores no budget limits (updates, recreating deletes), undoing a reinstall (the
/// `machine-reinstall` budget). Each walks the started positions of every universe, newest
/// first, taking those of its class. Objects the rollout created are not deleted (see
/// [`RestoreClass::LeaveCreated`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RestoreWire")]
pub struct Restore {
    /// Per lane: the universe (index into the restore order) and how many of its positions
    /// are still to be looked at; `None` when the lane is done (persisted as `[]`: the API
    /// server drops a `null` even inside an array).
    #[serde(serialize_with = "lanes_out")]
    pub lanes: [Option<(u8, u32)>; 2],
    /// The batch issued and not yet confirmed: lane, universe index, `[from, to)`. A restart
    /// issues it again without spending again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<(u8, u8, u32, u32)>,
    /// Not persisted: what each started position's restore is (computed by the controller
    /// from the last good commit when the engine asks with [`Effect::PrepareRestore`]).
    #[serde(skip)]
    pub classes: Option<RestorePlan>,
}

fn lanes_out<S: serde::Serializer>(
    lanes: &[Option<(u8, u32)>; 2],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(lanes.len()))?;
    for lane in lanes {
        match lane {
            Some(lane) => seq.serialize_element(lane)?,
            None => seq.serialize_element(&[(); 0])?,
        }
    }
    seq.end()
}

/// A lane as persisted: `[universe, left]`, or done (`[]`, or `null` as earlier releases
/// wrote it).
#[derive(Deserialize)]
#[serde(untagged)]
enum LaneWire {
    Active((u8, u32)),
    Done(serde::de::IgnoredAny),
}

/// A persisted [`Restore`], of this release or of the one before it, which had a third lane
/// between the two (undoing creates from the `machine-delete` budget): that lane is dropped,
/// so what it had left stays in place, as this release does. Earlier releases wrote a done lane
/// as `null`, which the API server drops: no lanes left means both are done.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreWire {
    lanes: Vec<LaneWire>,
    #[serde(default)]
    issued: Option<(u8, u8, u32, u32)>,
}

impl TryFrom<RestoreWire> for Restore {
    type Error = String;

    fn try_from(wire: RestoreWire) -> Result<Self, String> {
        let lanes: Vec<Option<(u8, u32)>> = wire
            .lanes
            .into_iter()
            .map(|lane| match lane {
                LaneWire::Active(lane) => Some(lane),
                LaneWire::Done(_) => None,
            })
            .collect();
        let (lanes, issued) = match lanes[..] {
            [] => ([None, None], None),
            [free, reinstall] => ([free, reinstall], wire.issued),
            [free, _, reinstall] => (
                [free, reinstall],
                wire.issued.and_then(|(lane, u, from, to)| match lane {
                    0 => Some((0, u, from, to)),
                    2 => Some((1, u, from, to)),
                    _ => None,
                }),
            ),
            _ => return Err(format!("a restore has 2 lanes, not {}", lanes.len())),
        };
        Ok(Restore {
            lanes,
            issued,
            classes: None,
        })
    }
}

/// The order restores walk universes in: the reverse of the rollout.
const RESTORE_ORDER: [Universe; 4] = [
    Universe::Deletes,
    Universe::Machines,
    Universe::Clusters,
    Universe::Packages,
];

/// What undoing each started position takes, per universe (positions `0..reached`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestorePlan {
    /// Per universe (in [`Universe::ALL`] order).
    pub classes: [Vec<RestoreClass>; 4],
}

/// What undoing one position takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreClass {
    /// Nothing: the object is as the restore target has it.
    Skip,
    /// A write no budget limits: put back an update, recreate a deleted object.
    Free,
    /// A Machine or Cluster created by the rollout, absent from the restore target: left in
    /// place. A restore does not delete capacity — at the `machine-delete` budget's pace,
    /// undoing the creates of a large first rollout would take days, and a new object that
    /// failed serves nothing meanwhile. The revert drops it from Git, and once the breaker is
    /// reset its delete rolls out like any other (waves, gates, budget, the delete floor).
    LeaveCreated,
    /// Undoing a reinstall, from the `machine-reinstall` budget.
    UndoReinstall,
}

impl RestoreClass {
    /// How to undo `desired` (what the rollout wrote; `None` for a delete) given `before`
    /// (what the restore target has; `None` when it has nothing).
    pub fn of(desired: Option<&FleetObject>, before: Option<&FleetObject>) -> RestoreClass {
        match (desired, before) {
            (_, Some(b)) if desired.is_some_and(|d| crate::diff::same(d, b)) => RestoreClass::Skip,
            (Some(FleetObject::Machine(_) | FleetObject::Cluster(_)), None) => {
                RestoreClass::LeaveCreated
            }
            // A package version the rollout created is inert: it goes with the restore.
            (Some(_), None) => RestoreClass::Free,
            (None, None) => RestoreClass::Skip,
            (Some(FleetObject::Machine(d)), Some(FleetObject::Machine(b)))
                if d.spec.os_generation.unwrap_or(0) > b.spec.os_generation.unwrap_or(0) =>
            {
                RestoreClass::UndoReinstall
            }
            _ => RestoreClass::Free,
        }
    }

    fn lane(self) -> Option<usize> {
        match self {
            RestoreClass::Skip | RestoreClass::LeaveCreated => None,
            RestoreClass::Free => Some(0),
            RestoreClass::UndoReinstall => Some(1),
        }
    }
}

const LANE_CLASSES: [Option<BudgetClass>; 2] = [None, Some(BudgetClass::MachineReinstall)];

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

/// Why and when the breaker tripped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trip {
    /// When.
    pub at: Time,
    /// The commit being rolled out.
    pub commit: String,
    /// What crossed which threshold.
    pub evidence: Evidence,
    /// The revert commits pushed, once known.
    #[serde(default)]
    pub reverts: Vec<String>,
    /// How the revert went, once known.
    #[serde(default, alias = "revert_outcome")]
    pub revert_outcome: Option<String>,
}

/// The breaker's evidence, recorded in status and in the revert commit's message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The stage the breaker tripped in.
    pub stage: String,
    /// The threshold crossed, in words.
    pub threshold: String,
    /// Failures in the stage, and its size.
    #[serde(alias = "stage_failures")]
    pub stage_failures: (u32, u32),
    /// Failures in the rollout, and the number of changed objects.
    #[serde(alias = "total_failures")]
    pub total_failures: (u32, u32),
    /// The failed objects (the first [`KEPT_FAILURES`]) and why.
    pub failed: Vec<(String, String)>,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Breaker tripped in wave {}: {}.",
            self.stage, self.threshold
        )?;
        writeln!(
            f,
            "Failures: {} of {} in the wave, {} of {} in the rollout.",
            self.stage_failures.0,
            self.stage_failures.1,
            self.total_failures.0,
            self.total_failures.1
        )?;
        for (object, reason) in &self.failed {
            writeln!(f, "- {object}: {reason}")?;
        }
        let more = self.total_failures.0 as usize;
        if more > self.failed.len() {
            writeln!(f, "- and {} more", more - self.failed.len())?;
        }
        Ok(())
    }
}

/// A commit that must never be applied again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The commit.
    pub commit: String,
    /// Why.
    pub reason: String,
    /// The commit that reverted it, if pushed.
    pub revert: Option<String>,
}

/// What happened, fed back by the controller.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Time passed; re-evaluate timers and start what may start.
    Tick,
    /// Outcomes of [`Effect::Apply`] / [`Effect::Delete`]: the generation written (0 for a
    /// delete issued, [`KEPT`] for one not issued because the object is kept), or why the
    /// write failed.
    Written(Vec<(ObjectRef, Result<i64, String>)>),
    /// What the gates see of objects the engine is interested in (see [`Engine::interest`]).
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
    Restored(Vec<(ObjectRef, Result<(), String>)>),
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
    /// Work out how each started position is undone ([`RestoreClass::of`] against what a trip
    /// restores) for the positions [`Engine::restore_ranges`] names, and answer with
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
        /// The failed objects (the first [`KEPT_FAILED_POSITIONS`]).
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
    Waiting(String),
    /// An object failed its gate.
    Failed(ObjectRef, String),
    /// The breaker tripped.
    Tripped(Evidence),
    /// Restores were issued.
    RestoreIssued(usize),
    /// A trip leaves this many objects the rollout created in place (see
    /// [`RestoreClass::LeaveCreated`]).
    LeftCreated(usize),
    /// The Machines of a Cluster whose change failed its gate in this rollout are skipped,
    /// not rolled out (the first of them named).
    Held {
        /// The Cluster.
        cluster: ObjectRef,
        /// The first Machine held back.
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

/// A read-only view of the rollout, for status and progress.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    r: &'a Rollout,
}

impl<'a> View<'a> {
    /// The commit rolled out.
    pub fn commit(&self) -> &'a str {
        &self.r.commit
    }

    /// The last good commit before it.
    pub fn last_good(&self) -> Option<&'a str> {
        self.r.last_good.as_deref()
    }

    /// Where it is.
    pub fn phase(&self) -> &'a Phase {
        &self.r.phase
    }

    /// The stages.
    pub fn stages(&self) -> &[StageSpec] {
        &self.r.stages
    }

    /// The current stage's index.
    pub fn stage_index(&self) -> usize {
        self.r.stage
    }

    /// The current stage.
    pub fn stage(&self) -> Option<&'a StageSpec> {
        self.r.stages.get(self.r.stage)
    }

    /// The current stage's cursor (a position in its sequence's order).
    pub fn cursor(&self) -> u32 {
        self.r.cursor
    }

    /// Changes in flight.
    pub fn inflight(&self) -> usize {
        self.r.flights.len()
    }

    /// The objects in flight and the generation each waits for, if known.
    pub fn inflight_ids(&self) -> impl Iterator<Item = (&'a ObjectRef, Option<i64>)> + 'a {
        let r = self.r;
        r.flights
            .index
            .iter()
            .map(move |(id, p)| (id, r.flights.by_position.get(p).and_then(|f| f.generation)))
    }

    /// Failures so far.
    pub fn failures(&self) -> &'a Failures {
        &self.r.failures
    }

    /// Why no work starts, if it waits.
    pub fn waiting(&self) -> Option<&'a str> {
        self.r.waiting.as_deref()
    }

    /// When it started.
    pub fn started_at(&self) -> Time {
        self.r.started_at
    }

    /// Objects changed (the stages' sizes, package versions excluded).
    pub fn changed(&self) -> u32 {
        self.r.changed()
    }

    /// The policy it runs under (the default until resumed).
    pub fn policy(&self) -> &'a Policy {
        &self.r.policy
    }

    /// Restores that failed.
    pub fn unrestored(&self) -> &'a Notes {
        &self.r.unrestored
    }

    /// A newer commit waiting for this rollout to stop.
    pub fn superseded_by(&self) -> Option<&'a str> {
        self.r.superseded_by.as_deref()
    }

    /// The plan, once started or resumed.
    pub fn plan(&self) -> Option<&'a Plan> {
        self.r.plan.as_ref()
    }

    /// Changes of the current stage that settled healthy (counted in memory; after a resume,
    /// those that settled before it are estimated from the stage's size).
    pub fn settled(&self) -> u32 {
        self.r.settled
    }
}

impl Engine {
    /// Whether the breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_some()
    }

    /// The latched breaker, when open.
    pub fn breaker(&self) -> Option<&Trip> {
        self.breaker.as_ref()
    }

    /// Commits that must never be the applied target again, oldest first.
    pub fn quarantine(&self) -> &[Quarantined] {
        &self.quarantine
    }

    /// Whether `commit` is quarantined.
    pub fn quarantined(&self, commit: &str) -> bool {
        self.quarantine.iter().any(|q| q.commit == commit)
    }

    /// The fleet-wide budget spends.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The rollout in progress, or the last one.
    pub fn rollout(&self) -> Option<View<'_>> {
        self.rollout.as_ref().map(|r| View { r })
    }

    /// Whether a rollout is under way (anything but completed, superseded or restored).
    pub fn busy(&self) -> bool {
        self.rollout.as_ref().is_some_and(|r| {
            !matches!(
                r.phase,
                Phase::Completed | Phase::Superseded | Phase::Restored
            )
        })
    }

    /// For a loaded rollout that is under way, what to recompute before [`Engine::resume`].
    pub fn resumable(&self) -> Option<Resumable> {
        let r = self.rollout.as_ref().filter(|_| self.busy())?;
        Some(Resumable {
            commit: r.commit.clone(),
            base: r.base.clone(),
            orphans: r.orphans.clone(),
        })
    }

    /// Starts rolling out a commit; the previous rollout must be over.
    pub fn start(&mut self, start: Start, now: Time) -> Vec<Effect> {
        debug_assert!(!self.busy(), "a rollout is already under way");
        let Start {
            commit,
            last_good,
            base,
            plan,
            policy,
        } = start;
        let stages = plan.stages(&policy);
        let cursor = stages.first().map_or(0, |s| s.start);
        self.rollout = Some(Rollout {
            commit,
            last_good,
            base,
            orphans: plan.orphans.clone(),
            failures: Failures {
                per_stage: vec![0; stages.len()],
                ..Failures::default()
            },
            stages,
            stage: 0,
            cursor,
            flights: Flights::default(),
            phase: Phase::Running,
            superseded_by: None,
            started_at: now,
            waiting: None,
            restore: None,
            unrestored: Notes::default(),
            plan: Some(plan),
            policy,
            healthy: Positions::new(),
            revert_asked: false,
            regating: false,
            held: Held::default(),
            settled: 0,
        });
        let mut fx = vec![Effect::Persist];
        self.report_stage_start(&mut fx);
        self.advance(now, &mut fx);
        fx
    }

    /// Hands a loaded rollout its recomputed plan and policy, and says what to do: re-issue
    /// the writes in flight (their outcome was lost; an object already in sync needs no
    /// request), re-check what a bake watches, prepare an interrupted restore, ask again for a
    /// revert whose answer was lost.
    pub fn resume(&mut self, plan: Plan, policy: Policy, now: Time) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(r) = self.rollout.as_mut() else {
            return fx;
        };
        r.policy = policy;
        r.plan = Some(plan);
        let plan = r.plan.as_ref().expect("just set");
        let stage = r.stages.get(r.stage).cloned();
        // What settled before the restart: the changes started in the stage (its size less
        // those still ahead of the cursor) less those in flight and those that failed.
        if let Some(stage) = &stage {
            let ahead = (r.cursor.min(stage.end)..stage.end.min(plan.len(stage.seq)))
                .filter(|p| plan.op(stage.seq, *p).is_some())
                .count() as u32;
            r.settled = stage
                .size
                .saturating_sub(ahead)
                .saturating_sub(r.flights.len() as u32)
                .saturating_sub(r.failures.per_stage.get(r.stage).copied().unwrap_or(0));
        }
        // Re-index the flights (the persisted form has positions only).
        if let Some(stage) = &stage {
            let positions: Vec<u32> = r.flights.by_position.keys().copied().collect();
            r.flights.index = positions
                .iter()
                .filter(|p| **p < plan.len(stage.seq))
                .map(|&p| (plan.id(stage.seq, p).clone(), p))
                .collect();
        }
        match (&r.phase, &stage) {
            (Phase::Running, Some(stage)) if !r.flights.is_empty() => {
                let ids: Vec<ObjectRef> = r
                    .flights
                    .by_position
                    .keys()
                    .filter(|p| **p < plan.len(stage.seq))
                    .map(|p| plan.id(stage.seq, *p).clone())
                    .collect();
                fx.push(write_effect(stage.seq, ids.clone()));
                if stage.seq.gated() {
                    r.regating = true;
                    fx.push(Effect::Observe(ids));
                }
            }
            (Phase::Baking { .. }, Some(stage))
                if stage.seq.gated() && stage.seq != Seq::Deletes =>
            {
                // What the bake watches is held in memory: look at the stage's objects once;
                // those healthy now are watched for a `Failed` status from here on.
                r.healthy = Positions::new();
                let ids: Vec<ObjectRef> = (stage.start..stage.end.min(plan.len(stage.seq)))
                    .map(|p| plan.id(stage.seq, p).clone())
                    .collect();
                fx.push(Effect::Observe(ids));
            }
            (Phase::Tripped { .. }, _) => {
                r.revert_asked = false;
                fx.push(Effect::PrepareRestore);
            }
            _ => {}
        }
        self.advance(now, &mut fx);
        fx
    }

    /// Gives a rollout planned partially (see [`Plan::partial`]) its whole plan, once the live
    /// fleet can be read whole.
    pub fn replan(&mut self, plan: Plan, now: Time) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(r) = self.rollout.as_mut() {
            r.plan = Some(plan);
        }
        self.advance(now, &mut fx);
        fx
    }

    /// Whether the rollout runs on a partial plan.
    pub fn partial(&self) -> bool {
        self.rollout
            .as_ref()
            .and_then(|r| r.plan.as_ref())
            .is_some_and(Plan::is_partial)
    }

    /// Why the engine wants to hear about `id` now, if it does.
    pub fn interest(&self, id: &ObjectRef) -> Option<Interest> {
        let r = self.rollout.as_ref()?;
        let stage = r.stages.get(r.stage)?;
        if !stage.seq.gated() {
            return None;
        }
        match r.phase {
            Phase::Running => {
                let p = r.flights.index.get(id)?;
                let flight = r.flights.by_position.get(p)?;
                if stage.seq == Seq::Deletes {
                    return Some(Interest::Gone);
                }
                Some(Interest::Gate(flight.generation))
            }
            // A deleted object has nothing left to watch while its wave bakes.
            Phase::Baking { .. } if stage.seq == Seq::Deletes => None,
            Phase::Baking { .. } => {
                let plan = r.plan.as_ref()?;
                let p = plan.order(stage.seq.universe()).position(id)?;
                (stage.start..stage.end)
                    .contains(&p)
                    .then_some(Interest::Bake)
            }
            _ => None,
        }
    }

    /// Per universe, how many of its positions a restore covers (every position up to the
    /// furthest one started).
    pub fn restore_ranges(&self) -> [u32; 4] {
        self.rollout.as_ref().map_or([0; 4], Rollout::reached)
    }

    /// Feeds one event; returns what to do.
    pub fn step(&mut self, event: Event, now: Time) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::Tick => {}
            Event::Written(results) => self.written(results, now, &mut fx),
            Event::Observed(healths) => self.observed(healths, now, &mut fx),
            Event::Sampled(samples) => self.sampled(samples, now, &mut fx),
            Event::Approve => {
                if let Some(r) = &mut self.rollout
                    && r.phase == Phase::AwaitingApproval
                {
                    r.phase = Phase::Running;
                    fx.push(Effect::Persist);
                    self.next_stage(&mut fx);
                }
            }
            Event::NewCommit(commit) => {
                if let Some(r) = &mut self.rollout
                    && matches!(
                        r.phase,
                        Phase::Running | Phase::Baking { .. } | Phase::AwaitingApproval
                    )
                    && r.commit != commit
                {
                    r.superseded_by = Some(commit);
                    fx.push(Effect::Persist);
                    if r.phase == Phase::AwaitingApproval {
                        self.supersede(&mut fx);
                    }
                }
            }
            Event::RestorePlan(classes) => {
                let left = classes
                    .classes
                    .iter()
                    .flatten()
                    .filter(|c| **c == RestoreClass::LeaveCreated)
                    .count();
                if left > 0 {
                    fx.push(Effect::Report(Report::LeftCreated(left)));
                }
                if let Some(restore) = self.rollout.as_mut().and_then(|r| r.restore.as_mut()) {
                    restore.classes = Some(classes);
                }
                self.reissue_restore(&mut fx);
            }
            Event::Restored(results) => {
                if let Some(r) = &mut self.rollout {
                    for (id, result) in results {
                        if let Err(why) = result {
                            r.unrestored.push(Note::new(id.to_string(), &why));
                        }
                    }
                    if let Some(restore) = &mut r.restore {
                        restore.issued = None;
                    }
                }
            }
            Event::Reverted {
                culprits,
                reverts,
                outcome,
            } => {
                if let Some(trip) = &mut self.breaker {
                    trip.reverts = reverts.iter().take(KEPT_REVERTS).cloned().collect();
                    trip.revert_outcome = Some(cut(&outcome, 1024));
                }
                for (i, culprit) in culprits.into_iter().enumerate() {
                    if !self.quarantined(&culprit) {
                        self.quarantine.push(Quarantined {
                            commit: culprit,
                            reason: cut(&outcome, QUARANTINE_REASON_CHARS),
                            revert: reverts.get(i).cloned(),
                        });
                    }
                }
                let excess = self.quarantine.len().saturating_sub(KEPT_QUARANTINE);
                self.quarantine.drain(..excess);
                if let Some(r) = &mut self.rollout
                    && let Phase::Tripped { revert_pending } = &mut r.phase
                {
                    *revert_pending = false;
                }
                fx.push(Effect::Persist);
            }
            Event::ResetBreaker => {
                self.breaker = None;
                fx.push(Effect::Persist);
            }
        }
        self.advance(now, &mut fx);
        fx
    }

    fn written(
        &mut self,
        results: Vec<(ObjectRef, Result<i64, String>)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        if r.phase != Phase::Running {
            return;
        }
        let Some(stage) = r.stages.get(r.stage) else {
            return;
        };
        let gated = stage.seq.gated();
        let mut failed = Vec::new();
        for (id, result) in results {
            let Some(&p) = r.flights.index.get(&id) else {
                continue;
            };
            match result {
                Ok(KEPT) if stage.seq == Seq::Deletes => {
                    r.flights.remove(p, &id);
                    r.settled += 1;
                }
                Ok(generation) if gated => {
                    if let Some(f) = r.flights.by_position.get_mut(&p) {
                        f.generation = Some(generation);
                    }
                }
                Ok(_) => {
                    r.flights.remove(p, &id);
                    r.settled += 1;
                }
                Err(why) => failed.push((p, id, format!("write failed: {why}"))),
            }
        }
        self.fail(failed, now, fx);
    }

    fn observed(&mut self, healths: Vec<(ObjectRef, Health)>, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let Some(stage) = r.stages.get(r.stage) else {
            return;
        };
        match r.phase {
            Phase::Running => {
                let mut failed = Vec::new();
                for (id, health) in healths {
                    let Some(&p) = r.flights.index.get(&id) else {
                        continue;
                    };
                    match health {
                        Health::Healthy => {
                            r.flights.remove(p, &id);
                            r.healthy.insert(p);
                            r.settled += 1;
                        }
                        Health::Progressing(why) => {
                            if let Some(f) = r.flights.by_position.get_mut(&p) {
                                f.last = Some(cut(&why, REASON_CHARS));
                            }
                        }
                        Health::Failed(why) => failed.push((p, id, why)),
                    }
                }
                r.regating = false;
                self.fail(failed, now, fx);
            }
            Phase::Baking { .. } => {
                let Some(plan) = r.plan.as_ref() else { return };
                let order = plan.order(stage.seq.universe());
                let range = stage.start..stage.end;
                let mut failed = Vec::new();
                for (id, health) in healths {
                    let Some(p) = order.position(&id).filter(|p| range.contains(p)) else {
                        continue;
                    };
                    match health {
                        Health::Healthy => {
                            r.healthy.insert(p);
                        }
                        Health::Failed(why) if r.healthy.remove(p) => {
                            failed.push((p, id, format!("failed while its wave baked: {why}")));
                        }
                        _ => {}
                    }
                }
                self.fail_settled(failed, now, fx);
            }
            _ => {}
        }
    }

    fn sampled(&mut self, samples: Vec<(String, Sample)>, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let Phase::Baking {
            metrics_ok,
            metrics_missing_since,
            asked,
            samples: kept,
            ..
        } = &mut r.phase
        else {
            return;
        };
        // No data counts from when the query was asked, not from when it gave up.
        let asked_at = asked.take().unwrap_or(now);
        let mut violation = None;
        let mut missing = None;
        // A gate the answers leave out (its query was lost) has no data.
        if let Some(gate) = r
            .policy
            .metrics
            .iter()
            .find(|g| !samples.iter().any(|(name, _)| *name == g.name))
        {
            missing = Some((gate.name.clone(), "no answer".to_owned()));
        }
        for (name, sample) in samples {
            let Some(gate) = r.policy.metrics.iter().find(|g| g.name == name) else {
                continue;
            };
            crate::gates::keep(kept, &name, now, &sample);
            match crate::gates::judge(gate, &sample) {
                Verdict::InBounds => {}
                Verdict::OutOfBounds(why) => violation = Some(why),
                Verdict::NoData(what) => missing = Some((name, what)),
            }
        }
        *metrics_ok = missing.is_none() && violation.is_none();
        match &missing {
            Some(_) => {
                metrics_missing_since.get_or_insert(asked_at);
            }
            None => *metrics_missing_since = None,
        }
        let since = *metrics_missing_since;
        let timeout = r.policy.gate_timeout;
        if violation.is_none()
            && let (Some((name, what)), Some(since)) = (missing, since)
        {
            if now.since(since) >= timeout {
                violation = Some(format!("metric {name}: {what} for {}", human(timeout)));
            } else {
                let why = format!("metric {name}: {what} for {}", human(now.since(since)));
                if r.waiting.as_ref() != Some(&why) {
                    fx.push(Effect::Report(Report::Waiting(why.clone())));
                    r.waiting = Some(why);
                }
            }
        } else if r
            .waiting
            .as_deref()
            .is_some_and(|w| w.starts_with("metric "))
        {
            r.waiting = None;
        }
        if let Some(reason) = violation {
            self.metric_trip(reason, now, fx);
        }
    }

    /// Trips the breaker for a metric gate: no object is to blame.
    fn metric_trip(&mut self, reason: String, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let stage = r.stage;
        r.failures.per_stage[stage] += 1;
        r.failures.total += 1;
        r.failures.fleet += 1;
        if r.failures.first.len() < KEPT_FAILURES {
            r.failures.first.push(Note::new("fleet".into(), &reason));
        }
        if let Phase::Baking { samples, .. } = &r.phase {
            for kept in samples {
                if r.failures.first.len() < KEPT_FAILURES {
                    let answer = format!("{} at {}", kept.answer, kept.at);
                    r.failures
                        .first
                        .push(Note::new(format!("metric {}", kept.gate), &answer));
                }
            }
        }
        self.trip(reason, now, fx);
    }

    /// When the metric gates of a bake will have had no data for the gate timeout: the
    /// oldest of an answer without data and a query asked and not answered.
    fn metrics_deadline(r: &Rollout) -> Option<Time> {
        let Phase::Baking {
            metrics_missing_since,
            asked,
            ..
        } = &r.phase
        else {
            return None;
        };
        let since = match (metrics_missing_since, asked) {
            (Some(a), Some(b)) => (*a).min(*b),
            (Some(a), None) | (None, Some(a)) => *a,
            (None, None) => return None,
        };
        Some(since + r.policy.gate_timeout)
    }

    /// Records failures of in-flight changes and trips the breaker when a threshold is crossed.
    fn fail(&mut self, failed: Vec<(u32, ObjectRef, String)>, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let failed: Vec<_> = failed
            .into_iter()
            .filter(|(p, id, _)| r.flights.remove(*p, id).is_some())
            .collect();
        self.fail_settled(failed, now, fx);
    }

    /// Records failures of changes no longer in flight.
    fn fail_settled(
        &mut self,
        failed: Vec<(u32, ObjectRef, String)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        if failed.is_empty() {
            return;
        }
        let universe = r.stages[r.stage].seq.universe();
        for (p, id, reason) in failed {
            r.failures.per_stage[r.stage] += 1;
            r.failures.total += 1;
            if r.failures.first.len() < KEPT_FAILURES {
                r.failures.first.push(Note::new(id.to_string(), &reason));
            }
            let kept: usize = r.failures.positions.values().map(Positions::len).sum();
            if kept < KEPT_FAILED_POSITIONS {
                r.failures.positions.entry(universe).or_default().insert(p);
            }
            fx.push(Effect::Report(Report::Failed(
                id,
                cut(&reason, REASON_CHARS),
            )));
        }
        fx.push(Effect::Persist);
        if let Some(threshold) = r.crossed() {
            self.trip(threshold, now, fx);
        }
    }

    fn trip(&mut self, threshold: String, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let stage = &r.stages[r.stage];
        let evidence = Evidence {
            stage: stage.name.clone(),
            threshold,
            stage_failures: (r.failures.per_stage[r.stage], stage.size),
            total_failures: (r.failures.total, r.changed()),
            failed: r
                .failures
                .first
                .iter()
                .map(|n| (n.object.clone(), n.reason.clone()))
                .collect(),
        };
        let reached = r.reached();
        let mut lanes = [None; 2];
        if let Some(first) = RESTORE_ORDER.iter().position(|u| reached[u.index()] > 0) {
            let u = RESTORE_ORDER[first];
            lanes = [Some((first as u8, reached[u.index()])); 2];
        }
        r.restore = Some(Restore {
            lanes,
            issued: None,
            classes: None,
        });
        r.flights.clear();
        r.healthy = Positions::new();
        r.waiting = None;
        let revert = r.policy.breaker.revert;
        r.phase = Phase::Tripped {
            revert_pending: revert,
        };
        fx.push(Effect::Report(Report::Tripped(evidence.clone())));
        self.breaker = Some(Trip {
            at: now,
            commit: r.commit.clone(),
            evidence,
            reverts: Vec::new(),
            revert_outcome: None,
        });
        fx.push(Effect::Persist);
        fx.push(Effect::PrepareRestore);
    }

    fn revert_effect(&self, evidence: Evidence) -> Effect {
        let r = self.rollout.as_ref().expect("a tripped rollout");
        let failed = match &r.plan {
            Some(plan) => r
                .failures
                .positions
                .iter()
                .flat_map(|(u, ps)| {
                    let order = plan.order(*u);
                    ps.iter()
                        .filter(move |p| *p < order.len())
                        .map(move |p| order.id(p).clone())
                })
                .collect(),
            None => Vec::new(),
        };
        Effect::Revert {
            commit: r.commit.clone(),
            last_good: r.last_good.clone(),
            failed,
            evidence,
        }
    }

    /// After a restart with a batch of restores issued and not confirmed, issues it again
    /// (spent already).
    fn reissue_restore(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &self.rollout else { return };
        let (Some(restore), Some(plan)) = (&r.restore, &r.plan) else {
            return;
        };
        let Some((_, u, from, to)) = restore.issued else {
            return;
        };
        let universe = RESTORE_ORDER[u as usize];
        let order = plan.order(universe);
        let classes = restore
            .classes
            .as_ref()
            .map(|c| &c.classes[universe.index()]);
        // In the order first issued: newest first.
        let ids: Vec<ObjectRef> = (from..to.min(order.len()))
            .rev()
            .filter(|p| classes.is_none_or(|c| c.get(*p as usize) != Some(&RestoreClass::Skip)))
            .map(|p| order.id(p).clone())
            .collect();
        if !ids.is_empty() {
            fx.push(Effect::Restore(ids));
        }
    }

    /// Issues the next batch of restores: every lane with budget room (the unlimited lane
    /// always has), one batch at a time. Returns whether it issued one.
    fn drain_restore(&mut self, now: Time, fx: &mut Vec<Effect>) -> bool {
        let Some(r) = &mut self.rollout else {
            return false;
        };
        let reached = r.reached();
        let (Some(restore), Some(plan)) = (&mut r.restore, &r.plan) else {
            return false;
        };
        if restore.issued.is_some() {
            return false;
        }
        let Some(classes) = &restore.classes else {
            return false;
        };
        for (lane, &class) in LANE_CLASSES.iter().enumerate() {
            let mut room = self
                .budgets
                .available(&r.policy, class, now)
                .min(RESTORE_BATCH);
            let Some((mut u, mut left)) = restore.lanes[lane] else {
                continue;
            };
            let mut ids = Vec::new();
            let mut issued: Option<(u8, u32, u32)> = None;
            while room > 0 {
                if left == 0 {
                    if !ids.is_empty() {
                        break; // one universe per batch
                    }
                    match (u as usize + 1..RESTORE_ORDER.len())
                        .find(|i| reached[RESTORE_ORDER[*i].index()] > 0)
                    {
                        Some(next) => {
                            u = next as u8;
                            left = reached[RESTORE_ORDER[next].index()];
                            continue;
                        }
                        None => {
                            restore.lanes[lane] = None;
                            break;
                        }
                    }
                }
                left -= 1;
                let universe = RESTORE_ORDER[u as usize];
                let c = classes.classes[universe.index()]
                    .get(left as usize)
                    .copied()
                    .unwrap_or(RestoreClass::Skip);
                if c.lane() != Some(lane) {
                    continue;
                }
                let order = plan.order(universe);
                if left >= order.len() {
                    continue;
                }
                ids.push(order.id(left).clone());
                room -= 1;
                issued = Some(match issued {
                    Some((u, _, to)) => (u, left, to),
                    None => (u, left, left + 1),
                });
            }
            if restore.lanes[lane].is_some() {
                restore.lanes[lane] = Some((u, left));
            }
            if let Some((iu, from, to)) = issued {
                self.budgets.spend(&r.policy, class, ids.len() as u64, now);
                restore.issued = Some((lane as u8, iu, from, to));
                let n = ids.len();
                fx.push(Effect::Persist);
                fx.push(Effect::Restore(ids));
                fx.push(Effect::Report(Report::RestoreIssued(n)));
                return true;
            }
        }
        false
    }

    /// Moves the rollout forward as far as `now` allows, and asks to be woken for the next
    /// deadline.
    fn advance(&mut self, now: Time, fx: &mut Vec<Effect>) {
        loop {
            let Some(r) = &mut self.rollout else { return };
            if r.plan.is_none() {
                // Loaded and not resumed yet: nothing can be decided.
                return;
            }
            match r.phase.clone() {
                Phase::Tripped { revert_pending } => {
                    let Some(restore) = &r.restore else { break };
                    if restore.classes.is_none() || restore.issued.is_some() {
                        break;
                    }
                    if self.drain_restore(now, fx) {
                        break;
                    }
                    let r = self.rollout.as_mut().expect("checked");
                    let restore = r.restore.as_ref().expect("checked");
                    let free_done = restore.lanes[0].is_none();
                    let all_done = restore.lanes.iter().all(Option::is_none);
                    if free_done && revert_pending && !r.revert_asked {
                        r.revert_asked = true;
                        if let Some(trip) = &self.breaker {
                            let evidence = trip.evidence.clone();
                            fx.push(self.revert_effect(evidence));
                        }
                    }
                    let r = self.rollout.as_mut().expect("checked");
                    if !all_done {
                        let why = "restores wait for the delete/reinstall budget".to_owned();
                        if r.waiting.as_ref() != Some(&why) {
                            r.waiting = Some(why.clone());
                            fx.push(Effect::Report(Report::Waiting(why)));
                        }
                    }
                    if all_done && !revert_pending {
                        let r = self.rollout.as_mut().expect("checked");
                        r.phase = Phase::Restored;
                        r.waiting = None;
                        fx.push(Effect::Persist);
                        fx.push(Effect::Report(Report::Restored {
                            unrestored: r.unrestored.count,
                        }));
                    }
                    break;
                }
                Phase::Completed
                | Phase::Superseded
                | Phase::Restored
                | Phase::AwaitingApproval => break,
                Phase::Baking {
                    until,
                    next_sample,
                    metrics_ok,
                    ..
                } => {
                    if let Some(deadline) = Self::metrics_deadline(r)
                        && deadline <= now
                    {
                        let timeout = human(r.policy.gate_timeout);
                        let last = match &r.phase {
                            Phase::Baking { samples, .. } => samples
                                .iter()
                                .filter(|k| k.answer.starts_with("no "))
                                .max_by_key(|k| k.at),
                            _ => None,
                        };
                        let reason = match last {
                            Some(k) if k.answer == "no series" => {
                                format!("metric {}: no series for {timeout}", k.gate)
                            }
                            Some(k) => format!(
                                "metric {}: no answer for {timeout} (last: {})",
                                k.gate, k.answer
                            ),
                            None => {
                                let names: Vec<&str> =
                                    r.policy.metrics.iter().map(|g| g.name.as_str()).collect();
                                format!("metric {}: no answer for {timeout}", names.join(", "))
                            }
                        };
                        self.metric_trip(reason, now, fx);
                        break;
                    }
                    if let Some(at) = next_sample
                        && at <= now
                    {
                        fx.push(Effect::Sample(r.policy.metrics.clone()));
                        let interval = r.policy.metrics.iter().map(|m| m.interval).min();
                        if let Phase::Baking {
                            next_sample, asked, ..
                        } = &mut r.phase
                        {
                            *next_sample = interval.map(|i| now + i);
                            asked.get_or_insert(now);
                        }
                        break;
                    }
                    if now < until || !metrics_ok {
                        break;
                    }
                    self.stage_done(fx);
                }
                Phase::Running => {
                    if !self.run_stage(now, fx) {
                        break;
                    }
                }
            }
        }
        if let Some(at) = self.next_wake(now) {
            fx.push(Effect::WakeAt(at));
        }
    }

    /// Gates and starts work in the current stage. Returns whether the phase changed (so
    /// `advance` goes round again).
    fn run_stage(&mut self, now: Time, fx: &mut Vec<Effect>) -> bool {
        let Some(r) = &mut self.rollout else {
            return false;
        };
        let Some(stage) = r.stages.get(r.stage).cloned() else {
            return false;
        };
        let plan = r.plan.as_ref().expect("resumed");
        // Gate timeouts: whole start buckets at a time.
        let timeout = r.policy.gate_timeout;
        if stage.seq.gated() && !r.regating {
            let expired: Vec<u32> = r
                .flights
                .by_start
                .range(..=now - timeout)
                .flat_map(|(_, ps)| ps.iter())
                .collect();
            if !expired.is_empty() {
                let failed = expired
                    .into_iter()
                    .map(|p| {
                        let f = &r.flights.by_position[&p];
                        let what = match f.generation {
                            _ if stage.seq == Seq::Deletes => "not gone".to_owned(),
                            Some(g) => format!("not healthy for generation {g}"),
                            None => "not healthy for its write".to_owned(),
                        };
                        let last = f.last.as_deref().unwrap_or("no status");
                        (
                            p,
                            plan.id(stage.seq, p).clone(),
                            format!("{what} within {}: {last}", human(timeout)),
                        )
                    })
                    .collect();
                self.fail(failed, now, fx);
                if !matches!(
                    self.rollout.as_ref().map(|r| &r.phase),
                    Some(Phase::Running)
                ) {
                    return true;
                }
            }
        }
        let r = self.rollout.as_mut().expect("checked");
        let plan = r.plan.as_ref().expect("resumed");
        let end = stage.end.min(plan.len(stage.seq));
        // A partial plan knows the next positions only: nothing past them starts until the
        // whole plan comes.
        let known = plan.known_until(stage.seq).min(end);
        let aborting = r.superseded_by.is_some() && r.policy.abort_on_new_commit;
        // Skip what is in sync, and Machines whose Cluster failed its gate in this rollout: no
        // spend, no write.
        while r.cursor < known
            && (plan.op(stage.seq, r.cursor).is_none()
                || held(plan, &r.failures, stage.seq, r.cursor).is_some())
        {
            if let Some(cluster) = held(plan, &r.failures, stage.seq, r.cursor) {
                hold(&mut r.held, plan, stage.seq, r.cursor, cluster, fx);
            }
            r.cursor += 1;
        }
        if r.cursor >= known && known < end && !aborting {
            return false;
        }
        if r.cursor >= end || aborting {
            if !r.flights.is_empty() {
                return false;
            }
            if aborting {
                self.supersede(fx);
                return true;
            }
            // The stage settled.
            let sample = !r.policy.metrics.is_empty() && stage.seq.gated();
            r.phase = Phase::Baking {
                until: now + stage.bake(),
                next_sample: sample.then_some(now),
                metrics_ok: !sample,
                metrics_missing_since: None,
                asked: None,
                samples: Vec::new(),
            };
            fx.push(Effect::Persist);
            return true;
        }
        // Start what may start: room under maxUnavailable, the budget, the window. Changes are
        // admitted in batches (an eighth of maxUnavailable at least) so that saving the state
        // before the writes costs one status write per batch.
        let max = stage.max_unavailable as usize;
        let room = max.saturating_sub(r.flights.len());
        let batch = (max / 8).max(1);
        if room == 0 || (room < batch && !r.flights.is_empty()) {
            return false;
        }
        let (weekday, minute) = now.weekday_and_minute();
        if stage.seq.gated() && !r.policy.window_open(weekday, minute) {
            let why = "outside every maintenance window".to_owned();
            if r.waiting.as_ref() != Some(&why) {
                fx.push(Effect::Report(Report::Waiting(why.clone())));
                r.waiting = Some(why);
            }
            return false;
        }
        let started = bucket_up(now, timeout);
        let oldest = r.flights.by_position.keys().next().copied();
        let span_end = oldest.map_or(u32::MAX, |o| o.saturating_add(MAX_SPAN));
        let mut ids = Vec::new();
        let mut spends: BTreeMap<BudgetClass, u64> = BTreeMap::new();
        let mut blocked = None;
        while ids.len() < room && r.cursor < known.min(span_end) {
            let p = r.cursor;
            let Some(op) = plan.op(stage.seq, p) else {
                r.cursor += 1;
                continue;
            };
            if let Some(cluster) = held(plan, &r.failures, stage.seq, p) {
                hold(&mut r.held, plan, stage.seq, p, cluster, fx);
                r.cursor += 1;
                continue;
            }
            let id = plan.id(stage.seq, p);
            let class = plan::class(id.fleet_kind(), op);
            let spent = class.map_or(0, |c| spends.get(&c).copied().unwrap_or(0)) as usize;
            if self.budgets.available(&r.policy, class, now) <= spent {
                blocked = class;
                break;
            }
            if let Some(c) = class {
                *spends.entry(c).or_default() += 1;
            }
            r.flights.insert(p, id.clone(), started);
            ids.push(id.clone());
            r.cursor += 1;
        }
        for (class, n) in spends {
            self.budgets.spend(&r.policy, Some(class), n, now);
        }
        match blocked {
            Some(class) => {
                let why = format!(
                    "{}budget {class} is spent until {}",
                    if class.high_risk() {
                        "paused: high-risk "
                    } else {
                        ""
                    },
                    self.budgets
                        .next_room(&r.policy, Some(class), now)
                        .map_or("it is raised".to_owned(), |t| t.to_string())
                );
                if r.waiting.as_ref() != Some(&why) {
                    fx.push(Effect::Report(Report::Waiting(why.clone())));
                    r.waiting = Some(why);
                }
            }
            _ => r.waiting = None,
        }
        if !ids.is_empty() {
            fx.push(Effect::Persist);
            fx.push(write_effect(stage.seq, ids));
        }
        false
    }

    fn stage_done(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.waiting = None;
        let stage = &r.stages[r.stage];
        fx.push(Effect::Report(Report::StageCompleted {
            index: r.stage,
            name: stage.name.clone(),
            failures: r.failures.per_stage[r.stage],
        }));
        if r.superseded_by.is_some() {
            self.supersede(fx);
            return;
        }
        if stage.pause && r.stage + 1 < r.stages.len() {
            r.phase = Phase::AwaitingApproval;
            fx.push(Effect::Persist);
            fx.push(Effect::Report(Report::AwaitingApproval(stage.name.clone())));
            return;
        }
        r.phase = Phase::Running;
        self.next_stage(fx);
    }

    fn next_stage(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.flights.clear();
        r.healthy = Positions::new();
        r.settled = 0;
        fx.push(Effect::Persist);
        if r.stage + 1 >= r.stages.len() {
            r.phase = Phase::Completed;
            fx.push(Effect::Report(Report::Completed {
                changed: r.changed().saturating_sub(r.held.machines),
                held: r.held.machines,
            }));
            return;
        }
        r.stage += 1;
        r.cursor = r.stages[r.stage].start;
        self.report_stage_start(fx);
    }

    fn report_stage_start(&self, fx: &mut Vec<Effect>) {
        let Some(r) = &self.rollout else { return };
        if let Some(stage) = r.stages.get(r.stage) {
            fx.push(Effect::Report(Report::StageStarted {
                index: r.stage,
                name: stage.name.clone(),
                size: stage.size,
            }));
        }
    }

    fn supersede(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.phase = Phase::Superseded;
        r.flights.clear();
        fx.push(Effect::Persist);
        fx.push(Effect::Report(Report::Superseded(
            r.superseded_by.clone().unwrap_or_default(),
        )));
    }

    /// The next deadline the machine must act on by itself.
    fn next_wake(&self, now: Time) -> Option<Time> {
        let r = self.rollout.as_ref()?;
        let mut at: Option<Time> = None;
        let mut consider = |t: Time| at = Some(at.map_or(t, |a| a.min(t)));
        match &r.phase {
            Phase::Running => {
                let stage = r.stages.get(r.stage)?;
                if stage.seq.gated()
                    && let Some((first, _)) = r.flights.by_start.first_key_value()
                {
                    consider(*first + r.policy.gate_timeout);
                }
                let plan = r.plan.as_ref()?;
                if r.cursor < stage.end.min(plan.len(stage.seq))
                    && r.flights.len() < stage.max_unavailable as usize
                    && let Some(op) = plan.op(stage.seq, r.cursor)
                {
                    let class = plan::class(plan.id(stage.seq, r.cursor).fleet_kind(), op);
                    if let Some(t) = self.budgets.next_room(&r.policy, class, now) {
                        consider(t);
                    }
                    if stage.seq.gated()
                        && !r.policy.windows.is_empty()
                        && let Some(t) = next_window_open(&r.policy, now)
                    {
                        consider(t);
                    }
                }
            }
            Phase::Baking {
                until, next_sample, ..
            } => {
                // A bake that is over waits for its gates: for their next sample or their
                // deadline, not for a time already past.
                if *until > now {
                    consider(*until);
                }
                if let Some(t) = next_sample {
                    consider(*t);
                }
                if let Some(t) = Self::metrics_deadline(r) {
                    consider(t);
                }
            }
            Phase::Tripped { .. } => {
                if let Some(restore) = &r.restore {
                    for (lane, class) in LANE_CLASSES.iter().enumerate().skip(1) {
                        if restore.lanes[lane].is_some()
                            && let Some(t) = self.budgets.next_room(&r.policy, *class, now)
                        {
                            consider(t);
                        }
                    }
                }
            }
            _ => {}
        }
        at.filter(|t| *t > now)
    }
}

impl Rollout {
    /// Objects changed: the stages' sizes, package versions excluded.
    pub fn changed(&self) -> u32 {
        self.stages
            .iter()
            .filter(|s| s.seq != Seq::Packages)
            .map(|s| s.size)
            .sum()
    }

    /// Per universe, the positions up to the furthest one started.
    pub fn reached(&self) -> [u32; 4] {
        let mut reached = [0u32; 4];
        for (i, stage) in self.stages.iter().enumerate().take(self.stage + 1) {
            let to = if i < self.stage {
                stage.end
            } else {
                self.cursor.min(stage.end)
            };
            let u = stage.seq.universe().index();
            reached[u] = reached[u].max(to);
        }
        reached
    }

    /// The threshold the failures so far cross, in words, if any.
    pub fn crossed(&self) -> Option<String> {
        let t = &self.policy.breaker;
        let stage = &self.stages[self.stage];
        let in_stage = self.failures.per_stage[self.stage];
        let total = self.failures.total;
        let pct = |n: u32, of: u32| {
            if of == 0 {
                100.0
            } else {
                f64::from(n) * 100.0 / f64::from(of)
            }
        };
        if let Some(max) = t.per_wave
            && u64::from(in_stage) >= max
        {
            return Some(format!(
                "{in_stage} failed objects in the wave (maxFailuresPerWave {max})"
            ));
        }
        if let Some(max) = t.per_wave_ratio
            && pct(in_stage, stage.size) >= max
        {
            return Some(format!(
                "{in_stage} of {} objects failed in the wave (maxFailureRatioPerWave {max}%)",
                stage.size
            ));
        }
        if let Some(max) = t.total
            && u64::from(total) >= max
        {
            return Some(format!(
                "{total} failed objects in the rollout (maxFailures {max})"
            ));
        }
        if let Some(max) = t.total_ratio
            && pct(total, self.changed()) >= max
        {
            return Some(format!(
                "{total} of {} changed objects failed (maxFailureRatio {max}%)",
                self.changed()
            ));
        }
        None
    }
}

/// `now` rounded up to the next start bucket of a gate timeout.
fn bucket_up(now: Time, timeout: Duration) -> Time {
    let width = (timeout.as_millis() as i64 / FLIGHT_BUCKETS as i64).max(1);
    Time((now.millis() + width - 1).div_euclid(width) * width)
}

/// The Clusters-universe position of the failed Cluster that holds back the Machine at `p` of
/// `seq`, if one does: a Machine is never started on a Cluster whose change in the same
/// rollout failed its gate.
fn held(plan: &Plan, failures: &Failures, seq: Seq, p: u32) -> Option<u32> {
    let cluster = plan.cluster_of(seq, p)?;
    failures
        .positions
        .get(&Universe::Clusters)?
        .contains(cluster)
        .then_some(cluster)
}

/// Counts a held-back Machine, and reports its Cluster the first time.
fn hold(held: &mut Held, plan: &Plan, seq: Seq, p: u32, cluster: u32, fx: &mut Vec<Effect>) {
    held.machines += 1;
    if held.clusters.insert(cluster) {
        fx.push(Effect::Report(Report::Held {
            cluster: plan.order(Universe::Clusters).id(cluster).clone(),
            first: plan.id(seq, p).clone(),
        }));
    }
}

/// Machines held back because their Cluster failed (in memory: recomputed on resume from the
/// persisted failures, as the positions past the cursor are).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Held {
    /// Machines skipped.
    pub machines: u32,
    /// The Clusters reported.
    pub clusters: std::collections::BTreeSet<u32>,
}

fn write_effect(seq: Seq, ids: Vec<ObjectRef>) -> Effect {
    if seq == Seq::Deletes {
        Effect::Delete(ids)
    } else {
        Effect::Apply(ids)
    }
}

/// The next minute at which a maintenance window opens, within a week.
pub fn next_window_open(policy: &Policy, now: Time) -> Option<Time> {
    let start = Time((now.millis().div_euclid(60_000) + 1) * 60_000);
    (0..7 * 24 * 60 + 1)
        .map(|m| Time(start.millis() + m * 60_000))
        .find(|t| {
            let (d, m) = t.weekday_and_minute();
            policy.window_open(d, m)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_of_the_release_with_a_delete_lane_drops_it() {
        let before: Restore = serde_json::from_value(serde_json::json!(
            {"lanes": [[0, 5], [1, 7], [1, 9]], "issued": [2, 1, 8, 9]}
        ))
        .unwrap();
        assert_eq!(before.lanes, [Some((0, 5)), Some((1, 9))]);
        assert_eq!(before.issued, Some((1, 1, 8, 9)));
        let undoing_a_create: Restore = serde_json::from_value(serde_json::json!(
            {"lanes": [null, [1, 7], null], "issued": [1, 1, 6, 7]}
        ))
        .unwrap();
        assert_eq!(undoing_a_create.issued, None);
        let now: Restore = serde_json::from_value(serde_json::to_value(&before).unwrap()).unwrap();
        assert_eq!(now, before);
        assert!(serde_json::from_value::<Restore>(serde_json::json!({"lanes": [null]})).is_err());
    }

    /// The API server keeps no `null`, not even in an array: a done lane is written as `[]`,
    /// and a state written with `[null, null]` (which comes back as `[]`) still loads.
    #[test]
    fn a_done_lane_survives_the_api_server() {
        let done = Restore {
            lanes: [None, Some((1, 3))],
            issued: None,
            classes: None,
        };
        let json = serde_json::to_value(&done).unwrap();
        assert_eq!(json, serde_json::json!({"lanes": [[], [1, 3]]}));
        assert_eq!(serde_json::from_value::<Restore>(json).unwrap(), done);
        let stripped: Restore = serde_json::from_value(serde_json::json!({"lanes": []})).unwrap();
        assert_eq!(stripped.lanes, [None, None]);
    }
}
