//! The time as payloads and records show it: a [`Clock`] pairs the
//! monotonic instant a payload is made at with the wall clock, and
//! [`unix`] turns the wall clock into Unix seconds.
//!
//! Plumbing: the event log, the telemetry, the HTTP API and the state store
//! all stamp times this one way.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The time a payload is made at, on both clocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Unix seconds of the wall clock.
    pub fn timestamp(&self) -> f64 {
        unix(self.wall)
    }

    /// Unix seconds of a monotonic instant (in the past or the future).
    pub fn unix_of(&self, at: Instant) -> f64 {
        let wall = if at <= self.now {
            self.wall.checked_sub(self.now - at)
        } else {
            self.wall.checked_add(at - self.now)
        };
        wall.map_or(0.0, unix)
    }

    /// Seconds since `at` (0 for an instant in the future).
    pub fn age(&self, at: Instant) -> f64 {
        round(self.now.saturating_duration_since(at).as_secs_f64(), 1)
    }
}

/// Unix seconds, millisecond resolution.
pub fn unix(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    round(d.as_secs_f64(), 3)
}

/// Rounds to `decimals` places. Division (not multiplication by 0.1) keeps
/// the result the closest double to the decimal, so JSON shows `0.3`, not
/// `0.30000000000000004`.
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    // + 0.0 turns -0.0 into 0.0.
    (x * scale).round() / scale + 0.0
}
