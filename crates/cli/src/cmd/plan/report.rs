//! `endstate plan -o json`: the plan as data, in a schema that is versioned and committed
//! (`docs/plan.schema.json`; a test keeps the two equal).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

/// The schema's version: bumped on any change a reader could notice.
pub const VERSION: u32 = 1;

/// What merging the head would do.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// The schema's version (1).
    pub version: u32,
    /// The Git remote.
    pub repo: String,
    /// The planned branch or ref.
    pub branch: String,
    /// The overlay inside the repository.
    pub path: String,
    /// The namespace of the fleet's objects.
    pub namespace: String,
    /// The planned commit.
    pub head: String,
    /// The commit planned against; absent when everything is new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `NoChanges` (exit 0), `Changes` (exit 1), `Invalid` or `Refused` (exit 2).
    pub outcome: Outcome,
    /// Why the head cannot be applied, each with where when it is known.
    pub problems: Vec<Problem>,
    /// The changes by operation.
    pub summary: Summary,
    /// The waves, in the order they run.
    pub waves: Vec<Wave>,
    /// How long a change has to become healthy before it counts as failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_timeout_seconds: Option<u64>,
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

/// How the plan ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
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

/// A problem with the head.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `Invalid` or the refusal's reason (`ImmutablePackageVersion`, …).
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

/// Changes by operation.
#[derive(Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub creates: u64,
    pub updates: u64,
    pub reinstalls: u64,
    pub deletes: u64,
    /// Objects a delete would remove that `fleet.endstate.dev/prune: disabled` keeps.
    pub kept_by_prune: u64,
}

/// One wave.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// 1-based, across the whole plan.
    pub number: u64,
    /// `packages`, `clusters/<wave>`, `machines/<wave>`, `deletes`.
    pub name: String,
    /// Changes in the wave.
    pub size: u64,
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
}

/// The diff of one changed object.
#[derive(Debug, Serialize, JsonSchema)]
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
