//! endstate's rollout engine.
//!
//! Everything here but [`live`] is pure and deterministic: time and randomness are inputs.

pub mod live;
pub mod time;

pub use live::{Applied, Live, LiveError};
pub use time::Time;
