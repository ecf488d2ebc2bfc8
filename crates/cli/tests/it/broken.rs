//! The corpus of broken repositories: each yields exit code 2 and an error that names the
//! file (with line and column where YAML gives them) and the problem.
//!
//! `tests/fixtures/broken/<case>/expect.txt` holds pairs of lines: the start of the
//! diagnostic (`file:line:column: Kind/name`) and a part of its message. `args.txt`, when
//! present, holds extra flags.

use std::path::Path;

use super::support::{endstate, fixtures, outcome};

/// `endstate validate` on a case: its `overlay` directory when it has one, else `base`.
fn validate(case: &Path, extra: &[&str]) -> (i32, String, String) {
    let dir = if case.join("overlay").is_dir() {
        case.join("overlay")
    } else {
        case.join("base")
    };
    let mut args = vec![
        "validate",
        dir.to_str().unwrap(),
        "--root",
        case.to_str().unwrap(),
    ];
    args.extend(extra);
    outcome(&endstate(&args))
}

#[test]
fn every_broken_repository_is_refused_with_a_precise_error() {
    let mut cases: Vec<_> = std::fs::read_dir(fixtures("broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "the corpus has only {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let extra = std::fs::read_to_string(case.join("args.txt")).unwrap_or_default();
        let extra: Vec<&str> = extra.split_whitespace().collect();
        let (code, stdout, stderr) = validate(case, &extra);
        if code != 2 {
            failures.push(format!(
                "{name}: exit code {code}, expected 2\n{stdout}{stderr}"
            ));
            continue;
        }
        let expect = std::fs::read_to_string(case.join("expect.txt")).unwrap();
        let lines: Vec<&str> = expect.lines().filter(|l| !l.is_empty()).collect();
        assert!(
            lines.len() >= 2 && lines.len().is_multiple_of(2),
            "{name}: bad expect.txt"
        );
        for pair in lines.chunks(2) {
            let (at, message) = (pair[0], pair[1]);
            let found = stderr
                .lines()
                .any(|l| l.starts_with(at) && l.contains(message));
            if !found {
                failures.push(format!(
                    "{name}: no error at {at:?} saying {message:?}; got:\n{stderr}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_problems_are_reported_in_one_run() {
    let case = fixtures("broken/many-problems-at-once");
    let (code, _, stderr) = validate(&case, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("the repository is invalid: 3 problems"),
        "{stderr}"
    );
}

#[test]
fn json_report_lists_problems_with_positions() {
    let case = fixtures("broken/unknown-spec-field");
    let (code, stdout, _) = validate(&case, &["--output", "json"]);
    assert_eq!(code, 2);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problem = &report["problems"][0];
    assert_eq!(problem["file"], "base/machines.yaml");
    assert_eq!(problem["line"], 13);
    assert_eq!(problem["column"], 3);
    assert_eq!(problem["object"], "Machine/m-0");
}

/// An object that fails to render is reported once: the Machines that reference the Cluster a
/// failing patch broke must not also report it as missing.
#[test]
fn a_failed_object_is_not_reported_again_as_a_dangling_reference() {
    let (code, _, stderr) = validate(&fixtures("broken/json-patch-fails"), &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("the repository is invalid: 1 problem\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("does not exist"), "{stderr}");
}
