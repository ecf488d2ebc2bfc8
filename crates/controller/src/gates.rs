//! The metric gates' client: instant queries against a Prometheus-compatible query API.
//!
//! `GET <url>/api/v1/query?query=<q>` over `http://` or `https://` (rustls; the system's roots
//! plus the `ca.crt` of the gate's Secret), with a bearer token (`token`) or basic auth
//! (`username`, `password`) from that Secret and the gate's extra headers (`X-Scope-OrgID`
//! for a multi-tenant query API such as Mimir or Cortex). An answer is judged by the engine
//! (`endstate_rollout::gates`): every series of a vector, or the scalar, must be within bounds;
//! a vector without series is no data.
//!
//! A round of queries runs on a task of its own, each query within the policy's
//! `gates.queryTimeout`, so a query API that does not answer, or answers slowly, never holds
//! the loop: the loop goes on observing and saving, and takes the answers from
//! [`Sampler::answered`] when they come. While a round is in flight, another is not started.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use endstate_core::policy::MetricGate;
use endstate_rollout::gates::Sample;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;

/// The data of a Secret: key → bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Why a Secret cannot be read: the reader's own error (files, the API server).
pub type SecretError = Box<dyn std::error::Error + Send + Sync>;

/// A future of a Secret's data.
pub type SecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretData, SecretError>> + Send + 'a>>;

/// Why a gate got no answer to judge.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The gate names a Secret and the run reads none.
    #[error(
        "the gate names the Secret {name}, and no Secrets are available to this run \
         (`run --live sim` reads them from --secrets-dir DIR, as DIR/{name}/<key>)"
    )]
    NoSecrets {
        /// The Secret.
        name: String,
    },
    /// The Secret could not be read.
    #[error(transparent)]
    Secret(SecretError),
    /// A key that must be text is not.
    #[error("the Secret {name}'s `{key}` is not text")]
    NotText {
        /// The Secret.
        name: String,
        /// The key.
        key: &'static str,
    },
    /// Half of a basic-auth pair.
    #[error("the Secret {name} must hold both `username` and `password`, or neither")]
    HalfBasic {
        /// The Secret.
        name: String,
    },
    /// Two ways to authenticate.
    #[error("the Secret {name} holds both `token` and `username`/`password`: keep one")]
    TwoAuths {
        /// The Secret.
        name: String,
    },
    /// The TLS configuration cannot be built.
    #[error("{url}: {source}")]
    Tls {
        /// The gate's URL.
        url: String,
        /// Why.
        source: TlsError,
    },
    /// The request cannot be built (a header the HTTP library refuses, say).
    #[error("{url}: {source}")]
    Request {
        /// The gate's URL.
        url: String,
        /// Why.
        source: http::Error,
    },
    /// The query API was not reached, or broke off.
    #[error("{url}: {}", chain(.source))]
    Send {
        /// The gate's URL.
        url: String,
        /// Why (hyper's own message is only "client error": its causes are shown).
        source: hyper_util::client::legacy::Error,
    },
    /// The answer could not be read.
    #[error("{url}: reading the answer: {source}")]
    Body {
        /// The gate's URL.
        url: String,
        /// Why.
        source: hyper::Error,
    },
    /// An HTTP status that is not an answer.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The gate's URL.
        url: String,
        /// The status.
        status: http::StatusCode,
    },
    /// An answer that is not a query result.
    #[error("{url}: {source}")]
    Answer {
        /// The gate's URL.
        url: String,
        /// What is wrong with it.
        source: AnswerError,
    },
}

/// Why the gate's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ca.crt` is not PEM.
    #[error("the Secret's ca.crt: {0}")]
    Pem(rustls::pki_types::pem::Error),
    /// A certificate of `ca.crt` is refused.
    #[error("the Secret's ca.crt: {0}")]
    Certificate(rustls::Error),
    /// `ca.crt` holds no certificate.
    #[error("the Secret's ca.crt holds no PEM certificate")]
    NoCertificate,
    /// The TLS library refuses the protocol versions.
    #[error("{0}")]
    Protocols(rustls::Error),
}

/// Why a query API's answer is not a result to judge.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The API says the query failed.
    #[error("query failed: {0}")]
    Failed(String),
    /// A vector without its result.
    #[error("no result")]
    NoResult,
    /// A sample without a number.
    #[error("no numeric value in {0}")]
    NoNumber(Value),
    /// A range vector, a string…
    #[error("unsupported result type {0:?}: the query must be an instant vector or a scalar")]
    ResultType(Option<String>),
}

