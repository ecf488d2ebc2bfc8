//! The reconcile loop: one task that fetches, renders, diffs, plans, and then drives the
//! rollout engine, performing every write itself.
//!
//! ```text
//! fetch ─▶ check (history, signature, quarantine) ─▶ render ─▶ diff(live) ─▶ plan ─▶ start
//!    ▲                                                                                 │
//!    │          ┌───────── effects: apply · delete · restore · revert · sample ◀───────┤
//!    │          ▼                                                                      │
//!    └── sleep until the next deadline ◀── observe health ─▶ step(events) ─────────────┘
//! ```
//!
//! After every step that changes the engine's state, the state is persisted through
//! [`Live::save_status`], so a controller killed at any point resumes at the same wave.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use endstate_core::{FleetObject, ObjectRef};
use endstate_git::{Oid, RenderCache, RevertOutcome, RevertWriter, attribute};
use endstate_rollout::diff::{self, Op};
use endstate_rollout::health::{self, Health};
use endstate_rollout::live::OWNER_LABEL;
use endstate_rollout::plan;
use endstate_rollout::policy::Policy;
use endstate_rollout::rollout::{Effect, Event, Evidence, Phase, Report};
use endstate_rollout::{Live, LiveError, State, Time};

use crate::clock::Clock;
use crate::metrics;
use crate::origin::Origin;
use crate::report::{Reporter, short};
use crate::status::{self, Record};

/// How the loop behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The fleet's name: the owner label's value and the revert trailer.
    pub fleet: String,
    /// The namespace of the fleet's objects.
    pub namespace: String,
    /// How often the branch is fetched (and drift corrected) when idle.
    pub interval: Duration,
    /// How often in-flight objects are looked at.
    pub poll: Duration,
    /// Retries of a write that failed transiently, before it counts as failed.
    pub write_retries: u32,
}

impl Config {
    /// Defaults for `fleet` in `namespace`.
    pub fn new(fleet: impl Into<String>, namespace: impl Into<String>) -> Self {
        Config {
            fleet: fleet.into(),
            namespace: namespace.into(),
            interval: Duration::from_secs(60),
            poll: Duration::from_secs(2),
            write_retries: 5,
        }
    }
}

/// How a run ended (for `--until-idle` and the demo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The fleet is at the branch head.
    Converged {
        /// The head.
        commit: String,
    },
    /// The breaker tripped: the fleet was restored and the revert handled.
    Tripped {
        /// The commit that tripped it.
        commit: String,
        /// How the revert went.
        revert: String,
    },
    /// The head cannot be applied (invalid, unverified, quarantined, rewritten history).
    Refused {
        /// Why.
        reason: String,
    },
    /// A wave with `pause: true` is done and the rollout holds for approval.
    AwaitingApproval {
        /// The commit.
        commit: String,
        /// The wave that finished.
        wave: String,
    },
}

/// What the loop did, for summaries and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Objects written by rollouts (applies and deletes).
    pub writes: usize,
    /// Objects written back by restores.
    pub restores: usize,
    /// Reconciles that found nothing to change.
    pub noops: usize,
    /// Rollouts completed.
    pub completed: usize,
    /// Waves completed.
    pub waves: usize,
    /// Real time from the last trip to its restores being written.
    pub trip_to_restored: Option<Duration>,
    /// Real time from the last trip to its revert being pushed (or refused).
    pub trip_to_revert: Option<Duration>,
}

/// A rendered commit, prepared for the live fleet: namespaced and labelled.
#[derive(Debug, Default)]
struct Desired {
    objects: Vec<FleetObject>,
    by_id: HashMap<ObjectRef, usize>,
    policy: Policy,
}

impl Desired {
    fn get(&self, id: &ObjectRef) -> Option<&FleetObject> {
        self.by_id.get(id).map(|&i| &self.objects[i])
    }
}

/// The reconcile loop over one Git source and one live fleet.
pub struct Controller<L: Live, C: Clock> {
    config: Config,
    source: Origin,
    writer: Option<RevertWriter>,
    cache: RenderCache,
    live: L,
    clock: C,
    reporter: Box<dyn Reporter>,
    state: State,
    record: Record,
    /// The desired set of the rollout's commit.
    desired: Option<Desired>,
    /// What a trip restores: the last good commit's objects, or the live objects at plan time
    /// when there is no last good commit.
    before: Option<Desired>,
    last_saved: Option<serde_json::Value>,
    next_fetch: Time,
    wake: Option<Time>,
    head: Option<String>,
    tally: Tally,
    kick: std::sync::Arc<tokio::sync::Notify>,
    /// Whether the breaker tripped during this run.
    tripped: bool,
    /// When (in real time) the breaker last tripped.
    tripped_at: Option<std::time::Instant>,
}

