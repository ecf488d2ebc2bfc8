//! The simulated fleet as a [`Live`] backend.

use std::sync::{Arc, Mutex, MutexGuard};

use endstate_api::FleetStatus;
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::{Applied, Live, LiveError};

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

    async fn load_status(&self) -> Result<Option<FleetStatus>, LiveError> {
        Ok(self.lock().fleet_status().cloned())
    }

    async fn save_status(&self, status: &FleetStatus) -> Result<(), LiveError> {
        self.lock()
            .save_fleet_status(status)
            .map_err(|err| LiveError::Transient(format!("saving the fleet status: {err}")))
    }
}
