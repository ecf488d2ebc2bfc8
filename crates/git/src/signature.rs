//! The signature policy: HEAD must carry a valid signature by an allowed key.
//!
//! Git keeps a commit's signature in its `gpgsig` header, over the commit with that header
//! removed. Two kinds are understood: SSH signatures (`-----BEGIN SSH SIGNATURE-----`, the
//! `sshsig` format with namespace `git`, as `git -c gpg.format=ssh` writes them) and OpenPGP
//! signatures (`-----BEGIN PGP SIGNATURE-----`). Verification is pure Rust (`ssh-key`, `pgp`);
//! no `gpg` or `ssh-keygen` is run. [`SshSigner`] signs endstate's own revert commits the same
//! way, so a policy that lists its key accepts them.

use std::fmt;
use std::path::Path;

use git2::{Oid, Repository};
use pgp::composed::{Deserializable, SignedPublicKey, StandaloneSignature};
use pgp::types::KeyDetails;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::credentials::Secret;
pub use crate::error::Refusal;
use crate::error::{Error, Result};

/// The namespace Git signs commits in.
const NAMESPACE: &str = "git";

/// Which keys may sign HEAD.
#[derive(Clone)]
pub enum SignaturePolicy {
    /// SSH keys (`ssh-ed25519 AAAA…`, `ecdsa-sha2-nistp256 …`, `ssh-rsa …`).
    Ssh(Vec<PublicKey>),
    /// OpenPGP public keys (armored).
    OpenPgp(Vec<SignedPublicKey>),
}

impl fmt::Debug for SignaturePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignaturePolicy::Ssh(keys) => f
                .debug_tuple("Ssh")
                .field(&keys.iter().map(fingerprint).collect::<Vec<_>>())
                .finish(),
            SignaturePolicy::OpenPgp(keys) => f
                .debug_tuple("OpenPgp")
                .field(
                    &keys
                        .iter()
                        .map(|k| hex(k.fingerprint().as_bytes()))
                        .collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// Who signed an accepted commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The allowed key's fingerprint.
    pub key: String,
}

impl SignaturePolicy {
    /// An SSH policy from text listing one public key per line (`authorized_keys` or
    /// `allowed_signers` style: the key may follow other fields; `#` comments are skipped).
    pub fn ssh(keys: &str) -> Result<Self> {
        let mut allowed = Vec::new();
        for (n, line) in keys.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let start = line
                .find("ssh-")
                .or_else(|| line.find("ecdsa-"))
                .or_else(|| line.find("sk-"))
                .ok_or_else(|| {
                    Error::Config(format!("allowed SSH keys, line {}: no public key", n + 1))
                })?;
            let key = PublicKey::from_openssh(&line[start..])
                .map_err(|e| Error::Config(format!("allowed SSH keys, line {}: {e}", n + 1)))?;
            allowed.push(key);
        }
        if allowed.is_empty() {
            return Err(Error::Config(
                "the SSH signature policy lists no key".into(),
            ));
        }
        Ok(SignaturePolicy::Ssh(allowed))
    }

    /// An OpenPGP policy from armored public keys (each may hold several).
    pub fn openpgp<S: AsRef<str>>(armored: &[S]) -> Result<Self> {
        let mut keys = Vec::new();
        for (n, text) in armored.iter().enumerate() {
            let parsed = SignedPublicKey::from_string_many(text.as_ref())
                .map_err(|e| Error::Config(format!("OpenPGP key {}: {e}", n + 1)))?
                .0;
            for key in parsed {
                keys.push(key.map_err(|e| Error::Config(format!("OpenPGP key {}: {e}", n + 1)))?);
            }
        }
        if keys.is_empty() {
            return Err(Error::Config(
                "the OpenPGP signature policy lists no key".into(),
            ));
        }
        Ok(SignaturePolicy::OpenPgp(keys))
    }

    /// A policy of `mode` (`ssh` or `openpgp`, as in `spec.source.verify.mode`) from a
    /// directory holding one key per file (a mounted Secret).
    pub fn from_dir(mode: &str, dir: &Path) -> Result<Self> {
        let read_dir = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut texts = Vec::new();
        for entry in read_dir {
            let path = entry
                .map_err(|source| Error::Io {
                    path: dir.to_owned(),
                    source,
                })?
                .path();
            // Mounted Secrets hold `..data` links and dot directories beside the keys.
            if path.is_dir()
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
            texts.push(text);
        }
        Self::from_keys(mode, &texts)
    }

    /// A policy of `mode` (`ssh` or `openpgp`, as in `spec.source.verify.mode`) trusting
    /// `keys` (for `ssh`, each an allowed-signers text; for `openpgp`, each armored keys): the
    /// one reading of a mode.
    pub fn from_keys(mode: &str, keys: &[String]) -> Result<Self> {
        match mode {
            "ssh" => Self::ssh(&keys.join("\n")),
            "openpgp" => Self::openpgp(keys),
            other => Err(Error::Config(format!(
                "signature policy mode {other:?}: expected `ssh` or `openpgp`"
            ))),
        }
    }

    /// Checks the signature of `commit`.
    pub fn verify(&self, repo: &Repository, commit: Oid) -> Result<Verified, Refusal> {
        let (signature, signed) = match repo.extract_signature(&commit, None) {
            Ok(parts) => parts,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(Refusal::Unsigned),
            Err(e) => return Err(Refusal::Malformed(e.message().to_owned())),
        };
        let signature = std::str::from_utf8(&signature)
            .map_err(|_| Refusal::Malformed("not text".into()))?
            .trim();
        let kind = if signature.starts_with("-----BEGIN SSH SIGNATURE-----") {
            "SSH"
        } else if signature.starts_with("-----BEGIN PGP SIGNATURE-----") {
            "OpenPGP"
        } else {
            return Err(Refusal::Malformed(
                "neither an SSH nor an OpenPGP signature".into(),
            ));
        };
        match self {
            SignaturePolicy::Ssh(allowed) if kind == "SSH" => {
                verify_ssh(allowed, signature, &signed)
            }
            SignaturePolicy::OpenPgp(keys) if kind == "OpenPGP" => {
                verify_openpgp(keys, signature, &signed)
            }
            SignaturePolicy::Ssh(_) => Err(Refusal::WrongKind {
                expected: "SSH",
                found: kind,
            }),
            SignaturePolicy::OpenPgp(_) => Err(Refusal::WrongKind {
                expected: "OpenPGP",
                found: kind,
            }),
        }
    }
}

