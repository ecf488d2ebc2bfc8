//! The rollout state machine: `step(state, event, now) -> effects`.
//!
//! The state is plain data that serialises to JSON and is persisted after every step that
//! changes it, so a controller killed at any point resumes where it stopped: the same stage,
//! the same objects in flight, the same budget spent. The machine never performs I/O; it asks
//! for writes ([`Effect::Apply`], [`Effect::Delete`], [`Effect::Restore`], [`Effect::Revert`])
//! and learns their outcome from the events the controller feeds back.
//!
//! ```text
//!  start ─▶ Running ──stage settled──▶ Baking ──bake over──▶ (AwaitingApproval) ──▶ next stage
//!              │                          │                                          │
//!              │ threshold crossed        │ metric out of bounds                last stage
//!              ▼                          ▼                                          ▼
//!           Tripped: restore every changed object, revert the culprits ──▶ Restored   Completed
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use endstate_core::ObjectRef;
use serde::{Deserialize, Serialize};

use crate::budget::Budgets;
use crate::diff::Change;
use crate::health::Health;
use crate::plan::{Plan, StageKind};
use crate::policy::{MetricGate, Policy};
use crate::time::{Time, human};

/// Everything endstate must remember between steps, across rollouts and restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The rollout in progress, or the last one.
    pub rollout: Option<Rollout>,
    /// Fleet-wide spends per budget class.
    pub budgets: Budgets,
    /// The latched breaker, when open.
    pub breaker: Option<Trip>,
    /// Commits that must never be the applied target again.
    pub quarantine: Vec<Quarantined>,
}

/// One commit's rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The commit rolled out.
    pub commit: String,
    /// The last commit the fleet was healthy at, if any: what a trip restores.
    pub last_good: Option<String>,
    /// The policy of the commit.
    pub policy: Policy,
    /// The stages.
    pub plan: Plan,
    /// The current stage.
    pub stage: usize,
    /// How many changes of the current stage have started.
    pub next: usize,
    /// Started changes of the current stage that have not settled, by index in the stage.
    pub inflight: BTreeMap<usize, Inflight>,
    /// Every failure of the rollout.
    pub failures: Vec<Failure>,
    /// Where the rollout is.
    pub phase: Phase,
    /// A newer commit that arrived while this one was rolling out.
    pub superseded_by: Option<String>,
    /// When it started.
    pub started_at: Time,
    /// Why no work is starting, when it waits (budget, window).
    pub waiting: Option<String>,
    /// After a trip: changes still to undo, in order.
    pub restore: Vec<Change>,
    /// After a trip: restores that failed.
    pub unrestored: Vec<(ObjectRef, String)>,
}

/// A started change waiting to settle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inflight {
    /// When it started.
    pub started: Time,
    /// The generation the write produced, once it is known.
    pub generation: Option<i64>,
    /// Why it is not healthy yet, as last observed.
    pub last: Option<String>,
}

/// A failed object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The stage it failed in.
    pub stage: usize,
    /// The object; `None` for a failure no object is to blame for (a metric gate).
    pub id: Option<ObjectRef>,
    /// Why.
    pub reason: String,
}

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
        /// Since when the metric gates have not answered, if they have not.
        metrics_missing_since: Option<Time>,
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
pub struct Trip {
    /// When.
    pub at: Time,
    /// The commit being rolled out.
    pub commit: String,
    /// What crossed which threshold.
    pub evidence: Evidence,
    /// The revert commits pushed, once known.
    pub reverts: Vec<String>,
    /// How the revert went, once known.
    pub revert_outcome: Option<String>,
}

