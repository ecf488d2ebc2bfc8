//! The changes counted by operation, in all and per kind.

use std::collections::BTreeMap;

use endstate_core::Kind;
use endstate_rollout::diff::Op;
use endstate_rollout::plan::Plan;

use crate::report::{Counts, Summary};

/// The counts of `plan`.
pub fn summary(plan: &Plan) -> Summary {
    let mut by_kind: BTreeMap<Kind, Counts> = BTreeMap::new();
    for (_, id, op) in plan.changes() {
        let counts = by_kind.entry(id.kind).or_default();
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