/// Where the Secrets that metric gates name are read (the Fleet's namespace, in a cluster).
pub trait Secrets: Send + Sync {
    /// The data of the Secret `name`, or why it cannot be read.
    fn read<'a>(&'a self, name: &'a str) -> SecretFuture<'a>;
}

/// Secrets laid out as mounted Secret volumes are: `DIR/<name>/<key>`, one file per key.
#[derive(Clone, Debug)]
pub struct DirSecrets(pub PathBuf);

impl Secrets for DirSecrets {
    fn read<'a>(&'a self, name: &'a str) -> SecretFuture<'a> {
        Box::pin(async move {
            let dir = self.0.join(name);
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| format!("reading the Secret {name} ({}): {e}", dir.display()))?;
            let mut data = SecretData::new();
            for entry in entries {
                let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
                let key = entry.file_name().to_string_lossy().into_owned();
                // A mounted volume's `..data` links and hidden files are not keys.
                if key.starts_with('.') || !entry.path().is_file() {
                    continue;
                }
                let value = std::fs::read(entry.path())
                    .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
                data.insert(key, value);
            }
            Ok(data)
        })
    }
}

/// Asks the metric gates, one round at a time, off the loop.
#[derive(Default)]
pub struct Sampler {
    secrets: Option<Arc<dyn Secrets>>,
    pending: Option<oneshot::Receiver<Vec<(String, Sample)>>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("secrets", &self.secrets.is_some())
            .field("in_flight", &self.pending.is_some())
            .finish()
    }
}

impl Sampler {
    /// Reads the Secrets gates name from `secrets`; without, a gate that names one gets no
    /// answer (and says why).
    pub fn set_secrets(&mut self, secrets: Arc<dyn Secrets>) {
        self.secrets = Some(secrets);
    }

    /// Whether a round is in flight.
    pub fn in_flight(&self) -> bool {
        self.pending.is_some()
    }

    /// Starts a round of queries, each within `timeout`, unless one is in flight.
    pub fn ask(&mut self, gates: Vec<MetricGate>, timeout: Duration) {
        if self.pending.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let secrets = self.secrets.clone();
        tokio::spawn(async move {
            let rounds = gates.iter().map(|gate| async {
                let answer = tokio::time::timeout(timeout, query(gate, secrets.as_deref()))
                    .await
                    .unwrap_or_else(|_| {
                        Sample::Failed(format!(
                            "{} did not answer within {}",
                            gate.url,
                            endstate_rollout::time::human(timeout)
                        ))
                    });
                (gate.name.clone(), answer)
            });
            let _ = tx.send(futures::future::join_all(rounds).await);
        });
        self.pending = Some(rx);
    }

    /// The answers of the round in flight, when they come; never, when none is in flight.
    pub async fn answered(&mut self) -> Vec<(String, Sample)> {
        let Some(pending) = &mut self.pending else {
            return std::future::pending().await;
        };
        let answers = pending.await.unwrap_or_default();
        self.pending = None;
        answers
    }
}

/// One query of one gate.
async fn query(gate: &MetricGate, secrets: Option<&dyn Secrets>) -> Sample {
    match request(gate, secrets).await {
        Ok(body) => parse(&body).unwrap_or_else(|source| {
            Sample::Failed(
                GateError::Answer {
                    url: gate.url.clone(),
                    source,
                }
                .to_string(),
            )
        }),
        Err(why) => Sample::Failed(why.to_string()),
    }
}

/// What a Secret may hold for a gate.
#[derive(Default)]
struct Credentials {
    token: Option<String>,
    basic: Option<(String, String)>,
    ca: Option<Vec<u8>>,
}

async fn credentials(
    gate: &MetricGate,
    secrets: Option<&dyn Secrets>,
) -> Result<Credentials, GateError> {
    let Some(name) = &gate.secret else {
        return Ok(Credentials::default());
    };
    let Some(secrets) = secrets else {
        return Err(GateError::NoSecrets { name: name.clone() });
    };
    let mut data = secrets.read(name).await.map_err(GateError::Secret)?;
    let mut text = |key: &'static str| -> Result<Option<String>, GateError> {
        data.remove(key)
            .map(|v| {
                String::from_utf8(v)
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| GateError::NotText {
                        name: name.clone(),
                        key,
                    })
            })
            .transpose()
    };
    let token = text("token")?;
    let username = text("username")?;
    let password = text("password")?;
    let basic = match (username, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            return Err(GateError::HalfBasic { name: name.clone() });
        }
    };
    if token.is_some() && basic.is_some() {
        return Err(GateError::TwoAuths { name: name.clone() });
    }
    Ok(Credentials {
        token,
        basic,
        ca: data.remove("ca.crt"),
    })
}

