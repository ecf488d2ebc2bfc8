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

use endstate_git::{RenderCache, RevertWriter};
use endstate_rollout::rollout::Phase;
use endstate_rollout::{Engine, Event, Live, LiveError, Time};

use crate::clock::Clock;
use crate::desired::Desired;
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
}

impl Config {
    /// Defaults for `fleet` in `namespace`.
    pub fn new(fleet: impl Into<String>, namespace: impl Into<String>) -> Self {
        Config {
            fleet: fleet.into(),
            namespace: namespace.into(),
            interval: Duration::from_secs(60),
            poll: Duration::from_secs(30),
            persist_every: Duration::from_secs(2),
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

/// Why the loop cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The live fleet failed in a way retrying does not fix.
    #[error("live fleet: {0}")]
    Live(#[from] LiveError),
    /// The persisted state cannot be read, or the commit it names cannot be rendered again.
    #[error("persisted state: {0}")]
    State(String),
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
    /// The status last saved, serialised, to skip saves that would change nothing.
    pub(crate) saved: Option<String>,
    pub(crate) saved_at: Time,
    pub(crate) next_fetch: Time,
    pub(crate) next_poll: Time,
    pub(crate) wake: Option<Time>,
    pub(crate) head: Option<String>,
    pub(crate) tally: Tally,
    pub(crate) kick: std::sync::Arc<tokio::sync::Notify>,
    /// Whether the breaker tripped during this run.
    pub(crate) tripped: bool,
    /// When (in real time) the breaker last tripped.
    pub(crate) tripped_at: Option<std::time::Instant>,
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
            saved: None,
            saved_at: Time::ZERO,
            next_fetch: Time::ZERO,
            next_poll: Time::ZERO,
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
                self.flush().await?;
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
        if let Some(trip) = self.engine.breaker() {
            let text = format!(
                "breaker reset (it tripped on {} at {})",
                short(&trip.commit),
                trip.at
            );
            self.say(&text);
        }
        self.step(Event::ResetBreaker).await?;
        self.flush().await
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
        let now = self.clock.now();
        let mut refused = None;
        let synced = self.live.synced();
        if synced && self.engine.partial() {
            self.replan().await?;
        }
        // Nothing is planned from a cache that is still listing the fleet.
        if synced
            && (now >= self.next_fetch
                || (until_idle && !self.engine.busy() && self.head.is_none()))
        {
            refused = self.reconcile().await?;
            let retry = self.source.retry_in().unwrap_or(self.config.interval);
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
        let mut until = self.next_fetch;
        if self.engine.busy() {
            until = until.min(self.next_poll.max(now));
        }
        if let Some(w) = self.wake {
            until = until.min(w.max(now));
        }
        if !synced {
            // Wake when the caches are done, to plan the rest.
            until = until.min(now + Duration::from_secs(1));
        }
        let kick = self.kick.clone();
        tokio::select! {
            () = self.clock.sleep_until(until) => {}
            () = self.live.changed() => {}
            () = kick.notified() => self.next_fetch = Time::ZERO,
        }
        let now = self.clock.now();
        if self.wake.is_some_and(|w| w <= now) {
            self.wake = None;
            self.step(Event::Tick).await?;
        }
        Ok(None)
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
