//! A real kube-apiserver and etcd on loopback, for tests that talk to Kubernetes.
//!
//! ```text
//!   scripts/kube-test-env.sh ──▶ binaries (ENDSTATE_TEST_KUBE_APISERVER / ENDSTATE_TEST_ETCD,
//!                                or Debian's etcd + kube-apiserver 1.20.2 built once, cached)
//!   TestServer::start ──▶ etcd (tmpfs data dir) ◀── kube-apiserver (token auth, RBAC)
//!                         ├─ kubeconfig: a system:masters token
//!                         └─ user kubeconfig: a cluster-admin that is not system:masters
//! ```
//!
//! The server exempts `system:masters` from its in-flight limits (and from priority and
//! fairness), so tests of throttling use the second identity.
//!
//! Both processes are killed by pid when the [`TestServer`] is dropped. A watchdog shell
//! also kills them when the test process exits without dropping it (a panic that aborts, the
//! shared server of [`TestServer::shared`]), so no test leaves a server running.
//!
//! A test that cannot get a server panics with the reason; it never passes silently.

use std::fmt::Write as _;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};

/// How long a server may take to become ready (it usually takes about 10 s).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Extra settings for one server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Arguments appended to kube-apiserver's command line, e.g.
    /// `--max-mutating-requests-inflight=1`.
    pub apiserver_args: Vec<String>,
}

impl Options {
    /// A server that takes one mutating request at a time, with no priority-and-fairness
    /// queueing in front: every concurrent write beyond the first is answered 429 at once.
    /// (`system:masters` is exempt; use [`TestServer::user_config`] to be throttled.)
    pub fn one_write_at_a_time() -> Self {
        Options {
            apiserver_args: vec![
                "--max-mutating-requests-inflight=1".into(),
                "--max-requests-inflight=400".into(),
                "--enable-priority-and-fairness=false".into(),
            ],
        }
    }
}

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The kube-apiserver executable.
    pub apiserver: PathBuf,
    /// The etcd executable.
    pub etcd: PathBuf,
}

impl Binaries {
    /// Runs `scripts/kube-test-env.sh`, which honours `ENDSTATE_TEST_KUBE_APISERVER` and
    /// `ENDSTATE_TEST_ETCD`, and otherwise installs etcd and builds kube-apiserver once.
    /// The script is run once per process.
    pub fn locate() -> Result<Binaries> {
        // The error is kept as its text: every test that asks again gets the same one.
        static FOUND: OnceLock<Result<Binaries, std::sync::Arc<anyhow::Error>>> = OnceLock::new();
        FOUND
            .get_or_init(|| Self::run_script().map_err(std::sync::Arc::new))
            .clone()
            .map_err(|err| anyhow!("{err:#}"))
    }

    fn run_script() -> Result<Binaries> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kube-test-env.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|err| anyhow!("cannot run {}: {err}", script.display()))?;
        if !output.status.success() {
            return Err(anyhow!(
                "{} failed ({}); it prints why above. Set ENDSTATE_TEST_KUBE_APISERVER and \
                 ENDSTATE_TEST_ETCD to existing binaries to skip it",
                script.display(),
                output.status
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(PathBuf::from)
                .ok_or_else(|| anyhow!("{} printed no {key}", script.display()))
        };
        Ok(Binaries {
            apiserver: value("ENDSTATE_TEST_KUBE_APISERVER")?,
            etcd: value("ENDSTATE_TEST_ETCD")?,
        })
    }
}

/// A running etcd + kube-apiserver pair.
#[derive(Debug)]
pub struct TestServer {
    dir: PathBuf,
    kubeconfig: PathBuf,
    user_kubeconfig: PathBuf,
    url: String,
    etcd: Child,
    apiserver: Child,
    /// How each was started (program, arguments, log), to start it again the same way.
    etcd_command: Launch,
    apiserver_command: Launch,
    etcd_client: u16,
    watchdog: Option<(Child, ChildStdin)>,
    /// The server's certificate, which the kubeconfigs trust.
    cert: PathBuf,
    /// The `system:masters` token of [`TestServer::kubeconfig`].
    admin_token: String,
}

/// A process's program, arguments and log file.
#[derive(Clone, Debug)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<Child> {
        Command::new(&self.program)
            .args(&self.args)
            .stdout(log_file(&self.log)?)
            .stderr(log_file(&self.log)?)
            .spawn()
            .map_err(|err| anyhow!("cannot run {}: {err}", self.program.display()))
    }
}

