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
//!
//! The files, bottom up (each uses only those above it in this list):
//!
//! - [`failures`], [`flights`], [`restore`], [`trip`], [`waiting`]: the records a rollout
//!   keeps — failures, changes in flight, restore lanes, the breaker's evidence, why it waits;
//! - [`protocol`]: events, effects, reports, phases;
//! - [`state`]: the [`Engine`] and one commit's rollout;
//! - [`view`] (read-only accessors), [`lifecycle`] (start, resume, stages), [`admission`]
//!   (what starts), [`gating`] (gates and bakes), [`breaker`] (trip, restore, revert);
//! - this file: [`Engine::step`], which feeds an event to them and moves the rollout on.

mod admission;
mod breaker;
mod failures;
#[cfg(test)]
mod fixture;
mod flights;
mod gating;
mod lifecycle;
mod protocol;
mod restore;
mod state;
mod trip;
mod view;
mod waiting;

pub use admission::MAX_SPAN;
pub use failures::{
    Failures, KEPT_FAILED_POSITIONS, KEPT_FAILURES, KEPT_UNRESTORED, Note, Notes, REASON_CHARS,
};
pub use flights::FLIGHT_BUCKETS;
pub(crate) use flights::{Flight, Flights};
pub use protocol::{Effect, Event, Interest, KEPT, Phase, Report, Resumable, Start, WriteError};
pub use restore::{RESTORE_BATCH, Restore, RestoreClass, RestorePlan};
pub use state::Engine;
pub(crate) use state::{Held, Rollout};
pub use trip::{
    Evidence, KEPT_QUARANTINE, KEPT_REVERTS, QUARANTINE_REASON_CHARS, Quarantined, Threshold, Trip,
};
pub use view::View;
pub use waiting::WaitReason;

use crate::plan;
use crate::time::{Time, next_window_open};

impl Engine {
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
            Event::RestorePlan(classes) => self.restore_planned(classes, &mut fx),
            Event::Restored(results) => self.restored(results),
            Event::Reverted {
                culprits,
                reverts,
                outcome,
            } => self.reverted(culprits, reverts, outcome, &mut fx),
            Event::ResetBreaker => {
                self.breaker = None;
                fx.push(Effect::Persist);
            }
        }
        self.advance(now, &mut fx);
        fx
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
            let again = match r.phase {
                Phase::Tripped { revert_pending } => {
                    self.restore_step(revert_pending, now, fx);
                    false
                }
                Phase::Completed
                | Phase::Superseded
                | Phase::Restored
                | Phase::AwaitingApproval => false,
                Phase::Baking { .. } => self.bake_step(now, fx),
                Phase::Running => self.run_stage(now, fx),
            };
            if !again {
                break;
            }
        }
        if let Some(at) = self.next_wake(now) {
            fx.push(Effect::WakeAt(at));
        }
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
                    let class = plan::class(plan.id(stage.seq, r.cursor).kind, op);
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
                if let Some(t) = r
                    .restore
                    .as_ref()
                    .and_then(|restore| restore.next_room(&self.budgets, &r.policy, now))
                {
                    consider(t);
                }
            }
            _ => {}
        }
        at.filter(|t| *t > now)
    }
}
