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
use endstate_core::{DirTree, FleetObject, Options, Owner};
use endstate_git::{History, Oid, RenderCache, SignaturePolicy, Source, SourceConfig, WorkTree};
use endstate_rollout::budget::Budgets;
use endstate_rollout::live::OWNER_LABEL;
use endstate_rollout::policy::Policy;
use endstate_rollout::{Engine, Time};

use crate::cli::PlanArgs;
use crate::cmd::EXIT_INVALID;

mod analysis;
mod markdown;
mod report;
mod text;

use report::{Against, Outcome, PlanReport, Problem, Risk};

/// The owner label of a plan without `--live`: both sides are rendered with it, so deletes
/// are found between them.
const FLEET: &str = "plan";

/// Exit code: merging changes the fleet (as `flux diff` and `kubectl diff` say it).
pub const EXIT_CHANGES: u8 = 1;

/// Prints the plan. Exit 0: no changes; 1: changes; 2: the head (or base) is invalid, the
/// controller would refuse it, or the plan failed.
pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    if args.schema {
        print!("{}", report::schema());
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
        crate::cli::PlanFormat::Json => {
            serde_json::to_string_pretty(&report).expect("a report serialises") + "\n"
        }
        crate::cli::PlanFormat::Markdown => markdown::render(&report),
        crate::cli::PlanFormat::Text => text::render(&report),
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
    verify: Result<Option<SignaturePolicy>, String>,
}

