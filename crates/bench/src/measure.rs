//! Wall time and peak memory, for the benchmark programs.

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Resets this process's peak RSS (Linux `clear_refs` 5), so that the next reading covers
/// only what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS in bytes since start (or the last reset).
pub fn peak_rss() -> Option<u64> {
    read_hwm("/proc/self/status")
}

fn read_hwm(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A child process's wall time and peak RSS.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Wall time.
    pub wall: Duration,
    /// Peak RSS in bytes (sampled every 5 ms).
    pub peak_rss: u64,
    /// Whether it exited 0.
    pub success: bool,
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
}

/// Runs a command with its output discarded, sampling its peak RSS until it exits.
pub fn run(command: &mut Command) -> io::Result<Run> {
    sample(command.stdout(Stdio::null()).stderr(Stdio::null()))
}

/// Runs a command with the output its caller set up, sampling its peak RSS until it exits.
pub fn sample(command: &mut Command) -> io::Result<Run> {
    let start = Instant::now();
    let mut child = command.spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(hwm) = read_hwm(&status_path) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Run {
                wall: start.elapsed(),
                peak_rss: peak,
                success: status.success(),
                code: status.code(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes as MB.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
