//! `endstate plan -o markdown`: the report as a pull request comment — a headline table, then
//! a collapsible section per part, the grouped diffs last — cut to fit under GitHub's comment
//! limit of 65,536 characters, saying what it left out.

use std::fmt::Write as _;

use endstate_controller::report::short;

use super::report::{Outcome, PlanReport};

/// The most characters written: GitHub refuses comments over 65,536, and a bot's wrapper
/// (a marker to find its comment again, say) needs some room.
pub const CAP: usize = 60_000;

/// The comment.
pub fn render(report: &PlanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### endstate plan: `{}` → `{}` ({}, `{}`)\n",
        report.base.as_deref().map_or("nothing", short),
        short(&report.head),
        report.branch,
        if report.path.is_empty() {
            "."
        } else {
            &report.path
        }
    );
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
            return capped(out, Vec::new());
        }
        Outcome::NoChanges => {
            let _ = writeln!(out, "No changes: merging writes nothing.");
            return out;
        }
        Outcome::Changes => {}
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "| creates | updates | reinstalls | deletes | kept by prune | waves |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |\n",
        s.creates,
        s.updates,
        s.reinstalls,
        s.deletes,
        s.kept_by_prune,
        report.waves.len()
    );
    if s.reinstalls > 0 || s.deletes > 0 {
        let _ = writeln!(
            out,
            "> **Risk:** {} reinstalls and {} deletes.\n",
            s.reinstalls, s.deletes
        );
    }
    let _ = writeln!(out, "<details><summary>Waves</summary>\n");
    let _ = writeln!(
        out,
        "| # | wave | size | operations | at a time | bake | hold | spread |"
    );
    let _ = writeln!(out, "|---:|---|---:|---|---:|---|---|---|");
    for wave in &report.waves {
        let ops: Vec<String> = wave.ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
        let domains: Vec<String> = wave
            .domains
            .iter()
            .filter(|(d, _)| !d.is_empty())
            .map(|(d, n)| format!("{d}:{n}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            wave.number,
            wave.name,
            wave.size,
            ops.join(", "),
            wave.max_unavailable
                .map_or("—".to_owned(), |n| n.to_string()),
            if wave.bake_seconds > 0 {
                endstate_rollout::time::human(std::time::Duration::from_secs(wave.bake_seconds))
            } else {
                "—".to_owned()
            },
            if wave.pause { "approval" } else { "" },
            if domains.is_empty() {
                String::new()
            } else {
                format!("{}: {}", wave.spread_by, domains.join(" "))
            }
        );
    }
    if let (Some(timeout), Some(breaker)) = (report.gate_timeout_seconds, &report.breaker) {
        let _ = writeln!(
            out,
            "\nGates: healthy within {}; breaker: {}.",
            endstate_rollout::time::human(std::time::Duration::from_secs(timeout)),
            escape(breaker)
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

/// `head` and as many `sections` as fit under [`CAP`], saying how many did not.
fn capped(mut head: String, sections: Vec<String>) -> String {
    const NOTE: usize = 200;
    if head.len() > CAP - NOTE {
        let mut cut = CAP - NOTE;
        while !head.is_char_boundary(cut) {
            cut -= 1;
        }
        head.truncate(cut);
        head.push_str(
            "\n\n_… cut here: the report is longer than a pull request comment may be._\n",
        );
        return head;
    }
    let total = sections.len();
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
