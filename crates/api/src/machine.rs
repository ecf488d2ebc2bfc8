//! `Machine`: one worker node and the packages it should run.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, Packages};

/// One worker node of a business cluster.
///
/// The machine operator installs `packages` on the host, reports what it runs in `status`,
/// and endstate treats the machine as healthy for a revision only when `observedGeneration`
/// has caught up, `versions` equals `packages`, and every readiness gate is `True`.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "fleet.endstate.dev",
    version = "v1alpha1",
    kind = "Machine",
    namespaced,
    status = "MachineStatus",
    shortname = "mach",
    category = "endstate",
    derive = "PartialEq",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "IDC", type_ = "string", json_path = ".spec.idc"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.ip"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSpec {
    /// The `Cluster` (same namespace) this machine belongs to.
    pub cluster: String,
    /// The node's primary IP address.
    pub ip: String,
    /// The node's host name.
    pub hostname: String,
    /// The failure domain (data centre) the machine is in; waves spread across it.
    pub idc: String,
    /// Component name → `MachinePackageVersion` name.
    pub packages: Packages,
    /// Condition types that must all be `True` before the machine counts as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_gates: Option<Vec<String>>,
    /// Cordon the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<bool>,
    /// Bumping it reinstalls the operating system: a high-risk operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_generation: Option<i64>,
}

/// What the machine operator reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the machine is in its life cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MachinePhase>,
    /// Component name → the `MachinePackageVersion` actually running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Packages>,
    /// The OS generation the host was last installed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_generation: Option<i64>,
    /// Whether the node accepts pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedulable: Option<bool>,
    /// Conditions, including those named by readiness gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// A human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A machine's life-cycle phase.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum MachinePhase {
    /// Not yet picked up by the machine operator.
    Pending,
    /// Installing or upgrading packages.
    Installing,
    /// Reinstalling the operating system.
    Reinstalling,
    /// Running what the spec asks for.
    Running,
    /// The operator gave up; `message` says why.
    Failed,
}

impl MachineSpec {
    /// The readiness gates, empty when unset.
    pub fn readiness_gates(&self) -> &[String] {
        self.readiness_gates.as_deref().unwrap_or_default()
    }
}
