//! `endstate plan`: what merging a change would do, for review — with the engine's own
//! planner, against another commit, a work tree's base, or a Fleet's live objects.
//!
//! ```text
//!   head      --head REF of --repo            or --local DIR (the files on disk)
//!   against   --base REF | the merge base with --target-branch | --live (the Fleet's objects,
//!             budgets, quarantine) | --no-base (nothing)
//!   report    risks, summary, blast radius, budgets, waves with worst-case times, diffs
//!             as text, markdown (a pull request comment) or JSON (docs/plan.schema.json)
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use endstate_api::Fleet;
use endstate_controller::refusal::Refusal;
use endstate_core::ownership::FleetId;
use endstate_core::policy::Policy;
use endstate_core::{DirTree, FleetObject, Options, Owner};
use endstate_git::{History, Oid, RenderCache, SignaturePolicy, Source, SourceConfig, WorkTree};
use endstate_review::{Against, Facts, Outcome, PlanReport, Problem, Risk, RiskKind, Subject};
use endstate_rollout::budget::Budgets;
use endstate_rollout::{Engine, Time};

use crate::cli::PlanArgs;
use crate::cmd::EXIT_INVALID;

/// The owner label of a plan without `--live`: both sides are rendered with it, so deletes
/// are found between them.
const FLEET: &str = "plan";

/// Exit code: merging changes the fleet (as `flux diff` and `kubectl diff` say it).
pub const EXIT_CHANGES: u8 = 1;

/// Prints the plan. Exit 0: no changes; 1: changes; 2: the head (or base) is invalid, the
/// controller would refuse it, or the plan failed.
pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    if args.schema {
        print!("{}", endstate_review::schema());
        return Ok(ExitCode::SUCCESS);
    }
    let now = args.now.unwrap_or_else(wall_clock);
    // A mirror of its own, removed before anything is printed (a reader that goes away ends
    // the process while it writes).
    let mirror = std::env::temp_dir().join(format!(
        "endstate-plan-{}-{}",
        std::process::id(),
        now.millis()
    ));
    let _ = std::fs::remove_dir_all(&mirror);
    let built = build(args, &mirror, now);
    let _ = std::fs::remove_dir_all(&mirror);
    let report = built?;
    let code = match report.outcome {
        Outcome::NoChanges => 0,
        Outcome::Changes => EXIT_CHANGES,
        Outcome::Invalid | Outcome::Refused => EXIT_INVALID,
    };
    let text = match args.output {
        crate::cli::PlanFormat::Json => report.to_json(),
        crate::cli::PlanFormat::Markdown => endstate_review::render_markdown(&report),
        crate::cli::PlanFormat::Text => {
            for problem in &report.problems {
                // What is wrong goes where errors go.
                eprintln!("error: {}", problem.message);
            }
            endstate_review::render_text(&report)
        }
    };
    // The exit code says what the plan found, also to a reader that stopped reading.
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::from(code)),
    }
}

fn wall_clock() -> Time {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time(since.as_millis() as i64)
}

/// A Fleet read from the cluster, with what the controller would plan from.
struct LiveFleet {
    fleet: Fleet,
    objects: Vec<FleetObject>,
    engine: Engine,
    last_applied: Option<String>,
    /// The signature policy of `spec.source.verify`, or why its keys could not be read.
    verify: anyhow::Result<Option<SignaturePolicy>>,
}

/// Where the head and its base come from: the remote's mirror, its settings, and the names
/// the report gives them.
struct Sources {
    source: Source,
    config: SourceConfig,
    /// With --local, the work tree and the commit it is at.
    work: Option<(WorkTree, Oid)>,
    repo: String,
    path: String,
    head_ref: String,
    /// The Fleet: its name with --live.
    fleet: FleetId,
    owner: Owner,
}

