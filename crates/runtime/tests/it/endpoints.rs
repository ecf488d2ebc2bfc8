//! `/metrics`, `/healthz` and `/readyz` as a Prometheus scrape and a kubelet probe see them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use endstate_runtime::http::Router;
use endstate_runtime::telemetry::{FleetLabels, Health, Metrics, routes};

use crate::support::{Served, request};

#[test]
fn the_endpoints_answer_with_their_status_and_content_type() {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    *health.why.lock().unwrap() = "the Fleets are being listed".into();
    metrics
        .waves_started
        .get_or_create(&FleetLabels {
            namespace: "prod".into(),
            fleet: "f".into(),
        })
        .inc();
    let served = Served::new(routes(Router::new(), metrics, health.clone()));
    let get = |path: &str| request(served.port, "GET", path, &[], b"");

    let scrape = get("/metrics");
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        scrape
            .body
            .contains(r#"endstate_waves_started_total{namespace="prod",fleet="f"} 1"#),
        "{}",
        scrape.body
    );
    let alive = get("/healthz");
    assert_eq!((alive.status, alive.body.as_str()), (200, "ok\n"));
    assert_eq!(alive.header("content-type"), Some("text/plain"));
    assert_eq!(get("/livez").status, 200);

    let not_ready = get("/readyz?verbose");
    assert_eq!(
        (not_ready.status, not_ready.body.as_str()),
        (503, "not ready: the Fleets are being listed\n")
    );
    health.ready.store(true, Ordering::SeqCst);
    let ready = get("/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ok\n"));

    let unknown = get("/nothing");
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (404, "not found\n")
    );
    assert_eq!(unknown.header("content-type"), Some("text/plain"));
}
