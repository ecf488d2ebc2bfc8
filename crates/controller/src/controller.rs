//! The reconcile loop: one task that fetches, renders, plans and then drives the rollout
//! engine, performing every write itself.
//!
//! ```text
//! turn ─▶ fetch when due ─▶ reconcile (reconcile.rs): check, render, plan, start
//!   │
//!   ├──▶ live changes of objects the engine is interested in ─▶ assess ─▶ step
//!   │                 (watch events; every `poll` all in flight, as a safety net)
//!   │
//!   ├──▶ effects (effects.rs): persist · apply · delete · restore · revert (revert.rs)
//!   │
//!   └──▶ sleep until the next deadline, a live change, or a kick
//! ```
//!
//! The engine's state is persisted through [`Live::save_status`]: before every batch of
//! writes it admits ([`endstate_rollout::Effect::Persist`]), and otherwise at most every
//! `persist_every`, so a controller killed at any point resumes at the same wave.

use std::time::Duration;

use endstate_core::hash::Fnv1a;
use endstate_git::{RenderCache, RevertWriter};
use endstate_rollout::engine::Phase;
use endstate_rollout::{Engine, Event, Live, Time};

use crate::clock::Clock;
use crate::control::{Control, Fence, names_wave};
use crate::desired::Desired;
use crate::error::Error;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::report::{Reporter, short};
use crate::status::Record;

/// How the loop behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The fleet's name: the owner label's value and the revert trailer.
    pub fleet: String,
    /// The namespace of the fleet's objects.
    pub namespace: String,
    /// How often the branch is fetched (and drift corrected) when idle.
    pub interval: Duration,
    /// How often every object in flight is read again, besides the watch events that wake
    /// the loop for each one.
    pub poll: Duration,
    /// How often a state that changed without asking to be saved at once (objects settling)
    /// is saved.
    pub persist_every: Duration,
    /// Each wait for the next fetch is moved by up to ± this fraction of `interval` (0 to
    /// 0.5), so that many fleets do not fetch in step; drawn from the fleet's name.
    pub jitter: f64,
    /// The Fleet's Machines live in their business clusters: each commit's package versions
    /// are placed once in every business cluster whose Machines use them
    /// (`endstate_core::placement`).
    pub placed: bool,
}

impl Config {
    /// The Fleet: whose objects are its own, and whose are not.
    pub fn id(&self) -> endstate_core::ownership::FleetId {
        endstate_core::ownership::FleetId::new(&self.namespace, &self.fleet)
    }

