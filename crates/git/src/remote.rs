//! Talking to a remote: fetch one branch into the mirror, push one ref. Credentials are
//! offered once per kind (a refused credential is an error, not a loop), SSH host keys must be
//! in the configured `known_hosts`, TLS is verified by OpenSSL, and every message from the
//! transport is redacted before it leaves this module.

use std::cell::{Cell, RefCell};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode,
    FetchOptions, FetchPrune, Oid, PushOptions, RemoteCallbacks, Repository,
};

use crate::credentials::{Credentials, Redactor, display_url};
use crate::error::{Error, FailureKind, Result};

/// A remote and how to reach it.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    url: String,
    credentials: Credentials,
    redactor: Redactor,
}

impl Remote {
    pub(crate) fn new(url: &str, credentials: Credentials) -> Self {
        let redactor = credentials.redactor();
        Remote {
            url: url.to_owned(),
            credentials,
            redactor,
        }
    }

    /// The URL without any password.
    pub(crate) fn display_url(&self) -> String {
        display_url(&self.url)
    }

    /// Fetches `branch` into `refs/heads/<branch>` of `repo` and returns its commit. Nothing
    /// is pruned, no tag is fetched, and on failure no ref has moved.
    pub(crate) fn fetch(&self, repo: &Repository, branch: &str) -> Result<Oid> {
        let refusal = RefCell::new(None);
        let fail = |err: git2::Error| Error::Fetch {
            url: self.display_url(),
            branch: branch.to_owned(),
            kind: FailureKind::of(&err),
            message: self.message(&err, &refusal),
        };
        let mut remote = repo.remote_anonymous(&self.url).map_err(fail)?;
        let attempts = Cell::new(0);
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks(&attempts, &refusal))
            .prune(FetchPrune::Off)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        let refname = format!("refs/heads/{branch}");
        let refspec = format!("+{refname}:{refname}");
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(fail)?;
        // A branch the remote has is in the mirror now. Asking an empty remote for its list
        // is not safe (libgit2 hands back no array at all), and a mirror without the ref
        // knows the answer already.
        if repo.refname_to_id(&refname).is_err() {
            return Err(Error::BranchNotFound {
                url: self.display_url(),
                branch: branch.to_owned(),
            });
        }
        let advertised = remote
            .list()
            .map_err(fail)?
            .iter()
            .find(|head| head.name() == refname)
            .map(|head| head.oid());
        match advertised {
            Some(oid) => Ok(oid),
            None => Err(Error::BranchNotFound {
                url: self.display_url(),
                branch: branch.to_owned(),
            }),
        }
    }

    /// Pushes `local` (a ref of `repo`) to `remote_ref`, never forcing. A push refused
    /// because the remote ref moved is [`FailureKind::Rejected`].
    pub(crate) fn push(&self, repo: &Repository, local: &str, remote_ref: &str) -> Result<()> {
        let fail = |kind: Option<FailureKind>, message: &str| Error::Push {
            url: self.display_url(),
            refname: remote_ref.to_owned(),
            kind: kind.unwrap_or(FailureKind::Other),
            message: self.redactor.redact(message),
        };
        let refusal = RefCell::new(None);
        let git_fail =
            |err: git2::Error| fail(Some(FailureKind::of(&err)), &self.message(&err, &refusal));
        let mut remote = repo.remote_anonymous(&self.url).map_err(git_fail)?;
        let attempts = Cell::new(0);
        let refused = RefCell::new(None);
        let mut callbacks = self.callbacks(&attempts, &refusal);
        callbacks.push_update_reference(|_, status| {
            if let Some(status) = status {
                *refused.borrow_mut() = Some(status.to_owned());
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        // No leading `+`: the remote must fast-forward.
        let refspec = format!("{local}:{remote_ref}");
        match remote.push(&[refspec.as_str()], Some(&mut options)) {
            Ok(()) => {}
            Err(err) if err.code() == ErrorCode::NotFastForward => {
                return Err(fail(Some(FailureKind::Rejected), err.message()));
            }
            Err(err) => return Err(git_fail(err)),
        }
        drop(options);
        match refused.into_inner() {
            Some(status) => Err(fail(Some(FailureKind::Rejected), &status)),
            None => Ok(()),
        }
    }

    /// The transport's message, or the reason our own check gave (libgit2 replaces a host
    /// key refusal's message with a generic one).
    fn message(&self, err: &git2::Error, refusal: &RefCell<Option<String>>) -> String {
        let message = refusal
            .borrow_mut()
            .take()
            .unwrap_or_else(|| err.message().to_owned());
        self.redactor.redact(&message)
    }

    /// `refusal` receives the reason a host key was refused.
    fn callbacks<'a>(
        &'a self,
        attempts: &'a Cell<u32>,
        refusal: &'a RefCell<Option<String>>,
    ) -> RemoteCallbacks<'a> {
        let mut callbacks = RemoteCallbacks::new();
        let creds = &self.credentials;
        callbacks.credentials(move |_url, user_from_url, allowed| {
            // libgit2 asks again after a refusal; asking twice would loop forever.
            let n = attempts.get();
            attempts.set(n + 1);
            if n > 0 {
                return Err(auth_error("the remote refused the configured credentials"));
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &creds.ssh_key
            {
                return Cred::ssh_key_from_memory(
                    user_from_url.unwrap_or("git"),
                    None,
                    key.expose(),
                    creds.ssh_passphrase.as_ref().map(|p| p.expose()),
                );
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some((user, password)) = creds.basic()
            {
                return Cred::userpass_plaintext(user, password);
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user_from_url.unwrap_or("git"));
            }
            Err(auth_error(
                "the remote asks for credentials and none of the kind it accepts are configured",
            ))
        });
        callbacks.certificate_check(move |cert, host| match cert.as_hostkey() {
            Some(hostkey) => {
                let refuse = |message: String| {
                    *refusal.borrow_mut() = Some(message.clone());
                    Err(host_key_error(message))
                };
                let Some(raw) = hostkey.hostkey() else {
                    return refuse(format!("{host} sent no SSH host key"));
                };
                match creds.known_hosts.as_deref() {
                    Some(known) if known_hosts_accept(known, host, raw) => {
                        Ok(CertificateCheckStatus::CertificateOk)
                    }
                    Some(_) => refuse(format!(
                        "the SSH host key of {host} is not in the configured known_hosts"
                    )),
                    None => refuse(format!(
                        "no known_hosts configured; refusing the unverified SSH host key of {host}"
                    )),
                }
            }
            // TLS: OpenSSL has verified the chain; keep its verdict.
            None => Ok(CertificateCheckStatus::CertificatePassthrough),
        });
        callbacks
    }
}

fn auth_error(message: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Net, message)
}

