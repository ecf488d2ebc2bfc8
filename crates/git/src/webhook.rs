//! The webhook endpoint: a push notification triggers a fetch at once.
//!
//! One `POST` endpoint accepts three kinds of request, told apart by their headers:
//!
//! | sender  | authenticated by | payload read |
//! |---------|------------------|--------------|
//! | GitHub  | `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>` | `ref`, `after` (event `push`; `ping` is answered) |
//! | GitLab  | `X-Gitlab-Token: <secret>` | `ref`, `checkout_sha` / `after` (event `Push Hook`) |
//! | generic | `X-Endstate-Signature: sha256=<HMAC-SHA256 of the body>` | optional `ref`, `commit` |
//!
//! A request that is not authenticated is answered 401 and triggers nothing; a push to
//! another branch is answered 202 and ignored.
//!
//! This is the protocol alone, a pure function of a request's headers and body: the HTTP
//! server that receives the requests and acts on the trigger is the runtime's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::credentials::Secret;
use crate::trigger::Trigger;

/// The largest body read; push payloads of large pushes stay well below.
pub const MAX_BODY: usize = 4 << 20;

/// What the endpoint answers a request, and the push it accepted, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body: one line of text (`text/plain`).
    pub text: String,
    /// The accepted push: what the receiver acts on.
    pub trigger: Option<Trigger>,
}

impl Reply {
    /// A refusal: `status` and why.
    pub fn refused(status: u16, why: &str) -> Reply {
        Reply {
            status,
            text: format!("{why}\n"),
            trigger: None,
        }
    }

    /// The answer to a method other than `POST`.
    pub fn method_not_allowed() -> Reply {
        Reply::refused(405, "only POST is served")
    }

    /// The answer to a body longer than [`MAX_BODY`].
    pub fn too_large() -> Reply {
        Reply::refused(413, "the body is too large")
    }

    /// The answer to a body that could not be read.
    pub fn unreadable(error: &dyn std::fmt::Display) -> Reply {
        Reply::refused(400, &format!("reading the body: {error}"))
    }
}

/// The answer to a `POST` for a target that follows `branch` and shares `secret`, given the
/// request's headers (`header` looks one up by its lower-case name) and body.
pub fn reply<'h>(
    branch: &str,
    secret: &Secret,
    header: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Reply {
    match handle(branch, secret, header, body) {
        Ok(Some(trigger)) => Reply {
            status: 202,
            text: "fetch triggered\n".to_owned(),
            trigger: Some(trigger),
        },
        Ok(None) => Reply {
            status: 202,
            text: "accepted; nothing to fetch\n".to_owned(),
            trigger: None,
        },
        Err((status, why)) => Reply::refused(status, &why),
    }
}

/// Decides what a request means: a trigger, nothing, or a refusal (status, reason).
fn handle<'h>(
    branch: &str,
    secret: &Secret,
    header: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> std::result::Result<Option<Trigger>, (u16, String)> {
    let secret = secret.expose().as_bytes();
    if secret.is_empty() {
        return Err((
            401,
            "no secret is set for this target; unauthenticated pushes are refused".into(),
        ));
    }
    let refused = || (401, "the signature or token does not match".to_string());
    let (provider, event) = if let Some(event) = header("x-github-event") {
        let signature = header("x-hub-signature-256").ok_or((
            401,
            "GitHub webhook without X-Hub-Signature-256; set the webhook secret".to_string(),
        ))?;
        if !hmac_matches(secret, body, signature) {
            return Err(refused());
        }
        match event {
            "push" => ("github", event),
            "ping" => return Ok(None),
            _ => return Ok(None),
        }
    } else if let Some(event) = header("x-gitlab-event") {
        let token = header("x-gitlab-token").ok_or((
            401,
            "GitLab webhook without X-Gitlab-Token; set the secret token".to_string(),
        ))?;
        if !constant_time_eq(token.as_bytes(), secret) {
            return Err(refused());
        }
        if event != "Push Hook" {
            return Ok(None);
        }
        ("gitlab", event)
    } else {
        let signature = header("x-endstate-signature").ok_or((
            401,
            "unsigned request: expected X-Hub-Signature-256, X-Gitlab-Token or \
             X-Endstate-Signature"
                .to_string(),
        ))?;
        if !hmac_matches(secret, body, signature) {
            return Err(refused());
        }
        ("generic", "push")
    };
    let _ = event;
    let payload: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| (400, format!("the payload is not JSON: {e}")))?
    };
    if let Some(pushed) = payload.get("ref").and_then(|r| r.as_str())
        && pushed != format!("refs/heads/{branch}")
        && pushed != branch
    {
        return Ok(None);
    }
    let commit = ["checkout_sha", "after", "commit"]
        .iter()
        .find_map(|k| payload.get(k).and_then(|v| v.as_str()))
        .map(str::to_owned);
    Ok(Some(Trigger::Webhook { provider, commit }))
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of `body`, in constant time.
fn hmac_matches(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` for `body`: what a sender of the generic webhook puts in
/// `X-Endstate-Signature`.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any size");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::result::Result<Option<Trigger>, (u16, String)> {
        let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        handle("main", &Secret::new("s3cret"), &lookup, body)
    }

    #[test]
    fn gitlab_tokens_and_other_branches() {
        let body = br#"{"ref":"refs/heads/main","checkout_sha":"abc"}"#;
        let ok = call(
            &[
                ("x-gitlab-event", "Push Hook"),
                ("x-gitlab-token", "s3cret"),
            ],
            body,
        );
        assert_eq!(
            ok,
            Ok(Some(Trigger::Webhook {
                provider: "gitlab",
                commit: Some("abc".into())
            }))
        );
        let bad = call(
            &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "nope")],
            body,
        );
        assert_eq!(bad.unwrap_err().0, 401);
        let other = br#"{"ref":"refs/heads/dev"}"#;
        let sig = sign(&Secret::new("s3cret"), other);
        assert_eq!(call(&[("x-endstate-signature", &sig)], other), Ok(None));
    }

    #[test]
    fn github_ping_is_answered_without_a_fetch() {
        let body = b"{}";
        let sig = sign(&Secret::new("s3cret"), body);
        let ping = call(
            &[("x-github-event", "ping"), ("x-hub-signature-256", &sig)],
            body,
        );
        assert_eq!(ping, Ok(None));
        let unsigned = call(&[("x-github-event", "push")], body);
        assert_eq!(unsigned.unwrap_err().0, 401);
    }
}
