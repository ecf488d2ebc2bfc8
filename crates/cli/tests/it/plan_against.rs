//! `endstate plan` against what the fleet has: a work tree's merge base, a live Fleet's
//! objects, budgets and quarantine, and the refusals it shares with the reconcile loop.

use crate::plan::{branch, clone, drop_last_documents, edit_file, json_plan};
use crate::support::{demo_repo, endstate, outcome};

/// `--local`: the files on disk, uncommitted edits included, against the merge base of the
/// work tree's commit with `main`, read from the work tree's own repository.
#[test]
fn a_work_tree_is_planned_as_it_is_against_its_merge_base() {
    let dir = demo_repo("plan-local");
    let remote = dir.join("remote.git");
    let work = clone(&dir, "dev");
    let merge_base = crate::support::git(&work, &["rev-parse", "main~3"]);
    crate::support::git(&work, &["checkout", "-q", "-b", "feature", "main~3"]);
    // Not committed: one Machine gets another address.
    edit_file(&work, "base/machines/batch.yaml", |t| {
        t.replacen("  ip: 10.2.0.11\n", "  ip: 10.2.0.99\n", 1)
    });
    let local = work.display().to_string();
    let args = [
        "--local",
        &local,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ];
    let (code, report) = json_plan(&args);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["base"], merge_base.trim(), "{report}");
    assert_eq!(report["local"].as_str(), Some(local.as_str()));
    assert_eq!(report["branch"], "working tree");
    assert_eq!(report["summary"]["updates"], 1, "{report}");
    assert_eq!(
        report["diffs"][0]["object"],
        "Machine/fleet-demo/batch-00001"
    );
    // The merge base with a branch of another remote (--repo) is found there too.
    let (code, again) = json_plan(&[
        "--local",
        &local,
        "--repo",
        &format!("file://{}", remote.display()),
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ]);
    assert_eq!((code, &again["base"]), (1, &report["base"]), "{again}");
    // A CI checkout: a detached head, the target only as `origin/main`.
    let ci = clone(&dir, "ci");
    crate::support::git(&ci, &["checkout", "-q", "--detach", "main~1"]);
    crate::support::git(&ci, &["branch", "-q", "-D", "main"]);
    let at = crate::support::git(&ci, &["rev-parse", "HEAD"]);
    let ci_dir = ci.display().to_string();
    let (code, checkout) = json_plan(&[
        "--local",
        &ci_dir,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ]);
    assert_eq!(
        (code, checkout["base"].as_str()),
        (0, Some(at.trim())),
        "{checkout}"
    );
    // The overlay named by the directory, in a linked work tree.
    crate::support::git(&work, &["worktree", "add", "-q", "../linked", "main~3"]);
    let linked = dir.join("linked");
    edit_file(&linked, "base/machines/batch.yaml", |t| {
        t.replacen("  ip: 10.2.0.11\n", "  ip: 10.2.0.98\n", 1)
    });
    let overlay = linked.join("overlays/demo").display().to_string();
    let (code, sub) = json_plan(&["--local", &overlay, "--namespace", "fleet-demo"]);
    assert_eq!(
        (code, sub["path"].as_str(), &sub["summary"]["updates"]),
        (1, Some("overlays/demo"), &serde_json::json!(1)),
        "{sub}"
    );
    // A refusal of the files on disk names them, not the commit they are on.
    edit_file(&linked, "base/machines/batch.yaml", |t| {
        t.split("\n---\n").next().unwrap_or_default().to_owned() + "\n"
    });
    let (code, refused) = json_plan(&["--local", &overlay, "--namespace", "fleet-demo"]);
    assert_eq!(
        (code, refused["risks"][0]["kind"].as_str()),
        (2, Some("MassDelete")),
        "{refused}"
    );
    let message = refused["risks"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the working tree deletes "),
        "{message}"
    );
    // An edit that breaks the work tree: exit 2, with the file and line.
    edit_file(&work, "base/machines/batch.yaml", |t| {
        t.replacen("  cluster: batch", "  clustr: batch", 1)
    });
    let (code, broken) = json_plan(&args);
    assert_eq!(
        (code, broken["outcome"].as_str()),
        (2, Some("Invalid")),
        "{broken}"
    );
    assert_eq!(
        broken["problems"][0]["file"], "base/machines/batch.yaml",
        "{broken}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--live` plans against what the cluster has: a Machine edited behind Git's back is a
/// change there, and nothing between two commits shows it. The Fleet's own budgets (what its
/// first rollout spent) and last applied commit are read from its status.
#[test]
fn live_sees_a_drifted_object_that_the_base_does_not() {
    use kube::api::{Patch, PatchParams};
    let (setup, first) = crate::kill::Setup::new("plan-live");
    let machines = kube::Api::<endstate_api::Machine>::namespaced(setup.client.clone(), &setup.ns);
    setup
        .runtime
        .block_on(machines.patch(
            "m-005",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"packages": {"agent": "agent-3.0"}}})),
        ))
        .unwrap();
    let url = format!("file://{}", setup.dir.join("remote.git").display());
    let kubeconfig = setup.kubeconfig.display().to_string();
    let (code, between) = json_plan(&[
        "--repo",
        &url,
        "--head",
        "main",
        "--base",
        "main",
        "--namespace",
        &setup.ns,
    ]);
    assert_eq!((code, between["outcome"].as_str()), (0, Some("NoChanges")));
    // The repository, branch and path come from the Fleet.
    let (code, live) = json_plan(&[
        "--live",
        "--fleet",
        "f",
        "--namespace",
        &setup.ns,
        "--kubeconfig",
        &kubeconfig,
    ]);
    assert_eq!(code, 1, "{live}");
    assert_eq!(
        (&live["against"], &live["fleet"], live["base"].as_str()),
        (
            &serde_json::json!("Live"),
            &serde_json::json!("f"),
            Some(first.trim())
        ),
        "{live}"
    );
    assert_eq!(live["summary"]["updates"], 1, "{live}");
    assert_eq!(
        live["diffs"][0]["object"],
        format!("Machine/{}/m-005", setup.ns)
    );
    assert!(
        live["diffs"][0]["unified"]
            .as_str()
            .unwrap()
            .contains("-    agent: agent-3.0\n+    agent: agent-1.0"),
        "{live}"
    );
    assert_eq!(live["budgetsAssumedUnspent"], false);
    let budget = &live["budgets"][0];
    assert_eq!(
        (&budget["class"], &budget["spent"], &budget["spends"]),
        (
            &serde_json::json!("machine-update"),
            &serde_json::json!(24),
            &serde_json::json!(1)
        ),
        "the 24 creates of the first rollout count: {live}"
    );
    let (code, text, _) = outcome(&endstate(&[
        "plan",
        "--live",
        "--fleet",
        "f",
        "--namespace",
        &setup.ns,
        "--kubeconfig",
        &kubeconfig,
    ]));
    assert_eq!(code, 1);
    assert!(
        text.starts_with(&format!("plan: live Fleet {}/f → ", setup.ns)),
        "{text}"
    );
    assert!(text.contains("(24 spent already)"), "{text}");
}