impl<L: Live, C: Clock> std::fmt::Debug for Controller<L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("fleet", &self.config.fleet)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// Why the loop cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The live fleet failed in a way retrying does not fix.
    #[error("live fleet: {0}")]
    Live(#[from] LiveError),
    /// The persisted state cannot be read.
    #[error("persisted state: {0}")]
    State(String),
}

impl<L: Live, C: Clock> Controller<L, C> {
    /// A loop over `source` and `live`. `writer` pushes reverts; without one, a trip restores
    /// the fleet and reports the commits to revert without pushing.
    pub fn new(
        config: Config,
        source: impl Into<Origin>,
        writer: Option<RevertWriter>,
        live: L,
        clock: C,
        reporter: Box<dyn Reporter>,
    ) -> Self {
        Controller {
            config,
            source: source.into(),
            writer,
            cache: RenderCache::default(),
            live,
            clock,
            reporter,
            state: State::default(),
            record: Record::default(),
            desired: None,
            before: None,
            last_saved: None,
            next_fetch: Time::ZERO,
            wake: None,
            head: None,
            tally: Tally::default(),
            kick: std::sync::Arc::new(tokio::sync::Notify::new()),
            tripped: false,
            tripped_at: None,
        }
    }

    /// A handle that makes the loop fetch at once (a webhook, a file watch): notify it from
    /// any thread.
    pub fn kick(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.kick.clone()
    }

    /// The engine's state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The fleet's record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// What the loop did so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The live fleet.
    pub fn live(&self) -> &L {
        &self.live
    }

    /// Where the end state comes from.
    pub fn source(&self) -> &Origin {
        &self.source
    }

    /// The commit `rev` names in the mirror (a commit id, a branch, `main~2`), after a fetch.
    pub fn resolve(&mut self, rev: &str) -> Result<String, String> {
        if !self.source.fetched() {
            self.source.fetch()?;
        }
        let Some(source) = self.source.git() else {
            return Err(format!(
                "{rev:?}: a local directory has no history to name commits in"
            ));
        };
        let repo = source.repository();
        let object = repo
            .revparse_single(rev)
            .or_else(|_| repo.revparse_single(&format!("refs/heads/{rev}")))
            .map_err(|e| format!("{rev:?} names no commit of the mirror: {}", e.message()))?;
        let commit = object
            .peel_to_commit()
            .map_err(|_| format!("{rev:?} is not a commit"))?;
        Ok(commit.id().to_string())
    }

    /// The objects of `commit` as they would be applied: namespaced and labelled.
    pub fn prepare(&mut self, commit: &str) -> Result<Vec<FleetObject>, String> {
        self.render(commit).map(|d| d.objects)
    }

    /// Records `commit` as applied and good, as if its rollout had completed (for a fleet
    /// known to be at it already).
    pub async fn adopt(&mut self, commit: &str) -> Result<(), Error> {
        self.mark(commit, true);
        self.persist(true).await
    }

    /// Loads the persisted state, and resumes a rollout that was under way.
    pub async fn resume(&mut self) -> Result<(), Error> {
        if let Some(status) = self.live.load_status().await? {
            let (state, record) = status::from_status(&status).map_err(Error::State)?;
            self.state = state;
            self.record = record;
            self.last_saved = serde_json::to_value(&self.state).ok();
        }
        if let Some(r) = &self.state.rollout {
            let commit = r.commit.clone();
            let last_good = r.last_good.clone();
            if self.state.busy() {
                self.say(&format!(
                    "resuming the rollout of {} at wave {}",
                    short(&commit),
                    r.stage + 1
                ));
                // A new mirror (a restarted pod) has not fetched the commit yet.
                if let Err(err) = self.source.fetch() {
                    self.say(&format!("fetch failed while resuming: {err}"));
                }
                self.desired = Some(self.render(&commit).map_err(Error::State)?);
                self.before = match last_good {
                    Some(good) => self.render(&good).ok(),
                    None => None,
                };
                self.step(Event::Resume).await?;
            }
        }
        Ok(())
    }

