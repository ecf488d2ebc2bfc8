//! The report: what merging a head would do, as data — the JSON of `endstate plan -o json`,
//! in a schema that is versioned and committed (`docs/plan.schema.json`; a test keeps the two
//! equal).

use std::collections::BTreeMap;

use endstate_core::Kind;
use endstate_rollout::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::risk::Risk;

/// The schema's version: bumped on any change a reader could notice.
pub const VERSION: u32 = 2;

/// What merging the head would do.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// The schema's version (2).
    pub version: u32,
    /// The Git remote (with `--local`, the work tree's repository).
    pub repo: String,
    /// The planned ref (`--head`), or `working tree` with `--local`.
    pub branch: String,
    /// The overlay inside the repository.
    pub path: String,
    /// The namespace of the fleet's objects.
    pub namespace: String,
    /// The planned commit (with `--local`, the commit the work tree is at, its changes on top).
    pub head: String,
    /// The work tree planned, with `--local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// What the head is planned against.
    pub against: Against,
    /// The commit planned against (`against: Commit`; with `Live`, the Fleet's last applied
    /// commit, whose objects tell which fields endstate set); absent when everything is new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The Fleet planned against, with `--live`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// When the rollout is taken to start: windows and budgets are evaluated from it (`--now`).
    pub now: String,
    /// `NoChanges` (exit 0), `Changes` (exit 1), `Invalid` or `Refused` (exit 2).
    pub outcome: Outcome,
    /// Why the head cannot be applied, each with where when it is known.
    pub problems: Vec<Problem>,
    /// What a reviewer must look at first: refusals, then high-risk work.
    pub risks: Vec<Risk>,
    /// The changes by operation, in all and per kind.
    pub summary: Summary,
    /// Where the changes land.
    pub blast_radius: BlastRadius,
    /// The waves, in the order they run.
    pub waves: Vec<Wave>,
    /// How long the rollout takes at worst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// What the rollout spends from each budget class it touches.
    pub budgets: Vec<Budget>,
    /// Whether the budgets were taken as unspent (without `--live` nothing tells what other
    /// rollouts spent).
    pub budgets_assumed_unspent: bool,
    /// The maintenance windows changes start in (UTC); empty: always.
    pub windows: Vec<String>,
    /// How long a change has to become healthy before it counts as failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_timeout_seconds: Option<u64>,
    /// The metric gates checked while a gated wave bakes, by name.
    pub metric_gates: Vec<String>,
    /// When the breaker trips, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// The changes grouped by their patch (the same fields changed the same way, the
    /// object's identity set aside), each shown for its first member in wave order; the first
    /// `--diffs` groups.
    pub diffs: Vec<Diff>,
    /// Groups not shown.
    pub diffs_left_out: u64,
}

/// What is planned, against what: the report's heading.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The Git remote (with a work tree, its repository).
    pub repo: String,
    /// The planned ref, or `working tree`.
    pub branch: String,
    /// The overlay inside the repository.
    pub path: String,
    /// The namespace of the fleet's objects.
    pub namespace: String,
    /// The planned commit (with a work tree, the commit it is at).
    pub head: String,
    /// The work tree planned, if one is.
    pub local: Option<String>,
    /// What the head is planned against.
    pub against: Against,
    /// The commit planned against, or the Fleet's last applied commit.
    pub base: Option<String>,
    /// The Fleet planned against: its live objects, budgets and quarantine.
    pub fleet: Option<String>,
}

impl PlanReport {
    /// The report on `subject` before anything is found, the rollout taken to start at `now`.
    /// Without a Fleet the budgets are taken as unspent: nothing tells what other rollouts
    /// spent.
    pub fn new(subject: Subject, now: Time) -> PlanReport {
        let Subject {
            repo,
            branch,
            path,
            namespace,
            head,
            local,
            against,
            base,
            fleet,
        } = subject;
        PlanReport {
            version: VERSION,
            repo,
            branch,
            path,
            namespace,
            head,
            local,
            against,
            base,
            budgets_assumed_unspent: fleet.is_none(),
            fleet,
            now: now.rfc3339(),
            outcome: Outcome::NoChanges,
            problems: Vec::new(),
            risks: Vec::new(),
            summary: Summary::default(),
            blast_radius: BlastRadius::default(),
            waves: Vec::new(),
            estimate: None,
            budgets: Vec::new(),
            windows: Vec::new(),
            gate_timeout_seconds: None,
            metric_gates: Vec::new(),
            breaker: None,
            diffs: Vec::new(),
            diffs_left_out: 0,
        }
    }

    /// The report as `endstate plan -o json` prints it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises") + "\n"
    }
}

/// How the plan ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    /// Merging writes nothing.
    NoChanges,
    /// Merging changes the fleet.
    Changes,
    /// The head (or the base) does not render or validate.
    Invalid,
    /// The head renders, and the controller would refuse it.
    Refused,
}

/// What the head is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Against {
    /// Another commit's render (`--base`, or the merge base with `--target-branch`).
    Commit,
    /// The live objects of a Fleet's namespace, its budgets and quarantine (`--live`).
    Live,
    /// Nothing: every object is a create (`--no-base`).
    Nothing,
}

