//! The plan's orders, ops and waves, by example.

use std::time::Duration;

use endstate_api::{Machine, MachinePackageVersion};

use super::*;
use endstate_core::policy::{Amount, WaveSpec};

fn machine(name: &str, idc: &str, kubelet: &str) -> FleetObject {
    Machine::test(name)
        .in_cluster("c")
        .ip("10.0.0.1")
        .hostname(name)
        .idc(idc)
        .package("kubelet", kubelet)
        .namespace("ns")
        .label(endstate_api::labels::OWNER_LABEL, "f")
        .build()
        .into()
}

fn fleet(n: usize, kubelet: &str) -> Vec<FleetObject> {
    (0..n)
        .map(|i| machine(&format!("m-{i:02}"), ["a", "b", "c"][i % 3], kubelet))
        .collect()
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.machines.spread_by = Some("idc".into());
    p.machines.waves = [
        Amount::Count(1),
        Amount::Percent(50.0),
        Amount::Percent(100.0),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, size)| WaveSpec {
        name: Some(format!("w{i}")),
        size,
        bake: Duration::ZERO,
        pause: false,
    })
    .collect();
    p
}

/// With two changes the default waves `1`, `5%`, `25%`, `100%` run only the first and
/// the last: they are `canary` and `wave-2`, the second wave that runs.
#[test]
fn unnamed_waves_are_numbered_among_the_waves_that_run() {
    let policy = Policy::default();
    let plan = Plan::new(Inputs {
        desired: &fleet(2, "k2"),
        base: None,
        live: &fleet(2, "k1"),
        fleet: &FleetId::new("ns", "f"),
        policy: &policy,
        orphans: None,
    });
    let names: Vec<String> = plan.stages(&policy).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["machines/canary", "machines/wave-2"]);

    // A name the policy gives is kept as it is, even the one its place would give it.
    let mut named = Policy::default();
    named.machines.waves.truncate(2);
    named.machines.waves.push(WaveSpec {
        name: Some("wave-3".into()),
        size: Amount::Percent(100.0),
        bake: Duration::ZERO,
        pause: false,
    });
    let names: Vec<String> = plan.stages(&named).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["machines/canary", "machines/wave-3"]);
}

fn package(name: &str, risk: Option<Risk>) -> FleetObject {
    MachinePackageVersion::test(name)
        .package_name("kubelet")
        .version(name)
        .url(format!("https://example.internal/{name}.rpm"))
        .risk(risk)
        .namespace("ns")
        .build()
        .into()
}

/// A Machine moving to a `risk: high` package version is planned as a reinstall: its
/// sequence and its budget class; one that stays on it, or moves to a low-risk one, is not.
#[test]
fn a_move_to_a_high_risk_package_version_is_planned_with_the_reinstalls() {
    let mut desired = fleet(6, "k1");
    for m in desired.iter_mut().take(2) {
        if let FleetObject::Machine(m) = m {
            *Arc::make_mut(m).spec.packages.get_mut("kubelet").unwrap() = "k2".into();
        }
    }
    if let FleetObject::Machine(m) = &mut desired[2] {
        *Arc::make_mut(m).spec.packages.get_mut("kubelet").unwrap() = "k3".into();
    }
    let live = fleet(6, "k1");
    desired.push(package("k1", None));
    desired.push(package("k2", Some(Risk::High)));
    desired.push(package("k3", Some(Risk::Low)));
    let plan = Plan::new(Inputs {
        desired: &desired,
        base: None,
        live: &live,
        fleet: &FleetId::new("ns", "f"),
        policy: &policy(),
        orphans: None,
    });
    let machine_changes: Vec<(Seq, String, Op)> = plan
        .changes()
        .filter(|(seq, _, _)| *seq != Seq::Packages)
        .map(|(seq, id, op)| (seq, id.name.clone(), op))
        .collect();
    assert_eq!(
        machine_changes,
        vec![
            (Seq::Machines, "m-02".to_owned(), Op::Update),
            (Seq::Reinstalls, "m-00".to_owned(), Op::Reinstall),
            (Seq::Reinstalls, "m-01".to_owned(), Op::Reinstall),
        ]
    );
    assert_eq!(
        class(Kind::Machine, Op::Reinstall),
        Some(BudgetClass::MachineReinstall)
    );
    // Once there, the Machine's next low-risk change is an update again.
    let there = desired[..6].to_vec();
    let mut next = there.clone();
    if let FleetObject::Machine(m) = &mut next[0] {
        Arc::make_mut(m).spec.unschedulable = Some(true);
    }
    next.extend(desired[6..].iter().cloned());
    let plan = Plan::new(Inputs {
        desired: &next,
        base: None,
        live: &there,
        fleet: &FleetId::new("ns", "f"),
        policy: &policy(),
        orphans: None,
    });
    assert_eq!(plan.count(Op::Update), 1);
    assert_eq!(plan.count(Op::Reinstall), 0);
}

