//! Package versions: immutable, named releases of a node component or a control plane.
//!
//! Upgrading means adding a new version and pointing objects at it, so every upgrade is a
//! change to Machines or Clusters that endstate can roll out in waves.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One version of a node component (kubelet, the container runtime, the OS image…).
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "fleet.endstate.dev",
    version = "v1alpha1",
    kind = "MachinePackageVersion",
    namespaced,
    shortname = "mpv",
    category = "endstate",
    derive = "PartialEq",
    printcolumn(name = "Package", type_ = "string", json_path = ".spec.packageName"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Risk", type_ = "string", json_path = ".spec.risk")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachinePackageVersionSpec {
    /// The component this version is of; a Machine lists it under this key in `spec.packages`.
    pub package_name: String,
    /// The component's own version string, e.g. `1.28.4`.
    pub version: String,
    /// Where the machine operator fetches the package from and how it checks it.
    pub install: InstallSource,
    /// Settings the machine operator writes for the component (flags, config keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    /// ConfigMaps (in the package's namespace) whose files are laid down with the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_maps: Option<Vec<String>>,
    /// `high` puts machines moving to this version into the high-risk budget classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

/// Where a package comes from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallSource {
    /// An rpm (or other artifact) URL the machine operator downloads.
    pub url: String,
    /// Hex SHA-256 of the artifact; the machine operator refuses a mismatch.
    pub sha256: String,
}

/// How risky it is to move a machine to a package version.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Restarts a component in place.
    #[default]
    Low,
    /// Drains or reinstalls: spends the high-risk budget classes.
    High,
}

/// One control-plane release: images and arguments of every control-plane component.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "fleet.endstate.dev",
    version = "v1alpha1",
    kind = "ClusterPackageVersion",
    namespaced,
    shortname = "cpv",
    category = "endstate",
    derive = "PartialEq",
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterPackageVersionSpec {
    /// The Kubernetes version this release runs, e.g. `1.28.4`.
    pub version: String,
    /// etcd.
    pub etcd: ComponentRelease,
    /// kube-apiserver.
    pub apiserver: ComponentRelease,
    /// kube-controller-manager.
    pub controller_manager: ComponentRelease,
    /// kube-scheduler.
    pub scheduler: ComponentRelease,
}

/// The image and arguments of one control-plane component.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentRelease {
    /// Container image reference, ideally pinned by digest.
    pub image: String,
    /// Extra command-line arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

impl MachinePackageVersionSpec {
    /// The risk, `low` when unset.
    pub fn risk(&self) -> Risk {
        self.risk.unwrap_or_default()
    }
}
