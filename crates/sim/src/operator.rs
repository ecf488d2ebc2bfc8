//! The simulated Machine and Cluster operators, as pure functions.
//!
//! Given an object whose spec changed (its `metadata.generation` is new) and the time it
//! changed, an operator returns the status transitions it will write and when:
//!
//! ```text
//! Machine, generation g, changed at t:
//!   t + pickup                 phase Installing (Reinstalling when osGeneration moved),
//!                              readiness conditions False, the rest of the status unchanged
//!   t + pickup + install       phase Running, observedGeneration g, versions = spec.packages,
//!                              osGeneration, schedulable, every readiness gate and Ready True
//!                      (or)    phase Failed, observedGeneration g, versions unchanged,
//!                              Ready and the readiness gates False, a message
//! Cluster: the same with Provisioning / Upgrading, version = spec.packageVersion.
//! ```
//!
//! A spec change that installs nothing (only `unschedulable`, say) skips the install phase.
//! Delays are drawn from [`OperatorConfig`] by a hash of the seed, the object and the
//! generation; [`Faults`] add delay, failures and silence. A caller (the simulated fleet, or an
//! agent running against a real API server) schedules the transitions and drops those of a
//! generation that a newer spec change superseded. The statuses use the API types the real
//! operators write.

use std::time::Duration;

use endstate_api::{
    Cluster, ClusterPhase, ClusterStatus, Condition, Machine, MachinePhase, MachineStatus,
};
use endstate_rollout::Time;
use serde::{Deserialize, Serialize};

use crate::faults::{Faults, Subject};
use crate::seed;
use crate::store::k8s_time;

/// The condition every machine and cluster reports, besides its readiness gates.
pub const READY: &str = "Ready";
/// The second condition a cluster reports.
pub const ETCD_HEALTHY: &str = "EtcdHealthy";

/// A range that a delay is drawn from, uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    /// The shortest delay.
    #[serde(with = "millis")]
    pub min: Duration,
    /// The longest delay.
    #[serde(with = "millis")]
    pub max: Duration,
}

impl Delay {
    /// A range of whole seconds.
    pub const fn secs(min: u64, max: u64) -> Self {
        Delay {
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        }
    }

    /// A fixed delay.
    pub const fn fixed(delay: Duration) -> Self {
        Delay {
            min: delay,
            max: delay,
        }
    }

    fn draw(&self, seed: u64, parts: &[&str]) -> Duration {
        seed::between(seed, parts, self.min, self.max)
    }
}

/// How long the simulated operators take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorConfig {
    /// From a spec change until the operator starts on it. Default 1–5 s.
    pub pickup: Delay,
    /// Installing or upgrading a machine's packages. Default 20–90 s.
    pub install: Delay,
    /// Reinstalling a machine's operating system. Default 2–5 min.
    pub reinstall: Delay,
    /// Applying a spec change that installs nothing. Default 1–3 s.
    pub configure: Delay,
    /// Provisioning a new cluster. Default 2–5 min.
    pub provision: Delay,
    /// Upgrading a cluster's control plane. Default 1–3 min.
    pub upgrade: Delay,
    /// Draining a deleted machine before its finalizer lets it go. Default 5–30 s.
    #[serde(default = "default_drain")]
    pub drain: Delay,
    /// Tearing down a deleted cluster before its finalizer lets it go. Default 30–90 s.
    #[serde(default = "default_teardown")]
    pub teardown: Delay,
}

/// The finalizer the simulated operators hold a deleted Machine or Cluster by.
pub const FINALIZER: &str = "fleet.endstate.dev/operator";

fn default_drain() -> Delay {
    Delay::secs(5, 30)
}

fn default_teardown() -> Delay {
    Delay::secs(30, 90)
}

/// When the operator lets a deleted Machine (or Cluster) go: after it drained (tore down).
pub fn removal_at(kind: endstate_core::Kind, name: &str, deleted: Time, cx: Context<'_>) -> Time {
    let delay = if kind == endstate_core::Kind::Cluster {
        cx.config.teardown.draw(cx.seed, &["teardown", name])
    } else {
        cx.config.drain.draw(cx.seed, &["drain", name])
    };
    deleted + delay
}

impl OperatorConfig {
    /// Every step takes `delay`: for end-to-end tests that should not wait for realistic
    /// install times.
    pub fn fixed(delay: Duration) -> Self {
        OperatorConfig::default().map(|_| Delay::fixed(delay))
    }

    /// The delays divided by `speed` (a speed of 60 turns a minute into a second), for
    /// end-to-end tests and demos that should not take real install times; a speed of 0 or 1
    /// leaves them.
    pub fn scaled(self, speed: f64) -> Self {
        if speed <= 0.0 || speed == 1.0 {
            return self;
        }
        self.map(|d| Delay {
            min: d.min.div_f64(speed),
            max: d.max.div_f64(speed),
        })
    }

