//! Reconcile: fetch the branch, check its head, render it, plan it against the live fleet and
//! start the rollout — or say why not. Also the resume of a persisted rollout, which renders
//! and plans its commit again.

use endstate_core::policy::Policy;
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::diff::Op;
use endstate_rollout::engine::Start;
use endstate_rollout::plan::{Inputs, Plan};
use endstate_rollout::{Event, Live};

use crate::clock::Clock;
use crate::controller::Controller;
use crate::desired::Desired;
use crate::error::{Error, SourceError};
use crate::refusal::Refusal;
use crate::report::short;
use crate::status;

impl<L: Live, C: Clock> Controller<L, C> {
    /// The commit `rev` names in the mirror (a commit id, a branch, `main~2`), after a fetch.
    pub fn resolve(&mut self, rev: &str) -> Result<String, SourceError> {
        if !self.source.fetched() {
            self.source.fetch().map_err(SourceError::Fetch)?;
        }
        let Some(source) = self.source.git() else {
            return Err(SourceError::NoHistory(rev.to_owned()));
        };
        Ok(source.resolve(rev).map(|oid| oid.to_string())?)
    }

    /// The objects of `commit` as they would be applied: namespaced and labelled.
    pub fn prepare(&mut self, commit: &str) -> Result<Vec<FleetObject>, SourceError> {
        self.render(commit).map(|d| d.objects)
    }

    /// Records `commit` as applied and good, as if its rollout had completed (for a fleet
    /// known to be at it already).
    pub async fn adopt(&mut self, commit: &str) -> Result<(), Error> {
        self.mark(commit, true);
        self.save().await
    }

    /// Loads the persisted state, and resumes a rollout that was under way: its commit is
    /// rendered and planned again (the order comes from the commit and the policy alone), and
    /// the writes whose outcome was lost are issued again.
    pub async fn resume(&mut self) -> Result<(), Error> {
        if let Some(status) = self.live.load_status().await? {
            let (engine, record) = status::from_status(&status)?;
            self.engine = engine;
            self.record = record;
            self.saved = serde_json::to_string(&status).ok();
        }
        if self.control.standing().suspended {
            // Not even the writes in flight are re-issued: the rollout resumes when the
            // Fleet does.
            self.resume_pending = true;
            return Ok(());
        }
        self.resume_rollout().await
    }

    /// Resumes the persisted rollout, if there is one.
    pub(crate) async fn resume_rollout(&mut self) -> Result<(), Error> {
        let Some(resumable) = self.engine.resumable() else {
            return Ok(());
        };
        let stage = self.engine.rollout().map_or(0, |r| r.stage_index());
        self.say(&format!(
            "resuming the rollout of {} at wave {}",
            short(&resumable.commit),
            stage + 1
        ));
        // A new mirror (a restarted pod) has not fetched the commit yet.
        if let Err(err) = self.source.fetch() {
            self.say(&format!("fetch failed while resuming: {err}"));
        }
        let desired = self.render(&resumable.commit).map_err(Error::Rerender)?;
        let base = self.resumed_base(&resumable)?;
        let fleet = self.config.id();
        let inputs = |live| Inputs {
            desired: &desired.objects,
            base: base.as_ref().map(|b| b.objects.as_slice()),
            live,
            fleet: &fleet,
            policy: &desired.policy,
            orphans: Some(&resumable.orphans),
        };
        let running = self
            .engine
            .rollout()
            .filter(|r| *r.phase() == endstate_rollout::engine::Phase::Running)
            .and_then(|r| Some((r.stage()?.clone(), r.cursor())));
        let plan = match running {
            // The caches are still listing the fleet (a restart of a large one takes a while):
            // plan the next changes of the wave in flight from objects read one by one, and the
            // rest once the caches hold everything.
            Some((stage, cursor)) if !self.live.synced() => {
                let order = Plan::new(inputs(&[]));
                let until = (cursor + (stage.max_unavailable / 4).max(64))
                    .min(stage.end)
                    .min(order.len(stage.seq));
                let ids: Vec<ObjectRef> = (cursor..until)
                    .map(|p| order.id(stage.seq, p).clone())
                    .collect();
                drop(order);
                let live: Vec<FleetObject> =
                    self.live.get(&ids).await?.into_iter().flatten().collect();
                self.say(&format!(
                    "planning the next {} changes from the server while the caches list the fleet",
                    ids.len()
                ));
                Plan::partial(inputs(&live), stage.seq, until)
            }
            _ => {
                self.live.wait_synced().await?;
                let live = self.live.snapshot().await?;
                Plan::new(inputs(&live))
            }
        };
        let policy = desired.policy.clone();
        drop(base);
        self.desired = Some(desired);
        self.note_foreign(&plan);
        let now = self.clock.now();
        let effects = self.engine.resume(plan, policy, now);
        self.perform(effects).await
    }

