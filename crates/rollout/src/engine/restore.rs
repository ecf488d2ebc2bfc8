//! After a trip, what is left to undo: restore lanes counting down each universe's started
//! positions, the batch issued and not confirmed, what each position's restore is, and the
//! persisted form of the lanes read back from this release and the one before it.
//!
//! ```text
//!  lane 0 (no budget)      Deletes ─▶ Machines ─▶ Clusters ─▶ Packages    updates, recreates
//!  lane 1 (reinstall)      Deletes ─▶ Machines ─▶ Clusters ─▶ Packages    undoing a reinstall
//! ```

use endstate_core::{FleetObject, ObjectRef};
use serde::{Deserialize, Serialize};

use crate::budget::{BudgetClass, Budgets};
use crate::plan::{Plan, Universe};
use crate::time::Time;
use endstate_core::policy::Policy;

/// The most restores issued in one effect.
pub const RESTORE_BATCH: usize = 2000;

/// After a trip: what is left to undo, as cursors counting down each lane's positions.
///
/// Lanes: restores no budget limits (updates, recreating deletes), undoing a reinstall (the
/// `machine-reinstall` budget). Each walks the started positions of every universe, newest
/// first, taking those of its class. Objects the rollout created are not deleted (see
/// [`RestoreClass::LeaveCreated`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RestoreWire")]
pub struct Restore {
    /// Per lane: the universe (index into the restore order) and how many of its positions
    /// are still to be looked at; `None` when the lane is done (persisted as `[]`: the API
    /// server drops a `null` even inside an array).
    #[serde(serialize_with = "lanes_out")]
    pub lanes: [Option<(u8, u32)>; 2],
    /// The batch issued and not yet confirmed: lane, universe index, `[from, to)`. A restart
    /// issues it again without spending again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<(u8, u8, u32, u32)>,
    /// Not persisted: what each started position's restore is (computed by the controller
    /// from the last good commit when the engine asks with [`Effect::PrepareRestore`]).
    #[serde(skip)]
    pub classes: Option<RestorePlan>,
}

fn lanes_out<S: serde::Serializer>(
    lanes: &[Option<(u8, u32)>; 2],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(lanes.len()))?;
    for lane in lanes {
        match lane {
            Some(lane) => seq.serialize_element(lane)?,
            None => seq.serialize_element(&[(); 0])?,
        }
    }
    seq.end()
}

/// A lane as persisted: `[universe, left]`, or done (`[]`, or `null` as earlier releases
/// wrote it).
#[derive(Deserialize)]
#[serde(untagged)]
enum LaneWire {
    Active((u8, u32)),
    Done(serde::de::IgnoredAny),
}

/// A persisted [`Restore`], of this release or of the one before it, which had a third lane
/// between the two (undoing creates from the `machine-delete` budget): that lane is dropped,
/// so what it had left stays in place, as this release does. Earlier releases wrote a done lane
/// as `null`, which the API server drops: no lanes left means both are done.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreWire {
    lanes: Vec<LaneWire>,
    #[serde(default)]
    issued: Option<(u8, u8, u32, u32)>,
}

/// A persisted restore whose lanes no release wrote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a restore has 2 lanes, not {0}")]
pub struct BadLanes(usize);

impl TryFrom<RestoreWire> for Restore {
    type Error = BadLanes;

    fn try_from(wire: RestoreWire) -> Result<Self, BadLanes> {
        let lanes: Vec<Option<(u8, u32)>> = wire
            .lanes
            .into_iter()
            .map(|lane| match lane {
                LaneWire::Active(lane) => Some(lane),
                LaneWire::Done(_) => None,
            })
            .collect();
        let (lanes, issued) = match lanes[..] {
            [] => ([None, None], None),
            [free, reinstall] => ([free, reinstall], wire.issued),
            [free, _, reinstall] => (
                [free, reinstall],
                wire.issued.and_then(|(lane, u, from, to)| match lane {
                    0 => Some((0, u, from, to)),
                    2 => Some((1, u, from, to)),
                    _ => None,
                }),
            ),
            _ => return Err(BadLanes(lanes.len())),
        };
        Ok(Restore {
            lanes,
            issued,
            classes: None,
        })
    }
}

