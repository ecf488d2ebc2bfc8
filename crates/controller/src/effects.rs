//! The one writer: performs the engine's effects in order and feeds their outcomes back, and
//! saves the state.
//!
//! Every write to the fleet and every status save goes through here. A write the backend
//! could not make after its own retries is an outcome like any other (the object fails its
//! gate); there is no second retry layer.

use std::collections::VecDeque;
use std::time::Duration;

use endstate_core::ownership::owned_by;
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::engine::{Effect, Interest, Report, RestoreClass, RestorePlan, WriteError};
use endstate_rollout::health::{self, Health};
use endstate_rollout::plan::Universe;
use endstate_rollout::{Event, Live, Time, diff};

use crate::clock::Clock;
use crate::controller::Controller;
use crate::desired::Desired;
use crate::error::Error;
use crate::report::short;
use crate::status;

/// The most objects looked at one by one (from the server, while the caches list the fleet);
/// more wait for the caches.
const OBSERVE_ONE_BY_ONE: usize = 20_000;

impl<L: Live, C: Clock> Controller<L, C> {
    /// Feeds an event to the engine and performs what it asks for.
    pub(crate) async fn step(&mut self, event: Event) -> Result<(), Error> {
        let now = self.clock.now();
        let effects = self.engine.step(event, now);
        self.perform(effects).await
    }

    /// Looks at the objects the engine is interested in: those the watch says changed, and
    /// every `poll` all of them.
    pub(crate) async fn observe(&mut self) -> Result<(), Error> {
        let changes = self.live.changes();
        if !self.engine.busy() {
            return Ok(());
        }
        let now = self.clock.now();
        let mut ids: Vec<ObjectRef> = if changes.relisted || now >= self.next_poll {
            self.next_poll = now + self.config.poll;
            self.engine
                .rollout()
                .map(|r| r.inflight_ids().map(|(id, _)| id.clone()).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        ids.extend(
            changes
                .ids
                .into_iter()
                .map(|id| self.in_namespace(&id))
                .filter(|id| self.engine.interest(id).is_some()),
        );
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            self.assess(ids).await?;
        }
        self.progress();
        Ok(())
    }

    /// Reads `ids` and tells the engine what their health is, as its interest in each says.
    async fn assess(&mut self, ids: Vec<ObjectRef>) -> Result<(), Error> {
        let live = self.live.get(&ids).await?;
        let healths: Vec<(ObjectRef, Health)> = ids
            .into_iter()
            .zip(live)
            .filter_map(|(id, object)| {
                let health = judge(self.engine.interest(&id)?, object.as_ref())?;
                Some((id, health))
            })
            .collect();
        if healths.is_empty() {
            return Ok(());
        }
        self.step(Event::Observed(healths)).await
    }

    fn progress(&mut self) {
        if let Some(r) = self.engine.rollout()
            && let Some(stage) = r.stage()
        {
            let failed = r
                .failures()
                .per_stage
                .get(r.stage_index())
                .copied()
                .unwrap_or(0);
            let (name, size, inflight, settled) =
                (stage.name.clone(), stage.size, r.inflight(), r.settled());
            self.reporter.progress(
                &name,
                settled as usize,
                size as usize,
                inflight,
                failed as usize,
            );
        }
    }

    /// Performs effects in order; their outcomes are fed back as further events.
    pub(crate) async fn perform(&mut self, effects: Vec<Effect>) -> Result<(), Error> {
        self.unsaved = true;
        let mut milestone = false;
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            // Whatever an effect other than a save does (a report that marks the commit
            // good, say) is in no status yet: it is saved within `persist_every`.
            if !matches!(effect, Effect::Persist) {
                self.unsaved = true;
            }
            if matches!(
                effect,
                Effect::Persist
                    | Effect::Apply(_)
                    | Effect::Delete(_)
                    | Effect::Restore(_)
                    | Effect::Revert { .. }
            ) {
                self.fenced()?;
            }
            let now = self.clock.now();
            let commit = self
                .engine
                .rollout()
                .map(|r| r.commit().to_owned())
                .unwrap_or_default();
            let event = match effect {
                Effect::Persist => {
                    self.save().await?;
                    None
                }
                Effect::Apply(ids) => {
                    let results = self.apply(&ids).await?;
                    Some(Event::Written(results))
                }
                Effect::Delete(ids) => {
                    let results = self.prune(&ids).await?;
                    self.tally.writes += results.iter().filter(|(_, r)| r.is_ok()).count();
                    Some(Event::Written(results))
                }
                Effect::Observe(ids) => {
                    // A whole wave is read from the caches, not one by one from the server.
                    if ids.len() > OBSERVE_ONE_BY_ONE {
                        self.live.wait_synced().await?;
                    }
                    let live = self.live.get(&ids).await?;
                    // After a resume the write may not have returned: the live generation
                    // is what it produced, if it landed.
                    let healths = ids
                        .into_iter()
                        .zip(live)
                        .filter_map(|(id, object)| {
                            let interest = match self.engine.interest(&id) {
                                Some(Interest::Gone) => Interest::Gone,
                                _ => Interest::Gate(object.as_ref()?.meta().generation),
                            };
                            Some((id, judge(interest, object.as_ref())?))
                        })
                        .collect();
                    Some(Event::Observed(healths))
                }
                Effect::PrepareRestore => Some(Event::RestorePlan(self.restore_plan()?)),
                Effect::Restore(ids) => {
                    let results = self.restore(&ids).await?;
                    self.tally.restores += results.iter().filter(|(_, r)| r.is_ok()).count();
                    if let Some(at) = self.tripped_at {
                        self.tally.trip_to_restored.get_or_insert(at.elapsed());
                    }
                    Some(Event::Restored(results))
                }
                Effect::Revert {
                    commit,
                    last_good,
                    failed,
                    evidence,
                } => Some(self.revert(&commit, last_good.as_deref(), &failed, &evidence)),
                Effect::Sample(gates) => {
                    let timeout = self
                        .engine
                        .rollout()
                        .map_or(Duration::from_secs(10), |r| r.policy().query_timeout);
                    self.gates.ask(gates, timeout);
                    None
                }
                Effect::WakeAt(t) => {
                    self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
                    None
                }
                Effect::Report(report) => {
                    // What a reader of the status waits for is saved at once, not within
                    // `persist_every`: a wave done, a hold, a trip, the end of a rollout.
                    milestone |= matches!(
                        report,
                        Report::StageCompleted { .. }
                            | Report::AwaitingApproval(_)
                            | Report::Tripped(_)
                            | Report::Restored { .. }
                            | Report::Completed { .. }
                            | Report::Superseded(_)
                    );
                    self.on_report(now, &commit, &report);
                    tracing::info!("{}", crate::report::describe(&report));
                    self.reporter.report(now, &commit, &report);
                    None
                }
            };
            if let Some(event) = event {
                let now = self.clock.now();
                queue.extend(self.engine.step(event, now));
                self.unsaved = true;
            }
        }
        if milestone {
            self.save().await?;
        }
        Ok(())
    }

