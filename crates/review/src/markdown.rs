//! The report as a pull request comment (`endstate plan -o markdown`) — a headline table, then
//! a collapsible section per part, the grouped diffs last — cut to fit under GitHub's comment
//! limit of 65,536 characters, saying what it left out.

use std::fmt::Write as _;

use std::time::Duration;

use endstate_rollout::time::human;

use crate::report::{Count, Outcome, PlanReport};
use crate::risk::Risk;
use crate::text::{ROWS, heading};

/// The most characters written: GitHub refuses comments over 65,536, and a bot's wrapper
/// (a marker to find its comment again, say) needs some room.
pub const CAP: usize = 60_000;

/// The comment.
pub fn render(report: &PlanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### endstate plan: {}\n", escape(&heading(report)));
    match report.outcome {
        Outcome::Invalid | Outcome::Refused => {
            let _ = writeln!(
                out,
                "**{}**: the controller would not apply this head.\n",
                if report.outcome == Outcome::Invalid {
                    "Invalid"
                } else {
                    "Refused"
                }
            );
            for problem in &report.problems {
                let at = match (&problem.file, problem.line) {
                    (Some(file), Some(line)) => format!("`{file}:{line}` "),
                    (Some(file), None) => format!("`{file}` "),
                    _ => String::new(),
                };
                let _ = writeln!(out, "- {at}{}", escape(&problem.message));
            }
            out.push('\n');
            if report.outcome == Outcome::Invalid {
                return capped(out, Vec::new());
            }
        }
        Outcome::NoChanges => {
            let _ = writeln!(out, "No changes: merging writes nothing.");
            // Machines held back, a breaker open: said even when nothing would be written.
            for risk in report.risks.iter().take(ROWS) {
                let _ = writeln!(out, "\n> **{}**: {}", risk.kind, escape(&risk.message));
            }
            return out;
        }
        Outcome::Changes => {}
    }
    let s = &report.summary;
    let radius = &report.blast_radius;
    let _ = writeln!(
        out,
        "| creates | updates | reinstalls | deletes | kept by prune | clusters | idcs | waves | at worst |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        s.creates,
        s.updates,
        s.reinstalls,
        s.deletes,
        s.kept_by_prune,
        radius.clusters.len(),
        radius.idcs.len(),
        report.waves.len(),
        report
            .estimate
            .as_ref()
            .map_or("—".to_owned(), |e| match e.seconds {
                Some(secs) => format!(
                    "{}{}",
                    human(Duration::from_secs(secs)),
                    if e.approvals > 0 {
                        format!(" + {} approvals", e.approvals)
                    } else {
                        String::new()
                    }
                ),
                None => "never done".to_owned(),
            })
    );
    let risks: Vec<&Risk> = report.risks.iter().filter(|r| !r.refused).collect();
    if !risks.is_empty() {
        // Called out first, in a GitHub alert: one paragraph per risk.
        let mut lines: Vec<String> = risks
            .iter()
            .take(ROWS)
            .map(|r| format!("> **{}**: {}", r.kind, escape(&r.message)))
            .collect();
        if risks.len() > ROWS {
            lines.push(format!(
                "> … and {} more (`-o json` lists every one)",
                risks.len() - ROWS
            ));
        }
        let _ = writeln!(out, "> [!WARNING]\n{}\n", lines.join("\n>\n"));
    }
    let _ = writeln!(out, "<details><summary>Blast radius</summary>\n");
    if !radius.clusters.is_empty() {
        let _ = writeln!(out, "| Cluster | Machines | the Cluster |\n|---|---:|---|");
        for c in radius.clusters.iter().take(ROWS) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                escape(&c.name),
                c.machines,
                c.cluster.as_deref().unwrap_or("")
            );
        }
        if radius.clusters.len() > ROWS {
            let _ = writeln!(out, "| … {} more | | |", radius.clusters.len() - ROWS);
        }
        out.push('\n');
    }
    if !radius.idcs.is_empty() {
        let mut largest: Vec<&Count> = radius.idcs.iter().collect();
        largest.sort_by_key(|i| std::cmp::Reverse(i.machines));
        let mut idcs: Vec<String> = largest
            .iter()
            .take(ROWS)
            .map(|i| format!("`{}`: {}", escape(&i.name), i.machines))
            .collect();
        if largest.len() > ROWS {
            idcs.push(format!("… {} more", largest.len() - ROWS));
        }
        let _ = writeln!(out, "Machines per idc: {}\n", idcs.join(", "));
    }
    if !radius.package_versions.is_empty() {
        let _ = writeln!(
            out,
            "| kind | package | from | to | objects |\n|---|---|---|---|---:|"
        );
        for m in radius.package_versions.iter().take(ROWS) {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {}{} | {} |",
                m.kind,
                escape(&m.package),
                m.from
                    .as_deref()
                    .map_or("(new)".to_owned(), |f| format!("`{}`", escape(f))),
                m.to.as_deref()
                    .map_or("(none)".to_owned(), |t| format!("`{}`", escape(t))),
                if m.high_risk { " **risk: high**" } else { "" },
                m.objects
            );
        }
        if radius.package_versions.len() > ROWS {
            let _ = writeln!(
                out,
                "| … {} more | | | | |",
                radius.package_versions.len() - ROWS
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "</details>\n");
    if !report.budgets.is_empty() {
        let _ = writeln!(out, "<details><summary>Budgets</summary>\n");
        let _ = writeln!(
            out,
            "| class | spends | limit | spent already | waits |\n|---|---:|---|---:|---|"
        );
        for b in &report.budgets {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                b.class,
                b.spends,
                match (b.limit, b.window_seconds) {
                    (Some(l), Some(w)) => format!("{l} per {}", human(Duration::from_secs(w))),
                    _ => "unlimited".to_owned(),
                },
                b.spent,
                if b.waits {
                    human(Duration::from_secs(b.wait_seconds))
                } else {
                    "no".to_owned()
                }
            );
        }
        if report.budgets_assumed_unspent {
            let _ = writeln!(
                out,
                "\nBudgets are assumed unspent: `endstate plan --live` reads what other rollouts spent."
            );
        }
        let _ = writeln!(out, "\n</details>\n");
    }
    let _ = writeln!(out, "<details><summary>Waves</summary>\n");
    let _ = writeln!(
        out,
        "| # | wave | size | operations | at a time | bake | hold | spread | starts | done at worst |"
    );
    let _ = writeln!(out, "|---:|---|---:|---|---:|---|---|---|---|---|");
    for wave in &report.waves {
        let ops: Vec<String> = wave.ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
        let named: Vec<(&String, &u64)> =
            wave.domains.iter().filter(|(d, _)| !d.is_empty()).collect();
        let mut domains: Vec<String> = named
            .iter()
            .take(ROWS)
            .map(|(d, n)| format!("{d}:{n}"))
            .collect();
        if named.len() > ROWS {
            domains.push(format!("+{} more", named.len() - ROWS));
        }
        let mut waits = Vec::new();
        if wave.window_wait_seconds > 0 {
            waits.push(format!(
                "window +{}",
                human(Duration::from_secs(wave.window_wait_seconds))
            ));
        }
        if wave.budget_wait_seconds > 0 {
            waits.push(format!(
                "budget +{}",
                human(Duration::from_secs(wave.budget_wait_seconds))
            ));
        }
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {}{} | {} |",
            wave.number,
            wave.name,
            wave.size,
            ops.join(", "),
            wave.max_unavailable
                .map_or("—".to_owned(), |n| n.to_string()),
            if wave.bake_seconds > 0 {
                human(Duration::from_secs(wave.bake_seconds))
            } else {
                "—".to_owned()
            },
            if wave.pause { "approval" } else { "" },
            if domains.is_empty() {
                String::new()
            } else {
                escape(&format!("{}: {}", wave.spread_by, domains.join(" ")))
            },
            wave.earliest_start.as_deref().unwrap_or(""),
            if waits.is_empty() {
                String::new()
            } else {
                format!(" ({})", waits.join(", "))
            },
            match (&wave.latest_end, &wave.blocked) {
                (_, Some(why)) => format!("never: {}", escape(why)),
                (Some(end), None) => end.clone(),
                _ => String::new(),
            }
        );
    }
    if let (Some(timeout), Some(breaker)) = (report.gate_timeout_seconds, &report.breaker) {
        let _ = writeln!(
            out,
            "\nGates: healthy within {}{}; breaker: {}. Times from {} at worst: every round of \
             changes takes the whole gate timeout; approvals are not counted.",
            human(Duration::from_secs(timeout)),
            if report.metric_gates.is_empty() {
                String::new()
            } else {
                format!(", metrics {}", escape(&report.metric_gates.join(", ")))
            },
            escape(breaker),
            report.now
        );
    }
    if !report.windows.is_empty() {
        let _ = writeln!(
            out,
            "Maintenance windows: {}.",
            escape(&report.windows.join("; "))
        );
    }
    let _ = writeln!(out, "\n</details>\n");
    let diffs: Vec<String> = report
        .diffs
        .iter()
        .map(|diff| {
            let mut section = String::new();
            let more = if diff.members > 1 {
                format!(" (and {} more like it)", diff.members - 1)
            } else {
                String::new()
            };
            let _ = writeln!(
                section,
                "<details><summary>{} <code>{}</code>{}{more}</summary>\n",
                diff.op,
                escape(&diff.object),
                if diff.paths.is_empty() {
                    String::new()
                } else {
                    format!(": {}", escape(&diff.paths.join(", ")))
                }
            );
            let _ = writeln!(
                section,
                "```diff\n{}```\n\n</details>\n",
                fence_safe(&diff.unified)
            );
            section
        })
        .collect();
    let mut out = capped(out, diffs);
    if report.diffs_left_out > 0 {
        let _ = writeln!(
            out,
            "_{} more distinct changes are not shown (`--diffs`)._",
            report.diffs_left_out
        );
    }
    out
}

