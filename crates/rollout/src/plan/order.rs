//! The sequences a rollout walks and the universes they order: which objects each sequence
//! holds, in which order, and how to find an object's position.

use endstate_core::ObjectRef;
use serde::{Deserialize, Serialize};

use crate::diff::Op;

/// A sequence of waves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Seq {
    /// New or changed package versions: inert until something points at them, not gated.
    Packages,
    /// Clusters: gated on the cluster operator's status.
    Clusters,
    /// Machine creates and updates: gated on the machine operator's status.
    Machines,
    /// Machine reinstalls (`osGeneration` bumps): gated, high risk.
    Reinstalls,
    /// Deletes: gated on the object being gone (its finalizers done).
    Deletes,
}

impl Seq {
    /// Every sequence, in rollout order.
    pub const ALL: [Seq; 5] = [
        Seq::Packages,
        Seq::Clusters,
        Seq::Machines,
        Seq::Reinstalls,
        Seq::Deletes,
    ];

    /// The prefix of its stage names.
    pub fn name(self) -> &'static str {
        match self {
            Seq::Packages => "packages",
            Seq::Clusters => "clusters",
            Seq::Machines => "machines",
            Seq::Reinstalls => "reinstalls",
            Seq::Deletes => "deletes",
        }
    }

    /// Whether the sequence's changes are gated: they must report health for the new
    /// revision (deletes: be gone) within the gate timeout, and start only in a maintenance
    /// window.
    pub fn gated(self) -> bool {
        self != Seq::Packages
    }

    /// The universe it orders.
    pub fn universe(self) -> Universe {
        match self {
            Seq::Packages => Universe::Packages,
            Seq::Clusters => Universe::Clusters,
            Seq::Machines | Seq::Reinstalls => Universe::Machines,
            Seq::Deletes => Universe::Deletes,
        }
    }

    /// Whether `op` belongs to the sequence.
    pub(crate) fn takes(self, op: Op) -> bool {
        match self {
            Seq::Machines => matches!(op, Op::Create | Op::Update),
            Seq::Reinstalls => op == Op::Reinstall,
            Seq::Deletes => op == Op::Delete,
            Seq::Packages | Seq::Clusters => op != Op::Delete,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The sets of objects sequences are positions in. Machines and reinstalls share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Universe {
    /// The commit's package versions.
    Packages,
    /// The commit's Clusters.
    Clusters,
    /// The commit's Machines.
    Machines,
    /// What the rollout deletes.
    Deletes,
}

impl Universe {
    /// Every universe, in rollout order.
    pub const ALL: [Universe; 4] = [
        Universe::Packages,
        Universe::Clusters,
        Universe::Machines,
        Universe::Deletes,
    ];

    /// Its index in [`Universe::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The identities of one universe, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Order {
    pub(super) ids: Vec<ObjectRef>,
    /// Positions sorted by identity, to find one (four bytes an object, not a second copy of
    /// every identity).
    sorted: Vec<u32>,
}

impl Order {
    pub(super) fn new(ids: Vec<ObjectRef>) -> Self {
        let mut sorted: Vec<u32> = (0..ids.len() as u32).collect();
        sorted.sort_unstable_by(|a, b| ids[*a as usize].cmp(&ids[*b as usize]));
        Order { ids, sorted }
    }

    /// The identity at `position`.
    pub fn id(&self, position: u32) -> &ObjectRef {
        &self.ids[position as usize]
    }

    /// The position of `id`, if it is in the universe.
    pub fn position(&self, id: &ObjectRef) -> Option<u32> {
        self.sorted
            .binary_search_by(|p| self.ids[*p as usize].cmp(id))
            .ok()
            .map(|i| self.sorted[i])
    }

    /// How many positions.
    pub fn len(&self) -> u32 {
        self.ids.len() as u32
    }

    /// Whether the universe is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