fn host_key_error(message: String) -> git2::Error {
    git2::Error::new(ErrorCode::Certificate, ErrorClass::Ssh, &message)
}

/// Whether a `known_hosts` text lists `key` (the SSH wire encoding) for `host`. Plain host
/// patterns (`host`, `[host]:port`, comma-separated, `*` wildcards) are understood; hashed
/// entries (`|1|…`) and `@cert-authority` lines are not and never match; a `@revoked` key never
/// matches either.
pub(crate) fn known_hosts_accept(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    let mut accepted = false;
    for line in known_hosts.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (revoked, line) = match line.strip_prefix("@revoked") {
            Some(rest) => (true, rest.trim_start()),
            None if line.starts_with('@') => continue,
            None => (false, line),
        };
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(public) = ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}")) else {
            continue;
        };
        if public.to_bytes().ok().as_deref() != Some(key) {
            continue;
        }
        if revoked {
            return false;
        }
        accepted |= hosts.split(',').any(|pattern| host_matches(pattern, host));
    }
    accepted
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = match pattern.strip_prefix('[').and_then(|p| p.split_once("]:")) {
        Some((name, _port)) => name,
        None => pattern,
    };
    wildcard(pattern.as_bytes(), host.as_bytes())
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| wildcard(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && wildcard(rest, &text[1..]),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t.eq_ignore_ascii_case(c) && wildcard(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzxVtLzOkMD3hjHAVc6W0YiCExLObvdWqJ2TaMk38UA";

    fn wire() -> Vec<u8> {
        ssh_key::PublicKey::from_openssh(KEY)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn known_hosts_match_host_and_key() {
        let known = format!("# comment\ngit.example.com,[10.0.0.1]:2222 {KEY}\n");
        assert!(known_hosts_accept(&known, "git.example.com", &wire()));
        assert!(known_hosts_accept(&known, "10.0.0.1", &wire()));
        assert!(!known_hosts_accept(&known, "evil.example.com", &wire()));
        assert!(!known_hosts_accept(&known, "git.example.com", b"other"));
        let wild = format!("*.example.com {KEY}\n");
        assert!(known_hosts_accept(&wild, "git.example.com", &wire()));
        let revoked = format!("{known}@revoked * {KEY}\n");
        assert!(!known_hosts_accept(&revoked, "git.example.com", &wire()));
    }
}
