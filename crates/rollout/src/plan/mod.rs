//! The plan: the order in which each sequence starts its changes, and the waves cut from it.
//!
//! ```text
//!   sequence    universe (its order)                          ops
//!   packages    the commit's package versions, by name         create / update
//!   clusters    the commit's Clusters, spread across domains   create / update
//!   machines    the commit's Machines, spread across domains   create / update  ┐ one
//!   reinstalls  the same Machines, the same order              reinstall        ┘ universe
//!   deletes     the base commit's objects the commit drops,    delete
//!               then live orphans (named in the state)
//! ```
//!
//! A sequence's *order* depends on the commit (and, for deletes, the commit the rollout started
//! from) and the policy alone — never on the live fleet — so a restarted controller recomputes
//! the same order and the persisted state needs only a cursor into it. Which positions change
//! (the *ops*) comes from the diff against live: at start it decides where the wave boundaries
//! fall, which are then stored; on resume it is recomputed, so a position past the cursor that
//! is already in sync is skipped without a spend, and one that drifted joins its wave.
//!
//! This file computes the [`Plan`]; [`order`] holds the sequences and universes, [`stages`]
//! the waves cut from them, [`deletes`] the delete order and its floor, [`domains`] the
//! spreading across failure domains.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use endstate_api::package::Risk;
use endstate_core::ownership::{Claim, FleetId, owned_by};
use endstate_core::{FleetObject, Kind, ObjectRef};

use crate::budget::BudgetClass;
use crate::diff::{self, Op};
use endstate_core::policy::Policy;

mod deletes;
mod domains;
mod order;
mod stages;
#[cfg(test)]
mod tests;

pub use deletes::MassDelete;
pub use domains::domain;
pub use order::{Order, Seq, Universe};
pub use stages::StageSpec;

use deletes::{DELETE_ORDER, mass_deletes};
use domains::spread;
use stages::waves;

/// The most live orphans (objects the fleet owns that neither the commit nor the commit the
/// rollout started from renders) one rollout deletes; the rest wait for the next rollout. They
/// are named in the persisted state, so this bounds its size.
pub const MAX_ORPHANS: usize = 50;

/// How many objects of another Fleet a plan names per owner (it counts them all).
pub const FOREIGN_NAMED: usize = 10;

/// Objects the commit sets that another Fleet owns: not written (see
/// [`endstate_core::ownership`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// The Fleet that owns them.
    pub owner: FleetId,
    /// How many.
    pub count: usize,
    /// The first [`FOREIGN_NAMED`] of them, in plan order.
    pub named: Vec<ObjectRef>,
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.named.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{} objects owned by Fleet {}: {}",
            self.count,
            self.owner,
            names.join(", ")
        )?;
        if self.count > self.named.len() {
            write!(f, " and {} more", self.count - self.named.len())?;
        }
        Ok(())
    }
}

/// What a commit changes, per sequence and position. Held in memory; recomputed on resume.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    orders: [Arc<Order>; 4],
    ops: [Vec<Option<Op>>; 5],
    /// Per position of the Machines universe: its Cluster's position in the Clusters
    /// universe ([`NO_CLUSTER`] when the commit has none of that name).
    machine_cluster: Vec<u32>,
    /// Per position of the Clusters universe: how many of the commit's Machines it has.
    cluster_machines: Vec<u32>,
    /// Package versions whose spec changes while live objects use them: refused.
    pub immutable: Vec<ObjectRef>,
    /// Objects removed from Git that stay because they are annotated `prune: disabled`.
    pub kept: Vec<ObjectRef>,
    /// Live orphans the delete sequence covers, in order (persisted with the rollout).
    pub orphans: Vec<ObjectRef>,
    /// Live orphans beyond [`MAX_ORPHANS`], left for a later rollout.
    pub orphans_left: usize,
    /// Machines with changes that are not started because their live Cluster reports
    /// `Failed`: per Cluster, how many.
    pub held: Vec<(ObjectRef, usize)>,
    /// Objects another Fleet owns, per owner: not written, and the commit is not good.
    pub foreign: Vec<Foreign>,
    /// Scopes the commit would delete more of than the policy's floor allows (see
    /// [`Prune`](endstate_core::policy::Prune)): the rollout is refused before anything is written.
    pub mass_deletes: Vec<MassDelete>,
    /// When planned from a partial view of live (objects read one by one before the caches
    /// have listed the fleet): the only sequence, and the positions before which, its ops are
    /// known. The engine starts nothing at or past it until handed a whole plan.
    known: Option<(Seq, u32)>,
}

