//! [`KubeLive`]: the rollout engine's [`Live`] on a real API server, for one namespace and
//! one `Fleet`.
//!
//! ```text
//!   snapshot / get ──▶ caches (reflectors) ⊕ own recent writes   no request
//!   apply  ──▶ ≤ max_in_flight SSA patches ─┐
//!   delete ──▶ ≤ max_in_flight DELETEs     ├─▶ rate-limited client ──▶ kube-apiserver
//!   load_status / save_status ──▶ Fleet ───┘
//! ```
//!
//! The caches lag the server by a watch event. So that the engine reads its own writes (a
//! gate must see the generation an apply produced), the response of each write is kept and
//! served until the cache holds the same or a newer `resourceVersion` of the object.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use endstate_api::{Fleet, FleetStatus};
use endstate_core::backoff::Backoff;
use endstate_core::ownership::{FleetId, handed_to};
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::{Applied, Changes, Live, LiveError};
use futures::StreamExt as _;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::apply;
use crate::cache::Caches;
use crate::error::{Error, Result};
use crate::kinds::{FleetKind, with_kind};
use crate::limiter::{Limits, RateLimitLayer, RateLimiter};
use crate::retry::{FleetName, Subject, WRITE_BACKOFF, classify};
use crate::status::merge_patch;

/// How long a write's response stands in for the cache at most; after that the cache, which
/// has seen every later event, is the truth (the object may have been deleted by someone).
const OWN_WRITE_TTL: Duration = Duration::from_secs(30);

/// What a [`KubeLive`] works on and how hard it may push.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The namespace of the fleet's objects and of its `Fleet`.
    pub namespace: String,
    /// The `Fleet`'s name; applied objects carry it in the ownership label.
    pub fleet: String,
    /// The client-side rate limit.
    pub limits: Limits,
    /// Writes in flight at once.
    pub max_in_flight: usize,
    /// Retries of one write on transient failures.
    pub retry: Backoff,
    /// How long the caches may take to list every kind at start-up.
    pub cache_sync_timeout: Duration,
    /// The lease this backend writes under, when it runs as one of several replicas: a
    /// conflict on the status makes it ask the server whether it still holds the lease
    /// before it saves again (a deposed leader must not overwrite its successor's status).
    /// The client must be fenced by the same lease ([`client_for`]).
    pub leadership: Option<crate::lease::Leadership>,
    /// When the backend writes a business cluster rather than the Fleet's own API server.
    pub target: Option<Target>,
}

/// A business cluster a backend writes a Fleet's Machines and package versions to, in
/// [`Settings::namespace`] there.
///
/// Such a backend caches only those two kinds. It takes the objects as the Fleet renders
/// them, in the Fleet's namespace of the meta-cluster, and writes them to its own namespace
/// with the Fleet's namespace in their ownership labels; the identities it reports (in
/// [`Changes`]) are in the Fleet's namespace too, and a package version's carries the
/// business cluster (its copy there, whoever wrote it, is labelled so in the cache). It keeps
/// no Fleet status: the meta-cluster does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The business cluster's name (its Cluster object's).
    pub cluster: String,
    /// The namespace of the Fleet in the meta-cluster.
    pub fleet_namespace: String,
}

impl Settings {
    /// Defaults for the fleet `fleet` in `namespace`: 200 QPS with a burst of 400, 32 writes in
    /// flight, 12 attempts per write.
    pub fn new(namespace: impl Into<String>, fleet: impl Into<String>) -> Self {
        Settings {
            namespace: namespace.into(),
            fleet: fleet.into(),
            limits: Limits::default(),
            max_in_flight: 32,
            retry: WRITE_BACKOFF,
            cache_sync_timeout: Duration::from_secs(120),
            leadership: None,
            target: None,
        }
    }
}

/// Counts of what a [`KubeLive`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Apply requests that succeeded.
    pub applied: u64,
    /// Applies retried with `force` to take back fields changed by an edit.
    pub forced: u64,
    /// Applies refused because another applier owns a field.
    pub conflicts: u64,
    /// Objects deleted.
    pub deleted: u64,
    /// Requests retried after a transient failure.
    pub retries: u64,
    /// Status saves.
    pub status_saves: u64,
    /// Watches that expired and listed again.
    pub relists: u64,
}

