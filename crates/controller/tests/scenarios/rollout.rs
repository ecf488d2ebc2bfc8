//! Rollouts end to end: waves, a trip and its revert, a slow idc, the budget, stale status,
//! a commit mid-bake, a restart, metric gates.

use super::*;

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
