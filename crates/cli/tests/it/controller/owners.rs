//! Two Fleets that name the same objects: the first keeps them, the second refuses them
//! (`OwnedByAnotherFleet`) and writes nothing of theirs, until an object is handed over.

use std::collections::BTreeMap;

use endstate_api::Machine;
use endstate_api::labels::{OWNER_LABEL, TRANSFER_ANNOTATION};

use super::*;

/// Fleets `f` and `g` in one namespace, from two repositories whose Machines differ only in
/// their agent, both `Ready=True InSync` while Machines flipped between the two versions every
/// few seconds, with no Event and no log line. Now `g` holds: it names `f` and the objects,
/// no Machine's generation moves, and an object annotated to go to `g` moves once.
#[test]
fn a_second_fleet_refuses_the_first_fleets_objects_until_one_is_handed_over() {
    let server = TestServer::shared();
    let kubeconfig = server.kubeconfig();
    let setup = Fleetup::new(
        server,
        "ctl-owners",
        Faults::default(),
        json!({}),
        json!({}),
    );
    let ns = setup.ns.clone();
    let controller = setup.controller(kubeconfig, "owners");
    eventually_or(
        Duration::from_secs(120),
        "f is good at its first commit",
        || setup.good_at(&setup.first),
        || controller.log(),
    );

    // The same objects from another repository, the Machines on another agent.
    let (dir, remote, work) = remote_and_clone("ctl-owners-g");
    crate::kill::write_fleet(&work, "agent-2.0");
    commit(&work, "The same fleet on agent 2.0");
    let g: Fleet = serde_json::from_value(json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
        "metadata": {"name": "g", "namespace": ns},
        "spec": {
            "source": {"url": format!("file://{}", remote.display()), "branch": "main", "interval": "2s"},
            "revert": {"authorName": "endstate", "authorEmail": "endstate@example.com"}
        },
    }))
    .unwrap();
    setup
        .runtime
        .block_on(setup.fleets().create(&PostParams::default(), &g))
        .unwrap();
    let condition = |fleet: &str, type_: &str| {
        setup
            .runtime
            .block_on(setup.fleets().get(fleet))
            .unwrap()
            .status
            .unwrap_or_default()
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == type_)
    };
    eventually_or(
        Duration::from_secs(60),
        "g reports the objects f owns",
        || condition("g", "Ready").is_some_and(|c| c.reason == "OwnedByAnotherFleet"),
        || format!("{:?}\n{}", condition("g", "Ready"), controller.log()),
    );
    let ready = condition("g", "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&format!("Fleet {ns}/f"))
            && ready.message.contains(&format!("Machine/{ns}/m-000")),
        "{}",
        ready.message
    );
    assert!(
        setup
            .event_reasons()
            .iter()
            .any(|r| r == "OwnedByAnotherFleet"),
        "{:?}",
        setup.event_reasons()
    );

    // Several reconciles of both later, nothing of f's has moved.
    let machines = || -> BTreeMap<String, (i64, String, String)> {
        setup
            .runtime
            .block_on(
                Api::<Machine>::namespaced(setup.client.clone(), &ns).list(&Default::default()),
            )
            .unwrap()
            .items
            .into_iter()
            .map(|m| {
                let owner = m.metadata.labels.clone().unwrap_or_default()[OWNER_LABEL].clone();
                (
                    m.metadata.name.clone().unwrap(),
                    (
                        m.metadata.generation.unwrap(),
                        owner,
                        m.spec.packages["agent"].clone(),
                    ),
                )
            })
            .collect()
    };
    let before = machines();
    assert_eq!(before.len(), 24);
    assert!(
        before
            .values()
            .all(|(_, owner, agent)| owner == "f" && agent == "agent-1.0"),
        "{before:?}"
    );
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(machines(), before, "{}", controller.log());
    assert!(setup.good_at(&setup.first));

    // Handed over explicitly: m-000 moves to g once, and f leaves it alone.
    let (code, _, err) = kubectl(
        kubeconfig,
        &[
            "annotate",
            "machine",
            "m-000",
            "-n",
            &ns,
            &format!("{TRANSFER_ANNOTATION}={ns}/g"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    eventually_or(
        Duration::from_secs(60),
        "m-000 is g's",
        || {
            let m = &machines()["m-000"];
            m.1 == "g" && m.2 == "agent-2.0"
        },
        || controller.log(),
    );
    eventually_or(
        Duration::from_secs(60),
        "f reports m-000 as g's",
        || {
            condition("f", "Ready").is_some_and(|c| {
                c.reason == "OwnedByAnotherFleet"
                    && c.message.contains(&format!("{ns}/g"))
                    && c.message.contains(&format!("Machine/{ns}/m-000"))
            })
        },
        || format!("{:?}\n{}", condition("f", "Ready"), controller.log()),
    );
    let after = machines();
    assert_eq!(after["m-000"].0, before["m-000"].0 + 1, "{after:?}");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(machines(), after, "{}", controller.log());
    let _ = std::fs::remove_dir_all(dir);
}
