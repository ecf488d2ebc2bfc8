//! The breaker's records: why and when it tripped ([`Trip`], [`Evidence`]), which threshold
//! was crossed ([`Threshold`]), and the commits it quarantined. They are persisted, so their
//! serialized form is a wire format a newer release must keep reading.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use endstate_core::policy::Thresholds;

/// Quarantined commits kept: the newest.
pub const KEPT_QUARANTINE: usize = 100;
/// A quarantined commit's reason is cut to this many characters.
pub const QUARANTINE_REASON_CHARS: usize = 120;
/// Revert commits kept in the breaker's record.
pub const KEPT_REVERTS: usize = 20;

/// Why and when the breaker tripped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trip {
    /// When.
    pub at: crate::time::Time,
    /// The commit being rolled out.
    pub commit: String,
    /// What crossed which threshold.
    pub evidence: Evidence,
    /// The revert commits pushed, once known.
    #[serde(default)]
    pub reverts: Vec<String>,
    /// How the revert went, once known.
    #[serde(default, alias = "revert_outcome")]
    pub revert_outcome: Option<String>,
}

/// The breaker's evidence, recorded in status and in the revert commit's message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The stage the breaker tripped in.
    pub stage: String,
    /// The threshold crossed (persisted in words).
    pub threshold: Threshold,
    /// Failures in the stage, and its size.
    #[serde(alias = "stage_failures")]
    pub stage_failures: (u32, u32),
    /// Failures in the rollout, and the number of changed objects.
    #[serde(alias = "total_failures")]
    pub total_failures: (u32, u32),
    /// The failed objects (the first [`super::failures::KEPT_FAILURES`]) and why.
    pub failed: Vec<(String, String)>,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Breaker tripped in wave {}: {}.",
            self.stage, self.threshold
        )?;
        writeln!(
            f,
            "Failures: {} of {} in the wave, {} of {} in the rollout.",
            self.stage_failures.0,
            self.stage_failures.1,
            self.total_failures.0,
            self.total_failures.1
        )?;
        for (object, reason) in &self.failed {
            writeln!(f, "- {object}: {reason}")?;
        }
        let more = self.total_failures.0 as usize;
        if more > self.failed.len() {
            writeln!(f, "- and {} more", more - self.failed.len())?;
        }
        Ok(())
    }
}

/// What crossed the breaker's threshold. Persisted as its text, which earlier releases wrote
/// as a plain string: reading the text back gives the same variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Threshold {
    /// Failed objects in the wave reached `maxFailuresPerWave`.
    PerWave {
        /// Failed in the wave.
        failed: u32,
        /// `maxFailuresPerWave`.
        max: u64,
    },
    /// The wave's failed share reached `maxFailureRatioPerWave`.
    PerWaveRatio {
        /// Failed in the wave.
        failed: u32,
        /// The wave's size.
        size: u32,
        /// `maxFailureRatioPerWave`, in percent.
        max: f64,
    },
    /// Failed objects in the rollout reached `maxFailures`.
    Total {
        /// Failed in the rollout.
        failed: u32,
        /// `maxFailures`.
        max: u64,
    },
    /// The rollout's failed share reached `maxFailureRatio`.
    TotalRatio {
        /// Failed in the rollout.
        failed: u32,
        /// Objects the rollout changes.
        changed: u32,
        /// `maxFailureRatio`, in percent.
        max: f64,
    },
    /// A metric gate was out of bounds, or had no data for the gate timeout, as the gate said
    /// it (`metric error-rate = 0.25 is outside [-∞, 0.1]`, `metric errors: no series for
    /// 10m`).
    Metric(String),
}

