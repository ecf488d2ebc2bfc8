//! A rendered commit as the fleet applies it: its objects (namespaced and labelled by the
//! render, shared with the render cache) and its policy.

use endstate_core::policy::Policy;
use endstate_core::{FleetObject, Kind, ObjectRef};

/// A rendered commit, prepared for the live fleet.
#[derive(Debug, Default)]
pub struct Desired {
    /// The commit (or directory content id).
    pub commit: String,
    /// The objects, sorted by identity; `RolloutPolicy` objects are not among them.
    pub objects: Vec<FleetObject>,
    /// The commit's policy.
    pub policy: Policy,
}

impl Desired {
    /// The object with this identity.
    pub fn get(&self, id: &ObjectRef) -> Option<&FleetObject> {
        let key = (
            id.kind,
            id.namespace.as_str(),
            id.name.as_str(),
            id.cluster.as_str(),
        );
        self.objects
            .binary_search_by(|o| o.key().cmp(&key))
            .ok()
            .map(|i| &self.objects[i])
    }

    /// A set of objects (live ones, say) as a restore target, sorted. They are kept as they
    /// are (shared with the live cache): writing one sends only what a client declares.
    pub fn of(commit: &str, objects: Vec<FleetObject>) -> Desired {
        let mut objects: Vec<FleetObject> = objects
            .into_iter()
            .filter(|o| o.kind() != Kind::RolloutPolicy)
            .collect();
        objects.sort_by(|a, b| a.key().cmp(&b.key()));
        Desired {
            commit: commit.to_owned(),
            objects,
            policy: Policy::default(),
        }
    }
}
