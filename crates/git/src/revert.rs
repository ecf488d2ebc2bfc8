//! The revert writer: undoes commits on the branch with new commits, built without a worktree
//! and pushed without force.
//!
//! ```text
//!   fetch head ─▶ skip what is already reverted (Endstate-Revert-Of trailers after the commits)
//!       ▲        ─▶ revert each commit, newest first, in memory ─▶ commit (signed if configured)
//!       │        ─▶ push head:branch (fast-forward only)
//!       └─ rejected (the branch moved): fetch and rebuild on the new head, up to N attempts
//!
//!   a revert that conflicts on the head is built on the reverted commit itself instead and
//!   pushed to the side branch endstate/revert-<short-sha>, for a human to merge
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use endstate_core::ObjectRef;
use git2::{Commit, Oid, Repository, Signature};

use crate::error::{Error, FailureKind, Result, git};
use crate::remote::Remote;
use crate::signature::SshSigner;
use crate::source::SourceConfig;

pub use crate::trailers::{FLEET, REVERT_OF};

/// The local ref a revert is pushed from.
const PUSH_REF: &str = "refs/endstate/revert";

/// How reverts are written.
#[derive(Clone, Debug)]
pub struct RevertConfig {
    /// The fleet, for the `Endstate-Fleet` trailer.
    pub fleet: String,
    /// Author and committer name.
    pub author_name: String,
    /// Author and committer email.
    pub author_email: String,
    /// Signs the reverts, so that the signature policy accepts them.
    pub signer: Option<SshSigner>,
    /// Push attempts before giving up (at least 1).
    pub max_push_attempts: u32,
}

impl RevertConfig {
    /// Reverts for `fleet` by `name <email>`, unsigned, five push attempts.
    pub fn new(fleet: &str, name: &str, email: &str) -> Self {
        RevertConfig {
            fleet: fleet.to_owned(),
            author_name: name.to_owned(),
            author_email: email.to_owned(),
            signer: None,
            max_push_attempts: 5,
        }
    }

    /// The settings of a `Fleet`'s `spec.revert`; the signing key comes from the Secret it
    /// names, which the caller reads.
    pub fn from_spec(
        fleet: &str,
        spec: &endstate_api::fleet::RevertConfig,
        signer: Option<SshSigner>,
    ) -> Result<Self> {
        let mut config = RevertConfig::new(fleet, &spec.author_name, &spec.author_email);
        config.signer = signer;
        if let Some(attempts) = spec.max_push_attempts {
            config.max_push_attempts = u32::try_from(attempts)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "spec.revert.maxPushAttempts {attempts} must be at least 1"
                    ))
                })?;
        }
        Ok(config)
    }
}

/// Why the commits are reverted: what the breaker saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// One line, e.g. `3 of 10 machines failed their gates`.
    pub summary: String,
    /// The wave that tripped the breaker.
    pub wave: Option<String>,
    /// The objects that failed.
    pub failed: Vec<ObjectRef>,
    /// The thresholds crossed, e.g. `maxFailuresPerWave 2`.
    pub thresholds: Vec<String>,
}

/// A commit and its revert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reverted {
    /// The reverted commit.
    pub original: Oid,
    /// The revert commit.
    pub revert: Oid,
}

/// What [`RevertWriter::revert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevertOutcome {
    /// The reverts are on the branch.
    Pushed {
        /// The reverts pushed now, in the order given.
        reverts: Vec<Reverted>,
        /// Commits skipped because the branch already reverts them.
        already: Vec<Reverted>,
        /// Commits skipped because the branch already undoes their change (no revert needed).
        empty: Vec<Oid>,
        /// The branch's new head.
        head: Oid,
    },
    /// The reverts conflict with the branch; they were pushed to a side branch for a human to
    /// merge, and the branch is untouched.
    SideBranch {
        /// The side branch, e.g. `endstate/revert-1a2b3c4`.
        branch: String,
        /// The reverts on it.
        reverts: Vec<Reverted>,
        /// The first commit whose revert conflicts on the branch.
        conflicted: Oid,
        /// The paths that conflict.
        paths: Vec<String>,
    },
    /// Every commit already has a revert on the branch; nothing was pushed.
    AlreadyReverted {
        /// The existing reverts.
        reverts: Vec<Reverted>,
    },
    /// A commit to revert is itself an endstate revert: endstate never reverts its own
    /// reverts; a human decides. Nothing was pushed.
    RefusedRevertOfRevert {
        /// The revert commit.
        commit: Oid,
        /// The commit it reverted.
        reverts: Oid,
    },
}

