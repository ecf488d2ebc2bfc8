//! Business clusters as write targets: the connection to one, built from the kubeconfig
//! Secret the meta-cluster holds for it, and why one cannot be used.
//!
//! The Secret is `<Cluster name><suffix>` in the Fleet's namespace (Cluster API's
//! `<cluster>-kubeconfig`, key `value`), read by name. What it may say is limited, so that a
//! Secret cannot make the controller run a program or read its own files:
//!
//! - `exec` and `auth-provider` users are refused (no binary named by a Secret is run);
//! - tokens, client certificates and CAs are taken inline only (`token`,
//!   `client-certificate-data`, `client-key-data`, `certificate-authority-data`); a file path
//!   (`tokenFile`, `client-certificate`, `client-key`, `certificate-authority`) is refused;
//! - `insecure-skip-tls-verify` is accepted, with a warning the caller reports.

use std::collections::BTreeSet;
use std::fmt;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The key of the kubeconfig in the Secret.
pub const KUBECONFIG_KEY: &str = "value";

/// Why a business cluster cannot be written to. Each holds that cluster's Machines, counts no
/// failure and spends no budget; its reason is what the status, Events and metrics say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetProblem {
    /// The kubeconfig Secret is missing, or says something that is refused or does not parse.
    SecretInvalid(String),
    /// The API server does not answer.
    Unreachable(String),
    /// The API server refuses the credentials (401), or what they may do (403).
    Unauthorized(String),
    /// The API server does not serve the Machine and MachinePackageVersion kinds.
    MissingCrds(String),
}

impl TargetProblem {
    /// The reason, as conditions and Events give it.
    pub fn reason(&self) -> &'static str {
        match self {
            TargetProblem::SecretInvalid(_) => "TargetSecretInvalid",
            TargetProblem::Unreachable(_) => "TargetUnreachable",
            TargetProblem::Unauthorized(_) => "TargetUnauthorized",
            TargetProblem::MissingCrds(_) => "TargetMissingCRDs",
        }
    }

    /// What is wrong, in words.
    pub fn message(&self) -> &str {
        match self {
            TargetProblem::SecretInvalid(m)
            | TargetProblem::Unreachable(m)
            | TargetProblem::Unauthorized(m)
            | TargetProblem::MissingCrds(m) => m,
        }
    }
}

impl fmt::Display for TargetProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason(), self.message())
    }
}

/// A kubeconfig that may be used, and what to warn about it.
#[derive(Clone, Debug)]
pub struct Vetted {
    /// The kubeconfig.
    pub kubeconfig: Kubeconfig,
    /// What is accepted but unsafe (`insecure-skip-tls-verify`).
    pub warnings: Vec<String>,
}

/// Parses the kubeconfig of a Secret (`source` names it in messages) and checks that it
/// names nothing to run and no file to read.
pub fn vet(source: &str, text: &str) -> Result<Vetted, TargetProblem> {
    let invalid = |why: String| TargetProblem::SecretInvalid(format!("{source}: {why}"));
    let kubeconfig =
        Kubeconfig::from_yaml(text).map_err(|err| invalid(format!("not a kubeconfig: {err}")))?;
    if kubeconfig.contexts.is_empty() || kubeconfig.clusters.is_empty() {
        return Err(invalid("no context or no cluster".to_owned()));
    }
    let mut refused = Vec::new();
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else {
            continue;
        };
        let name = &named.name;
        if user.exec.is_some() {
            refused.push(format!("user {name} runs a program (exec)"));
        }
        if user.auth_provider.is_some() {
            refused.push(format!("user {name} uses an auth-provider"));
        }
        for (field, set) in [
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
        ] {
            if set {
                refused.push(format!("user {name} reads a file ({field})"));
            }
        }
    }
    let mut warnings = Vec::new();
    for named in &kubeconfig.clusters {
        let Some(cluster) = &named.cluster else {
            continue;
        };
        let name = &named.name;
        if cluster.certificate_authority.is_some() {
            refused.push(format!(
                "cluster {name} reads a file (certificate-authority)"
            ));
        }
        if cluster.insecure_skip_tls_verify == Some(true) {
            warnings.push(format!(
                "{source}: cluster {name} skips TLS verification (insecure-skip-tls-verify): \
                 the connection to it can be intercepted"
            ));
        }
    }
    if !refused.is_empty() {
        return Err(invalid(format!(
            "{}; refused: a kubeconfig Secret may hold tokens, certificates and CAs inline \
             only, and names no program to run",
            refused.join(", ")
        )));
    }
    Ok(Vetted {
        kubeconfig,
        warnings,
    })
}