impl TestServer {
    /// One server shared by every test of this process (tests isolate themselves by
    /// namespace). Panics when no server can be started.
    pub fn shared() -> &'static TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED.get_or_init(TestServer::start)
    }

    /// Starts a server of its own. Panics when it cannot, saying why.
    pub fn start() -> TestServer {
        Self::start_with(Options::default())
    }

    /// Starts a server of its own with extra settings. Panics when it cannot, saying why.
    pub fn start_with(options: Options) -> TestServer {
        match Self::try_start(&options) {
            Ok(server) => server,
            Err(err) => panic!("cannot start the test kube-apiserver: {err}"),
        }
    }

    /// Starts a server, or says why it cannot.
    pub fn try_start(options: &Options) -> Result<TestServer> {
        let binaries = Binaries::locate()?;
        let dir = scratch_dir().map_err(|err| anyhow!("cannot make a scratch directory: {err}"))?;
        let cert_dir = dir.join("certs");
        std::fs::create_dir_all(&cert_dir)
            .map_err(|err| anyhow!("{}: {err}", cert_dir.display()))?;

        let admin_token = token("admin");
        let user_token = token("user");
        let tokens = dir.join("tokens.csv");
        write(
            &tokens,
            &format!(
                "{admin_token},endstate-test,endstate-test,\"system:masters\"\n\
                 {user_token},{USER},{USER},\"{USER_GROUP}\"\n"
            ),
        )?;
        let sa_key = dir.join("service-account.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|err| anyhow!("cannot run openssl to make the service-account key: {err}"))?;
        if !status.success() {
            return Err(anyhow!("openssl genrsa failed ({status})"));
        }

        let [etcd_client, etcd_peer, secure_port] = free_ports()?;
        let etcd_log = dir.join("etcd.log");
        let etcd_command = Launch {
            program: binaries.etcd.clone(),
            args: vec![
                format!("--data-dir={}", dir.join("etcd").display()),
                "--name=endstate-test".to_owned(),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=endstate-test=http://127.0.0.1:{etcd_peer}"),
                "--log-level=warn".to_owned(),
            ],
            log: etcd_log.clone(),
        };
        let etcd = etcd_command.spawn()?;

        let apiserver_log = dir.join("kube-apiserver.log");
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={secure_port}"),
            "--insecure-port=0".to_owned(),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".to_owned(),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", sa_key.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
            "--v=0".to_owned(),
        ];
        args.extend(options.apiserver_args.iter().cloned());
        let apiserver_command = Launch {
            program: binaries.apiserver.clone(),
            args,
            log: apiserver_log.clone(),
        };
        let apiserver = apiserver_command.spawn()?;

        let watchdog = watchdog(&[etcd.id(), apiserver.id()], &dir);
        let url = format!("https://127.0.0.1:{secure_port}");
        let kubeconfig = dir.join("kubeconfig");
        let user_kubeconfig = dir.join("kubeconfig-user");
        let mut server = TestServer {
            dir,
            kubeconfig,
            user_kubeconfig,
            url,
            etcd,
            apiserver,
            etcd_command,
            apiserver_command,
            etcd_client,
            watchdog,
            cert: cert_dir.join("apiserver.crt"),
            admin_token: admin_token.clone(),
        };
        // The serving certificate is generated at start-up; the kubeconfig trusts it.
        let cert = cert_dir.join("apiserver.crt");
        server.wait_for_file(&cert)?;
        write(
            &server.kubeconfig,
            &kubeconfig_text(&server.url, &admin_token, &cert),
        )?;
        write(
            &server.user_kubeconfig,
            &kubeconfig_text(&server.url, &user_token, &cert),
        )?;
        server
            .wait_ready()
            .and_then(|()| server.grant_user())
            .map_err(|err| {
                anyhow!(
                    "{err}\n--- {}:\n{}\n--- {}:\n{}",
                    apiserver_log.display(),
                    tail(&apiserver_log),
                    etcd_log.display(),
                    tail(&etcd_log)
                )
            })?;
        Ok(server)
    }

    /// The kubeconfig file (a `system:masters` token, the server's certificate trusted).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig of a user bound to `cluster-admin` outside `system:masters`: the
    /// server's in-flight limits apply to its requests.
    pub fn user_kubeconfig(&self) -> &Path {
        &self.user_kubeconfig
    }

    /// The client configuration of [`TestServer::user_kubeconfig`].
    pub async fn user_config(&self) -> kube::Config {
        load_config(&self.user_kubeconfig)
            .await
            .expect("the test server's user kubeconfig")
    }

    /// Writes a kubeconfig for this server that authenticates with `token` (a service
    /// account's, from the TokenRequest API, say) to `path`.
    pub fn write_kubeconfig(&self, token: &str, path: &Path) -> Result<()> {
        write(path, &kubeconfig_text(&self.url, token, &self.cert))
    }

    /// A kubeconfig for this server with everything inline (the CA as data), as a Secret holds
    /// one: `token`, or the `system:masters` token.
    pub fn inline_kubeconfig(&self, token: Option<&str>) -> Result<String> {
        use base64::Engine as _;
        let cert =
            std::fs::read(&self.cert).map_err(|err| anyhow!("{}: {err}", self.cert.display()))?;
        let ca = base64::engine::general_purpose::STANDARD.encode(cert);
        let token = token.unwrap_or(&self.admin_token);
        Ok(format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: endstate-test\n\
             clusters:\n- name: endstate-test\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {ca}\n\
             users:\n- name: endstate-test\n  user:\n    token: {token}\n\
             contexts:\n- name: endstate-test\n  context:\n    cluster: endstate-test\n    \
             user: endstate-test\n",
            self.url
        ))
    }

    /// The directory holding the server's files (its logs, an audit log it was asked for).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends `signal` (`STOP`, `CONT`) to the API server: a frozen server takes connections
    /// and answers nothing.
    pub fn signal_apiserver(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.apiserver.id().to_string())
            .status()
            .map_err(|err| anyhow!("kill -{signal}: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(anyhow!(
                "kill -{signal} {} failed ({status})",
                self.apiserver.id()
            ))
        }
    }

    /// The server's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client for this server, on the caller's runtime.
    pub async fn client(&self) -> kube::Client {
        let config = self.config().await;
        kube::Client::try_from(config).expect("a client for the test server")
    }

    /// The client configuration for this server.
    pub async fn config(&self) -> kube::Config {
        load_config(&self.kubeconfig)
            .await
            .expect("the test server's kubeconfig")
    }

    fn wait_for_file(&mut self, path: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(anyhow!("kube-apiserver wrote no {}", path.display()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        for (name, child) in [
            ("etcd", &mut self.etcd),
            ("kube-apiserver", &mut self.apiserver),
        ] {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(anyhow!("{name} exited at start-up ({status})"));
            }
        }
        Ok(())
    }

    /// Polls `/readyz` until it answers `ok`.
    /// Kills etcd (SIGKILL) and starts it again on the same ports and data, as a crashed
    /// member restarted by its supervisor; returns once the API server answers again.
    pub fn restart_etcd(&mut self) -> Result<()> {
        restart(&mut self.etcd, &self.etcd_command)?;
        self.rewatch();
        self.wait_ready()
    }

    /// Kills kube-apiserver (SIGKILL) and starts it again on the same port, certificates and
    /// etcd; returns once it is ready. Clients see their connections and watches cut.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        restart(&mut self.apiserver, &self.apiserver_command)?;
        self.rewatch();
        self.wait_ready()
    }

    /// Restarts kube-apiserver as [`TestServer::restart_apiserver`] does, compacting etcd's
    /// history while it is down: a client's watch resumed from a resourceVersion older than the
    /// compaction is answered `410 Gone` (with `--watch-cache=false`, from etcd itself), so
    /// the client must list again.
    pub fn restart_apiserver_compacting(&mut self) -> Result<()> {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        self.compact_etcd()?;
        self.apiserver = self.apiserver_command.spawn()?;
        self.rewatch();
        self.wait_ready()
    }

    /// Compacts etcd's history up to its current revision (through etcd's JSON gateway).
    pub fn compact_etcd(&self) -> Result<u64> {
        let range = etcd_post(
            self.etcd_client,
            "/v3/kv/range",
            r#"{"key":"Lw==","limit":1}"#,
        )?;
        let revision = serde_json::from_str::<serde_json::Value>(&range)
            .ok()
            .and_then(|v| v["header"]["revision"].as_str()?.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no revision in etcd's answer: {range}"))?;
        etcd_post(
            self.etcd_client,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )?;
        Ok(revision)
    }

    /// A watchdog for the processes now running.
    fn rewatch(&mut self) {
        if let Some((mut old, stdin)) = self.watchdog.take() {
            let _ = old.kill();
            let _ = old.wait();
            drop(stdin);
        }
        self.watchdog = watchdog(&[self.etcd.id(), self.apiserver.id()], &self.dir);
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let kubeconfig = self.kubeconfig.clone();
            let Err(last) = on_own_runtime(async move { readyz(&kubeconfig).await }) else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "kube-apiserver at {} was not ready after {READY_TIMEOUT:?}: {last}",
                    self.url
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Binds the user to `cluster-admin` and waits until the authorizer has seen it.
    fn grant_user(&mut self) -> Result<()> {
        let admin = self.kubeconfig.clone();
        on_own_runtime(async move { bind_user(&admin).await })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let user = self.user_kubeconfig.clone();
            let Err(last) = on_own_runtime(async move { user_can_list(&user).await }) else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(anyhow!("the test user never got its permissions: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The user of [`TestServer::user_kubeconfig`], and its group.
const USER: &str = "endstate-test-user";
const USER_GROUP: &str = "endstate-test-users";

/// Runs `future` on a runtime of its own, on a thread of its own, so that it can be called
/// from inside a test's runtime.
fn on_own_runtime<T: Send + 'static>(
    future: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)?
            .block_on(future)
    })
    .join()
    .unwrap_or_else(|_| Err(anyhow!("a probe of the test server panicked")))
}

async fn load_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(anyhow::Error::from)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|err| anyhow!("{}: {err}", path.display()))
}