#[test]
fn the_order_does_not_depend_on_live_and_waves_cut_the_changes() {
    let desired = fleet(12, "k2");
    let mut live = fleet(12, "k1");
    // Half of the fleet is at the commit already.
    for object in live.iter_mut().skip(6) {
        *object = desired[desired.iter().position(|d| d.id() == object.id()).unwrap()].clone();
    }
    let inputs = |live: &[FleetObject]| {
        Plan::new(Inputs {
            desired: &desired,
            base: None,
            live,
            fleet: &FleetId::new("ns", "f"),
            policy: &policy(),
            orphans: None,
        })
    };
    let plan = inputs(&live);
    let fresh = inputs(&[]);
    let order = |p: &Plan| p.order(Universe::Machines).ids.clone();
    assert_eq!(order(&plan), order(&fresh));
    // Round robin over idcs.
    let idcs: Vec<String> = order(&plan)
        .iter()
        .map(|id| {
            let o = desired.iter().find(|d| d.id() == *id).unwrap();
            domain(o, "idc")
        })
        .collect();
    assert_eq!(&idcs[..4], ["a", "b", "c", "a"]);
    assert_eq!(plan.count(Op::Update), 6);
    assert_eq!(fresh.count(Op::Create), 12);
    let stages = plan.stages(&policy());
    let sizes: Vec<u32> = stages.iter().map(|s| s.size).collect();
    assert_eq!(sizes, [1, 2, 3]);
    // The ranges cover the whole order, and each holds its size in changes.
    assert_eq!(stages[0].start, 0);
    assert_eq!(stages.last().unwrap().end, 12);
    for pair in stages.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    for stage in &stages {
        let n = (stage.start..stage.end)
            .filter(|p| plan.op(stage.seq, *p).is_some())
            .count();
        assert_eq!(n as u32, stage.size, "{stage:?}");
    }
}

#[test]
fn deletes_come_from_the_base_and_orphans_are_bounded() {
    let base = fleet(6, "k1");
    let desired = fleet(3, "k1");
    let mut live = base.clone();
    let mut orphan = machine("zz-orphan", "a", "k1");
    orphan.meta_mut().name = Some("zz-orphan".into());
    live.push(orphan);
    let plan = Plan::new(Inputs {
        desired: &desired,
        base: Some(&base),
        live: &live,
        fleet: &FleetId::new("ns", "f"),
        policy: &policy(),
        orphans: None,
    });
    let deletes: Vec<&str> = plan
        .changes()
        .filter(|(_, _, op)| *op == Op::Delete)
        .map(|(_, id, _)| id.name.as_str())
        .collect();
    assert_eq!(deletes, ["m-03", "m-04", "m-05", "zz-orphan"]);
    assert_eq!(plan.orphans.len(), 1);
    // On resume, one deleted meanwhile: its position stays and it is skipped.
    live.retain(|o| o.name() != "m-04");
    let resumed = Plan::new(Inputs {
        desired: &desired,
        base: Some(&base),
        live: &live,
        fleet: &FleetId::new("ns", "f"),
        policy: &policy(),
        orphans: Some(&plan.orphans),
    });
    assert_eq!(
        resumed.order(Universe::Deletes).ids,
        plan.order(Universe::Deletes).ids
    );
    assert_eq!(resumed.op(Seq::Deletes, 1), None);
    assert_eq!(resumed.op(Seq::Deletes, 3), Some(Op::Delete));
}