/// The order restores walk universes in: the reverse of the rollout.
pub(crate) const RESTORE_ORDER: [Universe; 4] = [
    Universe::Deletes,
    Universe::Machines,
    Universe::Clusters,
    Universe::Packages,
];

/// What undoing each started position takes, per universe (positions `0..reached`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestorePlan {
    /// Per universe (in [`Universe::ALL`] order).
    pub classes: [Vec<RestoreClass>; 4],
}

/// What undoing one position takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreClass {
    /// Nothing: the object is as the restore target has it.
    Skip,
    /// A write no budget limits: put back an update, recreate a deleted object.
    Free,
    /// A Machine or Cluster created by the rollout, absent from the restore target: left in
    /// place. A restore does not delete capacity — at the `machine-delete` budget's pace,
    /// undoing the creates of a large first rollout would take days, and a new object that
    /// failed serves nothing meanwhile. The revert drops it from Git, and once the breaker is
    /// reset its delete rolls out like any other (waves, gates, budget, the delete floor).
    LeaveCreated,
    /// Undoing a reinstall, from the `machine-reinstall` budget.
    UndoReinstall,
}

impl RestoreClass {
    /// How to undo `desired` (what the rollout wrote; `None` for a delete) given `before`
    /// (what the restore target has; `None` when it has nothing).
    pub fn of(desired: Option<&FleetObject>, before: Option<&FleetObject>) -> RestoreClass {
        match (desired, before) {
            (_, Some(b)) if desired.is_some_and(|d| crate::diff::same(d, b)) => RestoreClass::Skip,
            (Some(FleetObject::Machine(_) | FleetObject::Cluster(_)), None) => {
                RestoreClass::LeaveCreated
            }
            // A package version the rollout created is inert: it goes with the restore.
            (Some(_), None) => RestoreClass::Free,
            (None, None) => RestoreClass::Skip,
            (Some(FleetObject::Machine(d)), Some(FleetObject::Machine(b)))
                if d.spec.os_generation.unwrap_or(0) > b.spec.os_generation.unwrap_or(0) =>
            {
                RestoreClass::UndoReinstall
            }
            _ => RestoreClass::Free,
        }
    }

    pub(crate) fn lane(self) -> Option<usize> {
        match self {
            RestoreClass::Skip | RestoreClass::LeaveCreated => None,
            RestoreClass::Free => Some(0),
            RestoreClass::UndoReinstall => Some(1),
        }
    }
}

pub(crate) const LANE_CLASSES: [Option<BudgetClass>; 2] =
    [None, Some(BudgetClass::MachineReinstall)];

impl Restore {
    /// The restore of a rollout tripped with `reached` positions started per universe: both
    /// lanes start at the first universe of the restore order that has any.
    pub(crate) fn after_trip(reached: [u32; 4]) -> Restore {
        let mut lanes = [None; 2];
        if let Some(first) = RESTORE_ORDER.iter().position(|u| reached[u.index()] > 0) {
            let u = RESTORE_ORDER[first];
            lanes = [Some((first as u8, reached[u.index()])); 2];
        }
        Restore {
            lanes,
            issued: None,
            classes: None,
        }
    }

    /// The batch issued and not confirmed, in the order first issued (newest first), less the
    /// positions known to need nothing: what a restart issues again without spending again.
    pub(crate) fn reissue(&self, plan: &Plan) -> Vec<ObjectRef> {
        let Some((_, u, from, to)) = self.issued else {
            return Vec::new();
        };
        let universe = RESTORE_ORDER[u as usize];
        let order = plan.order(universe);
        let classes = self.classes.as_ref().map(|c| &c.classes[universe.index()]);
        (from..to.min(order.len()))
            .rev()
            .filter(|p| classes.is_none_or(|c| c.get(*p as usize) != Some(&RestoreClass::Skip)))
            .map(|p| order.id(p).clone())
            .collect()
    }

