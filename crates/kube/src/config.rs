//! The client configuration: from a kubeconfig file named on the command line, or inferred
//! from the environment (`$KUBECONFIG`, `~/.kube/config`, in-cluster).

use std::path::Path;

use crate::error::{Error, Result};

/// The configuration `kubeconfig` gives, or the environment's when `None`.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config> {
    let Some(path) = kubeconfig else {
        return kube::Config::infer().await.map_err(|source| Error::Config {
            what: "finding a kubeconfig".to_owned(),
            source: Box::new(source),
        });
    };
    let file = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Config {
        what: format!("reading the kubeconfig {}", path.display()),
        source: Box::new(source),
    })?;
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Config {
            what: format!("using the kubeconfig {}", path.display()),
            source: Box::new(source),
        })
}

/// A client for the cluster `kubeconfig` (or the environment) names.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    kube::Client::try_from(config(kubeconfig).await?).map_err(|e| Error::Client(Box::new(e)))
}
