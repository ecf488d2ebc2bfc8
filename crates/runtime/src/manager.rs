//! The controller (`endstate controller`): the watch of every `Fleet` of the cluster (or of
//! one namespace), and a supervisor that keeps one reconcile loop per Fleet running on the
//! replica that holds the Lease.
//!
//! ```text
//!   watch Fleets ──▶ per Fleet: caches (KubeLive, on every replica: a standby is warm)
//!        │                      loop (Controller, on the leader only) ◀── Control
//!        │                        ▲ spec changes restart it; suspend, annotations, generation
//!        │                        │ are forwarded to it
//!   Lease ──▶ Leadership ──▶ fences every write (FenceLayer, Controller::set_fence)
//!   webhook /hook/<ns>/<name> ──▶ annotation on the Fleet (any replica) ──▶ the leader fetches
//!   /metrics /healthz /readyz
//! ```
//!
//! Every Fleet's loop shares one client, one connection pool and one rate limiter; the
//! limiter serves requests in the order they reserve a slot, and each loop has at most
//! `max_in_flight` writes reserved at once, so a small Fleet's request waits behind at most
//! that many of a large rollout's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use endstate_api::Fleet;
use endstate_api::fleet::{FleetSpec, requests};
use endstate_controller::{Approval, Control, Fence};
use endstate_core::backoff::Backoff;
use endstate_kube::placed::{Placed, Placement};
use endstate_kube::{FleetEvents, KubeLive, Leadership, RateLimiter};
use futures::StreamExt as _;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::fleet::Overrides;
use crate::http::Router;
use crate::settings::Settings;
use crate::telemetry::{FleetLabels, FleetReporter, Health, Metrics, WriteCounts};

/// How the controller ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Stopped on SIGTERM or SIGINT, the loops' state saved and the Lease released.
    Stopped,
    /// The Lease was lost: a fresh start joins as a standby.
    LostLease,
}

/// The namespace and name of a Fleet.
type Key = (String, String);

/// What every Fleet's loop shares.
struct Shared {
    /// Fenced by the Lease, rate-limited: every write of every loop goes through it.
    client: kube::Client,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    overrides: Overrides,
    max_in_flight: usize,
    limiter: RateLimiter,
    identity: String,
}

/// The Lease as a fence for the loops.
struct LeaseFence(Leadership);

impl Fence for LeaseFence {
    fn holds(&self) -> bool {
        self.0.holds()
    }
}

/// A running loop.
struct Running {
    control: Arc<Control>,
    handle: tokio::task::JoinHandle<()>,
    /// The spec it was built from (without `suspend`, which is forwarded).
    spec: FleetSpec,
    /// When it started.
    started: tokio::time::Instant,
}

/// A Fleet's loop that ended on an error starts again after 10 s, doubling while it keeps
/// ending within [`RESTART_HEALTHY`], at most 5 min apart.
const RESTART_BACKOFF: Backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));

/// A loop that ran this long before it ended starts again from the first delay.
const RESTART_HEALTHY: Duration = Duration::from_secs(600);

/// The delay before a loop that ended after running `ran` starts again, counting it among
/// the `restarts` in a row.
fn restart_delay(restarts: &mut u32, ran: Duration) -> Duration {
    if ran >= RESTART_HEALTHY {
        *restarts = 0;
    }
    let delay = RESTART_BACKOFF.delay(*restarts);
    *restarts = restarts.saturating_add(1);
    delay
}

/// One Fleet.
struct Slot {
    live: Arc<KubeLive>,
    running: Option<Running>,
    /// Request tokens handed to the running loop.
    forwarded: BTreeMap<&'static str, String>,
    writes: WriteCounts,
    /// When a loop that ended may be started again.
    retry_at: Option<tokio::time::Instant>,
    /// Restarts in a row of loops that ended early.
    restarts: u32,
}

/// Runs the controller with `settings` until SIGTERM, SIGINT or the loss of the Lease, on a
/// runtime of its own.
pub fn run(settings: &Settings) -> anyhow::Result<Ended> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Git fetches and renders block their thread; more threads than cores keep one Fleet's
        // fetch from stalling the others.
        .worker_threads(8)
        .enable_all()
        .build()?;
    runtime.block_on(controller(settings))
}

