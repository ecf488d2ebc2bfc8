//! The `Fleet` status as the rollout engine persists it.

use endstate_api::fleet::{BreakerStatus, RolloutCursor, Source};
use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use endstate_api::{Condition, Fleet, FleetSpec, FleetStatus};
use endstate_kube::KubeLive;
use endstate_rollout::{Live, LiveError};
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::{live, namespace};

fn fleet() -> Fleet {
    Fleet::new(
        "prod",
        FleetSpec {
            source: Source {
                url: "https://git.example/fleet.git".into(),
                branch: None,
                path: Some("overlays/prod".into()),
                secret_ref: None,
                interval: None,
                verify: None,
                on_history_rewrite: None,
            },
            suspend: None,
            revert: None,
            webhook: None,
            machines: None,
        },
    )
}

fn in_flight() -> FleetStatus {
    FleetStatus {
        last_applied_commit: Some("c0ffee".into()),
        rollout: Some(RolloutCursor {
            commit: "c0ffee".into(),
            wave: 2,
            waves: 5,
            phase: "Gating".into(),
            state: Some(json!({"version": 1, "done": ["m-1", "m-2"], "started": {"m-3": 17}})),
            ..Default::default()
        }),
        breaker: Some(BreakerStatus {
            state: endstate_api::fleet::BreakerState::Closed,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A namespace with the `prod` Fleet in it, and a backend for it.
async fn with_fleet(prefix: &str) -> (Api<Fleet>, KubeLive) {
    let (client, ns) = namespace(prefix).await;
    let fleets: Api<Fleet> = Api::namespaced(client, &ns);
    fleets
        .create(&PostParams::default(), &fleet())
        .await
        .unwrap();
    (fleets, live(TestServer::shared(), &ns).await)
}

#[tokio::test]
async fn status_round_trips_and_fields_cleared_are_gone() {
    let (fleets, backend) = with_fleet("status").await;

    assert_eq!(backend.load_status().await.unwrap(), None);
    backend.save_status(&in_flight()).await.unwrap();

    // A restarted backend resumes from what was saved.
    let restarted = live(TestServer::shared(), backend.settings().namespace.as_str()).await;
    assert_eq!(restarted.load_status().await.unwrap(), Some(in_flight()));

    // The rollout finished: the cursor is cleared, the breaker too, a good commit recorded.
    let done = FleetStatus {
        last_applied_commit: Some("c0ffee".into()),
        last_good_commit: Some("c0ffee".into()),
        ..Default::default()
    };
    restarted.save_status(&done).await.unwrap();
    assert_eq!(backend.load_status().await.unwrap(), Some(done.clone()));

    // The spec stays the user's: status saves never touch it.
    let stored = fleets.get("prod").await.unwrap();
    assert_eq!(stored.spec, fleet().spec);
    assert_eq!(stored.metadata.generation, Some(1));
}

#[tokio::test]
async fn a_save_after_someone_else_changed_the_fleet_is_recomputed() {
    let (fleets, backend) = with_fleet("status-race").await;
    backend.save_status(&in_flight()).await.unwrap();

    // Meanwhile a user edits the spec and an old writer leaves a stray status field.
    fleets
        .patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    fleets
        .patch_status(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastGoodCommit": "stale"}})),
        )
        .await
        .unwrap();

    let next = FleetStatus {
        last_applied_commit: Some("beef".into()),
        ..Default::default()
    };
    backend.save_status(&next).await.unwrap();
    let stored = fleets.get("prod").await.unwrap();
    assert_eq!(stored.status, Some(next));
    assert_eq!(stored.spec.suspend, Some(true));
}

#[tokio::test]
async fn a_missing_fleet_is_named() {
    let (_, ns) = namespace("no-fleet").await;
    let backend = live(TestServer::shared(), &ns).await;
    match backend.load_status().await {
        Err(LiveError::FleetNotFound(id)) => assert_eq!(id, format!("{ns}/prod")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let err = backend.save_status(&in_flight()).await.unwrap_err();
    assert!(matches!(err, LiveError::FleetNotFound(_)), "{err}");
}

fn condition(type_: &str, status: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: "Because".into(),
        message: message.into(),
        last_transition_time: Time(Default::default()),
        observed_generation: None,
    }
}

#[tokio::test]
async fn conditions_with_empty_messages_are_saved_and_replaced() {
    let (fleets, backend) = with_fleet("conditions").await;
    let mut status = FleetStatus {
        conditions: Some(vec![
            condition("Ready", "False", "a rollout is under way"),
            condition("Reconciling", "True", ""),
        ]),
        ..in_flight()
    };
    backend.save_status(&status).await.unwrap();
    status.conditions = Some(vec![
        condition("Ready", "True", "fleet at c0ffee"),
        condition("Reconciling", "False", ""),
        condition("Stalled", "False", ""),
    ]);
    backend.save_status(&status).await.unwrap();
    assert_eq!(fleets.get("prod").await.unwrap().status, Some(status));
}
