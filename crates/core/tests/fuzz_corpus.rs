//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies: every input the fuzzer kept, and the seeds (YAML alias bombs among them), must
//! render or be refused without a panic. The fuzzer itself runs from `fuzz/` (docs/fuzzing.md).

use std::path::Path;

fn replay<T>(target: &str, run: fn(&[u8]) -> T) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 3, "{target}: only {} inputs", inputs.len());
    for input in inputs {
        let data = std::fs::read(&input).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", input.display());
    }
}

#[test]
fn the_yaml_corpus_is_read_without_a_panic() {
    replay("yaml", endstate_core::fuzzing::yaml);
}

#[test]
fn the_kustomization_corpus_renders_or_is_refused_without_a_panic() {
    replay("kustomization", endstate_core::fuzzing::kustomization);
}

#[test]
fn the_render_corpus_renders_or_is_refused_without_a_panic() {
    replay("render", endstate_core::fuzzing::render);
}

#[test]
fn the_fixed_parts_of_the_targets_render() {
    // The kustomization target's base is valid, so inputs explore past it.
    assert!(endstate_core::fuzzing::kustomization(
        b"resources: [../base]\n"
    ));
    // The render target's file format works.
    let tree = b"resources: [p.yaml]\n=== p.yaml\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata: {name: k8s-1}\nspec:\n  version: \"1\"\n  etcd: {image: e}\n  apiserver: {image: a}\n  controllerManager: {image: c}\n  scheduler: {image: s}\n";
    assert!(endstate_core::fuzzing::render(tree));
}
