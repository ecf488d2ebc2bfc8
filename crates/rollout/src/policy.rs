//! The `RolloutPolicy` of a rendered commit, resolved: defaults filled in, durations and
//! percents parsed. Validation already refused malformed policies, so resolving only fails
//! on a policy that did not go through it, and says which field.

use std::time::Duration;

use endstate_api::IntOrString;
use endstate_api::policy::{self, OnNewCommit, RolloutPolicySpec};
use endstate_core::validate::{Size, size};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetClass;

/// One wave of a sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaveSpec {
    /// Its name in status and logs.
    pub name: String,
    /// The cumulative share of the changed objects done by the end of the wave.
    pub size: Amount,
    /// How long the wave must stay healthy before the next starts.
    pub bake: Duration,
    /// Hold after the wave until approved.
    pub pause: bool,
}

/// A count or a percent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Amount {
    /// This many.
    Count(u64),
    /// This percent of a total, rounded up.
    Percent(f64),
}

impl Amount {
    /// The amount out of `total`: a percent rounds up, and nothing exceeds `total`.
    pub fn of(self, total: usize) -> usize {
        let n = match self {
            Amount::Count(n) => n.min(total as u64) as usize,
            Amount::Percent(p) => ((total as f64) * p / 100.0).ceil() as usize,
        };
        n.min(total)
    }

    fn parse(value: &IntOrString, field: &str) -> Result<Amount, String> {
        match size(value) {
            Ok(Size::Count(n)) => Ok(Amount::Count(u64::from(n))),
            Ok(Size::Percent(p)) => Ok(Amount::Percent(p)),
            Err(why) => Err(format!("{field}: {why}")),
        }
    }
}

/// A wave sequence for one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    /// The waves; the last one reaches 100%.
    pub waves: Vec<WaveSpec>,
    /// The spec field or label each wave is drawn evenly across.
    pub spread_by: Option<String>,
    /// Most objects changed but not yet healthy at once.
    pub max_unavailable: Amount,
}

/// A budget class limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimit {
    /// The operation class.
    pub class: BudgetClass,
    /// Most operations per window.
    pub limit: u64,
    /// The sliding window.
    pub window: Duration,
}

/// A metric gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricGate {
    /// Its name in evidence.
    pub name: String,
    /// The query API's base URL.
    pub url: String,
    /// An instant query returning one value.
    pub query: String,
    /// Fail below.
    pub min: Option<f64>,
    /// Fail above.
    pub max: Option<f64>,
    /// How often to sample while baking.
    pub interval: Duration,
}

impl MetricGate {
    /// Whether a sampled value is within bounds (NaN never is).
    pub fn admits(&self, value: f64) -> bool {
        !value.is_nan()
            && self.min.is_none_or(|min| value >= min)
            && self.max.is_none_or(|max| value <= max)
    }
}

/// Breaker thresholds; `None` is not checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Trip at this many failures in one wave.
    pub per_wave: Option<u64>,
    /// Trip when this percent of a wave failed.
    pub per_wave_ratio: Option<f64>,
    /// Trip at this many failures in the rollout.
    pub total: Option<u64>,
    /// Trip when this percent of the rollout's changed objects failed.
    pub total_ratio: Option<f64>,
    /// Push a revert when tripped.
    pub revert: bool,
}

/// A maintenance window: minutes since midnight UTC on some weekdays (0 = Monday).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The weekdays the window opens on.
    pub days: Vec<u32>,
    /// Opening minute.
    pub start: u32,
    /// Closing minute; before `start` when the window crosses midnight.
    pub end: u32,
}

