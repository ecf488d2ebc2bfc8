//! The objects the tests store, built with `endstate_api`'s test builders in the shapes
//! these tests share.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use endstate_api::{Cluster, ClusterPackageVersion, Machine, MachinePackageVersion};
use endstate_core::FleetObject;

/// Package version `name`: `kubelet-2` is package `kubelet` at version `2`.
pub fn mpv(name: &str) -> FleetObject {
    MachinePackageVersion::test(name).build().into()
}

pub fn cpv(name: &str) -> FleetObject {
    ClusterPackageVersion::test(name).build().into()
}

/// A machine in `idc` running `kubelet` at `kubelet` and `pouch-1.0`, with one readiness gate.
pub fn machine(name: &str, idc: &str, kubelet: &str) -> Machine {
    Machine::test(name)
        .in_cluster("c1")
        .ip("10.0.0.1")
        .hostname(name)
        .idc(idc)
        .package("kubelet", kubelet)
        .package("pouch", "pouch-1.0")
        .readiness_gate("NetworkReady")
        .os_generation(1)
        .build()
}

pub fn cluster(name: &str, package: &str) -> Cluster {
    Cluster::test(name)
        .package_version(package)
        .masters(3, &["idc-a"])
        .build()
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
