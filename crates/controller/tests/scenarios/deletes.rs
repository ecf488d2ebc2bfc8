//! Deletes: decided on the object as the server has it, refused when they empty an idc,
//! rolled out in waves that wait for finalizers.

use super::*;

/// The live fleet as a cache that has not seen the latest change: `snapshot` and `get` serve a
/// copy taken earlier (of the objects that still exist); `get_fresh` and writes go to the
/// fleet itself.
#[derive(Clone)]
struct StaleCache {
    live: SimLive,
    seen: Arc<Mutex<Vec<FleetObject>>>,
}

impl endstate_rollout::Live for StaleCache {
    async fn snapshot(&self) -> Result<Vec<FleetObject>, endstate_rollout::LiveError> {
        Ok(self.seen.lock().unwrap().clone())
    }
    async fn get(
        &self,
        ids: &[endstate_core::ObjectRef],
    ) -> Result<Vec<Option<FleetObject>>, endstate_rollout::LiveError> {
        // The cache has seen what went since (a watch reports deletions too).
        let now = self.live.get(ids).await?;
        let seen = self.seen.lock().unwrap();
        Ok(ids
            .iter()
            .zip(now)
            .map(|(id, now)| {
                now?;
                seen.iter()
                    .find(|o| o.name() == id.name && o.kind() == id.kind)
                    .cloned()
            })
            .collect())
    }
    async fn get_fresh(
        &self,
        ids: &[endstate_core::ObjectRef],
    ) -> Result<Vec<Option<FleetObject>>, endstate_rollout::LiveError> {
        self.live.get(ids).await
    }
    async fn apply(
        &self,
        objects: &[FleetObject],
    ) -> Vec<Result<endstate_rollout::Applied, endstate_rollout::LiveError>> {
        self.live.apply(objects).await
    }
    async fn delete(
        &self,
        ids: &[endstate_core::ObjectRef],
    ) -> Vec<Result<(), endstate_rollout::LiveError>> {
        self.live.delete(ids).await
    }
    fn changes(&self) -> endstate_rollout::Changes {
        self.live.changes()
    }
    async fn changed(&self) {
        self.live.changed().await
    }
    async fn load_status(
        &self,
    ) -> Result<Option<endstate_api::FleetStatus>, endstate_rollout::LiveError> {
        self.live.load_status().await
    }
    async fn save_status(
        &self,
        status: &endstate_api::FleetStatus,
    ) -> Result<(), endstate_rollout::LiveError> {
        self.live.save_status(status).await
    }
}

/// A prune decided on a cache that has not seen the `prune: disabled` annotation yet is checked
/// against the server before the delete is sent: the annotated object stays.
#[tokio::test]
async fn a_delete_is_decided_on_the_object_as_the_server_has_it() {
    let repo = Repo::new("stale", 6, WAVES);
    let live = SimLive::new(SimFleet::new(SimConfig::new(NS, 3)));
    let lines = Lines::default();
    let mut seed = controller(&repo, &live, &lines, &unique_dir("stale"));
    seed.resume().await.unwrap();
    let head = seed.resolve("main").unwrap();
    let objects = seed.prepare(&head).unwrap();
    live.lock().seed_converged(objects).unwrap();
    seed.adopt(&head).await.unwrap();
    // The cache's copy predates the annotation.
    let stale = StaleCache {
        live: live.clone(),
        seen: Arc::new(Mutex::new(live.lock().snapshot())),
    };
    let mut m = match live.lock().get(&endstate_core::ObjectRef::new(
        endstate_core::Kind::Machine,
        "",
        "m-005",
    )) {
        Some(FleetObject::Machine(m)) => (**m).clone(),
        other => panic!("{other:?}"),
    };
    m.metadata
        .annotations
        .get_or_insert_default()
        .insert("fleet.endstate.dev/prune".into(), "disabled".into());
    live.lock().update(&FleetObject::from(m)).unwrap();
    let machines = std::fs::read_to_string(repo.work.join("base/machines.yaml")).unwrap();
    let kept: Vec<&str> = machines
        .split("---\n")
        .filter(|d| !d.contains("name: m-004") && !d.contains("name: m-005"))
        .collect();
    repo.write("base/machines.yaml", &kept.join("---\n"));
    let pruned = commit_and_push(&repo.work, "Retire m-004 and m-005");

    let source_config = SourceConfig::new(
        format!("file://{}", repo.remote.display()),
        unique_dir("stale-mirror").join("mirror"),
    )
    .branch("main")
    .path("prod");
    let source = Source::open(source_config, History::default()).unwrap();
    let mut config = Config::new("f", NS);
    config.interval = Duration::from_secs(30);
    let mut controller = Controller::new(
        config,
        source,
        None,
        stale,
        SimClock::new(live.clone(), 0.0),
        Box::new(lines.clone()),
    );
    controller.resume().await.unwrap();
    let outcome = controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: pruned },
        "{}",
        lines.text()
    );
    let fleet = live.lock();
    assert!(
        fleet
            .get(&endstate_core::ObjectRef::new(
                endstate_core::Kind::Machine,
                "",
                "m-004"
            ))
            .is_none(),
        "m-004 is pruned"
    );
    assert!(
        fleet
            .get(&endstate_core::ObjectRef::new(
                endstate_core::Kind::Machine,
                "",
                "m-005"
            ))
            .is_some(),
        "m-005 was annotated before the delete: {}",
        lines.text()
    );
    assert!(
        lines.text().contains("not deleting Machine/fleet/m-005"),
        "{}",
        lines.text()
    );
}

