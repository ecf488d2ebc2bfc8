//! Leader election on a `coordination.k8s.io/v1` Lease, and the fence that keeps a deposed
//! leader from writing.
//!
//! ```text
//!   standby ──every retry period──▶ GET Lease: held by another and renewed within the
//!      ▲                            lease duration (as this process observed it)? wait
//!      │                            else: take it (update with its resourceVersion)
//!      │ lost / released            ▼
//!   leader ──every retry period──▶ renew (update renewTime); writes allowed until the last
//!                                  successful renew's start + the renew deadline
//! ```
//!
//! The times are judged as client-go does: a candidate does not compare the holder's
//! `renewTime` with its own clock, it notes when it last saw the record change and waits a
//! whole lease duration from then, so clocks that disagree do not shorten the lease. The
//! leader stops writing at its renew deadline (10 s by default), well before a candidate may
//! take the lease (15 s after it last saw it renewed): a paused or partitioned leader finds its
//! writes fenced ([`FenceLayer`]) before anyone else starts writing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// How the election runs.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's namespace (the controller's own).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This process's identity: the pod name, or host and pid.
    pub identity: String,
    /// How long a candidate waits from the last renew it saw before it takes the lease.
    pub lease_duration: Duration,
    /// How long the leader keeps writing after the start of its last successful renew.
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate tries.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// The defaults of client-go's leader election: 15 s, 10 s, 2 s.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Refuses settings under which two leaders could write at once.
    pub fn check(&self) -> Result<(), UnsafeLease> {
        if self.identity.is_empty() {
            return Err(UnsafeLease::NoIdentity);
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(UnsafeLease::RenewDeadline {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(UnsafeLease::RetryPeriod {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// Lease settings under which two leaders could write at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeLease {
    /// No identity to hold the Lease by.
    #[error("the leader election identity is empty")]
    NoIdentity,
    /// A leader could still believe it holds the Lease after another took it.
    #[error(
        "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})"
    )]
    RenewDeadline {
        /// How long a leader keeps trying to renew.
        renew_deadline: Duration,
        /// How long a Lease holds.
        lease_duration: Duration,
    },
    /// One failed renewal would cost the Lease.
    #[error(
        "the retry period ({retry_period:?}) must be well under the renew deadline ({renew_deadline:?})"
    )]
    RetryPeriod {
        /// How often a renewal is tried.
        retry_period: Duration,
        /// How long a leader keeps trying to renew.
        renew_deadline: Duration,
    },
}

/// The record as last seen, and when this process saw it change.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(String, Option<MicroTime>, Option<String>)>,
    at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    settings: LeaseSettings,
    api: Api<Lease>,
    /// Writes are allowed until then.
    valid_until: Mutex<Option<Instant>>,
    observed: Mutex<Observed>,
    leading: watch::Sender<bool>,
}

/// This process's part in the election; cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<Inner>);

/// How [`Leadership::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop; the lease was released if it was held.
    Stopped,
    /// The lease could not be renewed within the renew deadline, or another took it.
    Lost,
}

