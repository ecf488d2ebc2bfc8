//! Secrets read one by one by name (never listed or watched): the credentials a Fleet names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::error::{Error, Result};

/// The data of the Secret `namespace/name`, key → bytes; `field` names what referred to it
/// (`spec.source.secretRef`), for the error.
pub async fn read_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|source| Error::Request {
            what: format!("reading the Secret {namespace}/{name} named by {field}"),
            source: Box::new(source),
        })?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect())
}
