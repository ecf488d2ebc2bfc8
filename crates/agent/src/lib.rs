//! `endstate sim-agent`: the simulated Machine and Cluster operators of `endstate-sim`, run
//! against a real API server.
//!
//! The agent watches the Machines and Clusters of one namespace. When an object's
//! `metadata.generation` moves past what the agent last worked on, it asks the operator logic
//! for the status transitions of that generation (the same seeded delays and fault rules the
//! in-process simulator uses) and writes each one to the status subresource when its time
//! comes. A newer generation cancels the transitions still pending for an older one. Status
//! writes do not bump the generation, so the agent's own writes never start new work.
//!
//! This is how end-to-end tests and staging demos see a fleet converge, or fail, on a real API
//! server without real hosts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use endstate_api::{Cluster, ClusterPackageVersion, Machine, MachinePackageVersion};
use endstate_core::backoff::Backoff;
use endstate_rollout::Time;
use endstate_sim::operator::{self, Context};
use endstate_sim::{Faults, OperatorConfig};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::task::JoinHandle;

/// How the agent behaves.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The namespace it watches.
    pub namespace: String,
    /// The seed of every delay and fault decision.
    pub seed: u64,
    /// The operators' delays.
    pub operators: OperatorConfig,
    /// Fault rules.
    pub faults: Faults,
}

impl AgentConfig {
    /// Operators that take `delay` for every step, with `faults`: for end-to-end tests that
    /// should not wait for realistic install times.
    pub fn fixed(namespace: impl Into<String>, delay: Duration, faults: Faults) -> Self {
        AgentConfig {
            namespace: namespace.into(),
            seed: 1,
            operators: OperatorConfig::fixed(delay),
            faults,
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch ended with an error it could not recover from.
    #[error("watching {kind} in namespace {namespace}: {source}")]
    Watch {
        /// The kind.
        kind: &'static str,
        /// The namespace.
        namespace: String,
        /// The cause.
        source: watcher::Error,
    },
    /// The server could not say which kinds it serves.
    #[error("asking the API server which fleet.endstate.dev kinds it serves: {0}")]
    Discovery(Box<kube::Error>),
    /// The server serves neither Machines nor Clusters.
    #[error(
        "the API server serves neither Machines nor Clusters of fleet.endstate.dev/v1alpha1: install the CRDs (deploy/ on a meta-cluster, deploy/target/ on a business cluster)"
    )]
    NothingServed,
}

/// A status write the server did not take is tried again after 100 ms, doubling, at most 2 s
/// between tries, until it lands or the object is gone.
const STATUS_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Work in progress per object (kind, name): the generation and the task writing its
/// transitions.
type Pending = HashMap<(&'static str, String), (i64, JoinHandle<()>)>;

/// A kind the simulated operators report on, and the package-version kind it refers to.
trait Operated:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The package versions its spec names.
    type Package: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    /// The kind, for keys and errors.
    const KIND: &'static str;
    /// The generation the status reports on.
    fn observed(&self) -> Option<i64>;
    /// The status transitions for the current generation, whose spec changed at `now`.
    fn transitions(
        &self,
        now: Time,
        cx: Context<'_>,
        exists: impl Fn(&str) -> bool,
    ) -> Vec<(Time, i64, serde_json::Value)>;
}

fn as_json<S: serde::Serialize>(t: endstate_sim::Transition<S>) -> (Time, i64, serde_json::Value) {
    (
        t.at,
        t.generation,
        serde_json::to_value(&t.status).unwrap_or_default(),
    )
}

impl Operated for Machine {
    type Package = MachinePackageVersion;
    const KIND: &'static str = "Machine";

    fn observed(&self) -> Option<i64> {
        self.status.as_ref().and_then(|s| s.observed_generation)
    }

    fn transitions(
        &self,
        now: Time,
        cx: Context<'_>,
        exists: impl Fn(&str) -> bool,
    ) -> Vec<(Time, i64, serde_json::Value)> {
        operator::machine_transitions(self, now, cx, exists)
            .into_iter()
            .map(as_json)
            .collect()
    }
}

impl Operated for Cluster {
    type Package = ClusterPackageVersion;
    const KIND: &'static str = "Cluster";

    fn observed(&self) -> Option<i64> {
        self.status.as_ref().and_then(|s| s.observed_generation)
    }

    fn transitions(
        &self,
        now: Time,
        cx: Context<'_>,
        exists: impl Fn(&str) -> bool,
    ) -> Vec<(Time, i64, serde_json::Value)> {
        operator::cluster_transitions(self, now, cx, exists)
            .into_iter()
            .map(as_json)
            .collect()
    }
}

/// Runs the agent until a watch fails.
pub async fn run(client: Client, config: AgentConfig) -> Result<(), Error> {
    let config = Arc::new(config);
    // A business cluster serves Machines only, a meta-cluster Clusters (and, with Machines
    // kept beside them, both): operate what the server serves.
    let served = endstate_kube::target::served(&client)
        .await
        .map_err(|source| Error::Discovery(Box::new(source)))?;
    let machines = served.contains("Machine") && served.contains("MachinePackageVersion");
    let clusters = served.contains("Cluster") && served.contains("ClusterPackageVersion");
    if !machines && !clusters {
        return Err(Error::NothingServed);
    }
    tracing::info!(namespace = %config.namespace, seed = config.seed, faults = config.faults.rules.len(), machines, clusters, "sim-agent watching");
    let pending = Arc::new(tokio::sync::Mutex::new(Pending::new()));
    let operate_machines = async {
        match machines {
            true => operate::<Machine>(client.clone(), config.clone(), pending.clone()).await,
            false => Ok(()),
        }
    };
    let operate_clusters = async {
        match clusters {
            true => operate::<Cluster>(client.clone(), config.clone(), pending.clone()).await,
            false => Ok(()),
        }
    };
    tokio::try_join!(operate_machines, operate_clusters)?;
    Ok(())
}

