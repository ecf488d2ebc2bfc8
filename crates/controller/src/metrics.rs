//! Metric gates: instant queries against a Prometheus-compatible query API.
//!
//! `GET <url>/api/v1/query?query=<q>` answering
//! `{"status":"success","data":{"resultType":"vector","result":[{"value":[<t>,"<v>"]}]}}`
//! (or a `scalar`). Only plain `http://` is spoken, which is how a query API inside the
//! cluster is usually reached; the policy parser refuses an `https://` URL, so a policy that
//! validated never meets one here.

use std::time::Duration;

use endstate_rollout::policy::MetricGate;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Samples every gate; one result per gate, named.
pub async fn sample(gates: &[MetricGate]) -> Vec<(String, Result<f64, String>)> {
    let mut out = Vec::with_capacity(gates.len());
    for gate in gates {
        let value = tokio::time::timeout(Duration::from_secs(10), query(&gate.url, &gate.query))
            .await
            .unwrap_or_else(|_| Err(format!("{} did not answer within 10s", gate.url)));
        out.push((gate.name.clone(), value));
    }
    out
}

async fn query(url: &str, query: &str) -> Result<f64, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// query APIs are supported"))?;
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = format!(
        "/{}api/v1/query?query={}",
        base.trim_end_matches('/').to_owned() + if base.is_empty() { "" } else { "/" },
        encode(query)
    );
    let mut stream = TcpStream::connect(&host_port)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: malformed HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{url}: HTTP {status}"));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    parse(&body).map_err(|why| format!("{url}: {why}"))
}

/// Reads the one value of an instant query's answer.
pub fn parse(body: &str) -> Result<f64, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("unknown error")
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) => return Err("the query returned no series".into()),
            Some(many) => {
                return Err(format!(
                    "the query returned {} series, want one",
                    many.len()
                ));
            }
            None => return Err("no result".into()),
        },
        Some("scalar") => &data["result"],
        other => return Err(format!("unsupported result type {other:?}")),
    };
    sample[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("no numeric value in {sample}"))
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

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vectors_and_scalars() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]}]}}"#;
        assert_eq!(parse(vector), Ok(0.25));
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(parse(scalar), Ok(3.0));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse(empty).unwrap_err().contains("no series"));
        assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
