//! The report's content, from the engine's own plan: the summary, where the changes land, the
//! waves with their worst-case times under the budgets and windows, what each budget class
//! spends, what deserves a reviewer's eye, and the diffs grouped by patch.

use std::collections::{BTreeMap, HashMap, HashSet};

use endstate_api::package::Risk as PackageRisk;
use endstate_core::{FleetObject, Kind, ObjectRef};
use endstate_rollout::Time;
use endstate_rollout::budget::{BudgetClass, Budgets};
use endstate_rollout::diff::{self, Op};
use endstate_rollout::plan::{Inputs, Plan, Seq};
use endstate_rollout::policy::Policy;
use endstate_rollout::schedule;
use endstate_rollout::time::human;

use super::report::{
    BlastRadius, Budget, ClusterRadius, Count, Counts, Diff, Estimate, Outcome, PackageMove,
    PlanReport, Problem, Risk, Summary, Wave,
};

/// What the plan is made from.
pub struct Facts<'a> {
    /// The head's objects (its `RolloutPolicy` taken out).
    pub desired: &'a [FleetObject],
    /// The head's policy.
    pub policy: &'a Policy,
    /// The objects of the commit the fleet was last at, when known.
    pub base: Option<&'a [FleetObject]>,
    /// What the fleet has: the base's objects, or the cluster's live ones.
    pub live: &'a [FleetObject],
    /// The Fleet whose objects may be deleted.
    pub fleet: &'a str,
    /// What was spent already.
    pub budgets: &'a Budgets,
    /// When the rollout is taken to start.
    pub now: Time,
    /// How many distinct diffs to keep.
    pub diffs: usize,
}

/// A delete of more than this share of a kind's live objects is called out.
const LARGE_DELETE: f64 = 0.10;

/// Plans with the engine's planner and fills in `report`. Refusals the planner finds (a
/// package version in use changing, a delete over the policy's floor) make the outcome
/// `Refused`; the rest of the report is filled in all the same.
pub fn fill(report: &mut PlanReport, facts: &Facts<'_>) {
    let plan = Plan::new(Inputs {
        desired: facts.desired,
        base: facts.base,
        live: facts.live,
        fleet: facts.fleet,
        policy: facts.policy,
        orphans: None,
    });
    // A work tree's files are not a commit yet.
    let head = match &report.local {
        Some(_) => "the working tree".to_owned(),
        None => report.head.clone(),
    };
    for (refusal, objects) in endstate_controller::admit::changes(&head, &plan, facts.policy) {
        refuse(report, &refusal, objects);
    }
    let desired_by_id: HashMap<ObjectRef, &FleetObject> =
        facts.desired.iter().map(|o| (o.id(), o)).collect();
    let live_by_id: HashMap<ObjectRef, &FleetObject> =
        facts.live.iter().map(|o| (o.id(), o)).collect();
    let high_risk: HashSet<&str> = facts
        .desired
        .iter()
        .filter(|o| {
            matches!(o, FleetObject::MachinePackageVersion(p) if p.spec.risk() == PackageRisk::High)
        })
        .map(FleetObject::name)
        .collect();

    report.summary = summary(&plan);
    report.blast_radius = blast_radius(&plan, &desired_by_id, &live_by_id, &high_risk);
    report.windows = facts
        .policy
        .windows
        .iter()
        .map(ToString::to_string)
        .collect();
    report.gate_timeout_seconds = Some(facts.policy.gate_timeout.as_secs());
    report.metric_gates = facts
        .policy
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .collect();
    report.breaker = Some(breaker(facts.policy));
    risks(report, &plan, facts, &live_by_id);
    if plan.is_empty() {
        if report.outcome == Outcome::NoChanges && !report.problems.is_empty() {
            report.outcome = Outcome::Refused;
        }
        return;
    }
    if report.outcome == Outcome::NoChanges {
        report.outcome = Outcome::Changes;
    }

    let stages = plan.stages(facts.policy);
    let estimate = schedule::estimate(&plan, &stages, facts.policy, facts.budgets, facts.now);
    let lookup = |id: &ObjectRef| {
        desired_by_id
            .get(id)
            .or_else(|| live_by_id.get(id))
            .copied()
    };
    let spread = |seq: Seq| {
        let sequence = if seq == Seq::Clusters {
            &facts.policy.clusters
        } else {
            &facts.policy.machines
        };
        sequence
            .spread_by
            .clone()
            .unwrap_or_else(|| "idc".to_owned())
    };
    report.waves = stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let spread_by = spread(stage.seq);
            let (ops, domains) = plan.breakdown(stage, &lookup, &spread_by);
            let timing = estimate.waves.get(i);
            let seconds = |d: std::time::Duration| d.as_secs();
            Wave {
                number: i as u64 + 1,
                name: stage.name.clone(),
                size: u64::from(stage.size),
                gated: stage.seq.gated(),
                max_unavailable: stage
                    .seq
                    .gated()
                    .then_some(u64::from(stage.max_unavailable)),
                bake_seconds: stage.bake().as_secs(),
                pause: stage.pause,
                ops: ops
                    .into_iter()
                    .map(|(op, n)| (op.to_owned(), n as u64))
                    .collect(),
                spread_by,
                domains: domains.into_iter().map(|(d, n)| (d, n as u64)).collect(),
                earliest_start: timing.map(|t| t.start.rfc3339()),
                latest_end: timing
                    .filter(|t| t.blocked.is_none())
                    .map(|t| t.end.rfc3339()),
                rounds: timing.map_or(0, |t| t.rounds),
                window_wait_seconds: timing.map_or(0, |t| seconds(t.window_wait)),
                budget_wait_seconds: timing
                    .map_or(0, |t| t.budget_wait.values().map(|d| seconds(*d)).sum()),
                blocked: timing.and_then(|t| t.blocked.clone()),
            }
        })
        .collect();
    let end = estimate.end();
    report.estimate = estimate.waves.first().map(|first| Estimate {
        start: first.start.rfc3339(),
        end: end.map(Time::rfc3339),
        seconds: end.map(|e| e.since(facts.now).as_secs()),
        approvals: stages.iter().filter(|s| s.pause).count() as u64,
    });
    report.budgets = estimate
        .budgets
        .iter()
        .map(|b| Budget {
            class: b.class.as_str().to_owned(),
            spends: b.spends,
            spent: b.spent,
            limit: b.limit.map(|(limit, _)| limit),
            window_seconds: b.limit.map(|(_, window)| window.as_secs()),
            waits: !b.wait.is_zero(),
            wait_seconds: b.wait.as_secs(),
        })
        .collect();
    let (diffs, left_out) = grouped_diffs(&plan, &desired_by_id, &live_by_id, facts.diffs);
    report.diffs = diffs;
    report.diffs_left_out = left_out;
}

