//! The push webhook of `endstate run --webhook-listen` over real HTTP: what each sender's
//! requests are answered, and the triggers they send.

use std::time::Duration;

use endstate_git::webhook::sign;
use endstate_git::{Schedule, Secret, Trigger, Triggers};
use endstate_runtime::hooks;
use endstate_runtime::http::Router;

use crate::support::{Served, post, request};

/// How long a wait for an expected trigger may take before the test fails (it returns at
/// once when the trigger is there); the fallback result is `Trigger::Interval`.
const BOUND: Duration = Duration::from_secs(60);

fn server(triggers: &Triggers) -> Served {
    let sender = std::sync::Mutex::new(triggers.sender());
    let router = hooks::single(
        Router::new(),
        "main".into(),
        Secret::new("webhook-secret"),
        move |trigger| {
            let _ = sender.lock().unwrap().send(trigger);
        },
    )
    .unwrap();
    Served::new(router)
}

fn idle() -> Triggers {
    // An interval long enough never to fire during a test.
    Triggers::new(Schedule::new(Duration::from_secs(24 * 3600), 0.0, 1))
}

#[test]
fn signed_pushes_trigger_a_fetch_and_bad_signatures_are_rejected() {
    let mut triggers = idle();
    let hook = server(&triggers);
    let port = hook.port;
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
fn the_answers_are_plain_text_and_other_methods_are_refused() {
    let triggers = idle();
    let hook = server(&triggers);
    let secret = Secret::new("webhook-secret");
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signature = sign(&secret, body);
    let accepted = request(
        hook.port,
        "POST",
        "/any/path",
        &[("X-Endstate-Signature", &signature)],
        body,
    );
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.body, "fetch triggered\n");
    assert_eq!(
        accepted.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let get = request(hook.port, "GET", "/hooks/git", &[], b"");
    assert_eq!(
        (get.status, get.body.as_str()),
        (405, "only POST is served\n")
    );
}

#[test]
fn a_webhook_without_a_secret_is_not_served() {
    let refused = hooks::single(Router::new(), "main".into(), Secret::new(""), |_| {});
    assert!(refused.is_err());
}
