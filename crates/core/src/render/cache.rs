//! The render cache: what each resource file rendered to, remembered between renders.
//!
//! ```text
//!   key: (file, content id, fingerprint of its kustomization chain)
//!   value: its objects, its problems (including each object's own checks), and how many
//!          of its objects each patch of the chain applied to
//! ```
//!
//! A new commit that changes one file re-renders that file alone; the others come from here.
//! Patch match counts are kept per file so that "this patch matches no object" stays exact
//! when a file is served from the cache. Checks across objects (duplicates, references) are
//! never cached: they run on every render.

use std::collections::HashMap;
use std::sync::Arc;

use super::RenderedObject;
use super::kustomization::Fingerprint;
use crate::error::Diagnostic;
use crate::object::ObjectRef;
use crate::tree::ContentId;

/// A cache of rendered resource files. Entries not used by the last
/// [`RenderCache::keep_renders`] renders are dropped.
#[derive(Debug)]
pub struct RenderCache {
    entries: HashMap<LeafKey, Entry>,
    /// Renders finished so far.
    render: u64,
    keep: u64,
    stats: CacheStats,
    /// Objects of a rendering handed back, by file, to be reused instead of copied.
    spare: HashMap<String, Vec<RenderedObject>>,
}

/// How the cache has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Resource files served from the cache.
    pub hits: u64,
    /// Resource files read and rendered.
    pub misses: u64,
    /// Files held now.
    pub entries: usize,
}

#[derive(Debug)]
struct Entry {
    output: Arc<LeafOutput>,
    last_used: u64,
}

/// What identifies a resource file's rendering.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LeafKey {
    pub file: String,
    pub content: ContentId,
    pub chain: Fingerprint,
}

/// What a resource file rendered to.
#[derive(Debug, Default)]
pub(crate) struct LeafOutput {
    /// Its objects, in file order.
    pub objects: Vec<RenderedObject>,
    /// Documents that failed to render, and the objects' own checks.
    pub problems: Vec<Diagnostic>,
    /// Objects declared but not renderable.
    pub unrenderable: Vec<ObjectRef>,
    /// Per patch of the chain (in chain order), how many of the file's objects it applied to.
    pub applied: Vec<u32>,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache::new()
    }
}

impl RenderCache {
    /// An empty cache that keeps what the last 8 renders used.
    pub fn new() -> Self {
        RenderCache {
            entries: HashMap::new(),
            render: 0,
            keep: 8,
            stats: CacheStats::default(),
            spare: HashMap::new(),
        }
    }

    /// Keeps entries used by any of the last `renders` renders (at least 1). Walking a range
    /// of commits (attribution) wants a few; a controller following one branch needs 2.
    pub fn keep_renders(mut self, renders: u64) -> Self {
        self.keep = renders.max(1);
        self
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.spare.clear();
    }

    /// Hands back a rendering that is no longer needed (typically the previous commit's, once
    /// the next one is rendered or about to be). The next render reuses its objects for the
    /// files it serves from the cache instead of copying them again, which is most of the
    /// cost of rendering a commit that changed one file. Objects that were modified since are
    /// detected (they must equal the cached ones) and not reused. Unused objects are dropped
    /// at the end of the next render.
    pub fn recycle(&mut self, rendered: super::Rendered) {
        self.spare.clear();
        for object in rendered.objects {
            match self.spare.get_mut(&object.origin.file) {
                Some(group) => group.push(object),
                None => {
                    self.spare.insert(object.origin.file.clone(), vec![object]);
                }
            }
        }
    }

    pub(crate) fn take_spare(&mut self) -> HashMap<String, Vec<RenderedObject>> {
        std::mem::take(&mut self.spare)
    }

