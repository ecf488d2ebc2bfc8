//! The client-side rate limiter: a token bucket whose rate halves when the server pushes
//! back (429 or 5xx) and climbs back to the configured rate while it does not.
//!
//! ```text
//!   request ──▶ RateLimited::poll_ready ── waits for a token ──▶ inner service
//!                                                                   │
//!   RateLimiter ◀── 429 / 5xx: halve the rate (once per cool-down) ─┘
//!               ◀── otherwise: +10% of the configured rate per second, up to it
//! ```
//!
//! It sits in the client's tower stack, so every request (applies, deletes, status writes, the
//! caches' list pages and watch starts) draws from the same bucket, as client-go's does.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// The lowest rate the limiter falls to, in requests per second.
const MIN_QPS: f64 = 1.0;
/// Pushback within this long after a cut counts as the same episode: 32 requests in flight
/// that all see the same overload must not halve the rate 32 times.
const CUT_COOL_DOWN: Duration = Duration::from_millis(500);
/// The share of the configured rate regained per second without pushback.
const RECOVERY_PER_SECOND: f64 = 0.1;

/// Rate and burst of the limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Requests per second when the server does not push back.
    pub qps: f64,
    /// Requests that may go at once after a quiet period.
    pub burst: u32,
}

impl Default for Limits {
    /// client-go's controller defaults are 5 QPS and a burst of 10; a fleet writes tens of
    /// thousands of objects, so endstate starts higher and relies on backing off instead.
    fn default() -> Self {
        Limits {
            qps: 200.0,
            burst: 400,
        }
    }
}

/// What the limiter has seen, for logs, metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimiterStats {
    /// The current rate, in requests per second.
    pub qps: f64,
    /// The lowest rate since the limiter was made.
    pub min_qps_seen: f64,
    /// Requests let through.
    pub requests: u64,
    /// Responses that were 429 or 5xx.
    pub pushbacks: u64,
    /// Times the rate was halved.
    pub cuts: u64,
}

/// A shared token bucket with multiplicative decrease on pushback and additive recovery.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    limits: Limits,
    qps: f64,
    /// May go negative: each reservation takes a token now and waits for it to be refilled.
    tokens: f64,
    refilled: Instant,
    last_cut: Option<Instant>,
    stats: LimiterStats,
}

impl RateLimiter {
    /// A limiter at `limits.qps`, with `limits.burst` tokens available at once.
    pub fn new(limits: Limits) -> Self {
        let qps = limits.qps.max(MIN_QPS);
        let limits = Limits {
            qps,
            burst: limits.burst.max(1),
        };
        RateLimiter {
            bucket: Arc::new(Mutex::new(Bucket {
                limits,
                qps,
                tokens: f64::from(limits.burst),
                refilled: Instant::now(),
                last_cut: None,
                stats: LimiterStats {
                    qps,
                    min_qps_seen: qps,
                    requests: 0,
                    pushbacks: 0,
                    cuts: 0,
                },
            })),
        }
    }

    /// The rate and burst it was made with.
    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    /// What the limiter has seen so far.
    pub fn stats(&self) -> LimiterStats {
        let bucket = self.lock();
        LimiterStats {
            qps: bucket.qps,
            ..bucket.stats
        }
    }

    /// Takes a token; returns how long the caller must wait before using it.
    pub fn reserve(&self) -> Duration {
        let mut bucket = self.lock();
        bucket.refill(Instant::now());
        bucket.stats.requests += 1;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / bucket.qps)
        }
    }

    /// Records a response: 429 and 5xx halve the rate.
    pub fn observe(&self, status: StatusCode) {
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            self.push_back();
        }
    }

    /// The server pushed back: halve the rate, at most once per cool-down.
    pub fn push_back(&self) {
        let now = Instant::now();
        let mut bucket = self.lock();
        bucket.refill(now);
        bucket.stats.pushbacks += 1;
        if bucket
            .last_cut
            .is_some_and(|cut| now.duration_since(cut) < CUT_COOL_DOWN)
        {
            return;
        }
        bucket.last_cut = Some(now);
        bucket.qps = (bucket.qps / 2.0).max(MIN_QPS);
        // What was saved up while the server was already overloaded must not go out at once.
        bucket.tokens = bucket.tokens.min(0.0);
        bucket.stats.cuts += 1;
        bucket.stats.min_qps_seen = bucket.stats.min_qps_seen.min(bucket.qps);
        tracing::debug!(
            qps = bucket.qps,
            "server pushed back; halving the request rate"
        );
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // The bucket is plain numbers, consistent after every statement: a panic elsewhere
        // while it was held leaves nothing to repair.
        self.bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let calm = self
            .last_cut
            .is_none_or(|cut| now.duration_since(cut) >= CUT_COOL_DOWN);
        if calm && self.qps < self.limits.qps {
            self.qps =
                (self.qps + self.limits.qps * RECOVERY_PER_SECOND * elapsed).min(self.limits.qps);
        }
        self.tokens = (self.tokens + elapsed * self.qps).min(f64::from(self.limits.burst));
    }
}

