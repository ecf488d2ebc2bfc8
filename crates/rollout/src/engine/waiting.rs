//! Why a rollout starts no work: the closed set of reasons the engine waits, their text (the
//! `status.rollout.waiting` field and the CLI print it) and the one mapping of each to its
//! Kubernetes reason.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::budget::BudgetClass;
use crate::time::{Time, human};

/// Why no work starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The next change needs room in a budget that is spent, until `until` (`None`: until the
    /// limit is raised). A high-risk class pauses the rollout.
    Budget {
        /// The class spent.
        class: BudgetClass,
        /// When it has room again, to the second.
        until: Option<Time>,
    },
    /// Every maintenance window is closed.
    OutsideWindows,
    /// A trip's restores wait for the `machine-reinstall` budget.
    RestoreBudget,
    /// A metric gate of the bake has had no data (no series, no answer) for `since`, short
    /// of the gate timeout.
    MetricNoData {
        /// The gate.
        gate: String,
        /// What it had instead of data, in the gate's words (`no series`).
        what: String,
        /// For how long, at the resolution it is written with.
        since: Duration,
    },
}

impl WaitReason {
    /// Budget `class` is spent until `until`. Kept to the second, as it is written: a wait
    /// that reads the same is the same wait, and is not reported again.
    pub fn budget(class: BudgetClass, until: Option<Time>) -> WaitReason {
        WaitReason::Budget {
            class,
            until: until.map(|t| Time(t.millis().div_euclid(1000) * 1000)),
        }
    }

    /// Gate `gate` has had `what` instead of data for `since`. Kept at the resolution
    /// [`human`] writes (whole seconds, or milliseconds under one), for the same reason.
    pub fn metric_no_data(gate: String, what: String, since: Duration) -> WaitReason {
        let since = if since.as_secs() == 0 {
            Duration::from_millis(since.as_millis() as u64)
        } else {
            Duration::from_secs(since.as_secs())
        };
        WaitReason::MetricNoData { gate, what, since }
    }

    /// The Kubernetes reason of this wait: what the `Ready` and `Reconciling` conditions (and
    /// an Event about the wait) give as their `reason`.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            WaitReason::Budget { .. } | WaitReason::RestoreBudget => "BudgetExhausted",
            WaitReason::OutsideWindows => "OutsideMaintenanceWindow",
            WaitReason::MetricNoData { .. } => "Waiting",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Budget { class, until } => {
                if class.high_risk() {
                    f.write_str("paused: high-risk ")?;
                }
                write!(f, "budget {class} is spent until ")?;
                match until {
                    Some(t) => write!(f, "{t}"),
                    None => f.write_str("it is raised"),
                }
            }
            WaitReason::OutsideWindows => f.write_str("outside every maintenance window"),
            WaitReason::RestoreBudget => {
                f.write_str("restores wait for the delete/reinstall budget")
            }
            WaitReason::MetricNoData { gate, what, since } => {
                write!(f, "metric {gate}: {what} for {}", human(*since))
            }
        }
    }
}

/// A text that is not one a rollout writes for why it waits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a reason a rollout waits for: {0:?}")]
pub struct UnknownWait(pub String);

impl FromStr for WaitReason {
    type Err = UnknownWait;

