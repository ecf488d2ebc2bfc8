//! `endstate plan`: what merging a branch would do, for review — the change set, the waves
//! with their spread across failure domains, and the unified diffs.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use endstate_core::{FleetObject, ObjectRef, Owner};
use endstate_git::{History, Oid, RenderCache, Source, SourceConfig};
use endstate_rollout::diff::{self, Op};
use endstate_rollout::live::OWNER_LABEL;
use endstate_rollout::plan::{Inputs, Plan};
use endstate_rollout::policy::Policy;

use crate::cli::PlanArgs;
use crate::cmd::EXIT_INVALID;

const FLEET: &str = "plan";

/// Prints the plan; exit 2 when either side does not render.
pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let mirror = std::env::temp_dir().join(format!("endstate-plan-{}", std::process::id()));
    let config = SourceConfig::new(args.repo.clone(), mirror.join("mirror"))
        .branch(args.branch.clone())
        .path(args.path.trim_matches('/').to_owned())
        .owner(Owner {
            namespace: args.namespace.clone(),
            labels: vec![(OWNER_LABEL.to_owned(), FLEET.to_owned())],
        });
    let mut source = Source::open(config.clone(), History::default())?;
    let result = (|| {
        let head = source.fetch().context("fetching the branch")?.commit;
        let base = match &args.base {
            Some(rev) => Some(resolve(&source, &config, rev)?),
            None => None,
        };
        let mut cache = RenderCache::default();
        let (desired, policy) = match render(&source, head, &mut cache) {
            Ok(r) => r,
            Err(why) => {
                eprintln!("{why}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        let live = match base {
            Some(base) => match render(&source, base, &mut cache) {
                Ok((objects, _)) => objects,
                Err(why) => {
                    eprintln!("the base does not render either: {why}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            },
            None => Vec::new(),
        };
        let plan = Plan::new(Inputs {
            desired: &desired,
            base: Some(&live),
            live: &live,
            fleet: FLEET,
            policy: &policy,
            orphans: None,
        });
        let stages = plan.stages(&policy);
        let desired_by_id: HashMap<ObjectRef, &FleetObject> =
            desired.iter().map(|o| (o.id(), o)).collect();
        let live_by_id: HashMap<ObjectRef, &FleetObject> =
            live.iter().map(|o| (o.id(), o)).collect();
        let lookup = |id: &ObjectRef| {
            desired_by_id
                .get(id)
                .or_else(|| live_by_id.get(id))
                .copied()
        };
        let short = |c: Oid| c.to_string()[..10].to_owned();
        println!(
            "plan: {} → {} ({}, path {:?})",
            base.map_or("nothing".to_owned(), short),
            short(head),
            args.branch,
            args.path
        );
        if !plan.immutable.is_empty() {
            for id in &plan.immutable {
                eprintln!(
                    "error: {id}: a package version in use changes; add a new version instead"
                );
            }
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        if plan.is_empty() {
            println!("no changes: nothing would be written");
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{} creates, {} updates, {} reinstalls, {} deletes; {} kept by prune: disabled",
            plan.count(Op::Create),
            plan.count(Op::Update),
            plan.count(Op::Reinstall),
            plan.count(Op::Delete),
            plan.kept.len()
        );
        let spread = policy
            .machines
            .spread_by
            .clone()
            .unwrap_or_else(|| "idc".to_owned());
        println!("\nwaves:\n{}", plan.summary(&stages, &lookup, &spread));
        println!(
            "gates: healthy for the new generation within {}; breaker: {}",
            endstate_rollout::time::human(policy.gate_timeout),
            breaker(&policy)
        );
        let total = plan.len_changes();
        for (i, (_, id, op)) in plan.changes().enumerate() {
            if i == args.diffs {
                println!("\n… {} more changes not shown (--diffs)", total - i);
                break;
            }
            let before = live_by_id.get(id).copied();
            let after = desired_by_id.get(id).copied();
            println!();
            if let (Some(b), Some(a)) = (before, after) {
                println!(
                    "# {} {}: {}",
                    op.name(),
                    id,
                    diff::changed_paths(a, b).join(", ")
                );
            } else {
                println!("# {} {}", op.name(), id);
            }
            print!("{}", diff::unified(before, after));
        }
        Ok(ExitCode::SUCCESS)
    })();
    let _ = std::fs::remove_dir_all(&mirror);
    result
}

/// `rev` in the mirror; a branch of the remote other than the planned one (the usual base of a
/// pull request, `main`) is fetched into the same mirror first.
fn resolve(source: &Source, config: &SourceConfig, rev: &str) -> anyhow::Result<Oid> {
    if let Ok(oid) = source.resolve(rev) {
        return Ok(oid);
    }
    let branch = rev.split(['~', '^']).next().unwrap_or(rev);
    let mut other = Source::open(config.clone().branch(branch.to_owned()), History::default())
        .map_err(|e| anyhow!("--base {rev:?}: {e}"))?;
    other
        .fetch()
        .map_err(|e| anyhow!("--base {rev:?}: fetching the branch {branch:?}: {e}"))?;
    other
        .resolve(rev)
        .map_err(|e| anyhow!("--base {rev:?}: {e}"))
}

fn render(
    source: &Source,
    commit: Oid,
    cache: &mut RenderCache,
) -> Result<(Vec<FleetObject>, Policy), String> {
    let rendered = source.render(commit, cache).map_err(|e| e.to_string())?;
    let mut policy = Policy::default();
    let mut objects = Vec::new();
    for r in rendered.objects {
        if let FleetObject::RolloutPolicy(p) = &r.object {
            policy = Policy::resolve(&p.spec)
                .map_err(|why| format!("{}: {}", r.origin.file, why.join("; ")))?;
            continue;
        }
        objects.push(r.object);
    }
    Ok((objects, policy))
}

fn breaker(policy: &Policy) -> String {
    let t = &policy.breaker;
    let mut parts = Vec::new();
    if let Some(n) = t.per_wave {
        parts.push(format!("{n} failures in a wave"));
    }
    if let Some(r) = t.per_wave_ratio {
        parts.push(format!("{r}% of a wave"));
    }
    if let Some(n) = t.total {
        parts.push(format!("{n} failures in the rollout"));
    }
    if let Some(r) = t.total_ratio {
        parts.push(format!("{r}% of the rollout"));
    }
    format!("trips at {}", parts.join(" or "))
}
