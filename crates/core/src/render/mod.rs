//! Rendering: a kustomization tree in, typed fleet objects out.
//!
//! The subset of `kustomization.yaml` rendered here is documented in `docs/repo-format.md`;
//! for that subset the objects equal what `kubectl kustomize` produces. Everything outside it
//! is an error that names the field, never silently ignored.

pub mod cache;
pub mod kustomization;
pub mod patch;
pub mod selector;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use serde_json::Value;

use crate::error::{Diagnostic, Diagnostics};
use crate::invalid::Invalid;
use crate::object::{FleetObject, Kind, ObjectRef};
pub use crate::object::{Origin, RenderedObject};
use crate::tree::Tree;
use crate::validate;
use crate::yaml::{self, Document, Limits};
pub use cache::{CacheStats, RenderCache};
use cache::{LeafKey, LeafOutput};
use kustomization::{Layer, read_text};

/// A rendered, validated repository.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// The objects, ordered by kind, namespace and name.
    pub objects: Vec<RenderedObject>,
}

impl Rendered {
    /// Counts per kind, in kind order.
    pub fn counts(&self) -> Vec<(Kind, usize)> {
        let mut counts: Vec<(Kind, usize)> = Vec::new();
        for o in &self.objects {
            match counts.last_mut() {
                Some((kind, n)) if *kind == o.object.kind() => *n += 1,
                _ => counts.push((o.object.kind(), 1)),
            }
        }
        counts
    }
}

/// Rendering settings.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Size limits.
    pub limits: Limits,
    /// Who the objects are rendered for, if anyone: a live fleet's namespace and labels.
    pub owner: Option<Owner>,
}

/// What a live fleet adds to every object it renders, as a last transformation: its
/// namespace where the repository sets none (an object in another namespace is an error,
/// since a fleet writes to its own namespace only) and its labels (the ownership label).
///
/// Done inside the render, so that the render cache holds the objects as they are applied
/// and the controller shares them instead of copying every one to label it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The fleet's namespace.
    pub namespace: String,
    /// Labels set on every object.
    pub labels: Vec<(String, String)>,
}

impl Options {
    /// Rendering for a fleet: `owner` is applied to every object.
    pub fn owned_by(owner: Owner) -> Self {
        Options {
            owner: Some(owner),
            ..Options::default()
        }
    }
}

/// Renders and validates the kustomization in `dir` of `tree`. Every problem found is
/// returned, not just the first.
pub fn render(tree: &dyn Tree, dir: &str, options: Options) -> Result<Rendered, Diagnostics> {
    render_with(tree, dir, options, None)
}

/// [`render`] through a [`RenderCache`]: a resource file whose content id (see
/// [`Tree::content_id`]) and chain of kustomizations are unchanged since an earlier render is
/// not read, parsed, transformed or checked again; its objects, problems and patch matches
/// come from the cache. The result equals [`render`]'s.
pub fn render_cached(
    tree: &dyn Tree,
    dir: &str,
    options: Options,
    cache: &mut RenderCache,
) -> Result<Rendered, Diagnostics> {
    let rendered = render_with(tree, dir, options, Some(&mut *cache));
    cache.end_render();
    rendered
}

/// Resource files read and parsed at once.
const LEAVES_AT_ONCE: usize = 8;

/// One document's outcome, and which patches of its chain applied to it.
type DocumentResult = (usize, Result<RenderedObject, Vec<Diagnostic>>, Vec<u32>);

