//! Replicas and Fleets side by side: one writer through a kill, a pause and a hand-over; two
//! Fleets in one process, where a trip of one spares the other.

use super::*;

/// Sets the machine-update budget of the repository's policy.
fn set_budget(work: &Path, limit: u32) {
    let path = work.join("policy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("limit: 48", &format!("limit: {limit}"))).unwrap();
}

/// One audited mutating request: when the server received it, from which replica, what.
#[derive(Debug)]
struct Write {
    at: String,
    replica: char,
    what: String,
}

/// The mutating requests of the replicas `endstate-controller/… (<id>)` in the audit log.
fn audited_writes(log: &Path) -> Vec<Write> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut writes: Vec<Write> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter_map(|e| {
            let agent = e["userAgent"].as_str()?;
            let id = agent
                .strip_prefix("endstate-controller/")?
                .split_once(" (")?
                .1;
            let replica = id.strip_suffix(')')?.chars().next()?;
            Some(Write {
                at: e["requestReceivedTimestamp"].as_str()?.to_owned(),
                replica,
                what: format!(
                    "{} {}/{}",
                    e["verb"].as_str()?,
                    e["objectRef"]["resource"].as_str().unwrap_or_default(),
                    e["objectRef"]["name"].as_str().unwrap_or_default()
                ),
            })
        })
        .collect();
    writes.sort_by(|a, b| a.at.cmp(&b.at));
    writes
}