/// `head` and as many `sections` as fit under [`CAP`], saying how many did not; a head that
/// alone is too long is cut, its open sections closed.
fn capped(mut head: String, sections: Vec<String>) -> String {
    const NOTE: usize = 300;
    let total = sections.len();
    if head.len() > CAP - NOTE {
        let mut cut = CAP - NOTE;
        while !head.is_char_boundary(cut) {
            cut -= 1;
        }
        head.truncate(cut);
        head.push_str(
            "\n\n_… cut here: the report is longer than a pull request comment may be._\n",
        );
        let open = head
            .matches("<details>")
            .count()
            .saturating_sub(head.matches("</details>").count());
        head.push_str(&"\n</details>\n".repeat(open));
        if total > 0 {
            let _ = writeln!(
                head,
                "_{total} diffs left out to stay under the comment limit of 65,536 characters; `endstate plan` prints them all._"
            );
        }
        return head;
    }
    let mut shown = 0;
    for section in sections {
        if head.len() + section.len() > CAP - NOTE {
            break;
        }
        head.push_str(&section);
        shown += 1;
    }
    if shown < total {
        let _ = writeln!(
            head,
            "_{} of {total} diffs left out to stay under the comment limit of 65,536 characters; `endstate plan` prints them all._",
            total - shown
        );
    }
    head
}

