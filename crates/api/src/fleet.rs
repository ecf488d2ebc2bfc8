//! `Fleet`: endstate's own object. It is not in Git: it says where the end state comes from,
//! and its status is where endstate keeps everything it needs to resume after a restart.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

/// A fleet: a Git source rendered into the objects of this namespace.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "fleet.endstate.dev",
    version = "v1alpha1",
    kind = "Fleet",
    namespaced,
    status = "FleetStatus",
    category = "endstate",
    derive = "PartialEq",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.rollout.phase"),
    printcolumn(
        name = "Wave",
        type_ = "string",
        json_path = ".status.rollout.waveName"
    ),
    printcolumn(
        name = "Breaker",
        type_ = "string",
        json_path = ".status.breaker.state"
    ),
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = ".status.lastAppliedCommit",
        priority = 1
    ),
    printcolumn(
        name = "Good",
        type_ = "string",
        json_path = ".status.lastGoodCommit",
        priority = 1
    ),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSpec {
    /// Where the end state comes from.
    pub source: Source,
    /// Stop reconciling (nothing is fetched or applied) until unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Identity and signing of the revert commits endstate pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertConfig>,
    /// Push notifications: the controller's webhook receiver fetches this Fleet at once when
    /// a push to its branch arrives at `/hook/<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Where the Fleet's Machines and their package versions live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines: Option<MachinesSpec>,
}

/// Where a Fleet's Machines live.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachinesSpec {
    /// `Local` (the default): in the Fleet's namespace, beside its Clusters. `Cluster`: each
    /// Machine in the business cluster its `spec.cluster` names, with a copy of each package
    /// version it uses; the Clusters, their package versions and the policy stay here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// With `Cluster`: their namespace in each business cluster. Default: the Fleet's
    /// namespace's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// With `Cluster`: business cluster `c` is reached with the kubeconfig in the Secret
    /// `<c><suffix>` of the Fleet's namespace, key `value` (Cluster API's). Default
    /// `-kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_suffix: Option<String>,
}

/// Where Machines live.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum Placement {
    /// In the Fleet's namespace.
    #[default]
    Local,
    /// In the business cluster each names.
    Cluster,
}

/// How push notifications for a Fleet are authenticated.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// A Secret (same namespace) whose key `token` holds the shared secret: GitHub's and the
    /// generic HMAC key, GitLab's token.
    pub secret_ref: LocalObjectReference,
}

/// The annotations that ask a running controller to act, Flux's requested / last-handled
/// pattern: set one to a new value (a timestamp, say) and the controller acts once, then
/// records the value in the status field of the same name (`status.lastHandled…`).
pub mod requests {
    /// Fetch the branch now (`endstate reconcile`); handled → `status.lastHandledReconcileAt`.
    pub const RECONCILE: &str = "fleet.endstate.dev/reconcile-requested-at";
    /// Release the wave held for approval (`endstate approve`); handled →
    /// `status.lastHandledApproveAt`.
    pub const APPROVE: &str = "fleet.endstate.dev/approve-requested-at";
    /// With [`APPROVE`]: the wave the approval is for (its name or its 1-based number); an
    /// approval for another wave than the one that holds is refused.
    pub const APPROVE_WAVE: &str = "fleet.endstate.dev/approve-wave";
    /// Close the latched breaker (`endstate breaker reset`); handled →
    /// `status.lastHandledResetBreakerAt`.
    pub const RESET_BREAKER: &str = "fleet.endstate.dev/reset-breaker-requested-at";
}

/// A Git source.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// `https://`, `ssh://`, scp-style (`git@host:org/repo`) or `file://`.
    pub url: String,
    /// The branch to follow. Default `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The directory (a kustomization) to render, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A Secret (same namespace) with `identity` + `known_hosts`, or `username` + `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// How often to fetch, e.g. `1m`; jittered. Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Require HEAD to be signed by an allowed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<SignaturePolicy>,
    /// What to do when the branch no longer descends from the last applied commit:
    /// `refuse` (default) or `adopt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_history_rewrite: Option<String>,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// The object's name.
    pub name: String,
}

/// Commit signature policy.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignaturePolicy {
    /// `ssh` or `openpgp`.
    pub mode: String,
    /// A Secret whose keys each hold one allowed public key.
    pub secret_ref: LocalObjectReference,
}

/// How endstate writes revert commits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevertConfig {
    /// Author and committer name.
    pub author_name: String,
    /// Author and committer email.
    pub author_email: String,
    /// A Secret holding the key that signs reverts, so the signature policy accepts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<LocalObjectReference>,
    /// Push attempts before giving up with an alert. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_push_attempts: Option<i32>,
}

