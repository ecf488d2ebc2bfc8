//! Who owns which field, held-back Machines, and how a rollout ends.

use super::*;

/// The live Machine `name`.
fn live_machine(live: &SimLive, name: &str) -> endstate_api::Machine {
    match live.lock().get(&endstate_core::ObjectRef::new(
        endstate_core::Kind::Machine,
        "",
        name,
    )) {
        Some(FleetObject::Machine(m)) => (**m).clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// Another client's write to one Machine's spec, as `kubectl patch` would make it.
fn patch_spec(live: &SimLive, name: &str, patch: impl FnOnce(&mut endstate_api::MachineSpec)) {
    let mut m = live_machine(live, name);
    patch(&mut m.spec);
    m.metadata.resource_version = None;
    live.lock().update(&FleetObject::from(m)).unwrap();
}

#[tokio::test]
async fn a_field_another_manager_set_is_not_drift_and_one_git_sets_is_taken_back_once() {
    let mut h = harness("ownership", 6, WAVES, &[]);
    let head = h.converged_at_head().await;

    // Not in Git: another manager's; no reconcile writes.
    patch_spec(&h.live, "m-000", |s| s.unschedulable = Some(true));
    for _ in 0..3 {
        let before = h.controller.tally().writes;
        let outcome = h.controller.run_until_idle().await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Converged {
                commit: head.clone()
            }
        );
        assert_eq!(h.controller.tally().writes, before, "{}", h.lines.text());
    }
    let m = live_machine(&h.live, "m-000");
    assert_eq!(
        m.spec.unschedulable,
        Some(true),
        "the other manager's field stays"
    );

    // In Git: drift; one write takes it back, then nothing.
    patch_spec(&h.live, "m-001", |s| s.hostname = "drifted".into());
    let writes = |h: &Harness| h.controller.tally().writes;
    let before = writes(&h);
    h.controller.run_until_idle().await.unwrap();
    assert_eq!(writes(&h), before + 1, "{}", h.lines.text());
    let again = writes(&h);
    h.controller.run_until_idle().await.unwrap();
    assert_eq!(writes(&h), again);
    let m = live_machine(&h.live, "m-001");
    assert_eq!(m.spec.hostname, "m-001");
    // The apply that took `hostname` back left m-000's other field alone too.
    let m = live_machine(&h.live, "m-000");
    assert_eq!(m.spec.unschedulable, Some(true));
}

#[tokio::test]
async fn a_field_removed_from_git_is_removed_from_the_fleet() {
    let mut h = harness("removed-field", 3, WAVES, &[]);
    h.converged_at_head().await;
    // Git sets a field, then a later commit removes it: endstate's apply removes it too.
    let machines = std::fs::read_to_string(h.repo.work.join("base/machines.yaml")).unwrap();
    h.repo.write(
        "base/machines.yaml",
        &machines.replace(
            "  hostname: m-002\n",
            "  hostname: m-002\n  unschedulable: true\n",
        ),
    );
    let cordoned = commit_and_push(&h.repo.work, "Cordon m-002");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(outcome, Outcome::Converged { commit: cordoned });
    h.repo.write("base/machines.yaml", &machines);
    let uncordoned = commit_and_push(&h.repo.work, "Uncordon m-002");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: uncordoned },
        "{}",
        h.lines.text()
    );
    let m = live_machine(&h.live, "m-002");
    assert_eq!(m.spec.unschedulable, None, "{}", h.lines.text());
}