/// The breaker's evidence, recorded in status and in the revert commit's message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The stage the breaker tripped in.
    pub stage: String,
    /// The threshold crossed, in words.
    pub threshold: String,
    /// Failures in the stage, and its size.
    pub stage_failures: (usize, usize),
    /// Failures in the rollout, and the number of changed objects.
    pub total_failures: (usize, usize),
    /// The failed objects (the first 20) and why.
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Time passed; re-evaluate timers and start what may start.
    Tick,
    /// The controller restarted with this state: re-issue writes whose outcome was lost.
    Resume,
    /// Outcomes of [`Effect::Apply`] / [`Effect::Delete`]: the generation written (0 for a
    /// delete), or why the write failed.
    Written(Vec<(ObjectRef, Result<i64, String>)>),
    /// What the gates see of the objects [`State::watch`] asked about.
    Observed(Vec<(ObjectRef, Health)>),
    /// Samples of the metric gates: a value, or why the query failed.
    Sampled(Vec<(String, Result<f64, String>)>),
    /// A human approved the held stage.
    Approve,
    /// The branch moved on to another commit.
    NewCommit(String),
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Apply the commit's desired objects with these identities.
    Apply(Vec<ObjectRef>),
    /// Delete these objects.
    Delete(Vec<ObjectRef>),
    /// Undo these changes: put back the last good spec, or delete what the rollout created.
    Restore(Vec<Change>),
    /// Revert the commits that caused the failure, in `last_good..commit`, blaming the
    /// objects that failed (none: the whole range).
    Revert {
        /// The rolled-out commit.
        commit: String,
        /// The last good commit.
        last_good: Option<String>,
        /// The failed objects.
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Report {
    /// A stage started.
    StageStarted {
        /// Index.
        index: usize,
        /// Name.
        name: String,
        /// Changes in it.
        size: usize,
    },
    /// A stage settled (and baked).
    StageCompleted {
        /// Index.
        index: usize,
        /// Name.
        name: String,
        /// Objects of the stage that failed.
        failures: usize,
    },
    /// The stage holds for approval.
    AwaitingApproval(String),
    /// No work starts, and why.
    Waiting(String),
    /// An object failed its gate.
    Failed(ObjectRef, String),
    /// The breaker tripped.
    Tripped(Evidence),
    /// Every restore was issued.
    RestoreIssued(usize),
    /// The rollout finished.
    Completed {
        /// Objects changed.
        changed: usize,
    },
    /// A newer commit took over.
    Superseded(String),
}

impl State {
    /// Whether the breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_some()
    }

    /// Whether `commit` is quarantined.
    pub fn quarantined(&self, commit: &str) -> bool {
        self.quarantine.iter().any(|q| q.commit == commit)
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

    /// Starts rolling out `commit` with `plan`; the previous rollout must be over.
    pub fn start(
        &mut self,
        commit: String,
        last_good: Option<String>,
        plan: Plan,
        policy: Policy,
        now: Time,
    ) -> Vec<Effect> {
        debug_assert!(!self.busy(), "a rollout is already under way");
        self.rollout = Some(Rollout {
            commit,
            last_good,
            policy,
            plan,
            stage: 0,
            next: 0,
            inflight: BTreeMap::new(),
            failures: Vec::new(),
            phase: Phase::Running,
            superseded_by: None,
            started_at: now,
            waiting: None,
            restore: Vec::new(),
            unrestored: Vec::new(),
        });
        let mut fx = Vec::new();
        self.report_stage_start(&mut fx);
        self.advance(now, &mut fx);
        fx
    }

    /// The objects whose health the gates need now, with the generation each must reach.
    pub fn watch(&self) -> Vec<(ObjectRef, i64)> {
        let Some(r) = &self.rollout else {
            return Vec::new();
        };
        let Some(stage) = r.plan.stages.get(r.stage) else {
            return Vec::new();
        };
        if !stage.kind.gated() {
            return Vec::new();
        }
        match r.phase {
            Phase::Running => r
                .inflight
                .iter()
                .filter_map(|(&i, f)| Some((stage.changes[i].id.clone(), f.generation?)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Feeds one event; returns what to do.
    pub fn step(&mut self, event: Event, now: Time) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::Tick => {}
            Event::Resume => self.resume(&mut fx),
            Event::Written(results) => self.written(results, now, &mut fx),
            Event::Observed(healths) => self.observed(healths, now, &mut fx),
            Event::Sampled(samples) => self.sampled(samples, now, &mut fx),
            Event::Approve => {
                if let Some(r) = &mut self.rollout
                    && r.phase == Phase::AwaitingApproval
                {
                    r.phase = Phase::Running;
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
                    if r.phase == Phase::AwaitingApproval {
                        self.supersede(&mut fx);
                    }
                }
            }
            Event::Restored(results) => {
                if let Some(r) = &mut self.rollout {
                    for (id, result) in results {
                        if let Err(why) = result {
                            r.unrestored.push((id, why));
                        }
                    }
                }
            }
            Event::Reverted {
                culprits,
                reverts,
                outcome,
            } => {
                if let Some(trip) = &mut self.breaker {
                    trip.reverts = reverts.clone();
                    trip.revert_outcome = Some(outcome.clone());
                }
                for (i, culprit) in culprits.into_iter().enumerate() {
                    if !self.quarantined(&culprit) {
                        self.quarantine.push(Quarantined {
                            commit: culprit,
                            reason: outcome.clone(),
                            revert: reverts.get(i).cloned(),
                        });
                    }
                }
                if let Some(r) = &mut self.rollout
                    && let Phase::Tripped { revert_pending } = &mut r.phase
                {
                    *revert_pending = false;
                }
            }
            Event::ResetBreaker => self.breaker = None,
        }
        self.advance(now, &mut fx);
        fx
    }

    fn resume(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &self.rollout else { return };
        match &r.phase {
            Phase::Running => {
                let stage = &r.plan.stages[r.stage];
                let lost: Vec<ObjectRef> = r
                    .inflight
                    .iter()
                    .filter(|(_, f)| f.generation.is_none())
                    .map(|(&i, _)| stage.changes[i].id.clone())
                    .collect();
                if !lost.is_empty() {
                    fx.push(write_effect(stage.kind, lost));
                }
            }
            Phase::Tripped {
                revert_pending: true,
            } => {
                if let Some(trip) = &self.breaker {
                    fx.push(self.revert_effect(trip.evidence.clone()));
                }
            }
            _ => {}
        }
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
        let stage = &r.plan.stages[r.stage];
        let index: HashMap<&ObjectRef, usize> = r
            .inflight
            .keys()
            .map(|&i| (&stage.changes[i].id, i))
            .collect();
        let mut failed = Vec::new();
        let mut settled = Vec::new();
        for (id, result) in &results {
            let Some(&i) = index.get(id) else { continue };
            match result {
                Ok(generation) if stage.kind.gated() => {
                    if let Some(f) = r.inflight.get_mut(&i) {
                        f.generation = Some(*generation);
                    }
                }
                Ok(_) => settled.push(i),
                Err(why) => failed.push((i, format!("write failed: {why}"))),
            }
        }
        for i in settled {
            r.inflight.remove(&i);
        }
        self.fail(failed, now, fx);
    }

    fn observed(&mut self, healths: Vec<(ObjectRef, Health)>, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        if r.phase != Phase::Running {
            return;
        }
        let stage = &r.plan.stages[r.stage];
        let index: HashMap<&ObjectRef, usize> = r
            .inflight
            .keys()
            .map(|&i| (&stage.changes[i].id, i))
            .collect();
        let mut failed = Vec::new();
        for (id, health) in healths {
            let Some(&i) = index.get(&id) else { continue };
            match health {
                Health::Healthy => {
                    r.inflight.remove(&i);
                }
                Health::Progressing(why) => {
                    if let Some(f) = r.inflight.get_mut(&i) {
                        f.last = Some(why);
                    }
                }
                Health::Failed(why) => failed.push((i, why)),
            }
        }
        self.fail(failed, now, fx);
    }

    fn sampled(
        &mut self,
        samples: Vec<(String, Result<f64, String>)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        let Phase::Baking {
            metrics_ok,
            metrics_missing_since,
            ..
        } = &mut r.phase
        else {
            return;
        };
        let mut ok = true;
        let mut violation = None;
        for (name, sample) in samples {
            let Some(gate) = r.policy.metrics.iter().find(|g| g.name == name) else {
                continue;
            };
            match sample {
                Ok(value) if gate.admits(value) => {}
                Ok(value) => {
                    violation = Some(format!(
                        "metric {name} = {value} is outside [{}, {}]",
                        gate.min.map_or("-∞".into(), |v| v.to_string()),
                        gate.max.map_or("+∞".into(), |v| v.to_string())
                    ));
                }
                Err(why) => {
                    ok = false;
                    metrics_missing_since.get_or_insert(now);
                    if now.since(metrics_missing_since.unwrap_or(now)) >= r.policy.gate_timeout {
                        violation = Some(format!(
                            "metric {name} has not answered for {}: {why}",
                            human(r.policy.gate_timeout)
                        ));
                    }
                }
            }
        }
        *metrics_ok = ok && violation.is_none();
        if ok {
            *metrics_missing_since = None;
        }
        if let Some(reason) = violation {
            let stage = r.stage;
            r.failures.push(Failure {
                stage,
                id: None,
                reason: reason.clone(),
            });
            self.trip(reason, now, fx);
        }
    }

    /// Records failures of in-flight changes (by index) and trips the breaker when a
    /// threshold is crossed.
    fn fail(&mut self, failed: Vec<(usize, String)>, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        if failed.is_empty() {
            return;
        }
        let stage = &r.plan.stages[r.stage];
        for (i, reason) in failed {
            if r.inflight.remove(&i).is_none() {
                continue;
            }
            let id = stage.changes[i].id.clone();
            fx.push(Effect::Report(Report::Failed(id.clone(), reason.clone())));
            r.failures.push(Failure {
                stage: r.stage,
                id: Some(id),
                reason,
            });
        }
        if let Some(threshold) = r.crossed() {
            self.trip(threshold, now, fx);
        }
    }

    fn trip(&mut self, threshold: String, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let stage = &r.plan.stages[r.stage];
        let stage_failures = r.failures.iter().filter(|f| f.stage == r.stage).count();
        let evidence = Evidence {
            stage: stage.name.clone(),
            threshold,
            stage_failures: (stage_failures, stage.changes.len()),
            total_failures: (r.failures.len(), r.plan.changed()),
            failed: r
                .failures
                .iter()
                .take(20)
                .map(|f| {
                    let what =
                        f.id.as_ref()
                            .map_or_else(|| "fleet".to_owned(), ToString::to_string);
                    (what, f.reason.clone())
                })
                .collect(),
        };
        // Undo in the reverse order of the rollout: machines before the package versions they
        // were pointed at, the newest changes first.
        let mut undo: Vec<Change> = r.started().cloned().collect();
        undo.reverse();
        r.restore = undo;
        r.inflight.clear();
        r.waiting = None;
        let revert = r.policy.breaker.revert;
        r.phase = Phase::Tripped {
            revert_pending: revert,
        };
        fx.push(Effect::Report(Report::Tripped(evidence.clone())));
        self.breaker = Some(Trip {
            at: now,
            commit: r.commit.clone(),
            evidence: evidence.clone(),
            reverts: Vec::new(),
            revert_outcome: None,
        });
        self.drain_restore(now, fx);
        if revert {
            fx.push(self.revert_effect(evidence));
        }
    }

    fn revert_effect(&self, evidence: Evidence) -> Effect {
        let r = self.rollout.as_ref().expect("a tripped rollout");
        Effect::Revert {
            commit: r.commit.clone(),
            last_good: r.last_good.clone(),
            failed: r.failures.iter().filter_map(|f| f.id.clone()).collect(),
            evidence,
        }
    }

    /// Issues the restores the delete and reinstall budgets allow now.
    fn drain_restore(&mut self, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        if r.restore.is_empty() {
            return;
        }
        let mut room: HashMap<Option<&'static str>, usize> = HashMap::new();
        let mut issue = Vec::new();
        let mut keep = Vec::new();
        for change in std::mem::take(&mut r.restore) {
            let class = change.restore_class();
            let left = room
                .entry(class)
                .or_insert_with(|| self.budgets.available(&r.policy, class, now));
            if *left > 0 {
                *left -= 1;
                self.budgets.spend(&r.policy, class, 1, now);
                issue.push(change);
            } else {
                keep.push(change);
            }
        }
        r.restore = keep;
        if !r.restore.is_empty() {
            r.waiting = Some(format!(
                "{} restores wait for the delete/reinstall budget",
                r.restore.len()
            ));
        } else {
            r.waiting = None;
        }
        if !issue.is_empty() {
            fx.push(Effect::Restore(issue));
        }
    }

    /// Moves the rollout forward as far as `now` allows, and asks to be woken for the next
    /// deadline.
    fn advance(&mut self, now: Time, fx: &mut Vec<Effect>) {
        loop {
            let Some(r) = &mut self.rollout else { return };
            match r.phase.clone() {
                Phase::Tripped { revert_pending } => {
                    self.drain_restore(now, fx);
                    let r = self.rollout.as_mut().expect("checked");
                    if r.restore.is_empty() && !revert_pending {
                        r.phase = Phase::Restored;
                    }
                    break;
                }
                Phase::Completed
                | Phase::Superseded
                | Phase::Restored
                | Phase::AwaitingApproval => {
                    break;
                }
                Phase::Baking {
                    until,
                    next_sample,
                    metrics_ok,
                    ..
                } => {
                    if let Some(at) = next_sample
                        && at <= now
                    {
                        fx.push(Effect::Sample(r.policy.metrics.clone()));
                        let interval = r.policy.metrics.iter().map(|m| m.interval).min();
                        if let Phase::Baking { next_sample, .. } = &mut r.phase {
                            *next_sample = interval.map(|i| now + i);
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
        // Gate timeouts.
        let timeout = r.policy.gate_timeout;
        let stage = &r.plan.stages[r.stage];
        let expired: Vec<(usize, String)> = r
            .inflight
            .iter()
            .filter(|(_, f)| stage.kind.gated() && now.since(f.started) >= timeout)
            .map(|(&i, f)| {
                let generation = f
                    .generation
                    .map_or("its write".to_owned(), |g| format!("generation {g}"));
                let last = f.last.as_deref().unwrap_or("no status");
                (
                    i,
                    format!(
                        "not healthy for {generation} within {}: {last}",
                        human(timeout)
                    ),
                )
            })
            .collect();
        if !expired.is_empty() {
            self.fail(expired, now, fx);
            if !matches!(
                self.rollout.as_ref().map(|r| &r.phase),
                Some(Phase::Running)
            ) {
                return true;
            }
        }
        let r = self.rollout.as_mut().expect("checked");
        let stage = &r.plan.stages[r.stage];
        let aborting = r.superseded_by.is_some() && r.policy.abort_on_new_commit;
        if r.next == stage.changes.len() || aborting {
            if !r.inflight.is_empty() {
                return false;
            }
            if aborting {
                self.supersede(fx);
                return true;
            }
            // The stage settled.
            let bake = stage.bake;
            let sample = !r.policy.metrics.is_empty() && stage.kind.gated();
            r.phase = Phase::Baking {
                until: now + bake,
                next_sample: sample.then_some(now),
                metrics_ok: !sample,
                metrics_missing_since: None,
            };
            return true;
        }
        // Start what may start: room under maxUnavailable, the budget, the window.
        let room = stage.max_unavailable.saturating_sub(r.inflight.len());
        if room == 0 {
            return false;
        }
        let (weekday, minute) = now.weekday_and_minute();
        if stage.kind.gated() && !r.policy.window_open(weekday, minute) {
            let why = "outside every maintenance window".to_owned();
            if r.waiting.as_ref() != Some(&why) {
                fx.push(Effect::Report(Report::Waiting(why.clone())));
                r.waiting = Some(why);
            }
            return false;
        }
        let mut ids = Vec::new();
        let mut spends: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut blocked = None;
        while ids.len() < room && r.next < stage.changes.len() {
            let change = &stage.changes[r.next];
            let class = change.class();
            let spent = class.map_or(0, |c| spends.get(c).copied().unwrap_or(0)) as usize;
            if self.budgets.available(&r.policy, class, now) <= spent {
                blocked = class;
                break;
            }
            if let Some(c) = class {
                *spends.entry(c).or_default() += 1;
            }
            r.inflight.insert(
                r.next,
                Inflight {
                    started: now,
                    generation: None,
                    last: None,
                },
            );
            ids.push(change.id.clone());
            r.next += 1;
        }
        for (class, n) in spends {
            self.budgets.spend(&r.policy, Some(class), n, now);
        }
        match blocked {
            Some(class) if ids.is_empty() => {
                let high_risk = matches!(class, "machine-reinstall" | "machine-delete");
                let why = format!(
                    "{}budget {class} is spent until {}",
                    if high_risk { "paused: high-risk " } else { "" },
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
            fx.push(write_effect(stage.kind, ids));
        }
        false
    }

    fn stage_done(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let stage = &r.plan.stages[r.stage];
        fx.push(Effect::Report(Report::StageCompleted {
            index: r.stage,
            name: stage.name.clone(),
            failures: r.failures.iter().filter(|f| f.stage == r.stage).count(),
        }));
        if r.superseded_by.is_some() {
            self.supersede(fx);
            return;
        }
        if stage.pause && r.stage + 1 < r.plan.stages.len() {
            r.phase = Phase::AwaitingApproval;
            fx.push(Effect::Report(Report::AwaitingApproval(stage.name.clone())));
            return;
        }
        r.phase = Phase::Running;
        self.next_stage(fx);
    }

    fn next_stage(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        if r.stage + 1 >= r.plan.stages.len() {
            r.phase = Phase::Completed;
            fx.push(Effect::Report(Report::Completed {
                changed: r.plan.changed(),
            }));
            return;
        }
        r.stage += 1;
        r.next = 0;
        r.inflight.clear();
        self.report_stage_start(fx);
    }

    fn report_stage_start(&self, fx: &mut Vec<Effect>) {
        let Some(r) = &self.rollout else { return };
        if let Some(stage) = r.plan.stages.get(r.stage) {
            fx.push(Effect::Report(Report::StageStarted {
                index: r.stage,
                name: stage.name.clone(),
                size: stage.changes.len(),
            }));
        }
    }

    fn supersede(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.phase = Phase::Superseded;
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
                let stage = &r.plan.stages[r.stage];
                if stage.kind.gated() {
                    for f in r.inflight.values() {
                        consider(f.started + r.policy.gate_timeout);
                    }
                }
                if r.next < stage.changes.len() && r.inflight.len() < stage.max_unavailable {
                    let class = stage.changes[r.next].class();
                    if let Some(t) = self.budgets.next_room(&r.policy, class, now) {
                        consider(t);
                    }
                    if stage.kind.gated()
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
                consider(*until);
                if let Some(t) = next_sample {
                    consider(*t);
                }
            }
            Phase::Tripped { .. } => {
                for change in &r.restore {
                    if let Some(t) = self
                        .budgets
                        .next_room(&r.policy, change.restore_class(), now)
                    {
                        consider(t);
                    }
                }
            }
            _ => {}
        }
        at.filter(|t| *t > now)
    }
}

impl Rollout {
    /// The threshold the failures so far cross, in words, if any.
    pub fn crossed(&self) -> Option<String> {
        let t = &self.policy.breaker;
        let stage = &self.plan.stages[self.stage];
        let in_stage = self
            .failures
            .iter()
            .filter(|f| f.stage == self.stage)
            .count();
        let total = self.failures.len();
        let pct = |n: usize, of: usize| {
            if of == 0 {
                100.0
            } else {
                n as f64 * 100.0 / of as f64
            }
        };
        if let Some(max) = t.per_wave
            && in_stage as u64 >= max
        {
            return Some(format!(
                "{in_stage} failed objects in the wave (maxFailuresPerWave {max})"
            ));
        }
        if let Some(max) = t.per_wave_ratio
            && pct(in_stage, stage.changes.len()) >= max
        {
            return Some(format!(
                "{in_stage} of {} objects failed in the wave (maxFailureRatioPerWave {max}%)",
                stage.changes.len()
            ));
        }
        if let Some(max) = t.total
            && total as u64 >= max
        {
            return Some(format!(
                "{total} failed objects in the rollout (maxFailures {max})"
            ));
        }
        if let Some(max) = t.total_ratio
            && pct(total, self.plan.changed()) >= max
        {
            return Some(format!(
                "{total} of {} changed objects failed (maxFailureRatio {max}%)",
                self.plan.changed()
            ));
        }
        None
    }

    /// Every change started so far, in start order.
    pub fn started(&self) -> impl Iterator<Item = &Change> {
        self.plan.stages[..self.stage]
            .iter()
            .flat_map(|s| s.changes.iter())
            .chain(
                self.plan
                    .stages
                    .get(self.stage)
                    .into_iter()
                    .flat_map(|s| s.changes[..self.next].iter()),
            )
    }
}

fn write_effect(kind: StageKind, ids: Vec<ObjectRef>) -> Effect {
    if kind == StageKind::Deletes {
        Effect::Delete(ids)
    } else {
        Effect::Apply(ids)
    }
}

/// The next minute at which a maintenance window opens, within a week.
fn next_window_open(policy: &Policy, now: Time) -> Option<Time> {
    let start = Time((now.millis().div_euclid(60_000) + 1) * 60_000);
    (0..7 * 24 * 60 + 1)
        .map(|m| Time(start.millis() + m * 60_000))
        .find(|t| {
            let (d, m) = t.weekday_and_minute();
            policy.window_open(d, m)
        })
}
