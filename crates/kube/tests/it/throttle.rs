//! A server that refuses concurrent writes with 429: the limiter slows down, nothing is lost.

use endstate_core::FleetObject;
use endstate_kube::{KubeLive, Limits, Settings, install_crds};
use endstate_rollout::Live;
use endstate_testenv::{Options, TestServer};
use std::time::Duration;

use crate::support::{machine, namespace_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushback_halves_the_rate_and_every_write_lands() {
    // One mutating request at a time, and no priority-and-fairness queueing in front of it:
    // every concurrent write beyond the first is answered 429 at once.
    let server =
        tokio::task::spawn_blocking(|| TestServer::start_with(Options::one_write_at_a_time()))
            .await
            .unwrap();
    let client = server.client().await;
    install_crds(&client, Duration::from_secs(60))
        .await
        .expect("install the CRDs");
    let ns = namespace_on(&client, "throttle").await;

    let mut settings = Settings::new(&ns, "prod");
    settings.limits = Limits {
        qps: 2000.0,
        burst: 2000,
    };
    settings.max_in_flight = 32;
    settings.retry.attempts = Some(40);
    // system:masters is exempt from the in-flight limit: write as an ordinary admin.
    let backend = KubeLive::connect(server.user_config().await, settings)
        .await
        .unwrap();

    let machines: Vec<FleetObject> = (0..600)
        .map(|i| {
            machine(
                &format!("m-{i}"),
                &format!("10.0.{}.{}", i / 250, i % 250),
                "kubelet-1.27",
            )
        })
        .collect();
    let results = backend.apply(&machines).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} writes failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    let limiter = backend.limiter().stats();
    println!("limiter: {limiter:?}, writes: {:?}", backend.stats());
    assert!(
        limiter.pushbacks > 0,
        "the server never pushed back: {limiter:?}"
    );
    assert!(
        limiter.cuts > 0 && limiter.min_qps_seen <= 1000.0,
        "the rate was never cut: {limiter:?}"
    );
    assert!(backend.stats().retries > 0);

    // Every object is on the server, as desired.
    let fresh = KubeLive::connect(server.config().await, Settings::new(&ns, "prod"))
        .await
        .unwrap();
    assert_eq!(fresh.cached_len(), machines.len());
    for desired in &machines {
        assert!(
            fresh.is_current(desired),
            "{} is not as applied",
            desired.id()
        );
    }
}
