//! Builders for test objects: the one place that knows how to make a valid `Machine`,
//! `Cluster`, `MachinePackageVersion` or `ClusterPackageVersion` for a test.
//!
//! Compiled only with the `testing` feature, which other crates enable in their
//! `[dev-dependencies]`, so no production build carries it.
//!
//! ```
//! # use endstate_api::Machine;
//! let m = Machine::test("m1")
//!     .in_cluster("a")
//!     .idc("hz-a")
//!     .package("kubelet", "kubelet-1.28.4")
//!     .build();
//! assert_eq!(m.spec.packages["kubelet"], "kubelet-1.28.4");
//! ```
//!
//! Every field a test does not set gets a plain default (named below on each builder); a test
//! that asserts on a field sets it, so a default never decides an assertion.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cluster::MasterPlacement;
use crate::package::{ComponentRelease, InstallSource};
use crate::{
    API_VERSION, Cluster, ClusterPackageVersion, ClusterPackageVersionSpec, ClusterSpec, Machine,
    MachinePackageVersion, MachinePackageVersionSpec, MachineSpec, Packages, Risk,
};

fn label(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
}

impl Machine {
    /// A test Machine named `name`: in cluster `c`, idc `idc-a`, at `10.0.0.1`, with host name
    /// `name`, no packages, no namespace, no labels, no status.
    pub fn test(name: &str) -> MachineBuilder {
        MachineBuilder(Machine::new(
            name,
            MachineSpec {
                cluster: "c".into(),
                ip: "10.0.0.1".into(),
                hostname: name.into(),
                idc: "idc-a".into(),
                packages: Packages::new(),
                readiness_gates: None,
                unschedulable: None,
                os_generation: None,
            },
        ))
    }
}

/// A test Machine under construction; see [`Machine::test`].
#[derive(Clone, Debug)]
pub struct MachineBuilder(Machine);

impl MachineBuilder {
    /// `spec.cluster`.
    pub fn in_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.0.spec.cluster = cluster.into();
        self
    }

    /// `spec.idc`.
    pub fn idc(mut self, idc: impl Into<String>) -> Self {
        self.0.spec.idc = idc.into();
        self
    }

    /// `spec.ip`.
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.0.spec.ip = ip.into();
        self
    }

    /// `spec.hostname`.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.0.spec.hostname = hostname.into();
        self
    }

    /// Runs `version` (a `MachinePackageVersion` name) as `component`.
    pub fn package(mut self, component: &str, version: &str) -> Self {
        self.0
            .spec
            .packages
            .insert(component.to_owned(), version.to_owned());
        self
    }

    /// Adds a readiness gate.
    pub fn readiness_gate(mut self, condition: &str) -> Self {
        self.0
            .spec
            .readiness_gates
            .get_or_insert_with(Vec::new)
            .push(condition.to_owned());
        self
    }

    /// `spec.osGeneration`.
    pub fn os_generation(mut self, generation: i64) -> Self {
        self.0.spec.os_generation = Some(generation);
        self
    }

    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        label(&mut self.0.metadata, key, value);
        self
    }

    /// The Machine.
    pub fn build(self) -> Machine {
        self.0
    }

    /// The Machine as one YAML document (no `---` separator), written by hand in a fixed
    /// layout, `metadata` then `spec` with the fields in declaration order, so that tests
    /// which write repositories get the same text every time. Values are written unquoted:
    /// give it plain scalars.
    pub fn yaml(&self) -> String {
        let (meta, spec) = (&self.0.metadata, &self.0.spec);
        let mut out = format!("apiVersion: {API_VERSION}\nkind: Machine\nmetadata:\n");
        let _ = writeln!(out, "  name: {}", meta.name.as_deref().unwrap_or_default());
        if let Some(namespace) = &meta.namespace {
            let _ = writeln!(out, "  namespace: {namespace}");
        }
        if let Some(labels) = &meta.labels {
            out.push_str("  labels:\n");
            for (key, value) in labels {
                let _ = writeln!(out, "    {key}: {value}");
            }
        }
        let _ = write!(
            out,
            "spec:\n  cluster: {}\n  ip: {}\n  hostname: {}\n  idc: {}\n",
            spec.cluster, spec.ip, spec.hostname, spec.idc
        );
        if spec.packages.is_empty() {
            out.push_str("  packages: {}\n");
        } else {
            out.push_str("  packages:\n");
            for (component, version) in &spec.packages {
                let _ = writeln!(out, "    {component}: {version}");
            }
        }
        if let Some(gates) = &spec.readiness_gates {
            out.push_str("  readinessGates:\n");
            for gate in gates {
                let _ = writeln!(out, "  - {gate}");
            }
        }
        if let Some(unschedulable) = spec.unschedulable {
            let _ = writeln!(out, "  unschedulable: {unschedulable}");
        }
        if let Some(generation) = spec.os_generation {
            let _ = writeln!(out, "  osGeneration: {generation}");
        }
        out
    }
}

