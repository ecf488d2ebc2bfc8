//! `endstate plan`: what merging would do, read from two commits of a real repository.

use crate::support::{demo_repo, endstate, outcome};

#[test]
fn plan_shows_the_changes_the_waves_and_the_diffs() {
    // initial (kubelet 1.27.9) → good upgrade (1.28.4) → bad upgrade (1.29.0) → its revert.
    let dir = demo_repo("plan");
    let url = format!("file://{}", dir.join("remote.git").display());
    let base = [
        "plan",
        "--repo",
        &url,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ];

    let mut args = base.to_vec();
    args.extend(["--base", "main~3", "--diffs", "1"]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("0 creates, 30 updates, 0 reinstalls, 0 deletes"),
        "{stdout}"
    );
    // The demo's policy: a canary of one, then 5%, 25% and the rest, spread across the idcs.
    assert!(
        stdout.contains(" 1. machines/canary           1 objects (1 update)"),
        "{stdout}"
    );
    assert!(stdout.contains("idc: hz-a:1"), "{stdout}");
    // Every wave is drawn round-robin across the idcs.
    assert!(
        stdout.contains(" 2. machines/early            1 objects (1 update)"),
        "{stdout}"
    );
    assert!(stdout.contains("idc: hz-b:1"), "{stdout}");
    assert!(
        stdout
            .contains(" 3. machines/quarter          6 objects (6 update), 2 at a time, bake 10m"),
        "{stdout}"
    );
    assert!(stdout.contains("idc: hz-a:2 hz-b:2 hz-c:2"), "{stdout}");
    assert!(
        stdout.contains(" 4. machines/all             22 objects"),
        "{stdout}"
    );
    // One diff, with the changed field named and shown.
    assert!(stdout.contains(": spec.packages.kubelet"), "{stdout}");
    assert!(stdout.contains("-    kubelet: kubelet-1.27.9"), "{stdout}");
    assert!(stdout.contains("+    kubelet: kubelet-1.28.4"), "{stdout}");
    assert!(
        stdout.contains("… 29 more changes not shown (--diffs)"),
        "{stdout}"
    );

    // The revert's tree is the good upgrade's: nothing to write.
    let mut args = base.to_vec();
    args.extend(["--base", "main~2"]);
    let (code, stdout, _) = outcome(&endstate(&args));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("no changes: nothing would be written"),
        "{stdout}"
    );

    // An overlay that does not exist at the head: exit 2, naming it.
    let mut args = base.to_vec();
    args[4] = "overlays/missing";
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("overlays/missing"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
