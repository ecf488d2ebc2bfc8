//! Loading a tree of kustomizations into transformation layers.
//!
//! ```text
//!   overlays/prod/kustomization.yaml  ── layer 0 (outermost)
//!       └─ ../../base/kustomization.yaml ── layer 1
//!              ├─ machines/hz-a.yaml   leaf: chain [layer 1, layer 0]
//!              └─ packages.yaml        leaf: chain [layer 1, layer 0]
//! ```
//!
//! Every transformation in the subset works on one object at a time, so an object can be
//! carried from its leaf file through its chain of layers on its own: documents are parsed
//! and transformed in parallel and never all held as untyped values at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde::Deserialize;
use serde_json::Value;

use super::patch::{self, Patch, PatchBody, Selection};
use super::selector::{Target, TargetSpec};
use crate::error::{Diagnostic, Diagnostics};
use crate::tree::{self, EntryKind, Tree, TreeError};
use crate::yaml::{self, Limits};

/// File names kustomize recognises, in the order it looks for them.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The fields of the subset.
const SUPPORTED: [&str; 10] = [
    "apiVersion",
    "kind",
    "resources",
    "patches",
    "patchesJson6902",
    "patchesStrategicMerge",
    "labels",
    "commonLabels",
    "commonAnnotations",
    "namespace",
];

/// A kustomization file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    patches: Vec<PatchEntry>,
    #[serde(default)]
    patches_json6902: Vec<PatchEntry>,
    #[serde(default)]
    patches_strategic_merge: Vec<String>,
    #[serde(default)]
    labels: Vec<LabelEntry>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchEntry {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    target: Option<TargetSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabelEntry {
    #[serde(default)]
    pairs: BTreeMap<String, String>,
    // Selectors and templates exist only on built-in kinds; on fleet objects both settings
    // label `metadata.labels` alone, exactly as kustomize does.
    #[serde(default)]
    #[allow(dead_code)]
    include_selectors: bool,
    #[serde(default)]
    #[allow(dead_code)]
    include_templates: bool,
}

/// The transformations of one kustomization, in the order kustomize runs them.
#[derive(Debug, Default)]
pub struct Layer {
    /// The kustomization file.
    pub file: String,
    /// `patchesStrategicMerge`.
    pub strategic_merge: Vec<Patch>,
    /// `patches`.
    pub patches: Vec<Patch>,
    /// `namespace`.
    pub namespace: Option<String>,
    /// `commonLabels` and `labels`.
    pub labels: BTreeMap<String, String>,
    /// `commonAnnotations`.
    pub annotations: BTreeMap<String, String>,
    /// `patchesJson6902` (kustomize runs these after labels and annotations).
    pub json6902: Vec<Patch>,
    /// A digest of everything the layer was built from (the kustomization's path and text,
    /// and every patch file it reads): two layers with the same fingerprint transform
    /// objects identically.
    pub fingerprint: Fingerprint,
}

impl Layer {
    /// Every patch of the layer.
    pub fn all_patches(&self) -> impl Iterator<Item = &Patch> {
        self.strategic_merge
            .iter()
            .chain(&self.patches)
            .chain(&self.json6902)
    }
}

/// A resource file and the layers its objects go through, innermost first.
#[derive(Debug)]
pub struct Leaf {
    /// The file.
    pub file: String,
    /// The layers, innermost first.
    pub chain: Vec<Arc<Layer>>,
}

impl Leaf {
    /// A digest of the chain: leaves with equal content and equal chain fingerprints render
    /// to the same objects.
    pub fn chain_fingerprint(&self) -> Fingerprint {
        let mut digest = Digest::default();
        for layer in &self.chain {
            digest.add(&layer.fingerprint.0.to_le_bytes());
        }
        digest.finish()
    }

    /// The number of patches along the chain; a patch's place in the chain (layer by layer,
    /// each in [`Layer::all_patches`] order) is its index below that.
    pub fn patch_count(&self) -> usize {
        self.chain.iter().map(|l| l.all_patches().count()).sum()
    }
}

/// A 128-bit digest of a layer's inputs (not cryptographic: it keys an in-process cache).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u128);

/// Feeds length-prefixed byte strings into two differently salted SipHashes.
struct Digest {
    low: std::hash::DefaultHasher,
    high: std::hash::DefaultHasher,
}

impl Default for Digest {
    fn default() -> Self {
        use std::hash::Hasher;
        let mut high = std::hash::DefaultHasher::new();
        high.write(b"endstate-fingerprint");
        Digest {
            low: std::hash::DefaultHasher::new(),
            high,
        }
    }
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        use std::hash::Hasher;
        self.low.write_usize(bytes.len());
        self.low.write(bytes);
        self.high.write_usize(bytes.len());
        self.high.write(bytes);
    }

    fn finish(&self) -> Fingerprint {
        use std::hash::Hasher;
        Fingerprint((u128::from(self.high.finish()) << 64) | u128::from(self.low.finish()))
    }
}