fn render_with(
    tree: &dyn Tree,
    dir: &str,
    options: Options,
    mut cache: Option<&mut RenderCache>,
) -> Result<Rendered, Diagnostics> {
    let mut diags = Diagnostics::default();
    let graph = kustomization::load(tree, dir, options.limits, &mut diags);

    // Only leaves whose content the tree can name are cached.
    let keys: Vec<Option<LeafKey>> = graph
        .leaves
        .iter()
        .map(|leaf| {
            cache.as_ref()?;
            Some(LeafKey {
                file: leaf.file.clone(),
                content: tree.content_id(&leaf.file)?,
                chain: leaf.chain_fingerprint(),
                owner: options.owner.clone(),
            })
        })
        .collect();
    let hits: Vec<Option<Arc<LeafOutput>>> = match cache.as_deref_mut() {
        Some(cache) => keys
            .iter()
            .map(|key| key.as_ref().and_then(|key| cache.get(key)))
            .collect(),
        None => vec![None; keys.len()],
    };

    // Files are read, parsed and turned into objects a few at a time, so that the text of a
    // large repository is never held all at once (objects are what must stay).
    let mut unrenderable = std::collections::HashSet::new();
    let mut objects = Vec::new();
    let indices: Vec<usize> = (0..graph.leaves.len()).collect();
    for chunk in indices.chunks(LEAVES_AT_ONCE) {
        let texts: Vec<Option<Result<String, Diagnostic>>> = chunk
            .par_iter()
            .map(|&index| {
                hits[index]
                    .is_none()
                    .then(|| read_text(tree, &graph.leaves[index].file, options.limits))
            })
            .collect();
        let mut work: Vec<(usize, Document<'_>)> = Vec::new();
        for (&index, text) in chunk.iter().zip(&texts) {
            if let Some(Ok(text)) = text {
                work.extend(yaml::split_documents(text).into_iter().map(|d| (index, d)));
            }
        }
        let results: Vec<DocumentResult> = work
            .par_iter()
            .map(|(index, doc)| {
                let leaf = &graph.leaves[*index];
                let mut applied = Vec::new();
                let record = keys[*index].is_some().then_some(&mut applied);
                let result = document(&leaf.file, doc, &leaf.chain, options.owner.as_ref(), record);
                (*index, result, applied)
            })
            .collect();
        drop(work);

        let mut results = results.into_iter().peekable();
        for (&index, text) in chunk.iter().zip(&texts) {
            let leaf = &graph.leaves[index];
            if let Some(Err(d)) = text {
                diags.push(d.clone());
                continue;
            }
            if let Some(hit) = &hits[index] {
                let patches = leaf.chain.iter().flat_map(|layer| layer.all_patches());
                for (patch, n) in patches.zip(&hit.applied) {
                    patch.applied.fetch_add(*n as usize, Ordering::Relaxed);
                }
                diags.extend(hit.problems.iter().cloned());
                unrenderable.extend(hit.unrenderable.iter().cloned());
                continue;
            }
            let mut output = LeafOutput::default();
            let mut applied = vec![
                0u32;
                if keys[index].is_some() {
                    leaf.patch_count()
                } else {
                    0
                }
            ];
            while let Some((_, result, matched)) = results.next_if(|(i, _, _)| *i == index) {
                match result {
                    Ok(object) => output.objects.push(object),
                    Err(ds) => {
                        output
                            .unrenderable
                            .extend(ds.iter().filter_map(|d| d.object.as_deref().cloned()));
                        output.problems.extend(ds);
                    }
                }
                for patch in matched {
                    applied[patch as usize] += 1;
                }
            }
            unrenderable.extend(output.unrenderable.iter().cloned());
            diags.extend(output.problems.iter().cloned());
            match (&keys[index], cache.as_deref_mut()) {
                (Some(key), Some(cache)) => {
                    // Checked now, so that a cache hit needs no checking either.
                    let checks = validate::check_each(&output.objects);
                    diags.extend(checks.iter().cloned());
                    output.problems.extend(checks);
                    output.applied = applied;
                    output.objects.shrink_to_fit();
                    cache.insert(key.clone(), Arc::new(output));
                }
                (None, Some(_)) => {
                    diags.extend(validate::check_each(&output.objects));
                    objects.append(&mut output.objects);
                }
                (_, None) => objects.append(&mut output.objects),
            }
        }
    }

    // Cached objects (including those just rendered) are shared, not copied.
    if let Some(cache) = cache.as_deref() {
        for key in keys.iter().flatten() {
            if let Some(output) = cache.peek(key) {
                objects.extend(output.objects.iter().cloned());
            }
        }
    }

    for layer in &graph.layers {
        for patch in layer.all_patches() {
            let d = Diagnostic::file(&patch.file, String::new());
            let d = match patch.line {
                Some(line) => d.at_line(line),
                None => d,
            };
            let applied = patch.applied();
            if applied == 0 {
                diags.push(Diagnostic {
                    message: format!(
                        "the patch in {} matches no object; fix its target or remove it",
                        patch.origin
                    ),
                    ..d
                });
            } else if applied > 1 && matches!(patch.selection, patch::Selection::Identity { .. }) {
                diags.push(Diagnostic {
                    message: format!(
                        "the patch in {} matches {applied} objects (one per namespace); add \
                         metadata.namespace or a target",
                        patch.origin
                    ),
                    ..d
                });
            }
        }
    }

    objects.par_sort_unstable_by(|a, b| a.object.key().cmp(&b.object.key()));
    if cache.is_some() {
        diags.extend(validate::check_references(&objects, &unrenderable));
    } else {
        diags.extend(validate::validate(&objects, &unrenderable));
    }
    if diags.is_empty() {
        Ok(Rendered { objects })
    } else {
        diags.sort();
        Err(diags)
    }
}

/// Parses one document, carries it through its layers and decodes it.
/// When `applied` is given, the chain index of every patch applied is pushed to it.
fn document(
    file: &str,
    doc: &Document<'_>,
    chain: &[Arc<Layer>],
    owner: Option<&Owner>,
    mut applied: Option<&mut Vec<u32>>,
) -> Result<RenderedObject, Vec<Diagnostic>> {
    let origin = Origin {
        file: file.to_owned(),
        line: doc.first_line,
    };
    let at_doc = |message: Invalid| vec![Diagnostic::file(file, message).at_line(doc.first_line)];
    let mut value = match yaml::parse(doc, file) {
        Ok(Some(value)) => value,
        Ok(None) => return Err(at_doc("an empty document (null) is not an object".into())),
        Err(d) => return Err(vec![d]),
    };
    let kind = identify(&value).map_err(at_doc)?;

    // Problems in the layers are reported against the object as its file declares it.
    let declared = ObjectRef::of_value(kind, &value);
    let mut first_patch = 0;
    for layer in chain {
        let record = applied.as_deref_mut().map(|a| (a, first_patch));
        first_patch += layer.all_patches().count() as u32;
        transform(layer, &mut value, record).map_err(|message| {
            vec![
                Diagnostic::file(file, message)
                    .at_line(doc.first_line)
                    .object(declared.clone()),
            ]
        })?;
    }

    // kustomize drops an annotations map that ends up empty (it keeps an empty labels map).
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("annotations")
            .is_some_and(|a| a.as_object().is_some_and(|a| a.is_empty()))
    {
        meta.remove("annotations");
    }
    if let Some(owner) = owner {
        own(&mut value, owner).map_err(|message| {
            vec![
                Diagnostic::file(file, message)
                    .at_line(doc.first_line)
                    .object(declared.clone()),
            ]
        })?;
    }
    let id = ObjectRef::of_value(kind, &value);
    let at_object = |message: Invalid| {
        vec![
            Diagnostic::file(file, message)
                .at_line(doc.first_line)
                .object(id.clone()),
        ]
    };
    check_shape(&value).map_err(at_object)?;
    match FleetObject::from_value(kind, value) {
        Ok(object) => Ok(RenderedObject { object, origin }),
        Err(message) => {
            // The untyped pipeline has no positions; the source document does, if the
            // problem is already there (it usually is: patches rarely add unknown fields).
            let located = typed_position(kind, doc);
            let d = Diagnostic::file(file, message).object(id);
            Err(vec![match located {
                Some((line, column)) => d.at(line, column),
                None => d.at_line(doc.first_line),
            }])
        }
    }
}

/// Puts an object in the owner's namespace and gives it the owner's labels.
fn own(value: &mut Value, owner: &Owner) -> Result<(), Invalid> {
    let meta = metadata(value);
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), Value::String(owner.namespace.clone()));
        }
        Some(ns) if ns == owner.namespace => {}
        Some(ns) => {
            return Err(Invalid(format!(
                "metadata.namespace is {ns}, but the fleet's objects live in {}; remove the \
                 namespace (here or in the kustomization), or run the fleet in {ns}",
                owner.namespace
            )));
        }
    }
    if !owner.labels.is_empty() {
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if !labels.is_object() {
            *labels = Value::Object(Default::default());
        }
        let labels = labels.as_object_mut().expect("just made an object");
        for (k, v) in &owner.labels {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
    }
    Ok(())
}