/// Records a refusal the controller would make, as a problem and as the first of the risks.
pub fn refuse(
    report: &mut PlanReport,
    refusal: &endstate_controller::refusal::Refusal,
    objects: usize,
) {
    report.outcome = Outcome::Refused;
    report.problems.push(Problem {
        reason: refusal.reason().to_owned(),
        file: None,
        line: None,
        message: refusal.to_string(),
    });
    report.risks.push(Risk {
        kind: refusal.reason().to_owned(),
        refused: true,
        objects: objects as u64,
        message: refusal.to_string(),
    });
}

fn summary(plan: &Plan) -> Summary {
    let mut by_kind: BTreeMap<String, Counts> = BTreeMap::new();
    for (_, id, op) in plan.changes() {
        let counts = by_kind.entry(id.kind.clone()).or_default();
        match op {
            Op::Create => counts.creates += 1,
            Op::Update => counts.updates += 1,
            Op::Reinstall => counts.reinstalls += 1,
            Op::Delete => counts.deletes += 1,
        }
    }
    Summary {
        creates: plan.count(Op::Create) as u64,
        updates: plan.count(Op::Update) as u64,
        reinstalls: plan.count(Op::Reinstall) as u64,
        deletes: plan.count(Op::Delete) as u64,
        kept_by_prune: plan.kept.len() as u64,
        by_kind,
    }
}