/// Reads the kubeconfig Secret `name` in `namespace` of the meta-cluster, vets it and builds
/// the client configuration of the business cluster.
pub async fn config(
    meta: &Client,
    namespace: &str,
    name: &str,
) -> Result<(kube::Config, Vec<String>), TargetProblem> {
    let source = format!("Secret {namespace}/{name}");
    let data = crate::read_secret(meta, namespace, name, "the Cluster's kubeconfig")
        .await
        .map_err(|err| match err {
            crate::Error::Request { source: err, .. }
                if matches!(&*err, kube::Error::Api(s) if s.code == 404) =>
            {
                TargetProblem::SecretInvalid(format!("{source} does not exist"))
            }
            err => TargetProblem::SecretInvalid(err.to_string()),
        })?;
    let data = data.get(KUBECONFIG_KEY).ok_or_else(|| {
        TargetProblem::SecretInvalid(format!("{source} has no key {KUBECONFIG_KEY:?}"))
    })?;
    let text = std::str::from_utf8(data).map_err(|_| {
        TargetProblem::SecretInvalid(format!("{source}: key {KUBECONFIG_KEY:?} is not text"))
    })?;
    let vetted = vet(&source, text)?;
    let config =
        kube::Config::from_custom_kubeconfig(vetted.kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|err| TargetProblem::SecretInvalid(format!("{source}: {err}")))?;
    Ok((config, vetted.warnings))
}

/// Asks the business cluster whether it serves the kinds endstate writes there (one
/// discovery request, no list).
pub async fn probe(client: &Client, server: &str) -> Result<(), TargetProblem> {
    let served = served(client).await.map_err(|err| classify(server, err))?;
    let missing: Vec<&str> = KINDS.into_iter().filter(|k| !served.contains(*k)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_crds(server, &missing))
    }
}

/// The kinds of `fleet.endstate.dev/v1alpha1` the server serves (none when it does not
/// serve the group), from one discovery request.
pub async fn served(client: &Client) -> Result<BTreeSet<String>, kube::Error> {
    let group = format!("{}/{}", endstate_api::GROUP, endstate_api::VERSION);
    match client.list_api_group_resources(&group).await {
        Ok(list) => Ok(list
            .resources
            .into_iter()
            .filter(|r| !r.name.contains('/'))
            .map(|r| r.kind)
            .collect()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(BTreeSet::new()),
        Err(err) => Err(err),
    }
}

/// The kinds endstate writes to a business cluster.
const KINDS: [&str; 2] = ["Machine", "MachinePackageVersion"];

fn missing_crds(server: &str, kinds: &[&str]) -> TargetProblem {
    TargetProblem::MissingCrds(format!(
        "{} does not serve {} of {}/{}: install deploy/target",
        server.trim_end_matches('/'),
        kinds.join(" and "),
        endstate_api::GROUP,
        endstate_api::VERSION
    ))
}

/// What a failed request to a business cluster says about it.
pub fn classify(server: &str, err: kube::Error) -> TargetProblem {
    match err {
        kube::Error::Api(status) if status.code == 404 => missing_crds(server, &KINDS),
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            TargetProblem::Unauthorized(format!("{server}: {} ({})", status.message, status.code))
        }
        err => TargetProblem::Unreachable(format!("{server}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str, cluster: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             contexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
             clusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n{cluster}\
             users:\n- name: u\n  user:\n{user}"
        )
    }

    #[test]
    fn inline_credentials_are_used() {
        let text = kubeconfig("    token: abc\n", "    certificate-authority-data: Y2E=\n");
        let vetted = vet("Secret ns/a-kubeconfig", &text).unwrap();
        assert!(vetted.warnings.is_empty());
        let text = kubeconfig(
            "    client-certificate-data: Y2VydA==\n    client-key-data: a2V5\n",
            "    insecure-skip-tls-verify: true\n",
        );
        let vetted = vet("Secret ns/a-kubeconfig", &text).unwrap();
        assert_eq!(vetted.warnings.len(), 1);
        assert!(
            vetted.warnings[0].contains("insecure-skip-tls-verify"),
            "{:?}",
            vetted.warnings
        );
    }

    #[test]
    fn programs_providers_and_files_are_refused_with_where() {
        let exec = kubeconfig(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/touch\n      args: [/tmp/pwned]\n",
            "",
        );
        let err = vet("Secret ns/a-kubeconfig", &exec).unwrap_err();
        assert_eq!(err.reason(), "TargetSecretInvalid");
        assert!(
            err.message()
                .starts_with("Secret ns/a-kubeconfig: user u runs a program (exec)"),
            "{err}"
        );
        let provider = kubeconfig("    auth-provider:\n      name: gcp\n", "");
        assert!(
            vet("s", &provider)
                .unwrap_err()
                .message()
                .contains("auth-provider")
        );
        let files = kubeconfig(
            "    tokenFile: /var/run/secrets/token\n    client-certificate: /etc/cert\n",
            "    certificate-authority: /etc/ca\n",
        );
        let err = vet("s", &files).unwrap_err().to_string();
        for field in ["tokenFile", "client-certificate", "certificate-authority"] {
            assert!(err.contains(field), "{err}");
        }
        assert!(vet("s", "not: [a kubeconfig").is_err());
        assert!(vet("s", "apiVersion: v1\nkind: Config\n").is_err());
    }
}
