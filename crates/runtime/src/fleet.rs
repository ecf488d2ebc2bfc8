//! Building one Fleet's loop: its source (with the Secrets the spec names read from the
//! Fleet's namespace), signature verification, revert writer and gates' Secrets, as the spec
//! and the command line's [`Overrides`] say. `endstate controller` builds each Fleet's loop
//! with it, and `endstate run --live kube` its one.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use endstate_api::Fleet;
use endstate_controller::{Config, Controller, WallClock};
use endstate_git::{
    Credentials, RevertConfig, RevertWriter, Secret, SignaturePolicy, Source, SourceConfig,
    SshSigner,
};

/// What a command line adds to (or overrides in) a `Fleet`'s spec.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Overrides `spec.source.url` when not empty.
    pub repo: String,
    /// Overrides `spec.source.branch`.
    pub branch: Option<String>,
    /// Overrides `spec.source.path` when not empty.
    pub path: String,
    /// Follow rewritten history.
    pub adopt_rewritten_history: bool,
    /// Push no reverts.
    pub no_revert: bool,
    /// The author of reverts when the Fleet has no `spec.revert`.
    pub author_name: String,
    /// Its email.
    pub author_email: String,
    /// Overrides `spec.source.interval`.
    pub interval: Option<Duration>,
    /// How often everything in flight is looked at again.
    pub poll: Duration,
    /// Where the Git mirror lives.
    pub state_dir: std::path::PathBuf,
    /// Move each fetch interval by up to this fraction of it.
    pub jitter: f64,
}

/// The loop on `fleet` over `live`: its source (with the Secrets it names read through
/// `client`), verification and revert writer, as the spec and `overrides` say.
pub async fn build<L: endstate_rollout::Live>(
    client: &kube::Client,
    fleet: &Fleet,
    live: L,
    overrides: &Overrides,
    reporter: Box<dyn endstate_controller::Reporter>,
) -> anyhow::Result<Controller<L, WallClock>> {
    let namespace = fleet.metadata.namespace.clone().unwrap_or_default();
    let name = fleet.metadata.name.clone().unwrap_or_default();
    let spec = &fleet.spec;
    let credentials = match &spec.source.secret_ref {
        Some(secret) => credentials(client, &namespace, &secret.name).await?,
        None => Credentials::default(),
    };
    let verify = match &spec.source.verify {
        Some(policy) => Some(signature_policy(client, &namespace, policy).await?),
        None => None,
    };
    let mut source_config = SourceConfig::from_spec(
        &spec.source,
        overrides.state_dir.join("mirror"),
        credentials,
        verify,
    )?;
    if !overrides.repo.is_empty() {
        source_config.url = overrides.repo.clone();
    }
    if let Some(branch) = &overrides.branch {
        source_config.branch = branch.clone();
    }
    if !overrides.path.is_empty() {
        source_config.path = overrides.path.trim_matches('/').to_owned();
    }
    if overrides.adopt_rewritten_history {
        source_config = source_config.on_history_rewrite(endstate_git::RewritePolicy::Adopt);
    }
    let writer = match (&spec.revert, overrides.no_revert) {
        (_, true) => None,
        (Some(revert), false) => {
            let signer = match &revert.signing_key_secret_ref {
                Some(secret) => {
                    let keys = secret_texts(
                        client,
                        &namespace,
                        &secret.name,
                        "spec.revert.signingKeySecretRef",
                    )
                    .await?;
                    let [key] = keys.as_slice() else {
                        anyhow::bail!(
                            "the Secret {} named by spec.revert.signingKeySecretRef must hold exactly one private key",
                            secret.name
                        );
                    };
                    Some(SshSigner::new(&Secret::new(key.clone()))?)
                }
                None => None,
            };
            Some(RevertWriter::open(
                &source_config,
                RevertConfig::from_spec(&name, revert, signer)?,
            )?)
        }
        (None, false) => Some(RevertWriter::open(
            &source_config,
            RevertConfig::new(&name, &overrides.author_name, &overrides.author_email),
        )?),
    };
    let history = history(fleet.status.as_ref());
    let source = Source::open(source_config, history)?;
    let mut config = Config::new(name.clone(), namespace.clone());
    config.interval = match (overrides.interval, spec.source.interval.as_deref()) {
        (Some(interval), _) => interval,
        (None, Some(interval)) => endstate_api::duration::parse(interval)
            .map_err(|why| anyhow!("Fleet {namespace}/{name}: spec.source.interval: {why}"))?,
        (None, None) => Duration::from_secs(60),
    };
    if config.interval.is_zero() {
        anyhow::bail!("Fleet {namespace}/{name}: spec.source.interval must be longer than 0");
    }
    config.jitter = overrides.jitter;
    config.placed = spec
        .machines
        .as_ref()
        .and_then(|m| m.placement)
        .is_some_and(|p| p == endstate_api::fleet::Placement::Cluster);
    config.poll = overrides.poll;
    let mut controller = Controller::new(config, source, writer, live, WallClock, reporter);
    controller.set_gate_secrets(std::sync::Arc::new(GateSecrets {
        client: client.clone(),
        namespace: namespace.clone(),
    }));
    Ok(controller)
}