/// A problem with the head.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `Invalid` or the refusal's reason (`ImmutablePackageVersion`, `MassDelete`,
    /// `Quarantined`, `HistoryRewritten`, `Unverified`).
    pub reason: String,
    /// The file, when the problem has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem of a render, where the renderer knows where.
    pub fn invalid(file: Option<String>, line: Option<usize>, message: String) -> Problem {
        Problem {
            reason: "Invalid".to_owned(),
            file,
            line: line.map(|l| l as u64),
            message,
        }
    }
}

/// Changes by operation.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub creates: u64,
    pub updates: u64,
    pub reinstalls: u64,
    pub deletes: u64,
    /// Objects a delete would remove that `fleet.endstate.dev/prune: disabled` keeps.
    pub kept_by_prune: u64,
    /// The same counts per kind (`Machine`, `Cluster`, `MachinePackageVersion`, …).
    #[schemars(with = "BTreeMap<String, Counts>")]
    pub by_kind: BTreeMap<Kind, Counts>,
}

/// Changes of one kind by operation.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub creates: u64,
    pub updates: u64,
    pub reinstalls: u64,
    pub deletes: u64,
}

/// Where the changes land.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlastRadius {
    /// Per Cluster (by name): its changed Machines, and the change to the Cluster itself.
    pub clusters: Vec<ClusterRadius>,
    /// Per idc: changed Machines.
    pub idcs: Vec<Count>,
    /// Per package (component) and move between versions: the objects that make it.
    pub package_versions: Vec<PackageMove>,
}

/// One Cluster's share of the change.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRadius {
    /// The Cluster's name (a Machine's `spec.cluster`).
    pub name: String,
    /// Its Machines the change touches.
    pub machines: u64,
    /// The operation on the Cluster object itself, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A count under a name.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    pub name: String,
    pub machines: u64,
}

/// Objects moving one component from one package version to another.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageMove {
    /// `Machine` (a component of `spec.packages`) or `Cluster` (`spec.packageVersion`).
    #[schemars(with = "String")]
    pub kind: Kind,
    /// The component (`kubelet`); `packageVersion` for Clusters.
    pub package: String,
    /// The version it leaves; absent for new objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The version it moves to; absent when the component is dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Whether the version moved to is marked `risk: high`.
    pub high_risk: bool,
    /// How many objects make this move.
    pub objects: u64,
}

/// One wave.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// 1-based, across the whole plan.
    pub number: u64,
    /// `packages`, `clusters/<wave>`, `machines/<wave>`, `reinstalls/<wave>`,
    /// `deletes/<wave>`: the name status, logs and `endstate approve --wave` use.
    pub name: String,
    /// Changes in the wave.
    pub size: u64,
    /// Whether its changes must report healthy (and start only inside a window).
    pub gated: bool,
    /// Changes in flight at once, for waves that are gated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u64>,
    /// How long the wave must stay healthy before the next starts.
    pub bake_seconds: u64,
    /// Whether the rollout holds for approval after the wave.
    pub pause: bool,
    /// Changes by operation (`create`, `update`, `reinstall`, `delete`).
    pub ops: BTreeMap<String, u64>,
    /// The label or field the wave is spread by (`idc`).
    pub spread_by: String,
    /// Changes per failure domain (`""`: objects without one).
    pub domains: BTreeMap<String, u64>,
    /// The earliest its first change can start (after the waves before it, inside a window,
    /// with budget room; approvals taken as given at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earliest_start: Option<String>,
    /// When it is done at worst: every round of `maxUnavailable` changes taking the whole
    /// gate timeout, then the bake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_end: Option<String>,
    /// Rounds of at most `maxUnavailable` changes.
    pub rounds: u64,
    /// Time waiting for a maintenance window to open.
    pub window_wait_seconds: u64,
    /// Time waiting for budget room.
    pub budget_wait_seconds: u64,
    /// Why the wave never finishes, when it cannot (a budget of zero, no window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// The duration of the whole rollout, at worst.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// When the first change starts.
    pub start: String,
    /// When the last wave is done; absent when a wave cannot finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// From `now` to `end`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// Waves after which the rollout holds for approval: not counted in the time.
    pub approvals: u64,
}

/// One budget class the rollout spends from.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// `machine-update`, `machine-reinstall`, `machine-delete`, `cluster-update`.
    pub class: String,
    /// The plan's changes in the class.
    pub spends: u64,
    /// Spent already within the window at `now` (zero when assumed unspent).
    pub spent: u64,
    /// The class's limit per window; absent when unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    /// Whether the rollout has to wait for room in the class.
    pub waits: bool,
    /// How long it waits for it, in all.
    pub wait_seconds: u64,
}

/// The diff of one changed object.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// `create`, `update`, `reinstall`, `delete`.
    pub op: String,
    /// `Kind/namespace/name`.
    pub object: String,
    /// The changed fields (updates and reinstalls).
    pub paths: Vec<String>,
    /// The unified diff of the object's YAML.
    pub unified: String,
    /// Changed objects with this same patch, the one shown included.
    pub members: u64,
}

/// The committed schema's text.
pub fn schema() -> String {
    let schema = schemars::schema_for!(PlanReport);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

#[cfg(test)]
mod tests {
    /// The types and `docs/plan.schema.json` never drift apart.
    #[test]
    fn the_committed_schema_is_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/plan.schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::schema(),
            "docs/plan.schema.json is stale: regenerate it with `cargo run -q -- plan --schema > docs/plan.schema.json`"
        );
    }
}
