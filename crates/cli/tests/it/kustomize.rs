//! For every fixture of the subset, endstate renders the same objects as `kubectl kustomize`.
//!
//! kubectl is the oracle: when it is missing the test fails (CI installs it), never skips.

use std::process::Command;

use super::support::{endstate, fixtures, objects, outcome, workspace};

fn kubectl_kustomize(dir: &std::path::Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is the rendering oracle and must be installed (running it: {e})")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn compare(dir: &std::path::Path, root: &std::path::Path) {
    let (code, stdout, stderr) = outcome(&endstate(&[
        "render",
        dir.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]));
    assert_eq!(
        code,
        0,
        "endstate render {} failed:\n{stderr}",
        dir.display()
    );
    let ours = objects(&stdout);
    let theirs = objects(&kubectl_kustomize(dir));
    assert!(!ours.is_empty(), "{} rendered nothing", dir.display());
    let our_keys: Vec<_> = ours.keys().collect();
    let their_keys: Vec<_> = theirs.keys().collect();
    assert_eq!(our_keys, their_keys, "{}: different objects", dir.display());
    for (key, object) in &ours {
        assert_eq!(
            object,
            &theirs[key],
            "{}: {key:?} differs from kubectl kustomize",
            dir.display()
        );
    }
}

#[test]
fn every_render_fixture_matches_kubectl_kustomize() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures("render")).unwrap() {
        let root = entry.unwrap().path();
        let overlay = root.join("overlay");
        let dir = if overlay.is_dir() {
            overlay
        } else {
            root.clone()
        };
        compare(&dir, &root);
        seen += 1;
    }
    assert!(seen >= 8, "expected the render fixtures, found {seen}");
}

#[test]
fn example_overlays_match_kubectl_kustomize() {
    let root = workspace();
    for overlay in ["staging", "prod"] {
        compare(
            &root.join("examples/repo-layout/overlays").join(overlay),
            &root,
        );
    }
}

#[test]
fn generated_fleet_matches_kubectl_kustomize() {
    let dir = std::env::temp_dir().join(format!("endstate-it-gen-{}", std::process::id()));
    endstate_bench::fleetgen::generate(
        &dir,
        endstate_bench::fleetgen::Spec {
            machines: 300,
            machines_per_cluster: 100,
        },
    )
    .unwrap();
    compare(&dir.join("overlays/prod"), &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where kustomize's output depends on the patch form, endstate refuses the input rather than
/// pick one: a null label in a merge patch with a `target` becomes the string "null" there.
#[test]
fn a_null_label_in_a_merge_patch_is_refused_where_kustomize_writes_the_string_null() {
    let root = fixtures("disagree/null-label");
    let overlay = root.join("overlay");
    let theirs = objects(&kubectl_kustomize(&overlay));
    let cluster = theirs
        .values()
        .find(|o| o["kind"] == "Cluster")
        .expect("kubectl kustomize renders the Cluster");
    assert_eq!(cluster["metadata"]["labels"]["team"], "null");

    let (code, _, stderr) = outcome(&endstate(&[
        "render",
        overlay.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("overlay/kustomization.yaml")
            && stderr.contains("metadata.labels.team is null")
            && stderr.contains("op: remove"),
        "{stderr}"
    );
}
