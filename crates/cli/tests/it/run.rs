//! `endstate run --live sim --until-idle`: converged, tripped and refused, by exit code.

use std::path::Path;
use std::process::Command;

use crate::support::{endstate, outcome};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git must be installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn run_until_idle_exits_by_outcome() {
    // The demo's repository: initial, good upgrade, bad upgrade, revert.
    let dir = std::env::temp_dir().join(format!("endstate-run-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = endstate(&[
        "demo",
        "--machines",
        "30",
        "--speed",
        "0",
        "--keep",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(outcome(&out).0, 0, "{}", outcome(&out).2);
    let remote = dir.join("remote.git");
    let url = format!("file://{}", remote.display());
    // A branch whose head is the bad upgrade, before its revert.
    git(&remote, &["branch", "bad", "main~1"]);
    let bad = git(&remote, &["rev-parse", "bad"]);
    let base = [
        "run",
        "--live",
        "sim",
        "--repo",
        &url,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "--fleet",
        "demo",
        "--until-idle",
    ];

    // Converged: from the initial commit to the branch head (the revert of the bad upgrade).
    let mut args = base.to_vec();
    args.extend(["--sim-initial", "main~3"]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "converged: the fleet is at {}",
            git(&remote, &["rev-parse", "main"])
        )),
        "{stdout}"
    );

    // Tripped: the bad upgrade fails everywhere; the fleet is restored and the revert pushed.
    let mut args = base.to_vec();
    args.extend([
        "--branch",
        "bad",
        "--sim-initial",
        "bad~1",
        "--sim-fault",
        "package=kubelet-1.29.0,rate=1",
    ]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("breaker tripped on {bad}")),
        "{stdout}"
    );
    assert!(
        stderr.contains("tripped in wave machines/canary"),
        "{stderr}"
    );
    let message = git(&remote, &["log", "-1", "--format=%B", "bad"]);
    assert!(
        message.contains(&format!("Endstate-Revert-Of: {bad}")),
        "{message}"
    );

    // Refused: the overlay does not exist at the head.
    let mut args = base.to_vec();
    args[6] = "overlays/missing";
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("overlays/missing"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
