//! What a review is made from — both sides' objects, the head's policy, what was spent — and
//! the engine's plan of them, with the objects looked up by identity for the later steps.

use std::collections::{HashMap, HashSet};

use endstate_api::package::Risk as PackageRisk;
use endstate_core::policy::Policy;
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::Time;
use endstate_rollout::budget::Budgets;
use endstate_rollout::plan::{Inputs, Plan};

/// What the plan is made from.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The head's objects (its `RolloutPolicy` taken out).
    pub desired: &'a [FleetObject],
    /// The head's policy.
    pub policy: &'a Policy,
    /// The objects of the commit the fleet was last at, when known.
    pub base: Option<&'a [FleetObject]>,
    /// What the fleet has: the base's objects, or the cluster's live ones.
    pub live: &'a [FleetObject],
    /// The Fleet whose objects may be deleted (and whose objects others may not write).
    pub fleet: &'a endstate_core::ownership::FleetId,
    /// What was spent already.
    pub budgets: &'a Budgets,
    /// When the rollout is taken to start.
    pub now: Time,
    /// How many distinct diffs to keep.
    pub diffs: usize,
}

/// The engine's own plan of `facts`: what the controller would do with the head.
pub fn plan(facts: &Facts<'_>) -> Plan {
    Plan::new(Inputs {
        desired: facts.desired,
        base: facts.base,
        live: facts.live,
        fleet: facts.fleet,
        policy: facts.policy,
        orphans: None,
    })
}

/// Both sides' objects by identity, and the package versions marked `risk: high`.
#[derive(Debug)]
pub struct Index<'a> {
    /// The head's objects.
    pub desired: HashMap<ObjectRef, &'a FleetObject>,
    /// What the fleet has.
    pub live: HashMap<ObjectRef, &'a FleetObject>,
    /// The names of the head's `MachinePackageVersion`s marked `risk: high`.
    pub high_risk: HashSet<&'a str>,
}

impl<'a> Index<'a> {
    /// The index of `facts`' objects.
    pub fn new(facts: &Facts<'a>) -> Index<'a> {
        Index {
            desired: facts.desired.iter().map(|o| (o.id(), o)).collect(),
            live: facts.live.iter().map(|o| (o.id(), o)).collect(),
            high_risk: facts
                .desired
                .iter()
                .filter(|o| {
                    matches!(o, FleetObject::MachinePackageVersion(p) if p.spec.risk() == PackageRisk::High)
                })
                .map(FleetObject::name)
                .collect(),
        }
    }

    /// The object `id` names: the head's, or else the fleet's.
    pub fn lookup(&self, id: &ObjectRef) -> Option<&'a FleetObject> {
        self.desired.get(id).or_else(|| self.live.get(id)).copied()
    }
}
