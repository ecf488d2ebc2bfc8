//! The webhook endpoint over real HTTP, and the local-path file watch.

use std::time::Duration;

use endstate_git::webhook::sign;
use endstate_git::{Schedule, Secret, Trigger, Triggers, Watcher, WebhookConfig, WebhookServer};

use crate::support::post;

/// How long a wait for an expected trigger may take before the test fails (it returns at
/// once when the trigger is there); the fallback result is `Trigger::Interval`.
const BOUND: Duration = Duration::from_secs(60);

fn server(triggers: &Triggers) -> WebhookServer {
    WebhookServer::start(
        WebhookConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            branch: "main".into(),
            secret: Secret::new("webhook-secret"),
        },
        triggers.sender(),
    )
    .unwrap()
}

fn idle() -> Triggers {
    // An interval long enough never to fire during a test.
    Triggers::new(Schedule::new(Duration::from_secs(24 * 3600), 0.0, 1))
}

#[test]
fn signed_pushes_trigger_a_fetch_and_bad_signatures_are_rejected() {
    let mut triggers = idle();
    let hook = server(&triggers);
    let port = hook.local_addr().port();
    let secret = Secret::new("webhook-secret");
    let body = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;

    // GitHub, correctly signed.
    let good = sign(&secret, body);
    assert_eq!(
        post(
            port,
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &good)],
            body
        ),
        202
    );
    assert_eq!(
        triggers.wait(Some(BOUND)),
        Trigger::Webhook {
            provider: "github",
            commit: Some("0123456789abcdef0123456789abcdef01234567".into())
        }
    );

    // Signed with another secret, signed over another body, unsigned: 401, no trigger.
    let wrong = sign(&Secret::new("guess"), body);
    assert_eq!(
        post(
            port,
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
            body
        ),
        401
    );
    let other_body = sign(&secret, b"{}");
    assert_eq!(
        post(port, &[("X-Endstate-Signature", &other_body)], body),
        401
    );
    assert_eq!(post(port, &[], body), 401);
    assert_eq!(
        post(
            port,
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "guess")],
            body
        ),
        401
    );
    // The responses came after the decisions: nothing may be queued now.
    assert_eq!(triggers.wait(Some(Duration::ZERO)), Trigger::Interval);

    // The generic HMAC webhook and GitLab's token.
    assert_eq!(post(port, &[("X-Endstate-Signature", &good)], body), 202);
    assert!(matches!(
        triggers.wait(Some(BOUND)),
        Trigger::Webhook {
            provider: "generic",
            ..
        }
    ));
    let gitlab = br#"{"ref":"refs/heads/main","checkout_sha":"abc"}"#;
    assert_eq!(
        post(
            port,
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Token", "webhook-secret")
            ],
            gitlab
        ),
        202
    );
    assert!(matches!(
        triggers.wait(Some(BOUND)),
        Trigger::Webhook {
            provider: "gitlab",
            ..
        }
    ));
}

#[test]
fn local_path_mode_triggers_on_file_changes_but_not_on_git_internals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    let mut triggers = idle();
    let _watch = Watcher::start(dir.path(), triggers.sender()).unwrap();
    std::fs::write(dir.path().join(".git/index"), "x").unwrap();
    std::fs::write(dir.path().join("machines.yaml"), "x").unwrap();
    // Only the file change can end this wait early; after BOUND it returns Interval.
    match triggers.wait(Some(BOUND)) {
        Trigger::LocalChange { paths } => {
            assert!(
                paths
                    .iter()
                    .all(|p| !p.to_string_lossy().contains("/.git/")),
                "{paths:?}"
            );
            assert!(
                paths.iter().any(|p| p.ends_with("machines.yaml")),
                "{paths:?}"
            );
        }
        other => panic!("expected a local change, got {other:?}"),
    }
}
