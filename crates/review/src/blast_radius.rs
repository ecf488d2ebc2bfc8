//! Where the changes land: the Clusters and idcs whose Machines change, and each move of a
//! package (a Machine's component, a Cluster's `packageVersion`) from one version to another.

use std::collections::{BTreeMap, BTreeSet};

use endstate_core::{FleetObject, Kind};
use endstate_rollout::diff::Op;
use endstate_rollout::plan::Plan;

use crate::facts::Index;
use crate::report::{BlastRadius, ClusterRadius, Count, PackageMove};

/// (kind, package, from, to): one move, as counted.
type Move = (Kind, String, Option<String>, Option<String>);

/// Where `plan`'s changes land: Clusters by Machines changed, most first; idcs by name;
/// package moves by objects, most first.
pub fn blast_radius(plan: &Plan, index: &Index<'_>) -> BlastRadius {
    let mut clusters: BTreeMap<String, (u64, Option<&'static str>)> = BTreeMap::new();
    let mut idcs: BTreeMap<String, u64> = BTreeMap::new();
    let mut moves: BTreeMap<Move, u64> = BTreeMap::new();
    for (_, id, op) in plan.changes() {
        let after = index.desired.get(id).copied();
        let before = index.live.get(id).copied();
        match after.or(before) {
            Some(FleetObject::Machine(m)) => {
                clusters.entry(m.spec.cluster.clone()).or_default().0 += 1;
                *idcs.entry(m.spec.idc.clone()).or_default() += 1;
                if op == Op::Delete {
                    continue;
                }
                let old = match before {
                    Some(FleetObject::Machine(b)) => Some(&b.spec.packages),
                    _ => None,
                };
                let components: BTreeSet<&String> = m
                    .spec
                    .packages
                    .keys()
                    .chain(old.into_iter().flat_map(|p| p.keys()))
                    .collect();
                for component in components {
                    let from = old.and_then(|p| p.get(component.as_str())).cloned();
                    let to = m.spec.packages.get(component.as_str()).cloned();
                    if from != to {
                        *moves
                            .entry((Kind::Machine, component.clone(), from, to))
                            .or_default() += 1;
                    }
                }
            }
            Some(FleetObject::Cluster(c)) => {
                clusters
                    .entry(c.metadata.name.clone().unwrap_or_default())
                    .or_default()
                    .1 = Some(op.name());
                let from = match before {
                    Some(FleetObject::Cluster(b)) => Some(b.spec.package_version.clone()),
                    _ => None,
                };
                let to = (op != Op::Delete).then(|| c.spec.package_version.clone());
                if from != to {
                    *moves
                        .entry((Kind::Cluster, "packageVersion".to_owned(), from, to))
                        .or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let mut clusters: Vec<ClusterRadius> = clusters
        .into_iter()
        .map(|(name, (machines, cluster))| ClusterRadius {
            name,
            machines,
            cluster: cluster.map(str::to_owned),
        })
        .collect();
    clusters.sort_by(|a, b| b.machines.cmp(&a.machines).then(a.name.cmp(&b.name)));
    let mut package_versions: Vec<PackageMove> = moves
        .into_iter()
        .map(|((kind, package, from, to), objects)| PackageMove {
            kind,
            high_risk: to.as_deref().is_some_and(|t| index.high_risk.contains(t)),
            package,
            from,
            to,
            objects,
        })
        .collect();
    package_versions.sort_by_key(|m| std::cmp::Reverse(m.objects));
    BlastRadius {
        clusters,
        idcs: idcs
            .into_iter()
            .map(|(name, machines)| Count { name, machines })
            .collect(),
        package_versions,
    }
}
