//! Acting on a running loop from outside it: the requests people make through the `Fleet`
//! (approve, reset the breaker, fetch now, suspend, stop), and the fence that keeps a loop
//! that lost its lease from writing.
//!
//! ```text
//!   Fleet annotations / spec ──▶ Control::{approve, reset_breaker, reconcile, suspend, stop}
//!                                     │ (wakes the loop)
//!   turn ──▶ take the requests ──▶ act, and record the token handled in the status
//!   every write ──▶ Fence::holds? ── no ──▶ Error::Fenced (nothing written, nothing fed back)
//! ```
//!
//! Requests carry the token of the annotation that asked for them (Flux's requested /
//! last-handled pattern): the loop records it in the status once it acted, so a request is
//! acted on once, whichever replica recorded it and however often it is seen.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Whether this process may write: it holds the lease and is within its renew deadline.
pub trait Fence: Send + Sync {
    /// `true` while writes are allowed.
    fn holds(&self) -> bool;
}

/// A request to release the wave held for approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The request's token (the annotation's value).
    pub token: String,
    /// The wave it is for, by name or 1-based number; `None`: whichever holds.
    pub wave: Option<String>,
}

/// What has been asked of the loop and not yet taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Release the held wave.
    pub approve: Option<Approval>,
    /// Close the breaker (the token).
    pub reset_breaker: Option<String>,
    /// Fetch now (the token).
    pub reconcile: Option<String>,
    /// The source (URL, branch or path) changed: end the rollout in flight as a new commit
    /// would (the policy's `onNewCommit`), start nothing more, then stop.
    pub retire: bool,
    /// `spec.suspend` as last seen.
    pub suspended: bool,
    /// The `Fleet`'s `metadata.generation` as last seen.
    pub generation: Option<i64>,
}

/// The handle through which requests reach a running loop; cheap to share.
#[derive(Debug, Default)]
pub struct Control {
    requests: Mutex<Requests>,
    stop: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Control {
    /// Changes the requests, and wakes the loop if that changed anything.
    fn with(&self, change: impl FnOnce(&mut Requests)) {
        let changed = {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            let before = requests.clone();
            change(&mut requests);
            *requests != before
        };
        if changed {
            self.notify.notify_one();
        }
    }

    /// Asks for the held wave to be released.
    pub fn approve(&self, approval: Approval) {
        self.with(|r| r.approve = Some(approval));
    }

    /// Asks for the breaker to be closed.
    pub fn reset_breaker(&self, token: impl Into<String>) {
        let token = token.into();
        self.with(|r| r.reset_breaker = Some(token));
    }

    /// Asks for a fetch now.
    pub fn reconcile(&self, token: impl Into<String>) {
        let token = token.into();
        self.with(|r| r.reconcile = Some(token));
    }

    /// Asks the loop to end its rollout as a new commit would, and then to stop: its source
    /// changed, and a loop on the new source takes over.
    pub fn retire(&self) {
        self.with(|r| r.retire = true);
    }

    /// Suspends (nothing fetched, nothing written) or resumes the loop.
    pub fn suspend(&self, suspended: bool) {
        self.with(|r| r.suspended = suspended);
    }

    /// The `Fleet`'s generation, for `observedGeneration`.
    pub fn generation(&self, generation: i64) {
        self.with(|r| r.generation = Some(generation));
    }

    /// Asks the loop to stop after the turn in progress (its writes finished, its state saved).
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether the loop was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The standing requests (suspension, generation), leaving the one-shot ones.
    pub fn standing(&self) -> Requests {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        Requests {
            suspended: requests.suspended,
            generation: requests.generation,
            ..Requests::default()
        }
    }

    /// Takes the one-shot requests; the standing ones (suspension, generation) stay.
    pub fn take(&self) -> Requests {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        Requests {
            approve: requests.approve.take(),
            reset_breaker: requests.reset_breaker.take(),
            reconcile: requests.reconcile.take(),
            retire: std::mem::take(&mut requests.retire),
            suspended: requests.suspended,
            generation: requests.generation,
        }
    }

    /// Puts one-shot requests back, untaken (a suspended loop keeps them for when it is
    /// resumed); newer ones of the same kind win.
    pub fn keep(&self, taken: Requests) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if requests.approve.is_none() {
            requests.approve = taken.approve;
        }
        if requests.reset_breaker.is_none() {
            requests.reset_breaker = taken.reset_breaker;
        }
        if requests.reconcile.is_none() {
            requests.reconcile = taken.reconcile;
        }
        requests.retire |= taken.retire;
    }

    /// Resolves when a request arrives.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// Whether `wave` (a name, or a 1-based number) names the stage at `index` called `name`.
pub fn names_wave(wave: &str, index: usize, name: &str) -> bool {
    let wave = wave.trim();
    wave == name
        || name.rsplit('/').next() == Some(wave)
        || wave.parse::<usize>().is_ok_and(|n| n == index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_requests_are_taken_once_and_standing_ones_stay() {
        let control = Control::default();
        control.approve(Approval {
            token: "t1".into(),
            wave: Some("canary".into()),
        });
        control.suspend(true);
        control.generation(4);
        let first = control.take();
        assert_eq!(first.approve.unwrap().token, "t1");
        assert!(first.suspended);
        let second = control.take();
        assert_eq!(second.approve, None);
        assert!(second.suspended);
        assert_eq!(second.generation, Some(4));
    }

    #[test]
    fn kept_requests_are_taken_again_and_newer_ones_win() {
        let control = Control::default();
        control.reconcile("old");
        control.reset_breaker("reset-1");
        let taken = control.take();
        control.reconcile("new");
        control.keep(taken);
        let again = control.take();
        assert_eq!(again.reconcile.as_deref(), Some("new"));
        assert_eq!(again.reset_breaker.as_deref(), Some("reset-1"));
    }

    #[test]
    fn a_wave_is_named_by_its_name_its_last_part_or_its_number() {
        assert!(names_wave("machines/canary", 1, "machines/canary"));
        assert!(names_wave("canary", 1, "machines/canary"));
        assert!(names_wave("2", 1, "machines/canary"));
        assert!(!names_wave("1", 1, "machines/canary"));
        assert!(!names_wave("wave-2", 1, "machines/canary"));
    }
}