/// A resolved policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Machine waves.
    pub machines: Sequence,
    /// Cluster waves.
    pub clusters: Sequence,
    /// How long an object may take to become healthy for its new revision.
    pub gate_timeout: Duration,
    /// Metric gates checked while a wave bakes.
    pub metrics: Vec<MetricGate>,
    /// Breaker thresholds.
    pub breaker: Thresholds,
    /// Budget limits; a class without one is unlimited.
    pub budgets: Vec<BudgetLimit>,
    /// Maintenance windows; empty is always open.
    pub windows: Vec<Window>,
    /// Whether a new commit aborts the wave in flight instead of letting it finish.
    pub abort_on_new_commit: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::resolve(&RolloutPolicySpec::default()).expect("the defaults resolve")
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl Policy {
    /// Resolves a policy spec, filling in defaults.
    pub fn resolve(spec: &RolloutPolicySpec) -> Result<Policy, String> {
        let machines = sequence(
            spec.machines.as_ref(),
            &[
                Amount::Count(1),
                Amount::Percent(5.0),
                Amount::Percent(25.0),
                Amount::Percent(100.0),
            ],
            "spec.machines",
        )?;
        let clusters = sequence(
            spec.clusters.as_ref(),
            &[
                Amount::Count(1),
                Amount::Percent(25.0),
                Amount::Percent(100.0),
            ],
            "spec.clusters",
        )?;
        let gates = spec.gates.as_ref();
        let gate_timeout = duration(
            gates.and_then(|g| g.timeout.as_deref()).unwrap_or("15m"),
            "spec.gates.timeout",
        )?;
        let metrics = gates
            .and_then(|g| g.metrics.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, m)| {
                Ok(MetricGate {
                    name: m.name.clone(),
                    url: m.url.clone(),
                    query: m.query.clone(),
                    min: m.min,
                    max: m.max,
                    interval: duration(
                        m.interval.as_deref().unwrap_or("30s"),
                        &format!("spec.gates.metrics[{i}].interval"),
                    )?,
                })
            })
            .collect::<Result<_, String>>()?;
        let breaker = thresholds(spec.breaker.as_ref())?;
        let budgets = spec
            .budgets
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, b)| {
                let Some(class) = BudgetClass::parse(&b.class) else {
                    return Err(format!(
                        "spec.budgets[{i}].class: unknown class {:?}",
                        b.class
                    ));
                };
                Ok(BudgetLimit {
                    class,
                    limit: u64::try_from(b.limit)
                        .map_err(|_| format!("spec.budgets[{i}].limit must not be negative"))?,
                    window: duration(&b.window, &format!("spec.budgets[{i}].window"))?,
                })
            })
            .collect::<Result<_, String>>()?;
        let windows = spec
            .windows
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, w)| window(w, &format!("spec.windows[{i}]")))
            .collect::<Result<_, String>>()?;
        Ok(Policy {
            machines,
            clusters,
            gate_timeout,
            metrics,
            breaker,
            budgets,
            windows,
            abort_on_new_commit: matches!(spec.on_new_commit, Some(OnNewCommit::Abort)),
        })
    }

    /// The limit of a budget class, if it has one.
    pub fn budget(&self, class: BudgetClass) -> Option<&BudgetLimit> {
        self.budgets.iter().find(|b| b.class == class)
    }

    /// Whether `minute_of_week` (0 = Monday 00:00 UTC) is inside a window (always, when none
    /// is configured).
    pub fn window_open(&self, weekday: u32, minute: u32) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(weekday, minute))
    }
}

impl Window {
    /// Whether the window is open at `minute` of `weekday`.
    pub fn contains(&self, weekday: u32, minute: u32) -> bool {
        if self.start <= self.end {
            self.days.contains(&weekday) && (self.start..self.end).contains(&minute)
        } else {
            // Crosses midnight: the evening part belongs to `weekday`, the morning part to the
            // day before.
            (self.days.contains(&weekday) && minute >= self.start)
                || (self.days.contains(&((weekday + 6) % 7)) && minute < self.end)
        }
    }
}

