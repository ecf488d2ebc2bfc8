//! A runtime serving a router, and a client that speaks HTTP/1.1 over a plain TCP stream.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use endstate_runtime::http::{Router, Server};

/// A router served on a loopback port by a runtime of its own, until dropped.
pub struct Served {
    server: Option<Server>,
    runtime: tokio::runtime::Runtime,
    pub port: u16,
}

impl Served {
    pub fn new(router: Router) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(router.serve("127.0.0.1:0".parse().unwrap()))
            .unwrap();
        Served {
            port: server.local_addr().port(),
            server: Some(server),
            runtime,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Aborting the accept loop needs the runtime's context.
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

/// An answer: status, headers (names in lower case), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole answer.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The status of a `POST` to the webhook.
pub fn post(port: u16, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    request(port, "POST", "/hooks/git", headers, body).status
}