    /// Gives a rollout resumed on a partial plan its whole plan, once the caches hold the
    /// fleet.
    pub(crate) async fn replan(&mut self) -> Result<(), Error> {
        let Some(resumable) = self.engine.resumable() else {
            return Ok(());
        };
        let base = self.resumed_base(&resumable)?;
        let Some(desired) = self.desired.take() else {
            return Ok(());
        };
        let live = match self.live.snapshot().await {
            Ok(live) => live,
            Err(err) => {
                self.desired = Some(desired);
                return Err(err.into());
            }
        };
        let plan = Plan::new(Inputs {
            desired: &desired.objects,
            base: base.as_ref().map(|b| b.objects.as_slice()),
            live: &live,
            fleet: &self.config.id(),
            policy: &desired.policy,
            orphans: Some(&resumable.orphans),
        });
        drop(live);
        self.desired = Some(desired);
        self.note_foreign(&plan);
        self.say("the caches hold the fleet: planning the rest of the rollout");
        let now = self.clock.now();
        let effects = self.engine.replan(plan, now);
        self.perform(effects).await
    }

    /// The commit a resumed rollout started from, rendered: the objects it deletes, and the
    /// fields it removes, are found in it.
    fn resumed_base(
        &mut self,
        resumable: &endstate_rollout::engine::Resumable,
    ) -> Result<Option<Desired>, Error> {
        match &resumable.base {
            Some(base) => Ok(Some(self.render(base).map_err(Error::Rerender)?)),
            None => Ok(None),
        }
    }

    /// Fetches the branch; when its head is new (or the fleet drifted), renders, diffs and
    /// starts a rollout. Returns why the head is refused, if it is.
    pub(crate) async fn reconcile(&mut self) -> Result<Option<Refusal>, Error> {
        let started = std::time::Instant::now();
        let outcome = self.reconcile_in().await;
        if let Ok(refused) = &outcome {
            let result = refused.as_ref().map_or("Success", Refusal::reason);
            self.reporter.reconciled(result, started.elapsed());
        }
        outcome
    }

    async fn reconcile_in(&mut self) -> Result<Option<Refusal>, Error> {
        let fetch_started = std::time::Instant::now();
        let fetched = self.source.fetch();
        self.reporter
            .fetched(fetched.is_ok(), fetch_started.elapsed());
        let head = match fetched {
            Ok(head) => head,
            Err(refusal) => return self.refuse(refusal, true).await,
        };
        let new_head = self.head.as_deref() != Some(head.as_str());
        self.head = Some(head.clone());
        if let Some(refusal) = crate::admit::quarantine(&self.engine, self.source.git(), &head) {
            return self.refuse(refusal, new_head).await;
        }
        if self.engine.busy() {
            let rolling = self.engine.rollout().map(|r| r.commit().to_owned());
            if rolling.as_deref() != Some(head.as_str()) && new_head {
                self.say(&format!(
                    "new commit {} arrived during the rollout",
                    short(&head)
                ));
                self.step(Event::NewCommit(head)).await?;
            }
            return Ok(None);
        }
        let desired = match self.render(&head) {
            Ok(d) => d,
            Err(why) => {
                return self
                    .refuse(Refusal::InvalidCommit(why.to_string()), new_head)
                    .await;
            }
        };
        let live = self.live.snapshot().await?;
        // The base is the commit the fleet was at: what the head drops from it is deleted, and
        // a field it set that the head no longer sets is removed (see `diff::owned_same`).
        let base_commit = self.record.last_applied.clone().filter(|b| *b != head);
        let base = match &base_commit {
            Some(b) => self.render(b).ok(),
            None => None,
        };
        let base_commit = base.as_ref().and(base_commit);
        let fleet = self.config.id();
        let plan = Plan::new(Inputs {
            desired: &desired.objects,
            base: base.as_ref().map(|b| b.objects.as_slice()),
            live: &live,
            fleet: &fleet,
            policy: &desired.policy,
            orphans: None,
        });
        drop(base);
        if let Some((refusal, _)) = crate::admit::changes(&head, &plan, &desired.policy)
            .into_iter()
            .next()
        {
            return self.refuse(refusal, true).await;
        }
        self.record.stalled = None;
        if plan.held != self.held && !plan.held.is_empty() {
            let held: Vec<String> = plan
                .held
                .iter()
                .map(|(cluster, n)| format!("{n} on {cluster}"))
                .collect();
            self.say(&format!(
                "Machines held back, their Cluster reports Failed: {}",
                held.join(", ")
            ));
        }
        self.held = plan.held.clone();
        self.record.held_back = plan.held.iter().map(|(_, n)| n).sum();
        if plan.foreign != self.foreign
            && let Some(text) = foreign_text(&plan.foreign)
        {
            tracing::warn!("{text}");
            let now = self.clock.now();
            self.reporter.foreign(now, &head, &text);
        }
        self.note_foreign(&plan);
        if plan.is_empty() {
            self.tally.noops += 1;
            // Nothing left to write: nothing is held for a business cluster either.
            self.record.unavailable.clear();
            if new_head || self.record.last_applied.as_deref() != Some(head.as_str()) {
                self.say(&format!("{} is in sync: nothing to write", short(&head)));
            }
            // Held-back Machines, and another Fleet's objects, are not at the head: it is
            // not a good commit.
            let good =
                self.engine.breaker().is_none() && plan.held.is_empty() && plan.foreign.is_empty();
            self.mark(&head, good);
            return self.save().await.map(|()| None);
        }
        if let Some(trip) = self.engine.breaker() {
            let why = format!(
                "{} changes {} objects, held: the breaker is open since {} (reset it to go on)",
                short(&head),
                plan.len_changes(),
                trip.at
            );
            if new_head {
                self.say(&why);
            }
            return Ok(None);
        }
        if plan.orphans_left > 0 {
            self.say(&format!(
                "{} more objects the fleet owns that no applied commit renders are left for a later rollout (at most {} per rollout)",
                plan.orphans_left,
                endstate_rollout::plan::MAX_ORPHANS
            ));
        }
        let last_good = self.record.last_good.clone();
        // What a trip restores is the last good commit, rendered when a trip needs it; without
        // one (the fleet's first rollout), the live objects now.
        self.before = None;
        self.first_live = match &last_good {
            Some(good) if *good != head => None,
            _ => Some(Desired::of("live", live)),
        };
        let stages = plan.stages(&desired.policy);
        self.say(&format!(
            "{}: {} creates, {} updates, {} reinstalls, {} deletes in {} waves",
            short(&head),
            plan.count(Op::Create),
            plan.count(Op::Update),
            plan.count(Op::Reinstall),
            plan.count(Op::Delete),
            stages.len()
        ));
        let policy = desired.policy.clone();
        self.desired = Some(desired);
        // The fleet's record moves on now: the commit's changes start being written.
        self.record.last_applied = Some(head.clone());
        self.source.mark(&head, false);
        let now = self.clock.now();
        let effects = self.engine.start(
            Start {
                commit: head,
                last_good,
                base: base_commit,
                plan,
                policy,
            },
            now,
        );
        self.perform(effects).await.map(|()| None)
    }

