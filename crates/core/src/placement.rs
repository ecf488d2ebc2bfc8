//! Where a Fleet's objects live when its Machines are placed in their business clusters.
//!
//! The meta-cluster keeps the Clusters, their package versions and the policy, in the
//! Fleet's namespace; each Machine lives in the business cluster its `spec.cluster` names; and
//! each business cluster that has Machines holds its own copy of every MachinePackageVersion
//! of the commit, as the Fleet's namespace would. A rendered commit says each object once, so
//! placing it copies the package versions, told apart by [`CLUSTER_LABEL`] (see
//! [`ObjectRef::cluster`](crate::ObjectRef)).
//!
//! Every version, not only those the commit's Machines use: an upgrade would otherwise delete
//! the previous version's copies while Machines still run it (a Machine held back, a restore
//! after a trip), and the commit that moves Machines to a new version is not a commit that
//! removes the old one. Machines are not copied (a fleet moves 100k of them): their business
//! cluster is their `spec.cluster`, and where they are written is the backend's concern.

use endstate_api::labels::CLUSTER_LABEL;
use std::collections::BTreeSet;

use crate::object::{FleetObject, Kind};

/// The package versions of `objects` copied into each business cluster that has Machines.
/// Everything else is kept as it is. The result is sorted by identity, as a render is.
pub fn place(objects: &[FleetObject]) -> Vec<FleetObject> {
    let clusters: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| match o {
            FleetObject::Machine(m) => Some(m.spec.cluster.as_str()),
            _ => None,
        })
        .collect();
    let mut placed = Vec::with_capacity(objects.len());
    for object in objects {
        if object.kind() != Kind::MachinePackageVersion {
            placed.push(object.clone());
            continue;
        }
        for cluster in &clusters {
            let mut copy = object.clone();
            copy.meta_mut()
                .labels
                .get_or_insert_default()
                .insert(CLUSTER_LABEL.to_owned(), (*cluster).to_owned());
            placed.push(copy);
        }
    }
    placed.sort_by(|a, b| a.key().cmp(&b.key()));
    placed
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use endstate_api::{Cluster, Machine, MachinePackageVersion};

    use super::*;

    #[test]
    fn each_business_cluster_with_machines_gets_every_package_version() {
        let machine = |name: &str, cluster: &str, kubelet: &str| -> FleetObject {
            Machine::test(name)
                .in_cluster(cluster)
                .package("kubelet", kubelet)
                .namespace("prod")
                .build()
                .into()
        };
        let package = |name: &str| -> FleetObject {
            MachinePackageVersion::test(name)
                .namespace("prod")
                .build()
                .into()
        };
        let rendered = vec![
            Cluster::test("a").namespace("prod").build().into(),
            Cluster::test("b").namespace("prod").build().into(),
            machine("m-1", "a", "kubelet-1"),
            machine("m-2", "b", "kubelet-1"),
            machine("m-3", "b", "kubelet-2"),
            package("kubelet-1"),
            package("kubelet-2"),
            package("kubelet-9"),
        ];
        let placed = place(&rendered);
        let ids: Vec<String> = placed.iter().map(|o| o.id().to_string()).collect();
        assert_eq!(
            ids,
            [
                "Cluster/prod/a",
                "Cluster/prod/b",
                "Machine/prod/m-1",
                "Machine/prod/m-2",
                "Machine/prod/m-3",
                "MachinePackageVersion/prod/kubelet-1@a",
                "MachinePackageVersion/prod/kubelet-1@b",
                "MachinePackageVersion/prod/kubelet-2@a",
                "MachinePackageVersion/prod/kubelet-2@b",
                "MachinePackageVersion/prod/kubelet-9@a",
                "MachinePackageVersion/prod/kubelet-9@b",
            ]
        );
        // Machines are the rendered ones, shared, not copies.
        let shared = rendered
            .iter()
            .zip(&placed)
            .filter(|(r, _)| r.kind() == Kind::Machine)
            .all(|(r, p)| matches!((r, p), (FleetObject::Machine(r), FleetObject::Machine(p)) if Arc::ptr_eq(r, p)));
        assert!(shared);
    }
}
