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
    category = "fleet",
    derive = "PartialEq",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = ".status.lastAppliedCommit"
    ),
    printcolumn(name = "Good", type_ = "string", json_path = ".status.lastGoodCommit"),
    printcolumn(
        name = "Breaker",
        type_ = "string",
        json_path = ".status.breaker.state"
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
    /// The rollout engine's serialised state (opaque; versioned by the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_fields")]
    pub state: Option<serde_json::Value>,
}

/// The breaker's state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// `closed` or `open` (latched until reset).
    pub state: String,
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
