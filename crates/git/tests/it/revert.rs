//! The revert writer against a `git daemon` remote with pushes enabled.

use endstate_core::{Kind, ObjectRef};
use endstate_git::{Evidence, Oid, RevertConfig, RevertOutcome, RevertWriter, SourceConfig};

use crate::support::{Daemon, Repo, git, machine, three_upgrades};

fn writer(repo: &Repo, url: &str) -> RevertWriter {
    let source = SourceConfig::new(url, repo.mirror());
    RevertWriter::open(
        &source,
        RevertConfig::new("prod", "endstate", "endstate@example.com"),
    )
    .unwrap()
}

fn evidence() -> Evidence {
    Evidence {
        summary: "2 of 2 machines failed their gates".into(),
        wave: Some("1 (canary)".into()),
        failed: vec![ObjectRef::new(Kind::Machine, "", "a1")],
        thresholds: vec!["maxFailuresPerWave 1".into()],
    }
}

/// The content of `path` on the remote branch.
fn remote_file(repo: &Repo, path: &str) -> String {
    git(&repo.remote, &["show", &format!("main:{path}")])
}

fn message(repo: &Repo, commit: Oid) -> String {
    git(
        &repo.remote,
        &["log", "-1", "--format=%B", &commit.to_string()],
    )
}

#[test]
fn reverts_one_commit_with_trailers_and_the_old_tree() {
    let repo = Repo::new();
    let before = remote_file(&repo, "base/machines-b.yaml");
    let [_, _, b1] = three_upgrades(&repo);
    let daemon = Daemon::serve(repo.dir.path());
    let outcome = writer(&repo, &daemon.url("remote.git"))
        .revert(&[b1], &evidence())
        .unwrap();
    let RevertOutcome::Pushed { reverts, head, .. } = outcome else {
        panic!("expected a push, got {outcome:?}");
    };
    assert_eq!(reverts.len(), 1);
    assert_eq!(reverts[0].original, b1);
    assert_eq!(repo.remote_head(), head);
    assert_eq!(git(&repo.remote, &["rev-parse", "main~1"]), b1.to_string());
    assert_eq!(remote_file(&repo, "base/machines-b.yaml"), before);
    // The other upgrades stay.
    assert!(remote_file(&repo, "base/machines-a.yaml").contains("kubelet-2"));

    let text = message(&repo, head);
    assert!(text.starts_with("Revert \"Upgrade b1\""), "{text}");
    assert!(
        text.contains("in wave 1 (canary): 2 of 2 machines failed"),
        "{text}"
    );
    assert!(text.contains("- Machine/a1"), "{text}");
    let trailers = git(
        &repo.remote,
        &["log", "-1", "--format=%(trailers:only)", &head.to_string()],
    );
    assert!(
        trailers.contains(&format!("Endstate-Revert-Of: {b1}")),
        "{trailers}"
    );
    assert!(trailers.contains("Endstate-Fleet: prod"), "{trailers}");
    let author = git(
        &repo.remote,
        &[
            "log",
            "-1",
            "--format=%an <%ae> / %cn <%ce>",
            &head.to_string(),
        ],
    );
    assert_eq!(
        author,
        "endstate <endstate@example.com> / endstate <endstate@example.com>"
    );
}

#[test]
fn reverts_several_commits_newest_first() {
    let repo = Repo::new();
    let original_a = remote_file(&repo, "base/machines-a.yaml");
    let [a1, a2, b1] = three_upgrades(&repo);
    let daemon = Daemon::serve(repo.dir.path());
    let outcome = writer(&repo, &daemon.url("remote.git"))
        .revert(&[a2, a1], &evidence())
        .unwrap();
    let RevertOutcome::Pushed { reverts, .. } = outcome else {
        panic!("expected a push, got {outcome:?}");
    };
    assert_eq!(
        reverts.iter().map(|r| r.original).collect::<Vec<_>>(),
        [a2, a1]
    );
    // Linear on top of the old head, newest revert last.
    assert_eq!(git(&repo.remote, &["rev-parse", "main~2"]), b1.to_string());
    assert_eq!(repo.remote_head(), reverts[1].revert);
    assert_eq!(remote_file(&repo, "base/machines-a.yaml"), original_a);
    assert!(remote_file(&repo, "base/machines-b.yaml").contains("kubelet-2"));
    for r in &reverts {
        assert!(message(&repo, r.revert).contains(&format!("Endstate-Revert-Of: {}", r.original)));
    }
}

