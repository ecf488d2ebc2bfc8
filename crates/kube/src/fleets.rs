//! The Fleets as the controller and its clients see them: the watch of every Fleet (or of one
//! namespace, or of a label selector) into a cache, one Fleet read by name (`endstate plan
//! --live`, the commands that act on one), and the requests on a Fleet from outside its loop:
//! the annotations that carry requests to the controller (approve, reset the
//! breaker, reconcile now) and `spec.suspend`.
//!
//! The requests are merge patches of the fields they set and nothing else, so they never race the
//! controller's status writes or another client's edits of the spec.

use endstate_api::Fleet;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The watch's events, as they fill the cache; polling them keeps the cache current.
pub type FleetWatch = BoxStream<'static, Result<watcher::Event<Fleet>, watcher::Error>>;

/// A cache of the Fleets of `namespace` (every namespace when `None`) that match `selector`,
/// and the watch that fills it, which retries with backoff after an error.
pub fn watch_fleets(
    client: kube::Client,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> (Store<Fleet>, FleetWatch) {
    let api: Api<Fleet> = match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    let mut config = watcher::Config::default();
    if let Some(selector) = selector {
        config = config.labels(selector);
    }
    let (store, writer) = reflector::store::<Fleet>();
    let events = reflector::reflector(writer, watcher(api, config))
        .backoff(crate::retry::watch_backoff("fleets"))
        .boxed();
    (store, events)
}

/// The Fleet `namespace/name`. The client's error is returned as it is: the caller says what
/// it was reading the Fleet for.
pub async fn read_fleet(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Fleet, kube::Error> {
    Api::<Fleet>::namespaced(client.clone(), namespace)
        .get(name)
        .await
}

/// The Fleet `namespace/name`, or `None` when there is none.
pub async fn find_fleet(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Fleet>, kube::Error> {
    Api::<Fleet>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

/// Sets annotations on the Fleet `namespace/name`; a `None` value removes one.
pub async fn annotate_fleet(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    annotations: &[(&str, Option<&str>)],
) -> Result<()> {
    let map: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.map_or(Value::Null, |v| json!(v))))
        .collect();
    patch(
        client,
        namespace,
        name,
        json!({"metadata": {"annotations": map}}),
        "annotating",
    )
    .await
}

/// Sets `spec.suspend` of the Fleet `namespace/name` to `true`, or removes it.
pub async fn suspend_fleet(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    suspend: bool,
) -> Result<()> {
    let value = if suspend { json!(true) } else { Value::Null };
    patch(
        client,
        namespace,
        name,
        json!({"spec": {"suspend": value}}),
        "patching",
    )
    .await
}

async fn patch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    patch: Value,
    doing: &str,
) -> Result<()> {
    Api::<Fleet>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::Request {
            what: format!("{doing} Fleet {namespace}/{name}"),
            source: Box::new(source),
        })?;
    Ok(())
}
