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
//! another branch is answered 202 and ignored. Served by `tiny_http` on a thread of its own:
//! one route needs no async runtime.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::credentials::Secret;
use crate::error::{Error, Result};
use crate::trigger::Trigger;

/// The largest body read; push payloads of large pushes stay well below.
const MAX_BODY: usize = 4 << 20;

/// How the endpoint is served.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Where to listen, e.g. `0.0.0.0:9292` (port 0: any free port).
    pub bind: SocketAddr,
    /// The branch followed: pushes to other branches are ignored.
    pub branch: String,
    /// The shared secret: GitHub's and the generic HMAC key, GitLab's token.
    pub secret: Secret,
}

/// A running endpoint; dropping it stops the server.
pub struct WebhookServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// Where the requests of an endpoint that serves several targets go, by URL path.
pub trait Routes: Send + Sync + 'static {
    /// The branch followed and the shared secret of the target `path` names; a refusal
    /// (status, reason) when it names none.
    fn resolve(&self, path: &str) -> std::result::Result<(String, Secret), (u16, String)>;
    /// An accepted push for the target `path` names.
    fn trigger(&self, path: &str, trigger: Trigger);
}

/// One target on every path: [`WebhookServer::start`].
struct Single {
    branch: String,
    secret: Secret,
    sender: std::sync::Mutex<Sender<Trigger>>,
}

impl Routes for Single {
    fn resolve(&self, _: &str) -> std::result::Result<(String, Secret), (u16, String)> {
        Ok((self.branch.clone(), self.secret.clone()))
    }

    fn trigger(&self, _: &str, trigger: Trigger) {
        let _ = self
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(trigger);
    }
}

impl WebhookServer {
    /// Starts serving, sending a [`Trigger::Webhook`] to `sender` for each accepted push.
    pub fn start(config: WebhookConfig, sender: Sender<Trigger>) -> Result<Self> {
        if config.secret.expose().is_empty() {
            return Err(Error::Config(
                "the webhook needs a secret; unauthenticated webhooks are not served".into(),
            ));
        }
        let routes = Single {
            branch: config.branch,
            secret: config.secret,
            sender: std::sync::Mutex::new(sender),
        };
        Self::start_routed(config.bind, Arc::new(routes))
    }

    /// Starts serving several targets, told apart by the request's path (each with its own
    /// branch and secret, as `routes` resolves them).
    pub fn start_routed(bind: SocketAddr, routes: Arc<dyn Routes>) -> Result<Self> {
        let server = tiny_http::Server::http(bind)
            .map_err(|e| Error::Config(format!("the webhook cannot listen on {bind}: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Config("the webhook listens on a non-IP address".into()))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("endstate-webhook".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    serve(routes.as_ref(), request);
                }
            })
            .map_err(|e| Error::Config(format!("starting the webhook thread: {e}")))?;
        tracing::info!(%addr, "webhook listening");
        Ok(WebhookServer {
            addr,
            server,
            thread: Some(thread),
        })
    }

    /// The address served (the port chosen, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Debug for WebhookServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(routes: &dyn Routes, mut request: tiny_http::Request) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let header = |name: &str| -> Option<String> {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let headers: Vec<(&str, String)> = [
        "x-github-event",
        "x-hub-signature-256",
        "x-gitlab-event",
        "x-gitlab-token",
        "x-endstate-signature",
    ]
    .into_iter()
    .filter_map(|name| header(name).map(|v| (name, v)))
    .collect();
    let lookup = |name: &str| -> Option<&str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    let (status, message) = if *request.method() != tiny_http::Method::Post {
        (405, "only POST is served".to_string())
    } else {
        let mut body = Vec::new();
        let read = request
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body);
        match read {
            Err(e) => (400, format!("reading the body: {e}")),
            Ok(_) if body.len() > MAX_BODY => (413, "the body is too large".to_string()),
            Ok(_) => match routes
                .resolve(&path)
                .and_then(|(branch, secret)| handle(&branch, &secret, &lookup, &body))
            {
                Ok(Some(trigger)) => {
                    tracing::info!(?trigger, %path, "webhook accepted; fetching");
                    routes.trigger(&path, trigger);
                    (202, "fetch triggered".to_string())
                }
                Ok(None) => (202, "accepted; nothing to fetch".to_string()),
                Err((status, message)) => {
                    tracing::warn!(status, %message, "webhook refused");
                    (status, message)
                }
            },
        }
    };
    let response =
        tiny_http::Response::from_string(format!("{message}\n")).with_status_code(status);
    let _ = request.respond(response);
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

    fn config() -> WebhookConfig {
        WebhookConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            branch: "main".into(),
            secret: Secret::new("s3cret"),
        }
    }

    fn call(
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::result::Result<Option<Trigger>, (u16, String)> {
        let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let config = config();
        handle(&config.branch, &config.secret, &lookup, body)
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
