//! The risks the plan itself shows, after the refusals: reinstalls, moves to high-risk
//! versions, large deletes, deletes, Cluster changes, Machines held back.

use std::collections::BTreeMap;

use endstate_core::Kind;
use endstate_rollout::budget::BudgetClass;
use endstate_rollout::plan::Plan;
use endstate_rollout::time::human;

use crate::facts::{Facts, Index};
use crate::report::{BlastRadius, Summary};
use crate::risk::{Risk, RiskKind};

/// A delete of more than this share of a kind's live objects is called out.
const LARGE_DELETE: f64 = 0.10;

/// The risks of `plan`, whose counts are `summary` and whose reach is `radius`.
pub fn risks(
    plan: &Plan,
    facts: &Facts<'_>,
    index: &Index<'_>,
    summary: &Summary,
    radius: &BlastRadius,
) -> Vec<Risk> {
    let mut risks = Vec::new();
    let budget = |class: BudgetClass| match facts.policy.budget(class) {
        Some(b) => format!("{} per {}", b.limit, human(b.window)),
        None => "unlimited".to_owned(),
    };
    let s = summary;
    if s.reinstalls > 0 {
        risks.push(Risk {
            kind: RiskKind::Reinstall,
            refused: false,
            objects: s.reinstalls,
            message: format!(
                "{} Machines are reinstalled or move to a risk: high package version (budget machine-reinstall: {})",
                s.reinstalls,
                budget(BudgetClass::MachineReinstall)
            ),
        });
    }
    // Moves of existing Machines to a high-risk version (those are reinstalls), per version.
    let mut high_risk: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for m in &radius.package_versions {
        if let (true, Some(_), Some(to)) = (m.high_risk, &m.from, &m.to) {
            *high_risk.entry((&m.package, to)).or_default() += m.objects;
        }
    }
    for ((package, to), objects) in high_risk {
        risks.push(Risk {
            kind: RiskKind::HighRiskPackageVersion,
            refused: false,
            objects,
            message: format!("{objects} Machines move {package} to {to}, marked risk: high"),
        });
    }
    // Deletes per kind, against what the fleet has of that kind.
    let mut have: BTreeMap<Kind, u64> = BTreeMap::new();
    for o in index.live.values() {
        if o.kind() != Kind::RolloutPolicy && endstate_core::ownership::owned_by(o, facts.fleet) {
            *have.entry(o.kind()).or_default() += 1;
        }
    }
    for (kind, counts) in &s.by_kind {
        if counts.deletes == 0 {
            continue;
        }
        let of = have.get(kind).copied().unwrap_or(0);
        let large = of > 0 && counts.deletes as f64 > of as f64 * LARGE_DELETE;
        risks.push(Risk {
            kind: if large {
                RiskKind::LargeDelete
            } else {
                RiskKind::Delete
            },
            refused: false,
            objects: counts.deletes,
            message: format!(
                "deletes {} of the {of} {kind}s the fleet has{}",
                counts.deletes,
                if large { ": more than a tenth" } else { "" }
            ),
        });
    }
    if let Some(c) = s.by_kind.get(&Kind::Cluster) {
        let n = c.creates + c.updates + c.deletes;
        if n > 0 {
            risks.push(Risk {
                kind: RiskKind::ClusterChange,
                refused: false,
                objects: n,
                message: format!(
                    "{n} Clusters change ({} creates, {} updates, {} deletes): control planes, before any Machine (budget cluster-update: {})",
                    c.creates,
                    c.updates,
                    c.deletes,
                    budget(BudgetClass::ClusterUpdate)
                ),
            });
        }
    }
    for (cluster, machines) in &plan.held {
        risks.push(Risk {
            kind: RiskKind::HeldBack,
            refused: false,
            objects: *machines as u64,
            message: format!(
                "{machines} Machines of {cluster} are held back: their live Cluster reports Failed"
            ),
        });
    }
    for foreign in &plan.foreign {
        risks.push(Risk {
            kind: RiskKind::OwnedByAnotherFleet,
            refused: false,
            objects: foreign.count as u64,
            message: format!("not written: {foreign}"),
        });
    }
    risks
}
