//! `install_crds` on a real server.

use std::time::Duration;

use endstate_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use endstate_kube::install_crds;
use endstate_testenv::TestServer;
use kube::Api;

#[tokio::test]
async fn every_crd_is_established_and_installing_again_changes_nothing() {
    let client = TestServer::shared().client().await;
    let names = install_crds(&client, Duration::from_secs(60))
        .await
        .expect("install");
    let expected: Vec<String> = endstate_api::crds::all()
        .into_iter()
        .map(|crd| crd.metadata.name.unwrap())
        .collect();
    assert_eq!(names, expected);

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut versions = Vec::new();
    for name in &names {
        let crd = api.get(name).await.unwrap();
        let conditions = crd.status.unwrap().conditions.unwrap();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name}: {conditions:?}"
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let managers: Vec<_> = crd
            .metadata
            .managed_fields
            .unwrap()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(
            managers.iter().any(|m| m == "endstate"),
            "{name}: {managers:?}"
        );
        versions.push(crd.metadata.resource_version);
    }

    install_crds(&client, Duration::from_secs(60))
        .await
        .expect("install again");
    for (name, version) in names.iter().zip(versions) {
        assert_eq!(
            api.get(name).await.unwrap().metadata.resource_version,
            version,
            "{name}"
        );
    }
}