    /// Defaults for `fleet` in `namespace`.
    pub fn new(fleet: impl Into<String>, namespace: impl Into<String>) -> Self {
        Config {
            fleet: fleet.into(),
            namespace: namespace.into(),
            interval: Duration::from_secs(60),
            poll: Duration::from_secs(30),
            persist_every: Duration::from_secs(2),
            jitter: 0.0,
            placed: false,
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
        reason: Refusal,
    },
    /// `spec.suspend` holds the loop: nothing was fetched or written.
    Suspended,
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
    /// Status saves.
    pub saves: usize,
    /// Real time from the last trip to its restores being written.
    pub trip_to_restored: Option<Duration>,
    /// Real time from the last trip to its revert being pushed (or refused).
    pub trip_to_revert: Option<Duration>,
}

/// The fetch schedule of `config`: its interval, jittered by a seed drawn from the fleet's
/// namespace and name (so that a fleet's schedule is the same after a restart).
fn schedule(config: &Config) -> endstate_git::Schedule {
    let seed = Fnv1a::new()
        .write(
            config
                .namespace
                .bytes()
                .chain([b'/'])
                .chain(config.fleet.bytes()),
        )
        .finish();
    endstate_git::Schedule::new(config.interval, config.jitter, seed)
}

/// The reconcile loop over one Git source and one live fleet.
pub struct Controller<L: Live, C: Clock> {
    pub(crate) config: Config,
    pub(crate) source: Origin,
    pub(crate) writer: Option<RevertWriter>,
    pub(crate) cache: RenderCache,
    pub(crate) live: L,
    pub(crate) clock: C,
    pub(crate) reporter: Box<dyn Reporter>,
    pub(crate) engine: Engine,
    pub(crate) record: Record,
    /// The rollout's commit, rendered.
    pub(crate) desired: Option<Desired>,
    /// What a trip restores, rendered when a trip needs it.
    pub(crate) before: Option<Desired>,
    /// The live objects at plan time, kept only when there is no last good commit to restore.
    pub(crate) first_live: Option<Desired>,
    /// The Machines last reported held back by a failed Cluster (reported again on change).
    pub(crate) held: Vec<(endstate_core::ObjectRef, usize)>,
    /// The objects of the head last reported as another Fleet's (reported again on change).
    pub(crate) foreign: Vec<endstate_rollout::plan::Foreign>,
    /// The status last saved, serialised, to skip saves that would change nothing.
    pub(crate) saved: Option<String>,
    pub(crate) saved_at: Time,
    /// The engine stepped since the last save: the status may have changed, and is saved
    /// within `persist_every` even if nothing else wakes the loop.
    pub(crate) unsaved: bool,
    pub(crate) next_fetch: Time,
    pub(crate) next_poll: Time,
    pub(crate) wake: Option<Time>,
    pub(crate) head: Option<String>,
    pub(crate) tally: Tally,
    /// The jittered fetch interval.
    pub(crate) schedule: endstate_git::Schedule,
    pub(crate) kick: std::sync::Arc<tokio::sync::Notify>,
    /// Whether the breaker tripped during this run.
    pub(crate) tripped: bool,
    /// When (in real time) the breaker last tripped.
    pub(crate) tripped_at: Option<std::time::Instant>,
    /// Requests from outside the loop.
    pub(crate) control: std::sync::Arc<Control>,
    /// Whether writes are allowed; `None`: always.
    pub(crate) fence: Option<std::sync::Arc<dyn Fence>>,
    /// The persisted rollout waits for the Fleet to be resumed before it is resumed.
    pub(crate) resume_pending: bool,
    /// The source changed: no rollout starts, and the loop stops once none is under way.
    pub(crate) retiring: bool,
    /// The metric gates' queries in flight.
    pub(crate) gates: crate::gates::Sampler,
}

impl<L: Live, C: Clock> std::fmt::Debug for Controller<L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("fleet", &self.config.fleet)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
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
        let mut source = source.into();
        source.own(&config.namespace, &config.fleet);
        let schedule = schedule(&config);
        Controller {
            config,
            source,
            writer,
            cache: RenderCache::default().keep_renders(3),
            live,
            clock,
            reporter,
            engine: Engine::default(),
            record: Record::default(),
            desired: None,
            before: None,
            first_live: None,
            held: Vec::new(),
            foreign: Vec::new(),
            saved: None,
            saved_at: Time::ZERO,
            unsaved: false,
            next_fetch: Time::ZERO,
            next_poll: Time::ZERO,
            wake: None,
            head: None,
            tally: Tally::default(),
            schedule,
            kick: std::sync::Arc::new(tokio::sync::Notify::new()),
            tripped: false,
            tripped_at: None,
            control: std::sync::Arc::default(),
            fence: None,
            resume_pending: false,
            retiring: false,
            gates: crate::gates::Sampler::default(),
        }
    }

    /// Reads the Secrets that metric gates name (credentials, CA) from `secrets`.
    pub fn set_gate_secrets(&mut self, secrets: std::sync::Arc<dyn crate::gates::Secrets>) {
        self.gates.set_secrets(secrets);
    }

    /// The handle through which requests (approve, breaker reset, fetch now, suspend, stop)
    /// reach the running loop.
    pub fn control(&self) -> std::sync::Arc<Control> {
        self.control.clone()
    }

    /// Takes requests through `control` (one the caller keeps across loops it runs).
    pub fn set_control(&mut self, control: std::sync::Arc<Control>) {
        self.control = control;
    }

    /// Writes (to the fleet, the status and the Git remote) only while `fence` holds; once it
    /// does not, the loop ends with [`Error::Fenced`] before writing.
    pub fn set_fence(&mut self, fence: std::sync::Arc<dyn Fence>) {
        self.fence = Some(fence);
    }

    /// Fails with [`Error::Fenced`] when this process may not write.
    pub(crate) fn fenced(&self) -> Result<(), Error> {
        match &self.fence {
            Some(fence) if !fence.holds() => Err(Error::Fenced),
            _ => Ok(()),
        }
    }

    /// Changes how often a state that settles (without asking to be saved) is saved.
    pub fn set_persist_every(&mut self, every: Duration) {
        self.config.persist_every = every;
    }

    /// A handle that makes the loop fetch at once (a webhook, a file watch): notify it from
    /// any thread.
    pub fn kick(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.kick.clone()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
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

    /// Runs until the fleet is idle at the branch head (or refused it, or tripped), and says how
    /// it ended.
    pub async fn run_until_idle(&mut self) -> Result<Outcome, Error> {
        // Look at the branch first: idle means idle at its current head.
        self.next_fetch = Time::ZERO;
        loop {
            if let Some(outcome) = self.turn(true).await? {
                self.save().await?;
                return Ok(outcome);
            }
        }
    }

    /// Runs until asked to stop through [`Controller::control`] (for ever otherwise), then
    /// saves the state.
    pub async fn run(&mut self) -> Result<(), Error> {
        while !self.control.stopping() {
            self.turn(false).await?;
        }
        self.save().await
    }

    /// Closes the latched breaker (after a human looked at the evidence): rollouts may start
    /// again. Quarantined commits stay quarantined.
    pub async fn reset_breaker(&mut self) -> Result<(), Error> {
        if let Some(trip) = self.engine.breaker() {
            let text = format!(
                "breaker reset (it tripped on {} at {})",
                short(&trip.commit),
                trip.at
            );
            self.say(&text);
        }
        self.step(Event::ResetBreaker).await?;
        self.save().await
    }

    /// Approves the wave held for approval.
    pub async fn approve(&mut self) -> Result<(), Error> {
        self.step(Event::Approve).await
    }

    /// One turn of the loop: fetch when due, look at what changed, step, sleep until the next
    /// deadline. With `until_idle`, returns how the run ended once nothing is left to do.
    ///
    /// Every log event of the turn carries the fleet, and during a rollout its commit and
    /// wave, as span fields.
    pub async fn turn(&mut self, until_idle: bool) -> Result<Option<Outcome>, Error> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "fleet",
            namespace = %self.config.namespace,
            fleet = %self.config.fleet,
            commit = tracing::field::Empty,
            wave = tracing::field::Empty
        );
        if let Some(r) = self.engine.rollout().filter(|_| self.engine.busy()) {
            span.record("commit", short(r.commit()));
            if let Some(stage) = r.stage() {
                span.record("wave", stage.name.as_str());
            }
        }
        self.turn_in(until_idle).instrument(span).await
    }

    async fn turn_in(&mut self, until_idle: bool) -> Result<Option<Outcome>, Error> {
        self.requests().await?;
        if self.record.suspended {
            // Nothing is fetched, observed or written until resumed.
            self.flush_if_due().await?;
            if until_idle {
                return Ok(Some(Outcome::Suspended));
            }
            let control = self.control.clone();
            control.changed().await;
            return Ok(None);
        }
        if self.resume_pending {
            self.resume_pending = false;
            self.resume_rollout().await?;
        }
        let now = self.clock.now();
        let mut refused = None;
        let synced = self.live.synced();
        if synced && self.engine.partial() {
            self.replan().await?;
        }
        if self.retiring {
            self.observe().await?;
            if !self.engine.busy() {
                self.say("the rollout on the former source is over; the new source takes over");
                self.control.stop();
                return Ok(None);
            }
        }
        // Nothing is planned from a cache that is still listing the fleet.
        if synced
            && !self.retiring
            && (now >= self.next_fetch
                || (until_idle && !self.engine.busy() && self.head.is_none()))
        {
            refused = self.reconcile().await?;
            let retry = match self.source.retry_in() {
                Some(backoff) => backoff,
                None => self.schedule.next_delay(),
            };
            self.next_fetch = self.clock.now() + retry;
        }
        self.observe().await?;
        if self
            .engine
            .rollout()
            .is_some_and(|r| matches!(r.phase(), Phase::Baking { .. }))
        {
            crate::crash::point("baking");
        }
        if until_idle && let Some(outcome) = self.idle_outcome(refused).await? {
            return Ok(Some(outcome));
        }
        self.flush_if_due().await?;
        let now = self.clock.now();
        // A retiring loop fetches no more: its due fetch must not make it spin.
        let mut until = if self.retiring {
            now + self.config.interval
        } else {
            self.next_fetch
        };
        if self.engine.busy() {
            until = until.min(self.next_poll.max(now));
        }
        if let Some(w) = self.wake {
            until = until.min(w.max(now));
        }
        if self.unsaved {
            // What the last steps changed is saved soon, not at the next fetch.
            until = until.min((self.saved_at + self.config.persist_every).max(now));
        }
        if !synced {
            // Nothing is planned until the caches are done: look again shortly (a fetch that
            // is due waits for them, rather than the loop spinning on it).
            until = now + Duration::from_millis(200);
        }
        let kick = self.kick.clone();
        let control = self.control.clone();
        // A clock that jumps instead of waiting (the simulator at full speed) must not run
        // ahead of the answers of a query API, which come in real time.
        let hold_clock = self.gates.in_flight() && !self.clock.paced();
        let mut answers = None;
        tokio::select! {
            () = self.clock.sleep_until(until), if !hold_clock => {}
            sampled = self.gates.answered() => answers = Some(sampled),
            () = self.live.changed() => {}
            () = kick.notified() => self.next_fetch = Time::ZERO,
            () = control.changed() => {}
        }
        if let Some(answers) = answers {
            self.step(Event::Sampled(answers)).await?;
        }
        let now = self.clock.now();
        if self.wake.is_some_and(|w| w <= now) {
            self.wake = None;
            self.step(Event::Tick).await?;
        }
        Ok(None)
    }

    /// Acts on the requests made through [`Controller::control`] since the last turn, and
    /// records each one's token as handled.
    async fn requests(&mut self) -> Result<(), Error> {
        let requests = self.control.take();
        let mut changed = false;
        if requests.generation.is_some() && requests.generation != self.record.generation {
            self.record.generation = requests.generation;
            changed = true;
        }
        if requests.suspended != self.record.suspended {
            self.record.suspended = requests.suspended;
            self.say(if requests.suspended {
                "suspended (spec.suspend): nothing is fetched or written until it is resumed"
            } else {
                "resumed"
            });
            self.reporter.request(
                if requests.suspended {
                    "Suspended"
                } else {
                    "Resumed"
                },
                true,
                if requests.suspended {
                    "spec.suspend is true: nothing is fetched or written"
                } else {
                    "spec.suspend is false: reconciling again"
                },
            );
            self.next_fetch = Time::ZERO;
            changed = true;
        }
        if self.record.suspended {
            // Approvals, resets and fetches wait for the Fleet to be resumed.
            self.control.keep(requests);
            if changed {
                self.save().await?;
            }
            return Ok(());
        }
        if requests.retire && !self.retiring {
            self.retiring = true;
            if let Some(r) = self.engine.rollout().filter(|_| self.engine.busy()) {
                let text = format!(
                    "spec.source changed during the rollout of {}: it ends as it would for a new commit (onNewCommit: {}), then the new source is reconciled",
                    short(r.commit()),
                    if r.policy().abort_on_new_commit {
                        "abort"
                    } else {
                        "finish"
                    }
                );
                self.say(&text);
                self.step(Event::NewCommit("spec.source".to_owned()))
                    .await?;
            }
        }
        if let Some(token) = requests.reconcile {
            self.next_fetch = Time::ZERO;
            self.record.handled.reconcile = Some(token);
            changed = true;
        }
        if let Some(token) = requests.reset_breaker {
            if self.engine.breaker().is_some() {
                self.reset_breaker().await?;
                self.reporter.request(
                    "BreakerReset",
                    true,
                    "the breaker is closed; rollouts may start",
                );
            } else {
                self.say("a breaker reset was asked for; the breaker is closed already");
            }
            self.record.handled.reset_breaker = Some(token);
            self.next_fetch = Time::ZERO;
            changed = true;
        }
        if let Some(approval) = requests.approve {
            let holding = self
                .engine
                .rollout()
                .filter(|r| *r.phase() == Phase::AwaitingApproval)
                .map(|r| {
                    let name = r.stage().map(|s| s.name.clone()).unwrap_or_default();
                    (r.stage_index(), name)
                });
            match (holding, approval.wave.as_deref()) {
                (Some((index, name)), Some(wave)) if !names_wave(wave, index, &name) => {
                    let text = format!(
                        "approval {} refused: it is for wave {wave}, and the wave that holds is {} {name}",
                        approval.token,
                        index + 1
                    );
                    self.say(&text);
                    self.reporter.request("ApprovalRefused", false, &text);
                }
                (Some((index, name)), _) => {
                    let text = format!("wave {} {name} approved: the rollout goes on", index + 1);
                    self.say(&text);
                    self.reporter.request("Approved", true, &text);
                    self.step(Event::Approve).await?;
                }
                (None, _) => {
                    let text = format!(
                        "approval {} ignored: no wave holds for approval",
                        approval.token
                    );
                    self.say(&text);
                    self.reporter.request("ApprovalRefused", false, &text);
                }
            }
            self.record.handled.approve = Some(approval.token);
            changed = true;
        }
        if changed {
            self.save().await?;
        }
        Ok(())
    }

    /// How an `--until-idle` run ends now, if it does.
    async fn idle_outcome(&mut self, refused: Option<Refusal>) -> Result<Option<Outcome>, Error> {
        if let Some(r) = self.engine.rollout()
            && *r.phase() == Phase::AwaitingApproval
        {
            return Ok(Some(Outcome::AwaitingApproval {
                commit: r.commit().to_owned(),
                wave: r.stage().map(|s| s.name.clone()).unwrap_or_default(),
            }));
        }
        if self.engine.busy() {
            return Ok(None);
        }
        // A trip in this run is the news, even when the head is refused afterwards (it is
        // quarantined, and nothing reverted it).
        if let Some(reason) = refused
            && !self.tripped
        {
            return Ok(Some(Outcome::Refused { reason }));
        }
        if self.engine.breaker().is_some() {
            if self
                .engine
                .rollout()
                .is_some_and(|r| *r.phase() == Phase::Restored)
            {
                // One more look at the branch: the revert is the new head.
                self.reconcile().await?;
                let trip = self.engine.breaker().cloned().expect("open");
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
        Ok(None)
    }

    pub(crate) fn say(&mut self, text: &str) {
        let now = self.clock.now();
        let commit = self
            .engine
            .rollout()
            .filter(|_| self.engine.busy())
            .map(|r| r.commit().to_owned());
        tracing::info!("{text}");
        self.reporter.line(now, commit.as_deref(), text);
    }

    pub(crate) fn line(&mut self, now: Time, commit: &str, text: &str) {
        self.reporter.line(now, Some(commit), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Fleet's fetches are spread by ±10% of its interval, the same way after a restart,
    /// and differently from another Fleet's.
    #[test]
    fn the_fetch_interval_is_jittered_per_fleet() {
        let config = |fleet: &str| {
            let mut config = Config::new(fleet, "fleet-prod");
            config.jitter = 0.1;
            config
        };
        let delays = |fleet: &str| {
            let mut schedule = schedule(&config(fleet));
            (0..50).map(|_| schedule.next_delay()).collect::<Vec<_>>()
        };
        let prod = delays("prod");
        assert_eq!(prod, delays("prod"), "the same after a restart");
        assert_ne!(prod, delays("staging"), "not in step with another fleet");
        for delay in &prod {
            assert!(
                (Duration::from_secs(54)..=Duration::from_secs(66)).contains(delay),
                "{delay:?}"
            );
        }
        assert!(prod.iter().any(|d| *d < Duration::from_secs(59)));
        assert!(prod.iter().any(|d| *d > Duration::from_secs(61)));
    }
}