impl Threshold {
    /// The first threshold of `breaker` that `in_stage` failures of a wave of `size`, and
    /// `total` failures of a rollout changing `changed` objects, reach.
    pub fn crossed(
        breaker: &Thresholds,
        in_stage: u32,
        size: u32,
        total: u32,
        changed: u32,
    ) -> Option<Threshold> {
        let pct = |n: u32, of: u32| {
            if of == 0 {
                100.0
            } else {
                f64::from(n) * 100.0 / f64::from(of)
            }
        };
        if let Some(max) = breaker.per_wave
            && u64::from(in_stage) >= max
        {
            return Some(Threshold::PerWave {
                failed: in_stage,
                max,
            });
        }
        if let Some(max) = breaker.per_wave_ratio
            && pct(in_stage, size) >= max
        {
            return Some(Threshold::PerWaveRatio {
                failed: in_stage,
                size,
                max,
            });
        }
        if let Some(max) = breaker.total
            && u64::from(total) >= max
        {
            return Some(Threshold::Total { failed: total, max });
        }
        if let Some(max) = breaker.total_ratio
            && pct(total, changed) >= max
        {
            return Some(Threshold::TotalRatio {
                failed: total,
                changed,
                max,
            });
        }
        None
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::PerWave { failed, max } => write!(
                f,
                "{failed} failed objects in the wave (maxFailuresPerWave {max})"
            ),
            Threshold::PerWaveRatio { failed, size, max } => write!(
                f,
                "{failed} of {size} objects failed in the wave (maxFailureRatioPerWave {max}%)"
            ),
            Threshold::Total { failed, max } => {
                write!(
                    f,
                    "{failed} failed objects in the rollout (maxFailures {max})"
                )
            }
            Threshold::TotalRatio {
                failed,
                changed,
                max,
            } => write!(
                f,
                "{failed} of {changed} changed objects failed (maxFailureRatio {max}%)"
            ),
            Threshold::Metric(why) => f.write_str(why),
        }
    }
}

impl From<Threshold> for String {
    fn from(threshold: Threshold) -> String {
        threshold.to_string()
    }
}

impl From<String> for Threshold {
    /// Reads the text back: the breaker's counted thresholds as they are written, anything
    /// else as a gate's words (which is all a metric gate's threshold is).
    fn from(text: String) -> Threshold {
        text.parse().unwrap_or(Threshold::Metric(text))
    }
}

impl FromStr for Threshold {
    type Err = ();

    /// Reads the counted thresholds; a text that would not be written back the same is none.
    fn from_str(text: &str) -> Result<Threshold, ()> {
        let num = |s: &str| s.parse::<u32>().map_err(|_| ());
        let parsed = if let Some(rest) = text.strip_suffix("%)") {
            if let Some((head, max)) =
                rest.split_once(" objects failed in the wave (maxFailureRatioPerWave ")
            {
                let (failed, size) = head.split_once(" of ").ok_or(())?;
                Threshold::PerWaveRatio {
                    failed: num(failed)?,
                    size: num(size)?,
                    max: max.parse().map_err(|_| ())?,
                }
            } else {
                let (head, max) = rest
                    .split_once(" changed objects failed (maxFailureRatio ")
                    .ok_or(())?;
                let (failed, changed) = head.split_once(" of ").ok_or(())?;
                Threshold::TotalRatio {
                    failed: num(failed)?,
                    changed: num(changed)?,
                    max: max.parse().map_err(|_| ())?,
                }
            }
        } else if let Some(rest) = text.strip_suffix(')') {
            if let Some((failed, max)) =
                rest.split_once(" failed objects in the wave (maxFailuresPerWave ")
            {
                Threshold::PerWave {
                    failed: num(failed)?,
                    max: max.parse().map_err(|_| ())?,
                }
            } else {
                let (failed, max) = rest
                    .split_once(" failed objects in the rollout (maxFailures ")
                    .ok_or(())?;
                Threshold::Total {
                    failed: num(failed)?,
                    max: max.parse().map_err(|_| ())?,
                }
            }
        } else {
            return Err(());
        };
        (parsed.to_string() == text).then_some(parsed).ok_or(())
    }
}

