//! Why the loop, or one of its reads of the source, cannot go on.

use std::path::PathBuf;

use endstate_core::Diagnostics;
use endstate_rollout::LiveError;
use endstate_rollout::persist::StateError;

use crate::refusal::Refusal;

/// Why the loop cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The live fleet failed in a way retrying does not fix.
    #[error("live fleet: {0}")]
    Live(#[from] LiveError),
    /// The persisted state cannot be read.
    #[error("persisted state: {0}")]
    State(#[from] StateError),
    /// The commit the persisted state names cannot be rendered again.
    #[error("persisted state: {0}")]
    Rerender(#[source] SourceError),
    /// This process no longer holds the lease: nothing more is written.
    #[error("not the leader any more: writes are fenced")]
    Fenced,
}

impl Error {
    /// Whether the loop stopped because it lost the right to write.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced | Error::Live(LiveError::Fenced(_)))
    }
}

/// Why the source cannot give a commit, or its rendered objects.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The fetch was refused.
    #[error("{0}")]
    Fetch(Refusal),
    /// The Git adapter failed.
    #[error(transparent)]
    Git(#[from] endstate_git::Error),
    /// Not a commit id.
    #[error("{0:?} is not a commit id")]
    NotACommit(String),
    /// A revision asked of a local directory.
    #[error("{0:?}: a local directory has no history to name commits in")]
    NoHistory(String),
    /// A local directory's files could not be read.
    #[error("reading {}: {source}", dir.display())]
    Read {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A local directory changed since it was looked at.
    #[error("{} no longer holds {id}: it changed since", dir.display())]
    Changed {
        /// The directory.
        dir: PathBuf,
        /// The content id looked at.
        id: String,
    },
    /// A local directory could not be opened.
    #[error("{}: {source}", dir.display())]
    Open {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The content does not render.
    #[error("{id} does not render:\n{diagnostics}")]
    Render {
        /// The commit or content id.
        id: String,
        /// Every problem found.
        diagnostics: Diagnostics,
    },
    /// The commit's RolloutPolicy does not resolve.
    #[error("commit {commit}: {file}: RolloutPolicy {}", problems.join("; "))]
    Policy {
        /// The commit, shortened.
        commit: String,
        /// The policy's file.
        file: String,
        /// What is wrong with it.
        problems: Vec<String>,
    },
}
