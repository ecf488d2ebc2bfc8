//! Metric gates against a real Prometheus server (Debian's `prometheus`), scraping a tiny
//! exporter each test controls: plain and behind TLS + basic auth; a value within bounds lets
//! the rollout finish, out of bounds trips the breaker and pushes the revert; a query API that
//! is stopped, frozen (SIGSTOP), a closed port, or a query without series each hold the bake
//! without spinning and trip after `gates.timeout`, in virtual time as in real time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{demo_repo, endstate, free_port, git, outcome};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A gauge the test sets; `None` exports nothing (the query then selects no series).
#[derive(Clone)]
struct Exporter {
    value: Arc<Mutex<Option<f64>>>,
    addr: String,
}

impl Exporter {
    fn start(value: Option<f64>) -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let value = Arc::new(Mutex::new(value));
        let shared = value.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0; 4096];
                let _ = stream.read(&mut buf);
                let body = match *shared.lock().unwrap() {
                    Some(v) => format!("# TYPE errors_ratio gauge\nerrors_ratio {v}\n"),
                    None => String::new(),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Exporter { value, addr }
    }
}

/// TLS files and a basic-auth user for Prometheus' `--web.config.file`.
struct Tls {
    ca: PathBuf,
    web_config: PathBuf,
}

const USER: &str = "endstate";
const PASSWORD: &str = "s3cret-gate";

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required by the metric gate tests: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Tls {
    /// A CA, a server certificate for 127.0.0.1 signed by it, and a bcrypt-hashed user.
    fn make(dir: &Path) -> Tls {
        std::fs::create_dir_all(dir).unwrap();
        run(
            dir,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=endstate-test-ca",
                "-days",
                "2",
            ],
        );
        run(
            dir,
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(
            dir,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        );
        let hash = run(dir, "htpasswd", &["-nbBC", "10", USER, PASSWORD]);
        let hash = hash.trim().split_once(':').unwrap().1.to_owned();
        let web_config = dir.join("web.yml");
        std::fs::write(
            &web_config,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: '{hash}'\n",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            ),
        )
        .unwrap();
        Tls {
            ca: dir.join("ca.crt"),
            web_config,
        }
    }
}

/// A Prometheus server on loopback scraping `exporter` every second.
struct Prometheus {
    child: Child,
    url: String,
    tls: Option<Tls>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, exporter: &Exporter, tls: Option<Tls>) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is required by the metric gate tests (Debian's `prometheus` package; .ci/run installs it)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: app\n  static_configs:\n  - targets: ['{}']\n",
                exporter.addr
            ),
        )
        .unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(PROMETHEUS);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(tls) = &tls {
            command.arg(format!("--web.config.file={}", tls.web_config.display()));
        }
        let child = command.spawn().expect("starting prometheus");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let prometheus = Prometheus {
            child,
            url: format!("{scheme}://{listen}"),
            tls,
        };
        prometheus.wait_for_data();
        prometheus
    }

    /// Queries with curl, as a user would check the server.
    fn query(&self, query: &str) -> String {
        let mut args = vec!["-s".to_owned(), "-G".to_owned()];
        if let Some(tls) = &self.tls {
            args.extend([
                "--cacert".to_owned(),
                tls.ca.display().to_string(),
                "-u".to_owned(),
                format!("{USER}:{PASSWORD}"),
            ]);
        }
        args.extend([
            format!("{}/api/v1/query", self.url),
            "--data-urlencode".to_owned(),
            format!("query={query}"),
        ]);
        let out = Command::new("curl")
            .args(&args)
            .output()
            .expect("curl is required by the metric gate tests");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the exporter's gauge (or its absence) has been scraped.
    fn wait_for_data(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // `up` is there once the first scrape happened, whatever the exporter exports.
            let answer = self.query("up{job=\"app\"} == 1");
            if answer.contains("\"value\"") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus at {} has no data after 60s: {answer}",
                self.url
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }
}

