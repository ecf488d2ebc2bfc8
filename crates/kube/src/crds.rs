//! Installing the CustomResourceDefinitions: `endstate install crds`.

use std::time::Duration;

use endstate_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use endstate_api::labels::FIELD_MANAGER;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::error::{Error, Result};

/// How often the Established condition is polled.
const POLL: Duration = Duration::from_millis(200);

/// Applies every endstate CRD with server-side apply (forced: the definitions are endstate's
/// alone), then waits until the server has established each one, so objects of the kinds can
/// be written as soon as this returns. Returns the names of the CRDs.
pub async fn install_crds(client: &Client, timeout: Duration) -> Result<Vec<String>> {
    install(client, endstate_api::crds::all(), timeout).await
}

/// [`install_crds`] of a business cluster: the CRDs of the two kinds endstate writes there
/// (what `deploy/target/` holds).
pub async fn install_target_crds(client: &Client, timeout: Duration) -> Result<Vec<String>> {
    install(client, endstate_api::crds::target(), timeout).await
}

async fn install(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
    timeout: Duration,
) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| Error::Request {
                what: format!("applying CustomResourceDefinition {name}"),
                source: Box::new(source),
            })?;
        names.push(name);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for name in &names {
        loop {
            let crd = api.get(name).await.map_err(|source| Error::Request {
                what: format!("reading CustomResourceDefinition {name}"),
                source: Box::new(source),
            })?;
            if is_established(&crd) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotEstablished {
                    name: name.clone(),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(names)
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