    /// Takes the next batch of restores of the first lane with budget room (the unlimited lane
    /// always has), spending it: one universe per batch, and nothing while a batch is issued or
    /// the classes are unknown.
    pub(crate) fn drain(
        &mut self,
        reached: [u32; 4],
        plan: &Plan,
        budgets: &mut Budgets,
        policy: &Policy,
        now: Time,
    ) -> Option<Vec<ObjectRef>> {
        if self.issued.is_some() {
            return None;
        }
        let classes = self.classes.as_ref()?;
        for (lane, &class) in LANE_CLASSES.iter().enumerate() {
            let mut room = budgets.available(policy, class, now).min(RESTORE_BATCH);
            let Some((mut u, mut left)) = self.lanes[lane] else {
                continue;
            };
            let mut ids = Vec::new();
            let mut issued: Option<(u8, u32, u32)> = None;
            while room > 0 {
                if left == 0 {
                    if !ids.is_empty() {
                        break; // one universe per batch
                    }
                    match (u as usize + 1..RESTORE_ORDER.len())
                        .find(|i| reached[RESTORE_ORDER[*i].index()] > 0)
                    {
                        Some(next) => {
                            u = next as u8;
                            left = reached[RESTORE_ORDER[next].index()];
                            continue;
                        }
                        None => {
                            self.lanes[lane] = None;
                            break;
                        }
                    }
                }
                left -= 1;
                let universe = RESTORE_ORDER[u as usize];
                let c = classes.classes[universe.index()]
                    .get(left as usize)
                    .copied()
                    .unwrap_or(RestoreClass::Skip);
                if c.lane() != Some(lane) {
                    continue;
                }
                let order = plan.order(universe);
                if left >= order.len() {
                    continue;
                }
                ids.push(order.id(left).clone());
                room -= 1;
                issued = Some(match issued {
                    Some((u, _, to)) => (u, left, to),
                    None => (u, left, left + 1),
                });
            }
            if self.lanes[lane].is_some() {
                self.lanes[lane] = Some((u, left));
            }
            if let Some((iu, from, to)) = issued {
                budgets.spend(policy, class, ids.len() as u64, now);
                self.issued = Some((lane as u8, iu, from, to));
                return Some(ids);
            }
        }
        None
    }

