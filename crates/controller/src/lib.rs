//! endstate's controller: the reconcile loop that wires the Git source, the renderer, the
//! rollout engine and a live fleet together, and performs every write.

pub mod clock;
pub mod controller;
pub mod demo;
pub mod metrics;
pub mod origin;
pub mod report;
pub mod status;

pub use clock::{Clock, SimClock, WallClock};
pub use controller::{Config, Controller, Error, Outcome, Tally};
pub use origin::{LocalDir, Origin};
pub use report::{Console, Recorder, Reporter};
