//! Scenarios of the whole loop in virtual time: a real Git repository (over file://), the
//! controller, the rollout engine and the simulated fleet.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_controller::{Config, Controller, Outcome, Reporter, SimClock};
use endstate_core::FleetObject;
use endstate_git::{History, RevertConfig, RevertWriter, Source, SourceConfig};
use endstate_rollout::Time;
use endstate_rollout::engine::Phase;
use endstate_sim::{Faults, SimConfig, SimFleet, SimLive};

mod support;

use support::{NS, Repo, commit_and_push, unique_dir};

/// A callback on every reported line.
type Hook = Box<dyn FnMut(&str) + Send>;

/// Keeps the lines; runs a hook on each (to push a commit mid-rollout).
#[derive(Clone, Default)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    hook: Arc<Mutex<Option<Hook>>>,
}

impl Reporter for Lines {
    fn line(&mut self, _now: Time, _commit: Option<&str>, text: &str) {
        self.lines.lock().unwrap().push(text.to_owned());
        if let Some(hook) = self.hook.lock().unwrap().as_mut() {
            hook(text);
        }
    }
}

impl Lines {
    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

struct Harness {
    repo: Repo,
    live: SimLive,
    lines: Lines,
    controller: Controller<SimLive, SimClock>,
}

fn harness(name: &str, machines: usize, policy: &str, faults: &[&str]) -> Harness {
    let repo = Repo::new(name, machines, policy);
    let faults = Faults::parse(faults).unwrap();
    let live = SimLive::new(SimFleet::new(SimConfig::new(NS, 3).with_faults(faults)));
    let lines = Lines::default();
    let controller = controller(&repo, &live, &lines, &unique_dir("mirror"));
    Harness {
        repo,
        live,
        lines,
        controller,
    }
}

fn controller(
    repo: &Repo,
    live: &SimLive,
    lines: &Lines,
    state: &Path,
) -> Controller<SimLive, SimClock> {
    let source_config = SourceConfig::new(
        format!("file://{}", repo.remote.display()),
        state.join("mirror"),
    )
    .branch("main")
    .path("prod");
    let writer = RevertWriter::open(
        &source_config,
        RevertConfig::new("f", "endstate", "endstate@example.com"),
    )
    .unwrap();
    let source = Source::open(source_config, History::default()).unwrap();
    let mut config = Config::new("f", NS);
    config.interval = Duration::from_secs(30);
    Controller::new(
        config,
        source,
        Some(writer),
        live.clone(),
        SimClock::new(live.clone(), 0.0),
        Box::new(lines.clone()),
    )
}

impl Harness {
    /// Starts the fleet converged at the branch head.
    async fn converged_at_head(&mut self) -> String {
        self.controller.resume().await.unwrap();
        let head = self.controller.resolve("main").unwrap();
        let objects = self.controller.prepare(&head).unwrap();
        self.live.lock().seed_converged(objects).unwrap();
        self.controller.adopt(&head).await.unwrap();
        head
    }

    fn agents(&self) -> Vec<(String, String)> {
        self.live
            .lock()
            .snapshot()
            .into_iter()
            .filter_map(|o| match o {
                FleetObject::Machine(m) => {
                    let running = m
                        .status
                        .as_ref()
                        .and_then(|s| s.versions.as_ref())
                        .and_then(|v| v.get("agent").cloned())
                        .unwrap_or_default();
                    Some((m.spec.packages["agent"].clone(), running))
                }
                _ => None,
            })
            .collect()
    }
}

const WAVES: &str = "  machines:\n    waves:\n    - name: canary\n      size: 1\n      bake: 2m\n    - name: half\n      size: 50%\n      bake: 2m\n    - name: all\n      size: 100%\n    spreadBy: idc\n    maxUnavailable: 3\n  gates:\n    timeout: 10m\n";

#[tokio::test]
async fn a_good_rollout_completes_wave_by_wave() {
    let mut h = harness("good", 30, WAVES, &[]);
    h.converged_at_head().await;
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: next.clone()
        }
    );
    assert!(
        h.agents()
            .iter()
            .all(|(want, run)| want == "agent-2.0" && run == "agent-2.0"),
        "{:?}",
        h.agents()
    );
    let text = h.lines.text();
    let waves: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": done (0 failed)"))
        .collect();
    assert_eq!(waves.len(), 3, "{text}");
    assert!(
        waves[0].contains("machines/canary") && waves[2].contains("machines/all"),
        "{text}"
    );
    assert_eq!(
        h.controller.record().last_good.as_deref(),
        Some(next.as_str())
    );
    assert!(h.controller.engine().breaker().is_none());
    // The next reconcile writes nothing.
    let writes = h.live.lock().counters().writes();
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(outcome, Outcome::Converged { commit: next });
    assert_eq!(
        h.live.lock().counters().writes(),
        writes,
        "a no-op reconcile wrote"
    );
}

