//! A Fleet whose Machines live in their business clusters: one [`Live`] over the
//! meta-cluster's backend and one backend per business cluster.
//!
//! ```text
//!   engine ──Live──▶ Placed ─┬─ meta: KubeLive (the Fleet's namespace: Clusters, their
//!                            │        package versions, the policy, the Fleet's status)
//!                            └─ targets: business cluster → KubeLive (Target), built from
//!                                        the Secret <cluster><suffix>, or why not
//! ```
//!
//! Writes are routed by object: a Machine to the business cluster its `spec.cluster` names, a
//! package version's copy to the one its identity names, everything else to the meta-cluster.
//! A business cluster is connected when its Cluster is seen in the meta-cluster; one that
//! cannot be used (its Secret, its server, its credentials, its CRDs) is tried again every
//! [`RETRY`] and its writes are answered [`LiveError::Unavailable`] meanwhile: held by the
//! engine, never failed. A business cluster's writes are bounded in time ([`ANSWER`]), so a
//! frozen server holds its own Machines and no other's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_api::FleetStatus;
use endstate_api::fleet::TargetStatus;
use endstate_core::{FleetObject, Kind, ObjectRef};
use endstate_rollout::{Applied, Changes, Live, LiveError};
use futures::future::join_all;
use kube::Client;
use tokio::time::Instant;

use endstate_api::fleet::MachinesSpec;
use endstate_core::Invalid;
use endstate_core::syntax::{dns_label, dns_subdomain};

use crate::limiter::RateLimiter;
use crate::live::{KubeLive, Settings, Target, client_for};
use crate::target::{self, TargetProblem};

/// How long a business cluster that cannot be used waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// How long a business cluster may take to answer a batch of writes or reads, and to be
/// connected.
pub const ANSWER: Duration = Duration::from_secs(30);

/// Where a Fleet's Machines and their package versions are written, in business clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Their namespace in each business cluster.
    pub namespace: String,
    /// The kubeconfig Secret of business cluster `c` is `<c><suffix>`, in the Fleet's
    /// namespace.
    pub secret_suffix: String,
}

