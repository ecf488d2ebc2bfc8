//! Where a repository's files come from: a directory on disk, or (in the Git adapter) a
//! commit's tree read straight from the object store.
//!
//! Paths are repository-relative and `/`-separated; `""` is the root. A [`Tree`] never hands
//! out anything outside its root: a symlink that leads out of the tree is an error, not a
//! file.

use std::io;
use std::path::{Path, PathBuf};

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a symlink to one inside the tree) of this many bytes.
    File(u64),
    /// A directory.
    Dir,
}

/// Why a path could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Nothing is there.
    #[error("no such file or directory")]
    NotFound,
    /// A symlink points outside the repository.
    #[error("symlink leads outside the repository (to {0})")]
    OutsideRoot(String),
    /// The storage failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The identity of a file's content: two files with the same id hold the same bytes (in the
/// Git adapter, the blob id). Up to 32 bytes, zero-padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId([u8; 32]);

impl ContentId {
    /// An id from a hash of up to 32 bytes (a SHA-1 or SHA-256 object id).
    ///
    /// # Panics
    ///
    /// When `bytes` is longer than 32.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut id = [0; 32];
        id[..bytes.len()].copy_from_slice(bytes);
        ContentId(id)
    }
}

/// A read-only file tree.
pub trait Tree: Sync {
    /// What is at `path`.
    fn entry(&self, path: &str) -> Result<EntryKind, TreeError>;
    /// The content of the file at `path`.
    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError>;
    /// The identity of the content at `path`, when the tree knows it without reading the
    /// file. Trees that return one let a [`crate::render::RenderCache`] skip unchanged files.
    fn content_id(&self, path: &str) -> Option<ContentId> {
        let _ = path;
        None
    }
}

/// A directory on disk.
#[derive(Debug)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    /// Opens `root`, which must be a directory.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirTree { root })
    }

    /// Resolves `path` through any symlinks and checks that it stays inside the root.
    fn resolve(&self, path: &str) -> Result<PathBuf, TreeError> {
        let full = self.root.join(path);
        let real = match full.canonicalize() {
            Ok(real) => real,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(TreeError::NotFound),
            Err(err) => return Err(err.into()),
        };
        if !real.starts_with(&self.root) {
            return Err(TreeError::OutsideRoot(real.display().to_string()));
        }
        Ok(real)
    }
}

impl Tree for DirTree {
    fn entry(&self, path: &str) -> Result<EntryKind, TreeError> {
        let meta = std::fs::metadata(self.resolve(path)?)?;
        Ok(if meta.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File(meta.len())
        })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        Ok(std::fs::read(self.resolve(path)?)?)
    }
}

/// An in-memory tree: files by path. Directories are implied by the files under them.
#[derive(Clone, Debug, Default)]
pub struct MemTree {
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl MemTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: &str, content: impl Into<Vec<u8>>) -> &mut Self {
        self.files
            .insert(path.trim_matches('/').to_owned(), content.into());
        self
    }
}

impl Tree for MemTree {
    fn entry(&self, path: &str) -> Result<EntryKind, TreeError> {
        if let Some(content) = self.files.get(path) {
            return Ok(EntryKind::File(content.len() as u64));
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        if self
            .files
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
        {
            return Ok(EntryKind::Dir);
        }
        Err(TreeError::NotFound)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        self.files.get(path).cloned().ok_or(TreeError::NotFound)
    }
}

/// Joins a repository-relative directory and a relative reference, resolving `.` and `..`.
/// Returns `None` when the result would climb above the repository root.
pub fn join(dir: &str, reference: &str) -> Option<String> {
    if reference.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in reference.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// The directory part of a repository path.
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

/// Whether `path` is `dir` or inside it.
pub fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_within_the_root_only() {
        assert_eq!(join("overlays/prod", "../../base").as_deref(), Some("base"));
        assert_eq!(join("", "./a/./b.yaml").as_deref(), Some("a/b.yaml"));
        assert_eq!(join("a", "../.."), None);
        assert_eq!(join("a", "/etc/passwd"), None);
    }

    #[test]
    fn within() {
        assert!(is_within("a/b.yaml", "a"));
        assert!(!is_within("ab/c.yaml", "a"));
        assert!(is_within("x", ""));
    }
}
