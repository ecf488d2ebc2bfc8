//! Quarantine: commits that must never be the applied target again, persisted in a file
//! (the controller also mirrors it into the `Fleet` status).

use std::collections::BTreeMap;
use std::path::Path;

use endstate_api::fleet::QuarantinedCommit;
use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Why a commit is quarantined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Why.
    pub reason: String,
    /// The revert endstate pushed for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
}

/// The quarantined commits, by full id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    commits: BTreeMap<String, Entry>,
}

impl Quarantine {
    /// Reads a quarantine file; a missing file is an empty quarantine.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("quarantine file {}: {e}", path.display())))
    }

    /// Writes the file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).expect("a map of strings serializes");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Quarantines `commit`.
    pub fn add(&mut self, commit: Oid, reason: impl Into<String>, revert_commit: Option<Oid>) {
        self.commits.insert(
            commit.to_string(),
            Entry {
                reason: reason.into(),
                revert_commit: revert_commit.map(|c| c.to_string()),
            },
        );
    }

    /// Releases `commit` (a human decided it may be applied again).
    pub fn remove(&mut self, commit: Oid) -> bool {
        self.commits.remove(&commit.to_string()).is_some()
    }

    /// Why `commit` is quarantined, if it is.
    pub fn get(&self, commit: Oid) -> Option<&Entry> {
        self.commits.get(&commit.to_string())
    }

    /// Refuses a quarantined commit.
    pub fn check(&self, commit: Oid) -> Result<()> {
        match self.get(commit) {
            Some(entry) => Err(Error::Quarantined {
                commit,
                reason: entry.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.commits.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
    }

    /// As the `Fleet` status lists them.
    pub fn to_status(&self) -> Vec<QuarantinedCommit> {
        self.commits
            .iter()
            .map(|(commit, entry)| QuarantinedCommit {
                commit: commit.clone(),
                reason: entry.reason.clone(),
                revert_commit: entry.revert_commit.clone(),
            })
            .collect()
    }

    /// From the `Fleet` status.
    pub fn from_status(entries: &[QuarantinedCommit]) -> Self {
        Quarantine {
            commits: entries
                .iter()
                .map(|q| {
                    (
                        q.commit.clone(),
                        Entry {
                            reason: q.reason.clone(),
                            revert_commit: q.revert_commit.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quarantine.json");
        let bad = Oid::from_str("1111111111111111111111111111111111111111").unwrap();
        let mut q = Quarantine::load(&path).unwrap();
        assert!(q.is_empty());
        q.add(bad, "breaker tripped in wave 2", None);
        q.save(&path).unwrap();
        let q = Quarantine::load(&path).unwrap();
        assert!(matches!(q.check(bad), Err(Error::Quarantined { .. })));
        assert_eq!(Quarantine::from_status(&q.to_status()), q);
    }
}
