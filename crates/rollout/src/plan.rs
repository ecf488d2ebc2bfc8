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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use endstate_api::package::Risk;
use endstate_core::{FleetObject, Kind, ObjectRef};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetClass;
use crate::diff::{self, Op};
use crate::policy::{Policy, Sequence as SequencePolicy};

/// The most live orphans (objects the fleet owns that neither the commit nor the commit the
/// rollout started from renders) one rollout deletes; the rest wait for the next rollout. They
/// are named in the persisted state, so this bounds its size.
pub const MAX_ORPHANS: usize = 50;

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
    fn takes(self, op: Op) -> bool {
        match self {
            Seq::Machines => matches!(op, Op::Create | Op::Update),
            Seq::Reinstalls => op == Op::Reinstall,
            Seq::Deletes => op == Op::Delete,
            Seq::Packages | Seq::Clusters => op != Op::Delete,
        }
    }

    fn index(self) -> usize {
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
    ids: Vec<ObjectRef>,
    /// Positions sorted by identity, to find one (four bytes an object, not a second copy of
    /// every identity).
    sorted: Vec<u32>,
}

impl Order {
    fn new(ids: Vec<ObjectRef>) -> Self {
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

/// What a commit changes, per sequence and position. Held in memory; recomputed on resume.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    orders: [Arc<Order>; 4],
    ops: [Vec<Option<Op>>; 5],
    /// Per position of the Machines universe: its Cluster's position in the Clusters
    /// universe ([`NO_CLUSTER`] when the commit has none of that name).
    machine_cluster: Vec<u32>,
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
    /// Scopes the commit would delete more of than the policy's floor allows (see
    /// [`Prune`](crate::policy::Prune)): the rollout is refused before anything is written.
    pub mass_deletes: Vec<MassDelete>,
    /// When planned from a partial view of live (objects read one by one before the caches
    /// have listed the fleet): the only sequence, and the positions before which, its ops are
    /// known. The engine starts nothing at or past it until handed a whole plan.
    known: Option<(Seq, u32)>,
}

/// The cluster position of a Machine whose Cluster the commit does not render.
pub const NO_CLUSTER: u32 = u32::MAX;

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
fn mass_deletes(
    live: &[FleetObject],
    fleet: &str,
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
    let deleted: std::collections::HashSet<(Kind, &str)> = ids
        .iter()
        .zip(ops)
        .filter(|(_, op)| **op == Some(Op::Delete))
        .filter_map(|(id, _)| Some((id.fleet_kind()?, id.name.as_str())))
        .collect();
    for o in live {
        if o.kind() == Kind::RolloutPolicy || !diff::owned_by(o, fleet) {
            continue;
        }
        let gone = deleted.contains(&(o.kind(), o.name()));
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
    /// The fleet's name: only objects labelled as its own are deleted.
    pub fleet: &'a str,
    /// The commit's policy.
    pub policy: &'a Policy,
    /// On resume, the orphans the rollout covers (from the persisted state); at start,
    /// `None`: they are found in `live`.
    pub orphans: Option<&'a [ObjectRef]>,
}

type Key<'a> = (Kind, &'a str);

fn key(object: &FleetObject) -> Key<'_> {
    (object.kind(), object.name())
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
        let desired_keys: std::collections::HashSet<Key<'_>> =
            desired.iter().map(|o| key(o)).collect();
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
        let base_keys: std::collections::HashSet<Key<'_>> =
            base.into_iter().flatten().map(key).collect();
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
                            && diff::owned_by(o, fleet)
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