/// `base/machines.yaml` without the Machines `keep` says no to.
fn drop_machines(repo: &Repo, keep: impl Fn(&str) -> bool, message: &str) -> String {
    let machines = std::fs::read_to_string(repo.work.join("base/machines.yaml")).unwrap();
    let kept: Vec<&str> = machines.split("---\n").filter(|d| keep(d)).collect();
    repo.write("base/machines.yaml", &kept.join("---\n"));
    commit_and_push(&repo.work, message)
}

fn machines_left(live: &SimLive) -> usize {
    live.lock()
        .snapshot()
        .iter()
        .filter(|o| matches!(o, FleetObject::Machine(_)))
        .count()
}

#[tokio::test]
async fn a_commit_that_empties_an_idc_is_refused_until_the_policy_allows_it() {
    let mut h = harness("mass-delete", 30, WAVES, &[]);
    h.converged_at_head().await;
    let head = drop_machines(&h.repo, |d| !d.contains("idc: idc-c"), "Retire idc-c");
    let outcome = h.controller.run_until_idle().await.unwrap();
    let Outcome::Refused { reason } = &outcome else {
        panic!("{outcome:?}\n{}", h.lines.text());
    };
    assert_eq!(reason.reason(), "MassDelete");
    let message = reason.to_string();
    for part in [
        &head[..10],
        "10 of the 10 live Machines of idc idc-c",
        "10 of the 30 live Machines of the fleet",
        "allowEmpty: true",
    ] {
        assert!(message.contains(part), "no {part:?} in {message}");
    }
    assert_eq!(h.live.lock().counters().deletes, 0);
    assert!(
        h.live
            .lock()
            .snapshot()
            .iter()
            .all(|o| o.meta().deletion_timestamp.is_none()),
        "nothing is written before the refusal"
    );

    // Reviewed in Git: the policy allows it, and the deletes roll out.
    let policy = format!("{WAVES}  prune:\n    allowEmpty: true\n");
    h.repo.write("prod/policy.yaml", &format!("apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n{policy}"));
    let allowed = commit_and_push(&h.repo.work, "Allow emptying idc-c");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: allowed },
        "{}",
        h.lines.text()
    );
    assert_eq!(machines_left(&h.live), 20);
}

#[tokio::test]
async fn deletes_roll_out_in_waves_and_each_waits_for_its_finalizer() {
    let mut h = harness("delete-waves", 30, WAVES, &[]);
    h.converged_at_head().await;
    let before = h.live.lock().now();
    let gone = ["m-003", "m-004", "m-005", "m-006"];
    let head = drop_machines(
        &h.repo,
        |d| !gone.iter().any(|m| d.contains(&format!("name: {m}\n"))),
        "Retire four machines",
    );
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: head },
        "{}",
        h.lines.text()
    );
    let text = h.lines.text();
    assert!(
        text.contains("deletes/canary: starting 1 objects"),
        "{text}"
    );
    assert!(text.contains("deletes/half"), "{text}");
    assert_eq!(machines_left(&h.live), 26);
    assert_eq!(h.live.lock().counters().deletes, 4);
    // The canary's delete was gated on the drain (at least 5 s) and baked 2 minutes before the
    // next wave started.
    assert!(
        h.live.lock().now() >= before + Duration::from_secs(125),
        "{text}"
    );
}

#[tokio::test]
async fn a_delete_stuck_on_its_finalizer_fails_its_gate_and_trips_the_breaker() {
    let repo = Repo::new("delete-stuck", 12, WAVES);
    let operators = endstate_sim::OperatorConfig {
        drain: endstate_sim::Delay::fixed(Duration::from_secs(3600)),
        ..Default::default()
    };
    let live = SimLive::new(SimFleet::new(
        SimConfig::new(NS, 3).with_operators(operators),
    ));
    let lines = Lines::default();
    let mut controller = controller(&repo, &live, &lines, &unique_dir("stuck-mirror"));
    controller.resume().await.unwrap();
    let head = controller.resolve("main").unwrap();
    let objects = controller.prepare(&head).unwrap();
    live.lock().seed_converged(objects).unwrap();
    controller.adopt(&head).await.unwrap();
    drop_machines(&repo, |d| !d.contains("name: m-001\n"), "Retire m-001");
    let outcome = controller.run_until_idle().await.unwrap();
    assert!(
        matches!(outcome, Outcome::Tripped { .. }),
        "{outcome:?}\n{}",
        lines.text()
    );
    let text = lines.text();
    assert!(
        text.contains("Machine/fleet/m-001 failed: not gone within 10m: being deleted, waiting for finalizers fleet.endstate.dev/operator"),
        "{text}"
    );
}
