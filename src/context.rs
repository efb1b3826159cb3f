//! What every thread serving an interface (a CAN input, a CAN output, an
//! RS485 pack) is handed when it is started, whatever it serves: where it
//! raises events, its stop, and whom it tells that it lives. One struct, so
//! that the gateway hands it out in one place and the threads' own structs
//! hold only what is theirs (their section, their cell, their opener).

use crate::events::Events;
use crate::shutdown::Stop;
use std::time::{Duration, Instant};

/// A serving thread's share of the running gateway.
#[derive(Clone, Copy)]
pub struct ThreadContext<'a> {
    /// Where link changes (and dead interfaces) are raised as events.
    pub events: &'a Events,
    /// The thread's own stop: a reload stops one thread, not the others.
    pub stop: &'a Stop,
    /// Called once the interface (or port) has been tried the first time.
    pub opened: &'a (dyn Fn() + Sync),
    /// Called once per wake-up, and at least every `heartbeat_every`.
    pub heartbeat: &'a (dyn Fn() + Sync),
    pub heartbeat_every: Duration,
}

/// The callback of a context that nobody watches.
fn nothing() {}

impl<'a> ThreadContext<'a> {
    /// A context whose `opened` and heartbeat callbacks do nothing: for a
    /// thread started without the supervision (tests, benchmarks).
    pub fn unwatched(events: &'a Events, stop: &'a Stop, heartbeat_every: Duration) -> ThreadContext<'a> {
        ThreadContext {
            events,
            stop,
            opened: &nothing,
            heartbeat: &nothing,
            heartbeat_every,
        }
    }

    /// Sleeps until `until` with heartbeats, waking at once on a stop;
    /// true when stopped.
    pub fn wait_until(&self, until: Instant) -> bool {
        loop {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            if self.stop.sleep_until(until.min(now + self.heartbeat_every)) {
                return true;
            }
            (self.heartbeat)();
        }
    }
}
