//! The source: one branch of one remote, fetched into a bare mirror that is kept between
//! fetches, and checked before anything is rendered from it.
//!
//! ```text
//!   fetch ──▶ mirror refs/heads/<branch> ──▶ history check ──▶ signature check ──▶ Fetched
//!     │ fails                                  │ rewritten        │ refused
//!     ▼                                        ▼                  ▼
//!   Error, backoff grows; the mirror, the last applied and last good commits are untouched
//! ```
//!
//! The mirror keeps `refs/endstate/applied` and `refs/endstate/good` pointing at those
//! commits, so that their objects stay even when the branch is force-pushed away from them.

use std::path::PathBuf;
use std::time::Duration;

use endstate_core::backoff::Backoff;
use endstate_core::{Options, Owner, RenderCache, Rendered};
use git2::{Oid, Repository};

use crate::credentials::Credentials;
use crate::error::{Error, Result, git};
use crate::history::{self, Ancestry, History, RewritePolicy};
use crate::remote::Remote;
use crate::signature::{SignaturePolicy, Verified};
use crate::tree::CommitTree;

/// Where the end state comes from, and how it is checked.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `https://`, `ssh://`, scp-style (`git@host:org/repo`), `git://` or `file://`.
    pub url: String,
    /// The branch to follow.
    pub branch: String,
    /// The kustomization directory to render, relative to the repository root.
    pub path: String,
    /// Where the bare mirror lives; created on first use.
    pub mirror: PathBuf,
    /// How to authenticate.
    pub credentials: Credentials,
    /// What to do when the branch stops descending from the last applied commit.
    pub on_history_rewrite: RewritePolicy,
    /// Which keys must have signed HEAD, if any.
    pub verify: Option<SignaturePolicy>,
    /// Delays between failed fetches.
    pub backoff: Backoff,
    /// How commits are rendered: for a live fleet, with its namespace and ownership label.
    pub render: Options,
    /// Whether a remote on this machine (`file://` or a path) lends its objects to the mirror
    /// instead of packing them into it: for a mirror that lives as long as one command.
    pub borrow_local_objects: bool,
}

impl SourceConfig {
    /// Follows branch `main` of `url`, rendering the repository root, with a mirror at
    /// `mirror`; no credentials, no signature policy, history rewrites refused.
    pub fn new(url: impl Into<String>, mirror: impl Into<PathBuf>) -> Self {
        SourceConfig {
            url: url.into(),
            branch: "main".into(),
            path: String::new(),
            mirror: mirror.into(),
            credentials: Credentials::default(),
            on_history_rewrite: RewritePolicy::Refuse,
            verify: None,
            backoff: FETCH_BACKOFF,
            render: Options::default(),
            borrow_local_objects: false,
        }
    }

    /// The settings of a `Fleet`'s `spec.source`; credentials and the signature policy come
    /// from the Secrets it names, which the caller reads.
    pub fn from_spec(
        spec: &endstate_api::fleet::Source,
        mirror: impl Into<PathBuf>,
        credentials: Credentials,
        verify: Option<SignaturePolicy>,
    ) -> Result<Self> {
        let mut config = SourceConfig::new(spec.url.clone(), mirror);
        if let Some(branch) = &spec.branch {
            config.branch = branch.clone();
        }
        if let Some(path) = &spec.path {
            config.path = path.trim_matches('/').to_owned();
        }
        if let Some(policy) = &spec.on_history_rewrite {
            config.on_history_rewrite = policy.parse()?;
        }
        config.credentials = credentials;
        config.verify = verify;
        Ok(config)
    }

    /// Sets the branch.
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = branch.into();
        self
    }

    /// Sets the directory to render.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the credentials.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets the history-rewrite policy.
    pub fn on_history_rewrite(mut self, policy: RewritePolicy) -> Self {
        self.on_history_rewrite = policy;
        self
    }

    /// Sets the signature policy.
    pub fn verify(mut self, policy: SignaturePolicy) -> Self {
        self.verify = Some(policy);
        self
    }

    /// Lets a remote on this machine lend its objects to the mirror (a Git alternate, for the
    /// life of the [`Source`]) rather than packing and copying them: a fetch then moves only
    /// refs. For a short-lived mirror; a lasting one must own its objects.
    pub fn borrow_local_objects(mut self) -> Self {
        self.borrow_local_objects = true;
        self
    }

    /// Renders every commit for `owner` (see [`Owner`]).
    pub fn owner(mut self, owner: Owner) -> Self {
        self.render.owner = Some(owner);
        self
    }
}