#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    forced: AtomicU64,
    conflicts: AtomicU64,
    deleted: AtomicU64,
    retries: AtomicU64,
    status_saves: AtomicU64,
}

/// A write not yet seen by the cache.
#[derive(Debug)]
struct OwnWrite {
    /// The object as the server returned it; `None` once deleted.
    object: Option<FleetObject>,
    resource_version: u64,
    at: Instant,
}

/// The live fleet on a Kubernetes API server.
pub struct KubeLive {
    client: Client,
    limiter: RateLimiter,
    settings: Settings,
    caches: Caches,
    own_writes: Mutex<HashMap<ObjectRef, OwnWrite>>,
    /// The Fleet, and the field manager of its writes.
    fleet: FleetId,
    field_manager: String,
    /// The `Fleet`'s status as last read or written, with its `resourceVersion`.
    status: tokio::sync::Mutex<Option<(String, Value)>>,
    counters: Counters,
}

/// A client whose every request goes through `limiter`, with kube's own retries off so that
/// the limiter sees every 429 and the backend decides what to retry.
pub fn rate_limited_client(config: kube::Config, limiter: &RateLimiter) -> Result<Client> {
    client_for(config, limiter, None)
}

/// A client like [`rate_limited_client`] whose mutating requests, with `leadership`, are
/// sent only while it holds ([`crate::FenceLayer`]).
pub fn client_for(
    mut config: kube::Config,
    limiter: &RateLimiter,
    leadership: Option<&crate::lease::Leadership>,
) -> Result<Client> {
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|err| Error::Client(Box::new(err)))?;
    let builder = builder.with_layer(&RateLimitLayer::new(limiter.clone()));
    Ok(match leadership {
        Some(leadership) => builder
            .with_layer(&crate::lease::FenceLayer::new(leadership.clone()))
            .build(),
        None => builder.build(),
    })
}

impl KubeLive {
    /// Connects with `config`, starts the caches and waits until they hold every object.
    pub async fn connect(config: kube::Config, settings: Settings) -> Result<Self> {
        let limiter = RateLimiter::new(settings.limits);
        let client = rate_limited_client(config, &limiter)?;
        Self::start(client, limiter, settings).await
    }

    /// Connects with `config` and starts the caches without waiting for them: until they have
    /// listed the fleet, [`Live::get`] reads each object from the server and [`Live::synced`]
    /// says `false` (a restarted controller re-gates what it had in flight meanwhile).
    pub async fn connect_lazily(config: kube::Config, settings: Settings) -> Result<Self> {
        let limiter = RateLimiter::new(settings.limits);
        let client = rate_limited_client(config, &limiter)?;
        Self::begin(client, limiter, settings)
    }

    /// Like [`KubeLive::connect_lazily`], on a client built by [`client_for`] with `limiter`
    /// (several backends may share one client and one limiter).
    pub fn start_lazily(client: Client, limiter: RateLimiter, settings: Settings) -> Result<Self> {
        Self::begin(client, limiter, settings)
    }

    /// Starts on a client built by [`rate_limited_client`] with `limiter`.
    pub async fn start(client: Client, limiter: RateLimiter, settings: Settings) -> Result<Self> {
        let live = Self::begin(client, limiter, settings)?;
        live.caches
            .wait_until_synced(live.settings.cache_sync_timeout)
            .await?;
        tracing::debug!(namespace = %live.settings.namespace, objects = live.caches.len(), "caches synced");
        Ok(live)
    }

    fn begin(client: Client, limiter: RateLimiter, settings: Settings) -> Result<Self> {
        if settings.max_in_flight == 0 {
            return Err(Error::Settings("max_in_flight must be at least 1".into()));
        }
        if settings.retry.attempts == Some(0) {
            return Err(Error::Settings("retry attempts must be at least 1".into()));
        }
        let caches = Caches::start(&client, &settings.namespace, settings.target.as_ref());
        // In a business cluster, the Fleet is the one of the meta-cluster's namespace.
        let fleet_namespace = settings
            .target
            .as_ref()
            .map_or(&settings.namespace, |t| &t.fleet_namespace);
        let fleet = FleetId::new(fleet_namespace, &settings.fleet);
        Ok(KubeLive {
            client,
            limiter,
            field_manager: fleet.field_manager(),
            fleet,
            settings,
            caches,
            own_writes: Mutex::default(),
            status: tokio::sync::Mutex::default(),
            counters: Counters::default(),
        })
    }