/// Reads both sides and plans.
fn build(args: &PlanArgs, mirror: &Path, now: Time) -> anyhow::Result<PlanReport> {
    let live = if args.live {
        Some(read_live(args)?)
    } else {
        None
    };
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
    let spec = live.as_ref().map(|l| &l.fleet.spec.source);
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
    let fleet = match (&live, &args.fleet) {
        (Some(_), Some(name)) => name.clone(),
        _ => FLEET.to_owned(),
    };
    let owner = Owner {
        namespace: args.namespace.clone(),
        labels: vec![(OWNER_LABEL.to_owned(), fleet.clone())],
    };
    // In CI the remote's credentials come from the environment (`ENDSTATE_GIT_TOKEN`, …).
    let credentials = endstate_git::Credentials::from_env().context("Git credentials")?;
    // With --live, the Fleet's source settings (its history-rewrite policy) as the controller
    // reads them; the command line's repository, head and path on top.
    let mut config = match spec {
        Some(spec) => SourceConfig::from_spec(spec, mirror.join("mirror"), credentials, None)
            .with_context(|| format!("Fleet {}/{fleet}: spec.source", args.namespace))?,
        None => SourceConfig::new(repo.clone(), mirror.join("mirror")).credentials(credentials),
    };
    config.url = repo.clone();
    let config = config
        .branch(head_ref.clone())
        .path(path.clone())
        .owner(owner.clone())
        // The mirror lives as long as the command: a local remote's objects are read in place.
        .borrow_local_objects();
    let mut source = Source::open(config.clone(), History::default())?;
    // Whether the head is what the Fleet's controller fetches next: the head of its branch.
    let fleets_branch = spec.map(|s| s.branch.as_deref().unwrap_or("main"));
    let own_branch = work.is_none() && fleets_branch == Some(head_ref.as_str());
    let head = match &work {
        Some((_, at)) => *at,
        // An expression (`main~1`) or a commit id is found on its branch or the target's.
        None if head_ref.contains(['~', '^']) || is_commit_id(&head_ref) => {
            resolve(&source, &config, &head_ref, &args.target_branch)
                .with_context(|| format!("--head {head_ref:?} of {repo}"))?
        }
        None => {
            source
                .fetch()
                .with_context(|| format!("fetching {head_ref:?} of {repo}"))?
                .commit
        }
    };
    let (against, base) = if args.no_base {
        (Against::Nothing, None)
    } else if let Some(l) = &live {
        // The objects of the commit last applied tell which fields endstate set.
        let base = l
            .last_applied
            .as_deref()
            .and_then(|c| resolve(&source, &config, c, &args.target_branch).ok());
        (Against::Live, base)
    } else if let Some(rev) = &args.base {
        (
            Against::Commit,
            Some(resolve(&source, &config, rev, &args.target_branch)?),
        )
    } else {
        let base = match &work {
            Some((w, _)) => {
                let base = w.merge_base(&args.target_branch)?.to_string();
                // The work tree's own repository lends the mirror its objects: the merge base
                // is there already. A remote named by --repo has it on its target branch.
                match source.resolve(&base) {
                    Ok(base) => base,
                    Err(_) => {
                        resolve(&source, &config, &args.target_branch, &args.target_branch)?;
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
                let target = resolve(&source, &config, &args.target_branch, &args.target_branch)?;
                source.merge_base(head, target).with_context(|| {
                    format!(
                        "{head_ref:?} and {:?} have no commit in common: name the base with --base",
                        args.target_branch
                    )
                })?
            }
        };
        (Against::Commit, Some(base))
    };

    let mut report = PlanReport {
        version: report::VERSION,
        repo: repo.clone(),
        branch: if work.is_some() {
            "working tree".to_owned()
        } else {
            head_ref.clone()
        },
        path: path.clone(),
        namespace: args.namespace.clone(),
        head: head.to_string(),
        local: work.as_ref().map(|(w, _)| w.root().display().to_string()),
        against,
        base: base.map(|b| b.to_string()),
        fleet: live.as_ref().map(|_| fleet.clone()),
        now: now.rfc3339(),
        outcome: Outcome::NoChanges,
        problems: Vec::new(),
        risks: Vec::new(),
        summary: Default::default(),
        blast_radius: Default::default(),
        waves: Vec::new(),
        estimate: None,
        budgets: Vec::new(),
        budgets_assumed_unspent: live.is_none(),
        windows: Vec::new(),
        gate_timeout_seconds: None,
        metric_gates: Vec::new(),
        breaker: None,
        diffs: Vec::new(),
        diffs_left_out: 0,
    };
    let mut cache = RenderCache::default();
    let rendered = match &work {
        Some((w, _)) => render_dir(w.root(), &path, &owner),
        None => render(&source, head, &mut cache),
    };
    let (desired, policy) = match rendered {
        Ok(r) => r,
        Err(problems) => {
            report.outcome = Outcome::Invalid;
            report.problems = problems;
            return Ok(report);
        }
    };
    // A base that does not render is planned without, as the controller does: a head that
    // fixes a broken main is what merging needs most.
    let base_objects = match base {
        Some(base) => match render(&source, base, &mut cache) {
            Ok((objects, _)) => Some(objects),
            Err(problems) => {
                let first = problems
                    .first()
                    .map(|p| p.message.clone())
                    .unwrap_or_default();
                report.risks.push(Risk {
                    kind: "BaseInvalid".to_owned(),
                    refused: false,
                    objects: 0,
                    message: match against {
                        Against::Live => format!(
                            "the last applied commit {} does not render ({first}): planned against the live objects alone",
                            endstate_controller::report::short(&base.to_string())
                        ),
                        _ => format!(
                            "the base {} does not render ({first}): every object of the head is planned as new",
                            endstate_controller::report::short(&base.to_string())
                        ),
                    },
                });
                None
            }
        },
        None => None,
    };
    let mut budgets = Budgets::default();
    if let Some(l) = &live {
        budgets = l.engine.budgets().clone();
        if work.is_none() {
            source_checks(&mut report, &source, head, l, own_branch);
        }
        quarantine(&mut report, &source, head, &l.engine);
        if l.engine.breaker_open() {
            report.risks.push(Risk {
                kind: "BreakerOpen".to_owned(),
                refused: false,
                objects: 0,
                message:
                    "the Fleet's breaker is open: nothing rolls out until `endstate breaker reset`"
                        .to_owned(),
            });
        }
    }
    let live_objects: &[FleetObject] = match (&live, &base_objects) {
        (Some(l), _) => &l.objects,
        (None, Some(b)) => b,
        (None, None) => &[],
    };
    analysis::fill(
        &mut report,
        &analysis::Facts {
            desired: &desired,
            policy: &policy,
            base: base_objects.as_deref().or(match against {
                Against::Live => None,
                _ => Some(&[]),
            }),
            live: live_objects,
            fleet: &fleet,
            budgets: &budgets,
            now,
            diffs: args.diffs,
        },
    );
    Ok(report)
}

/// Checks the head as the Fleet's controller checks its branch's head: it must descend from
/// the last applied commit (unless the Fleet adopts rewritten history), and be signed by an
/// allowed key when the Fleet verifies signatures. The head of another branch (a pull
/// request's) reaches the controller only through a merge: its history is not judged, and a
/// missing signature is a risk, not a refusal (a merge commit is signed, or not, on its own).
fn source_checks(
    report: &mut PlanReport,
    source: &Source,
    head: Oid,
    live: &LiveFleet,
    own_branch: bool,
) {
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
            analysis::refuse(report, &refusal, 0);
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
                report.risks.push(Risk {
                    kind: "Unverified".to_owned(),
                    refused: false,
                    objects: 0,
                    message: format!(
                        "{err}: the Fleet refuses it if a merge makes it the branch's head as \
                         it is (a fast-forward or a rebase)"
                    ),
                });
            }
        }
        Err(why) => report.risks.push(Risk {
            kind: "Unverified".to_owned(),
            refused: false,
            objects: 0,
            message: format!(
                "the Fleet verifies signatures, but its keys could not be read ({why}): the \
                 head's signature is not checked"
            ),
        }),
    }
}

