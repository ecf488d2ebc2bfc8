//! endstate's simulated fleet.
//!
//! An in-process stand-in for the meta-cluster: an object store with the API server's
//! semantics for the fleet kinds ([`store`]), the Machine and Cluster operators as pure
//! functions of a spec change ([`operator`]), fault injection ([`faults`]), and a virtual clock
//! that drives them ([`fleet`]). [`SimLive`] serves it to the rollout engine as a
//! [`endstate_rollout::Live`] backend.
//!
//! ```text
//!   engine ──Live──▶ SimLive ──▶ SimFleet ─┬─ Store      generation, resourceVersion, conflicts
//!                                          ├─ operators  status transitions, seeded delays
//!                                          ├─ Faults     failing packages, slow idcs, silence
//!   demo / test ──advance_to(t)───────────▶└─ queue      what happens when, in virtual time
//! ```
//!
//! Everything is deterministic for a seed: the same seed and the same calls give the same
//! objects, statuses and timestamps.

pub mod error;
pub mod faults;
mod fields;
pub mod fleet;
pub mod live;
pub mod operator;
mod seed;
pub mod store;

pub use error::{Error, FaultError, Result};
pub use faults::{Effect, FaultRule, FaultTarget, Faults};
pub use fleet::{SimConfig, SimFleet};
pub use live::SimLive;
pub use operator::{Delay, OperatorConfig, Transition};
pub use store::{Counters, Store, WatchEvent, Written};

#[cfg(test)]
mod testing;