async fn controller(settings: &Settings) -> anyhow::Result<Ended> {
    let mut config = endstate_kube::config(settings.kubeconfig.as_deref()).await?;
    let lease = settings.lease.clone();
    let identity = lease.identity.clone();
    endstate_kube::set_user_agent(
        &mut config,
        &format!(
            "endstate-controller/{} ({identity})",
            env!("CARGO_PKG_VERSION")
        ),
    )?;
    let (lease_namespace, lease_name) = (lease.namespace.clone(), lease.name.clone());
    lease.check().map_err(anyhow::Error::msg)?;
    // The Lease and the webhook's requests have a client of their own: a renew must not queue
    // behind a large rollout's writes, and a standby may record a webhook.
    let plain = kube::Client::try_from(config.clone()).context("building the client")?;
    let leadership = Leadership::new(plain.clone(), lease);
    let limiter = RateLimiter::new(settings.limits);
    let client = endstate_kube::client_for(config, &limiter, Some(&leadership))?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    *health.why.lock().unwrap_or_else(|p| p.into_inner()) = "the Fleets are being listed".into();
    let bind = settings.metrics_listen;
    let telemetry = crate::telemetry::routes(Router::new(), metrics.clone(), health.clone())
        .serve(bind)
        .await
        .with_context(|| format!("cannot serve metrics on {bind}"))?;
    let addr = telemetry.local_addr();
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    eprintln!(
        "metrics on http://{addr}/metrics; identity {identity}, lease {lease_namespace}/{lease_name}"
    );

    let shared = Arc::new(Shared {
        client: client.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        overrides: Overrides {
            author_name: settings.author_name.clone(),
            author_email: settings.author_email.clone(),
            poll: settings.poll,
            state_dir: settings.state_dir.clone(),
            jitter: 0.1,
            ..Overrides::default()
        },
        max_in_flight: settings.max_in_flight,
        limiter,
        identity: identity.clone(),
    });

    let (store, mut fleets) = endstate_kube::watch_fleets(
        client.clone(),
        settings.namespace.as_deref(),
        settings.fleet_selector.as_deref(),
    );
    let _hooks = match settings.webhook_listen {
        Some(bind) => {
            let server = crate::hooks::fleets(Router::new(), store.clone(), plain.clone())
                .serve(bind)
                .await
                .with_context(|| format!("the webhook cannot listen on {bind}"))?;
            eprintln!(
                "webhook receiver on http://{}/hook/<namespace>/<fleet>",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };

    let (stop_lease, lease_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut leading = leadership.watch();
    let election = {
        let leadership = leadership.clone();
        tokio::spawn(async move {
            leadership
                .run(async {
                    let _ = lease_stopped.await;
                })
                .await
        })
    };

    let mut slots: BTreeMap<Key, Slot> = BTreeMap::new();
    let mut listed = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut was_leading = false;
    loop {
        tokio::select! {
            event = fleets.next() => match event {
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        listed = true;
                    }
                }
                Some(Err(err)) => tracing::warn!(error = %err, "watching Fleets"),
                None => anyhow::bail!("the watch of Fleets ended"),
            },
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the leader election ended");
                }
            }
            _ = tick.tick() => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let now_leading = *leading.borrow();
        metrics.leader.set(i64::from(now_leading));
        if was_leading && !now_leading {
            // Writes are fenced already; the loops' state is in the Fleets' status. A fresh
            // start joins as a standby with nothing in memory from the lost term.
            for slot in slots.values() {
                if let Some(running) = &slot.running {
                    running.control.stop();
                }
            }
            tracing::error!("lost the leader election Lease; exiting");
            eprintln!(
                "error: lost the leader election Lease; exiting so that a fresh start joins as a standby"
            );
            return Ok(Ended::LostLease);
        }
        was_leading = now_leading;
        sync(&shared, &store, &mut slots, now_leading);
        let unsynced: Vec<String> = slots
            .iter()
            .filter(|(_, s)| !endstate_rollout::Live::synced(&s.live))
            .map(|((ns, name), _)| format!("{ns}/{name}"))
            .collect();
        let ready = listed && unsynced.is_empty();
        *health.why.lock().unwrap_or_else(|p| p.into_inner()) = if listed {
            format!("the caches of {} are listing", unsynced.join(", "))
        } else {
            "the Fleets are being listed".to_owned()
        };
        health
            .ready
            .store(ready, std::sync::atomic::Ordering::SeqCst);
        metrics.fleets.set(slots.len() as i64);
        metrics.throttled.inner().store(
            shared.limiter.stats().pushbacks,
            std::sync::atomic::Ordering::Relaxed,
        );
        for ((namespace, fleet), slot) in &slots {
            let labels = FleetLabels {
                namespace: namespace.clone(),
                fleet: fleet.clone(),
            };
            slot.writes.update(&metrics, &labels, slot.live.stats());
        }
    }

    // SIGTERM: no new work; each loop finishes the write in flight and saves its state.
    eprintln!("stopping: finishing the writes in flight and saving state");
    for slot in slots.values() {
        if let Some(running) = &slot.running {
            running.control.stop();
        }
    }
    let handles: Vec<_> = slots
        .into_values()
        .filter_map(|s| s.running.map(|r| r.handle))
        .collect();
    let all = futures::future::join_all(handles);
    if tokio::time::timeout(settings.shutdown_timeout, all)
        .await
        .is_err()
    {
        eprintln!(
            "some loops did not stop within {}; their state is what they saved last",
            endstate_rollout::time::human(settings.shutdown_timeout)
        );
    }
    let _ = stop_lease.send(());
    let _ = election.await;
    eprintln!("stopped");
    Ok(Ended::Stopped)
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("installing a signal handler")
}

