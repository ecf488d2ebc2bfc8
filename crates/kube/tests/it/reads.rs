//! What the caches ask the server for: paginated lists once, then nothing on reads.

use std::sync::{Arc, Mutex};

use endstate_core::{FleetObject, ObjectRef};
use endstate_kube::{KubeLive, PAGE_SIZE, RateLimitLayer, RateLimiter, Settings};
use endstate_rollout::Live;
use endstate_testenv::TestServer;
use kube::client::ClientBuilder;
use tower::util::MapRequestLayer;

use crate::support::{live, machine, namespace};

/// A backend whose client records the path and query of every request it sends.
async fn recorded(server: &TestServer, namespace: &str) -> (KubeLive, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let limiter = RateLimiter::new(Default::default());
    let client = ClientBuilder::try_from(server.config().await)
        .unwrap()
        .with_layer(&MapRequestLayer::new(move |request: http::Request<_>| {
            let uri = request.uri();
            let line = format!(
                "{} {}",
                request.method(),
                uri.path_and_query().map_or("", |p| p.as_str())
            );
            record.lock().unwrap().push(line);
            request
        }))
        .with_layer(&RateLimitLayer::new(limiter.clone()))
        .build();
    let backend = KubeLive::start(client, limiter, Settings::new(namespace, "prod"))
        .await
        .expect("start the backend");
    (backend, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_list_is_paged_and_reads_send_nothing() {
    let (_, ns) = namespace("reads").await;
    let server = TestServer::shared();
    let count = 2 * PAGE_SIZE as usize + 100;
    let machines: Vec<FleetObject> = (0..count)
        .map(|i| {
            machine(
                &format!("m-{i:05}"),
                &format!("10.1.{}.{}", i / 250, i % 250),
                "kubelet-1.27",
            )
        })
        .collect();
    for result in live(server, &ns).await.apply(&machines).await {
        result.unwrap();
    }

    let (backend, seen) = recorded(server, &ns).await;
    assert_eq!(backend.cached_len(), count);
    let machine_lists: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|line| {
            line.starts_with("GET ") && line.contains("/machines?") && !line.contains("watch=true")
        })
        .cloned()
        .collect();
    assert_eq!(machine_lists.len(), 3, "{machine_lists:#?}");
    assert!(
        machine_lists
            .iter()
            .all(|line| line.contains(&format!("limit={PAGE_SIZE}"))),
        "{machine_lists:#?}"
    );

    // The plan path: snapshots and lookups come from the cache alone.
    let before = seen.lock().unwrap().len();
    let ids: Vec<ObjectRef> = (0..count)
        .step_by(7)
        .map(|i| ObjectRef::new("Machine", "", &format!("m-{i:05}")))
        .collect();
    for _ in 0..20 {
        assert_eq!(backend.snapshot().await.unwrap().len(), count);
        assert!(backend.get(&ids).await.unwrap().iter().all(Option::is_some));
        assert!(machines.iter().all(|m| backend.is_current(m)));
    }
    let after: Vec<String> = seen.lock().unwrap()[before..]
        .iter()
        .filter(|line| !line.contains("watch=true"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "reads sent requests: {after:#?}");
}
