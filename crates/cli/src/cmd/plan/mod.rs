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
use endstate_git::{History, Oid, RenderCache, Source, SourceConfig, WorkTree};
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
}

/// Reads both sides and plans.
fn build(args: &PlanArgs, mirror: &Path, now: Time) -> anyhow::Result<PlanReport> {
    let live = if args.live {
        Some(read_live(args)?)
    } else {
        None
    };
    let work = args.local.as_deref().map(WorkTree::discover).transpose()?;
    if let Some(w) = &work
        && w.head().is_none()
    {
        bail!("{} has no commit yet to plan against", w.root().display());
    }
    let spec = live.as_ref().map(|l| &l.fleet.spec.source);
    let repo = if !args.repo.is_empty() {
        args.repo.clone()
    } else if let Some(w) = &work {
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
        .and_then(|(w, dir)| {
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
    let head_ref = match &work {
        // The work tree's branch, fetched for its commit; with none, the target's.
        Some(w) => w.branch().unwrap_or_else(|| args.target_branch.clone()),
        None => args
            .head
            .clone()
            .or_else(|| spec.and_then(|s| s.branch.clone()))
            .unwrap_or_else(|| "main".to_owned()),
    };
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
    let config = SourceConfig::new(repo.clone(), mirror.join("mirror"))
        .credentials(credentials)
        .branch(head_ref.clone())
        .path(path.clone())
        .owner(owner.clone())
        // The mirror lives as long as the command: a local remote's objects are read in place.
        .borrow_local_objects();
    let mut source = Source::open(config.clone(), History::default())?;
    // A branch is fetched; an expression (`main~1`) or a commit id is found below.
    let fetched = if head_ref.contains(['~', '^']) || is_commit_id(&head_ref) {
        Err(endstate_git::Error::BranchNotFound {
            url: repo.clone(),
            branch: head_ref.clone(),
        })
    } else {
        source.fetch()
    };
    let head = match &work {
        Some(w) => w
            .head()
            .or_else(|| fetched.as_ref().ok().map(|f| f.commit))
            .ok_or_else(|| anyhow!("{} has no commit to plan from", w.root().display()))?,
        None => match fetched {
            Ok(fetched) => fetched.commit,
            // Not a branch: an expression on one (`main~1`) or a commit the target reaches.
            Err(endstate_git::Error::BranchNotFound { .. }) => {
                resolve(&source, &config, &head_ref, &args.target_branch)
                    .with_context(|| format!("--head {head_ref:?} of {repo}"))?
            }
            Err(e) => return Err(e).with_context(|| format!("fetching {head_ref:?} of {repo}")),
        },
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
            Some(w) => {
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
        local: work.as_ref().map(|w| w.root().display().to_string()),
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
        Some(w) => render_dir(w.root(), &path, &owner),
        None => render(&source, head, &mut cache),
    };
    let (desired, policy) = match rendered {
        Ok(r) => r,
        Err(why) => {
            invalid(&mut report, &why);
            return Ok(report);
        }
    };
    // A base that does not render is planned without, as the controller does: a head that
    // fixes a broken main is what merging needs most.
    let base_objects = match base {
        Some(base) => match render(&source, base, &mut cache) {
            Ok((objects, _)) => Some(objects),
            Err(why) => {
                let first = why
                    .lines()
                    .find(|l| !l.trim().is_empty() && !l.trim_end().ends_with("does not render:"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
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

/// Marks the head refused when the Fleet quarantined it, or it carries a quarantined commit
/// without a revert since — as the controller judges it.
fn quarantine(report: &mut PlanReport, source: &Source, head: Oid, engine: &Engine) {
    let quarantined: Vec<&str> = engine
        .quarantine()
        .iter()
        .map(|q| q.commit.as_str())
        .collect();
    if quarantined.is_empty() {
        return;
    }
    let head = head.to_string();
    let culprit = if engine.quarantined(&head) {
        Some(head.clone())
    } else {
        source
            .resolve(&head)
            .ok()
            .and_then(|h| source.carries(h, &quarantined))
    };
    if let Some(culprit) = culprit {
        let refusal = endstate_controller::refusal::Refusal::Quarantined { head, culprit };
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
        let fleet = Api::<Fleet>::namespaced(client, &args.namespace)
            .get(&name)
            .await
            .with_context(|| format!("reading Fleet {}/{name}", args.namespace))?;
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
        })
    })
}

/// Marks the report invalid with a render's problems.
fn invalid(report: &mut PlanReport, why: &str) {
    report.outcome = Outcome::Invalid;
    report.problems = problems(why);
}

/// A render's error text as problems: `file:line[:col]: message` lines keep where they are.
fn problems(why: &str) -> Vec<Problem> {
    why.lines()
        // The heading ("commit … does not render:") is what `outcome` says already.
        .filter(|l| !l.trim().is_empty() && !l.trim_end().ends_with("does not render:"))
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (file, number) = (
                parts.next(),
                parts.next().and_then(|n| n.trim().parse().ok()),
            );
            let at = match (file, number) {
                (Some(file), Some(number)) if !file.contains(' ') => {
                    Some((file.to_owned(), number))
                }
                _ => None,
            };
            Problem {
                reason: "Invalid".to_owned(),
                file: at.as_ref().map(|(f, _)| f.clone()),
                line: at.map(|(_, n)| n),
                message: line.trim().to_owned(),
            }
        })
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
) -> Result<(Vec<FleetObject>, Policy), String> {
    let rendered = source.render(commit, cache).map_err(|e| e.to_string())?;
    split(rendered.objects)
}

/// Renders `path` of the files under `root` as they are.
fn render_dir(
    root: &Path,
    path: &str,
    owner: &Owner,
) -> Result<(Vec<FleetObject>, Policy), String> {
    let tree = DirTree::open(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let rendered = endstate_core::render(&tree, path, Options::owned_by(owner.clone()))
        .map_err(|d| d.to_string())?;
    split(rendered.objects)
}

/// The objects and the resolved policy of a render.
fn split(
    rendered: Vec<endstate_core::render::RenderedObject>,
) -> Result<(Vec<FleetObject>, Policy), String> {
    let mut policy = Policy::default();
    let mut objects = Vec::with_capacity(rendered.len());
    for r in rendered {
        if let FleetObject::RolloutPolicy(p) = &r.object {
            policy = Policy::resolve(&p.spec)
                .map_err(|why| format!("{}: {}", r.origin.file, why.join("; ")))?;
            continue;
        }
        objects.push(r.object);
    }
    Ok((objects, policy))
}
