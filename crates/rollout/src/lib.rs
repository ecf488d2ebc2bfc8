//! endstate's rollout engine.
//!
//! Everything here but [`live`] is pure and deterministic: time and randomness are inputs.
//!
//! - [`diff`]: desired against live, the change set;
//! - [`plan`]: the change set cut into stages and waves;
//! - [`health`]: the gate of one object for one revision;
//! - [`budget`]: the fleet-wide change budget;
//! - [`rollout`]: the state machine that walks a plan, trips the breaker, restores and asks
//!   for the revert.

pub mod budget;
pub mod diff;
pub mod health;
pub mod live;
pub mod plan;
pub mod policy;
pub mod rollout;
pub mod time;

pub use live::{Applied, Live, LiveError};
pub use rollout::{Effect, Event, State};
pub use time::Time;
