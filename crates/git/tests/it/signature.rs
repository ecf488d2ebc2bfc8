//! The SSH signature policy, on commits signed by `git` with keys made by `ssh-keygen`, and on
//! endstate's own signed reverts.

use std::path::{Path, PathBuf};
use std::process::Command;

use endstate_git::{
    Error, Evidence, History, Refusal, RevertConfig, RevertOutcome, RevertWriter, Secret,
    SignaturePolicy, Source, SourceConfig, SshSigner,
};

use crate::support::{Daemon, Repo, git, machine, ssh_keygen};

/// Makes an ed25519 key pair; returns the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    ssh_keygen(&path);
    path
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub")).unwrap()
}

/// Commits a change signed with `key` (or unsigned) and pushes it.
fn signed_commit(repo: &Repo, key: Option<&Path>, ip: u32) -> endstate_git::Oid {
    repo.write(
        "base/machines-b.yaml",
        &(machine("b1", 3, "kubelet-2") + &machine("b2", ip, "kubelet-1")),
    );
    git(&repo.work, &["add", "-A"]);
    match key {
        Some(key) => {
            let signing = format!("user.signingkey={}", key.display());
            git(
                &repo.work,
                &[
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &signing,
                    "commit",
                    "-q",
                    "-S",
                    "-m",
                    "Signed change",
                ],
            );
        }
        None => {
            git(&repo.work, &["commit", "-q", "-m", "Unsigned change"]);
        }
    };
    repo.push();
    repo.head()
}

fn source(repo: &Repo, policy: SignaturePolicy) -> Source {
    let config = SourceConfig::new(repo.file_url(), repo.mirror())
        .path("base")
        .verify(policy);
    Source::open(config, History::default()).unwrap()
}

#[test]
fn ssh_signatures_by_allowed_keys_only() {
    let repo = Repo::new();
    let allowed = keygen(repo.dir.path(), "allowed");
    let other = keygen(repo.dir.path(), "other");
    let policy = SignaturePolicy::ssh(&public(&allowed)).unwrap();

    let good = signed_commit(&repo, Some(&allowed), 10);
    let fetched = source(&repo, policy.clone()).fetch().unwrap();
    assert_eq!(fetched.commit, good);
    assert!(fetched.signed_by.unwrap().key.starts_with("SHA256:"));

    let stranger = signed_commit(&repo, Some(&other), 11);
    match source(&repo, policy.clone()).fetch() {
        Err(Error::Unverified {
            commit,
            reason: Refusal::UnknownKey { .. },
        }) => {
            assert_eq!(commit, stranger);
        }
        other => panic!("expected an unknown key, got {other:?}"),
    }

    let unsigned = signed_commit(&repo, None, 12);
    let err = source(&repo, policy).fetch().unwrap_err();
    assert!(
        matches!(&err, Error::Unverified { commit, reason: Refusal::Unsigned } if *commit == unsigned),
        "{err}"
    );
    assert!(err.to_string().contains("unsigned"), "{err}");
}