#[tokio::test]
async fn a_bad_package_trips_in_the_canary_restores_and_reverts() {
    let mut h = harness("bad", 30, WAVES, &["package=agent-3.0,rate=1"]);
    let good = h.converged_at_head().await;
    let bad = h.repo.set_agent("agent-3.0", "Upgrade the agent to 3.0");
    let outcome = h.controller.run_until_idle().await.unwrap();
    let Outcome::Tripped { commit, revert } = outcome else {
        panic!("{outcome:?}\n{}", h.lines.text())
    };
    assert_eq!(commit, bad);
    assert!(revert.contains("revert pushed"), "{revert}");
    let engine = h.controller.engine();
    let trip = engine.breaker().unwrap();
    assert_eq!(
        trip.evidence.stage, "machines/canary",
        "{:?}",
        trip.evidence
    );
    assert_eq!(trip.evidence.stage_failures, (1, 1));
    assert!(engine.quarantined(&bad));
    // Every machine wants and runs the good version again.
    assert!(
        h.agents()
            .iter()
            .all(|(want, run)| want == "agent-1.0" && run == "agent-1.0"),
        "{:?}",
        h.agents()
    );
    // The remote's head is the revert, with its trailers, and its tree is the good commit's.
    let remote = git2::Repository::open_bare(&h.repo.remote).unwrap();
    let head = remote
        .find_commit(remote.refname_to_id("refs/heads/main").unwrap())
        .unwrap();
    let message = head.message().unwrap();
    assert!(
        message.contains(&format!("Endstate-Revert-Of: {bad}")),
        "{message}"
    );
    assert!(message.contains("Endstate-Fleet: f"), "{message}");
    let good_tree = remote
        .find_commit(git2::Oid::from_str(&good).unwrap())
        .unwrap()
        .tree_id();
    assert_eq!(head.tree_id(), good_tree);
    assert_eq!(
        h.controller.record().last_applied.as_deref(),
        Some(head.id().to_string().as_str())
    );
}

#[tokio::test]
async fn a_slow_idc_waits_instead_of_failing() {
    // Operations in idc-b take 6 more minutes, within the 10 minute gate; with one machine in
    // flight at a time, the rollout waits for them rather than failing.
    let policy = "  machines:\n    waves:\n    - size: 1\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 1\n  gates:\n    timeout: 10m\n";
    let mut h = harness("slow", 9, policy, &["idc=idc-b,delay=6m"]);
    h.converged_at_head().await;
    let start = h.live.lock().now();
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: next },
        "{}",
        h.lines.text()
    );
    let text = h.lines.text();
    assert!(!text.contains("failed:"), "{text}");
    // Nine machines one at a time take at most 9 × 95 s without the fault; the three in idc-b
    // alone take at least 3 × 6 min with it: the rollout waited for the slow idc.
    let took = h.live.lock().now().since(start);
    assert!(took >= Duration::from_secs(18 * 60), "took {took:?}");
}

