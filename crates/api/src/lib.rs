//! The `fleet.endstate.dev/v1alpha1` objects.
//!
//! ```text
//!                  ┌──────────────────────────┐
//!   Cluster ──────▶│ ClusterPackageVersion    │   immutable, referenced by name
//!     ▲            └──────────────────────────┘
//!     │ spec.cluster
//!   Machine ──────▶ MachinePackageVersion (one per component in spec.packages)
//!
//!   RolloutPolicy   in Git beside the objects it rolls out: waves, gates, breaker, budgets
//!   Fleet           not in Git: where the end state comes from, and endstate's own status
//! ```
//!
//! Every kind is namespaced: a namespace holds one fleet's objects, so several fleets (or
//! tenants) can share a meta-cluster the way Flux and Argo CD sources do.
//!
//! With the `testing` feature (enabled by other crates in `[dev-dependencies]` only), each
//! kind has a builder for test objects, the one place that knows how to make a valid one:
//! `Machine::test("m1").in_cluster("a").package("kubelet", "kubelet-1").build()`, likewise
//! `Cluster::test`, `MachinePackageVersion::test` and `ClusterPackageVersion::test`; see
//! the `testing` module.

// kube-derive takes one `printcolumn(...)` per column, which clippy reads as a repeat.
#![allow(clippy::duplicated_attributes)]

pub mod cluster;
pub mod crds;
pub mod duration;
pub mod fleet;
pub mod labels;
pub mod machine;
pub mod package;
pub mod packages;
pub mod policy;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cluster::{Cluster, ClusterMode, ClusterPhase, ClusterSpec, ClusterStatus};
pub use fleet::{Fleet, FleetSpec, FleetStatus};
pub use machine::{Machine, MachinePhase, MachineSpec, MachineStatus};
pub use package::{
    ClusterPackageVersion, ClusterPackageVersionSpec, MachinePackageVersion,
    MachinePackageVersionSpec, Risk,
};
pub use packages::Packages;
pub use policy::{RolloutPolicy, RolloutPolicySpec};

pub use k8s_openapi;
pub use kube;

/// The API group of every endstate kind.
pub const GROUP: &str = "fleet.endstate.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "fleet.endstate.dev/v1alpha1";

/// The kinds that a fleet repository may hold, in the order endstate rolls them out.
pub const REPO_KINDS: [&str; 5] = [
    "MachinePackageVersion",
    "ClusterPackageVersion",
    "Cluster",
    "Machine",
    "RolloutPolicy",
];

/// A condition as Kubernetes API conventions define it.
pub type Condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
/// Object metadata.
pub type ObjectMeta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
/// A count or a percentage, as `maxUnavailable` in a Deployment.
pub type IntOrString = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
