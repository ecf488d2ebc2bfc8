//! The push webhook's routes: one for every Fleet, `POST /hook/<namespace>/<name>`,
//! authenticated with the secret the Fleet names in `spec.webhook.secretRef` (key `token`);
//! and one target on every path, for `endstate run --webhook-listen`.
//!
//! Any replica may receive a push: it records the request on the Fleet (the
//! `reconcile-requested-at` annotation) and the leader, which watches the Fleets, fetches. So a
//! Service in front of every replica is enough; no routing to the leader is needed.
//!
//! What a request means (authentication, payload, branch) is `endstate_git::webhook`'s; these
//! routes read the request, find its target, and act on the trigger.

use std::sync::Arc;

use endstate_api::Fleet;
use endstate_api::fleet::requests;
use endstate_git::webhook::{self, Reply};
use endstate_git::{Secret, Trigger};
use http_body_util::{BodyExt as _, Limited};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::http::{Request, Response, Router, text};

/// The namespace and name in `/hook/<namespace>/<name>`.
fn target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/hook/")?;
    let (namespace, name) = rest.trim_end_matches('/').split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

/// `router` answering every path with the receiver of every Fleet in `store`: a path that
/// names no Fleet is answered 404 by the receiver, after the method and body checks.
pub fn fleets(router: Router, store: Store<Fleet>, client: kube::Client) -> Router {
    let fleets = Arc::new((store, client));
    router.prefix("/", move |request| {
        let fleets = fleets.clone();
        async move {
            let path = request.uri().path().to_owned();
            let (store, client) = fleets.as_ref();
            let reply = receive(request, || resolve(store, client, &path)).await;
            if let Some(trigger) = &reply.trigger {
                tracing::info!(?trigger, %path, "webhook accepted; fetching");
                record(client, &path).await;
            }
            answer(reply)
        }
    })
}

/// `router` answering every path with the receiver of one target, following `branch` and
/// sharing `secret`; each accepted push goes to `on_push`.
pub fn single(
    router: Router,
    branch: String,
    secret: Secret,
    on_push: impl Fn(Trigger) + Send + Sync + 'static,
) -> anyhow::Result<Router> {
    if secret.expose().is_empty() {
        anyhow::bail!("the webhook needs a secret; unauthenticated webhooks are not served");
    }
    let target = Arc::new((branch, secret, on_push));
    Ok(router.prefix("/", move |request| {
        let target = target.clone();
        async move {
            let path = request.uri().path().to_owned();
            let (branch, secret, on_push) = target.as_ref();
            let reply = receive(request, || async { Ok((branch.clone(), secret.clone())) }).await;
            if let Some(trigger) = reply.trigger.clone() {
                tracing::info!(?trigger, %path, "webhook accepted; fetching");
                on_push(trigger);
            }
            answer(reply)
        }
    }))
}

/// Reads the request and replies as the protocol says, for the target `resolve` finds (the
/// branch followed and the secret), or with its refusal (status, why).
async fn receive<F, A>(request: Request, resolve: F) -> Reply
where
    F: FnOnce() -> A,
    A: std::future::Future<Output = Result<(String, Secret), (u16, String)>>,
{
    if request.method() != hyper::Method::POST {
        return Reply::method_not_allowed();
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, webhook::MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Reply::too_large(),
        Err(err) => return Reply::unreadable(&err),
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let reply = match resolve().await {
        Ok((branch, secret)) => webhook::reply(&branch, &secret, &header, &body),
        Err((status, why)) => Reply::refused(status, &why),
    };
    if reply.status >= 400 {
        tracing::warn!(status = reply.status, message = %reply.text.trim_end(), "webhook refused");
    }
    reply
}

fn answer(reply: Reply) -> Response {
    text(reply.status, "text/plain; charset=UTF-8", reply.text)
}

/// The branch and secret of the Fleet `path` names.
async fn resolve(
    store: &Store<Fleet>,
    client: &kube::Client,
    path: &str,
) -> Result<(String, Secret), (u16, String)> {
    let (namespace, name) =
        target(path).ok_or((404, "expected POST /hook/<namespace>/<fleet>".to_owned()))?;
    let fleet = store
        .get(&ObjectRef::new(name).within(namespace))
        .ok_or((404, format!("no Fleet {namespace}/{name}")))?;
    let secret_ref = fleet.spec.webhook.as_ref().ok_or((
        403,
        format!("Fleet {namespace}/{name} takes no webhooks: it has no spec.webhook.secretRef"),
    ))?;
    let data = endstate_kube::read_secret(
        client,
        namespace,
        &secret_ref.secret_ref.name,
        "spec.webhook.secretRef",
    )
    .await
    .map_err(|err| {
        tracing::warn!(error = %err, "cannot read the webhook secret");
        (
            503,
            format!(
                "cannot read the Secret named by spec.webhook.secretRef of Fleet {namespace}/{name}"
            ),
        )
    })?;
    let token = data
        .get("token")
        .and_then(|v| String::from_utf8(v.clone()).ok())
        .ok_or((
            503,
            format!("the webhook Secret of Fleet {namespace}/{name} has no UTF-8 key `token`"),
        ))?;
    let branch = fleet
        .spec
        .source
        .branch
        .clone()
        .unwrap_or_else(|| "main".to_owned());
    Ok((branch, Secret::new(token.trim())))
}

/// Records an accepted push on the Fleet `path` names, for the leader to fetch.
async fn record(client: &kube::Client, path: &str) {
    let Some((namespace, name)) = target(path) else {
        return;
    };
    let token = endstate_api::k8s_openapi::jiff::Timestamp::now().to_string();
    let annotations = [(requests::RECONCILE, Some(token.as_str()))];
    if let Err(err) = endstate_kube::annotate_fleet(client, namespace, name, &annotations).await {
        tracing::warn!(path, error = %err, "cannot record the webhook on the Fleet");
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn the_path_names_the_fleet() {
        assert_eq!(target("/hook/prod/fleet"), Some(("prod", "fleet")));
        assert_eq!(target("/hook/prod/fleet/"), Some(("prod", "fleet")));
        assert_eq!(target("/hook/prod"), None);
        assert_eq!(target("/hook/prod/a/b"), None);
        assert_eq!(target("/other/prod/fleet"), None);
    }
}