#[tokio::test]
async fn an_exhausted_budget_holds_the_rollout_until_its_window_slides() {
    let policy = "  machines:\n    waves:\n    - size: 1\n    - size: 100%\n    maxUnavailable: 3\n  gates:\n    timeout: 10m\n  budgets:\n  - class: machine-update\n    limit: 4\n    window: 30m\n";
    let mut h = harness("budget", 9, policy, &[]);
    h.converged_at_head().await;
    let start = h.live.lock().now();
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: next },
        "{}",
        h.lines.text()
    );
    let text = h.lines.text();
    assert!(!text.contains("failed:"), "{text}");
    assert!(
        text.contains("budget machine-update is spent until"),
        "the budget made the rollout wait: {text}"
    );
    // 9 updates with 4 per 30 minutes: at least two full windows.
    let took = h.live.lock().now().since(start);
    assert!(took >= Duration::from_secs(60 * 60), "took {took:?}");
}

#[tokio::test]
async fn a_stale_healthy_status_does_not_pass_the_gate() {
    // m-000 never reports again: its status stays Running and healthy, but for the previous
    // generation. The gate must not count it, so it times out and trips the breaker.
    let mut h = harness("stale", 6, WAVES, &["machine=m-000,silent"]);
    h.converged_at_head().await;
    let bad = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = h.controller.run_until_idle().await.unwrap();
    let Outcome::Tripped { commit, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(commit, bad);
    let trip = h.controller.engine().breaker().cloned().unwrap();
    let (what, why) = &trip.evidence.failed[0];
    assert!(what.ends_with("m-000"), "{what}");
    assert!(
        why.contains("not healthy for generation 2 within 10m"),
        "{why}"
    );
    assert!(why.contains("status is for generation 1"), "{why}");
}

#[tokio::test]
async fn a_commit_during_a_bake_replans_after_the_wave() {
    let mut h = harness("replan", 12, WAVES, &[]);
    h.converged_at_head().await;
    let second = h.repo.set_agent("agent-2.0", "Upgrade the agent to 2.0");
    // When the canary settles (and starts baking), someone pushes agent 3.0.
    let work = h.repo.work.clone();
    let pushed = Arc::new(Mutex::new(None));
    let slot = pushed.clone();
    *h.lines.hook.lock().unwrap() = Some(Box::new(move |line: &str| {
        if line.contains("wave 1 machines/canary: done") && slot.lock().unwrap().is_none() {
            std::fs::write(
                work.join("prod/kustomization.yaml"),
                support::overlay("agent-3.0"),
            )
            .unwrap();
            *slot.lock().unwrap() = Some(commit_and_push(&work, "Upgrade the agent to 3.0"));
        }
    }));
    let outcome = h.controller.run_until_idle().await.unwrap();
    let third = pushed.lock().unwrap().clone().expect("the hook pushed");
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: third.clone()
        },
        "{}",
        h.lines.text()
    );
    let history = &h.controller.record().history;
    assert_eq!(history[0].commit, third);
    assert_eq!(history[0].outcome, "Succeeded");
    assert_eq!(history[1].commit, second);
    assert_eq!(history[1].outcome, "Superseded");
    assert!(
        h.agents()
            .iter()
            .all(|(want, run)| want == "agent-3.0" && run == "agent-3.0")
    );
    let text = h.lines.text();
    // The second commit stopped after the wave in flight: it never reached `all`.
    let before_third = text.split("superseded by").next().unwrap();
    assert!(!before_third.contains("machines/all"), "{text}");
}

#[tokio::test]
async fn a_restarted_controller_resumes_at_the_persisted_wave() {
    let mut h = harness("resume", 30, WAVES, &[]);
    h.converged_at_head().await;
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    // Turn the loop until the `half` wave is under way, then drop the controller as a kill
    // would: nothing but the persisted status survives.
    loop {
        h.controller.turn(true).await.unwrap();
        if let Some(r) = h.controller.engine().rollout()
            && r.commit() == next
            && r.stage_index() == 1
            && r.cursor() > r.stage().unwrap().start
            && *r.phase() == Phase::Running
        {
            break;
        }
    }
    let before = h.controller.engine().to_json();
    let started_before = h.controller.engine().rollout().unwrap().cursor();
    let lines = Lines::default();
    let mut restarted = controller(&h.repo, &h.live, &lines, &unique_dir("mirror2"));
    restarted.resume().await.unwrap();
    assert_eq!(
        restarted.engine().rollout().unwrap().stage_index(),
        1,
        "the persisted state is the state"
    );
    assert_eq!(before["rollout"]["stage"], 1);
    let outcome = restarted.run_until_idle().await.unwrap();
    assert_eq!(outcome, Outcome::Converged { commit: next });
    let text = lines.text();
    assert!(text.contains("resuming the rollout"), "{text}");
    // The canary wave is not run again, and the half wave is not restarted from zero.
    assert!(!text.contains("machines/canary: starting"), "{text}");
    assert!(!text.contains("wave 2 machines/half: starting"), "{text}");
    assert!(started_before > 0);
    assert!(
        h.agents()
            .iter()
            .all(|(want, run)| want == "agent-2.0" && run == "agent-2.0")
    );
}

