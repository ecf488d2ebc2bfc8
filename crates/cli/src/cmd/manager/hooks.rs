//! One webhook receiver for every Fleet: `POST /hook/<namespace>/<name>`, authenticated with the
//! secret the Fleet names in `spec.webhook.secretRef` (key `token`).
//!
//! Any replica may receive a push: it records the request on the Fleet (the
//! `reconcile-requested-at` annotation) and the leader, which watches the Fleets, fetches. So a
//! Service in front of every replica is enough; no routing to the leader is needed.

use std::sync::Arc;

use endstate_api::Fleet;
use endstate_api::fleet::requests;
use endstate_api::k8s_openapi::api::core::v1::Secret as KubeSecret;
use endstate_git::{Routes, Secret, Trigger, WebhookServer};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

struct FleetRoutes {
    store: Store<Fleet>,
    client: kube::Client,
    runtime: tokio::runtime::Handle,
}

/// The namespace and name in `/hook/<namespace>/<name>`.
fn target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/hook/")?;
    let (namespace, name) = rest.trim_end_matches('/').split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

impl Routes for FleetRoutes {
    fn resolve(&self, path: &str) -> Result<(String, Secret), (u16, String)> {
        let (namespace, name) =
            target(path).ok_or((404, "expected POST /hook/<namespace>/<fleet>".to_owned()))?;
        let fleet = self
            .store
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or((404, format!("no Fleet {namespace}/{name}")))?;
        let secret_ref = fleet.spec.webhook.as_ref().ok_or((
            403,
            format!("Fleet {namespace}/{name} takes no webhooks: it has no spec.webhook.secretRef"),
        ))?;
        let secret_name = secret_ref.secret_ref.name.clone();
        let client = self.client.clone();
        let secret = self.runtime.block_on(async move {
            Api::<KubeSecret>::namespaced(client, namespace)
                .get(&secret_name)
                .await
        });
        let secret = secret.map_err(|err| {
            tracing::warn!(error = %err, "cannot read the webhook secret");
            (
                503,
                format!("cannot read the Secret named by spec.webhook.secretRef of Fleet {namespace}/{name}"),
            )
        })?;
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
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

    fn trigger(&self, path: &str, _trigger: Trigger) {
        let Some((namespace, name)) = target(path) else {
            return;
        };
        let api: Api<Fleet> = Api::namespaced(self.client.clone(), namespace);
        let token = endstate_api::k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({"metadata": {"annotations": {requests::RECONCILE: token}}});
        let name = name.to_owned();
        let recorded = self.runtime.block_on(async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        });
        if let Err(err) = recorded {
            tracing::warn!(path, error = %err, "cannot record the webhook on the Fleet");
        }
    }
}

/// Serves the webhook receiver until dropped.
pub fn serve(
    bind: std::net::SocketAddr,
    store: Store<Fleet>,
    client: kube::Client,
) -> anyhow::Result<WebhookServer> {
    let routes = FleetRoutes {
        store,
        client,
        runtime: tokio::runtime::Handle::current(),
    };
    let server = WebhookServer::start_routed(bind, Arc::new(routes))?;
    eprintln!(
        "webhook receiver on http://{}/hook/<namespace>/<fleet>",
        server.local_addr()
    );
    Ok(server)
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
