//! endstate's controller: the reconcile loop that wires the Git source, the renderer, the
//! rollout engine and a live fleet together, and performs every write.
//!
//! - [`controller`]: the loop and its turn;
//! - [`admit`]: every check that refuses a head, shared with `plan`;
//! - [`reconcile`]: fetch, check, render, plan, start (and resume);
//! - [`effects`]: the one writer, and the status saves;
//! - [`revert`]: attribution and the revert push;
//! - [`gates`]: the metric gates' queries, off the loop;
//! - [`refusal`]: why a head is not applied, as condition reasons;
//! - [`status`]: the engine's state in the `Fleet` status.

pub mod admit;
pub mod clock;
pub mod control;
pub mod controller;
pub mod crash;
pub mod demo;
pub mod desired;
mod effects;
mod error;
pub mod gates;
pub mod origin;
mod reconcile;
pub mod refusal;
pub mod report;
mod revert;
pub mod status;

pub use clock::{Clock, SimClock, WallClock};
pub use control::{Approval, Control, Fence};
pub use controller::{Config, Controller, Outcome, Tally};
pub use error::{Error, SourceError};
pub use origin::{LocalDir, Origin};
pub use refusal::Refusal;
pub use report::{Console, Recorder, Reporter, Tee};
