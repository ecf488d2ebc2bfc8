//! endstate's runtime: the in-cluster controller's wiring — the watch of the Fleets, one loop
//! per Fleet on the Lease's holder, telemetry, and the HTTP endpoints — built from resolved
//! [`Settings`], not from command-line flags.
//!
//! ```text
//!   Settings ──▶ manager::run
//!                  ├── watch Fleets (reflector) ──▶ supervisor: per Fleet
//!                  │       caches: KubeLive (every replica)
//!                  │       loop:   fleet::build ──▶ Controller (the leader only) ◀── Control
//!                  ├── Lease ──▶ Leadership ──▶ fence of every write
//!                  ├── telemetry: Metrics, FleetReporter (Events) ─┐
//!                  └── hooks: /hook/<ns>/<name> ──▶ annotation     │
//!                                   │                              │
//!                                   ▼                              ▼
//!                        http::Router ──serve(addr)──▶ hyper, on the process's tokio runtime
//! ```
//!
//! Kubernetes requests are `endstate_kube`'s; the webhook's protocol is `endstate_git`'s; the
//! loop is `endstate_controller`'s. `endstate run --live kube` builds its one loop with
//! [`fleet::build`] and serves its webhook with [`hooks::single`] on the same [`http`] server.

pub mod fleet;
pub mod hooks;
pub mod http;
mod manager;
pub mod settings;
pub mod telemetry;

pub use manager::{Ended, run};
pub use settings::Settings;