#[test]
fn one_replica_writes_through_a_kill_a_pause_and_a_hand_over() {
    let dir = std::env::temp_dir().join(format!("endstate-ctl-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  verbs: [create, update, patch, delete]\n- level: None\n",
    )
    .unwrap();
    let audit = dir.join("audit.log");
    let server = TestServer::start_with(Options {
        apiserver_args: vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit.display()),
        ],
    });
    let setup = Fleetup::new(
        &server,
        "ctl-failover",
        Faults::none(),
        json!({}),
        json!({}),
    );
    set_budget(&setup.work, 96);
    let first = commit(&setup.work, "A budget for three rollouts");
    let ns = setup.ns.clone();
    let kubeconfig = server.kubeconfig();
    let replica = |id: &str| setup.controller(kubeconfig, id);
    let holder_now = || holder(&lease(&setup.client, &setup.runtime, &ns, "endstate"));

    // a leads and syncs; b stands by with warm caches.
    let mut a = replica("a");
    eventually(Duration::from_secs(30), "a leads", || holder_now() == "a");
    eventually(Duration::from_secs(120), "the initial sync", || {
        setup.good_at(&first)
    });
    let mut b = replica("b");
    eventually(Duration::from_secs(30), "b is ready as a standby", || {
        b.get("/readyz").0 == 200
    });
    assert_eq!(holder_now(), "a");

    // SIGKILL a in the middle of a wave: b takes over once the lease expires and resumes there.
    write_fleet(&setup.work, "agent-2.0");
    set_budget(&setup.work, 96);
    let second = commit(&setup.work, "Upgrade the agent");
    let mut killed_at = 0;
    eventually(
        Duration::from_secs(120),
        "a wave of the upgrade in flight",
        || {
            let status = setup.status();
            match status.rollout {
                Some(r)
                    if r.commit == second
                        && r.wave >= 1
                        && r.phase == "Applying"
                        && r.in_flight.unwrap_or(0) > 0 =>
                {
                    killed_at = r.wave;
                    true
                }
                _ => false,
            }
        },
    );
    a.signal("KILL");
    a.wait(Duration::from_secs(5));
    eventually(Duration::from_secs(60), "b leads", || holder_now() == "b");
    eventually(Duration::from_secs(120), "b completes the upgrade", || {
        assert!(b.alive(), "{}", b.log());
        setup.good_at(&second)
    });
    let b_log = b.log();
    assert!(b_log.contains("resuming the rollout"), "{b_log}");
    for wave in 0..=killed_at {
        let started = format!("wave {} machines/wave-{}: starting", wave + 1, wave + 1);
        assert!(
            !b_log.contains(&started),
            "b started wave {} again: {b_log}",
            wave + 1
        );
    }
    assert_eq!(
        setup.spent("machine-update"),
        48,
        "each change spent once: 24 creates, 24 updates"
    );

    // SIGTERM b with c standing by: b releases the Lease, and c takes it before it would have
    // expired.
    let mut c = replica("c");
    eventually(Duration::from_secs(30), "c is ready as a standby", || {
        c.get("/readyz").0 == 200
    });
    let renewed = lease(&setup.client, &setup.runtime, &ns, "endstate")
        .and_then(|l| l.spec?.renew_time)
        .expect("b renews the Lease");
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(30)), 0, "{}", b.log());
    eventually(Duration::from_secs(30), "c leads", || holder_now() == "c");
    let acquired = lease(&setup.client, &setup.runtime, &ns, "endstate")
        .and_then(|l| l.spec?.acquire_time)
        .unwrap();
    assert!(
        acquired.0 < renewed.0 + Duration::from_secs(6),
        "c took over at {} (released at once), before b's lease (renewed {}) would have expired",
        acquired.0,
        renewed.0
    );

    // SIGSTOP c past its lease: d takes over and rolls out; c, continued, writes nothing more.
    let mut d = replica("d");
    eventually(Duration::from_secs(30), "d is ready as a standby", || {
        d.get("/readyz").0 == 200
    });
    c.signal("STOP");
    eventually(Duration::from_secs(60), "d leads", || holder_now() == "d");
    write_fleet(&setup.work, "agent-3.0");
    set_budget(&setup.work, 96);
    let third = commit(&setup.work, "Upgrade the agent again");
    eventually(
        Duration::from_secs(60),
        "d starts the third rollout",
        || setup.status().rollout.is_some_and(|r| r.commit == third),
    );
    c.signal("CONT");
    assert_eq!(
        c.wait(Duration::from_secs(30)),
        1,
        "c exits once it sees the Lease lost: {}",
        c.log()
    );
    eventually(
        Duration::from_secs(120),
        "d completes the third rollout",
        || {
            assert!(d.alive(), "{}", d.log());
            setup.good_at(&third)
        },
    );

    // The audit log: the writers follow one another, never interleave.
    let writes = audited_writes(&audit);
    let order: String = writes.iter().map(|w| w.replica).collect();
    let mut runs: Vec<char> = order.chars().collect();
    runs.dedup();
    assert_eq!(
        runs,
        vec!['a', 'b', 'c', 'd'],
        "every write comes from the leader of the time: {:#?}",
        writes
            .iter()
            .map(|w| format!("{} {} {}", w.at, w.replica, w.what))
            .collect::<Vec<_>>()
    );
    for replica in ['a', 'b', 'd'] {
        assert!(
            writes
                .iter()
                .any(|w| w.replica == replica && w.what.contains("machines/")),
            "{replica} wrote Machines"
        );
    }
    drop(setup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_fleets_in_one_process_roll_out_independently_and_a_trip_spares_the_other() {
    let server = TestServer::shared();
    let selector = format!("endstate-test=pair-{}", std::process::id());
    let labels = json!({"endstate-test": format!("pair-{}", std::process::id())});
    let healthy = Fleetup::new(
        server,
        "ctl-pair-ok",
        Faults::none(),
        json!({}),
        labels.clone(),
    );
    let faults = Faults::parse(&["package=agent-2.0,rate=1"]).unwrap();
    let broken = Fleetup::new(server, "ctl-pair-bad", faults, json!({}), labels);
    let mut controller = Process::start(
        server.kubeconfig(),
        healthy.dir.join("controller.log"),
        &[
            "--fleet-selector",
            &selector,
            "--lease-namespace",
            &healthy.ns,
            "--lease-name",
            "endstate",
            "--identity",
            "pair",
            "--state-dir",
            healthy.dir.join("state").to_str().unwrap(),
        ],
    );
    eventually(Duration::from_secs(120), "both initial syncs", || {
        assert!(controller.alive(), "{}", controller.log());
        healthy.good_at(&healthy.first) && broken.good_at(&broken.first)
    });
    write_fleet(&healthy.work, "agent-2.0");
    write_fleet(&broken.work, "agent-2.0");
    let good = commit(&healthy.work, "Upgrade the agent");
    let bad = commit(&broken.work, "Upgrade the agent");
    eventually(
        Duration::from_secs(120),
        "the trip of one and the rollout of the other",
        || {
            assert!(controller.alive(), "{}", controller.log());
            let tripped = broken
                .status()
                .breaker
                .is_some_and(|b| b.state == "open" && b.commit.as_deref() == Some(bad.as_str()));
            tripped && healthy.good_at(&good)
        },
    );
    // The broken fleet is restored and its revert pushed; the healthy one never noticed.
    eventually(
        Duration::from_secs(60),
        "the revert of the broken fleet",
        || git(&broken.remote, &["log", "-1", "--format=%s", "main"]).starts_with("Revert"),
    );
    assert!(
        healthy
            .status()
            .breaker
            .is_some_and(|b| b.state == "closed")
    );
    let reasons = broken.event_reasons();
    for reason in ["BreakerTripped", "RevertPushed"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }
    assert!(
        !healthy
            .event_reasons()
            .iter()
            .any(|r| r == "BreakerTripped"),
        "the trip is the other fleet's"
    );
}