    /// Runs until the fleet is idle at the branch head (or refused it, or tripped), and says how
    /// it ended.
    pub async fn run_until_idle(&mut self) -> Result<Outcome, Error> {
        // Look at the branch first: idle means idle at its current head.
        self.next_fetch = Time::ZERO;
        loop {
            if let Some(outcome) = self.turn(true).await? {
                return Ok(outcome);
            }
        }
    }

    /// Runs for ever.
    pub async fn run(&mut self) -> Result<(), Error> {
        loop {
            self.turn(false).await?;
        }
    }

    /// Closes the latched breaker (after a human looked at the evidence): rollouts may start
    /// again. Quarantined commits stay quarantined.
    pub async fn reset_breaker(&mut self) -> Result<(), Error> {
        if let Some(trip) = &self.state.breaker {
            self.say(&format!(
                "breaker reset (it tripped on {} at {})",
                short(&trip.commit),
                trip.at
            ));
        }
        self.step(Event::ResetBreaker).await?;
        self.persist(true).await
    }

    /// Approves the wave held for approval.
    pub async fn approve(&mut self) -> Result<(), Error> {
        self.step(Event::Approve).await
    }

    /// One turn of the loop: fetch when due, observe, step, sleep until the next deadline.
    /// With `until_idle`, returns how the run ended once nothing is left to do.
    pub async fn turn(&mut self, until_idle: bool) -> Result<Option<Outcome>, Error> {
        let now = self.clock.now();
        let mut refused = None;
        if now >= self.next_fetch || (until_idle && !self.state.busy() && self.head.is_none()) {
            refused = self.fetch_and_plan().await?;
            let retry = self.source.retry_in().unwrap_or(self.config.interval);
            self.next_fetch = self.clock.now() + retry;
        }
        if self.state.busy() {
            self.observe().await?;
        }
        self.finish_rollout().await?;
        if until_idle
            && let Some(r) = &self.state.rollout
            && r.phase == Phase::AwaitingApproval
        {
            return Ok(Some(Outcome::AwaitingApproval {
                commit: r.commit.clone(),
                wave: r.plan.stages[r.stage].name.clone(),
            }));
        }
        if until_idle && !self.state.busy() {
            // A trip in this run is the news, even when the head is refused afterwards (it is
            // quarantined, and nothing reverted it).
            if let Some(reason) = refused
                && !self.tripped
            {
                return Ok(Some(Outcome::Refused { reason }));
            }
            if self.state.breaker.is_some() {
                if self
                    .state
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.phase == Phase::Restored)
                {
                    // One more look at the branch: the revert is the new head.
                    self.fetch_and_plan().await?;
                    let trip = self.state.breaker.clone().expect("open");
                    let revert = trip.revert_outcome.unwrap_or_else(|| "not pushed".into());
                    return Ok(Some(Outcome::Tripped {
                        commit: trip.commit,
                        revert,
                    }));
                }
            } else if let Some(head) = &self.head
                && self.record.last_applied.as_deref() == Some(head.as_str())
            {
                return Ok(Some(Outcome::Converged {
                    commit: head.clone(),
                }));
            }
        }
        let now = self.clock.now();
        let mut until = self.next_fetch;
        if self.state.busy() {
            until = until.min(now + self.config.poll);
        }
        if let Some(w) = self.wake {
            until = until.min(w.max(now));
        }
        let kick = self.kick.clone();
        tokio::select! {
            () = self.clock.sleep_until(until) => {}
            () = kick.notified() => self.next_fetch = Time::ZERO,
        }
        let now = self.clock.now();
        if self.wake.is_some_and(|w| w <= now) {
            self.wake = None;
            self.step(Event::Tick).await?;
        }
        Ok(None)
    }

    /// Fetches the branch; when its head is new (or the fleet drifted), renders, diffs and
    /// starts a rollout. Returns why the head is refused, if it is.
    async fn fetch_and_plan(&mut self) -> Result<Option<String>, Error> {
        let fetched = match self.source.fetch() {
            Ok(head) => head,
            Err(why) => {
                self.record.stalled = Some(why.clone());
                self.say(&format!(
                    "the branch head is not applied; the fleet stays as it is: {why}"
                ));
                self.persist(true).await?;
                return Ok(Some(why));
            }
        };
        let head = fetched;
        let new_head = self.head.as_deref() != Some(head.as_str());
        self.head = Some(head.clone());
        if let Some(culprit) = self.unreverted_quarantine(&head) {
            let why = if culprit == head {
                format!(
                    "the branch head {} is quarantined; push a fix or a revert",
                    short(&head)
                )
            } else {
                format!(
                    "the branch head {} still carries the quarantined commit {} (not reverted since); revert it to go on",
                    short(&head),
                    short(&culprit)
                )
            };
            if new_head {
                self.say(&why);
            }
            self.record.stalled = Some(why.clone());
            self.persist(true).await?;
            return Ok(Some(why));
        }
        if self.state.busy() {
            let rolling = self.state.rollout.as_ref().map(|r| r.commit.clone());
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
                if new_head {
                    self.say(&why);
                }
                self.record.stalled = Some(why.clone());
                self.persist(true).await?;
                return Ok(Some(why));
            }
        };
        let live = self.live.snapshot().await?;
        let changes = diff::diff(&desired.objects, &live, &self.config.fleet);
        if !changes.immutable.is_empty() {
            let names: Vec<String> = changes.immutable.iter().map(ToString::to_string).collect();
            let why = format!(
                "commit {} changes package versions that live objects use ({}); package versions are immutable: add a new one instead",
                short(&head),
                names.join(", ")
            );
            self.say(&why);
            self.record.stalled = Some(why.clone());
            self.persist(true).await?;
            return Ok(Some(why));
        }
        self.record.stalled = None;
        if changes.is_empty() {
            self.tally.noops += 1;
            if new_head || self.record.last_applied.as_deref() != Some(head.as_str()) {
                self.say(&format!("{} is in sync: nothing to write", short(&head)));
            }
            self.mark(&head, self.state.breaker.is_none());
            self.persist(true).await?;
            return Ok(None);
        }
        if let Some(trip) = &self.state.breaker {
            let why = format!(
                "{} changes {} objects, held: the breaker is open since {} (reset it to go on)",
                short(&head),
                changes.changes.len(),
                trip.at
            );
            if new_head {
                self.say(&why);
            }
            return Ok(None);
        }
        let live_by_id: HashMap<ObjectRef, &FleetObject> =
            live.iter().map(|o| (o.id(), o)).collect();
        let plan = plan::plan(&changes, &desired.policy, &|id| {
            desired.get(id).or_else(|| live_by_id.get(id).copied())
        });
        let last_good = self.record.last_good.clone();
        // What a trip restores: the last good commit's objects, or (no last good commit, or one
        // that cannot be rendered any more, as in a local directory) the live objects now.
        let good = match &last_good {
            Some(good) if good != &head => self.render(good).ok(),
            _ => None,
        };
        self.before = Some(good.unwrap_or_else(|| prepare_live(live)));
        self.say(&format!(
            "{}: {} creates, {} updates, {} reinstalls, {} deletes in {} waves",
            short(&head),
            changes.count(Op::Create),
            changes.count(Op::Update),
            changes.count(Op::Reinstall),
            changes.count(Op::Delete),
            plan.stages.len()
        ));
        let policy = desired.policy.clone();
        self.desired = Some(desired);
        let now = self.clock.now();
        let effects = self.state.start(head, last_good, plan, policy, now);
        self.perform(effects).await.map(|()| None)
    }

    /// A quarantined commit that `head` is, or descends from without a revert of it since
    /// (a commit whose message says `Endstate-Revert-Of: <sha>` or git's `This reverts commit
    /// <sha>.`): such a head would roll the quarantined change out again.
    fn unreverted_quarantine(&self, head: &str) -> Option<String> {
        if self.state.quarantine.is_empty() {
            return None;
        }
        if self.state.quarantined(head) {
            return Some(head.to_owned());
        }
        let repo = self.source.git()?.repository();
        let head_oid = Oid::from_str(head).ok()?;
        for q in &self.state.quarantine {
            let Ok(culprit) = Oid::from_str(&q.commit) else {
                continue;
            };
            if !repo.graph_descendant_of(head_oid, culprit).unwrap_or(false) {
                continue;
            }
            let mut walk = match repo.revwalk() {
                Ok(walk) => walk,
                Err(_) => return Some(q.commit.clone()),
            };
            if walk.push(head_oid).is_err() || walk.hide(culprit).is_err() {
                return Some(q.commit.clone());
            }
            let reverted = walk.filter_map(Result::ok).any(|oid| {
                repo.find_commit(oid)
                    .ok()
                    .and_then(|c| c.message().map(str::to_owned))
                    .is_some_and(|m| {
                        m.contains(&format!("Endstate-Revert-Of: {}", q.commit))
                            || m.contains(&format!("This reverts commit {}", q.commit))
                    })
            });
            if !reverted {
                return Some(q.commit.clone());
            }
        }
        None
    }

    /// Renders `commit` and prepares it for the live fleet.
    fn render(&mut self, commit: &str) -> Result<Desired, String> {
        let rendered = self.source.render(commit, &mut self.cache)?;
        let mut policy = Policy::default();
        let mut objects = Vec::with_capacity(rendered.objects.len());
        for r in rendered.objects {
            if let FleetObject::RolloutPolicy(p) = &r.object {
                policy = Policy::resolve(&p.spec).map_err(|why| {
                    format!(
                        "commit {}: {}: RolloutPolicy {why}",
                        short(commit),
                        r.origin.file
                    )
                })?;
                continue;
            }
            objects.push(r.object);
        }
        let mut desired = Desired {
            objects,
            by_id: HashMap::new(),
            policy,
        };
        for object in &mut desired.objects {
            own(object, &self.config.namespace, &self.config.fleet)
                .map_err(|why| format!("commit {}: {why}", short(commit)))?;
        }
        desired.by_id = desired
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id(), i))
            .collect();
        Ok(desired)
    }

    /// Looks at the objects the gates wait on and feeds what they show to the engine.
    async fn observe(&mut self) -> Result<(), Error> {
        let watch = self.state.watch();
        if !watch.is_empty() {
            let ids: Vec<ObjectRef> = watch.iter().map(|(id, _)| id.clone()).collect();
            let live = self.live.get(&ids).await?;
            let healths: Vec<(ObjectRef, Health)> = watch
                .into_iter()
                .zip(live)
                .map(|((id, generation), object)| (id, health::assess(object.as_ref(), generation)))
                .collect();
            self.step(Event::Observed(healths)).await?;
        }
        self.progress();
        Ok(())
    }

    fn progress(&mut self) {
        if let Some(r) = &self.state.rollout
            && let Some(stage) = r.plan.stages.get(r.stage)
        {
            let failed = r.failures.iter().filter(|f| f.stage == r.stage).count();
            let settled = r.next - r.inflight.len();
            self.reporter.progress(
                &stage.name,
                settled,
                stage.changes.len(),
                r.inflight.len(),
                failed,
            );
        }
    }

    /// Feeds an event to the engine and performs what it asks for.
    async fn step(&mut self, event: Event) -> Result<(), Error> {
        let now = self.clock.now();
        let effects = self.state.step(event, now);
        self.perform(effects).await
    }

    /// Performs effects in order; their outcomes are fed back as further events.
    async fn perform(&mut self, effects: Vec<Effect>) -> Result<(), Error> {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        let commit = self
            .state
            .rollout
            .as_ref()
            .map(|r| r.commit.clone())
            .unwrap_or_default();
        while let Some(effect) = queue.pop_front() {
            let now = self.clock.now();
            let event = match effect {
                Effect::Apply(ids) => {
                    let mut objects = Vec::with_capacity(ids.len());
                    let mut results = Vec::new();
                    for id in ids {
                        match self.desired.as_ref().and_then(|d| d.get(&id)) {
                            Some(object) => objects.push(object.clone()),
                            None => results
                                .push((id, Err("not in the commit's desired set".to_owned()))),
                        }
                    }
                    results.extend(self.write_all(&objects).await);
                    self.tally.writes += results.iter().filter(|(_, r)| r.is_ok()).count();
                    Some(Event::Written(results))
                }
                Effect::Delete(ids) => {
                    let results = self.delete_all(&ids).await;
                    self.tally.writes += results.iter().filter(|(_, r)| r.is_ok()).count();
                    Some(Event::Written(results))
                }
                Effect::Restore(changes) => {
                    let results = self.restore(&changes).await;
                    self.tally.restores += results.iter().filter(|(_, r)| r.is_ok()).count();
                    if let Some(at) = self.tripped_at {
                        self.tally.trip_to_restored.get_or_insert(at.elapsed());
                    }
                    self.reporter
                        .report(now, &commit, &Report::RestoreIssued(changes.len()));
                    Some(Event::Restored(results))
                }
                Effect::Revert {
                    commit,
                    last_good,
                    failed,
                    evidence,
                } => Some(self.revert(&commit, last_good.as_deref(), &failed, &evidence)),
                Effect::Sample(gates) => Some(Event::Sampled(metrics::sample(&gates).await)),
                Effect::WakeAt(t) => {
                    self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
                    None
                }
                Effect::Report(report) => {
                    match report {
                        Report::StageCompleted { .. } => self.tally.waves += 1,
                        Report::Tripped(_) => {
                            self.tripped = true;
                            self.tripped_at = Some(std::time::Instant::now());
                            self.tally.trip_to_restored = None;
                            self.tally.trip_to_revert = None;
                        }
                        _ => {}
                    }
                    self.reporter.report(now, &commit, &report);
                    None
                }
            };
            if let Some(event) = event {
                let now = self.clock.now();
                queue.extend(self.state.step(event, now));
            }
        }
        self.persist(false).await
    }

    /// Applies objects, retrying transient failures with backoff.
    async fn write_all(
        &mut self,
        objects: &[FleetObject],
    ) -> Vec<(ObjectRef, Result<i64, String>)> {
        let mut results: Vec<Option<Result<i64, String>>> = vec![None; objects.len()];
        let mut todo: Vec<usize> = (0..objects.len()).collect();
        for attempt in 0..=self.config.write_retries {
            let batch: Vec<FleetObject> = todo.iter().map(|&i| objects[i].clone()).collect();
            let outcome = self.live.apply(&batch).await;
            let mut again = Vec::new();
            for (&i, result) in todo.iter().zip(outcome) {
                match result {
                    Ok(applied) => results[i] = Some(Ok(applied.generation)),
                    Err(err) if err.is_retryable() && attempt < self.config.write_retries => {
                        again.push(i)
                    }
                    Err(err) => results[i] = Some(Err(err.to_string())),
                }
            }
            if again.is_empty() {
                break;
            }
            todo = again;
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        objects
            .iter()
            .zip(results)
            .map(|(o, r)| (o.id(), r.unwrap_or_else(|| Err("not written".into()))))
            .collect()
    }

    async fn delete_all(&mut self, ids: &[ObjectRef]) -> Vec<(ObjectRef, Result<i64, String>)> {
        let outcome = self.live.delete(ids).await;
        ids.iter()
            .cloned()
            .zip(outcome)
            .map(|(id, r)| (id, r.map(|()| 0).map_err(|e| e.to_string())))
            .collect()
    }

    /// Puts back what a change replaced: the before object, or nothing when the rollout
    /// created it.
    async fn restore(
        &mut self,
        changes: &[endstate_rollout::diff::Change],
    ) -> Vec<(ObjectRef, Result<(), String>)> {
        let mut applies = Vec::new();
        let mut deletes = Vec::new();
        let mut missing = Vec::new();
        for change in changes {
            match self.before.as_ref().and_then(|b| b.get(&change.id)) {
                Some(before) => applies.push(before.clone()),
                None if change.op == Op::Create => deletes.push(change.id.clone()),
                None => missing.push((
                    change.id.clone(),
                    Err("no earlier version to restore".to_owned()),
                )),
            }
        }
        let mut out: Vec<(ObjectRef, Result<(), String>)> = self
            .write_all(&applies)
            .await
            .into_iter()
            .map(|(id, r)| (id, r.map(|_| ())))
            .collect();
        out.extend(
            self.delete_all(&deletes)
                .await
                .into_iter()
                .map(|(id, r)| (id, r.map(|_| ()))),
        );
        out.extend(missing);
        out
    }

    /// Attributes the failure to commits and reverts them.
    fn revert(
        &mut self,
        commit: &str,
        last_good: Option<&str>,
        failed: &[ObjectRef],
        evidence: &Evidence,
    ) -> Event {
        let now = self.clock.now();
        let (culprits, attributed) = match self.culprits(commit, last_good, failed) {
            Ok(c) => c,
            Err(why) => {
                self.line(
                    now,
                    commit,
                    &format!("cannot tell which commits to revert: {why}"),
                );
                return Event::Reverted {
                    culprits: vec![commit.to_owned()],
                    reverts: Vec::new(),
                    outcome: format!("not reverted: {why}"),
                };
            }
        };
        let names: Vec<&str> = culprits.iter().map(|c| short(c)).collect();
        self.line(
            now,
            commit,
            &format!(
                "{} {}",
                if attributed {
                    "failure attributed to"
                } else {
                    "failure not attributable; reverting the whole range"
                },
                names.join(", ")
            ),
        );
        let Some(writer) = &mut self.writer else {
            return Event::Reverted {
                culprits,
                reverts: Vec::new(),
                outcome: "no revert writer configured; revert by hand".into(),
            };
        };
        let oids: Vec<Oid> = culprits
            .iter()
            .filter_map(|c| Oid::from_str(c).ok())
            .collect();
        let git_evidence = endstate_git::Evidence {
            summary: evidence.threshold.clone(),
            wave: Some(evidence.stage.clone()),
            failed: failed.to_vec(),
            thresholds: vec![evidence.threshold.clone()],
        };
        let (reverts, outcome) = match writer.revert(&oids, &git_evidence) {
            Ok(RevertOutcome::Pushed {
                reverts,
                already,
                empty,
                head,
            }) if reverts.is_empty() && already.is_empty() => (
                Vec::new(),
                format!(
                    "nothing to revert: the branch (at {}) already undoes {}",
                    short(&head.to_string()),
                    empty
                        .iter()
                        .map(|c| short_oid(*c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Ok(RevertOutcome::Pushed {
                reverts,
                already,
                head,
                ..
            }) => {
                let mut list: Vec<String> = reverts
                    .iter()
                    .chain(&already)
                    .map(|r| r.revert.to_string())
                    .collect();
                list.dedup();
                (
                    list,
                    format!(
                        "revert pushed; branch head is now {}",
                        short(&head.to_string())
                    ),
                )
            }
            Ok(RevertOutcome::AlreadyReverted { reverts }) => (
                reverts.iter().map(|r| r.revert.to_string()).collect(),
                "already reverted on the branch".to_owned(),
            ),
            Ok(RevertOutcome::SideBranch {
                branch,
                conflicted,
                paths,
                ..
            }) => (
                Vec::new(),
                format!(
                    "the revert of {} conflicts ({}); pushed to branch {branch} for a human to merge",
                    short(&conflicted.to_string()),
                    paths.join(", ")
                ),
            ),
            Ok(RevertOutcome::RefusedRevertOfRevert { commit, .. }) => (
                Vec::new(),
                format!(
                    "{} is itself an endstate revert; not reverting it, a human decides",
                    short(&commit.to_string())
                ),
            ),
            Err(err) => (Vec::new(), format!("revert failed: {err}")),
        };
        self.line(now, commit, &outcome);
        if let Some(at) = self.tripped_at {
            self.tally.trip_to_revert = Some(at.elapsed());
        }
        Event::Reverted {
            culprits,
            reverts,
            outcome,
        }
    }

    fn culprits(
        &mut self,
        commit: &str,
        last_good: Option<&str>,
        failed: &[ObjectRef],
    ) -> Result<(Vec<String>, bool), String> {
        let target = Oid::from_str(commit).map_err(|e| e.to_string())?;
        let Some(good) = last_good else {
            return Err("there is no last good commit to go back to (this was the fleet's first rollout); the fleet is restored, fix forward".to_owned());
        };
        let good = Oid::from_str(good).map_err(|e| e.to_string())?;
        let failed: HashSet<ObjectRef> = failed
            .iter()
            .map(|id| ObjectRef::new(&id.kind, "", &id.name))
            .chain(failed.iter().cloned())
            .collect();
        let Some(source) = self.source.git() else {
            return Err(
                "a local directory has no commits to revert; the fleet is restored".to_owned(),
            );
        };
        let path = source.config().path.clone();
        let found = attribute(
            source.repository(),
            &path,
            &mut self.cache,
            good,
            target,
            &failed,
        )
        .map_err(|e| e.to_string())?;
        // Newest first, as the writer reverts them.
        let commits: Vec<String> = found.commits.iter().map(ToString::to_string).collect();
        Ok((commits, found.attributed))
    }

    /// Bookkeeping when a rollout ends.
    async fn finish_rollout(&mut self) -> Result<(), Error> {
        let Some(r) = &self.state.rollout else {
            return Ok(());
        };
        let (commit, changed, phase) = (r.commit.clone(), r.plan.changed(), r.phase.clone());
        let noted = self
            .record
            .history
            .first()
            .is_some_and(|h| h.commit == commit);
        let now = self.clock.now();
        match phase {
            Phase::Completed if !noted => {
                self.tally.completed += 1;
                self.record.finished(&commit, "Succeeded", changed, now);
                self.mark(&commit, true);
                self.persist(true).await?;
            }
            Phase::Superseded if !noted => {
                self.record.finished(&commit, "Superseded", changed, now);
                self.persist(true).await?;
                // Re-plan from live state at once.
                self.head = None;
                self.next_fetch = now;
            }
            Phase::Restored if !noted => {
                self.record.finished(&commit, "Reverted", changed, now);
                self.record.last_applied = self.record.last_good.clone();
                self.persist(true).await?;
            }
            _ => {}
        }
        Ok(())
    }

    fn mark(&mut self, commit: &str, good: bool) {
        self.record.last_applied = Some(commit.to_owned());
        if good {
            self.record.last_good = Some(commit.to_owned());
        }
        self.source.mark(commit, good);
    }

    /// Saves the status when the engine's state changed (or always, with `force`).
    async fn persist(&mut self, force: bool) -> Result<(), Error> {
        let value = serde_json::to_value(&self.state).ok();
        if !force && value == self.last_saved {
            return Ok(());
        }
        let now = self.clock.now();
        let status = status::to_status(&self.state, value.clone(), &self.record, now);
        let mut attempt = 0;
        loop {
            match self.live.save_status(&status).await {
                Ok(()) => break,
                Err(err) if err.is_retryable() && attempt < self.config.write_retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.last_saved = value;
        Ok(())
    }

    fn say(&mut self, text: &str) {
        let now = self.clock.now();
        let commit = self
            .state
            .rollout
            .as_ref()
            .filter(|_| self.state.busy())
            .map(|r| r.commit.clone());
        self.reporter.line(now, commit.as_deref(), text);
    }

    fn line(&mut self, now: Time, commit: &str, text: &str) {
        self.reporter.line(now, Some(commit), text);
    }
}

fn short_oid(oid: Oid) -> String {
    short(&oid.to_string()).to_owned()
}

/// Puts an object in the fleet's namespace and labels it as the fleet's.
pub fn own(object: &mut FleetObject, namespace: &str, fleet: &str) -> Result<(), String> {
    let id = object.id();
    let meta = match object {
        FleetObject::Machine(o) => &mut o.metadata,
        FleetObject::Cluster(o) => &mut o.metadata,
        FleetObject::MachinePackageVersion(o) => &mut o.metadata,
        FleetObject::ClusterPackageVersion(o) => &mut o.metadata,
        FleetObject::RolloutPolicy(o) => &mut o.metadata,
    };
    match meta.namespace.as_deref() {
        None | Some("") => meta.namespace = Some(namespace.to_owned()),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return Err(format!(
                "{id} is in namespace {ns}, but the fleet's objects live in {namespace} (set the fleet's namespace to {ns})"
            ));
        }
    }
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(OWNER_LABEL.to_owned(), fleet.to_owned());
    Ok(())
}

/// The live objects at plan time, as what a trip restores when there is no last good commit.
fn prepare_live(live: Vec<FleetObject>) -> Desired {
    let by_id = live.iter().enumerate().map(|(i, o)| (o.id(), i)).collect();
    let objects = live
        .into_iter()
        .map(|mut o| {
            let meta = match &mut o {
                FleetObject::Machine(m) => {
                    m.status = None;
                    &mut m.metadata
                }
                FleetObject::Cluster(c) => {
                    c.status = None;
                    &mut c.metadata
                }
                FleetObject::MachinePackageVersion(p) => &mut p.metadata,
                FleetObject::ClusterPackageVersion(p) => &mut p.metadata,
                FleetObject::RolloutPolicy(p) => &mut p.metadata,
            };
            meta.resource_version = None;
            meta.managed_fields = None;
            meta.uid = None;
            meta.generation = None;
            meta.creation_timestamp = None;
            o
        })
        .collect();
    Desired {
        objects,
        by_id,
        policy: Policy::default(),
    }
}
