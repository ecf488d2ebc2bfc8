//! The review of a head, step by step: the plan's counts, where it lands, what the policy
//! promises, the risks (refusals first), and — when anything changes — the schedule and the
//! grouped diffs.

use endstate_rollout::Time;
use endstate_rollout::plan::Plan;

use crate::blast_radius::blast_radius;
use crate::diffs::grouped_diffs;
use crate::facts::{Facts, Index};
use crate::policy::describe;
use crate::report::{Outcome, PlanReport, Problem, Subject};
use crate::risk::Risk;
use crate::risks::risks;
use crate::schedule::{Scheduled, schedule};
use crate::summary::summary;

/// The report on a head that renders: `plan` is [`crate::plan`] of `facts`, `found` what the
/// admission checks refused and the risks seen before the plan, in the order found. Any
/// refusal makes the outcome `Refused`; the rest of the report is filled in all the same.
pub fn review(subject: Subject, facts: &Facts<'_>, plan: &Plan, found: Vec<Risk>) -> PlanReport {
    let mut report = PlanReport::new(subject, facts.now);
    let index = Index::new(facts);
    report.summary = summary(plan);
    report.blast_radius = blast_radius(plan, &index);
    describe(&mut report, facts.policy);
    let mut all = found;
    all.extend(risks(
        plan,
        facts,
        &index,
        &report.summary,
        &report.blast_radius,
    ));
    // Refusals first, whoever found them.
    all.sort_by_key(|r| !r.refused);
    report.problems = all
        .iter()
        .filter(|r| r.refused)
        .map(|r| Problem {
            reason: r.kind.as_str().to_owned(),
            file: None,
            line: None,
            message: r.message.clone(),
        })
        .collect();
    report.risks = all;
    report.outcome = if !report.problems.is_empty() {
        Outcome::Refused
    } else if plan.is_empty() {
        Outcome::NoChanges
    } else {
        Outcome::Changes
    };
    if plan.is_empty() {
        return report;
    }
    let Scheduled {
        waves,
        estimate,
        budgets,
    } = schedule(plan, facts, &index);
    report.waves = waves;
    report.estimate = estimate;
    report.budgets = budgets;
    let (diffs, left_out) = grouped_diffs(plan, &index, facts.diffs);
    report.diffs = diffs;
    report.diffs_left_out = left_out;
    report
}

/// The report on a head that does not render or validate: its problems, and nothing else.
pub fn invalid(subject: Subject, now: Time, problems: Vec<Problem>) -> PlanReport {
    let mut report = PlanReport::new(subject, now);
    report.outcome = Outcome::Invalid;
    report.problems = problems;
    report
}
