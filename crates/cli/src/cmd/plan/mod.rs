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

mod markdown;
mod report;

use endstate_controller::report::short;
use report::{Diff, Outcome, PlanReport, Problem, Summary, Wave};

/// Exit code: merging changes the fleet (as `flux diff` and `kubectl diff` say it).
pub const EXIT_CHANGES: u8 = 1;

/// Prints the plan. Exit 0: no changes; 1: changes; 2: the head (or base) is invalid, the
/// controller would refuse it, or the plan failed.
pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    if args.schema {
        print!("{}", report::schema());
        return Ok(ExitCode::SUCCESS);
    }
    let mirror = std::env::temp_dir().join(format!("endstate-plan-{}", std::process::id()));
    // In CI the remote's credentials come from the environment (`ENDSTATE_GIT_TOKEN`, …).
    let credentials = endstate_git::Credentials::from_env().context("Git credentials")?;
    let config = SourceConfig::new(args.repo.clone(), mirror.join("mirror"))
        .credentials(credentials)
        .branch(args.branch.clone())
        .path(args.path.trim_matches('/').to_owned())
        .owner(Owner {
            namespace: args.namespace.clone(),
            labels: vec![(OWNER_LABEL.to_owned(), FLEET.to_owned())],
        });
    let result = (|| {
        let mut source = Source::open(config.clone(), History::default())?;
        let head = source.fetch().context("fetching the branch")?.commit;
        let base = match &args.base {
            Some(rev) => Some(resolve(&source, &config, rev)?),
            None => None,
        };
        let report = build(args, &source, head, base);
        let code = match report.outcome {
            Outcome::NoChanges => ExitCode::SUCCESS,
            Outcome::Changes => ExitCode::from(EXIT_CHANGES),
            Outcome::Invalid | Outcome::Refused => ExitCode::from(EXIT_INVALID),
        };
        match args.output {
            crate::cli::PlanFormat::Json => {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            crate::cli::PlanFormat::Markdown => print!("{}", markdown::render(&report)),
            crate::cli::PlanFormat::Text => print!("{}", text(&report)),
        }
        Ok(code)
    })();
    let _ = std::fs::remove_dir_all(&mirror);
    result
}

