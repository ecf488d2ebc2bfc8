//! The changes in flight in the current stage, indexed three ways: by position (what the
//! persisted state holds), by start bucket (what times out together) and by identity (what an
//! observation names).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use endstate_core::ObjectRef;

use crate::positions::Positions;
use crate::time::Time;

/// In-flight start times are rounded up to buckets of `gate timeout / FLIGHT_BUCKETS`, so the
/// persisted in-flight set holds at most this many (+1) groups, whatever the wave's size. A
/// gate's deadline is therefore up to one bucket later than its exact start plus the timeout.
pub const FLIGHT_BUCKETS: u64 = 16;

/// The changes in flight in the current stage.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flights {
    /// Position → the flight.
    pub by_position: BTreeMap<u32, Flight>,
    /// Start bucket → positions started in it.
    pub by_start: BTreeMap<Time, Positions>,
    /// Identity → position.
    pub index: HashMap<ObjectRef, u32>,
}

/// A started change waiting to settle.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Flight {
    /// Its start, rounded up to a bucket.
    pub started: Time,
    /// The generation the write produced, once known.
    pub generation: Option<i64>,
    /// Why it is not healthy yet, as last observed.
    pub last: Option<String>,
}

impl Flights {
    pub fn len(&self) -> usize {
        self.by_position.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_position.is_empty()
    }

    pub fn insert(&mut self, position: u32, id: ObjectRef, started: Time) {
        self.by_start.entry(started).or_default().insert(position);
        self.index.insert(id, position);
        self.by_position.insert(
            position,
            Flight {
                started,
                generation: None,
                last: None,
            },
        );
    }

    pub fn remove(&mut self, position: u32, id: &ObjectRef) -> Option<Flight> {
        let flight = self.by_position.remove(&position)?;
        self.index.remove(id);
        if let Some(group) = self.by_start.get_mut(&flight.started) {
            group.remove(position);
            if group.is_empty() {
                self.by_start.remove(&flight.started);
            }
        }
        Some(flight)
    }

    pub fn clear(&mut self) {
        *self = Flights::default();
    }

    /// The positions whose gate timed out at `now`: whole start buckets at a time.
    pub fn expired(&self, now: Time, timeout: Duration) -> Vec<u32> {
        self.by_start
            .range(..=now - timeout)
            .flat_map(|(_, ps)| ps.iter())
            .collect()
    }
}

/// `now` rounded up to the next start bucket of a gate timeout.
pub(crate) fn bucket_up(now: Time, timeout: Duration) -> Time {
    let width = (timeout.as_millis() as i64 / FLIGHT_BUCKETS as i64).max(1);
    Time((now.millis() + width - 1).div_euclid(width) * width)
}

#[cfg(test)]
mod tests {
    use endstate_core::Kind;

    use super::*;

    fn id(name: &str) -> ObjectRef {
        ObjectRef::new(Kind::Machine, "fleet", name)
    }

    #[test]
    fn starts_round_up_to_a_sixteenth_of_the_timeout() {
        let timeout = Duration::from_secs(160);
        assert_eq!(bucket_up(Time(0), timeout), Time(0));
        assert_eq!(bucket_up(Time(1), timeout), Time(10_000));
        assert_eq!(bucket_up(Time(10_000), timeout), Time(10_000));
        assert_eq!(bucket_up(Time(10_001), timeout), Time(20_000));
        // A timeout shorter than the buckets still rounds to whole milliseconds.
        assert_eq!(bucket_up(Time(7), Duration::from_millis(3)), Time(7));
    }

    #[test]
    fn a_bucket_expires_whole_and_is_dropped_with_its_last_flight() {
        let timeout = Duration::from_secs(60);
        let mut flights = Flights::default();
        flights.insert(0, id("m-0"), Time(1_000));
        flights.insert(1, id("m-1"), Time(1_000));
        flights.insert(2, id("m-2"), Time(5_000));
        assert_eq!(flights.len(), 3);
        assert!(flights.expired(Time(60_999), timeout).is_empty());
        assert_eq!(flights.expired(Time(61_000), timeout), [0, 1]);
        assert_eq!(flights.expired(Time(65_000), timeout), [0, 1, 2]);

        assert_eq!(flights.remove(0, &id("m-0")).unwrap().started, Time(1_000));
        assert_eq!(flights.remove(0, &id("m-0")), None);
        assert!(flights.by_start.contains_key(&Time(1_000)));
        flights.remove(1, &id("m-1"));
        assert!(!flights.by_start.contains_key(&Time(1_000)));
        assert!(!flights.index.contains_key(&id("m-1")));
        assert_eq!(flights.index[&id("m-2")], 2);

        flights.clear();
        assert!(flights.is_empty() && flights.by_start.is_empty() && flights.index.is_empty());
    }
}