    /// Bookkeeping on the engine's news.
    fn on_report(&mut self, now: Time, commit: &str, report: &Report) {
        let changed = self.engine.rollout().map_or(0, |r| r.changed());
        match report {
            Report::StageCompleted { .. } => self.tally.waves += 1,
            Report::Tripped(_) => {
                self.tripped = true;
                self.tripped_at = Some(std::time::Instant::now());
                self.tally.trip_to_restored = None;
                self.tally.trip_to_revert = None;
            }
            Report::TargetHeld {
                cluster,
                reason,
                message,
                ..
            } => {
                self.record
                    .unavailable
                    .insert(cluster.clone(), (reason.clone(), message.clone()));
            }
            Report::StageStarted { index: 0, .. } => self.record.unavailable.clear(),
            Report::Completed { held, .. } => {
                self.tally.completed += 1;
                let done = *held == 0 && self.foreign.is_empty();
                let result = if done { "Succeeded" } else { "Held" };
                self.record.finished(commit, result, changed, now);
                self.mark(commit, done);
                self.first_live = None;
            }
            Report::Superseded(_) => {
                self.record.finished(commit, "Superseded", changed, now);
                // Plan again from the live state at once.
                self.head = None;
                self.next_fetch = now;
            }
            Report::Restored { .. } => {
                self.record.finished(commit, "Reverted", changed, now);
                self.record.last_applied = self.record.last_good.clone();
                if let Some(good) = self.record.last_good.clone() {
                    self.source.mark(&good, true);
                }
                self.first_live = None;
                self.before = None;
            }
            _ => {}
        }
    }