    /// Where this backend writes.
    fn scope(&self) -> apply::Scope<'_> {
        apply::Scope {
            namespace: &self.settings.namespace,
            fleet: &self.settings.fleet,
            target: self.settings.target.as_ref(),
        }
    }

    /// The refusal of a status read or write by a backend of a business cluster.
    fn no_status(&self) -> Result<(), LiveError> {
        match &self.settings.target {
            Some(target) => Err(LiveError::Fatal(format!(
                "business cluster {} keeps no Fleet status; the meta-cluster does",
                target.cluster
            ))),
            None => Ok(()),
        }
    }

    /// The client, rate-limited.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The rate limiter every request goes through.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counts of the writes so far.
    pub fn stats(&self) -> WriteStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WriteStats {
            applied: load(&self.counters.applied),
            forced: load(&self.counters.forced),
            conflicts: load(&self.counters.conflicts),
            deleted: load(&self.counters.deleted),
            retries: load(&self.counters.retries),
            status_saves: load(&self.counters.status_saves),
            relists: self.caches.feed().relists(),
        }
    }

    /// Whether the live object already holds every field an apply of `desired` would set, so
    /// that applying it would write nothing. Reads only the cache.
    pub fn is_current(&self, desired: &FleetObject) -> bool {
        let Ok(body) = apply::apply_body(desired, &self.scope()) else {
            return false;
        };
        let id = ObjectRef::new(desired.kind(), &self.settings.namespace, desired.name())
            .in_cluster(desired.cluster());
        let Some(live) = self.read(&id) else {
            return false;
        };
        serde_json::to_value(&live).is_ok_and(|live| apply::contains(&live, &body))
    }

    /// Objects in the caches (without this backend's not-yet-seen writes).
    pub fn cached_len(&self) -> usize {
        self.caches.len()
    }

    /// The object as the engine should see it: the cache, or this backend's own newer write.
    fn read(&self, id: &ObjectRef) -> Option<FleetObject> {
        let cached = self.caches.get(id.kind, &id.name);
        let mut own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(write) = own.get(id) else {
            return cached;
        };
        let cached_version = cached.as_ref().and_then(resource_version);
        let caught_up = match (&write.object, cached_version) {
            (Some(_), Some(cached)) => cached >= write.resource_version,
            (Some(_), None) => false,
            // A delete answers with the object's last version: only a newer one (recreated
            // since) replaces the deletion.
            (None, Some(cached)) => cached > write.resource_version,
            (None, None) => true,
        };
        if caught_up || write.at.elapsed() > OWN_WRITE_TTL {
            own.remove(id);
            cached
        } else {
            write.object.clone()
        }
    }

    /// Records a write the cache may not have seen yet. A deletion (`object: None`) whose
    /// last version is unknown hides every version known so far.
    fn remember(&self, id: ObjectRef, object: Option<FleetObject>, version: Option<u64>) {
        let mut own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        let resource_version = match (version, &object) {
            (Some(version), _) => version,
            (None, Some(_)) => return,
            (None, None) => {
                let cached = self.caches.get(id.kind, &id.name);
                let known = own.get(&id).map(|write| write.resource_version);
                known
                    .max(cached.as_ref().and_then(resource_version))
                    .unwrap_or(0)
            }
        };
        own.insert(
            id,
            OwnWrite {
                object,
                resource_version,
                at: Instant::now(),
            },
        );
    }

    async fn apply_one(&self, object: &FleetObject) -> Result<Applied, LiveError> {
        let body = apply::apply_body(object, &self.scope())?;
        let id = ObjectRef::new(object.kind(), &self.settings.namespace, object.name())
            .in_cluster(object.cluster());
        with_kind!(object.kind(), |K| self.apply_typed::<K>(&id, &body).await)
    }

    async fn apply_typed<K: FleetKind>(
        &self,
        id: &ObjectRef,
        body: &Value,
    ) -> Result<Applied, LiveError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let mut force = false;
        let mut attempt = 0;
        let mut moved = false;
        loop {
            let mut params = PatchParams::apply(&self.field_manager);
            params.force = force;
            let err = match api.patch(&id.name, &params, &Patch::Apply(body)).await {
                Ok(mut written) => {
                    self.counters.applied.fetch_add(1, Ordering::Relaxed);
                    if !moved && self.move_to_own_manager(&api, id, &written).await {
                        // It was still shared with the manager of older writes: apply once
                        // more as the Fleet's own, which removes what the commit stopped
                        // setting and the shared manager alone held.
                        moved = true;
                        continue;
                    }
                    crate::cache::trim(written.meta_mut());
                    let generation = written.meta().generation.unwrap_or_default();
                    let object = written.into_fleet();
                    let version = resource_version(&object);
                    self.remember(id.clone(), Some(object), version);
                    return Ok(Applied { generation });
                }
                Err(kube::Error::Api(status)) if status.code == 409 && !force => {
                    let contested = apply::contested(&status);
                    let live = self.read_managers(&api, id).await?;
                    let managed = live.meta().managed_fields.as_deref().unwrap_or_default();
                    let disagreements = apply::applied_by_others(managed, &contested);
                    if !contested.is_empty() && disagreements.is_empty() {
                        tracing::info!(object = %id, fields = ?contested, "taking back fields changed by an edit");
                        self.counters.forced.fetch_add(1, Ordering::Relaxed);
                        force = true;
                        continue;
                    }
                    if apply::only_legacy(&disagreements) && !moved {
                        // Its own earlier writes, under the manager all Fleets shared.
                        moved = true;
                        if self.move_to_own_manager(&api, id, &live).await {
                            continue;
                        }
                    }
                    if apply::only_fleets(&disagreements)
                        && handed_to(&live.clone().into_fleet(), &self.fleet)
                    {
                        tracing::info!(object = %id, fields = ?disagreements, "taking over an object handed over by another Fleet");
                        self.counters.forced.fetch_add(1, Ordering::Relaxed);
                        force = true;
                        continue;
                    }
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    let message = if disagreements.is_empty() {
                        status.message
                    } else {
                        apply::conflict_message(&disagreements)
                    };
                    return Err(LiveError::Conflict {
                        object: id.clone(),
                        message,
                    });
                }
                Err(err) => classify(err, id, "apply"),
            };
            attempt = self.backoff(err, attempt, id).await?;
        }
    }

    /// Reads the object fresh, with its field managers (the cache drops them).
    async fn read_managers<K: FleetKind>(
        &self,
        api: &Api<K>,
        id: &ObjectRef,
    ) -> Result<K, LiveError> {
        let mut attempt = 0;
        loop {
            match api.get(&id.name).await {
                Ok(live) => return Ok(live),
                Err(err) => {
                    let err = classify(err, id, "reading the field managers of");
                    attempt = self.backoff(err, attempt, id).await?;
                }
            }
        }
    }

    /// Merges what the manager all Fleets shared before holds of `live` into this Fleet's
    /// own manager, if it holds anything; whether it did. A failure is left for the next
    /// write to try again.
    async fn move_to_own_manager<K: FleetKind>(
        &self,
        api: &Api<K>,
        id: &ObjectRef,
        live: &K,
    ) -> bool {
        let meta = live.meta();
        let managed = meta.managed_fields.as_deref().unwrap_or_default();
        let Some(moved) = apply::absorb_legacy(managed, &self.field_manager) else {
            return false;
        };
        let patch = json!({"metadata": {
            "resourceVersion": meta.resource_version,
            "managedFields": moved,
        }});
        match api
            .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(object = %id, manager = %self.field_manager, "moved to the Fleet's own field manager");
                true
            }
            Err(err) => {
                tracing::debug!(object = %id, error = %err, "not moved to the Fleet's own field manager yet");
                false
            }
        }
    }

    /// Waits before retrying a transient failure, or gives the error back when it is not
    /// transient or the attempts are spent. Returns the next attempt number.
    async fn backoff(
        &self,
        err: LiveError,
        attempt: u32,
        id: &impl Subject,
    ) -> Result<u32, LiveError> {
        if !matches!(err, LiveError::Transient(_)) || self.settings.retry.gives_up(attempt + 1) {
            return Err(err);
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let delay = self.settings.retry.jittered(attempt, id.salt());
        tracing::debug!(object = %id, error = %err, ?delay, "retrying");
        tokio::time::sleep(delay).await;
        Ok(attempt + 1)
    }

    async fn delete_one(&self, id: &ObjectRef) -> Result<(), LiveError> {
        let id = apply::in_namespace(id, &self.scope())?;
        with_kind!(id.kind, |K| self.delete_typed::<K>(&id).await)
    }

    async fn delete_typed<K: FleetKind>(&self, id: &ObjectRef) -> Result<(), LiveError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let mut attempt = 0;
        loop {
            let err = match api.delete(&id.name, &DeleteParams::default()).await {
                Ok(outcome) => {
                    self.counters.deleted.fetch_add(1, Ordering::Relaxed);
                    let gone_at = outcome.left().and_then(|object| {
                        object
                            .meta()
                            .resource_version
                            .as_deref()
                            .and_then(|v| v.parse().ok())
                    });
                    self.remember(id.clone(), None, gone_at);
                    return Ok(());
                }
                Err(err) => match classify(err, id, "delete") {
                    LiveError::NotFound(_) => return Ok(()),
                    err => err,
                },
            };
            attempt = self.backoff(err, attempt, id).await?;
        }
    }

    fn fleet_id(&self) -> FleetName {
        FleetName(format!(
            "{}/{}",
            self.settings.namespace, self.settings.fleet
        ))
    }

    async fn get_typed<K: FleetKind>(
        &self,
        id: &ObjectRef,
    ) -> Result<Option<FleetObject>, LiveError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let mut attempt = 0;
        loop {
            let err = match api.get_opt(&id.name).await {
                Ok(object) => {
                    return Ok(object.map(|mut o| {
                        crate::cache::trim(o.meta_mut());
                        o.into_fleet()
                    }));
                }
                Err(err) => classify(err, id, "read"),
            };
            attempt = self.backoff(err, attempt, id).await?;
        }
    }

    async fn get_one_fresh(&self, id: &ObjectRef) -> Result<Option<FleetObject>, LiveError> {
        let id = apply::in_namespace(id, &self.scope())?;
        with_kind!(id.kind, |K| self.get_typed::<K>(&id).await)
    }

    async fn read_fleet(&self) -> Result<(String, Value), LiveError> {
        let api: Api<Fleet> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let id = self.fleet_id();
        let mut attempt = 0;
        loop {
            let err = match api.get(&self.settings.fleet).await {
                Ok(fleet) => {
                    let version = fleet.metadata.resource_version.clone().unwrap_or_default();
                    let status = match &fleet.status {
                        Some(status) => serde_json::to_value(status).map_err(|err| {
                            LiveError::Fatal(format!("cannot serialise the status of {id}: {err}"))
                        })?,
                        None => Value::Null,
                    };
                    return Ok((version, status));
                }
                Err(err) => classify(err, &id, "read"),
            };
            attempt = self.backoff(err, attempt, &id).await?;
        }
    }
}

