//! The diffs, grouped by patch: changes that set the same fields the same way (the object's
//! identity set aside) are one diff, shown for its first member in wave order, with a count.

use std::collections::HashMap;

use endstate_rollout::diff;
use endstate_rollout::plan::Plan;

use crate::facts::Index;
use crate::report::Diff;

/// The first `keep` groups of `plan`'s changes, and how many groups were left out.
pub fn grouped_diffs(plan: &Plan, index: &Index<'_>, keep: usize) -> (Vec<Diff>, u64) {
    let mut groups: Vec<Diff> = Vec::new();
    let mut by_patch: HashMap<String, usize> = HashMap::new();
    for (_, id, op) in plan.changes() {
        let before = index.live.get(id).copied();
        let after = index.desired.get(id).copied();
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
