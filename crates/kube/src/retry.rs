//! How a failed request is classified, and how long to wait before trying again.

use std::time::Duration;

use endstate_core::ObjectRef;
use endstate_core::backoff::Backoff;
use endstate_rollout::LiveError;
use http::StatusCode;
use kube::runtime::utils::ResetTimerBackoff;

/// A write the API server answered with a transient error is tried again after 50 ms,
/// doubling, at most 5 s between tries, 12 tries in all (about half a minute).
pub const WRITE_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5)).attempts(12);

/// A broken watch lists again after 800 ms, doubling, at most 30 s, for ever; two minutes
/// without a break start it again from 800 ms.
pub const WATCH_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(800), Duration::from_secs(30));

/// [`WATCH_BACKOFF`] for a watch's stream (`WatchStreamExt::backoff`), jittered by `salt` (the
/// kind or resource watched).
pub fn watch_backoff(salt: &str) -> impl kube::runtime::utils::Backoff + use<> {
    ResetTimerBackoff::new(
        Retries {
            policy: WATCH_BACKOFF,
            salt: salt.to_owned(),
            retry: 0,
        },
        Duration::from_secs(120),
    )
}

/// The delays of one policy's retries, in turn.
struct Retries {
    policy: Backoff,
    salt: String,
    retry: u32,
}

impl Iterator for Retries {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.policy.gives_up(self.retry + 1) {
            return None;
        }
        let delay = self.policy.jittered(self.retry, &self.salt);
        self.retry = self.retry.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for Retries {
    fn reset(&mut self) {
        self.retry = 0;
    }
}

/// What a request was about: a fleet object, or the Fleet itself.
pub(crate) trait Subject: std::fmt::Display {
    /// The error saying it does not exist.
    fn not_found(&self) -> LiveError;
    /// The error saying someone else changed it.
    fn conflict(&self, message: String) -> LiveError;
    /// What spreads its retries apart from others' (see [`Backoff::jittered`]).
    fn salt(&self) -> &str;
}

impl Subject for ObjectRef {
    fn not_found(&self) -> LiveError {
        LiveError::NotFound(self.clone())
    }

    fn conflict(&self, message: String) -> LiveError {
        LiveError::Conflict {
            object: self.clone(),
            message,
        }
    }

    fn salt(&self) -> &str {
        &self.name
    }
}

/// The Fleet a backend works for, `namespace/name`.
pub(crate) struct FleetName(pub String);

impl std::fmt::Display for FleetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet/{}", self.0)
    }
}

impl Subject for FleetName {
    fn not_found(&self) -> LiveError {
        LiveError::FleetNotFound(self.0.clone())
    }

    fn conflict(&self, message: String) -> LiveError {
        LiveError::Transient(format!("{self} changed: {message}"))
    }

    fn salt(&self) -> &str {
        &self.0
    }
}

/// Classifies a client error about `object`; `doing` says what failed ("apply", "delete"…).
pub(crate) fn classify(err: kube::Error, object: &impl Subject, doing: &str) -> LiveError {
    match err {
        kube::Error::Api(status) => {
            let code =
                StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!(
                "{doing} {object}: {} ({} {})",
                status.message, status.code, status.reason
            );
            match code {
                StatusCode::NOT_FOUND => object.not_found(),
                StatusCode::CONFLICT => object.conflict(status.message),
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::GATEWAY_TIMEOUT => LiveError::Transient(message),
                code if code.is_server_error() => LiveError::Transient(message),
                _ => LiveError::Fatal(message),
            }
        }
        kube::Error::Service(err) if err.downcast_ref::<crate::lease::Fenced>().is_some() => {
            LiveError::Fenced(format!("{doing} {object}: {err}"))
        }
        // The connection, TLS, a timeout: nothing about the request itself.
        err @ (kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)) => LiveError::Transient(format!("{doing} {object}: {err}")),
        err => LiveError::Fatal(format!("{doing} {object}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use endstate_core::Kind;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.to_owned(),
            message: "the message".to_owned(),
            ..Default::default()
        }))
    }

    #[test]
    fn statuses_map_to_what_the_engine_does_next() {
        let id = ObjectRef::new(Kind::Machine, "ns", "m-1");
        assert!(
            matches!(classify(api_error(404, "NotFound"), &id, "apply"), LiveError::NotFound(ref o) if *o == id)
        );
        assert!(matches!(
            classify(api_error(409, "Conflict"), &id, "apply"),
            LiveError::Conflict { .. }
        ));
        for code in [429, 500, 503, 504] {
            assert!(
                classify(api_error(code, "x"), &id, "apply").is_retryable(),
                "{code}"
            );
        }
        let fatal = classify(api_error(422, "Invalid"), &id, "apply");
        assert!(!fatal.is_retryable());
        assert_eq!(
            fatal.to_string(),
            "apply Machine/ns/m-1: the message (422 Invalid)"
        );
    }

    #[test]
    fn delays_grow_are_capped_and_spread() {
        let first = WRITE_BACKOFF.jittered(0, "a");
        assert!(first >= WRITE_BACKOFF.initial / 2 && first <= WRITE_BACKOFF.initial);
        assert!(WRITE_BACKOFF.jittered(20, "a") <= WRITE_BACKOFF.max);
        let spread: std::collections::BTreeSet<_> = (0..20)
            .map(|i| WRITE_BACKOFF.jittered(3, &format!("m-{i}")))
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert!(WRITE_BACKOFF.gives_up(12) && !WRITE_BACKOFF.gives_up(11));
    }

    #[test]
    fn a_watch_backs_off_for_ever_and_starts_again_when_reset() {
        use kube::runtime::utils::Backoff as _;
        let mut retries = Retries {
            policy: WATCH_BACKOFF,
            salt: "Machine".into(),
            retry: 0,
        };
        let delays: Vec<Duration> = retries.by_ref().take(40).collect();
        assert_eq!(delays.len(), 40);
        assert!(delays[0] <= Duration::from_millis(800));
        assert!(delays[39] >= Duration::from_secs(15) && delays[39] <= Duration::from_secs(30));
        retries.reset();
        assert_eq!(retries.next(), Some(delays[0]));
    }
}