impl Cluster {
    /// A test Cluster named `name`, running the `ClusterPackageVersion` `k8s`, with no master
    /// placement, no namespace, no labels, no status.
    pub fn test(name: &str) -> ClusterBuilder {
        ClusterBuilder(Cluster::new(
            name,
            ClusterSpec {
                package_version: "k8s".into(),
                mode: None,
                masters: None,
                etcd_volume: None,
                paused: None,
            },
        ))
    }
}

/// A test Cluster under construction; see [`Cluster::test`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder(Cluster);

impl ClusterBuilder {
    /// `spec.packageVersion`.
    pub fn package_version(mut self, version: impl Into<String>) -> Self {
        self.0.spec.package_version = version.into();
        self
    }

    /// `replicas` masters spread over `idcs`.
    pub fn masters(mut self, replicas: i32, idcs: &[&str]) -> Self {
        self.0.spec.masters = Some(MasterPlacement {
            replicas,
            idcs: Some(idcs.iter().map(|&idc| idc.to_owned()).collect()),
            hosting_namespace: None,
        });
        self
    }

    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        label(&mut self.0.metadata, key, value);
        self
    }

    /// The Cluster.
    pub fn build(self) -> Cluster {
        self.0
    }
}

impl MachinePackageVersion {
    /// A test package version named `name`: `kubelet-1.28` is package `kubelet` at version
    /// `1.28` (a name without `-` is the package at version `1`), installed from
    /// `https://packages.example/{name}.rpm` with a sha256 of zeros, no risk, no namespace.
    pub fn test(name: &str) -> MachinePackageVersionBuilder {
        let (package, version) = name.split_once('-').unwrap_or((name, "1"));
        MachinePackageVersionBuilder(MachinePackageVersion::new(
            name,
            MachinePackageVersionSpec {
                package_name: package.into(),
                version: version.into(),
                install: InstallSource {
                    url: format!("https://packages.example/{name}.rpm"),
                    sha256: "0".repeat(64),
                },
                config: None,
                config_maps: None,
                risk: None,
            },
        ))
    }
}

/// A test package version under construction; see [`MachinePackageVersion::test`].
#[derive(Clone, Debug)]
pub struct MachinePackageVersionBuilder(MachinePackageVersion);

impl MachinePackageVersionBuilder {
    /// `spec.packageName`.
    pub fn package_name(mut self, package: impl Into<String>) -> Self {
        self.0.spec.package_name = package.into();
        self
    }

    /// `spec.version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.0.spec.version = version.into();
        self
    }

    /// `spec.install.url`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.0.spec.install.url = url.into();
        self
    }

    /// `spec.risk`; `None` leaves it unset.
    pub fn risk(mut self, risk: Option<Risk>) -> Self {
        self.0.spec.risk = risk;
        self
    }

    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// The package version.
    pub fn build(self) -> MachinePackageVersion {
        self.0
    }
}

impl ClusterPackageVersion {
    /// A test control-plane release named `name`, at version `name`, each component's image
    /// `registry.example/{component}:{name}`, no namespace.
    pub fn test(name: &str) -> ClusterPackageVersionBuilder {
        let release = |component: &str| ComponentRelease {
            image: format!("registry.example/{component}:{name}"),
            args: None,
        };
        ClusterPackageVersionBuilder(ClusterPackageVersion::new(
            name,
            ClusterPackageVersionSpec {
                version: name.into(),
                etcd: release("etcd"),
                apiserver: release("apiserver"),
                controller_manager: release("controller-manager"),
                scheduler: release("scheduler"),
            },
        ))
    }
}

/// A test control-plane release under construction; see [`ClusterPackageVersion::test`].
#[derive(Clone, Debug)]
pub struct ClusterPackageVersionBuilder(ClusterPackageVersion);

impl ClusterPackageVersionBuilder {
    /// `spec.version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.0.spec.version = version.into();
        self
    }

    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// The control-plane release.
    pub fn build(self) -> ClusterPackageVersion {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The YAML reads back as the Machine it was written from.
    #[test]
    fn a_machine_reads_back_from_its_yaml() {
        let builder = Machine::test("m1")
            .in_cluster("a")
            .idc("hz-a")
            .ip("10.0.0.7")
            .hostname("m1.example")
            .package("kubelet", "kubelet-1")
            .package("containerd", "containerd-1")
            .readiness_gate("NetworkReady")
            .os_generation(2)
            .namespace("ns")
            .label("role", "canary");
        let read: Machine = serde_norway::from_str(&builder.yaml()).unwrap();
        assert_eq!(read, builder.build());
    }
}