    /// Every delay through `f`.
    fn map(self, f: impl Fn(Delay) -> Delay) -> Self {
        OperatorConfig {
            pickup: f(self.pickup),
            install: f(self.install),
            reinstall: f(self.reinstall),
            configure: f(self.configure),
            provision: f(self.provision),
            upgrade: f(self.upgrade),
            drain: f(self.drain),
            teardown: f(self.teardown),
        }
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            pickup: Delay::secs(1, 5),
            install: Delay::secs(20, 90),
            reinstall: Delay::secs(120, 300),
            configure: Delay::secs(1, 3),
            provision: Delay::secs(120, 300),
            upgrade: Delay::secs(60, 180),
            drain: default_drain(),
            teardown: default_teardown(),
        }
    }
}

/// A status an operator writes at a point in time, for one generation of its object.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition<S> {
    /// When the status is written.
    pub at: Time,
    /// The generation the operator is working on; a newer spec change supersedes it.
    pub generation: i64,
    /// The whole status to write.
    pub status: S,
}

/// What the operators need besides the object.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The seed every delay and fault decision derives from.
    pub seed: u64,
    /// The delays.
    pub config: &'a OperatorConfig,
    /// The fault rules.
    pub faults: &'a Faults,
}

/// The transitions the machine operator writes for the machine's current generation, whose
/// spec changed at `now`. `package_exists` says whether a `MachinePackageVersion` exists; a
/// machine that names one that does not fails, as the real operator does.
pub fn machine_transitions(
    machine: &Machine,
    now: Time,
    cx: Context<'_>,
    package_exists: impl Fn(&str) -> bool,
) -> Vec<Transition<MachineStatus>> {
    let name = machine.metadata.name.as_deref().unwrap_or_default();
    let generation = machine.metadata.generation.unwrap_or(1);
    let spec = &machine.spec;
    let prior = machine.status.clone().unwrap_or_default();
    let running = prior.versions.clone().unwrap_or_default();
    let installs: Vec<String> = spec
        .packages
        .iter()
        .filter(|(component, version)| running.get(*component) != Some(*version))
        .map(|(_, version)| version.clone())
        .collect();
    let reinstall =
        prior.observed_generation.is_some() && spec.os_generation != prior.os_generation;
    let idcs = [spec.idc.clone()];
    let effect = cx.faults.effect(
        cx.seed,
        Subject {
            kind: "Machine",
            name,
            idcs: &idcs,
            installs: &installs,
        },
    );
    if effect.silent {
        return Vec::new();
    }
    let g = generation.to_string();
    let parts = |what: &'static str| [what, "Machine", name, g.as_str()];
    let started = now + cx.config.pickup.draw(cx.seed, &parts("pickup"));
    let busy = reinstall || !installs.is_empty();
    let work = if reinstall {
        cx.config.reinstall.draw(cx.seed, &parts("reinstall"))
    } else if busy {
        cx.config.install.draw(cx.seed, &parts("install"))
    } else {
        cx.config.configure.draw(cx.seed, &parts("configure"))
    };
    let done = started + work + effect.delay;

    let gates = condition_types(spec.readiness_gates());
    let missing = spec
        .packages
        .values()
        .find(|version| !package_exists(version));
    let failure = match missing {
        Some(version) => Some(format!("MachinePackageVersion {version:?} not found")),
        None => effect.failure,
    };

    let mut transitions = Vec::with_capacity(2);
    if busy {
        let (phase, reason) = if reinstall {
            (MachinePhase::Reinstalling, "Reinstalling")
        } else {
            (MachinePhase::Installing, "Installing")
        };
        let message = if reinstall {
            format!(
                "reinstalling the operating system at generation {}",
                spec.os_generation.unwrap_or_default()
            )
        } else {
            format!("installing {}", installs.join(", "))
        };
        transitions.push(Transition {
            at: started,
            generation,
            status: MachineStatus {
                phase: Some(phase),
                conditions: Some(conditions(&gates, false, reason, &message, started)),
                message: Some(message),
                ..prior.clone()
            },
        });
    }
    let last = match failure {
        Some(message) => MachineStatus {
            observed_generation: Some(generation),
            phase: Some(MachinePhase::Failed),
            conditions: Some(conditions(&gates, false, "InstallFailed", &message, done)),
            message: Some(message),
            ..prior
        },
        None => converged_machine_status(machine, done),
    };
    transitions.push(Transition {
        at: done,
        generation,
        status: last,
    });
    transitions
}

/// The status of a machine that runs what its current spec asks for, as reported at `at`.
pub fn converged_machine_status(machine: &Machine, at: Time) -> MachineStatus {
    let spec = &machine.spec;
    let gates = condition_types(spec.readiness_gates());
    MachineStatus {
        observed_generation: Some(machine.metadata.generation.unwrap_or(1)),
        phase: Some(MachinePhase::Running),
        versions: Some(spec.packages.clone()),
        os_generation: spec.os_generation,
        schedulable: Some(!spec.unschedulable.unwrap_or(false)),
        conditions: Some(conditions(&gates, true, "Installed", "", at)),
        message: None,
    }
}