    /// Records why the head is not applied, says so once per head, and saves.
    async fn refuse(&mut self, refusal: Refusal, say: bool) -> Result<Option<Refusal>, Error> {
        if say {
            let text = refusal.message();
            self.say(&text);
            let now = self.clock.now();
            self.reporter.refused(now, &refusal);
        }
        self.record.stalled = Some(refusal.clone());
        self.save().await?;
        Ok(Some(refusal))
    }

    /// Renders `commit` for the live fleet (namespaced and labelled by the render).
    pub(crate) fn render(&mut self, commit: &str) -> Result<Desired, SourceError> {
        let rendered = self.source.render(commit, &mut self.cache)?;
        let mut policy = Policy::default();
        let mut objects = Vec::with_capacity(rendered.objects.len());
        for r in rendered.objects {
            if let FleetObject::RolloutPolicy(p) = &r.object {
                policy = Policy::resolve(&p.spec).map_err(|problems| SourceError::Policy {
                    commit: short(commit).to_owned(),
                    file: r.origin.file.clone(),
                    problems,
                })?;
                continue;
            }
            objects.push(r.object);
        }
        if self.config.placed {
            objects = endstate_core::placement::place(&objects);
        }
        Ok(Desired {
            commit: commit.to_owned(),
            objects,
            policy,
        })
    }

    pub(crate) fn mark(&mut self, commit: &str, good: bool) {
        self.record.last_applied = Some(commit.to_owned());
        if good {
            self.record.last_good = Some(commit.to_owned());
        }
        self.source.mark(commit, good);
    }

    /// The policy budgets and windows are read against: the rollout's, or the head's.
    pub(crate) fn policy(&self) -> Policy {
        self.engine
            .rollout()
            .filter(|r| r.plan().is_some())
            .map(|r| r.policy().clone())
            .or_else(|| self.desired.as_ref().map(|d| d.policy.clone()))
            .unwrap_or_default()
    }

    /// The identity of `id` in the fleet's namespace.
    pub(crate) fn in_namespace(&self, id: &ObjectRef) -> ObjectRef {
        if id.namespace.is_empty() {
            ObjectRef::new(id.kind, &self.config.namespace, &id.name).in_cluster(&id.cluster)
        } else {
            id.clone()
        }
    }
}

impl<L: Live, C: Clock> Controller<L, C> {
    /// Remembers what `plan` leaves to other Fleets: the rollout that follows it is not good.
    fn note_foreign(&mut self, plan: &Plan) {
        self.record.foreign = foreign_text(&plan.foreign);
        self.foreign = plan.foreign.clone();
    }
}

/// What a plan did not write because other Fleets own it, in words (`None` when nothing).
fn foreign_text(foreign: &[endstate_rollout::plan::Foreign]) -> Option<String> {
    if foreign.is_empty() {
        return None;
    }
    let each: Vec<String> = foreign.iter().map(ToString::to_string).collect();
    Some(format!(
        "not written, another Fleet owns them: {}; the other Fleet keeps them until one is \
         handed over (annotate it fleet.endstate.dev/transfer-to=NAMESPACE/NAME)",
        each.join("; ")
    ))
}
