//! Fleets read one by one by name, for the commands that act on one (`endstate plan --live`).

use endstate_api::Fleet;
use kube::Api;

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
