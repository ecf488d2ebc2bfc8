//! A rollout's failure records: exact counts, the first reasons and (bounded) which positions
//! failed, and the notes of restores that failed. Every kept text is cut to a bound, so the
//! persisted state stays small whatever happens to the fleet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::Universe;
use crate::positions::Positions;
use crate::text::cut;

/// The failure reasons kept (the counts are exact).
pub const KEPT_FAILURES: usize = 20;
/// A kept reason is cut to this many characters.
pub const REASON_CHARS: usize = 256;
/// Failed positions kept for attributing the failure to commits (the counts are exact).
pub const KEPT_FAILED_POSITIONS: usize = 1000;
/// Failed restores whose reasons are kept (the count is exact).
pub const KEPT_UNRESTORED: usize = 5;

/// Failures of a rollout: exact counts, the first reasons, and (bounded) which positions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failures {
    /// Per stage.
    pub per_stage: Vec<u32>,
    /// In all.
    pub total: u32,
    /// The first [`KEPT_FAILURES`], with their reasons.
    pub first: Vec<Note>,
    /// The first [`KEPT_FAILED_POSITIONS`] failed positions, per universe.
    pub positions: BTreeMap<Universe, Positions>,
    /// Failures no object is to blame for (a metric gate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fleet: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Failures {
    /// Counts a failure in `stage` and keeps its reason while fewer than [`KEPT_FAILURES`] are.
    pub(crate) fn count(&mut self, stage: usize, note: Note) {
        self.per_stage[stage] += 1;
        self.total += 1;
        self.keep(note);
    }

    /// Keeps a note while fewer than [`KEPT_FAILURES`] are, without counting a failure.
    pub(crate) fn keep(&mut self, note: Note) {
        if self.first.len() < KEPT_FAILURES {
            self.first.push(note);
        }
    }

    /// Remembers which position of `universe` failed while fewer than
    /// [`KEPT_FAILED_POSITIONS`] are.
    pub(crate) fn keep_position(&mut self, universe: Universe, p: u32) {
        let kept: usize = self.positions.values().map(Positions::len).sum();
        if kept < KEPT_FAILED_POSITIONS {
            self.positions.entry(universe).or_default().insert(p);
        }
    }
}

/// An object (or the fleet) and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// `Machine/ns/m-1`, or `fleet`.
    pub object: String,
    /// Why, cut to [`REASON_CHARS`].
    pub reason: String,
}

impl Note {
    pub(crate) fn new(object: String, reason: &str) -> Self {
        Note {
            object,
            reason: cut(reason, REASON_CHARS),
        }
    }
}

/// A count of notes, and the first few.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notes {
    /// How many.
    pub count: u32,
    /// The first [`KEPT_UNRESTORED`].
    pub first: Vec<Note>,
}

impl Notes {
    pub(crate) fn push(&mut self, note: Note) {
        self.count += 1;
        if self.first.len() < KEPT_UNRESTORED {
            self.first.push(note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_cuts_its_reason() {
        let note = Note::new("Machine/ns/m-1".into(), &"x".repeat(REASON_CHARS + 10));
        assert_eq!(note.reason.chars().count(), REASON_CHARS);
        assert!(note.reason.ends_with('…'));
    }

    #[test]
    fn counts_stay_exact_past_what_is_kept() {
        let mut failures = Failures {
            per_stage: vec![0, 0],
            ..Failures::default()
        };
        for i in 0..KEPT_FAILURES + 3 {
            failures.count(1, Note::new(format!("m-{i}"), "down"));
        }
        assert_eq!(failures.per_stage, [0, KEPT_FAILURES as u32 + 3]);
        assert_eq!(failures.total, KEPT_FAILURES as u32 + 3);
        assert_eq!(failures.first.len(), KEPT_FAILURES);
        assert_eq!(failures.first[0].object, "m-0");

        let mut unrestored = Notes::default();
        for i in 0..KEPT_UNRESTORED + 2 {
            unrestored.push(Note::new(format!("m-{i}"), "forbidden"));
        }
        assert_eq!(unrestored.count, KEPT_UNRESTORED as u32 + 2);
        assert_eq!(unrestored.first.len(), KEPT_UNRESTORED);
    }

    #[test]
    fn failed_positions_are_kept_up_to_the_bound_across_universes() {
        let mut failures = Failures::default();
        for p in 0..KEPT_FAILED_POSITIONS as u32 - 1 {
            failures.keep_position(Universe::Machines, p);
        }
        failures.keep_position(Universe::Clusters, 7);
        failures.keep_position(Universe::Clusters, 8);
        assert!(failures.positions[&Universe::Clusters].contains(7));
        assert!(!failures.positions[&Universe::Clusters].contains(8));
        let kept: usize = failures.positions.values().map(Positions::len).sum();
        assert_eq!(kept, KEPT_FAILED_POSITIONS);
    }
}
