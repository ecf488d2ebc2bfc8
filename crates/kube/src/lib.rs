//! endstate's Kubernetes backend: the rollout engine's live state on a real API server.
//!
//! ```text
//!   KubeLive ── Live ──▶ snapshot / get ──▶ cache (one reflector per fleet kind)
//!      │                 apply ──▶ server-side apply, field manager `endstate`
//!      │                 delete, load_status / save_status (the Fleet's status)
//!      └── rate-limited client: token bucket, halved on 429/5xx, recovering
//!   install_crds ──▶ SSA of the CRDs, then wait for Established
//!   read_secret, annotate_fleet, suspend_fleet: single requests by name; FleetEvents: Events
//!   on a Fleet; config: the client's
//! ```
//!
//! It works with Kubernetes 1.20 and later: paginated LIST + WATCH (no streaming lists), no
//! CEL, no aggregated discovery (the kinds are compiled in; a business cluster is asked once,
//! by group, whether it serves them: [`target::probe`]).

mod apply;
mod cache;
mod config;
mod crds;
mod error;
mod events;
mod fleets;
mod kinds;
mod lease;
mod limiter;
mod live;
pub mod placed;
mod retry;
mod secrets;
mod status;
pub mod target;

pub use cache::PAGE_SIZE;
pub use config::{client, config};
pub use crds::{install_crds, install_target_crds};
pub use error::{Error, Result};
pub use events::FleetEvents;
pub use fleets::{FleetWatch, annotate_fleet, find_fleet, read_fleet, suspend_fleet, watch_fleets};
pub use lease::{Ended, FenceLayer, Fenced, FencedService, Leadership, LeaseSettings, UnsafeLease};
pub use limiter::{LimiterStats, Limits, RateLimitLayer, RateLimited, RateLimiter};
pub use live::{KubeLive, Settings, Target, WriteStats, client_for, rate_limited_client};
pub use retry::{WATCH_BACKOFF, WRITE_BACKOFF, watch_backoff};
pub use secrets::read_secret;

/// Sends `agent` as the User-Agent of every request made with `config` (so that the API
/// server's audit log tells endstate's replicas apart).
pub fn set_user_agent(config: &mut kube::Config, agent: &str) -> Result<()> {
    let value = http::HeaderValue::from_str(agent)
        .map_err(|err| Error::Settings(format!("user agent {agent:?}: {err}")))?;
    config
        .headers
        .retain(|(name, _)| *name != http::header::USER_AGENT);
    config.headers.push((http::header::USER_AGENT, value));
    Ok(())
}
