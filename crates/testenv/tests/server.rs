//! The test server starts, authenticates its token, and stops with its owner.

use endstate_testenv::{Options, TestServer};

#[tokio::test]
async fn serves_kubernetes_1_20_with_the_generated_token() {
    let server = TestServer::shared();
    let client = server.client().await;
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "20")
    );
    // Authenticated as system:masters: listing namespaces needs more than anonymous access.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let list = namespaces
        .list(&Default::default())
        .await
        .expect("list namespaces");
    assert!(
        list.items
            .iter()
            .any(|ns| ns.metadata.name.as_deref() == Some("default"))
    );
}

#[test]
fn dropping_a_server_stops_it() {
    let server = TestServer::start_with(Options::default());
    let url = server.url().to_owned();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(server);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "{url} still accepts connections after the server was dropped"
    );
}
