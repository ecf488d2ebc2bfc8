//! `endstate crds` and `deploy/crds/` never drift apart.

use super::support::{endstate, outcome, workspace};

#[test]
fn checked_in_crds_equal_the_generated_ones() {
    let (code, stdout, stderr) = outcome(&endstate(&["crds"]));
    assert_eq!(code, 0, "{stderr}");
    let checked_in = std::fs::read_to_string(workspace().join("deploy/crds/crds.yaml")).unwrap();
    assert!(
        stdout == checked_in,
        "deploy/crds/crds.yaml is stale: regenerate it with `cargo run -q -- crds > deploy/crds/crds.yaml`"
    );
    let mut kinds: Vec<String> = super::support::objects(&stdout)
        .values()
        .map(|crd| crd["spec"]["names"]["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Cluster",
            "ClusterPackageVersion",
            "Fleet",
            "Machine",
            "MachinePackageVersion",
            "RolloutPolicy"
        ]
    );
}
