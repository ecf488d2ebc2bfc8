//! What a commit deletes, in which order, and the floor under deletes: the scopes a commit
//! would take more of than the policy allows.

use std::collections::{BTreeMap, HashSet};

use endstate_core::ownership::{FleetId, owned_by};
use endstate_core::{FleetObject, Kind, ObjectRef};

use crate::diff::Op;
use endstate_core::policy::Policy;

/// The order deletes go in: Machines before the Clusters they run in, package versions last.
pub(super) const DELETE_ORDER: [Kind; 4] = [
    Kind::Machine,
    Kind::Cluster,
    Kind::MachinePackageVersion,
    Kind::ClusterPackageVersion,
];

/// A scope a commit would delete too much of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MassDelete {
    /// The kind deleted.
    pub kind: Kind,
    /// Where: `the fleet`, `Cluster alpha`, `idc hz-a`.
    pub scope: String,
    /// How many the commit deletes.
    pub deletes: usize,
    /// How many of the kind the scope has live.
    pub live: usize,
}

impl std::fmt::Display for MassDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of the {} live {}s of {}",
            self.deletes, self.live, self.kind, self.scope
        )
    }
}

/// The scopes `deletes` takes more of than `policy` allows: each kind in the whole fleet, and
/// the Machines of each Cluster and of each idc (so that emptying one cluster of a large
/// fleet counts).
pub(super) fn mass_deletes(
    live: &[FleetObject],
    fleet: &FleetId,
    ids: &[ObjectRef],
    ops: &[Option<Op>],
    policy: &Policy,
) -> Vec<MassDelete> {
    if ops.iter().all(Option::is_none) || policy.prune.allow_empty {
        return Vec::new();
    }
    // (kind, scope) → (deletes, live)
    let mut counts: BTreeMap<(Kind, String), (usize, usize)> = BTreeMap::new();
    let scopes = |o: &FleetObject| -> Vec<(Kind, String)> {
        let mut scopes = vec![(o.kind(), "the fleet".to_owned())];
        if let FleetObject::Machine(m) = o {
            scopes.push((Kind::Machine, format!("Cluster {}", m.spec.cluster)));
            scopes.push((Kind::Machine, format!("idc {}", m.spec.idc)));
        }
        scopes
    };
    let deleted: HashSet<(Kind, &str, &str)> = ids
        .iter()
        .zip(ops)
        .filter(|(_, op)| **op == Some(Op::Delete))
        .map(|(id, _)| (id.kind, id.name.as_str(), id.cluster.as_str()))
        .collect();
    for o in live {
        if o.kind() == Kind::RolloutPolicy || !owned_by(o, fleet) {
            continue;
        }
        let gone = deleted.contains(&(o.kind(), o.name(), o.cluster()));
        for scope in scopes(o) {
            let (d, l) = counts.entry(scope).or_default();
            *l += 1;
            *d += usize::from(gone);
        }
    }
    counts
        .into_iter()
        .filter(|(_, (d, l))| !policy.prune.allows(*d, *l))
        .map(|((kind, scope), (deletes, live))| MassDelete {
            kind,
            scope,
            deletes,
            live,
        })
        .collect()
}