/// The signature policy of `spec.source.verify`, with the keys of the Secret it names.
pub async fn signature_policy(
    client: &kube::Client,
    namespace: &str,
    policy: &endstate_api::fleet::SignaturePolicy,
) -> anyhow::Result<SignaturePolicy> {
    let keys = secret_texts(
        client,
        namespace,
        &policy.secret_ref.name,
        "spec.source.verify.secretRef",
    )
    .await?;
    SignaturePolicy::from_keys(&policy.mode, &keys).context("spec.source.verify")
}

/// Git credentials from a Secret of the fleet's namespace (keys as `Credentials::from_dir`).
pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Credentials> {
    let mut data = secret_data(client, namespace, name, "spec.source.secretRef").await?;
    let mut take = |key: &str| data.remove(key);
    Ok(Credentials {
        ssh_key: take("identity").map(Secret::new),
        ssh_passphrase: take("identity.passphrase").map(Secret::new),
        known_hosts: take("known_hosts"),
        username: take("username"),
        password: take("password").map(Secret::new),
        token: take("token").map(Secret::new),
    })
}

/// The values of a Secret of the fleet's namespace, as text, in key order.
pub async fn secret_texts(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    field: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(secret_data(client, namespace, name, field)
        .await?
        .into_values()
        .collect())
}

/// A Secret of the fleet's namespace, key → text; `field` names what referred to it.
pub async fn secret_data(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    field: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    endstate_kube::read_secret(client, namespace, name, field)
        .await?
        .into_iter()
        .map(|(key, value)| {
            let text = String::from_utf8(value).map_err(|_| {
                anyhow!("key {key} of Secret {namespace}/{name} (named by {field}) is not UTF-8")
            })?;
            Ok((key, text))
        })
        .collect()
}

/// The Secrets metric gates name, read from the Fleet's namespace when a gate is sampled.
struct GateSecrets {
    client: kube::Client,
    namespace: String,
}

impl endstate_controller::gates::Secrets for GateSecrets {
    fn read<'a>(&'a self, name: &'a str) -> endstate_controller::gates::SecretFuture<'a> {
        Box::pin(async move {
            endstate_kube::read_secret(
                &self.client,
                &self.namespace,
                name,
                "spec.gates.metrics[].secretRef",
            )
            .await
            .map_err(Into::into)
        })
    }
}

/// What a persisted Fleet status says the fleet applied last, and was good at last: the
/// source refuses a branch whose head does not descend from it.
pub fn history(status: Option<&endstate_api::FleetStatus>) -> endstate_git::History {
    endstate_git::History {
        last_applied: status.and_then(|s| s.last_applied_commit.clone()),
        last_good: status.and_then(|s| s.last_good_commit.clone()),
    }
}