    /// When a budget-limited lane left to walk next has room.
    pub(crate) fn next_room(&self, budgets: &Budgets, policy: &Policy, now: Time) -> Option<Time> {
        LANE_CLASSES
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(lane, _)| self.lanes[*lane].is_some())
            .filter_map(|(_, class)| budgets.next_room(policy, *class, now))
            .min()
    }

    /// Whether the lane no budget limits is done (the revert may be asked for).
    pub(crate) fn free_done(&self) -> bool {
        self.lanes[0].is_none()
    }

    /// Whether every lane is done.
    pub(crate) fn done(&self) -> bool {
        self.lanes.iter().all(Option::is_none)
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{T0, id, machine, plan, policy};
    use super::*;
    use endstate_core::policy::BudgetLimit;

    #[test]
    fn lanes_drain_newest_first_one_universe_a_batch_within_their_budget() {
        let mut p = policy(&[(100.0, 0, false)], 3);
        p.budgets = vec![BudgetLimit {
            class: BudgetClass::MachineReinstall,
            limit: 1,
            window: Duration::from_secs(3600),
        }];
        let plan = plan(3, &p);
        let mut budgets = Budgets::default();
        let reached = [0, 0, 3, 0];
        let mut restore = Restore::after_trip(reached);
        assert_eq!(restore.lanes, [Some((1, 3)); 2]);
        assert_eq!(
            restore.drain(reached, &plan, &mut budgets, &p, T0),
            None,
            "no classes yet"
        );
        let undo = RestoreClass::UndoReinstall;
        restore.classes = Some(RestorePlan {
            classes: [vec![], vec![], vec![RestoreClass::Free, undo, undo], vec![]],
        });
        let batch = restore.drain(reached, &plan, &mut budgets, &p, T0);
        assert_eq!(batch, Some(vec![id(0)]));
        assert_eq!(restore.issued, Some((0, 1, 0, 1)));
        assert_eq!(
            restore.drain(reached, &plan, &mut budgets, &p, T0),
            None,
            "one batch at a time"
        );
        restore.issued = None;
        let batch = restore.drain(reached, &plan, &mut budgets, &p, T0);
        assert_eq!(
            batch,
            Some(vec![id(2)]),
            "the reinstall lane: one, within its budget"
        );
        assert!(restore.free_done() && !restore.done());
        restore.issued = None;
        assert_eq!(restore.drain(reached, &plan, &mut budgets, &p, T0), None);
        let room = restore.next_room(&budgets, &p, T0).unwrap();
        assert!(room > T0);
        let batch = restore.drain(reached, &plan, &mut budgets, &p, room);
        assert_eq!(batch, Some(vec![id(1)]));
        // A restart issues the unconfirmed batch again, less what needs nothing.
        assert_eq!(restore.reissue(&plan), [id(1)]);
        restore.classes.as_mut().unwrap().classes[2][1] = RestoreClass::Skip;
        assert!(restore.reissue(&plan).is_empty());
    }

    #[test]
    fn a_created_machine_is_left_and_a_reinstall_is_undone_from_its_budget() {
        let before = machine(0, "kubelet-1");
        let mut reinstalled = before.clone();
        if let FleetObject::Machine(m) = &mut reinstalled {
            std::sync::Arc::make_mut(m).spec.os_generation = Some(2);
        }
        let updated = machine(0, "kubelet-2");
        assert_eq!(
            RestoreClass::of(Some(&before), Some(&before)),
            RestoreClass::Skip
        );
        assert_eq!(
            RestoreClass::of(Some(&updated), Some(&before)),
            RestoreClass::Free
        );
        assert_eq!(RestoreClass::of(None, Some(&before)), RestoreClass::Free);
        assert_eq!(
            RestoreClass::of(Some(&updated), None),
            RestoreClass::LeaveCreated
        );
        assert_eq!(
            RestoreClass::of(Some(&reinstalled), Some(&before)),
            RestoreClass::UndoReinstall
        );
        assert_eq!(RestoreClass::of(None, None), RestoreClass::Skip);
    }

    #[test]
    fn a_restore_of_the_release_with_a_delete_lane_drops_it() {
        let before: Restore = serde_json::from_value(serde_json::json!(
            {"lanes": [[0, 5], [1, 7], [1, 9]], "issued": [2, 1, 8, 9]}
        ))
        .unwrap();
        assert_eq!(before.lanes, [Some((0, 5)), Some((1, 9))]);
        assert_eq!(before.issued, Some((1, 1, 8, 9)));
        let undoing_a_create: Restore = serde_json::from_value(serde_json::json!(
            {"lanes": [null, [1, 7], null], "issued": [1, 1, 6, 7]}
        ))
        .unwrap();
        assert_eq!(undoing_a_create.issued, None);
        let now: Restore = serde_json::from_value(serde_json::to_value(&before).unwrap()).unwrap();
        assert_eq!(now, before);
        assert!(serde_json::from_value::<Restore>(serde_json::json!({"lanes": [null]})).is_err());
    }

    /// The API server keeps no `null`, not even in an array: a done lane is written as `[]`,
    /// and a state written with `[null, null]` (which comes back as `[]`) still loads.
    #[test]
    fn a_done_lane_survives_the_api_server() {
        let done = Restore {
            lanes: [None, Some((1, 3))],
            issued: None,
            classes: None,
        };
        let json = serde_json::to_value(&done).unwrap();
        assert_eq!(json, serde_json::json!({"lanes": [[], [1, 3]]}));
        assert_eq!(serde_json::from_value::<Restore>(json).unwrap(), done);
        let stripped: Restore = serde_json::from_value(serde_json::json!({"lanes": []})).unwrap();
        assert_eq!(stripped.lanes, [None, None]);
    }
}