/// Objects labelled as another Fleet's are neither written nor deleted: they are counted per
/// owner and the first are named. The same package version, whoever wrote it, will do; one
/// with another spec is another Fleet's like any object. Handed over, an object is written.
#[test]
fn another_fleets_objects_are_held_and_named_unless_handed_over() {
    let theirs = |mut o: FleetObject| {
        o.meta_mut()
            .labels
            .get_or_insert_default()
            .insert(endstate_api::labels::OWNER_LABEL.into(), "g".into());
        o
    };
    // g's Machines m-00..m-02 on k1 and its package version k1; f wants k2 and k1.
    let mut live: Vec<FleetObject> = fleet(3, "k1").into_iter().map(theirs).collect();
    live.push(theirs(package("k1", None)));
    live.push(theirs(package("k2", Some(Risk::Low))));
    let mut desired = fleet(4, "k2");
    desired.push(package("k1", None));
    desired.push(package("k2", None));
    // m-02 is handed over to f.
    live[2]
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(
            endstate_api::labels::TRANSFER_ANNOTATION.into(),
            "ns/f".into(),
        );
    let f = FleetId::new("ns", "f");
    let plan = Plan::new(Inputs {
        desired: &desired,
        base: Some(&desired),
        live: &live,
        fleet: &f,
        policy: &policy(),
        orphans: None,
    });
    let changes: Vec<(Seq, String, Op)> = plan
        .changes()
        .map(|(seq, id, op)| (seq, id.name.clone(), op))
        .collect();
    assert_eq!(
        changes,
        [
            (Seq::Machines, "m-02".to_owned(), Op::Update),
            (Seq::Machines, "m-03".to_owned(), Op::Create),
        ],
        "k1 is the same, k2 is refused, m-00 and m-01 are g's"
    );
    assert_eq!(plan.foreign.len(), 1);
    let foreign = &plan.foreign[0];
    assert_eq!(foreign.owner, FleetId::new("ns", "g"));
    assert_eq!(foreign.count, 3);
    let named: Vec<String> = foreign.named.iter().map(ToString::to_string).collect();
    assert_eq!(
        named,
        [
            "MachinePackageVersion/ns/k2",
            "Machine/ns/m-00",
            "Machine/ns/m-01"
        ]
    );
    assert!(
        foreign
            .to_string()
            .starts_with("3 objects owned by Fleet ns/g: "),
        "{foreign}"
    );
    // Nothing of g's is deleted by f, even what f's base had and its head drops.
    let plan = Plan::new(Inputs {
        desired: &[],
        base: Some(&desired),
        live: &live,
        fleet: &f,
        policy: &policy(),
        orphans: None,
    });
    assert_eq!(plan.count(Op::Delete), 0);
    assert!(plan.foreign.is_empty());
}

/// A package version placed in two business clusters is two objects: each copy is compared
/// with the copy in its own cluster, and only the missing one is created.
#[test]
fn a_package_version_in_each_business_cluster_is_its_own_object() {
    let placed = |cluster: &str| {
        let mut p = package("k2", None);
        p.meta_mut()
            .labels
            .get_or_insert_default()
            .insert(endstate_api::labels::CLUSTER_LABEL.into(), cluster.into());
        p
    };
    let desired = [placed("a"), placed("b")];
    let plan = Plan::new(Inputs {
        desired: &desired,
        base: None,
        live: &desired[..1],
        fleet: &FleetId::new("ns", "f"),
        policy: &policy(),
        orphans: None,
    });
    let changes: Vec<(String, Op)> = plan
        .changes()
        .map(|(_, id, op)| (id.to_string(), op))
        .collect();
    assert_eq!(
        changes,
        [("MachinePackageVersion/ns/k2@b".to_owned(), Op::Create)]
    );
}
