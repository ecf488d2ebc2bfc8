//! Real repositories and transports for the tests: bare remotes and clones made with the `git`
//! CLI, served over `git daemon` (fetch and push) and `git http-backend` behind a small HTTP
//! server (fetch, with basic authentication). A missing tool fails the test, loudly.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_api::Machine;
use endstate_git::{Error, FailureKind, Oid};

/// Runs `git` with a clean, fixed identity and configuration; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test Author",
            "-c",
            "user.email=author@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("the `git` CLI is required by these tests and cannot run: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bare remote and a working clone of it.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub remote: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    /// An empty bare remote `remote.git` and a clone with the small fleet committed and pushed.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "--bare", "-q", "remote.git"]);
        git(dir.path(), &["init", "-q", "work"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        let repo = Repo { dir, remote, work };
        for (path, text) in fleet() {
            repo.write(&path, &text);
        }
        repo.commit("Add the fleet");
        repo.push();
        repo
    }

    pub fn write(&self, path: &str, text: &str) {
        let full = self.work.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// Commits everything; returns the commit.
    pub fn commit(&self, message: &str) -> Oid {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> Oid {
        Oid::from_str(&git(&self.work, &["rev-parse", "HEAD"])).unwrap()
    }

    pub fn push(&self) {
        git(
            &self.work,
            &["push", "-q", "origin", "HEAD:refs/heads/main"],
        );
    }

    pub fn force_push(&self) {
        git(
            &self.work,
            &["push", "-q", "--force", "origin", "HEAD:refs/heads/main"],
        );
    }

    /// The remote branch's commit.
    pub fn remote_head(&self) -> Oid {
        Oid::from_str(&git(&self.remote, &["rev-parse", "refs/heads/main"])).unwrap()
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    pub fn mirror(&self) -> PathBuf {
        self.dir.path().join("mirror.git")
    }
}

/// A Machine document.
pub fn machine(name: &str, ip: u32, kubelet: &str) -> String {
    let machine = Machine::test(name)
        .in_cluster("c1")
        .ip(format!("10.0.0.{ip}"))
        .hostname(format!("{name}.example.internal"))
        .idc("hz-a")
        .package("kubelet", kubelet);
    format!("---\n{}", machine.yaml())
}

/// Three commits: a1 upgraded, then a2, then b1.
pub fn three_upgrades(repo: &Repo) -> [Oid; 3] {
    repo.write(
        "base/machines-a.yaml",
        &(machine("a1", 1, "kubelet-2") + &machine("a2", 2, "kubelet-1")),
    );
    let a1 = repo.commit("Upgrade a1");
    repo.write(
        "base/machines-a.yaml",
        &(machine("a1", 1, "kubelet-2") + &machine("a2", 2, "kubelet-2")),
    );
    let a2 = repo.commit("Upgrade a2");
    repo.write(
        "base/machines-b.yaml",
        &(machine("b1", 3, "kubelet-2") + &machine("b2", 4, "kubelet-1")),
    );
    let b1 = repo.commit("Upgrade b1");
    repo.push();
    [a1, a2, b1]
}

/// A small valid fleet: packages, a cluster, and two files of machines.
pub fn fleet() -> Vec<(String, String)> {
    let package = |name: &str, version: &str| {
        format!(
            "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: {name}\nspec:\n  packageName: kubelet\n  version: \"{version}\"\n  install:\n    url: https://packages.example.internal/{name}.rpm\n    sha256: {}\n",
            "0123456789abcdef".repeat(4)
        )
    };
    vec![
        (
            "base/kustomization.yaml".into(),
            "resources:\n- packages.yaml\n- cluster.yaml\n- machines-a.yaml\n- machines-b.yaml\n"
                .into(),
        ),
        (
            "base/packages.yaml".into(),
            package("kubelet-1", "1") + &package("kubelet-2", "2"),
        ),
        (
            "base/cluster.yaml".into(),
            "apiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s\nspec:\n  version: \"1\"\n  etcd: {image: e}\n  apiserver: {image: a}\n  controllerManager: {image: c}\n  scheduler: {image: s}\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  packageVersion: k8s\n".into(),
        ),
        (
            "base/machines-a.yaml".into(),
            machine("a1", 1, "kubelet-1") + &machine("a2", 2, "kubelet-1"),
        ),
        (
            "base/machines-b.yaml".into(),
            machine("b1", 3, "kubelet-1") + &machine("b2", 4, "kubelet-1"),
        ),
    ]
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening ({status}); is it installed?");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git daemon` serving every repository under a directory, with push enabled.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn serve(base: &Path) -> Self {
        let port = free_port();
        // The daemon binary itself: `git daemon` would run it as a child that outlives a kill.
        let program = PathBuf::from(git(base, &["--exec-path"])).join("git-daemon");
        let mut child = Command::new(&program)
            .args([
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "`git daemon` is required by these tests (Debian: the git package) and \
                     {} cannot run: {e}",
                    program.display()
                )
            });
        wait_for_port(port, "git daemon", &mut child);
        Daemon { child, port }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git http-backend` behind a small HTTP server (hyper, on a runtime of its own), requiring
/// basic authentication.
pub struct HttpGit {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub port: u16,
}

/// A request, as the CGI program reads it.
struct CgiRequest {
    authorization: Option<String>,
    path: String,
    query: String,
    method: String,
    content_type: String,
    encoding: String,
    body: Vec<u8>,
}

/// What the CGI program answered: status, headers, payload.
type CgiResponse = (u16, Vec<(String, String)>, Vec<u8>);

impl HttpGit {
    /// Serves the repositories under `root` to `user`:`password` only.
    pub fn serve(root: &Path, user: &str, password: &str) -> Self {
        use http_body_util::BodyExt as _;

        let backend = PathBuf::from(git(root, &["--exec-path"])).join("git-http-backend");
        assert!(
            backend.exists(),
            "`git http-backend` is required by these tests and is not at {}",
            backend.display()
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!("Basic {}", base64(&format!("{user}:{password}")));
        let context = Arc::new((backend, root.to_owned(), expected));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => accepted.unwrap().0,
                        _ = &mut stopped => return,
                    };
                    let context = context.clone();
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let context = context.clone();
                            async move {
                                let header = |name: &str| {
                                    request
                                        .headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned)
                                };
                                let mut cgi_request = CgiRequest {
                                    authorization: header("authorization"),
                                    path: request.uri().path().to_owned(),
                                    query: request.uri().query().unwrap_or_default().to_owned(),
                                    method: request.method().as_str().to_owned(),
                                    content_type: header("content-type").unwrap_or_default(),
                                    encoding: header("content-encoding").unwrap_or_default(),
                                    body: Vec::new(),
                                };
                                cgi_request.body =
                                    request.into_body().collect().await?.to_bytes().to_vec();
                                let (status, headers, payload) =
                                    tokio::task::spawn_blocking(move || {
                                        let (backend, root, expected) = context.as_ref();
                                        cgi(backend, root, expected, cgi_request)
                                    })
                                    .await
                                    .unwrap();
                                let mut response = hyper::Response::builder().status(status);
                                for (k, v) in headers {
                                    response = response.header(k, v);
                                }
                                Ok::<_, hyper::Error>(
                                    response
                                        .body(http_body_util::Full::new(hyper::body::Bytes::from(
                                            payload,
                                        )))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        HttpGit {
            stop: Some(stop),
            thread: Some(thread),
            port,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cgi(backend: &Path, root: &Path, expected_auth: &str, request: CgiRequest) -> CgiResponse {
    if request.authorization.as_deref() != Some(expected_auth) {
        return (
            401,
            vec![(
                "WWW-Authenticate".to_owned(),
                "Basic realm=\"git\"".to_owned(),
            )],
            b"unauthorized".to_vec(),
        );
    }
    let body = request.body;
    let mut child = Command::new(backend)
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("REQUEST_METHOD", &request.method)
        .env("CONTENT_TYPE", &request.content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", &request.encoding)
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .expect("CGI output has headers");
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let payload = out.stdout[split.0 + split.1..].to_vec();
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            status = v.trim()[..3].parse().unwrap();
        } else {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (status, headers, payload)
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Tracing output of everything run in `f`, as text.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, text)
}

/// Asserts that `err` is a fetch failure of `kind` whose message says `says`.
pub fn assert_fetch_failed(err: &Error, kind: FailureKind, says: &str) {
    match err {
        Error::Fetch { kind: found, .. } if *found == kind => {}
        other => panic!("expected a fetch failure ({kind}), got: {other}"),
    }
    assert!(err.to_string().contains(says), "{err}");
}

/// Makes an ed25519 key pair at `path` and `path.pub` with `ssh-keygen`; returns the public
/// key.
pub fn ssh_keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .unwrap_or_else(|e| {
            panic!("`ssh-keygen` is required by these tests (Debian: openssh-client): {e}")
        });
    assert!(status.success(), "ssh-keygen failed");
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}
