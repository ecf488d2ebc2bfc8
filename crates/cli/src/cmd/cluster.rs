//! `endstate run --live kube` and `endstate install crds`: the loop against a real API server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use endstate_api::Fleet;
use endstate_controller::{Config, Console, Controller, WallClock};
use endstate_git::{
    Credentials, RevertConfig, RevertWriter, Secret, SignaturePolicy, Source, SourceConfig,
    SshSigner,
};
use endstate_kube::{KubeLive, Limits, Settings};
use kube::Api;

use crate::cli::{InstallArgs, RunArgs};
use crate::cmd::drive::drive;

/// `endstate install crds`.
pub fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::cmd::kube_client(args.kubeconfig.as_deref()).await?;
        let names = endstate_kube::install_crds(&client, Duration::from_secs(120)).await?;
        for name in names {
            println!("{name} established");
        }
        Ok(ExitCode::SUCCESS)
    })
}

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
    let history = crate::cmd::history(fleet.status.as_ref());
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
    Ok(match policy.mode.as_str() {
        "ssh" => SignaturePolicy::ssh(&keys.join("\n"))?,
        "openpgp" => SignaturePolicy::openpgp(&keys)?,
        other => anyhow::bail!("spec.source.verify.mode {other:?}: expected `ssh` or `openpgp`"),
    })
}

/// The loop on the `Fleet` named by `--fleet`; `--repo`, `--branch` and `--path` override its
/// source.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = crate::cmd::kube_config(args.kubeconfig.as_deref()).await?;
        let server = config.cluster_url.clone();
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        let fleets: Api<Fleet> = Api::namespaced(client.clone(), &args.namespace);
        let fleet = fleets.get_opt(&args.fleet).await.with_context(|| {
            format!("reading Fleet {}/{} from {server}", args.namespace, args.fleet)
        })?;
        let fleet = fleet.ok_or_else(|| {
            anyhow!(
                "Fleet {}/{} does not exist; create it (see examples/fleet/fleet.yaml and docs/operations.md) before running",
                args.namespace,
                args.fleet
            )
        })?;
        let overrides = Overrides {
            repo: args.repo.clone(),
            branch: args.branch.clone(),
            path: args.path.clone(),
            adopt_rewritten_history: args.adopt_rewritten_history,
            no_revert: args.no_revert,
            author_name: args.author_name.clone(),
            author_email: args.author_email.clone(),
            interval: args.interval,
            poll: args.poll,
            state_dir: match &args.state_dir {
                Some(dir) => dir.clone(),
                None => std::env::temp_dir()
                    .join(format!("endstate-{}-{}", args.namespace, args.fleet)),
            },
            jitter: 0.1,
        };
        let mut settings = Settings::new(args.namespace.clone(), args.fleet.clone());
        settings.limits = Limits {
            qps: args.qps,
            burst: args.burst,
        };
        let config = crate::cmd::kube_config(args.kubeconfig.as_deref()).await?;
        // The caches list the fleet in the background: a restarted run re-gates what it had in
        // flight, and goes on, meanwhile.
        let live = KubeLive::connect_lazily(config, settings)
            .await
            .context("starting the Kubernetes backend")?;
        let mut controller =
            build(&client, &fleet, live, &overrides, Box::new(Console::new())).await?;
        let control = controller.control();
        control.generation(fleet.metadata.generation.unwrap_or(0));
        control.suspend(fleet.spec.suspend.unwrap_or(false));
        let branch = controller.source().git().map(|s| s.config().branch.clone()).unwrap_or_default();
        controller.resume().await?;
        drive(controller, args, &branch).await
    })
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