/// The demo's repository with a branch `gated`: the initial fleet with the policy's gates
/// (`gated~1`), then the good kubelet upgrade; returns (dir, url).
fn gated_repo(name: &str, gates: &str) -> (PathBuf, String) {
    let dir = demo_repo(name);
    let remote = dir.join("remote.git");
    let work = dir.join("gated");
    git(
        &dir,
        &[
            "clone",
            "-q",
            remote.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "gated", "main~3"]);
    let policy = work.join("overlays/demo/rollout-policy.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(text.contains("  gates:\n    timeout: 10m\n"), "{text}");
    std::fs::write(&policy, text.replace("  gates:\n    timeout: 10m\n", gates)).unwrap();
    let commit = |args: &[&str]| {
        let mut all = vec!["-c", "user.name=t", "-c", "user.email=t@e"];
        all.extend_from_slice(args);
        git(&work, &all)
    };
    commit(&["commit", "-qam", "Gate the waves on the error ratio"]);
    let good = git(&remote, &["rev-parse", "main~2"]);
    commit(&["cherry-pick", &good]);
    git(&work, &["push", "-q", "origin", "gated"]);
    (dir, format!("file://{}", remote.display()))
}

/// The gates section of the policy: one gate on `url` and `query`, at most 0.1, sampled every
/// minute; objects and gates time out after 10m, a query after 2 s.
fn gates(url: &str, query: &str, extra: &str) -> String {
    format!(
        "  gates:\n    timeout: 10m\n    queryTimeout: 2s\n    metrics:\n    - name: error-rate\n      url: {url}\n      query: '{query}'\n      max: 0.1\n      interval: 1m\n{extra}"
    )
}

fn run_args<'a>(url: &'a str, speed: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--live",
        "sim",
        "--repo",
        url,
        "--branch",
        "gated",
        "--path",
        "overlays/demo",
        "--namespace",
        "fleet-demo",
        "--fleet",
        "demo",
        "--sim-initial",
        "gated~1",
        "--until-idle",
        "--speed",
        speed,
    ]
}

/// The CPU time (user + system) a process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

/// A run of `endstate`, its stderr read line by line as it comes.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_endstate"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, pattern: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let found = line.contains(pattern);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line with {pattern:?} within {limit:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit; (code, stdout, stderr seen) — killed after `limit`.
    fn finish(mut self, limit: Duration) -> (i32, String, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stdout = String::new();
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut stdout)
                    .unwrap();
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), stdout, self.seen.join("\n"));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                panic!("still running after {limit:?}:\n{}", self.seen.join("\n"));
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("endstate-gates-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_gauge_within_bounds_lets_the_rollout_finish_and_out_of_bounds_trips_and_reverts() {
    let dir = tmp("plain");
    let exporter = Exporter::start(Some(0.01));
    let prometheus = Prometheus::start(&dir, &exporter, None);
    let (repo, url) = gated_repo("gates-plain", &gates(&prometheus.url, "errors_ratio", ""));
    let remote = repo.join("remote.git");

    let (code, stdout, stderr) = outcome(&endstate(&run_args(&url, "0")));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("converged"), "{stdout}");

    *exporter.value.lock().unwrap() = Some(0.5);
    prometheus.wait_for_value("errors_ratio", "0.5");
    let head = git(&remote, &["rev-parse", "gated"]);
    let (code, stdout, stderr) = outcome(&endstate(&run_args(&url, "0")));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("metric error-rate = 0.5 is outside [-∞, 0.1]"),
        "{stderr}"
    );
    // The evidence shows what the gate answered.
    assert!(stderr.contains("metric error-rate: 0.5 at "), "{stderr}");
    let message = git(&remote, &["log", "-1", "--format=%B", "gated"]);
    assert!(
        message.contains(&format!("Endstate-Revert-Of: {head}")),
        "{message}"
    );
}

