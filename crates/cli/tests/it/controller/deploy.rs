//! Installed with `kubectl apply -k deploy/` and run as the deployed ServiceAccount: a whole
//! rollout, conditions, Events and `/metrics`, and nothing the account may not do.

use super::*;

#[test]
fn the_deployed_service_account_runs_a_rollout_and_may_do_nothing_more() {
    let server = TestServer::shared();
    let admin = server.kubeconfig();
    let (code, out, err) = kubectl(
        admin,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            workspace().join("deploy").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deployment.apps/endstate-controller serverside-applied"),
        "{out}"
    );

    let setup = Fleetup::new(
        server,
        "ctl-rbac",
        Faults::none(),
        json!({"source": {"interval": "1h"}, "webhook": {"secretRef": {"name": "fleet-webhook"}}}),
        json!({}),
    );
    let ns = setup.ns.clone();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "fleet-webhook", "namespace": ns},
        "stringData": {"token": "hook-secret"}
    }))
    .unwrap();
    setup
        .runtime
        .block_on(
            Api::<Secret>::namespaced(setup.client.clone(), &ns)
                .create(&PostParams::default(), &secret),
        )
        .unwrap();

    // The ServiceAccount's identity: a token from the TokenRequest API.
    let token = crate::support::service_account_token(admin, "endstate-system");
    let sa = setup.dir.join("kubeconfig-sa");
    server.write_kubeconfig(&token, &sa).unwrap();
    let can = |args: &[&str]| can_i(&sa, args);
    for allowed in [
        vec!["patch", "machines.fleet.endstate.dev", "-n", &ns],
        vec!["create", "machines.fleet.endstate.dev", "-n", &ns],
        vec![
            "update",
            "fleets.fleet.endstate.dev",
            "--subresource=status",
            "-n",
            &ns,
        ],
        vec!["create", "events.events.k8s.io", "-n", &ns],
        vec![
            "update",
            "leases.coordination.k8s.io/endstate-controller",
            "-n",
            "endstate-system",
        ],
        vec!["get", "secrets/fleet-webhook", "-n", &ns],
    ] {
        assert!(can(&allowed), "the controller needs {allowed:?}");
    }
    for denied in [
        vec!["list", "secrets", "-n", &ns],
        vec!["watch", "secrets", "-n", &ns],
        vec!["delete", "secrets/fleet-webhook", "-n", &ns],
        vec![
            "update",
            "leases.coordination.k8s.io/endstate-controller",
            "-n",
            &ns,
        ],
        vec![
            "update",
            "leases.coordination.k8s.io/other",
            "-n",
            "endstate-system",
        ],
        vec!["create", "pods", "--subresource=exec", "-n", &ns],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
        vec!["bind", "clusterroles.rbac.authorization.k8s.io"],
        vec![
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "-n",
            &ns,
        ],
        vec!["update", "fleets.fleet.endstate.dev", "-n", &ns],
    ] {
        assert!(
            !can(&denied),
            "the controller must not be allowed {denied:?}"
        );
    }

    // The controller as that ServiceAccount: the initial sync, then a push announced by the
    // webhook (the interval is an hour) rolls out.
    let hook_port = free_port();
    let mut controller = Process::start(
        &sa,
        setup.dir.join("controller.log"),
        &[
            "--namespace",
            &ns,
            "--lease-namespace",
            "endstate-system",
            "--lease-name",
            "endstate-controller",
            "--identity",
            "sa-replica",
            "--webhook-listen",
            &format!("127.0.0.1:{hook_port}"),
            "--state-dir",
            setup.dir.join("state").to_str().unwrap(),
        ],
    );
    eventually(Duration::from_secs(120), "the initial sync", || {
        assert!(controller.alive(), "{}", controller.log());
        setup.good_at(&setup.first)
    });
    eventually(Duration::from_secs(20), "readiness", || {
        controller.get("/readyz").0 == 200
    });
    assert_eq!(controller.get("/healthz").0, 200);
    let before = parse_metrics(&controller.get("/metrics").1);

    write_fleet(&setup.work, "agent-2.0");
    let second = commit(&setup.work, "Upgrade the agent");
    let body = format!(r#"{{"ref":"refs/heads/main","commit":"{second}"}}"#);
    let signature =
        endstate_git::webhook::sign(&endstate_git::Secret::new("hook-secret"), body.as_bytes());
    let (status, text) = http(
        &format!("127.0.0.1:{hook_port}"),
        "POST",
        &format!("/hook/{ns}/f"),
        &[
            ("X-Endstate-Signature", &signature),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(status, 202, "{text}");
    let (status, _) = http(
        &format!("127.0.0.1:{hook_port}"),
        "POST",
        &format!("/hook/{ns}/f"),
        &[("X-Endstate-Signature", "sha256=00")],
        body.as_bytes(),
    );
    assert_eq!(status, 401, "a bad signature is refused");
    eventually(Duration::from_secs(120), "the rollout of the push", || {
        assert!(controller.alive(), "{}", controller.log());
        setup.good_at(&second)
    });

    // As an operator reads it.
    let fleet_ref = "fleet/f".to_owned();
    let (code, out, err) = kubectl(
        admin,
        &[
            "wait",
            "--for=condition=Ready",
            &fleet_ref,
            "-n",
            &ns,
            "--timeout=30s",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kubectl(admin, &["get", "fleet", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    for column in ["READY", "REASON", "PHASE", "WAVE", "BREAKER"] {
        assert!(out.contains(column), "{out}");
    }
    assert!(
        out.contains("True") && out.contains("InSync") && out.contains("closed"),
        "{out}"
    );
    let (code, out, err) = kubectl(admin, &["get", "endstate", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fleet.fleet.endstate.dev/f") && out.contains("m-000"),
        "{out}"
    );
    let fleet = setup.fleet();
    let conditions = fleet.status.clone().unwrap().conditions.unwrap();
    for condition in &conditions {
        assert_eq!(
            condition.observed_generation, fleet.metadata.generation,
            "{condition:?}"
        );
    }
    assert_eq!(
        fleet.status.as_ref().unwrap().observed_generation,
        fleet.metadata.generation
    );
    let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "InSync")
    );

    // Events for the waves, and counters that moved during the rollout.
    let reasons = setup.event_reasons();
    for reason in ["WaveStarted", "WaveCompleted", "RolloutCompleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }
    let after = parse_metrics(&controller.get("/metrics").1);
    let fleet_labels = format!("fleet=f,namespace={ns}");
    for name in [
        "endstate_waves_started_total",
        "endstate_waves_completed_total",
        "endstate_reconcile_total",
    ] {
        assert!(
            sample(&after, name, &fleet_labels) > sample(&before, name, &fleet_labels),
            "{name} did not move: {after:?}"
        );
    }
    assert!(
        sample(&after, "endstate_api_writes_total", "verb=apply") >= 48.0,
        "{after:?}"
    );
    assert_eq!(sample(&after, "endstate_leader", ""), 1.0);
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("endstate_budget_remaining{")),
        "{after:?}"
    );

    // SIGTERM: the state saved, the Lease released.
    controller.signal("TERM");
    assert_eq!(
        controller.wait(Duration::from_secs(30)),
        0,
        "{}",
        controller.log()
    );
    let released = lease(
        &setup.client,
        &setup.runtime,
        "endstate-system",
        "endstate-controller",
    );
    assert_eq!(holder(&released), "", "the Lease is released on SIGTERM");
}
