//! When a new Fleet says it is Ready: only once its Machines are live and healthy.

use super::*;

/// A new Fleet said `Ready=True InSync` before anything was fetched, and again at the end of
/// its first rollout in the save before the good commit: `kubectl wait --for=condition=Ready`
/// returned before the fleet was there. Every status update of a new Fleet is watched; Ready
/// turns True only in the update that records the good commit, and `kubectl wait` returns
/// only once every Machine is live and healthy at its spec.
#[test]
fn a_new_fleet_is_ready_only_once_its_machines_are_live_and_healthy() {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let server = TestServer::shared();
    let kubeconfig = server.kubeconfig();
    let setup = Fleetup::new(server, "ctl-ready", Faults::default(), json!({}), json!({}));
    let ns = setup.ns.clone();
    // Every status the Fleet goes through, in order.
    let updates = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let updates = updates.clone();
        let stream = watcher(
            setup.fleets(),
            watcher::Config::default().fields("metadata.name=f"),
        )
        .applied_objects();
        setup.runtime.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(fleet)) = stream.next().await {
                updates
                    .lock()
                    .unwrap()
                    .push(fleet.status.unwrap_or_default());
            }
        })
    };
    let mut wait = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "wait",
            "--for=condition=Ready",
            "fleet/f",
            "-n",
            &ns,
            "--timeout=180s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is required");
    let mut controller = setup.controller(kubeconfig, "ready");
    let deadline = Instant::now() + Duration::from_secs(200);
    let waited = loop {
        if let Some(status) = wait.try_wait().unwrap() {
            break status;
        }
        assert!(controller.alive(), "{}", controller.log());
        assert!(Instant::now() < deadline, "kubectl wait is still waiting");
        std::thread::sleep(Duration::from_millis(20));
    };
    // What kubectl saw as Ready is what is live now: the Fleet at its good commit, and every
    // Machine healthy at its spec.
    let status = setup.status();
    let machines = setup
        .runtime
        .block_on(
            Api::<endstate_api::Machine>::namespaced(setup.client.clone(), &ns)
                .list(&Default::default()),
        )
        .unwrap()
        .items;
    let mut out = String::new();
    wait.stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        waited.success(),
        "kubectl wait: {out}\n{}",
        controller.log()
    );
    assert_eq!(
        status.last_good_commit.as_deref(),
        Some(setup.first.as_str())
    );
    assert_eq!(machines.len(), 24);
    for machine in &machines {
        let live = machine.status.as_ref().expect("a Machine with a status");
        assert_eq!(
            live.observed_generation, machine.metadata.generation,
            "{machine:?}"
        );
        assert_eq!(
            live.phase,
            Some(endstate_api::MachinePhase::Running),
            "{machine:?}"
        );
        assert_eq!(
            live.versions.as_ref(),
            Some(&machine.spec.packages),
            "{machine:?}"
        );
    }
    watch.abort();
    // The Fleet as created, before the controller wrote any status, does not count.
    let updates: Vec<endstate_api::FleetStatus> = updates
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.conditions.is_some())
        .cloned()
        .collect();
    let ready = |s: &endstate_api::FleetStatus| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let first_ready = updates
        .iter()
        .position(|s| ready(s).is_some_and(|(status, _)| status == "True"))
        .expect("a Ready update");
    assert!(first_ready > 0, "the first status is Ready: {updates:#?}");
    assert_eq!(
        updates[first_ready].last_good_commit.as_deref(),
        Some(setup.first.as_str()),
        "Ready=True without the good commit: {:#?}",
        &updates[..=first_ready]
    );
    // Before it: a new Fleet reconciling, then its rollout; never Ready.
    let (status, reason) = ready(&updates[0]).expect("conditions in the first status");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Progressing"),
        "{updates:#?}"
    );
}
