//! The shape of the source tree: no two source files of a crate use each other, directly or
//! through others (file A → file B when A names an item of B through `crate::` or `super::`;
//! `mod` declarations do not count).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::workspace;

/// A source file's module path inside its crate (`lib.rs`, `main.rs`, `mod.rs` name their
/// folder's module).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths a file names through `crate::` or `super::`, groups (`a::{b, c::d}`) expanded.
fn named_paths(text: &str) -> Vec<(String, Vec<String>)> {
    let code: String = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for root in ["crate", "super"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(&format!("{root}::")) {
            let start = from + at;
            from = start + root.len() + 2;
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            for path in expand(&code[from..]) {
                out.push((root.to_owned(), path));
            }
        }
    }
    out
}

/// The paths at the start of `rest` (after `crate::`): one, or each of a group's.
fn expand(rest: &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    let mut s = rest;
    loop {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if end > 0 {
            prefix.push(s[..end].to_owned());
            s = &s[end..];
        }
        if let Some(next) = s.strip_prefix("::") {
            s = next;
            if let Some(group) = s.strip_prefix('{') {
                let mut depth = 1;
                let close = group
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                return split_top(&group[..close])
                    .into_iter()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .flat_map(expand)
                    .map(|tail| prefix.iter().cloned().chain(tail).collect())
                    .collect();
            }
            continue;
        }
        return vec![prefix];
    }
}

/// `text` split at the commas outside braces.
fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[from..]);
    parts
}

/// Each crate's files and the files of the same crate they use.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut edges = BTreeMap::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files
            .iter()
            .map(|f| (module_path(&src, f), f.clone()))
            .collect();
        for file in &files {
            let here = module_path(&src, file);
            let text = std::fs::read_to_string(file).unwrap();
            let targets: &mut BTreeSet<PathBuf> = edges.entry(file.clone()).or_default();
            for (root, path) in named_paths(&text) {
                let mut full = if root == "crate" {
                    Vec::new()
                } else {
                    here[..here.len().saturating_sub(1)].to_vec()
                };
                full.extend(path.into_iter().filter(|s| s != "self"));
                // The longest prefix that is a file's module.
                if let Some(target) = (1..=full.len())
                    .rev()
                    .find_map(|k| modules.get(&full[..k]))
                    .filter(|t| *t != file)
                {
                    targets.insert(target.clone());
                }
            }
        }
    }
    edges
}

/// A cycle through `from`, if any (depth-first).
fn cycle(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        node: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.clone());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_source_files_use_each_other() {
    let edges = graph();
    // The checker sees the uses it must: a known edge.
    let root = workspace().join("crates");
    assert!(
        edges[&root.join("git/src/source.rs")].contains(&root.join("git/src/quarantine.rs")),
        "the import graph misses source.rs → quarantine.rs"
    );
    if let Some(found) = cycle(&edges) {
        let names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        panic!("source files use each other: {}", names.join(" → "));
    }
}

#[test]
fn the_checker_expands_groups_and_finds_a_cycle() {
    let paths = expand("a::{b, c::{d, e}};");
    assert_eq!(
        paths,
        [vec!["a", "b"], vec!["a", "c", "d"], vec!["a", "c", "e"]]
            .map(|p| p.into_iter().map(str::to_owned).collect::<Vec<_>>())
    );
    let mut edges = BTreeMap::new();
    let (a, b) = (PathBuf::from("a.rs"), PathBuf::from("b.rs"));
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([a.clone()]));
    assert!(cycle(&edges).is_some());
    edges.get_mut(&b).unwrap().clear();
    assert!(cycle(&edges).is_none());
}