/// The cluster position of a Machine whose Cluster the commit does not render.
pub const NO_CLUSTER: u32 = u32::MAX;

/// What a plan is computed from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The commit's objects, as they are applied (namespaced, labelled), `RolloutPolicy`
    /// objects included or not.
    pub desired: &'a [FleetObject],
    /// The objects of the commit the fleet was at when the rollout started, if known: what
    /// the commit no longer renders is deleted.
    pub base: Option<&'a [FleetObject]>,
    /// The live objects of the fleet's namespace.
    pub live: &'a [FleetObject],
    /// The fleet: only objects labelled as its own are deleted, and objects labelled as
    /// another's are not written.
    pub fleet: &'a FleetId,
    /// The commit's policy.
    pub policy: &'a Policy,
    /// On resume, the orphans the rollout covers (from the persisted state); at start,
    /// `None`: they are found in `live`.
    pub orphans: Option<&'a [ObjectRef]>,
}

/// An object's identity within the fleet: kind, name and business cluster (all the Fleet's
/// objects of one API server share a namespace).
type Key<'a> = (Kind, &'a str, &'a str);

fn key(object: &FleetObject) -> Key<'_> {
    (object.kind(), object.name(), object.cluster())
}

impl Plan {
    /// Computes the plan.
    pub fn new(inputs: Inputs<'_>) -> Plan {
        let Inputs {
            desired,
            base,
            live,
            fleet,
            policy,
            orphans,
        } = inputs;
        let live_by: HashMap<Key<'_>, &FleetObject> = live.iter().map(|o| (key(o), o)).collect();
        // What the commit applied last set: a field it set and this commit no longer does is
        // removed by the apply, so it is a change; any other field not in Git is not endstate's.
        let last_by: HashMap<Key<'_>, &FleetObject> =
            base.into_iter().flatten().map(|o| (key(o), o)).collect();
        let last = |want: &FleetObject| last_by.get(&key(want)).copied();
        let desired: Vec<&FleetObject> = desired
            .iter()
            .filter(|o| o.kind() != Kind::RolloutPolicy)
            .collect();
        let desired_keys: HashSet<Key<'_>> = desired.iter().map(|o| key(o)).collect();
        let of_kind = |kinds: &[Kind]| -> Vec<&FleetObject> {
            desired
                .iter()
                .copied()
                .filter(|o| kinds.contains(&o.kind()))
                .collect()
        };
        let packages = of_kind(&[Kind::MachinePackageVersion, Kind::ClusterPackageVersion]);
        let clusters = spread(
            of_kind(&[Kind::Cluster]),
            policy.clusters.spread_by.as_deref(),
        );
        let machines = spread(
            of_kind(&[Kind::Machine]),
            policy.machines.spread_by.as_deref(),
        );

        // Deletes: the base's objects the commit drops, Machines first (spread like the machine
        // waves), then Clusters, then the package versions they pointed at; then orphans.
        let base_keys: HashSet<Key<'_>> = base.into_iter().flatten().map(key).collect();
        let dropped = |kind: Kind| -> Vec<&FleetObject> {
            base.into_iter()
                .flatten()
                .filter(|o| o.kind() == kind && !desired_keys.contains(&key(o)))
                .collect()
        };
        let mut deletes: Vec<ObjectRef> = Vec::new();
        for kind in DELETE_ORDER {
            let objects = dropped(kind);
            let objects = if kind == Kind::Machine {
                spread(objects, policy.machines.spread_by.as_deref())
            } else {
                objects
            };
            deletes.extend(objects.into_iter().map(FleetObject::id));
        }
        let (orphans, orphans_left) = match orphans {
            Some(named) => (named.to_vec(), 0),
            None => {
                let mut found: Vec<&FleetObject> = live
                    .iter()
                    .filter(|o| {
                        o.kind() != Kind::RolloutPolicy
                            && !desired_keys.contains(&key(o))
                            && !base_keys.contains(&key(o))
                            && owned_by(o, fleet)
                    })
                    .collect();
                found.sort_by_key(|o| {
                    (
                        DELETE_ORDER.iter().position(|k| *k == o.kind()),
                        o.name().to_owned(),
                    )
                });
                let left = found.len().saturating_sub(MAX_ORPHANS);
                found.truncate(MAX_ORPHANS);
                (found.into_iter().map(FleetObject::id).collect(), left)
            }
        };
        deletes.extend(orphans.iter().cloned());

        let ids = |objects: &[&FleetObject]| objects.iter().map(|o| o.id()).collect::<Vec<_>>();
        let orders = [
            Arc::new(Order::new(ids(&packages))),
            Arc::new(Order::new(ids(&clusters))),
            Arc::new(Order::new(ids(&machines))),
            Arc::new(Order::new(deletes)),
        ];

        // Clusters live beside the Fleet, their Machines there or in their business cluster:
        // a Machine's Cluster is found by name.
        let cluster_at: HashMap<&str, u32> = orders[1]
            .ids
            .iter()
            .enumerate()
            .map(|(p, id)| (id.name.as_str(), p as u32))
            .collect();
        let machine_cluster: Vec<u32> = machines
            .iter()
            .map(|m| match m {
                FleetObject::Machine(m) => cluster_at
                    .get(m.spec.cluster.as_str())
                    .copied()
                    .unwrap_or(NO_CLUSTER),
                _ => NO_CLUSTER,
            })
            .collect();
        let mut cluster_machines = vec![0; orders[1].ids.len()];
        for c in machine_cluster.iter().filter(|c| **c != NO_CLUSTER) {
            cluster_machines[*c as usize] += 1;
        }
        let mut plan = Plan {
            orphans,
            orphans_left,
            machine_cluster,
            cluster_machines,
            ..Plan::default()
        };
        let mut foreign: BTreeMap<FleetId, Foreign> = BTreeMap::new();
        // Whether `want` is another Fleet's (counted, once per object).
        let mut taken = |want: &FleetObject, have: Option<&FleetObject>| -> bool {
            let Some(Claim::Taken(owner)) = have.map(|h| Claim::of(h, fleet)) else {
                return false;
            };
            let entry = foreign.entry(owner.clone()).or_insert_with(|| Foreign {
                owner,
                count: 0,
                named: Vec::new(),
            });
            entry.count += 1;
            if entry.named.len() < FOREIGN_NAMED {
                entry.named.push(want.id());
            }
            true
        };
        let mut in_use = None;
        let mut package_ops = Vec::with_capacity(packages.len());
        for want in &packages {
            let have = live_by.get(&key(want)).copied();
            // A package version is immutable: the same one, whoever wrote it, will do.
            if let Some(have) = have
                && want.same_spec(have)
                && matches!(Claim::of(have, fleet), Claim::Taken(_))
            {
                package_ops.push(None);
                continue;
            }
            if taken(want, have) {
                package_ops.push(None);
                continue;
            }
            let op = diff::op(want, have, last(want));
            if op == Some(Op::Update)
                && let Some(have) = have
                && !want.same_spec(have)
            {
                let used = in_use.get_or_insert_with(|| diff::packages_in_use(live));
                if used.contains(want.name()) {
                    plan.immutable.push(want.id());
                    package_ops.push(None);
                    continue;
                }
            }
            package_ops.push(op);
        }
        let cluster_ops: Vec<Option<Op>> = clusters
            .iter()
            .map(|want| {
                let have = live_by.get(&key(want)).copied();
                if taken(want, have) {
                    return None;
                }
                diff::op(want, have, last(want))
            })
            .collect();
        let changing: HashSet<&str> = clusters
            .iter()
            .zip(&cluster_ops)
            .filter(|(_, op)| op.is_some())
            .map(|(c, _)| c.name())
            .collect();
        // A Machine whose live Cluster reports `Failed` for its generation, and that the commit
        // does not change (the engine holds the Machines of a Cluster whose change fails), is
        // not started: it waits for the Cluster to be fixed (counted per Cluster, reported).
        // Judged once per Cluster, not once per Machine.
        let failed: HashMap<&str, &FleetObject> = live
            .iter()
            .filter(|c| c.kind() == Kind::Cluster && !changing.contains(c.name()))
            .filter(|c| {
                let generation = c.meta().generation.unwrap_or(0);
                matches!(
                    crate::health::assess(Some(c), generation),
                    crate::health::Health::Failed(_)
                )
            })
            .map(|c| (c.name(), c))
            .collect();
        let failed_cluster = |want: &FleetObject| -> Option<&FleetObject> {
            match want {
                FleetObject::Machine(m) => failed.get(m.spec.cluster.as_str()).copied(),
                _ => None,
            }
        };
        // Package versions marked `risk: high`: a Machine moving to one is planned with the
        // reinstalls (their sequence, their budget class), not with the updates.
        let high_risk: HashSet<&str> = packages
            .iter()
            .filter(|p| matches!(p, FleetObject::MachinePackageVersion(v) if v.spec.risk() == Risk::High))
            .map(|p| p.name())
            .collect();
        let mut held: BTreeMap<ObjectRef, usize> = BTreeMap::new();
        let mut machine_ops = |objects: &[&FleetObject], seq: Seq| -> Vec<Option<Op>> {
            objects
                .iter()
                .map(|want| {
                    let have = live_by.get(&key(want)).copied();
                    // Both sequences see every Machine: count another Fleet's once.
                    if seq == Seq::Machines && taken(want, have)
                        || seq == Seq::Reinstalls
                            && have.is_some_and(|h| matches!(Claim::of(h, fleet), Claim::Taken(_)))
                    {
                        return None;
                    }
                    let op = diff::op(want, have, last(want))
                        .map(|op| match op {
                            Op::Update if moves_to(want, have, &high_risk) => Op::Reinstall,
                            op => op,
                        })
                        .filter(|op| seq.takes(*op))?;
                    if let Some(cluster) = failed_cluster(want) {
                        *held.entry(cluster.id()).or_default() += 1;
                        return None;
                    }
                    Some(op)
                })
                .collect()
        };
        let mut delete_ops = Vec::with_capacity(orders[3].ids.len());
        for id in &orders[3].ids {
            let have = live_by
                .get(&(id.kind, id.name.as_str(), id.cluster.as_str()))
                .copied();
            delete_ops.push(match have {
                Some(have) if owned_by(have, fleet) && diff::prune_disabled(have) => {
                    plan.kept.push(have.id());
                    None
                }
                Some(have) if owned_by(have, fleet) => Some(Op::Delete),
                _ => None,
            });
        }
        plan.mass_deletes = mass_deletes(live, fleet, &orders[3].ids, &delete_ops, policy);
        plan.ops = [
            package_ops,
            cluster_ops,
            machine_ops(&machines, Seq::Machines),
            machine_ops(&machines, Seq::Reinstalls),
            delete_ops,
        ];
        plan.held = held.into_iter().collect();
        plan.foreign = foreign.into_values().collect();
        plan.orders = orders;
        plan
    }

