//! Watch-backed caches of the fleet kinds in one namespace.
//!
//! Each kind has a reflector: one paginated LIST (pages of [`PAGE_SIZE`]) when it starts or
//! its watch expires, then a WATCH that keeps the store current. Reads never touch the
//! server, and hand out the cached objects themselves (shared, not copied). What endstate never
//! reads is dropped on the way in: `managedFields` (the bulk of an object; only the conflict path
//! needs them, which reads them fresh), kubectl's last-applied annotation, the uid and the
//! creation time.
//!
//! Every event also lands in a [`Feed`]: the identities of the objects that changed, and
//! whether a watch had to list again (it expired: any object may have changed), which is what
//! wakes the reconcile loop for the objects it gates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_api::labels::CLUSTER_LABEL;
use endstate_api::{Cluster, ClusterPackageVersion, Machine, MachinePackageVersion, RolloutPolicy};
use endstate_core::{FleetObject, Kind, ObjectRef as Id};
use endstate_rollout::Changes;
use futures::StreamExt as _;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::kinds::FleetKind;

/// Objects per page of the initial list.
pub const PAGE_SIZE: u32 = 500;

/// What changed in the caches since the loop last looked.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    changes: Mutex<Changes>,
    notify: Notify,
    relists: AtomicU64,
}

impl Feed {
    fn push(&self, id: Id) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .push(id);
        self.notify.notify_one();
    }

    fn relisted(&self) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .relisted = true;
        self.relists.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// What changed, taken.
    pub(crate) fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once something changed.
    pub(crate) async fn changed(&self) {
        loop {
            let notified = self.notify.notified();
            {
                let changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
                if changes.relisted || !changes.ids.is_empty() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Watches that listed again after their first list.
    pub(crate) fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }
}

/// The annotation `kubectl apply` (client-side) keeps the whole object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what endstate never reads from a cached object: `managedFields` (most of an object's
/// bytes; the conflict path reads them fresh), kubectl's copy of the last applied object, and
/// the uid and creation time. A fleet's cache holds 100k of these.
pub(crate) fn trim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The cache of one kind.
#[derive(Debug)]
pub(crate) struct Cache<K: FleetKind> {
    store: Store<K>,
    task: JoinHandle<()>,
    last_error: Arc<Mutex<Option<String>>>,
    listed: Arc<std::sync::atomic::AtomicBool>,
}

impl<K: FleetKind> Cache<K> {
    fn start(
        client: &Client,
        namespace: &str,
        target: Option<&crate::Target>,
        feed: Arc<Feed>,
    ) -> Self {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        // In a business cluster, a package version is that cluster's copy (whoever wrote
        // it), and identities are given in the Fleet's namespace.
        let placed = target.filter(|_| K::KIND == Kind::MachinePackageVersion);
        let stamp = placed.map(|t| t.cluster.clone());
        let cluster = stamp.clone().unwrap_or_default();
        let (store, writer) = reflector::store();
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        let salt = format!("{namespace}/{}", K::kind(&()));
        let events = watcher(api, config)
            .backoff(crate::retry::watch_backoff(&salt))
            .modify(move |object: &mut K| {
                let meta = object.meta_mut();
                trim(meta);
                if let Some(cluster) = &stamp {
                    meta.labels
                        .get_or_insert_default()
                        .insert(CLUSTER_LABEL.to_owned(), cluster.clone());
                }
            })
            .reflect(writer);
        let namespace = target.map_or(namespace, |t| &t.fleet_namespace).to_owned();
        let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let synced = listed.clone();
        let task = tokio::spawn(events.for_each(move |event| {
            let id = |object: &K| {
                Id::new(
                    K::KIND,
                    &namespace,
                    object.meta().name.as_deref().unwrap_or_default(),
                )
                .in_cluster(&cluster)
            };
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    feed.push(id(&object));
                }
                Ok(watcher::Event::Init) if synced.load(Ordering::Relaxed) => {
                    tracing::info!(kind = %K::KIND, "watch expired; listing again");
                    feed.relisted();
                }
                Ok(watcher::Event::InitDone) => synced.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(kind = %K::KIND, error = %err, "watch failed; retrying");
                    *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
                }
            }
            futures::future::ready(())
        }));
        Cache {
            store,
            task,
            last_error,
            listed,
        }
    }

    /// Whether the kind has been listed once.
    fn synced(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    async fn wait_until_synced(&self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::CacheSync {
                kind: K::KIND,
                timeout,
                last_error: self
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            }),
        }
    }

    fn fleet_object(&self, namespace: &str, name: &str) -> Option<FleetObject> {
        let object = self.store.get(&ObjectRef::new(name).within(namespace))?;
        Some(K::share(object))
    }

    fn extend_into(&self, out: &mut Vec<FleetObject>) {
        out.extend(self.store.state().into_iter().map(K::share));
    }

    fn len(&self) -> usize {
        self.store.len()
    }
}