impl Placement {
    /// The placement a Fleet's `spec.machines` asks for, its defaults filled in (`None`: its
    /// Machines live beside it); what is wrong with it, naming the field.
    pub fn of(
        fleet_namespace: &str,
        spec: Option<&MachinesSpec>,
    ) -> Result<Option<Placement>, Invalid> {
        let Some(spec) = spec else {
            return Ok(None);
        };
        if spec.placement.unwrap_or_default() == endstate_api::fleet::Placement::Local {
            if spec.namespace.is_some() || spec.kubeconfig_secret_suffix.is_some() {
                return Err(Invalid(
                    "spec.machines.namespace and kubeconfigSecretSuffix are for placement: Cluster"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let namespace = spec
            .namespace
            .clone()
            .unwrap_or_else(|| fleet_namespace.to_owned());
        dns_label(&namespace)
            .map_err(|why| Invalid(format!("spec.machines.namespace {namespace:?} {why}")))?;
        let secret_suffix = spec
            .kubeconfig_secret_suffix
            .clone()
            .unwrap_or_else(|| "-kubeconfig".to_owned());
        dns_subdomain(&format!("c{secret_suffix}0")).map_err(|_| {
            Invalid(format!(
                "spec.machines.kubeconfigSecretSuffix {secret_suffix:?} does not make Secret names \
                 (lowercase letters, digits, '-' and '.')"
            ))
        })?;
        Ok(Some(Placement {
            namespace,
            secret_suffix,
        }))
    }
}

/// One business cluster: its backend, or why it has none.
enum Slot {
    Ready(Arc<KubeLive>),
    Unusable {
        problem: TargetProblem,
        retry_at: Instant,
    },
}

/// The live state of a Fleet spread over its business clusters.
pub struct Placed {
    meta: Arc<KubeLive>,
    meta_client: Client,
    /// The settings of the meta-cluster's backend: what each business cluster's starts from.
    settings: Settings,
    /// `None`: everything lives in the meta-cluster, and this is its backend.
    placement: Option<Placement>,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Machine name → the business cluster it was last written to or seen in.
    machines: Mutex<HashMap<String, String>>,
}

impl Placed {
    /// A Fleet placed by `placement`, over `meta` (its backend of the Fleet's namespace in the
    /// meta-cluster, whose client also reads the kubeconfig Secrets).
    pub fn new(meta: Arc<KubeLive>, placement: Option<Placement>) -> Self {
        Placed {
            meta_client: meta.client().clone(),
            settings: meta.settings().clone(),
            meta,
            placement,
            slots: Mutex::default(),
            machines: Mutex::default(),
        }
    }

    /// The business clusters and why each cannot be used, if it cannot.
    pub fn health(&self) -> Vec<(String, Option<TargetProblem>)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .map(|(cluster, slot)| {
                let problem = match slot {
                    Slot::Ready(_) => None,
                    Slot::Unusable { problem, .. } => Some(problem.clone()),
                };
                (cluster.clone(), problem)
            })
            .collect()
    }

    /// Connects the business clusters of the Clusters in `objects` that have no backend yet
    /// (or whose retry is due).
    async fn connect_new(&self, objects: &[FleetObject]) {
        if self.placement.is_none() {
            return;
        }
        let clusters = objects
            .iter()
            .filter(|o| o.kind() == Kind::Cluster)
            .map(|o| o.name().to_owned());
        self.connect_due(clusters).await;
    }

    /// Connects those of `clusters` that have no backend yet (or whose retry is due).
    async fn connect_due(&self, clusters: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let due: Vec<String> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            clusters
                .into_iter()
                .filter(|c| match slots.get(c) {
                    None => true,
                    Some(Slot::Ready(_)) => false,
                    Some(Slot::Unusable { retry_at, .. }) => *retry_at <= now,
                })
                .collect()
        };
        let connected = join_all(due.iter().map(|c| self.connect(c))).await;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (cluster, result) in due.into_iter().zip(connected) {
            let slot = match result {
                Ok(live) => {
                    tracing::info!(cluster, "business cluster connected");
                    Slot::Ready(Arc::new(live))
                }
                Err(problem) => {
                    tracing::warn!(cluster, %problem, "business cluster cannot be used");
                    Slot::Unusable {
                        problem,
                        retry_at: Instant::now() + RETRY,
                    }
                }
            };
            slots.insert(cluster, slot);
        }
    }

    /// A backend of business cluster `cluster`, from its Secret.
    async fn connect(&self, cluster: &str) -> Result<KubeLive, TargetProblem> {
        let Some(placement) = &self.placement else {
            return Err(TargetProblem::SecretInvalid(
                "the Fleet places no Machines in business clusters".into(),
            ));
        };
        let secret = format!("{cluster}{}", placement.secret_suffix);
        let (config, warnings) =
            target::config(&self.meta_client, &self.settings.namespace, &secret).await?;
        for warning in warnings {
            tracing::warn!(cluster, "{warning}");
        }
        let server = config.cluster_url.to_string();
        let probe = async {
            let client = kube::Client::try_from(config.clone())
                .map_err(|err| TargetProblem::SecretInvalid(format!("Secret {secret}: {err}")))?;
            target::probe(&client, &server).await
        };
        tokio::time::timeout(ANSWER, probe).await.map_err(|_| {
            TargetProblem::Unreachable(format!("{server}: no answer within {ANSWER:?}"))
        })??;
        let mut settings = self.settings.clone();
        settings.namespace = placement.namespace.clone();
        settings.cache_sync_timeout = ANSWER;
        settings.target = Some(Target {
            cluster: cluster.to_owned(),
            fleet_namespace: self.settings.namespace.clone(),
        });
        // Its own rate limiter; fenced by the Lease like the meta-cluster's writes.
        let limiter = RateLimiter::new(settings.limits);
        let client = client_for(config, &limiter, settings.leadership.as_ref())
            .map_err(|err| TargetProblem::SecretInvalid(format!("Secret {secret}: {err}")))?;
        KubeLive::start(client, limiter, settings)
            .await
            .map_err(|err| TargetProblem::Unreachable(format!("{server}: {err}")))
    }

    /// The business cluster an object or identity goes to (`None`: the meta-cluster).
    fn route_object(&self, object: &FleetObject) -> Option<String> {
        self.placement.as_ref()?;
        match object {
            FleetObject::Machine(m) => Some(m.spec.cluster.clone()),
            o if !o.cluster().is_empty() => Some(o.cluster().to_owned()),
            _ => None,
        }
    }

    fn route_id(&self, id: &ObjectRef) -> Option<Option<String>> {
        self.placement.as_ref()?;
        match id.kind {
            Kind::Machine => {
                let machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
                // Not known anywhere yet: nowhere to read it from.
                Some(machines.get(&id.name).cloned())
            }
            _ if !id.cluster.is_empty() => Some(Some(id.cluster.clone())),
            _ => None,
        }
    }

    /// Writes `batch` to business cluster `cluster`, each object within [`ANSWER`]: a write
    /// answered keeps its answer; once one is not, the business cluster is taken as
    /// unreachable and the writes not sent yet are not sent. Both are answered
    /// `Unavailable` (held); only the unanswered ones may have landed, and the next plan
    /// reads what did.
    async fn apply_each(
        &self,
        cluster: &str,
        live: &KubeLive,
        batch: &[FleetObject],
    ) -> Vec<Result<Applied, LiveError>> {
        use futures::StreamExt as _;
        let gave_up = std::sync::atomic::AtomicBool::new(false);
        let unanswered =
            TargetProblem::Unreachable(format!("a write not answered within {ANSWER:?}"));
        // Collected first: a stream over a closure would not be provably `Send` here.
        let writes: Vec<_> = batch
            .iter()
            .map(|object| {
                let (gave_up, unanswered) = (&gave_up, &unanswered);
                async move {
                    if gave_up.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err(unavailable(cluster, unanswered));
                    }
                    match tokio::time::timeout(ANSWER, live.apply(std::slice::from_ref(object)))
                        .await
                    {
                        Ok(mut answer) => answer
                            .pop()
                            .unwrap_or_else(|| Err(LiveError::Fatal("no answer".into()))),
                        Err(_) => {
                            gave_up.store(true, std::sync::atomic::Ordering::Relaxed);
                            Err(unavailable(cluster, unanswered))
                        }
                    }
                }
            })
            .collect();
        let results: Vec<Result<Applied, LiveError>> = futures::stream::iter(writes)
            .buffered(self.settings.max_in_flight.max(1))
            .collect()
            .await;
        if gave_up.into_inner() {
            tracing::warn!(cluster, problem = %unanswered, "business cluster cannot be used");
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.insert(
                cluster.to_owned(),
                Slot::Unusable {
                    problem: unanswered,
                    retry_at: Instant::now() + RETRY,
                },
            );
        }
        results
    }

    /// A business cluster's answers, where the server was not reached (retries spent) or
    /// refused the credentials: those are the business cluster's problem, not the object's,
    /// so they are held (`Unavailable`) and the business cluster is connected again later.
    fn unusable_if_unanswered<T>(
        &self,
        cluster: &str,
        results: Vec<Result<T, LiveError>>,
    ) -> Vec<Result<T, LiveError>> {
        let mut problem = None;
        let results = results
            .into_iter()
            .map(|result| {
                let found = match &result {
                    Err(LiveError::Transient(m)) => Some(TargetProblem::Unreachable(m.clone())),
                    Err(LiveError::Fatal(m)) if m.contains(" (401 ") || m.contains(" (403 ") => {
                        Some(TargetProblem::Unauthorized(m.clone()))
                    }
                    _ => None,
                };
                match found {
                    Some(p) => {
                        let err = unavailable(cluster, &p);
                        problem = Some(p);
                        Err(err)
                    }
                    None => result,
                }
            })
            .collect();
        if let Some(problem) = problem {
            tracing::warn!(cluster, %problem, "business cluster cannot be used");
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.insert(
                cluster.to_owned(),
                Slot::Unusable {
                    problem,
                    retry_at: Instant::now() + RETRY,
                },
            );
        }
        results
    }

    /// The positions of `ids` by where each lives (`None`: the meta-cluster); a Machine seen
    /// in no business cluster is in no group.
    fn group(&self, ids: &[ObjectRef]) -> BTreeMap<Option<String>, Vec<usize>> {
        let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            match self.route_id(id) {
                None => groups.entry(None).or_default().push(i),
                Some(Some(cluster)) => groups.entry(Some(cluster)).or_default().push(i),
                Some(None) => {}
            }
        }
        groups
    }

