//! Rendering: a kustomization tree in, typed fleet objects out.
//!
//! The subset of `kustomization.yaml` rendered here is documented in `docs/repo-format.md`;
//! for that subset the objects equal what `kubectl kustomize` produces. Everything outside it
//! is an error that names the field, never silently ignored.

pub mod kustomization;
pub mod patch;
pub mod selector;

use rayon::prelude::*;
use serde_json::Value;

use crate::error::{Diagnostic, Diagnostics};
use crate::object::{FleetObject, ObjectRef};
use crate::tree::Tree;
use crate::validate;
use crate::yaml::{self, Document, Limits};
use kustomization::{Layer, read_text};

/// Where an object was declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The resource file.
    pub file: String,
    /// The 1-based line its document starts at.
    pub line: usize,
}

/// One rendered object and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// The object after every patch and transformation.
    pub object: FleetObject,
    /// Its declaration.
    pub origin: Origin,
}

/// A rendered, validated repository.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// The objects, ordered by kind, namespace and name.
    pub objects: Vec<RenderedObject>,
}

impl Rendered {
    /// Counts per kind, in kind order.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
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
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Size limits.
    pub limits: Limits,
}

/// Renders and validates the kustomization in `dir` of `tree`. Every problem found is
/// returned, not just the first.
pub fn render(tree: &dyn Tree, dir: &str, options: Options) -> Result<Rendered, Diagnostics> {
    let mut diags = Diagnostics::default();
    let graph = kustomization::load(tree, dir, options.limits, &mut diags);

    let texts: Vec<Result<String, Diagnostic>> = graph
        .leaves
        .par_iter()
        .map(|leaf| read_text(tree, &leaf.file, options.limits))
        .collect();
    let mut work: Vec<(usize, Document<'_>)> = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        match text {
            Ok(text) => work.extend(yaml::split_documents(text).into_iter().map(|d| (index, d))),
            Err(d) => diags.push(d.clone()),
        }
    }

    let results: Vec<Result<RenderedObject, Vec<Diagnostic>>> = work
        .par_iter()
        .map(|(leaf, doc)| {
            let leaf = &graph.leaves[*leaf];
            document(&leaf.file, doc, &leaf.chain)
        })
        .collect();
    drop(work);
    drop(texts);

    let mut objects = Vec::with_capacity(results.len());
    // Objects declared but not renderable: references to them are not reported again.
    let mut unrenderable = std::collections::HashSet::new();
    for result in results {
        match result {
            Ok(object) => objects.push(object),
            Err(ds) => {
                unrenderable.extend(ds.iter().filter_map(|d| d.object.as_deref().cloned()));
                diags.extend(ds);
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
    diags.extend(validate::validate(&objects, &unrenderable));
    if diags.is_empty() {
        Ok(Rendered { objects })
    } else {
        diags.sort();
        Err(diags)
    }
}

/// Parses one document, carries it through its layers and decodes it.
fn document(
    file: &str,
    doc: &Document<'_>,
    chain: &[std::sync::Arc<Layer>],
) -> Result<RenderedObject, Vec<Diagnostic>> {
    let origin = Origin {
        file: file.to_owned(),
        line: doc.first_line,
    };
    let at_doc = |message: String| vec![Diagnostic::file(file, message).at_line(doc.first_line)];
    let mut value = match yaml::parse(doc, file) {
        Ok(Some(value)) => value,
        Ok(None) => return Err(at_doc("an empty document (null) is not an object".into())),
        Err(d) => return Err(vec![d]),
    };
    let kind = identify(&value).map_err(at_doc)?;

    // Problems in the layers are reported against the object as its file declares it.
    let declared = ObjectRef::of_value(&value);
    for layer in chain {
        transform(layer, &mut value).map_err(|message| {
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
    let id = ObjectRef::of_value(&value);
    let at_object = |message: String| {
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

/// Checks what a resource must have before kustomize could even place it.
fn identify(value: &Value) -> Result<&'static str, String> {
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
        return Err(format!(
            "{kind} with apiVersion {api_version:?}: a fleet repository holds {} objects only",
            endstate_api::API_VERSION
        ));
    }
    let Some(kind) = endstate_api::REPO_KINDS.iter().find(|k| **k == kind) else {
        return Err(format!(
            "unknown kind {kind:?}: expected one of {}",
            endstate_api::REPO_KINDS.join(", ")
        ));
    };
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(format!("{kind} without metadata.name"));
    }
    Ok(kind)
}

/// Runs one kustomization's transformations on one object, in kustomize's order.
fn transform(layer: &Layer, value: &mut Value) -> Result<(), String> {
    for patch in layer.strategic_merge.iter().chain(&layer.patches) {
        if patch.selects(value) {
            patch
                .apply(value)
                .map_err(|e| format!("{e} (patch in {})", patch.origin))?;
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
    for patch in &layer.json6902 {
        if patch.selects(value) {
            patch
                .apply(value)
                .map_err(|e| format!("{e} (patch in {})", patch.origin))?;
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
fn check_shape(value: &Value) -> Result<(), String> {
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
            other => return Err(format!("unknown top-level field `{other}`")),
        }
    }
    if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
        for key in meta.keys() {
            if !matches!(
                key.as_str(),
                "name" | "namespace" | "labels" | "annotations"
            ) {
                return Err(format!(
                    "metadata.{key} cannot be declared in Git (only name, namespace, labels and \
                     annotations)"
                ));
            }
        }
    }
    Ok(())
}

/// Decodes the source document directly, to find the line and column of a typed error.
fn typed_position(kind: &str, doc: &Document<'_>) -> Option<(usize, usize)> {
    fn at<T: serde::de::DeserializeOwned>(doc: &Document<'_>) -> Option<(usize, usize)> {
        let err = serde_norway::from_str::<T>(doc.text).err()?;
        let loc = err.location()?;
        Some((loc.line() + doc.first_line - 1, loc.column()))
    }
    use endstate_api::*;
    match kind {
        "MachinePackageVersion" => at::<MachinePackageVersion>(doc),
        "ClusterPackageVersion" => at::<ClusterPackageVersion>(doc),
        "Cluster" => at::<Cluster>(doc),
        "Machine" => at::<Machine>(doc),
        "RolloutPolicy" => at::<RolloutPolicy>(doc),
        _ => None,
    }
}
