//! The errors of setting up the backend; per-object failures are `LiveError`s.

use std::time::Duration;

/// Why the backend could not be set up, or a cluster-wide operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] Box<kube::Error>),
    /// The client configuration could not be read or inferred.
    #[error("{what}")]
    Config {
        /// What was being read.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// What was being done, naming the object.
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A watch-backed cache did not finish its initial list in time.
    #[error("the {kind} cache did not sync within {timeout:?}{}", last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    CacheSync {
        /// The kind the cache holds.
        kind: endstate_core::Kind,
        /// How long it waited.
        timeout: Duration,
        /// The watch's most recent error, when there was one.
        last_error: Option<String>,
    },
    /// A CustomResourceDefinition was applied but the server did not establish it in time.
    #[error("CustomResourceDefinition {name} was not Established within {timeout:?}")]
    NotEstablished {
        /// The CRD's name.
        name: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The settings are unusable.
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// The result of setting up the backend.
pub type Result<T, E = Error> = std::result::Result<T, E>;
