//! endstate's rollout engine.
//!
//! Everything here but [`live`] is pure and deterministic: time and randomness are inputs.
//!
//! - [`diff`]: desired against live, the change set;
//! - [`plan`]: each sequence's order (from the commit and the policy alone) and its waves;
//! - [`health`]: the gate of one object for one revision;
//! - [`budget`]: the fleet-wide change budget;
//! - [`engine`]: the state machine that walks a plan, trips the breaker, restores and asks
//!   for the revert;
//! - [`schedule`]: how long a plan takes at worst, under the budgets and windows;
//! - [`persist`]: its bounded persisted form; [`positions`]: the compact position sets in it.

pub mod budget;
pub mod diff;
pub mod engine;
pub mod gates;
pub mod health;
pub mod live;
pub mod persist;
pub mod plan;
pub mod positions;
pub mod schedule;
pub mod text;
pub mod time;

pub use budget::BudgetClass;
pub use engine::{Effect, Engine, Event, Report, WaitReason, WriteError};
pub use live::{Applied, Changes, Live, LiveError};
pub use time::Time;
