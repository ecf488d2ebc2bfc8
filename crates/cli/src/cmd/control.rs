//! `endstate approve | breaker reset | suspend | resume | reconcile | status`: acting on a
//! running controller through its `Fleet`, as `flux suspend/resume/reconcile` do.
//!
//! A request is an annotation whose value is new (the time it was made); the controller acts
//! once and records the value in `status.lastHandled…`, which these commands wait for. The same
//! works with `kubectl annotate` (see docs/operations.md).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use endstate_api::Fleet;
use endstate_api::fleet::{BreakerState, FleetStatus, requests};

use crate::cli::{ApproveArgs, FleetArgs};
use crate::cmd::EXIT_INVALID;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn fleets(args: &FleetArgs) -> anyhow::Result<kube::Client> {
    Ok(endstate_kube::client(args.kubeconfig.as_deref()).await?)
}

async fn get(client: &kube::Client, args: &FleetArgs) -> anyhow::Result<Fleet> {
    endstate_kube::find_fleet(client, &args.namespace, &args.fleet)
        .await
        .with_context(|| format!("reading Fleet {}/{}", args.namespace, args.fleet))?
        .ok_or_else(|| anyhow!("Fleet {}/{} does not exist", args.namespace, args.fleet))
}

/// A token no earlier request used: the time, to the nanosecond.
fn token() -> String {
    endstate_api::k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Sets annotations on the Fleet (a `None` value removes one).
async fn annotate(
    client: &kube::Client,
    args: &FleetArgs,
    annotations: &[(&str, Option<&str>)],
) -> anyhow::Result<()> {
    endstate_kube::annotate_fleet(client, &args.namespace, &args.fleet, annotations).await?;
    Ok(())
}

/// Waits until the controller records `token` as handled in the field `handled` reads.
async fn wait_handled(
    client: &kube::Client,
    args: &FleetArgs,
    token: &str,
    handled: fn(&FleetStatus) -> Option<&String>,
) -> anyhow::Result<Option<Fleet>> {
    if args.timeout.is_zero() {
        return Ok(None);
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let fleet = get(client, args).await?;
        if fleet
            .status
            .as_ref()
            .and_then(handled)
            .is_some_and(|t| t == token)
        {
            return Ok(Some(fleet));
        }
        if Instant::now() >= deadline {
            bail!(
                "the request is recorded on Fleet {}/{}, and no controller acted on it within {}: is `endstate controller` running, and is the Fleet suspended?",
                args.namespace,
                args.fleet,
                endstate_rollout::time::human(args.timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `endstate approve FLEET [--wave W]`.
pub fn approve(args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let fleet_args = &args.fleet;
        let client = fleets(fleet_args).await?;
        let fleet = get(&client, fleet_args).await?;
        let rollout = fleet.status.as_ref().and_then(|s| s.rollout.as_ref());
        let Some(rollout) = rollout.filter(|r| r.phase == "Paused") else {
            eprintln!(
                "error: no wave of Fleet {}/{} holds for approval (phase {})",
                fleet_args.namespace,
                fleet_args.fleet,
                rollout.map_or("Idle", |r| r.phase.as_str())
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        };
        let name = rollout.wave_name.clone().unwrap_or_default();
        let index = usize::try_from(rollout.wave).unwrap_or(0);
        if let Some(wave) = &args.wave
            && !endstate_controller::control::names_wave(wave, index, &name)
        {
            eprintln!(
                "error: the wave that holds is {} {name}, not {wave}; nothing approved",
                index + 1
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        let token = token();
        // The wave approved is named, so that the controller refuses the approval if the
        // rollout moved on meanwhile.
        let wave = args.wave.clone().unwrap_or_else(|| name.clone());
        annotate(
            &client,
            fleet_args,
            &[
                (requests::APPROVE, Some(&token)),
                (requests::APPROVE_WAVE, Some(&wave)),
            ],
        )
        .await?;
        println!("approval of wave {} {name} requested", index + 1);
        if let Some(fleet) = wait_handled(&client, fleet_args, &token, |s| {
            s.last_handled_approve_at.as_ref()
        })
        .await?
        {
            let phase = fleet
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .map_or("Idle".to_owned(), |r| r.phase.clone());
            if phase == "Paused"
                && fleet
                    .status
                    .as_ref()
                    .and_then(|s| s.rollout.as_ref())
                    .is_some_and(|r| r.wave == rollout.wave)
            {
                eprintln!(
                    "error: the controller refused the approval (see `kubectl describe fleet {}`)",
                    fleet_args.fleet
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            println!("approved: the rollout goes on (phase {phase})");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `endstate breaker reset FLEET`: the evidence first, then the reset.
pub fn reset_breaker(args: &FleetArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = fleets(args).await?;
        let fleet = get(&client, args).await?;
        let breaker = fleet.status.as_ref().and_then(|s| s.breaker.as_ref());
        let Some(breaker) = breaker.filter(|b| b.state == BreakerState::Open) else {
            println!(
                "the breaker of Fleet {}/{} is closed; nothing to reset",
                args.namespace, args.fleet
            );
            return Ok(ExitCode::SUCCESS);
        };
        println!(
            "the breaker tripped at {} on commit {}; the evidence:\n{}\n",
            breaker.tripped_at.as_deref().unwrap_or("?"),
            breaker.commit.as_deref().unwrap_or("?"),
            breaker
                .evidence
                .as_deref()
                .unwrap_or("(none recorded)")
                .trim_end()
        );
        let token = token();
        annotate(&client, args, &[(requests::RESET_BREAKER, Some(&token))]).await?;
        if let Some(fleet) = wait_handled(&client, args, &token, |s| {
            s.last_handled_reset_breaker_at.as_ref()
        })
        .await?
        {
            let state = fleet
                .status
                .as_ref()
                .and_then(|s| s.breaker.as_ref())
                .map_or(BreakerState::Closed, |b| b.state);
            println!("breaker {state}; quarantined commits stay quarantined");
        } else {
            println!("breaker reset requested");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `endstate suspend FLEET` / `endstate resume FLEET`.
pub fn suspend(args: &FleetArgs, suspend: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = fleets(args).await?;
        get(&client, args).await?;
        endstate_kube::suspend_fleet(&client, &args.namespace, &args.fleet, suspend).await?;
        if suspend {
            println!(
                "Fleet {}/{} suspended: nothing is fetched or written until `endstate resume`",
                args.namespace, args.fleet
            );
        } else {
            println!("Fleet {}/{} resumed", args.namespace, args.fleet);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `endstate reconcile FLEET`: fetch now, and wait for it.
pub fn reconcile(args: &FleetArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = fleets(args).await?;
        get(&client, args).await?;
        let token = token();
        annotate(&client, args, &[(requests::RECONCILE, Some(&token))]).await?;
        println!(
            "reconcile of Fleet {}/{} requested",
            args.namespace, args.fleet
        );
        if let Some(fleet) = wait_handled(&client, args, &token, |s| {
            s.last_handled_reconcile_at.as_ref()
        })
        .await?
        {
            print!("{}", describe(&fleet));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `endstate status FLEET`.
pub fn status(args: &FleetArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = fleets(args).await?;
        let fleet = get(&client, args).await?;
        print!("{}", describe(&fleet));
        Ok(ExitCode::SUCCESS)
    })
}

/// A Fleet at a glance.
pub fn describe(fleet: &Fleet) -> String {
    let mut out = String::new();
    let name = format!(
        "{}/{}",
        fleet.metadata.namespace.as_deref().unwrap_or_default(),
        fleet.metadata.name.as_deref().unwrap_or_default()
    );
    let source = &fleet.spec.source;
    let _ = writeln!(
        out,
        "Fleet {name}: {} branch {} path {}{}",
        source.url,
        source.branch.as_deref().unwrap_or("main"),
        source
            .path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("."),
        if fleet.spec.suspend == Some(true) {
            " (SUSPENDED)"
        } else {
            ""
        }
    );
    let Some(status) = &fleet.status else {
        let _ = writeln!(out, "no status yet: no controller has reconciled it");
        return out;
    };
    for condition in status.conditions.iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<12} {:<5} {:<18} {}",
            condition.type_,
            condition.status,
            condition.reason,
            condition.message.lines().next().unwrap_or_default()
        );
    }
    fn short(commit: &Option<String>) -> &str {
        commit
            .as_deref()
            .map_or("-", endstate_controller::report::short)
    }
    let _ = writeln!(
        out,
        "applied {}   good {}",
        short(&status.last_applied_commit),
        short(&status.last_good_commit)
    );
    if let Some(r) = &status.rollout
        && !r.commit.is_empty()
    {
        let _ = writeln!(
            out,
            "rollout of {}: {} at wave {}/{} {}{}",
            endstate_controller::report::short(&r.commit),
            r.phase,
            r.wave + 1,
            r.waves,
            r.wave_name.as_deref().unwrap_or_default(),
            r.waiting
                .as_deref()
                .map(|w| format!(" — {w}"))
                .unwrap_or_default()
        );
        for (i, wave) in r.progress.iter().flatten().enumerate() {
            let _ = writeln!(
                out,
                "  {:>2}. {:<28} {:>8} {:>6}/{:<6} in flight {:<5} failed {}",
                i + 1,
                wave.name,
                wave.state,
                wave.done,
                wave.size,
                wave.in_flight,
                wave.failed
            );
        }
        let in_flight = r.in_flight_objects.clone().unwrap_or_default();
        if !in_flight.is_empty() {
            let _ = writeln!(
                out,
                "in flight ({}): {}{}",
                r.in_flight.unwrap_or(0),
                in_flight.join(", "),
                if r.in_flight.unwrap_or(0) as usize > in_flight.len() {
                    ", …"
                } else {
                    ""
                }
            );
        }
        for failed in r.failed_objects.iter().flatten() {
            let _ = writeln!(out, "failed: {}: {}", failed.object, failed.reason);
        }
    }
    let budgets: Vec<String> = status
        .budgets
        .iter()
        .flatten()
        .filter(|b| b.limit > 0)
        .map(|b| {
            format!(
                "{} {}/{} per {}",
                b.class,
                (b.limit - b.spent).max(0),
                b.limit,
                b.window
            )
        })
        .collect();
    if !budgets.is_empty() {
        let _ = writeln!(out, "budgets left: {}", budgets.join(", "));
    }
    if let Some(b) = &status.breaker {
        if b.state == BreakerState::Open {
            let _ = writeln!(
                out,
                "BREAKER OPEN since {} on {}:\n{}",
                b.tripped_at.as_deref().unwrap_or("?"),
                short(&b.commit),
                b.evidence.as_deref().unwrap_or_default().trim_end()
            );
        } else {
            let _ = writeln!(out, "breaker closed");
        }
    }
    for q in status.quarantine.iter().flatten() {
        let _ = writeln!(
            out,
            "quarantined {}{}: {}",
            endstate_controller::report::short(&q.commit),
            q.revert_commit
                .as_ref()
                .map(|r| format!(" (reverted by {})", endstate_controller::report::short(r)))
                .unwrap_or_default(),
            q.reason.lines().next().unwrap_or_default()
        );
    }
    for h in status.history.iter().flatten().take(5) {
        let _ = writeln!(
            out,
            "history: {} {} at {} ({} objects)",
            endstate_controller::report::short(&h.commit),
            h.outcome,
            h.finished_at,
            h.changed
        );
    }
    out
}
