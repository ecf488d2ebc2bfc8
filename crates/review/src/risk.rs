//! What deserves a reviewer's eye: a [`Risk`] of a closed set of kinds, the refusals the
//! controller would make among them, and the risks found before the plan (a base that does
//! not render, a signature not checked, a breaker open) in the words the report uses.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Something the change does that deserves a reviewer's eye.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// `MassDelete`, `ImmutablePackageVersion`, `Quarantined`, `HistoryRewritten`,
    /// `Unverified` (the controller refuses these; `Unverified` is only a risk on another
    /// branch than the Fleet's), `Reinstall`, `HighRiskPackageVersion`, `LargeDelete`,
    /// `Delete`, `ClusterChange`, `HeldBack`, `OwnedByAnotherFleet`, `BreakerOpen`, `BaseInvalid`.
    // The schema keeps naming it a string: readers of version 2 match on the text.
    #[schemars(with = "String")]
    pub kind: RiskKind,
    /// Whether the controller refuses the head for it.
    pub refused: bool,
    /// Objects concerned.
    pub objects: u64,
    /// What, in words.
    pub message: String,
}

/// The kinds of risk. A refusal's kind is the controller's reason for it (its condition
/// reason), so that the report and the Fleet's status name it alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskKind {
    /// Deletes over the policy's floor (refused).
    MassDelete,
    /// Package versions that live objects use change (refused).
    ImmutablePackageVersion,
    /// The head is, or carries, a quarantined commit (refused).
    Quarantined,
    /// The branch no longer descends from the last applied commit (refused).
    HistoryRewritten,
    /// The head is not signed by an allowed key (refused on the Fleet's own branch).
    Unverified,
    /// The head's history could not be read (refused).
    FetchFailed,
    /// The head does not render (refused).
    InvalidCommit,
    /// The Fleet's persisted state could not be read (refused).
    StateUnreadable,
    /// Machines reinstalled, or moved to a `risk: high` version.
    Reinstall,
    /// Existing Machines move to a version marked `risk: high`.
    HighRiskPackageVersion,
    /// Deletes of more than a tenth of a kind's objects.
    LargeDelete,
    /// Deletes.
    Delete,
    /// Clusters (control planes) change.
    ClusterChange,
    /// Machines of a Cluster whose live status is Failed wait.
    HeldBack,
    /// Objects the head sets that another Fleet owns are not written.
    OwnedByAnotherFleet,
    /// The Fleet's breaker is open.
    BreakerOpen,
    /// The base does not render.
    BaseInvalid,
}

impl RiskKind {
    /// Its name, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskKind::MassDelete => "MassDelete",
            RiskKind::ImmutablePackageVersion => "ImmutablePackageVersion",
            RiskKind::Quarantined => "Quarantined",
            RiskKind::HistoryRewritten => "HistoryRewritten",
            RiskKind::Unverified => "Unverified",
            RiskKind::FetchFailed => "FetchFailed",
            RiskKind::InvalidCommit => "InvalidCommit",
            RiskKind::StateUnreadable => "StateUnreadable",
            RiskKind::Reinstall => "Reinstall",
            RiskKind::HighRiskPackageVersion => "HighRiskPackageVersion",
            RiskKind::LargeDelete => "LargeDelete",
            RiskKind::Delete => "Delete",
            RiskKind::ClusterChange => "ClusterChange",
            RiskKind::HeldBack => "HeldBack",
            RiskKind::OwnedByAnotherFleet => "OwnedByAnotherFleet",
            RiskKind::BreakerOpen => "BreakerOpen",
            RiskKind::BaseInvalid => "BaseInvalid",
        }
    }
}

impl fmt::Display for RiskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Risk {
    /// A refusal the controller would make, `kind` being its reason.
    pub fn refusal(kind: RiskKind, message: String, objects: usize) -> Risk {
        Risk {
            kind,
            refused: true,
            objects: objects as u64,
            message,
        }
    }

    /// The base `base` does not render (`first`: its first problem). Against a Fleet it is
    /// the last applied commit, and the plan goes on against the live objects alone;
    /// otherwise every object of the head is planned as new.
    pub fn base_invalid(base: &str, first: &str, against_live: bool) -> Risk {
        let base = crate::commit::short(base);
        Risk {
            kind: RiskKind::BaseInvalid,
            refused: false,
            objects: 0,
            message: if against_live {
                format!(
                    "the last applied commit {base} does not render ({first}): planned against the live objects alone"
                )
            } else {
                format!(
                    "the base {base} does not render ({first}): every object of the head is planned as new"
                )
            },
        }
    }

    /// The head of another branch than the Fleet's is not signed as the Fleet requires
    /// (`unverified`: why): a merge that keeps the commit as it is would be refused.
    pub fn unverified_elsewhere(unverified: &str) -> Risk {
        Risk {
            kind: RiskKind::Unverified,
            refused: false,
            objects: 0,
            message: format!(
                "{unverified}: the Fleet refuses it if a merge makes it the branch's head as it \
                 is (a fast-forward or a rebase)"
            ),
        }
    }

    /// The Fleet verifies signatures but its keys could not be read (`why`).
    pub fn keys_unreadable(why: &str) -> Risk {
        Risk {
            kind: RiskKind::Unverified,
            refused: false,
            objects: 0,
            message: format!(
                "the Fleet verifies signatures, but its keys could not be read ({why}): the \
                 head's signature is not checked"
            ),
        }
    }

    /// The Fleet's breaker is open.
    pub fn breaker_open() -> Risk {
        Risk {
            kind: RiskKind::BreakerOpen,
            refused: false,
            objects: 0,
            message:
                "the Fleet's breaker is open: nothing rolls out until `endstate breaker reset`"
                    .to_owned(),
        }
    }
}
