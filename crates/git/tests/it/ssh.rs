//! Fetching over SSH from a real `sshd` on loopback: key authentication, and host keys checked
//! against `known_hosts`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use endstate_git::{Credentials, FailureKind, History, Secret, Source, SourceConfig};

use crate::support::{Repo, assert_fetch_failed, free_port, ssh_keygen, wait_for_port};

/// An `sshd` on a free loopback port that lets one key in as the current user.
struct Sshd {
    child: Child,
    port: u16,
    host_key: String,
}

impl Sshd {
    fn start(dir: &Path, client_public: &str) -> Self {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "`sshd` is required by the SSH transport tests (Debian: openssh-server)"
        );
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host = dir.join("ssh_host_ed25519_key");
        let host_key = ssh_keygen(&host);
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, client_public).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nPidFile {}\n",
                host.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", sshd.display()));
        wait_for_port(port, "sshd", &mut child);
        Sshd {
            child,
            port,
            host_key,
        }
    }

    fn known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn fetches_over_ssh_with_a_key_and_checks_the_host_key() {
    let repo = Repo::new();
    let dir = repo.dir.path().join("ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let client = dir.join("client");
    let client_public = ssh_keygen(&client);
    let sshd = Sshd::start(&dir, &client_public);
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        user(),
        sshd.port,
        repo.remote.display()
    );
    let credentials = Credentials {
        ssh_key: Some(Secret::new(std::fs::read_to_string(&client).unwrap())),
        known_hosts: Some(sshd.known_hosts()),
        ..Default::default()
    };
    let fetch = |credentials: Credentials, mirror: &str| {
        let config =
            SourceConfig::new(url.clone(), repo.dir.path().join(mirror)).credentials(credentials);
        Source::open(config, History::default()).unwrap().fetch()
    };

    let fetched = fetch(credentials.clone(), "m1").unwrap();
    assert_eq!(fetched.commit, repo.remote_head());

    // A host key that is not the one in known_hosts: refused before authenticating.
    let impostor = ssh_keygen(&dir.join("impostor"));
    let wrong_host = Credentials {
        known_hosts: Some(format!("[127.0.0.1]:{} {impostor}", sshd.port)),
        ..credentials.clone()
    };
    let err = fetch(wrong_host, "m2").unwrap_err();
    assert_fetch_failed(
        &err,
        FailureKind::Certificate,
        "not in the configured known_hosts",
    );
    let no_known_hosts = Credentials {
        known_hosts: None,
        ..credentials.clone()
    };
    let err = fetch(no_known_hosts, "m3").unwrap_err();
    assert_fetch_failed(&err, FailureKind::Certificate, "no known_hosts configured");

    // A client key the server does not know.
    let stranger = dir.join("stranger");
    ssh_keygen(&stranger);
    let wrong_key = Credentials {
        ssh_key: Some(Secret::new(std::fs::read_to_string(&stranger).unwrap())),
        ..credentials
    };
    let err = fetch(wrong_key, "m4").unwrap_err();
    assert_fetch_failed(&err, FailureKind::Auth, "authentication failed");
}
