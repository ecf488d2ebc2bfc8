//! Requests through the Fleet (approve, breaker reset, suspend, resume, a spec change) acted on
//! by a running controller.

use super::*;

#[test]
fn requests_through_the_fleet_act_on_the_running_controller() {
    let server = TestServer::shared();
    let kubeconfig = server.kubeconfig();
    let faults = Faults::parse(&["package=agent-3.0,rate=1"]).unwrap();
    let setup = Fleetup::new(server, "ctl-requests", faults, json!({}), json!({}));
    let ns = setup.ns.clone();
    // The canary holds for approval; another overlay (`other/`) annotates every object.
    let policy = "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n  machines:\n    waves:\n    - size: 1\n      pause: true\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 4\n  clusters:\n    waves:\n    - size: 100%\n  gates:\n    timeout: 60s\n  budgets:\n  - class: machine-update\n    limit: 1000\n    window: 1h\n";
    std::fs::write(setup.work.join("policy.yaml"), policy).unwrap();
    std::fs::create_dir_all(setup.work.join("other")).unwrap();
    std::fs::write(
        setup.work.join("other/kustomization.yaml"),
        "resources:\n- ..\ncommonAnnotations:\n  tier: other\n",
    )
    .unwrap();
    let first = commit(&setup.work, "Hold the canary; another overlay");
    let mut controller = setup.controller(kubeconfig, "requests");
    let paused = || setup.status().rollout.is_some_and(|r| r.phase == "Paused");
    let alive = |controller: &mut Process| assert!(controller.alive(), "{}", controller.log());

    // The canary of the initial sync holds: an approval for another wave is refused, one for
    // it releases the rest.
    eventually(Duration::from_secs(120), "the canary holds", || {
        alive(&mut controller);
        paused()
    });
    let ready = setup.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AwaitingApproval"),
        "{ready:?}"
    );
    let holding = setup.status().rollout.unwrap();
    let (code, out, err) = endstate(kubeconfig, &["approve", "f", "-n", &ns, "--wave", "1"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("not 1"), "{err}");
    assert!(paused(), "a refused approval releases nothing");
    let wave = holding.wave_name.unwrap();
    let (code, out, err) = endstate(kubeconfig, &["approve", "f", "-n", &ns, "--wave", &wave]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(120), "the initial sync", || {
        alive(&mut controller);
        setup.good_at(&first)
    });

    // While the status holds, the transition times do not move (a fetch request saves it).
    let ready = setup.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "InSync")
    );
    let (code, out, err) = endstate(kubeconfig, &["reconcile", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Ready") && out.contains("InSync"), "{out}");
    assert_eq!(
        setup.condition("Ready").unwrap().last_transition_time,
        ready.last_transition_time
    );

    // Suspended: a new commit is not even fetched; resumed: it rolls out, up to its canary,
    // which `kubectl annotate` approves.
    let (code, out, err) = endstate(kubeconfig, &["suspend", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(
        Duration::from_secs(30),
        "the Fleet reports itself suspended",
        || {
            setup
                .condition("Ready")
                .is_some_and(|c| c.reason == "Suspended")
        },
    );
    let upgrade = |agent: &str| {
        // write_fleet writes its own policy: put this test's back.
        write_fleet(&setup.work, agent);
        std::fs::write(setup.work.join("policy.yaml"), policy).unwrap();
    };
    upgrade("agent-2.0");
    let second = commit(&setup.work, "Upgrade the agent");
    std::thread::sleep(Duration::from_secs(5)); // two and a half intervals
    let status = setup.status();
    assert_eq!(status.last_applied_commit.as_deref(), Some(first.as_str()));
    assert!(
        status.rollout.is_none_or(|r| r.commit != second),
        "nothing moves while suspended"
    );
    let (code, out, err) = endstate(kubeconfig, &["resume", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(
        Duration::from_secs(60),
        "the upgrade's canary holds",
        || {
            alive(&mut controller);
            paused() && setup.status().rollout.is_some_and(|r| r.commit == second)
        },
    );
    // An approval for a wave that does not hold is refused by the controller itself.
    let annotate = |args: &[&str]| {
        let (code, out, err) = kubectl(
            kubeconfig,
            &[&["annotate", "fleet", "f", "-n", &ns, "--overwrite"], args].concat(),
        );
        assert_eq!(code, 0, "{out}{err}");
    };
    annotate(&[
        "fleet.endstate.dev/approve-requested-at=by-hand-0",
        "fleet.endstate.dev/approve-wave=machines/wave-9",
    ]);
    eventually(Duration::from_secs(30), "the refusal recorded", || {
        setup.status().last_handled_approve_at.as_deref() == Some("by-hand-0")
    });
    assert!(paused(), "an approval of another wave releases nothing");
    annotate(&[
        "fleet.endstate.dev/approve-requested-at=by-hand-1",
        "fleet.endstate.dev/approve-wave-",
    ]);
    eventually(Duration::from_secs(120), "the upgrade", || {
        alive(&mut controller);
        setup.good_at(&second)
    });
    assert_eq!(
        setup.status().last_handled_approve_at.as_deref(),
        Some("by-hand-1")
    );

    // A failing upgrade trips the breaker; `endstate breaker reset` shows why, then closes it.
    upgrade("agent-3.0");
    let third = commit(&setup.work, "Upgrade to a broken agent");
    eventually(Duration::from_secs(120), "the trip", || {
        alive(&mut controller);
        setup
            .status()
            .breaker
            .is_some_and(|b| b.state == "open" && b.commit.as_deref() == Some(third.as_str()))
    });
    let ready = setup.condition("Ready").unwrap();
    assert_eq!(ready.reason, "BreakerOpen", "{ready:?}");
    let (code, out, err) = endstate(kubeconfig, &["status", "f", "-n", &ns]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("BREAKER OPEN") && out.contains("quarantined"),
        "{out}"
    );
    let (code, out, err) = endstate(kubeconfig, &["breaker", "reset", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("the evidence") && out.contains("breaker closed"),
        "{out}"
    );
    assert_eq!(setup.status().breaker.unwrap().state, "closed");

    // A new path in the spec takes effect without a restart.
    setup.patch_spec(json!({"source": {"path": "other"}}));
    eventually(
        Duration::from_secs(60),
        "the other overlay's canary holds",
        || {
            alive(&mut controller);
            paused()
        },
    );
    let (code, out, err) = endstate(kubeconfig, &["approve", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    let machines: Api<endstate_api::Machine> = Api::namespaced(setup.client.clone(), &ns);
    eventually(
        Duration::from_secs(120),
        "every Machine annotated by the other overlay",
        || {
            alive(&mut controller);
            let list = setup
                .runtime
                .block_on(machines.list(&Default::default()))
                .unwrap()
                .items;
            list.len() == 24
                && list.iter().all(|m| {
                    m.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("tier"))
                        .map(String::as_str)
                        == Some("other")
                })
        },
    );
    let generation = setup.fleet().metadata.generation;
    eventually(
        Duration::from_secs(30),
        "observedGeneration follows the spec",
        || setup.status().observed_generation == generation,
    );
    let reasons = setup.event_reasons();
    for reason in [
        "AwaitingApproval",
        "Approved",
        "ApprovalRefused",
        "Suspended",
        "Resumed",
        "BreakerTripped",
        "BreakerReset",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }
}
