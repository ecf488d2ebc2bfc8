//! `endstate run --live sim --until-idle`: converged, tripped and refused, by exit code.

use std::process::Command;

use std::io::{BufRead, BufReader};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::support::{demo_repo, endstate, git, outcome};

/// A running command's stderr, line by line.
struct Lines(Receiver<String>);

impl Lines {
    /// Reads the child's piped stderr on a thread of its own.
    fn of(child: &mut std::process::Child) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines(rx)
    }

    /// The next line containing `pattern`; fails the test after `limit`.
    fn wait_for(&self, pattern: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .0
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(pattern) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {pattern:?} within {limit:?}"),
            }
        }
    }
}

#[test]
fn run_until_idle_exits_by_outcome() {
    // The demo's repository: initial, good upgrade, bad upgrade, revert.
    let dir = demo_repo("run");
    let remote = dir.join("remote.git");
    let url = format!("file://{}", remote.display());
    // A branch whose head is the bad upgrade, before its revert.
    git(&remote, &["branch", "bad", "main~1"]);
    let bad = git(&remote, &["rev-parse", "bad"]);
    let base = [
        "run",
        "--live",
        "sim",
        "--repo",
        &url,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "--fleet",
        "demo",
        "--until-idle",
    ];

    // Converged: from the initial commit to the branch head (the revert of the bad upgrade).
    let mut args = base.to_vec();
    args.extend(["--sim-initial", "main~3"]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "converged: the fleet is at {}",
            git(&remote, &["rev-parse", "main"])
        )),
        "{stdout}"
    );

    // Tripped: the bad upgrade fails everywhere; the fleet is restored and the revert pushed.
    let mut args = base.to_vec();
    args.extend([
        "--branch",
        "bad",
        "--sim-initial",
        "bad~1",
        "--sim-fault",
        "package=kubelet-1.29.0,rate=1",
    ]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("breaker tripped on {bad}")),
        "{stdout}"
    );
    assert!(
        // The bad kubelet is marked `risk: high`: it rolls out with the reinstalls.
        stderr.contains("tripped in wave reinstalls/canary"),
        "{stderr}"
    );
    let message = git(&remote, &["log", "-1", "--format=%B", "bad"]);
    assert!(
        message.contains(&format!("Endstate-Revert-Of: {bad}")),
        "{message}"
    );

    // Refused: the overlay does not exist at the head.
    let mut args = base.to_vec();
    args[6] = "overlays/missing";
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("overlays/missing"), "{stderr}");

    // Quarantine outlives the run (in the status file), and holds back a head that builds on
    // the quarantined commit without reverting it.
    git(&remote, &["branch", "bad2", "main~1"]);
    let status = dir.join("status.json");
    let mut args = base.to_vec();
    args.extend([
        "--branch",
        "bad2",
        "--sim-initial",
        "bad2~1",
        "--sim-fault",
        "package=kubelet-1.29.0,rate=1",
        "--no-revert",
        "--sim-status-file",
        status.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    let clone = dir.join("clone");
    git(
        &dir,
        &[
            "clone",
            "-q",
            "-b",
            "bad2",
            remote.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    std::fs::write(clone.join("NOTES"), "an unrelated change\n").unwrap();
    crate::support::commit_and_push_to(&clone, "Add notes", "bad2");
    let mut args = base.to_vec();
    args.extend([
        "--branch",
        "bad2",
        "--sim-status-file",
        status.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "still carries the quarantined commit {}",
            &bad[..10]
        )),
        "{stderr}"
    );

    // The breaker stays open across runs: main's head (the revert of the bad upgrade) still
    // has changes for this fresh simulated fleet, and they are held until the breaker is reset.
    let mut args = base.to_vec();
    args.extend(["--sim-status-file", status.to_str().unwrap()]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("held: the breaker is open"), "{stderr}");
    args.push("--reset-breaker");
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("breaker reset"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_signed_webhook_starts_the_rollout_at_once() {
    use std::io::{Read, Write};

    let dir = demo_repo("webhook");
    let remote = dir.join("remote.git");
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    // Fetch once an hour: only the webhook can make it notice the push in time.
    let mut child = Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args([
            "run",
            "--live",
            "sim",
            "--path",
            "overlays/demo",
            "--namespace",
            "fleet-demo",
            "--fleet",
            "demo",
            "--interval",
            "1h",
            "--sim-initial",
            "main",
            "--webhook-listen",
            "127.0.0.1:0",
        ])
        .arg("--repo")
        .arg(format!("file://{}", remote.display()))
        .arg("--webhook-secret-file")
        .arg(dir.join("secret"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    let listening = lines.wait_for("webhook listening on", Duration::from_secs(30));
    let addr = listening.rsplit(' ').next().unwrap().to_owned();
    lines.wait_for("nothing to write", Duration::from_secs(30));

    // A push: the bad upgrade again, on top of the revert.
    let work = dir.join("work");
    git(&work, &["revert", "--no-edit", "HEAD"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let pushed = git(&work, &["rev-parse", "HEAD"]);

    let body = format!(r#"{{"ref":"refs/heads/main","commit":"{pushed}"}}"#);
    let post = |signature: &str| {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /hook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Endstate-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    // A bad signature is refused and starts nothing.
    assert!(post("sha256=00").starts_with("HTTP/1.1 401"));
    let signature =
        endstate_git::webhook::sign(&endstate_git::Secret::new("s3cret"), body.as_bytes());
    let sent = Instant::now();
    let response = post(&signature);
    assert!(response.starts_with("HTTP/1.1 2"), "{response}");
    let planned = lines.wait_for(&format!("{}: ", &pushed[..10]), Duration::from_secs(10));
    let first_wave = lines.wait_for("starting", Duration::from_secs(10));
    let took = sent.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(planned.contains("updates"), "{planned}");
    assert!(first_wave.contains("wave 1"), "{first_wave}");
    // With an hour's fetch interval, only the webhook can have started it.
    eprintln!("webhook → first wave started in {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_local_directory_is_rolled_out_and_watched() {
    let dir = std::env::temp_dir().join(format!("endstate-local-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    crate::kill::write_fleet(&dir, "agent-1.0");
    // The simulator's clusters take minutes to provision: a gate timeout to match.
    let policy = std::fs::read_to_string(dir.join("policy.yaml"))
        .unwrap()
        .replace("timeout: 60s", "timeout: 10m");
    std::fs::write(dir.join("policy.yaml"), &policy).unwrap();
    let base = [
        "run",
        "--live",
        "sim",
        "--namespace",
        "local",
        "--local",
        dir.to_str().unwrap(),
    ];

    // Until idle: the directory's content is rolled out, and named by its content id.
    let mut args = base.to_vec();
    args.push("--until-idle");
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("converged: the fleet is at local-"),
        "{stdout}"
    );

    // Watching, in virtual time 10000× faster than real: an edit is picked up at once, with
    // a fetch interval of a year.
    let mut args = base.to_vec();
    args.extend(["--interval", "8760h", "--speed", "10000"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    lines.wait_for("rollout complete", Duration::from_secs(30));
    crate::kill::write_fleet(&dir, "agent-2.0");
    std::fs::write(dir.join("policy.yaml"), &policy).unwrap();
    let planned = lines.wait_for("updates", Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        planned.contains("local-") && planned.contains("24 updates"),
        "{planned}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_status_file_keeps_the_applied_commit_so_a_rewritten_branch_is_refused() {
    let dir = demo_repo("rewrite");
    let remote = dir.join("remote.git");
    let url = format!("file://{}", remote.display());
    let status = dir.join("status.json");
    git(&remote, &["branch", "rw", "main~2"]);
    let base = [
        "run",
        "--live",
        "sim",
        "--repo",
        &url,
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "--fleet",
        "demo",
        "--branch",
        "rw",
        "--until-idle",
        "--sim-status-file",
        status.to_str().unwrap(),
    ];
    let mut first = base.to_vec();
    first.extend(["--sim-initial", "rw~1"]);
    let (code, stdout, stderr) = outcome(&endstate(&first));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let applied = git(&remote, &["rev-parse", "rw"]);

    // The branch is moved to a commit that does not descend from the one applied.
    git(&remote, &["branch", "-f", "rw", "main~3"]);
    let (code, stdout, stderr) = outcome(&endstate(&base));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("was rewritten") && stderr.contains(&applied[..10]),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cluster named on the command line is never ignored for the simulated fleet: `--kubeconfig`
/// means `--live kube`, `--live sim --kubeconfig` is refused, and without either `run` asks.
#[test]
fn run_never_swaps_a_named_cluster_for_the_simulated_fleet() {
    let dir = std::env::temp_dir().join(format!("endstate-run-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\ncurrent-context: c\n").unwrap();
    let k = kubeconfig.to_str().unwrap();
    // Before: this ran the simulated fleet, exited 0 "converged" and wrote nothing anywhere.
    let (code, stdout, stderr) = outcome(&endstate(&[
        "run",
        "--kubeconfig",
        k,
        "--repo",
        "file:///nonexistent",
        "--until-idle",
    ]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stdout.contains("converged"), "{stdout}");
    assert!(
        stderr.contains("127.0.0.1:1"),
        "it went for the cluster: {stderr}"
    );
    let (code, _, stderr) = outcome(&endstate(&[
        "run",
        "--live",
        "sim",
        "--kubeconfig",
        k,
        "--repo",
        "file:///x",
        "--until-idle",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--kubeconfig names a cluster, and --live sim"),
        "{stderr}"
    );
    let (code, _, stderr) = outcome(&endstate(&["run", "--repo", "file:///x", "--until-idle"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--live sim") && stderr.contains("--live kube"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The example Fleet the error messages and docs point to is a valid Fleet.
#[test]
fn the_example_fleet_is_a_fleet() {
    let text =
        std::fs::read_to_string(crate::support::workspace().join("examples/fleet/fleet.yaml"))
            .unwrap();
    let fleet = serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .find_map(|value: serde_json::Value| {
            (value["kind"] == "Fleet").then(|| serde_json::from_value::<endstate_api::Fleet>(value))
        })
        .expect("a Fleet in examples/fleet/fleet.yaml")
        .expect("the example Fleet decodes with every field known");
    assert!(fleet.spec.source.secret_ref.is_some() && fleet.spec.webhook.is_some());
}