    /// The backend of `cluster`, or why it cannot be used.
    fn target(&self, cluster: &str) -> Result<Arc<KubeLive>, LiveError> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(cluster) {
            Some(Slot::Ready(live)) => Ok(live.clone()),
            Some(Slot::Unusable { problem, .. }) => Err(unavailable(cluster, problem)),
            None => Err(unavailable(
                cluster,
                &TargetProblem::Unreachable(format!(
                    "no Cluster {cluster} is live in the meta-cluster yet"
                )),
            )),
        }
    }

    fn ready(&self) -> Vec<(String, Arc<KubeLive>)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .filter_map(|(c, s)| match s {
                Slot::Ready(live) => Some((c.clone(), live.clone())),
                Slot::Unusable { .. } => None,
            })
            .collect()
    }

    fn remember(&self, machines: impl IntoIterator<Item = (String, String)>) {
        let mut index = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        index.extend(machines);
    }

    /// Reads `ids`, each from where it lives, with `read` (cached or fresh).
    async fn read<F, Fut>(
        &self,
        ids: &[ObjectRef],
        read: F,
    ) -> Result<Vec<Option<FleetObject>>, LiveError>
    where
        F: Fn(Arc<KubeLive>, Vec<ObjectRef>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Option<FleetObject>>, LiveError>>,
    {
        let mut out = vec![None; ids.len()];
        for (cluster, indices) in self.group(ids) {
            let backend = match &cluster {
                None => self.meta.clone(),
                Some(c) => match self.target(c) {
                    Ok(live) => live,
                    // Nothing can be read there now: as far as the loop can tell, absent.
                    Err(_) => continue,
                },
            };
            let wanted: Vec<ObjectRef> = indices.iter().map(|i| ids[*i].clone()).collect();
            let found = match &cluster {
                None => read(backend, wanted).await?,
                Some(c) => match tokio::time::timeout(ANSWER, read(backend, wanted)).await {
                    Ok(found) => found?,
                    Err(_) => {
                        tracing::warn!(cluster = c, "business cluster did not answer a read");
                        continue;
                    }
                },
            };
            for (i, object) in indices.into_iter().zip(found) {
                out[i] = object;
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for Placed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placed")
            .field("meta", &self.meta)
            .field("placement", &self.placement)
            .field("targets", &self.health())
            .finish_non_exhaustive()
    }
}

fn unavailable(cluster: &str, problem: &TargetProblem) -> LiveError {
    LiveError::Unavailable {
        cluster: cluster.to_owned(),
        reason: problem.reason().to_owned(),
        message: problem.message().to_owned(),
    }
}

impl Live for Placed {
    async fn snapshot(&self) -> Result<Vec<FleetObject>, LiveError> {
        let mut objects = self.meta.snapshot().await?;
        self.connect_new(&objects).await;
        for (cluster, live) in self.ready() {
            match tokio::time::timeout(ANSWER, live.snapshot()).await {
                Ok(Ok(theirs)) => {
                    self.remember(
                        theirs
                            .iter()
                            .filter(|o| o.kind() == Kind::Machine)
                            .map(|o| (o.name().to_owned(), cluster.clone())),
                    );
                    objects.extend(theirs);
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => tracing::warn!(cluster, "business cluster did not answer"),
            }
        }
        Ok(objects)
    }

    async fn get(&self, ids: &[ObjectRef]) -> Result<Vec<Option<FleetObject>>, LiveError> {
        self.read(ids, |live, ids| async move { live.get(&ids).await })
            .await
    }

    async fn get_fresh(&self, ids: &[ObjectRef]) -> Result<Vec<Option<FleetObject>>, LiveError> {
        self.read(ids, |live, ids| async move { live.get_fresh(&ids).await })
            .await
    }

    async fn apply(&self, objects: &[FleetObject]) -> Vec<Result<Applied, LiveError>> {
        let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for (i, object) in objects.iter().enumerate() {
            groups.entry(self.route_object(object)).or_default().push(i);
        }
        // A business cluster written to for the first time (its Cluster just created, say).
        self.connect_due(groups.keys().flatten().cloned()).await;
        let mut out: Vec<Option<Result<Applied, LiveError>>> = vec![None; objects.len()];
        let writes = groups.into_iter().map(|(cluster, indices)| async move {
            let batch: Vec<FleetObject> = indices.iter().map(|i| objects[*i].clone()).collect();
            let results = match &cluster {
                None => self.meta.apply(&batch).await,
                Some(c) => match self.target(c) {
                    Err(err) => vec![Err(err); batch.len()],
                    Ok(live) => {
                        let results = self.apply_each(c, &live, &batch).await;
                        let results = self.unusable_if_unanswered(c, results);
                        self.remember(
                            batch
                                .iter()
                                .zip(&results)
                                .filter(|(o, r)| o.kind() == Kind::Machine && r.is_ok())
                                .map(|(o, _)| (o.name().to_owned(), c.clone())),
                        );
                        results
                    }
                },
            };
            (indices, results)
        });
        for (indices, results) in join_all(writes).await {
            for (i, result) in indices.into_iter().zip(results) {
                out[i] = Some(result);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(LiveError::Fatal("no answer".into()))))
            .collect()
    }

    async fn delete(&self, ids: &[ObjectRef]) -> Vec<Result<(), LiveError>> {
        // What is seen nowhere has nothing to delete.
        let mut out: Vec<Result<(), LiveError>> = vec![Ok(()); ids.len()];
        for (cluster, indices) in self.group(ids) {
            let wanted: Vec<ObjectRef> = indices.iter().map(|i| ids[*i].clone()).collect();
            let results = match &cluster {
                None => self.meta.delete(&wanted).await,
                Some(c) => match self.target(c) {
                    Err(err) => vec![Err(err); wanted.len()],
                    Ok(live) => match tokio::time::timeout(ANSWER, live.delete(&wanted)).await {
                        Ok(results) => self.unusable_if_unanswered(c, results),
                        Err(_) => {
                            let problem = TargetProblem::Unreachable(format!(
                                "deletes not answered within {ANSWER:?}"
                            ));
                            vec![Err(unavailable(c, &problem)); wanted.len()]
                        }
                    },
                },
            };
            for (i, result) in indices.into_iter().zip(results) {
                out[i] = result;
            }
        }
        out
    }

    fn synced(&self) -> bool {
        self.meta.synced()
    }

    async fn wait_synced(&self) -> Result<(), LiveError> {
        self.meta.wait_synced().await
    }

    fn changes(&self) -> Changes {
        let mut changes = self.meta.changes();
        for (_, live) in self.ready() {
            let theirs = live.changes();
            changes.ids.extend(theirs.ids);
            changes.relisted |= theirs.relisted;
        }
        changes
    }

    async fn changed(&self) {
        let ready = self.ready();
        let mut waits: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> =
            vec![Box::pin(self.meta.changed())];
        for (_, live) in &ready {
            waits.push(Box::pin(live.changed()));
        }
        futures::future::select_all(waits).await;
    }

    async fn load_status(&self) -> Result<Option<FleetStatus>, LiveError> {
        self.meta.load_status().await
    }

    async fn save_status(&self, status: &FleetStatus) -> Result<(), LiveError> {
        self.meta.save_status(status).await
    }

    fn targets(&self) -> Vec<TargetStatus> {
        self.health()
            .into_iter()
            .map(|(cluster, problem)| TargetStatus {
                cluster,
                ready: problem.is_none(),
                reason: problem.as_ref().map(|p| p.reason().to_owned()),
                message: problem.map(|p| p.message().to_owned()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use endstate_api::fleet::{MachinesSpec, Placement as Where};

    use super::*;

    fn spec(placement: Where, namespace: Option<&str>, suffix: Option<&str>) -> MachinesSpec {
        MachinesSpec {
            placement: Some(placement),
            namespace: namespace.map(str::to_owned),
            kubeconfig_secret_suffix: suffix.map(str::to_owned),
        }
    }

    #[test]
    fn a_placement_takes_its_defaults_and_names_the_field_it_refuses() {
        assert_eq!(Placement::of("prod", None), Ok(None));
        assert_eq!(
            Placement::of("prod", Some(&spec(Where::Local, None, None))),
            Ok(None)
        );
        assert_eq!(
            Placement::of("prod", Some(&spec(Where::Cluster, None, None))),
            Ok(Some(Placement {
                namespace: "prod".into(),
                secret_suffix: "-kubeconfig".into(),
            }))
        );
        let refused = |s: MachinesSpec| Placement::of("prod", Some(&s)).unwrap_err().to_string();
        assert!(
            refused(spec(Where::Local, Some("m"), None)).contains("for placement: Cluster"),
            "a Local placement with business-cluster settings"
        );
        assert!(
            refused(spec(Where::Cluster, Some("Bad_NS"), None))
                .contains("spec.machines.namespace \"Bad_NS\"")
        );
        assert!(
            refused(spec(Where::Cluster, None, Some("/x")))
                .contains("kubeconfigSecretSuffix \"/x\"")
        );
    }
}
