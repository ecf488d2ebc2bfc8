//! The one HTTP server: a [`Router`] of routes served on one listener, on hyper, inside the
//! process's tokio runtime.
//!
//! ```text
//!   Router::new()
//!       .route("/metrics", handler)      exact path
//!       .prefix("/hook/", handler)       a path and everything under it
//!       .serve(addr) ──▶ Server          accept loop on a task; one task per connection
//! ```
//!
//! A handler takes the request and answers a [`Response`]; the first route that matches the
//! path (the query left out) answers, and a path no route matches is answered 404. Adding an
//! endpoint is one more `.route(...)` where the listener is set up.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

/// A request as a handler receives it.
pub type Request = hyper::Request<Incoming>;

/// A handler's answer.
pub type Response = hyper::Response<Full<Bytes>>;

type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;
type Handler = Arc<dyn Fn(Request) -> Answer + Send + Sync>;

/// Which paths a route answers.
#[derive(Debug)]
enum Path {
    Exact(&'static str),
    Prefix(&'static str),
}

impl Path {
    fn matches(&self, path: &str) -> bool {
        match self {
            Path::Exact(exact) => path == *exact,
            Path::Prefix(prefix) => path.starts_with(prefix),
        }
    }
}

/// The routes of one listener.
#[derive(Default)]
pub struct Router {
    routes: Vec<(Path, Handler)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(path, _)| path))
            .finish()
    }
}

impl Router {
    /// No routes: every path is answered 404.
    pub fn new() -> Router {
        Router::default()
    }

    /// Answers `path` exactly with `handler`.
    pub fn route<F, A>(self, path: &'static str, handler: F) -> Router
    where
        F: Fn(Request) -> A + Send + Sync + 'static,
        A: Future<Output = Response> + Send + 'static,
    {
        self.add(Path::Exact(path), handler)
    }

    /// Answers every path that starts with `prefix` with `handler`.
    pub fn prefix<F, A>(self, prefix: &'static str, handler: F) -> Router
    where
        F: Fn(Request) -> A + Send + Sync + 'static,
        A: Future<Output = Response> + Send + 'static,
    {
        self.add(Path::Prefix(prefix), handler)
    }

    fn add<F, A>(mut self, path: Path, handler: F) -> Router
    where
        F: Fn(Request) -> A + Send + Sync + 'static,
        A: Future<Output = Response> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| -> Answer { Box::pin(handler(request)) });
        self.routes.push((path, handler));
        self
    }

    async fn answer(&self, request: Request) -> Response {
        let handler = self
            .routes
            .iter()
            .find(|(path, _)| path.matches(request.uri().path()));
        match handler {
            Some((_, handler)) => handler(request).await,
            None => text(404, "text/plain", "not found\n".to_owned()),
        }
    }

    /// Listens on `addr` (port 0: any free port) and serves the routes on a task of the
    /// current runtime until the [`Server`] is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let router = Arc::new(self);
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of file descriptors, say: the listener itself stays usable.
                        tracing::warn!(%local, error = %err, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let router = router.clone();
                let service = hyper::service::service_fn(move |request| {
                    let router = router.clone();
                    async move { Ok::<_, Infallible>(router.answer(request).await) }
                });
                tokio::spawn(async move {
                    let served = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    if let Err(err) = served {
                        tracing::debug!(error = %err, "an HTTP connection ended with an error");
                    }
                });
            }
        });
        Ok(Server { addr: local, task })
    }
}

/// A listener being served; dropping it stops accepting connections.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address served (the port chosen, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer of `status` with `body`, as `content_type`.
pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