    /// The plan of `inputs`, whose `live` holds only the objects of `seq` at positions before
    /// `until` (those that matter now: the next changes of the wave in flight); nothing else is
    /// known, and the engine starts nothing else until it is given a whole plan.
    pub fn partial(inputs: Inputs<'_>, seq: Seq, until: u32) -> Plan {
        let mut plan = Plan::new(inputs);
        plan.known = Some((seq, until));
        plan.immutable.clear();
        plan
    }

    /// Whether the plan knows only some positions (see [`Plan::partial`]).
    pub fn is_partial(&self) -> bool {
        self.known.is_some()
    }

    /// The first position of `seq` whose op is not known (its length, in a whole plan).
    pub fn known_until(&self, seq: Seq) -> u32 {
        match self.known {
            None => self.len(seq),
            Some((s, until)) if s == seq => until.min(self.len(seq)),
            Some(_) => 0,
        }
    }

    /// The order of a universe.
    pub fn order(&self, universe: Universe) -> &Order {
        &self.orders[universe.index()]
    }

    /// The position in the Clusters universe of the Cluster of the Machine at `position` of
    /// `seq` (Machines and reinstalls), when the commit renders it.
    pub fn cluster_of(&self, seq: Seq, position: u32) -> Option<u32> {
        if !matches!(seq, Seq::Machines | Seq::Reinstalls) {
            return None;
        }
        self.machine_cluster
            .get(position as usize)
            .copied()
            .filter(|c| *c != NO_CLUSTER)
    }

