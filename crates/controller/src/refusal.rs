//! Why the branch head is not applied: a closed set, each with the condition (and Event)
//! reason it is reported under.

use std::fmt;

use endstate_rollout::text::cut_lines;

/// The longest message a condition carries; longer ones are cut with how much was left out.
/// One broken base file at 100k Machines must not produce a 100k-line condition.
pub const MESSAGE_CHARS: usize = 32_768;

/// Why the head cannot be rolled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The remote could not be fetched; the fleet stays at what it has.
    FetchFailed(String),
    /// The branch no longer descends from the last applied commit.
    HistoryRewritten(String),
    /// The head is not signed by an allowed key.
    Unverified(String),
    /// The head does not render or validate.
    InvalidCommit(String),
    /// The head is, or carries without a revert, a quarantined commit.
    Quarantined {
        /// The head.
        head: String,
        /// The quarantined commit it is or carries.
        culprit: String,
    },
    /// The head changes package versions that live objects use.
    ImmutablePackage {
        /// The head.
        head: String,
        /// The package versions.
        names: Vec<String>,
    },
    /// The head deletes more of the fleet than the policy's floor allows.
    MassDelete {
        /// The head.
        head: String,
        /// Each scope over the floor, with its counts.
        scopes: Vec<String>,
        /// The policy's `prune.maxDeleteRatio` (`10%`).
        ratio: String,
    },
    /// The persisted state cannot be used (written by another release, say).
    StateUnreadable(String),
}

impl Refusal {
    /// The condition (and Event) reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::FetchFailed(_) => "FetchFailed",
            Refusal::HistoryRewritten(_) => "HistoryRewritten",
            Refusal::Unverified(_) => "Unverified",
            Refusal::InvalidCommit(_) => "InvalidCommit",
            Refusal::Quarantined { .. } => "Quarantined",
            Refusal::ImmutablePackage { .. } => "ImmutablePackageVersion",
            Refusal::MassDelete { .. } => "MassDelete",
            Refusal::StateUnreadable(_) => "StateUnreadable",
        }
    }

    /// Classifies a Git source failure.
    pub fn from_git(err: &endstate_git::Error) -> Refusal {
        let text = err.to_string();
        match err {
            endstate_git::Error::HistoryRewritten { .. } => Refusal::HistoryRewritten(text),
            endstate_git::Error::Unverified { .. } => Refusal::Unverified(text),
            endstate_git::Error::Invalid { .. } => Refusal::InvalidCommit(text),
            _ => Refusal::FetchFailed(text),
        }
    }

    /// The message, cut to [`MESSAGE_CHARS`].
    pub fn message(&self) -> String {
        cut_lines(&self.to_string(), MESSAGE_CHARS)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::report::short;
        match self {
            Refusal::FetchFailed(why) => write!(
                f,
                "the branch head is not applied; the fleet stays as it is: {why}"
            ),
            Refusal::HistoryRewritten(why)
            | Refusal::Unverified(why)
            | Refusal::InvalidCommit(why)
            | Refusal::StateUnreadable(why) => f.write_str(why),
            Refusal::Quarantined { head, culprit } if head == culprit => write!(
                f,
                "the branch head {} is quarantined; push a fix or a revert",
                short(head)
            ),
            Refusal::Quarantined { head, culprit } => write!(
                f,
                "the branch head {} still carries the quarantined commit {} (not reverted since); revert it to go on",
                short(head),
                short(culprit)
            ),
            Refusal::MassDelete {
                head,
                scopes,
                ratio,
            } => write!(
                f,
                "{} deletes {}; refused before anything is written (a commit may delete \
                 at most max({ratio}, {}) of a kind's live objects in the fleet, a Cluster or an \
                 idc, and never all of them): if this is meant, allow it in the RolloutPolicy \
                 with `prune: {{maxDeleteRatio: 50%}}` or `prune: {{allowEmpty: true}}`",
                subject(head),
                scopes.join(", "),
                endstate_core::policy::Prune::ALWAYS
            ),
            Refusal::ImmutablePackage { head, names } => write!(
                f,
                "{} changes package versions that live objects use ({}); package versions are immutable: add a new one instead",
                subject(head),
                names.join(", ")
            ),
        }
    }
}

/// What a refusal names: `commit 0123456789` for a commit id, anything else (`the working
/// tree`) as it is.
fn subject(head: &str) -> String {
    if !head.is_empty() && head.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("commit {}", crate::report::short(head))
    } else {
        head.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_capped_with_what_was_left_out() {
        let text: String = (0..100_000)
            .map(|i| format!("base/machines.yaml:{i}:3: Machine/m-{i}: spec.ip: missing\n"))
            .collect();
        let message = Refusal::InvalidCommit(text).message();
        assert!(
            message.chars().count() <= MESSAGE_CHARS,
            "{}",
            message.len()
        );
        assert!(
            message.ends_with("more lines"),
            "{}",
            &message[message.len() - 60..]
        );
        let kept = message.lines().count() - 1;
        assert!(message.contains(&format!("and {} more lines", 100_000 - kept)));
        assert_eq!(cut_lines("short", 10), "short");
    }
}
