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
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(
        out.status.code().is_some(),
        "{args:?}: {:?} {stderr}",
        out.status
    );
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
    crate::support::git(
        &work,
        &[
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.com",
            "commit",
            "-qam",
            "Break a Machine",
        ],
    );
    crate::support::git(&work, &["push", "-q", "origin", "broken"]);
    let schema = crate::support::workspace().join("docs/plan.schema.json");
    let plan = |branch: &str, base: &str| {
        let (code, stdout, stderr) = outcome(&endstate(&[
            "plan",
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
            "-o",
            "json",
        ]));
        let report: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
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
    };
    let (code, none) = plan("main", "main~2");
    assert_eq!(
        (code, none["outcome"].as_str()),
        (0, Some("NoChanges")),
        "{none}"
    );
    assert_eq!(none["version"], 1);
    let (code, upgrade) = plan("main", "main~3");
    assert_eq!(
        (code, upgrade["outcome"].as_str()),
        (1, Some("Changes")),
        "{upgrade}"
    );
    assert_eq!(upgrade["summary"]["updates"], 30);
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

/// A work tree of the demo repository's remote, in `dir/name`.
fn clone(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
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
