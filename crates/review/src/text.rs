//! The report for people (`endstate plan`): the risks first, then the summary, where the
//! changes land, the budgets, the waves with their times, and the diffs.

use std::fmt::Write as _;
use std::time::Duration;

use endstate_rollout::time::human;

use crate::commit::short;
use crate::report::{Against, Outcome, PlanReport, Wave};

/// Rows of a blast radius list shown before "and N more".
pub const ROWS: usize = 10;

/// The report for people. Its problems are left out: they are errors, which the caller
/// prints where errors go.
pub fn render(report: &PlanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan: {}", heading(report));
    if report.outcome == Outcome::Invalid {
        return out;
    }
    if report.outcome == Outcome::NoChanges {
        let _ = writeln!(out, "no changes: nothing would be written");
    }
    if !report.risks.is_empty() {
        let _ = writeln!(out, "\nrisks:");
        for risk in &report.risks {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                if risk.refused { "REFUSED" } else { "!" },
                risk.kind,
                risk.message
            );
        }
    }
    if report.outcome == Outcome::NoChanges {
        // Machines held back, a breaker open: said even when nothing would be written.
        return out;
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} creates, {} updates, {} reinstalls, {} deletes; {} kept by prune: disabled",
        s.creates, s.updates, s.reinstalls, s.deletes, s.kept_by_prune
    );
    for (kind, c) in &s.by_kind {
        let _ = writeln!(
            out,
            "  {:<22} {} creates, {} updates, {} reinstalls, {} deletes",
            kind.as_str(),
            c.creates,
            c.updates,
            c.reinstalls,
            c.deletes
        );
    }
    let radius = &report.blast_radius;
    if !radius.clusters.is_empty() {
        let _ = writeln!(out, "\nclusters touched: {}", radius.clusters.len());
        for c in radius.clusters.iter().take(ROWS) {
            let _ = write!(out, "  {:<24} {:>7} Machines", c.name, c.machines);
            if let Some(op) = &c.cluster {
                let _ = write!(out, ", the Cluster: {op}");
            }
            out.push('\n');
        }
        if radius.clusters.len() > ROWS {
            let _ = writeln!(out, "  … and {} more", radius.clusters.len() - ROWS);
        }
    }
    if !radius.idcs.is_empty() {
        let idcs: Vec<String> = radius
            .idcs
            .iter()
            .map(|i| format!("{}:{}", i.name, i.machines))
            .collect();
        let _ = writeln!(out, "idcs touched: {}", idcs.join(" "));
    }
    if !radius.package_versions.is_empty() {
        let _ = writeln!(out, "package versions:");
        for m in radius.package_versions.iter().take(ROWS) {
            let _ = writeln!(
                out,
                "  {:<8} {:<16} {} → {}: {}{}",
                m.kind.as_str(),
                m.package,
                m.from.as_deref().unwrap_or("(new)"),
                m.to.as_deref().unwrap_or("(none)"),
                m.objects,
                if m.high_risk { " (risk: high)" } else { "" }
            );
        }
        if radius.package_versions.len() > ROWS {
            let _ = writeln!(out, "  … and {} more", radius.package_versions.len() - ROWS);
        }
    }
    if !report.budgets.is_empty() {
        let _ = writeln!(
            out,
            "\nbudgets{}:",
            if report.budgets_assumed_unspent {
                " (assumed unspent: plan with --live for what other rollouts spent)"
            } else {
                ""
            }
        );
        for b in &report.budgets {
            let _ = write!(out, "  {:<18} spends {:>7}", b.class, b.spends);
            match (b.limit, b.window_seconds) {
                (Some(limit), Some(window)) => {
                    let _ = write!(
                        out,
                        " of {limit} per {} ({} spent already)",
                        human(Duration::from_secs(window)),
                        b.spent
                    );
                }
                _ => {
                    let _ = write!(out, " (unlimited)");
                }
            }
            if b.waits {
                let _ = write!(
                    out,
                    ": waits {} for room",
                    human(Duration::from_secs(b.wait_seconds))
                );
            }
            out.push('\n');
        }
    }
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
                human(Duration::from_secs(wave.bake_seconds))
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
        let _ = write!(out, "\n      {}", timing(wave));
        out.push('\n');
    }
    if let Some(e) = &report.estimate {
        let _ = writeln!(
            out,
            "estimate: at worst {}{}",
            match (e.seconds, &e.end) {
                (Some(s), Some(end)) =>
                    format!("{} (done by {end})", human(Duration::from_secs(s))),
                _ => "never done: a wave cannot finish".to_owned(),
            },
            if e.approvals > 0 {
                format!(", plus {} approvals", e.approvals)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "gates: healthy for the new generation within {}{}; breaker: {}",
        human(Duration::from_secs(
            report.gate_timeout_seconds.unwrap_or(0)
        )),
        if report.metric_gates.is_empty() {
            String::new()
        } else {
            format!(", metrics {}", report.metric_gates.join(", "))
        },
        report.breaker.as_deref().unwrap_or_default()
    );
    if !report.windows.is_empty() {
        let _ = writeln!(out, "windows: {}", report.windows.join("; "));
    }
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

/// `base → head (ref, path …)`, and what the head is planned against.
pub fn heading(report: &PlanReport) -> String {
    let from = match report.against {
        Against::Nothing => "nothing".to_owned(),
        Against::Commit => report.base.as_deref().map_or("nothing", short).to_owned(),
        Against::Live => format!(
            "live Fleet {}/{}",
            report.namespace,
            report.fleet.as_deref().unwrap_or_default()
        ),
    };
    let to = match &report.local {
        Some(dir) => format!("work tree {dir} (at {})", short(&report.head)),
        None => short(&report.head).to_owned(),
    };
    format!(
        "{from} → {to} ({}, path {:?})",
        report.branch,
        if report.path.is_empty() {
            "."
        } else {
            &report.path
        }
    )
}

/// When a wave starts and ends at worst, and what it waits for.
pub fn timing(wave: &Wave) -> String {
    let mut out = match (&wave.earliest_start, &wave.latest_end) {
        (Some(start), Some(end)) => format!("starts {start}, done by {end} at worst"),
        (Some(start), None) => format!("starts {start}"),
        _ => String::new(),
    };
    if wave.window_wait_seconds > 0 {
        let _ = write!(
            out,
            "; waits {} for a maintenance window",
            human(Duration::from_secs(wave.window_wait_seconds))
        );
    }
    if wave.budget_wait_seconds > 0 {
        let _ = write!(
            out,
            "; waits {} for budget",
            human(Duration::from_secs(wave.budget_wait_seconds))
        );
    }
    if let Some(why) = &wave.blocked {
        let _ = write!(out, "; never finishes: {why}");
    }
    out
}