/// Renders both sides, plans with the engine's planner, and reports.
fn build(args: &PlanArgs, source: &Source, head: Oid, base: Option<Oid>) -> PlanReport {
    let mut report = PlanReport {
        version: report::VERSION,
        repo: args.repo.clone(),
        branch: args.branch.clone(),
        path: args.path.clone(),
        namespace: args.namespace.clone(),
        head: head.to_string(),
        base: base.map(|b| b.to_string()),
        outcome: Outcome::NoChanges,
        problems: Vec::new(),
        summary: Summary::default(),
        waves: Vec::new(),
        gate_timeout_seconds: None,
        breaker: None,
        diffs: Vec::new(),
        diffs_left_out: 0,
    };
    let invalid = |report: &mut PlanReport, side: &str, why: String| {
        report.outcome = Outcome::Invalid;
        report.problems = problems(side, &why);
    };
    let mut cache = RenderCache::default();
    let (desired, policy) = match render(source, head, &mut cache) {
        Ok(r) => r,
        Err(why) => {
            invalid(&mut report, "", why);
            return report;
        }
    };
    let live = match base {
        Some(base) => match render(source, base, &mut cache) {
            Ok((objects, _)) => objects,
            Err(why) => {
                invalid(&mut report, "the base: ", why);
                return report;
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
    if !plan.immutable.is_empty() {
        report.outcome = Outcome::Refused;
        report.problems = plan
            .immutable
            .iter()
            .map(|id| Problem {
                reason: "ImmutablePackageVersion".to_owned(),
                file: None,
                line: None,
                message: format!(
                    "{id}: a package version in use changes; add a new version instead"
                ),
            })
            .collect();
        return report;
    }
    report.summary = Summary {
        creates: plan.count(Op::Create) as u64,
        updates: plan.count(Op::Update) as u64,
        reinstalls: plan.count(Op::Reinstall) as u64,
        deletes: plan.count(Op::Delete) as u64,
        kept_by_prune: plan.kept.len() as u64,
    };
    if plan.is_empty() {
        return report;
    }
    report.outcome = Outcome::Changes;
    let stages = plan.stages(&policy);
    let desired_by_id: HashMap<ObjectRef, &FleetObject> =
        desired.iter().map(|o| (o.id(), o)).collect();
    let live_by_id: HashMap<ObjectRef, &FleetObject> = live.iter().map(|o| (o.id(), o)).collect();
    let lookup = |id: &ObjectRef| {
        desired_by_id
            .get(id)
            .or_else(|| live_by_id.get(id))
            .copied()
    };
    let spread = policy
        .machines
        .spread_by
        .clone()
        .unwrap_or_else(|| "idc".to_owned());
    report.waves = stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let (ops, domains) = plan.breakdown(stage, &lookup, &spread);
            Wave {
                number: i as u64 + 1,
                name: stage.name.clone(),
                size: u64::from(stage.size),
                max_unavailable: stage
                    .seq
                    .gated()
                    .then_some(u64::from(stage.max_unavailable)),
                bake_seconds: stage.bake().as_secs(),
                pause: stage.pause,
                ops: ops
                    .into_iter()
                    .map(|(op, n)| (op.to_owned(), n as u64))
                    .collect(),
                spread_by: spread.clone(),
                domains: domains.into_iter().map(|(d, n)| (d, n as u64)).collect(),
            }
        })
        .collect();
    report.gate_timeout_seconds = Some(policy.gate_timeout.as_secs());
    report.breaker = Some(breaker(&policy));
    // Group the changes by patch: 10k Machines moving to one kubelet are one diff.
    let mut groups: Vec<Diff> = Vec::new();
    let mut by_patch: HashMap<String, usize> = HashMap::new();
    for (_, id, op) in plan.changes() {
        let before = live_by_id.get(id).copied();
        let after = desired_by_id.get(id).copied();
        let unified = diff::unified(before, after);
        let patch: String = unified
            .lines()
            .filter(|l| {
                (l.starts_with('+') || l.starts_with('-'))
                    && !l.starts_with("+++")
                    && !l.starts_with("---")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let key = format!("{}\n{patch}", op.name());
        if let Some(&i) = by_patch.get(&key) {
            groups[i].members += 1;
            continue;
        }
        by_patch.insert(key, groups.len());
        let paths = match (before, after) {
            (Some(b), Some(a)) => diff::changed_paths(a, b),
            _ => Vec::new(),
        };
        groups.push(Diff {
            op: op.name().to_owned(),
            object: id.to_string(),
            paths,
            unified,
            members: 1,
        });
    }
    let total = groups.len();
    groups.truncate(args.diffs);
    report.diffs = groups;
    report.diffs_left_out = total.saturating_sub(report.diffs.len()) as u64;
    report
}

/// A render's error text as problems: `file:line[:col]: message` lines keep where they are.
fn problems(side: &str, why: &str) -> Vec<Problem> {
    why.lines()
        // The heading ("commit … does not render:") is what `outcome` says already.
        .filter(|l| !l.trim().is_empty() && !l.trim_end().ends_with("does not render:"))
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (file, number) = (
                parts.next(),
                parts.next().and_then(|n| n.trim().parse().ok()),
            );
            match (file, number) {
                (Some(file), Some(number)) if !file.contains(' ') => Problem {
                    reason: "Invalid".to_owned(),
                    file: Some(file.to_owned()),
                    line: Some(number),
                    message: format!("{side}{}", line.trim()),
                },
                _ => Problem {
                    reason: "Invalid".to_owned(),
                    file: None,
                    line: None,
                    message: format!("{side}{}", line.trim()),
                },
            }
        })
        .collect()
}

/// The report for people.
fn text(report: &PlanReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan: {} → {} ({}, path {:?})",
        report.base.as_deref().map_or("nothing", short),
        short(&report.head),
        report.branch,
        report.path
    );
    match report.outcome {
        Outcome::Invalid | Outcome::Refused => {
            // What is wrong goes where errors go.
            for problem in &report.problems {
                eprintln!("error: {}", problem.message);
            }
            return out;
        }
        Outcome::NoChanges => {
            let _ = writeln!(out, "no changes: nothing would be written");
            return out;
        }
        Outcome::Changes => {}
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} creates, {} updates, {} reinstalls, {} deletes; {} kept by prune: disabled",
        s.creates, s.updates, s.reinstalls, s.deletes, s.kept_by_prune
    );
    let _ = writeln!(out, "\nwaves:");
    for wave in &report.waves {
        let ops: Vec<String> = wave.ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
        let _ = write!(
            out,
            "{:>2}. {:<20} {:>6} objects ({})",
            wave.number,
            wave.name,
            wave.size,
            ops.join(", ")
        );
        if let Some(n) = wave.max_unavailable {
            let _ = write!(out, ", {n} at a time");
        }
        if wave.bake_seconds > 0 {
            let _ = write!(
                out,
                ", bake {}",
                endstate_rollout::time::human(std::time::Duration::from_secs(wave.bake_seconds))
            );
        }
        if wave.pause {
            let _ = write!(out, ", then hold for approval");
        }
        let domains = &wave.domains;
        if domains.len() > 1 || (domains.len() == 1 && !domains.contains_key("")) {
            let d: Vec<String> = domains.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            let _ = write!(out, "\n      {}: {}", wave.spread_by, d.join(" "));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "gates: healthy for the new generation within {}; breaker: {}",
        endstate_rollout::time::human(std::time::Duration::from_secs(
            report.gate_timeout_seconds.unwrap_or(0)
        )),
        report.breaker.as_deref().unwrap_or_default()
    );
    for diff in &report.diffs {
        out.push('\n');
        let _ = write!(out, "# {} {}", diff.op, diff.object);
        if !diff.paths.is_empty() {
            let _ = write!(out, ": {}", diff.paths.join(", "));
        }
        if diff.members > 1 {
            let _ = write!(out, " (and {} more like it)", diff.members - 1);
        }
        out.push('\n');
        out.push_str(&diff.unified);
    }
    if report.diffs_left_out > 0 {
        let _ = writeln!(
            out,
            "\n… {} more distinct changes not shown (--diffs)",
            report.diffs_left_out
        );
    }
    out
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
