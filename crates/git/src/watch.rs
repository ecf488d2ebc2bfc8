//! Local-path mode: watch a working tree and trigger a render when its files change, for
//! people iterating on a repository (render it with [`endstate_core::DirTree`]). Changes under
//! `.git/` are ignored.

use std::path::{Component, Path};
use std::sync::mpsc::Sender;

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::error::{Error, Result};
use crate::trigger::Trigger;

/// A running watch; dropping it stops watching.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl Watcher {
    /// Watches `root` recursively, sending [`Trigger::LocalChange`] to `sender`.
    pub fn start(root: &Path, sender: Sender<Trigger>) -> Result<Self> {
        let fail = |e: notify::Error| Error::Config(format!("watching {}: {e}", root.display()));
        let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            ) {
                return;
            }
            let paths: Vec<_> = event
                .paths
                .into_iter()
                .filter(|p| {
                    !p.components()
                        .any(|c| c == Component::Normal(".git".as_ref()))
                })
                .collect();
            if !paths.is_empty() {
                // The receiver may be gone while the controller shuts down.
                let _ = sender.send(Trigger::LocalChange { paths });
            }
        })
        .map_err(fail)?;
        inner.watch(root, RecursiveMode::Recursive).map_err(fail)?;
        Ok(Watcher { _inner: inner })
    }
}
