//! What the caches ask the server for: paginated lists once, then nothing on reads.

use std::sync::{Arc, Mutex};

use endstate_core::{FleetObject, Kind, ObjectRef};
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
        .map(|i| ObjectRef::new(Kind::Machine, "", &format!("m-{i:05}")))
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

/// A watch resumed from a resourceVersion that etcd compacted away is answered 410 Gone: the
/// cache lists again, says so in its change feed and its counter, and holds the fleet as the
/// server does, changes made while it was away included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_watch_lists_again_and_loses_nothing() {
    let mut server = tokio::task::spawn_blocking(|| {
        TestServer::start_with(endstate_testenv::Options {
            apiserver_args: vec!["--watch-cache=false".to_owned()],
        })
    })
    .await
    .unwrap();
    let client = server.client().await;
    endstate_kube::install_crds(&client, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let ns = crate::support::namespace_on(&client, "expired").await;
    let writer = live(&server, &ns).await;
    let machines: Vec<FleetObject> = (0..5)
        .map(|i| machine(&format!("m-{i}"), &format!("10.2.0.{i}"), "kubelet-1.27"))
        .collect();
    for result in writer.apply(&machines).await {
        result.unwrap();
    }
    let backend = live(&server, &ns).await;
    assert_eq!(backend.cached_len(), 5);
    assert_eq!(backend.stats().relists, 0);
    // The fleet's history moves on past what the Machine watch last saw (another namespace's
    // objects), and is compacted while the API server is down.
    for _ in 0..3 {
        crate::support::namespace_on(&client, "elsewhere").await;
    }
    let server = tokio::task::spawn_blocking(move || {
        server
            .restart_apiserver_compacting()
            .expect("the API server restarts");
        server
    })
    .await
    .unwrap();
    // A change made after the restart reaches the cache, through the new list.
    let writer = live(&server, &ns).await;
    let changed = machine("m-0", "10.2.0.0", "kubelet-1.28");
    writer.apply(std::slice::from_ref(&changed)).await[0]
        .as_ref()
        .unwrap();
    crate::support::eventually(
        "the cache relists",
        std::time::Duration::from_secs(60),
        async || backend.stats().relists > 0,
    )
    .await;
    crate::support::eventually(
        "the cache sees the change",
        std::time::Duration::from_secs(30),
        async || {
            let got = backend.get(&[changed.id()]).await.unwrap();
            got[0]
                .as_ref()
                .is_some_and(|o| crate::support::spec(o) == crate::support::spec(&changed))
        },
    )
    .await;
    assert_eq!(backend.cached_len(), 5);
}
