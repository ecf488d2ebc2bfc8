//! Fetching, reading trees, the render cache, history rewrites and failing remotes.

use endstate_core::tree::Tree;
use endstate_git::{
    Ancestry, Backoff, Error, FailureKind, History, RenderCache, RewritePolicy, Source,
    SourceConfig,
};

use crate::support::{Daemon, Repo, git, machine};

fn config(repo: &Repo, url: String) -> SourceConfig {
    SourceConfig::new(url, repo.mirror()).path("base")
}

#[test]
fn fetches_over_git_daemon_and_reads_the_commit_tree() {
    let repo = Repo::new();
    let daemon = Daemon::serve(repo.dir.path());
    let mut source =
        Source::open(config(&repo, daemon.url("remote.git")), History::default()).unwrap();
    let fetched = source.fetch().unwrap();
    assert_eq!(fetched.commit, repo.remote_head());
    assert_eq!(fetched.ancestry, Ancestry::First);

    let tree = source.tree(fetched.commit).unwrap();
    let text = String::from_utf8(tree.read("base/machines-a.yaml").unwrap()).unwrap();
    assert!(text.contains("name: a1"), "{text}");
    let rendered = source
        .render(fetched.commit, &mut RenderCache::new())
        .unwrap();
    assert_eq!(rendered.objects.len(), 8);

    // A later push arrives with the next fetch, into the same mirror.
    repo.write("base/machines-b.yaml", &machine("b1", 3, "kubelet-2"));
    let second = repo.commit("Upgrade b1, drop b2");
    repo.push();
    let fetched = source.fetch().unwrap();
    assert_eq!(fetched.commit, second);
    let rendered = source.render(second, &mut RenderCache::new()).unwrap();
    assert_eq!(rendered.objects.len(), 7);
}

/// A short-lived mirror of a local remote reads the remote's objects in place: a fetch moves
/// refs only, and every commit renders (the render's own handles on the mirror included).
#[test]
fn a_mirror_borrowing_a_local_remotes_objects_copies_none() {
    let repo = Repo::new();
    let config = config(&repo, repo.file_url()).borrow_local_objects();
    let mut source = Source::open(config.clone(), History::default()).unwrap();
    let fetched = source.fetch().unwrap();
    assert_eq!(fetched.commit, repo.remote_head());
    let rendered = source
        .render(fetched.commit, &mut RenderCache::new())
        .unwrap();
    assert_eq!(rendered.objects.len(), 8);
    let objects = repo.mirror().join("objects");
    let copied = copied_objects(&objects);
    assert!(
        copied.is_empty(),
        "objects copied into the mirror: {copied:?}"
    );
    // Another handle on the same mirror (another branch's) sees them too.
    let again = Source::open(config, History::default()).unwrap();
    assert!(
        again
            .render(fetched.commit, &mut RenderCache::new())
            .is_ok()
    );

    // A linked work tree keeps its objects in the common directory: those are lent.
    let linked = repo.dir.path().join("linked");
    git(
        &repo.work,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "linked",
            linked.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(repo.mirror());
    let url = format!("file://{}", linked.display());
    let mut source = Source::open(
        SourceConfig::new(url, repo.mirror())
            .path("base")
            .branch("linked")
            .borrow_local_objects(),
        History::default(),
    )
    .unwrap();
    let fetched = source.fetch().unwrap();
    assert!(
        source
            .render(fetched.commit, &mut RenderCache::new())
            .is_ok()
    );
    let copied = copied_objects(&objects);
    assert!(
        copied.is_empty(),
        "objects copied from a linked work tree: {copied:?}"
    );
}

/// The object files of a mirror's `objects` directory, its `info` (the alternates) aside.
fn copied_objects(objects: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir(objects)
        .into_iter()
        .filter(|p| !p.starts_with(objects.join("info")))
        .collect()
}

/// The files under `dir`, recursively.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn unchanged_blobs_come_from_the_render_cache() {
    let repo = Repo::new();
    let mut source = Source::open(config(&repo, repo.file_url()), History::default()).unwrap();
    let mut cache = RenderCache::new();
    let first = source.fetch().unwrap().commit;
    let before = source.render(first, &mut cache).unwrap();
    assert_eq!((cache.stats().hits, cache.stats().misses), (0, 4));

    repo.write(
        "base/machines-b.yaml",
        &(machine("b1", 3, "kubelet-2") + &machine("b2", 4, "kubelet-1")),
    );
    let second = repo.commit("Upgrade b1");
    repo.push();
    assert_eq!(source.fetch().unwrap().commit, second);
    let after = source.render(second, &mut cache).unwrap();
    // Three files unchanged: served from the cache; one parsed.
    assert_eq!((cache.stats().hits, cache.stats().misses), (3, 5));
    assert_eq!(
        after,
        endstate_core::render(&source.tree(second).unwrap(), "base", Default::default()).unwrap()
    );
    assert_ne!(before, after);
}

