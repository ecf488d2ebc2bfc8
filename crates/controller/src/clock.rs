//! Time for the controller: the wall clock in a real fleet, a virtual clock in the simulator.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use endstate_rollout::Time;
use endstate_sim::SimLive;

/// Where the controller gets the time, and how it waits.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Time;
    /// Waits until `deadline`, or until something may have changed before it (the simulated
    /// fleet's next operator event), whichever comes first.
    fn sleep_until(&self, deadline: Time) -> impl Future<Output = ()> + Send;
    /// Whether waiting takes real time. A clock that jumps straight to its deadline (the
    /// simulator at speed 0) must not run ahead of what comes in real time, such as a query
    /// API's answer.
    fn paced(&self) -> bool {
        true
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Time {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Time(since.as_millis() as i64)
    }

    async fn sleep_until(&self, deadline: Time) {
        let wait = deadline.since(self.now());
        if wait.is_zero() {
            // A deadline already passed still yields: a loop of turns that are all due at once
            // must not hold its worker thread (and the tasks it woke, the watch caches say)
            // for ever.
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The simulated fleet's virtual clock. Waiting advances the fleet toward the deadline (or its
/// next operator event, so the controller sees every change) at `speed` virtual seconds per
/// real second, in steps of at most `max_real` of real time; a speed of 0 does not wait at
/// all and jumps straight there.
#[derive(Clone, Debug)]
pub struct SimClock {
    live: SimLive,
    speed: f64,
    max_real: Duration,
}

impl SimClock {
    /// A clock that advances `live`.
    pub fn new(live: SimLive, speed: f64) -> Self {
        SimClock {
            live,
            speed,
            max_real: Duration::from_millis(250),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Time {
        self.live.lock().now()
    }

    fn paced(&self) -> bool {
        self.speed > 0.0
    }

    async fn sleep_until(&self, deadline: Time) {
        let (now, target) = {
            let fleet = self.live.lock();
            let next = fleet.next_event_at().map_or(deadline, |e| e.min(deadline));
            (fleet.now(), next.max(fleet.now()))
        };
        let mut reached = target;
        if self.speed > 0.0 {
            let real = target.since(now).div_f64(self.speed);
            let slept = real.min(self.max_real);
            if !slept.is_zero() {
                tokio::time::sleep(slept).await;
            }
            // Virtual time moves `speed` times as fast as real time, never faster.
            if slept < real {
                reached = now + slept.mul_f64(self.speed);
            }
        }
        self.live.lock().advance_to(reached);
    }
}
