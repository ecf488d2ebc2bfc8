//! Attribution of a failure to the commits of a range.

use std::collections::HashSet;

use endstate_core::{Kind, ObjectRef};
use endstate_git::{History, RenderCache, Source, SourceConfig, attribute};

use crate::support::{Repo, three_upgrades};

#[test]
fn picks_the_commit_that_changed_the_failed_object_out_of_three() {
    let repo = Repo::new();
    let good = repo.head();
    let [c1, c2, c3] = three_upgrades(&repo);
    let mut source = Source::open(
        SourceConfig::new(repo.file_url(), repo.mirror()).path("base"),
        History::default(),
    )
    .unwrap();
    let target = source.fetch().unwrap().commit;
    assert_eq!(target, c3);
    let mut cache = RenderCache::new();

    let failed: HashSet<_> = [ObjectRef::new(Kind::Machine, "", "a2")].into();
    let found = attribute(
        source.repository(),
        "base",
        &Default::default(),
        &mut cache,
        good,
        target,
        &failed,
    )
    .unwrap();
    assert_eq!(found.commits, [c2]);
    assert!(found.attributed);
    // Each file was parsed once per version: the unchanged ones came from the cache.
    assert_eq!(cache.stats().misses, 4 + 3);

    let both: HashSet<_> = [
        ObjectRef::new(Kind::Machine, "", "b1"),
        ObjectRef::new(Kind::Machine, "", "a1"),
    ]
    .into();
    let found = attribute(
        source.repository(),
        "base",
        &Default::default(),
        &mut cache,
        good,
        target,
        &both,
    )
    .unwrap();
    assert_eq!(found.commits, [c3, c1]);

    // A fleet-wide failure names no changed object: the whole range, newest first.
    let none: HashSet<_> = [ObjectRef::new(Kind::Machine, "", "b2")].into();
    let found = attribute(
        source.repository(),
        "base",
        &Default::default(),
        &mut cache,
        good,
        target,
        &none,
    )
    .unwrap();
    assert_eq!(found.commits, [c3, c2, c1]);
    assert!(!found.attributed);
}