fn blast_radius(
    plan: &Plan,
    desired: &HashMap<ObjectRef, &FleetObject>,
    live: &HashMap<ObjectRef, &FleetObject>,
    high_risk: &HashSet<&str>,
) -> BlastRadius {
    let mut clusters: BTreeMap<String, (u64, Option<&'static str>)> = BTreeMap::new();
    let mut idcs: BTreeMap<String, u64> = BTreeMap::new();
    // (kind, package, from, to) → objects
    type Move = (&'static str, String, Option<String>, Option<String>);
    let mut moves: BTreeMap<Move, u64> = BTreeMap::new();
    for (_, id, op) in plan.changes() {
        let after = desired.get(id).copied();
        let before = live.get(id).copied();
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
                let components: std::collections::BTreeSet<&String> = m
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
                            .entry(("Machine", component.clone(), from, to))
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
                        .entry(("Cluster", "packageVersion".to_owned(), from, to))
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
            kind: kind.to_owned(),
            high_risk: to.as_deref().is_some_and(|t| high_risk.contains(t)),
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

/// The risks beyond the refusals, after them: reinstalls, moves to high-risk versions, large
/// deletes, deletes, Cluster changes, Machines held back.
fn risks(
    report: &mut PlanReport,
    plan: &Plan,
    facts: &Facts<'_>,
    live: &HashMap<ObjectRef, &FleetObject>,
) {
    let mut risks = Vec::new();
    let budget = |class: BudgetClass| match facts.policy.budget(class) {
        Some(b) => format!("{} per {}", b.limit, human(b.window)),
        None => "unlimited".to_owned(),
    };
    let s = &report.summary;
    if s.reinstalls > 0 {
        risks.push(Risk {
            kind: "Reinstall".to_owned(),
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
    for m in &report.blast_radius.package_versions {
        if let (true, Some(_), Some(to)) = (m.high_risk, &m.from, &m.to) {
            *high_risk.entry((&m.package, to)).or_default() += m.objects;
        }
    }
    for ((package, to), objects) in high_risk {
        risks.push(Risk {
            kind: "HighRiskPackageVersion".to_owned(),
            refused: false,
            objects,
            message: format!("{objects} Machines move {package} to {to}, marked risk: high"),
        });
    }
    // Deletes per kind, against what the fleet has of that kind.
    let mut have: BTreeMap<&str, u64> = BTreeMap::new();
    for o in live.values() {
        if o.kind() != Kind::RolloutPolicy && diff::owned_by(o, facts.fleet) {
            *have.entry(o.kind().as_str()).or_default() += 1;
        }
    }
    for (kind, counts) in &s.by_kind {
        if counts.deletes == 0 {
            continue;
        }
        let of = have.get(kind.as_str()).copied().unwrap_or(0);
        let large = of > 0 && counts.deletes as f64 > of as f64 * LARGE_DELETE;
        risks.push(Risk {
            kind: if large { "LargeDelete" } else { "Delete" }.to_owned(),
            refused: false,
            objects: counts.deletes,
            message: format!(
                "deletes {} of the {of} {kind}s the fleet has{}",
                counts.deletes,
                if large { ": more than a tenth" } else { "" }
            ),
        });
    }
    if let Some(c) = s.by_kind.get("Cluster") {
        let n = c.creates + c.updates + c.deletes;
        if n > 0 {
            risks.push(Risk {
                kind: "ClusterChange".to_owned(),
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
            kind: "HeldBack".to_owned(),
            refused: false,
            objects: *machines as u64,
            message: format!(
                "{machines} Machines of {cluster} are held back: their live Cluster reports Failed"
            ),
        });
    }
    report.risks.extend(risks);
    // Refusals first, whoever found them.
    report.risks.sort_by_key(|r| !r.refused);
}

/// The grouped diffs: one per distinct patch (the same fields changed the same way, the
/// object's identity set aside), shown for its first member in wave order; the first `keep`
/// groups, and how many were left out.
fn grouped_diffs(
    plan: &Plan,
    desired: &HashMap<ObjectRef, &FleetObject>,
    live: &HashMap<ObjectRef, &FleetObject>,
    keep: usize,
) -> (Vec<Diff>, u64) {
    let mut groups: Vec<Diff> = Vec::new();
    let mut by_patch: HashMap<String, usize> = HashMap::new();
    for (_, id, op) in plan.changes() {
        let before = live.get(id).copied();
        let after = desired.get(id).copied();
        let unified = diff::unified(before, after);
        let patch: String = unified
            .lines()
            .filter(|l| {
                (l.starts_with('+') || l.starts_with('-'))
                    && !l.starts_with("+++")
                    && !l.starts_with("---")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let key = format!("{}\n{patch}", op.name());
        if let Some(&i) = by_patch.get(&key) {
            groups[i].members += 1;
            continue;
        }
        by_patch.insert(key, groups.len());
        let paths = match (before, after) {
            (Some(b), Some(a)) => diff::changed_paths(a, b),
            _ => Vec::new(),
        };
        groups.push(Diff {
            op: op.name().to_owned(),
            object: id.to_string(),
            paths,
            unified,
            members: 1,
        });
    }
    let total = groups.len();
    groups.truncate(keep);
    let left = total.saturating_sub(groups.len()) as u64;
    (groups, left)
}

fn breaker(policy: &Policy) -> String {
    let t = &policy.breaker;
    let mut parts = Vec::new();
    if let Some(n) = t.per_wave {
        parts.push(format!("{n} failures in a wave"));
    }
    if let Some(r) = t.per_wave_ratio {
        parts.push(format!("{r}% of a wave"));
    }
    if let Some(n) = t.total {
        parts.push(format!("{n} failures in the rollout"));
    }
    if let Some(r) = t.total_ratio {
        parts.push(format!("{r}% of the rollout"));
    }
    format!("trips at {}", parts.join(" or "))
}