/// Reads both sides and plans.
fn build(args: &PlanArgs, mirror: &Path, now: Time) -> anyhow::Result<PlanReport> {
    let live = if args.live {
        Some(read_live(args)?)
    } else {
        None
    };
    let mut sources = open(args, live.as_ref(), mirror)?;
    let head = head(args, &mut sources)?;
    let Sources {
        source,
        work,
        head_ref,
        fleet,
        ..
    } = &sources;
    let spec = live.as_ref().map(|l| &l.fleet.spec.source);
    // Whether the head is what the Fleet's controller fetches next: the head of its branch.
    let fleets_branch = spec.map(|s| s.branch.as_deref().unwrap_or("main"));
    let own_branch = work.is_none() && fleets_branch == Some(head_ref.as_str());
    let (against, base) = base(args, &sources, live.as_ref(), head)?;
    let subject = Subject {
        repo: sources.repo.clone(),
        branch: if work.is_some() {
            "working tree".to_owned()
        } else {
            head_ref.clone()
        },
        path: sources.path.clone(),
        namespace: args.namespace.clone(),
        head: head.to_string(),
        local: work.as_ref().map(|(w, _)| w.root().display().to_string()),
        against,
        base: base.map(|b| b.to_string()),
        fleet: live.as_ref().map(|_| fleet.name.clone()),
    };

    let mut cache = RenderCache::default();
    let rendered = match work {
        Some((w, _)) => render_dir(w.root(), &sources.path, &sources.owner),
        None => render(source, head, &mut cache),
    };
    let (desired, policy) = match rendered {
        Ok(r) => r,
        Err(problems) => return Ok(endstate_review::invalid(subject, now, problems)),
    };
    let mut found = Vec::new();
    // A base that does not render is planned without, as the controller does: a head that
    // fixes a broken main is what merging needs most.
    let base_objects = match base {
        Some(base) => match render(source, base, &mut cache) {
            Ok((objects, _)) => Some(objects),
            Err(problems) => {
                let first = problems
                    .first()
                    .map(|p| p.message.clone())
                    .unwrap_or_default();
                found.push(Risk::base_invalid(
                    &base.to_string(),
                    &first,
                    against == Against::Live,
                ));
                None
            }
        },
        None => None,
    };
    let mut budgets = Budgets::default();
    if let Some(l) = &live {
        budgets = l.engine.budgets().clone();
        if work.is_none() {
            found.extend(source_checks(source, head, l, own_branch));
        }
        found.extend(quarantine(source, head, &l.engine));
        if l.engine.breaker_open() {
            found.push(Risk::breaker_open());
        }
    }
    let live_objects: &[FleetObject] = match (&live, &base_objects) {
        (Some(l), _) => &l.objects,
        (None, Some(b)) => b,
        (None, None) => &[],
    };
    let facts = Facts {
        desired: &desired,
        policy: &policy,
        base: base_objects.as_deref().or(match against {
            Against::Live => None,
            _ => Some(&[]),
        }),
        live: live_objects,
        fleet,
        budgets: &budgets,
        now,
        diffs: args.diffs,
    };
    let plan = endstate_review::plan(&facts);
    // A work tree's files are not a commit yet.
    let named = match work {
        Some(_) => "the working tree".to_owned(),
        None => head.to_string(),
    };
    for (refusal, objects) in endstate_controller::admit::changes(&named, &plan, &policy) {
        found.push(refused(&refusal, objects));
    }
    Ok(endstate_review::review(subject, &facts, &plan, found))
}