/// The query's URL: the gate's base URL (with any path prefix) and `/api/v1/query`.
fn query_url(gate: &MetricGate) -> String {
    format!(
        "{}/api/v1/query?query={}",
        gate.url.trim_end_matches('/'),
        encode(&gate.query)
    )
}

async fn request(gate: &MetricGate, secrets: Option<&dyn Secrets>) -> Result<String, GateError> {
    let url = || gate.url.clone();
    let credentials = credentials(gate, secrets).await?;
    let tls = tls_config(credentials.ca.as_deref())
        .map_err(|source| GateError::Tls { url: url(), source })?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut builder = http::Request::get(query_url(gate)).header("Accept", "application/json");
    for (name, value) in &gate.headers {
        builder = builder.header(name, value);
    }
    if let Some(token) = &credentials.token {
        builder = builder.header("Authorization", format!("Bearer {token}"));
    }
    if let Some((user, password)) = &credentials.basic {
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        builder = builder.header("Authorization", format!("Basic {pair}"));
    }
    let request = builder
        .body(Empty::new())
        .map_err(|source| GateError::Request { url: url(), source })?;
    let response = client
        .request(request)
        .await
        .map_err(|source| GateError::Send { url: url(), source })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|source| GateError::Body { url: url(), source })?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    // Prometheus answers a bad query with 400 and a JSON error worth showing.
    let explained = status.is_client_error() && body.starts_with('{');
    if !(status.is_success() || explained) {
        return Err(GateError::Status { url: url(), status });
    }
    Ok(body)
}

/// An error and its causes, on one line (hyper's own message is only "client error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A TLS configuration trusting the system's roots and `ca` (PEM), if given.
fn tls_config(ca: Option<&[u8]>) -> Result<rustls::ClientConfig, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as every client does.
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(TlsError::Pem)?;
            roots.add(cert).map_err(TlsError::Certificate)?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::NoCertificate);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Reads an instant query's answer: every series of a vector, or a scalar.
pub fn parse(body: &str) -> Result<Sample, AnswerError> {
    let v: Value = serde_json::from_str(body).map_err(AnswerError::NotJson)?;
    if v["status"] != "success" {
        return Err(AnswerError::Failed(
            v["error"].as_str().unwrap_or("unknown error").to_owned(),
        ));
    }
    let data = &v["data"];
    let number = |sample: &Value| {
        sample[1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| AnswerError::NoNumber(sample.clone()))
    };
    match data["resultType"].as_str() {
        Some("vector") => {
            let series = data["result"].as_array().ok_or(AnswerError::NoResult)?;
            if series.is_empty() {
                return Ok(Sample::NoSeries);
            }
            let values = series
                .iter()
                .map(|s| number(&s["value"]))
                .collect::<Result<Vec<f64>, AnswerError>>()?;
            Ok(Sample::Values(values))
        }
        Some("scalar") => Ok(Sample::Values(vec![number(&data["result"])?])),
        other => Err(AnswerError::ResultType(other.map(str::to_owned))),
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_series_scalars_and_no_series() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]},{"metric":{"a":"b"},"value":[1700000000.1,"NaN"]}]}}"#;
        let Ok(Sample::Values(values)) = parse(vector) else {
            panic!()
        };
        assert_eq!(values[0], 0.25);
        assert!(values[1].is_nan());
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(parse(scalar).unwrap(), Sample::Values(vec![3.0]));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(empty).unwrap(), Sample::NoSeries);
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(
            parse(error).unwrap_err().to_string(),
            "query failed: parse error at char 3"
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            parse(matrix)
                .unwrap_err()
                .to_string()
                .contains("instant vector or a scalar")
        );
    }

    #[test]
    fn the_query_url_keeps_a_path_prefix_and_encodes_the_query() {
        let gate = MetricGate {
            name: "e".into(),
            url: "https://mimir.example/prometheus/".into(),
            query: "a b{c=\"d\"}".into(),
            min: None,
            max: Some(1.0),
            interval: Duration::from_secs(30),
            headers: Vec::new(),
            secret: None,
        };
        assert_eq!(
            query_url(&gate),
            "https://mimir.example/prometheus/api/v1/query?query=a%20b%7Bc%3D%22d%22%7D"
        );
    }
}