    /// Reads the text back (the persisted state keeps it as text); a text that would not be
    /// written back the same is refused.
    fn from_str(text: &str) -> Result<WaitReason, UnknownWait> {
        let refused = || UnknownWait(text.to_owned());
        let parsed = if text == "outside every maintenance window" {
            WaitReason::OutsideWindows
        } else if text == "restores wait for the delete/reinstall budget" {
            WaitReason::RestoreBudget
        } else if let Some(rest) = text.strip_prefix("metric ") {
            let (gate, rest) = rest.split_once(": ").ok_or_else(refused)?;
            let (what, since) = rest.rsplit_once(" for ").ok_or_else(refused)?;
            WaitReason::MetricNoData {
                gate: gate.to_owned(),
                what: what.to_owned(),
                since: parse_human(since).ok_or_else(refused)?,
            }
        } else {
            let rest = text.strip_prefix("paused: high-risk ").unwrap_or(text);
            let rest = rest.strip_prefix("budget ").ok_or_else(refused)?;
            let (class, until) = rest.split_once(" is spent until ").ok_or_else(refused)?;
            WaitReason::Budget {
                class: BudgetClass::parse(class).ok_or_else(refused)?,
                until: match until {
                    "it is raised" => None,
                    t => Some(Time::parse_rfc3339(t).ok_or_else(refused)?),
                },
            }
        };
        (parsed.to_string() == text)
            .then_some(parsed)
            .ok_or_else(refused)
    }
}

/// Reads what [`human`] writes: `1h2m3s`, `10m`, `250ms`.
fn parse_human(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let mut secs = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        secs += number.parse::<u64>().ok()? * unit;
        number.clear();
    }
    number.is_empty().then_some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Time = Time(1_767_225_600_000); // 2026-01-01T00:00:00Z

    #[test]
    fn each_reason_reads_as_before_maps_to_its_condition_and_comes_back_from_its_text() {
        let cases = [
            (
                WaitReason::budget(BudgetClass::MachineUpdate, Some(T)),
                "budget machine-update is spent until 2026-01-01T00:00:00Z",
                "BudgetExhausted",
            ),
            (
                WaitReason::budget(BudgetClass::MachineReinstall, None),
                "paused: high-risk budget machine-reinstall is spent until it is raised",
                "BudgetExhausted",
            ),
            (
                WaitReason::OutsideWindows,
                "outside every maintenance window",
                "OutsideMaintenanceWindow",
            ),
            (
                WaitReason::RestoreBudget,
                "restores wait for the delete/reinstall budget",
                "BudgetExhausted",
            ),
            (
                WaitReason::metric_no_data(
                    "errors".into(),
                    "no series".into(),
                    Duration::from_secs(120),
                ),
                "metric errors: no series for 2m",
                "Waiting",
            ),
            (
                WaitReason::metric_no_data(
                    "window-budget".into(),
                    "no answer (timed out for good)".into(),
                    Duration::ZERO,
                ),
                "metric window-budget: no answer (timed out for good) for 0ms",
                "Waiting",
            ),
        ];
        for (reason, text, condition) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(reason.condition_reason(), condition, "{text}");
            assert_eq!(text.parse::<WaitReason>(), Ok(reason));
        }
    }

    #[test]
    fn waits_that_read_the_same_are_the_same_wait() {
        let at = |ms| WaitReason::budget(BudgetClass::MachineUpdate, Some(Time(ms)));
        assert_eq!(at(1_000), at(1_999));
        assert_ne!(at(1_000), at(2_000));
        let gap = |d| WaitReason::metric_no_data("e".into(), "no series".into(), d);
        assert_eq!(
            gap(Duration::from_millis(61_200)),
            gap(Duration::from_secs(61))
        );
        assert_ne!(
            gap(Duration::from_millis(200)),
            gap(Duration::from_millis(201))
        );
    }

    #[test]
    fn text_no_reason_writes_back_the_same_is_refused() {
        for text in [
            "waiting",
            "budget nothing is spent until it is raised",
            "budget machine-update is spent until 2026-01-01T00:00:00.5Z",
            "metric errors: no series for 2m0s",
            "metric errors no series",
        ] {
            assert!(text.parse::<WaitReason>().is_err(), "{text}");
        }
    }

    #[test]
    fn durations_read_back_as_human_writes_them() {
        for d in [0, 999, 1_000, 61_000, 3_600_000, 3_723_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_human(&human(d)), Some(d), "{}", human(d));
        }
        assert_eq!(parse_human("5x"), None);
        assert_eq!(parse_human("5"), None);
    }
}