/// The remote's mirror and what plan reads of it: `--repo`, the work tree's repository or the
/// Fleet's; the overlay; the head's branch; the owner both sides are rendered with.
fn open(args: &PlanArgs, live: Option<&LiveFleet>, mirror: &Path) -> anyhow::Result<Sources> {
    // With --local, the head is the files on disk on top of the commit the work tree is at.
    let work = match args.local.as_deref() {
        Some(dir) => {
            let w = WorkTree::discover(dir)?;
            let Some(at) = w.head() else {
                bail!("{} has no commit yet to plan against", w.root().display());
            };
            Some((w, at))
        }
        None => None,
    };
    let spec = live.map(|l| &l.fleet.spec.source);
    let repo = if !args.repo.is_empty() {
        args.repo.clone()
    } else if let Some((w, _)) = &work {
        format!("file://{}", w.root().display())
    } else if let Some(spec) = spec {
        spec.url.clone()
    } else {
        bail!("--repo is required (or --local DIR, or --live with --fleet)")
    };
    // `--local overlays/prod` names the overlay too, when --path does not.
    let local_path = work
        .as_ref()
        .zip(args.local.as_deref())
        .and_then(|((w, _), dir)| {
            let dir = dir.canonicalize().ok()?;
            let root = w.root().canonicalize().ok()?;
            let rel = dir.strip_prefix(root).ok()?;
            (!rel.as_os_str().is_empty()).then(|| rel.to_string_lossy().into_owned())
        });
    let path = args
        .path
        .clone()
        .or(local_path)
        .or_else(|| spec.and_then(|s| s.path.clone()))
        .unwrap_or_default()
        .trim_matches('/')
        .to_owned();
    let head_ref = args
        .head
        .clone()
        .or_else(|| spec.and_then(|s| s.branch.clone()))
        .unwrap_or_else(|| "main".to_owned());
    let fleet = match (live, &args.fleet) {
        (Some(_), Some(name)) => name.clone(),
        _ => FLEET.to_owned(),
    };
    let fleet = FleetId::new(&args.namespace, fleet);
    let owner = Owner {
        namespace: args.namespace.clone(),
        labels: fleet.labels(&args.namespace),
    };
    // In CI the remote's credentials come from the environment (`ENDSTATE_GIT_TOKEN`, …).
    let credentials = endstate_git::Credentials::from_env().context("Git credentials")?;
    // With --live, the Fleet's source settings (its history-rewrite policy) as the controller
    // reads them; the command line's repository, head and path on top.
    let mut config = match spec {
        Some(spec) => SourceConfig::from_spec(spec, mirror.join("mirror"), credentials, None)
            .with_context(|| format!("Fleet {fleet}: spec.source"))?,
        None => SourceConfig::new(repo.clone(), mirror.join("mirror")).credentials(credentials),
    };
    config.url = repo.clone();
    let config = config
        .branch(head_ref.clone())
        .path(path.clone())
        .owner(owner.clone())
        // The mirror lives as long as the command: a local remote's objects are read in place.
        .borrow_local_objects();
    let source = Source::open(config.clone(), History::default())?;
    Ok(Sources {
        source,
        config,
        work,
        repo,
        path,
        head_ref,
        fleet,
        owner,
    })
}

/// The planned commit: the one the work tree is at, or `--head` resolved on the remote.
fn head(args: &PlanArgs, sources: &mut Sources) -> anyhow::Result<Oid> {
    let Sources {
        source,
        config,
        work,
        repo,
        head_ref,
        ..
    } = sources;
    Ok(match work {
        Some((_, at)) => *at,
        // An expression (`main~1`) or a commit id is found on its branch or the target's.
        None if head_ref.contains(['~', '^']) || is_commit_id(head_ref) => {
            resolve(source, config, head_ref, &args.target_branch)
                .with_context(|| format!("--head {head_ref:?} of {repo}"))?
        }
        None => {
            source
                .fetch()
                .with_context(|| format!("fetching {head_ref:?} of {repo}"))?
                .commit
        }
    })
}

/// What the head is planned against, and the commit whose objects tell what the fleet was
/// last given: `--no-base`, the live Fleet (its last applied commit), `--base`, or the merge
/// base with `--target-branch`.
fn base(
    args: &PlanArgs,
    sources: &Sources,
    live: Option<&LiveFleet>,
    head: Oid,
) -> anyhow::Result<(Against, Option<Oid>)> {
    let Sources {
        source,
        config,
        work,
        repo,
        head_ref,
        ..
    } = sources;
    Ok(if args.no_base {
        (Against::Nothing, None)
    } else if let Some(l) = live {
        // The objects of the commit last applied tell which fields endstate set.
        let base = l
            .last_applied
            .as_deref()
            .and_then(|c| resolve(source, config, c, &args.target_branch).ok());
        (Against::Live, base)
    } else if let Some(rev) = &args.base {
        (
            Against::Commit,
            Some(resolve(source, config, rev, &args.target_branch)?),
        )
    } else {
        let base = match work {
            Some((w, _)) => {
                let base = w.merge_base(&args.target_branch)?.to_string();
                // The work tree's own repository lends the mirror its objects: the merge base
                // is there already. A remote named by --repo has it on its target branch.
                match source.resolve(&base) {
                    Ok(base) => base,
                    Err(_) => {
                        resolve(source, config, &args.target_branch, &args.target_branch)?;
                        source.resolve(&base).with_context(|| {
                            format!(
                                "the merge base {base} is not on {repo}'s {:?}",
                                args.target_branch
                            )
                        })?
                    }
                }
            }
            None => {
                let target = resolve(source, config, &args.target_branch, &args.target_branch)?;
                source.merge_base(head, target).with_context(|| {
                    format!(
                        "{head_ref:?} and {:?} have no commit in common: name the base with --base",
                        args.target_branch
                    )
                })?
            }
        };
        (Against::Commit, Some(base))
    })
}