        let machine_cluster = machines
            .iter()
            .map(|m| match m {
                FleetObject::Machine(m) => {
                    let ns = m.metadata.namespace.as_deref().unwrap_or_default();
                    orders[1]
                        .position(&ObjectRef::new(Kind::Cluster, ns, &m.spec.cluster))
                        .unwrap_or(NO_CLUSTER)
                }
                _ => NO_CLUSTER,
            })
            .collect();
        let mut plan = Plan {
            orphans,
            orphans_left,
            machine_cluster,
            ..Plan::default()
        };
        let mut in_use = None;
        let mut package_ops = Vec::with_capacity(packages.len());
        for want in &packages {
            let have = live_by.get(&key(want)).copied();
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
            .map(|want| diff::op(want, live_by.get(&key(want)).copied(), last(want)))
            .collect();
        let changing: std::collections::HashSet<&str> = clusters
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
        let high_risk: std::collections::HashSet<&str> = packages
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
            let have = id
                .fleet_kind()
                .and_then(|kind| live_by.get(&(kind, id.name.as_str())).copied());
            delete_ops.push(match have {
                Some(have) if diff::owned_by(have, fleet) && diff::prune_disabled(have) => {
                    plan.kept.push(have.id());
                    None
                }
                Some(have) if diff::owned_by(have, fleet) => Some(Op::Delete),
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

const DELETE_ORDER: [Kind; 4] = [
    Kind::Machine,
    Kind::Cluster,
    Kind::MachinePackageVersion,
    Kind::ClusterPackageVersion,
];

/// One stage (a wave) of a rollout: a range of its sequence's order, fixed when the rollout
/// starts. Persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// The sequence.
    pub seq: Seq,
    /// `machines/canary`, `clusters/wave-2`, `packages`, `deletes`.
    pub name: String,
    /// The first position of the sequence's order in the stage.
    pub start: u32,
    /// One past the last.
    pub end: u32,
    /// The changes in the range when the rollout started: the wave's size for the breaker.
    pub size: u32,
    /// Most changes in flight (started, not yet healthy) at once.
    pub max_unavailable: u32,
    /// How long the stage must stay healthy before the next starts (ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bake_ms: u64,
    /// Hold after the stage until approved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StageSpec {
    /// The bake time.
    pub fn bake(&self) -> Duration {
        Duration::from_millis(self.bake_ms)
    }
}

fn waves(
    stages: &mut Vec<StageSpec>,
    seq: Seq,
    changed: &[u32],
    len: u32,
    policy: &SequencePolicy,
) {
    let total = changed.len();
    let max_unavailable = policy.max_unavailable.of(total).max(1);
    let mut done = 0;
    let mut start = 0;
    let last = policy.waves.len() - 1;
    for (i, wave) in policy.waves.iter().enumerate() {
        // The last wave takes whatever is left, whatever its size says.
        let target = if i == last {
            total
        } else {
            wave.size.of(total).max(done)
        };
        if target == done {
            continue;
        }
        let end = if target == total {
            len
        } else {
            changed[target] // the first change of the next wave
        };
        let size = target - done;
        // A wave the policy leaves unnamed is called by its place among the waves that run,
        // so that empty waves leave no gaps: `canary`, `wave-2`, not `canary`, `wave-4`.
        let name = match &wave.name {
            Some(name) => name.clone(),
            None => format!(
                "wave-{}",
                stages.iter().filter(|s| s.seq == seq).count() + 1
            ),
        };
        stages.push(StageSpec {
            seq,
            name: format!("{}/{name}", seq.name()),
            start,
            end,
            size: size as u32,
            max_unavailable: max_unavailable.min(size) as u32,
            bake_ms: wave.bake.as_millis() as u64,
            pause: wave.pause && i != last,
        });
        done = target;
        start = end;
        if done == total {
            break;
        }
    }
}

/// Whether the Machine `want` points a component at one of `versions` that `have` does not
/// run.
fn moves_to(
    want: &FleetObject,
    have: Option<&FleetObject>,
    versions: &std::collections::HashSet<&str>,
) -> bool {
    let (FleetObject::Machine(w), Some(FleetObject::Machine(h))) = (want, have) else {
        return false;
    };
    !versions.is_empty()
        && w.spec.packages.iter().any(|(component, version)| {
            versions.contains(version.as_str())
                && h.spec.packages.get(component.as_str()) != Some(version)
        })
}

/// The failure domain of an object: a spec field (`idc`) or, failing that, a label.
pub fn domain(object: &FleetObject, spread_by: &str) -> String {
    if let FleetObject::Machine(m) = object
        && spread_by == "idc"
    {
        return m.spec.idc.clone();
    }
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(spread_by))
        .cloned()
        .unwrap_or_default()
}

/// Orders objects so that every prefix is spread evenly across failure domains: round robin
/// over the domains (in name order), each domain in name order.
fn spread<'a>(objects: Vec<&'a FleetObject>, spread_by: Option<&str>) -> Vec<&'a FleetObject> {
    let Some(spread_by) = spread_by else {
        return objects;
    };
    let mut domains: BTreeMap<String, Vec<&FleetObject>> = BTreeMap::new();
    for object in objects {
        domains
            .entry(domain(object, spread_by))
            .or_default()
            .push(object);
    }
    let total = domains.values().map(Vec::len).sum();
    let mut queues: Vec<std::vec::IntoIter<&FleetObject>> =
        domains.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for q in &mut queues {
            if let Some(o) = q.next() {
                out.push(o);
            }
        }
    }
    out
}