/// Writes reverts to one branch of one remote.
pub struct RevertWriter {
    config: RevertConfig,
    remote: Remote,
    branch: String,
    repo: Repository,
}

impl std::fmt::Debug for RevertWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevertWriter")
            .field("url", &self.remote.display_url())
            .field("branch", &self.branch)
            .field("config", &self.config)
            .finish()
    }
}

impl RevertWriter {
    /// A writer for the source's branch, working in the source's mirror.
    pub fn open(source: &SourceConfig, config: RevertConfig) -> Result<Self> {
        if config.author_name.trim().is_empty() || config.author_email.trim().is_empty() {
            return Err(Error::Config(
                "reverts need an author name and email (spec.revert.authorName, authorEmail)"
                    .into(),
            ));
        }
        std::fs::create_dir_all(&source.mirror).map_err(|e| Error::Io {
            path: source.mirror.clone(),
            source: e,
        })?;
        let repo = Repository::open_bare(&source.mirror)
            .or_else(|_| Repository::init_bare(&source.mirror))
            .map_err(git(format!(
                "opening the mirror at {}",
                source.mirror.display()
            )))?;
        Ok(RevertWriter {
            config,
            remote: Remote::new(&source.url, source.credentials.clone()),
            branch: source.branch.clone(),
            repo,
        })
    }

