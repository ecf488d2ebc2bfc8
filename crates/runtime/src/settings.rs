//! What `endstate controller` runs with, resolved: every default applied and every value
//! parsed (durations, addresses, paths), so the runtime reads no flags and no environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use endstate_kube::{LeaseSettings, Limits};

/// The settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The kubeconfig; `None`: `$KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Only the Fleets of this namespace; `None`: every namespace.
    pub namespace: Option<String>,
    /// Only the Fleets with these labels (a label selector).
    pub fleet_selector: Option<String>,
    /// The leader election Lease and this replica's identity in it.
    pub lease: LeaseSettings,
    /// Requests to the API server, shared by every Fleet.
    pub limits: Limits,
    /// Writes in flight at once per Fleet.
    pub max_in_flight: usize,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_listen: SocketAddr,
    /// Where push webhooks are served, at `/hook/<namespace>/<fleet>`.
    pub webhook_listen: Option<SocketAddr>,
    /// Where the Git mirrors live (one per Fleet, under `<namespace>/<name>`).
    pub state_dir: PathBuf,
    /// How often every object in flight is looked at again.
    pub poll: Duration,
    /// On SIGTERM, how long the loops may take to save their state.
    pub shutdown_timeout: Duration,
    /// The author of revert commits, for Fleets without `spec.revert`.
    pub author_name: String,
    /// Its email.
    pub author_email: String,
}

/// `$POD_NAME`, or the host name and the process id: this replica's identity by default.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "endstate".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `$POD_NAMESPACE`, the in-cluster service account's namespace, or `endstate-system`: the
/// Lease's namespace by default.
pub fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|n| n.trim().to_owned())
        })
        .unwrap_or_else(|| "endstate-system".to_owned())
}