/// How long a source waits after failed fetches: 5 s, doubling, at most 5 min, for ever.
pub const FETCH_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// A new head that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The branch's commit.
    pub commit: Oid,
    /// How it relates to the last applied commit.
    pub ancestry: Ancestry,
    /// Who signed it, when a signature policy is set.
    pub signed_by: Option<Verified>,
}

/// What the source reports about itself (for the `Fleet` status and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// The branch's commit at the last successful fetch.
    pub head: Option<Oid>,
    /// Failed fetches since the last success.
    pub consecutive_failures: u32,
    /// The last failure, redacted.
    pub last_error: Option<String>,
    /// When to try again after the last failure.
    pub retry_in: Option<Duration>,
}

/// A followed branch and its mirror.
pub struct Source {
    config: SourceConfig,
    remote: Remote,
    repo: Repository,
    history: History,
    head: Option<Oid>,
    failures: u32,
    last_error: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.remote.display_url())
            .field("branch", &self.config.branch)
            .field("history", &self.history)
            .field("failures", &self.failures)
            .finish()
    }
}

impl Source {
    /// Opens (or creates) the mirror. `history` is what the controller persisted.
    pub fn open(config: SourceConfig, history: History) -> Result<Self> {
        std::fs::create_dir_all(&config.mirror).map_err(|source| Error::Io {
            path: config.mirror.clone(),
            source,
        })?;
        let mut repo = match Repository::open_bare(&config.mirror) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(&config.mirror).map_err(git(format!(
                "creating the mirror at {}",
                config.mirror.display()
            )))?,
        };
        if config.borrow_local_objects
            && let Some(objects) = local_objects(&config.url)
        {
            // In `objects/info/alternates`, so that every handle on the mirror (the render's
            // readers open their own) sees them; read again by opening the mirror anew.
            let alternates = repo.path().join("objects/info/alternates");
            std::fs::create_dir_all(repo.path().join("objects/info"))
                .and_then(|()| std::fs::write(&alternates, format!("{}\n", objects.display())))
                .map_err(|source| Error::Io {
                    path: alternates.clone(),
                    source,
                })?;
            repo = Repository::open_bare(&config.mirror).map_err(git(format!(
                "opening the mirror at {}",
                config.mirror.display()
            )))?;
        }
        // Validate what was persisted now, not at the first fetch.
        history.last_applied()?;
        history.last_good()?;
        let remote = Remote::new(&config.url, config.credentials.clone());
        let head = repo
            .refname_to_id(&format!("refs/heads/{}", config.branch))
            .ok();
        Ok(Source {
            config,
            remote,
            repo,
            history,
            head,
            failures: 0,
            last_error: None,
        })
    }

    /// Fetches the branch and checks its head: it must descend from the last applied commit
    /// (or the policy adopts rewrites) and satisfy the signature policy. On any failure the
    /// last applied and last good commits stay as they were, and [`Source::retry_in`] says
    /// when to try again.
    pub fn fetch(&mut self) -> Result<Fetched> {
        let fetched = self.remote.fetch(&self.repo, &self.config.branch);
        match fetched {
            Ok(commit) => {
                self.failures = 0;
                self.last_error = None;
                self.head = Some(commit);
                tracing::debug!(
                    url = %self.remote.display_url(),
                    branch = %self.config.branch,
                    %commit,
                    "fetched"
                );
                self.check(commit)
            }
            Err(err) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(err.to_string());
                tracing::warn!(
                    url = %self.remote.display_url(),
                    branch = %self.config.branch,
                    failures = self.failures,
                    retry_in = ?self.retry_in(),
                    error = %err,
                    "fetch failed; keeping the last good commit"
                );
                Err(err)
            }
        }
    }

    /// Checks a commit of the mirror against the history and signature policies.
    pub fn check(&self, commit: Oid) -> Result<Fetched> {
        check_head(
            &self.repo,
            &Judged {
                branch: &self.config.branch,
                last_applied: self.history.last_applied()?,
                on_history_rewrite: self.config.on_history_rewrite,
                verify: self.config.verify.as_ref(),
            },
            commit,
        )
    }

    /// Renders commits with `options` from now on.
    pub fn set_render_options(&mut self, options: Options) {
        self.config.render = options;
    }

    /// The files of `commit`.
    pub fn tree(&self, commit: Oid) -> Result<CommitTree> {
        CommitTree::new(&self.repo, commit)
    }

    /// Renders the configured path of `commit` through `cache`.
    pub fn render(&self, commit: Oid, cache: &mut RenderCache) -> Result<Rendered> {
        self.tree(commit)?
            .render(&self.config.path, &self.config.render, cache)
    }

    /// The commit `rev` names in the mirror: a commit id (or a unique prefix), a branch of the
    /// remote, a tag, or an expression such as `main~2`.
    pub fn resolve(&self, rev: &str) -> Result<Oid> {
        let object = self
            .repo
            .revparse_single(rev)
            .or_else(|_| self.repo.revparse_single(&format!("refs/heads/{rev}")))
            .map_err(|e| {
                Error::Config(format!(
                    "{rev:?} names no commit of the mirror: {}",
                    e.message()
                ))
            })?;
        object
            .peel_to_commit()
            .map(|c| c.id())
            .map_err(|_| Error::Config(format!("{rev:?} is not a commit")))
    }

    /// The newest commit both `a` and `b` descend from (`git merge-base`).
    pub fn merge_base(&self, a: Oid, b: Oid) -> Result<Oid> {
        self.repo
            .merge_base(a, b)
            .map_err(git(format!("finding the merge base of {a} and {b}")))
    }

    /// The first of `quarantined` that `head` is, or descends from without a revert of it
    /// since: such a head would roll the quarantined change out again. See
    /// [`crate::quarantine::unreverted`].
    pub fn carries(&self, head: Oid, quarantined: &[&str]) -> Option<String> {
        crate::quarantine::unreverted(&self.repo, head, quarantined)
    }

    /// Records that `commit`'s changes were written to the fleet.
    pub fn mark_applied(&mut self, commit: Oid) -> Result<()> {
        self.pin("refs/endstate/applied", commit)?;
        self.history.last_applied = Some(commit.to_string());
        Ok(())
    }

    /// Records that `commit`'s rollout completed healthy.
    pub fn mark_good(&mut self, commit: Oid) -> Result<()> {
        self.pin("refs/endstate/good", commit)?;
        self.history.last_good = Some(commit.to_string());
        Ok(())
    }

    fn pin(&self, refname: &str, commit: Oid) -> Result<()> {
        self.repo
            .reference(refname, commit, true, "endstate")
            .map_err(git(format!("pointing {refname} at {commit}")))?;
        Ok(())
    }

    /// The last applied and last good commits, for persisting.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The commit to keep serving while fetches fail or heads are refused.
    pub fn last_good(&self) -> Option<Oid> {
        self.history.last_good().ok().flatten()
    }

    /// How long to wait before the next fetch after failures; `None` when the last fetch
    /// succeeded.
    pub fn retry_in(&self) -> Option<Duration> {
        (self.failures > 0).then(|| self.config.backoff.delay(self.failures - 1))
    }

    /// The source's state, for status and metrics.
    pub fn status(&self) -> SourceStatus {
        SourceStatus {
            head: self.head,
            consecutive_failures: self.failures,
            last_error: self.last_error.clone(),
            retry_in: self.retry_in(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The mirror.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }
}

/// The object directory of a repository on this machine named by `url` (`file://…` or a path).
fn local_objects(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    if !path.starts_with('/') {
        return None;
    }
    // The common directory: a linked work tree's own `.git/worktrees/<name>` has no objects.
    Repository::open(path)
        .ok()
        .map(|repo| repo.commondir().join("objects"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fetch_waits_the_fetch_backoff_doubling_up_to_its_bound() {
        let delays: Vec<u64> = (0..8).map(|n| FETCH_BACKOFF.delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
    }
}

/// What a branch's head is judged against: its branch, the last applied commit, and the
/// Fleet's history and signature policies.
#[derive(Clone, Copy, Debug)]
pub struct Judged<'a> {
    /// The branch the head is the head of.
    pub branch: &'a str,
    /// The commit last applied, which the head must descend from.
    pub last_applied: Option<Oid>,
    /// What to do when it does not.
    pub on_history_rewrite: RewritePolicy,
    /// The signature policy, if heads must be signed.
    pub verify: Option<&'a SignaturePolicy>,
}

/// Checks `commit` of `repo` against the history and signature policies of `judged`: the one
/// check of a head, run by [`Source::fetch`] for the controller and by `plan` for a Fleet's
/// branch.
pub fn check_head(repo: &Repository, judged: &Judged<'_>, commit: Oid) -> Result<Fetched> {
    let ancestry = history::check(
        repo,
        judged.branch,
        commit,
        judged.last_applied,
        judged.on_history_rewrite,
    )?;
    if ancestry == Ancestry::Rewritten {
        tracing::warn!(branch = %judged.branch, %commit, "history rewritten; adopting it");
    }
    let signed_by = match judged.verify {
        Some(policy) => Some(
            policy
                .verify(repo, commit)
                .map_err(|reason| Error::Unverified { commit, reason })?,
        ),
        None => None,
    };
    Ok(Fetched {
        commit,
        ancestry,
        signed_by,
    })
}
