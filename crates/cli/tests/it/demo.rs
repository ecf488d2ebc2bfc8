//! `endstate demo` plays the whole story, and the revert it pushes is a real commit.

use std::process::Command;

use crate::support::{endstate, outcome};

#[test]
fn the_demo_trips_the_breaker_and_pushes_a_real_revert() {
    let dir = std::env::temp_dir().join(format!("endstate-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keep = dir.to_str().unwrap();
    let out = endstate(&["demo", "--machines", "90", "--speed", "0", "--keep", keep]);
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The bad kubelet is marked `risk: high`: it rolls out with the reinstalls.
    assert!(
        stdout.contains("tripped the breaker in wave reinstalls/"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 writes: the fleet and the branch agree"),
        "{stdout}"
    );
    assert!(stderr.contains("BREAKER TRIPPED"), "{stderr}");

    // The work clone's history, read by git itself: the newest commit is endstate's revert of
    // the bad upgrade, with its trailers, on top of the three commits the demo made.
    let work = dir.join("work");
    let log = Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(["log", "--format=%H%n%an <%ae>%n%B%n--end--"])
        .output()
        .expect("git must be installed to check the demo's repository");
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    let log = String::from_utf8(log.stdout).unwrap();
    let commits: Vec<&str> = log
        .split("--end--\n")
        .filter(|c| !c.trim().is_empty())
        .collect();
    assert_eq!(commits.len(), 4, "{log}");
    let revert = commits[0];
    let bad = commits[1];
    let bad_sha = bad.lines().next().unwrap();
    assert!(bad.contains("Upgrade kubelet to 1.29.0"), "{bad}");
    assert!(
        revert.contains("Revert \"Upgrade kubelet to 1.29.0 on every machine\""),
        "{revert}"
    );
    assert!(
        revert.contains(&format!("Endstate-Revert-Of: {bad_sha}")),
        "{revert}"
    );
    assert!(revert.contains("Endstate-Fleet: demo"), "{revert}");
    assert!(
        revert.contains("endstate <endstate@fleet.example>"),
        "{revert}"
    );

    // The revert's tree is the good upgrade's tree: git sees no difference.
    let diff = Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(["diff", "--quiet", "HEAD", "HEAD~2"])
        .status()
        .unwrap();
    assert!(
        diff.success(),
        "the revert does not restore the good commit's tree"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unkept_demo_names_no_repository_it_removed() {
    let out = endstate(&["demo", "--machines", "30", "--speed", "0"]);
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("repository"))
        .unwrap_or_else(|| panic!("no repository line in\n{stdout}"));
    assert!(
        line.contains("removed") && line.contains("--keep"),
        "the summary must say the repository is gone and how to keep it: {line}"
    );
    assert!(!line.contains("endstate-demo-"), "{line}");
}