    /// Applies the commit's objects with these identities. An object already in sync is not
    /// written: its live generation is what the gate waits for (a re-issued write after a
    /// restart, say).
    async fn apply(
        &mut self,
        ids: &[ObjectRef],
    ) -> Result<Vec<(ObjectRef, Result<i64, WriteError>)>, Error> {
        let live = self.live.get(ids).await?;
        let mut results: Vec<(ObjectRef, Result<i64, WriteError>)> = Vec::with_capacity(ids.len());
        let mut writes: Vec<FleetObject> = Vec::new();
        let mut written: Vec<ObjectRef> = Vec::new();
        for (id, have) in ids.iter().zip(&live) {
            match self.desired.as_ref().and_then(|d| d.get(id)) {
                None => results.push((id.clone(), Err(WriteError::NotDesired))),
                Some(want) => match have {
                    Some(have) if diff::same(want, have) => {
                        results.push((id.clone(), Ok(have.meta().generation.unwrap_or(0))))
                    }
                    _ => {
                        writes.push(want.clone());
                        written.push(id.clone());
                    }
                },
            }
        }
        drop(live);
        crate::crash::point("apply-issued");
        let outcome = self.live.apply(&writes).await;
        crate::crash::point("apply-returned");
        fenced_out(&outcome)?;
        self.tally.writes += outcome.iter().filter(|r| r.is_ok()).count();
        results.extend(
            written
                .into_iter()
                .zip(outcome)
                .map(|(id, r)| (id, r.map(|a| a.generation).map_err(WriteError::Live))),
        );
        Ok(results)
    }

    /// Deletes what a rollout removes from the fleet, deciding on the object as the server has
    /// it now: one annotated `prune: disabled` (or no longer labelled as the fleet's) since the
    /// plan was made from the cache stays.
    async fn prune(
        &mut self,
        ids: &[ObjectRef],
    ) -> Result<Vec<(ObjectRef, Result<i64, WriteError>)>, Error> {
        let fresh = self.live.get_fresh(ids).await?;
        let fleet = self.config.id();
        let mut kept = Vec::new();
        let mut doomed = Vec::new();
        for (id, object) in ids.iter().zip(fresh) {
            match object {
                Some(o) if !owned_by(&o, &fleet) || diff::prune_disabled(&o) => {
                    kept.push(id.clone());
                }
                _ => doomed.push(id.clone()),
            }
        }
        if !kept.is_empty() {
            let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
            self.say(&format!(
                "not deleting {}: annotated fleet.endstate.dev/prune: disabled (or no longer the fleet's) since the plan",
                names.join(", ")
            ));
        }
        let mut results = self.delete(&doomed).await?;
        results.extend(
            kept.into_iter()
                .map(|id| (id, Ok(endstate_rollout::engine::KEPT))),
        );
        Ok(results)
    }

    async fn delete(
        &mut self,
        ids: &[ObjectRef],
    ) -> Result<Vec<(ObjectRef, Result<i64, WriteError>)>, Error> {
        let outcome = self.live.delete(ids).await;
        fenced_out(&outcome)?;
        Ok(ids
            .iter()
            .cloned()
            .zip(outcome)
            .map(|(id, r)| (id, r.map(|()| 0).map_err(WriteError::Live)))
            .collect())
    }

    /// What a trip restores: the last good commit (rendered now), or without one the live
    /// objects at plan time.
    fn restore_target(&mut self) -> Result<(), Error> {
        if self.before.is_some() {
            return Ok(());
        }
        let last_good = self
            .engine
            .rollout()
            .and_then(|r| r.last_good().map(str::to_owned));
        let commit = self.engine.rollout().map(|r| r.commit().to_owned());
        self.before = match (last_good, &self.first_live) {
            (Some(good), _) if Some(&good) != commit.as_ref() => match self.render(&good) {
                Ok(before) => Some(before),
                Err(why) => {
                    self.say(&format!(
                        "the last good commit {} does not render any more ({why}); restoring nothing but deleting what the rollout created",
                        short(&good)
                    ));
                    Some(Desired::default())
                }
            },
            (_, Some(first)) => Some(Desired::of(&first.commit, first.objects.clone())),
            _ => {
                self.say("no earlier state to restore (the rollout was resumed after a restart and the fleet has no last good commit); only creates are undone");
                Some(Desired::default())
            }
        };
        Ok(())
    }