/// Watches the objects of kind `K` (and, in a cache, the package versions they name) and
/// writes each new generation's status transitions when they are due.
async fn operate<K: Operated>(
    client: Client,
    config: Arc<AgentConfig>,
    pending: Arc<tokio::sync::Mutex<Pending>>,
) -> Result<(), Error> {
    let ns = config.namespace.clone();
    let (packages, writer) = reflector::store::<K::Package>();
    let package_watch = reflector::reflector(
        writer,
        watcher(
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        ),
    )
    .backoff(endstate_kube::watch_backoff(&format!(
        "{ns}/{}-packages",
        K::KIND
    )))
    .touched_objects()
    .for_each(|_| async {});
    tokio::spawn(package_watch);
    let _ = packages.wait_until_ready().await;
    let package_api: Api<K::Package> = Api::namespaced(client.clone(), &ns);
    let api: Api<K> = Api::namespaced(client, &ns);
    let mut events = watcher(api.clone(), watcher::Config::default().page_size(500))
        .backoff(endstate_kube::watch_backoff(&format!("{ns}/{}", K::KIND)))
        .applied_objects()
        .boxed();
    // A watch error (the API server restarting, a watch expiring) is retried with backoff by
    // the watcher, which lists again: the operator logs it and goes on.
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(object) => object,
            Err(source) => {
                let err = Error::Watch {
                    kind: K::KIND,
                    namespace: ns.clone(),
                    source,
                };
                tracing::warn!(%err, "watch failed; retrying");
                continue;
            }
        };
        let generation = object.meta().generation.unwrap_or(1);
        let cx = Context {
            seed: config.seed,
            config: &config.operators,
            faults: &config.faults,
        };
        // The package versions' watch is a stream of its own and may lag the objects' (a
        // package applied a moment before the Machine that uses it): a name the cache does not
        // hold yet is read from the server before the object is failed for it, as an operator
        // that looks before it gives up would.
        let cached = |p: &str| {
            packages
                .state()
                .iter()
                .any(|o| o.meta().name.as_deref() == Some(p))
        };
        let missing = std::cell::RefCell::new(Vec::new());
        let _ = object.transitions(now(), cx, |p: &str| {
            let known = cached(p);
            if !known {
                missing.borrow_mut().push(p.to_owned());
            }
            known
        });
        let mut fetched = Vec::new();
        for name in missing.into_inner() {
            let found = package_api.get_opt(&name).await.ok().flatten().is_some();
            if found {
                fetched.push(name);
            }
        }
        let exists = |p: &str| cached(p) || fetched.iter().any(|f| f == p);
        let work = || object.transitions(now(), cx, exists);
        let key = (K::KIND, object.meta().name.clone().unwrap_or_default());
        schedule(&pending, key, generation, object.observed(), work, &api).await;
    }
    Ok(())
}

fn now() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64,
    )
}

/// Whether the operator already reported on this generation (after an agent restart, say).
fn settled(observed: Option<i64>, generation: i64) -> bool {
    observed.is_some_and(|o| o >= generation)
}

/// Starts writing the status transitions of `generation` unless that generation is already
/// being worked on or reported; a newer generation cancels the older one's pending writes.
async fn schedule<K: Operated>(
    pending: &tokio::sync::Mutex<Pending>,
    key: (&'static str, String),
    generation: i64,
    observed: Option<i64>,
    work: impl FnOnce() -> Vec<(Time, i64, serde_json::Value)>,
    api: &Api<K>,
) {
    let mut pending = pending.lock().await;
    if pending.get(&key).is_some_and(|(g, _)| *g >= generation) || settled(observed, generation) {
        return;
    }
    let transitions = work();
    let (api, name) = (api.clone(), key.1.clone());
    let task = tokio::spawn(async move {
        let mut transitions = transitions.into_iter().peekable();
        while let Some((at, generation, status)) = transitions.next() {
            sleep_until(at).await;
            // A transition already overtaken by the next one (a fast agent, or one that was
            // busy) is not written: an operator reports where it is, not every step it took.
            if transitions
                .peek()
                .is_some_and(|(next, _, _)| *next <= now())
            {
                continue;
            }
            let patch = json!({ "status": with_messages(status) });
            // An operator keeps reporting until the server takes it (an API server or etcd
            // restarting, say); a newer generation aborts this task, a deleted object ends it.
            let mut retry = 0;
            loop {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => break,
                    Err(kube::Error::Api(status)) if status.code == 404 => return,
                    Err(err) => {
                        tracing::warn!(object = %name, generation, %err, "writing the status failed; retrying");
                        tokio::time::sleep(STATUS_BACKOFF.delay(retry)).await;
                        retry = retry.saturating_add(1);
                    }
                }
            }
        }
    });
    if let Some((_, old)) = pending.insert(key, (generation, task)) {
        old.abort();
    }
}

/// Fills empty condition messages with the condition's reason: an API server rejects a
/// condition whose `message` it reads as missing.
fn with_messages(mut status: serde_json::Value) -> serde_json::Value {
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions {
            let empty = condition
                .get("message")
                .and_then(|m| m.as_str())
                .is_none_or(str::is_empty);
            if empty {
                let reason = condition
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default();
                let text = if reason.is_empty() {
                    "reported by sim-agent"
                } else {
                    reason
                };
                condition["message"] = json!(text);
            }
        }
    }
    status
}

async fn sleep_until(at: Time) {
    let wait = at.since(now());
    if wait > Duration::ZERO {
        tokio::time::sleep(wait).await;
    }
}