/// endstate's record of the fleet: enough to resume after a restart.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The newest commit whose changes were written to the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<String>,
    /// The newest commit whose rollout completed healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_commit: Option<String>,
    /// The rollout in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutCursor>,
    /// With `spec.machines.placement: Cluster`: each business cluster the Fleet writes to,
    /// and whether it can be used (at most 64, by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetStatus>>,
    /// The circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerStatus>,
    /// Commits that must never be applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Vec<QuarantinedCommit>>,
    /// Budget spending per operation class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Vec<BudgetUsage>>,
    /// Finished rollouts, newest first (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    /// The last `fleet.endstate.dev/reconcile-requested-at` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The last `fleet.endstate.dev/approve-requested-at` value acted on (or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_approve_at: Option<String>,
    /// The last `fleet.endstate.dev/reset-breaker-requested-at` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reset_breaker_at: Option<String>,
}

/// Where a rollout is.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCursor {
    /// The commit being rolled out.
    pub commit: String,
    /// The wave in flight (0-based, across the whole plan).
    pub wave: i32,
    /// The number of waves in the plan.
    pub waves: i32,
    /// The name of the wave in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_name: Option<String>,
    /// `Applying`, `Baking`, `Paused`, `WaitingForBudget`, `Restoring`, `Restored`,
    /// `Completed`, `Superseded`, `Idle`.
    pub phase: String,
    /// Objects of the wave in flight (written, not yet healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<i64>,
    /// Objects of the rollout that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// Why no work starts, when it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Every wave of the plan with its progress, in order (at most 64; the rest are counted
    /// in the last entry's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Vec<WaveProgress>>,
    /// The first objects in flight (at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_objects: Option<Vec<String>>,
    /// The first objects that failed, with why (at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_objects: Option<Vec<FailedObject>>,
    /// While a wave bakes, the last answers of its metric gates (at most 3 per gate, of the
    /// first 8 gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_samples: Option<Vec<GateSample>>,
    /// The rollout engine's serialised state (opaque; versioned by the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_fields")]
    pub state: Option<serde_json::Value>,
}

/// One answer of a metric gate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateSample {
    /// The gate's name.
    pub gate: String,
    /// When it answered (RFC 3339).
    pub at: String,
    /// What it answered: the value of each series, `no series`, or `no answer: …`.
    pub answer: String,
}

/// One wave of a rollout and how far it is.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveProgress {
    /// The wave's name.
    pub name: String,
    /// Changes in the wave.
    pub size: i64,
    /// Changes that settled healthy (estimated for a wave in flight after a restart).
    pub done: i64,
    /// Changes written and not yet healthy.
    pub in_flight: i64,
    /// Changes that failed.
    pub failed: i64,
    /// `Done`, `InFlight`, `Pending`.
    pub state: String,
}

/// An object that failed, and why.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedObject {
    /// `Machine/ns/name`, or `fleet` for a fleet-wide gate.
    pub object: String,
    /// Why.
    pub reason: String,
}

/// The breaker's state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// `closed` or `open` (latched until reset).
    #[schemars(with = "String")]
    pub state: BreakerState,
    /// When it tripped (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped_at: Option<String>,
    /// The commit whose rollout tripped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What crossed which threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// Whether the breaker lets rollouts through: `closed`, or `open` from its trip until an
/// operator resets it.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BreakerState {
    /// Rollouts go on.
    #[default]
    Closed,
    /// Tripped: nothing is rolled out until a reset.
    Open,
}

impl BreakerState {
    /// As the status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state as the status spells it (`"open"`), for a reader that holds the text.
impl PartialEq<&str> for BreakerState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A commit endstate will never apply again.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedCommit {
    /// The full commit id.
    pub commit: String,
    /// Why.
    pub reason: String,
    /// The revert commit endstate pushed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
}

/// A business cluster as the Fleet last saw it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// The business cluster (its Cluster's name).
    pub cluster: String,
    /// Whether its Machines can be written.
    pub ready: bool,
    /// Why not: `TargetUnreachable`, `TargetUnauthorized`, `TargetMissingCRDs`,
    /// `TargetSecretInvalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong, in words (at most 160 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Spending of one budget class inside its window.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetUsage {
    /// The operation class.
    pub class: String,
    /// Operations spent that still count in the window.
    pub spent: i64,
    /// The class's limit per window.
    pub limit: i64,
    /// The window, e.g. `1h`.
    pub window: String,
}

/// One finished rollout.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The commit.
    pub commit: String,
    /// `Succeeded`, `Reverted`, `Superseded`, `Failed`.
    pub outcome: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// Objects changed.
    pub changed: i32,
}

fn preserve_unknown_fields(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