/// Brings the slots in line with the Fleets: caches for each, a loop for each on the leader,
/// the spec's changes and the annotations' requests handed on.
fn sync(
    shared: &Arc<Shared>,
    store: &Store<Fleet>,
    slots: &mut BTreeMap<Key, Slot>,
    leading: bool,
) {
    let fleets: BTreeMap<Key, Arc<Fleet>> = store
        .state()
        .into_iter()
        .filter_map(|f| {
            let key = (f.metadata.namespace.clone()?, f.metadata.name.clone()?);
            Some((key, f))
        })
        .collect();
    slots.retain(|key, slot| {
        let keep = fleets.contains_key(key);
        if !keep {
            tracing::info!(namespace = %key.0, fleet = %key.1, "Fleet deleted; its loop stops");
            if let Some(running) = &slot.running {
                running.control.stop();
            }
        }
        keep
    });
    for (key, fleet) in fleets {
        let slot = match slots.entry(key.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut settings = endstate_kube::Settings::new(key.0.clone(), key.1.clone());
                settings.max_in_flight = shared.max_in_flight;
                settings.leadership = Some(shared.leadership.clone());
                // What a business cluster's own limiter starts from (the meta-cluster's is
                // the shared one).
                settings.limits = shared.limiter.limits();
                match KubeLive::start_lazily(
                    shared.client.clone(),
                    shared.limiter.clone(),
                    settings,
                ) {
                    Ok(live) => e.insert(Slot {
                        live: Arc::new(live),
                        running: None,
                        forwarded: BTreeMap::new(),
                        writes: WriteCounts::default(),
                        retry_at: None,
                        restarts: 0,
                    }),
                    Err(err) => {
                        tracing::error!(namespace = %key.0, fleet = %key.1, error = %err, "cannot watch the Fleet's objects");
                        continue;
                    }
                }
            }
        };
        if !leading {
            continue;
        }
        let mut spec = fleet.spec.clone();
        spec.suspend = None;
        let restart = match &slot.running {
            None => true,
            Some(running) if running.spec != spec => {
                let source = |s: &FleetSpec| {
                    (
                        s.source.url.clone(),
                        s.source.branch.clone(),
                        s.source.path.clone(),
                    )
                };
                if source(&running.spec) != source(&spec) {
                    // Like a new commit: the rollout in flight ends as the policy says
                    // (onNewCommit), then a loop on the new source starts.
                    tracing::info!(namespace = %key.0, fleet = %key.1, "the Fleet's source changed; its loop ends its rollout, then restarts on the new source");
                    running.control.retire();
                } else {
                    tracing::info!(namespace = %key.0, fleet = %key.1, "the Fleet's spec changed; its loop restarts with it");
                    running.control.stop();
                }
                true
            }
            Some(running) if running.handle.is_finished() => {
                if slot.retry_at.is_none() {
                    let delay = restart_delay(&mut slot.restarts, running.started.elapsed());
                    tracing::info!(namespace = %key.0, fleet = %key.1, ?delay, "the Fleet's loop ended; it starts again after a delay");
                    slot.retry_at = Some(tokio::time::Instant::now() + delay);
                }
                slot.retry_at
                    .is_some_and(|due| tokio::time::Instant::now() >= due)
            }
            Some(_) => false,
        };
        if restart {
            slot.retry_at = None;
            slot.forwarded.clear();
            let control = Arc::new(Control::default());
            let previous = slot.running.take().map(|r| r.handle);
            let handle = tokio::spawn(run_fleet(
                shared.clone(),
                fleet.clone(),
                slot.live.clone(),
                control.clone(),
                previous,
            ));
            slot.running = Some(Running {
                control,
                handle,
                spec,
                started: tokio::time::Instant::now(),
            });
        }
        let Some(running) = &slot.running else {
            continue;
        };
        forward(&fleet, &running.control, &mut slot.forwarded);
    }
}

