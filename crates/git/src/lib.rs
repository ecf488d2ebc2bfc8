//! endstate's Git adapter.
//!
//! ```text
//!   remote ──fetch──▶ bare mirror ──▶ Source::check (history, signatures) ──▶ Fetched
//!                          │
//!                          ├──▶ CommitTree (no worktree) ──render_cached──▶ Rendered
//!                          │        └── RenderCache: unchanged blobs are not parsed again
//!                          │
//!   breaker ──▶ attribute(last good..target, failed objects) ──▶ commits to revert
//!                          └──▶ RevertWriter::revert ──push (never forced)──▶ remote
//!
//!   triggers: interval with jitter · webhook (GitHub, GitLab, HMAC) · file watch
//! ```
//!
//! Credentials never appear in messages: see [`credentials`].

pub mod attribution;
pub mod credentials;
pub mod error;
pub mod history;
pub mod quarantine;
mod remote;
pub mod revert;
pub mod signature;
pub mod source;
pub mod trailers;
pub mod tree;
pub mod trigger;
pub mod watch;
pub mod webhook;
pub mod worktree;

pub use attribution::{Attribution, attribute};
pub use credentials::{Credentials, Redactor, Secret};
pub use endstate_core::{RenderCache, Rendered};
pub use error::{Error, FailureKind, Result};
pub use git2::Oid;
pub use history::{Ancestry, History, RewritePolicy};

pub use endstate_core::backoff::Backoff;
pub use revert::{Evidence, RevertConfig, RevertOutcome, RevertWriter, Reverted};
pub use signature::{Refusal, SignaturePolicy, SshSigner, Verified};
pub use source::{FETCH_BACKOFF, Fetched, Judged, Source, SourceConfig, SourceStatus, check_head};
pub use tree::CommitTree;
pub use trigger::{Schedule, Trigger, Triggers};
pub use watch::Watcher;
pub use webhook::Reply;
pub use worktree::WorkTree;