impl std::fmt::Debug for KubeLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLive")
            .field("settings", &self.settings)
            .field("limiter", &self.limiter.stats())
            .field("cached", &self.caches.len())
            .field("writes", &self.stats())
            .finish_non_exhaustive()
    }
}

fn resource_version(object: &FleetObject) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

impl Live for KubeLive {
    async fn snapshot(&self) -> Result<Vec<FleetObject>, LiveError> {
        let mut objects = self.caches.snapshot();
        let own: Vec<ObjectRef> = {
            let own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
            own.keys().cloned().collect()
        };
        if own.is_empty() {
            return Ok(objects);
        }
        let mut seen = HashMap::with_capacity(own.len());
        for id in &own {
            seen.insert(id.clone(), self.read(id));
        }
        objects.retain_mut(|object| {
            let (kind, _, name, cluster) = object.key();
            let id = ObjectRef::new(kind, &self.settings.namespace, name).in_cluster(cluster);
            match seen.remove(&id) {
                None => true,
                Some(Some(newer)) => {
                    *object = newer;
                    true
                }
                Some(None) => false,
            }
        });
        // Own writes of objects the cache has not seen created yet.
        objects.extend(seen.into_values().flatten());
        Ok(objects)
    }

    async fn get(&self, ids: &[ObjectRef]) -> Result<Vec<Option<FleetObject>>, LiveError> {
        if !self.caches.synced() {
            return self.get_fresh(ids).await;
        }
        ids.iter()
            .map(|id| Ok(self.read(&apply::in_namespace(id, &self.scope())?)))
            .collect()
    }