#[tokio::test]
async fn machines_of_a_cluster_whose_upgrade_failed_are_held_back_not_rolled_out() {
    // The breaker tolerates a few failures, so it does not trip on the Cluster alone.
    let policy = format!("{WAVES}  breaker:\n    maxFailures: 5\n");
    let mut h = harness("held", 6, &policy, &["cluster=c1,rate=1"]);
    h.converged_at_head().await;
    // One commit upgrades the control plane and the Machines' agent.
    let packages = std::fs::read_to_string(h.repo.work.join("base/packages.yaml")).unwrap();
    let k8s2 = "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s-2\nspec:\n  version: \"2\"\n  etcd:\n    image: etcd:2\n  apiserver:\n    image: apiserver:2\n  controllerManager:\n    image: cm:2\n  scheduler:\n    image: sched:2\n";
    h.repo.write(
        "base/packages.yaml",
        &format!(
            "{}{k8s2}",
            packages.replace("packageVersion: k8s-1", "packageVersion: k8s-2")
        ),
    );
    h.repo
        .set_agent("agent-2.0", "Upgrade the control plane and the agent");
    let before = h.live.lock().counters().applies;
    h.controller.run_until_idle().await.unwrap();
    let text = h.lines.text();
    assert!(text.contains("Cluster/fleet/c1 failed"), "{text}");
    assert!(
        text.contains("its Machines are skipped, not rolled out"),
        "{text}"
    );
    assert!(
        text.contains("6 Machines held back by a failed Cluster"),
        "{text}"
    );
    assert!(
        h.agents().iter().all(|(want, _)| want == "agent-1.0"),
        "no Machine of c1 was written: {:?}",
        h.agents()
    );
    // The package version and the Cluster were written; no Machine.
    assert_eq!(h.live.lock().counters().applies - before, 2, "{text}");

    // Later reconciles keep them held while the Cluster reports Failed.
    let before = h.live.lock().counters().applies;
    h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        h.live.lock().counters().applies,
        before,
        "{}",
        h.lines.text()
    );
    assert!(
        h.lines
            .text()
            .contains("Machines held back, their Cluster reports Failed: 6 on Cluster/fleet/c1"),
        "{}",
        h.lines.text()
    );
}

/// A rollout's end (the commit marked good) is in the status within `persist_every`, even when
/// nothing else wakes the loop until the next fetch: a dashboard, `kubectl wait` or a standby
/// must not see the previous good commit for a whole interval.
#[tokio::test]
async fn the_end_of_a_rollout_is_saved_before_the_next_fetch() {
    use endstate_rollout::Live as _;
    let mut h = harness("saved-end", 12, WAVES, &[]);
    // Only what the engine asks to persist is saved (no periodic save catches up).
    h.controller.set_persist_every(Duration::from_secs(3600));
    h.converged_at_head().await;
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    loop {
        h.controller.turn(false).await.unwrap();
        if h.controller.record().last_good.as_deref() == Some(next.as_str()) {
            break;
        }
    }
    let completed = h.live.lock().now();
    let mut turns = 0;
    let status = loop {
        let status = h.live.load_status().await.unwrap().unwrap_or_default();
        if status.last_good_commit.as_deref() == Some(next.as_str()) {
            break status;
        }
        turns += 1;
        assert!(
            turns < 10,
            "the end of the rollout is not saved: {status:?}"
        );
        h.controller.turn(false).await.unwrap();
    };
    // The Ready condition turned True in the save that recorded the good commit.
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let saved_at = Time(ready.last_transition_time.0.as_millisecond());
    let waited = saved_at.since(completed);
    assert!(
        waited <= Duration::from_secs(3),
        "the good commit reached the status {waited:?} after the rollout ended (the interval is 30s)"
    );
}

/// A Fleet whose source changes during a rollout: the loop ends the rollout as it would for a
/// new commit (the wave in flight finishes, nothing later starts), then stops for the loop on
/// the new source.
#[tokio::test]
async fn a_retired_loop_ends_its_rollout_like_a_new_commit_then_stops() {
    let mut h = harness("retire", 30, WAVES, &[]);
    h.converged_at_head().await;
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    loop {
        h.controller.turn(false).await.unwrap();
        if h.controller
            .engine()
            .rollout()
            .is_some_and(|r| r.commit() == next && h.controller.engine().busy())
        {
            break;
        }
    }
    let control = h.controller.control();
    control.retire();
    for _ in 0..10_000 {
        if control.stopping() {
            break;
        }
        h.controller.turn(false).await.unwrap();
    }
    assert!(
        control.stopping(),
        "the loop stops once its rollout is over: {}",
        h.lines.text()
    );
    let history = &h.controller.record().history;
    assert_eq!(history[0].commit, next);
    assert_eq!(history[0].outcome, "Superseded");
    let text = h.lines.text();
    assert!(
        text.contains("spec.source changed during the rollout"),
        "{text}"
    );
    assert!(
        !text.contains("machines/all: starting"),
        "no later wave starts: {text}"
    );
}
