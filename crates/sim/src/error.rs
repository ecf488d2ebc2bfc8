//! The simulator's errors.

use std::path::PathBuf;

/// A fault rule in the CLI syntax that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fault rule {rule:?}: {message}")]
pub struct FaultError {
    /// The rule as given.
    pub rule: String,
    /// What is wrong with it, and how to fix it.
    pub message: String,
}

/// What is wrong with one fault rule and how to fix it, before the rule it is about is known
/// ([`FaultError`] places it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleMistake(pub String);

/// Why a simulator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fault rule given on the command line.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// A document of fault rules.
    #[error("fault rules: {message}")]
    Faults {
        /// Which rule, and what is wrong with it.
        message: String,
    },
    /// A file of fault rules.
    #[error("fault rules in {path}: {message}")]
    FaultsFile {
        /// The file.
        path: PathBuf,
        /// Which rule, and what is wrong with it.
        message: String,
    },
    /// An object the simulated fleet cannot hold.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A saved fleet status that does not parse.
    #[error("fleet status in {path}: {source}")]
    Status {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The simulator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
