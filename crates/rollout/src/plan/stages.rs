//! The stages (waves) a sequence is cut into: fixed when the rollout starts, persisted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::order::Seq;
use endstate_core::policy::Sequence as SequencePolicy;

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

/// Cuts the `changed` positions of `seq` (of `len`) into the waves of `policy`.
pub(super) fn waves(
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