    /// The Cluster of the Machine at `position` of `seq` and how many of that Cluster's
    /// Machines may be in flight at once, when the policy limits them
    /// (`maxUnavailablePerCluster`, a percent being of the Cluster's Machines in the commit).
    pub fn cluster_limit(&self, policy: &Policy, seq: Seq, position: u32) -> Option<(u32, usize)> {
        let cap = policy.machines.max_unavailable_per_cluster?;
        let cluster = self.cluster_of(seq, position)?;
        let machines = self
            .cluster_machines
            .get(cluster as usize)
            .copied()
            .unwrap_or(0);
        Some((cluster, cap.of(machines as usize).max(1)))
    }

    /// The op at `position` of `seq`, `None` when the object is in sync (or, in a partial
    /// plan, not known).
    pub fn op(&self, seq: Seq, position: u32) -> Option<Op> {
        if position >= self.known_until(seq) {
            return None;
        }
        self.ops[seq.index()]
            .get(position as usize)
            .copied()
            .flatten()
    }

    /// The identity at `position` of `seq`.
    pub fn id(&self, seq: Seq, position: u32) -> &ObjectRef {
        self.order(seq.universe()).id(position)
    }

    /// How many positions `seq` has.
    pub fn len(&self, seq: Seq) -> u32 {
        self.ops[seq.index()].len() as u32
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.ops.iter().flatten().all(Option::is_none)
    }