/// Marks the head refused when the Fleet quarantined it, or it carries a quarantined commit
/// without a revert since — as the controller judges it.
fn quarantine(report: &mut PlanReport, source: &Source, head: Oid, engine: &Engine) {
    let head = head.to_string();
    if let Some(refusal) = endstate_controller::admit::quarantine(engine, Some(source), &head) {
        analysis::refuse(report, &refusal, 0);
    }
}

/// Reads the Fleet, its namespace's objects (listed as the controller's caches list them) and
/// its persisted state.
fn read_live(args: &PlanArgs) -> anyhow::Result<LiveFleet> {
    use endstate_rollout::Live as _;
    use kube::Api;
    let name = args.fleet.clone().context("--live needs --fleet NAME")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = crate::cmd::kube_config(args.kubeconfig.as_deref()).await?;
        let client = kube::Client::try_from(config.clone())?;
        let fleet = Api::<Fleet>::namespaced(client.clone(), &args.namespace)
            .get(&name)
            .await
            .with_context(|| format!("reading Fleet {}/{name}", args.namespace))?;
        // A reviewer may not be allowed to read the Secret: the plan goes on without.
        let verify = match &fleet.spec.source.verify {
            Some(policy) => crate::cmd::cluster::signature_policy(&client, &args.namespace, policy)
                .await
                .map(Some)
                .map_err(|e| format!("{e:#}")),
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

/// A problem of a render, where the renderer knows where.
fn problem(file: Option<String>, line: Option<usize>, message: String) -> Problem {
    Problem {
        reason: "Invalid".to_owned(),
        file,
        line: line.map(|l| l as u64),
        message,
    }
}

/// The problems of a render's diagnostics, each with its file and line.
fn diagnosed(diagnostics: &endstate_core::Diagnostics) -> Vec<Problem> {
    diagnostics
        .0
        .iter()
        .map(|d| problem(Some(d.file.clone()), d.line, d.to_string()))
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
        _ => vec![problem(None, None, e.to_string())],
    })?;
    split(rendered.objects)
}

/// Renders `path` of the files under `root` as they are.
fn render_dir(
    root: &Path,
    path: &str,
    owner: &Owner,
) -> Result<(Vec<FleetObject>, Policy), Vec<Problem>> {
    let tree = DirTree::open(root)
        .map_err(|e| vec![problem(None, None, format!("{}: {e}", root.display()))])?;
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
                        problem(
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
