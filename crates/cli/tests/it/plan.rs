//! `endstate plan`: what merging would do, read from two commits of a real repository.

use crate::support::{demo_repo, endstate, outcome};

#[test]
fn plan_shows_the_changes_the_waves_and_the_diffs() {
    // initial (kubelet 1.27.9) → good upgrade (1.28.4) → bad upgrade (1.29.0) → its revert.
    let dir = demo_repo("plan");
    let url = format!("file://{}", dir.join("remote.git").display());
    let base = [
        "plan",
        "--repo",
        &url,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ];

    let mut args = base.to_vec();
    args.extend(["--base", "main~3", "--diffs", "1"]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 1, "changes exit 1: {stdout}\n{stderr}");
    assert!(
        stdout.contains("0 creates, 30 updates, 0 reinstalls, 0 deletes"),
        "{stdout}"
    );
    // The demo's policy: a canary of one, then 5%, 25% and the rest, spread across the idcs.
    assert!(
        stdout.contains(" 1. machines/canary           1 objects (1 update)"),
        "{stdout}"
    );
    assert!(stdout.contains("idc: hz-a:1"), "{stdout}");
    // Every wave is drawn round-robin across the idcs.
    assert!(
        stdout.contains(" 2. machines/early            1 objects (1 update)"),
        "{stdout}"
    );
    assert!(stdout.contains("idc: hz-b:1"), "{stdout}");
    assert!(
        stdout
            .contains(" 3. machines/quarter          6 objects (6 update), 2 at a time, bake 10m"),
        "{stdout}"
    );
    assert!(stdout.contains("idc: hz-a:2 hz-b:2 hz-c:2"), "{stdout}");
    assert!(
        stdout.contains(" 4. machines/all             22 objects"),
        "{stdout}"
    );
    // One diff for the 30 same changes, with the changed field named and shown.
    assert!(
        stdout.contains(": spec.packages.kubelet (and 29 more like it)"),
        "{stdout}"
    );
    assert!(stdout.contains("-    kubelet: kubelet-1.27.9"), "{stdout}");
    assert!(stdout.contains("+    kubelet: kubelet-1.28.4"), "{stdout}");
    assert!(!stdout.contains("not shown (--diffs)"), "{stdout}");

    // The revert's tree is the good upgrade's: nothing to write.
    let mut args = base.to_vec();
    args.extend(["--base", "main~2"]);
    let (code, stdout, _) = outcome(&endstate(&args));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("no changes: nothing would be written"),
        "{stdout}"
    );

    // An overlay that does not exist at the head: exit 2, naming it.
    let mut args = base.to_vec();
    args[4] = "overlays/missing";
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("overlays/missing"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The usual pull request: the planned branch is `feature`, the base is `main`, which the
/// planned branch's fetch alone does not bring.
#[test]
fn a_base_on_another_branch_is_fetched() {
    let dir = demo_repo("plan-base");
    let remote = dir.join("remote.git");
    crate::support::git(&remote, &["branch", "feature", "main"]);
    crate::support::git(&remote, &["update-ref", "refs/heads/main", "main~3"]);
    let url = format!("file://{}", remote.display());
    let (code, stdout, stderr) = outcome(&endstate(&[
        "plan",
        "--repo",
        &url,
        "--branch",
        "feature",
        "--base",
        "main",
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ]));
    // Before: `--base "main" names no commit of the branch: revspec 'refs/heads/main' not found`.
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("0 creates, 30 updates"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `endstate plan … | head -n 1` ends quietly (the hook in `main` serves every command).
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let dir = crate::support::demo_repo_of("plan-pipe", 600);
    let url = format!("file://{}", dir.join("remote.git").display());
    // Against nothing: every object is a create of its own, 460 KB of diffs.
    let args = [
        "plan",
        "--repo",
        &url,
        "--no-base",
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "--diffs",
        "1000",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The pipe is closed here: the rest of the output has no reader.
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    // The exit code still says what the plan found, and its mirror is gone.
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let prefix = format!("endstate-plan-{pid}-");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "mirrors left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-o json` in every outcome, each report valid against the committed schema by a validator
/// that is not the producer (Python's `jsonschema`).
#[test]
fn the_json_report_follows_the_committed_schema_in_every_outcome() {
    let dir = demo_repo("plan-json");
    let remote = dir.join("remote.git");
    let url = format!("file://{}", remote.display());
    // A head that does not validate: a Machine with an unknown field, on a branch of its own.
    let work = clone(&dir, "broken");
    let machines = work.join("base/machines/batch.yaml");
    let text = std::fs::read_to_string(&machines).unwrap();
    std::fs::write(&machines, text.replacen("  cluster:", "  clustr:", 1)).unwrap();
    crate::support::git(&work, &["checkout", "-q", "-b", "broken"]);
    crate::support::commit_and_push_to(&work, "Break a Machine", "broken");
    let plan = |branch: &str, base: &str| {
        json_plan(&[
            "--repo",
            &url,
            "--branch",
            branch,
            "--base",
            base,
            "--path",
            "overlays/demo",
            "--namespace",
            "fleet-demo",
        ])
    };
    // A head named by an expression or a commit id rather than a branch.
    let good = crate::support::git(&remote, &["rev-parse", "main~2"]);
    for head in ["main~2", good.trim(), &good[..10]] {
        let (code, upgrade) = plan(head, "main~3");
        assert_eq!(code, 1, "--head {head}: {upgrade}");
        assert_eq!(upgrade["head"], good.trim());
    }
    let (code, none) = plan("main", "main~2");
    assert_eq!(
        (code, none["outcome"].as_str()),
        (0, Some("NoChanges")),
        "{none}"
    );
    assert_eq!(none["version"], 2);
    assert_eq!(none["against"], "Commit");
    let (code, upgrade) = plan("main", "main~3");
    assert_eq!(
        (code, upgrade["outcome"].as_str()),
        (1, Some("Changes")),
        "{upgrade}"
    );
    assert_eq!(upgrade["summary"]["updates"], 30);
    assert_eq!(upgrade["summary"]["byKind"]["Machine"]["updates"], 30);
    // The blast radius: 10 Machines in each of the 3 Clusters, every idc, one move.
    let radius = &upgrade["blastRadius"];
    let clusters: Vec<(&str, u64)> = radius["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["machines"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        clusters,
        [("batch", 10), ("payments", 10), ("search", 10)],
        "{radius}"
    );
    let idcs: u64 = radius["idcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["machines"].as_u64().unwrap())
        .sum();
    assert_eq!(idcs, 30);
    assert_eq!(
        radius["packageVersions"],
        serde_json::json!([{"kind": "Machine", "package": "kubelet", "from": "kubelet-1.27.9",
                            "to": "kubelet-1.28.4", "highRisk": false, "objects": 30}])
    );
    assert_eq!(upgrade["budgetsAssumedUnspent"], true);
    assert_eq!(upgrade["budgets"][0]["class"], "machine-update");
    assert_eq!(upgrade["budgets"][0]["spends"], 30);
    assert_eq!(upgrade["budgets"][0]["waits"], false);
    let waves = upgrade["waves"].as_array().unwrap();
    assert_eq!(waves[0]["name"], "machines/canary");
    assert_eq!(waves[0]["ops"]["update"], 1);
    let sizes: u64 = waves.iter().map(|w| w["size"].as_u64().unwrap()).sum();
    assert_eq!(sizes, 30, "every change in exactly one wave");
    assert!(
        upgrade["diffs"][0]["paths"][0]
            .as_str()
            .unwrap()
            .contains("spec.packages.kubelet")
    );
    // A base that does not render is planned without, as the controller would: exit 1.
    let (code, fix) = plan("main", "broken");
    assert_eq!(
        (code, fix["outcome"].as_str()),
        (1, Some("Changes")),
        "{fix}"
    );
    assert_eq!(fix["risks"][0]["kind"], "BaseInvalid", "{fix}");
    let (code, broken) = plan("broken", "main");
    assert_eq!(
        (code, broken["outcome"].as_str()),
        (2, Some("Invalid")),
        "{broken}"
    );
    let problem = &broken["problems"][0];
    assert!(
        problem["file"].as_str().unwrap().starts_with("base/"),
        "{broken}"
    );
    assert!(problem["line"].as_u64().unwrap() > 0, "{broken}");
    assert!(
        problem["message"].as_str().unwrap().contains("clustr"),
        "{broken}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One change made to 30 Machines is one diff, counted; the markdown comment says so.
#[test]
fn the_same_change_is_one_diff_with_its_count() {
    let dir = demo_repo("plan-group");
    let url = format!("file://{}", dir.join("remote.git").display());
    let args = |output: &'static str| {
        [
            "plan",
            "--repo",
            &url,
            "--base",
            "main~3",
            "--path",
            "overlays/demo",
            "--namespace",
            "fleet-demo",
            "-o",
            output,
        ]
        .map(str::to_owned)
    };
    let run = |output: &'static str| {
        let args = args(output);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        outcome(&endstate(&args))
    };
    let (code, json, _) = run("json");
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let diffs = report["diffs"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "one kubelet upgrade, one diff: {report}");
    assert_eq!(diffs[0]["members"], 30);
    assert_eq!(report["diffsLeftOut"], 0);
    let (code, markdown, _) = run("markdown");
    assert_eq!(code, 1);
    assert!(markdown.starts_with("### endstate plan:"), "{markdown}");
    assert!(markdown.contains("| 0 | 30 | 0 | 0 | 0 |"), "{markdown}");
    assert!(
        markdown.contains("<details><summary>Waves</summary>"),
        "{markdown}"
    );
    assert!(markdown.contains("(and 29 more like it)"), "{markdown}");
    assert!(markdown.contains("```diff\n"), "{markdown}");
    let (code, text, _) = run("text");
    assert_eq!(code, 1);
    assert!(text.contains("(and 29 more like it)"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A few thousand distinct diffs: the comment stays under GitHub's limit and says what it
/// left out.
#[test]
fn the_markdown_comment_stays_under_the_limit_and_says_what_it_left_out() {
    let dir = crate::support::demo_repo_of("plan-cap", 2000);
    let remote = dir.join("remote.git");
    let work = clone(&dir, "renumber");
    // Every Machine gets an address of its own: no two patches are the same.
    for entry in std::fs::read_dir(work.join("base/machines")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("  ip: 10.", "  ip: 172.")).unwrap();
    }
    crate::support::commit_and_push(&work, "Renumber every Machine");
    let url = format!("file://{}", remote.display());
    let (code, markdown, stderr) = outcome(&endstate(&[
        "plan",
        "--repo",
        &url,
        "--base",
        "main~1",
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "-o",
        "markdown",
        "--diffs",
        "100000",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        markdown.chars().count() < 65_536,
        "{} characters",
        markdown.chars().count()
    );
    assert!(
        markdown.contains("diffs left out to stay under the comment limit"),
        "{}",
        &markdown[markdown.len() - 500..]
    );
    assert!(markdown.contains("| 0 | 2000 |"), "{}", &markdown[..800]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `endstate plan -o json` with `args`: the exit code and the report, which must follow the
/// committed schema by a validator that is not the producer (Python's `jsonschema`).
pub(crate) fn json_plan(args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["plan", "-o", "json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = outcome(&endstate(&all));
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let schema = crate::support::workspace().join("docs/plan.schema.json");
    let check = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, jsonschema\njsonschema.validate(json.loads(sys.argv[2]), json.load(open(sys.argv[1])))",
        ])
        .arg(&schema)
        .arg(&stdout)
        .output()
        .expect("/usr/bin/python3 with python3-jsonschema is required (.ci/run installs it)");
    assert!(
        check.status.success(),
        "the report does not follow docs/plan.schema.json: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    (code, report)
}

/// The same plan in all three formats: (exit code, JSON report, markdown, text).
fn every_format(args: &[&str]) -> (i32, serde_json::Value, String, String) {
    let (code, report) = json_plan(args);
    let run = |format: &str| {
        let mut all = vec!["plan", "-o", format];
        all.extend_from_slice(args);
        let (c, stdout, stderr) = outcome(&endstate(&all));
        assert_eq!(c, code, "-o {format} exits as -o json does: {stderr}");
        stdout
    };
    (code, report, run("markdown"), run("text"))
}

/// A branch `name` of the demo repository's `main`, with `edit` committed and pushed.
pub fn branch(dir: &std::path::Path, name: &str, edit: impl FnOnce(&std::path::Path)) {
    let work = clone(dir, name);
    crate::support::git(&work, &["checkout", "-q", "-b", name]);
    edit(&work);
    crate::support::commit_and_push_to(&work, name, name);
}

/// Rewrites the file `path` of `work` with `f`.
pub fn edit_file(work: &std::path::Path, path: &str, f: impl FnOnce(String) -> String) {
    let path = work.join(path);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, f(text)).unwrap();
}

/// The documents of a YAML stream, without the last `n` of them.
pub fn drop_last_documents(text: String, n: usize) -> String {
    let docs: Vec<&str> = text.split("\n---\n").collect();
    docs[..docs.len() - n].join("\n---\n") + "\n"
}

/// Every Machine of the demo moves its kubelet to `to`: the overlay's patch names it.
fn every_kubelet_to(work: &std::path::Path, to: &str) {
    edit_file(work, "overlays/demo/kustomization.yaml", |t| {
        let at = t.find("        kubelet: kubelet-").unwrap();
        let end = at + t[at..].find('\n').unwrap();
        format!("{}        kubelet: {to}{}", &t[..at], &t[end..])
    });
}

const HIGH_RISK_KUBELET: &str = "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-1.30.0\nspec:\n  packageName: kubelet\n  version: \"1.30.0\"\n  risk: high\n  install:\n    url: https://packages.example.internal/kubelet/kubelet-1.30.0.rpm\n    sha256: 2bce4275922bba59816fda332ba8c549b18e8e0952402d264d6e64f6f5023397\n";

/// Reinstalls, a move to a `risk: high` version and a delete of more than a tenth of the
/// Machines are called out before anything else; emptying a Cluster is refused (exit 2) as
/// the controller would, with the report.
#[test]
fn reinstalls_high_risk_versions_and_deletes_are_called_out_first() {
    let dir = demo_repo("plan-risk");
    branch(&dir, "risky", |work| {
        // Two reinstalls, one move to a high-risk kubelet.
        edit_file(work, "base/machines/batch.yaml", |t| {
            t.replacen(
                "  readinessGates: [KubeletReady]",
                "  osGeneration: 1\n  readinessGates: [KubeletReady]",
                2,
            )
        });
        edit_file(work, "base/packages/machine-packages.yaml", |t| {
            t + HIGH_RISK_KUBELET
        });
        // After the overlay's patch of every Machine's kubelet, one of its own.
        edit_file(work, "overlays/demo/kustomization.yaml", |t| {
            t + "- target:\n    kind: Machine\n    name: search-00001\n  patch: |\n    apiVersion: fleet.endstate.dev/v1alpha1\n    kind: Machine\n    metadata:\n      name: any\n    spec:\n      packages:\n        kubelet: kubelet-1.30.0\n"
        });
        // 4 of the 30 Machines go: within the floor (5), over a tenth.
        edit_file(work, "base/machines/payments.yaml", |t| {
            drop_last_documents(t, 4)
        });
    });
    branch(&dir, "empty-payments", |work| {
        edit_file(work, "base/machines/payments.yaml", |t| {
            drop_last_documents(t, 10)
        });
    });
    let url = format!("file://{}", dir.join("remote.git").display());
    let args = |head: &'static str| {
        [
            "--repo",
            &url,
            "--head",
            head,
            "--path",
            "overlays/demo",
            "--namespace",
            "fleet-demo",
        ]
        .map(str::to_owned)
    };
    let risky = args("risky");
    let risky: Vec<&str> = risky.iter().map(String::as_str).collect();
    let (code, report, markdown, text) = every_format(&risky);
    assert_eq!(code, 1, "{report}");
    // The base is the merge base with main: main itself.
    assert_eq!(report["against"], "Commit");
    let s = &report["summary"];
    assert_eq!(
        (&s["reinstalls"], &s["deletes"], &s["updates"]),
        (
            &serde_json::json!(3),
            &serde_json::json!(4),
            &serde_json::json!(0)
        ),
        "{s}"
    );
    let kinds: Vec<&str> = report["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Reinstall", "HighRiskPackageVersion", "LargeDelete"],
        "{report}"
    );
    assert!(
        report["risks"][2]["message"]
            .as_str()
            .unwrap()
            .contains("deletes 4 of the 30 Machines"),
        "{report}"
    );
    let moves = report["blastRadius"]["packageVersions"].as_array().unwrap();
    assert!(
        moves
            .iter()
            .any(|m| m["to"] == "kubelet-1.30.0" && m["highRisk"] == true && m["objects"] == 1),
        "{moves:?}"
    );
    // The high-risk move is planned with the reinstalls, in their budget class.
    let names: Vec<&str> = report["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("reinstalls/")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("deletes/")), "{names:?}");
    let classes: Vec<&str> = report["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["machine-delete", "machine-reinstall"], "{report}");
    // First in every format.
    let warning = markdown.find("> [!WARNING]").expect(&markdown);
    assert!(warning < markdown.find("<details>").unwrap(), "{markdown}");
    assert!(markdown.contains("**LargeDelete**"), "{markdown}");
    assert!(
        text.find("risks:").unwrap() < text.find(" creates, ").unwrap(),
        "{text}"
    );
    assert!(text.contains("! Reinstall: 3 Machines"), "{text}");

    let empty = args("empty-payments");
    let empty: Vec<&str> = empty.iter().map(String::as_str).collect();
    let (code, report, markdown, text) = every_format(&empty);
    assert_eq!(
        (code, report["outcome"].as_str()),
        (2, Some("Refused")),
        "{report}"
    );
    assert_eq!(report["problems"][0]["reason"], "MassDelete");
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("10 of the 10 live Machines of Cluster payments"),
        "{report}"
    );
    assert_eq!(report["risks"][0]["refused"], true);
    // The rest of the report is there for the reviewer all the same.
    assert_eq!(report["summary"]["deletes"], 10);
    assert!(markdown.contains("**Refused**"), "{markdown}");
    assert!(text.contains("REFUSED MassDelete"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A budget the change exceeds makes its waves wait for room, and a closed maintenance
/// window delays the first wave until it opens: both in the schedule, evaluated at `--now`.
#[test]
fn budgets_and_windows_shape_the_schedule() {
    let dir = demo_repo("plan-schedule");
    branch(&dir, "tight", |work| {
        every_kubelet_to(work, "kubelet-1.27.9");
        edit_file(work, "overlays/demo/rollout-policy.yaml", |t| {
            t.replace("    limit: 5000\n", "    limit: 10\n").replace(
                "  budgets:\n",
                "  windows:\n  - {days: [Tue], start: \"02:00\", end: \"06:00\"}\n  budgets:\n",
            )
        });
    });
    let url = format!("file://{}", dir.join("remote.git").display());
    // A Monday, 00:00 UTC: the window opens 26 hours later.
    let args = [
        "--repo",
        &url,
        "--head",
        "tight",
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "--now",
        "2026-11-30T00:00:00Z",
    ];
    let (code, report, markdown, text) = every_format(&args);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["now"], "2026-11-30T00:00:00Z");
    assert_eq!(
        report["windows"],
        serde_json::json!(["Tue 02:00–06:00 UTC"])
    );
    let waves = report["waves"].as_array().unwrap();
    assert_eq!(
        waves[0]["earliestStart"], "2026-12-01T02:00:00Z",
        "{report}"
    );
    assert_eq!(waves[0]["windowWaitSeconds"], 26 * 3600);
    let budget = &report["budgets"][0];
    assert_eq!(
        (
            &budget["class"],
            &budget["spends"],
            &budget["limit"],
            &budget["waits"]
        ),
        (
            &serde_json::json!("machine-update"),
            &serde_json::json!(30),
            &serde_json::json!(10),
            &serde_json::json!(true)
        ),
        "{report}"
    );
    // 30 changes at 10 an hour: the waves that would start more wait for room.
    assert!(budget["waitSeconds"].as_u64().unwrap() > 0, "{budget}");
    let waited: u64 = waves
        .iter()
        .map(|w| w["budgetWaitSeconds"].as_u64().unwrap())
        .sum();
    assert_eq!(waited, budget["waitSeconds"].as_u64().unwrap());
    assert!(report["estimate"]["seconds"].as_u64().unwrap() > 28 * 3600);
    assert!(text.contains("for a maintenance window"), "{text}");
    assert!(
        text.contains("waits") && text.contains("for room"),
        "{text}"
    );
    assert!(markdown.contains("window +26h"), "{markdown}");
    assert!(markdown.contains("budget +"), "{markdown}");

    // Without a change: exit 0 in every format.
    let same = [
        "--repo",
        &url,
        "--head",
        "main",
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
    ];
    let (code, report, markdown, text) = every_format(&same);
    assert_eq!((code, report["outcome"].as_str()), (0, Some("NoChanges")));
    assert!(markdown.contains("No changes"), "{markdown}");
    assert!(text.contains("no changes"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A work tree of the demo repository's remote, in `dir/name`.
pub fn clone(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let work = dir.join(name);
    let remote = dir.join("remote.git");
    crate::support::git(
        dir,
        &[
            "clone",
            "-q",
            remote.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    work
}