async fn bind_user(admin: &Path) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    let client = kube::Client::try_from(load_config(admin).await?).map_err(anyhow::Error::from)?;
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(client);
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(USER_GROUP.to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: "cluster-admin".to_owned(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Group".to_owned(),
            name: USER_GROUP.to_owned(),
            namespace: None,
        }]),
    };
    bindings
        .create(&Default::default(), &binding)
        .await
        .map(drop)
        .map_err(|err| anyhow!("cannot bind the test user to cluster-admin: {err}"))
}

async fn user_can_list(user: &Path) -> Result<()> {
    let client = kube::Client::try_from(load_config(user).await?).map_err(anyhow::Error::from)?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    namespaces
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map(drop)
        .map_err(anyhow::Error::from)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some((mut watchdog, stdin)) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
            drop(stdin);
        }
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn readyz(kubeconfig: &Path) -> Result<()> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(anyhow::Error::from)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(anyhow::Error::from)?;
    let client = kube::Client::try_from(config).map_err(anyhow::Error::from)?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(anyhow::Error::from)?;
    let body = client
        .request_text(request)
        .await
        .map_err(anyhow::Error::from)?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        Err(anyhow!("/readyz answered {body:?}"))
    }
}

/// A shell that kills the servers and removes their directory once its stdin closes, which
/// happens when this process exits, however it exits.
/// A POST of JSON to etcd's gateway on loopback; the body of a 200 answer.
fn etcd_post(port: u16, path: &str, body: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|err| anyhow!("etcd on {port}: {err}"))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|err| anyhow!("etcd {path}: {err}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|err| anyhow!("etcd {path}: {err}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(anyhow!("etcd {path}: {answer}"));
    }
    // A chunked body carries its length first: the JSON is the part between the braces.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => body,
    };
    Ok(json.to_owned())
}