    fn synced(&self) -> bool {
        self.caches.synced()
    }

    async fn wait_synced(&self) -> Result<(), LiveError> {
        self.caches
            .wait_until_synced(self.settings.cache_sync_timeout)
            .await
            .map_err(|err| LiveError::Fatal(err.to_string()))
    }

    async fn get_fresh(&self, ids: &[ObjectRef]) -> Result<Vec<Option<FleetObject>>, LiveError> {
        let reads: Vec<_> = ids.iter().map(|id| self.get_one_fresh(id)).collect();
        futures::stream::iter(reads)
            .buffered(self.settings.max_in_flight)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    async fn apply(&self, objects: &[FleetObject]) -> Vec<Result<Applied, LiveError>> {
        // Collected first: a stream over a closure would not be provably `Send` here.
        let writes: Vec<_> = objects
            .iter()
            .map(|object| self.apply_one(object))
            .collect();
        futures::stream::iter(writes)
            .buffered(self.settings.max_in_flight)
            .collect()
            .await
    }

    async fn delete(&self, ids: &[ObjectRef]) -> Vec<Result<(), LiveError>> {
        let deletes: Vec<_> = ids.iter().map(|id| self.delete_one(id)).collect();
        futures::stream::iter(deletes)
            .buffered(self.settings.max_in_flight)
            .collect()
            .await
    }

    fn changes(&self) -> Changes {
        self.caches.feed().take()
    }

    async fn changed(&self) {
        self.caches.feed().changed().await;
    }

    async fn load_status(&self) -> Result<Option<FleetStatus>, LiveError> {
        self.no_status()?;
        let (version, status) = self.read_fleet().await?;
        let decoded = if status.is_null() {
            None
        } else {
            Some(serde_json::from_value(status.clone()).map_err(|err| {
                LiveError::Fatal(format!(
                    "the status of {} does not decode: {err}",
                    self.fleet_id()
                ))
            })?)
        };
        *self.status.lock().await = Some((version, status));
        Ok(decoded)
    }

    async fn save_status(&self, status: &FleetStatus) -> Result<(), LiveError> {
        self.no_status()?;
        let id = self.fleet_id();
        let new = serde_json::to_value(status).map_err(|err| {
            LiveError::Fatal(format!("cannot serialise the status of {id}: {err}"))
        })?;
        let api: Api<Fleet> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        // Saves are serialised: each is computed against the one before.
        let mut known = self.status.lock().await;
        let mut attempt = 0;
        loop {
            let (version, old) = match known.take() {
                Some(known) => known,
                None => self.read_fleet().await?,
            };
            let Some(change) = merge_patch(&old, &new) else {
                *known = Some((version, old));
                return Ok(());
            };
            let patch = json!({"metadata": {"resourceVersion": version}, "status": change});
            let err = match api
                .patch_status(
                    &self.settings.fleet,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(fleet) => {
                    self.counters.status_saves.fetch_add(1, Ordering::Relaxed);
                    let version = fleet.metadata.resource_version.unwrap_or_default();
                    *known = Some((version, new));
                    return Ok(());
                }
                // The Fleet changed since `version`: recompute on a fresh read, unless what
                // changed it is a new leader.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    if let Some(leadership) = &self.settings.leadership
                        && !leadership.confirm().await
                    {
                        return Err(LiveError::Fenced(format!(
                            "save the status of {id}: it changed, and this process no longer holds the lease {}",
                            leadership.settings().name
                        )));
                    }
                    LiveError::Transient(format!("save the status of {id}: {}", status.message))
                }
                Err(err) => classify(err, &id, "save the status of"),
            };
            attempt = self.backoff(err, attempt, &id).await?;
        }
    }
}
