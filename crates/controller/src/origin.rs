//! Where the end state comes from: a branch of a Git remote (the normal case), or a local
//! directory for people iterating on a repository, watched for changes.
//!
//! A directory has no commits: each distinct content of the overlay's tree gets an id,
//! `local-<sha256 prefix>`, which plays the commit's part in status, quarantine and logs. Only
//! the current content can be rendered, and nothing is ever reverted in a directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use endstate_core::ownership::FleetId;
use endstate_core::{DirTree, Options, Owner, Rendered};
use endstate_git::{Oid, RenderCache, Source};
use sha2::{Digest, Sha256};

use crate::error::SourceError;
use crate::refusal::Refusal;

/// The source of a fleet's end state.
#[derive(Debug)]
pub enum Origin {
    /// A branch of a Git remote, through a local mirror.
    Git(Box<Source>),
    /// A directory on disk.
    Dir(LocalDir),
}

/// A directory holding a fleet repository.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    path: String,
    current: Option<String>,
    options: Options,
}

impl LocalDir {
    /// The repository at `root`; `path` is the overlay inside it.
    pub fn new(root: impl Into<PathBuf>, path: impl Into<String>) -> Self {
        LocalDir {
            root: root.into(),
            path: path.into(),
            current: None,
            options: Options::default(),
        }
    }

    /// The repository's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The id of the tree's current content.
    fn id(&self) -> Result<String, SourceError> {
        let mut files = Vec::new();
        collect(&self.root, &self.root, &mut files).map_err(|source| SourceError::Read {
            dir: self.root.clone(),
            source,
        })?;
        files.sort();
        let mut hash = Sha256::new();
        for (rel, content) in files {
            hash.update(rel.as_bytes());
            hash.update([0]);
            hash.update((content.len() as u64).to_le_bytes());
            hash.update(&content);
        }
        let digest = hash.finalize();
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        Ok(format!("local-{hex}"))
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

impl From<Source> for Origin {
    fn from(source: Source) -> Self {
        Origin::Git(Box::new(source))
    }
}

impl From<LocalDir> for Origin {
    fn from(dir: LocalDir) -> Self {
        Origin::Dir(dir)
    }
}

impl Origin {
    /// Renders every commit for the fleet `fleet` in `namespace`: objects land in its
    /// namespace and carry its ownership label.
    pub fn own(&mut self, namespace: &str, fleet: &str) {
        let options = Options::owned_by(Owner {
            namespace: namespace.to_owned(),
            labels: FleetId::new(namespace, fleet).labels(namespace),
        });
        match self {
            Origin::Git(source) => source.set_render_options(options),
            Origin::Dir(dir) => dir.options = options,
        }
    }

    /// Looks at the source: the id of its head (a commit id, or a directory content id).
    pub fn fetch(&mut self) -> Result<String, Refusal> {
        match self {
            Origin::Git(source) => source
                .fetch()
                .map(|f| f.commit.to_string())
                .map_err(|e| Refusal::from_git(&e)),
            Origin::Dir(dir) => {
                let id = dir.id().map_err(|e| Refusal::FetchFailed(e.to_string()))?;
                dir.current = Some(id.clone());
                Ok(id)
            }
        }
    }

    /// Whether the source has been looked at.
    pub fn fetched(&self) -> bool {
        match self {
            Origin::Git(source) => source.status().head.is_some(),
            Origin::Dir(dir) => dir.current.is_some(),
        }
    }

    /// Renders the overlay at `id`.
    pub fn render(&self, id: &str, cache: &mut RenderCache) -> Result<Rendered, SourceError> {
        match self {
            Origin::Git(source) => {
                let oid = Oid::from_str(id).map_err(|_| SourceError::NotACommit(id.to_owned()))?;
                Ok(source.render(oid, cache)?)
            }
            Origin::Dir(dir) => {
                if dir.current.as_deref() != Some(id) || dir.id()? != id {
                    return Err(SourceError::Changed {
                        dir: dir.root.clone(),
                        id: id.to_owned(),
                    });
                }
                let tree = DirTree::open(&dir.root).map_err(|source| SourceError::Open {
                    dir: dir.root.clone(),
                    source,
                })?;
                endstate_core::render(&tree, &dir.path, dir.options.clone()).map_err(
                    |diagnostics| SourceError::Render {
                        id: id.to_owned(),
                        diagnostics,
                    },
                )
            }
        }
    }

    /// How long to wait before looking again after a failure.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Origin::Git(source) => source.retry_in(),
            Origin::Dir(_) => None,
        }
    }

    /// The Git source, when the end state comes from Git.
    pub fn git(&self) -> Option<&Source> {
        match self {
            Origin::Git(source) => Some(source),
            Origin::Dir(_) => None,
        }
    }

    /// Records that the fleet is at `id` (and whether healthy) where the source keeps such
    /// records: the Git mirror's refs.
    pub fn mark(&mut self, id: &str, good: bool) {
        let (Origin::Git(source), Ok(oid)) = (self, Oid::from_str(id)) else {
            return;
        };
        if let Err(err) = source.mark_applied(oid) {
            tracing::warn!(%err, "recording the applied commit in the mirror");
        }
        if good && let Err(err) = source.mark_good(oid) {
            tracing::warn!(%err, "recording the good commit in the mirror");
        }
    }
}