/// Checks what a resource must have before kustomize could even place it.
fn identify(value: &Value) -> Result<Kind, Invalid> {
    let Some(map) = value.as_object() else {
        return Err("a resource must be a mapping with apiVersion, kind and metadata".into());
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        return Err("missing `kind`".into());
    }
    if kind == "Fleet" {
        return Err(
            "Fleet objects are not read from Git: they say where Git is; create them with kubectl"
                .into(),
        );
    }
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != endstate_api::API_VERSION {
        return Err(Invalid(format!(
            "{kind} with apiVersion {api_version:?}: a fleet repository holds {} objects only",
            endstate_api::API_VERSION
        )));
    }
    let Some(kind) = Kind::parse(kind) else {
        return Err(Invalid(format!(
            "unknown kind {kind:?}: expected one of {}",
            endstate_api::REPO_KINDS.join(", ")
        )));
    };
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(Invalid(format!("{kind} without metadata.name")));
    }
    Ok(kind)
}

/// Runs one kustomization's transformations on one object, in kustomize's order. With
/// `applied`, records each patch applied as `first + its index in the layer`.
fn transform(
    layer: &Layer,
    value: &mut Value,
    mut applied: Option<(&mut Vec<u32>, u32)>,
) -> Result<(), Invalid> {
    let mut record = |index: usize| {
        if let Some((applied, first)) = applied.as_mut() {
            applied.push(*first + index as u32);
        }
    };
    let merges = layer.strategic_merge.len() + layer.patches.len();
    for (index, patch) in layer
        .strategic_merge
        .iter()
        .chain(&layer.patches)
        .enumerate()
    {
        if patch.selects(value) {
            record(index);
            patch
                .apply(value)
                .map_err(|e| Invalid(format!("{e} (patch in {})", patch.origin)))?;
        }
    }
    if let Some(namespace) = &layer.namespace {
        metadata(value).insert("namespace".into(), Value::String(namespace.clone()));
    }
    for (field, pairs) in [
        ("labels", &layer.labels),
        ("annotations", &layer.annotations),
    ] {
        if pairs.is_empty() {
            continue;
        }
        let meta = metadata(value);
        let map = meta
            .entry(field)
            .or_insert_with(|| Value::Object(Default::default()));
        if !map.is_object() {
            *map = Value::Object(Default::default());
        }
        let map = map.as_object_mut().expect("just made an object");
        for (k, v) in pairs {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for (index, patch) in layer.json6902.iter().enumerate() {
        if patch.selects(value) {
            record(merges + index);
            patch
                .apply(value)
                .map_err(|e| Invalid(format!("{e} (patch in {})", patch.origin)))?;
        }
    }
    Ok(())
}

fn metadata(value: &mut Value) -> &mut serde_json::Map<String, Value> {
    let meta = value
        .as_object_mut()
        .expect("identify() checked this is a mapping")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    meta.as_object_mut().expect("just made an object")
}

/// Top-level and metadata fields a fleet object may declare.
fn check_shape(value: &Value) -> Result<(), Invalid> {
    let map = value
        .as_object()
        .expect("identify() checked this is a mapping");
    for key in map.keys() {
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" | "spec" => {}
            "status" => {
                return Err(
                    "`status` is reported by the operators, not declared in Git; remove it".into(),
                );
            }
            other => return Err(Invalid(format!("unknown top-level field `{other}`"))),
        }
    }
    if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
        for key in meta.keys() {
            if !matches!(
                key.as_str(),
                "name" | "namespace" | "labels" | "annotations"
            ) {
                return Err(Invalid(format!(
                    "metadata.{key} cannot be declared in Git (only name, namespace, labels and \
                     annotations)"
                )));
            }
        }
    }
    Ok(())
}

/// Decodes the source document directly, to find the line and column of a typed error.
fn typed_position(kind: Kind, doc: &Document<'_>) -> Option<(usize, usize)> {
    fn at<T: serde::de::DeserializeOwned>(doc: &Document<'_>) -> Option<(usize, usize)> {
        let err = serde_norway::from_str::<T>(doc.text).err()?;
        let loc = err.location()?;
        Some((loc.line() + doc.first_line - 1, loc.column()))
    }
    use endstate_api::*;
    match kind {
        Kind::MachinePackageVersion => at::<MachinePackageVersion>(doc),
        Kind::ClusterPackageVersion => at::<ClusterPackageVersion>(doc),
        Kind::Cluster => at::<Cluster>(doc),
        Kind::Machine => at::<Machine>(doc),
        Kind::RolloutPolicy => at::<RolloutPolicy>(doc),
    }
}