/// A refusal of the controller's, as the report's risk of the same reason.
fn refused(refusal: &Refusal, objects: usize) -> Risk {
    let kind = match refusal {
        Refusal::FetchFailed(_) => RiskKind::FetchFailed,
        Refusal::HistoryRewritten(_) => RiskKind::HistoryRewritten,
        Refusal::Unverified(_) => RiskKind::Unverified,
        Refusal::InvalidCommit(_) => RiskKind::InvalidCommit,
        Refusal::Quarantined { .. } => RiskKind::Quarantined,
        Refusal::ImmutablePackage { .. } => RiskKind::ImmutablePackageVersion,
        Refusal::MassDelete { .. } => RiskKind::MassDelete,
        Refusal::StateUnreadable(_) => RiskKind::StateUnreadable,
    };
    Risk::refusal(kind, refusal.to_string(), objects)
}

/// Checks the head as the Fleet's controller checks its branch's head: it must descend from
/// the last applied commit (unless the Fleet adopts rewritten history), and be signed by an
/// allowed key when the Fleet verifies signatures. The head of another branch (a pull
/// request's) reaches the controller only through a merge: its history is not judged, and a
/// missing signature is a risk, not a refusal (a merge commit is signed, or not, on its own).
fn source_checks(source: &Source, head: Oid, live: &LiveFleet, own_branch: bool) -> Vec<Risk> {
    let mut found = Vec::new();
    let config = source.config();
    let last_applied = live
        .last_applied
        .as_deref()
        .and_then(|c| Oid::from_str(c).ok());
    if own_branch {
        // The controller's own check of its branch's head.
        let judged = endstate_git::Judged {
            branch: &config.branch,
            last_applied,
            on_history_rewrite: config.on_history_rewrite,
            verify: live.verify.as_ref().ok().and_then(Option::as_ref),
        };
        if let Err(refusal) = endstate_controller::admit::commit(source, &judged, head) {
            found.push(refused(&refusal, 0));
        }
    }
    match &live.verify {
        Ok(None) => {}
        Ok(Some(_)) if own_branch => {}
        Ok(Some(policy)) => {
            if let Err(reason) = policy.verify(source.repository(), head) {
                let err = endstate_git::Error::Unverified {
                    commit: head,
                    reason,
                };
                found.push(Risk::unverified_elsewhere(&err.to_string()));
            }
        }
        Err(why) => found.push(Risk::keys_unreadable(&format!("{why:#}"))),
    }
    found
}

/// The refusal of a head the Fleet quarantined, or that carries a quarantined commit without
/// a revert since — as the controller judges it.
fn quarantine(source: &Source, head: Oid, engine: &Engine) -> Option<Risk> {
    let head = head.to_string();
    endstate_controller::admit::quarantine(engine, Some(source), &head)
        .map(|refusal| refused(&refusal, 0))
}

/// Reads the Fleet, its namespace's objects (listed as the controller's caches list them) and
/// its persisted state.
fn read_live(args: &PlanArgs) -> anyhow::Result<LiveFleet> {
    use endstate_rollout::Live as _;
    let name = args.fleet.clone().context("--live needs --fleet NAME")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = crate::cmd::kube_config(args.kubeconfig.as_deref()).await?;
        let client = kube::Client::try_from(config.clone())?;
        let fleet = endstate_kube::read_fleet(&client, &args.namespace, &name)
            .await
            .with_context(|| format!("reading Fleet {}/{name}", args.namespace))?;
        // A reviewer may not be allowed to read the Secret: the plan goes on without.
        let verify = match &fleet.spec.source.verify {
            Some(policy) => crate::cmd::cluster::signature_policy(&client, &args.namespace, policy)
                .await
                .map(Some),
            None => Ok(None),
        };
        let live = endstate_kube::KubeLive::connect(
            config,
            endstate_kube::Settings::new(args.namespace.clone(), name.clone()),
        )
        .await?;
        live.wait_synced()
            .await
            .with_context(|| format!("listing the objects of namespace {}", args.namespace))?;
        let objects = live.snapshot().await?;
        let status = fleet.status.clone().unwrap_or_default();
        let (engine, record) = endstate_controller::status::from_status(&status)
            .map_err(|why| anyhow!("Fleet {}/{name}: its state: {why}", args.namespace))?;
        Ok(LiveFleet {
            fleet,
            objects,
            engine,
            last_applied: record.last_applied,
            verify,
        })
    })
}

