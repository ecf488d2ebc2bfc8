//! How a failed request is classified, and how long to wait before trying again.

use std::time::Duration;

use endstate_core::ObjectRef;
use endstate_core::hash::Fnv1a;
use endstate_rollout::LiveError;
use http::StatusCode;

/// The first retry's delay; each further one doubles, up to [`MAX_DELAY`].
const BASE_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Settings for retries of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 12 }
    }
}

impl Retry {
    /// The delay before attempt `attempt + 1` (0-based), with jitter drawn from `salt` so that
    /// requests failing together do not come back together.
    pub(crate) fn delay(attempt: u32, salt: &str) -> Duration {
        let exponential = BASE_DELAY
            .saturating_mul(1 << attempt.min(16))
            .min(MAX_DELAY);
        // Between 50% and 100% of the exponential delay.
        let jitter = Fnv1a::new()
            .write(salt.bytes().chain(attempt.to_le_bytes()))
            .finish()
            % 512;
        exponential / 2 + exponential / 2 * jitter as u32 / 511
    }
}

/// Classifies a client error about `object`; `doing` says what failed ("apply", "delete"…).
pub(crate) fn classify(err: kube::Error, object: &ObjectRef, doing: &str) -> LiveError {
    match err {
        kube::Error::Api(status) => {
            let code =
                StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!(
                "{doing} {object}: {} ({} {})",
                status.message, status.code, status.reason
            );
            match code {
                StatusCode::NOT_FOUND => LiveError::NotFound(object.clone()),
                StatusCode::CONFLICT => LiveError::Conflict {
                    object: object.clone(),
                    message: status.message,
                },
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
        let id = ObjectRef::new("Machine", "ns", "m-1");
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
        let first = Retry::delay(0, "a");
        assert!(first >= BASE_DELAY / 2 && first <= BASE_DELAY);
        assert!(Retry::delay(20, "a") <= MAX_DELAY);
        let spread: std::collections::BTreeSet<_> = (0..20)
            .map(|i| Retry::delay(3, &format!("m-{i}")))
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
