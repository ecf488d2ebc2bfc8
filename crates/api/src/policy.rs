//! `RolloutPolicy`: how a change reaches the fleet. It lives in Git beside the objects it rolls
//! out, so a policy change is reviewed like any other change.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::IntOrString;

/// Waves, gates, breaker, budgets and windows for one fleet repository overlay.
///
/// A rendered overlay holds at most one `RolloutPolicy`; without one, endstate uses the
/// defaults documented on each field.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "fleet.endstate.dev",
    version = "v1alpha1",
    kind = "RolloutPolicy",
    namespaced,
    shortname = "rp",
    category = "endstate",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicySpec {
    /// Wave sequence for Machines. Default: `1`, `5%`, `25%`, `100%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines: Option<WavePlan>,
    /// Wave sequence for Clusters. Default: `1`, `25%`, `100%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<WavePlan>,
    /// Health gates every wave must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Gates>,
    /// When the rollout stops and the fleet is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Breaker>,
    /// Fleet-wide limits per operation class, shared by every rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Vec<Budget>>,
    /// When waves may start. Outside every window the next wave holds. Unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<MaintenanceWindow>>,
    /// What a new commit does to a wave in flight: `finish` it (default) or `abort` it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_new_commit: Option<OnNewCommit>,
    /// How much one commit may delete. Default: a commit that deletes more than
    /// max(10%, 5) of a kind's live objects (fleet-wide, or of one Cluster's or one idc's
    /// Machines), or all of them, is refused before anything is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
}

/// The floor under deletes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prune {
    /// The largest share of a kind's live objects (in the fleet, a Cluster or an idc) one
    /// commit may delete, as a percent; at least 5 objects are always allowed. Default `10%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_ratio: Option<String>,
    /// Allow a commit to delete every live object of a kind, a Cluster or an idc, and lift
    /// the ratio. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
}

/// A sequence of waves for one kind of object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WavePlan {
    /// The waves, in order; the last one should reach `100%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<Wave>>,
    /// The label or spec field (`idc`, and for Machines `cluster`) each wave is drawn evenly
    /// across.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
    /// Most objects changed but not yet healthy at once: a count or a percent. Default `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Machines only: most Machines of one Cluster changed but not yet healthy at once, a
    /// count or a percent of the Cluster's Machines in the commit. Default: no limit beyond
    /// `maxUnavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable_per_cluster: Option<IntOrString>,
}

/// One wave.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wave {
    /// A name for status and logs; `wave-N` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The cumulative share of changed objects done by the end of this wave: a count or a
    /// percent (`1`, `5%`).
    pub size: IntOrString,
    /// How long the wave must stay healthy before the next one starts, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// Hold after this wave until a human approves (`endstate run --approve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
}

/// Health gates.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gates {
    /// How long an object may take to report healthy for its new revision. Default `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long one query of a metric gate may take; one that takes longer counts as no
    /// answer. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_timeout: Option<String>,
    /// Metric gates that must stay within bounds while a wave bakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<MetricGate>>,
}

/// A metric that must stay within bounds (Prometheus query API shape).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricGate {
    /// A name for status and breaker evidence.
    pub name: String,
    /// The base URL of a Prometheus-compatible query API: `http://` or `https://`.
    pub url: String,
    /// An instant query; every series it selects must be within bounds, and one that
    /// selects none is no data.
    pub query: String,
    /// Fail below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Fail above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// How often to sample while baking. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Extra request headers, e.g. `X-Scope-OrgID` for a multi-tenant query API. Credentials
    /// belong in the Secret of `secretRef`, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// A Secret in the Fleet's namespace with the query API's credentials: `token` (a bearer
    /// token) or `username` and `password` (basic auth), and `ca.crt` (PEM certificates to
    /// trust for an `https://` URL besides the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<crate::fleet::LocalObjectReference>,
}

/// Breaker thresholds. A threshold left unset is not checked; with nothing set, the breaker
/// trips at the first failure in the canary wave.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Breaker {
    /// Trip when a single wave has this many failed objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures_per_wave: Option<i32>,
    /// Trip when this share of a wave's objects failed, as a percent (`10%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio_per_wave: Option<String>,
    /// Trip when the rollout as a whole has this many failed objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<i32>,
    /// Trip when this share of the rollout's changed objects failed, as a percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<String>,
    /// Push a revert of the culprit commits when the breaker trips. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<bool>,
}

/// A named operation class and its limit per sliding window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// `machine-update`, `machine-delete`, `machine-reinstall` or `cluster-update`.
    pub class: String,
    /// Most operations of this class in any window.
    pub limit: i32,
    /// The sliding window, e.g. `1h`.
    pub window: String,
}

/// A recurring time span in which waves may start.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Weekdays (`Mon` … `Sun`); every day when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// Start, `HH:MM` in UTC.
    pub start: String,
    /// End, `HH:MM` in UTC; before `start` means the window crosses midnight.
    pub end: String,
}

/// What a new commit does to the wave in flight.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnNewCommit {
    /// Let the wave finish and pass its gate, then re-plan.
    #[default]
    Finish,
    /// Stop starting work in the wave at once and re-plan from live state.
    Abort,
}