/// The problems of a render's diagnostics, each with its file and line.
fn diagnosed(diagnostics: &endstate_core::Diagnostics) -> Vec<Problem> {
    diagnostics
        .0
        .iter()
        .map(|d| Problem::invalid(Some(d.file.clone()), d.line, d.to_string()))
        .collect()
}

/// `rev` in the mirror: a branch of the remote (the usual base of a pull request, `main`, is
/// another branch than the planned one), an expression on one (`main~1`: that branch is
/// fetched), or a commit the branch `also` (the target branch) reaches, fetched for it.
fn resolve(source: &Source, config: &SourceConfig, rev: &str, also: &str) -> anyhow::Result<Oid> {
    if let Ok(oid) = source.resolve(rev) {
        return Ok(oid);
    }
    let branch = rev.split(['~', '^']).next().unwrap_or(rev);
    // A commit id is looked for on the target first; a name, as a branch first.
    let mut branches = if is_commit_id(branch) {
        vec![also, branch]
    } else {
        vec![branch, also]
    };
    branches.dedup();
    let mut why = None;
    for branch in branches {
        match fetch(config, branch).and_then(|o| o.resolve(rev).map_err(anyhow::Error::from)) {
            Ok(oid) => return Ok(oid),
            Err(e) => {
                why.get_or_insert(e);
            }
        }
    }
    Err(why.map_or_else(
        || anyhow!("{rev:?} names no commit"),
        |e| e.context(format!("{rev:?}")),
    ))
}

/// Whether `rev` looks like a (short) commit id rather than a branch name.
fn is_commit_id(rev: &str) -> bool {
    (7..=40).contains(&rev.len()) && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// Fetches `branch` of the remote into the same mirror.
fn fetch(config: &SourceConfig, branch: &str) -> anyhow::Result<Source> {
    let mut other = Source::open(config.clone().branch(branch.to_owned()), History::default())?;
    other
        .fetch()
        .map_err(|e| anyhow!("fetching the branch {branch:?}: {e}"))?;
    Ok(other)
}

fn render(
    source: &Source,
    commit: Oid,
    cache: &mut RenderCache,
) -> Result<(Vec<FleetObject>, Policy), Vec<Problem>> {
    let rendered = source.render(commit, cache).map_err(|e| match &e {
        endstate_git::Error::Invalid { diagnostics, .. } => diagnosed(diagnostics),
        _ => vec![Problem::invalid(None, None, e.to_string())],
    })?;
    split(rendered.objects)
}

/// Renders `path` of the files under `root` as they are.
fn render_dir(
    root: &Path,
    path: &str,
    owner: &Owner,
) -> Result<(Vec<FleetObject>, Policy), Vec<Problem>> {
    let tree = DirTree::open(root).map_err(|e| {
        vec![Problem::invalid(
            None,
            None,
            format!("{}: {e}", root.display()),
        )]
    })?;
    let rendered = endstate_core::render(&tree, path, Options::owned_by(owner.clone()))
        .map_err(|d| diagnosed(&d))?;
    split(rendered.objects)
}

/// The objects and the resolved policy of a render.
fn split(
    rendered: Vec<endstate_core::render::RenderedObject>,
) -> Result<(Vec<FleetObject>, Policy), Vec<Problem>> {
    let mut policy = Policy::default();
    let mut objects = Vec::with_capacity(rendered.len());
    for r in rendered {
        if let FleetObject::RolloutPolicy(p) = &r.object {
            policy = Policy::resolve(&p.spec).map_err(|why| {
                let at = format!("{}:{}", r.origin.file, r.origin.line);
                why.into_iter()
                    .map(|w| {
                        Problem::invalid(
                            Some(r.origin.file.clone()),
                            Some(r.origin.line),
                            format!("{at}: {w}"),
                        )
                    })
                    .collect::<Vec<_>>()
            })?;
            continue;
        }
        objects.push(r.object);
    }
    Ok((objects, policy))
}
