//! The errors of the Git adapter. Messages say where (remote, branch, commit) and what; none
//! ever holds a credential: everything that crosses the network is passed through the
//! [`crate::credentials::Redactor`] first.

use std::fmt;
use std::path::PathBuf;

use endstate_core::Diagnostics;
use git2::Oid;

/// The adapter's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fetch failed; the mirror and the last good commit are untouched.
    #[error("fetching branch {branch} from {url}: {kind}: {message}")]
    Fetch {
        /// The remote, without credentials.
        url: String,
        /// The branch.
        branch: String,
        /// What kind of failure.
        kind: FailureKind,
        /// The transport's message, redacted.
        message: String,
    },
    /// The remote has no such branch.
    #[error("branch {branch} does not exist at {url}")]
    BranchNotFound {
        /// The remote, without credentials.
        url: String,
        /// The branch.
        branch: String,
    },
    /// The branch moved to a commit that does not descend from the last applied one.
    #[error(
        "history of branch {branch} was rewritten: it moved to {new}, which does not descend \
         from the last applied commit {last_applied}; refusing it (to follow the new history, \
         set spec.source.onHistoryRewrite: adopt)"
    )]
    HistoryRewritten {
        /// The branch.
        branch: String,
        /// The commit applied last.
        last_applied: Oid,
        /// Where the branch is now.
        new: Oid,
    },
    /// The commit fails the signature policy.
    #[error("commit {commit} is not applied: {reason}")]
    Unverified {
        /// The commit.
        commit: Oid,
        /// Why.
        reason: Refusal,
    },
    /// The commit is quarantined.
    #[error("commit {commit} is quarantined and is never applied again: {reason}")]
    Quarantined {
        /// The commit.
        commit: Oid,
        /// Why it was quarantined.
        reason: String,
    },
    /// The commit's manifests are invalid.
    #[error("commit {commit} does not render:\n{diagnostics}")]
    Invalid {
        /// The commit.
        commit: Oid,
        /// Every problem found.
        diagnostics: Diagnostics,
    },
    /// A push failed for a reason other than someone else pushing first.
    #[error("pushing {refname} to {url}: {kind}: {message}")]
    Push {
        /// The remote, without credentials.
        url: String,
        /// The remote ref.
        refname: String,
        /// What kind of failure.
        kind: FailureKind,
        /// The transport's or the server's message, redacted.
        message: String,
    },
    /// Every push attempt was rejected because the branch kept moving.
    #[error(
        "pushing the revert to branch {branch} at {url} was rejected {attempts} times (the \
         branch kept moving); gave up without force-pushing"
    )]
    PushRetriesExhausted {
        /// The remote, without credentials.
        url: String,
        /// The branch.
        branch: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A commit to revert is not on the branch.
    #[error("commit {commit} is not on branch {branch}; only commits on the branch are reverted")]
    NotOnBranch {
        /// The commit.
        commit: Oid,
        /// The branch.
        branch: String,
    },
    /// A local Git operation failed.
    #[error("{what}: {source}")]
    Git {
        /// What was being done.
        what: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What kind of failure a fetch or push met; decides how it is reported and retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// DNS, connection refused or reset, timeout: the remote could not be reached.
    Unreachable,
    /// The remote refused the credentials, or none were configured for it.
    Auth,
    /// TLS certificate or SSH host key verification failed.
    Certificate,
    /// The remote sent data that does not check out (a corrupt or truncated pack).
    Corrupt,
    /// The remote repository does not exist.
    NotFound,
    /// The remote refused a ref update (non-fast-forward, hook, protection).
    Rejected,
    /// Anything else.
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Unreachable => "remote unreachable",
            FailureKind::Auth => "authentication failed",
            FailureKind::Certificate => "certificate or host key not trusted",
            FailureKind::Corrupt => "corrupt data from the remote",
            FailureKind::NotFound => "repository not found",
            FailureKind::Rejected => "rejected by the remote",
            FailureKind::Other => "failed",
        })
    }
}

impl FailureKind {
    /// Classifies a transport error.
    pub fn of(err: &git2::Error) -> Self {
        use git2::{ErrorClass as C, ErrorCode as E};
        let message = err.message().to_ascii_lowercase();
        match (err.code(), err.class()) {
            (E::Auth, _) => FailureKind::Auth,
            (E::Certificate, _) => FailureKind::Certificate,
            (E::NotFastForward, _) => FailureKind::Rejected,
            (_, C::Ssl) => FailureKind::Certificate,
            (_, C::Zlib | C::Odb | C::Indexer) => FailureKind::Corrupt,
            _ if message.contains("authentication") || message.contains("401") => FailureKind::Auth,
            _ if message.contains("host key") || message.contains("certificate") => {
                FailureKind::Certificate
            }
            _ if message.contains("not found")
                || message.contains("404")
                || message.contains("does not appear to be a git repository")
                || message.contains("could not find repository")
                || message.contains("failed to resolve path") =>
            {
                FailureKind::NotFound
            }
            _ if message.contains("pack") || message.contains("object") => FailureKind::Corrupt,
            (_, C::Net | C::Os | C::Http | C::Ssh) => FailureKind::Unreachable,
            _ => FailureKind::Other,
        }
    }
}

/// Wraps a local libgit2 error with what was being done.
pub(crate) fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> Error {
    let what = what.into();
    move |source| Error::Git { what, source }
}

/// Why a commit fails the policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The commit carries no signature.
    #[error("the commit is unsigned; the signature policy requires a signature by an allowed key")]
    Unsigned,
    /// The signature is of the other kind.
    #[error(
        "the commit carries an {found} signature; the policy accepts {expected} signatures only"
    )]
    WrongKind {
        /// What the policy wants.
        expected: &'static str,
        /// What the commit has.
        found: &'static str,
    },
    /// Signed, but by a key the policy does not list.
    #[error("signed by {key}, which is not an allowed key")]
    UnknownKey {
        /// The signing key's fingerprint (or OpenPGP issuer).
        key: String,
    },
    /// By an allowed key, but the signature does not check out (the commit was altered).
    #[error("the signature by {key} does not verify: {reason}")]
    BadSignature {
        /// The key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The signature cannot be read.
    #[error("the signature cannot be read: {0}")]
    Malformed(String),
}