    /// Every change, sequence by sequence, in order.
    pub fn changes(&self) -> impl Iterator<Item = (Seq, &ObjectRef, Op)> + '_ {
        Seq::ALL.into_iter().flat_map(move |seq| {
            self.ops[seq.index()]
                .iter()
                .enumerate()
                .filter_map(move |(p, op)| op.map(|op| (seq, self.id(seq, p as u32), op)))
        })
    }

    /// How many changes of `op`.
    pub fn count(&self, op: Op) -> usize {
        self.ops
            .iter()
            .flatten()
            .filter(|o| **o == Some(op))
            .count()
    }

    /// How many changes in all.
    pub fn len_changes(&self) -> usize {
        self.ops.iter().flatten().filter(|o| o.is_some()).count()
    }

    /// Cuts each sequence into its policy's waves: where each wave ends in the sequence's
    /// order, and how many changes it holds now. Called once, when the rollout starts.
    pub fn stages(&self, policy: &Policy) -> Vec<StageSpec> {
        let mut stages = Vec::new();
        for seq in Seq::ALL {
            let ops = &self.ops[seq.index()];
            let changed: Vec<u32> = ops
                .iter()
                .enumerate()
                .filter(|(_, op)| op.is_some())
                .map(|(p, _)| p as u32)
                .collect();
            if changed.is_empty() {
                continue;
            }
            let len = ops.len() as u32;
            match seq {
                Seq::Packages => stages.push(StageSpec {
                    seq,
                    name: seq.name().to_owned(),
                    start: 0,
                    end: len,
                    size: changed.len() as u32,
                    max_unavailable: changed.len() as u32,
                    bake_ms: 0,
                    pause: false,
                }),
                Seq::Clusters => waves(&mut stages, seq, &changed, len, &policy.clusters),
                // Deletes take the Machine waves: Machines come first in their order.
                Seq::Machines | Seq::Reinstalls | Seq::Deletes => {
                    waves(&mut stages, seq, &changed, len, &policy.machines)
                }
            }
        }
        stages
    }

    /// A stage's changes by operation (`create`, `update`, …) and by failure domain (the
    /// value of `spread_by` on each object; `""` where it has none).
    pub fn breakdown<'a>(
        &self,
        stage: &StageSpec,
        lookup: &dyn Fn(&ObjectRef) -> Option<&'a FleetObject>,
        spread_by: &str,
    ) -> (BTreeMap<&'static str, usize>, BTreeMap<String, usize>) {
        let mut domains: BTreeMap<String, usize> = BTreeMap::new();
        let mut ops: BTreeMap<&'static str, usize> = BTreeMap::new();
        for p in stage.start..stage.end {
            let Some(op) = self.op(stage.seq, p) else {
                continue;
            };
            *ops.entry(op.name()).or_default() += 1;
            if let Some(obj) = lookup(self.id(stage.seq, p)) {
                *domains.entry(domain(obj, spread_by)).or_default() += 1;
            }
        }
        (ops, domains)
    }
}

/// Whether the Machine `want` points a component at one of `versions` that `have` does not
/// run.
fn moves_to(want: &FleetObject, have: Option<&FleetObject>, versions: &HashSet<&str>) -> bool {
    let (FleetObject::Machine(w), Some(FleetObject::Machine(h))) = (want, have) else {
        return false;
    };
    !versions.is_empty()
        && w.spec.packages.iter().any(|(component, version)| {
            versions.contains(version.as_str())
                && h.spec.packages.get(component.as_str()) != Some(version)
        })
}

/// The budget class a change spends from, if any (package versions are inert).
pub fn class(kind: Kind, op: Op) -> Option<BudgetClass> {
    match (kind, op) {
        (Kind::Machine, Op::Create | Op::Update) => Some(BudgetClass::MachineUpdate),
        (Kind::Machine, Op::Reinstall) => Some(BudgetClass::MachineReinstall),
        (Kind::Machine, Op::Delete) => Some(BudgetClass::MachineDelete),
        (Kind::Cluster, _) => Some(BudgetClass::ClusterUpdate),
        _ => None,
    }
}
