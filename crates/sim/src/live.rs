//! The simulated fleet as a [`Live`] backend.

use std::sync::{Arc, Mutex, MutexGuard};

use endstate_api::FleetStatus;
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::{Applied, Changes, Live, LiveError};

use crate::fleet::SimFleet;

/// A shared handle on a [`SimFleet`] that implements [`Live`].
///
/// Clones share the fleet: the engine holds one, the driver of virtual time (the demo, a test)
/// holds another and calls [`SimFleet::advance_to`] through [`SimLive::lock`]. Every operation
/// happens at the fleet's current virtual time.
#[derive(Clone, Debug)]
pub struct SimLive {
    fleet: Arc<Mutex<SimFleet>>,
}

impl SimLive {
    /// Shares `fleet`.
    pub fn new(fleet: SimFleet) -> Self {
        SimLive {
            fleet: Arc::new(Mutex::new(fleet)),
        }
    }

    /// The fleet, locked.
    pub fn lock(&self) -> MutexGuard<'_, SimFleet> {
        // The fleet's invariants hold between calls, so a panic elsewhere while holding the
        // lock leaves nothing half-done that matters here.
        self.fleet
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl From<SimFleet> for SimLive {
    fn from(fleet: SimFleet) -> Self {
        SimLive::new(fleet)
    }
}

impl Live for SimLive {
    async fn snapshot(&self) -> Result<Vec<FleetObject>, LiveError> {
        Ok(self.lock().snapshot())
    }

    async fn get(&self, ids: &[ObjectRef]) -> Result<Vec<Option<FleetObject>>, LiveError> {
        let fleet = self.lock();
        Ok(ids.iter().map(|id| fleet.get(id).cloned()).collect())
    }

    async fn apply(&self, objects: &[FleetObject]) -> Vec<Result<Applied, LiveError>> {
        let mut fleet = self.lock();
        objects
            .iter()
            .map(|object| {
                fleet.apply(object).map(|written| Applied {
                    generation: written.generation,
                })
            })
            .collect()
    }

    async fn delete(&self, ids: &[ObjectRef]) -> Vec<Result<(), LiveError>> {
        let mut fleet = self.lock();
        ids.iter().map(|id| fleet.delete(id).map(|_| ())).collect()
    }

    fn changes(&self) -> Changes {
        Changes {
            ids: self.lock().take_changes(),
            relisted: false,
        }
    }

    async fn changed(&self) {
        // The simulated fleet changes only when it is written to or its clock advances, and
        // the loop that does both takes the changes right after: pending ones are ready now,
        // and otherwise there is nothing to wait for here.
        if !self.lock().has_changes() {
            std::future::pending::<()>().await;
        }
    }

    async fn load_status(&self) -> Result<Option<FleetStatus>, LiveError> {
        Ok(self.lock().fleet_status().cloned())
    }

    async fn save_status(&self, status: &FleetStatus) -> Result<(), LiveError> {
        self.lock()
            .save_fleet_status(status)
            .map_err(|err| LiveError::Transient(format!("saving the fleet status: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use endstate_api::MachinePhase;
    use endstate_core::Kind;

    use super::*;
    use crate::fleet::SimConfig;
    use crate::testing::{machine, mpv, obj, ready};

    #[test]
    fn serves_the_live_trait_at_virtual_time() {
        let live = SimLive::new(SimFleet::new(SimConfig::new("fleet", 1)));
        let objects = [
            mpv("kubelet-1.28"),
            mpv("pouch-1.0"),
            obj(machine("m1", "idc-a", "kubelet-1.28")),
        ];
        let applied = ready(live.apply(&objects));
        assert!(
            applied
                .iter()
                .all(|r| matches!(r, Ok(Applied { generation: 1 })))
        );
        // Applying the same objects again writes nothing.
        ready(live.apply(&objects));
        assert_eq!(live.lock().counters().noop_applies, 3);

        live.lock().run_until_idle();
        let id = ObjectRef::new(Kind::Machine, "", "m1");
        let got =
            ready(live.get(&[id.clone(), ObjectRef::new(Kind::Machine, "", "gone")])).unwrap();
        let Some(FleetObject::Machine(m)) = &got[0] else {
            panic!("no machine: {got:?}");
        };
        assert_eq!(m.metadata.namespace.as_deref(), Some("fleet"));
        assert_eq!(
            m.status.as_ref().unwrap().phase,
            Some(MachinePhase::Running)
        );
        assert!(got[1].is_none());
        assert_eq!(ready(live.snapshot()).unwrap().len(), 3);

        let deleted = ready(live.delete(&[id.clone(), id.clone()]));
        assert!(deleted.iter().all(Result::is_ok));
        // The operator's finalizer holds it until the machine is drained.
        let held = ready(live.get(std::slice::from_ref(&id))).unwrap();
        assert!(
            held[0]
                .as_ref()
                .unwrap()
                .meta()
                .deletion_timestamp
                .is_some()
        );
        assert_eq!(live.lock().counters().deletes, 0);
        live.lock().run_until_idle();
        assert!(ready(live.get(&[id])).unwrap()[0].is_none());
        assert_eq!(live.lock().counters().deletes, 1);

        let bad = ready(live.apply(&[obj(machine("", "idc-a", "kubelet-1.28"))]));
        assert!(matches!(&bad[0], Err(LiveError::Fatal(m)) if m.contains("metadata.name")));
    }

    #[test]
    fn keeps_the_fleet_status_across_restarts() {
        let path =
            std::env::temp_dir().join(format!("endstate-sim-status-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let open = || {
            SimLive::new(
                SimFleet::new(SimConfig::default())
                    .with_status_file(&path)
                    .unwrap(),
            )
        };
        let live = open();
        assert_eq!(ready(live.load_status()).unwrap(), None);
        let status: FleetStatus = serde_json::from_value(serde_json::json!({
            "lastAppliedCommit": "abc123"
        }))
        .unwrap();
        ready(live.save_status(&status)).unwrap();
        assert_eq!(ready(live.load_status()).unwrap(), Some(status.clone()));
        assert_eq!(ready(open().load_status()).unwrap(), Some(status));
        std::fs::remove_file(&path).unwrap();
    }
}
