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

/// Every Rust file of the workspace: sources, tests, benches, fuzz targets.
fn every_rust_file() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [root.join("crates"), root.join("fuzz")] {
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "target"));
    files.sort();
    files
}

/// The longest file holds one concept or several that want splitting: past this many lines
/// it is the second.
const MAX_LINES: usize = 900;

#[test]
fn no_source_file_is_over_the_line_limit() {
    let files = every_rust_file();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("crates/cli/tests/it/layout.rs")),
        "the walk misses the tests"
    );
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines: {}",
        long.join(", ")
    );
}

/// Whether `text` names a `Result` whose error is a bare `String`.
fn string_errors(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find("Result<") {
            let open = from + at + "Result<".len();
            // The matching `>` of this `Result<`.
            let mut depth = 1;
            let mut end = None;
            for (i, c) in line[open..].char_indices() {
                match c {
                    '<' | '(' | '[' => depth += 1,
                    '>' | ')' | ']' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(open + i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            let args = &line[open..end];
            // The last top-level argument is the error type.
            let mut depth = 0;
            let mut last = 0;
            for (i, c) in args.char_indices() {
                match c {
                    '<' | '(' | '[' => depth += 1,
                    '>' | ')' | ']' => depth -= 1,
                    ',' if depth == 0 => last = i + 1,
                    _ => {}
                }
            }
            if last > 0 && args[last..].trim() == "String" {
                found.push(n + 1);
            }
            from = open;
        }
    }
    found
}

#[test]
fn no_library_code_returns_a_bare_string_as_its_error() {
    let root = workspace().join("crates");
    let mut offenders = Vec::new();
    for file in every_rust_file() {
        let Ok(rel) = file.strip_prefix(&root) else {
            continue;
        };
        // Sources only, and not their unit tests.
        if rel
            .components()
            .nth(1)
            .is_none_or(|c| c.as_os_str() != "src")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for line in string_errors(code) {
            offenders.push(format!("{}:{line}", rel.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "a `Result<_, String>` outside tests (make it a typed error): {}",
        offenders.join(", ")
    );
}

#[test]
fn the_string_error_check_reads_nested_types() {
    assert_eq!(string_errors("fn f() -> Result<(), String> {"), [1]);
    assert_eq!(
        string_errors("fn f() -> Result<Vec<(u8, String)>, Error> {"),
        Vec::<usize>::new()
    );
    assert_eq!(
        string_errors("x: OnceLock<Result<Binaries, String>>,\nfn g() -> Result<String> {"),
        [1]
    );
}