/// An empty remote and a repository without a commit end with a clear error, not a crash.
#[test]
fn nothing_to_plan_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("endstate-plan-empty-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    crate::support::git(&dir, &["init", "-q", "--bare", "-b", "main", "empty.git"]);
    crate::support::git(&dir, &["init", "-q", "-b", "main", "unborn"]);
    let url = format!("file://{}", dir.join("empty.git").display());
    let (code, stdout, stderr) = outcome(&endstate(&["plan", "--repo", &url]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    let unborn = dir.join("unborn").display().to_string();
    let (code, _, stderr) = outcome(&endstate(&["plan", "--local", &unborn]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("has no commit yet"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A commit the Fleet's breaker quarantined is refused by a live plan (exit 2) as the
/// controller refuses it; the branch that carries its revert plans cleanly.
#[test]
fn live_refuses_a_quarantined_head_as_the_controller_does() {
    let faults = endstate_sim::Faults::parse(&["package=agent-3.0,rate=1"]).unwrap();
    let (setup, _) = crate::kill::Setup::with_faults("plan-quarantine", faults);
    crate::kill::write_fleet(&setup.work, "agent-3.0");
    let bad = setup.commit("Upgrade the agent to a bad build");
    let mut run = setup.run("trip.log", &[]);
    assert_eq!(
        crate::kill::wait(&mut run, std::time::Duration::from_secs(120)),
        3,
        "tripped: {}",
        setup.log("trip.log")
    );
    let kubeconfig = setup.kubeconfig.display().to_string();
    let live = |head: &str| {
        json_plan(&[
            "--live",
            "--fleet",
            "f",
            "--namespace",
            &setup.ns,
            "--kubeconfig",
            &kubeconfig,
            "--head",
            head,
        ])
    };
    let (code, report) = live(bad.trim());
    assert_eq!(
        (code, report["outcome"].as_str()),
        (2, Some("Refused")),
        "{report}"
    );
    assert_eq!(report["problems"][0]["reason"], "Quarantined", "{report}");
    assert_eq!(report["risks"][0]["refused"], true);
    // main is the revert now: the fleet is back at it, nothing to do, nothing refused.
    let (code, report) = live("main");
    assert_eq!(
        (code, report["outcome"].as_str()),
        (0, Some("NoChanges")),
        "{report}"
    );
}

/// `plan` and the reconcile loop refuse a head through one admission check
/// (`endstate_controller::admit`): the same heads, for the same reasons, in the same words.
#[test]
fn plan_and_the_loop_refuse_the_same_heads_for_the_same_reasons() {
    let dir = demo_repo("plan-admit");
    branch(&dir, "empty-payments", |work| {
        edit_file(work, "base/machines/payments.yaml", |t| {
            drop_last_documents(t, 10)
        });
    });
    // Every package version's install source moves, those in use too.
    branch(&dir, "repackaged", |work| {
        edit_file(work, "base/packages/machine-packages.yaml", |t| {
            t.replace("packages.example.internal", "mirror.example.internal")
        });
    });
    let url = format!("file://{}", dir.join("remote.git").display());
    for (head, reason) in [
        ("empty-payments", "MassDelete"),
        ("repackaged", "ImmutablePackageVersion"),
    ] {
        let (code, report) = json_plan(&[
            "--repo",
            &url,
            "--head",
            head,
            "--path",
            "overlays/demo",
            "--namespace",
            "fleet-demo",
        ]);
        assert_eq!(code, 2, "{head}: {report}");
        assert_eq!(report["problems"][0]["reason"], reason, "{head}: {report}");
        let planned = report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        // The loop on the same head, the fleet at its parent (main).
        let (code, stdout, stderr) = outcome(&endstate(&[
            "run",
            "--live",
            "sim",
            "--repo",
            &url,
            "--branch",
            head,
            "--path",
            "overlays/demo",
            "--namespace",
            "fleet-demo",
            "--fleet",
            "demo",
            "--sim-initial",
            &format!("{head}~1"),
            "--until-idle",
        ]));
        assert_eq!(code, 2, "{head}: {stdout}\n{stderr}");
        let first = planned.lines().next().unwrap();
        assert!(
            stderr.contains(first),
            "{head}: the loop says otherwise than plan ({first:?}):\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