/// A tower layer putting a [`RateLimiter`] in front of a service.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    /// A layer drawing from `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
            state: State::Idle,
        }
    }
}

/// A service that waits for a token before each request and reports each response's status
/// to its limiter.
#[derive(Debug)]
pub struct RateLimited<S> {
    inner: S,
    limiter: RateLimiter,
    state: State,
}

#[derive(Debug)]
enum State {
    /// No token held.
    Idle,
    /// A token is reserved and becomes usable when the timer fires.
    Waiting(Pin<Box<Sleep>>),
    /// A token is held for the next call.
    Ready,
}

impl<S, B, RB> Service<Request<B>> for RateLimited<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        loop {
            match &mut self.state {
                State::Idle => {
                    let wait = self.limiter.reserve();
                    self.state = if wait.is_zero() {
                        State::Ready
                    } else {
                        State::Waiting(Box::pin(tokio::time::sleep(wait)))
                    };
                }
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.state = State::Ready;
                }
                State::Ready => return self.inner.poll_ready(cx),
            }
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        assert!(
            matches!(self.state, State::Ready),
            "RateLimited::call before poll_ready returned Ready"
        );
        self.state = State::Idle;
        let limiter = self.limiter.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            limiter.observe(response.status());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(qps: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(Limits { qps, burst })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_goes_at_once_then_the_rate_paces() {
        let limiter = limiter(10.0, 5);
        for _ in 0..5 {
            assert_eq!(limiter.reserve(), Duration::ZERO);
        }
        // The sixth token is a tenth of a second away, the seventh two tenths.
        assert_eq!(limiter.reserve(), Duration::from_millis(100));
        assert_eq!(limiter.reserve(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn pushback_halves_once_per_episode_and_the_rate_recovers() {
        let limiter = limiter(100.0, 10);
        for _ in 0..32 {
            limiter.observe(StatusCode::TOO_MANY_REQUESTS);
        }
        let stats = limiter.stats();
        assert_eq!((stats.qps, stats.cuts, stats.pushbacks), (50.0, 1, 32));

        // Half a calm second regains 5 QPS, then the next episode halves again.
        tokio::time::advance(CUT_COOL_DOWN).await;
        limiter.observe(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(limiter.stats().qps, 27.5);
        assert_eq!(limiter.stats().min_qps_seen, 27.5);

        // 10% of 100 QPS per calm second: back at the configured rate within 8 s.
        tokio::time::advance(Duration::from_secs(8)).await;
        limiter.reserve();
        assert_eq!(limiter.stats().qps, 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn success_and_client_errors_do_not_cut() {
        let limiter = limiter(100.0, 10);
        for status in [StatusCode::OK, StatusCode::CONFLICT, StatusCode::NOT_FOUND] {
            limiter.observe(status);
        }
        assert_eq!(limiter.stats().cuts, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_never_falls_below_the_floor() {
        let limiter = limiter(4.0, 1);
        for _ in 0..10 {
            limiter.push_back();
            tokio::time::advance(CUT_COOL_DOWN).await;
        }
        assert_eq!(limiter.stats().min_qps_seen, MIN_QPS);
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_paces_requests_and_sees_responses() {
        use tower::ServiceExt as _;
        let limiter = limiter(10.0, 1);
        let service = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .body(())
                    .unwrap(),
            )
        });
        let mut service = RateLimitLayer::new(limiter.clone()).layer(service);
        let start = Instant::now();
        for _ in 0..3 {
            service
                .ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap();
        }
        // One token at once, then 10 QPS halved to 5 by the first 429: 0.2 s, then
        // another 0.2 s (the second 429 is inside the cool-down).
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(limiter.stats().pushbacks, 3);
        assert_eq!(limiter.stats().requests, 3);
    }
}
