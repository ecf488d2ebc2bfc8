//! Credentials for a remote, and keeping them out of every message.
//!
//! They come from files (a mounted Secret: `identity` + `known_hosts`, or `username` +
//! `password`, or `token`) or from the environment (`ENDSTATE_GIT_*`). A [`Secret`] never
//! prints its value, and the [`Redactor`] scrubs every secret value (and any password written
//! into a URL) out of transport messages before they reach an error, a log line or a status.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// A value that must not be shown: its `Debug` and `Display` print `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for handing to the transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to authenticate to a remote. Empty means anonymous (and, for SSH, no host keys: SSH
/// remotes then fail, since an unchecked host key is never accepted).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// An SSH private key (OpenSSH format) and its passphrase.
    pub ssh_key: Option<Secret>,
    /// The passphrase of `ssh_key`.
    pub ssh_passphrase: Option<Secret>,
    /// `known_hosts` lines the SSH host key must match.
    pub known_hosts: Option<String>,
    /// HTTPS basic authentication user; with `token` alone, `x-access-token` is used.
    pub username: Option<String>,
    /// HTTPS basic authentication password.
    pub password: Option<Secret>,
    /// An HTTPS access token, sent as the basic-auth password.
    pub token: Option<Secret>,
}

impl Credentials {
    /// Reads a directory laid out like a mounted Secret: files `identity`, `identity.passphrase`,
    /// `known_hosts`, `username`, `password`, `token`, each optional.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<Option<String>> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Io { path, source }),
            }
        };
        let trimmed = |v: Option<String>| v.map(|s| s.trim_end_matches(['\r', '\n']).to_owned());
        Ok(Credentials {
            ssh_key: read("identity")?.map(Secret),
            ssh_passphrase: trimmed(read("identity.passphrase")?).map(Secret),
            known_hosts: read("known_hosts")?,
            username: trimmed(read("username")?),
            password: trimmed(read("password")?).map(Secret),
            token: trimmed(read("token")?).map(Secret),
        })
    }

    /// Reads `ENDSTATE_GIT_SSH_KEY` (the key itself) or `ENDSTATE_GIT_SSH_KEY_FILE`,
    /// `ENDSTATE_GIT_SSH_PASSPHRASE`, `ENDSTATE_GIT_KNOWN_HOSTS` (lines) or
    /// `ENDSTATE_GIT_KNOWN_HOSTS_FILE`, `ENDSTATE_GIT_USERNAME`, `ENDSTATE_GIT_PASSWORD` and
    /// `ENDSTATE_GIT_TOKEN`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let value_or_file = |value: &str, file: &str| -> Result<Option<String>> {
            if let Some(v) = var(value) {
                return Ok(Some(v));
            }
            match var(file) {
                Some(path) => {
                    std::fs::read_to_string(&path)
                        .map(Some)
                        .map_err(|source| Error::Io {
                            path: path.into(),
                            source,
                        })
                }
                None => Ok(None),
            }
        };
        Ok(Credentials {
            ssh_key: value_or_file("ENDSTATE_GIT_SSH_KEY", "ENDSTATE_GIT_SSH_KEY_FILE")?
                .map(Secret),
            ssh_passphrase: var("ENDSTATE_GIT_SSH_PASSPHRASE").map(Secret),
            known_hosts: value_or_file(
                "ENDSTATE_GIT_KNOWN_HOSTS",
                "ENDSTATE_GIT_KNOWN_HOSTS_FILE",
            )?,
            username: var("ENDSTATE_GIT_USERNAME"),
            password: var("ENDSTATE_GIT_PASSWORD").map(Secret),
            token: var("ENDSTATE_GIT_TOKEN").map(Secret),
        })
    }

    /// The user and password for HTTP basic authentication, if any.
    pub(crate) fn basic(&self) -> Option<(&str, &str)> {
        match (&self.password, &self.token) {
            (Some(password), _) => {
                Some((self.username.as_deref().unwrap_or("git"), password.expose()))
            }
            (None, Some(token)) => Some((
                self.username.as_deref().unwrap_or("x-access-token"),
                token.expose(),
            )),
            (None, None) => None,
        }
    }

    /// A redactor for every secret value here (and passwords in URLs).
    pub fn redactor(&self) -> Redactor {
        let mut secrets: Vec<String> = [&self.password, &self.token, &self.ssh_passphrase]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_owned())
            .collect();
        // A private key is never echoed whole, but any of its lines might be.
        if let Some(key) = &self.ssh_key {
            secrets.extend(
                key.expose()
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .map(str::to_owned),
            );
        }
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }
}

/// Scrubs secrets out of text.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// `text` with every secret replaced by `***` and URL passwords removed.
    pub fn redact(&self, text: &str) -> String {
        let mut out = strip_url_password(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// A URL fit for display: `https://user:pass@host/x` becomes `https://user@host/x`.
pub fn display_url(url: &str) -> String {
    strip_url_password(url)
}

/// Removes the password of every `scheme://user:password@` in `text`.
fn strip_url_password(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                let user = userinfo.split(':').next().unwrap_or_default();
                out.push_str(user);
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let creds = Credentials {
            password: Some(Secret::new("hunter2-sentinel")),
            ..Default::default()
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let r = creds.redactor();
        assert_eq!(
            r.redact("auth hunter2-sentinel failed for https://bob:pw@h/r and ssh://h/x"),
            "auth *** failed for https://bob@h/r and ssh://h/x"
        );
    }

    #[test]
    fn a_mounted_secret_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("username"), "fleet-bot\n").unwrap();
        std::fs::write(dir.path().join("password"), "pa55word\n").unwrap();
        std::fs::write(
            dir.path().join("known_hosts"),
            "git.example.com ssh-ed25519 AAAA\n",
        )
        .unwrap();
        let creds = Credentials::from_dir(dir.path()).unwrap();
        assert_eq!(creds.basic(), Some(("fleet-bot", "pa55word")));
        assert!(creds.ssh_key.is_none());
        assert!(creds.known_hosts.unwrap().starts_with("git.example.com"));
    }

    #[test]
    fn environment_lookup() {
        let creds = Credentials::from_lookup(|name| match name {
            "ENDSTATE_GIT_TOKEN" => Some("t0ken-value".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(creds.basic(), Some(("x-access-token", "t0ken-value")));
    }
}