    /// Reverts `commits` (newest first) on the branch, with `evidence` in each message.
    pub fn revert(&mut self, commits: &[Oid], evidence: &Evidence) -> Result<RevertOutcome> {
        if commits.is_empty() {
            return Err(Error::Config("no commit to revert".into()));
        }
        let attempts = self.config.max_push_attempts.max(1);
        for attempt in 1..=attempts {
            let head = self.remote.fetch(&self.repo, &self.branch)?;
            for &commit in commits {
                if let Some(reverts) = self.revert_of(commit)? {
                    tracing::warn!(%commit, %reverts, "refusing to revert an endstate revert");
                    return Ok(RevertOutcome::RefusedRevertOfRevert { commit, reverts });
                }
                let on_branch = commit == head
                    || self
                        .repo
                        .graph_descendant_of(head, commit)
                        .map_err(git(format!("checking that {commit} is on {}", self.branch)))?;
                if !on_branch {
                    return Err(Error::NotOnBranch {
                        commit,
                        branch: self.branch.clone(),
                    });
                }
            }
            let existing = self.existing_reverts(head, commits)?;
            let already: Vec<Reverted> = commits
                .iter()
                .filter_map(|c| {
                    existing.get(c).map(|&revert| Reverted {
                        original: *c,
                        revert,
                    })
                })
                .collect();
            let todo: Vec<Oid> = commits
                .iter()
                .copied()
                .filter(|c| !existing.contains_key(c))
                .collect();
            if todo.is_empty() {
                return Ok(RevertOutcome::AlreadyReverted { reverts: already });
            }

            let built = match self.build(head, &todo, evidence)? {
                Build::Clean(built) => built,
                Build::Conflict { commit, paths } => {
                    return self.side_branch(commits[0], &todo, commit, paths, evidence);
                }
            };
            if built.reverts.is_empty() {
                return Ok(RevertOutcome::Pushed {
                    reverts: Vec::new(),
                    already,
                    empty: built.empty,
                    head,
                });
            }
            self.repo
                .reference(PUSH_REF, built.head, true, "endstate revert")
                .map_err(git("preparing the revert for pushing"))?;
            let branch_ref = format!("refs/heads/{}", self.branch);
            match self.remote.push(&self.repo, PUSH_REF, &branch_ref) {
                Ok(()) => {
                    self.repo
                        .reference(&branch_ref, built.head, true, "endstate revert pushed")
                        .map_err(git(format!("moving {branch_ref} in the mirror")))?;
                    tracing::info!(
                        branch = %self.branch,
                        head = %built.head,
                        reverted = ?built.reverts.iter().map(|r| r.original.to_string()).collect::<Vec<_>>(),
                        "revert pushed"
                    );
                    return Ok(RevertOutcome::Pushed {
                        reverts: built.reverts,
                        already,
                        empty: built.empty,
                        head: built.head,
                    });
                }
                Err(Error::Push {
                    kind: FailureKind::Rejected,
                    message,
                    ..
                }) => {
                    tracing::info!(
                        branch = %self.branch,
                        attempt,
                        %message,
                        "revert push rejected (the branch moved); rebuilding on the new head"
                    );
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::PushRetriesExhausted {
            url: self.remote.display_url(),
            branch: self.branch.clone(),
            attempts,
        })
    }

    /// The commit `commit` reverts, when it is an endstate revert.
    fn revert_of(&self, commit: Oid) -> Result<Option<Oid>> {
        let commit = self
            .repo
            .find_commit(commit)
            .map_err(git(format!("reading commit {commit}")))?;
        Ok(trailer_oids(&commit, REVERT_OF).into_iter().next())
    }

    /// Reverts already on the branch after the commits, by trailer.
    fn existing_reverts(&self, head: Oid, commits: &[Oid]) -> Result<HashMap<Oid, Oid>> {
        let mut walk = self.repo.revwalk().map_err(git("walking the branch"))?;
        walk.push(head).map_err(git("walking the branch"))?;
        for &c in commits {
            walk.hide(c).map_err(git("walking the branch"))?;
        }
        let mut found = HashMap::new();
        for oid in walk {
            let oid = oid.map_err(git("walking the branch"))?;
            let commit = self
                .repo
                .find_commit(oid)
                .map_err(git(format!("reading commit {oid}")))?;
            for original in trailer_oids(&commit, REVERT_OF) {
                if commits.contains(&original) {
                    found.entry(original).or_insert(oid);
                }
            }
        }
        Ok(found)
    }

    /// Builds the reverts of `commits` on `base`, in memory.
    fn build(&self, base: Oid, commits: &[Oid], evidence: &Evidence) -> Result<Build> {
        let mut tip = self
            .repo
            .find_commit(base)
            .map_err(git(format!("reading commit {base}")))?;
        let mut built = Built {
            head: base,
            reverts: Vec::new(),
            empty: Vec::new(),
        };
        for &original in commits {
            let commit = self
                .repo
                .find_commit(original)
                .map_err(git(format!("reading commit {original}")))?;
            let mainline = if commit.parent_count() > 1 { 1 } else { 0 };
            let mut index = self
                .repo
                .revert_commit(&commit, &tip, mainline, None)
                .map_err(git(format!("reverting {original}")))?;
            if index.has_conflicts() {
                let mut paths: Vec<String> = index
                    .conflicts()
                    .map_err(git(format!(
                        "listing the conflicts of reverting {original}"
                    )))?
                    .filter_map(|c| c.ok())
                    .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                    .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                    .collect();
                paths.dedup();
                return Ok(Build::Conflict {
                    commit: original,
                    paths,
                });
            }
            let tree_id = index
                .write_tree_to(&self.repo)
                .map_err(git(format!("writing the tree of the revert of {original}")))?;
            if tree_id == tip.tree_id() {
                built.empty.push(original);
                continue;
            }
            let tree = self
                .repo
                .find_tree(tree_id)
                .map_err(git("reading the revert's tree"))?;
            let message = message(&commit, &self.config.fleet, evidence);
            let revert = self.commit(&tip, &tree, &message)?;
            built.reverts.push(Reverted { original, revert });
            tip = self
                .repo
                .find_commit(revert)
                .map_err(git(format!("reading commit {revert}")))?;
            built.head = revert;
        }
        Ok(Build::Clean(built))
    }

    fn commit(&self, parent: &Commit<'_>, tree: &git2::Tree<'_>, message: &str) -> Result<Oid> {
        let who = Signature::now(&self.config.author_name, &self.config.author_email)
            .map_err(git("making the revert's author signature"))?;
        match &self.config.signer {
            None => self
                .repo
                .commit(None, &who, &who, message, tree, &[parent])
                .map_err(git("writing the revert commit")),
            Some(signer) => {
                let buffer = self
                    .repo
                    .commit_create_buffer(&who, &who, message, tree, &[parent])
                    .map_err(git("writing the revert commit"))?;
                let content = buffer
                    .as_str()
                    .ok_or_else(|| Error::Config("the revert commit is not UTF-8".into()))?;
                let signature = signer.sign(content.as_bytes())?;
                self.repo
                    .commit_signed(content, &signature, Some("gpgsig"))
                    .map_err(git("writing the signed revert commit"))
            }
        }
    }

    /// Pushes reverts built on the newest reverted commit to `endstate/revert-<short-sha>`.
    fn side_branch(
        &self,
        newest: Oid,
        todo: &[Oid],
        conflicted: Oid,
        paths: Vec<String>,
        evidence: &Evidence,
    ) -> Result<RevertOutcome> {
        let branch = format!("endstate/revert-{}", &newest.to_string()[..7]);
        // Already pushed by an earlier attempt? Then report that one.
        match self.remote.fetch(&self.repo, &branch) {
            Ok(existing) => {
                let found = self.existing_reverts(existing, todo)?;
                if todo.iter().all(|c| found.contains_key(c)) {
                    let reverts = todo
                        .iter()
                        .map(|c| Reverted {
                            original: *c,
                            revert: found[c],
                        })
                        .collect();
                    return Ok(RevertOutcome::SideBranch {
                        branch,
                        reverts,
                        conflicted,
                        paths,
                    });
                }
            }
            Err(Error::BranchNotFound { .. }) => {}
            Err(err) => return Err(err),
        }
        let built = match self.build(newest, todo, evidence)? {
            Build::Clean(built) => built,
            Build::Conflict { commit, paths } => {
                return Err(Error::Config(format!(
                    "the revert of {commit} conflicts even on the reverted commit itself (in {}); \
                     revert it by hand",
                    paths.join(", ")
                )));
            }
        };
        self.repo
            .reference(PUSH_REF, built.head, true, "endstate revert (side branch)")
            .map_err(git("preparing the revert for pushing"))?;
        self.remote
            .push(&self.repo, PUSH_REF, &format!("refs/heads/{branch}"))?;
        tracing::warn!(
            branch = %self.branch,
            side_branch = %branch,
            %conflicted,
            paths = ?paths,
            "the revert conflicts; pushed it to a side branch for a human to merge"
        );
        Ok(RevertOutcome::SideBranch {
            branch,
            reverts: built.reverts,
            conflicted,
            paths,
        })
    }
}

enum Build {
    Clean(Built),
    Conflict { commit: Oid, paths: Vec<String> },
}

struct Built {
    head: Oid,
    reverts: Vec<Reverted>,
    empty: Vec<Oid>,
}

/// The ids in a commit's `key:` trailers.
fn trailer_oids(commit: &Commit<'_>, key: &str) -> Vec<Oid> {
    let Some(message) = commit.message() else {
        return Vec::new();
    };
    let Ok(trailers) = git2::message_trailers_strs(message) else {
        return Vec::new();
    };
    trailers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .filter_map(|(_, v)| Oid::from_str(v.trim()).ok())
        .collect()
}

/// `Revert "<subject>"`, the evidence, and the trailers.
fn message(commit: &Commit<'_>, fleet: &str, evidence: &Evidence) -> String {
    let subject = commit.summary().unwrap_or("(no subject)");
    let mut m = format!(
        "Revert \"{subject}\"\n\nThis reverts commit {}.\n\nendstate's circuit breaker tripped",
        commit.id()
    );
    if let Some(wave) = &evidence.wave {
        let _ = write!(m, " in wave {wave}");
    }
    m.push_str(if evidence.summary.is_empty() {
        "."
    } else {
        ": "
    });
    m.push_str(&evidence.summary);
    m.push('\n');
    if !evidence.thresholds.is_empty() {
        m.push_str("\nThresholds crossed:\n");
        for t in &evidence.thresholds {
            let _ = writeln!(m, "- {t}");
        }
    }
    if !evidence.failed.is_empty() {
        m.push_str("\nFailed objects:\n");
        for o in evidence.failed.iter().take(50) {
            let _ = writeln!(m, "- {o}");
        }
        if evidence.failed.len() > 50 {
            let _ = writeln!(m, "- … and {} more", evidence.failed.len() - 50);
        }
    }
    let _ = write!(m, "\n{REVERT_OF}: {}\n{FLEET}: {fleet}\n", commit.id());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_settings() {
        let spec = |attempts| endstate_api::fleet::RevertConfig {
            author_name: "endstate".into(),
            author_email: "endstate@example.com".into(),
            signing_key_secret_ref: None,
            max_push_attempts: attempts,
        };
        let config = RevertConfig::from_spec("prod", &spec(Some(3)), None).unwrap();
        assert_eq!(
            (config.max_push_attempts, config.fleet.as_str()),
            (3, "prod")
        );
        assert_eq!(
            RevertConfig::from_spec("prod", &spec(None), None)
                .unwrap()
                .max_push_attempts,
            5
        );
        let err = RevertConfig::from_spec("prod", &spec(Some(0)), None).unwrap_err();
        assert!(err.to_string().contains("maxPushAttempts 0"), "{err}");
    }
}