/// Upper-case hex, as OpenPGP fingerprints and key ids are written.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn verify_ssh(allowed: &[PublicKey], pem: &str, signed: &[u8]) -> Result<Verified, Refusal> {
    let sig = SshSig::from_pem(pem).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let signer = PublicKey::from(sig.public_key().clone());
    let Some(key) = allowed.iter().find(|k| k.key_data() == sig.public_key()) else {
        return Err(Refusal::UnknownKey {
            key: fingerprint(&signer),
        });
    };
    if sig.namespace() != NAMESPACE {
        return Err(Refusal::BadSignature {
            key: fingerprint(key),
            reason: format!("signed for namespace {:?}, not \"git\"", sig.namespace()),
        });
    }
    key.verify(NAMESPACE, signed, &sig)
        .map_err(|e| Refusal::BadSignature {
            key: fingerprint(key),
            reason: e.to_string(),
        })?;
    Ok(Verified {
        key: fingerprint(key),
    })
}

fn verify_openpgp(
    keys: &[SignedPublicKey],
    armored: &str,
    signed: &[u8],
) -> Result<Verified, Refusal> {
    let (sig, _) =
        StandaloneSignature::from_string(armored).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let issuers: Vec<String> = sig
        .signature
        .issuer()
        .iter()
        .map(|id| hex(id.as_ref()))
        .chain(
            sig.signature
                .issuer_fingerprint()
                .iter()
                .map(|fp| hex(fp.as_bytes())),
        )
        .collect();
    let names = |id: String, fp: String| issuers.iter().any(|i| *i == id || *i == fp);
    for key in keys {
        let primary = &key.primary_key;
        if names(
            hex(primary.key_id().as_ref()),
            hex(primary.fingerprint().as_bytes()),
        ) {
            return check_pgp(&sig, primary, signed, hex(primary.fingerprint().as_bytes()));
        }
        for sub in &key.public_subkeys {
            if names(
                hex(sub.key.key_id().as_ref()),
                hex(sub.key.fingerprint().as_bytes()),
            ) {
                return check_pgp(
                    &sig,
                    &sub.key,
                    signed,
                    hex(sub.key.fingerprint().as_bytes()),
                );
            }
        }
    }
    Err(Refusal::UnknownKey {
        key: issuers
            .first()
            .cloned()
            .unwrap_or_else(|| "an unnamed key".into()),
    })
}

fn check_pgp(
    sig: &StandaloneSignature,
    key: &impl pgp::types::PublicKeyTrait,
    signed: &[u8],
    name: String,
) -> Result<Verified, Refusal> {
    sig.verify(key, signed).map_err(|e| Refusal::BadSignature {
        key: name.clone(),
        reason: e.to_string(),
    })?;
    Ok(Verified { key: name })
}

/// Signs commits with an SSH key, as `git -c gpg.format=ssh commit -S` does.
#[derive(Clone)]
pub struct SshSigner {
    key: PrivateKey,
}

impl fmt::Debug for SshSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSigner")
            .field("key", &fingerprint(self.key.public_key()))
            .finish()
    }
}

impl SshSigner {
    /// A signer from an unencrypted OpenSSH private key.
    pub fn new(private_key: &Secret) -> Result<Self> {
        let key = PrivateKey::from_openssh(private_key.expose())
            .map_err(|e| Error::Config(format!("the revert signing key cannot be read: {e}")))?;
        if key.is_encrypted() {
            return Err(Error::Config(
                "the revert signing key is encrypted; give an unencrypted key".into(),
            ));
        }
        Ok(SshSigner { key })
    }

    /// The public key, for the signature policy's list.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The armored signature of `data` (a commit without its `gpgsig` header).
    pub(crate) fn sign(&self, data: &[u8]) -> Result<String> {
        self.key
            .sign(NAMESPACE, HashAlg::Sha512, data)
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .map_err(|e| Error::Config(format!("signing with the revert key: {e}")))
    }
}