impl Leadership {
    /// A candidate for the Lease `settings` names, talking through `client` (which must not
    /// be fenced itself).
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        let (leading, _) = watch::channel(false);
        Leadership(Arc::new(Inner {
            settings,
            api,
            valid_until: Mutex::new(None),
            observed: Mutex::default(),
            leading,
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.0.settings
    }

    /// Whether this process holds the lease and is within its renew deadline: writes are
    /// allowed.
    pub fn holds(&self) -> bool {
        self.0
            .valid_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Follows whether this process leads.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.0.leading.subscribe()
    }

    /// Asks the server whether this process still holds the lease (after a conflict, say),
    /// and fences at once when it does not.
    pub async fn confirm(&self) -> bool {
        if !self.holds() {
            return false;
        }
        let held = match self.0.api.get_opt(&self.0.settings.name).await {
            Ok(Some(lease)) => holder(&lease) == self.0.settings.identity,
            Ok(None) => false,
            // Cannot tell: the renew deadline decides.
            Err(_) => return self.holds(),
        };
        if !held {
            self.lose();
        }
        held && self.holds()
    }

    /// Campaigns until elected, then renews until `stop` resolves (releasing the lease) or the
    /// lease is lost.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> Ended {
        let settings = &self.0.settings;
        tokio::pin!(stop);
        // Campaign.
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(lease = %settings.name, error = %err, "cannot read or take the lease")
                }
            }
            tokio::select! {
                () = &mut stop => return Ended::Stopped,
                () = tokio::time::sleep(jittered(settings.retry_period)) => {}
            }
        }
        tracing::info!(lease = %settings.name, identity = %settings.identity, "elected leader");
        self.0.leading.send_replace(true);
        // Lead.
        loop {
            tokio::select! {
                () = &mut stop => {
                    self.release().await;
                    return Ended::Stopped;
                }
                () = tokio::time::sleep(settings.retry_period) => {}
            }
            let attempt =
                tokio::time::timeout(settings.retry_period, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %settings.name, "another process holds the lease");
                    self.lose();
                    return Ended::Lost;
                }
                Ok(Err(err)) => {
                    tracing::warn!(lease = %settings.name, error = %err, "cannot renew the lease")
                }
                Err(_) => tracing::warn!(lease = %settings.name, "renewing the lease timed out"),
            }
            if !self.holds() {
                tracing::warn!(lease = %settings.name, "the renew deadline passed");
                self.lose();
                return Ended::Lost;
            }
        }
    }

    fn lose(&self) {
        *self.0.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.0.leading.send_replace(false);
    }

    /// Gives the lease up (empty holder, a one-second duration), so that a standby takes over
    /// without waiting for it to expire. Writes are fenced first.
    pub async fn release(&self) {
        let was_leading = self.holds();
        self.lose();
        if !was_leading {
            return;
        }
        let name = &self.0.settings.name;
        let Ok(Some(mut lease)) = self.0.api.get_opt(name).await else {
            return;
        };
        if holder(&lease) != self.0.settings.identity {
            return;
        }
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now);
        match self
            .0
            .api
            .replace(name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %name, "released the lease"),
            Err(err) => tracing::warn!(lease = %name, error = %err, "cannot release the lease"),
        }
    }

    /// One election step: `true` when this process holds the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let settings = &self.0.settings;
        let started = Instant::now();
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.0.api.get_opt(&settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(settings.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.0.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.held(&created, started);
                    Ok(true)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let current = holder(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let seen_at = self.observe(&lease);
        let their_duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(duration)).unwrap_or(0),
        );
        if !current.is_empty()
            && current != settings.identity
            && seen_at + their_duration > Instant::now()
        {
            return Ok(false);
        }
        let ours = current == settings.identity;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(settings.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        match self
            .0
            .api
            .replace(&settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(renewed) => {
                self.held(&renewed, started);
                Ok(true)
            }
            // Someone else wrote it since the read: look again next time.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Notes a successful take or renew that started at `started`.
    fn held(&self, lease: &Lease, started: Instant) {
        self.observe(lease);
        *self.0.valid_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(started + self.0.settings.renew_deadline);
    }

    /// Records the lease's record; returns when this process first saw it as it is now.
    fn observe(&self, lease: &Lease) -> Instant {
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (
            spec.holder_identity.unwrap_or_default(),
            spec.renew_time,
            lease.metadata.resource_version.clone(),
        );
        let mut observed = self.0.observed.lock().unwrap_or_else(|p| p.into_inner());
        if observed.record.as_ref() != Some(&record) || observed.at.is_none() {
            observed.record = Some(record);
            observed.at = Some(Instant::now());
        }
        observed.at.unwrap_or_else(Instant::now)
    }
}

fn holder(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// Up to 20% later, so that candidates do not try in step.
fn jittered(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    period.mul_f64(1.0 + f64::from(nanos % 1000) / 5000.0)
}

/// The error a fenced request fails with, before it is sent.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this process does not hold the lease {0}")]
pub struct Fenced(pub String);

/// A layer that fails every mutating request (anything but GET and HEAD) while `leadership`
/// does not hold, before it is sent: a deposed leader's writes never reach the server, whatever
/// part of the process issues them. Reads (and so watches) pass, so a standby keeps its caches.
#[derive(Clone, Debug)]
pub struct FenceLayer {
    leadership: Leadership,
}

impl FenceLayer {
    /// A layer fenced by `leadership`.
    pub fn new(leadership: Leadership) -> Self {
        FenceLayer { leadership }
    }
}

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FencedService<S>;

    fn layer(&self, inner: S) -> FencedService<S> {
        FencedService {
            inner,
            leadership: self.leadership.clone(),
        }
    }
}

/// The service [`FenceLayer`] makes.
#[derive(Clone, Debug)]
pub struct FencedService<S> {
    inner: S,
    leadership: Leadership,
}

impl<S, B, RB> tower::Service<http::Request<B>> for FencedService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: From<Fenced> + Send + 'static,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mutating = !matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        if mutating && !self.leadership.holds() {
            let name = self.leadership.settings().name.clone();
            return Box::pin(std::future::ready(Err(S::Error::from(Fenced(name)))));
        }
        Box::pin(self.inner.call(request))
    }
}
