//! Patches: JSON merge patches (RFC 7386, which is how kustomize's strategic merge behaves on
//! custom resources it has no schema for) and JSON patches (RFC 6902).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::selector::Target;
use crate::invalid::Invalid;

/// What a patch does.
#[derive(Debug)]
pub enum PatchBody {
    /// A merge patch, with the identity fields (`apiVersion`, `kind`, `metadata.name`,
    /// `metadata.namespace`) taken out: they only say which object the patch is for.
    Merge(Value),
    /// A list of RFC 6902 operations.
    Json(json_patch::Patch),
}

/// How a patch chooses its objects.
#[derive(Debug)]
pub enum Selection {
    /// A `target:` selector.
    Target(Box<Target>),
    /// The patch's own identity (a strategic-merge patch without a target).
    Identity {
        /// `apiVersion`, when the patch gives one.
        api_version: Option<String>,
        /// The kind.
        kind: String,
        /// The name.
        name: String,
        /// The namespace, when the patch gives one; otherwise any.
        namespace: Option<String>,
    },
}

/// One patch, ready to apply, with where it was written and how often it applied.
#[derive(Debug)]
pub struct Patch {
    /// Where the patch is written: `file` or `file (patches[2])`.
    pub origin: String,
    /// The repository file the origin is in (for diagnostics).
    pub file: String,
    /// The 1-based line of the patch in `file`, where known.
    pub line: Option<usize>,
    /// What it does.
    pub body: PatchBody,
    /// Which objects it applies to.
    pub selection: Selection,
    /// How many objects it was applied to; a patch that applies to nothing is an error.
    pub applied: AtomicUsize,
}

impl Patch {
    /// Whether the patch applies to this object.
    pub fn selects(&self, obj: &Value) -> bool {
        match &self.selection {
            Selection::Target(target) => target.matches(obj),
            Selection::Identity {
                api_version,
                kind,
                name,
                namespace,
            } => {
                let id = Identity::of(obj);
                id.kind == kind
                    && id.name == name
                    && namespace.as_ref().is_none_or(|ns| ns == id.namespace)
                    && api_version
                        .as_ref()
                        .is_none_or(|v| obj["apiVersion"].as_str() == Some(v.as_str()))
            }
        }
    }

    /// Applies the patch to a selected object.
    pub fn apply(&self, obj: &mut Value) -> Result<(), Invalid> {
        self.applied.fetch_add(1, Ordering::Relaxed);
        let before = Identity::of(obj).owned();
        match &self.body {
            PatchBody::Merge(patch) => json_patch::merge(obj, patch),
            PatchBody::Json(ops) => json_patch::patch(obj, ops)
                .map_err(|e| Invalid(format!("JSON patch failed: {e}")))?,
        }
        let after = Identity::of(obj);
        if after.kind != before.0 || after.name != before.1 {
            return Err(Invalid(format!(
                "the patch changes the object's identity to {after}; kind and name cannot be patched"
            )));
        }
        Ok(())
    }

    /// How many objects it applied to.
    pub fn applied(&self) -> usize {
        self.applied.load(Ordering::Relaxed)
    }
}

/// Strategic-merge directives that kustomize understands and a merge patch does not.
const DIRECTIVES: [&str; 5] = [
    "$patch",
    "$setElementOrder",
    "$retainKeys",
    "$deleteFromPrimitiveList",
    "$deleteFromPrimitiveList/",
];

/// Builds a merge patch from a strategic-merge document, checking it for directives and
/// taking out the identity fields.
///
/// kustomize reads such a patch as a resource, so it must carry `kind` and `metadata.name`
/// even when a `target` chooses the objects (then they are ignored).
///
/// `null_is_a_string`: the patch is of a form (with a `target`, or in `patchesStrategicMerge`)
/// in which kustomize renders a null label or annotation value as the string `"null"` rather
/// than removing the key, as RFC 7386 does; such a patch is refused rather than rendered
/// differently.
pub fn merge_patch(mut doc: Value, null_is_a_string: bool) -> Result<(Value, Selection), Invalid> {
    if let Some(path) = find_directive(&doc, String::new()) {
        return Err(Invalid(format!(
            "strategic-merge directive at {path} is not supported: endstate applies patches to \
             its objects as JSON merge patches (RFC 7386); write the field's whole new value, or \
             use a JSON patch"
        )));
    }
    if null_is_a_string && let Some(why) = null_metadata(&doc) {
        return Err(why.into());
    }
    let Some(map) = doc.as_object_mut() else {
        return Err("a merge patch must be a mapping".into());
    };
    let api_version = take_string(map, "apiVersion");
    let kind = take_string(map, "kind");
    let (name, namespace) = match map.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) => {
            let name = take_string(meta, "name");
            let namespace = take_string(meta, "namespace");
            if meta.is_empty() {
                map.remove("metadata");
            }
            (name, namespace)
        }
        None => (None, None),
    };
    let (Some(kind), Some(name)) = (kind, name) else {
        return Err("a merge patch must carry `kind` and `metadata.name` (kustomize reads it as a resource); with a `target` they only need to be present"
            .into());
    };
    let selection = Selection::Identity {
        api_version,
        kind,
        name,
        namespace,
    };
    Ok((doc, selection))
}

