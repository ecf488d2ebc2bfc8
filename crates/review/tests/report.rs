//! The report of a change to the example repository (`examples/repo-layout`), in each format,
//! against committed snapshots: any change to what `endstate plan` prints shows up here.
//! Update them with `cargo insta review` (or `INSTA_UPDATE=always cargo test`) and read the
//! diff before committing it.

use endstate_api::labels::OWNER_LABEL;
use endstate_core::policy::Policy;
use endstate_core::{DirTree, FleetObject, Options, Owner};
use endstate_review::{Against, Facts, PlanReport, Risk, Subject};
use endstate_rollout::Time;
use endstate_rollout::budget::Budgets;

/// The example's production overlay: its objects, and its policy taken out.
fn example() -> (Vec<FleetObject>, Policy) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/repo-layout");
    let tree = DirTree::open(std::path::Path::new(root)).expect("the example repository");
    let owner = Owner {
        namespace: "fleet-prod".to_owned(),
        labels: vec![(OWNER_LABEL.to_owned(), "plan".to_owned())],
    };
    let rendered = endstate_core::render(&tree, "overlays/prod", Options::owned_by(owner))
        .expect("the example renders");
    let mut policy = Policy::default();
    let mut objects = Vec::new();
    for r in rendered.objects {
        match r.object {
            FleetObject::RolloutPolicy(p) => {
                policy = Policy::resolve(&p.spec).expect("the example's policy resolves")
            }
            object => objects.push(object),
        }
    }
    (objects, policy)
}

/// The head: the payments Machines move to kubelet 1.28.4, and the last two search Machines
/// are gone.
fn head(base: &[FleetObject]) -> Vec<FleetObject> {
    let mut head: Vec<FleetObject> = base
        .iter()
        .filter(|o| !matches!(o.name(), "search-019" | "search-020"))
        .cloned()
        .collect();
    for object in &mut head {
        if let FleetObject::Machine(m) = object
            && m.spec.cluster == "payments"
        {
            std::sync::Arc::make_mut(m)
                .spec
                .packages
                .insert("kubelet".to_owned(), "kubelet-1.28.4".to_owned());
        }
    }
    head
}

fn report(found: Vec<Risk>) -> PlanReport {
    let (base, _) = example();
    let (objects, policy) = example();
    let desired = head(&objects);
    let budgets = Budgets::default();
    let facts = Facts {
        desired: &desired,
        policy: &policy,
        base: Some(&base),
        live: &base,
        fleet: &endstate_core::ownership::FleetId::new("fleet-prod", "plan"),
        budgets: &budgets,
        now: Time::parse_rfc3339("2026-12-01T09:30:00Z").expect("a time"),
        diffs: 3,
    };
    let subject = Subject {
        repo: "https://git.example.internal/fleet.git".to_owned(),
        branch: "feature".to_owned(),
        path: "overlays/prod".to_owned(),
        namespace: "fleet-prod".to_owned(),
        head: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        local: None,
        against: Against::Commit,
        base: Some("89abcdef0123456789abcdef0123456789abcdef".to_owned()),
        fleet: None,
    };
    let plan = endstate_review::plan(&facts);
    endstate_review::review(subject, &facts, &plan, found)
}

#[test]
fn a_change_reads_the_same_in_every_format() {
    let report = report(Vec::new());
    assert!(
        report.summary.updates > 0 && report.summary.deletes == 2,
        "the example's change: {:?}",
        report.summary
    );
    insta::assert_snapshot!("text", endstate_review::render_text(&report));
    insta::assert_snapshot!("markdown", endstate_review::render_markdown(&report));
    insta::assert_snapshot!("json", report.to_json());
}

#[test]
fn a_base_that_does_not_render_is_said_first() {
    let found = vec![Risk::base_invalid(
        "89abcdef0123456789abcdef0123456789abcdef",
        "base/machines/batch.yaml:3: expected a mapping",
        false,
    )];
    let report = report(found);
    insta::assert_snapshot!("base_invalid_text", endstate_review::render_text(&report));
}

#[test]
fn a_refused_head_leads_with_its_refusal() {
    let found = vec![endstate_review::Risk::refusal(
        endstate_review::RiskKind::Quarantined,
        "head 0123456789 carries the quarantined commit 76543210fe without a revert".to_owned(),
        0,
    )];
    let report = report(found);
    assert_eq!(report.outcome, endstate_review::Outcome::Refused);
    insta::assert_snapshot!(
        "refused_markdown",
        endstate_review::render_markdown(&report)
    );
    insta::assert_snapshot!("refused_text", endstate_review::render_text(&report));
}
