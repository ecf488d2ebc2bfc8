//! `endstate crds` and `deploy/crds/` (and `--target` and `deploy/target/`) never drift apart.

use super::support::{endstate, outcome, workspace};

/// `endstate ARGS` prints what `file` holds, CRDs of exactly `kinds`.
fn checked_in(args: &[&str], file: &str, kinds: &[&str]) {
    let (code, stdout, stderr) = outcome(&endstate(args));
    assert_eq!(code, 0, "{stderr}");
    let checked_in = std::fs::read_to_string(workspace().join(file)).unwrap();
    assert!(
        stdout == checked_in,
        "{file} is stale: regenerate it with `cargo run -q -- {} > {file}`",
        args.join(" ")
    );
    let mut found: Vec<String> = super::support::objects(&stdout)
        .values()
        .map(|crd| crd["spec"]["names"]["kind"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    assert_eq!(found, kinds);
}

#[test]
fn checked_in_crds_equal_the_generated_ones() {
    checked_in(
        &["crds"],
        "deploy/crds/crds.yaml",
        &[
            "Cluster",
            "ClusterPackageVersion",
            "Fleet",
            "Machine",
            "MachinePackageVersion",
            "RolloutPolicy",
        ],
    );
}

#[test]
fn checked_in_target_crds_equal_the_generated_ones() {
    checked_in(
        &["crds", "--target"],
        "deploy/target/crds.yaml",
        &["Machine", "MachinePackageVersion"],
    );
}