fn sequence(
    plan: Option<&policy::WavePlan>,
    defaults: &[Amount],
    field: &str,
) -> Result<Sequence, String> {
    let waves = match plan.and_then(|p| p.waves.as_ref()) {
        Some(waves) if !waves.is_empty() => waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let at = format!("{field}.waves[{i}]");
                Ok(WaveSpec {
                    name: w.name.clone().unwrap_or_else(|| format!("wave-{}", i + 1)),
                    size: Amount::parse(&w.size, &format!("{at}.size"))?,
                    bake: match &w.bake {
                        Some(bake) => duration(bake, &format!("{at}.bake"))?,
                        None => Duration::ZERO,
                    },
                    pause: w.pause.unwrap_or(false),
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => defaults
            .iter()
            .enumerate()
            .map(|(i, &size)| WaveSpec {
                name: if i == 0 {
                    "canary".to_owned()
                } else {
                    format!("wave-{}", i + 1)
                },
                size,
                bake: Duration::ZERO,
                pause: false,
            })
            .collect(),
    };
    let max_unavailable = match plan.and_then(|p| p.max_unavailable.as_ref()) {
        Some(value) => Amount::parse(value, &format!("{field}.maxUnavailable"))?,
        None => Amount::Count(1),
    };
    Ok(Sequence {
        waves,
        spread_by: plan.and_then(|p| p.spread_by.clone()),
        max_unavailable,
    })
}

fn thresholds(breaker: Option<&policy::Breaker>) -> Result<Thresholds, String> {
    let Some(b) = breaker else {
        return Ok(Thresholds {
            per_wave: Some(1),
            per_wave_ratio: None,
            total: None,
            total_ratio: None,
            revert: true,
        });
    };
    let count = |v: Option<i32>, field: &str| {
        v.map(|n| {
            u64::try_from(n).map_err(|_| format!("spec.breaker.{field} must not be negative"))
        })
        .transpose()
    };
    let ratio = |v: &Option<String>, field: &str| {
        v.as_deref()
            .map(|s| {
                s.strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .filter(|p| *p > 0.0 && *p <= 100.0)
                    .ok_or_else(|| format!("spec.breaker.{field} {s:?} must be a percent like 10%"))
            })
            .transpose()
    };
    let mut t = Thresholds {
        per_wave: count(b.max_failures_per_wave, "maxFailuresPerWave")?,
        per_wave_ratio: ratio(&b.max_failure_ratio_per_wave, "maxFailureRatioPerWave")?,
        total: count(b.max_failures, "maxFailures")?,
        total_ratio: ratio(&b.max_failure_ratio, "maxFailureRatio")?,
        revert: b.revert.unwrap_or(true),
    };
    if t.per_wave.is_none()
        && t.per_wave_ratio.is_none()
        && t.total.is_none()
        && t.total_ratio.is_none()
    {
        t.per_wave = Some(1);
    }
    Ok(t)
}

fn duration(text: &str, field: &str) -> Result<Duration, String> {
    endstate_api::duration::parse(text).map_err(|why| format!("{field}: {why}"))
}

fn window(w: &policy::MaintenanceWindow, field: &str) -> Result<Window, String> {
    let minute = |s: &str, f: &str| {
        let (h, m) = s
            .split_once(':')
            .ok_or_else(|| format!("{field}.{f} {s:?} must be HH:MM"))?;
        match (h.parse::<u32>(), m.parse::<u32>()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
            _ => Err(format!("{field}.{f} {s:?} must be HH:MM")),
        }
    };
    let days = match &w.days {
        None => (0..7).collect(),
        Some(days) => days
            .iter()
            .map(|d| {
                WEEKDAYS
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case(d))
                    .map(|i| i as u32)
                    .ok_or_else(|| format!("{field}.days: {d:?} is not one of Mon … Sun"))
            })
            .collect::<Result<_, String>>()?,
    };
    Ok(Window {
        days,
        start: minute(&w.start, "start")?,
        end: minute(&w.end, "end")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_canary_then_growing_waves() {
        let p = Policy::default();
        let sizes: Vec<usize> = p.machines.waves.iter().map(|w| w.size.of(1000)).collect();
        assert_eq!(sizes, [1, 50, 250, 1000]);
        assert_eq!(p.machines.max_unavailable, Amount::Count(1));
        assert_eq!(p.breaker.per_wave, Some(1));
        assert_eq!(p.gate_timeout, Duration::from_secs(900));
    }

    #[test]
    fn windows_cross_midnight() {
        let w = Window {
            days: vec![0],
            start: 22 * 60,
            end: 2 * 60,
        };
        assert!(w.contains(0, 23 * 60));
        assert!(w.contains(1, 60));
        assert!(!w.contains(1, 23 * 60));
        assert!(!w.contains(0, 60));
    }
}
