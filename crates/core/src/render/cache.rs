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
    /// Whom the objects were rendered for.
    pub owner: Option<super::Owner>,
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

    use endstate_api::Machine;

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
        let machine = Machine::test(name)
            .label("group", group)
            .in_cluster("c1")
            .ip(format!("10.0.0.{ip}"))
            .hostname(format!("{name}.example"))
            .idc("hz-a")
            .package("kubelet", "kubelet-1");
        format!("---\n{}", machine.yaml())
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
    fn cached_objects_are_shared_not_copied() {
        let mut cache = RenderCache::new();
        let first =
            render_cached(&repo("early"), "overlay", Options::default(), &mut cache).unwrap();
        let mut second = repo("early");
        second.0.insert(
            "base/b.yaml",
            machine("b1", "late") + &machine("b2", "early"),
        );
        let second = render_cached(&second, "overlay", Options::default(), &mut cache).unwrap();
        let address = |rendered: &crate::render::Rendered, name: &str| {
            let object = rendered
                .objects
                .iter()
                .find(|o| o.object.name() == name)
                .unwrap();
            object.object.meta() as *const _ as usize
        };
        // a.yaml did not change: its objects are the same allocations in both renders.
        assert_eq!(address(&first, "a2"), address(&second, "a2"));
        assert_ne!(address(&first, "b1"), address(&second, "b1"));
    }

    #[test]
    fn an_owner_is_part_of_the_key_and_namespaces_and_labels_every_object() {
        let mut cache = RenderCache::new();
        let owner = crate::render::Owner {
            namespace: "fleet-a".into(),
            labels: vec![("owner".into(), "a".into())],
        };
        let plain =
            render_cached(&repo("early"), "overlay", Options::default(), &mut cache).unwrap();
        let owned = render_cached(
            &repo("early"),
            "overlay",
            Options::owned_by(owner.clone()),
            &mut cache,
        )
        .unwrap();
        assert!(
            plain
                .objects
                .iter()
                .all(|o| o.object.meta().namespace.is_none())
        );
        for o in &owned.objects {
            assert_eq!(o.object.meta().namespace.as_deref(), Some("fleet-a"));
            assert_eq!(o.object.meta().labels.as_ref().unwrap()["owner"], "a");
        }
        assert_eq!(
            Ok(owned),
            render(&repo("early"), "overlay", Options::owned_by(owner))
        );
        let mut elsewhere = repo("early");
        elsewhere.0.insert(
            "overlay/kustomization.yaml",
            "resources:\n- ../base\nnamespace: other\n",
        );
        let refused = render(
            &elsewhere,
            "overlay",
            Options::owned_by(crate::render::Owner {
                namespace: "fleet-a".into(),
                labels: Vec::new(),
            }),
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused
                .contains("metadata.namespace is other, but the fleet's objects live in fleet-a"),
            "{refused}"
        );
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
