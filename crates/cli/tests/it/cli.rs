//! Command-line behaviour: output order and formats, exit codes.

use super::support::{endstate, outcome, workspace};

fn prod() -> String {
    workspace()
        .join("examples/repo-layout/overlays/prod")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn render_orders_by_kind_namespace_name() {
    let (code, stdout, stderr) = outcome(&endstate(&["render", &prod()]));
    assert_eq!(code, 0, "{stderr}");
    let mut keys = Vec::new();
    for doc in stdout.split("\n---\n") {
        let value: serde_json::Value = serde_norway::from_str(doc).unwrap();
        keys.push((
            value["kind"].as_str().unwrap().to_owned(),
            value["metadata"]["namespace"].as_str().unwrap().to_owned(),
            value["metadata"]["name"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(keys.len(), 72);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys[0].0, "Cluster");
}

#[test]
fn render_json_is_a_list_of_the_same_objects() {
    let (_, yaml, _) = outcome(&endstate(&["render", &prod()]));
    let (code, json, _) = outcome(&endstate(&["render", &prod(), "--output", "json"]));
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 72);
    let from_yaml = super::support::objects(&yaml);
    for item in items {
        let key = (
            item["kind"].as_str().unwrap().to_owned(),
            item["metadata"]["namespace"].as_str().unwrap().to_owned(),
            item["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        assert_eq!(&from_yaml[&key], item);
    }
}

#[test]
fn validate_summarises_by_kind() {
    let (code, stdout, _) = outcome(&endstate(&["validate", &prod()]));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "ok: 72 objects (3 Cluster, 2 ClusterPackageVersion, 60 Machine, 6 MachinePackageVersion, 1 RolloutPolicy)"
    );
}

#[test]
fn a_missing_directory_is_an_error_with_exit_code_2() {
    let (code, _, stderr) = outcome(&endstate(&["validate", "/nonexistent/overlay"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("opening /nonexistent/overlay"), "{stderr}");
}

#[test]
fn a_directory_outside_any_work_tree_gets_the_root_that_would_render_it() {
    // A copy of the example layout in a directory that is neither a Git work tree nor under
    // the current directory: the default root is the overlay itself, which cannot reach
    // `../../base`.
    let dir = std::env::temp_dir().join(format!("endstate-root-hint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(workspace().join("examples/repo-layout"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copy.success());
    let overlay = dir.join("overlays/prod");
    let (code, _, stderr) = outcome(&endstate(&["render", overlay.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the path leads outside the repository"),
        "{stderr}"
    );
    let root = dir.canonicalize().unwrap();
    let hint = format!("--root {}`", root.display());
    assert!(stderr.contains(&hint), "no `{hint}` in\n{stderr}");

    // The hint works.
    let (code, _, stderr) = outcome(&endstate(&[
        "render",
        overlay.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