#[test]
fn a_concurrent_push_is_kept_and_the_revert_lands_on_top_without_force() {
    let repo = Repo::new();
    let [_, _, b1] = three_upgrades(&repo);
    // The remote takes someone else's push the moment endstate pushes, once: the hook moves
    // the branch to a new commit and declines endstate's update.
    let hook = repo.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        r#"#!/bin/sh
marker="$GIT_DIR/concurrent-done"
[ -e "$marker" ] && exit 0
touch "$marker"
unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
head=$(git rev-parse refs/heads/main)
blob=$(echo concurrent | git hash-object -w --stdin)
export GIT_INDEX_FILE="$GIT_DIR/concurrent-index"
git read-tree "$head"
git update-index --add --cacheinfo "100644,$blob,concurrent.txt"
tree=$(git write-tree)
commit=$(GIT_AUTHOR_NAME=other GIT_AUTHOR_EMAIL=o@x GIT_COMMITTER_NAME=other GIT_COMMITTER_EMAIL=o@x git commit-tree "$tree" -p "$head" -m "Someone else's change")
git update-ref refs/heads/main "$commit" "$head"
echo "the branch moved" >&2
exit 1
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let daemon = Daemon::serve(repo.dir.path());
    let outcome = writer(&repo, &daemon.url("remote.git"))
        .revert(&[b1], &evidence())
        .unwrap();
    let RevertOutcome::Pushed { reverts, head, .. } = outcome else {
        panic!("expected a push, got {outcome:?}");
    };
    assert!(
        repo.remote.join("concurrent-done").exists(),
        "the hook did not run"
    );
    assert_eq!(repo.remote_head(), head);
    assert_eq!(reverts[0].revert, head);
    // Nothing lost: the other change is the revert's parent, and its file is there.
    assert_eq!(
        git(&repo.remote, &["log", "-1", "--format=%s", "main~1"]),
        "Someone else's change"
    );
    assert_eq!(remote_file(&repo, "concurrent.txt"), "concurrent");
    assert_eq!(git(&repo.remote, &["rev-parse", "main~2"]), b1.to_string());
}

#[test]
fn a_conflicting_revert_goes_to_a_side_branch_and_the_branch_is_untouched() {
    let repo = Repo::new();
    let [a1, _, _] = three_upgrades(&repo);
    // A later commit edits the lines a1 changed.
    repo.write(
        "base/machines-a.yaml",
        &(machine("a1", 1, "kubelet-9") + &machine("a2", 2, "kubelet-2")),
    );
    repo.commit("Move a1 further");
    repo.push();
    let head = repo.remote_head();
    let daemon = Daemon::serve(repo.dir.path());
    let outcome = writer(&repo, &daemon.url("remote.git"))
        .revert(&[a1], &evidence())
        .unwrap();
    let RevertOutcome::SideBranch {
        branch,
        reverts,
        conflicted,
        paths,
    } = outcome
    else {
        panic!("expected a side branch, got {outcome:?}");
    };
    assert_eq!(branch, format!("endstate/revert-{}", &a1.to_string()[..7]));
    assert_eq!(conflicted, a1);
    assert_eq!(paths, ["base/machines-a.yaml"]);
    assert_eq!(repo.remote_head(), head, "the branch must not move");
    let side = git(
        &repo.remote,
        &["rev-parse", &format!("refs/heads/{branch}")],
    );
    assert_eq!(side, reverts[0].revert.to_string());
    assert_eq!(
        git(&repo.remote, &["rev-parse", &format!("{branch}~1")]),
        a1.to_string()
    );
    assert!(message(&repo, reverts[0].revert).contains(&format!("Endstate-Revert-Of: {a1}")));
}

#[test]
fn a_commit_is_reverted_once_and_a_revert_is_never_reverted() {
    let repo = Repo::new();
    let [_, a2, b1] = three_upgrades(&repo);
    let daemon = Daemon::serve(repo.dir.path());
    let url = daemon.url("remote.git");
    let first = writer(&repo, &url).revert(&[b1], &evidence()).unwrap();
    let RevertOutcome::Pushed { reverts, head, .. } = first else {
        panic!("expected a push, got {first:?}");
    };

    // Again: found by its trailer, nothing pushed.
    let again = writer(&repo, &url).revert(&[b1], &evidence()).unwrap();
    assert_eq!(
        again,
        RevertOutcome::AlreadyReverted {
            reverts: reverts.clone()
        }
    );
    assert_eq!(repo.remote_head(), head);

    // With another commit: only that one is reverted.
    let mixed = writer(&repo, &url).revert(&[b1, a2], &evidence()).unwrap();
    let RevertOutcome::Pushed {
        reverts: now,
        already,
        ..
    } = mixed
    else {
        panic!("expected a push, got {mixed:?}");
    };
    assert_eq!(now.iter().map(|r| r.original).collect::<Vec<_>>(), [a2]);
    assert_eq!(already, reverts);

    // endstate's own revert is refused, distinctly.
    let head = repo.remote_head();
    let refused = writer(&repo, &url)
        .revert(&[reverts[0].revert], &evidence())
        .unwrap();
    assert_eq!(
        refused,
        RevertOutcome::RefusedRevertOfRevert {
            commit: reverts[0].revert,
            reverts: b1
        }
    );
    assert_eq!(repo.remote_head(), head);
}
