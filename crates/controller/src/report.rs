//! What the controller tells people: one line per event, with the commit and wave, and on a
//! terminal a progress bar for the wave in flight.

use std::io::{IsTerminal, Write};

use endstate_rollout::Time;
use endstate_rollout::engine::Report;

/// Receives the controller's progress.
pub trait Reporter: Send {
    /// A line worth logging.
    fn line(&mut self, now: Time, commit: Option<&str>, text: &str);
    /// Progress of the wave in flight: settled of total, in flight, failed.
    fn progress(
        &mut self,
        _stage: &str,
        _settled: usize,
        _total: usize,
        _inflight: usize,
        _failed: usize,
    ) {
    }
    /// An engine report.
    fn report(&mut self, now: Time, commit: &str, report: &Report) {
        self.line(now, Some(commit), &describe(report));
    }
    /// A request made through the `Fleet` was acted on (`ok`) or refused; `reason` is the
    /// Event reason (`Approved`, `ApprovalRefused`, `BreakerReset`, `Suspended`, `Resumed`).
    fn request(&mut self, _reason: &str, _ok: bool, _text: &str) {}
    /// The head was refused.
    fn refused(&mut self, _now: Time, _refusal: &crate::Refusal) {}
    /// Objects of the head another Fleet owns are not written (said when that changes).
    fn foreign(&mut self, now: Time, commit: &str, text: &str) {
        self.line(now, Some(commit), text);
    }
    /// A revert was handled after a trip: `pushed` when a revert commit is on the branch.
    fn reverted(&mut self, _now: Time, _commit: &str, _pushed: bool, _outcome: &str) {}
    /// A fetch ended, `ok` or not, after `took`.
    fn fetched(&mut self, _ok: bool, _took: std::time::Duration) {}
    /// A reconcile (fetch, check, render, plan) ended with `result` (`Success` or the
    /// refusal's reason) after `took`.
    fn reconciled(&mut self, _result: &str, _took: std::time::Duration) {}
    /// The status was saved.
    fn saved(&mut self, _status: &endstate_api::FleetStatus) {}
}

/// An engine report in words.
pub fn describe(report: &Report) -> String {
    match report {
        Report::StageStarted { index, name, size } => {
            format!("wave {} {name}: starting {size} objects", index + 1)
        }
        Report::StageCompleted {
            index,
            name,
            failures,
        } => {
            format!("wave {} {name}: done ({failures} failed)", index + 1)
        }
        Report::AwaitingApproval(stage) => {
            format!("wave {stage} done; holding for approval")
        }
        Report::Waiting(why) => format!("waiting: {why}"),
        Report::Failed(id, why) => format!("{id} failed: {why}"),
        Report::Tripped(evidence) => {
            format!("BREAKER TRIPPED\n{}", evidence.to_string().trim_end())
        }
        Report::RestoreIssued(n) => format!("restored {n} objects"),
        Report::LeftCreated(n) => format!(
            "{n} objects the rollout created are left in place: a restore does not delete; the revert drops them from Git, and their deletes roll out once the breaker is reset"
        ),
        Report::Restored { unrestored: 0 } => "every change of the rollout is undone".to_owned(),
        Report::Restored { unrestored } => {
            format!("restore done; {unrestored} objects could not be restored")
        }
        Report::Completed { changed, held: 0 } => {
            format!("rollout complete: {changed} objects changed")
        }
        Report::Completed { changed, held } => format!(
            "rollout done: {changed} objects changed, {held} Machines held back by a failed Cluster (the commit is not marked good)"
        ),
        Report::Held { cluster, first } => format!(
            "{cluster} failed its gate: its Machines are skipped, not rolled out (the first is {first})"
        ),
        Report::TargetHeld {
            cluster,
            reason,
            message,
            first,
        } => format!(
            "business cluster {cluster} cannot be used ({reason}: {message}): its Machines are held, not rolled out or failed (the first is {first})"
        ),
        Report::Superseded(by) => format!("superseded by {}", short(by)),
    }
}

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// Writes to stderr: plain lines, and a live progress bar when stderr is a terminal.
#[derive(Debug)]
pub struct Console {
    tty: bool,
    bar: bool,
}