/// Hands the Fleet's standing state (generation, suspension) and its new requests to its loop.
fn forward(fleet: &Fleet, control: &Control, forwarded: &mut BTreeMap<&'static str, String>) {
    control.generation(fleet.metadata.generation.unwrap_or(0));
    control.suspend(fleet.spec.suspend.unwrap_or(false));
    let annotations = fleet.metadata.annotations.clone().unwrap_or_default();
    let status = fleet.status.clone().unwrap_or_default();
    let handled = [
        (requests::RECONCILE, status.last_handled_reconcile_at),
        (requests::APPROVE, status.last_handled_approve_at),
        (
            requests::RESET_BREAKER,
            status.last_handled_reset_breaker_at,
        ),
    ];
    for (annotation, done) in handled {
        let Some(token) = annotations.get(annotation) else {
            continue;
        };
        if done.as_ref() == Some(token) || forwarded.get(annotation) == Some(token) {
            continue;
        }
        forwarded.insert(annotation, token.clone());
        match annotation {
            requests::RECONCILE => control.reconcile(token.clone()),
            requests::RESET_BREAKER => control.reset_breaker(token.clone()),
            _ => control.approve(Approval {
                token: token.clone(),
                wave: annotations.get(requests::APPROVE_WAVE).cloned(),
            }),
        }
    }
}

/// One Fleet's loop, after `previous` (the loop of its former spec) has stopped.
async fn run_fleet(
    shared: Arc<Shared>,
    fleet: Arc<Fleet>,
    live: Arc<KubeLive>,
    control: Arc<Control>,
    previous: Option<tokio::task::JoinHandle<()>>,
) {
    let namespace = fleet.metadata.namespace.clone().unwrap_or_default();
    let name = fleet.metadata.name.clone().unwrap_or_default();
    // The loop's own lines carry the fleet in their span; these say it themselves.
    let (ns, n) = (namespace.as_str(), name.as_str());
    {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let labels = FleetLabels {
            namespace: namespace.clone(),
            fleet: name.clone(),
        };
        let events = FleetEvents::new(shared.client.clone(), &shared.identity, &fleet);
        let reporter = FleetReporter::new(labels, shared.metrics.clone(), events.clone());
        let mut overrides = shared.overrides.clone();
        overrides.state_dir = overrides.state_dir.join(&namespace).join(&name);
        let built = async {
            // Where its Machines live: beside it, or in their business clusters.
            let placement = Placement::of(&namespace, fleet.spec.machines.as_ref())?;
            let live = Arc::new(Placed::new(live, placement));
            crate::fleet::build(&shared.client, &fleet, live, &overrides, Box::new(reporter)).await
        };
        let mut controller = match built.await {
            Ok(controller) => controller,
            Err(err) => {
                let why = format!("{err:#}");
                tracing::error!(
                    namespace = ns,
                    fleet = n,
                    error = %why,
                    "cannot start the Fleet's loop; trying again in 10s"
                );
                // Said on the Fleet too (`kubectl describe fleet`): a Secret it names is
                // missing, say.
                let published = events.publish(true, "InvalidSpec", "Start", &why).await;
                if let Err(err) = published {
                    tracing::warn!(error = %err, "cannot publish an Event");
                }
                return;
            }
        };
        controller.set_control(control);
        controller.set_fence(Arc::new(LeaseFence(shared.leadership.clone())));
        tracing::info!(namespace = ns, fleet = n, "reconciling");
        let outcome = match controller.resume().await {
            Ok(()) => controller.run().await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => tracing::info!(namespace = ns, fleet = n, "stopped; state saved"),
            Err(err) if err.is_fenced() => {
                tracing::warn!(
                    namespace = ns,
                    fleet = n,
                    "stopped: not the leader any more"
                )
            }
            Err(err) => {
                tracing::error!(namespace = ns, fleet = n, error = %err, "the Fleet's loop failed; trying again in 10s")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_keeps_ending_waits_longer_and_a_healthy_run_starts_again_from_ten_seconds() {
        let mut restarts = 0;
        let early = Duration::from_secs(5);
        let delays: Vec<u64> = (0..7)
            .map(|_| restart_delay(&mut restarts, early).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            restart_delay(&mut restarts, RESTART_HEALTHY),
            Duration::from_secs(10)
        );
        assert_eq!(restart_delay(&mut restarts, early), Duration::from_secs(20));
    }
}