impl Prometheus {
    fn wait_for_value(&self, query: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.query(query).contains(&format!("\"{value}\"")) {
            assert!(
                Instant::now() < deadline,
                "{query} is not {value} after 30s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_gate_behind_tls_and_basic_auth_reads_its_secret() {
    let dir = tmp("tls");
    let tls = Tls::make(&dir.join("tls"));
    let ca = std::fs::read(&tls.ca).unwrap();
    let exporter = Exporter::start(Some(0.01));
    let prometheus = Prometheus::start(&dir, &exporter, Some(tls));
    assert!(prometheus.url.starts_with("https://"));
    let secret =
        "      secretRef: {name: prometheus-auth}\n      headers: {X-Scope-OrgID: fleet-demo}\n";
    let (_repo, url) = gated_repo("gates-tls", &gates(&prometheus.url, "errors_ratio", secret));
    let secrets = dir.join("secrets");
    let auth = secrets.join("prometheus-auth");
    std::fs::create_dir_all(&auth).unwrap();
    std::fs::write(auth.join("username"), USER).unwrap();
    std::fs::write(auth.join("password"), PASSWORD).unwrap();
    std::fs::write(auth.join("ca.crt"), &ca).unwrap();

    let mut args = run_args(&url, "0");
    args.extend(["--secrets-dir", secrets.to_str().unwrap()]);
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // A wrong password is no answer: the bake holds, says why, and trips after the timeout.
    std::fs::write(auth.join("password"), "wrong").unwrap();
    let (code, stdout, stderr) = outcome(&endstate(&args));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains("metric error-rate: no answer"), "{stderr}");
}

/// Stops the query API mid-bake (killed, then in another run frozen with SIGSTOP), with the
/// simulator keeping pace with real time (60×): the bake holds without spinning and trips
/// after `gates.timeout` (10m virtual, 10 s real).
#[test]
fn a_query_api_stopped_or_frozen_mid_bake_holds_without_spinning_then_trips() {
    for (name, signal) in [("frozen", "STOP"), ("killed", "KILL")] {
        let dir = tmp(name);
        let exporter = Exporter::start(Some(0.01));
        let prometheus = Prometheus::start(&dir, &exporter, None);
        // The canary bakes 5m virtual: 5 s real at 60×.
        let (_repo, url) = gated_repo(
            &format!("gates-{name}"),
            &gates(&prometheus.url, "errors_ratio", ""),
        );
        let mut run = Running::start(&run_args(&url, "60"));
        run.wait_for("wave 1 machines/canary: starting", Duration::from_secs(60));
        // The canary is healthy and baking after a few virtual minutes, its first samples in bounds.
        std::thread::sleep(Duration::from_secs(3));
        prometheus.signal(signal);
        let (pid, since, cpu_before) = (run.child.id(), Instant::now(), cpu_time(run.child.id()));
        let cpu_at_exit = Arc::new(Mutex::new(cpu_before));
        let watch = {
            let cpu = cpu_at_exit.clone();
            std::thread::spawn(move || {
                // Read the CPU time until the process is gone.
                while Path::new(&format!("/proc/{pid}/stat")).exists() {
                    let now = cpu_time(pid);
                    if now > Duration::ZERO {
                        *cpu.lock().unwrap() = now;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
        watch.join().unwrap();
        let wall = since.elapsed();
        let cpu = cpu_at_exit.lock().unwrap().saturating_sub(cpu_before);
        assert_eq!(code, 3, "{name}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("metric error-rate: no answer"),
            "{name}: {stderr}"
        );
        // Near idle while it held: a spinning loop burns a whole core.
        assert!(
            cpu.as_secs_f64() < 0.5 * wall.as_secs_f64(),
            "{name}: {cpu:?} of CPU in {wall:?}"
        );
        drop(prometheus);
    }
}

/// In virtual time at full speed: a closed port, a frozen query API and a query without
/// series each hold the bake, and trip after `gates.timeout` of virtual time.
#[test]
fn a_closed_port_a_frozen_api_and_a_query_without_series_trip_in_virtual_time() {
    let dir = tmp("virtual");
    let exporter = Exporter::start(Some(0.01));
    let prometheus = Prometheus::start(&dir, &exporter, None);
    let cases = [
        (
            "closed",
            "http://127.0.0.1:9".to_owned(),
            "errors_ratio",
            "no answer",
        ),
        (
            "no-series",
            prometheus.url.clone(),
            "errors_ratio{job=\"none\"}",
            "no series for 10m",
        ),
        (
            "frozen",
            prometheus.url.clone(),
            "errors_ratio",
            "did not answer within 2s",
        ),
    ];
    for (name, gate_url, query, expect) in cases {
        if name == "frozen" {
            prometheus.signal("STOP");
        }
        let (_repo, url) = gated_repo(&format!("gates-v-{name}"), &gates(&gate_url, query, ""));
        let started = Instant::now();
        let run = Running::start(&run_args(&url, "0"));
        let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
        let wall = started.elapsed();
        assert_eq!(code, 3, "{name}: {stdout}\n{stderr}");
        assert!(stderr.contains(expect), "{name}: {stderr}");
        assert!(
            stderr.contains("tripped in wave machines/canary"),
            "{name}: {stderr}"
        );
        if name == "frozen" {
            // Each query waits its 2 s timeout in real time: the clock does not run ahead.
            assert!(wall >= Duration::from_secs(4), "{name}: {wall:?}");
        }
    }
}