/// The transitions the cluster operator writes for the cluster's current generation, whose
/// spec changed at `now`. A paused cluster is left alone. `package_exists` says whether a
/// `ClusterPackageVersion` exists.
pub fn cluster_transitions(
    cluster: &Cluster,
    now: Time,
    cx: Context<'_>,
    package_exists: impl Fn(&str) -> bool,
) -> Vec<Transition<ClusterStatus>> {
    let spec = &cluster.spec;
    if spec.paused == Some(true) {
        return Vec::new();
    }
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let generation = cluster.metadata.generation.unwrap_or(1);
    let prior = cluster.status.clone().unwrap_or_default();
    let provisioning = prior.version.is_none();
    let installs: Vec<String> = if prior.version.as_deref() == Some(&spec.package_version) {
        Vec::new()
    } else {
        vec![spec.package_version.clone()]
    };
    let idcs = spec
        .masters
        .as_ref()
        .and_then(|m| m.idcs.clone())
        .unwrap_or_default();
    let effect = cx.faults.effect(
        cx.seed,
        Subject {
            kind: "Cluster",
            name,
            idcs: &idcs,
            installs: &installs,
        },
    );
    if effect.silent {
        return Vec::new();
    }
    let g = generation.to_string();
    let parts = |what: &'static str| [what, "Cluster", name, g.as_str()];
    let started = now + cx.config.pickup.draw(cx.seed, &parts("pickup"));
    let busy = !installs.is_empty();
    let work = if provisioning {
        cx.config.provision.draw(cx.seed, &parts("provision"))
    } else if busy {
        cx.config.upgrade.draw(cx.seed, &parts("upgrade"))
    } else {
        cx.config.configure.draw(cx.seed, &parts("configure"))
    };
    let done = started + work + effect.delay;
    let types = cluster_condition_types();
    let failure = if package_exists(&spec.package_version) {
        effect.failure
    } else {
        Some(format!(
            "ClusterPackageVersion {:?} not found",
            spec.package_version
        ))
    };

    let mut transitions = Vec::with_capacity(2);
    if busy {
        let (phase, reason, message) = if provisioning {
            (
                ClusterPhase::Provisioning,
                "Provisioning",
                format!("provisioning at {}", spec.package_version),
            )
        } else {
            (
                ClusterPhase::Upgrading,
                "Upgrading",
                format!("upgrading to {}", spec.package_version),
            )
        };
        transitions.push(Transition {
            at: started,
            generation,
            status: ClusterStatus {
                phase: Some(phase),
                conditions: Some(conditions(&types, false, reason, &message, started)),
                message: Some(message),
                ..prior.clone()
            },
        });
    }
    let last = match failure {
        Some(message) => ClusterStatus {
            observed_generation: Some(generation),
            phase: Some(ClusterPhase::Failed),
            conditions: Some(conditions(&types, false, "UpgradeFailed", &message, done)),
            message: Some(message),
            ..prior
        },
        None => converged_cluster_status(cluster, done),
    };
    transitions.push(Transition {
        at: done,
        generation,
        status: last,
    });
    transitions
}

/// The status of a cluster that runs what its current spec asks for, as reported at `at`.
pub fn converged_cluster_status(cluster: &Cluster, at: Time) -> ClusterStatus {
    ClusterStatus {
        observed_generation: Some(cluster.metadata.generation.unwrap_or(1)),
        phase: Some(ClusterPhase::Running),
        version: Some(cluster.spec.package_version.clone()),
        conditions: Some(conditions(
            &cluster_condition_types(),
            true,
            "Running",
            "",
            at,
        )),
        message: None,
    }
}

/// Keeps the `lastTransitionTime` of every condition in `next` whose status is the same in
/// `previous`: a condition's transition time moves only when its status does.
pub fn carry_transition_times(previous: Option<&[Condition]>, next: Option<&mut Vec<Condition>>) {
    let (Some(previous), Some(next)) = (previous, next) else {
        return;
    };
    for condition in next {
        if let Some(before) = previous
            .iter()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition.last_transition_time = before.last_transition_time.clone();
        }
    }
}

/// `Ready` and the readiness gates, without repeats, `Ready` first.
fn condition_types(gates: &[String]) -> Vec<&str> {
    let mut types = vec![READY];
    for gate in gates {
        if !types.contains(&gate.as_str()) {
            types.push(gate);
        }
    }
    types
}

fn cluster_condition_types() -> Vec<&'static str> {
    vec![READY, ETCD_HEALTHY]
}

fn conditions(types: &[&str], ok: bool, reason: &str, message: &str, at: Time) -> Vec<Condition> {
    types
        .iter()
        .map(|type_| Condition {
            type_: (*type_).to_owned(),
            status: if ok { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: k8s_time(at),
            observed_generation: None,
        })
        .collect()
}

mod millis {
    //! A duration as whole milliseconds.

    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
