//! A change set cut into stages: package versions first (inert), then Clusters and Machines
//! in their own wave sequences, then reinstalls, then deletes.
//!
//! A plan is data. The same change set, policy and desired objects always give the same plan,
//! and `endstate plan` prints it for review.

use std::collections::BTreeMap;
use std::time::Duration;

use endstate_core::{FleetObject, ObjectRef};
use serde::{Deserialize, Serialize};

use crate::diff::{Change, ChangeSet, Op};
use crate::policy::{Policy, Sequence};

/// What a stage changes, which decides how it is gated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageKind {
    /// New or changed package versions: inert until something points at them, not gated.
    Packages,
    /// Clusters: gated on the cluster operator's status.
    Clusters,
    /// Machine creates and updates: gated on the machine operator's status.
    Machines,
    /// Machine reinstalls (`osGeneration` bumps): gated, high risk.
    Reinstalls,
    /// Deletes: done when the object is gone.
    Deletes,
}

impl StageKind {
    /// Whether objects of the stage must report health for the new revision.
    pub fn gated(self) -> bool {
        matches!(
            self,
            StageKind::Clusters | StageKind::Machines | StageKind::Reinstalls
        )
    }
}

/// One stage (a wave) of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// `machines/canary`, `clusters/wave-2`, `packages`, `deletes`.
    pub name: String,
    /// What it changes.
    pub kind: StageKind,
    /// The changes, in the order they start.
    pub changes: Vec<Change>,
    /// How long the stage must stay healthy before the next starts.
    pub bake: Duration,
    /// Hold after the stage until approved.
    pub pause: bool,
    /// Most changes in flight (started, not yet healthy) at once.
    pub max_unavailable: usize,
}

/// The stages of a rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// In order.
    pub stages: Vec<Stage>,
}

impl Plan {
    /// How many objects change, package versions excluded.
    pub fn changed(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| s.kind != StageKind::Packages)
            .map(|s| s.changes.len())
            .sum()
    }

    /// Every change of the plan.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.stages.iter().flat_map(|s| &s.changes)
    }

    /// A review of the plan: one line per stage, with its spread across failure domains.
    pub fn summary<'a>(
        &self,
        lookup: &dyn Fn(&ObjectRef) -> Option<&'a FleetObject>,
        spread_by: &str,
    ) -> String {
        let mut out = String::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let mut domains: BTreeMap<String, usize> = BTreeMap::new();
            for change in &stage.changes {
                if let Some(obj) = lookup(&change.id) {
                    *domains.entry(domain(obj, spread_by)).or_default() += 1;
                }
            }
            let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
            for change in &stage.changes {
                *ops.entry(change.op.name()).or_default() += 1;
            }
            let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
            out.push_str(&format!(
                "{:>2}. {:<20} {:>6} objects ({})",
                i + 1,
                stage.name,
                stage.changes.len(),
                ops.join(", ")
            ));
            if stage.kind.gated() {
                out.push_str(&format!(", {} at a time", stage.max_unavailable));
            }
            if !stage.bake.is_zero() {
                out.push_str(&format!(", bake {}", crate::time::human(stage.bake)));
            }
            if stage.pause {
                out.push_str(", then hold for approval");
            }
            if domains.len() > 1 || (domains.len() == 1 && !domains.contains_key("")) {
                let d: Vec<String> = domains.iter().map(|(k, n)| format!("{k}:{n}")).collect();
                out.push_str(&format!("\n      {spread_by}: {}", d.join(" ")));
            }
            out.push('\n');
        }
        out
    }
}