/// A null label or annotation value, which kustomize renders as the string `"null"` in some
/// patch forms (with a `target`, in `patchesStrategicMerge`) and as a removal in others.
fn null_metadata(doc: &Value) -> Option<String> {
    ["labels", "annotations"].into_iter().find_map(|field| {
        let (key, _) = doc["metadata"][field]
            .as_object()?
            .iter()
            .find(|(_, v)| v.is_null())?;
        let path = format!(
            "/metadata/{field}/{}",
            key.replace('~', "~0").replace('/', "~1")
        );
        Some(format!(
            "metadata.{field}.{key} is null, which kustomize renders as the string \"null\" in \
             this form of patch (with a `target`, or in `patchesStrategicMerge`) where a merge \
             patch removes the key; to remove it, use a JSON patch (`- op: remove` with \
             `path: {path}`), or quote \"null\" to set that string"
        ))
    })
}

fn take_string(map: &mut serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn find_directive(value: &Value, at: String) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = format!("{at}.{k}");
            if DIRECTIVES
                .iter()
                .any(|d| k == d || k.starts_with("$setElementOrder/"))
            {
                Some(here)
            } else {
                find_directive(v, here)
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_directive(v, format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Parses a JSON patch document.
pub fn json_patch(doc: Value) -> Result<json_patch::Patch, Invalid> {
    serde_json::from_value(doc)
        .map_err(|e| Invalid(format!("not a valid JSON patch (RFC 6902): {e}")))
}

/// The identity an untyped object declares, of whatever kind.
struct Identity<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> Identity<'a> {
    fn of(obj: &'a Value) -> Self {
        let text = |v: &'a Value| v.as_str().unwrap_or_default();
        Identity {
            kind: text(&obj["kind"]),
            namespace: text(&obj["metadata"]["namespace"]),
            name: text(&obj["metadata"]["name"]),
        }
    }

    /// The kind and name, to compare after a change.
    fn owned(&self) -> (String, String) {
        (self.kind.to_owned(), self.name.to_owned())
    }
}

impl fmt::Display for Identity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_fields_select_and_do_not_merge() {
        let doc = json!({"apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Machine",
                         "metadata": {"name": "m1", "labels": {"a": "b"}}, "spec": {"x": null}});
        let (body, selection) = merge_patch(doc, false).unwrap();
        assert_eq!(
            body,
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": null}})
        );
        assert!(matches!(
            selection,
            Selection::Identity { ref name, .. } if name == "m1"
        ));
    }

    #[test]
    fn null_labels_and_annotations_are_refused_where_kustomize_writes_a_string() {
        let doc = json!({"kind": "Machine", "metadata": {"name": "m1",
                         "annotations": {"a": "b", "example.com/x": null}}});
        let err = merge_patch(doc.clone(), true).unwrap_err().0;
        assert!(
            err.contains("metadata.annotations.example.com/x is null"),
            "{err}"
        );
        assert!(
            err.contains("path: /metadata/annotations/example.com~1x"),
            "{err}"
        );
        // An untargeted patch removes the key, as kustomize does there.
        assert!(merge_patch(doc, false).is_ok());
        // Elsewhere a null removes the field, as RFC 7386 and kustomize agree.
        let doc = json!({"kind": "Machine", "metadata": {"name": "m1"}, "spec": {"x": null}});
        assert!(merge_patch(doc, true).is_ok());
    }

    #[test]
    fn directives_are_refused_with_their_path() {
        let doc = json!({"kind": "RolloutPolicy", "metadata": {"name": "p"},
                         "spec": {"waves": [{"$patch": "delete", "name": "a"}]}});
        let err = merge_patch(doc, false).unwrap_err().0;
        assert!(err.contains(".spec.waves[0].$patch"), "{err}");
    }
}