/// A loaded kustomization tree.
#[derive(Debug, Default)]
pub struct Graph {
    /// Resource files in the order the kustomizations list them.
    pub leaves: Vec<Leaf>,
    /// Every layer.
    pub layers: Vec<Arc<Layer>>,
}

/// Loads the kustomization in `dir` and everything it references.
pub fn load(tree: &dyn Tree, dir: &str, limits: Limits, diags: &mut Diagnostics) -> Graph {
    let mut loader = Loader {
        tree,
        limits,
        diags,
        graph: Graph::default(),
        stack: Vec::new(),
        inputs: Digest::default(),
    };
    loader.dir(dir, &[], None);
    loader.graph
}

struct Loader<'a> {
    tree: &'a dyn Tree,
    limits: Limits,
    diags: &'a mut Diagnostics,
    graph: Graph,
    /// Kustomization directories being loaded, to find cycles.
    stack: Vec<String>,
    /// What the layer being built has read so far.
    inputs: Digest,
}

impl Loader<'_> {
    /// Loads one kustomization directory. `referrer` is the file and line that named it.
    fn dir(&mut self, dir: &str, outer: &[Arc<Layer>], referrer: Option<(&str, Option<usize>)>) {
        let complain = |message: String| match referrer {
            Some((file, line)) => {
                let d = Diagnostic::file(file, message);
                match line {
                    Some(line) => d.at_line(line),
                    None => d,
                }
            }
            None => Diagnostic::file(display_dir(dir), message),
        };
        if let Some(start) = self.stack.iter().position(|d| d == dir) {
            let mut cycle: Vec<&str> = self.stack[start..].iter().map(|s| display_dir(s)).collect();
            cycle.push(display_dir(dir));
            self.diags.push(complain(format!(
                "kustomizations form a cycle: {}",
                cycle.join(" → ")
            )));
            return;
        }
        let Some(file) = self.find_kustomization(dir, &complain) else {
            return;
        };
        let Some(text) = self.read_text(&file) else {
            return;
        };
        let Some(parsed) = self.parse_file(&file, &text) else {
            return;
        };
        let layer = Arc::new(self.layer(dir, &file, &text, &parsed));
        self.graph.layers.push(layer.clone());
        let mut chain = vec![layer];
        chain.extend_from_slice(outer);

        self.stack.push(dir.to_owned());
        for (index, resource) in parsed.resources.iter().enumerate() {
            let line = line_of(&text, resource);
            let here = |message: String| {
                let d =
                    Diagnostic::file(&file, format!("resources[{index}] {resource:?}: {message}"));
                match line {
                    Some(line) => d.at_line(line),
                    None => d,
                }
            };
            if is_remote(resource) {
                self.diags.push(here(
                    "remote resources are not supported; vendor the files into the repository"
                        .into(),
                ));
                continue;
            }
            let Some(path) = tree::join(dir, resource) else {
                self.diags
                    .push(here("the path leads outside the repository".into()));
                continue;
            };
            match self.tree.entry(&path) {
                Ok(EntryKind::Dir) => self.dir(&path, &chain, Some((&file, line))),
                Ok(EntryKind::File(_)) => {
                    if !tree::is_within(&path, dir) {
                        self.diags.push(here(format!(
                            "the file is not in or below {}; kustomize only loads files from \
                             the kustomization's own directory (reference a kustomization \
                             directory instead)",
                            display_dir(dir)
                        )));
                        continue;
                    }
                    self.graph.leaves.push(Leaf {
                        file: path,
                        chain: chain.clone(),
                    });
                }
                Err(err) => self.diags.push(here(tree_message(&err))),
            }
        }
        self.stack.pop();
    }

    fn find_kustomization(
        &mut self,
        dir: &str,
        complain: &dyn Fn(String) -> Diagnostic,
    ) -> Option<String> {
        let mut found = Vec::new();
        for name in FILE_NAMES {
            let path = tree::join(dir, name).expect("a file name stays inside its directory");
            match self.tree.entry(&path) {
                Ok(EntryKind::File(_)) => found.push(path),
                Ok(EntryKind::Dir) | Err(TreeError::NotFound) => {}
                Err(err) => {
                    self.diags.push(Diagnostic::file(&path, tree_message(&err)));
                    return None;
                }
            }
        }
        match found.len() {
            1 => found.pop(),
            0 => {
                self.diags.push(complain(format!(
                    "{} has no kustomization.yaml",
                    display_dir(dir)
                )));
                None
            }
            _ => {
                self.diags.push(Diagnostic::file(
                    dir,
                    format!(
                        "found more than one kustomization file: {}",
                        found.join(", ")
                    ),
                ));
                None
            }
        }
    }

    /// Reads a file as UTF-8 within the size limit.
    fn read_text(&mut self, path: &str) -> Option<String> {
        read_text(self.tree, path, self.limits)
            .map_err(|d| self.diags.push(d))
            .ok()
    }

    fn parse_file(&mut self, file: &str, text: &str) -> Option<File> {
        let docs = yaml::split_documents(text);
        if docs.len() > 1 {
            self.diags.push(Diagnostic::file(
                file,
                "a kustomization file holds one document",
            ));
            return None;
        }
        let Some(doc) = docs.first() else {
            return Some(File::default());
        };
        let mut ok = self.check_booleans(file, doc);
        let value = match yaml::parse(doc, file) {
            Ok(value) => value.unwrap_or(Value::Object(Default::default())),
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        let Some(map) = value.as_object() else {
            self.diags
                .push(Diagnostic::file(file, "a kustomization must be a mapping"));
            return None;
        };
        for key in map.keys() {
            if !SUPPORTED.contains(&key.as_str()) {
                let d = Diagnostic::file(
                    file,
                    format!(
                        "field `{key}` is outside the kustomization subset endstate renders \
                         (supported: {})",
                        SUPPORTED.join(", ")
                    ),
                );
                self.diags.push(match line_of_key(text, key) {
                    Some((line, column)) => d.at(line, column),
                    None => d,
                });
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let parsed: File = match serde_path_to_error::deserialize(value) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.diags.push(Diagnostic::file(
                    file,
                    format!("{}: {}", err.path(), err.inner()),
                ));
                return None;
            }
        };
        if let Some(v) = parsed.api_version.as_deref()
            && v != "kustomize.config.k8s.io/v1beta1"
        {
            self.diags.push(Diagnostic::file(
                file,
                format!("apiVersion {v:?}: expected kustomize.config.k8s.io/v1beta1"),
            ));
            return None;
        }
        if let Some(k) = parsed.kind.as_deref()
            && k != "Kustomization"
        {
            self.diags.push(Diagnostic::file(
                file,
                format!("kind {k:?}: only Kustomization is supported (components are not)"),
            ));
            return None;
        }
        Some(parsed)
    }

    fn check_booleans(&mut self, file: &str, doc: &yaml::Document<'_>) -> bool {
        let hits = yaml::ambiguous_booleans(doc);
        for (line, column, word) in &hits {
            self.diags.push(
                Diagnostic::file(
                    file,
                    format!(
                        "`{word}` is a boolean to YAML 1.1 readers (kubectl, kustomize) and a \
                         string to YAML 1.2 ones; quote it (\"{word}\") or write true/false"
                    ),
                )
                .at(*line, *column),
            );
        }
        hits.is_empty()
    }

    fn layer(&mut self, dir: &str, file: &str, text: &str, parsed: &File) -> Layer {
        self.inputs = Digest::default();
        self.inputs.add(file.as_bytes());
        self.inputs.add(text.as_bytes());
        let mut layer = Layer {
            file: file.to_owned(),
            namespace: parsed.namespace.clone().filter(|n| !n.is_empty()),
            annotations: parsed.common_annotations.clone(),
            ..Layer::default()
        };
        layer.labels.extend(parsed.common_labels.clone());
        for entry in &parsed.labels {
            layer.labels.extend(entry.pairs.clone());
        }
        for (index, entry) in parsed.patches_strategic_merge.iter().enumerate() {
            let field = format!("patchesStrategicMerge[{index}]");
            let source = if entry.contains('\n') {
                PatchSource::Inline(entry.clone())
            } else {
                PatchSource::Path(entry.trim().to_owned())
            };
            let patches = self.patches(dir, file, text, &field, source, None, Expect::Merge);
            layer.strategic_merge.extend(patches);
        }
        for (field, entries, list) in [
            ("patches", &parsed.patches, &mut layer.patches),
            (
                "patchesJson6902",
                &parsed.patches_json6902,
                &mut layer.json6902,
            ),
        ] {
            for (index, entry) in entries.iter().enumerate() {
                let field = format!("{field}[{index}]");
                let source = match (&entry.path, &entry.patch) {
                    (Some(path), None) => PatchSource::Path(path.clone()),
                    (None, Some(patch)) => PatchSource::Inline(patch.clone()),
                    (Some(_), Some(_)) => {
                        self.diags.push(Diagnostic::file(
                            file,
                            format!("{field}: set either `path` or `patch`, not both"),
                        ));
                        continue;
                    }
                    (None, None) => {
                        self.diags.push(Diagnostic::file(
                            file,
                            format!("{field}: needs a `path` or a `patch`"),
                        ));
                        continue;
                    }
                };
                let expect = if field.starts_with("patchesJson6902") {
                    Expect::Json
                } else {
                    Expect::Either
                };
                list.extend(self.patches(
                    dir,
                    file,
                    text,
                    &field,
                    source,
                    entry.target.as_ref(),
                    expect,
                ));
            }
        }
        layer.fingerprint = self.inputs.finish();
        layer
    }

    /// Reads and prepares the patches of one entry (a file may hold several documents).
    #[allow(clippy::too_many_arguments)]
    fn patches(
        &mut self,
        dir: &str,
        file: &str,
        text: &str,
        field: &str,
        source: PatchSource,
        target: Option<&TargetSpec>,
        expect: Expect,
    ) -> Vec<Patch> {
        let (patch_file, body, origin, base_line) = match source {
            PatchSource::Inline(body) => {
                let line = line_of(
                    text,
                    body.lines().find(|l| !l.trim().is_empty()).unwrap_or(""),
                );
                (file.to_owned(), body, format!("{file} ({field})"), line)
            }
            PatchSource::Path(path) => {
                let fail = |message: String| {
                    let d = Diagnostic::file(file, format!("{field} {path:?}: {message}"));
                    match line_of(text, &path) {
                        Some(line) => d.at_line(line),
                        None => d,
                    }
                };
                let Some(full) = tree::join(dir, &path) else {
                    self.diags
                        .push(fail("the path leads outside the repository".into()));
                    return Vec::new();
                };
                if !tree::is_within(&full, dir) {
                    self.diags.push(fail(format!(
                        "the file is not in or below {}",
                        display_dir(dir)
                    )));
                    return Vec::new();
                }
                match self.tree.entry(&full) {
                    Ok(EntryKind::File(_)) => {}
                    Ok(EntryKind::Dir) => {
                        self.diags
                            .push(fail("is a directory, not a patch file".into()));
                        return Vec::new();
                    }
                    Err(err) => {
                        self.diags.push(fail(tree_message(&err)));
                        return Vec::new();
                    }
                }
                let Some(body) = self.read_text(&full) else {
                    return Vec::new();
                };
                self.inputs.add(full.as_bytes());
                self.inputs.add(body.as_bytes());
                (full.clone(), body, full, None)
            }
        };
        let target = match target.map(Target::compile).transpose() {
            Ok(t) => t,
            Err(message) => {
                self.diags
                    .push(Diagnostic::file(file, format!("{field}: {message}")));
                return Vec::new();
            }
        };
        let inline = patch_file == file;
        let mut out = Vec::new();
        for doc in yaml::split_documents(&body) {
            // Positions inside an inline patch are reported relative to the patch's first line.
            let doc = yaml::Document {
                text: doc.text,
                first_line: if inline {
                    base_line
                        .map(|l| l + doc.first_line - 1)
                        .unwrap_or(doc.first_line)
                } else {
                    doc.first_line
                },
            };
            let here = |message: String| {
                Diagnostic::file(&patch_file, format!("{field}: {message}")).at_line(doc.first_line)
            };
            if !self.check_booleans(&patch_file, &doc) {
                continue;
            }
            let value = match yaml::parse(&doc, &patch_file) {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(mut d) => {
                    d.message = format!("{field}: {}", d.message);
                    self.diags.push(d);
                    continue;
                }
            };
            let (body, selection) = match (&value, expect) {
                (Value::Array(_), Expect::Merge) => {
                    self.diags.push(here(
                        "a strategic-merge patch must be a mapping, not a list of operations"
                            .into(),
                    ));
                    continue;
                }
                (Value::Array(_), _) => match patch::json_patch(value) {
                    Ok(ops) => (PatchBody::Json(ops), None),
                    Err(message) => {
                        self.diags.push(here(message.into()));
                        continue;
                    }
                },
                (Value::Object(_), Expect::Json) => {
                    self.diags.push(here(
                        "patchesJson6902 entries must be JSON patches (a list of operations)"
                            .into(),
                    ));
                    continue;
                }
                (Value::Object(_), _) => match patch::merge_patch(
                    value,
                    target.is_some() || field.starts_with("patchesStrategicMerge"),
                ) {
                    Ok((merge, identity)) => (PatchBody::Merge(merge), Some(identity)),
                    Err(message) => {
                        self.diags.push(here(message.into()));
                        continue;
                    }
                },
                _ => {
                    self.diags.push(here(
                        "a patch must be a mapping (merge patch) or a list (JSON patch)".into(),
                    ));
                    continue;
                }
            };
            let selection = match (&target, selection) {
                (Some(target), _) => Selection::Target(Box::new(target.clone())),
                (None, Some(identity)) => identity,
                (None, None) => {
                    self.diags
                        .push(here("a JSON patch needs a `target`".into()));
                    continue;
                }
            };
            out.push(Patch {
                origin: origin.clone(),
                file: patch_file.clone(),
                line: Some(doc.first_line),
                body,
                selection,
                applied: AtomicUsize::new(0),
            });
        }
        out
    }
}

