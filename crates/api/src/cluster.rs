//! `Cluster`: one business cluster and the control-plane release it should run.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

/// One business cluster, managed by the cluster operator in the meta-cluster.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "fleet.endstate.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    category = "endstate",
    derive = "PartialEq",
    printcolumn(name = "Package", type_ = "string", json_path = ".spec.packageVersion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The `ClusterPackageVersion` (same namespace) the control plane runs.
    pub package_version: String,
    /// `standard` (masters on dedicated machines) or `minimal` (a small, single-master plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClusterMode>,
    /// Where the control plane runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masters: Option<MasterPlacement>,
    /// The etcd data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_volume: Option<EtcdVolume>,
    /// A paused cluster is left alone by the cluster operator and by endstate's waves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// The shape of a control plane.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Replicated masters across failure domains.
    #[default]
    Standard,
    /// One master, for small or edge clusters.
    Minimal,
}

/// Master placement.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MasterPlacement {
    /// Number of masters (odd, for etcd quorum).
    pub replicas: i32,
    /// Failure domains the masters are spread over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcs: Option<Vec<String>>,
    /// The meta-cluster namespace the control-plane pods run in, when hosted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosting_namespace: Option<String>,
}

/// The etcd data volume.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdVolume {
    /// A Kubernetes quantity, e.g. `50Gi`.
    pub size: String,
    /// The storage class; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// What the cluster operator reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the cluster is in its life cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// The `ClusterPackageVersion` the control plane actually runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Conditions (`Ready`, `EtcdHealthy`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// A human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A cluster's life-cycle phase.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Being created.
    Provisioning,
    /// Moving to a new package version.
    Upgrading,
    /// Serving at the desired version.
    Running,
    /// The operator gave up; `message` says why.
    Failed,
}
