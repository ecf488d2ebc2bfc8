//! Time as the engine sees it: an input, never read from a clock here.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use endstate_core::policy::Policy;

/// A point in time: milliseconds since the Unix epoch. Virtual in the simulator and in tests,
/// wall-clock time in the controller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub i64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The time elapsed since `earlier`, zero when `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 in UTC, second precision, as Kubernetes writes timestamps.
    pub fn rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Reads RFC 3339 (`2026-12-01T09:30:00Z`, fractions of a second and `+02:00` offsets
    /// too), years 1970–9999; `None` when `text` is not one.
    pub fn parse_rfc3339(text: &str) -> Option<Time> {
        let b = text.as_bytes();
        let digits = |from: usize, len: usize| -> Option<i64> {
            let part = b.get(from..from + len)?;
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let at = |i: usize, c: u8| b.get(i) == Some(&c);
        let separators = at(4, b'-')
            && at(7, b'-')
            && matches!(b.get(10), Some(b'T' | b't' | b' '))
            && at(13, b':')
            && at(16, b':');
        if !separators {
            return None;
        }
        let (y, m, d) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
        let (h, min, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
        let mut i = 19;
        let mut millis = 0;
        if at(i, b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            let kept = (i - start).min(3);
            millis = digits(start, kept)? * 10_i64.pow(3 - kept as u32);
        }
        let offset = match b.get(i..)? {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (oh, om) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let secs = oh * 3600 + om * 60;
                if *sign == b'-' { -secs } else { secs }
            }
            _ => return None,
        };
        let days_in_month = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
            2 => 28,
            _ => return None,
        };
        if y < 1970 || d < 1 || d > days_in_month || h > 23 || min > 59 || sec > 59 {
            return None;
        }
        let secs =
            days_from_civil(y, m as u32, d as u32) * 86_400 + h * 3600 + min * 60 + sec - offset;
        Some(Time(secs * 1000 + millis))
    }

    /// Day of week, 0 = Monday, and minutes since midnight (UTC).
    pub fn weekday_and_minute(self) -> (u32, u32) {
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        // 1970-01-01 was a Thursday.
        let weekday = (days + 3).rem_euclid(7) as u32;
        let minute = (secs.rem_euclid(86_400) / 60) as u32;
        (weekday, minute)
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, rhs: Duration) -> Time {
        Time(
            self.0
                .saturating_add(rhs.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl Sub<Duration> for Time {
    type Output = Time;

    fn sub(self, rhs: Duration) -> Time {
        Time(
            self.0
                .saturating_sub(rhs.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// A duration as people write it: `90s` → `1m30s`, `3600s` → `1h`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Days since 1970-01-01 of a date (the proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day of a count of days since 1970-01-01 (the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The next minute at which a maintenance window of `policy` is open, within a week.
pub fn next_window_open(policy: &Policy, now: Time) -> Option<Time> {
    let start = Time((now.millis().div_euclid(60_000) + 1) * 60_000);
    (0..7 * 24 * 60 + 1)
        .map(|m| Time(start.millis() + m * 60_000))
        .find(|t| {
            let (d, m) = t.weekday_and_minute();
            policy.window_open(d, m)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_splits_days() {
        // 2026-11-27T06:40:00Z, a Friday.
        let t = Time(1_795_761_600_000);
        assert_eq!(t.rfc3339(), "2026-11-27T06:40:00Z");
        assert_eq!(t.weekday_and_minute(), (4, 6 * 60 + 40));
        assert_eq!(Time::ZERO.rfc3339(), "1970-01-01T00:00:00Z");
        for t in [
            Time::ZERO,
            t,
            Time(951_782_400_000),
            Time(4_107_542_399_000),
        ] {
            assert_eq!(Time::parse_rfc3339(&t.rfc3339()), Some(t));
        }
        assert_eq!(
            Time::parse_rfc3339("2026-11-27T08:40:00.25+02:00"),
            Some(Time(1_795_761_600_250))
        );
        assert_eq!(
            Time::parse_rfc3339("2024-02-29T00:00:00.123456Z"),
            Some(Time(1_709_164_800_123))
        );
        for bad in [
            "",
            "2026-11-27",
            "2026-13-01T00:00:00Z",
            "2026-11-27T06:40:00",
            "soon",
        ] {
            assert_eq!(Time::parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn windows(windows: Vec<endstate_core::policy::Window>) -> Policy {
        Policy {
            windows,
            ..Policy::default()
        }
    }

    #[test]
    fn the_next_window_opens_across_the_week_boundary() {
        const MIN: i64 = 60_000;
        let thursday = Time(1_767_225_600_000); // 2026-01-01T00:00:00Z
        let sunday_2300 = Time(thursday.millis() + (3 * 24 + 23) * 60 * MIN);
        assert_eq!(sunday_2300.weekday_and_minute(), (6, 23 * 60));
        let monday_0200 = endstate_core::policy::Window {
            days: vec![0],
            start: 120,
            end: 180,
        };
        let policy = windows(vec![monday_0200]);
        assert_eq!(
            next_window_open(&policy, sunday_2300),
            Some(Time(sunday_2300.millis() + 3 * 60 * MIN))
        );
        // Inside the window, the answer is the next minute, still inside it.
        let monday_0230 = Time(sunday_2300.millis() + 210 * MIN + 15_000);
        assert_eq!(
            next_window_open(&policy, monday_0230),
            Some(Time(sunday_2300.millis() + 211 * MIN))
        );
        // Just after it closes, the next one is a week on.
        let monday_0300 = Time(sunday_2300.millis() + 240 * MIN);
        assert_eq!(
            next_window_open(&policy, monday_0300),
            Some(Time(sunday_2300.millis() + (3 + 7 * 24) * 60 * MIN))
        );
        // A window that crosses midnight from Sunday is open on Monday's first minutes.
        let sunday_night = endstate_core::policy::Window {
            days: vec![6],
            start: 23 * 60 + 30,
            end: 30,
        };
        let policy = windows(vec![sunday_night]);
        assert_eq!(
            next_window_open(&policy, sunday_2300),
            Some(Time(sunday_2300.millis() + 30 * MIN))
        );
    }

    #[test]
    fn no_window_on_no_day_never_opens() {
        let never = endstate_core::policy::Window {
            days: vec![],
            start: 0,
            end: 60,
        };
        assert_eq!(next_window_open(&windows(vec![never]), Time(0)), None);
        assert_eq!(
            next_window_open(&Policy::default(), Time(90_000)),
            Some(Time(120_000)),
            "no windows: always open"
        );
    }
}