impl Console {
    /// A console reporter; bars only on a terminal.
    pub fn new() -> Self {
        Console {
            tty: std::io::stderr().is_terminal(),
            bar: false,
        }
    }

    fn clear_bar(&mut self, out: &mut impl Write) {
        if self.bar {
            let _ = write!(out, "\r\x1b[2K");
            self.bar = false;
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Reporter for Console {
    fn line(&mut self, now: Time, commit: Option<&str>, text: &str) {
        let mut out = std::io::stderr().lock();
        self.clear_bar(&mut out);
        let at = now.rfc3339();
        let commit = commit.map(|c| format!(" {}", short(c))).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if i == 0 {
                let _ = writeln!(out, "{at}{commit}  {line}");
            } else {
                let _ = writeln!(
                    out,
                    "{:width$}  {line}",
                    "",
                    width = at.len() + commit.len()
                );
            }
        }
    }

    fn progress(
        &mut self,
        stage: &str,
        settled: usize,
        total: usize,
        inflight: usize,
        failed: usize,
    ) {
        if !self.tty || total == 0 {
            return;
        }
        let mut out = std::io::stderr().lock();
        let width = 30;
        let filled = settled * width / total;
        let _ = write!(
            out,
            "\r\x1b[2K  {stage:<20} [{}{}] {settled}/{total}  in flight {inflight}  failed {failed}",
            "#".repeat(filled),
            "-".repeat(width - filled)
        );
        let _ = out.flush();
        self.bar = true;
    }
}

/// Keeps every line, for tests and summaries.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The lines, in order.
    pub lines: Vec<String>,
}

impl Reporter for Recorder {
    fn line(&mut self, _now: Time, commit: Option<&str>, text: &str) {
        let commit = commit.map(|c| format!("{} ", short(c))).unwrap_or_default();
        self.lines.push(format!("{commit}{text}"));
    }
}

/// Hands everything to each of several reporters, in order (the console, Events, metrics).
#[derive(Default)]
pub struct Tee(pub Vec<Box<dyn Reporter>>);

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tee({} reporters)", self.0.len())
    }
}

impl Reporter for Tee {
    fn line(&mut self, now: Time, commit: Option<&str>, text: &str) {
        self.0.iter_mut().for_each(|r| r.line(now, commit, text));
    }
    fn progress(
        &mut self,
        stage: &str,
        settled: usize,
        total: usize,
        inflight: usize,
        failed: usize,
    ) {
        for r in &mut self.0 {
            r.progress(stage, settled, total, inflight, failed);
        }
    }
    fn report(&mut self, now: Time, commit: &str, report: &Report) {
        self.0
            .iter_mut()
            .for_each(|r| r.report(now, commit, report));
    }
    fn request(&mut self, reason: &str, ok: bool, text: &str) {
        self.0.iter_mut().for_each(|r| r.request(reason, ok, text));
    }
    fn refused(&mut self, now: Time, refusal: &crate::Refusal) {
        self.0.iter_mut().for_each(|r| r.refused(now, refusal));
    }
    fn reverted(&mut self, now: Time, commit: &str, pushed: bool, outcome: &str) {
        self.0
            .iter_mut()
            .for_each(|r| r.reverted(now, commit, pushed, outcome));
    }
    fn fetched(&mut self, ok: bool, took: std::time::Duration) {
        self.0.iter_mut().for_each(|r| r.fetched(ok, took));
    }
    fn reconciled(&mut self, result: &str, took: std::time::Duration) {
        self.0.iter_mut().for_each(|r| r.reconciled(result, took));
    }
    fn saved(&mut self, status: &endstate_api::FleetStatus) {
        self.0.iter_mut().for_each(|r| r.saved(status));
    }
}