/// A commit that must never be applied again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The commit.
    pub commit: String,
    /// Why.
    pub reason: String,
    /// The commit that reverted it, if pushed.
    pub revert: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Thresholds {
        Thresholds {
            per_wave: None,
            per_wave_ratio: None,
            total: None,
            total_ratio: None,
            revert: false,
        }
    }

    #[test]
    fn each_threshold_reads_as_before_and_comes_back_from_its_text() {
        let cases = [
            (
                Threshold::PerWave { failed: 2, max: 2 },
                "2 failed objects in the wave (maxFailuresPerWave 2)",
            ),
            (
                Threshold::PerWaveRatio {
                    failed: 1,
                    size: 8,
                    max: 12.5,
                },
                "1 of 8 objects failed in the wave (maxFailureRatioPerWave 12.5%)",
            ),
            (
                Threshold::Total { failed: 5, max: 5 },
                "5 failed objects in the rollout (maxFailures 5)",
            ),
            (
                Threshold::TotalRatio {
                    failed: 3,
                    changed: 10,
                    max: 30.0,
                },
                "3 of 10 changed objects failed (maxFailureRatio 30%)",
            ),
            (
                Threshold::Metric("metric errors: no series for 10m".into()),
                "metric errors: no series for 10m",
            ),
        ];
        for (threshold, text) in cases {
            assert_eq!(threshold.to_string(), text);
            let json = serde_json::to_value(&threshold).unwrap();
            assert_eq!(json, serde_json::json!(text));
            assert_eq!(
                serde_json::from_value::<Threshold>(json).unwrap(),
                threshold
            );
        }
    }

    #[test]
    fn a_text_no_counted_threshold_writes_back_the_same_is_a_gate_s_words() {
        for text in [
            "2 failed objects in the wave (maxFailuresPerWave 02)",
            "metric error-rate = 0.25 is outside [-∞, 0.1]",
            "anything an earlier release wrote",
        ] {
            let read: Threshold = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(read, Threshold::Metric(text.to_owned()));
            assert_eq!(read.to_string(), text);
        }
    }

    #[test]
    fn the_first_threshold_reached_is_the_one_crossed() {
        let mut b = breaker();
        assert_eq!(Threshold::crossed(&b, 5, 5, 5, 5), None);
        b.total = Some(3);
        b.per_wave_ratio = Some(50.0);
        assert_eq!(
            Threshold::crossed(&b, 1, 4, 2, 10),
            None,
            "25% of the wave, 2 in all"
        );
        assert_eq!(
            Threshold::crossed(&b, 2, 4, 2, 10),
            Some(Threshold::PerWaveRatio {
                failed: 2,
                size: 4,
                max: 50.0
            })
        );
        assert_eq!(
            Threshold::crossed(&b, 1, 4, 3, 10),
            Some(Threshold::Total { failed: 3, max: 3 })
        );
        b.per_wave = Some(1);
        assert_eq!(
            Threshold::crossed(&b, 1, 4, 3, 10),
            Some(Threshold::PerWave { failed: 1, max: 1 })
        );
        // An empty wave counts as wholly failed.
        let mut b = breaker();
        b.per_wave_ratio = Some(100.0);
        assert!(Threshold::crossed(&b, 0, 0, 0, 0).is_some());
    }

    #[test]
    fn evidence_reads_as_the_revert_message_says_it() {
        let evidence = Evidence {
            stage: "machines/canary".into(),
            threshold: Threshold::PerWave { failed: 2, max: 1 },
            stage_failures: (2, 4),
            total_failures: (3, 40),
            failed: vec![("Machine/fleet/m-1".into(), "not healthy".into())],
        };
        assert_eq!(
            evidence.to_string(),
            "Breaker tripped in wave machines/canary: 2 failed objects in the wave (maxFailuresPerWave 1).\n\
             Failures: 2 of 4 in the wave, 3 of 40 in the rollout.\n\
             - Machine/fleet/m-1: not healthy\n\
             - and 2 more\n"
        );
    }
}
