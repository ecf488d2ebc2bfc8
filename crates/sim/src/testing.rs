//! Builders for the objects the tests store.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use endstate_api::cluster::MasterPlacement;
use endstate_api::package::{ComponentRelease, InstallSource};
use endstate_api::{
    Cluster, ClusterPackageVersion, ClusterPackageVersionSpec, ClusterSpec, Machine,
    MachinePackageVersion, MachinePackageVersionSpec, MachineSpec,
};
use endstate_core::FleetObject;

pub fn mpv(name: &str) -> FleetObject {
    let (package, version) = name.split_once('-').unwrap_or((name, "1"));
    FleetObject::MachinePackageVersion(std::sync::Arc::new(MachinePackageVersion::new(
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
    )))
}

pub fn cpv(name: &str) -> FleetObject {
    let release = |image: &str| ComponentRelease {
        image: format!("registry.example/{image}:{name}"),
        args: None,
    };
    FleetObject::ClusterPackageVersion(std::sync::Arc::new(ClusterPackageVersion::new(
        name,
        ClusterPackageVersionSpec {
            version: name.into(),
            etcd: release("etcd"),
            apiserver: release("apiserver"),
            controller_manager: release("controller-manager"),
            scheduler: release("scheduler"),
        },
    )))
}

/// A machine in `idc` running `kubelet` at `kubelet` and `pouch-1.0`, with one readiness gate.
pub fn machine(name: &str, idc: &str, kubelet: &str) -> Machine {
    Machine::new(
        name,
        MachineSpec {
            cluster: "c1".into(),
            ip: "10.0.0.1".into(),
            hostname: name.into(),
            idc: idc.into(),
            packages: endstate_api::Packages::from([
                ("kubelet".into(), kubelet.into()),
                ("pouch".into(), "pouch-1.0".into()),
            ]),
            readiness_gates: Some(vec!["NetworkReady".into()]),
            unschedulable: None,
            os_generation: Some(1),
        },
    )
}

pub fn cluster(name: &str, package: &str) -> Cluster {
    Cluster::new(
        name,
        ClusterSpec {
            package_version: package.into(),
            mode: None,
            masters: Some(MasterPlacement {
                replicas: 3,
                idcs: Some(vec!["idc-a".into()]),
                hosting_namespace: None,
            }),
            etcd_volume: None,
            paused: None,
        },
    )
}

pub fn obj(machine: Machine) -> FleetObject {
    FleetObject::from(machine)
}

pub fn cobj(cluster: Cluster) -> FleetObject {
    FleetObject::from(cluster)
}

/// Runs a future that never waits, as every future of the simulated fleet is.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the simulated fleet never waits"),
    }
}