/// Cuts a change set into stages. `desired` resolves objects for spreading (deleted objects
/// are spread by their live copy, when given).
pub fn plan<'a>(
    changes: &ChangeSet,
    policy: &Policy,
    lookup: &dyn Fn(&ObjectRef) -> Option<&'a FleetObject>,
) -> Plan {
    let mut packages = Vec::new();
    let mut clusters = Vec::new();
    let mut machines = Vec::new();
    let mut reinstalls = Vec::new();
    let mut deletes = Vec::new();
    let mut package_deletes = Vec::new();
    for change in &changes.changes {
        let is_package = matches!(
            change.id.kind.as_str(),
            "MachinePackageVersion" | "ClusterPackageVersion"
        );
        match (change.op, change.id.kind.as_str()) {
            (Op::Delete, _) if is_package => package_deletes.push(change.clone()),
            (Op::Delete, _) => deletes.push(change.clone()),
            _ if is_package => packages.push(change.clone()),
            (_, "Cluster") => clusters.push(change.clone()),
            (Op::Reinstall, _) => reinstalls.push(change.clone()),
            _ => machines.push(change.clone()),
        }
    }
    let mut stages = Vec::new();
    if !packages.is_empty() {
        stages.push(Stage {
            name: "packages".to_owned(),
            kind: StageKind::Packages,
            max_unavailable: packages.len(),
            changes: packages,
            bake: Duration::ZERO,
            pause: false,
        });
    }
    waves(
        &mut stages,
        "clusters",
        StageKind::Clusters,
        clusters,
        &policy.clusters,
        lookup,
    );
    waves(
        &mut stages,
        "machines",
        StageKind::Machines,
        machines,
        &policy.machines,
        lookup,
    );
    waves(
        &mut stages,
        "reinstalls",
        StageKind::Reinstalls,
        reinstalls,
        &policy.machines,
        lookup,
    );
    // Machines go before the package versions they pointed at.
    deletes.sort_by_key(|c| c.id.kind != "Machine");
    deletes.extend(package_deletes);
    if !deletes.is_empty() {
        stages.push(Stage {
            name: "deletes".to_owned(),
            kind: StageKind::Deletes,
            max_unavailable: deletes.len(),
            changes: deletes,
            bake: Duration::ZERO,
            pause: false,
        });
    }
    Plan { stages }
}

fn waves<'a>(
    stages: &mut Vec<Stage>,
    prefix: &str,
    kind: StageKind,
    changes: Vec<Change>,
    sequence: &Sequence,
    lookup: &dyn Fn(&ObjectRef) -> Option<&'a FleetObject>,
) {
    if changes.is_empty() {
        return;
    }
    let ordered = spread(changes, sequence.spread_by.as_deref(), lookup);
    let total = ordered.len();
    let max_unavailable = sequence.max_unavailable.of(total).max(1);
    let mut rest = ordered.into_iter();
    let mut done = 0;
    let last = sequence.waves.len() - 1;
    for (i, wave) in sequence.waves.iter().enumerate() {
        // The last wave takes whatever is left, whatever its size says.
        let target = if i == last {
            total
        } else {
            wave.size.of(total).max(done)
        };
        if target == done {
            continue;
        }
        let changes: Vec<Change> = rest.by_ref().take(target - done).collect();
        done = target;
        stages.push(Stage {
            name: format!("{prefix}/{}", wave.name),
            kind,
            max_unavailable: max_unavailable.min(changes.len()),
            changes,
            bake: wave.bake,
            pause: wave.pause && i != last,
        });
        if done == total {
            break;
        }
    }
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

/// Orders changes so that every prefix is spread evenly across failure domains: round robin
/// over the domains (in name order), each domain in name order.
fn spread<'a>(
    changes: Vec<Change>,
    spread_by: Option<&str>,
    lookup: &dyn Fn(&ObjectRef) -> Option<&'a FleetObject>,
) -> Vec<Change> {
    let Some(spread_by) = spread_by else {
        return changes;
    };
    let mut domains: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for change in changes {
        let key = lookup(&change.id)
            .map(|o| domain(o, spread_by))
            .unwrap_or_default();
        domains.entry(key).or_default().push(change);
    }
    let total = domains.values().map(Vec::len).sum();
    let mut queues: Vec<std::vec::IntoIter<Change>> =
        domains.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for q in &mut queues {
            if let Some(c) = q.next() {
                out.push(c);
            }
        }
    }
    out
}
