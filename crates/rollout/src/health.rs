//! Health for *this* revision.
//!
//! An object passes its gate only when its operator reports on the generation endstate's
//! write produced (or a later one): `status.observedGeneration` at least that generation, the
//! reported versions equal to the desired packages, and every readiness gate `True`. A status
//! from the previous generation, however healthy it looks, does not count; neither does a
//! missing one.

use endstate_api::{ClusterPhase, Condition, MachinePhase};
use endstate_core::FleetObject;
use serde::{Deserialize, Serialize};

/// What a gate sees of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Healthy for the expected revision.
    Healthy,
    /// Not yet: why not.
    Progressing(String),
    /// The operator gave up: why.
    Failed(String),
}

/// Judges `live` against the revision endstate wrote: `generation` is what the write produced.
/// `None` for `live` means the object is not (yet) visible.
pub fn assess(live: Option<&FleetObject>, generation: i64) -> Health {
    let Some(live) = live else {
        return Health::Progressing("not found".to_owned());
    };
    match live {
        FleetObject::Machine(m) => {
            let Some(status) = &m.status else {
                return Health::Progressing("no status reported".to_owned());
            };
            let observed = status.observed_generation.unwrap_or(0);
            if observed < generation {
                return Health::Progressing(format!(
                    "status is for generation {observed}, waiting for {generation}"
                ));
            }
            if status.phase == Some(MachinePhase::Failed) {
                return Health::Failed(
                    status
                        .message
                        .clone()
                        .unwrap_or_else(|| "phase Failed".to_owned()),
                );
            }
            if status.phase != Some(MachinePhase::Running) {
                let phase = status
                    .phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or("unset".into());
                return Health::Progressing(format!("phase {phase}"));
            }
            if let Some(want) = m.spec.os_generation
                && status.os_generation.unwrap_or(0) < want
            {
                return Health::Progressing(format!("OS generation {want} not installed yet"));
            }
            let versions = status.versions.clone().unwrap_or_default();
            if let Some((component, version)) = m
                .spec
                .packages
                .iter()
                .find(|(c, v)| versions.get(*c) != Some(*v))
            {
                let running = versions
                    .get(component)
                    .map(String::as_str)
                    .unwrap_or("nothing");
                return Health::Progressing(format!("{component} runs {running}, want {version}"));
            }
            gates(m.spec.readiness_gates(), status.conditions.as_deref())
        }
        FleetObject::Cluster(c) => {
            let Some(status) = &c.status else {
                return Health::Progressing("no status reported".to_owned());
            };
            let observed = status.observed_generation.unwrap_or(0);
            if observed < generation {
                return Health::Progressing(format!(
                    "status is for generation {observed}, waiting for {generation}"
                ));
            }
            match status.phase {
                Some(ClusterPhase::Failed) => Health::Failed(
                    status
                        .message
                        .clone()
                        .unwrap_or_else(|| "phase Failed".to_owned()),
                ),
                Some(ClusterPhase::Running)
                    if status.version.as_deref() == Some(c.spec.package_version.as_str()) =>
                {
                    Health::Healthy
                }
                Some(ClusterPhase::Running) => Health::Progressing(format!(
                    "runs {}, want {}",
                    status.version.as_deref().unwrap_or("nothing"),
                    c.spec.package_version
                )),
                phase => Health::Progressing(format!(
                    "phase {}",
                    phase.map(|p| format!("{p:?}")).unwrap_or("unset".into())
                )),
            }
        }
        // Package versions have no status: they are healthy once they exist.
        _ => Health::Healthy,
    }
}

fn gates(gates: &[String], conditions: Option<&[Condition]>) -> Health {
    for gate in gates {
        match conditions.into_iter().flatten().find(|c| &c.type_ == gate) {
            Some(c) if c.status == "True" => {}
            Some(c) => {
                return Health::Progressing(format!(
                    "readiness gate {gate} is {}{}",
                    c.status,
                    if c.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", c.message)
                    }
                ));
            }
            None => return Health::Progressing(format!("readiness gate {gate} not reported")),
        }
    }
    Health::Healthy
}
