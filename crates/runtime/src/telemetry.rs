//! What the controller tells operators besides its log: Prometheus metrics (the registry and
//! its exporter), Kubernetes Events on each Fleet, and the `/metrics`, `/healthz`, `/readyz`
//! routes.
//!
//! Metric names follow controller-runtime and Flux: counters end in `_total`, durations are
//! `_seconds` histograms, every per-Fleet series carries `namespace` and `fleet`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_api::fleet::BreakerState;
use endstate_controller::report::short;
use endstate_controller::{Refusal, Reporter};
use endstate_kube::FleetEvents;
use endstate_rollout::Time;
use endstate_rollout::engine::Report;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::http::{Request, Router, text};

/// A Fleet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub fleet: String,
}

/// A Fleet and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub namespace: String,
    pub fleet: String,
    /// `Success`, or the refusal's reason.
    pub result: String,
}

/// A Fleet and a budget class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub namespace: String,
    pub fleet: String,
    pub class: String,
}

/// A Fleet and a kind of API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub namespace: String,
    pub fleet: String,
    /// `apply`, `delete`, `status`, `retry`.
    pub verb: String,
}

fn durations() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_seconds: Family<FleetLabels, Histogram, fn() -> Histogram>,
    pub fetch_seconds: Family<FleetLabels, Histogram, fn() -> Histogram>,
    pub fetch_failures: Family<FleetLabels, Counter>,
    pub waves_started: Family<FleetLabels, Counter>,
    pub waves_completed: Family<FleetLabels, Counter>,
    pub waves_failed: Family<FleetLabels, Counter>,
    pub in_flight: Family<FleetLabels, Gauge>,
    pub budget_remaining: Family<BudgetLabels, Gauge>,
    pub breaker_open: Family<FleetLabels, Gauge>,
    pub trips: Family<FleetLabels, Counter>,
    pub reverts: Family<FleetLabels, Counter>,
    pub suspended: Family<FleetLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub throttled: Counter,
    pub leader: Gauge,
    pub fleets: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(durations),
            fetch_seconds: Family::new_with_constructor(durations),
            fetch_failures: Family::default(),
            waves_started: Family::default(),
            waves_completed: Family::default(),
            waves_failed: Family::default(),
            in_flight: Family::default(),
            budget_remaining: Family::default(),
            breaker_open: Family::default(),
            trips: Family::default(),
            reverts: Family::default(),
            suspended: Family::default(),
            writes: Family::default(),
            throttled: Counter::default(),
            leader: Gauge::default(),
            fleets: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "endstate_reconcile",
            "Reconciles (fetch, check, render, plan) by result",
            metrics.reconciles.clone(),
        );
        r.register(
            "endstate_reconcile_duration_seconds",
            "How long a reconcile took",
            metrics.reconcile_seconds.clone(),
        );
        r.register(
            "endstate_fetch_duration_seconds",
            "How long a fetch of the Fleet's branch took",
            metrics.fetch_seconds.clone(),
        );
        r.register(
            "endstate_fetch_failures",
            "Fetches that failed",
            metrics.fetch_failures.clone(),
        );
        r.register(
            "endstate_waves_started",
            "Waves started",
            metrics.waves_started.clone(),
        );
        r.register(
            "endstate_waves_completed",
            "Waves completed",
            metrics.waves_completed.clone(),
        );
        r.register(
            "endstate_waves_failed",
            "Waves completed with failed objects",
            metrics.waves_failed.clone(),
        );
        r.register(
            "endstate_objects_in_flight",
            "Objects written and not yet healthy",
            metrics.in_flight.clone(),
        );
        r.register(
            "endstate_budget_remaining",
            "Operations left in the budget window, per class",
            metrics.budget_remaining.clone(),
        );
        r.register(
            "endstate_breaker_open",
            "1 while the circuit breaker is open",
            metrics.breaker_open.clone(),
        );
        r.register(
            "endstate_breaker_trips",
            "Circuit breaker trips",
            metrics.trips.clone(),
        );
        r.register(
            "endstate_reverts_pushed",
            "Revert commits pushed",
            metrics.reverts.clone(),
        );
        r.register(
            "endstate_suspended",
            "1 while the Fleet is suspended",
            metrics.suspended.clone(),
        );
        r.register(
            "endstate_api_writes",
            "Writes to the API server, by verb",
            metrics.writes.clone(),
        );
        r.register(
            "endstate_api_throttled",
            "Responses that made the client-side rate limiter back off (429, 5xx)",
            metrics.throttled.clone(),
        );
        r.register(
            "endstate_leader",
            "1 while this replica holds the leader election Lease",
            metrics.leader.clone(),
        );
        r.register(
            "endstate_fleets",
            "Fleets this replica watches",
            metrics.fleets.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// The exposition, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Counts of a Fleet's API writes, turned into counter increments.
#[derive(Debug, Default)]
pub struct WriteCounts(Mutex<endstate_kube::WriteStats>);

impl WriteCounts {
    /// Adds what `now` counts beyond the last call.
    pub fn update(&self, metrics: &Metrics, labels: &FleetLabels, now: endstate_kube::WriteStats) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (verb, was, is) in [
            ("apply", last.applied, now.applied),
            ("delete", last.deleted, now.deleted),
            ("status", last.status_saves, now.status_saves),
            ("retry", last.retries, now.retries),
        ] {
            if is > was {
                metrics
                    .writes
                    .get_or_create(&WriteLabels {
                        namespace: labels.namespace.clone(),
                        fleet: labels.fleet.clone(),
                        verb: verb.to_owned(),
                    })
                    .inc_by(is - was);
            }
        }
        *last = now;
    }
}