/// Where a patch's text is.
enum PatchSource {
    Inline(String),
    Path(String),
}

/// What kind of patch an entry may hold.
#[derive(Clone, Copy)]
enum Expect {
    Merge,
    Json,
    Either,
}

/// Reads a file as UTF-8, within the size limit.
pub fn read_text(tree: &dyn Tree, path: &str, limits: Limits) -> Result<String, Diagnostic> {
    match tree.entry(path) {
        Ok(EntryKind::File(size)) if size > limits.max_file_bytes => {
            return Err(Diagnostic::file(
                path,
                format!(
                    "file is {size} bytes, over the {} byte limit; split it",
                    limits.max_file_bytes
                ),
            ));
        }
        Ok(_) => {}
        Err(err) => return Err(Diagnostic::file(path, tree_message(&err))),
    }
    let bytes = tree
        .read(path)
        .map_err(|err| Diagnostic::file(path, tree_message(&err)))?;
    String::from_utf8(bytes).map_err(|e| {
        Diagnostic::file(
            path,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// A tree error as a diagnostic message.
pub fn tree_message(err: &TreeError) -> String {
    match err {
        TreeError::NotFound => "no such file or directory".into(),
        TreeError::OutsideRoot(to) => format!("symlink leads outside the repository (to {to})"),
        TreeError::Io(e) => format!("cannot read: {e}"),
    }
}

fn is_remote(resource: &str) -> bool {
    resource.contains("://")
        || resource.starts_with("git@")
        || resource.starts_with("github.com/")
        || resource.contains("?ref=")
}

fn display_dir(dir: &str) -> &str {
    if dir.is_empty() { "." } else { dir }
}

/// The first line containing `needle`, 1-based.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The line and column of a top-level key.
fn line_of_key(text: &str, key: &str) -> Option<(usize, usize)> {
    text.lines()
        .position(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(':'))
        .map(|i| (i + 1, 1))
}
