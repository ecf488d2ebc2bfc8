//! A commit's tree as an [`endstate_core::Tree`]: files are read straight from the object
//! store, with no worktree, and each file's blob id is its content id, so a
//! [`RenderCache`] skips every file a new commit did not change.
//!
//! The tree is indexed once (paths → blob ids); blobs are read on demand through a small pool
//! of repository handles, because the renderer reads files from several threads and a
//! libgit2 repository handle is not shared between threads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use endstate_core::Rendered;
use endstate_core::render::{Options, RenderCache, render_cached};
use endstate_core::tree::{ContentId, EntryKind, Tree, TreeError, join, parent};
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

use crate::error::{Error, Result, git};

/// Symlink hops followed before a path is declared a loop.
const MAX_LINK_HOPS: usize = 16;

/// The files of one commit.
pub struct CommitTree {
    commit: Oid,
    repo_path: PathBuf,
    entries: HashMap<String, Node>,
    pool: Mutex<Vec<Repository>>,
}

impl std::fmt::Debug for CommitTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitTree")
            .field("commit", &self.commit)
            .field("entries", &self.entries.len())
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Node {
    File(Oid),
    Dir,
    Link(String),
}

impl CommitTree {
    /// Indexes the tree of `commit` in `repo`.
    pub fn new(repo: &Repository, commit: Oid) -> Result<Self> {
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git(format!("reading the tree of commit {commit}")))?;
        let mut entries = HashMap::new();
        entries.insert(String::new(), Node::Dir);
        let mut failure = None;
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let Some(name) = entry.name() else {
                return TreeWalkResult::Skip;
            };
            let path = format!("{dir}{name}");
            let node = match entry.kind() {
                Some(ObjectType::Tree) => Node::Dir,
                Some(ObjectType::Blob) if entry.filemode() == 0o120000 => {
                    match repo.find_blob(entry.id()) {
                        Ok(blob) => {
                            Node::Link(String::from_utf8_lossy(blob.content()).into_owned())
                        }
                        Err(err) => {
                            failure = Some(err);
                            return TreeWalkResult::Abort;
                        }
                    }
                }
                Some(ObjectType::Blob) => Node::File(entry.id()),
                // Submodules and anything else are not part of the repository's files.
                _ => return TreeWalkResult::Skip,
            };
            entries.insert(path, node);
            TreeWalkResult::Ok
        })
        .map_err(git(format!("walking the tree of commit {commit}")))?;
        if let Some(err) = failure {
            return Err(git(format!("reading a symlink in commit {commit}"))(err));
        }
        Ok(CommitTree {
            commit,
            repo_path: repo.path().to_owned(),
            entries,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// The commit.
    pub fn commit(&self) -> Oid {
        self.commit
    }

    /// Renders the kustomization in `dir` with `options` through `cache`.
    pub fn render(
        &self,
        dir: &str,
        options: &Options,
        cache: &mut RenderCache,
    ) -> Result<Rendered> {
        render_cached(self, dir, options.clone(), cache).map_err(|diagnostics| Error::Invalid {
            commit: self.commit,
            diagnostics,
        })
    }

    /// Follows symlinks along `path` to a file or directory.
    fn resolve(&self, path: &str) -> Result<(String, &Node), TreeError> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .rev()
            .collect();
        let mut at = String::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            let next = join(&at, &part).ok_or_else(|| TreeError::OutsideRoot(path.into()))?;
            match self.entries.get(&next) {
                None => return Err(TreeError::NotFound),
                Some(Node::Link(target)) => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(TreeError::Io(std::io::Error::other(format!(
                            "too many levels of symlinks at {next}"
                        ))));
                    }
                    if target.starts_with('/') {
                        return Err(TreeError::OutsideRoot(target.clone()));
                    }
                    let resolved = join(parent(&next), target)
                        .ok_or_else(|| TreeError::OutsideRoot(target.clone()))?;
                    // Walk the link's target from the root again.
                    pending.extend(
                        resolved
                            .split('/')
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                            .rev(),
                    );
                    at.clear();
                }
                Some(_) => at = next,
            }
        }
        let node = self.entries.get(&at).ok_or(TreeError::NotFound)?;
        Ok((at, node))
    }

    fn with_repo<T>(
        &self,
        f: impl FnOnce(&Repository) -> Result<T, git2::Error>,
    ) -> Result<T, TreeError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let repo = match pooled {
            Some(repo) => repo,
            None => Repository::open_bare(&self.repo_path).map_err(io)?,
        };
        let result = f(&repo).map_err(io);
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(repo);
        result
    }
}

fn io(err: git2::Error) -> TreeError {
    TreeError::Io(std::io::Error::other(err.message().to_owned()))
}

impl Tree for CommitTree {
    fn entry(&self, path: &str) -> Result<EntryKind, TreeError> {
        match self.resolve(path)?.1 {
            Node::Dir => Ok(EntryKind::Dir),
            Node::File(oid) => {
                let oid = *oid;
                let (size, _) = self.with_repo(|repo| repo.odb()?.read_header(oid))?;
                Ok(EntryKind::File(size as u64))
            }
            Node::Link(_) => unreachable!("resolve follows links"),
        }
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        match self.resolve(path)?.1 {
            Node::Dir => Err(TreeError::Io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                format!("{path} is a directory"),
            ))),
            Node::File(oid) => {
                let oid = *oid;
                self.with_repo(|repo| Ok(repo.find_blob(oid)?.content().to_vec()))
            }
            Node::Link(_) => unreachable!("resolve follows links"),
        }
    }

    fn content_id(&self, path: &str) -> Option<ContentId> {
        match self.resolve(path).ok()?.1 {
            Node::File(oid) => Some(ContentId::from_bytes(oid.as_bytes())),
            _ => None,
        }
    }
}
