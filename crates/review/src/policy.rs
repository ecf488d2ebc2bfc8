//! What the head's policy promises a reviewer, in words: the maintenance windows, the gates a
//! change must pass, and when the breaker trips.

use endstate_core::policy::Policy;

use crate::report::PlanReport;

/// Writes `policy`'s windows, gates and breaker into `report`.
pub fn describe(report: &mut PlanReport, policy: &Policy) {
    report.windows = policy.windows.iter().map(ToString::to_string).collect();
    report.gate_timeout_seconds = Some(policy.gate_timeout.as_secs());
    report.metric_gates = policy.metrics.iter().map(|m| m.name.clone()).collect();
    report.breaker = Some(breaker(policy));
}

/// `trips at 1 failures in a wave or 5% of the rollout`.
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