/// An Event to publish on a Fleet.
#[derive(Debug)]
struct Notice {
    warning: bool,
    reason: String,
    note: String,
}

/// The reporter of one Fleet's loop: metrics, Events, and its log lines through `tracing`.
pub struct FleetReporter {
    labels: FleetLabels,
    metrics: Arc<Metrics>,
    events: tokio::sync::mpsc::UnboundedSender<Notice>,
}

impl std::fmt::Debug for FleetReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetReporter")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl FleetReporter {
    /// A reporter for a Fleet, publishing its Events through `events` from a task of its own.
    pub fn new(labels: FleetLabels, metrics: Arc<Metrics>, events: FleetEvents) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Notice>();
        tokio::spawn(async move {
            while let Some(notice) = receiver.recv().await {
                let published = events
                    .publish(notice.warning, &notice.reason, &notice.reason, &notice.note)
                    .await;
                if let Err(err) = published {
                    tracing::warn!(error = %err, "cannot publish an Event");
                }
            }
        });
        FleetReporter {
            labels,
            metrics,
            events: sender,
        }
    }

    fn event(&self, warning: bool, reason: &str, note: String) {
        let _ = self.events.send(Notice {
            warning,
            reason: reason.to_owned(),
            note,
        });
    }
}

impl Reporter for FleetReporter {
    // The loop logs its lines through `tracing` itself, with the fleet, commit and wave.
    fn line(&mut self, _now: Time, _commit: Option<&str>, _text: &str) {}

    fn progress(&mut self, _: &str, _: usize, _: usize, inflight: usize, _: usize) {
        self.metrics
            .in_flight
            .get_or_create(&self.labels)
            .set(inflight as i64);
    }

    fn report(&mut self, _now: Time, commit: &str, report: &Report) {
        let text = format!(
            "{}: {}",
            short(commit),
            endstate_controller::report::describe(report)
        );
        let m = &self.metrics;
        match report {
            Report::StageStarted { .. } => {
                m.waves_started.get_or_create(&self.labels).inc();
                self.event(false, "WaveStarted", text);
            }
            Report::StageCompleted { failures, .. } => {
                m.waves_completed.get_or_create(&self.labels).inc();
                if *failures > 0 {
                    m.waves_failed.get_or_create(&self.labels).inc();
                    self.event(true, "WaveFailed", text);
                } else {
                    self.event(false, "WaveCompleted", text);
                }
            }
            Report::AwaitingApproval(_) => self.event(false, "AwaitingApproval", text),
            Report::Tripped(_) => {
                m.trips.get_or_create(&self.labels).inc();
                self.event(true, "BreakerTripped", text);
            }
            Report::Restored { .. } => self.event(true, "Restored", text),
            Report::LeftCreated(_) => self.event(true, "CreatedLeftInPlace", text),
            Report::Completed { held, .. } => {
                self.event(*held > 0, "RolloutCompleted", text);
            }
            Report::Held { .. } => self.event(true, "ClusterFailed", text),
            Report::TargetHeld { reason, .. } => self.event(true, reason, text),
            Report::Superseded(_) => self.event(false, "Superseded", text),
            Report::Waiting(_) | Report::Failed(..) | Report::RestoreIssued(_) => {}
        }
    }

