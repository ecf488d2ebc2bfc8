//! The local-path file watch (the webhook endpoint's tests are the runtime's, which serves it).

use std::time::Duration;

use endstate_git::{Schedule, Trigger, Triggers, Watcher};

/// How long a wait for an expected trigger may take before the test fails (it returns at
/// once when the trigger is there); the fallback result is `Trigger::Interval`.
const BOUND: Duration = Duration::from_secs(60);

fn idle() -> Triggers {
    // An interval long enough never to fire during a test.
    Triggers::new(Schedule::new(Duration::from_secs(24 * 3600), 0.0, 1))
}

#[test]
fn local_path_mode_triggers_on_file_changes_but_not_on_git_internals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    let mut triggers = idle();
    let _watch = Watcher::start(dir.path(), triggers.sender()).unwrap();
    std::fs::write(dir.path().join(".git/index"), "x").unwrap();
    std::fs::write(dir.path().join("machines.yaml"), "x").unwrap();
    // Only the file change can end this wait early; after BOUND it returns Interval.
    match triggers.wait(Some(BOUND)) {
        Trigger::LocalChange { paths } => {
            assert!(
                paths
                    .iter()
                    .all(|p| !p.to_string_lossy().contains("/.git/")),
                "{paths:?}"
            );
            assert!(
                paths.iter().any(|p| p.ends_with("machines.yaml")),
                "{paths:?}"
            );
        }
        other => panic!("expected a local change, got {other:?}"),
    }
}