/// The budget class a change spends from, if any (package versions are inert).
pub fn class(kind: Option<Kind>, op: Op) -> Option<BudgetClass> {
    match (kind?, op) {
        (Kind::Machine, Op::Create | Op::Update) => Some(BudgetClass::MachineUpdate),
        (Kind::Machine, Op::Reinstall) => Some(BudgetClass::MachineReinstall),
        (Kind::Machine, Op::Delete) => Some(BudgetClass::MachineDelete),
        (Kind::Cluster, _) => Some(BudgetClass::ClusterUpdate),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use endstate_api::{Machine, MachineSpec};

    use super::*;
    use crate::policy::{Amount, WaveSpec};

    fn machine(name: &str, idc: &str, kubelet: &str) -> FleetObject {
        let mut m = Machine::new(
            name,
            MachineSpec {
                cluster: "c".into(),
                ip: "10.0.0.1".into(),
                hostname: name.into(),
                idc: idc.into(),
                packages: [("kubelet".to_owned(), kubelet.to_owned())].into(),
                readiness_gates: None,
                unschedulable: None,
                os_generation: None,
            },
        );
        m.metadata.namespace = Some("ns".into());
        m.metadata.labels = Some([(crate::live::OWNER_LABEL.to_owned(), "f".to_owned())].into());
        m.into()
    }

    fn fleet(n: usize, kubelet: &str) -> Vec<FleetObject> {
        (0..n)
            .map(|i| machine(&format!("m-{i:02}"), ["a", "b", "c"][i % 3], kubelet))
            .collect()
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.machines.spread_by = Some("idc".into());
        p.machines.waves = [
            Amount::Count(1),
            Amount::Percent(50.0),
            Amount::Percent(100.0),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, size)| WaveSpec {
            name: Some(format!("w{i}")),
            size,
            bake: Duration::ZERO,
            pause: false,
        })
        .collect();
        p
    }

    /// With two changes the default waves `1`, `5%`, `25%`, `100%` run only the first and
    /// the last: they are `canary` and `wave-2`, the second wave that runs.
    #[test]
    fn unnamed_waves_are_numbered_among_the_waves_that_run() {
        let policy = Policy::default();
        let plan = Plan::new(Inputs {
            desired: &fleet(2, "k2"),
            base: None,
            live: &fleet(2, "k1"),
            fleet: "f",
            policy: &policy,
            orphans: None,
        });
        let names: Vec<String> = plan.stages(&policy).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["machines/canary", "machines/wave-2"]);

        // A name the policy gives is kept as it is, even the one its place would give it.
        let mut named = Policy::default();
        named.machines.waves.truncate(2);
        named.machines.waves.push(WaveSpec {
            name: Some("wave-3".into()),
            size: Amount::Percent(100.0),
            bake: Duration::ZERO,
            pause: false,
        });
        let names: Vec<String> = plan.stages(&named).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["machines/canary", "machines/wave-3"]);
    }

    fn package(name: &str, risk: Option<Risk>) -> FleetObject {
        let mut p = endstate_api::MachinePackageVersion::new(
            name,
            endstate_api::MachinePackageVersionSpec {
                package_name: "kubelet".into(),
                version: name.into(),
                install: endstate_api::package::InstallSource {
                    url: format!("https://example.internal/{name}.rpm"),
                    sha256: "0".repeat(64),
                },
                config: None,
                config_maps: None,
                risk,
            },
        );
        p.metadata.namespace = Some("ns".into());
        p.into()
    }

    /// A Machine moving to a `risk: high` package version is planned as a reinstall: its
    /// sequence and its budget class; one that stays on it, or moves to a low-risk one, is not.
    #[test]
    fn a_move_to_a_high_risk_package_version_is_planned_with_the_reinstalls() {
        let mut desired = fleet(6, "k1");
        for m in desired.iter_mut().take(2) {
            if let FleetObject::Machine(m) = m {
                *Arc::make_mut(m).spec.packages.get_mut("kubelet").unwrap() = "k2".into();
            }
        }
        if let FleetObject::Machine(m) = &mut desired[2] {
            *Arc::make_mut(m).spec.packages.get_mut("kubelet").unwrap() = "k3".into();
        }
        let live = fleet(6, "k1");
        desired.push(package("k1", None));
        desired.push(package("k2", Some(Risk::High)));
        desired.push(package("k3", Some(Risk::Low)));
        let plan = Plan::new(Inputs {
            desired: &desired,
            base: None,
            live: &live,
            fleet: "f",
            policy: &policy(),
            orphans: None,
        });
        let machine_changes: Vec<(Seq, String, Op)> = plan
            .changes()
            .filter(|(seq, _, _)| *seq != Seq::Packages)
            .map(|(seq, id, op)| (seq, id.name.clone(), op))
            .collect();
        assert_eq!(
            machine_changes,
            vec![
                (Seq::Machines, "m-02".to_owned(), Op::Update),
                (Seq::Reinstalls, "m-00".to_owned(), Op::Reinstall),
                (Seq::Reinstalls, "m-01".to_owned(), Op::Reinstall),
            ]
        );
        assert_eq!(
            class(Some(Kind::Machine), Op::Reinstall),
            Some(BudgetClass::MachineReinstall)
        );
        // Once there, the Machine's next low-risk change is an update again.
        let there = desired[..6].to_vec();
        let mut next = there.clone();
        if let FleetObject::Machine(m) = &mut next[0] {
            Arc::make_mut(m).spec.unschedulable = Some(true);
        }
        next.extend(desired[6..].iter().cloned());
        let plan = Plan::new(Inputs {
            desired: &next,
            base: None,
            live: &there,
            fleet: "f",
            policy: &policy(),
            orphans: None,
        });
        assert_eq!(plan.count(Op::Update), 1);
        assert_eq!(plan.count(Op::Reinstall), 0);
    }

    #[test]
    fn the_order_does_not_depend_on_live_and_waves_cut_the_changes() {
        let desired = fleet(12, "k2");
        let mut live = fleet(12, "k1");
        // Half of the fleet is at the commit already.
        for object in live.iter_mut().skip(6) {
            *object = desired[desired.iter().position(|d| d.id() == object.id()).unwrap()].clone();
        }
        let inputs = |live: &[FleetObject]| {
            Plan::new(Inputs {
                desired: &desired,
                base: None,
                live,
                fleet: "f",
                policy: &policy(),
                orphans: None,
            })
        };
        let plan = inputs(&live);
        let fresh = inputs(&[]);
        let order = |p: &Plan| p.order(Universe::Machines).ids.clone();
        assert_eq!(order(&plan), order(&fresh));
        // Round robin over idcs.
        let idcs: Vec<String> = order(&plan)
            .iter()
            .map(|id| {
                let o = desired.iter().find(|d| d.id() == *id).unwrap();
                domain(o, "idc")
            })
            .collect();
        assert_eq!(&idcs[..4], ["a", "b", "c", "a"]);
        assert_eq!(plan.count(Op::Update), 6);
        assert_eq!(fresh.count(Op::Create), 12);
        let stages = plan.stages(&policy());
        let sizes: Vec<u32> = stages.iter().map(|s| s.size).collect();
        assert_eq!(sizes, [1, 2, 3]);
        // The ranges cover the whole order, and each holds its size in changes.
        assert_eq!(stages[0].start, 0);
        assert_eq!(stages.last().unwrap().end, 12);
        for pair in stages.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for stage in &stages {
            let n = (stage.start..stage.end)
                .filter(|p| plan.op(stage.seq, *p).is_some())
                .count();
            assert_eq!(n as u32, stage.size, "{stage:?}");
        }
    }

    #[test]
    fn deletes_come_from_the_base_and_orphans_are_bounded() {
        let base = fleet(6, "k1");
        let desired = fleet(3, "k1");
        let mut live = base.clone();
        let mut orphan = machine("zz-orphan", "a", "k1");
        orphan.meta_mut().name = Some("zz-orphan".into());
        live.push(orphan);
        let plan = Plan::new(Inputs {
            desired: &desired,
            base: Some(&base),
            live: &live,
            fleet: "f",
            policy: &policy(),
            orphans: None,
        });
        let deletes: Vec<&str> = plan
            .changes()
            .filter(|(_, _, op)| *op == Op::Delete)
            .map(|(_, id, _)| id.name.as_str())
            .collect();
        assert_eq!(deletes, ["m-03", "m-04", "m-05", "zz-orphan"]);
        assert_eq!(plan.orphans.len(), 1);
        // On resume, one deleted meanwhile: its position stays and it is skipped.
        live.retain(|o| o.name() != "m-04");
        let resumed = Plan::new(Inputs {
            desired: &desired,
            base: Some(&base),
            live: &live,
            fleet: "f",
            policy: &policy(),
            orphans: Some(&plan.orphans),
        });
        assert_eq!(
            resumed.order(Universe::Deletes).ids,
            plan.order(Universe::Deletes).ids
        );
        assert_eq!(resumed.op(Seq::Deletes, 1), None);
        assert_eq!(resumed.op(Seq::Deletes, 3), Some(Op::Delete));
    }
}