#[test]
fn a_rewritten_history_is_refused_by_default_and_adopted_when_asked() {
    let repo = Repo::new();
    repo.write(
        "base/machines-a.yaml",
        &(machine("a1", 1, "kubelet-2") + &machine("a2", 2, "kubelet-1")),
    );
    let applied = repo.commit("Upgrade a1");
    repo.push();
    let mut source = Source::open(config(&repo, repo.file_url()), History::default()).unwrap();
    assert_eq!(source.fetch().unwrap().commit, applied);
    source.mark_applied(applied).unwrap();
    source.mark_good(applied).unwrap();

    // Rewind and push something else in its place.
    git(&repo.work, &["reset", "-q", "--hard", "HEAD~1"]);
    repo.write(
        "base/machines-a.yaml",
        &(machine("a1", 1, "kubelet-1") + &machine("a2", 2, "kubelet-2")),
    );
    let rewritten = repo.commit("Upgrade a2 instead");
    repo.force_push();

    let err = source.fetch().unwrap_err();
    match &err {
        Error::HistoryRewritten {
            last_applied, new, ..
        } => {
            assert_eq!((*last_applied, *new), (applied, rewritten));
        }
        other => panic!("expected a history rewrite, got {other}"),
    }
    assert!(err.to_string().contains("onHistoryRewrite: adopt"), "{err}");
    assert_eq!(source.last_good(), Some(applied));
    // The refused history's predecessor is still readable for serving.
    assert!(source.tree(applied).is_ok());

    let history = source.history().clone();
    let mut adopting = Source::open(
        config(&repo, repo.file_url()).on_history_rewrite(RewritePolicy::Adopt),
        history,
    )
    .unwrap();
    let fetched = adopting.fetch().unwrap();
    assert_eq!(
        (fetched.commit, fetched.ancestry),
        (rewritten, Ancestry::Rewritten)
    );
}

#[test]
fn an_unreachable_remote_keeps_the_last_good_commit_and_backs_off() {
    let repo = Repo::new();
    let daemon = Daemon::serve(repo.dir.path());
    let url = daemon.url("remote.git");
    let mut cfg = config(&repo, url);
    cfg.backoff = Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(4),
    );
    let mut source = Source::open(cfg, History::default()).unwrap();
    let good = source.fetch().unwrap().commit;
    source.mark_applied(good).unwrap();
    source.mark_good(good).unwrap();
    drop(daemon);

    let mut delays = Vec::new();
    for _ in 0..4 {
        match source.fetch() {
            Err(Error::Fetch { kind, message, .. }) => {
                assert_eq!(kind, FailureKind::Unreachable, "{message}");
            }
            other => panic!("expected an unreachable remote, got {other:?}"),
        }
        delays.push(source.retry_in().unwrap().as_secs());
    }
    assert_eq!(delays, [1, 2, 4, 4]);
    assert_eq!(source.status().consecutive_failures, 4);
    assert!(
        source
            .status()
            .last_error
            .unwrap()
            .contains("remote unreachable")
    );
    // Nothing moved: the mirror's branch, the history, the last good tree.
    assert_eq!(source.last_good(), Some(good));
    assert_eq!(
        source
            .repository()
            .refname_to_id("refs/heads/main")
            .unwrap(),
        good
    );
    assert_eq!(
        source
            .render(good, &mut RenderCache::new())
            .unwrap()
            .objects
            .len(),
        8
    );

    // A repository that is not there is told apart from a network failure.
    let mut missing = Source::open(
        SourceConfig::new(
            format!("file://{}/nope.git", repo.dir.path().display()),
            repo.dir.path().join("m2"),
        ),
        History::default(),
    )
    .unwrap();
    let err = missing.fetch().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fetch {
                kind: FailureKind::NotFound,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_missing_branch_is_reported_by_name() {
    let repo = Repo::new();
    let mut source = Source::open(
        config(&repo, repo.file_url()).branch("release"),
        History::default(),
    )
    .unwrap();
    let err = source.fetch().unwrap_err();
    assert!(matches!(err, Error::BranchNotFound { .. }), "{err}");
    assert!(err.to_string().contains("branch release"), "{err}");
}

#[test]
fn a_corrupt_object_from_the_remote_changes_nothing() {
    let repo = Repo::new();
    let mut source = Source::open(config(&repo, repo.file_url()), History::default()).unwrap();
    let good = source.fetch().unwrap().commit;
    source.mark_applied(good).unwrap();
    source.mark_good(good).unwrap();

    repo.write("base/machines-b.yaml", &machine("b1", 3, "kubelet-2"));
    let bad = repo.commit("Upgrade b1");
    repo.push();
    // The push arrived as loose objects; garble the new commit's.
    let hex = bad.to_string();
    let object = repo.remote.join("objects").join(&hex[..2]).join(&hex[2..]);
    assert!(
        object.exists(),
        "expected a loose object at {}",
        object.display()
    );
    let mut perms = std::fs::metadata(&object).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&object, perms).unwrap();
    std::fs::write(&object, b"not a zlib stream").unwrap();

    let err = source.fetch().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fetch {
                kind: FailureKind::Corrupt,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        source
            .repository()
            .refname_to_id("refs/heads/main")
            .unwrap(),
        good
    );
    assert_eq!(source.last_good(), Some(good));
    assert_eq!(source.history().last_applied, Some(good.to_string()));
    assert!(source.retry_in().is_some());
}
