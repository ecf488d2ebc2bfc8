//! Watch-backed caches of the fleet kinds in one namespace.
//!
//! Each kind has a reflector: one paginated LIST (pages of [`PAGE_SIZE`]) when it starts or
//! its watch expires, then a WATCH that keeps the store current. Reads never touch the
//! server. `managedFields` are dropped on the way in: they are the bulk of an object and only
//! the conflict path needs them, which reads them fresh.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_api::{Cluster, ClusterPackageVersion, Machine, MachinePackageVersion, RolloutPolicy};
use endstate_core::FleetObject;
use futures::StreamExt as _;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::kinds::FleetKind;

/// Objects per page of the initial list.
pub const PAGE_SIZE: u32 = 500;

/// The cache of one kind.
#[derive(Debug)]
pub(crate) struct Cache<K: FleetKind> {
    store: Store<K>,
    task: JoinHandle<()>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl<K: FleetKind> Cache<K> {
    fn start(client: &Client, namespace: &str) -> Self {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let (store, writer) = reflector::store();
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        let events = watcher(api, config)
            .default_backoff()
            .modify(|object: &mut K| object.meta_mut().managed_fields = None)
            .reflect(writer);
        let task = tokio::spawn(events.for_each(move |event| {
            if let Err(err) = event {
                tracing::warn!(kind = K::KIND, error = %err, "watch failed; retrying");
                *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
            }
            futures::future::ready(())
        }));
        Cache {
            store,
            task,
            last_error,
        }
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
        Some((*object).clone().into_fleet())
    }

    fn extend_into(&self, out: &mut Vec<FleetObject>) {
        out.extend(
            self.store
                .state()
                .into_iter()
                .map(|object| (*object).clone().into_fleet()),
        );
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
    package_versions: Cache<MachinePackageVersion>,
    cluster_package_versions: Cache<ClusterPackageVersion>,
    clusters: Cache<Cluster>,
    machines: Cache<Machine>,
    policies: Cache<RolloutPolicy>,
}

impl Caches {
    /// Starts every cache and waits until each has listed its kind once.
    pub(crate) async fn start(client: &Client, namespace: &str, timeout: Duration) -> Result<Self> {
        let caches = Caches {
            namespace: namespace.to_owned(),
            package_versions: Cache::start(client, namespace),
            cluster_package_versions: Cache::start(client, namespace),
            clusters: Cache::start(client, namespace),
            machines: Cache::start(client, namespace),
            policies: Cache::start(client, namespace),
        };
        caches.package_versions.wait_until_synced(timeout).await?;
        caches
            .cluster_package_versions
            .wait_until_synced(timeout)
            .await?;
        caches.clusters.wait_until_synced(timeout).await?;
        caches.machines.wait_until_synced(timeout).await?;
        caches.policies.wait_until_synced(timeout).await?;
        Ok(caches)
    }

    /// Every cached object.
    pub(crate) fn snapshot(&self) -> Vec<FleetObject> {
        let mut out = Vec::with_capacity(self.len());
        self.package_versions.extend_into(&mut out);
        self.cluster_package_versions.extend_into(&mut out);
        self.clusters.extend_into(&mut out);
        self.machines.extend_into(&mut out);
        self.policies.extend_into(&mut out);
        out
    }

    /// The cached object of this kind and name, if any (`None` too for a kind that is not a
    /// fleet kind).
    pub(crate) fn get(&self, kind: &str, name: &str) -> Option<FleetObject> {
        let ns = &self.namespace;
        match kind {
            MachinePackageVersion::KIND => self.package_versions.fleet_object(ns, name),
            ClusterPackageVersion::KIND => self.cluster_package_versions.fleet_object(ns, name),
            Cluster::KIND => self.clusters.fleet_object(ns, name),
            Machine::KIND => self.machines.fleet_object(ns, name),
            RolloutPolicy::KIND => self.policies.fleet_object(ns, name),
            _ => None,
        }
    }

    /// Objects cached, over all kinds.
    pub(crate) fn len(&self) -> usize {
        self.package_versions.len()
            + self.cluster_package_versions.len()
            + self.clusters.len()
            + self.machines.len()
            + self.policies.len()
    }
}