/// A query API answering every instant query with `value`.
async fn query_api(value: f64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0; 4096];
            let _ = stream.read(&mut buf).await;
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1.0,"{value}"]}}]}}}}"#
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_metric_out_of_bounds_during_a_bake_trips_and_reverts_the_range() {
    let url = query_api(0.25).await;
    let policy = format!(
        "{WAVES}    metrics:\n    - name: error-rate\n      url: {url}\n      query: sum(rate(errors[5m]))\n      max: 0.1\n      interval: 30s\n"
    );
    let mut h = harness("metric", 9, &policy, &[]);
    h.converged_at_head().await;
    let bad = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = h.controller.run_until_idle().await.unwrap();
    let Outcome::Tripped { commit, revert } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(commit, bad);
    assert!(revert.contains("revert pushed"), "{revert}");
    let trip = h.controller.engine().breaker().cloned().unwrap();
    assert_eq!(trip.evidence.stage, "machines/canary");
    assert!(
        trip.evidence
            .threshold
            .to_string()
            .contains("metric error-rate = 0.25 is outside"),
        "{:?}",
        trip.evidence
    );
    // No object is to blame: the whole range is reverted.
    assert!(
        h.lines.text().contains("failure not attributable"),
        "{}",
        h.lines.text()
    );
    assert!(h.agents().iter().all(|(want, _)| want == "agent-1.0"));
}

#[tokio::test]
async fn a_metric_within_bounds_lets_the_rollout_through() {
    let url = query_api(0.01).await;
    let policy = format!(
        "{WAVES}    metrics:\n    - name: error-rate\n      url: {url}\n      query: sum(rate(errors[5m]))\n      max: 0.1\n"
    );
    let mut h = harness("metric-ok", 9, &policy, &[]);
    h.converged_at_head().await;
    let next = h.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = h.controller.run_until_idle().await.unwrap();
    assert_eq!(outcome, Outcome::Converged { commit: next });
}

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
                    .find(|o| o.name() == id.name && o.kind().as_str() == id.kind)
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
    let mut m = match live
        .lock()
        .get(&endstate_core::ObjectRef::new("Machine", "", "m-005"))
    {
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
            .get(&endstate_core::ObjectRef::new("Machine", "", "m-004"))
            .is_none(),
        "m-004 is pruned"
    );
    assert!(
        fleet
            .get(&endstate_core::ObjectRef::new("Machine", "", "m-005"))
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

/// The live Machine `name`.
fn machine(live: &SimLive, name: &str) -> endstate_api::Machine {
    match live
        .lock()
        .get(&endstate_core::ObjectRef::new("Machine", "", name))
    {
        Some(FleetObject::Machine(m)) => (**m).clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// Another client's write to one Machine's spec, as `kubectl patch` would make it.
fn patch_spec(live: &SimLive, name: &str, patch: impl FnOnce(&mut endstate_api::MachineSpec)) {
    let mut m = machine(live, name);
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
    let m = machine(&h.live, "m-000");
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
    let m = machine(&h.live, "m-001");
    assert_eq!(m.spec.hostname, "m-001");
    // The apply that took `hostname` back left m-000's other field alone too.
    let m = machine(&h.live, "m-000");
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
    let m = machine(&h.live, "m-002");
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