    fn request(&mut self, reason: &str, ok: bool, text: &str) {
        self.event(!ok, reason, text.to_owned());
    }

    fn refused(&mut self, _now: Time, refusal: &Refusal) {
        self.event(true, refusal.reason(), refusal.message());
    }

    fn foreign(&mut self, _now: Time, _commit: &str, text: &str) {
        self.event(true, "OwnedByAnotherFleet", text.to_owned());
    }

    fn reverted(&mut self, _now: Time, commit: &str, pushed: bool, outcome: &str) {
        if pushed {
            self.metrics.reverts.get_or_create(&self.labels).inc();
        }
        self.event(
            true,
            if pushed {
                "RevertPushed"
            } else {
                "RevertNotPushed"
            },
            format!("{}: {outcome}", short(commit)),
        );
    }

    fn fetched(&mut self, ok: bool, took: Duration) {
        self.metrics
            .fetch_seconds
            .get_or_create(&self.labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.metrics
                .fetch_failures
                .get_or_create(&self.labels)
                .inc();
        }
    }

    fn reconciled(&mut self, result: &str, took: Duration) {
        self.metrics
            .reconciles
            .get_or_create(&ResultLabels {
                namespace: self.labels.namespace.clone(),
                fleet: self.labels.fleet.clone(),
                result: result.to_owned(),
            })
            .inc();
        self.metrics
            .reconcile_seconds
            .get_or_create(&self.labels)
            .observe(took.as_secs_f64());
    }

    fn saved(&mut self, status: &endstate_api::FleetStatus) {
        let m = &self.metrics;
        let open = status
            .breaker
            .as_ref()
            .is_some_and(|b| b.state == BreakerState::Open);
        m.breaker_open
            .get_or_create(&self.labels)
            .set(i64::from(open));
        let in_flight = status
            .rollout
            .as_ref()
            .and_then(|r| r.in_flight)
            .unwrap_or(0);
        m.in_flight.get_or_create(&self.labels).set(in_flight);
        let suspended = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.reason == "Suspended");
        m.suspended
            .get_or_create(&self.labels)
            .set(i64::from(suspended));
        for budget in status.budgets.iter().flatten() {
            m.budget_remaining
                .get_or_create(&BudgetLabels {
                    namespace: self.labels.namespace.clone(),
                    fleet: self.labels.fleet.clone(),
                    class: budget.class.clone(),
                })
                .set((budget.limit - budget.spent).max(0));
        }
    }
}

/// What `/readyz` and `/healthz` answer.
#[derive(Debug, Default)]
pub struct Health {
    /// Every watched Fleet's caches have listed it (a standby is ready too).
    pub ready: AtomicBool,
    /// Why not, when not.
    pub why: Mutex<String>,
}

/// `router` with `/metrics`, `/healthz` (and `/livez`) and `/readyz`.
pub fn routes(router: Router, metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    let alive = |_: Request| async { text(200, "text/plain", "ok\n".to_owned()) };
    router
        .route("/metrics", move |_| {
            let body = metrics.encode();
            async move {
                text(
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                )
            }
        })
        .route("/healthz", alive)
        .route("/livez", alive)
        .route("/readyz", move |_| {
            let answer = if health.ready.load(Ordering::SeqCst) {
                text(200, "text/plain", "ok\n".to_owned())
            } else {
                let why = health.why.lock().unwrap_or_else(|p| p.into_inner());
                text(503, "text/plain", format!("not ready: {why}\n"))
            };
            async move { answer }
        })
}
