//! The live fleet, as the rollout engine sees it: one small trait that the `sim` backend (an
//! in-process fleet) and the `kube` backend (a real API server) both implement.
//!
//! Every method works on the objects of one namespace, the `Fleet`'s. Objects carry their
//! server metadata (`generation`, `resourceVersion`, labels) and their `status`, so health
//! gates read straight from what [`Live::get`] returns.

use std::future::Future;

use endstate_api::FleetStatus;
use endstate_api::fleet::TargetStatus;
use endstate_core::{FleetObject, ObjectRef};

/// Why a live operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// Someone else changed the object, or owns the fields we set.
    #[error("conflict on {object}: {message}")]
    Conflict {
        /// The object.
        object: ObjectRef,
        /// The server's explanation.
        message: String,
    },
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(ObjectRef),
    /// The Fleet (`namespace/name`) whose status the backend keeps does not exist.
    #[error("Fleet/{0} not found")]
    FleetNotFound(String),
    /// Worth retrying: throttling, a timeout, a server error.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Not worth retrying: a refused object, a missing CRD, no permission.
    #[error("{0}")]
    Fatal(String),
    /// Not sent: this process no longer holds the lease that allows it to write.
    #[error("not sent, the lease is lost: {0}")]
    Fenced(String),
    /// Not sent, or not answered: the business cluster the object lives in cannot be used
    /// now. The change is held, not failed: it spends no budget and counts no failure.
    #[error("business cluster {cluster} cannot be used ({reason}): {message}")]
    Unavailable {
        /// The business cluster.
        cluster: String,
        /// Why, as a condition reason (`TargetUnreachable`, …).
        reason: String,
        /// What is wrong, in words.
        message: String,
    },
}

impl LiveError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LiveError::Conflict { .. } | LiveError::Transient(_))
    }
}

/// What a successful apply produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// `metadata.generation` after the write: the generation gates wait for.
    pub generation: i64,
}

/// What changed in the live fleet since the last look.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The objects that changed (created, updated, status written, deleted), oldest first; an
    /// object may appear more than once.
    pub ids: Vec<ObjectRef>,
    /// The backend lost track of changes (a watch that expired and listed again): any object
    /// may have changed.
    pub relisted: bool,
}

/// The live state of a fleet.
///
/// Reads come from a watch-backed cache and are cheap; writes go to the server. The engine
/// calls these from one task, so implementations need no ordering guarantees beyond
/// read-your-writes for the objects they applied.
pub trait Live: Send + Sync {
    /// Every fleet object of the namespace, with metadata and status.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<FleetObject>, LiveError>> + Send;

    /// The objects with these identities, in the same order; `None` where one does not exist.
    fn get(
        &self,
        ids: &[ObjectRef],
    ) -> impl Future<Output = Result<Vec<Option<FleetObject>>, LiveError>> + Send;

    /// The objects with these identities as the server has them now, not as a cache last saw
    /// them: what a delete is decided on, just before it is sent. Backends without a cache read
    /// the same as [`Live::get`].
    fn get_fresh(
        &self,
        ids: &[ObjectRef],
    ) -> impl Future<Output = Result<Vec<Option<FleetObject>>, LiveError>> + Send {
        self.get(ids)
    }

    /// Applies the desired objects (server-side apply semantics: the fields the object sets
    /// are ours, nothing else is touched), each independently; one result per object, in order.
    fn apply(
        &self,
        objects: &[FleetObject],
    ) -> impl Future<Output = Vec<Result<Applied, LiveError>>> + Send;

    /// Deletes the objects, each independently; deleting what is already gone succeeds.
    fn delete(&self, ids: &[ObjectRef]) -> impl Future<Output = Vec<Result<(), LiveError>>> + Send;

    /// Whether reads come from a cache that holds the whole fleet. Until it does, `snapshot`
    /// is not the fleet, and `get` reads each object from the server.
    fn synced(&self) -> bool {
        true
    }

    /// Resolves once [`Live::synced`].
    fn wait_synced(&self) -> impl Future<Output = Result<(), LiveError>> + Send {
        std::future::ready(Ok(()))
    }

    /// What changed since the last call (watch events), taken.
    fn changes(&self) -> Changes;

    /// Resolves once [`Live::changes`] has something to tell (at once if it has already).
    fn changed(&self) -> impl Future<Output = ()> + Send;

    /// The persisted status of the fleet, `None` before the first save.
    fn load_status(&self) -> impl Future<Output = Result<Option<FleetStatus>, LiveError>> + Send;

    /// Persists the status of the fleet (the rollout cursor, breaker, quarantine, budgets).
    fn save_status(
        &self,
        status: &FleetStatus,
    ) -> impl Future<Output = Result<(), LiveError>> + Send;

    /// The business clusters the fleet's objects are written to, and why each that cannot be
    /// used cannot (none when everything lives beside the Fleet).
    fn targets(&self) -> Vec<TargetStatus> {
        Vec::new()
    }
}

/// A shared backend: the in-cluster controller keeps one per `Fleet` (its caches) across the
/// loops it runs on it, so that a spec change does not list the fleet again.
impl<L: Live> Live for std::sync::Arc<L> {
    fn snapshot(&self) -> impl Future<Output = Result<Vec<FleetObject>, LiveError>> + Send {
        (**self).snapshot()
    }
    fn get(
        &self,
        ids: &[ObjectRef],
    ) -> impl Future<Output = Result<Vec<Option<FleetObject>>, LiveError>> + Send {
        (**self).get(ids)
    }
    fn get_fresh(
        &self,
        ids: &[ObjectRef],
    ) -> impl Future<Output = Result<Vec<Option<FleetObject>>, LiveError>> + Send {
        (**self).get_fresh(ids)
    }
    fn apply(
        &self,
        objects: &[FleetObject],
    ) -> impl Future<Output = Vec<Result<Applied, LiveError>>> + Send {
        (**self).apply(objects)
    }
    fn delete(&self, ids: &[ObjectRef]) -> impl Future<Output = Vec<Result<(), LiveError>>> + Send {
        (**self).delete(ids)
    }
    fn synced(&self) -> bool {
        (**self).synced()
    }
    fn wait_synced(&self) -> impl Future<Output = Result<(), LiveError>> + Send {
        (**self).wait_synced()
    }
    fn changes(&self) -> Changes {
        (**self).changes()
    }
    fn changed(&self) -> impl Future<Output = ()> + Send {
        (**self).changed()
    }
    fn load_status(&self) -> impl Future<Output = Result<Option<FleetStatus>, LiveError>> + Send {
        (**self).load_status()
    }
    fn save_status(
        &self,
        status: &FleetStatus,
    ) -> impl Future<Output = Result<(), LiveError>> + Send {
        (**self).save_status(status)
    }
    fn targets(&self) -> Vec<TargetStatus> {
        (**self).targets()
    }
}