    /// How each started position is undone.
    fn restore_plan(&mut self) -> Result<RestorePlan, Error> {
        self.restore_target()?;
        let ranges = self.engine.restore_ranges();
        let mut out = RestorePlan::default();
        let (Some(r), Some(before)) = (self.engine.rollout(), self.before.as_ref()) else {
            return Ok(out);
        };
        let Some(plan) = r.plan() else {
            return Ok(out);
        };
        for universe in Universe::ALL {
            let order = plan.order(universe);
            let reached = ranges[universe.index()].min(order.len());
            out.classes[universe.index()] = (0..reached)
                .map(|p| {
                    let id = order.id(p);
                    let desired = match universe {
                        Universe::Deletes => None,
                        _ => self.desired.as_ref().and_then(|d| d.get(id)),
                    };
                    RestoreClass::of(desired, before.get(id))
                })
                .collect();
        }
        Ok(out)
    }

    /// Puts back what the restore target has, or deletes what it lacks; objects already as
    /// the target has them are not written.
    async fn restore(
        &mut self,
        ids: &[ObjectRef],
    ) -> Result<Vec<(ObjectRef, Result<(), WriteError>)>, Error> {
        self.restore_target()?;
        let live = self.live.get(ids).await?;
        let before = self.before.as_ref().expect("prepared");
        let mut out = Vec::with_capacity(ids.len());
        let mut applies = Vec::new();
        let mut deletes = Vec::new();
        for (id, have) in ids.iter().zip(&live) {
            match (before.get(id), have) {
                (Some(want), Some(have)) if diff::same(want, have) => {
                    out.push((id.clone(), Ok(())));
                }
                (Some(want), _) => applies.push(want.clone()),
                (None, Some(_)) => deletes.push(id.clone()),
                (None, None) => out.push((id.clone(), Ok(()))),
            }
        }
        drop(live);
        crate::crash::point("restore-issued");
        let applied = self.live.apply(&applies).await;
        fenced_out(&applied)?;
        out.extend(
            applies
                .iter()
                .zip(applied)
                .map(|(o, r)| (o.id(), r.map(|_| ()).map_err(WriteError::Live))),
        );
        out.extend(
            self.delete(&deletes)
                .await?
                .into_iter()
                .map(|(id, r)| (id, r.map(|_| ()))),
        );
        Ok(out)
    }

    /// Saves the status now, unless it would change nothing.
    pub(crate) async fn save(&mut self) -> Result<(), Error> {
        let now = self.clock.now();
        let policy = self.policy();
        let mut status = status::to_status(&self.engine, &self.record, &policy, now);
        status.targets = status::targets(self.live.targets());
        let text = serde_json::to_string(&status).unwrap_or_default();
        if self.saved.as_deref() == Some(text.as_str()) {
            self.saved_at = now;
            self.unsaved = false;
            return Ok(());
        }
        self.fenced()?;
        crate::crash::point("status-save");
        self.live.save_status(&status).await?;
        crate::crash::point("status-saved");
        self.reporter.saved(&status);
        self.record.conditions = status.conditions.clone().unwrap_or_default();
        self.tally.saves += 1;
        self.saved = Some(text);
        self.saved_at = now;
        self.unsaved = false;
        Ok(())
    }

    /// Saves the status when the last save is older than `persist_every`.
    pub(crate) async fn flush_if_due(&mut self) -> Result<(), Error> {
        if self.clock.now().since(self.saved_at) >= self.config.persist_every {
            self.save().await?;
        }
        Ok(())
    }
}

/// A write refused by the fence is not an outcome for the engine (the object did not fail):
/// the loop ends instead.
fn fenced_out<T>(results: &[Result<T, endstate_rollout::LiveError>]) -> Result<(), Error> {
    if results
        .iter()
        .any(|r| matches!(r, Err(endstate_rollout::LiveError::Fenced(_))))
    {
        return Err(Error::Fenced);
    }
    Ok(())
}

/// What a gate sees of `object` (`None`: not found), given why the engine looks at it; `None`
/// when there is nothing to judge yet (a write whose generation is unknown).
fn judge(interest: Interest, object: Option<&FleetObject>) -> Option<Health> {
    let generation = match interest {
        Interest::Gone => {
            return Some(match object {
                None => Health::Healthy,
                Some(o) => Health::Progressing(match &o.meta().finalizers {
                    Some(f) if !f.is_empty() => {
                        format!("being deleted, waiting for finalizers {}", f.join(", "))
                    }
                    _ => "still present".to_owned(),
                }),
            });
        }
        Interest::Gate(generation) => generation?,
        Interest::Bake => object?.meta().generation.unwrap_or(0),
    };
    Some(health::assess(object, generation))
}