/// Text that markdown and HTML would otherwise read as markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
}

/// A diff inside a fenced block: a line of three backticks would end the fence early.
fn fence_safe(text: &str) -> String {
    text.replace("```", "`\u{200b}``")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::RiskKind;

    /// However many idcs and risks a change has, the comment keeps to its cap with every
    /// section closed and room for the diffs.
    #[test]
    fn long_lists_are_cut_to_their_largest_rows() {
        let mut report: PlanReport = serde_json::from_value(serde_json::json!({
            "version": 2, "repo": "r", "branch": "b", "path": "p", "namespace": "n",
            "head": "0123456789abcdef", "against": "Nothing", "now": "2026-12-01T00:00:00Z",
            "outcome": "Changes", "problems": [], "risks": [],
            "summary": {"creates": 1, "updates": 0, "reinstalls": 0, "deletes": 0,
                        "keptByPrune": 0, "byKind": {}},
            "blastRadius": {"clusters": [], "idcs": [], "packageVersions": []},
            "waves": [], "budgets": [], "budgetsAssumedUnspent": true, "windows": [],
            "metricGates": [], "diffs": [], "diffsLeftOut": 0
        }))
        .unwrap();
        for i in 0..20_000 {
            report.blast_radius.idcs.push(Count {
                name: format!("idc-{i:05}"),
                machines: i,
            });
            report.risks.push(Risk {
                kind: RiskKind::HeldBack,
                refused: false,
                objects: 1,
                message: format!("1 Machines of Cluster/n/c-{i} are held back"),
            });
        }
        let comment = render(&report);
        assert!(comment.len() < 10_000, "{} characters", comment.len());
        assert!(comment.contains("`idc-19999`: 19999"), "the largest first");
        assert!(comment.contains("… 19990 more"));
        assert!(comment.contains("… and 19990 more (`-o json` lists every one)"));
        assert_eq!(
            comment.matches("<details>").count(),
            comment.matches("</details>").count()
        );
    }
}
