//! Named crash points, for the fault tests: `ENDSTATE_CRASH_AT=NAME:N` makes the process kill
//! itself with SIGKILL the N-th time it passes the point NAME (several points separated by
//! commas). Compiled into debug builds only (the test builds); in a release build a point is
//! nothing.
//!
//! The points, in the order a rollout passes them:
//!
//! | name | where |
//! |---|---|
//! | `status-save` | a status save is about to be sent |
//! | `status-saved` | a status save returned |
//! | `apply-issued` | a batch of applies admitted (and saved) is about to be sent |
//! | `apply-returned` | the batch's applies returned, before the engine hears of them |
//! | `baking` | a turn of the loop while a wave bakes |
//! | `restore-issued` | a batch of restores (after a trip) is about to be sent |
//! | `revert-push` | the revert is about to be pushed |
//!
//! Before it kills itself the process writes `crash point NAME reached (pass N)` to stderr,
//! so a test can check from the log that it stopped where it meant to.

/// Passes the point `name`.
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::OnceLock;

    static PLAN: OnceLock<Vec<(String, u64)>> = OnceLock::new();
    static PASSES: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let plan = PLAN.get_or_init(|| {
        std::env::var("ENDSTATE_CRASH_AT")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (name, n) = p.trim().split_once(':')?;
                Some((name.to_owned(), n.parse().ok()?))
            })
            .collect()
    });
    if !plan.iter().any(|(n, _)| n == name) {
        return;
    }
    let pass = {
        let mut passes = PASSES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let pass = passes.entry(name.to_owned()).or_default();
        *pass += 1;
        *pass
    };
    if plan.iter().any(|(n, at)| n == name && *at == pass) {
        eprintln!("crash point {name} reached (pass {pass})");
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // SIGKILL is not instantaneous; nothing may happen after the point.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// Passes the point `name` (nothing in a release build).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}