fn restart(child: &mut Child, launch: &Launch) -> Result<()> {
    let _ = child.kill();
    let _ = child.wait();
    *child = launch.spawn()?;
    Ok(())
}

fn watchdog(pids: &[u32], dir: &Path) -> Option<(Child, ChildStdin)> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let script = format!(
        "read -r _; kill -9 {} 2>/dev/null; rm -rf '{}'",
        pids.join(" "),
        dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

fn kubeconfig_text(url: &str, token: &str, ca: &Path) -> String {
    let ca = ca.display();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: endstate-test\n  \
           cluster:\n    \
             server: {url}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: endstate-test\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: endstate-test\n  \
           context:\n    \
             cluster: endstate-test\n    \
             user: endstate-test\n    \
             namespace: default\n\
         current-context: endstate-test\n"
    )
}

/// A bearer token unique to this server; it only has to be unguessable by other tests.
fn token(salt: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut token = String::new();
    let mut state = nanos ^ (u128::from(std::process::id()) << 64);
    for byte in salt.bytes() {
        state = state.rotate_left(8) ^ u128::from(byte);
    }
    for _ in 0..32 {
        // xorshift, seeded by the clock and the pid
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let _ = write!(token, "{:x}", state & 0xf);
    }
    token
}

fn free_ports() -> Result<[u16; 3]> {
    // Hold all three listeners at once so the ports differ; the servers bind them right after.
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|err| anyhow!("cannot find a free loopback port: {err}"))?;
    let port = |i: usize| {
        listeners[i]
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    };
    Ok([port(0), port(1), port(2)])
}

/// A fresh directory; etcd's data goes to tmpfs when there is one, where fsync is free.
fn scratch_dir() -> io::Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "endstate-test-server-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|err| anyhow!("cannot write {}: {err}", path.display()))
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| anyhow!("cannot open {}: {err}", path.display()))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_names_server_token_and_ca() {
        let text = kubeconfig_text("https://127.0.0.1:1", "t0k", Path::new("/x/ca.crt"));
        let config = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("endstate-test"));
        assert!(text.contains("server: https://127.0.0.1:1"));
        assert!(text.contains("token: t0k"));
        assert!(text.contains("certificate-authority: /x/ca.crt"));
    }

    #[test]
    fn free_ports_differ() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c);
    }
}