impl<K: FleetKind> Drop for Cache<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The caches of every fleet kind.
#[derive(Debug)]
pub(crate) struct Caches {
    namespace: String,
    feed: Arc<Feed>,
    package_versions: Cache<MachinePackageVersion>,
    machines: Cache<Machine>,
    /// The kinds that live beside the Fleet; a business cluster has none of them.
    meta: Option<MetaCaches>,
}

/// The caches of the kinds a business cluster does not hold.
#[derive(Debug)]
struct MetaCaches {
    cluster_package_versions: Cache<ClusterPackageVersion>,
    clusters: Cache<Cluster>,
    policies: Cache<RolloutPolicy>,
}

impl Caches {
    /// Starts every cache of the kinds the server holds for the Fleet (two in a business
    /// cluster, five otherwise); they list their kinds in the background.
    pub(crate) fn start(client: &Client, namespace: &str, target: Option<&crate::Target>) -> Self {
        let feed = Arc::new(Feed::default());
        let meta = target.is_none().then(|| MetaCaches {
            cluster_package_versions: Cache::start(client, namespace, None, feed.clone()),
            clusters: Cache::start(client, namespace, None, feed.clone()),
            policies: Cache::start(client, namespace, None, feed.clone()),
        });
        Caches {
            namespace: namespace.to_owned(),
            package_versions: Cache::start(client, namespace, target, feed.clone()),
            machines: Cache::start(client, namespace, target, feed.clone()),
            meta,
            feed,
        }
    }

    /// Waits until every cache has listed its kind once.
    pub(crate) async fn wait_until_synced(&self, timeout: Duration) -> Result<()> {
        self.package_versions.wait_until_synced(timeout).await?;
        self.machines.wait_until_synced(timeout).await?;
        if let Some(meta) = &self.meta {
            meta.cluster_package_versions
                .wait_until_synced(timeout)
                .await?;
            meta.clusters.wait_until_synced(timeout).await?;
            meta.policies.wait_until_synced(timeout).await?;
        }
        Ok(())
    }

    /// Whether every cache has listed its kind once.
    pub(crate) fn synced(&self) -> bool {
        self.package_versions.synced()
            && self.machines.synced()
            && self.meta.as_ref().is_none_or(|m| {
                m.cluster_package_versions.synced() && m.clusters.synced() && m.policies.synced()
            })
    }

    /// What changed since the loop last looked.
    pub(crate) fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Every cached object.
    pub(crate) fn snapshot(&self) -> Vec<FleetObject> {
        let mut out = Vec::with_capacity(self.len());
        self.package_versions.extend_into(&mut out);
        self.machines.extend_into(&mut out);
        if let Some(meta) = &self.meta {
            meta.cluster_package_versions.extend_into(&mut out);
            meta.clusters.extend_into(&mut out);
            meta.policies.extend_into(&mut out);
        }
        out
    }

    /// The cached object of this kind and name, if any.
    pub(crate) fn get(&self, kind: Kind, name: &str) -> Option<FleetObject> {
        let ns = &self.namespace;
        let meta = self.meta.as_ref();
        match kind {
            Kind::MachinePackageVersion => self.package_versions.fleet_object(ns, name),
            Kind::Machine => self.machines.fleet_object(ns, name),
            Kind::ClusterPackageVersion => meta?.cluster_package_versions.fleet_object(ns, name),
            Kind::Cluster => meta?.clusters.fleet_object(ns, name),
            Kind::RolloutPolicy => meta?.policies.fleet_object(ns, name),
        }
    }

    /// Objects cached, over all kinds.
    pub(crate) fn len(&self) -> usize {
        self.package_versions.len()
            + self.machines.len()
            + self.meta.as_ref().map_or(0, |m| {
                m.cluster_package_versions.len() + m.clusters.len() + m.policies.len()
            })
    }
}
