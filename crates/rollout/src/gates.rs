//! Metric gates while a stage bakes: what one query answered, how an answer is judged, and the
//! answers kept for the status and the breaker's evidence.
//!
//! ```text
//!  Effect::Sample ──▶ (controller queries every gate, each within gates.queryTimeout)
//!                          │
//!  Event::Sampled ◀────────┘   Values(v…): every series within [min, max]?  ── no ──▶ trip
//!                              NoSeries / Failed: no data ─▶ the bake holds; once the gates
//!                              have had no data (or no answer) for gates.timeout ─▶ trip
//! ```
//!
//! A query that was asked and has not answered counts as no data from the moment it was asked,
//! so a query API that hangs trips the bake on the engine's clock, whatever the controller's
//! query timeout. What is kept is bounded: the last [`KEPT_PER_GATE`] answers of the first
//! [`KEPT_GATES`] gates, each cut to [`ANSWER_CHARS`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::text::cut;
use crate::time::Time;
use endstate_core::policy::MetricGate;

/// The answers kept per gate: the newest.
pub const KEPT_PER_GATE: usize = 3;
/// The gates whose answers are kept (in the policy's order).
pub const KEPT_GATES: usize = 8;
/// A kept answer (or a gate's name) is cut to this many characters.
pub const ANSWER_CHARS: usize = 160;

/// What one query of a metric gate answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// The value of every series the query selected (a scalar is one); each must be within
    /// the gate's bounds.
    Values(Vec<f64>),
    /// The query selected no series (a metric not exported yet, a typo in a label): no data.
    NoSeries,
    /// No answer: the query failed or did not answer in time, and why.
    Failed(String),
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sample::Values(values) => {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
            Sample::NoSeries => f.write_str("no series"),
            Sample::Failed(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// How one answer is judged.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every series is within bounds.
    InBounds,
    /// A series is out of bounds: the breaker's reason.
    OutOfBounds(String),
    /// No data (no series, or no answer), and what to call it.
    NoData(String),
}

/// Judges one answer of `gate`.
pub fn judge(gate: &MetricGate, sample: &Sample) -> Verdict {
    match sample {
        Sample::Values(values) if values.is_empty() => Verdict::NoData("no series".into()),
        Sample::Values(values) => {
            let outside: Vec<f64> = values
                .iter()
                .copied()
                .filter(|v| !gate.admits(*v))
                .collect();
            let Some(first) = outside.first() else {
                return Verdict::InBounds;
            };
            let mut why = format!(
                "metric {} = {first} is outside [{}, {}]",
                gate.name,
                gate.min.map_or("-∞".into(), |v| v.to_string()),
                gate.max.map_or("+∞".into(), |v| v.to_string())
            );
            if values.len() > 1 {
                why.push_str(&format!(
                    " ({} of {} series out of bounds)",
                    outside.len(),
                    values.len()
                ));
            }
            Verdict::OutOfBounds(why)
        }
        Sample::NoSeries => Verdict::NoData("no series".into()),
        Sample::Failed(why) => Verdict::NoData(format!("no answer ({why})")),
    }
}

/// One answer of a gate, kept for the status and the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// The gate's name.
    pub gate: String,
    /// When it answered.
    pub at: Time,
    /// What it answered, in words (`0.25`, `no series`, `no answer: …`).
    pub answer: String,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.gate, self.at, self.answer)
    }
}

/// Keeps `sample` as `gate`'s newest answer in `kept`, within the bounds above.
pub fn keep(kept: &mut Vec<Kept>, gate: &str, at: Time, sample: &Sample) {
    let gate = cut(gate, ANSWER_CHARS + 1);
    let known = kept.iter().any(|k| k.gate == gate);
    let gates = {
        let mut names: Vec<&str> = kept.iter().map(|k| k.gate.as_str()).collect();
        names.dedup();
        names.len()
    };
    if !known && gates >= KEPT_GATES {
        return;
    }
    if kept.iter().filter(|k| k.gate == gate).count() >= KEPT_PER_GATE
        && let Some(oldest) = kept.iter().position(|k| k.gate == gate)
    {
        kept.remove(oldest);
    }
    // Grouped by gate, oldest first within each, so `dedup` above counts gates.
    let after = kept
        .iter()
        .rposition(|k| k.gate == gate)
        .map_or(kept.len(), |i| i + 1);
    kept.insert(
        after,
        Kept {
            gate,
            at,
            answer: cut(&sample.to_string(), ANSWER_CHARS + 1),
        },
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn gate(min: Option<f64>, max: Option<f64>) -> MetricGate {
        MetricGate {
            name: "error-rate".into(),
            url: "http://prom".into(),
            query: "q".into(),
            min,
            max,
            interval: Duration::from_secs(30),
            headers: Vec::new(),
            secret: None,
        }
    }

    #[test]
    fn every_series_must_be_within_bounds() {
        let g = gate(None, Some(0.1));
        assert_eq!(
            judge(&g, &Sample::Values(vec![0.01, 0.05])),
            Verdict::InBounds
        );
        let Verdict::OutOfBounds(why) = judge(&g, &Sample::Values(vec![0.01, 0.25, 0.5])) else {
            panic!()
        };
        assert_eq!(
            why,
            "metric error-rate = 0.25 is outside [-∞, 0.1] (2 of 3 series out of bounds)"
        );
        let Verdict::OutOfBounds(why) = judge(&g, &Sample::Values(vec![0.25])) else {
            panic!()
        };
        assert_eq!(why, "metric error-rate = 0.25 is outside [-∞, 0.1]");
        assert_eq!(judge(&g, &Sample::Values(vec![f64::NAN])), {
            Verdict::OutOfBounds("metric error-rate = NaN is outside [-∞, 0.1]".into())
        });
    }

    #[test]
    fn no_series_and_no_answer_are_no_data() {
        let g = gate(Some(0.0), None);
        assert_eq!(
            judge(&g, &Sample::NoSeries),
            Verdict::NoData("no series".into())
        );
        assert_eq!(
            judge(&g, &Sample::Values(vec![])),
            Verdict::NoData("no series".into())
        );
        assert_eq!(
            judge(&g, &Sample::Failed("connection refused".into())),
            Verdict::NoData("no answer (connection refused)".into())
        );
    }

    #[test]
    fn the_kept_answers_stay_within_their_bounds() {
        let mut kept = Vec::new();
        let long = "x".repeat(10 * ANSWER_CHARS);
        for round in 0..10 {
            for g in 0..2 * KEPT_GATES {
                let sample = Sample::Failed(long.clone());
                keep(&mut kept, &format!("{g}{long}"), Time(round), &sample);
            }
        }
        assert_eq!(kept.len(), KEPT_GATES * KEPT_PER_GATE);
        assert!(
            kept.iter()
                .all(|k| k.answer.chars().count() == ANSWER_CHARS + 1)
        );
        // The newest answers of the first gates, oldest first within each gate.
        assert_eq!(kept[0].at, Time(7));
        assert_eq!(kept[KEPT_PER_GATE - 1].at, Time(9));
        assert!(kept[0].gate.starts_with('0'));
        assert!(
            kept.last()
                .unwrap()
                .gate
                .starts_with(&(KEPT_GATES - 1).to_string())
        );
    }
}