#[test]
fn a_tampered_commit_fails_verification() {
    let repo = Repo::new();
    let key = keygen(repo.dir.path(), "allowed");
    let policy = SignaturePolicy::ssh(&public(&key)).unwrap();
    signed_commit(&repo, Some(&key), 10);
    // Rewrite the commit's message keeping its gpgsig header.
    let raw = git(&repo.work, &["cat-file", "commit", "HEAD"]);
    let forged = raw.replace("Signed change", "Forged change") + "\n";
    let out = Command::new("git")
        .args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .current_dir(&repo.work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(forged.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let forged_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    git(&repo.work, &["reset", "-q", "--hard", &forged_id]);
    repo.force_push();
    let err = source(&repo, policy).fetch().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unverified {
                reason: Refusal::BadSignature { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn endstates_signed_reverts_pass_the_policy() {
    let repo = Repo::new();
    let key = keygen(repo.dir.path(), "endstate");
    let target = signed_commit(&repo, Some(&key), 10);
    let signer = SshSigner::new(&Secret::new(std::fs::read_to_string(&key).unwrap())).unwrap();
    let policy = SignaturePolicy::ssh(&signer.public_key().to_openssh().unwrap()).unwrap();
    let daemon = Daemon::serve(repo.dir.path());
    let url = daemon.url("remote.git");
    let mut config = RevertConfig::new("prod", "endstate", "endstate@example.com");
    config.signer = Some(signer);
    let outcome = RevertWriter::open(&SourceConfig::new(url.clone(), repo.mirror()), config)
        .unwrap()
        .revert(&[target], &Evidence::default())
        .unwrap();
    let RevertOutcome::Pushed { head, .. } = outcome else {
        panic!("expected a push, got {outcome:?}");
    };
    let config = SourceConfig::new(url, repo.dir.path().join("verifier.git"))
        .path("base")
        .verify(policy);
    let fetched = Source::open(config, History::default())
        .unwrap()
        .fetch()
        .unwrap();
    assert_eq!(fetched.commit, head);
    // And git itself agrees the signature is good.
    let signers = repo.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("endstate@example.com {}", public(&key))).unwrap();
    let verify = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    git(
        &repo.remote,
        &["-c", &verify, "verify-commit", &head.to_string()],
    );
}

/// A throwaway GnuPG home with one signing key; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
    fingerprint: String,
}

impl Gpg {
    fn new(name: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut gpg = Gpg {
            home,
            fingerprint: String::new(),
        };
        gpg.run(&[
            "--quick-gen-key",
            &format!("{name} <{name}@example.com>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = gpg.run(&["--with-colons", "--list-secret-keys"]);
        gpg.fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned();
        gpg
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .env("GNUPGHOME", self.home.path())
            .output()
            .unwrap_or_else(|e| panic!("`gpg` is required by these tests (Debian: gnupg): {e}"));
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn public_key(&self) -> String {
        self.run(&["--armor", "--export", &self.fingerprint])
    }

    /// Commits a change signed with this key and pushes it.
    fn commit(&self, repo: &Repo, ip: u32) -> endstate_git::Oid {
        repo.write(
            "base/machines-b.yaml",
            &(machine("b1", 3, "kubelet-2") + &machine("b2", ip, "kubelet-1")),
        );
        git(&repo.work, &["add", "-A"]);
        let status = Command::new("git")
            .args(["-c", "gpg.format=openpgp", "-c"])
            .arg(format!("user.signingkey={}", self.fingerprint))
            .args([
                "-c",
                "user.name=Test Author",
                "-c",
                "user.email=author@example.com",
            ])
            .args(["commit", "-q", "-S", "-m", "OpenPGP-signed change"])
            .current_dir(&repo.work)
            .env("GNUPGHOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(status.success(), "git commit -S with gpg failed");
        repo.push();
        repo.head()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.home.path())
            .status();
    }
}

#[test]
fn openpgp_signatures_by_allowed_keys_only() {
    let repo = Repo::new();
    let allowed = Gpg::new("allowed");
    let other = Gpg::new("other");
    let policy = SignaturePolicy::openpgp(&[allowed.public_key()]).unwrap();

    let good = allowed.commit(&repo, 10);
    let fetched = source(&repo, policy.clone()).fetch().unwrap();
    assert_eq!(fetched.commit, good);
    assert_eq!(fetched.signed_by.unwrap().key, allowed.fingerprint);

    other.commit(&repo, 11);
    let err = source(&repo, policy.clone()).fetch().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unverified {
                reason: Refusal::UnknownKey { .. },
                ..
            }
        ),
        "{err}"
    );

    // An SSH-only policy names the mismatch.
    let ssh_key = keygen(repo.dir.path(), "ssh");
    let ssh_policy = SignaturePolicy::ssh(&public(&ssh_key)).unwrap();
    allowed.commit(&repo, 12);
    let err = source(&repo, ssh_policy).fetch().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unverified {
                reason: Refusal::WrongKind { .. },
                ..
            }
        ),
        "{err}"
    );
}