    pub(crate) fn get(&mut self, key: &LeafKey) -> Option<Arc<LeafOutput>> {
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.last_used = self.render;
                self.stats.hits += 1;
                Some(entry.output.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    pub(crate) fn peek(&self, key: &LeafKey) -> Option<&LeafOutput> {
        self.entries.get(key).map(|entry| &*entry.output)
    }

    pub(crate) fn insert(&mut self, key: LeafKey, output: Arc<LeafOutput>) {
        let last_used = self.render;
        self.entries.insert(key, Entry { output, last_used });
    }

    /// Ends a render: forgets what recent renders did not use.
    pub(crate) fn end_render(&mut self) {
        let oldest = (self.render + 1).saturating_sub(self.keep);
        self.entries.retain(|_, entry| entry.last_used >= oldest);
        self.render += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{DefaultHasher, Hash, Hasher};

    use super::*;
    use crate::render::{Options, render, render_cached};
    use crate::tree::{EntryKind, MemTree, Tree, TreeError};

    /// A [`MemTree`] that names contents, as a commit's tree does.
    struct IdTree(MemTree);

    impl Tree for IdTree {
        fn entry(&self, path: &str) -> Result<EntryKind, TreeError> {
            self.0.entry(path)
        }
        fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
            self.0.read(path)
        }
        fn content_id(&self, path: &str) -> Option<ContentId> {
            let mut h = DefaultHasher::new();
            self.0.read(path).ok()?.hash(&mut h);
            Some(ContentId::from_bytes(&h.finish().to_le_bytes()))
        }
    }

    fn machine(name: &str, group: &str) -> String {
        let ip = match name {
            "a1" => 1,
            "a2" => 2,
            "b1" => 3,
            _ => 4,
        };
        format!(
            "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: {name}\n  labels:\n    group: {group}\nspec:\n  cluster: c1\n  ip: 10.0.0.{ip}\n  hostname: {name}.example\n  idc: hz-a\n  packages:\n    kubelet: kubelet-1\n"
        )
    }

    fn repo(a_group: &str) -> IdTree {
        let mut t = MemTree::new();
        t.insert(
            "base/kustomization.yaml",
            "resources:\n- shared.yaml\n- a.yaml\n- b.yaml\n",
        );
        t.insert(
            "base/shared.yaml",
            "apiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-1\nspec:\n  packageName: kubelet\n  version: \"1\"\n  install:\n    url: https://x/k.rpm\n    sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s\nspec:\n  version: \"1\"\n  etcd: {image: e}\n  apiserver: {image: a}\n  controllerManager: {image: c}\n  scheduler: {image: s}\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  packageVersion: k8s\n",
        );
        t.insert(
            "base/a.yaml",
            format!("{}{}", machine("a1", a_group), machine("a2", a_group)),
        );
        t.insert("base/b.yaml", machine("b1", "late"));
        t.insert(
            "overlay/kustomization.yaml",
            "resources:\n- ../base\npatches:\n- target:\n    labelSelector: group=early\n  patch: |\n    kind: Machine\n    metadata:\n      name: any\n    spec:\n      unschedulable: true\n",
        );
        IdTree(t)
    }

    #[test]
    fn a_changed_file_is_rendered_alone_and_the_result_equals_a_full_render() {
        let mut cache = RenderCache::new();
        let first = repo("early");
        let cached = render_cached(&first, "overlay", Options::default(), &mut cache);
        assert_eq!(cached, render(&first, "overlay", Options::default()));
        assert_eq!(cache.stats().misses, 3);

        let mut second = repo("early");
        second.0.insert(
            "base/b.yaml",
            machine("b1", "late") + &machine("b2", "early"),
        );
        let cached = render_cached(&second, "overlay", Options::default(), &mut cache).unwrap();
        assert_eq!(
            Ok(cached.clone()),
            render(&second, "overlay", Options::default())
        );
        assert_eq!(cached.objects.len(), 7);
        assert_eq!((cache.stats().hits, cache.stats().misses), (2, 4));
    }

    #[test]
    fn patch_matches_stay_exact_when_files_come_from_the_cache() {
        let mut cache = RenderCache::new();
        render_cached(&repo("early"), "overlay", Options::default(), &mut cache).unwrap();
        // a.yaml held every object the patch matched; now it holds none.
        let moved = repo("late");
        let expected = render(&moved, "overlay", Options::default()).unwrap_err();
        assert!(
            expected.to_string().contains("matches no object"),
            "{expected}"
        );
        let cached = render_cached(&moved, "overlay", Options::default(), &mut cache);
        assert_eq!(cached, Err(expected));
        // And back: the unchanged files' counts come from the cache.
        let back = render_cached(&repo("early"), "overlay", Options::default(), &mut cache);
        assert!(back.is_ok(), "{back:?}");
        assert_eq!(cache.stats().hits, 2 + 3);
    }

    #[test]
    fn a_changed_kustomization_renders_every_file_below_it_again() {
        let mut cache = RenderCache::new();
        render_cached(&repo("early"), "overlay", Options::default(), &mut cache).unwrap();
        let mut changed = repo("early");
        changed.0.insert(
            "overlay/kustomization.yaml",
            "resources:\n- ../base\nnamespace: prod\n",
        );
        let cached = render_cached(&changed, "overlay", Options::default(), &mut cache);
        assert_eq!(cached, render(&changed, "overlay", Options::default()));
        assert_eq!(cache.stats().hits, 0);
    }

    #[test]
    fn recycled_objects_are_reused_only_when_unchanged() {
        let mut cache = RenderCache::new();
        let first = repo("early");
        let mut rendered =
            render_cached(&first, "overlay", Options::default(), &mut cache).unwrap();
        let expected = rendered.clone();
        // A caller changed an object of a.yaml before handing the rendering back.
        let a1 = rendered
            .objects
            .iter_mut()
            .find(|o| o.object.meta().name.as_deref() == Some("a1"))
            .unwrap();
        let crate::object::FleetObject::Machine(m) = &mut a1.object else {
            panic!("a1 is a Machine");
        };
        m.spec.idc = "elsewhere".into();
        cache.recycle(rendered);
        let again = render_cached(&first, "overlay", Options::default(), &mut cache);
        assert_eq!(again, Ok(expected.clone()));

        // Recycled and reused (moved, not copied) across a change to one file.
        let again = again.unwrap();
        let address = |rendered: &crate::render::Rendered| {
            let a2 = rendered
                .objects
                .iter()
                .find(|o| o.object.meta().name.as_deref() == Some("a2"))
                .unwrap();
            a2.object.meta() as *const _ as usize
        };
        let before = address(&again);
        cache.recycle(again);
        let mut second = repo("early");
        second.0.insert(
            "base/b.yaml",
            machine("b1", "late") + &machine("b2", "early"),
        );
        let reused = render_cached(&second, "overlay", Options::default(), &mut cache).unwrap();
        assert_eq!(address(&reused), before);
        assert_eq!(Ok(reused), render(&second, "overlay", Options::default()));
    }

    #[test]
    fn entries_unused_for_longer_than_kept_are_dropped() {
        let mut cache = RenderCache::new().keep_renders(1);
        render_cached(&repo("early"), "overlay", Options::default(), &mut cache).unwrap();
        render_cached(&repo("late"), "overlay", Options::default(), &mut cache).ok();
        // a.yaml's first version was not used by the last render.
        assert_eq!(cache.stats().entries, 3);
    }
}
